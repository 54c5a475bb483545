//! A fault-injecting TCP proxy for tests, on loopback only.
//!
//! [`Proxy::start`] listens on 127.0.0.1 port 0 and, for each client that connects, opens a
//! link to the target and forwards bytes both ways through two pump threads. A schedule
//! chooses the [`Faults`] of each link from its index (0 for the first connection, 1 for the
//! one after a reconnect, ...): how the stream is split into pieces (whole, 1 byte,
//! random sizes), which pieces are held back for a while, and whether the link is cut after
//! a given number of bytes in one direction, with a FIN or with a reset (SO_LINGER 0).
//!
//! Threads: one accept thread and two pumps per link, each blocked on a socket or a channel
//! (a delay is a deadline-based wait on a channel that dropping the proxy disconnects).
//! At most [`MAX_LINKS`] links live at once; more clients are closed at once. Dropping the
//! proxy stops accepting, shuts every socket down and joins every thread.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

/// At most this many links are alive at once.
pub const MAX_LINKS: usize = 64;

/// A direction of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// From the client to the target.
    ToServer,
    /// From the target back to the client.
    ToClient,
}

/// How forwarded bytes are split into writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Chunks {
    /// As they were read.
    #[default]
    Whole,
    /// One byte per write.
    OneByte,
    /// Random sizes from 1 to `max` bytes.
    Random {
        /// The largest piece.
        max: usize,
    },
}

/// Holding pieces back: each piece is held, with probability 1/`one_in`, for a random time
/// up to `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delay {
    /// One piece in this many is held (1: every piece).
    pub one_in: u32,
    /// The longest hold.
    pub max: Duration,
}

/// Ending a link on purpose: once `after` bytes went through in direction `dir`, the
/// link is cut (wherever that falls in a frame).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cut {
    /// The direction whose byte count triggers the cut.
    pub dir: Dir,
    /// Bytes forwarded in `dir` before the cut.
    pub after: usize,
    /// A reset (RST, SO_LINGER 0) rather than an orderly close (FIN).
    pub reset: bool,
}

/// The faults of one link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// How bytes are split.
    pub chunks: Chunks,
    /// Pieces held back, if any.
    pub delay: Option<Delay>,
    /// Where the link is cut, if it is.
    pub cut: Option<Cut>,
}

impl Faults {
    /// No fault: bytes go through as they come.
    pub fn clean() -> Self {
        Faults::default()
    }
}

/// A small deterministic random generator (splitmix64), so that a failing run can be
/// repeated from its seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
}

/// What the proxy did, for the tests' reports.
#[derive(Default, Debug)]
pub struct Stats {
    /// Links opened.
    pub links: AtomicUsize,
    /// Links cut on purpose (a [`Cut`] or [`Proxy::cut_all`]).
    pub cuts: AtomicUsize,
    /// Pieces held back.
    pub delays: AtomicUsize,
    /// Bytes forwarded toward the target.
    pub to_server: AtomicUsize,
    /// Bytes forwarded toward the client.
    pub to_client: AtomicUsize,
}

type Schedule = Box<dyn Fn(usize) -> Faults + Send + Sync>;

/// A link (dropped when its pumps end) and its pump threads.
type LinkEntry = (Weak<Link>, Vec<JoinHandle<()>>);

/// The sockets of one link; dropped, and so closed, when both pumps have ended.
struct Link {
    client: TcpStream,
    server: TcpStream,
    dead: AtomicBool,
}

impl Link {
    /// Ends the link on purpose: with a reset, or with an orderly close.
    fn cut(&self, reset: bool) {
        if self.dead.swap(true, Ordering::AcqRel) {
            return;
        }
        for s in [&self.client, &self.server] {
            if reset {
                // Linger 0: the last close sends RST. Shutting the read side wakes the
                // pumps without sending a FIN first.
                let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
                let _ = s.shutdown(Shutdown::Read);
            } else {
                let _ = s.shutdown(Shutdown::Both);
            }
            #[cfg(windows)]
            super::windows::cancel_blocked_io(s);
        }
    }

    /// Teardown: wakes both pumps, also from a blocked write.
    fn kill(&self) {
        self.dead.store(true, Ordering::Release);
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.server.shutdown(Shutdown::Both);
        #[cfg(windows)]
        for s in [&self.client, &self.server] {
            super::windows::cancel_blocked_io(s);
        }
    }
}

struct Shared {
    target: SocketAddr,
    schedule: Schedule,
    seed: u64,
    stop: AtomicBool,
    links: Mutex<Vec<LinkEntry>>,
    /// Never sent on; dropping the proxy disconnects it, which ends every hold at once.
    hold_rx: Receiver<()>,
    stats: Stats,
}

