"""The core's live-instrument features from Python: the full-queue policies and byte
budget, broadcast reports, statistics, server-wide events, liveness, unproven
connections, background connects."""

import socket
import threading
import time

import pytest

import serpy_rs
from conftest import WAIT

ADR = "127.0.0.1"
MIB = 1024 * 1024


def wait_event(source, kind):
    """The first event of ``kind`` from a Connection or Server (WAIT as upper bound)."""
    seen = []
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        ev = source.next_event(timeout=max(0.0, deadline - time.monotonic()))
        if ev is None:
            break
        if ev.kind == kind:
            return ev
        seen.append(ev.kind)
    pytest.fail(f"no {kind!r} event within {WAIT} s; saw {seen}")


@pytest.mark.parametrize(
    "bad",
    ["keep", ("keep_latest", 0), ("keep_latest", True), ("keep_latest", "2"),
     ("disconnect", -1.0), ("drop", 1), 3, ("block",)],
)
def test_full_queue_rejects_what_it_does_not_know(bad):
    with pytest.raises(ValueError, match="full_queue"):
        serpy_rs.Server(ADR, 0, full_queue=bad)


@pytest.mark.parametrize("policy", ["block", ("keep_latest", 3), ("disconnect", 2.5)])
def test_full_queue_accepts_the_three_policies(policy):
    with serpy_rs.Server(ADR, 0, full_queue=policy) as server:
        with serpy_rs.connect(ADR, server.port, full_queue=policy) as c:
            c.send("hi")
            conn, msg, _ = server.recv_any(timeout=WAIT)
            assert msg == b"hi"


def test_new_options_are_checked():
    with pytest.raises(ValueError, match="outgoing_bytes"):
        serpy_rs.Server(ADR, 0, outgoing_bytes=0)
    with pytest.raises(ValueError, match="max_unproven"):
        serpy_rs.Server(ADR, 0, max_unproven=0)
    with pytest.raises(ValueError, match="idle_timeout"):
        serpy_rs.Server(ADR, 0, idle_timeout=-1.0)
    assert serpy_rs.DEFAULT_OUTGOING_BYTES > 0


def _silent_peer(server):
    """A raw socket that connects to ``server`` and never reads, and its Connection."""
    raw = socket.create_connection((ADR, server.port))
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return raw, server.get_connection(timeout=WAIT)


def test_keep_latest_drops_are_counted_reported_and_in_the_broadcast():
    with serpy_rs.Server(ADR, 0, full_queue=("keep_latest", 2)) as server:
        raw, peer = _silent_peer(server)
        frame = bytes(MIB)
        reports = [server.broadcast(frame) for _ in range(64)]
        assert all(r.sent == 1 and r.is_complete() for r in reports)
        total = sum(r.dropped_total for r in reports)
        assert total > 0, "64 MiB to a peer that does not read: some must be dropped"
        with_drops = [r for r in reports if r.dropped_total]
        assert all(r.dropped() == [(peer, r.dropped_total)] for r in with_drops)
        assert peer.stats().dropped >= total
        assert server.stats().dropped >= total
        ev = wait_event(peer, "dropped")
        assert ev.messages >= 1 and ev.id == peer.id
        raw.close()


def test_a_full_byte_budget_is_outgoing_bytes_full():
    with serpy_rs.Server(ADR, 0, outgoing_bytes=256 * 1024) as server:
        raw, peer = _silent_peer(server)
        frame = bytes(100 * 1024)
        failure = None
        for _ in range(1000):  # at most ~100 MiB; the socket buffers hold far less
            report = server.broadcast(frame)
            if report.failures():
                failure = report.failures()[0]
                break
        assert failure is not None, "the budget never filled"
        conn, err = failure
        assert conn == peer
        assert isinstance(err, serpy_rs.OutgoingBytesFull)
        assert isinstance(err, serpy_rs.QueueFull) and isinstance(err, serpy_rs.Error)
        assert err.limit == 256 * 1024 and err.queued > 0 and "outgoing_bytes" in str(err)
        assert report.sent == 0 and not report.is_complete()
        assert report.results() == [(peer, err)]
        raw.close()


def test_broadcast_to_reaches_only_the_chosen(server):
    a = serpy_rs.connect(ADR, server.port)
    pa = server.get_connection(timeout=WAIT)
    b = serpy_rs.connect(ADR, server.port)
    server.get_connection(timeout=WAIT)
    report = server.broadcast_to([pa], "only a")
    assert len(report) == 1 and report.sent == 1 and report.results() == [(pa, None)]
    assert report.failures() == [] and report.dropped() == [] and report.dropped_total == 0
    assert a.get_data(timeout=WAIT) == b"only a"
    assert server.broadcast("all").sent == 2
    assert b.get_data(timeout=WAIT) == b"all"  # b never got "only a"
    assert a.get_data(timeout=WAIT) == b"all"
    assert len(server.broadcast_to([], "nobody")) == 0
    a.close()
    b.close()


