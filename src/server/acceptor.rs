//! The accept thread ([`Acceptor`]) and what it shares with the server handle
//! ([`ServerShared`]: the registry of connections, and the queue of new ones).
//!
//! Threads: the accept thread `serpy-accept-PORT`, and the server's callers.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{self as channel, Receiver, RecvTimeoutError, Sender};

use crate::config::Config;
use crate::connection::{next_id, Connection, Notifier};
use crate::event::{policy, Event, EventKind, EventSink, LogEvery, Refusal};
use crate::stats::Stats;
use crate::sync::{lock, push_drop_oldest};

/// After an accept that failed for want of resources (descriptors, memory), the accept
/// thread waits this long before it tries again, doubling while accept keeps failing,
/// up to [`ACCEPT_BACKOFF_MAX`]: the pending connection stays in the listen queue, and
/// trying again at once would only spin. So once resources are free again, the server
/// accepts within [`ACCEPT_BACKOFF_MAX`].
const ACCEPT_BACKOFF_FIRST: Duration = Duration::from_millis(5);
/// The longest wait between two failed accepts.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_millis(500);

/// What the accept thread and the server handle share.
pub(super) struct ServerShared {
    /// Every connection the server accepted and has not forgotten (see `prune`).
    pub registry: Mutex<Vec<Connection>>,
    /// The accepted connections nobody has taken with `get_connection` yet.
    pub new: NewConnections,
    /// Set by `close()`: the accept thread ends at its next wake-up.
    pub stop: AtomicBool,
    /// Set by `close_all()`: `recv_any` returns `Closed`.
    pub all_closed: AtomicBool,
    /// The server's events: its own (accepted, refused) and its connections'.
    pub events: EventSink,
    /// The counters of the connections the server has forgotten (`prune`, `close_all`),
    /// so that `Server::stats` keeps them in its totals. Locked after `registry`.
    pub ended: Mutex<Stats>,
}

/// True for a connection the server may forget: gone for good, nothing left to read.
fn is_done(c: &Connection) -> bool {
    c.is_gone() && !c.shared().has_data()
}

impl ServerShared {
    /// Forgets the connections that are down for good and have nothing left to read,
    /// in the registry and in the queue of new connections alike, whether or not the
    /// program ever took them; returns them, for the caller to drop outside the locks
    /// (the last handle of a connection closes it).
    pub fn prune(&self) -> Vec<Connection> {
        let mut gone = Vec::new();
        {
            let mut registry = lock(&self.registry);
            registry.retain(|c| {
                let done = is_done(c);
                if done {
                    gone.push(c.clone());
                }
                !done
            });
            // Under the registry lock: `Server::stats` sees each connection once.
            self.fold_ended(&gone);
        }
        self.new.prune(&mut gone);
        gone
    }

    /// Keeps the counters of `conns`, which the server forgets, in `ended`.
    pub fn fold_ended(&self, conns: &[Connection]) {
        if conns.is_empty() {
            return;
        }
        let mut ended = lock(&self.ended);
        for c in conns {
            let mut s = c.stats();
            // Totals only: the server no longer has it, nor anything queued in it.
            s.connections = 0;
            s.queued_in = 0;
            s.queued_in_bytes = 0;
            s.queued_out = 0;
            s.queued_out_bytes = 0;
            ended.add(&s);
        }
    }

    /// How many connections are not gone for good (the limit counts these), how many of
    /// them are unproven (have not spoken yet), and the oldest of those. Connections
    /// being closed for being unproven count as gone.
    pub fn census(&self) -> (usize, usize, Option<Connection>) {
        let registry = lock(&self.registry);
        let mut live = 0;
        let mut unproven = 0;
        let mut oldest = None;
        for c in registry.iter().filter(|c| !c.is_gone() && !c.is_aborted()) {
            live += 1;
            if !c.is_proven() {
                unproven += 1;
                oldest.get_or_insert_with(|| c.clone());
            }
        }
        (live, unproven, oldest)
    }

    /// The connection with `id`, if the server still has it (for `recv_any`).
    pub fn find(&self, id: u64) -> Option<Connection> {
        lock(&self.registry).iter().find(|c| c.id() == id).cloned()
    }
}

