//! Helpers shared by the loopback test suites.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod logs;
pub mod proxy;

use std::time::Duration;

use serpy::{Connection, Event, Server};

pub mod vectors;

/// Upper bound for anything a test waits for; never a pause.
pub const T: Duration = Duration::from_secs(20);

/// A server on 127.0.0.1 port 0 with `builder`'s options.
pub fn server(builder: serpy::ServerBuilder) -> Server {
    builder.bind("127.0.0.1:0").expect("bind 127.0.0.1:0")
}

/// Connects `builder` to `server` and returns (client, server side of the link).
pub fn pair(server: &Server, builder: serpy::ConnectionBuilder) -> (Connection, Connection) {
    let client = builder.connect(server.local_addr()).expect("connect");
    let peer = server.get_connection_timeout(T).expect("accepted");
    (client, peer)
}

/// Waits for the first event that `pred` accepts; panics after `T`.
pub fn wait_event(conn: &Connection, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
    let deadline = std::time::Instant::now() + T;
    let events = conn.events();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match events.recv_timeout(left) {
            Some(e) if pred(&e) => return e,
            Some(_) => {}
            None => panic!("no {what} event within {T:?}"),
        }
    }
}

/// The number of threads of this process.
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The number of open file descriptors of this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}
