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
use std::time::{Duration, Instant};

use crossbeam_channel::select;

use super::inbox::InboxTx;
use super::link::Link;
use super::reader::{ReadSide, Reader};
use super::state::{Phase, Replies, Shared};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::event::EventKind;
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

/// Connects to the first of `addrs` that answers within `timeout` each; gives the
/// stream and the address it connected to.
pub(crate) fn connect_any(
    addrs: &[SocketAddr],
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr)> {
    let mut last = None;
    for a in addrs {
        match TcpStream::connect_timeout(a, timeout) {
            Ok(s) => return Ok((s, *a)),
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

/// Connects to the first of `addrs` that answers, as [`connect_any`], for a reconnect:
/// the socket being connected waits in `Shared::connecting`, where `close()` shuts it
/// down, so that close does not wait out `connect_timeout` (on Linux, where shutting
/// down a connecting socket ends the attempt at once; elsewhere the attempt may run to
/// its timeout).
fn connect_for_restart(shared: &Shared) -> Result<(TcpStream, SocketAddr)> {
    let mut last = None;
    for a in &shared.addrs {
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(*a),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .map_err(|e| Error::io("creating a socket", e))?;
        *lock(&shared.connecting) = sock.try_clone().ok();
        // After the socket is in place: either close() sees it, or we see Closed.
        if shared.life.is_closed() {
            *lock(&shared.connecting) = None;
            return Err(Error::Closed);
        }
        let result = sock.connect_timeout(&(*a).into(), shared.cfg.connect_timeout);
        *lock(&shared.connecting) = None;
        match result {
            Ok(()) => return Ok((sock.into(), *a)),
            Err(e) => last = Some((*a, e)),
        }
    }
    let (a, e) = last.unwrap_or_else(|| {
        let none = io::Error::new(io::ErrorKind::InvalidInput, "no address to connect to");
        (UNSPECIFIED, none)
    });
    Err(Error::Connect {
        addr: a.to_string(),
        source: e,
    })
}

/// Applies the socket options of `cfg` to a new link.
pub(crate) fn configure(stream: &TcpStream, cfg: &Config) -> Result<()> {
    let io = |e| Error::io("configuring the socket", e);
    stream.set_nodelay(cfg.nodelay).map_err(io)?;
    if let Some(idle) = cfg.keepalive {
        let ka = socket2::TcpKeepalive::new()
            .with_time(idle)
            .with_interval(idle);
        socket2::SockRef::from(stream)
            .set_tcp_keepalive(&ka)
            .map_err(io)?;
    }
    if let Some(name) = &cfg.congestion_control {
        set_congestion(socket2::SockRef::from(stream), name)?;
    }
    Ok(())
}

/// Sets the congestion control `name` on `socket` (see the builders'
/// `congestion_control`).
fn set_congestion(socket: socket2::SockRef<'_>, name: &str) -> Result<()> {
    #[cfg(any(target_os = "linux", target_os = "freebsd"))]
    {
        socket
            .set_tcp_congestion(name.as_bytes())
            .map_err(|source| Error::CongestionControl {
                name: name.to_string(),
                source,
            })
    }
    #[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
    {
        let _ = socket;
        Err(Error::Unsupported {
            what: format!(
                "the TCP congestion control {name:?} was asked for, but this system has no \
                 per-socket choice of it (only Linux and FreeBSD do); leave congestion_control \
                 unset"
            ),
        })
    }
}

/// Checks, before anything connects or listens, that the congestion control `cfg` asks
/// for (if any) can be set: on a socket of its own that never connects.
pub(crate) fn check_congestion(cfg: &Config) -> Result<()> {
    let Some(name) = &cfg.congestion_control else {
        return Ok(());
    };
    let probe = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .or_else(|_| socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None))
        .map_err(|e| Error::io("opening a socket to check the congestion control", e))?;
    set_congestion(socket2::SockRef::from(&probe), name)
}

/// Starts using `stream` as the link (first connect, accept, or reconnect): a new epoch
/// for the link, the acks and the replies, and a reader thread that joins the previous
/// one before it reads.
pub(crate) fn attach(
    shared: &Arc<Shared>,
    link: &mut Link,
    stream: TcpStream,
    in_tx: &InboxTx,
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
    let mut side = ReadSide::new(Arc::new(read_half), epoch);
    side.first_by = match shared.cfg.first_message_timeout {
        Some(t) if !shared.is_client && !shared.proven.load(Ordering::Acquire) => {
            Instant::now().checked_add(t)
        }
        _ => None,
    };
    side.unproven = !shared.is_client && !shared.proven.load(Ordering::Acquire);
    let reader = Reader {
        shared: shared.clone(),
        _in_tx: in_tx.clone(),
        ctl_tx: shared.ctl_tx.clone(),
        previous,
        side: Box::new(side),
    };
    // Started by the writer thread (a reconnect), the reader does not keep the
    // writer's scheduling policy (see `Writer::run`).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let restore = crate::sys::wakeup_preemption_stopped();
    let handle = thread::Builder::new()
        .name(format!("serpy-rd-{}", shared.id))
        .spawn(move || {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            if restore {
                crate::sys::restore_wakeup_preemption();
            }
            reader.run()
        })
        .map_err(|e| Error::io("starting the reader thread", e))?;
    *lock(&shared.reader) = Some(handle);
    Ok(())
}

/// A v1 link with an idle timeout writes a keep-alive (an empty block) when it has
/// written nothing for this fraction of the timeout: the peer's idle timer, if it has
/// the same timeout, then sees bytes three times per period.
pub(crate) const KEEPALIVE_FRACTION: u32 = 3;

/// How long the writer may wait before the next keep-alive is due: `Duration::MAX`
/// when the link takes none (no idle timeout, not v1, down, or half-closed, where the
/// writer probes instead), zero when one is due now. One clock read per writer
/// wake-up, only with an idle timeout.
///
/// The keep-alive is a lone `0x1F`, written by the writer thread like the probes of a
/// half-closed link (`Writer::write_probe`): an empty block, which every v1 receiver
/// skips. (The original Python `serpy`, `serpy/serpy.py`, `Connection._inThread`,
/// splits what it receives on `0x1F` and queues only the blocks that are not empty.)
pub(crate) fn keepalive_due(shared: &Shared, link: &Link) -> Duration {
    match shared.cfg.idle_timeout {
        Some(t)
            if link.stream.is_some()
                && link.peer_done.is_none()
                && shared.protocol() == crate::protocol::Protocol::V1 =>
        {
            (t / KEEPALIVE_FRACTION).saturating_sub(link.last_write.elapsed())
        }
        _ => Duration::MAX,
    }
}

/// A link must stay up this long to count as established. One that dies sooner (a full
/// server accepts and closes at once) counts as a failed connection attempt: the
/// backoff goes on instead of starting again, and `give_up_after` counts it.
pub(crate) const STABLE_LINK: Duration = Duration::from_secs(1);

/// The reconnect backoff, kept across links: pure, so it is tested without sockets.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Backoff {
    first: Duration,
    max: Duration,
    /// The wait before the next attempt, once an attempt has failed.
    next_wait: Duration,
    /// Attempts since the last established link (a failed one or a link that died young).
    pub attempts: u32,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max,
            next_wait: first,
            attempts: 0,
        }
    }

    /// An established link: the next break starts again with an attempt at once.
    pub fn reset(&mut self) {
        self.next_wait = self.first;
        self.attempts = 0;
    }

    /// The wait before the next attempt after a failed one; the one after is doubled,
    /// up to `max` (saturating: no overflow whatever the durations).
    pub fn wait(&mut self) -> Duration {
        let w = self.next_wait;
        self.next_wait = self
            .next_wait
            .saturating_mul(2)
            .min(self.max.max(self.first));
        w
    }
}

