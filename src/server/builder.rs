//! [`ServerBuilder`]: the options of a server, and the calls that bind one
//! ([`Server::bind`], [`Server::builder`]).

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::thread;

use crossbeam_channel as channel;

use super::acceptor::{accept_log_limit, Acceptor, NewConnections, ServerShared};
use super::Server;
use crate::config::{connection_options, Config};
use crate::connection::Notifier;
use crate::error::{Error, Result};
use crate::event::EventSink;
use crate::protocol::Protocol;

/// Default maximum number of simultaneous connections of a server.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// How many connections the system keeps waiting for the accept thread (std's `bind`
/// asks for 128). Beyond it, a new client's handshake is dropped and retried a second
/// later, so a burst of clients connecting at once would wait that long. The system
/// may lower it (`net.core.somaxconn` on Linux).
const LISTEN_BACKLOG: i32 = 1024;

/// Options for a server; see [`Server::builder`].
///
/// ```
/// use serpy::{Protocol, Server};
///
/// # fn main() -> serpy::Result<()> {
/// let server = Server::builder()
///     .protocol(Protocol::Auto)      // v1 and v2 clients alike
///     .max_connections(16)
///     .max_message_size(16 << 20)
///     .bind("127.0.0.1:0")?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct ServerBuilder {
    pub(crate) cfg: Config,
    max_connections: usize,
    max_unproven: Option<usize>,
}

impl Default for ServerBuilder {
    fn default() -> Self {
        ServerBuilder {
            cfg: Config::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_unproven: None,
        }
    }
}

