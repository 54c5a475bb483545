//! A peer that breaks the protocol on purpose cannot flood the log (issue 9, item 10).
//! The log counter of `common::logs` is this binary's logger; each test counts the
//! warnings about its own connection (their text names the peer's address).

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::Ordering;

use common::logs::count_log_lines;
use common::{server, T};
use serpy::ServerBuilder;

/// Sends `flood` and then one good message to a server connection, waits for that
/// message (every line the flood causes is logged by then), and returns how many
/// warnings were logged about the connection.
fn warnings_after(flood: &[u8]) -> usize {
    let s = server(ServerBuilder::new());
    let mut raw = TcpStream::connect(s.local_addr()).unwrap();
    let warned = count_log_lines(&format!("{}:", raw.local_addr().unwrap()), log::Level::Warn);
    let peer = s.get_connection_timeout(T).unwrap();
    let mut bytes = flood.to_vec();
    bytes.extend_from_slice(b"end\x1f");
    raw.write_all(&bytes).unwrap();
    assert_eq!(peer.get_data_timeout(T).unwrap().as_str(), Some("end"));
    warned.load(Ordering::Relaxed)
}

#[test]
fn thousands_of_protocol_errors_make_a_few_log_lines() {
    // 5,000 unknown control blocks.
    let n = warnings_after(&b"\x01?\x1f".repeat(5000));
    assert!(n >= 1, "protocol errors are logged");
    // 16 at first, then one at each power of two up to 5,000 (32 ... 4096: 8 more).
    assert!(n <= 24, "{n} warning lines for 5,000 errors");
}

#[test]
fn a_flood_of_unsolicited_acks_makes_a_few_log_lines() {
    // 100,000 ACKEOTs for nothing.
    let n = warnings_after(&b"\x01ACKEOT!!\x1f".repeat(100_000));
    assert!(n >= 1, "unsolicited acks are logged");
    // 16 at first, then one at each power of two up to 100,000 (32 ... 65536: 12 more).
    assert!(n <= 28, "{n} warning lines for 100,000 unsolicited acks");
}

#[test]
fn a_flood_of_short_lived_clients_makes_a_few_info_lines() {
    let s = server(ServerBuilder::new());
    // Every info line of the crate in this binary: the other tests here add a handful.
    let info = count_log_lines("", log::Level::Info);
    let clients = 300;
    for i in 0..clients {
        let mut raw = TcpStream::connect(s.local_addr()).unwrap();
        raw.write_all(format!("{i}\x1f").as_bytes()).unwrap();
        // The server's connection is open (and logged) once its message arrives.
        assert!(s.recv_any_timeout(T).is_ok(), "client {i} was served");
    }
    // The last connection's end is seen (and logged, or counted as left out).
    let events = s.events();
    let deadline = std::time::Instant::now() + T;
    let mut closed = 0;
    while closed < clients {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match events.recv_timeout(left) {
            Ok(e) if matches!(e.kind, serpy::EventKind::Disconnected { .. }) => closed += 1,
            Ok(_) => {}
            Err(_) => panic!("{closed} of {clients} connections seen closed within {T:?}"),
        }
    }
    let n = info.load(Ordering::Relaxed);
    assert!(n >= 1, "connections opened and closed are logged");
    // 16 at first, then at most one a second (the run takes seconds, not minutes).
    assert!(n <= 80, "{n} info lines for {clients} clients");
}
