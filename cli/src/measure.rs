//! `serpy ping` and `serpy bench`: round trips and throughput against an echoing peer
//! (`serpy listen --echo`, or any peer that sends every message back).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::ProgressBar;
use serpy::{Bytes, Connection, Message, Mode, Protocol, Text};

use crate::out::{CmdResult, Failure};
use crate::render;
use crate::{outln, parse_addr, parse_size, ClientOpts};

/// Round trips against an echoing peer: min, median, p99 and max.
#[derive(Args, Debug)]
#[command(after_help = concat!(
    "Sends one message at a time and waits for it to come back, COUNT times, then prints
the round-trip times. The peer must echo: `serpy listen --echo` does.

Examples:
  serpy listen 8000 --echo --quiet &
  serpy ping 8000
  serpy ping 8000 --protocol v2 --count 1000 --size 64k

", crate::exit_codes_help!()))]
pub struct PingArgs {
    /// The echoing peer: HOST:PORT, or PORT for 127.0.0.1:PORT.
    #[arg(value_parser = parse_addr)]
    pub addr: SocketAddr,
    /// Round trips to make.
    #[arg(short = 'n', long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub count: u32,
    /// Bytes per message.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "16")]
    pub size: usize,
    #[command(flatten)]
    pub client: ClientOpts,
}

/// Throughput by message size against an echoing peer.
#[derive(Args, Debug)]
#[command(after_help = concat!(
    "For each size, streams messages to an echoing peer while reading the echoes, for at
most COUNT messages and at most SECONDS, and prints the rate at which the echoes came
back (each byte crossed the link twice). The peer must echo: `serpy listen --echo`
does. Figures on a loaded machine say little; compare runs on the same quiet machine.

Examples:
  serpy listen 8000 --echo --quiet &
  serpy bench 8000
  serpy bench 8000 --protocol v2 --sizes 1k,1M,16M --seconds 3

", crate::exit_codes_help!()))]
pub struct BenchArgs {
    /// The echoing peer: HOST:PORT, or PORT for 127.0.0.1:PORT.
    #[arg(value_parser = parse_addr)]
    pub addr: SocketAddr,
    /// Message sizes, comma-separated.
    #[arg(long, value_name = "SIZES", value_delimiter = ',', value_parser = parse_size, default_value = "16,1k,64k,1M")]
    pub sizes: Vec<usize>,
    /// At most this many messages per size.
    #[arg(short = 'n', long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: u64,
    /// At most this many seconds of sending per size.
    #[arg(long, value_name = "SECONDS", default_value_t = 2.0)]
    pub seconds: f64,
    #[command(flatten)]
    pub client: ClientOpts,
}

/// A payload of `size` printable bytes, as the protocol carries it best: raw text over
/// v1 (mode 0), bytes over v2.
fn payload(size: usize, protocol: Protocol, tag: u64) -> Message {
    let mut bytes: Vec<u8> = b"0123456789abcdefghijklmnopqrstuvwxyz"
        .iter()
        .copied()
        .cycle()
        .take(size)
        .collect();
    // A tag at the start, so that an echo can be matched to what was sent.
    let tag = tag.to_string();
    let n = tag.len().min(bytes.len());
    bytes[..n].copy_from_slice(&tag.as_bytes()[..n]);
    match protocol {
        Protocol::V2 => Message::Bytes(Bytes::from(bytes)),
        _ => Message::Text(Text::from(String::from_utf8(bytes).unwrap_or_default())),
    }
}

fn same_payload(sent: &Message, got: &Message) -> bool {
    sent.as_bytes() == got.as_bytes()
}