impl ServerBuilder {
    /// Default options: v1, at most 1024 connections.
    ///
    /// ```
    /// let b = serpy::ServerBuilder::new();
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// The protocol of accepted connections: `V1` (default), `V2`, or `Auto` to tell each
    /// connection's protocol from its first bytes. With `Auto`, what the server sends to a
    /// connection waits until its peer has sent something.
    ///
    /// ```
    /// let b = serpy::Server::builder().protocol(serpy::Protocol::Auto);
    /// ```
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.cfg.protocol = protocol;
        self
    }

    /// At most this many live connections (default 1024); one more is accepted and
    /// closed at once, with a log line, and the server goes on.
    ///
    /// ```
    /// let b = serpy::Server::builder().max_connections(8);
    /// ```
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// With [`Protocol::Auto`]: how long to wait for the rest of the v2 magic once the
    /// first bytes of it arrived (default 5 s); then the connection is taken as v1.
    ///
    /// ```
    /// let b = serpy::Server::builder().detect_timeout(std::time::Duration::from_secs(1));
    /// ```
    pub fn detect_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.cfg.detect_timeout = timeout;
        self
    }

    connection_options!("serpy::Server::builder()");

    /// A connection that has not sent a whole first message (or v1 control block)
    /// within `timeout` of being accepted is closed (default `None`: a client may stay
    /// silent for as long as it likes, as with the original). Its events say so
    /// ([`EventKind::Unproven`](crate::EventKind::Unproven), then `Disconnected`). Set it
    /// when every client speaks first (a command client does; a live-view client that
    /// only listens does not), so that sockets that connect and say nothing (a port
    /// scanner, a stuck script) do not hold server slots for ever.
    ///
    /// ```
    /// let b = serpy::Server::builder().first_message_timeout(Some(std::time::Duration::from_secs(10)));
    /// ```
    pub fn first_message_timeout(mut self, timeout: Option<std::time::Duration>) -> Self {
        self.cfg.first_message_timeout = timeout.filter(|t| !t.is_zero());
        self
    }

    /// At most `n` live connections that have not spoken yet ("unproven": no whole
    /// message or control block received), within `max_connections` (default: no
    /// separate limit). When one more arrives, the oldest unproven connection is
    /// closed to make room ([`EventKind::Unproven`](crate::EventKind::Unproven) in its
    /// events): a flood of sockets that never speak can hold at most `n` slots, so it
    /// never crowds out the connections that did speak, and a new real client still
    /// gets in (it has until `n` newer silent ones arrived to speak). Clients that only
    /// listen count as unproven for their whole life: leave room for them in `n`.
    ///
    /// ```
    /// let b = serpy::Server::builder().max_connections(64).max_unproven(16);
    /// ```
    pub fn max_unproven(mut self, n: usize) -> Self {
        self.max_unproven = Some(n.max(1));
        self
    }

    /// Binds to `addr` and starts accepting. Use port 0 for any free port and read it
    /// back with [`Server::local_addr`]. Up to 1024 clients that connect at once wait
    /// for the accept thread in the system's queue (std's listeners keep 128; the system
    /// may cap it, e.g. `net.core.somaxconn` on Linux).
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// let server = serpy::Server::builder().bind("127.0.0.1:0")?;
    /// println!("listening on {}", server.local_addr());
    /// # Ok(()) }
    /// ```
    pub fn bind(self, addr: impl ToSocketAddrs + std::fmt::Debug) -> Result<Server> {
        crate::connection::check_congestion(&self.cfg)?;
        let listener = listen(&addr).map_err(|e| Error::Address {
            addr: format!("{addr:?}"),
            source: e,
        })?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::io("reading the bound address", e))?;
        let (ready_tx, ready_rx) = channel::unbounded();
        let shared = Arc::new(ServerShared {
            registry: Mutex::new(Vec::new()),
            new: NewConnections::new(self.max_connections.clamp(16, 4096)),
            stop: AtomicBool::new(false),
            all_closed: AtomicBool::new(false),
            events: EventSink::for_server(),
            ended: Mutex::new(crate::Stats::default()),
        });
        let (stop_tx, stop_rx) = channel::bounded(0);
        // Only for waking the accept thread when out of descriptors: not worth failing for.
        let waker = listener.try_clone().ok();
        let acceptor = Acceptor {
            listener,
            local,
            stop_rx,
            accept_errors: accept_log_limit(),
            refusals: accept_log_limit(),
            start_errors: accept_log_limit(),
            cfg: self.cfg,
            max_connections: self.max_connections,
            max_unproven: self.max_unproven.unwrap_or(usize::MAX),
            shared: shared.clone(),
            notifier: Notifier {
                tx: ready_tx,
                events: Some(shared.events.forward()),
            },
        };
        let handle = thread::Builder::new()
            .name(format!("serpy-accept-{}", local.port()))
            .spawn(move || acceptor.run())
            .map_err(|e| Error::io("starting the accept thread", e))?;
        log::info!("serpy server listening on {local}");
        let (closed_tx, closed_rx) = channel::bounded(0);
        Ok(Server {
            closed_tx: Mutex::new(Some(closed_tx)),
            stop_tx: Mutex::new(Some(stop_tx)),
            listener: Mutex::new(waker),
            closed_rx,
            local,
            shared,
            accept: Mutex::new(Some(handle)),
            ready_rx,
        })
    }
}

/// Binds to the first address `addr` resolves to that can be bound, and listens with a
/// backlog of [`LISTEN_BACKLOG`].
fn listen(addr: &impl ToSocketAddrs) -> io::Result<TcpListener> {
    let mut last = None;
    for a in addr.to_socket_addrs()? {
        match listen_on(a) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "it resolved to no address")
    }))
}

fn listen_on(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    // As std's bind does outside Windows: a restarted server can bind its port while
    // links of its previous run linger in TIME_WAIT.
    #[cfg(not(windows))]
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

impl Server {
    /// Binds with default options (v1). See [`ServerBuilder`] for the others.
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// let server = serpy::Server::bind("127.0.0.1:0")?;
    /// assert_ne!(server.local_addr().port(), 0);
    /// # Ok(()) }
    /// ```
    pub fn bind(addr: impl ToSocketAddrs + std::fmt::Debug) -> Result<Server> {
        ServerBuilder::new().bind(addr)
    }

    /// Options for a new server.
    ///
    /// ```
    /// let b = serpy::Server::builder().protocol(serpy::Protocol::V2);
    /// ```
    pub fn builder() -> ServerBuilder {
        ServerBuilder::new()
    }
}
