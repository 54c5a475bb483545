"""The behaviour of each original example script, against the Rust examples (run as
programs) and against this package itself."""

import threading

import pytest

import images
import scripts
import serpy_rs.serpy as sp1
import serpy_rs.serpy2 as sp2
from conftest import WAIT


class Background:
    """Runs fn(*args) in a thread and hands back what it returned (or raised)."""

    def __init__(self, fn, *args):
        self.result = None
        self.error = None
        self.thread = threading.Thread(target=self._run, args=(fn, args), daemon=True)
        self.thread.start()

    def _run(self, fn, args):
        try:
            self.result = fn(*args)
        except BaseException as e:  # reported by join()
            self.error = e

    def join(self, timeout=WAIT * 3):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the script did not end"
        if self.error is not None:
            raise self.error
        return self.result


def chat_client(sp, port, **kw):
    return sp.Connection(auto_restart=True, **kw).connect(scripts.ADR, port)


# --- simpleBroadcast / simpleChat ---------------------------------------------------------


def check_v1_chat(port, both_accepted):
    """Two simpleChat-style clients on a v1 broadcast server at port."""
    a = chat_client(sp1, port, encoding="utf-8")
    b = chat_client(sp1, port, encoding="utf-8")
    both_accepted()
    try:
        assert a.sendData("ada : hi", 1) is True
        assert b.getData(WAIT) == "ada : hi".encode()
        assert b.sendData("bob : hi", 1) is True
        assert a.getData(WAIT) == "bob : hi".encode()
        a.sendData("ada : µ ça va")
        assert b.getData(WAIT) == "ada : µ ça va".encode()
        assert b.in_mode == 0
        # Bytes travel as base85 and are forwarded in the mode they came in.
        assert a.sendData(b"\x00\x1f\xff", 3) is True
        assert b.getData(WAIT) == b"\x00\x1f\xff"
        assert b.in_mode == 3
    finally:
        a.sendData(scripts.STOP)
        a.close()
        b.close()


def check_v2_chat(port, both_accepted):
    a = chat_client(sp2, port)
    b = chat_client(sp2, port)
    both_accepted()
    try:
        for value in ["ada : hi µù", 42, -1.5e300, b"\x00" * 100000]:
            a.sendData(value)
            got = b.getData(WAIT)
            assert got == value and type(got) is type(value)
    finally:
        a.sendData(scripts.STOP)
        a.close()
        b.close()


def test_chat_through_the_rust_broadcast_v1(run_example):
    prog = run_example("simple_broadcast", "--port", "0")

    def both_accepted():
        for _ in range(2):
            prog.expect(lambda l: l.startswith("new connection"))

    check_v1_chat(prog.listening_port(), both_accepted)
    assert prog.wait() == 0


def test_chat_through_the_rust_broadcast_v2(run_example):
    prog = run_example("simple_broadcast", "--v2", "--port", "0")
    port = prog.listening_port()
    a = chat_client(sp2, port)
    b = chat_client(sp2, port)
    # The Rust server forwards to the connections it has; wait until it has both.
    prog.expect(lambda l: l.startswith("new connection"))
    prog.expect(lambda l: l.startswith("new connection"))
    for value in ["ada : hi µù", 42, -1.5e300, b"\x00" * 100000]:
        a.sendData(value)
        got = b.getData(WAIT)
        assert got == value and type(got) is type(value)
    a.sendData(scripts.STOP)
    assert prog.wait() == 0
    a.close()
    b.close()


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_chat_through_the_python_broadcast(v2):
    sp = sp2 if v2 else sp1
    s = sp.Server(scripts.ADR, 0, 100) if v2 else sp.Server(scripts.ADR, 0, 100, "utf-8", allow_unpickle=False)
    server = Background(scripts.broadcast_server, sp, s, v2)

    def both_accepted():
        # The script does not take new connections; the test does, which waits for them.
        for _ in range(2):
            s.getConnection()

    if v2:
        check_v2_chat(s.port, both_accepted)
    else:
        check_v1_chat(s.port, both_accepted)
    seen = server.join()
    assert seen[-1] == (scripts.STOP if v2 else scripts.STOP.encode())