/// What the session keeps across the links of a connection (the writer owns it).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Session {
    pub backoff: Backoff,
    /// When the current link was attached.
    pub up_since: Instant,
}

impl Session {
    pub fn new(cfg: &Config) -> Self {
        Session {
            backoff: Backoff::new(cfg.backoff_first, cfg.backoff_max),
            up_since: Instant::now(),
        }
    }
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
    in_tx: &InboxTx,
    session: &mut Session,
) -> Next {
    link.take_down();
    // The close handle goes too, so that the socket closes now rather than at close():
    // a peer still writing to it then gets a reset, which ends its link (Linux resets
    // after the shutdown alone; Wine, for one, does not).
    drop(lock(&shared.stream).take());
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
    shared.event(EventKind::Disconnected {
        reason,
        reconnecting,
    });
    if !reconnecting {
        return Next::Stop;
    }
    let young = session.up_since.elapsed() < STABLE_LINK;
    if !young {
        session.backoff.reset();
    }
    reconnect(shared, link, in_tx, session, young, false)
}

/// The first connect of a client built with `connect_in_background`: in the writer
/// thread, before it serves, with the reconnect backoff. Reports
/// [`EventKind::Connected`] once the link is up; `Stop` if the connection was closed or
/// gave up first.
pub(crate) fn connect_first(
    shared: &Arc<Shared>,
    link: &mut Link,
    in_tx: &InboxTx,
    session: &mut Session,
) -> Next {
    reconnect(shared, link, in_tx, session, false, true)
}

