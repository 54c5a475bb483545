//! The life of a link as the program can watch it: [`Event`] and the [`Events`] receiver;
//! and the log policy (what is logged at which level, and the rate limits) in one place.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use crate::error::{Error, ProtocolError, Result};
use crate::protocol::Protocol;
use crate::sync::lock;

/// Something that happened to a connection or a server, with the connection's id and
/// the time: what [`Events`] gives. What happened is [`kind`](Event::kind).
///
/// Every event is also logged (`log` crate): info for connects and disconnects, warn for
/// protocol errors and lost messages.
///
/// Code written for the enum of earlier versions matches on `event.kind` instead of
/// `event`, and compares with `event == EventKind::Closed` (an `Event` compares equal
/// to its kind).
///
/// ```no_run
/// use serpy::EventKind;
/// # fn main() -> serpy::Result<()> {
/// let conn = serpy::Connection::builder().auto_restart(true).connect(("127.0.0.1", 8000))?;
/// for event in conn.events().iter() {
///     println!("{event}"); // "#1 at 2026-...: connected to 127.0.0.1:8000"
///     if let EventKind::Reconnected { attempts, .. } = event.kind {
///         println!("connection {} back after {attempts} attempts", event.id);
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Event {
    /// The connection it concerns ([`Connection::id`](crate::Connection::id)); for
    /// [`EventKind::Refused`], a number given to the refused socket, never reused.
    pub id: u64,
    /// When it happened.
    pub at: SystemTime,
    /// What happened.
    pub kind: EventKind,
}

impl Event {
    /// An event of connection `id`, now.
    pub(crate) fn now(id: u64, kind: EventKind) -> Self {
        Event {
            id,
            at: SystemTime::now(),
            kind,
        }
    }
}

impl PartialEq<EventKind> for Event {
    fn eq(&self, other: &EventKind) -> bool {
        self.kind == *other
    }
}

impl std::fmt::Display for Event {
    /// `#id at seconds.millis since the Unix epoch: what happened`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = self.at.duration_since(UNIX_EPOCH).unwrap_or_default();
        write!(
            f,
            "#{} at {}.{:03}: {}",
            self.id,
            t.as_secs(),
            t.subsec_millis(),
            self.kind
        )
    }
}

/// What happened to a connection (or, for a server's events, to one of its
/// connections or sockets): the [`kind`](Event::kind) of an [`Event`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum EventKind {
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
    /// Auto-restart gave up: after the configured number of attempts, or because
    /// [`disable_restart`](crate::Connection::disable_restart) turned it off while it
    /// was trying (a background first connect included). The link is down for good.
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
    /// The [`FullQueue::KeepLatest`](crate::FullQueue::KeepLatest) policy dropped this many
    /// older plain messages from the outgoing queue to make room for newer ones (the peer
    /// reads more slowly than the program sends). Reported at once for the first drop,
    /// then at most once a second with the count since the last report, and when the
    /// queue drains; [`Stats::dropped`](crate::Stats::dropped) counts them all.
    Dropped {
        /// How many messages since the last `Dropped` event.
        messages: u64,
    },
    /// Nothing was received for the idle timeout (see `idle_timeout` on the builders):
    /// the link is declared dead. A [`Disconnected`](EventKind::Disconnected) follows.
    IdleTimeout {
        /// The idle timeout.
        after: Duration,
    },
    /// Servers: the peer did not send a whole first message within the first-message
    /// timeout ([`ServerBuilder::first_message_timeout`](crate::ServerBuilder::first_message_timeout)),
    /// or it had not spoken yet and was closed to make room for a newer connection
    /// ([`ServerBuilder::max_unproven`](crate::ServerBuilder::max_unproven)). A
    /// [`Disconnected`](EventKind::Disconnected) follows.
    Unproven {
        /// Why, in words.
        reason: String,
    },
    /// Servers (in [`Server::events`](crate::Server::events)): a socket was accepted and
    /// became connection `id`.
    Accepted {
        /// The peer's address.
        peer: SocketAddr,
    },
    /// Servers (in [`Server::events`](crate::Server::events)): a socket was accepted and
    /// closed at once.
    Refused {
        /// The peer's address.
        peer: SocketAddr,
        /// Why.
        reason: Refusal,
    },
}