def test_python_broadcast_forwards_pickles_it_does_not_unpickle():
    """simpleBroadcast.py runs with allow_unpickle=False and forwards pickles as they are
    (force_mode): the receiving client unpickles them."""
    s = sp1.Server(scripts.ADR, 0, 100, "utf-8", allow_unpickle=False)
    server = Background(scripts.broadcast_server, sp1, s, False)
    a = chat_client(sp1, s.port, encoding="utf-8")
    b = chat_client(sp1, s.port, encoding="utf-8")
    s.getConnection()
    s.getConnection()
    try:
        with pytest.warns(UserWarning):
            a.sendData({"x": [1, 2.5, "µ"]}, 1)  # not str: pickled, mode 5
        assert b.getData(WAIT) == {"x": [1, 2.5, "µ"]}
        assert b.in_mode == 5
    finally:
        a.sendData(scripts.STOP)
        a.close()
        b.close()
    server.join()


def test_rust_chat_through_the_python_broadcast(run_example):
    s = sp1.Server(scripts.ADR, 0, 100, "utf-8", allow_unpickle=False)
    server = Background(scripts.broadcast_server, sp1, s, False)
    py = chat_client(sp1, s.port, encoding="utf-8")
    chat = run_example("simple_chat", "--port", str(s.port), "--name", "rust", stdin=True)
    chat.expect(lambda l: "onnected" in l)
    assert py.sendData("py : ready", 1) is True
    # The Rust client prints what the others say as ">>> ...".
    chat.send_line("hello µ")
    assert py.getData(WAIT) == "rust : hello µ".encode()
    py.sendData("py : hi")
    chat.expect(lambda l: l == ">>> py : hi")
    chat.send_line("/KTHXBYE")
    assert chat.wait() == 0
    server.join()
    py.close()


# --- ping-pong ----------------------------------------------------------------------------


def test_python_pingpong_client_against_the_rust_server(run_example):
    prog = run_example("pingpong_server", "--port", "0")
    port = prog.listening_port()
    assert scripts.pingpong_client(sp2, port, cycles=3) == 0
    scripts.stop_server(sp2, port)
    assert prog.wait() == 0


def test_rust_pingpong_client_against_the_python_server(run_example):
    s = sp2.Server(scripts.ADR, 0, 3)
    server = Background(scripts.pingpong_server, sp2, s)
    prog = run_example("pingpong_client", "--port", str(s.port), "--cycles", "3")
    assert prog.wait() == 0, prog.all
    assert server.join() == 3 * 6


def test_pingpong_python_against_itself():
    s = sp2.Server(scripts.ADR, 0, 3)
    server = Background(scripts.pingpong_server, sp2, s)
    assert scripts.pingpong_client(sp2, s.port, cycles=3) == 0
    c = scripts.stop_server(sp2, s.port)
    assert server.join() == 3 * 6
    c.close()


# --- instrument ---------------------------------------------------------------------------

SIDE = 64


def test_python_instrument_client_against_the_rust_server(run_example):
    prog = run_example("instrument_server", "--port", "0", "--size", str(SIDE))
    port = prog.listening_port()
    frames, errors = scripts.instrument_client(sp2, port, SIDE, cycles=2)
    assert (frames, errors) == (2 * 3, 0)
    scripts.stop_server(sp2, port)
    assert prog.wait() == 0


def test_rust_instrument_client_against_the_python_server(run_example):
    s = sp2.Server(scripts.ADR, 0, 3)
    server = Background(scripts.instrument_server, sp2, s, SIDE)
    prog = run_example(
        "instrument_client", "--port", str(s.port), "--size", str(SIDE), "--images", "3", "--connections", "2"
    )
    assert prog.wait() == 0, prog.all
    assert server.join() == 2 * 3


def test_instrument_python_against_itself():
    s = sp2.Server(scripts.ADR, 0, 3)
    server = Background(scripts.instrument_server, sp2, s, 512)
    frames, errors = scripts.instrument_client(sp2, s.port, 512, cycles=1)
    assert (frames, errors) == (3, 0)
    c = scripts.stop_server(sp2, s.port)
    assert server.join() == 3
    c.close()


def test_image_is_the_numpy_image():
    """The plain-Python image is the one the original computes with numpy."""
    np = pytest.importorskip("numpy")
    p = 3
    x = np.linspace(0.0, p * np.pi, SIDE)
    xx, yy = np.meshgrid(x, x)
    expected = np.array(np.cos(xx) * np.sin(yy), dtype="float32").tobytes()
    got = np.frombuffer(images.image(p, SIDE), dtype="<f4")
    assert np.allclose(got, np.frombuffer(expected, dtype="<f4"), atol=1e-7)
