//! The runtime at its edges (issue 9): each test here failed before its fix.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{pair, server, wait_event, T};
use serpy::{Connection, ConnectionBuilder, Error, Event, Mode, Protocol, ServerBuilder};

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
fn events_end_with_closed_when_the_program_closes() {
    let s = server(ServerBuilder::new());
    let (client, _peer) = pair(&s, ConnectionBuilder::new());
    let (rx, h) = collect_events(&client);
    client.close();
    let all = rx.recv_timeout(T).expect("the events end after close()");
    h.join().unwrap();
    assert_eq!(all.last(), Some(&Event::Closed), "{all:?}");
}

#[test]
fn events_end_when_the_link_is_down_for_good() {
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
            all.last(),
            Some(Event::Disconnected {
                reconnecting: false,
                ..
            })
        ),
        "{all:?}"
    );
    // The handle still exists: the end did not wait for it.
    assert!(!client.is_connected());
}

/// A listener on 127.0.0.1 that accepts every connection and closes it at once (as a
/// full server does), until dropped; counts the connections.
struct SlamServer {
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    thread: Option<thread::JoinHandle<()>>,
}

impl SlamServer {
    fn start() -> Self {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
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
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        let _ = TcpStream::connect(self.addr); // wakes the accept
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn a_link_that_dies_at_once_counts_as_a_failed_attempt() {
    let slam = SlamServer::start();
    let client = ConnectionBuilder::new()
        .auto_restart(true)
        .reconnect_backoff(Duration::from_millis(5), Duration::from_millis(20))
        .give_up_after(Some(3))
        .connect(slam.addr)
        .unwrap();
    // Before: every connect succeeded, so the count started again each time and the
    // client reconnected without a pause, for ever.
    let e = wait_event(&client, "GaveUp", |e| matches!(e, Event::GaveUp { .. }));
    assert_eq!(e, Event::GaveUp { attempts: 3 });
    let accepted = slam.accepted.load(std::sync::atomic::Ordering::Relaxed);
    assert!(accepted <= 4, "{accepted} connections for 3 attempts");
    assert!(matches!(client.send("x"), Err(Error::Disconnected)));
}

#[test]
fn sends_racing_close_get_closed() {
    let s = server(ServerBuilder::new());
    for _ in 0..20 {
        let (client, _peer) = pair(&s, ConnectionBuilder::new().outgoing_capacity(4));
        let senders: Vec<_> = (0..3)
            .map(|_| {
                let c = client.clone();
                thread::spawn(move || {
                    for i in 0..100_000u32 {
                        match c.send(i) {
                            Ok(()) => {}
                            Err(e) => return Some(e),
                        }
                    }
                    None
                })
            })
            .collect();
        client.close();
        for h in senders {
            if let Some(e) = h.join().unwrap() {
                assert!(
                    matches!(e, Error::Closed),
                    "a send racing close() got {e:?}"
                );
            }
        }
    }
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
fn close_does_not_wait_for_a_reconnect_stuck_in_connect() {
    // A listener whose accept queue holds one connection: once it is full, the SYN of
    // the next connect is dropped and that connect hangs until its timeout.
    let listener =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    listener
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
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
            e,
            Event::Disconnected {
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

#[test]
fn an_acked_message_the_receiver_drops_fails_and_later_ones_complete() {
    let s = server(ServerBuilder::new().max_message_size(1000));
    let client = ConnectionBuilder::new()
        .auto_restart(true)
        .reconnect_backoff(Duration::from_millis(1), Duration::from_millis(10))
        .connect(s.local_addr())
        .unwrap();
    let first = s.get_connection_timeout(T).unwrap();
    let big = "x".repeat(5000);
    // Before: no ACKEOT came for the dropped message, so this waited out its timeout, and
    // every later acknowledged send on the link was matched one acknowledgement late.
    let r = client.send_data_timeout(big.as_str(), Mode::PlainAck, T);
    assert!(matches!(r, Err(Error::AckUncertain)), "{r:?}");
    wait_event(&first, "TooLarge", |e| {
        matches!(
            e,
            Event::ProtocolError(serpy::ProtocolError::TooLarge { .. })
        )
    });
    client
        .send_data_timeout("small", Mode::PlainAck, T)
        .expect("the next acknowledged send completes");
    let r = s.recv_any_timeout(T).unwrap();
    assert_eq!(r.message.as_str(), Some("small"));
}

#[test]
fn a_v1_server_reports_a_v2_client_and_delivers_no_garbage() {
    let s = server(ServerBuilder::new());
    let (client, peer) = pair(&s, ConnectionBuilder::new().protocol(Protocol::V2));
    client.send("hello").unwrap();
    wait_event(&peer, "WrongProtocol", |e| {
        matches!(
            e,
            Event::ProtocolError(serpy::ProtocolError::WrongProtocol {
                expected: Protocol::V1,
                found: Protocol::V2
            })
        )
    });
    // Before: the frame was handed to the program as a v1 message.
    let r = peer.get_data_timeout(T);
    assert!(matches!(r, Err(Error::Disconnected)), "{r:?}");
    let r = client.get_data_timeout(T);
    assert!(matches!(r, Err(Error::Disconnected)), "{r:?}");
}

#[test]
fn a_v1_clients_acked_send_to_a_v2_server_fails_at_once() {
    let s = server(ServerBuilder::new().protocol(Protocol::V2));
    let (client, peer) = pair(&s, ConnectionBuilder::new());
    // Before: it waited for an acknowledgement a v2 server never sends.
    let r = client.send_data_timeout("hello", Mode::PlainAck, T);
    assert!(matches!(r, Err(Error::AckUncertain)), "{r:?}");
    wait_event(&peer, "WrongProtocol", |e| {
        matches!(
            e,
            Event::ProtocolError(serpy::ProtocolError::WrongProtocol {
                expected: Protocol::V2,
                found: Protocol::V1
            })
        )
    });
}

#[test]
fn an_acked_send_queued_before_detection_fails_as_unsupported_for_a_v2_peer() {
    let s = server(ServerBuilder::new().protocol(Protocol::Auto));
    let mut raw = TcpStream::connect(s.local_addr()).unwrap();
    let peer = s.get_connection_timeout(T).unwrap();
    let (ready_tx, ready_rx) = mpsc::channel();
    let sender = thread::spawn({
        let peer = peer.clone();
        move || {
            ready_tx.send(()).unwrap();
            peer.send_data_timeout("sure?", Mode::PlainAck, T)
        }
    });
    ready_rx.recv_timeout(T).unwrap();
    // Then the peer shows it speaks v2: a whole v2 frame.
    let mut frame = serpy::protocol::v2::header(serpy::protocol::v2::TYPE_TEXT, b"hi").to_vec();
    frame.extend_from_slice(b"hi");
    raw.write_all(&frame).unwrap();
    assert_eq!(peer.get_data_timeout(T).unwrap().as_str(), Some("hi"));
    // Before: the message went out as a v2 frame and the send waited out its timeout.
    let r = sender.join().unwrap();
    assert!(matches!(r, Err(Error::Unsupported { .. })), "{r:?}");
    // Nothing of it reached the peer: the next bytes are a frame sent after it.
    peer.send("after").unwrap();
    let mut got = vec![0u8; serpy::protocol::v2::HEADER_LEN + 5];
    raw.set_read_timeout(Some(T)).unwrap();
    raw.read_exact(&mut got).unwrap();
    assert_eq!(&got[serpy::protocol::v2::HEADER_LEN..], b"after");
}

#[test]
fn a_message_cut_by_a_closing_peer_is_reported() {
    let s = server(ServerBuilder::new());
    let mut raw = TcpStream::connect(s.local_addr()).unwrap();
    let peer = s.get_connection_timeout(T).unwrap();
    raw.write_all(b"hello\x1fpart").unwrap();
    drop(raw);
    assert_eq!(peer.get_data_timeout(T).unwrap().as_str(), Some("hello"));
    // Before: the 4 bytes were dropped without a word.
    wait_event(&peer, "CutShort", |e| {
        matches!(
            e,
            Event::ProtocolError(serpy::ProtocolError::CutShort { bytes: 4 })
        )
    });
}

#[test]
fn an_acked_send_cut_mid_write_says_part_of_it_went_out() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = Connection::connect(listener.local_addr().unwrap()).unwrap();
    let (mut raw, _) = listener.accept().unwrap();
    let reader = thread::spawn(move || {
        // Take part of the message, then close with the rest unread (a reset).
        let mut part = vec![0u8; 64 * 1024];
        raw.read_exact(&mut part).unwrap();
    });
    let big = "x".repeat(16 << 20);
    let r = client.send_data(big.as_str(), Mode::PlainAck);
    reader.join().unwrap();
    // Before: NotSent ("nothing of it reached the peer").
    assert!(matches!(r, Err(Error::CutShort)), "{r:?}");
}

#[test]
fn an_acked_send_completes_while_unread_messages_pile_up() {
    let s = server(ServerBuilder::new());
    let (client, peer) = pair(&s, ConnectionBuilder::new());
    // The instrument streams; the workstation does not read yet.
    for i in 0..5000 {
        peer.send(i).unwrap();
    }
    // Before: after 1024 unread messages the reader stopped, and the ACKEOT waited in
    // the socket behind the rest: a false timeout.
    client
        .send_data_timeout("command", Mode::PlainAck, T)
        .expect("the acknowledgement is read behind the unread messages");
    assert_eq!(peer.get_data_timeout(T).unwrap().as_str(), Some("command"));
    for i in 0..5000 {
        assert_eq!(client.get_data_timeout(T).unwrap().as_int(), Some(i));
    }
}

#[test]
fn an_ack_held_back_by_a_count_bound_says_so() {
    let s = server(ServerBuilder::new());
    let (client, peer) = pair(&s, ConnectionBuilder::new().incoming_capacity(16));
    for i in 0..100 {
        peer.send(i).unwrap();
    }
    // The acknowledgement waits behind 84 messages that the bound of 16 keeps in the
    // socket; by the end of the timeout the queue is full (a bound, not a pause).
    let r = client.send_data_timeout("command", Mode::PlainAck, Duration::from_secs(3));
    match r {
        Err(e @ Error::Timeout { .. }) => {
            let text = e.to_string();
            assert!(text.contains("incoming_capacity"), "{text}");
        }
        r => panic!("{r:?}"),
    }
}

/// Reads from `raw` until `want` has come, skipping empty v1 blocks; panics on EOF.
fn read_until(raw: &mut TcpStream, want: &[u8]) {
    raw.set_read_timeout(Some(T)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(want.len()).any(|w| w == want) {
        let n = raw.read(&mut buf).expect("read within T");
        assert!(n > 0, "the link ended before {want:?} came; got {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn a_peer_that_half_closes_still_gets_its_replies() {
    let s = server(ServerBuilder::new());
    let mut raw = TcpStream::connect(s.local_addr()).unwrap();
    let peer = s.get_connection_timeout(T).unwrap();
    raw.write_all(b"request\x1f").unwrap();
    raw.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(peer.get_data_timeout(T).unwrap().as_str(), Some("request"));
    // Before: the end of the peer's data took the link down, and the reply was lost.
    peer.send("reply").unwrap();
    read_until(&mut raw, b"reply\x1f");
    assert!(peer.is_connected());
    // Once the peer really closes, the link ends.
    drop(raw);
    let r = peer.get_data_timeout(T);
    assert!(matches!(r, Err(Error::Disconnected)), "{r:?}");
}
