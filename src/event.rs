//! The life of a link as the program can watch it: [`Event`] and the [`Events`] receiver;
//! and the log policy (what is logged at which level, and the rate limits) in one place.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::error::ProtocolError;
use crate::protocol::Protocol;
use crate::sync::{lock, push_drop_oldest};

/// Something that happened to a connection. Every event is also logged (`log` crate):
/// info for connects and disconnects, warn for protocol errors and lost messages.
///
/// ```no_run
/// # fn main() -> serpy::Result<()> {
/// let conn = serpy::Connection::builder().auto_restart(true).connect(("127.0.0.1", 8000))?;
/// for event in conn.events().iter() {
///     println!("{event}");
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The link is up (the first connect, or an accepted connection).
    Connected {
        /// The peer's address.
        peer: SocketAddr,
    },
    /// The link went down.
    Disconnected {
        /// Why, in words.
        reason: String,
        /// Whether the connection will try to reconnect (auto-restart).
        reconnecting: bool,
    },
    /// Auto-restart brought the link back.
    Reconnected {
        /// The peer's address.
        peer: SocketAddr,
        /// How many connection attempts it took.
        attempts: u32,
    },
    /// Auto-restart gave up after the configured number of attempts.
    GaveUp {
        /// How many attempts were made.
        attempts: u32,
    },
    /// Messages that had been queued were dropped because the link is down for good.
    /// (Acknowledged sends among them got [`Error::NotSent`](crate::Error::NotSent).)
    Lost {
        /// How many messages.
        messages: usize,
    },
    /// A server in [`Protocol::Auto`] found out which protocol the peer speaks.
    ProtocolDetected(Protocol),
    /// The peer broke the protocol; the connection skipped the bad part and goes on.
    ProtocolError(ProtocolError),
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Connected { peer } => write!(f, "connected to {peer}"),
            Event::Disconnected {
                reason,
                reconnecting,
            } => write!(
                f,
                "disconnected: {reason}{}",
                if *reconnecting { "; reconnecting" } else { "" }
            ),
            Event::Reconnected { peer, attempts } => {
                write!(f, "reconnected to {peer} after {attempts} attempt(s)")
            }
            Event::GaveUp { attempts } => {
                write!(f, "gave up reconnecting after {attempts} attempts")
            }
            Event::Lost { messages } => {
                write!(
                    f,
                    "{messages} queued message(s) dropped: the link is down for good"
                )
            }
            Event::ProtocolDetected(p) => write!(f, "peer speaks {p}"),
            Event::ProtocolError(e) => write!(f, "protocol error: {e}"),
        }
    }
}

/// Capacity of a connection's event queue. When the program does not read events, the
/// oldest are dropped (they are logged all the same).
pub(crate) const EVENT_CAPACITY: usize = 256;

/// The log policy, in one place. A peer must not be able to flood the log: every line a
/// peer can trigger goes through a [`LogLimit`] (counted: the first lines, then one at
/// each power of two) or a [`LogEvery`] (timed: at most one line per interval, saying how
/// many were left out). Levels: info for a link opened, closed or restarted; warn for a
/// peer that broke the protocol and for lost messages; debug for detail.
pub(crate) mod policy {
    /// A [`LogLimit`](super::LogLimit) logs every occurrence up to this many.
    pub const FIRST_LINES: u64 = 16;
    /// A [`LogEvery`](super::LogEvery) of the accept loop logs at most once per this.
    #[allow(dead_code)] // for the server's accept loop, whose change comes on its own
    pub const ACCEPT_ERRORS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
}

/// Counts occurrences of something a peer can cause; says which ones to log: the first
/// [`policy::FIRST_LINES`], then one at each power of two (so a million occurrences give
/// about 36 lines).
#[derive(Debug, Default)]
pub(crate) struct LogLimit {
    count: AtomicU64,
}

