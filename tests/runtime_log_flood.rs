//! Log lines a peer can trigger from the connection side are rate-limited (issue 9,
//! item 10). One binary per logger: this file installs the process's logger.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{server, T};
use serpy::ServerBuilder;

static WARNINGS: AtomicUsize = AtomicUsize::new(0);

struct CountWarnings;

impl log::Log for CountWarnings {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record) {
        if r.level() == log::Level::Warn && r.target().starts_with("serpy") {
            WARNINGS.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn flush(&self) {}
}

#[test]
fn a_flood_of_unsolicited_acks_makes_a_few_log_lines() {
    log::set_logger(&CountWarnings).unwrap();
    log::set_max_level(log::LevelFilter::Warn);
    let s = server(ServerBuilder::new());
    let mut raw = TcpStream::connect(s.local_addr()).unwrap();
    let peer = s.get_connection_timeout(T).unwrap();
    // 100,000 ACKEOTs for nothing, then one good message.
    let mut flood = b"\x01ACKEOT!!\x1f".repeat(100_000);
    flood.extend_from_slice(b"end\x1f");
    raw.write_all(&flood).unwrap();
    assert_eq!(peer.get_data_timeout(T).unwrap().as_str(), Some("end"));
    let warned = WARNINGS.load(Ordering::Relaxed);
    assert!(warned >= 1, "unsolicited acks are logged");
    // 16 at first, then one at each power of two up to 100,000 (32 ... 65536: 12 more).
    assert!(
        warned <= 28,
        "{warned} warning lines for 100,000 unsolicited acks"
    );
}
