//! What survives a reconnect: the session of a connection, across the TCP links it
//! lives on. [`connect_any`] makes a link, [`attach`] starts using one (a new epoch and
//! its reader thread), [`link_down`] ends one and, for a client with auto-restart,
//! reconnects with backoff.
//!
//! Threads: writer (and the handle's thread for the first attach).

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crossbeam_channel::{select, Sender};

use super::link::Link;
use super::reader::Reader;
use super::state::{Phase, Replies, Shared};
use super::vocab::Incoming;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::sync::lock;

/// What the writer does after a step.
pub(crate) enum Next {
    /// Go on serving.
    Go,
    /// End: the connection closes or is down for good.
    Stop,
}

const UNSPECIFIED: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

/// Connects to the first of `addrs` that answers within `timeout` each.
pub(crate) fn connect_any(addrs: &[SocketAddr], timeout: Duration) -> Result<TcpStream> {
    let mut last = None;
    for a in addrs {
        match TcpStream::connect_timeout(a, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some((a, e)),
        }
    }
    let (a, e) = last.unwrap_or_else(|| {
        // Callers pass at least one address; say so rather than panic if not.
        let none = io::Error::new(io::ErrorKind::InvalidInput, "no address to connect to");
        (&UNSPECIFIED, none)
    });
    Err(Error::Connect {
        addr: a.to_string(),
        source: e,
    })
}

/// Applies the socket options of `cfg` to a new link.
pub(crate) fn configure(stream: &TcpStream, cfg: &Config) -> io::Result<()> {
    stream.set_nodelay(cfg.nodelay)?;
    if let Some(idle) = cfg.keepalive {
        let ka = socket2::TcpKeepalive::new()
            .with_time(idle)
            .with_interval(idle);
        socket2::SockRef::from(stream).set_tcp_keepalive(&ka)?;
    }
    Ok(())
}

/// Starts using `stream` as the link (first connect, accept, or reconnect): a new epoch
/// for the link, the acks and the replies, and a reader thread that joins the previous
/// one before it reads.
pub(crate) fn attach(
    shared: &Arc<Shared>,
    link: &mut Link,
    stream: TcpStream,
    in_tx: &Sender<Incoming>,
) -> Result<()> {
    let read_half = stream
        .try_clone()
        .map_err(|e| Error::io("cloning the socket for the reader", e))?;
    let kill = stream
        .try_clone()
        .map_err(|e| Error::io("cloning the socket", e))?;
    let peer = stream.peer_addr().ok();
    let epoch = link.start(stream);
    lock(&shared.acks).epoch = epoch;
    *lock(&shared.replies) = Replies {
        epoch,
        ..Replies::default()
    };
    *lock(&shared.stream) = Some(kill);
    *lock(&shared.peer) = peer;
    shared.life.set(Phase::Up);
    let previous = lock(&shared.reader).take();
    let reader = Reader {
        shared: shared.clone(),
        stream: read_half,
        epoch,
        in_tx: in_tx.clone(),
        ctl_tx: shared.ctl_tx.clone(),
        previous,
    };
    let handle = thread::Builder::new()
        .name(format!("serpy-rd-{}", shared.id))
        .spawn(move || reader.run())
        .map_err(|e| Error::io("starting the reader thread", e))?;
    *lock(&shared.reader) = Some(handle);
    Ok(())
}

/// True when a broken link is to be brought back.
fn may_restart(shared: &Shared) -> bool {
    shared.is_client && shared.restart.load(Ordering::Acquire) && !shared.life.is_closed()
}

/// The link broke: fail what waits for an acknowledgement, then reconnect or stop.
pub(crate) fn link_down(
    shared: &Arc<Shared>,
    link: &mut Link,
    reason: String,
    in_tx: &Sender<Incoming>,
) -> Next {
    link.take_down();
    {
        let mut acks = lock(&shared.acks);
        acks.epoch = 0;
        for slot in acks.waiting.drain(..) {
            let _ = slot.send(Err(Error::AckUncertain));
        }
    }
    let reconnecting = may_restart(shared);
    shared.life.set(if reconnecting {
        Phase::Reconnecting
    } else {
        Phase::Down
    });
    shared.event(Event::Disconnected {
        reason,
        reconnecting,
    });
    if !reconnecting {
        return Next::Stop;
    }
    reconnect(shared, link, in_tx)
}

/// Auto-restart: connects again and again, with backoff, until a link is attached, the
/// connection closes, restart is turned off, or the attempts run out.
fn reconnect(shared: &Arc<Shared>, link: &mut Link, in_tx: &Sender<Incoming>) -> Next {
    let mut delay = shared.cfg.backoff_first;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        match connect_any(&shared.addrs, shared.cfg.connect_timeout) {
            Ok(_) if shared.life.is_closed() => return Next::Stop,
            Ok(stream) => {
                let attached = configure(&stream, &shared.cfg)
                    .map_err(|e| Error::io("configuring the socket", e))
                    .and_then(|()| attach(shared, link, stream, in_tx));
                match attached {
                    Ok(()) => {
                        let peer = shared.addrs[0];
                        let peer = (*lock(&shared.peer)).unwrap_or(peer);
                        shared.event(Event::Reconnected { peer, attempts });
                        return Next::Go;
                    }
                    Err(e) => log::debug!("serpy {}: reconnect failed: {e}", shared.label()),
                }
            }
            Err(e) => log::debug!(
                "serpy {}: reconnect attempt {attempts} failed: {e}",
                shared.label()
            ),
        }
        if shared.cfg.give_up_after.is_some_and(|n| attempts >= n) {
            shared.life.set(Phase::Down);
            shared.event(Event::GaveUp { attempts });
            return Next::Stop;
        }
        // Wait, but wake at once for close().
        select! {
            recv(shared.shutdown_rx) -> _ => return Next::Stop,
            default(delay) => {}
        }
        if !may_restart(shared) {
            return Next::Stop;
        }
        delay = (delay * 2).min(shared.cfg.backoff_max);
    }
}
