"""serpy_rs.serpy: every method of the original serpy module, with its semantics."""

import pickle
import queue
import socket
import warnings

import pytest

import serpy_rs
import serpy_rs.serpy as sp
from conftest import WAIT

ADR = "127.0.0.1"


@pytest.fixture
def srv():
    s = sp.Server(ADR, 0, 5, "utf-8")
    yield s
    s.closeServer()


@pytest.fixture
def link(srv):
    c = sp.Connection(encoding="utf-8").connect(ADR, srv.port)
    p = srv.getConnection()
    yield c, p
    c.close()


def test_module_attributes():
    assert sp.queue is queue
    assert sp.queue.Empty is queue.Empty and sp.queue.Full is queue.Full
    assert sp.STIMEOUT == 0.050
    assert sp.main([]) == 0


def test_server_start_returns_self_and_lists_connections(srv):
    assert srv.start() is srv
    assert srv.port != 0 and srv.nb_conn == 5 and srv.encoding == "utf-8"
    c = sp.Connection().connect(ADR, srv.port)
    p = srv.getConnection()
    assert isinstance(p, sp.Connection)
    assert srv.getConnectionsList() == [p]
    assert srv.connections == [p]
    assert list(srv) == [p]
    assert len(srv) == 1
    assert srv.readableConnections() == []
    assert c.sendData("x", 1) is True
    # The same connection is the same object, whichever method hands it out.
    assert srv.readableConnections()[0] is srv.getConnectionsList()[0] is p
    assert not (srv.readableConnections()[0] != p)
    c.close()


def test_connect_returns_self_and_sets_adr(srv):
    c = sp.Connection()
    assert not c.isConnected() and not c.connected
    assert c.connect(ADR, srv.port) is c
    assert c.adr == (ADR, srv.port)
    assert c.isConnected() and c.connected
    assert c.encoding == "ascii" and c.auto_restart is False and c.allow_unpickle is True
    # Connecting again closes the first link and opens a new one.
    assert c.connect(ADR, srv.port) is c
    assert c.isConnected()
    c.close()
    assert not c.isConnected()


def test_send_modes_and_return_values(link):
    c, p = link
    assert c.sendData("plain") is None
    assert c.sendData("acked", 1) is True
    assert c.sendData("b85", 2) is None
    assert c.sendData("b85 acked", 3) is True
    assert c.sendData("pickled", 4) is None
    assert c.sendData("pickled acked", mode=5) is True
    got = []
    for _ in range(6):
        got.append((p.getData(WAIT), p.in_mode))
    assert got == [
        (b"plain", 0),
        (b"acked", 1),
        (b"b85", 2),
        (b"b85 acked", 3),
        # str in mode 4/5: the original pickles the encoded bytes.
        (b"pickled", 4),
        (b"pickled acked", 5),
    ]
    assert c.out_mode == 5


def test_numbers_travel_as_their_text(link):
    c, p = link
    c.sendData(42)
    c.sendData(1.5)
    c.sendData(10**30)
    c.sendData(1e16)
    assert [p.getData(WAIT) for _ in range(4)] == [b"42", b"1.5", str(10**30).encode(), b"1e+16"]


def test_bytes_switch_to_base85_with_a_warning(link):
    c, p = link
    with pytest.warns(UserWarning, match="using mode 2"):
        assert c.sendData(b"\x00\x1f\x04\x01") is None
    with pytest.warns(UserWarning, match="using mode 3"):
        assert c.sendData(b"\xff", 1) is True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert c.sendData(b"ok", 2) is None
    assert (p.getData(WAIT), p.in_mode) == (b"\x00\x1f\x04\x01", 2)
    assert (p.getData(WAIT), p.in_mode) == (b"\xff", 3)
    assert (p.getData(WAIT), p.in_mode) == (b"ok", 2)


def test_other_objects_are_pickled_and_unpickled(link):
    c, p = link
    obj = {"a": [1, 2.5, None], "b": ("µ", b"\x00")}
    with pytest.warns(UserWarning, match="using mode 4"):
        c.sendData(obj)
    with pytest.warns(UserWarning, match="using mode 5"):
        assert c.sendData([1, 2], 1) is True
    assert c.sendData({1, 2}, 5) is True
    assert p.getData(WAIT) == obj and p.in_mode == 4
    assert p.getData(WAIT) == [1, 2] and p.in_mode == 5
    assert p.getData(WAIT) == {1, 2}


