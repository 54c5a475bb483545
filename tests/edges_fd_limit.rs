//! Issue 9 item 3: a server out of file descriptors backs off, logs at a bounded rate
//! and resumes. The descriptor limit is per process, so the test runs in a child
//! process with a low limit (`ulimit -n` in `/bin/sh`, then this binary again), and this
//! file holds this one test only, because it installs the process's logger.
//!
//! How the server is brought to fail its accepts: Linux reserves the descriptor of an
//! accept() before it waits, so a blocked accept thread always has one; the accept that
//! fails with EMFILE is the next one after a connection took the last descriptors. So
//! the test measures what one accepted connection costs, leaves exactly that many free
//! (counting the reserved one), and connects: once that connection has started, no
//! descriptor is left, and a second client waits in the listen queue.

mod edges_support;

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use edges_support::{count_log_lines, exhaust_descriptors, CpuClock, T};
use serpy::{Server, ServerBuilder};

/// How long the server is watched while it has no descriptors left: the interval the
/// promise is measured over, not a wait for an event.
const WATCH: Duration = Duration::from_secs(1);

/// Descriptors this process has open.
fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn client_socket() -> socket2::Socket {
    socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap()
}

#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "Linux only: /proc, and accept() out of descriptors"
)]
fn item03_out_of_descriptors_the_accept_thread_backs_off_and_resumes() {
    if !edges_support::in_child_with_fd_limit(
        "item03_out_of_descriptors_the_accept_thread_backs_off_and_resumes",
        256,
    ) {
        return;
    }
    let warned = count_log_lines("", log::Level::Warn);
    let s = ServerBuilder::new().bind("127.0.0.1:0").unwrap();
    let addr: socket2::SockAddr = s.local_addr().into();
    let mut clock = CpuClock::new();
    // What one accepted connection costs the server, in descriptors (the reserved one of
    // the blocked accept moves on to the next accept, unseen).
    let before = open_descriptors();
    let probe = TcpStream::connect(s.local_addr()).unwrap();
    let probe_peer = s.get_connection_timeout(T).unwrap();
    let per_connection = open_descriptors() - before - 1;
    // Gone for good, and forgotten by the server: its descriptors are free again.
    probe_peer.close();
    drop((probe_peer, probe));
    assert_eq!(s.len(), 0);
    assert_eq!(open_descriptors(), before);
    // Sockets made first; connected when descriptors are short, which needs none.
    let (first, waiting) = (client_socket(), client_socket());
    let mut files = exhaust_descriptors();
    files.truncate(files.len() - (per_connection - 1));
    first.connect(&addr).unwrap();
    let first_peer = s
        .get_connection_timeout(T)
        .expect("a connection started with the last descriptors");
    // No descriptor is left: this client cannot be accepted.
    waiting.connect(&addr).unwrap();
    let mut waiting = TcpStream::from(waiting);

    let warned_before = warned.load(Ordering::Relaxed);
    let cpu_before = clock.now();
    let started = Instant::now();
    // Nothing can be accepted now: this ends after WATCH.
    let early = s.get_connection_timeout(WATCH);
    let wall = started.elapsed();
    let cpu = clock.now().saturating_sub(cpu_before);
    let lines = warned.load(Ordering::Relaxed) - warned_before;
    assert!(
        early.is_err(),
        "a connection was accepted without descriptors"
    );
    drop(files);

    // Descriptors are back: the waiting client is served.
    let peer = s
        .get_connection_timeout(T)
        .expect("the server accepts again once descriptors are free");
    assert_eq!(peer.peer_addr(), waiting.local_addr().ok());
    waiting.write_all(b"hello\x1f").unwrap();
    assert_eq!(peer.get_data_timeout(T).unwrap().as_str(), Some("hello"));
    drop((peer, first_peer, first, waiting));

    // Out of descriptors again, the accept thread blocked: closing must still wake it,
    // although it cannot connect to the server for that.
    let closed_in_time = close_while_out_of_descriptors(s);
    assert!(
        cpu < wall / 10 && lines <= 20,
        "while out of descriptors for {wall:?}, the process used {cpu:?} of CPU and logged {lines} warning lines"
    );
    assert!(
        closed_in_time,
        "close() did not return while out of descriptors"
    );
}

/// Closes `s` in a thread while no descriptor is free; true if it returned within `T`.
fn close_while_out_of_descriptors(s: Server) -> bool {
    let addr = s.local_addr();
    let files = exhaust_descriptors();
    let (closed_tx, closed) = mpsc::channel();
    let closer = thread::spawn(move || {
        s.close();
        let _ = closed_tx.send(());
        s
    });
    let in_time = closed.recv_timeout(T).is_ok();
    drop(files);
    if !in_time {
        // With descriptors back, a connection wakes the accept that did not wake.
        let _ = TcpStream::connect(addr);
    }
    drop(closer.join().unwrap());
    in_time
}
