//! Issue 9, the connection side: each numbered defect tried as a user or a hostile peer
//! would meet it, through the public API only. Each test is named after its item; each failed
//! before its fix. Item 10's connection-side log flood is in `log_flood.rs`, a binary of
//! its own logger.
//!
//! Waits are on the event checked (a message, an event, a join), with `T` as the upper
//! bound; the only fixed intervals are the bounds a promise is stated in.

mod common;
mod edges_support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use common::{pair, server, wait_event, T};
use serpy::protocol::v2;
use serpy::{
    Connection, ConnectionBuilder, Error, Event, EventKind, Mode, Protocol, ProtocolError,
    ServerBuilder,
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

/// Waits for the `WrongProtocol` event that says `conn` (speaking `expected`) met a
/// peer speaking `found`.
fn wait_wrong_protocol(conn: &Connection, expected: Protocol, found: Protocol) {
    wait_event(conn, "WrongProtocol", |e| {
        *e == EventKind::ProtocolError(ProtocolError::WrongProtocol { expected, found })
    });
}

#[test]
fn item01_an_acked_message_the_receiver_drops_fails_and_later_ones_complete() {
    let s = server(ServerBuilder::new().max_message_size(1000));
    let (client, first) = pair(
        &s,
        ConnectionBuilder::new()
            .auto_restart(true)
            .reconnect_backoff(Duration::from_millis(1), Duration::from_millis(10)),
    );
    let big = "x".repeat(5000);
    // Before: no ACKEOT came for the dropped message, so this waited out its timeout, and
    // every later acknowledged send on the link was matched one acknowledgement late.
    // Now the receiver ends the link (v1 acknowledgements carry no id).
    let r = client.send_data_timeout(big.as_str(), Mode::PlainAck, T);
    assert!(matches!(r, Err(Error::AckUncertain)), "{r:?}");
    wait_event(&first, "TooLarge", |e| {
        matches!(
            &e.kind,
            EventKind::ProtocolError(ProtocolError::TooLarge { .. })
        )
    });
    client
        .send_data_timeout("small", Mode::PlainAck, T)
        .expect("the next acknowledged send completes");
    let r = s.recv_any_timeout(T).unwrap();
    assert_eq!(r.message.as_str(), Some("small"));
}

/// A listener on 127.0.0.1 that accepts every connection and closes it at once (as a
/// full server does), until dropped; counts the connections.
struct SlamServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    thread: Option<thread::JoinHandle<()>>,
}

impl SlamServer {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (st, ac) = (stop.clone(), accepted.clone());
        let thread = thread::spawn(move || {
            for s in listener.incoming() {
                if st.load(Ordering::Acquire) {
                    return;
                }
                ac.fetch_add(1, Ordering::Relaxed);
                drop(s);
            }
        });
        SlamServer {
            addr,
            stop,
            accepted,
            thread: Some(thread),
        }
    }
}

impl Drop for SlamServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect(self.addr); // wakes the accept
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn item04_a_link_that_dies_at_once_counts_as_a_failed_attempt() {
    let slam = SlamServer::start();
    let client = ConnectionBuilder::new()
        .auto_restart(true)
        .reconnect_backoff(Duration::from_millis(5), Duration::from_millis(20))
        .give_up_after(Some(3))
        .connect(slam.addr)
        .unwrap();
    // Before: every connect succeeded, so the count started again each time and the
    // client reconnected without a pause, for ever.
    let e = wait_event(&client, "GaveUp", |e| {
        matches!(&e.kind, EventKind::GaveUp { .. })
    });
    assert_eq!(e.kind, EventKind::GaveUp { attempts: 3 });
    let accepted = slam.accepted.load(Ordering::Relaxed);
    assert!(accepted <= 4, "{accepted} connections for 3 attempts");
    assert!(matches!(client.send("x"), Err(Error::Disconnected)));
}

#[test]
fn item06_replies_reach_a_peer_that_half_closed_until_it_closes() {
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
        .filter(|e| matches!(&e.kind, EventKind::Lost { .. }))
        .collect();
    // Empty blocks (a lone 0x1F, the probe of a half-closed link) are no message.
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
    assert!(peer.is_connected());
    // Once the peer really closes, the link ends.
    drop(raw);
    let r = peer.get_data_timeout(T);
    assert!(matches!(r, Err(Error::Disconnected)), "{r:?}");
}

