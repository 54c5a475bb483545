//! [`ConnectionBuilder`]: the options of a client connection, and the calls that
//! connect ([`Connection::connect`], [`Connection::builder`]).
//!
//! Threads: callers.

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use super::session::connect_any;
use super::Connection;
use crate::config::{connection_options, Config};
use crate::error::{Error, Result};
use crate::protocol::Protocol;

/// Options for a client connection; see [`Connection::builder`].
///
/// ```no_run
/// use serpy::{Connection, Protocol};
/// use std::time::Duration;
///
/// # fn main() -> serpy::Result<()> {
/// let conn = Connection::builder()
///     .protocol(Protocol::V2)
///     .auto_restart(true)
///     .reconnect_backoff(Duration::from_millis(50), Duration::from_secs(2))
///     .max_message_size(256 << 20)
///     .connect(("127.0.0.1", 8000))?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
pub struct ConnectionBuilder {
    pub(crate) cfg: Config,
}

impl ConnectionBuilder {
    /// Default options: v1, UTF-8, no auto-restart.
    ///
    /// ```
    /// let b = serpy::ConnectionBuilder::new();
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// The wire protocol (default [`Protocol::V1`]; `Auto` means v1 for a client).
    ///
    /// ```
    /// let b = serpy::Connection::builder().protocol(serpy::Protocol::V2);
    /// ```
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.cfg.protocol = match protocol {
            Protocol::Auto => Protocol::V1,
            p => p,
        };
        self
    }

    /// Reconnect by itself when the link breaks (default off). Messages queued and not
    /// yet written go out after the reconnect, in order.
    ///
    /// ```
    /// let b = serpy::Connection::builder().auto_restart(true);
    /// ```
    pub fn auto_restart(mut self, on: bool) -> Self {
        self.cfg.auto_restart = on;
        self
    }

    /// How long one connection attempt may take (default 5 s).
    ///
    /// ```
    /// let b = serpy::Connection::builder().connect_timeout(std::time::Duration::from_secs(1));
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.connect_timeout = timeout;
        self
    }

    /// Delay before the second reconnection attempt, doubled after each failure up to
    /// `max` (defaults 100 ms and 5 s). The first attempt is made at once. A link that
    /// dies within a second of connecting (a full server closes at once) counts as a
    /// failed attempt: the backoff goes on, and [`give_up_after`](Self::give_up_after)
    /// counts it.
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = serpy::Connection::builder()
    ///     .reconnect_backoff(Duration::from_millis(50), Duration::from_secs(1));
    /// ```
    pub fn reconnect_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.cfg.backoff_first = first;
        self.cfg.backoff_max = max.max(first);
        self
    }

    /// Give up reconnecting after this many failed attempts (`None`, the default: never).
    /// Attempts are counted since the last link that stayed up for a second.
    ///
    /// ```
    /// let b = serpy::Connection::builder().give_up_after(Some(10));
    /// ```
    pub fn give_up_after(mut self, attempts: Option<u32>) -> Self {
        self.cfg.give_up_after = attempts;
        self
    }

    connection_options!("serpy::Connection::builder()");

    /// Auto-restart covers the first connect too (default off): [`connect`](Self::connect)
    /// returns a handle at once (it fails only if the address does not resolve), and the
    /// connection connects in the background, trying at once and then with the
    /// [`reconnect_backoff`](Self::reconnect_backoff), for as many attempts as
    /// [`give_up_after`](Self::give_up_after) allows. What is sent meanwhile is queued
    /// (up to [`outgoing_capacity`](Self::outgoing_capacity); a send waits for room
    /// beyond it) and goes out, in order, once the link is up. The connection reports
    /// [`EventKind::Connected`](crate::EventKind::Connected) when the peer comes up
    /// ([`GaveUp`](crate::EventKind::GaveUp) if it never does), and
    /// [`is_connected`](Connection::is_connected) is false until then. Turns
    /// [`auto_restart`](Self::auto_restart) on: a workstation started before its
    /// instrument waits for it, and reconnects when it restarts.
    ///
    /// ```
    /// use serpy::{Connection, EventKind, Server};
    /// use std::time::Duration;
    ///
    /// # fn main() -> serpy::Result<()> {
    /// let server = Server::bind("127.0.0.1:0")?;
    /// let conn = Connection::builder()
    ///     .connect_in_background(true)
    ///     .connect(server.local_addr())?;      // does not wait for the server
    /// conn.send("queued until the link is up")?;
    /// let up = conn.events().recv_timeout(Duration::from_secs(5)).unwrap();
    /// assert!(matches!(up.kind, EventKind::Connected { .. }));
    /// # Ok(()) }
    /// ```
    pub fn connect_in_background(mut self, on: bool) -> Self {
        self.cfg.background_connect = on;
        if on {
            self.cfg.auto_restart = true;
        }
        self
    }

    /// Connects to `addr` (anything [`ToSocketAddrs`]: `("127.0.0.1", 8000)`,
    /// `("localhost", 8000)`, `"[::1]:8000"`, a [`SocketAddr`]) and starts the threads.
    /// Every address a name resolves to is tried in turn. With
    /// [`connect_in_background`](Self::connect_in_background) it returns at once and
    /// connects in the background; only an address that does not resolve fails then.
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// # let server = serpy::Server::bind("127.0.0.1:0")?;
    /// let conn = serpy::Connection::builder().connect(server.local_addr())?;
    /// # Ok(()) }
    /// ```
    pub fn connect(self, addr: impl ToSocketAddrs + fmt::Debug) -> Result<Connection> {
        let addrs: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|e| Error::Address {
                addr: format!("{addr:?}"),
                source: e,
            })?
            .collect();
        if addrs.is_empty() {
            return Err(Error::Address {
                addr: format!("{addr:?}"),
                source: io::Error::new(io::ErrorKind::InvalidInput, "it resolved to no address"),
            });
        }
        super::session::check_congestion(&self.cfg)?;
        if self.cfg.background_connect {
            return Connection::start_background(self.cfg, addrs);
        }
        let (stream, _) = connect_any(&addrs, self.cfg.connect_timeout)?;
        Connection::start(stream, self.cfg, addrs, true, None)
    }
}

impl Connection {
    /// Connects with default options (v1); see [`ConnectionBuilder`] for the others.
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// let server = serpy::Server::bind("127.0.0.1:0")?;
    /// let conn = serpy::Connection::connect(server.local_addr())?;
    /// assert!(conn.is_connected());
    /// # Ok(()) }
    /// ```
    pub fn connect(addr: impl ToSocketAddrs + fmt::Debug) -> Result<Connection> {
        ConnectionBuilder::new().connect(addr)
    }

    /// Options for a new client connection.
    ///
    /// ```
    /// let builder = serpy::Connection::builder().auto_restart(true);
    /// ```
    pub fn builder() -> ConnectionBuilder {
        ConnectionBuilder::new()
    }
}
