//! [`Server`]: binds, accepts, and hands each new socket to a [`Connection`].
//!
//! `builder.rs` holds the options and `bind`; `acceptor.rs` the accept thread and the
//! registry it shares with the handle; this file the handle.

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, RecvTimeoutError, Sender, TryRecvError};

use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::message::Message;
use crate::protocol::Mode;
use crate::sync::lock;

mod acceptor;
mod broadcast;
mod builder;

use acceptor::{wake_addr, ServerShared};
pub use broadcast::Broadcast;
pub use builder::{ServerBuilder, DEFAULT_MAX_CONNECTIONS};

/// A message received by a server, with the connection it came from: see
/// [`Server::recv_any`].
#[derive(Clone, Debug)]
pub struct Received {
    /// The connection it came from (answer on it with `send_data`).
    pub connection: Connection,
    /// The message.
    pub message: Message,
    /// The v1 mode it came in; `None` over v2.
    pub mode: Option<Mode>,
}

/// Listens for serpy clients and gives a [`Connection`] for each.
///
/// The accept thread starts at once. [`close`](Server::close) stops accepting and leaves
/// the connections running; [`close_all`](Server::close_all) (and `Drop`) also closes
/// every connection; both return once the threads have ended.
///
/// ```
/// use serpy::{Connection, Server};
/// use std::time::Duration;
///
/// # fn main() -> serpy::Result<()> {
/// let server = Server::bind("127.0.0.1:0")?;
/// let a = Connection::connect(server.local_addr())?;
/// let b = Connection::connect(server.local_addr())?;
/// a.send("from a")?;
/// b.send("from b")?;
/// let mut got = Vec::new();
/// for _ in 0..2 {
///     let r = server.recv_any_timeout(Duration::from_secs(5))?;
///     got.push(r.message.as_str().unwrap().to_string());
///     r.connection.send("thanks")?;
/// }
/// got.sort();
/// assert_eq!(got, ["from a", "from b"]);
/// assert_eq!(a.get_data()?.as_str(), Some("thanks"));
/// # Ok(()) }
/// ```
pub struct Server {
    local: SocketAddr,
    shared: Arc<ServerShared>,
    accept: Mutex<Option<JoinHandle<()>>>,
    ready_rx: Receiver<u64>,
    /// Dropped by `close_all`, which wakes every `recv_any`.
    closed_tx: Mutex<Option<Sender<()>>>,
    /// Dropped by `close`, which wakes the accept thread when it waits after a failed
    /// accept.
    stop_tx: Mutex<Option<Sender<()>>>,
    /// A second descriptor of the listening socket, for `close` to wake the accept
    /// thread when it cannot connect to it (out of descriptors); taken by `close`.
    listener: Mutex<Option<std::net::TcpListener>>,
    closed_rx: Receiver<()>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local)
            .field("connections", &self.len())
            .finish()
    }
}

