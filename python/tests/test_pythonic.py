"""The Pythonic API: snake_case, context managers, iteration, typed errors, events,
buffers, threads."""

import array
import logging
import pickle
import socket
import sys
import threading
import time

import pytest

import serpy_rs
from serpy_rs import Mode
from conftest import WAIT

ADR = "127.0.0.1"


def test_round_trip_v1(pair):
    client, peer = pair
    client.send("hello")
    client.send(42)
    client.send(b"\x00\x1f", Mode.BASE85)
    client.send("sure?", Mode.PLAIN_ACK)
    assert [peer.get_data(timeout=WAIT) for _ in range(3)] == [b"hello", b"42", b"\x00\x1f"]
    assert peer.get_data_with_mode(timeout=WAIT) == (b"sure?", 1)
    assert peer.try_get_data() is None
    assert client.protocol == "v1"
    assert peer.peer_addr == client.local_addr
    assert client.peer_addr == (ADR, peer.local_addr[1])


def test_round_trip_v2(pair2):
    client, peer = pair2
    values = [123, 12.35, "yes µù", b"\x00" * 10, -(2**63)]
    for v in values:
        client.send(v)
    for v in values:
        got = peer.get_data(timeout=WAIT)
        assert got == v and type(got) is type(v)
    client.send("m")
    assert peer.get_data_with_mode(WAIT) == ("m", None)  # no modes over v2
    assert client.protocol == "v2"


def test_context_managers_close():
    with serpy_rs.Server(ADR, 0) as server:
        with serpy_rs.connect(ADR, server.port) as conn:
            peer = server.get_connection(timeout=WAIT)
            conn.send("x", 1)
        assert not conn.is_connected()
        with pytest.raises(serpy_rs.Closed):
            conn.send("y")
        assert peer.get_data(timeout=WAIT) == b"x"
    assert not peer.is_connected()
    with pytest.raises(serpy_rs.ConnectError):
        serpy_rs.connect(ADR, server.port, connect_timeout=2)


def test_iteration_ends_when_the_peer_is_gone(pair):
    client, peer = pair
    for i in range(5):
        client.send(str(i))
    client.send("end", Mode.PLAIN_ACK)
    assert peer.try_iter() == [b"0", b"1", b"2", b"3", b"4", b"end"]
    client.send("a")
    client.send("b", Mode.PLAIN_ACK)
    client.close()
    assert list(peer) == [b"a", b"b"]


def test_error_hierarchy():
    assert issubclass(serpy_rs.Timeout, serpy_rs.Error) and issubclass(serpy_rs.Timeout, TimeoutError)
    assert issubclass(serpy_rs.Disconnected, ConnectionError)
    assert issubclass(serpy_rs.ConnectError, ConnectionError)
    assert issubclass(serpy_rs.AddressError, OSError)
    assert issubclass(serpy_rs.EncodingError, UnicodeError)
    for name in serpy_rs._errors.__all__:
        cls = getattr(serpy_rs, name)
        assert issubclass(cls, serpy_rs.Error) and cls.__module__ == "serpy_rs"


def test_errors_carry_what_happened(pair):
    client, peer = pair
    with pytest.raises(serpy_rs.Timeout) as e:
        peer.get_data(timeout=0.05)
    assert e.value.operation == "get_data" and e.value.after == pytest.approx(0.05)
    assert "timed out" in str(e.value)
    with pytest.raises(serpy_rs.EmptyMessage) as e:
        client.send("")
    assert e.value.mode == 0
    with pytest.raises(serpy_rs.InvalidMode) as e:
        client.send("x", 6)
    assert e.value.mode == 6
    with pytest.raises(serpy_rs.InvalidMode):
        client.send("x", -1)
    with pytest.raises(TypeError):
        client.send("x", "fast")
    with pytest.raises(TypeError, match="send_object"):
        client.send([1, 2])
    with pytest.raises(OverflowError):
        client.send(2**64)
    with pytest.raises(ValueError):
        peer.get_data(timeout=-1)


