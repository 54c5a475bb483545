"""serpy_rs.serpy2: every method of the original serpy2 module, with its semantics."""

import array
import math
import queue

import pytest

import serpy_rs
import serpy_rs.serpy2 as sp
from conftest import WAIT

ADR = "127.0.0.1"


@pytest.fixture
def link():
    s = sp.Server(ADR, 0)
    c = sp.Connection().connect(ADR, s.port)
    p = s.getConnection()
    yield s, c, p
    c.close()
    s.closeServer()


def test_module_attributes():
    assert sp.queue is queue
    assert sp.STIMEOUT == 0.010 and sp.QUEUELEN == 20
    assert sp.BLOCKIDCODE == b"\xde\xca\xfe\xca\xfe" and sp.HEADLEN == 14


def test_values_keep_their_type(link):
    s, c, p = link
    values = [123, "hello", 12.35, -1e6, 600000, "yes µù", b"\x00\xff" * 1000, b"", "",
              -(2**63), 2**63 - 1, math.inf, -0.0, 5e-324]
    for v in values:
        assert c.sendData(v) is None
    for v in values:
        got = p.getData(WAIT)
        assert got == v and type(got) is type(v)
    c.sendData(math.nan)
    assert math.isnan(p.getData(WAIT))


def test_connect_again_warns_and_reconnects(link):
    s, c, p = link
    with pytest.warns(UserWarning, match="Already connected"):
        assert c.connect(ADR, s.port) is c
    p2 = s.getConnection()
    c.sendData("again")
    assert p2.getData(WAIT) == "again"


def test_unsupported_types(link):
    s, c, p = link
    for bad in ([1], {"a": 1}, None, True, object()):
        with pytest.raises(TypeError, match="Unsupported data type"):
            c.sendData(bad)
    with pytest.raises(OverflowError):
        c.sendData(2**64)


def test_buffers_are_sent_as_bytes(link):
    s, c, p = link
    c.sendData(bytearray(b"ba"))
    c.sendData(memoryview(b"mv"))
    c.sendData(array.array("B", [1, 2, 3]))
    assert [p.getData(WAIT) for _ in range(3)] == [b"ba", b"mv", b"\x01\x02\x03"]


def test_large_blob(link):
    s, c, p = link
    blob = bytes(range(256)) * (32 << 10)  # 8 MiB
    c.sendData(blob)
    assert p.getData(WAIT) == blob


def test_server_methods(link):
    s, c, p = link
    assert s.start() is s
    assert s.getConnectionsList() == [p] and list(s) == [p] and len(s) == 1
    assert s.readableConnections() == []
    c.sendData("x")
    assert p.getData(WAIT) == "x"
    p.sendData(1)
    assert c.getData(WAIT) == 1
    assert not c.isDataAvailable()


def test_timeout_and_iteration(link):
    s, c, p = link
    with pytest.raises(sp.queue.Empty):
        p.getData(timeout=0.02)
    for v in (1, 2, 3):
        c.sendData(v)
    assert p.getData(WAIT) == 1
    # Iteration yields what arrives until nothing comes for STIMEOUT.
    got = []
    while len(got) < 2:
        got.extend(p)
    assert got == [2, 3]


def test_too_many_connections_are_refused_and_the_server_goes_on():
    s = sp.Server(ADR, 0, 1)
    a = sp.Connection().connect(ADR, s.port)
    s.getConnection()
    b = sp.Connection().connect(ADR, s.port)  # accepted by TCP, then closed by the server
    with pytest.raises(serpy_rs.Disconnected):
        b.getData(WAIT)
    a.sendData("still served")
    assert s.getConnectionsList()[0].getData(WAIT) == "still served"
    a.close()
    b.close()
    s.closeServer()


def test_auto_restart(link):
    s, c, p = link
    c.enableRestart()
    p.close()
    p2 = s.getConnection()
    c.sendData("back")
    assert p2.getData(WAIT) == "back"
    c.disableRestart()
    p2.close()
    with pytest.raises(serpy_rs.Disconnected):
        c.getData(WAIT)
