//! Issue 10, the sending side: the outgoing byte budget, the full-queue policies
//! (`FullQueue`), broadcast under those policies, and the statistics.
//!
//! A frozen peer is either a raw socket that never reads (its receive buffer fills), or
//! a serpy client with an incoming budget of one byte whose program does not read (its
//! reader stops reading the socket), which the test can later drain to see exactly what
//! arrived. Every wait is on an event, a message or a thread, bounded by `T`.

mod common;

use std::collections::HashMap;
use std::net::TcpStream;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{pair, server, wait_event, T};
use serpy::{
    Bytes, Connection, ConnectionBuilder, Error, Event, EventKind, FullQueue, Message, Mode,
    Protocol, ServerBuilder,
};

/// A frame of `len` bytes whose first 8 bytes are `seq`.
fn frame(seq: u64, len: usize) -> Bytes {
    let mut v = vec![0u8; len.max(8)];
    v[..8].copy_from_slice(&seq.to_le_bytes());
    Bytes::from(v)
}

fn seq_of(m: &Message) -> u64 {
    let b = m.as_bytes().expect("a bytes frame");
    u64::from_le_bytes(b[..8].try_into().unwrap())
}

/// A v2 client whose program does not read: after one message its reader stops reading
/// the socket, so that the sender's queue fills; `get_data` later drains it.
fn frozen_client() -> ConnectionBuilder {
    Connection::builder()
        .protocol(Protocol::V2)
        .incoming_bytes(1)
}

fn v2_server(b: ServerBuilder) -> serpy::Server {
    server(b.protocol(Protocol::V2))
}

/// Sum of the `EventKind::Dropped` counts of `conn` until it reaches `want` (bounded by `T`).
fn wait_dropped_events(conn: &Connection, want: u64) {
    let events = conn.events();
    let deadline = std::time::Instant::now() + T;
    let mut sum = 0;
    while sum < want {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match events.recv_timeout(left) {
            Ok(Event {
                kind: EventKind::Dropped { messages },
                ..
            }) => sum += messages,
            Ok(_) => {}
            Err(_) => panic!("Dropped events add up to {sum} of {want} within {T:?}"),
        }
    }
    assert_eq!(sum, want, "Dropped events report more than was dropped");
}

// ---- item 1: the outgoing byte budget -------------------------------------------------