def test_more_errors():
    with serpy_rs.Server(ADR, 0, encoding="ascii", max_message_size=10) as s:
        c = serpy_rs.connect(ADR, s.port, encoding="ascii", max_message_size=10)
        with pytest.raises(serpy_rs.EncodingError) as e:
            c.send("µ")
        assert e.value.encoding == "ascii"
        with pytest.raises(serpy_rs.MessageTooLarge) as e:
            c.send("x" * 11)
        assert (e.value.size, e.value.max) == (11, 10)
        c.close()
    with serpy_rs.Server(ADR, 0, protocol="v2") as s:
        c = serpy_rs.connect(ADR, s.port, protocol="v2")
        with pytest.raises(serpy_rs.Unsupported):
            c.send("x", Mode.PLAIN_ACK)
        c.close()
    with serpy_rs.Server(ADR, 0) as taken:
        with pytest.raises(serpy_rs.AddressError) as e:
            serpy_rs.Server(ADR, taken.port)  # the port is in use
        assert isinstance(e.value, OSError) and e.value.errno
    with pytest.raises(ValueError):
        serpy_rs.connect(ADR, 1, protocol="v3")
    with pytest.raises(ValueError):
        serpy_rs.Server(ADR, 0, encoding="utf-16")


class Custom:
    """A class of the test module: its pickle names it, so the safe reader refuses it."""

    def __init__(self, x):
        self.x = x

    def __eq__(self, other):
        return isinstance(other, Custom) and other.x == self.x


def test_pickles_are_read_safely_by_default(pair):
    client, peer = pair
    values = [
        {"a": 1, "b": [1.5, "µ", None, True], "c": (1, 2), 3: b"\x00"},
        2**100,
        -(2**70),
        1 + 2j,
        bytearray(b"ba"),
        {1, 2},
        frozenset({"x"}),
        [],
    ]
    for v in values:
        client.send_object(v)
    for v in values:
        got = peer.get_data(timeout=WAIT)
        assert got == v and type(got) is type(v)
    # A pickle the core will not read (it names a class) is handed out as it is.
    client.send_object(Custom(7))
    got = peer.get_data(timeout=WAIT)
    assert isinstance(got, serpy_rs.Pickled)
    assert got.loads() == Custom(7) and pickle.loads(got.data) == Custom(7)
    assert bytes(got) == got.data and len(got) == len(got.data)
    # A Pickled goes out as the pickle it is; allow_unpickle=True unpickles with pickle.
    peer.send(got)
    client.allow_unpickle = True
    assert client.get_data(timeout=WAIT) == Custom(7)
    client.send_object([1, 2], acked=True)
    assert peer.get_data_with_mode(WAIT) == ([1, 2], 5)


def test_numpy_arrays_in_pickles_are_read_safely(pair):
    np = pytest.importorskip("numpy")
    client, peer = pair
    for a in (np.arange(12, dtype="<u2").reshape(3, 4), np.asfortranarray(np.ones((2, 3))),
              np.array([1 + 2j], dtype=">c16")):
        client.send_object(a)
        got = peer.get_data(timeout=WAIT)
        assert isinstance(got, np.ndarray) and got.dtype == a.dtype and got.shape == a.shape
        assert (got == a).all() and got.flags.writeable


def test_buffers(pair2):
    client, peer = pair2
    ba = bytearray(b"abc")
    client.send(ba)
    ba[0] = ord("X")  # copied by default: the message is unaffected
    client.send(memoryview(b"readonly"))
    client.send(memoryview(b"abcdef")[::2])  # not contiguous: copied
    client.send(array.array("h", [1, -1]))
    shared = bytearray(b"shared")
    client.send(shared, copy=False)
    assert [peer.get_data(timeout=WAIT) for _ in range(5)] == [
        b"abc",
        b"readonly",
        b"ace",
        array.array("h", [1, -1]).tobytes(),
        b"shared",
    ]