#[test]
fn item07_a_message_cut_by_a_closing_peer_is_reported() {
    for protocol in [Protocol::V1, Protocol::V2] {
        let s = server(ServerBuilder::new().protocol(protocol));
        let mut raw = TcpStream::connect(s.local_addr()).unwrap();
        let peer = s.get_connection_timeout(T).unwrap();
        // What was sent, and how many bytes of the cut message the event counts.
        let (first, cut, counted) = match protocol {
            // A whole block, then one without its separator.
            Protocol::V1 => (b"hello\x1f".to_vec(), b"part".to_vec(), 4),
            // A whole frame, then a header announcing 100 bytes, and 50 of them.
            _ => {
                let mut whole = v2::header(v2::TYPE_TEXT, b"hello").to_vec();
                whole.extend_from_slice(b"hello");
                let payload = [7u8; 100];
                let mut cut = v2::header(v2::TYPE_BYTES, &payload).to_vec();
                cut.extend_from_slice(&payload[..50]);
                // The v2 decoder has taken the header in: it holds the payload's part.
                (whole, cut, 50)
            }
        };
        raw.write_all(&first).unwrap();
        raw.write_all(&cut).unwrap();
        drop(raw);
        assert_eq!(peer.get_data_timeout(T).unwrap().as_str(), Some("hello"));
        // Before: the cut message was dropped without a word.
        let e = wait_event(&peer, "CutShort", |e| {
            matches!(
                &e.kind,
                EventKind::ProtocolError(ProtocolError::CutShort { .. })
            )
        });
        assert_eq!(
            e.kind,
            EventKind::ProtocolError(ProtocolError::CutShort { bytes: counted }),
            "{protocol}"
        );
    }
}

#[test]
fn item07_an_acked_send_cut_mid_write_says_part_of_it_went_out() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = Connection::connect(listener.local_addr().unwrap()).unwrap();
    let (mut raw, _) = listener.accept().unwrap();
    // Far more than the socket buffers hold, so the write is cut part way.
    let big = "a".repeat(16 << 20);
    let sender = thread::spawn({
        let client = client.clone();
        move || client.send_data_timeout(big.as_str(), Mode::PlainAck, T)
    });
    let mut head = [0u8; 64 * 1024];
    raw.set_read_timeout(Some(T)).unwrap();
    raw.read_exact(&mut head).unwrap();
    // Part of the message reached the peer; now it goes away.
    edges_support::reset(raw);
    let r = sender.join().unwrap();
    // Before: NotSent ("nothing of it reached the peer").
    assert!(matches!(r, Err(Error::CutShort)), "{r:?}");
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
    // 3,000 small messages: far beyond the old count bound of 1,024, far within the
    // byte budget.
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
    // The acknowledgement waits behind 84 messages that the bound of 16 keeps in the
    // socket; by the end of the timeout the queue is full (a bound, not a pause).
    let (_client, r) = acked_command_behind_unread_messages(
        ConnectionBuilder::new().incoming_capacity(16),
        100,
        Duration::from_secs(2),
    );
    match r {
        Err(e @ Error::Timeout { .. }) => assert!(
            e.to_string().contains("incoming_capacity"),
            "the error does not name the bound that held the answer back: {e}"
        ),
        r => panic!("the acknowledgement waits behind messages the count bound holds back: {r:?}"),
    }
}

#[test]
fn item09_a_v1_server_reports_and_closes_a_v2_client() {
    let s = server(ServerBuilder::new().protocol(Protocol::V1));
    let (client, peer) = pair(&s, ConnectionBuilder::new().protocol(Protocol::V2));
    // Bytes holding 0x1F, so a v1 reader sees a block end inside the frame.
    client.send(vec![0x1fu8; 8]).unwrap();
    client.send("hello").unwrap();
    wait_wrong_protocol(&peer, Protocol::V1, Protocol::V2);
    // Before: the frames were handed to the program as v1 messages.
    let r = peer.get_data_timeout(T);
    assert!(
        matches!(r, Err(Error::Disconnected)),
        "a v1 server handed a v2 client's frames to the program: {r:?}"
    );
    let r = client.get_data_timeout(T);
    assert!(matches!(r, Err(Error::Disconnected)), "{r:?}");
}

#[test]
fn item09_a_v1_clients_acked_send_to_a_v2_server_fails_at_once() {
    let s = server(ServerBuilder::new().protocol(Protocol::V2));
    let (client, peer) = pair(&s, ConnectionBuilder::new());
    // Before: it waited for an acknowledgement a v2 server never sends.
    let r = client.send_data_timeout("hello", Mode::PlainAck, T);
    assert!(matches!(r, Err(Error::AckUncertain)), "{r:?}");
    wait_wrong_protocol(&peer, Protocol::V2, Protocol::V1);
}

