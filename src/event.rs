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
    /// The program closed the connection ([`Connection::close`](crate::Connection::close),
    /// or the last handle was dropped), and its threads have ended. It is the last
    /// event of the connection.
    Closed,
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
            Event::Closed => write!(f, "closed by the program"),
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
pub(crate) struct LogEvery {
    every: Duration,
    /// When the last line was logged, and how many occurrences were left out since.
    state: Mutex<(Option<Instant>, u64)>,
}

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
    /// Dropped by [`EventSink::end`]: tells every [`Events`] that no event will come
    /// after those queued.
    done_tx: Mutex<Option<Sender<()>>>,
    done_rx: Receiver<()>,
    /// Protocol errors seen on this connection, for rate-limiting their log lines.
    protocol_errors: LogLimit,
}

impl EventSink {
    pub fn new() -> Self {
        let (tx, rx) = crossbeam_channel::bounded(EVENT_CAPACITY);
        let (done_tx, done_rx) = crossbeam_channel::bounded(0);
        EventSink {
            tx,
            rx,
            done_tx: Mutex::new(Some(done_tx)),
            done_rx,
            protocol_errors: LogLimit::new(),
        }
    }

    /// True once [`EventSink::end`] was called.
    pub fn ended(&self) -> bool {
        lock(&self.done_tx).is_none()
    }

    /// No event comes after those queued: iterators over the events end once they have
    /// given them. Events emitted afterwards are logged only.
    pub fn end(&self) {
        drop(lock(&self.done_tx).take());
    }

    /// Logs `event` (with `label`, the connection's name, made only when a line is
    /// written) and queues it, dropping the oldest one if the program does not read them.
    pub fn emit(&self, label: impl Fn() -> String, event: Event) {
        match &event {
            Event::Connected { .. }
            | Event::Reconnected { .. }
            | Event::Disconnected { .. }
            | Event::Closed => {
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
        if !self.ended() {
            push_drop_oldest(&self.tx, &self.rx, event);
        }
    }

    pub fn receiver(&self) -> Events {
        Events {
            rx: self.rx.clone(),
            done: self.done_rx.clone(),
        }
    }
}

/// Receives a connection's [`Event`]s: see [`Connection::events`](crate::Connection::events).
///
/// The events end when the connection is gone for good. The last one is
/// [`Closed`](Event::Closed) when the program closed it; when the link went down for
/// good it is a [`Disconnected`](Event::Disconnected) that does not reconnect or a
/// [`GaveUp`](Event::GaveUp), followed by a [`Lost`](Event::Lost) if queued messages
/// were dropped. Then [`iter`](Events::iter) ends and
/// [`recv_timeout`](Events::recv_timeout) returns `None` at once.
///
/// ```
/// # fn main() -> serpy::Result<()> {
/// let server = serpy::Server::bind("127.0.0.1:0")?;
/// let conn = serpy::Connection::connect(server.local_addr())?;
/// let ev = conn.events().recv_timeout(std::time::Duration::from_secs(5));
/// assert!(matches!(ev, Some(serpy::Event::Connected { .. })));
/// conn.close();
/// let rest: Vec<_> = conn.events().iter().collect(); // ends: the connection is closed
/// assert_eq!(rest.last(), Some(&serpy::Event::Closed));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Events {
    rx: Receiver<Event>,
    /// Disconnects when the events have ended.
    done: Receiver<()>,
}

impl Events {
    /// The next event, waiting at most `timeout`; `None` if none came, or at once when
    /// the events have ended and all were taken.
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// # let server = serpy::Server::bind("127.0.0.1:0")?;
    /// let conn = serpy::Connection::connect(server.local_addr())?;
    /// let first = conn.events().recv_timeout(std::time::Duration::from_secs(5));
    /// assert!(matches!(first, Some(serpy::Event::Connected { .. })));
    /// # Ok(()) }
    /// ```
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Event> {
        if let Ok(e) = self.rx.try_recv() {
            return Some(e);
        }
        crossbeam_channel::select! {
            recv(self.rx) -> e => e.ok(),
            recv(self.done) -> _ => self.rx.try_recv().ok(),
            default(timeout) => None,
        }
    }

    /// The next event if one is waiting.
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// # let server = serpy::Server::bind("127.0.0.1:0")?;
    /// let conn = serpy::Connection::connect(server.local_addr())?;
    /// while let Some(event) = conn.events().try_recv() {
    ///     println!("{event}");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn try_recv(&self) -> Option<Event> {
        self.rx.try_recv().ok()
    }

    /// A blocking iterator over events; it ends once the connection is gone for good
    /// (down without reconnecting, or closed) and every event has been given.
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// # let server = serpy::Server::bind("127.0.0.1:0")?;
    /// let conn = serpy::Connection::connect(server.local_addr())?;
    /// let events = conn.events();
    /// conn.close();
    /// assert!(events.iter().any(|e| e == serpy::Event::Closed));
    /// # Ok(()) }
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        std::iter::from_fn(move || {
            if let Ok(e) = self.rx.try_recv() {
                return Some(e);
            }
            crossbeam_channel::select! {
                recv(self.rx) -> e => e.ok(),
                recv(self.done) -> _ => self.rx.try_recv().ok(),
            }
        })
    }
}
