//! Issue 9, the server side: each numbered defect tried as a user or a hostile peer
//! would meet it, through the public API only. Each test is named after its item; each failed
//! before its fix.
//!
//! Waits are on the event checked (a message, the end of a stream, a join), with `T` as
//! the upper bound; the only fixed intervals are the bounds a promise is stated in.

mod common;
mod edges_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use common::{server, wait_event};
use edges_support::{count_log_lines, holds_socket, server_socket_inode, T};
use serpy::{
    Broadcast, Bytes, Connection, ConnectionBuilder, Error, Event, Mode, Protocol, ServerBuilder,
};

#[test]
#[cfg_attr(not(target_os = "linux"), ignore = "Linux only: reads /proc")]
fn item02_dead_connections_are_released_without_get_connection() {
    // The README's recv_any pattern: the program never calls get_connection().
    let s = server(ServerBuilder::new());
    let port = s.local_addr().port();
    const CLIENTS: usize = 40;
    let mut inodes = Vec::new();
    for i in 0..CLIENTS {
        let mut raw = TcpStream::connect(s.local_addr()).unwrap();
        raw.write_all(format!("client {i}\x1f").as_bytes()).unwrap();
        let r = s.recv_any_timeout(T).unwrap();
        assert_eq!(r.message.as_str(), Some(format!("client {i}").as_str()));
        let inode = server_socket_inode(port, raw.local_addr().unwrap().port());
        assert_ne!(
            inode, 0,
            "the server's socket of client {i} in /proc/net/tcp"
        );
        inodes.push(inode);
        // Gone for good: a reset, not a half-close. Wait until the server saw it, then
        // let go of the connection.
        edges_support::reset(raw);
        wait_event(&r.connection, "disconnected", |e| {
            matches!(e, Event::Disconnected { .. })
        });
        drop(r);
    }
    // One live client, served like the others.
    let live = Connection::connect(s.local_addr()).unwrap();
    live.send("still here").unwrap();
    assert_eq!(
        s.recv_any_timeout(T).unwrap().message.as_str(),
        Some("still here")
    );
    let len = s.len();
    let held = inodes.iter().filter(|&&i| holds_socket(i)).count();
    // The last one may still be on its way out (its writer ends just after the event).
    assert!(
        held <= 1,
        "the server still holds the sockets of {held} of {CLIENTS} clients that are gone (len() = {len})"
    );
    // What the server holds, len() counts (the live one, and any on its way out).
    assert!(
        (1 + held..=2).contains(&len),
        "len() = {len} with one live connection and {held} held"
    );
}

/// Runs `broadcasts` calls of `broadcast` in a thread; returns the reports of those
/// that ended within `T`. If some hang, closing the server frees them, so the thread
/// can be joined.
fn broadcasts_end(
    s: &Arc<serpy::Server>,
    broadcasts: usize,
    message: impl Fn(usize) -> serpy::Message + Send + 'static,
) -> Vec<Broadcast> {
    let (tx, rx) = mpsc::channel();
    let worker = thread::spawn({
        let s = s.clone();
        move || {
            for i in 0..broadcasts {
                match s.broadcast(message(i)) {
                    Ok(report) => {
                        if tx.send(report).is_err() {
                            return;
                        }
                    }
                    Err(e) => panic!("broadcast {i}: {e}"),
                }
            }
        }
    });
    let deadline = Instant::now() + T;
    let mut done = Vec::new();
    while done.len() < broadcasts {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(report) => done.push(report),
            Err(_) => break,
        }
    }
    if done.len() < broadcasts {
        s.close_all();
    }
    worker.join().unwrap();
    done
}

/// How many of `reports` queued the message for `conn`, and how many say its queue was
/// full.
fn outcomes_for(reports: &[Broadcast], conn: &Connection) -> (usize, usize) {
    let mut queued = 0;
    let mut full = 0;
    for report in reports {
        for (c, r) in report.iter() {
            if c == conn {
                match r {
                    Ok(()) => queued += 1,
                    Err(Error::QueueFull { .. }) => full += 1,
                    Err(e) => panic!("unexpected outcome for a live peer: {e}"),
                }
            }
        }
    }
    (queued, full)
}