/// Why a server refused a connection: see [`EventKind::Refused`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The server has `max_connections` live connections already.
    TooManyConnections {
        /// The limit (`ServerBuilder::max_connections`).
        limit: usize,
    },
    /// The connection's threads or socket could not be set up (out of threads or
    /// descriptors, most of all).
    StartFailed {
        /// What failed, in words.
        error: String,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::TooManyConnections { limit } => {
                write!(f, "the limit of {limit} connections is reached")
            }
            Refusal::StartFailed { error } => write!(f, "could not start a connection: {error}"),
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EventKind::Connected { peer } => write!(f, "connected to {peer}"),
            EventKind::Disconnected {
                reason,
                reconnecting,
            } => write!(
                f,
                "disconnected: {reason}{}",
                if *reconnecting { "; reconnecting" } else { "" }
            ),
            EventKind::Reconnected { peer, attempts } => {
                write!(f, "reconnected to {peer} after {attempts} attempt(s)")
            }
            EventKind::GaveUp { attempts } => {
                write!(f, "gave up reconnecting after {attempts} attempts")
            }
            EventKind::Lost { messages } => {
                write!(
                    f,
                    "{messages} queued message(s) dropped: the link is down for good"
                )
            }
            EventKind::ProtocolDetected(p) => write!(f, "peer speaks {p}"),
            EventKind::ProtocolError(e) => write!(f, "protocol error: {e}"),
            EventKind::Closed => write!(f, "closed by the program"),
            EventKind::IdleTimeout { after } => write!(
                f,
                "nothing received for {after:?} (the idle timeout): the link is taken as dead"
            ),
            EventKind::Unproven { reason } => {
                write!(f, "closed before its first message: {reason}")
            }
            EventKind::Accepted { peer } => write!(f, "accepted {peer}"),
            EventKind::Refused { peer, reason } => write!(f, "refused {peer}: {reason}"),
            EventKind::Dropped { messages } => write!(
                f,
                "{messages} older queued message(s) dropped to keep the latest: the peer reads more slowly than messages are sent"
            ),
        }
    }
}

/// Capacity of a connection's event queue. When the program does not read events, the
/// oldest are dropped (they are logged all the same).
pub(crate) const EVENT_CAPACITY: usize = 256;

/// The log policy, in one place. A peer must not be able to flood the log: every line a
/// peer can trigger goes through a [`LogLimit`] (counted: the first lines, then one at
/// each power of two) or a [`LogEvery`] (timed: at most one line per interval, saying how
/// many were left out), or, for the info lines of a server's connections, a [`LinkLines`]
/// (both, shared by the server). Levels: info for a link opened, closed or restarted; warn for a
/// peer that broke the protocol and for lost messages; debug for detail.
pub(crate) mod policy {
    /// A [`LogLimit`](super::LogLimit) logs every occurrence up to this many.
    pub const FIRST_LINES: u64 = 16;
    /// A [`LogEvery`](super::LogEvery) of the accept loop logs at most once per this.
    pub const ACCEPT_ERRORS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
    /// A server's [`LinkLines`](super::LinkLines) (its connections opened, closed):
    /// after the first [`FIRST_LINES`], at most one line per this.
    pub const LINK_LINES_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
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

/// The info lines of a server's connections (opened, closed, down): a flood of connects
/// must not make one line per socket. The first [`policy::FIRST_LINES`] are all logged,
/// so a single event stays visible; after them, at most one per
/// [`policy::LINK_LINES_EVERY`], saying how many were left out. Shared by all the
/// connections of one server.
#[derive(Debug)]
pub(crate) struct LinkLines {
    first: LogLimit,
    every: LogEvery,
}

impl LinkLines {
    fn new() -> Self {
        LinkLines {
            first: LogLimit::new(),
            every: LogEvery::new(policy::LINK_LINES_EVERY),
        }
    }

