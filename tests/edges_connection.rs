//! Issue 9, the connection side: each numbered defect tried as a user or a hostile peer
//! would meet it, through the public API only. Each test is named after its item; each failed
//! before its fix.
//!
//! Waits are on the event checked (a message, an event, a join), with `T` as the upper
//! bound; the only fixed intervals are the bounds a promise is stated in.

mod common;
mod edges_support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use common::{pair, server, wait_event};
use edges_support::{count_log_lines, T};
use serpy::protocol::v2;
use serpy::{
    Connection, ConnectionBuilder, Error, Event, Mode, Protocol, ProtocolError, ServerBuilder,
};

/// Reads from `raw` until what arrived ends with `tail` (or the stream ends, or `T`).
fn read_until(raw: &mut TcpStream, tail: &[u8]) -> Vec<u8> {
    raw.set_read_timeout(Some(T)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    while !got.ends_with(tail) {
        match raw.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got
}

/// Every event of `conn` until (and with) the first `Disconnected`, then what else waits.
fn events_until_disconnected(conn: &Connection) -> Vec<Event> {
    let events = conn.events();
    let deadline = Instant::now() + T;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Some(e) => {
                let end = matches!(e, Event::Disconnected { .. });
                seen.push(e);
                if end {
                    break;
                }
            }
            None => panic!("no Disconnected event within {T:?}; events: {seen:?}"),
        }
    }
    while let Some(e) = events.try_recv() {
        seen.push(e);
    }
    seen
}

#[test]
fn item01_dropped_acked_message_keeps_ack_matching() {
    // The receiver drops a message above its maximum size. The acked send of it must
    // not return Ok, and the link must not stay desynchronised: the next acked send
    // succeeds (on this link, or on the next one if the receiver ended this one).
    let s = server(ServerBuilder::new().max_message_size(1024));
    let (client, peer) = pair(
        &s,
        ConnectionBuilder::new()
            .auto_restart(true)
            .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(100)),
    );
    let big = "a".repeat(4096);
    let big_send = thread::spawn({
        let client = client.clone();
        move || client.send_data_timeout(big.as_str(), Mode::PlainAck, T)
    });
    wait_event(&peer, "too large", |e| {
        matches!(e, Event::ProtocolError(ProtocolError::TooLarge { .. }))
    });
    let big_result = big_send.join().unwrap();
    assert!(
        big_result.is_err(),
        "the acked send of a message the peer dropped returned Ok"
    );
    let after = client.send_data_timeout("after", Mode::PlainAck, T);
    assert!(
        after.is_ok(),
        "an acked send after the dropped one failed: {after:?} (the dropped one returned {big_result:?})"
    );
    let got = s.recv_any_timeout(T).unwrap();
    assert_eq!(got.message.as_str(), Some("after"));
}

#[test]
fn item04_link_that_dies_at_once_counts_as_a_failed_attempt() {
    // A full server: it accepts and closes at once, every time.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let acceptor = thread::spawn({
        let (accepted, stop) = (accepted.clone(), stop.clone());
        move || {
            for s in listener.incoming() {
                if stop.load(Ordering::Acquire) {
                    return;
                }
                accepted.fetch_add(1, Ordering::AcqRel);
                drop(s);
            }
        }
    });
    let client = Connection::builder()
        .auto_restart(true)
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(80))
        .give_up_after(Some(4))
        .connect(addr)
        .unwrap();
    let events = client.events();
    let deadline = Instant::now() + T;
    let gave_up = loop {
        match events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Some(Event::GaveUp { attempts }) => break Some(attempts),
            Some(_) => {}
            None => break None,
        }
    };
    let connects = accepted.load(Ordering::Acquire);
    client.close();
    stop.store(true, Ordering::Release);
    let _ = TcpStream::connect(addr);
    acceptor.join().unwrap();
    assert!(
        gave_up.is_some(),
        "no GaveUp within {T:?} although every link died at once: {connects} connections made"
    );
    // The first connect, four attempts that each died at once, and a little slack.
    assert!(
        connects <= 7,
        "{connects} connections before giving up after 4 attempts"
    );
}