#[test]
fn the_outgoing_byte_budget_bounds_what_a_peer_that_does_not_read_pins() {
    assert_eq!(serpy::DEFAULT_OUTGOING_BYTES, 64 << 20);
    let server = v2_server(ServerBuilder::new().outgoing_bytes(4 << 20));
    // A raw peer that never reads: the socket's buffers fill, then the queue.
    let raw = TcpStream::connect(server.local_addr()).unwrap();
    let peer = server.get_connection_timeout(T).unwrap();
    let mut accepted = 0;
    let err = loop {
        // The count bound (1024 messages) would take all 64 MiB; the byte budget must not.
        assert!(accepted < 64, "64 MiB queued for a peer that reads nothing");
        match peer.send_data_timeout(
            frame(accepted, 1 << 20),
            Mode::Plain,
            Duration::from_millis(300),
        ) {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
    };
    assert!(
        matches!(&err, Error::Timeout { operation, .. } if operation.contains("byte budget")),
        "{err}"
    );
    let stats = peer.stats();
    assert!(
        stats.queued_out_bytes <= (4 << 20) + (1 << 20) + 64,
        "{} bytes queued, budget 4 MiB",
        stats.queued_out_bytes
    );
    // A broadcast never waits: this peer misses the message, with a reason.
    let report = server.broadcast(frame(999, 1 << 20)).unwrap();
    let (_, why) = report.failures().next().expect("the full peer misses it");
    assert!(
        matches!(why, Error::OutgoingBytesFull { limit, .. } if *limit == 4 << 20),
        "{why}"
    );
    drop(raw);
}

#[test]
fn senders_waiting_for_the_byte_budget_are_all_woken() {
    // The server's program reads one frame at a time: its reader waits for it.
    let server = v2_server(ServerBuilder::new().incoming_bytes(1));
    let (client, peer) = pair(
        &server,
        Connection::builder()
            .protocol(Protocol::V2)
            .outgoing_bytes(2 << 20),
    );
    // Three threads wait for room in a budget of two frames while the peer is frozen.
    let senders: Vec<_> = (0..3u64)
        .map(|t| {
            let client = client.clone();
            thread::spawn(move || {
                for i in 0..20 {
                    client
                        .send_data_timeout(frame(t * 100 + i, 1 << 20), Mode::Plain, T)
                        .expect("woken for room within T");
                }
            })
        })
        .collect();
    let mut got = 0;
    while got < 60 {
        peer.get_data_timeout(T).expect("every frame arrives");
        got += 1;
    }
    for s in senders {
        s.join().unwrap();
    }
    let stats = client.stats();
    assert_eq!((stats.messages_out, stats.dropped), (60, 0), "{stats}");
}

#[test]
fn a_sender_waiting_for_the_byte_budget_learns_when_the_peer_goes() {
    let server = v2_server(ServerBuilder::new().outgoing_bytes(2 << 20));
    let raw = TcpStream::connect(server.local_addr()).unwrap();
    let peer = server.get_connection_timeout(T).unwrap();
    // Fill the socket and the budget: a send then times out waiting for room.
    let mut seq = 0;
    loop {
        assert!(seq < 64, "the budget never filled");
        match peer.send_data_timeout(frame(seq, 1 << 20), Mode::Plain, Duration::from_millis(200)) {
            Ok(()) => seq += 1,
            Err(Error::Timeout { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    // A send with no timeout waits for room; only the end of the link may end it.
    let (tx, rx) = mpsc::channel();
    let sender = {
        let peer = peer.clone();
        thread::spawn(move || {
            let _ = tx.send(peer.send_data(frame(999, 1 << 20), Mode::Plain));
        })
    };
    // The peer goes with unread data (a reset): the waiting sender is woken.
    drop(raw);
    let r = rx.recv_timeout(T).expect("the waiting sender is woken");
    assert!(matches!(&r, Err(e) if e.is_final()), "{r:?}");
    sender.join().unwrap();
}

// ---- item 2: the full-queue policies --------------------------------------------------

#[test]
fn keep_latest_drops_the_oldest_counts_them_and_keeps_the_newest() {
    let server = v2_server(ServerBuilder::new().full_queue(FullQueue::KeepLatest(3)));
    let (client, peer) = pair(&server, frozen_client());
    const N: u64 = 600; // 600 x 64 KiB: far more than the socket buffers hold
    for seq in 0..N {
        // Never waits for room: the bound only stops a hang from hanging the test.
        peer.send_data_timeout(frame(seq, 64 << 10), Mode::Plain, T)
            .unwrap();
    }
    let stats = peer.stats();
    assert!(stats.dropped > 0, "nothing dropped: {stats}");
    assert!(stats.queued_out <= 3, "{stats}");
    // Drain the frozen client: every message it got, in order, the newest last.
    let mut got = Vec::new();
    while got.last() != Some(&(N - 1)) {
        got.push(seq_of(&client.get_data_timeout(T).unwrap()));
    }
    assert!(got.windows(2).all(|w| w[0] < w[1]), "out of order: {got:?}");
    let dropped = peer.stats().dropped;
    assert_eq!(
        got.len() as u64 + dropped,
        N,
        "a message went missing silently"
    );
    wait_dropped_events(&peer, dropped);
}

#[test]
fn keep_latest_never_drops_an_acknowledged_send() {
    let server = server(ServerBuilder::new().full_queue(FullQueue::KeepLatest(2)));
    let (client, peer) = pair(&server, Connection::builder().incoming_bytes(1));
    let text = |seq: u64| format!("{seq:08}{}", "x".repeat(64 << 10));
    for seq in 0..300 {
        peer.send_data_timeout(text(seq), Mode::Plain, T).unwrap();
    }
    // The acknowledged send waits behind the frozen queue: it times out, but stays queued.
    let r = peer.send_data_timeout("acked", Mode::PlainAck, Duration::from_millis(200));
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    let before = peer.stats().dropped;
    for seq in 300..600 {
        peer.send_data_timeout(text(seq), Mode::Plain, T).unwrap();
    }
    assert!(
        peer.stats().dropped > before,
        "nothing dropped after the acked send"
    );
    let mut got = Vec::new();
    loop {
        let m = client.get_data_timeout(T).unwrap();
        let s = m.as_str().unwrap().to_string();
        if s == "acked" {
            got.push(u64::MAX);
            continue;
        }
        let seq: u64 = s[..8].parse().unwrap();
        got.push(seq);
        if seq == 599 {
            break;
        }
    }
    let at = got
        .iter()
        .position(|&s| s == u64::MAX)
        .expect("the acknowledged message was dropped");
    assert!(got[..at].iter().all(|&s| s < 300), "{got:?}");
    assert!(got[at + 1..].iter().all(|&s| s >= 300), "{got:?}");
    let plain = got.len() as u64 - 1;
    assert_eq!(plain + peer.stats().dropped, 600);
}

#[test]
fn disconnect_takes_down_a_peer_that_reads_nothing_for_the_given_time() {
    let server = v2_server(
        ServerBuilder::new().full_queue(FullQueue::Disconnect(Duration::from_millis(200))),
    );
    let raw = TcpStream::connect(server.local_addr()).unwrap();
    let peer = server.get_connection_timeout(T).unwrap();
    let sender = {
        let peer = peer.clone();
        thread::spawn(move || {
            for seq in 0..256 {
                if let Err(e) = peer.send_data_timeout(frame(seq, 1 << 20), Mode::Plain, T) {
                    return Some(e);
                }
            }
            None
        })
    };
    let event = wait_event(&peer, "Disconnected", |e| {
        matches!(&e.kind, EventKind::Disconnected { .. })
    });
    let EventKind::Disconnected { reason, .. } = event.kind else {
        unreachable!()
    };
    assert!(reason.contains("read nothing"), "{reason}");
    let err = sender
        .join()
        .unwrap()
        .expect("the sender learns that the peer is gone");
    assert!(err.is_final(), "{err}");
    assert_eq!(peer.stats().policy_disconnects, 1);
    drop(raw);
}

#[test]
fn disconnect_makes_a_client_with_auto_restart_reconnect() {
    // The server's program does not read: its reader stops, the client's writes stall.
    let server = v2_server(ServerBuilder::new().incoming_bytes(1));
    let client = Connection::builder()
        .protocol(Protocol::V2)
        .auto_restart(true)
        .full_queue(FullQueue::Disconnect(Duration::from_millis(200)))
        .connect(server.local_addr())
        .unwrap();
    let first = server.get_connection_timeout(T).unwrap();
    let sender = {
        let client = client.clone();
        thread::spawn(move || {
            // Bounded: stops at the first error, or once the link came back.
            for seq in 0..64 {
                if client.stats().reconnects > 0 {
                    return;
                }
                if client
                    .send_data_timeout(frame(seq, 1 << 20), Mode::Plain, Duration::from_secs(2))
                    .is_err()
                {
                    return;
                }
            }
        })
    };
    let e = wait_event(&client, "Disconnected", |e| {
        matches!(&e.kind, EventKind::Disconnected { .. })
    });
    assert!(
        matches!(&e.kind, EventKind::Disconnected { reason, reconnecting: true } if reason.contains("read nothing")),
        "{e:?}"
    );
    wait_event(&client, "Reconnected", |e| {
        matches!(&e.kind, EventKind::Reconnected { .. })
    });
    sender.join().unwrap();
    let stats = client.stats();
    assert!(
        stats.policy_disconnects >= 1 && stats.reconnects >= 1,
        "{stats}"
    );
    drop(first);
}

#[test]
fn block_still_waits_for_room_within_the_callers_timeout() {
    let server = v2_server(ServerBuilder::new().outgoing_capacity(2));
    let raw = TcpStream::connect(server.local_addr()).unwrap();
    let peer = server.get_connection_timeout(T).unwrap();
    let err = (0..256)
        .find_map(|seq| {
            peer.send_data_timeout(frame(seq, 1 << 20), Mode::Plain, Duration::from_millis(200))
                .err()
        })
        .expect("a full queue makes a send time out");
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert_eq!(peer.stats().dropped, 0);
    assert!(peer.is_connected(), "Block does not disconnect");
    drop(raw);
}

// ---- item 3: broadcast under the policies ---------------------------------------------

/// Reads frames until `END`, sending each sequence number to the test.
fn reader(client: Connection) -> (mpsc::Receiver<u64>, thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel();
    let h = thread::spawn(move || loop {
        match client.get_data_timeout(T) {
            Ok(m) => {
                let s = seq_of(&m);
                let _ = tx.send(s);
                if s == u64::MAX {
                    return;
                }
            }
            Err(_) => return,
        }
    });
    (rx, h)
}

/// Broadcasts `n` frames from `server` to two reading clients and one frozen raw peer,
/// then checks that each reading client got every frame not reported dropped or missed,
/// and returns (dropped, missed) of the frozen peer.
fn broadcast_to_two_readers_and_a_frozen_peer(builder: ServerBuilder) -> (u64, u64) {
    let server = v2_server(builder);
    let raw = TcpStream::connect(server.local_addr()).unwrap();
    let frozen = server.get_connection_timeout(T).unwrap();
    let mut readers = Vec::new();
    for _ in 0..2 {
        let (client, peer) = pair(&server, Connection::builder().protocol(Protocol::V2));
        readers.push((peer, reader(client)));
    }
    const N: u64 = 600;
    // Per server-side connection id: (dropped, missed).
    let mut tally: HashMap<u64, (u64, u64)> = HashMap::new();
    for seq in 0..N {
        let report = server.broadcast(frame(seq, 64 << 10)).unwrap();
        assert_eq!(report.len(), 3);
        for (c, n) in report.dropped() {
            tally.entry(c.id()).or_default().0 += n;
        }
        for (c, _) in report.failures() {
            tally.entry(c.id()).or_default().1 += 1;
        }
    }
    for (peer, (rx, h)) in readers {
        peer.send_data_timeout(frame(u64::MAX, 16), Mode::Plain, T)
            .unwrap();
        let mut got = 0u64;
        loop {
            let s = rx.recv_timeout(T).expect("the reader gets its frames");
            if s == u64::MAX {
                break;
            }
            got += 1;
        }
        h.join().unwrap();
        let (dropped, missed) = tally.get(&peer.id()).copied().unwrap_or_default();
        // The end marker goes through the same policy: when it finds the queue full, it
        // drops an older frame too. That drop is in the connection's statistics, not in
        // a broadcast report; the marker, the newest, is never the one dropped.
        let dropped_in_all = peer.stats().dropped;
        assert!(dropped <= dropped_in_all, "{dropped} > {dropped_in_all}");
        assert_eq!(
            got + dropped_in_all + missed,
            N,
            "a frame went missing silently (reported dropped by broadcasts: {dropped})"
        );
    }
    let t = tally.get(&frozen.id()).copied().unwrap_or_default();
    drop(raw);
    t
}

#[test]
fn broadcast_with_keep_latest_never_fails_and_says_what_it_dropped() {
    let (dropped, missed) = broadcast_to_two_readers_and_a_frozen_peer(
        ServerBuilder::new().full_queue(FullQueue::KeepLatest(8)),
    );
    assert!(dropped > 0, "the frozen peer's old frames were not dropped");
    assert_eq!(missed, 0, "keep-latest queues every new frame");
}

#[test]
fn broadcast_with_block_never_waits_and_says_who_missed_the_message() {
    let (dropped, missed) =
        broadcast_to_two_readers_and_a_frozen_peer(ServerBuilder::new().outgoing_capacity(8));
    assert_eq!(dropped, 0);
    assert!(missed > 0, "the frozen peer got every frame?");
}

#[test]
fn broadcast_to_sends_to_the_given_connections_only() {
    let server = v2_server(ServerBuilder::new());
    let (a, pa) = pair(&server, Connection::builder().protocol(Protocol::V2));
    let (b, _pb) = pair(&server, Connection::builder().protocol(Protocol::V2));
    let report = server.broadcast_to([pa], frame(1, 8)).unwrap();
    assert_eq!((report.len(), report.sent()), (1, 1));
    assert_eq!(seq_of(&a.get_data_timeout(T).unwrap()), 1);
    server.broadcast(frame(2, 8)).unwrap();
    assert_eq!(
        seq_of(&b.get_data_timeout(T).unwrap()),
        2,
        "b got only the broadcast"
    );
}

// ---- item 7: statistics ---------------------------------------------------------------

#[test]
fn statistics_count_both_directions_and_the_acknowledged_round_trip() {
    let server = server(ServerBuilder::new());
    let (client, peer) = pair(&server, Connection::builder());
    for _ in 0..3 {
        client.send("hello").unwrap();
    }
    // Once the acknowledgement is in, the peer has queued all four.
    client.send_data("sure?", Mode::PlainAck).unwrap();
    let (c, p) = (client.stats(), peer.stats());
    assert_eq!(c.messages_out, 4);
    assert_eq!(c.acked, 1);
    assert!(c.ack_rtt_last.is_some() && c.ack_rtt_mean.is_some());
    assert_eq!(p.messages_in, 4);
    assert_eq!(p.queued_in, 4);
    assert!(p.queued_in_bytes >= 4 * 5);
    assert_eq!(c.bytes_out, p.bytes_in, "what one wrote, the other read");
    // The peer counts a reply once its write returns, which may be after the client
    // has read it: compared once the peer's threads have ended (below).
    assert!(
        p.bytes_out <= c.bytes_in,
        "the replies: {} > {}",
        p.bytes_out,
        c.bytes_in
    );
    assert!(p.last_received.is_some() && c.last_received.is_some());
    for _ in 0..4 {
        peer.get_data_timeout(T).unwrap();
    }
    assert_eq!(peer.stats().queued_in, 0);
    let s = server.stats();
    assert_eq!((s.connections, s.messages_in), (1, 4));
    // close() returns once every thread of the peer has ended: its counts are final.
    peer.close();
    assert_eq!(peer.stats().bytes_out, c.bytes_in, "the replies too");
    let line = c.to_string();
    assert!(
        !line.contains('\n') && line.contains("out 4 msgs"),
        "{line}"
    );
}

#[test]
fn statistics_count_reconnects_and_protocol_errors() {
    let server = server(ServerBuilder::new());
    let (client, peer) = pair(&server, Connection::builder().auto_restart(true));
    peer.close();
    wait_event(&client, "Reconnected", |e| {
        matches!(&e.kind, EventKind::Reconnected { .. })
    });
    assert_eq!(client.stats().reconnects, 1);

    use std::io::Write;
    let mut raw = TcpStream::connect(server.local_addr()).unwrap();
    // The reconnected client's link may come first.
    let hostile = loop {
        let c = server.get_connection_timeout(T).unwrap();
        if c.peer_addr() == raw.local_addr().ok() {
            break c;
        }
    };
    raw.write_all(b"\x01\xff\xfe\x00garbage\x1f").unwrap();
    wait_event(&hostile, "ProtocolError", |e| {
        matches!(&e.kind, EventKind::ProtocolError(_))
    });
    assert!(hostile.stats().protocol_errors >= 1);
    assert!(server.stats().protocol_errors >= 1);
}
