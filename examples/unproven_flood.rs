//! Measures what a flood of connects costs a server: threads and resident memory per
//! connection that never speaks ("unproven"), and that `max_unproven` bounds them.
//!
//! ```sh
//! cargo run --release --example unproven_flood -- --sockets 300 --max-unproven 64
//! ```
//!
//! Linux only (it reads `/proc/self/status`). The server and the flooding sockets run in
//! this one process, on 127.0.0.1; the sockets hold no threads, so what grows is the
//! server's. Not a test: it prints figures, it asserts only that the bound holds.

use std::io::Write;
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serpy::{EventKind, Server};

/// A field of `/proc/self/status` (`Threads`, `VmRSS` in KiB).
fn status(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: unproven_flood [--sockets N] [--max-unproven M] [--outgoing-capacity C]\n\
         opens N sockets to a server on 127.0.0.1 that each send one byte and never a\n\
         whole message, and prints the threads and memory they cost (defaults 300, 64,\n\
         1024; --max-unproven 0: no limit; C bounds each connection's outgoing queue,\n\
         which allocates as messages come, not up front)"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut sockets = 300usize;
    let mut max_unproven = 64usize;
    let mut outgoing = serpy::DEFAULT_QUEUE_CAPACITY;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let value = args.next().and_then(|v| v.parse().ok());
        match (a.as_str(), value) {
            ("--sockets", Some(n)) => sockets = n,
            ("--max-unproven", Some(n)) => max_unproven = n,
            ("--outgoing-capacity", Some(n)) => outgoing = n,
            ("-h" | "--help", _) => {
                usage();
                return ExitCode::SUCCESS;
            }
            _ => return usage(),
        }
    }
    let mut builder = Server::builder()
        .max_connections(sockets + 16)
        .outgoing_capacity(outgoing);
    if max_unproven > 0 {
        builder = builder.max_unproven(max_unproven);
    }
    let server = match builder.bind("127.0.0.1:0") {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let events = server.events();
    let (threads0, rss0) = (status("Threads"), status("VmRSS"));
    let started = Instant::now();
    let mut flood = Vec::with_capacity(sockets);
    for _ in 0..sockets {
        match TcpStream::connect(server.local_addr()) {
            Ok(mut s) => {
                let _ = s.write_all(b"x");
                flood.push(s);
            }
            Err(e) => {
                eprintln!("connect failed after {} sockets: {e}", flood.len());
                break;
            }
        }
    }
    // Wait for the server to have accepted every socket (and closed those it evicts).
    let (mut accepted, mut evicted) = (0, 0);
    let mut closed = 0;
    let expect_evicted = if max_unproven > 0 {
        flood.len().saturating_sub(max_unproven)
    } else {
        0
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while accepted < flood.len() || closed < expect_evicted {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left).map(|e| e.kind) {
            Ok(EventKind::Accepted { .. }) => accepted += 1,
            Ok(EventKind::Unproven { .. }) => evicted += 1,
            Ok(EventKind::Disconnected { .. }) => closed += 1,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    // The evicted connections' threads end right after their last event: give them the
    // time to be joined by the system (bounded, a measurement, not a test).
    let settle = Instant::now() + Duration::from_millis(500);
    while status("Threads") > threads0 + 2 * (flood.len() - evicted) as u64 + 1
        && Instant::now() < settle
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let (threads1, rss1) = (status("Threads"), status("VmRSS"));
    let held = server.len();
    let grew = threads1.saturating_sub(threads0);
    println!(
        "{} sockets in {:?}: accepted {accepted}, closed as unproven {evicted}, held {held}",
        flood.len(),
        started.elapsed()
    );
    println!(
        "threads +{grew} ({:.2} per held connection), resident memory +{} KiB ({:.1} KiB per held connection)",
        grew as f64 / held.max(1) as f64,
        rss1.saturating_sub(rss0),
        rss1.saturating_sub(rss0) as f64 / held.max(1) as f64
    );
    drop(flood);
    server.close_all();
    if max_unproven > 0 && held > max_unproven {
        eprintln!(
            "the server holds {held} unproven connections, above max_unproven {max_unproven}"
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