    /// Counts one line; `Some(left_out)` when it is to be logged, with how many were not
    /// logged since the last one.
    fn hit(&self) -> Option<u64> {
        match self.first.hit() {
            Some(n) if n <= policy::FIRST_LINES => Some(0),
            _ => self.every.hit(),
        }
    }
}

/// A server's event queue, as its connections see it: what they emit is queued there
/// too (dropping the oldest when the program does not read them).
#[derive(Clone, Debug)]
pub(crate) struct Forward {
    tx: Sender<Event>,
    rx: Receiver<Event>,
    capacity: usize,
    /// The server's limit on its connections' info lines.
    lines: Arc<LinkLines>,
}

/// Queues `event` in the unbounded channel `tx`, first taking the oldest out through
/// `rx` (its receiving side) while `capacity` wait: the newest are kept and the caller
/// never blocks. (Emitters racing may go a few beyond `capacity`, never without bound.)
fn push_bounded(tx: &Sender<Event>, rx: &Receiver<Event>, capacity: usize, event: Event) {
    while rx.len() >= capacity {
        if rx.try_recv().is_err() {
            break;
        }
    }
    let _ = tx.send(event);
}

/// Capacity of a server's event queue.
pub(crate) const SERVER_EVENT_CAPACITY: usize = 4096;

/// Where a connection's (or a server's) events go: logged by the policy above, then
/// queued for [`Events`], and for a server's connection also in the server's queue.
#[derive(Debug)]
pub(crate) struct EventSink {
    /// The connection's id, which every event it emits carries.
    id: u64,
    tx: Sender<Event>,
    rx: Receiver<Event>,
    /// Dropped by [`EventSink::end`]: tells every [`Events`] that no event will come
    /// after those queued.
    done_tx: Mutex<Option<Sender<()>>>,
    done_rx: Receiver<()>,
    /// Set before the events end when they end because the program closed the
    /// connection or server (not because the link went down for good): which error
    /// [`Events`] gives once they have ended.
    closed: Arc<AtomicBool>,
    /// The server's queue, for a connection a server accepted.
    forward: Option<Forward>,
    /// At most this many events wait in `rx`; the oldest go first.
    capacity: usize,
    /// Protocol errors seen on this connection, for rate-limiting their log lines.
    protocol_errors: LogLimit,
    /// A server's limit on its connections' info lines (handed to them in [`Forward`]).
    link_lines: Arc<LinkLines>,
}

impl EventSink {
    /// The events of connection `id` (`forward`: its server's queue).
    pub fn new(id: u64, forward: Option<Forward>) -> Self {
        Self::with_capacity(id, forward, EVENT_CAPACITY)
    }

    /// A server's events (every connection's go there too, see [`EventSink::forward`]).
    pub fn for_server() -> Self {
        Self::with_capacity(0, None, SERVER_EVENT_CAPACITY)
    }

    fn with_capacity(id: u64, forward: Option<Forward>, capacity: usize) -> Self {
        // Not a bounded channel, which would allocate every slot up front (about 25 KiB
        // per connection): the bound is kept by `push_bounded`.
        let (tx, rx) = crossbeam_channel::unbounded();
        let (done_tx, done_rx) = crossbeam_channel::bounded(0);
        EventSink {
            id,
            tx,
            rx,
            done_tx: Mutex::new(Some(done_tx)),
            done_rx,
            closed: Arc::new(AtomicBool::new(false)),
            forward,
            capacity,
            protocol_errors: LogLimit::new(),
            link_lines: Arc::new(LinkLines::new()),
        }
    }

    /// What a connection needs to queue its events in this (server's) queue as well.
    pub fn forward(&self) -> Forward {
        Forward {
            tx: self.tx.clone(),
            rx: self.rx.clone(),
            capacity: self.capacity,
            lines: self.link_lines.clone(),
        }
    }

    /// True once [`EventSink::end`] was called.
    pub fn ended(&self) -> bool {
        lock(&self.done_tx).is_none()
    }

