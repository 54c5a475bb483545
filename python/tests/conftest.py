"""Fixtures: servers and clients on 127.0.0.1 port 0, and the Rust examples as programs."""

import json
import os
import queue
import shutil
import subprocess
import sys
import threading

import pytest

import serpy_rs

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# Upper bounds only: a test waits for the event itself and fails if it does not come.
WAIT = 20.0


@pytest.fixture
def server():
    s = serpy_rs.Server("127.0.0.1", 0)
    yield s
    s.close_all()


@pytest.fixture
def pair(server):
    """A v1 client and the server's side of the same link."""
    client = serpy_rs.connect("127.0.0.1", server.port)
    peer = server.get_connection(timeout=WAIT)
    yield client, peer
    client.close()
    peer.close()


@pytest.fixture
def pair2():
    """A v2 client and the server's side of the same link."""
    s = serpy_rs.Server("127.0.0.1", 0, protocol="v2")
    client = serpy_rs.connect("127.0.0.1", s.port, protocol="v2")
    peer = s.get_connection(timeout=WAIT)
    yield client, peer
    client.close()
    s.close_all()


def _target_dir():
    out = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"],
        cwd=REPO,
        check=True,
        stdout=subprocess.PIPE,
    ).stdout
    return json.loads(out)["target_directory"]


@pytest.fixture(scope="session")
def rust_examples():
    """The directory of the Rust examples, built with `cargo build --examples` if needed."""
    if shutil.which("cargo") is None:
        pytest.skip("cargo is not installed: the tests against the Rust examples need it")
    subprocess.run(["cargo", "build", "--quiet", "--examples", "-p", "serpy"], cwd=REPO, check=True)
    d = os.path.join(_target_dir(), "debug", "examples")
    assert os.path.isdir(d), d
    return d


class Program:
    """A Rust example run as a program; its output lines are collected by a thread."""

    def __init__(self, path, args, stdin=False):
        self.proc = subprocess.Popen(
            [path] + list(args),
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
        )
        self.lines = queue.Queue()
        self.all = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.all.append(line.rstrip("\n"))
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, predicate, timeout=WAIT):
        """The first new output line for which predicate(line) is true."""
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError("no matching line within {} s; output: {}".format(timeout, self.all))
            if line is None:
                raise AssertionError("the program ended; output: {}".format(self.all))
            if predicate(line):
                return line

    def listening_port(self):
        line = self.expect(lambda l: l.startswith("listening on "))
        return int(line.rsplit(":", 1)[1])

    def send_line(self, text):
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def wait(self, timeout=WAIT * 3):
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._reader.join(timeout=WAIT)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=WAIT)
        if self.proc.stdin:
            self.proc.stdin.close()
        self._reader.join(timeout=WAIT)


@pytest.fixture
def run_example(rust_examples):
    started = []

    def run(name, *args, stdin=False):
        p = Program(os.path.join(rust_examples, name), args, stdin=stdin)
        started.append(p)
        return p

    yield run
    for p in started:
        p.stop()


@pytest.fixture
def python_exe():
    return sys.executable