def test_bytes_are_shared_with_the_core_not_copied():
    """A peer that never reads keeps large messages queued: the core then holds the very
    bytes object that was sent (one more reference, no copy), and a buffer sent with
    copy=False stays exported (locked against resizing) until it is written or dropped."""
    raw = socket.socket()
    raw.bind((ADR, 0))
    raw.listen(1)
    conn = serpy_rs.connect(ADR, raw.getsockname()[1], protocol="v2", close_timeout=0.1)
    mute, _ = raw.accept()
    try:
        blob = bytes(32 << 20)  # more than the socket buffers take
        before = sys.getrefcount(blob)
        conn.send(blob)
        assert sys.getrefcount(blob) == before + 1
        shared = bytearray(1 << 20)
        conn.send(shared, copy=False)
        with pytest.raises(BufferError):
            shared.extend(b"x")
        copied = bytearray(1000)
        conn.send(copied)
        copied.extend(b"x")  # copied: free to change at once
        conn.close()  # drops what was never written
        conn.is_connected()  # the next call into the module releases what the core let go
        assert sys.getrefcount(blob) == before
        shared.extend(b"x")
    finally:
        conn.close()
        mute.close()
        raw.close()


def test_numpy_arrays_are_sent_as_bytes(pair2):
    np = pytest.importorskip("numpy")
    client, peer = pair2
    img = np.arange(64, dtype="float32").reshape(8, 8)
    client.send(img)
    client.send(img.T)  # not contiguous: copied
    assert peer.get_data(timeout=WAIT) == img.tobytes()
    assert peer.get_data(timeout=WAIT) == img.T.tobytes()


def test_server_methods():
    with serpy_rs.Server(ADR, 0, max_connections=8) as server:
        assert server.local_addr == (ADR, server.port)
        assert server.try_get_connection() is None
        with pytest.raises(serpy_rs.Timeout):
            server.get_connection(timeout=0.01)
        a = serpy_rs.connect(ADR, server.port)
        b = serpy_rs.connect(ADR, server.port)
        pa = server.get_connection(timeout=WAIT)
        pb = server.get_connection(timeout=WAIT)
        assert len(server) == 2 and set(server) == {pa, pb} and set(server.connections()) == {pa, pb}
        a.send("from a", 1)
        assert server.readable_connections() == [pa]
        conn, msg, mode = server.recv_any(timeout=WAIT)
        assert (conn, msg, mode) == (pa, b"from a", 1)
        assert server.broadcast("all").sent == 2
        assert a.get_data(timeout=WAIT) == b"all" and b.get_data(timeout=WAIT) == b"all"
        assert server.broadcast(b"\x00\x01", timeout=WAIT).sent == 2
        assert a.get_data(timeout=WAIT) == b"\x00\x01" and b.get_data(timeout=WAIT) == b"\x00\x01"
        with pytest.raises(serpy_rs.Timeout):
            server.recv_any(timeout=0.01)
        server.close()  # stops accepting; connections go on
        b.send("still", 1)
        assert pb.get_data(timeout=WAIT) == b"still"
        a.close()
        b.close()


def test_auto_protocol_server_serves_both():
    with serpy_rs.Server(ADR, 0, protocol="auto") as server:
        v1 = serpy_rs.connect(ADR, server.port)
        v2 = serpy_rs.connect(ADR, server.port, protocol="v2")
        v1.send("one", 1)
        v2.send(2)
        got = {server.recv_any(timeout=WAIT)[1] for _ in range(2)}
        assert got == {b"one", 2}
        v1.close()
        v2.close()


