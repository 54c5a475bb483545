//! Statistics of a connection ([`Counters`], kept by its threads) and the snapshot the
//! program reads ([`Stats`], from [`Connection::stats`](crate::Connection::stats) and
//! [`Server::stats`](crate::Server::stats)).
//!
//! Always on, so cheap: relaxed atomic additions, one cache line per direction, no lock
//! and no clock read per message (the time of the last receipt is taken once per socket
//! read, the round trip of an acknowledged send once per such send).
//!
//! Threads: the writer and callers count what goes out, the reader what comes in; any
//! thread takes a snapshot.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// The counters of one direction, on a cache line of their own so that the reader and
/// the writer never contend for one.
#[derive(Default)]
#[repr(align(64))]
pub(crate) struct Direction {
    /// Messages handed to the socket (out) or to the incoming queue (in).
    pub messages: AtomicU64,
    /// Bytes written to or read from the socket (framing and control blocks included).
    pub bytes: AtomicU64,
    /// In: when the last socket read returned data, in nanoseconds since
    /// `Counters::born`, plus one (0: never).
    pub last: AtomicU64,
}

/// What happens rarely: reconnects, drops, errors, acknowledged round trips.
#[derive(Default)]
#[repr(align(64))]
pub(crate) struct Rare {
    pub reconnects: AtomicU64,
    pub dropped: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub policy_disconnects: AtomicU64,
    pub acked: AtomicU64,
    pub rtt_sum_ns: AtomicU64,
    pub rtt_last_ns: AtomicU64,
}

/// The counters of one connection, shared by its threads.
pub(crate) struct Counters {
    pub out: Direction,
    pub inc: Direction,
    pub rare: Rare,
    /// The origin of the times stored as numbers.
    pub born: Instant,
}

impl Counters {
    pub fn new() -> Self {
        Counters {
            out: Direction::default(),
            inc: Direction::default(),
            rare: Rare::default(),
            born: Instant::now(),
        }
    }

    /// `n` messages of `bytes` wire bytes in all went out.
    #[inline]
    pub fn sent(&self, n: u64) {
        self.out.messages.fetch_add(n, Relaxed);
    }

    /// `bytes` were written to the socket.
    #[inline]
    pub fn wrote(&self, bytes: usize) {
        self.out.bytes.fetch_add(bytes as u64, Relaxed);
    }

    /// One socket read returned `bytes` bytes (takes the time once per read).
    #[inline]
    pub fn read(&self, bytes: usize) {
        self.inc.bytes.fetch_add(bytes as u64, Relaxed);
        let at = self.born.elapsed().as_nanos() as u64;
        self.inc.last.store(at.saturating_add(1), Relaxed);
    }

    /// `n` messages were put in the incoming queue at once.
    #[inline]
    pub fn received_many(&self, n: usize) {
        self.inc.messages.fetch_add(n as u64, Relaxed);
    }

    /// An acknowledged send was acknowledged `rtt` after it was sent.
    pub fn acked(&self, rtt: Duration) {
        let ns = rtt.as_nanos().min(u64::MAX as u128) as u64;
        self.rare.acked.fetch_add(1, Relaxed);
        self.rare.rtt_sum_ns.fetch_add(ns, Relaxed);
        self.rare.rtt_last_ns.store(ns, Relaxed);
    }

    /// A snapshot; the queue depths are the caller's to fill in.
    pub fn snapshot(&self) -> Stats {
        let last = self.inc.last.load(Relaxed);
        let acked = self.rare.acked.load(Relaxed);
        let sum = self.rare.rtt_sum_ns.load(Relaxed);
        Stats {
            connections: 1,
            messages_in: self.inc.messages.load(Relaxed),
            bytes_in: self.inc.bytes.load(Relaxed),
            messages_out: self.out.messages.load(Relaxed),
            bytes_out: self.out.bytes.load(Relaxed),
            reconnects: self.rare.reconnects.load(Relaxed),
            dropped: self.rare.dropped.load(Relaxed),
            policy_disconnects: self.rare.policy_disconnects.load(Relaxed),
            protocol_errors: self.rare.protocol_errors.load(Relaxed),
            queued_in: 0,
            queued_in_bytes: 0,
            queued_out: 0,
            queued_out_bytes: 0,
            last_received: (last > 0).then(|| self.born + Duration::from_nanos(last - 1)),
            acked,
            ack_rtt_last: (acked > 0)
                .then(|| Duration::from_nanos(self.rare.rtt_last_ns.load(Relaxed))),
            ack_rtt_mean: (acked > 0).then(|| Duration::from_nanos(sum / acked)),
        }
    }
}

