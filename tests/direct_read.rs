//! The program's threads reading the socket themselves (Linux: `get_data` and an
//! acknowledged send waiting for its answer take the link's read role when nobody else
//! reads, see src/connection/direct.rs), side by side with the reader thread: order, no
//! loss, several callers at once, timeouts, acknowledged sends, the end of a link met by
//! a caller, close() and auto-restart while a caller waits. Everything here holds on every
//! platform (elsewhere the reader thread does all the reading).

mod common;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::{pair, server, wait_event, T};
use serpy::{Connection, Error, EventKind, Message, Mode, Protocol, Server};

fn n_of(m: &Message) -> u64 {
    m.as_str()
        .expect("text")
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {m:?}"))
}

/// Spawns `f` (a caller about to wait in `get_data`) and returns once its thread is
/// asleep: it reached its wait, in the socket or on the incoming queue (Linux: the
/// thread's state in /proc, looked at until it says so, `T` at most). The tests that use
/// it hold whichever wait the caller is in; this makes them meet the wait, not a caller
/// still on its way to it.
fn spawn_waiting<R: Send + 'static>(
    f: impl FnOnce() -> R + Send + 'static,
) -> thread::JoinHandle<R> {
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let handle = thread::spawn(move || {
        // The thread's own id, as /proc/thread-self names it.
        let tid = std::fs::read_link("/proc/thread-self")
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
        let _ = tid_tx.send(tid);
        f()
    });
    if let Ok(Some(tid)) = tid_rx.recv_timeout(T) {
        let stat = format!("/proc/self/task/{tid}/stat");
        let deadline = Instant::now() + T;
        while Instant::now() < deadline {
            let asleep = std::fs::read_to_string(&stat)
                .map(|s| {
                    s.rsplit_once(") ")
                        .is_some_and(|(_, rest)| rest.starts_with('S'))
                })
                .unwrap_or(true);
            if asleep {
                break;
            }
            thread::yield_now();
        }
    }
    handle
}

/// Writes `text` as one v2 frame to a raw socket (a peer made by hand).
fn write_v2(stream: &TcpStream, text: &str) {
    let mut wire = serpy::protocol::WireBuf::new();
    serpy::protocol::v2::encode(&Message::from(text), &mut wire).unwrap();
    let mut stream = stream;
    stream.write_all(&wire.to_vec()).unwrap();
}

/// A raw socket connected to `s` and the server's connection for it, with a first
/// frame through, so that the link's reads are shared.
fn raw_peer(s: &Server) -> (TcpStream, Connection) {
    let raw = TcpStream::connect(s.local_addr()).unwrap();
    let peer = s.get_connection_timeout(T).unwrap();
    write_v2(&raw, "x");
    assert_eq!(peer.get_data_timeout(T).unwrap().as_str(), Some("x"));
    (raw, peer)
}

fn v2_pair() -> (Server, Connection, Connection) {
    let s = server(Server::builder().protocol(Protocol::V2));
    let (c, p) = pair(&s, Connection::builder().protocol(Protocol::V2));
    (s, c, p)
}

/// Round trips first (the caller reads), then bursts the reader thread reads while the
/// program is elsewhere, then round trips again: every message once, in order.
#[test]
fn messages_keep_their_order_across_direct_and_threaded_reads() {
    let (_s, client, peer) = v2_pair();
    let mut next = 0u64;
    let mut want = 0u64;
    for round in 0..20 {
        // A burst: some of it waits in the queue, read by the reader thread.
        let burst = if round % 2 == 0 { 1 } else { 50 };
        for _ in 0..burst {
            client.send(next.to_string()).unwrap();
            next += 1;
        }
        if round % 3 == 0 {
            // The program takes what is already there without waiting, then waits.
            while let Some(m) = peer.try_get_data().unwrap() {
                assert_eq!(n_of(&m), want);
                want += 1;
            }
        }
        while want < next {
            let m = peer.get_data_timeout(T).unwrap();
            assert_eq!(n_of(&m), want);
            want += 1;
        }
    }
    assert!(peer.try_get_data().unwrap().is_none());
}

/// A ping-pong in both protocols (the path the direct read is for), checked for order.
#[test]
fn a_request_and_its_answer_in_a_loop_in_both_protocols() {
    for protocol in [Protocol::V1, Protocol::V2] {
        let s = server(Server::builder().protocol(protocol));
        let (client, peer) = pair(&s, Connection::builder().protocol(protocol));
        let echo = thread::spawn(move || {
            for _ in 0..500 {
                let m = peer.get_data_timeout(T).unwrap();
                peer.send(m).unwrap();
            }
        });
        for i in 0..500u64 {
            client.send(i.to_string()).unwrap();
            assert_eq!(n_of(&client.get_data_timeout(T).unwrap()), i, "{protocol}");
        }
        echo.join().unwrap();
    }
}