impl Server {
    /// The address the server listens on (with the real port when bound to port 0).
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// let server = serpy::Server::bind("127.0.0.1:0")?;
    /// assert!(server.local_addr().ip().is_loopback());
    /// # Ok(()) }
    /// ```
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The next new connection, waiting as long as it takes ([`Error::Closed`] once the
    /// server is closed and every new connection was taken).
    ///
    /// Nobody has to take them: a server used through [`recv_any`](Server::recv_any)
    /// never calls this, and the connections that went down for good with nothing left
    /// to read are forgotten all the same (their sockets and memory released) at the
    /// next accept or the next call of [`len`](Server::len),
    /// [`connections`](Server::connections) or [`broadcast`](Server::broadcast). Up to
    /// `max_connections` (at least 16, at most 4096) new connections wait to be taken;
    /// beyond that the oldest leaves the queue (it stays served by `recv_any`).
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// let server = serpy::Server::bind("127.0.0.1:0")?;
    /// let client = serpy::Connection::connect(server.local_addr())?;
    /// let peer = server.get_connection()?;
    /// assert_eq!(peer.peer_addr(), client.local_addr());
    /// # Ok(()) }
    /// ```
    pub fn get_connection(&self) -> Result<Connection> {
        self.shared.new.rx.recv().map_err(|_| Error::Closed)
    }

    /// The next new connection, waiting at most `timeout`.
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// let server = serpy::Server::bind("127.0.0.1:0")?;
    /// let r = server.get_connection_timeout(std::time::Duration::from_millis(10));
    /// assert!(matches!(r, Err(serpy::Error::Timeout { .. })));
    /// # Ok(()) }
    /// ```
    pub fn get_connection_timeout(&self, timeout: Duration) -> Result<Connection> {
        self.shared
            .new
            .rx
            .recv_timeout(timeout)
            .map_err(|e| match e {
                RecvTimeoutError::Timeout => Error::Timeout {
                    operation: "get_connection",
                    after: timeout,
                },
                RecvTimeoutError::Disconnected => Error::Closed,
            })
    }

    /// The next new connection if one is waiting, without waiting: `Ok(None)` when none
    /// is waiting yet, [`Error::Closed`] once the server is closed and every new
    /// connection was taken (as [`get_connection`](Server::get_connection) would return).
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// let server = serpy::Server::bind("127.0.0.1:0")?;
    /// assert!(server.try_get_connection()?.is_none());
    /// server.close();
    /// assert!(matches!(server.try_get_connection(), Err(serpy::Error::Closed)));
    /// # Ok(()) }
    /// ```
    pub fn try_get_connection(&self) -> Result<Option<Connection>> {
        match self.shared.new.rx.try_recv() {
            Ok(c) => Ok(Some(c)),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(Error::Closed),
        }
    }

    /// A snapshot of the server's connections, taken or not with `get_connection`. A
    /// connection whose link is down for good drops out once everything it received has
    /// been read, and the server then lets go of it.
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// let server = serpy::Server::bind("127.0.0.1:0")?;
    /// let _c = serpy::Connection::connect(server.local_addr())?;
    /// let _peer = server.get_connection()?;
    /// assert_eq!(server.connections().len(), 1);
    /// # Ok(()) }
    /// ```
    pub fn connections(&self) -> Vec<Connection> {
        drop(self.shared.prune());
        lock(&self.shared.registry).clone()
    }

    /// The connections that have a received message waiting.
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// let server = serpy::Server::bind("127.0.0.1:0")?;
    /// assert!(server.readable_connections().is_empty());
    /// # Ok(()) }
    /// ```
    pub fn readable_connections(&self) -> Vec<Connection> {
        self.connections()
            .into_iter()
            .filter(Connection::is_data_available)
            .collect()
    }

    /// How many connections [`connections`](Server::connections) would give: the live
    /// ones, and those down for good that still hold messages to read. Connections that
    /// are gone are forgotten first, whether or not the program ever took them.
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// let server = serpy::Server::bind("127.0.0.1:0")?;
    /// assert_eq!(server.len(), 0);
    /// assert!(server.is_empty());
    /// # Ok(()) }
    /// ```
    pub fn len(&self) -> usize {
        drop(self.shared.prune());
        lock(&self.shared.registry).len()
    }

    /// True when the server has no connection.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The statistics of the server's connections, summed: messages and bytes in and
    /// out, drops, reconnects, protocol errors, the latest receipt of all, over every
    /// connection it accepted, those that have ended and that it let go of included;
    /// `connections` and the queue depths are those of the connections it has now
    /// (those [`connections`](Server::connections) lists). Per connection:
    /// [`Connection::stats`].
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// let server = serpy::Server::bind("127.0.0.1:0")?;
    /// let stats = server.stats();
    /// assert_eq!(stats.connections, 0);
    /// println!("{stats}");
    /// # Ok(()) }
    /// ```
    pub fn stats(&self) -> crate::Stats {
        drop(self.shared.prune());
        // The registry is locked while summing, so that a connection being forgotten
        // now is counted once, in `ended` or in the registry.
        let registry = lock(&self.shared.registry);
        let mut total = lock(&self.shared.ended).clone();
        for c in registry.iter() {
            total.add(&c.stats());
        }
        total
    }

    /// The next message from any connection, waiting as long as it takes. Connections
    /// are served in turn, so a busy one cannot starve the others.
    ///
    /// Returns [`Error::Closed`] after [`close_all`](Server::close_all).
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// let server = serpy::Server::bind("127.0.0.1:0")?;
    /// let c = serpy::Connection::connect(server.local_addr())?;
    /// c.send("hi")?;
    /// let r = server.recv_any()?;
    /// assert_eq!(r.message.as_str(), Some("hi"));
    /// # Ok(()) }
    /// ```
    pub fn recv_any(&self) -> Result<Received> {
        self.recv_any_deadline(None)
    }

    /// [`recv_any`](Server::recv_any) waiting at most `timeout`.
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// let server = serpy::Server::bind("127.0.0.1:0")?;
    /// let r = server.recv_any_timeout(std::time::Duration::from_millis(10));
    /// assert!(matches!(r, Err(serpy::Error::Timeout { .. })));
    /// # Ok(()) }
    /// ```
    pub fn recv_any_timeout(&self, timeout: Duration) -> Result<Received> {
        self.recv_any_deadline(Instant::now().checked_add(timeout))
            .map_err(|e| e.timed_out_after(timeout))
    }

    /// The next message from any connection if one is waiting, without waiting:
    /// `Ok(None)` when none is waiting (the connections may still send more),
    /// [`Error::Closed`] after [`close_all`](Server::close_all), as
    /// [`recv_any`](Server::recv_any) would return.
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// let server = serpy::Server::bind("127.0.0.1:0")?;
    /// assert!(server.try_recv_any()?.is_none());
    /// server.close_all();
    /// assert!(matches!(server.try_recv_any(), Err(serpy::Error::Closed)));
    /// # Ok(()) }
    /// ```
    pub fn try_recv_any(&self) -> Result<Option<Received>> {
        loop {
            if self.shared.all_closed.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            match self.ready_rx.try_recv() {
                Ok(id) => {
                    if let Some(r) = self.take_from(id) {
                        return Ok(Some(r));
                    }
                }
                Err(TryRecvError::Empty) => return Ok(None),
                Err(TryRecvError::Disconnected) => return Err(Error::Closed),
            }
        }
    }

    fn recv_any_deadline(&self, deadline: Option<Instant>) -> Result<Received> {
        loop {
            if self.shared.all_closed.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let id = select! {
                recv(self.ready_rx) -> id => id.map_err(|_| Error::Closed)?,
                recv(self.closed_rx) -> _ => return Err(Error::Closed),
                default(timeout.unwrap_or(Duration::MAX)) => return Err(Error::Timeout {
                    operation: "recv_any",
                    after: Duration::ZERO,
                }),
            };
            if let Some(r) = self.take_from(id) {
                return Ok(r);
            }
        }
    }

    /// Takes one message from connection `id`; puts `id` back at the end of the line if
    /// more are waiting (round robin between connections).
    fn take_from(&self, id: u64) -> Option<Received> {
        let conn = self.shared.find(id)?;
        let shared = conn.shared();
        shared.ready.taken();
        let ((message, mode), more) = shared.try_recv()?;
        if more {
            shared.notify();
        }
        Some(Received {
            connection: conn,
            message,
            mode,
        })
    }

    /// Stops accepting new connections; the existing ones go on. Returns once the accept
    /// thread has ended. Calling it again does nothing.
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// let server = serpy::Server::bind("127.0.0.1:0")?;
    /// server.close();
    /// assert!(serpy::Connection::connect(server.local_addr()).is_err());
    /// # Ok(()) }
    /// ```
    pub fn close(&self) {
        let Some(handle) = lock(&self.accept).take() else {
            return;
        };
        self.shared.stop.store(true, Ordering::Release);
        drop(lock(&self.stop_tx).take());
        // Wake the blocked accept() by connecting to ourselves; without a descriptor for
        // that, by shutting the listening socket down (which wakes accept() on Linux).
        let wake = wake_addr(self.local);
        let listener = lock(&self.listener).take();
        if let Err(e) = TcpStream::connect_timeout(&wake, Duration::from_secs(1)) {
            let shut = listener
                .as_ref()
                .map(|l| socket2::SockRef::from(l).shutdown(std::net::Shutdown::Read));
            if !matches!(shut, Some(Ok(()))) {
                log::warn!("serpy server: could not wake the accept thread on {wake} ({e}); it ends at the next connection");
            }
        }
        let _ = handle.join();
        // Also if the accept thread panicked: get_connection must not wait for ever.
        self.shared.new.end();
        // The listening socket closes with the last of its descriptors.
        drop(listener);
        log::info!("serpy server on {} closed", self.local);
    }

    /// Stops accepting and closes every connection (the original's `closeServer`).
    /// Returns once every thread of the server and its connections has ended.
    ///
    /// The connections are closed in parallel (up to 256 at a time), so that peers
    /// which do not read cost one close timeout together, not one each: the call takes
    /// about as long as the slowest [`Connection::close`] (at most about the close
    /// timeout, 2 s by default, when peers do not read what is queued for them), and
    /// that much again for each further 256 such connections.
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// let server = serpy::Server::bind("127.0.0.1:0")?;
    /// let client = serpy::Connection::connect(server.local_addr())?;
    /// let peer = server.get_connection()?;
    /// server.close_all();
    /// assert!(!peer.is_connected());
    /// assert!(matches!(client.get_data(), Err(serpy::Error::Disconnected)));
    /// # Ok(()) }
    /// ```
    pub fn close_all(&self) {
        self.close();
        self.shared.all_closed.store(true, Ordering::Release);
        drop(lock(&self.closed_tx).take());
        let conns: Vec<Connection> = lock(&self.shared.registry).drain(..).collect();
        // These handles are not the last ones (`conns` holds each): no close here.
        self.shared.new.clear();
        close_in_parallel(&conns);
        self.shared.fold_ended(&conns);
        drop(conns);
        self.shared.events.end_closed();
    }

    /// The server's events, in one place: its own
    /// ([`Accepted`](crate::EventKind::Accepted), [`Refused`](crate::EventKind::Refused)
    /// with the reason) and every event of every connection it accepted (connected,
    /// disconnected with the reason, closed, protocol errors...), each with the
    /// connection's id ([`Event::id`](crate::Event::id)) and its time. Every clone of the
    /// returned receiver takes from the same queue, which keeps the newest 4096 events
    /// when the program does not read them. They end after
    /// [`close_all`](Server::close_all) (and `Drop`), once every connection's last event
    /// is in.
    ///
    /// ```
    /// use serpy::{EventKind, Server};
    /// use std::time::Duration;
    ///
    /// # fn main() -> serpy::Result<()> {
    /// let server = Server::bind("127.0.0.1:0")?;
    /// let client = serpy::Connection::connect(server.local_addr())?;
    /// let peer = server.get_connection_timeout(Duration::from_secs(5))?;
    /// let first = server.events().recv_timeout(Duration::from_secs(5))?;
    /// assert_eq!(first.id, peer.id());
    /// assert!(matches!(first.kind, EventKind::Connected { .. } | EventKind::Accepted { .. }));
    /// # Ok(()) }
    /// ```
    pub fn events(&self) -> crate::Events {
        self.shared.events.receiver()
    }

    /// What `Select::server` waits on: the channel of connections with data waiting,
    /// and the one `close_all` disconnects.
    pub(crate) fn select_handles(&self) -> (&Receiver<u64>, &Receiver<()>) {
        (&self.ready_rx, &self.closed_rx)
    }
}

/// At most this many threads close connections at once in [`Server::close_all`].
const CLOSERS: usize = 256;

/// Closes `conns`, many at a time: each `close()` may wait up to the close timeout for
/// a peer that does not read, and those waits overlap. The calling thread takes part;
/// if no thread can be started, it closes them all itself.
fn close_in_parallel(conns: &[Connection]) {
    let next = AtomicUsize::new(0);
    let work = || {
        while let Some(c) = conns.get(next.fetch_add(1, Ordering::AcqRel)) {
            c.close();
        }
    };
    thread::scope(|scope| {
        let mut closers = Vec::new();
        for _ in 1..conns.len().min(CLOSERS) {
            match thread::Builder::new()
                .name("serpy-close".into())
                .stack_size(256 * 1024)
                .spawn_scoped(scope, work)
            {
                Ok(h) => closers.push(h),
                Err(_) => break,
            }
        }
        work();
        // Joined one by one (the scope alone waits for the work, not for the threads
        // to be gone), so that no closer outlives close_all.
        for h in closers {
            let _ = h.join();
        }
    });
}

impl IntoIterator for &Server {
    type Item = Connection;
    type IntoIter = std::vec::IntoIter<Connection>;

    /// Iterates over a snapshot of the connections.
    fn into_iter(self) -> Self::IntoIter {
        self.connections().into_iter()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.close_all();
    }
}
