//! close() and Drop end every thread they started. This file holds one test only, so
//! that no other test's threads run in this process while it counts.

mod common;

use common::{fd_count, thread_count, T};
use serpy::{Connection, Mode, Protocol, ServerBuilder};

// The counts come from /proc on Linux and from kernel32 on Windows; macOS has neither
// /proc nor a thread count without more foreign code (common::thread_count gives 0).
#[test]
#[cfg_attr(
    not(any(target_os = "linux", windows)),
    ignore = "counts threads and descriptors: Linux (/proc) and Windows only"
)]
fn close_ends_every_thread_and_socket() {
    // Warm up anything the first use of the process may start.
    let _ = thread_count();
    let threads_before = thread_count();
    let fds_before = fd_count();
    for protocol in [Protocol::V1, Protocol::V2, Protocol::Auto] {
        let server = ServerBuilder::new()
            .protocol(protocol)
            .bind("127.0.0.1:0")
            .unwrap();
        let client_protocol = if protocol == Protocol::Auto {
            Protocol::V2
        } else {
            protocol
        };
        let clients: Vec<Connection> = (0..5)
            .map(|_| {
                Connection::builder()
                    .protocol(client_protocol)
                    .auto_restart(true)
                    .connect(server.local_addr())
                    .unwrap()
            })
            .collect();
        for c in &clients {
            c.send_data(1, Mode::Plain).unwrap();
        }
        for _ in 0..5 {
            server
                .recv_any_timeout(T)
                .unwrap_or_else(|e| panic!("{protocol}: {e}"));
        }
        assert!(thread_count() > threads_before);
        clients[0].close();
        drop(clients);
        server.close_all();
        drop(server);
    }
    assert_eq!(thread_count(), threads_before, "threads left running");
    assert_eq!(fd_count(), fds_before, "sockets left open");
}