impl LogLimit {
    /// A counter at zero.
    pub const fn new() -> Self {
        LogLimit {
            count: AtomicU64::new(0),
        }
    }

    /// Counts one occurrence; `Some(n)` (the count so far) when this one is to be logged.
    pub fn hit(&self) -> Option<u64> {
        let n = self.count.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        (n <= policy::FIRST_LINES || n.is_power_of_two()).then_some(n)
    }
}

/// At most one log line per interval for something that can repeat without end (accept
/// errors, refused connections); the line says how many were left out since the last.
#[derive(Debug)]
#[allow(dead_code)] // for the server's accept loop, whose change comes on its own
pub(crate) struct LogEvery {
    every: Duration,
    /// When the last line was logged, and how many occurrences were left out since.
    state: Mutex<(Option<Instant>, u64)>,
}

#[allow(dead_code)] // for the server's accept loop, whose change comes on its own
impl LogEvery {
    /// At most one line per `every`.
    pub fn new(every: Duration) -> Self {
        LogEvery {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// Counts one occurrence; `Some(left_out)` when this one is to be logged, with how
    /// many were not logged since the last line.
    pub fn hit(&self) -> Option<u64> {
        let mut st = lock(&self.state);
        let now = Instant::now();
        match st.0 {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                st.1 = st.1.saturating_add(1);
                None
            }
            _ => {
                st.0 = Some(now);
                Some(std::mem::take(&mut st.1))
            }
        }
    }
}

/// Where a connection's events go: logged by the policy above, then queued for
/// [`Events`].
#[derive(Debug)]
pub(crate) struct EventSink {
    tx: Sender<Event>,
    rx: Receiver<Event>,
    /// Protocol errors seen on this connection, for rate-limiting their log lines.
    protocol_errors: LogLimit,
}

impl EventSink {
    pub fn new() -> Self {
        let (tx, rx) = crossbeam_channel::bounded(EVENT_CAPACITY);
        EventSink {
            tx,
            rx,
            protocol_errors: LogLimit::new(),
        }
    }

    /// Logs `event` (with `label`, the connection's name, made only when a line is
    /// written) and queues it, dropping the oldest one if the program does not read them.
    pub fn emit(&self, label: impl Fn() -> String, event: Event) {
        match &event {
            Event::Connected { .. } | Event::Reconnected { .. } | Event::Disconnected { .. } => {
                log::info!("serpy {}: {event}", label())
            }
            Event::GaveUp { .. } | Event::Lost { .. } => log::warn!("serpy {}: {event}", label()),
            Event::ProtocolError(_) => {
                // A hostile peer can cause one every few bytes.
                if let Some(n) = self.protocol_errors.hit() {
                    log::warn!(
                        "serpy {}: {event} ({n} protocol errors on this connection so far)",
                        label()
                    )
                }
            }
            Event::ProtocolDetected(_) => log::debug!("serpy {}: {event}", label()),
        }
        push_drop_oldest(&self.tx, &self.rx, event);
    }

    pub fn receiver(&self) -> Events {
        Events {
            rx: self.rx.clone(),
        }
    }
}

/// Receives a connection's [`Event`]s: see [`Connection::events`](crate::Connection::events).
///
/// ```
/// # fn main() -> serpy::Result<()> {
/// let server = serpy::Server::bind("127.0.0.1:0")?;
/// let conn = serpy::Connection::connect(server.local_addr())?;
/// let ev = conn.events().recv_timeout(std::time::Duration::from_secs(5));
/// assert!(matches!(ev, Some(serpy::Event::Connected { .. })));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Events {
    rx: Receiver<Event>,
}

impl Events {
    /// The next event, waiting at most `timeout`; `None` if none came.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Event> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// The next event if one is waiting.
    pub fn try_recv(&self) -> Option<Event> {
        self.rx.try_recv().ok()
    }

    /// A blocking iterator over events; it ends when the connection is gone.
    pub fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        self.rx.iter()
    }
}
