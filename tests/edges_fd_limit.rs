//! Issue 9 item 3: a server out of file descriptors backs off, logs at a bounded rate
//! and resumes. The descriptor limit is per process, so the test runs in a child
//! process with a low limit (`ulimit -n` in `/bin/sh`, then this binary again), and this
//! file holds this one test only, because it installs the process's logger.

mod edges_support;

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use edges_support::{count_log_lines, exhaust_descriptors, CpuClock, T};
use serpy::ServerBuilder;

/// How long the server is watched while it has no descriptors left: the interval the
/// promise is measured over, not a wait for an event.
const WATCH: Duration = Duration::from_secs(1);

/// Clients waiting in the listen queue while the server has no descriptors.
const CLIENTS: usize = 4;

#[test]
fn item03_out_of_descriptors_the_accept_thread_backs_off_and_resumes() {
    if !edges_support::in_child_with_fd_limit(
        "item03_out_of_descriptors_the_accept_thread_backs_off_and_resumes",
        256,
    ) {
        return;
    }
    let warned = count_log_lines("", log::Level::Warn);
    let s = ServerBuilder::new().bind("127.0.0.1:0").unwrap();
    let mut clock = CpuClock::new();
    // Client sockets made first, connected once no descriptor is left: the server can
    // then accept none of them.
    let sockets: Vec<socket2::Socket> = (0..CLIENTS)
        .map(|_| socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap())
        .collect();
    let files = exhaust_descriptors();
    let addr: socket2::SockAddr = s.local_addr().into();
    for socket in &sockets {
        socket.connect(&addr).unwrap();
    }
    let mut raws: Vec<TcpStream> = sockets.into_iter().map(TcpStream::from).collect();
    let warned_before = warned.load(Ordering::Relaxed);
    let cpu_before = clock.now();
    let started = Instant::now();
    // No connection can be accepted now: this ends after WATCH.
    let early = s.get_connection_timeout(WATCH);
    let wall = started.elapsed();
    let cpu = clock.now().saturating_sub(cpu_before);
    let lines = warned.load(Ordering::Relaxed) - warned_before;
    assert!(
        early.is_err(),
        "a connection was accepted without descriptors"
    );
    drop(files);
    // Descriptors are back: the waiting clients are served.
    let peer = s
        .get_connection_timeout(T)
        .expect("the server accepts again once descriptors are free");
    let raw = raws
        .iter_mut()
        .find(|r| r.local_addr().ok() == peer.peer_addr())
        .expect("the connection is one of the waiting clients");
    raw.write_all(b"hello\x1f").unwrap();
    assert_eq!(peer.get_data_timeout(T).unwrap().as_str(), Some("hello"));
    assert!(
        cpu < wall / 4 && lines <= 20,
        "while out of descriptors for {wall:?}, the process used {cpu:?} of CPU and logged {lines} warning lines"
    );
}
