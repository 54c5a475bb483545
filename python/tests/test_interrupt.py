"""Ctrl-C interrupts a blocked wait or send: a child process blocks, the test sends it SIGINT and
checks that KeyboardInterrupt arrives, within a generous bound (the waits run in 20 ms
slices; a wait that could not be interrupted would never end)."""

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import WAIT

BOUND = 5.0  # upper bound only: typically a few tens of milliseconds

CHILD = r"""
import socket, sys, time
import serpy_rs, serpy_rs.serpy as sp
what = sys.argv[1]
server = serpy_rs.Server("127.0.0.1", 0)
conn = serpy_rs.connect("127.0.0.1", server.port)
old = sp.Server("127.0.0.1", 0)
old_conn = sp.Connection().connect("127.0.0.1", old.port)
# A peer that accepts and never reads nor answers: acknowledged sends wait for ever, and
# the queue of a connection with room for one message fills up.
raw = socket.socket()
raw.bind(("127.0.0.1", 0))
raw.listen(8)
mute = serpy_rs.connect("127.0.0.1", raw.getsockname()[1], close_timeout=0.1)
full = serpy_rs.connect("127.0.0.1", raw.getsockname()[1], outgoing_capacity=1, close_timeout=0.1)
old_mute = sp.Connection().connect("127.0.0.1", raw.getsockname()[1])
def fill():
    blob = b"x" * (1 << 20)
    for _ in range(1000):  # bounded: the socket buffers hold a few MiB
        full.send(blob, 2)
calls = {
    "send_acked": lambda: mute.send("x", 1),
    "send_acked_drop": lambda: mute.send("x", 1),
    "sendData_acked": lambda: old_mute.sendData("x", 1),
    "send_full": fill,
    "get_data": lambda: conn.get_data(),
    "get_data_timeout": lambda: conn.get_data(timeout=600),
    "get_connection": lambda: (server.get_connection(), server.get_connection()),
    "recv_any": lambda: server.recv_any(),
    "next_event": lambda: (conn.next_event(None), conn.next_event(None)),
    "getData": lambda: old_conn.getData(),
    "iterate": lambda: [m for m in conn],
}
try:
    print("ready", flush=True)
    calls[what]()
    print("returned", flush=True)
except KeyboardInterrupt:
    print("interrupted", time.monotonic(), flush=True)
if what == "send_acked_drop":
    # The interrupted send's helper thread still holds the connection: dropping the last
    # Python reference must close it all the same (the mute peer then reads to the end).
    import gc
    peer_sock, _ = raw.accept()
    mute = None
    gc.collect()
    peer_sock.settimeout(30)
    while peer_sock.recv(65536):
        pass
    print("closed on drop", flush=True)
    peer_sock.close()
    mute = full
conn.close()
old_conn.close()
for c in (mute, full, old_mute):
    c.close()
raw.close()
server.close_all()
old.closeServer()
"""

CALLS = [
    "get_data",
    "get_data_timeout",
    "get_connection",
    "recv_any",
    "next_event",
    "getData",
    "iterate",
    "send_acked",
    "send_acked_drop",
    "sendData_acked",
    "send_full",
]


@pytest.mark.skipif(not hasattr(signal, "SIGINT") or os.name != "posix", reason="POSIX signals")
@pytest.mark.parametrize("call", CALLS)
def test_ctrl_c_interrupts_a_blocked_wait(call):
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, call],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        # The child is about to block (or blocks already): either way the signal must
        # end the call with KeyboardInterrupt.
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        line = child.stdout.readline().split()
        assert line and line[0] == "interrupted", (line, child.stderr.read())
        latency = float(line[1]) - sent
        assert latency < BOUND, latency
        if call == "send_acked_drop":
            assert child.stdout.readline().strip() == "closed on drop"
        assert child.wait(timeout=WAIT) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        child.stderr.close()