/// Statistics of a connection ([`Connection::stats`](crate::Connection::stats)) or of
/// all the connections of a server ([`Server::stats`](crate::Server::stats)), as of
/// the call. Counters count from the start of the connection, across reconnects.
/// `Display` writes them on one line.
///
/// ```
/// use serpy::{Connection, Mode, Server};
/// use std::time::Duration;
///
/// # fn main() -> serpy::Result<()> {
/// let server = Server::bind("127.0.0.1:0")?;
/// let client = Connection::connect(server.local_addr())?;
/// let peer = server.get_connection_timeout(Duration::from_secs(5))?;
/// client.send_data("hello", Mode::PlainAck)?; // returns once acknowledged
/// peer.get_data()?;
/// let stats = client.stats();
/// assert_eq!(stats.messages_out, 1);
/// assert_eq!(stats.acked, 1);
/// assert!(stats.ack_rtt_last.is_some());
/// assert_eq!(peer.stats().messages_in, 1);
/// println!("{stats}");
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// How many connections are summed (1 for a connection; for a server, those it has).
    pub connections: usize,
    /// Messages received and put in the incoming queue.
    pub messages_in: u64,
    /// Bytes read from the socket (framing and control blocks included).
    pub bytes_in: u64,
    /// Messages written to the socket.
    pub messages_out: u64,
    /// Bytes written to the socket (framing, mode changes and control replies included).
    pub bytes_out: u64,
    /// Links that auto-restart brought back.
    pub reconnects: u64,
    /// Messages dropped by [`FullQueue::KeepLatest`](crate::FullQueue::KeepLatest).
    pub dropped: u64,
    /// Links taken down by [`FullQueue::Disconnect`](crate::FullQueue::Disconnect).
    pub policy_disconnects: u64,
    /// Protocol errors of the peer ([`EventKind::ProtocolError`](crate::EventKind::ProtocolError)).
    pub protocol_errors: u64,
    /// Received messages waiting to be read.
    pub queued_in: usize,
    /// Their bytes, as the incoming budget counts them.
    pub queued_in_bytes: usize,
    /// Messages waiting in the outgoing queue.
    pub queued_out: usize,
    /// Their bytes, as the outgoing budget counts them.
    pub queued_out_bytes: usize,
    /// When a socket read last returned data (for a server: the latest of all).
    pub last_received: Option<Instant>,
    /// Acknowledged sends that were acknowledged.
    pub acked: u64,
    /// The round trip of the last acknowledged send: from the call to its
    /// acknowledgement (for a server: of the connection summed last that has one).
    pub ack_rtt_last: Option<Duration>,
    /// The mean round trip of the acknowledged sends.
    pub ack_rtt_mean: Option<Duration>,
}

impl Stats {
    /// Adds `other` (another connection of a server) into `self`.
    pub(crate) fn add(&mut self, other: &Stats) {
        let mean_sum = |s: &Stats| s.ack_rtt_mean.map_or(0, |m| m.as_nanos()) * s.acked as u128;
        let total = mean_sum(self) + mean_sum(other);
        self.connections += other.connections;
        self.messages_in += other.messages_in;
        self.bytes_in += other.bytes_in;
        self.messages_out += other.messages_out;
        self.bytes_out += other.bytes_out;
        self.reconnects += other.reconnects;
        self.dropped += other.dropped;
        self.policy_disconnects += other.policy_disconnects;
        self.protocol_errors += other.protocol_errors;
        self.queued_in += other.queued_in;
        self.queued_in_bytes += other.queued_in_bytes;
        self.queued_out += other.queued_out;
        self.queued_out_bytes += other.queued_out_bytes;
        self.last_received = self.last_received.max(other.last_received);
        self.acked += other.acked;
        self.ack_rtt_last = other.ack_rtt_last.or(self.ack_rtt_last);
        self.ack_rtt_mean = (self.acked > 0).then(|| {
            Duration::from_nanos((total / self.acked as u128).min(u64::MAX as u128) as u64)
        });
    }
}

/// Bytes in a short human form (B, KiB, MiB, GiB).
struct Size(u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0 as f64;
        match self.0 {
            n if n < 1 << 10 => write!(f, "{n} B"),
            n if n < 1 << 20 => write!(f, "{:.1} KiB", b / 1024.0),
            n if n < 1 << 30 => write!(f, "{:.1} MiB", b / (1u64 << 20) as f64),
            _ => write!(f, "{:.2} GiB", b / (1u64 << 30) as f64),
        }
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.connections != 1 {
            write!(f, "{} connections: ", self.connections)?;
        }
        write!(
            f,
            "in {} msgs/{}, out {} msgs/{}, queued in {} ({}) out {} ({}), dropped {}, \
             reconnects {}, policy disconnects {}, protocol errors {}",
            self.messages_in,
            Size(self.bytes_in),
            self.messages_out,
            Size(self.bytes_out),
            self.queued_in,
            Size(self.queued_in_bytes as u64),
            self.queued_out,
            Size(self.queued_out_bytes as u64),
            self.dropped,
            self.reconnects,
            self.policy_disconnects,
            self.protocol_errors,
        )?;
        match self.last_received {
            Some(t) => write!(f, ", last received {:.3} s ago", t.elapsed().as_secs_f64())?,
            None => write!(f, ", nothing received")?,
        }
        if let (Some(last), Some(mean)) = (self.ack_rtt_last, self.ack_rtt_mean) {
            write!(
                f,
                ", ack rtt {:.3} ms (mean {:.3} ms of {})",
                last.as_secs_f64() * 1e3,
                mean.as_secs_f64() * 1e3,
                self.acked
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_reads_what_was_counted_and_displays_on_one_line() {
        let c = Counters::new();
        assert_eq!(c.snapshot().last_received, None);
        c.sent(2);
        c.wrote(3000);
        c.read(10);
        c.received_many(1);
        c.acked(Duration::from_millis(2));
        c.acked(Duration::from_millis(4));
        let s = c.snapshot();
        assert_eq!((s.messages_out, s.bytes_out), (2, 3000));
        assert_eq!((s.messages_in, s.bytes_in), (1, 10));
        assert!(s.last_received.is_some());
        assert_eq!(s.ack_rtt_last, Some(Duration::from_millis(4)));
        assert_eq!(s.ack_rtt_mean, Some(Duration::from_millis(3)));
        let line = s.to_string();
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("out 2 msgs/2.9 KiB"), "{line}");
        let mut sum = s.clone();
        sum.add(&Counters::new().snapshot());
        assert_eq!(sum.connections, 2);
        assert_eq!(sum.ack_rtt_mean, Some(Duration::from_millis(3)));
        assert!(sum.to_string().starts_with("2 connections: "));
    }
}