    /// No event comes after those queued: iterators over the events end once they have
    /// given them, and [`Events`] then gives [`Error::Disconnected`]. Events emitted
    /// afterwards are logged only.
    pub fn end(&self) {
        drop(lock(&self.done_tx).take());
    }

    /// [`end`](EventSink::end) because the program closed the connection or the server:
    /// [`Events`] then gives [`Error::Closed`].
    pub fn end_closed(&self) {
        let mut done = lock(&self.done_tx);
        if done.is_some() {
            self.closed.store(true, Ordering::Release);
        }
        drop(done.take());
    }

    /// Logs `kind` (with `label`, the connection's name, made only when a line is
    /// written) and queues it as an event of this connection, now, dropping the oldest
    /// one if the program does not read them.
    pub fn emit(&self, label: impl Fn() -> String, kind: EventKind) {
        self.emit_event(label, Event::now(self.id, kind));
    }

    /// [`emit`](EventSink::emit) for an event made by the caller (a server's, which
    /// carries the id of the connection it concerns).
    pub fn emit_event(&self, label: impl Fn() -> String, event: Event) {
        let kind = &event.kind;
        match kind {
            EventKind::Connected { .. }
            | EventKind::Reconnected { .. }
            | EventKind::Disconnected { .. }
            | EventKind::Closed => match &self.forward {
                // A server's connection: a peer can open any number of them.
                Some(f) => match f.lines.hit() {
                    Some(0) => log::info!("serpy {}: {kind}", label()),
                    Some(n) => log::info!(
                        "serpy {}: {kind} ({n} lines about this server's connections left out)",
                        label()
                    ),
                    None => {}
                },
                None => log::info!("serpy {}: {kind}", label()),
            },
            EventKind::GaveUp { .. } | EventKind::Lost { .. } | EventKind::IdleTimeout { .. } => {
                log::warn!("serpy {}: {kind}", label())
            }
            EventKind::ProtocolError(_) => {
                // A hostile peer can cause one every few bytes.
                if let Some(n) = self.protocol_errors.hit() {
                    log::warn!(
                        "serpy {}: {kind} ({n} protocol errors on this connection so far)",
                        label()
                    )
                }
            }
            // A flood of sockets causes these; the accept thread logs refusals itself,
            // rate-limited.
            EventKind::ProtocolDetected(_)
            | EventKind::Unproven { .. }
            | EventKind::Accepted { .. } => {
                log::debug!("serpy {}: {kind}", label())
            }
            EventKind::Refused { .. } => {}
            // At most one a second (see `outgoing::DropReport`).
            EventKind::Dropped { .. } => log::warn!("serpy {}: {kind}", label()),
        }
        if let Some(f) = &self.forward {
            push_bounded(&f.tx, &f.rx, f.capacity, event.clone());
        }
        if !self.ended() {
            push_bounded(&self.tx, &self.rx, self.capacity, event);
        }
    }

    pub fn receiver(&self) -> Events {
        Events {
            rx: self.rx.clone(),
            done: self.done_rx.clone(),
            closed: self.closed.clone(),
        }
    }
}

/// Receives a connection's [`Event`]s: see [`Connection::events`](crate::Connection::events).
///
/// The events end when the connection is gone for good. The last one is
/// [`Closed`](EventKind::Closed) when the program closed it; when the link went down for
/// good it is a [`Disconnected`](EventKind::Disconnected) that does not reconnect or a
/// [`GaveUp`](EventKind::GaveUp), followed by a [`Lost`](EventKind::Lost) if queued messages
/// were dropped. Then [`iter`](Events::iter) ends, and [`recv`](Events::recv),
/// [`recv_timeout`](Events::recv_timeout) and [`try_recv`](Events::try_recv) return at
/// once [`Error::Closed`] (the program closed the connection, or the server) or
/// [`Error::Disconnected`] (the link went down for good), as
/// [`get_data`](crate::Connection::get_data) does.
///
/// The three calls are those of every queue of the crate (see the crate's "Names"):
/// `recv` waits as long as it takes, `recv_timeout` at most its timeout
/// ([`Error::Timeout`] then), `try_recv` not at all: `Ok(None)` when no event is waiting
/// yet, an error once the events have ended.
///
/// ```
/// # fn main() -> serpy::Result<()> {
/// let server = serpy::Server::bind("127.0.0.1:0")?;
/// let conn = serpy::Connection::connect(server.local_addr())?;
/// let ev = conn.events().recv_timeout(std::time::Duration::from_secs(5))?;
/// assert!(matches!(ev.kind, serpy::EventKind::Connected { .. }));
/// conn.close();
/// let rest: Vec<_> = conn.events().iter().collect(); // ends: the connection is closed
/// assert!(rest.last().is_some_and(|e| *e == serpy::EventKind::Closed));
/// assert!(matches!(conn.events().try_recv(), Err(serpy::Error::Closed)));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Events {
    rx: Receiver<Event>,
    /// Disconnects when the events have ended.
    done: Receiver<()>,
    /// See `EventSink::closed`.
    closed: Arc<AtomicBool>,
}

