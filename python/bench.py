#!/usr/bin/env python3
"""Benchmark of serpy_rs against the original Python serpy/serpy2, in the same run.

    python bench.py                      # serpy_rs alone (the original is not installed)
    python bench.py --original DIR       # DIR holds the original serpy/ and serpy2/ folders
    python bench.py --quick              # a short smoke run
    python bench.py --json out.json      # keep the figures

Rows (each side in one process, over 127.0.0.1, a client thread and a server thread):

- v2 1 MiB blobs, one way: MB/s from the first send to the last blob received;
- v2 64 B messages, one way: messages/s;
- v1 acknowledged send (mode 1, 64 B): median and p99 latency of sendData(..., 1).

Every loop is bounded in count and in time. The original polls every 10 ms (serpy2) or
50 ms (serpy): expect it to be slow; that is what the rows measure.
"""

import argparse
import importlib
import json
import os
import statistics
import sys
import threading
import time

ADR = "127.0.0.1"


def percentile(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


# --- the implementations, behind the original's API ------------------------------------------


class Impl:
    """One implementation: its serpy (v1) and serpy2 (v2) modules."""

    def __init__(self, name, v1, v2, original):
        self.name, self.v1, self.v2, self.original = name, v1, v2, original

    def server(self, module):
        s = module.Server(ADR, 0, 5).start() if module is self.v2 else module.Server(ADR, 0, 5, "ascii").start()
        port = s.serv.getsockname()[1] if self.original else s.port
        return s, port

    def accepted(self, s):
        """The first connection of server s, once the server has it."""
        if hasattr(s, "getConnection"):
            return s.getConnection()
        deadline = time.monotonic() + 10
        while not s.getConnectionsList():  # the original serpy2 Server has no getConnection
            if time.monotonic() > deadline:
                raise RuntimeError("no connection accepted within 10 s")
            time.sleep(0.001)
        return s.getConnectionsList()[0]


def one_way(impl, payload, count, seconds):
    """Sends up to `count` payloads (for at most `seconds`) over v2; returns (n, elapsed)."""
    sp = impl.v2
    s, port = impl.server(sp)
    c = sp.Connection().connect(ADR, port)
    peer = impl.accepted(s)
    sent = [0]
    stop_at = time.monotonic() + seconds

    def sender():
        for _ in range(count):
            if time.monotonic() > stop_at:
                break
            c.sendData(payload, timeout=30)
            sent[0] += 1

    t0 = time.perf_counter()
    th = threading.Thread(target=sender)
    th.start()
    got = 0
    while True:
        try:
            peer.getData(timeout=5)
        except Exception:
            break  # nothing more came: the sender stopped (or the link broke)
        got += 1
        if got == count or (not th.is_alive() and got >= sent[0]):
            break
    elapsed = time.perf_counter() - t0
    th.join()
    c.close()
    s.closeServer()
    return got, elapsed


def acked_latency(impl, count, seconds):
    sp = impl.v1
    s, port = impl.server(sp)
    c = sp.Connection().connect(ADR, port)
    peer = impl.accepted(s)
    msg = "x" * 64
    done = threading.Event()

    def drain():
        while not done.is_set():
            try:
                peer.getData(timeout=0.2)
            except Exception:
                pass

    th = threading.Thread(target=drain)
    th.start()
    lat = []
    stop_at = time.monotonic() + seconds
    for _ in range(count):
        if time.monotonic() > stop_at:
            break
        t = time.perf_counter()
        ok = c.sendData(msg, 1, timeout=10)
        lat.append(time.perf_counter() - t)
        if ok is False:
            break
    done.set()
    th.join()
    c.close()
    s.closeServer()
    return lat


def run(impl, quick):
    scale = 0.1 if quick else 1.0
    rows = {}
    blob = bytes(1 << 20)
    n, el = one_way(impl, blob, int(500 * scale) or 5, 10 * scale)
    rows["v2 1 MiB blobs (MB/s)"] = n * len(blob) / el / 1e6
    small = b"x" * 64
    n, el = one_way(impl, small, int(200000 * scale) or 100, 10 * scale)
    rows["v2 64 B messages (msg/s)"] = n / el
    lat = acked_latency(impl, int(2000 * scale) or 20, 10 * scale)
    rows["v1 acked send 64 B median (ms)"] = statistics.median(lat) * 1e3
    rows["v1 acked send 64 B p99 (ms)"] = percentile(lat, 0.99) * 1e3
    rows["v1 acked sends measured"] = len(lat)
    return rows


def load_original(path):
    if path:
        sys.path.insert(0, path)
    try:
        v1 = importlib.import_module("serpy")
        v2 = importlib.import_module("serpy2")
    except ImportError:
        return None
    if getattr(v1, "__name__", "").startswith("serpy_rs"):
        return None
    return Impl("original serpy/serpy2", v1, v2, original=True)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--original", metavar="DIR", help="folder holding the original serpy/ and serpy2/")
    ap.add_argument("--quick", action="store_true", help="a short smoke run")
    ap.add_argument("--json", metavar="FILE", help="write the figures to FILE")
    args = ap.parse_args(argv)

    import serpy_rs.serpy
    import serpy_rs.serpy2

    impls = [Impl("serpy_rs", serpy_rs.serpy, serpy_rs.serpy2, original=False)]
    orig = load_original(args.original)
    if orig is not None:
        impls.append(orig)
    else:
        print("(the original serpy/serpy2 is not importable: serpy_rs alone)")

    results = {}
    for impl in impls:
        print("running", impl.name, "...", flush=True)
        results[impl.name] = run(impl, args.quick)

    names = list(results)
    keys = list(results[names[0]])
    width = max(len(k) for k in keys)
    print()
    print("{:<{w}}  ".format("row", w=width) + "  ".join("{:>22}".format(n) for n in names)
          + ("  {:>8}".format("ratio") if len(names) == 2 else ""))
    for k in keys:
        vals = [results[n][k] for n in names]
        line = "{:<{w}}  ".format(k, w=width) + "  ".join("{:>22.4g}".format(v) for v in vals)
        if len(vals) == 2 and vals[0] and vals[1] and "measured" not in k:
            ratio = vals[1] / vals[0] if "(ms)" in k else vals[0] / vals[1]
            line += "  {:>7.0f}x".format(ratio)
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"python": sys.version, "pid": os.getpid(), "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