/// Auto-restart: connects again and again, with backoff, until a link is attached, the
/// connection closes, restart is turned off, or the attempts run out. After a link that
/// died young (`wait_first`), it waits before the first attempt too. `first_link`: the
/// first connect, made in the background (`Connected` rather than `Reconnected`).
fn reconnect(
    shared: &Arc<Shared>,
    link: &mut Link,
    in_tx: &InboxTx,
    session: &mut Session,
    mut wait_first: bool,
    first_link: bool,
) -> Next {
    let b = &mut session.backoff;
    loop {
        if wait_first {
            if shared.cfg.give_up_after.is_some_and(|n| b.attempts >= n) {
                shared.life.set(Phase::Down);
                shared.event(EventKind::GaveUp {
                    attempts: b.attempts,
                });
                return Next::Stop;
            }
            // Wait, but wake at once for close().
            select! {
                recv(shared.shutdown_rx) -> _ => return Next::Stop,
                default(b.wait()) => {}
            }
            if !may_restart(shared) {
                if !shared.life.is_closed() {
                    // `disable_restart()` while it was trying: say so, as the last event
                    // (close() has its own).
                    shared.life.set(Phase::Down);
                    shared.event(EventKind::GaveUp {
                        attempts: b.attempts,
                    });
                }
                return Next::Stop;
            }
        }
        wait_first = true;
        b.attempts = b.attempts.saturating_add(1);
        let attempts = b.attempts;
        match connect_for_restart(shared) {
            Ok(_) | Err(Error::Closed) if shared.life.is_closed() => return Next::Stop,
            Ok((stream, peer)) => {
                let attached = configure(&stream, &shared.cfg)
                    .and_then(|()| attach(shared, link, stream, in_tx));
                match attached {
                    Ok(()) => {
                        session.up_since = Instant::now();
                        shared.event(if first_link {
                            EventKind::Connected { peer }
                        } else {
                            EventKind::Reconnected { peer, attempts }
                        });
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_its_maximum_and_never_overflows() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(350));
        let waits: Vec<_> = (0..4).map(|_| b.wait()).collect();
        assert_eq!(waits, [ms(100), ms(200), ms(350), ms(350)]);
        b.reset();
        assert_eq!(b.wait(), ms(100));
        // Durations near the maximum: doubling saturates instead of panicking.
        let huge = Duration::MAX / 2 + Duration::from_secs(1);
        let mut b = Backoff::new(huge, Duration::MAX);
        assert_eq!(b.wait(), huge);
        assert_eq!(b.wait(), Duration::MAX);
        assert_eq!(b.wait(), Duration::MAX);
    }

    /// `reno` is built into every Linux kernel and always allowed.
    #[cfg(any(target_os = "linux", target_os = "freebsd"))]
    #[test]
    fn a_link_gets_the_congestion_control_asked_for_and_a_bad_name_is_refused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let _accepted = listener.accept().unwrap();
        let cfg = Config {
            congestion_control: Some("reno".into()),
            ..Config::default()
        };
        check_congestion(&cfg).unwrap();
        configure(&stream, &cfg).unwrap();
        let got = socket2::SockRef::from(&stream).tcp_congestion().unwrap();
        let got = String::from_utf8_lossy(&got);
        assert_eq!(got.trim_end_matches('\0'), "reno");

        let bad = Config {
            congestion_control: Some("no-such-algorithm".into()),
            ..Config::default()
        };
        match check_congestion(&bad) {
            Err(Error::CongestionControl { name, .. }) => assert_eq!(name, "no-such-algorithm"),
            other => panic!("expected CongestionControl, got {other:?}"),
        }
        assert!(matches!(
            configure(&stream, &bad),
            Err(Error::CongestionControl { .. })
        ));
        // No option: nothing is checked, nothing is set.
        check_congestion(&Config::default()).unwrap();
    }
}
