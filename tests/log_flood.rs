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