/// Three threads take from one connection while a stream comes in: each message goes
/// to one of them, each sees its share in order, none is lost.
#[test]
fn several_callers_at_once_get_every_message_once_and_in_order() {
    const N: u64 = 3000;
    let (_s, client, peer) = v2_pair();
    let takers: Vec<_> = (0..3)
        .map(|_| {
            let peer = peer.clone();
            thread::spawn(move || {
                let mut got = Vec::new();
                loop {
                    match peer.get_data_timeout(T) {
                        Ok(m) if m.as_str() == Some("end") => return got,
                        Ok(m) => got.push(n_of(&m)),
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    for i in 0..N {
        client.send(i.to_string()).unwrap();
    }
    for _ in 0..3 {
        client.send("end").unwrap();
    }
    let mut all = Vec::new();
    for t in takers {
        let numbers: Vec<u64> = t.join().unwrap();
        assert!(
            numbers.windows(2).all(|w| w[0] < w[1]),
            "in order per taker"
        );
        all.extend(numbers);
    }
    all.sort_unstable();
    assert_eq!(all, (0..N).collect::<Vec<_>>(), "each one once, none lost");
}

/// Small incoming queues (the reader thread waits for room; callers may not read) and
/// large ones (callers read chunks), v1 and v2: nothing lost, in order, within bounds.
#[test]
fn a_stream_into_bounded_queues_loses_nothing() {
    for (protocol, capacity) in [
        (Protocol::V2, 2),
        (Protocol::V2, 200),
        (Protocol::V1, 8),
        (Protocol::V1, 5000),
    ] {
        let s = server(
            Server::builder()
                .protocol(protocol)
                .incoming_capacity(capacity),
        );
        let (client, peer) = pair(&s, Connection::builder().protocol(protocol));
        const N: u64 = 5000;
        let sender = thread::spawn(move || {
            for i in 0..N {
                client.send(i.to_string()).unwrap();
            }
            client
        });
        for i in 0..N {
            let m = peer.get_data_timeout(T).unwrap();
            assert_eq!(n_of(&m), i, "{protocol}, capacity {capacity}");
            assert!(peer.stats().queued_in <= capacity, "the count bound holds");
        }
        sender.join().unwrap().close();
    }
}

/// A v2 stream of large messages read by a caller in `get_data`: 64 KiB messages (a
/// caller keeps the read role through them), mixed with ones from 128 KiB (handed to
/// the reader thread, also while a payload is still coming) and over 2 MiB (read in
/// pieces), into a queue bounded to a few: every byte once, in order, within the bound.
#[test]
fn a_stream_of_large_v2_messages_read_by_a_caller_comes_whole_and_in_order() {
    let capacity = 4;
    let s = server(
        Server::builder()
            .protocol(Protocol::V2)
            .incoming_capacity(capacity),
    );
    let (client, peer) = pair(&s, Connection::builder().protocol(Protocol::V2));
    let len = |i: usize| match i % 10 {
        3 => 130 * 1024 + i,
        7 => (2 << 20) + 1000 + i,
        _ => 64 * 1024 + i % 3,
    };
    const N: usize = 120;
    let sender = thread::spawn(move || {
        for i in 0..N {
            client.send(Message::from(vec![i as u8; len(i)])).unwrap();
        }
        client
    });
    for i in 0..N {
        let m = peer.get_data_timeout(T).unwrap();
        let bytes = m.as_bytes().expect("bytes");
        assert_eq!(bytes.len(), len(i), "message {i}");
        assert!(bytes.iter().all(|&b| b == i as u8), "message {i}");
        assert!(peer.stats().queued_in <= capacity, "the count bound holds");
    }
    assert!(peer.try_get_data().unwrap().is_none());
    sender.join().unwrap().close();
}

/// A burst of far more than the incoming queue's count bound lets in, read while a
/// caller waits in `get_data`: the rest waits in the connection, within the bound, and
/// comes in order, also to a program that no longer calls `get_data` (`Select` and
/// `try_get_data` read nothing themselves: the reader thread must deliver whatever a
/// caller's read brought and could not put in the queue).
#[test]
fn what_a_caller_read_beyond_the_bound_comes_in_order_to_any_taker() {
    const N: u64 = 200;
    const BOUND: usize = 4;
    let s = server(
        Server::builder()
            .protocol(Protocol::V2)
            .incoming_capacity(BOUND),
    );
    let (raw, peer) = raw_peer(&s);
    let waiting = {
        let peer = peer.clone();
        spawn_waiting(move || peer.get_data_timeout(T))
    };
    // All at once, for the waiting caller's read (about 3.6 KB).
    let mut wire = serpy::protocol::WireBuf::new();
    for i in 0..N {
        serpy::protocol::v2::encode(&Message::from(i.to_string()), &mut wire).unwrap();
    }
    (&raw).write_all(&wire.to_vec()).unwrap();
    assert_eq!(n_of(&waiting.join().unwrap().unwrap()), 0);
    let mut sel = serpy::Select::new();
    sel.messages(&peer);
    let mut next = 1;
    while next < N {
        assert!(
            sel.ready_timeout(T).is_some(),
            "message {next} of {N} never came"
        );
        while let Some(m) = peer.try_get_data().unwrap() {
            assert_eq!(n_of(&m), next);
            next += 1;
            assert!(peer.stats().queued_in <= BOUND, "the count bound holds");
        }
    }
}

/// Timeouts: one that runs out, a shorter and a longer one after it, then a wait without
/// a timeout that a message ends (a receive timeout left on the socket must not end it).
#[test]
fn timeouts_run_out_and_a_wait_without_one_is_not_cut_short() {
    let (_s, client, peer) = v2_pair();
    // The link speaks first, so that reads are shared from now on.
    client.send("hello").unwrap();
    assert_eq!(peer.get_data_timeout(T).unwrap().as_str(), Some("hello"));
    for ms in [50u64, 5, 120] {
        let started = Instant::now();
        match peer.get_data_timeout(Duration::from_millis(ms)) {
            Err(Error::Timeout { after, .. }) => assert_eq!(after, Duration::from_millis(ms)),
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() >= Duration::from_millis(ms));
    }
    let waiting = {
        let peer = peer.clone();
        thread::spawn(move || peer.get_data())
    };
    // Longer than every timeout above: a wait cut short by one of them would show.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let timer = thread::spawn(move || rx.recv_timeout(Duration::from_millis(300)));
    let _ = timer.join();
    drop(tx);
    assert!(
        !waiting.is_finished(),
        "get_data() returned without a message"
    );
    client.send("late").unwrap();
    assert_eq!(waiting.join().unwrap().unwrap().as_str(), Some("late"));
    // A timeout that a message ends early.
    let waiting = {
        let peer = peer.clone();
        thread::spawn(move || peer.get_data_timeout(T))
    };
    client.send("soon").unwrap();
    assert_eq!(waiting.join().unwrap().unwrap().as_str(), Some("soon"));
}

/// Acknowledged v1 sends, from one thread and from two at once, while the peer also
/// sends data to the sender: every send answered, every message delivered in order.
#[test]
fn acknowledged_sends_are_answered_while_data_comes_the_other_way() {
    let s = server(Server::builder().protocol(Protocol::V1));
    let (client, peer) = pair(&s, Connection::builder().protocol(Protocol::V1));
    let drain = {
        let peer = peer.clone();
        thread::spawn(move || {
            let mut got = Vec::new();
            loop {
                let m = peer.get_data_timeout(T).unwrap();
                if m.as_str() == Some("end") {
                    return got;
                }
                got.push(m.as_str().unwrap().to_string());
                // Data the other way, which the sender's reads deliver.
                peer.send("back").unwrap();
            }
        })
    };
    for i in 0..300 {
        client.send_data(format!("a{i}"), Mode::PlainAck).unwrap();
    }
    let senders: Vec<_> = (0..2)
        .map(|t| {
            let client = client.clone();
            thread::spawn(move || {
                for i in 0..200 {
                    client
                        .send_data(format!("t{t}-{i}"), Mode::PlainAck)
                        .unwrap();
                }
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    client.send_data("end", Mode::PlainAck).unwrap();
    let got = drain.join().unwrap();
    assert_eq!(got.len(), 700);
    let ours: Vec<String> = (0..300).map(|i| format!("a{i}")).collect();
    assert_eq!(got[..300], ours[..]);
    for t in 0..2 {
        let theirs: Vec<&String> = got
            .iter()
            .filter(|m| m.starts_with(&format!("t{t}-")))
            .collect();
        let want: Vec<String> = (0..200).map(|i| format!("t{t}-{i}")).collect();
        assert_eq!(
            theirs,
            want.iter().collect::<Vec<_>>(),
            "in order per sender"
        );
    }
    // What came back is all there, in the sender's queue or already read.
    let mut back = 0;
    while client.get_data_timeout(T).is_ok() {
        back += 1;
        if back == 700 {
            break;
        }
    }
    assert_eq!(back, 700);
}

/// close() from another thread while a caller waits in get_data() (in the socket, or on
/// the queue): it returns `Closed` within the close timeout.
#[test]
fn close_ends_a_caller_waiting_for_data() {
    let (_s, client, peer) = v2_pair();
    client.send("first").unwrap();
    assert_eq!(peer.get_data_timeout(T).unwrap().as_str(), Some("first"));
    let waiting = {
        let peer = peer.clone();
        spawn_waiting(move || peer.get_data())
    };
    let started = Instant::now();
    peer.close();
    assert!(matches!(waiting.join().unwrap(), Err(Error::Closed)));
    assert!(started.elapsed() < T, "close took {:?}", started.elapsed());
    client.close();
}

/// The peer resets the link while a caller waits in get_data(): the caller gets
/// `Disconnected` and the event says the read failed, as when the reader thread reads.
#[test]
fn a_reset_met_by_a_waiting_caller_is_reported_as_the_reader_would() {
    let s = server(Server::builder().protocol(Protocol::V2));
    let (raw, peer) = raw_peer(&s);
    let waiting = {
        let peer = peer.clone();
        spawn_waiting(move || peer.get_data())
    };
    // SO_LINGER 0: closing sends a reset.
    socket2::SockRef::from(&raw)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(raw);
    assert!(matches!(waiting.join().unwrap(), Err(Error::Disconnected)));
    let e = wait_event(&peer, "Disconnected", |e| {
        matches!(e.kind, EventKind::Disconnected { .. })
    });
    match e.kind {
        EventKind::Disconnected { reason, .. } => {
            assert!(
                reason.contains("reset") || reason.contains("closed"),
                "{reason}"
            )
        }
        _ => unreachable!(),
    }
}

/// A v1 peer sends a message in an acknowledged mode that must be dropped (too large)
/// while a caller waits: the link ends with the reason, as the reader thread ends it.
#[test]
fn a_message_that_ends_the_link_read_by_a_caller_ends_it() {
    let s = server(
        Server::builder()
            .protocol(Protocol::V1)
            .max_message_size(100),
    );
    let mut raw = TcpStream::connect(s.local_addr()).unwrap();
    let peer = s.get_connection_timeout(T).unwrap();
    raw.write_all(b"first\x1f").unwrap();
    assert_eq!(peer.get_data_timeout(T).unwrap().as_str(), Some("first"));
    let waiting = {
        let peer = peer.clone();
        thread::spawn(move || peer.get_data())
    };
    let mut big = b"\x01SETMODE1\x1f".to_vec();
    big.extend(std::iter::repeat(b'y').take(500));
    big.push(0x1f);
    raw.write_all(&big).unwrap();
    assert!(matches!(waiting.join().unwrap(), Err(Error::Disconnected)));
    let e = wait_event(&peer, "Disconnected", |e| {
        matches!(e.kind, EventKind::Disconnected { .. })
    });
    match e.kind {
        EventKind::Disconnected { reason, .. } => {
            assert!(reason.contains("acknowledged mode"), "{reason}")
        }
        _ => unreachable!(),
    }
}

/// Auto-restart while a caller waits in get_data(): the link breaks under it, comes
/// back, and the caller gets the message sent on the new link.
#[test]
fn a_caller_waiting_through_a_reconnect_gets_the_next_link_s_message() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let client = Connection::builder()
        .protocol(Protocol::V2)
        .auto_restart(true)
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(50))
        .connect(addr)
        .unwrap();
    let (first, _) = listener.accept().unwrap();
    write_v2(&first, "one");
    assert_eq!(client.get_data_timeout(T).unwrap().as_str(), Some("one"));
    let waiting = {
        let client = client.clone();
        spawn_waiting(move || client.get_data_timeout(T))
    };
    drop(first);
    let (second, _) = listener.accept().unwrap();
    write_v2(&second, "two");
    assert_eq!(waiting.join().unwrap().unwrap().as_str(), Some("two"));
    client.close();
}