#[test]
fn item06_replies_reach_a_peer_that_half_closed() {
    let s = server(ServerBuilder::new());
    let mut raw = TcpStream::connect(s.local_addr()).unwrap();
    let peer = s.get_connection_timeout(T).unwrap();
    // A request, then the peer shuts down its write side and waits for the answers.
    raw.write_all(b"hello\x1f").unwrap();
    raw.shutdown(Shutdown::Write).unwrap();
    assert_eq!(peer.get_data_timeout(T).unwrap().as_str(), Some("hello"));
    const REPLIES: usize = 1000;
    for i in 0..REPLIES {
        if let Err(e) = peer.send(format!("reply {i}")) {
            panic!("send {i} to a peer that only half-closed failed: {e}");
        }
    }
    let got = read_until(&mut raw, format!("reply {}\x1f", REPLIES - 1).as_bytes());
    let lost: Vec<Event> = std::iter::from_fn(|| peer.events().try_recv())
        .filter(|e| matches!(e, Event::Lost { .. }))
        .collect();
    // Empty blocks (a lone 0x1F) are no message: a receiver skips them.
    let blocks: Vec<&[u8]> = got
        .split(|&b| b == 0x1f)
        .filter(|b| !b.is_empty())
        .collect();
    let replies: Vec<String> = (0..REPLIES).map(|i| format!("reply {i}")).collect();
    let complete = got.ends_with(b"\x1f")
        && blocks.len() == REPLIES
        && blocks.iter().zip(&replies).all(|(b, r)| *b == r.as_bytes());
    assert!(
        complete,
        "the half-closed peer got {} of the {REPLIES} replies ({} bytes; Lost events: {lost:?})",
        blocks.len(),
        got.len(),
    );
}

/// True if `events` say that a partial message was discarded: an event of its own, or
/// the reason of the disconnection.
fn says_partial_message_was_dropped(events: &[Event]) -> bool {
    events.iter().any(|e| match e {
        Event::Connected { .. } | Event::ProtocolDetected(_) => false,
        Event::Disconnected { reason, .. } => ["partial", "incomplete", "middle", "discard"]
            .iter()
            .any(|w| reason.contains(w)),
        _ => true,
    })
}

#[test]
fn item07_message_cut_by_a_closing_peer_gives_an_event() {
    for protocol in [Protocol::V1, Protocol::V2] {
        let s = server(ServerBuilder::new().protocol(protocol));
        let mut raw = TcpStream::connect(s.local_addr()).unwrap();
        let peer = s.get_connection_timeout(T).unwrap();
        match protocol {
            // A block without its separator.
            Protocol::V1 => raw.write_all(b"half a message").unwrap(),
            // A header announcing 100 bytes, and 50 of them.
            _ => {
                let payload = [7u8; 100];
                let mut frame = v2::header(v2::TYPE_BYTES, &payload).to_vec();
                frame.extend_from_slice(&payload[..50]);
                raw.write_all(&frame).unwrap();
            }
        }
        drop(raw);
        let events = events_until_disconnected(&peer);
        assert!(
            says_partial_message_was_dropped(&events),
            "{protocol}: a message cut by the closing peer vanished without a word: {events:?}"
        );
    }
}

#[test]
fn item07_acked_send_cut_mid_message_is_not_reported_as_not_sent() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = Connection::connect(listener.local_addr().unwrap()).unwrap();
    let (mut raw, _) = listener.accept().unwrap();
    // Far more than the socket buffers hold, so the write is cut part way.
    let big = "a".repeat(16 << 20);
    let sender = thread::spawn({
        let client = client.clone();
        move || client.send_data_timeout(big.as_str(), Mode::PlainAck, T)
    });
    let mut head = [0u8; 4096];
    raw.set_read_timeout(Some(T)).unwrap();
    raw.read_exact(&mut head).unwrap();
    // Part of the message reached the peer; now it goes away.
    edges_support::reset(raw);
    let r = sender.join().unwrap();
    assert!(
        matches!(&r, Err(e) if !matches!(e, Error::NotSent | Error::Timeout { .. })),
        "a message of which 4096 bytes reached the peer: {r:?} (NotSent says nothing of it reached the peer)"
    );
}