impl Events {
    /// The error for events that have ended.
    fn ended(&self) -> Error {
        if self.closed.load(Ordering::Acquire) {
            Error::Closed
        } else {
            Error::Disconnected
        }
    }

    /// The next event, waiting as long as it takes; once the events have ended and all
    /// were taken, [`Error::Closed`] or [`Error::Disconnected`] (see [`Events`]).
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// # let server = serpy::Server::bind("127.0.0.1:0")?;
    /// let conn = serpy::Connection::connect(server.local_addr())?;
    /// let first = conn.events().recv()?;
    /// assert!(matches!(first.kind, serpy::EventKind::Connected { .. }));
    /// # Ok(()) }
    /// ```
    pub fn recv(&self) -> Result<Event> {
        if let Ok(e) = self.rx.try_recv() {
            return Ok(e);
        }
        crossbeam_channel::select! {
            recv(self.rx) -> e => e.map_err(|_| self.ended()),
            recv(self.done) -> _ => self.rx.try_recv().map_err(|_| self.ended()),
        }
    }

    /// The next event, waiting at most `timeout`: [`Error::Timeout`] if none came;
    /// at once [`Error::Closed`] or [`Error::Disconnected`] when the events have ended
    /// and all were taken (see [`Events`]).
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// # let server = serpy::Server::bind("127.0.0.1:0")?;
    /// let conn = serpy::Connection::connect(server.local_addr())?;
    /// let first = conn.events().recv_timeout(std::time::Duration::from_secs(5))?;
    /// assert!(matches!(first.kind, serpy::EventKind::Connected { .. }));
    /// # Ok(()) }
    /// ```
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Event> {
        if let Ok(e) = self.rx.try_recv() {
            return Ok(e);
        }
        crossbeam_channel::select! {
            recv(self.rx) -> e => e.map_err(|_| self.ended()),
            recv(self.done) -> _ => self.rx.try_recv().map_err(|_| self.ended()),
            default(timeout) => Err(Error::Timeout {
                operation: "events().recv_timeout",
                after: timeout,
            }),
        }
    }

    /// The next event if one is waiting: `Ok(None)` when none is waiting yet;
    /// [`Error::Closed`] or [`Error::Disconnected`] once the events have ended and all
    /// were taken (see [`Events`]).
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// # let server = serpy::Server::bind("127.0.0.1:0")?;
    /// let conn = serpy::Connection::connect(server.local_addr())?;
    /// while let Some(event) = conn.events().try_recv()? {
    ///     println!("{event}");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn try_recv(&self) -> Result<Option<Event>> {
        match self.rx.try_recv() {
            Ok(e) => Ok(Some(e)),
            // Ended: `done` is disconnected, and nothing can be queued after it.
            Err(_) if matches!(self.done.try_recv(), Err(TryRecvError::Disconnected)) => {
                match self.rx.try_recv() {
                    Ok(e) => Ok(Some(e)),
                    Err(_) => Err(self.ended()),
                }
            }
            Err(_) => Ok(None),
        }
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
    /// assert!(events.iter().any(|e| e == serpy::EventKind::Closed));
    /// # Ok(()) }
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        std::iter::from_fn(move || self.recv().ok())
    }
}