#[test]
fn item05_broadcast_does_not_hang_on_an_auto_client_that_has_not_spoken() {
    let s = Arc::new(server(ServerBuilder::new().protocol(Protocol::Auto)));
    let _silent = Connection::connect(s.local_addr()).unwrap();
    let peer = s.get_connection_timeout(T).unwrap();
    let done = broadcasts_end(&s, 2000, |i| serpy::Message::from(i as i64));
    assert_eq!(
        done.len(),
        2000,
        "broadcast hung after {} messages for a client whose protocol is not known yet",
        done.len()
    );
    // Its queue took what it could hold; each later message is reported as missed.
    let (queued, full) = outcomes_for(&done, &peer);
    assert_eq!(
        queued + full,
        2000,
        "one outcome per broadcast for the peer"
    );
    assert!(full > 0, "2,000 messages fit in a queue of 1,024");
}

#[test]
fn item05_one_peer_that_never_reads_does_not_block_broadcast() {
    let s = Arc::new(server(
        ServerBuilder::new()
            .protocol(Protocol::V2)
            .outgoing_capacity(4)
            .close_timeout(T),
    ));
    // A reader, and a raw peer that never reads.
    let reader = ConnectionBuilder::new()
        .protocol(Protocol::V2)
        .connect(s.local_addr())
        .unwrap();
    let reader_peer = s.get_connection_timeout(T).unwrap();
    let stuck = TcpStream::connect(s.local_addr()).unwrap();
    let stuck_peer = s.get_connection_timeout(T).unwrap();
    let received = thread::spawn(move || {
        let mut n = 0;
        while reader.get_data_timeout(T).is_ok() {
            n += 1;
        }
        n
    });
    // 200 x 256 KiB: far more than the stuck peer's socket buffers and queue hold.
    let blob = Bytes::from(vec![5u8; 256 << 10]);
    let done = broadcasts_end(&s, 200, move |_| serpy::Message::Bytes(blob.clone()));
    // The stuck peer goes; closing then writes everything queued for the reader.
    edges_support::reset(stuck);
    s.close_all();
    let n = received.join().unwrap();
    assert_eq!(
        done.len(),
        200,
        "broadcast blocked after {} messages on a peer that never reads (the reader got {n})",
        done.len()
    );
    let (stuck_queued, stuck_full) = outcomes_for(&done, &stuck_peer);
    assert!(
        stuck_full > 0,
        "the stuck peer's queue never filled ({stuck_queued} queued)"
    );
    let (reader_queued, _) = outcomes_for(&done, &reader_peer);
    assert_eq!(
        n, reader_queued,
        "the reader got every message queued for it, and no other"
    );
}

#[test]
fn item10_refused_connections_make_a_few_log_lines() {
    let refused = count_log_lines("refused", log::Level::Warn);
    let s = server(ServerBuilder::new().max_connections(1));
    let _holder = Connection::connect(s.local_addr()).unwrap();
    let _holder_peer = s.get_connection_timeout(T).unwrap();
    for i in 0..200 {
        let mut raw = TcpStream::connect(s.local_addr()).unwrap();
        raw.set_read_timeout(Some(T)).unwrap();
        // Refused: the server closes it at once.
        let mut buf = [0u8; 16];
        let n = raw.read(&mut buf);
        assert!(
            matches!(n, Ok(0) | Err(_)),
            "connection {i} over the limit was not refused: {n:?}"
        );
    }
    let n = refused.load(std::sync::atomic::Ordering::Relaxed);
    assert!(n >= 1, "refused connections are logged");
    assert!(n <= 30, "{n} log lines for 200 refused connections");
}