/// A client linked to a raw peer that sends `messages` plain blocks at once, then
/// acknowledges the client's acked command; returns the command's result.
fn acked_command_behind_unread_messages(
    builder: ConnectionBuilder,
    messages: usize,
    timeout: Duration,
) -> (Connection, serpy::Result<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = builder.connect(listener.local_addr().unwrap()).unwrap();
    let (mut raw, _) = listener.accept().unwrap();
    let mut flood = Vec::new();
    for i in 0..messages {
        flood.extend_from_slice(format!("m{i}\x1f").as_bytes());
    }
    raw.write_all(&flood).unwrap();
    let command = thread::spawn({
        let client = client.clone();
        move || client.send_data_timeout("cmd", Mode::PlainAck, timeout)
    });
    let got = read_until(&mut raw, b"cmd\x04\x1f");
    assert!(
        got.ends_with(b"cmd\x04\x1f"),
        "the command arrived: {got:?}"
    );
    // The acknowledgement now sits in the stream behind every data block.
    raw.write_all(b"\x01ACKMODCG\x1f\x01ACKEOT!!\x1f").unwrap();
    let r = command.join().unwrap();
    drop(raw);
    (client, r)
}

#[test]
fn item08_acked_send_completes_while_own_incoming_queue_is_full() {
    // 3,000 small messages: far beyond the default count bound, far within the byte budget.
    let (client, r) = acked_command_behind_unread_messages(ConnectionBuilder::new(), 3000, T);
    assert!(
        r.is_ok(),
        "an acked send whose acknowledgement waited behind 3,000 unread messages (30 KB): {r:?}"
    );
    for i in 0..3000 {
        let m = client.get_data_timeout(T).unwrap();
        assert_eq!(m.as_str(), Some(format!("m{i}").as_str()));
    }
}

#[test]
fn item08_a_small_count_bound_set_by_the_user_is_named_in_the_error() {
    let (_client, r) = acked_command_behind_unread_messages(
        ConnectionBuilder::new().incoming_capacity(16),
        100,
        Duration::from_secs(2),
    );
    let e = r.expect_err("the acknowledgement waits behind 84 messages the count bound holds back");
    assert!(
        e.to_string().contains("incoming_capacity"),
        "the error does not name the bound that held the answer back: {e}"
    );
}

#[test]
fn item09_v1_server_reports_and_closes_a_v2_client() {
    let s = server(ServerBuilder::new().protocol(Protocol::V1));
    let (client, peer) = pair(&s, ConnectionBuilder::new().protocol(Protocol::V2));
    // Bytes holding 0x1F, so a v1 reader sees a block end inside the frame.
    client.send(vec![0x1fu8; 8]).unwrap();
    client.send("hello").unwrap();
    let got = peer.get_data_timeout(T);
    assert!(
        matches!(got, Err(Error::Disconnected)),
        "a v1 server handed a v2 client's frames to the program: {got:?}"
    );
    let events = events_until_disconnected(&peer);
    assert!(
        events.iter().any(|e| matches!(e, Event::ProtocolError(_))),
        "no event says the peer speaks v2: {events:?}"
    );
}

#[test]
fn item09_v1_acked_send_to_a_v2_server_fails_fast() {
    let s = server(ServerBuilder::new().protocol(Protocol::V2));
    let (client, _peer) = pair(&s, ConnectionBuilder::new());
    let started = Instant::now();
    let r = client.send_data_timeout("cmd", Mode::PlainAck, T);
    assert!(
        matches!(&r, Err(e) if !matches!(e, Error::Timeout { .. })),
        "an acked v1 send to a v2 server: {r:?} after {:?}",
        started.elapsed()
    );
}

#[test]
fn item09_acked_send_queued_before_detection_fails_as_unsupported() {
    let s = server(ServerBuilder::new().protocol(Protocol::Auto));
    let (client, peer) = pair(&s, ConnectionBuilder::new().protocol(Protocol::V2));
    assert_eq!(peer.protocol(), Protocol::Auto);
    let (started_tx, started) = mpsc::channel();
    let sender = thread::spawn({
        let peer = peer.clone();
        move || {
            started_tx.send(()).unwrap();
            peer.send_data_timeout("cmd", Mode::PlainAck, T)
        }
    });
    started.recv().unwrap();
    // Now the peer turns out to speak v2, which has no acknowledgement.
    client.send("hi").unwrap();
    let r = sender.join().unwrap();
    assert!(
        matches!(r, Err(Error::Unsupported { .. })),
        "an acked send queued before the peer turned out to speak v2: {r:?}"
    );
}