/// The queue of new connections for `get_connection`: bounded, it keeps the newest
/// (the oldest go when nobody takes them), and `prune` takes the dead out of it, so a
/// server whose program never calls `get_connection` (the `recv_any` pattern) does not
/// keep every past client's socket.
pub(super) struct NewConnections {
    /// The sending side, locked while the queue is pushed to or rewritten, so that it
    /// keeps its order; `None` once the accept thread has ended, which disconnects `rx`:
    /// `get_connection` then gives what is left, then `Closed`.
    tx: Mutex<Option<Sender<Connection>>>,
    /// Where `get_connection` and its variants take from.
    pub rx: Receiver<Connection>,
}

impl NewConnections {
    /// A queue of at most `capacity` connections.
    pub fn new(capacity: usize) -> Self {
        let (tx, rx) = channel::bounded(capacity);
        NewConnections {
            tx: Mutex::new(Some(tx)),
            rx,
        }
    }

    /// Adds `conn`, dropping the oldest waiting connection if the queue is full (it
    /// stays in the registry: `recv_any` still serves it).
    fn push(&self, conn: Connection) {
        if let Some(tx) = lock(&self.tx).as_ref() {
            push_drop_oldest(tx, &self.rx, conn);
        }
    }

    /// Moves the waiting connections that are done into `gone`; the others stay, in
    /// their order. (Once the accept thread has ended nothing is added any more, and
    /// what waits stays as it is.)
    fn prune(&self, gone: &mut Vec<Connection>) {
        let tx = lock(&self.tx);
        let Some(tx) = tx.as_ref() else {
            return;
        };
        if self.rx.is_empty() {
            return;
        }
        let waiting: Vec<Connection> = self.rx.try_iter().collect();
        for c in waiting {
            if is_done(&c) {
                gone.push(c);
            } else if let Err(e) = tx.try_send(c) {
                // Cannot happen (only `push` adds, under the same lock); keep it anyway.
                gone.push(e.into_inner());
            }
        }
    }

    /// No new connection will come (the accept thread ended).
    pub fn end(&self) {
        drop(lock(&self.tx).take());
    }

    /// Drops every waiting connection (the server closes).
    pub fn clear(&self) {
        while self.rx.try_recv().is_ok() {}
    }
}

/// The accept thread's state: it alone owns the listener.
pub(super) struct Acceptor {
    /// The listening socket (the server keeps a second descriptor of it, see `close`).
    pub listener: TcpListener,
    /// The address the server listens on, for the log.
    pub local: SocketAddr,
    /// Disconnected by `close()`: ends the wait after a failed accept at once.
    pub stop_rx: Receiver<()>,
    /// Failed accepts, for rate-limiting their log lines.
    pub accept_errors: LogEvery,
    /// Connections refused at the limit, likewise: every client can cause one.
    pub refusals: LogEvery,
    /// Accepted sockets that could not be started as connections, likewise.
    pub start_errors: LogEvery,
    /// The options of every accepted connection.
    pub cfg: Config,
    /// Beyond this many live connections, a new one is refused.
    pub max_connections: usize,
    /// At this many unproven connections, a new one makes the oldest of them go.
    pub max_unproven: usize,
    /// The registry and the new-connection queue, shared with the handle.
    pub shared: Arc<ServerShared>,
    /// Handed to every connection, for `recv_any`.
    pub notifier: Notifier,
}

impl Acceptor {
    /// The accept thread: accepts until the server is closed, then ends the queue of new
    /// connections.
    pub fn run(self) {
        self.accept_loop();
        self.shared.new.end();
    }

    fn accept_loop(&self) {
        let mut backoff: Option<Duration> = None;
        loop {
            let accepted = self.listener.accept();
            if self.shared.stop.load(Ordering::Acquire) {
                return;
            }
            let (stream, peer) = match accepted {
                Ok(x) => {
                    backoff = None;
                    x
                }
                // A client that went away before it was accepted, or a signal: nothing
                // that repeats by itself.
                Err(e) if is_about_one_connection(&e) => {
                    log::debug!("serpy server on {}: accept: {e}", self.local);
                    continue;
                }
                Err(e) => {
                    let delay = backoff.map_or(ACCEPT_BACKOFF_FIRST, |d| {
                        d.saturating_mul(2).min(ACCEPT_BACKOFF_MAX)
                    });
                    backoff = Some(delay);
                    self.log_accept_error(&e, delay);
                    if self.wait_for_stop(delay) {
                        return;
                    }
                    continue;
                }
            };
            self.admit(stream, peer);
        }
    }