/// `12.3 µs`, `4.56 ms`, `1.23 s`.
fn duration(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.1} µs")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// The value at quantile `q` of sorted `v` (nearest rank).
fn quantile(v: &[Duration], q: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// Refuses sizes above what one message can be (before allocating anything).
fn check_size(size: usize) -> CmdResult {
    if size > serpy::protocol::v2::MAX_PAYLOAD {
        return Err(Failure::input(format!(
            "a size of {size} bytes is above {}, the largest message this tool sends; give a smaller size",
            serpy::protocol::v2::MAX_PAYLOAD
        )));
    }
    Ok(())
}

/// Runs `serpy ping`.
pub fn ping(a: PingArgs) -> CmdResult {
    let protocol: Protocol = a.client.protocol.into();
    check_size(a.size)?;
    let conn = a.client.connect(a.addr)?;
    let timeout = a.client.timeout();
    let mut rtts = Vec::with_capacity(a.count as usize);
    for i in 0..u64::from(a.count) {
        let message = payload(a.size.max(1), protocol, i);
        let start = Instant::now();
        conn.send_data_timeout(message.clone(), Mode::Plain, timeout)
            .map_err(|e| Failure::from_serpy(&format!("ping {}", i + 1), &e))?;
        let echo = conn.get_data_timeout(timeout).map_err(|e| {
            Failure::delivery(format!(
                "ping {}: no echo from {} ({e}); is the peer echoing (serpy listen --echo)?",
                i + 1,
                a.addr
            ))
        })?;
        rtts.push(start.elapsed());
        if !same_payload(&message, &echo) {
            conn.close();
            return Err(Failure::delivery(format!(
                "ping {}: the peer sent back something else ({} {}); is it an echoing peer?",
                i + 1,
                echo.kind(),
                render::size(echo.len())
            )));
        }
    }
    conn.close();
    rtts.sort();
    outln!(
        "{} round trips of {} to {} over {protocol}",
        rtts.len(),
        render::size(a.size.max(1)),
        a.addr
    );
    outln!("{:>10} {:>10} {:>10} {:>10}", "min", "median", "p99", "max");
    outln!(
        "{:>10} {:>10} {:>10} {:>10}",
        duration(rtts[0]),
        duration(quantile(&rtts, 0.5)),
        duration(quantile(&rtts, 0.99)),
        duration(rtts[rtts.len() - 1])
    );
    Ok(())
}

/// One row of the bench table.
struct Row {
    size: usize,
    messages: u64,
    elapsed: Duration,
}

/// Runs `serpy bench`.
pub fn bench(a: BenchArgs) -> CmdResult {
    if !(a.seconds.is_finite() && a.seconds > 0.0 && a.seconds < 3600.0) {
        return Err(Failure::input("--seconds must be above 0 and below 3600"));
    }
    let protocol: Protocol = a.client.protocol.into();
    a.sizes.iter().try_for_each(|&s| check_size(s))?;
    let budget = Duration::from_secs_f64(a.seconds);
    let timeout = a.client.timeout();
    let mut rows = Vec::new();
    for &size in &a.sizes {
        let size = size.max(1);
        let conn = a.client.connect(a.addr)?;
        let row = bench_one(&conn, protocol, size, a.count, budget, timeout);
        conn.close();
        rows.push(row?);
    }
    outln!("echo throughput to {} over {protocol}", a.addr);
    outln!(
        "{:>10} {:>10} {:>10} {:>12} {:>10}",
        "size",
        "messages",
        "seconds",
        "messages/s",
        "MiB/s"
    );
    for r in rows {
        let secs = r.elapsed.as_secs_f64().max(1e-9);
        outln!(
            "{:>10} {:>10} {:>10.3} {:>12.0} {:>10.1}",
            render::size(r.size),
            r.messages,
            secs,
            r.messages as f64 / secs,
            (r.messages as f64 * r.size as f64) / secs / (1024.0 * 1024.0)
        );
    }
    Ok(())
}

/// Streams messages of `size` bytes (at most `count`, for at most `budget`), keeping a
/// window of them in flight and reading one echo for each message beyond it; the time
/// runs until the last echo is in. One thread, and never more than about 8 MiB (or one
/// message) in flight, so neither side's queues fill up.
fn bench_one(
    conn: &Connection,
    protocol: Protocol,
    size: usize,
    count: u64,
    budget: Duration,
    timeout: Duration,
) -> Result<Row, Failure> {
    let message = payload(size, protocol, 0);
    let window = ((8usize << 20) / size).clamp(1, 256) as u64;
    let bar = ProgressBar::new(count).with_message(format!("{} messages", render::size(size)));
    let echo_failed = |e: serpy::Error| {
        Failure::delivery(format!(
            "bench ({} messages): an echo did not come back ({e}); is the peer echoing (serpy listen --echo)?",
            render::size(size)
        ))
    };
    let start = Instant::now();
    let (mut sent, mut echoed) = (0u64, 0u64);
    while sent < count && start.elapsed() < budget {
        if sent - echoed == window {
            conn.get_data_timeout(timeout).map_err(echo_failed)?;
            echoed += 1;
            bar.inc(1);
        }
        conn.send_data_timeout(message.clone(), Mode::Plain, timeout)
            .map_err(|e| Failure::from_serpy("bench", &e))?;
        sent += 1;
    }
    while echoed < sent {
        conn.get_data_timeout(timeout).map_err(echo_failed)?;
        echoed += 1;
        bar.inc(1);
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    Ok(Row {
        size,
        messages: sent,
        elapsed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_durations() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(quantile(&v, 0.5), Duration::from_micros(50));
        assert_eq!(quantile(&v, 0.99), Duration::from_micros(99));
        assert_eq!(quantile(&v[..1], 0.99), Duration::from_micros(1));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
        assert_eq!(duration(Duration::from_nanos(12_300)), "12.3 µs");
        assert_eq!(duration(Duration::from_micros(4_560)), "4.56 ms");
        assert_eq!(duration(Duration::from_millis(1_230)), "1.23 s");
    }

    #[test]
    fn payloads_carry_their_tag() {
        assert_eq!(payload(8, Protocol::V1, 42).as_str(), Some("42234567"));
        assert_eq!(
            payload(3, Protocol::V2, 12345).as_bytes(),
            Some(&b"123"[..])
        );
    }
}