#[test]
fn item10_unsolicited_acks_make_a_few_log_lines() {
    let warned = count_log_lines("acknowledg", log::Level::Warn);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = Connection::connect(listener.local_addr().unwrap()).unwrap();
    let (mut raw, _) = listener.accept().unwrap();
    // 100,000 acknowledgements of messages never sent, then one message.
    let mut flood = b"\x01ACKEOT!!\x1f".repeat(100_000);
    flood.extend_from_slice(b"end\x1f");
    raw.write_all(&flood).unwrap();
    assert_eq!(client.get_data_timeout(T).unwrap().as_str(), Some("end"));
    let n = warned.load(Ordering::Relaxed);
    assert!(n >= 1, "unsolicited acknowledgements are logged");
    assert!(
        n <= 40,
        "{n} warning lines for 100,000 unsolicited acknowledgements"
    );
}

#[test]
// Linux: a full accept queue drops new handshakes, so connect() hangs.
fn item11_close_does_not_wait_for_a_reconnect_stuck_in_connect() {
    // A listener whose accept queue is full: a new connect() hangs (its SYNs are dropped).
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    socket.listen(1).unwrap();
    let listener: TcpListener = socket.into();
    let addr = listener.local_addr().unwrap();
    let close_timeout = Duration::from_millis(200);
    let client = Connection::builder()
        .auto_restart(true)
        .connect_timeout(Duration::from_secs(30))
        .close_timeout(close_timeout)
        .connect(addr)
        .unwrap();
    let (link, _) = listener.accept().unwrap();
    let mut fillers = Vec::new();
    while let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
        fillers.push(s);
        assert!(fillers.len() < 64, "the accept queue never filled");
    }
    drop(link);
    wait_event(&client, "disconnected", |e| {
        matches!(
            e,
            Event::Disconnected {
                reconnecting: true,
                ..
            }
        )
    });
    let started = Instant::now();
    client.close();
    let took = started.elapsed();
    drop(fillers);
    // The promise is close_timeout + a little; 5 s is the bound on a loaded machine,
    // far below the 30 s connect timeout the reconnect is stuck in.
    assert!(
        took < Duration::from_secs(5),
        "close() took {took:?} while a reconnect was stuck in connect() (close timeout {close_timeout:?})"
    );
}

// Item 12 (Events::iter() never ends; closing gives no event) is covered by
// tests/runtime_edges.rs, written with its fix on the connection side.

#[test]
fn item13_receive_timeout_hint_points_the_right_way() {
    let s = server(ServerBuilder::new());
    let (client, _peer) = pair(&s, ConnectionBuilder::new());
    let e = client
        .get_data_timeout(Duration::from_millis(10))
        .unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
    // Nothing came in: the peer's reading has nothing to do with it.
    assert!(
        !e.to_string().contains("reads its data"),
        "a receive timeout blames the peer's reading: {e}"
    );
}

#[test]
fn item13_disconnected_after_giving_up_does_not_say_enable_auto_restart() {
    let s = server(ServerBuilder::new());
    let c = Connection::builder()
        .auto_restart(true)
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(10))
        .give_up_after(Some(2))
        .connect(s.local_addr())
        .unwrap();
    drop(s);
    wait_event(&c, "gave up", |e| matches!(e, Event::GaveUp { .. }));
    let e = c.get_data_timeout(T).unwrap_err();
    assert!(matches!(e, Error::Disconnected), "{e}");
    assert!(
        !e.to_string().contains("enable auto-restart"),
        "after auto-restart gave up, the error says to enable it: {e}"
    );
}

#[test]
fn item13_sends_racing_close_return_closed() {
    // Senders that keep the outgoing queue full (the peer reads nothing) while the
    // connection is closed: each ends with Closed, not Disconnected.
    for round in 0..20 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = Connection::builder()
            .protocol(Protocol::V2)
            .outgoing_capacity(2)
            .close_timeout(Duration::from_millis(50))
            .connect(listener.local_addr().unwrap())
            .unwrap();
        let (raw, _) = listener.accept().unwrap();
        let (first_tx, first) = mpsc::channel();
        let senders: Vec<_> = (0..4)
            .map(|_| {
                let client = client.clone();
                let first_tx = first_tx.clone();
                thread::spawn(move || loop {
                    if let Err(e) = client.send(vec![0u8; 64 * 1024]) {
                        return e;
                    }
                    let _ = first_tx.send(());
                })
            })
            .collect();
        first.recv_timeout(T).unwrap();
        client.close();
        for s in senders {
            let e = s.join().unwrap();
            assert!(
                matches!(e, Error::Closed),
                "round {round}: a send racing close() returned {e:?}"
            );
        }
        drop(raw);
    }
}