def test_events_of_a_reconnect(server):
    before = time.time()
    client = serpy_rs.connect(ADR, server.port, auto_restart=True, reconnect_backoff=(0.01, 0.1))
    peer = server.get_connection(timeout=WAIT)
    first = client.next_event(timeout=WAIT)
    assert first.kind == "connected" and first.peer == (ADR, server.port)
    # Every event carries the connection's id and its time (seconds since the epoch).
    assert first.id == client.id
    assert isinstance(first.at, float) and before - 1 <= first.at <= time.time() + 1
    assert repr(first).startswith(f"<serpy_rs.Event #{client.id} connected")
    peer.close()
    server.get_connection(timeout=WAIT)
    kinds = []
    while "reconnected" not in kinds:
        ev = client.next_event(timeout=WAIT)
        assert ev is not None, kinds
        kinds.append(ev.kind)
        if ev.kind == "disconnected":
            assert ev.reconnecting is True and ev.reason
        if ev.kind == "reconnected":
            assert ev.attempts >= 1 and str(ev)
    assert "disconnected" in kinds
    assert client.next_event() is None
    assert client.events() == []
    client.close()


def test_closed_is_the_last_event(server):
    client = serpy_rs.connect(ADR, server.port)
    client.close()
    events = client.events()
    kinds = [e.kind for e in events]
    assert kinds and kinds[-1] == "closed", kinds
    assert all(e.id == client.id for e in events)


def test_blocking_calls_release_the_gil(pair):
    """A thread blocked in get_data lets the others run: here the main thread, which sends
    what the blocked thread waits for. Without the GIL released this would hang."""
    client, peer = pair
    got = []
    t = threading.Thread(target=lambda: got.append(peer.get_data(timeout=WAIT)))
    t.start()
    total = sum(i * i for i in range(200000))  # Python work while the other thread waits
    client.send(str(total), Mode.PLAIN_ACK)
    t.join(WAIT)
    assert got == [str(total).encode()]


def test_many_threads_send_acknowledged_messages(pair):
    client, peer = pair
    n_threads, per_thread = 8, 50
    results = []

    def sender(k):
        for i in range(per_thread):
            client.send("{}:{}".format(k, i), Mode.PLAIN_ACK)
        results.append(k)

    threads = [threading.Thread(target=sender, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    received = [peer.get_data(timeout=WAIT).decode() for _ in range(n_threads * per_thread)]
    for t in threads:
        t.join(WAIT)
    assert sorted(results) == list(range(n_threads))
    # Each sender's messages arrive in its order.
    for k in range(n_threads):
        mine = [int(m.split(":")[1]) for m in received if m.startswith("{}:".format(k))]
        assert mine == list(range(per_thread))


def test_modes_enum():
    assert [int(m) for m in Mode] == [0, 1, 2, 3, 4, 5]
    assert Mode(5) is Mode.PICKLE_ACK


def test_core_warnings_reach_python_logging(pair, caplog):
    client, peer = pair
    with caplog.at_level(logging.WARNING):
        serpy_rs.reset_logging()  # the levels are cached: tell the module they changed
        client.send("a\x1fb", Mode.PLAIN_ACK)
    assert peer.get_data(timeout=WAIT) == b"a\x1fb"
    warned = [r for r in caplog.records if r.name.startswith("serpy") and "0x1F" in r.getMessage()]
    assert warned and warned[0].levelno == logging.WARNING


def _thread_names():
    import os

    names = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open("/proc/self/task/{}/comm".format(tid)) as f:
                names.append(f.read().strip())
        except OSError:
            pass  # ended meanwhile
    return names


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/task")
def test_close_ends_the_threads_it_started(server):
    """close() returns once the connection's threads have ended, the helper of its
    acknowledged sends included."""
    client = serpy_rs.connect(ADR, server.port)
    peer = server.get_connection(timeout=WAIT)
    prefix = "serpy-py-ack-{}".format(client.id)[:15]  # names are cut to 15 bytes
    client.send("x", Mode.PLAIN_ACK)
    assert peer.get_data(timeout=WAIT) == b"x"
    assert any(n == prefix for n in _thread_names())
    ours = {"serpy-rd-{}".format(client.id)[:15], "serpy-wr-{}".format(client.id)[:15], prefix}
    client.close()
    assert not ours & set(_thread_names())