    /// Starts a connection for an accepted socket, or refuses it at the limit.
    fn admit(&self, stream: std::net::TcpStream, peer: SocketAddr) {
        // Dropped handles are closed here, outside the registry lock.
        drop(self.shared.prune());
        let (mut live, unproven, oldest) = self.shared.census();
        if unproven >= self.max_unproven {
            if let Some(old) = oldest {
                old.abort(format!(
                    "it had not spoken yet, and a new connection came while {unproven} such connections were open (max_unproven {})",
                    self.max_unproven
                ));
                live -= 1;
            }
        }
        if live >= self.max_connections {
            self.refused(
                peer,
                Refusal::TooManyConnections {
                    limit: self.max_connections,
                },
            );
            if let Some(left_out) = self.refusals.hit() {
                log::warn!(
                    "serpy server on {}: refused {peer}: the limit of {} connections is reached (raise it with max_connections()){}",
                    self.local,
                    self.max_connections,
                    more_since(left_out, "refused"),
                );
            }
            return;
        }
        // The registry is locked while the connection starts, so that recv_any can
        // find it by the time its reader reports the first message.
        let mut registry = lock(&self.shared.registry);
        match Connection::start(
            stream,
            self.cfg.clone(),
            Vec::new(),
            false,
            Some(self.notifier.clone()),
        ) {
            Ok(conn) => {
                registry.push(conn.clone());
                drop(registry);
                self.shared.events.emit_event(
                    || self.label(),
                    Event::now(conn.id(), EventKind::Accepted { peer }),
                );
                self.shared.new.push(conn);
            }
            Err(e) => {
                self.refused(
                    peer,
                    Refusal::StartFailed {
                        error: e.to_string(),
                    },
                );
                if let Some(left_out) = self.start_errors.hit() {
                    log::warn!(
                        "serpy server on {}: could not start a connection for {peer}: {e}{}",
                        self.local,
                        more_since(left_out, "failed"),
                    );
                }
            }
        }
    }
}

impl Acceptor {
    /// Reports a socket refused for `reason` in the server's events (the caller logs it,
    /// rate-limited).
    fn refused(&self, peer: SocketAddr, reason: Refusal) {
        let event = Event::now(next_id(), EventKind::Refused { peer, reason });
        self.shared.events.emit_event(|| self.label(), event);
    }

    /// The server's name in log lines.
    fn label(&self) -> String {
        format!("server on {}", self.local)
    }

    /// Logs a failed accept, at most once per [`policy::ACCEPT_ERRORS_EVERY`].
    fn log_accept_error(&self, e: &io::Error, delay: Duration) {
        if let Some(left_out) = self.accept_errors.hit() {
            log::warn!(
                "serpy server on {}: accept failed: {e}; trying again in {delay:?}{}. If it says too many open files, raise the process's descriptor limit (ulimit -n) or lower max_connections()",
                self.local,
                more_since(left_out, "failed"),
            );
        }
    }

    /// Waits `delay`, or less if the server is closed meanwhile; true if it was.
    fn wait_for_stop(&self, delay: Duration) -> bool {
        match self.stop_rx.recv_timeout(delay) {
            Err(RecvTimeoutError::Timeout) => self.shared.stop.load(Ordering::Acquire),
            Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
        }
    }
}

/// True for the accept errors that concern one connection only (it was reset before it
/// was accepted) or none (a signal): accept goes on at once after them. Any other error
/// (out of descriptors or memory, most of all) would come back at once.
fn is_about_one_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// `" (N more <what> since the last line)"`, or nothing when none was left out.
fn more_since(left_out: u64, what: &str) -> String {
    if left_out > 0 {
        format!(" ({left_out} more {what} since the last line)")
    } else {
        String::new()
    }
}

/// A new limiter for the accept thread's log lines.
pub(super) fn accept_log_limit() -> LogEvery {
    LogEvery::new(policy::ACCEPT_ERRORS_EVERY)
}

/// Where to connect to wake our own accept(): the bound address, or loopback if the
/// server listens on all interfaces.
pub(super) fn wake_addr(local: SocketAddr) -> SocketAddr {
    let ip = match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, local.port())
}
