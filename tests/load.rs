//! Load: 500 clients send 1,000 messages each through one server; everything arrives, in
//! order per client; after closing, the threads and file descriptors of the process are back
//! where they started. This file holds one test only, so that no other test's threads run
//! in this process while it counts.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{fd_count, thread_count, T};
use serpy::{Connection, Mode, Protocol, ServerBuilder};

const CLIENTS: usize = 500;
const PER_CLIENT: i64 = 1000;

/// The soft limit on open files, from /proc/self/limits.
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

// The counts come from /proc on Linux and from kernel32 on Windows; macOS has neither
// /proc nor a thread count without more foreign code (common::thread_count gives 0), and
// its default open-files limit (256) holds 40 clients, which /proc/self/limits would say.
#[test]
#[cfg_attr(
    not(any(target_os = "linux", windows)),
    ignore = "counts threads and descriptors: Linux (/proc) and Windows only"
)]
fn five_hundred_clients_a_thousand_messages_each() {
    // Each connection holds three descriptors (writer, reader, close handle) on each side.
    let mut clients = CLIENTS;
    if let Some(limit) = open_files_limit() {
        let fit = limit.saturating_sub(64) / 6;
        if fit < clients {
            eprintln!("load: the open-files limit {limit} allows {fit} clients, not {CLIENTS}");
            clients = fit;
        }
    }
    let _ = thread_count();
    let threads_before = thread_count();
    let fds_before = fd_count();
    let started = Instant::now();
    {
        let server = ServerBuilder::new()
            .protocol(Protocol::Auto)
            .max_connections(clients + 16)
            .bind("127.0.0.1:0")
            .unwrap();
        // Half the clients speak v1, half v2.
        let conns: Vec<Connection> = (0..clients)
            .map(|i| {
                let protocol = if i % 2 == 0 {
                    Protocol::V1
                } else {
                    Protocol::V2
                };
                Connection::builder()
                    .protocol(protocol)
                    .connect(server.local_addr())
                    .unwrap()
            })
            .collect();
        let connected = started.elapsed();
        assert!(thread_count() >= threads_before + 2 * clients);
        for c in &conns {
            for i in 0..PER_CLIENT {
                c.send_data_timeout(i, Mode::Plain, T).unwrap();
            }
        }
        let sent = started.elapsed();
        // In order per client, each message once.
        let mut next: HashMap<u64, i64> = HashMap::new();
        for _ in 0..clients as i64 * PER_CLIENT {
            let r = server.recv_any_timeout(T).expect("a message");
            let n = r.message.as_int().expect("a number");
            let want = next.entry(r.connection.id()).or_insert(0);
            assert_eq!(n, *want, "connection {}", r.connection.id());
            *want += 1;
        }
        assert_eq!(next.len(), clients);
        assert!(next.values().all(|&n| n == PER_CLIENT));
        assert!(matches!(server.try_recv_any(), Ok(None)));
        let received = started.elapsed();
        drop(conns);
        server.close_all();
        eprintln!(
            "load: {clients} clients x {PER_CLIENT} messages: connected in {connected:?}, \
             sent by {sent:?}, all received by {received:?}, closed by {:?}",
            started.elapsed()
        );
    }
    assert_eq!(thread_count(), threads_before, "threads left running");
    assert_eq!(fd_count(), fds_before, "descriptors left open");
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "took {:?}",
        started.elapsed()
    );
}