def test_allow_unpickle_false_gives_the_pickle_bytes():
    s = sp.Server(ADR, 0, 5, "ascii", allow_unpickle=False)
    c = sp.Connection().connect(ADR, s.port)
    p = s.getConnection()
    assert p.allow_unpickle is False
    c.sendData([1, "x"], 5)
    raw = p.getData(WAIT)
    assert isinstance(raw, bytes) and pickle.loads(raw) == [1, "x"]
    p.allow_unpickle = True
    c.sendData([2], 5)
    assert p.getData(WAIT) == [2]
    c.close()
    s.closeServer()


def test_allow_unpickle_safe_reads_pickles_without_running_them():
    s = sp.Server(ADR, 0, 5, "ascii", allow_unpickle="safe")
    c = sp.Connection().connect(ADR, s.port)
    p = s.getConnection()
    c.sendData({"k": [1, 2.5]}, 5)
    assert p.getData(WAIT) == {"k": [1, 2.5]}
    c.sendData(ValueError("x"), 5)  # names a class: not read, handed out as it is
    assert isinstance(p.getData(WAIT), serpy_rs.Pickled)
    c.close()
    s.closeServer()


def test_force_mode_sends_pickle_bytes_as_a_pickle(link):
    c, p = link
    raw = pickle.dumps({"k": 1})
    with pytest.warns(UserWarning) as warned:
        c.sendData(raw, mode=4, force_mode=True)
    assert [str(w.message) for w in warned] == [
        "Wrong mode used, using mode 2 instead",
        "Discouraged. Forcing mode 4 instead of 2",
    ]
    assert p.getData(WAIT) == {"k": 1} and p.in_mode == 4
    with pytest.warns(UserWarning):
        assert c.sendData(raw, mode=5, force_mode=True) is True
    assert p.getData(WAIT) == {"k": 1} and p.in_mode == 5


def test_force_mode_forwards_bytes_in_their_mode(link):
    c, p = link
    with pytest.warns(UserWarning):
        c.sendData(b"text", mode=0, force_mode=True)
        assert c.sendData("µ".encode(), mode=1, force_mode=True) is True
        # Bytes that cannot travel raw still arrive as they are (in base85).
        c.sendData(b"\x1f\xff", mode=0, force_mode=True)
    assert (p.getData(WAIT), p.in_mode) == (b"text", 0)
    assert (p.getData(WAIT), p.in_mode) == ("µ".encode(), 1)
    assert p.getData(WAIT) == b"\x1f\xff"


def test_text_that_cannot_travel_raw_goes_as_base85(link):
    c, p = link
    c.sendData("a\x1fb")
    assert p.getData(WAIT) == b"a\x1fb"
    assert p.in_mode == 2


def test_encoding(srv):
    ascii_conn = sp.Connection().connect(ADR, srv.port)
    with pytest.raises(UnicodeError):
        ascii_conn.sendData("µ")
    with pytest.raises(serpy_rs.EncodingError):
        ascii_conn.sendData("µ")
    latin = sp.Connection(encoding="latin-1").connect(ADR, srv.port)
    p1 = srv.getConnection()
    p2 = srv.getConnection()
    latin.sendData("µ", 1)
    assert p2.getData(WAIT) == b"\xb5"
    assert not p1.isDataAvailable()
    with pytest.raises(LookupError):
        sp.Connection(encoding="no-such-codec")
    with pytest.raises(serpy_rs.Unsupported):
        sp.Connection(encoding="utf-16")
    ascii_conn.close()
    latin.close()


def test_get_data_timeout_raises_queue_empty(link):
    c, p = link
    with pytest.raises(sp.queue.Empty):
        p.getData(0.05)
    with pytest.raises(queue.Empty):
        c.getData(timeout=0)
    with pytest.raises(ValueError):
        c.getData(timeout=-1)


def test_is_data_available_and_iteration(link):
    c, p = link
    assert not p.isDataAvailable()
    for i in range(3):
        assert c.sendData(str(i), 1) is True
    assert p.isDataAvailable()
    assert list(p) == [b"0", b"1", b"2"]
    assert not p.isDataAvailable()
    assert list(p) == []