def test_stats_of_a_connection_and_a_server(server):
    before = time.time()
    client = serpy_rs.connect(ADR, server.port)
    peer = server.get_connection(timeout=WAIT)
    for i in range(3):
        client.send(f"m{i}")
    client.send("acked", 1)
    for i in range(3):
        assert peer.get_data(timeout=WAIT) == f"m{i}".encode()
    assert peer.get_data(timeout=WAIT) == b"acked"
    cs = client.stats()
    assert cs.connections == 1 and cs.messages_out == 4 and cs.bytes_out > 0
    assert cs.acked == 1 and cs.ack_rtt_last is not None and cs.ack_rtt_last >= 0
    assert cs.ack_rtt_mean is not None
    ps = peer.stats()
    assert ps.messages_in == 4 and ps.bytes_in > 0 and ps.queued_in == 0
    assert ps.last_received is not None and before - 1 <= ps.last_received <= time.time() + 1
    assert str(ps) == ps.text and str(ps) and "\n" not in str(ps)
    assert repr(ps).startswith("<serpy_rs.Stats ")
    ss = server.stats()
    assert ss.connections == 1 and ss.messages_in == 4 and ss.dropped == 0
    assert str(ss)
    client.close()


def test_server_events_accepted_and_refused():
    with serpy_rs.Server(ADR, 0, max_connections=1) as server:
        a = serpy_rs.connect(ADR, server.port)
        pa = server.get_connection(timeout=WAIT)
        ev = wait_event(server, "accepted")
        assert ev.id == pa.id and ev.peer == a.local_addr and isinstance(ev.at, float)
        b = serpy_rs.connect(ADR, server.port)  # accepted by the system, then refused
        ev = wait_event(server, "refused")
        assert ev.refusal == "too_many_connections" and ev.limit == 1
        assert ev.peer == b.local_addr and ev.reason
        b.close()
        a.close()
        assert isinstance(server.events(), list)


def test_idle_timeout_declares_a_silent_peer_dead():
    with socket.socket() as listener:
        listener.bind((ADR, 0))
        listener.listen(1)
        client = serpy_rs.connect(ADR, listener.getsockname()[1], idle_timeout=0.3)
        raw, _ = listener.accept()  # accepts, never sends
        ev = wait_event(client, "idle_timeout")
        assert ev.after == pytest.approx(0.3) and ev.id == client.id
        wait_event(client, "disconnected")
        client.close()
        raw.close()


def test_first_message_timeout_closes_unproven_sockets():
    with serpy_rs.Server(ADR, 0, first_message_timeout=0.2, max_unproven=4) as server:
        raw = socket.create_connection((ADR, server.port))  # says nothing
        ev = wait_event(server, "unproven")
        assert ev.reason
        raw.settimeout(WAIT)
        assert raw.recv(1) == b"", "the server closes the silent socket"
        raw.close()


def test_connect_in_background_queues_until_the_server_comes():
    with socket.socket() as s:
        s.bind((ADR, 0))
        port = s.getsockname()[1]  # free once closed
    with pytest.raises(serpy_rs.ConnectError):
        serpy_rs.connect(ADR, port)
    client = serpy_rs.connect(ADR, port, connect_in_background=True,
                              reconnect_backoff=(0.01, 0.05))
    client.send("sent before the server was up")
    with serpy_rs.Server(ADR, port) as server:
        _, msg, _ = server.recv_any(timeout=WAIT)
        assert msg == b"sent before the server was up"
        assert wait_event(client, "connected").peer == (ADR, port)
        client.close()


def test_next_event_returns_once_the_events_have_ended(server):
    """After close() the events end: next_event(timeout=None) gives None at once instead
    of waiting (and spinning) for ever."""
    client = serpy_rs.connect(ADR, server.port)
    client.close()
    assert [e.kind for e in client.events()][-1] == "closed"
    got = []
    t = threading.Thread(target=lambda: got.append(client.next_event(timeout=None)), daemon=True)
    t.start()
    t.join(WAIT)
    assert not t.is_alive(), "next_event(None) kept waiting after the events ended"
    assert got == [None]


def test_disconnect_policy_drops_a_peer_that_does_not_drain():
    with serpy_rs.Server(ADR, 0, full_queue=("disconnect", 0.3)) as server:
        raw, peer = _silent_peer(server)
        frame = bytes(MIB)
        for _ in range(32):  # 32 MiB: more than the socket buffers hold; never waits
            server.broadcast(frame)
        ev = wait_event(peer, "disconnected")
        assert ev.reason and ev.reconnecting is False
        assert peer.stats().policy_disconnects == 1
        assert server.broadcast(frame).sent == 0
        raw.close()