#[test]
fn item11_close_all_closes_stalled_connections_in_parallel() {
    const PEERS: usize = 6;
    let close_timeout = Duration::from_millis(500);
    let s = server(
        ServerBuilder::new()
            .protocol(Protocol::V2)
            .outgoing_capacity(2)
            .close_timeout(close_timeout),
    );
    // Peers that never read; each server connection is stuck writing to one of them.
    let mut raws = Vec::new();
    let blob = Bytes::from(vec![1u8; 1 << 20]);
    for _ in 0..PEERS {
        raws.push(TcpStream::connect(s.local_addr()).unwrap());
        let conn = s.get_connection_timeout(T).unwrap();
        let mut full = false;
        for _ in 0..200 {
            match conn.send_data_timeout(blob.clone(), Mode::Plain, Duration::from_millis(100)) {
                Ok(()) => {}
                Err(Error::Timeout { .. }) => {
                    full = true;
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(full, "the queue of a peer that never reads never filled");
    }
    let started = Instant::now();
    s.close_all();
    let took = started.elapsed();
    drop(raws);
    // One close takes about close_timeout + 500 ms; in parallel, all of them together
    // too. 3.5 s leaves room for a loaded machine and is far below 6 x 1 s.
    assert!(
        took < Duration::from_millis(3500),
        "close_all() took {took:?} for {PEERS} stalled peers (close timeout {close_timeout:?})"
    );
}

#[test]
fn item13_busy_port_error_says_the_port_is_taken() {
    let s = server(ServerBuilder::new());
    let e = ServerBuilder::new().bind(s.local_addr()).unwrap_err();
    assert!(matches!(e, Error::Address { .. }), "{e}");
    let text = e.to_string();
    assert!(
        !text.contains("give an IP address and a port"),
        "a busy port gets the hint for a malformed address: {text}"
    );
    assert!(
        text.contains(&s.local_addr().port().to_string()),
        "the error names the port: {text}"
    );
}

#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "Linux only: /proc, and accept() out of descriptors"
)]
fn item13_a_burst_of_connects_fits_in_the_listen_backlog() {
    // The accept thread is kept from accepting by the lack of descriptors (which needs a
    // process of its own), so connections stay in the listen queue: count how many fit.
    if !edges_support::in_child_with_fd_limit(
        "item13_a_burst_of_connects_fits_in_the_listen_backlog",
        1024,
    ) {
        return;
    }
    const BURST: usize = 300;
    let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if somaxconn < BURST {
        eprintln!("net.core.somaxconn is {somaxconn}: no listen queue can hold {BURST}; skipped");
        return;
    }
    let s = server(ServerBuilder::new().max_connections(4));
    let addr: socket2::SockAddr = s.local_addr().into();
    let sockets: Vec<socket2::Socket> = (0..BURST)
        .map(|_| socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap())
        .collect();
    let files = edges_support::exhaust_descriptors();
    let mut queued = 0;
    for socket in &sockets {
        match socket.connect_timeout(&addr, Duration::from_millis(500)) {
            Ok(()) => queued += 1,
            Err(_) => break,
        }
    }
    drop(files);
    drop(sockets);
    assert_eq!(
        queued, BURST,
        "only {queued} of a burst of {BURST} connects fit in the listen queue (std's backlog is 128)"
    );
}

#[test]
fn get_connection_ends_once_the_server_is_closed() {
    // With the new-connection queue kept by the server (item 2), a blocked
    // get_connection() must still end when the accept thread does.
    let s = Arc::new(server(ServerBuilder::new()));
    let _c = Connection::connect(s.local_addr()).unwrap();
    let _peer = s.get_connection_timeout(T).unwrap();
    let (started_tx, started) = mpsc::channel();
    let waiter = thread::spawn({
        let s = s.clone();
        move || {
            let _ = started_tx.send(());
            let begun = Instant::now();
            (s.get_connection_timeout(T).map(|_| ()), begun.elapsed())
        }
    });
    started.recv().unwrap();
    s.close();
    let (then, waited) = waiter.join().unwrap();
    assert!(
        matches!(then, Err(Error::Closed)),
        "get_connection() after close(): {then:?} after {waited:?}"
    );
}
