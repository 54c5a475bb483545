//! The accept thread ([`Acceptor`]) and what it shares with the server handle
//! ([`ServerShared`]: the registry of connections).
//!
//! Threads: the accept thread `serpy-accept-PORT`, and the server's callers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{self as channel, Receiver, Sender};

use crate::config::Config;
use crate::connection::{Connection, Notifier};
use crate::sync::lock;

pub(super) struct ServerShared {
    /// Every connection the server accepted and has not forgotten (see `prune`).
    pub registry: Mutex<Vec<Connection>>,
    /// Set by `close()`: the accept thread ends at its next wake-up.
    pub stop: AtomicBool,
    /// Set by `close_all()`: `recv_any` returns `Closed`.
    pub all_closed: AtomicBool,
}

impl ServerShared {
    /// Drops the connections that are down for good and have nothing left to read.
    pub fn prune(&self) -> Vec<Connection> {
        let mut reg = lock(&self.registry);
        let mut gone = Vec::new();
        reg.retain(|c| {
            let keep = !c.is_gone() || c.shared().has_data();
            if !keep {
                gone.push(c.clone());
            }
            keep
        });
        gone
    }

    pub fn live(&self) -> usize {
        lock(&self.registry).iter().filter(|c| !c.is_gone()).count()
    }

    pub fn find(&self, id: u64) -> Option<Connection> {
        lock(&self.registry).iter().find(|c| c.id() == id).cloned()
    }
}

pub(super) struct Acceptor {
    pub listener: TcpListener,
    /// The options of every accepted connection.
    pub cfg: Config,
    pub max_connections: usize,
    pub shared: Arc<ServerShared>,
    /// Handed to every connection, for `recv_any`.
    pub notifier: Notifier,
    /// New connections for `get_connection` (the oldest are dropped when it is full).
    pub new_tx: Sender<Connection>,
    pub new_rx: Receiver<Connection>,
}

impl Acceptor {
    pub fn run(self) {
        loop {
            let accepted = self.listener.accept();
            if self.shared.stop.load(Ordering::Acquire) {
                return;
            }
            let (stream, peer) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: say so, and go on accepting.
                    log::warn!("serpy server: accept failed: {e}");
                    continue;
                }
            };
            // Dropped handles are closed here, outside the registry lock.
            drop(self.shared.prune());
            if self.shared.live() >= self.max_connections {
                log::warn!(
                    "serpy server: refused {peer}: the limit of {} connections is reached (raise it with max_connections())",
                    self.max_connections
                );
                drop(stream);
                continue;
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
                    // Keep the newest: if nobody takes new connections, drop the oldest.
                    let mut conn = conn;
                    while let Err(e) = self.new_tx.try_send(conn) {
                        match e {
                            channel::TrySendError::Full(c) => {
                                let _ = self.new_rx.try_recv();
                                conn = c;
                            }
                            channel::TrySendError::Disconnected(_) => break,
                        }
                    }
                }
                Err(e) => log::warn!("serpy server: could not start a connection for {peer}: {e}"),
            }
        }
    }
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