def test_acked_send_times_out_with_false_and_full_queue_raises_queue_full():
    # A peer that accepts and reads but never answers: no acknowledgement comes.
    lsock = socket.socket()
    lsock.bind((ADR, 0))
    lsock.listen(1)
    c = sp.Connection().connect(ADR, lsock.getsockname()[1])
    peer, _ = lsock.accept()
    try:
        assert c.sendData("no answer", 1, timeout=0.2) is False
        # A full outgoing queue: a connection with room for one message, nobody reading.
        native = serpy_rs.connect(ADR, lsock.getsockname()[1], outgoing_capacity=1, close_timeout=0.1)
        small = sp.Connection._wrap(native, _encoding="utf-8", encoding="utf-8",
                                     _allow_unpickle=False, in_mode=0, out_mode=0)
        blob = "x" * (1 << 20)
        with pytest.raises(queue.Full):
            for _ in range(1000):  # bounded: the socket buffers hold a few MiB
                small.sendData(blob, 0, timeout=0.2)
        native.close()
    finally:
        c.close()
        peer.close()
        lsock.close()


def test_enable_restart_reconnects_and_loses_nothing(srv):
    c = sp.Connection(encoding="utf-8", auto_restart=True).connect(ADR, srv.port)
    assert c.auto_restart is True
    p = srv.getConnection()
    p.close()  # the server side drops the link
    p2 = srv.getConnection()  # the client came back by itself
    assert c.sendData("after", 1) is True
    assert p2.getData(WAIT) == b"after"
    c.disableRestart()
    assert c.auto_restart is False
    p2.close()
    with pytest.raises(serpy_rs.Disconnected):
        c.getData(WAIT)  # the original blocked here forever
    assert not c.isConnected()
    c.enableRestart()
    assert c.auto_restart is True
    c.close()


def test_get_data_returns_what_arrived_before_the_disconnection(link):
    c, p = link
    c.sendData("last", 1)
    c.close()
    assert p.getData(WAIT) == b"last"
    with pytest.raises(serpy_rs.Disconnected):
        p.getData(WAIT)
    with pytest.raises(ConnectionError):
        p.getData(WAIT)


def test_close_then_send_raises_closed(link):
    c, p = link
    c.close()
    assert not c.isConnected()
    with pytest.raises(serpy_rs.Closed):
        c.sendData("x")
    c.close()  # twice is fine


def test_server_close_keeps_the_connections_and_close_server_ends_them():
    s = sp.Server(ADR, 0)
    c = sp.Connection().connect(ADR, s.port)
    p = s.getConnection()
    s.close()
    assert c.sendData("still here", 1) is True
    assert p.getData(WAIT) == b"still here"
    with pytest.raises(ConnectionError):
        sp.Connection().connect(ADR, s.port)
    s.closeServer()
    with pytest.raises(serpy_rs.Disconnected):
        c.getData(WAIT)
    c.close()


def test_invalid_and_empty():
    s = sp.Server(ADR, 0)
    c = sp.Connection().connect(ADR, s.port)
    with pytest.raises(serpy_rs.InvalidMode):
        c.sendData("x", 7)
    with pytest.raises(serpy_rs.EmptyMessage):
        c.sendData("")
    assert c.sendData("", 1) is True
    assert s.getConnection().getData(WAIT) == b""
    with pytest.raises(serpy_rs.Unsupported):
        sp.Connection(sock=socket.socket())
    c.close()
    s.closeServer()


def test_unconnected_connection():
    c = sp.Connection()
    assert not c.isDataAvailable()
    with pytest.raises(serpy_rs.Disconnected):
        c.getData(0)
    c.close()
    with pytest.raises(serpy_rs.Closed):
        c.start()


def test_connect_refused_is_a_connection_error():
    s = sp.Server(ADR, 0)
    port = s.port
    s.closeServer()
    with pytest.raises(ConnectionError) as e:
        sp.Connection().connect(ADR, port)
    assert isinstance(e.value, serpy_rs.ConnectError)


def test_bind_twice_is_an_os_error():
    s = sp.Server(ADR, 0)
    with pytest.raises(OSError):
        sp.Server(ADR, s.port)
    s.closeServer()