#[test]
fn item09_an_acked_send_queued_before_detection_fails_as_unsupported_for_a_v2_peer() {
    let s = server(ServerBuilder::new().protocol(Protocol::Auto));
    let mut raw = TcpStream::connect(s.local_addr()).unwrap();
    let peer = s.get_connection_timeout(T).unwrap();
    assert_eq!(peer.protocol(), Protocol::Auto);
    let (ready_tx, ready_rx) = mpsc::channel();
    let sender = thread::spawn({
        let peer = peer.clone();
        move || {
            ready_tx.send(()).unwrap();
            peer.send_data_timeout("sure?", Mode::PlainAck, T)
        }
    });
    ready_rx.recv_timeout(T).unwrap();
    // Then the peer shows it speaks v2 (which has no acknowledgement): a whole v2 frame.
    let mut frame = v2::header(v2::TYPE_TEXT, b"hi").to_vec();
    frame.extend_from_slice(b"hi");
    raw.write_all(&frame).unwrap();
    assert_eq!(peer.get_data_timeout(T).unwrap().as_str(), Some("hi"));
    // Before: the message went out as a v2 frame and the send waited out its timeout.
    let r = sender.join().unwrap();
    assert!(matches!(r, Err(Error::Unsupported { .. })), "{r:?}");
    // Nothing of it reached the peer: the next bytes are a frame sent after it.
    peer.send("after").unwrap();
    let mut got = vec![0u8; v2::HEADER_LEN + 5];
    raw.set_read_timeout(Some(T)).unwrap();
    raw.read_exact(&mut got).unwrap();
    assert_eq!(&got[v2::HEADER_LEN..], b"after");
}

/// True while a socket of this machine is in SYN_SENT towards `port` on 127.0.0.1
/// (Linux: /proc/net/tcp).
#[cfg(target_os = "linux")]
fn connect_pending_to(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let remote = format!("0100007F:{port:04X}");
    table.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3 && f[2] == remote && f[3] == "02"
    })
}

/// Closing a client whose reconnect hangs in connect() (the peer's SYNs are dropped).
/// Linux: the test sees the hanging connect in /proc/net/tcp, and the crate ends a
/// connect by shutting its socket down, which other systems do not promise.
#[cfg(target_os = "linux")]
#[test]
fn item11_close_does_not_wait_for_a_reconnect_stuck_in_connect() {
    // A listener whose accept queue holds one connection: once it is full, the SYN of
    // the next connect is dropped and that connect hangs until its timeout.
    let listener =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    listener
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    listener.listen(0).unwrap();
    let listener: TcpListener = listener.into();
    let addr = listener.local_addr().unwrap();
    let client = ConnectionBuilder::new()
        .auto_restart(true)
        .reconnect_backoff(Duration::from_millis(1), Duration::from_millis(1))
        .connect_timeout(Duration::from_secs(120))
        .connect(addr)
        .unwrap();
    let (accepted, _) = listener.accept().unwrap();
    let _filler = TcpStream::connect(addr).unwrap(); // fills the accept queue
    drop(accepted);
    wait_event(&client, "Disconnected", |e| {
        matches!(
            &e.kind,
            EventKind::Disconnected {
                reconnecting: true,
                ..
            }
        )
    });
    // Until the reconnect attempt is under way (checked, not slept for).
    let until = std::time::Instant::now() + T;
    while !connect_pending_to(addr.port()) {
        assert!(
            std::time::Instant::now() < until,
            "no reconnect attempt under way"
        );
        thread::yield_now();
    }
    let (tx, rx) = mpsc::channel();
    let closer = thread::spawn(move || {
        client.close();
        let _ = tx.send(());
    });
    // Before: close() waited for the connect attempt, up to its 120 s timeout.
    rx.recv_timeout(T)
        .expect("close() returns without waiting out the connect timeout");
    closer.join().unwrap();
}

/// Collects `events` in a thread until the iterator ends; the receiver gets them then.
fn collect_events(conn: &Connection) -> (mpsc::Receiver<Vec<Event>>, thread::JoinHandle<()>) {
    let events = conn.events();
    let (tx, rx) = mpsc::channel();
    let h = thread::spawn(move || {
        let all: Vec<Event> = events.iter().collect();
        let _ = tx.send(all);
    });
    (rx, h)
}

#[test]
fn item12_events_end_with_closed_when_the_program_closes() {
    let s = server(ServerBuilder::new());
    let (client, _peer) = pair(&s, ConnectionBuilder::new());
    let (rx, h) = collect_events(&client);
    client.close();
    let all = rx.recv_timeout(T).expect("the events end after close()");
    h.join().unwrap();
    assert_eq!(
        all.last().map(|e| &e.kind),
        Some(&EventKind::Closed),
        "{all:?}"
    );
}

#[test]
fn item12_events_end_when_the_link_is_down_for_good() {
    let s = server(ServerBuilder::new());
    let (client, peer) = pair(&s, ConnectionBuilder::new());
    let (rx, h) = collect_events(&client);
    peer.close();
    let all = rx
        .recv_timeout(T)
        .expect("the events end once the link is down");
    h.join().unwrap();
    assert!(
        matches!(
            all.last().map(|e| &e.kind),
            Some(EventKind::Disconnected {
                reconnecting: false,
                ..
            })
        ),
        "{all:?}"
    );
    // The handle still exists: the end did not wait for it.
    assert!(!client.is_connected());
}

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
    wait_event(&c, "gave up", |e| {
        matches!(&e.kind, EventKind::GaveUp { .. })
    });
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