/// The proxy; see the module documentation.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    hold_tx: Option<Sender<()>>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Starts a proxy to `target`; `schedule` gives the faults of the n-th link.
    pub fn start(
        target: SocketAddr,
        seed: u64,
        schedule: impl Fn(usize) -> Faults + Send + Sync + 'static,
    ) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().unwrap();
        let (hold_tx, hold_rx) = crossbeam_channel::bounded(0);
        let shared = Arc::new(Shared {
            target,
            schedule: Box::new(schedule),
            seed,
            stop: AtomicBool::new(false),
            links: Mutex::new(Vec::new()),
            hold_rx,
            stats: Stats::default(),
        });
        let s = shared.clone();
        let accept = thread::Builder::new()
            .name("proxy-accept".into())
            .spawn(move || accept_loop(listener, s))
            .unwrap();
        Proxy {
            addr,
            shared,
            hold_tx: Some(hold_tx),
            accept: Some(accept),
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What the proxy did so far.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Cuts every live link now.
    pub fn cut_all(&self, reset: bool) {
        for (link, _) in lock(&self.shared.links).iter() {
            if let Some(link) = link.upgrade() {
                if !link.dead.load(Ordering::Acquire) {
                    self.shared.stats.cuts.fetch_add(1, Ordering::Relaxed);
                }
                link.cut(reset);
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        // Wake the blocked accept() with a connection of our own.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        drop(self.hold_tx.take());
        let links: Vec<_> = lock(&self.shared.links).drain(..).collect();
        for (link, _) in &links {
            if let Some(link) = link.upgrade() {
                link.kill();
            }
        }
        for (_, pumps) in links {
            for p in pumps {
                let _ = p.join();
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let accepted = listener.accept();
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        let Ok((client, _)) = accepted else { continue };
        // Join the pumps of links that ended; refuse beyond the bound.
        let live = {
            let mut links = lock(&shared.links);
            let mut kept = Vec::with_capacity(links.len());
            for (link, pumps) in links.drain(..) {
                if pumps.iter().all(JoinHandle::is_finished) {
                    for p in pumps {
                        let _ = p.join();
                    }
                } else {
                    kept.push((link, pumps));
                }
            }
            *links = kept;
            links.len()
        };
        if live >= MAX_LINKS {
            continue;
        }
        let Ok(server) = TcpStream::connect_timeout(&shared.target, Duration::from_secs(5)) else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let index = shared.stats.links.fetch_add(1, Ordering::Relaxed);
        let faults = (shared.schedule)(index);
        let link = Arc::new(Link {
            client,
            server,
            dead: AtomicBool::new(false),
        });
        let mut pumps = Vec::new();
        for dir in [Dir::ToServer, Dir::ToClient] {
            let pump = Pump {
                link: link.clone(),
                shared: shared.clone(),
                dir,
                faults,
                rng: Rng::new(shared.seed ^ ((index as u64) << 8) ^ (dir as u64)),
            };
            pumps.push(
                thread::Builder::new()
                    .name(format!("proxy-{index}-{dir:?}"))
                    .spawn(move || pump.run())
                    .unwrap(),
            );
        }
        lock(&shared.links).push((Arc::downgrade(&link), pumps));
    }
}

struct Pump {
    link: Arc<Link>,
    shared: Arc<Shared>,
    dir: Dir,
    faults: Faults,
    rng: Rng,
}

impl Pump {
    fn run(mut self) {
        let (from, to) = match self.dir {
            Dir::ToServer => (&self.link.client, &self.link.server),
            Dir::ToClient => (&self.link.server, &self.link.client),
        };
        let counter = match self.dir {
            Dir::ToServer => &self.shared.stats.to_server,
            Dir::ToClient => &self.shared.stats.to_client,
        };
        let cut = self.faults.cut.filter(|c| c.dir == self.dir);
        let mut forwarded = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        'link: loop {
            if cut.is_some_and(|c| forwarded >= c.after) {
                break;
            }
            let n = match (&mut &*from).read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if self.link.dead.load(Ordering::Acquire) {
                break;
            }
            let mut data = &buf[..n];
            if let Some(c) = cut {
                data = &data[..data.len().min(c.after - forwarded)];
            }
            while !data.is_empty() {
                let piece = match self.faults.chunks {
                    Chunks::Whole => data.len(),
                    Chunks::OneByte => 1,
                    Chunks::Random { max } => self.rng.range(1, max.max(1)).min(data.len()),
                };
                if let Some(d) = self.faults.delay {
                    if self.rng.next_u64() % u64::from(d.one_in.max(1)) == 0 {
                        self.shared.stats.delays.fetch_add(1, Ordering::Relaxed);
                        let hold = d.max.mul_f64(self.rng.range(0, 1000) as f64 / 1000.0);
                        // Held until the deadline, or at once when the proxy goes away.
                        if let Err(RecvTimeoutError::Disconnected) =
                            self.shared.hold_rx.recv_deadline(Instant::now() + hold)
                        {
                            break 'link;
                        }
                    }
                }
                if self.link.dead.load(Ordering::Acquire)
                    || (&mut &*to).write_all(&data[..piece]).is_err()
                {
                    break 'link;
                }
                counter.fetch_add(piece, Ordering::Relaxed);
                forwarded += piece;
                data = &data[piece..];
            }
        }
        match cut {
            Some(c) if forwarded >= c.after => {
                if !self.link.dead.load(Ordering::Acquire) {
                    self.shared.stats.cuts.fetch_add(1, Ordering::Relaxed);
                }
                self.link.cut(c.reset);
            }
            _ if self.link.dead.load(Ordering::Acquire) => {}
            // The source closed or failed: pass the end on, so the other side sees it
            // once it has read what came before.
            _ => {
                let _ = to.shutdown(Shutdown::Write);
                let _ = from.shutdown(Shutdown::Read);
            }
        }
    }
}