/// Waits on several sources at once: the messages of connections, the events of
/// connections and servers, a server's messages (what
/// [`recv_any`](crate::Server::recv_any) takes), and the program's own channels. One
/// thread then watches everything, without polling.
///
/// Add each source once; each call gives the source's index. [`ready`](Select::ready)
/// (or [`ready_timeout`](Select::ready_timeout), [`try_ready`](Select::try_ready))
/// blocks until one of them has something, and gives its index; take it with the
/// source's own non-blocking call (`try_get_data`, `try_recv`, `try_recv_any`). Like
/// any readiness, it may be stale when another thread took the item first (or, rarely,
/// spurious): the `try_` call then finds nothing, and the loop waits again. A source
/// that has ended (a connection gone for good, events that ended, a closed server, a
/// channel whose senders are gone) is ready for ever: remove it by building a new
/// `Select` without it.
///
/// The program's own channels are [`crossbeam_channel::Receiver`]s: crossbeam-channel
/// (0.5) is what this crate's queues are made of, and it is the one way to wait on a
/// program's channel and the crate's queues together without a thread in between.
/// A `std::sync::mpsc` channel cannot be waited on with others; use a crossbeam
/// channel for what is to be watched here. No other crossbeam type appears in this
/// crate's API.
///
/// ```
/// use serpy::{Connection, EventKind, Select, Server};
/// use std::time::Duration;
///
/// # fn main() -> serpy::Result<()> {
/// let server = Server::bind("127.0.0.1:0")?;
/// let a = Connection::connect(server.local_addr())?;
/// let b = Connection::connect(server.local_addr())?;
/// let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
/// b.send("from b")?;
///
/// let (a_events, server_events) = (a.events(), server.events());
/// let mut sel = Select::new();
/// let from_a = sel.messages(&a);
/// let from_clients = sel.server(&server);
/// let a_ev = sel.events(&a_events);
/// let srv_ev = sel.events(&server_events);
/// let stop = sel.recv(&stop_rx);
/// let mut got = None;
/// while got.is_none() {
///     match sel.ready_timeout(Duration::from_secs(5)) {
///         Some(i) if i == from_clients => {
///             got = server.try_recv_any()?.map(|r| r.message);
///         }
///         Some(i) if i == from_a => { let _ = a.try_get_data()?; }
///         Some(i) if i == a_ev => { let _ = a_events.try_recv(); }
///         Some(i) if i == srv_ev => {
///             if let Some(e) = server_events.try_recv()? {
///                 println!("{e}");
///             }
///         }
///         Some(i) if i == stop => break,
///         Some(_) => unreachable!(),
///         None => panic!("nothing in 5 s"),
///     }
/// }
/// assert_eq!(got.unwrap().as_str(), Some("from b"));
/// # drop(stop_tx);
/// # Ok(()) }
/// ```
pub struct Select<'a> {
    inner: crossbeam_channel::Select<'a>,
    /// For each operation registered with `inner`, the index of its source.
    sources: Vec<usize>,
    /// How many sources were added.
    count: usize,
}

impl std::fmt::Debug for Select<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Select")
            .field("sources", &self.count)
            .finish()
    }
}

