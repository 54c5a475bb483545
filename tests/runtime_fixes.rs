//! Defects found in review of the runtime and live-instrument work, each pinned by a test
//! that failed before its fix.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};
use std::thread;
use std::time::Duration;

use common::T;
use serpy::{Bytes, Connection, EventKind, Mode, Protocol};

/// Size of each message of the half-close test, and of its v2 frame.
const BLOB: usize = 64 << 10;
const FRAME: usize = 14 + BLOB;

/// A v2 peer half-closes while much is queued for it, then resets the link in the middle
/// of the writes that follow: the client reconnects, and the new link must stay up and
/// carry the rest. Before the fix, the writer went on writing the queue to the new link
/// as if it were the half-closed one, then took the new link down as "the peer closed
/// the connection" (a second `Disconnected`, and a third link).
#[test]
fn a_v2_link_made_after_a_half_close_stays_up() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let client = Connection::builder()
        .protocol(Protocol::V2)
        .auto_restart(true)
        .reconnect_backoff(Duration::from_millis(1), Duration::from_millis(20))
        .outgoing_bytes(64 << 20)
        .close_timeout(T)
        .connect(addr)
        .expect("connect");
    let events = client.events();
    let (mut first, _) = listener.accept().unwrap();

    // Far more than the socket buffers hold: the writer is stuck in a write, with most
    // of it still queued.
    let count = 400;
    for _ in 0..count {
        client
            .send_data(Bytes::from(vec![7u8; BLOB]), Mode::Plain)
            .expect("queued");
    }
    // The peer sends no more (the reader sees the end: the writer is told), then takes
    // a few batches, so that the writer goes on in the half-closed state, and resets.
    first.shutdown(Shutdown::Write).unwrap();
    let mut buf = vec![0u8; 64 << 10];
    let mut taken = 0;
    while taken < 6 << 20 {
        match first.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => taken += n,
        }
    }
    drop(first); // unread data: a reset

    // Every later link: read to the end, counting bytes and links.
    let readers = thread::spawn(move || {
        let mut links = Vec::new();
        for stream in listener.incoming() {
            let mut s = match stream {
                Ok(s) => s,
                Err(_) => break,
            };
            // A connect with a zero byte first is the test's stop signal.
            let mut got = 0usize;
            let mut buf = vec![0u8; 64 << 10];
            let mut stop = false;
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if got == 0 && buf[0] == 0 {
                            stop = true;
                            break;
                        }
                        got += n;
                    }
                }
            }
            if stop {
                break;
            }
            links.push(got);
        }
        links
    });

    let mut downs = Vec::new();
    let deadline = std::time::Instant::now() + T;
    let next = || {
        events
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .expect("an event within T")
    };
    loop {
        match next().kind {
            EventKind::Disconnected { reason, .. } => downs.push(reason),
            EventKind::Reconnected { .. } => break,
            _ => {}
        }
    }
    // The close writes what is still queued (its bound is generous).
    client.close();
    let mut sentinel = std::net::TcpStream::connect(addr).unwrap();
    sentinel.write_all(&[0]).unwrap();
    drop(sentinel);
    let links = readers.join().unwrap();

    loop {
        match next().kind {
            EventKind::Disconnected { reason, .. } => downs.push(reason),
            EventKind::Closed => break,
            _ => {}
        }
    }
    assert_eq!(downs.len(), 1, "one link went down, not more: {downs:?}");
    assert_eq!(
        links.len(),
        1,
        "one link after the reset, not more: {links:?}"
    );
    assert!(
        links[0] > 0 && links[0] % FRAME == 0,
        "the new link carried whole frames: {} bytes",
        links[0]
    );
}

/// The server's totals keep the connections it has let go of: before the fix, the
/// messages of clients that had gone dropped out of `Server::stats` once the server
/// forgot their connections (`messages_in` went back to 0).
#[test]
fn server_stats_keep_the_counts_of_connections_that_ended() {
    let s = common::server(serpy::ServerBuilder::new());
    let events = s.events();
    let clients = 10;
    for i in 0..clients {
        let c = Connection::connect(s.local_addr()).expect("connect");
        for j in 0..3 {
            c.send_data(format!("{i}.{j}"), Mode::Plain).unwrap();
        }
        for _ in 0..3 {
            s.recv_any_timeout(T).expect("a message");
        }
        c.close();
    }
    // Each server connection goes down for good once its client has gone.
    let deadline = std::time::Instant::now() + T;
    let mut down = 0;
    while down < clients {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match events.recv_timeout(left).map(|e| e.kind) {
            Ok(EventKind::Disconnected {
                reconnecting: false,
                ..
            }) => down += 1,
            Ok(_) => {}
            Err(_) => panic!("{down} of {clients} connections went down within {T:?}"),
        }
    }
    assert_eq!(s.len(), 0, "the server let go of every connection");
    let stats = s.stats();
    assert_eq!(stats.connections, 0);
    assert_eq!(stats.messages_in, 3 * clients as u64, "{stats}");
    assert!(stats.bytes_in > 0, "{stats}");
    assert!(stats.last_received.is_some(), "{stats}");
}

/// `disable_restart()` while a background connect is still trying ends it with a final
/// event. Before the fix, the events ended with none: nothing said what happened.
#[test]
fn disabling_restart_during_a_background_connect_ends_with_gave_up() {
    // A port nobody listens on: every attempt is refused.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let client = Connection::builder()
        .connect_in_background(true)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(20))
        .connect(addr)
        .expect("a handle at once");
    let events = client.events();
    client.send_data("queued", Mode::Plain).unwrap();
    client.disable_restart();
    let deadline = std::time::Instant::now() + T;
    let mut kinds = Vec::new();
    while let Ok(e) =
        events.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
    {
        kinds.push(e.kind);
    }
    assert!(
        std::time::Instant::now() < deadline,
        "the events ended: {kinds:?}"
    );
    assert!(
        matches!(kinds.first(), Some(EventKind::GaveUp { attempts }) if *attempts >= 1),
        "a final GaveUp: {kinds:?}"
    );
    assert_eq!(
        kinds.get(1),
        Some(&EventKind::Lost { messages: 1 }),
        "then what was queued is reported lost: {kinds:?}"
    );
    assert_eq!(kinds.len(), 2, "{kinds:?}");
    assert!(!client.is_connected());
}

/// A v2 message cut right after its header is reported, with the bytes that arrived of
/// it (the header's). Before the fix, `CutShort` counted only payload bytes: this cut
/// counted 0 and made no event at all.
#[test]
fn a_v2_message_cut_after_its_header_is_reported_with_its_bytes() {
    use serpy::protocol::v2;
    let s = common::server(serpy::ServerBuilder::new().protocol(Protocol::V2));
    let mut raw = std::net::TcpStream::connect(s.local_addr()).unwrap();
    let peer = s.get_connection_timeout(T).unwrap();
    let mut bytes = v2::header(v2::TYPE_TEXT, b"hello").to_vec();
    bytes.extend_from_slice(b"hello");
    bytes.extend_from_slice(&v2::header(v2::TYPE_BYTES, &[0u8; 100]));
    raw.write_all(&bytes).unwrap();
    drop(raw);
    assert_eq!(peer.get_data_timeout(T).unwrap().as_str(), Some("hello"));
    let e = common::wait_event(&peer, "CutShort", |e| {
        matches!(
            e.kind,
            EventKind::ProtocolError(serpy::ProtocolError::CutShort { .. })
        )
    });
    assert_eq!(
        e.kind,
        EventKind::ProtocolError(serpy::ProtocolError::CutShort { bytes: 14 })
    );
}