impl Default for Select<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> Select<'a> {
    /// A `Select` with no source.
    ///
    /// ```
    /// let sel = serpy::Select::new();
    /// ```
    pub fn new() -> Self {
        Select {
            inner: crossbeam_channel::Select::new(),
            sources: Vec::new(),
            count: 0,
        }
    }

    fn add(&mut self, ops: &[usize]) -> usize {
        let index = self.count;
        self.count += 1;
        for op in ops {
            debug_assert_eq!(*op, self.sources.len());
            self.sources.push(index);
        }
        index
    }

    /// The received messages of `conn`: ready when one waits (take it with
    /// [`try_get_data`](crate::Connection::try_get_data)) or the connection is gone for
    /// good with nothing left to read.
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// # let server = serpy::Server::bind("127.0.0.1:0")?;
    /// let conn = serpy::Connection::connect(server.local_addr())?;
    /// let mut sel = serpy::Select::new();
    /// let i = sel.messages(&conn);
    /// assert_eq!(sel.try_ready(), None);
    /// # let _ = i;
    /// # Ok(()) }
    /// ```
    pub fn messages(&mut self, conn: &'a crate::Connection) -> usize {
        let op = self.inner.recv(conn.shared().inbox.ready());
        self.add(&[op])
    }

    /// The messages of every connection of `server`: ready when
    /// [`try_recv_any`](crate::Server::try_recv_any) may have one, or after
    /// [`close_all`](crate::Server::close_all).
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// let server = serpy::Server::bind("127.0.0.1:0")?;
    /// let c = serpy::Connection::connect(server.local_addr())?;
    /// c.send("hi")?;
    /// let mut sel = serpy::Select::new();
    /// let i = sel.server(&server);
    /// assert_eq!(sel.ready_timeout(std::time::Duration::from_secs(5)), Some(i));
    /// assert_eq!(server.try_recv_any()?.unwrap().message.as_str(), Some("hi"));
    /// # Ok(()) }
    /// ```
    pub fn server(&mut self, server: &'a crate::Server) -> usize {
        let (ready, closed) = server.select_handles();
        let a = self.inner.recv(ready);
        let b = self.inner.recv(closed);
        self.add(&[a, b])
    }

    /// Events (of a connection, or of a server): ready when one waits (take it with
    /// [`Events::try_recv`]) or the events have ended.
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// # let server = serpy::Server::bind("127.0.0.1:0")?;
    /// let conn = serpy::Connection::connect(server.local_addr())?;
    /// let events = conn.events();
    /// let mut sel = serpy::Select::new();
    /// let i = sel.events(&events);
    /// assert_eq!(sel.ready_timeout(std::time::Duration::from_secs(5)), Some(i)); // Connected
    /// assert!(events.try_recv()?.is_some());
    /// # Ok(()) }
    /// ```
    pub fn events(&mut self, events: &'a Events) -> usize {
        let a = self.inner.recv(&events.rx);
        let b = self.inner.recv(&events.done);
        self.add(&[a, b])
    }

    /// One of the program's own channels: ready when a value waits (take it with
    /// `try_recv`) or every sender is gone.
    ///
    /// ```
    /// let (tx, rx) = crossbeam_channel::unbounded();
    /// let mut sel = serpy::Select::new();
    /// let i = sel.recv(&rx);
    /// tx.send(7).unwrap();
    /// assert_eq!(sel.try_ready(), Some(i));
    /// assert_eq!(rx.try_recv(), Ok(7));
    /// ```
    pub fn recv<T>(&mut self, rx: &'a crossbeam_channel::Receiver<T>) -> usize {
        let op = self.inner.recv(rx);
        self.add(&[op])
    }

    /// Waits until a source is ready; gives its index. With no source, it waits for
    /// ever.
    pub fn ready(&mut self) -> usize {
        if self.count == 0 {
            let (_tx, rx) = crossbeam_channel::bounded::<()>(0);
            let _ = rx.recv();
        }
        self.sources[self.inner.ready()]
    }

    /// Waits at most `timeout` until a source is ready; gives its index, or `None`.
    ///
    /// ```
    /// let mut sel = serpy::Select::new();
    /// assert_eq!(sel.ready_timeout(std::time::Duration::from_millis(1)), None);
    /// ```
    pub fn ready_timeout(&mut self, timeout: Duration) -> Option<usize> {
        if self.count == 0 {
            let (_tx, rx) = crossbeam_channel::bounded::<()>(0);
            let _ = rx.recv_timeout(timeout);
            return None;
        }
        self.inner
            .ready_timeout(timeout)
            .ok()
            .map(|op| self.sources[op])
    }

    /// The index of a source that is ready now, if any.
    pub fn try_ready(&mut self) -> Option<usize> {
        self.inner.try_ready().ok().map(|op| self.sources[op])
    }
}
