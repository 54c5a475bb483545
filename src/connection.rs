//! [`Connection`]: one TCP link with a reader and a writer thread behind blocking calls.
//!
//! Design (see also `protocol`): the caller's thread encodes a message into its wire bytes
//! (`prepare`), the writer thread adds what depends on the link's state (a v1 SETMODE),
//! batches everything queued into few vectored writes, and reconnects when the link breaks.
//! The reader thread feeds the pure decoders and pushes what they find into the incoming
//! queue, and hands control replies (ACKMODCG, ACKEOT) to the writer through a control
//! channel that the writer always serves before data, so replies never wait behind a send.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{
    self as channel, select, Receiver, RecvTimeoutError, Sender, TrySendError,
};

use crate::config::{connection_options, Config};
use crate::error::{Error, Result};
use crate::event::{Event, EventSink, Events};
use crate::message::Message;
use crate::protocol::{self, v1, v2, Decoder, Detection, Frame, Mode, Protocol, WireBuf};

/// Capacity of the control channel from readers to the writer (wake-ups, link down).
const CONTROL_CAPACITY: usize = 64;
/// The writer gathers at most this many bytes into one batch of writes.
const BATCH_BYTES: usize = 1 << 20;
/// The writer gathers at most this many messages into one batch.
const BATCH_MESSAGES: usize = 512;
/// Size of the reader's buffer for v1.
const READ_CHUNK: usize = 64 * 1024;
/// Length of a v1 SETMODE block (`01 "SETMODE" d 1F`).
const SETMODE_LEN: usize = 10;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Every protocol error up to this many is logged; after that, one at each power of two.
const PROTOCOL_ERRORS_LOGGED: u64 = 16;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not make every later call panic too.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A message as received, with the v1 mode it came in (`None` for v2).
pub(crate) type Incoming = (Message, Option<Mode>);

/// The answer an acknowledged send waits for.
type AckSlot = Sender<Result<()>>;

/// A message ready for the writer.
pub(crate) struct Outgoing {
    payload: Payload,
    ack: Option<AckSlot>,
}

#[derive(Clone)]
enum Payload {
    /// A v1 data block (no SETMODE) and the mode it is in.
    V1 { mode: Mode, parts: Vec<Bytes> },
    /// A whole v2 frame: its header, and its payload (the message's own bytes).
    V2 {
        header: [u8; v2::HEADER_LEN],
        body: Bytes,
    },
    /// Server in auto mode before the peer's protocol is known: encoded later.
    Deferred { message: Message, mode: Mode },
}

/// A message encoded once for the connections of one protocol (see `Server::broadcast`).
#[derive(Clone)]
pub(crate) struct Prepared(Payload);

impl Prepared {
    /// Encodes `message` as `Connection::send` would for a connection of `protocol`.
    pub(crate) fn new(protocol: Protocol, cfg: &Config, message: &Message) -> Result<Self> {
        prepare(protocol, cfg, message, Mode::Plain).map(Prepared)
    }
}

/// Encodes `message` into what the writer will send, in the caller's thread.
fn prepare(protocol: Protocol, cfg: &Config, message: &Message, mode: Mode) -> Result<Payload> {
    match protocol {
        Protocol::V2 => {
            if message.len() > cfg.max_message_size {
                return Err(Error::MessageTooLarge {
                    size: message.len() as u64,
                    max: cfg.max_message_size,
                });
            }
            let (header, body) = v2::encode_parts(message)?;
            Ok(Payload::V2 { header, body })
        }
        Protocol::V1 => {
            // A fresh encoder is in mode 0; what it writes after a SETMODE is the data
            // block, which does not depend on the link's state. The writer adds the SETMODE.
            let mut enc = v1::Encoder::new(cfg.encoding, cfg.max_message_size);
            let mut w = WireBuf::new();
            let done = enc.encode(message, mode, &mut w)?;
            let mut parts = w.take_parts();
            if done.set_mode {
                strip_front(&mut parts, SETMODE_LEN);
            }
            Ok(Payload::V1 {
                mode: done.mode,
                parts,
            })
        }
        Protocol::Auto => Ok(Payload::Deferred {
            message: message.clone(),
            mode,
        }),
    }
}

fn strip_front(parts: &mut Vec<Bytes>, mut n: usize) {
    while n > 0 && !parts.is_empty() {
        if parts[0].len() <= n {
            n -= parts[0].len();
            parts.remove(0);
        } else {
            parts[0] = parts[0].slice(n..);
            n = 0;
        }
    }
}

/// What readers tell the writer.
enum Control {
    /// Control replies are waiting in [`Replies`].
    Wake,
    /// The link of `epoch` broke.
    LinkDown { epoch: u64, reason: String },
    /// The peer's protocol was detected (auto servers).
    Detected(Protocol),
}

/// v1 control replies owed to the peer on the link of `epoch`. Counters, not a queue: the
/// reader never blocks handing them over and a flood of SETMODEs costs no memory.
#[derive(Default)]
struct Replies {
    epoch: u64,
    ack_mode_change: u64,
    ack_eot: u64,
}

/// At most this many replies are written in one go.
const REPLY_BATCH: u64 = 4096;

/// Waiting acknowledged sends, in the order they were written, for the link of `epoch`.
struct AckQueue {
    epoch: u64,
    waiting: VecDeque<AckSlot>,
}

/// The write half of the link and what goes with it. The writer thread holds the lock
/// while it works; other threads only ever `try_lock` it, to write at once, while the link
/// is idle, what would otherwise wait for the writer thread to wake up: an acknowledged
/// send (its caller waits anyway), a plain send after a quiet spell (without blocking), or
/// a control reply (without blocking). Whoever holds it writes whole blocks, so writes
/// never interleave.
struct Link {
    stream: Option<TcpStream>,
    epoch: u64,
    /// The v1 mode of what we send on this link.
    send_mode: Mode,
    /// Messages taken from the queue but not fully written on a link that broke.
    retry: VecDeque<Outgoing>,
    /// Bytes about to be written. Between writes it holds only what a write that must
    /// not block could not finish (control replies, the rest of `partial`): it goes first.
    wire: WireBuf,
    /// A write made outside the writer thread failed on the link of this epoch.
    broken: Option<(u64, String)>,
    /// A plain send written from its caller's thread that the socket took only part of,
    /// and how many of its bytes, at the front of `wire`, are still to go. It counts as
    /// pending until they are written; if the link breaks first, it is sent again.
    partial: Option<(Outgoing, usize)>,
    /// When the last write on this link ended.
    last_write: Instant,
}

/// A plain send is written by its caller only after the link has been quiet this long,
/// so that a stream of sends still goes through the queue and the writer's batches.
#[cfg(any(target_os = "linux", target_os = "android"))]
const QUIET: Duration = Duration::from_micros(5);

impl Link {
    /// True when this thread may write now: the link is up, and no message accepted
    /// earlier is still waiting to be written (`pending` counts those).
    fn idle(&self, shared: &Shared) -> bool {
        self.stream.is_some()
            && self.broken.is_none()
            && self.retry.is_empty()
            && shared.pending.load(Ordering::Acquire) == 0
    }

    /// Accounts for `n` bytes written from the front of `wire` (and what followed).
    fn wrote(&mut self, shared: &Shared, n: usize) {
        self.last_write = Instant::now();
        if let Some((_, left)) = &mut self.partial {
            *left = left.saturating_sub(n);
            if *left == 0 {
                self.partial = None;
                shared.pending.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// Writes a plain message from the caller's thread if the socket takes it without
    /// blocking, when the link is idle and has been quiet (see [`QUIET`]): this saves
    /// waking the writer thread. Gives the message back if nothing was written (it is
    /// then queued as usual); what the socket did not take, the writer thread finishes.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn try_write_now(&mut self, shared: &Shared, item: Outgoing) -> Option<Outgoing> {
        if !self.idle(shared)
            || !self.wire.is_empty()
            || self.partial.is_some()
            || item.ack.is_some()
            || self.last_write.elapsed() < QUIET
        {
            return Some(item);
        }
        let Some(stream) = self.stream.as_ref() else {
            return Some(item);
        };
        let mode_before = self.send_mode;
        match &item.payload {
            Payload::V1 { mode, parts } => {
                if *mode != self.send_mode {
                    v1::encode_control(v1::Control::SetMode(*mode), &mut self.wire);
                    self.send_mode = *mode;
                }
                for p in parts {
                    self.wire.put_bytes(p.clone());
                }
            }
            Payload::V2 { header, body } => {
                self.wire.put_slice(header);
                self.wire.put_bytes(body.clone());
            }
            Payload::Deferred { .. } => return Some(item),
        }
        let parts = self.wire.take_parts();
        let total: usize = parts.iter().map(Bytes::len).sum();
        let slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        let sent = socket2::SockRef::from(stream)
            .send_vectored_with_flags(&slices, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL);
        match sent {
            Ok(n) if n >= total => {
                self.wrote(shared, n);
                None
            }
            Ok(n) if n > 0 => {
                put_back(&mut self.wire, &parts, n);
                shared.pending.fetch_add(1, Ordering::AcqRel);
                self.partial = Some((item, total - n));
                self.last_write = Instant::now();
                let _ = shared.ctl_tx.try_send(Control::Wake);
                None
            }
            Ok(_) => {
                self.send_mode = mode_before;
                Some(item)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                self.send_mode = mode_before;
                Some(item)
            }
            Err(e) => {
                // As a failed write of the writer thread: the message goes out again on the
                // next link, or fails with the link.
                shared.pending.fetch_add(1, Ordering::AcqRel);
                self.retry.push_back(item);
                self.broken = Some((self.epoch, format!("write failed: {e}")));
                let _ = shared.ctl_tx.try_send(Control::Wake);
                None
            }
        }
    }

    /// Writes an acknowledged v1 message from the caller's thread. On a write error the
    /// message becomes the writer thread's, as if it had been queued: it goes out again
    /// on the next link, or fails with the link.
    fn write_now(&mut self, shared: &Shared, item: Outgoing) {
        if let Payload::V1 { mode, parts } = &item.payload {
            if *mode != self.send_mode {
                v1::encode_control(v1::Control::SetMode(*mode), &mut self.wire);
                self.send_mode = *mode;
            }
            for p in parts {
                self.wire.put_bytes(p.clone());
            }
        }
        if let Some(ack) = &item.ack {
            // Registered before the bytes go out, so the ACKEOT cannot come first.
            lock(&shared.acks).waiting.push_back(ack.clone());
        }
        let parts = self.wire.take_parts();
        let (written, result) = write_parts(self.stream.as_ref(), &parts);
        self.wrote(shared, written);
        if let Err(e) = result {
            if item.ack.is_some() {
                lock(&shared.acks).waiting.pop_back();
            }
            shared.pending.fetch_add(1, Ordering::AcqRel);
            self.retry.push_back(item);
            self.broken = Some((self.epoch, format!("write failed: {e}")));
            let _ = shared.ctl_tx.try_send(Control::Wake);
        }
    }

    /// Writes the control replies owed on the link of `epoch` without blocking. Returns
    /// false when the writer thread has something left to do.
    ///
    /// Only the reader of that link may call this: non-blocking mode belongs to the
    /// socket, which that thread alone reads.
    fn write_replies_now(&mut self, shared: &Shared, epoch: u64) -> bool {
        let Some(stream) = self.stream.as_ref() else {
            return false;
        };
        if self.epoch != epoch || self.broken.is_some() {
            return false;
        }
        let (modcg, eot, more) = {
            let mut r = lock(&shared.replies);
            let m = r.ack_mode_change.min(REPLY_BATCH);
            let e = r.ack_eot.min(REPLY_BATCH);
            r.ack_mode_change -= m;
            r.ack_eot -= e;
            (m, e, r.ack_mode_change + r.ack_eot > 0)
        };
        encode_replies(modcg, eot, &mut self.wire);
        let parts = self.wire.take_parts();
        // Nobody else uses the socket meanwhile: its reader is this thread, and whoever
        // writes holds the link.
        if stream.set_nonblocking(true).is_err() {
            put_back(&mut self.wire, &parts, 0);
            return false;
        }
        let (written, result) = write_parts(Some(stream), &parts);
        let restored = stream.set_nonblocking(false);
        self.wrote(shared, written);
        match (result, restored) {
            (Ok(()), Ok(())) => !more,
            (Err(e), Ok(())) if e.kind() == io::ErrorKind::WouldBlock => {
                // The rest goes out first, from the writer thread.
                put_back(&mut self.wire, &parts, written);
                false
            }
            (Err(e), _) | (_, Err(e)) => {
                self.broken = Some((self.epoch, format!("write failed: {e}")));
                false
            }
        }
    }
}

fn encode_replies(modcg: u64, eot: u64, wire: &mut WireBuf) {
    for _ in 0..modcg {
        v1::encode_control(v1::Control::AckModeChange, wire);
    }
    for _ in 0..eot {
        v1::encode_control(v1::Control::AckEot, wire);
    }
}

/// Puts what follows the first `written` bytes of `parts` back into `wire`.
fn put_back(wire: &mut WireBuf, parts: &[Bytes], mut written: usize) {
    for p in parts {
        if written >= p.len() {
            written -= p.len();
            continue;
        }
        wire.put_bytes(p.slice(written..));
        written = 0;
    }
}

/// Writes all `parts`; returns how many bytes the socket took and the outcome.
fn write_parts(stream: Option<&TcpStream>, parts: &[Bytes]) -> (usize, io::Result<()>) {
    let Some(mut stream) = stream else {
        return (0, Err(io::Error::from(io::ErrorKind::NotConnected)));
    };
    let mut slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
    let mut slices = &mut slices[..];
    let mut written = 0;
    while !slices.is_empty() {
        match stream.write_vectored(slices) {
            Ok(0) => return (written, Err(io::Error::from(io::ErrorKind::WriteZero))),
            Ok(n) => {
                written += n;
                IoSlice::advance_slices(&mut slices, n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (written, Err(e)),
        }
    }
    (written, Ok(()))
}

/// Locks `m` if nobody holds it (a poisoned lock counts as held).
fn try_lock<T>(m: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    m.try_lock().ok()
}

/// For servers: lets `recv_any` wait on all connections at once.
#[derive(Clone)]
pub(crate) struct Notifier {
    pub tx: Sender<u64>,
}

/// State shared by the handle and the threads.
pub(crate) struct Shared {
    pub id: u64,
    cfg: Config,
    addrs: Vec<SocketAddr>,
    is_client: bool,
    /// The protocol (read on every send, so an atomic: see `Shared::protocol`).
    protocol: AtomicU8,
    peer: Mutex<Option<SocketAddr>>,
    connected: AtomicBool,
    /// False once the link is down for good.
    alive: AtomicBool,
    closed: AtomicBool,
    restart: AtomicBool,
    in_rx: Receiver<Incoming>,
    out_tx: Sender<Outgoing>,
    shutdown_rx: Receiver<()>,
    acks: Mutex<AckQueue>,
    replies: Mutex<Replies>,
    link: Mutex<Link>,
    /// Protocol errors seen, for rate-limiting their log lines.
    protocol_errors: AtomicU64,
    /// Bytes of received messages waiting in the incoming queue (see `incoming_bytes`).
    queued_bytes: AtomicUsize,
    /// Set while the reader waits for room in the byte budget.
    reader_waiting: AtomicBool,
    /// Wakes the reader when the program took a message (a coalesced signal).
    room_tx: Sender<()>,
    room_rx: Receiver<()>,
    /// Messages accepted (queued, or in `Link::retry`) and not yet written or failed.
    pending: AtomicUsize,
    ctl_tx: Sender<Control>,
    stream: Mutex<Option<TcpStream>>,
    events: EventSink,
    threads: Mutex<Vec<JoinHandle<()>>>,
    notifier: Option<Notifier>,
    /// Set while this connection's id waits in the notifier channel.
    pub notified: AtomicBool,
}

impl Shared {
    fn event(&self, event: Event) {
        match &event {
            Event::Connected { .. } | Event::Reconnected { .. } | Event::Disconnected { .. } => {
                log::info!("serpy {}: {event}", self.label())
            }
            Event::GaveUp { .. } | Event::Lost { .. } => {
                log::warn!("serpy {}: {event}", self.label())
            }
            Event::ProtocolError(_) => {
                // A hostile peer can cause one every few bytes: log the first ones, then
                // one line at each power of two, so the log cannot be flooded.
                let n = self.protocol_errors.fetch_add(1, Ordering::Relaxed) + 1;
                if n <= PROTOCOL_ERRORS_LOGGED || n.is_power_of_two() {
                    log::warn!(
                        "serpy {}: {event} ({n} protocol errors on this connection so far)",
                        self.label()
                    )
                }
            }
            Event::ProtocolDetected(_) => log::debug!("serpy {}: {event}", self.label()),
        }
        self.events.emit(event);
    }

    fn label(&self) -> String {
        match *lock(&self.peer) {
            Some(p) => format!("#{} {p}", self.id),
            None => format!("#{}", self.id),
        }
    }

    fn protocol(&self) -> Protocol {
        match self.protocol.load(Ordering::Acquire) {
            0 => Protocol::V1,
            1 => Protocol::V2,
            _ => Protocol::Auto,
        }
    }

    fn set_protocol(&self, protocol: Protocol) {
        self.protocol
            .store(protocol_code(protocol), Ordering::Release);
    }

    /// Tells the server's `recv_any` that this connection has data (at most one notice
    /// per connection waits in the server's channel).
    fn notify(&self) {
        if self.notifier.is_some() && !self.notified.swap(true, Ordering::AcqRel) {
            self.push_notify();
        }
    }

    /// Puts this connection's id in the server's channel.
    pub(crate) fn push_notify(&self) {
        if let Some(n) = &self.notifier {
            let _ = n.tx.send(self.id);
        }
    }

    pub(crate) fn try_recv(&self) -> Option<Incoming> {
        self.in_rx.try_recv().ok().map(|item| self.took(item))
    }

    /// Accounts for a message the program has taken from the incoming queue, and wakes
    /// the reader if it waits for room in the byte budget.
    pub(crate) fn took(&self, item: Incoming) -> Incoming {
        self.queued_bytes.fetch_sub(item.0.len(), Ordering::SeqCst);
        if self.reader_waiting.load(Ordering::SeqCst) {
            let _ = self.room_tx.try_send(());
        }
        item
    }

    pub(crate) fn has_data(&self) -> bool {
        !self.in_rx.is_empty()
    }

    pub(crate) fn is_dead(&self) -> bool {
        !self.alive.load(Ordering::Acquire) || self.closed.load(Ordering::Acquire)
    }
}

fn protocol_code(protocol: Protocol) -> u8 {
    match protocol {
        Protocol::V1 => 0,
        Protocol::V2 => 1,
        Protocol::Auto => 2,
    }
}

/// The owner of a connection's threads; closing happens when the last handle goes.
struct Inner {
    shared: Arc<Shared>,
    shutdown_tx: Mutex<Option<Sender<()>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Disconnects when the writer thread ends.
    writer_done: Receiver<()>,
}

impl Inner {
    fn close(&self) {
        let writer = {
            // Holding this lock makes a second, concurrent close() wait for the first.
            let mut w = lock(&self.writer);
            self.shared.closed.store(true, Ordering::Release);
            drop(lock(&self.shutdown_tx).take());
            w.take().map(|h| (h, w))
        };
        if let Some((handle, _guard)) = writer {
            // The writer writes what is queued, bounded by the close timeout; if it is stuck
            // in a write to a peer that does not read, shutting the socket down frees it.
            let grace = self.shared.cfg.close_timeout + Duration::from_millis(500);
            if let Err(RecvTimeoutError::Timeout) = self.writer_done.recv_timeout(grace) {
                if let Some(s) = lock(&self.shared.stream).as_ref() {
                    let _ = s.shutdown(Shutdown::Both);
                }
            }
            let _ = handle.join();
            if let Some(s) = lock(&self.shared.stream).take() {
                let _ = s.shutdown(Shutdown::Both);
            }
            let readers: Vec<_> = lock(&self.shared.threads).drain(..).collect();
            for r in readers {
                let _ = r.join();
            }
            self.shared.connected.store(false, Ordering::Release);
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.close();
    }
}

/// One TCP link to a serpy peer: send and receive messages with blocking calls while a
/// reader and a writer thread do the socket work.
///
/// A client connects with [`Connection::connect`] or [`Connection::builder`]; a
/// [`Server`](crate::Server) hands out the connections it accepts. Handles are cheap to
/// clone and can be used from many threads at once. The connection closes when
/// [`close`](Connection::close) is called or the last handle is dropped; both return only
/// after every thread of the connection has ended.
///
/// ```
/// use serpy::{Connection, Mode, Server};
/// use std::time::Duration;
///
/// # fn main() -> serpy::Result<()> {
/// let server = Server::bind("127.0.0.1:0")?;
/// let client = Connection::connect(server.local_addr())?;
/// let peer = server.get_connection_timeout(Duration::from_secs(5))?;
///
/// client.send_data("hello", Mode::Plain)?;          // returns once queued
/// assert_eq!(peer.get_data()?.as_str(), Some("hello"));
///
/// client.send_data("sure?", Mode::PlainAck)?;       // returns once the peer has it
/// assert_eq!(peer.get_data_timeout(Duration::from_secs(5))?.as_str(), Some("sure?"));
/// client.close();
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.inner.shared.id)
            .field("peer", &*lock(&self.inner.shared.peer))
            .field("protocol", &self.inner.shared.protocol())
            .field("connected", &self.is_connected())
            .finish()
    }
}

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
    /// `max` (defaults 100 ms and 5 s). The first attempt is made at once.
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
    ///
    /// ```
    /// let b = serpy::Connection::builder().give_up_after(Some(10));
    /// ```
    pub fn give_up_after(mut self, attempts: Option<u32>) -> Self {
        self.cfg.give_up_after = attempts;
        self
    }

    connection_options!("serpy::Connection::builder()");

    /// Connects to `addr` (anything [`ToSocketAddrs`]: `("127.0.0.1", 8000)`,
    /// `("localhost", 8000)`, `"[::1]:8000"`, a [`SocketAddr`]) and starts the threads.
    /// Every address a name resolves to is tried in turn.
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
        let stream = connect_any(&addrs, self.cfg.connect_timeout)?;
        Connection::start(stream, self.cfg, addrs, true, None)
    }
}

const UNSPECIFIED: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

fn connect_any(addrs: &[SocketAddr], timeout: Duration) -> Result<TcpStream> {
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

fn configure(stream: &TcpStream, cfg: &Config) -> io::Result<()> {
    stream.set_nodelay(cfg.nodelay)?;
    if let Some(idle) = cfg.keepalive {
        let ka = socket2::TcpKeepalive::new()
            .with_time(idle)
            .with_interval(idle);
        socket2::SockRef::from(stream).set_tcp_keepalive(&ka)?;
    }
    Ok(())
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

    /// Starts the threads of a connection over `stream` (client or accepted socket).
    pub(crate) fn start(
        stream: TcpStream,
        cfg: Config,
        addrs: Vec<SocketAddr>,
        is_client: bool,
        notifier: Option<Notifier>,
    ) -> Result<Connection> {
        configure(&stream, &cfg).map_err(|e| Error::io("configuring the socket", e))?;
        let peer = stream.peer_addr().ok();
        let (in_tx, in_rx) = channel::bounded(cfg.incoming_capacity);
        let (out_tx, out_rx) = channel::bounded(cfg.outgoing_capacity);
        let (shutdown_tx, shutdown_rx) = channel::bounded::<()>(0);
        let (ctl_tx, ctl_rx) = channel::bounded(CONTROL_CAPACITY);
        let (done_tx, writer_done) = channel::bounded::<()>(0);
        let (room_tx, room_rx) = channel::bounded::<()>(1);
        let shared = Arc::new(Shared {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            protocol: AtomicU8::new(protocol_code(cfg.protocol)),
            cfg,
            addrs,
            is_client,
            peer: Mutex::new(peer),
            connected: AtomicBool::new(true),
            alive: AtomicBool::new(true),
            closed: AtomicBool::new(false),
            restart: AtomicBool::new(false),
            in_rx,
            out_tx,
            shutdown_rx,
            acks: Mutex::new(AckQueue {
                epoch: 0,
                waiting: VecDeque::new(),
            }),
            replies: Mutex::new(Replies::default()),
            link: Mutex::new(Link {
                stream: None,
                epoch: 0,
                send_mode: Mode::Plain,
                retry: VecDeque::new(),
                wire: WireBuf::new(),
                broken: None,
                partial: None,
                last_write: Instant::now(),
            }),
            pending: AtomicUsize::new(0),
            protocol_errors: AtomicU64::new(0),
            queued_bytes: AtomicUsize::new(0),
            reader_waiting: AtomicBool::new(false),
            room_tx,
            room_rx,
            ctl_tx,
            stream: Mutex::new(None),
            events: EventSink::new(),
            threads: Mutex::new(Vec::new()),
            notifier,
            notified: AtomicBool::new(false),
        });
        shared
            .restart
            .store(is_client && shared.cfg.auto_restart, Ordering::Release);
        if let Some(p) = peer {
            shared.event(Event::Connected { peer: p });
        }
        let writer = Writer {
            shared: shared.clone(),
            out_rx,
            ctl_rx,
            in_tx,
            _done: done_tx,
        };
        writer.attach(&mut lock(&shared.link), stream)?;
        let name = format!("serpy-wr-{}", shared.id);
        let handle = thread::Builder::new()
            .name(name)
            .spawn(move || writer.run())
            .map_err(|e| Error::io("starting the writer thread", e))?;
        Ok(Connection {
            inner: Arc::new(Inner {
                shared,
                shutdown_tx: Mutex::new(Some(shutdown_tx)),
                writer: Mutex::new(Some(handle)),
                writer_done,
            }),
        })
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// Sends `data` in `mode` (v1; see [`Mode`]).
    ///
    /// - Modes 0, 2, 4 (and every send over v2) return once the message is queued; they
    ///   block while the outgoing queue is full. (When the link has been idle, the message
    ///   is handed to the socket at once instead, if that needs no waiting, which saves
    ///   waking the writer thread.)
    /// - Modes 1, 3, 5 return once the peer has acknowledged this very message. Several
    ///   threads may send acknowledged messages at once: each gets its own answer.
    ///
    /// v1 switches to base85 by itself where the bytes could not travel as they are
    /// (bytes, or text holding `0x1F`, `0x04` or a leading `0x01`). v2 frames are typed and
    /// have no acknowledgement: modes 1, 3, 5 are refused there.
    ///
    /// Errors: [`Error::Closed`], [`Error::Disconnected`], [`Error::AckUncertain`] (the
    /// link broke while waiting for the acknowledgement), [`Error::NotSent`],
    /// [`Error::EmptyMessage`], [`Error::MessageTooLarge`], [`Error::Encoding`],
    /// [`Error::Unsupported`].
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// # let server = serpy::Server::bind("127.0.0.1:0")?;
    /// # let conn = serpy::Connection::connect(server.local_addr())?;
    /// use serpy::Mode;
    /// conn.send_data(42, Mode::Plain)?;
    /// conn.send_data(vec![0u8, 0x1f, 0xff], Mode::Base85)?;
    /// # Ok(()) }
    /// ```
    pub fn send_data(&self, data: impl Into<Message>, mode: Mode) -> Result<()> {
        self.send_impl(data.into(), mode, None)
    }

    /// [`send_data`](Connection::send_data) that gives up after `timeout` in total (waiting
    /// for room in the queue and for the acknowledgement) with [`Error::Timeout`].
    /// After a timeout an acknowledged message may still be delivered later.
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// # let server = serpy::Server::bind("127.0.0.1:0")?;
    /// # let conn = serpy::Connection::connect(server.local_addr())?;
    /// conn.send_data_timeout("hi", serpy::Mode::Plain, std::time::Duration::from_secs(1))?;
    /// # Ok(()) }
    /// ```
    pub fn send_data_timeout(
        &self,
        data: impl Into<Message>,
        mode: Mode,
        timeout: Duration,
    ) -> Result<()> {
        self.send_impl(data.into(), mode, Instant::now().checked_add(timeout))
            .map_err(|e| e.timed_out_after(timeout))
    }

    /// Sends `data` in mode 0 (v1) or as its typed frame (v2): `send_data(data, Mode::Plain)`.
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// # let server = serpy::Server::bind("127.0.0.1:0")?;
    /// # let conn = serpy::Connection::connect(server.local_addr())?;
    /// conn.send("hello")?;
    /// # Ok(()) }
    /// ```
    pub fn send(&self, data: impl Into<Message>) -> Result<()> {
        self.send_impl(data.into(), Mode::Plain, None)
    }

    fn send_impl(&self, message: Message, mode: Mode, deadline: Option<Instant>) -> Result<()> {
        let shared = &self.inner.shared;
        if shared.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if !shared.alive.load(Ordering::Acquire) {
            return Err(Error::Disconnected);
        }
        let protocol = shared.protocol();
        if protocol == Protocol::V2 && mode.is_acked() {
            return Err(Error::Unsupported {
                what: format!(
                    "mode {mode} asks for an acknowledgement, which the v2 protocol does not have; \
                     send with Mode::Plain over v2, or use v1 for acknowledged sends"
                ),
            });
        }
        let payload = prepare(protocol, &shared.cfg, &message, mode)?;
        self.enqueue(payload, deadline)
    }

    /// Queues `prepared` as `send` would (see `Server::broadcast`).
    pub(crate) fn send_prepared(&self, prepared: &Prepared) -> Result<()> {
        let shared = &self.inner.shared;
        if shared.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if !shared.alive.load(Ordering::Acquire) {
            return Err(Error::Disconnected);
        }
        self.enqueue(prepared.0.clone(), None)
    }

    /// The configuration of this connection.
    pub(crate) fn config(&self) -> &Config {
        &self.inner.shared.cfg
    }

    /// Hands `payload` to the writer (or writes it at once, see below), and waits for its
    /// acknowledgement if it asks for one.
    fn enqueue(&self, payload: Payload, deadline: Option<Instant>) -> Result<()> {
        let shared = &self.inner.shared;
        let acked = match &payload {
            Payload::V1 { mode, .. } => mode.is_acked(),
            Payload::V2 { .. } => false,
            Payload::Deferred { mode, .. } => mode.is_acked(),
        };
        let (ack, answer) = if acked {
            let (tx, rx) = channel::bounded(1);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let item = Outgoing { payload, ack };
        if acked && deadline.is_none() && shared.pending.load(Ordering::Acquire) == 0 {
            // The caller waits for the peer anyway: when nothing accepted earlier is still
            // waiting and the writer thread is idle, write from here, which saves waking
            // the writer thread on the way out.
            if let Some(mut link) = try_lock(&shared.link) {
                if link.idle(shared) && matches!(item.payload, Payload::V1 { .. }) {
                    link.write_now(shared, item);
                    drop(link);
                    return Self::await_answer(shared, answer, deadline);
                }
            }
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let item = if !acked && shared.pending.load(Ordering::Acquire) == 0 {
            match try_lock(&shared.link) {
                Some(mut link) => match link.try_write_now(shared, item) {
                    None => return Ok(()),
                    Some(item) => item,
                },
                None => item,
            }
        } else {
            item
        };
        shared.pending.fetch_add(1, Ordering::AcqRel);
        // Without a wait (the usual case), a plain send: cheaper than a select.
        let sent = match (shared.out_tx.try_send(item), deadline) {
            (Ok(()), _) => Ok(()),
            (Err(TrySendError::Disconnected(_)), _) => Err(Error::Disconnected),
            (Err(TrySendError::Full(item)), None) => select! {
                send(shared.out_tx, item) -> r => r.map_err(|_| Error::Disconnected),
                recv(shared.shutdown_rx) -> _ => Err(Error::Closed),
            },
            (Err(TrySendError::Full(item)), Some(d)) => select! {
                send(shared.out_tx, item) -> r => r.map_err(|_| Error::Disconnected),
                recv(shared.shutdown_rx) -> _ => Err(Error::Closed),
                default(d.saturating_duration_since(Instant::now())) => Err(Error::Timeout {
                    operation: "send_data (waiting for room in the outgoing queue)",
                    after: Duration::ZERO,
                }),
            },
        };
        if let Err(e) = sent {
            shared.pending.fetch_sub(1, Ordering::AcqRel);
            return Err(e);
        }
        Self::await_answer(shared, answer, deadline)
    }

    /// Waits for the acknowledgement of an acknowledged send (`answer`), if any.
    fn await_answer(
        shared: &Shared,
        answer: Option<Receiver<Result<()>>>,
        deadline: Option<Instant>,
    ) -> Result<()> {
        let Some(answer) = answer else {
            return Ok(());
        };
        let got = match deadline {
            None => answer.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(d) => answer.recv_deadline(d),
        };
        match got {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => Err(Error::Timeout {
                operation: "send_data (waiting for the acknowledgement)",
                after: Duration::ZERO,
            }),
            Err(RecvTimeoutError::Disconnected) => Err(if shared.closed.load(Ordering::Acquire) {
                Error::Closed
            } else {
                Error::NotSent
            }),
        }
    }

    /// The next message, waiting as long as it takes. Returns [`Error::Disconnected`]
    /// once the link is down for good and everything it delivered has been read, and
    /// [`Error::Closed`] after [`close`](Connection::close).
    ///
    /// v1 delivers bytes (read text with [`Message::as_str`]); v2 delivers typed values.
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// # let server = serpy::Server::bind("127.0.0.1:0")?;
    /// # let conn = serpy::Connection::connect(server.local_addr())?;
    /// # let peer = server.get_connection()?;
    /// peer.send("ping")?;
    /// let msg = conn.get_data()?;
    /// assert_eq!(msg.as_str(), Some("ping"));
    /// # Ok(()) }
    /// ```
    pub fn get_data(&self) -> Result<Message> {
        self.get_data_with_mode(None).map(|(m, _)| m)
    }

    /// The next message, waiting at most `timeout` ([`Error::Timeout`] otherwise).
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// # let server = serpy::Server::bind("127.0.0.1:0")?;
    /// # let conn = serpy::Connection::connect(server.local_addr())?;
    /// use std::time::Duration;
    /// let r = conn.get_data_timeout(Duration::from_millis(10));
    /// assert!(matches!(r, Err(serpy::Error::Timeout { .. })));
    /// # Ok(()) }
    /// ```
    pub fn get_data_timeout(&self, timeout: Duration) -> Result<Message> {
        self.get_data_with_mode(Some(timeout)).map(|(m, _)| m)
    }

    /// The next message if one is waiting, `Ok(None)` if not.
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// # let server = serpy::Server::bind("127.0.0.1:0")?;
    /// # let conn = serpy::Connection::connect(server.local_addr())?;
    /// assert!(conn.try_get_data()?.is_none());
    /// # Ok(()) }
    /// ```
    pub fn try_get_data(&self) -> Result<Option<Message>> {
        let shared = &self.inner.shared;
        match shared.in_rx.try_recv().map(|item| shared.took(item)) {
            Ok((m, _)) => Ok(Some(m)),
            Err(channel::TryRecvError::Empty) => Ok(None),
            Err(channel::TryRecvError::Disconnected) => Err(self.gone()),
        }
    }

    /// The next message with the v1 mode it came in (`None` over v2), waiting at most
    /// `timeout` (forever if `None`). Useful to forward a message in its own mode.
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// # let server = serpy::Server::bind("127.0.0.1:0")?;
    /// # let conn = serpy::Connection::connect(server.local_addr())?;
    /// # let peer = server.get_connection()?;
    /// use serpy::Mode;
    /// conn.send_data("x", Mode::Base85)?;
    /// let (msg, mode) = peer.get_data_with_mode(Some(std::time::Duration::from_secs(5)))?;
    /// assert_eq!(mode, Some(Mode::Base85));
    /// # Ok(()) }
    /// ```
    pub fn get_data_with_mode(&self, timeout: Option<Duration>) -> Result<(Message, Option<Mode>)> {
        let shared = &self.inner.shared;
        match timeout {
            None => shared
                .in_rx
                .recv()
                .map(|item| shared.took(item))
                .map_err(|_| self.gone()),
            Some(t) => shared
                .in_rx
                .recv_timeout(t)
                .map(|item| shared.took(item))
                .map_err(|e| match e {
                    RecvTimeoutError::Timeout => Error::Timeout {
                        operation: "get_data",
                        after: t,
                    },
                    RecvTimeoutError::Disconnected => self.gone(),
                }),
        }
    }

    fn gone(&self) -> Error {
        if self.inner.shared.closed.load(Ordering::Acquire) {
            Error::Closed
        } else {
            Error::Disconnected
        }
    }

    /// True when a received message is waiting to be read.
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// # let server = serpy::Server::bind("127.0.0.1:0")?;
    /// # let conn = serpy::Connection::connect(server.local_addr())?;
    /// assert!(!conn.is_data_available());
    /// # Ok(()) }
    /// ```
    pub fn is_data_available(&self) -> bool {
        self.inner.shared.has_data()
    }

    /// A blocking iterator over received messages; it ends when the connection is down
    /// for good (or closed) and everything has been read.
    ///
    /// ```no_run
    /// # fn main() -> serpy::Result<()> {
    /// # let conn = serpy::Connection::connect(("127.0.0.1", 8000))?;
    /// for msg in conn.iter() {
    ///     println!("{msg}");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = Message> + '_ {
        let shared = &self.inner.shared;
        shared.in_rx.iter().map(|item| shared.took(item).0)
    }

    /// An iterator over the messages already received; it does not wait.
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// # let server = serpy::Server::bind("127.0.0.1:0")?;
    /// # let conn = serpy::Connection::connect(server.local_addr())?;
    /// assert_eq!(conn.try_iter().count(), 0);
    /// # Ok(()) }
    /// ```
    pub fn try_iter(&self) -> impl Iterator<Item = Message> + '_ {
        let shared = &self.inner.shared;
        shared.in_rx.try_iter().map(|item| shared.took(item).0)
    }

    /// True while the TCP link is up.
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// # let server = serpy::Server::bind("127.0.0.1:0")?;
    /// let conn = serpy::Connection::connect(server.local_addr())?;
    /// assert!(conn.is_connected());
    /// conn.close();
    /// assert!(!conn.is_connected());
    /// # Ok(()) }
    /// ```
    pub fn is_connected(&self) -> bool {
        self.inner.shared.connected.load(Ordering::Acquire)
    }

    /// Reconnect by itself when the link breaks (clients only; a server cannot call its
    /// peer back). Has no effect once the link is down for good.
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// # let server = serpy::Server::bind("127.0.0.1:0")?;
    /// let conn = serpy::Connection::connect(server.local_addr())?;
    /// conn.enable_restart();
    /// conn.disable_restart();
    /// # Ok(()) }
    /// ```
    pub fn enable_restart(&self) {
        let s = &self.inner.shared;
        if s.is_client {
            s.restart.store(true, Ordering::Release);
        } else {
            log::warn!(
                "serpy {}: enable_restart() has no effect on a connection accepted by a server",
                s.label()
            );
        }
    }

    /// Stop reconnecting when the link breaks.
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// # let server = serpy::Server::bind("127.0.0.1:0")?;
    /// let conn = serpy::Connection::builder().auto_restart(true).connect(server.local_addr())?;
    /// conn.disable_restart();
    /// # Ok(()) }
    /// ```
    pub fn disable_restart(&self) {
        self.inner.shared.restart.store(false, Ordering::Release);
    }

    /// Closes the connection: what is queued is written (for at most the close timeout),
    /// the socket is closed, and every thread of the connection has ended when this
    /// returns. Calling it again does nothing. Messages already received can still be
    /// read; after them `get_data` returns [`Error::Closed`].
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// # let server = serpy::Server::bind("127.0.0.1:0")?;
    /// let conn = serpy::Connection::connect(server.local_addr())?;
    /// conn.close();
    /// conn.close();
    /// assert!(matches!(conn.send("x"), Err(serpy::Error::Closed)));
    /// # Ok(()) }
    /// ```
    pub fn close(&self) {
        self.inner.close();
    }

    /// The peer's address (the current one, for a client that reconnected).
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// # let server = serpy::Server::bind("127.0.0.1:0")?;
    /// let conn = serpy::Connection::connect(server.local_addr())?;
    /// assert_eq!(conn.peer_addr(), Some(server.local_addr()));
    /// # Ok(()) }
    /// ```
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        *lock(&self.inner.shared.peer)
    }

    /// This side's address of the link.
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// # let server = serpy::Server::bind("127.0.0.1:0")?;
    /// let conn = serpy::Connection::connect(server.local_addr())?;
    /// assert!(conn.local_addr().is_some());
    /// # Ok(()) }
    /// ```
    pub fn local_addr(&self) -> Option<SocketAddr> {
        lock(&self.inner.shared.stream)
            .as_ref()
            .and_then(|s| s.local_addr().ok())
    }

    /// The protocol this connection speaks (`Auto` until an auto server has seen the
    /// peer's first bytes).
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// # let server = serpy::Server::bind("127.0.0.1:0")?;
    /// let conn = serpy::Connection::connect(server.local_addr())?;
    /// assert_eq!(conn.protocol(), serpy::Protocol::V1);
    /// # Ok(()) }
    /// ```
    pub fn protocol(&self) -> Protocol {
        self.inner.shared.protocol()
    }

    /// The link's events (connected, disconnected, reconnected, protocol errors...).
    /// Every clone of the returned receiver takes from the same queue.
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
    pub fn events(&self) -> Events {
        self.inner.shared.events.receiver()
    }

    /// A number that identifies this connection within the process.
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// # let server = serpy::Server::bind("127.0.0.1:0")?;
    /// let a = serpy::Connection::connect(server.local_addr())?;
    /// let b = serpy::Connection::connect(server.local_addr())?;
    /// assert_ne!(a.id(), b.id());
    /// # Ok(()) }
    /// ```
    pub fn id(&self) -> u64 {
        self.inner.shared.id
    }
}

impl PartialEq for Connection {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for Connection {}

/// The writer thread: writes what is queued (with [`Link`]), and reconnects.
struct Writer {
    shared: Arc<Shared>,
    out_rx: Receiver<Outgoing>,
    ctl_rx: Receiver<Control>,
    /// Handed to each reader; dropped when the writer ends, so `get_data` sees the end.
    in_tx: Sender<Incoming>,
    /// Dropped with the writer: tells `close()` that the writer has ended.
    _done: Sender<()>,
}

enum Next {
    Go,
    Stop,
}

impl Writer {
    /// Starts using `stream` as the link (first connect, accept, or reconnect).
    fn attach(&self, link: &mut Link, stream: TcpStream) -> Result<()> {
        let read_half = stream
            .try_clone()
            .map_err(|e| Error::io("cloning the socket for the reader", e))?;
        let kill = stream
            .try_clone()
            .map_err(|e| Error::io("cloning the socket", e))?;
        link.epoch += 1;
        lock(&self.shared.acks).epoch = link.epoch;
        *lock(&self.shared.replies) = Replies {
            epoch: link.epoch,
            ..Replies::default()
        };
        *lock(&self.shared.stream) = Some(kill);
        *lock(&self.shared.peer) = stream.peer_addr().ok();
        link.send_mode = Mode::Plain;
        link.wire.clear();
        link.broken = None;
        link.stream = Some(stream);
        self.shared.connected.store(true, Ordering::Release);
        let previous = lock(&self.shared.threads).pop();
        let reader = Reader {
            shared: self.shared.clone(),
            stream: read_half,
            epoch: link.epoch,
            in_tx: self.in_tx.clone(),
            ctl_tx: self.shared.ctl_tx.clone(),
            previous,
        };
        let handle = thread::Builder::new()
            .name(format!("serpy-rd-{}", self.shared.id))
            .spawn(move || reader.run())
            .map_err(|e| Error::io("starting the reader thread", e))?;
        lock(&self.shared.threads).push(handle);
        Ok(())
    }

    fn run(self) {
        let shared = self.shared.clone();
        loop {
            // The link is locked while the writer works, not while it waits.
            let ready = {
                let mut link = lock(&shared.link);
                match self.serve(&mut link) {
                    Some(ready) => ready,
                    None => {
                        drop(link);
                        return self.finish();
                    }
                }
            };
            let next = if ready {
                select! {
                    recv(self.ctl_rx) -> c => match c {
                        Ok(c) => self.control(&mut lock(&shared.link), c),
                        Err(_) => Next::Stop,
                    },
                    recv(self.out_rx) -> item => match item {
                        Ok(item) => self.write_batch(&mut lock(&shared.link), Some(item)),
                        Err(_) => Next::Stop,
                    },
                    recv(self.shared.shutdown_rx) -> _ => Next::Stop,
                }
            } else {
                select! {
                    recv(self.ctl_rx) -> c => match c {
                        Ok(c) => self.control(&mut lock(&shared.link), c),
                        Err(_) => Next::Stop,
                    },
                    recv(self.shared.shutdown_rx) -> _ => Next::Stop,
                }
            };
            if let Next::Stop = next {
                return self.finish();
            }
        }
    }

    /// Does what needs no waiting: a write that failed in another thread, control, replies,
    /// messages to write again. Returns whether queued messages can be written now, or
    /// `None` when the writer stops.
    fn serve(&self, link: &mut Link) -> Option<bool> {
        loop {
            if let Some((epoch, reason)) = link.broken.take() {
                if epoch == link.epoch && link.stream.is_some() {
                    if let Next::Stop = self.link_down(link, reason) {
                        return None;
                    }
                }
            }
            // Control first: replies must never wait behind data.
            while let Ok(c) = self.ctl_rx.try_recv() {
                if let Next::Stop = self.control(link, c) {
                    return None;
                }
            }
            if let Next::Stop = self.write_replies(link) {
                return None;
            }
            let ready = self.shared.protocol() != Protocol::Auto && link.stream.is_some();
            if !ready || link.retry.is_empty() {
                return Some(ready);
            }
            if let Next::Stop = self.write_batch(link, None) {
                return None;
            }
        }
    }

    /// Writes the control replies the reader asked for, after what a reader left over.
    fn write_replies(&self, link: &mut Link) -> Next {
        loop {
            let (modcg, eot) = {
                let mut r = lock(&self.shared.replies);
                if r.epoch != link.epoch || link.stream.is_none() {
                    return Next::Go;
                }
                let m = r.ack_mode_change.min(REPLY_BATCH);
                let e = r.ack_eot.min(REPLY_BATCH);
                r.ack_mode_change -= m;
                r.ack_eot -= e;
                (m, e)
            };
            if modcg == 0 && eot == 0 && link.wire.is_empty() {
                return Next::Go;
            }
            encode_replies(modcg, eot, &mut link.wire);
            let parts = link.wire.take_parts();
            let (written, result) = write_parts(link.stream.as_ref(), &parts);
            link.wrote(&self.shared, written);
            if let Err(e) = result {
                return self.link_down(link, format!("write failed: {e}"));
            }
        }
    }

    fn control(&self, link: &mut Link, c: Control) -> Next {
        match c {
            Control::Wake => self.write_replies(link),
            Control::LinkDown { epoch, reason } => {
                if epoch == link.epoch && link.stream.is_some() {
                    self.link_down(link, reason)
                } else {
                    Next::Go
                }
            }
            Control::Detected(p) => {
                // The reader already set the protocol; this wakes the writer to send
                // what waited for it.
                self.shared.event(Event::ProtocolDetected(p));
                Next::Go
            }
        }
    }

    /// Encodes and writes `first` and whatever else is queued, in few large writes.
    fn write_batch(&self, link: &mut Link, first: Option<Outgoing>) -> Next {
        if link.stream.is_none() || self.shared.protocol() == Protocol::Auto {
            // Not writable now (a failed write from another thread took it down): later.
            link.retry.extend(first);
            return Next::Go;
        }
        let mut batch: Vec<Outgoing> = link.retry.drain(..).collect();
        batch.extend(first);
        let mut bytes = 0;
        while batch.len() < BATCH_MESSAGES && bytes < BATCH_BYTES {
            match self.out_rx.try_recv() {
                Ok(item) => {
                    bytes += item.payload_len();
                    batch.push(item)
                }
                Err(_) => break,
            }
        }
        // Encode: the SETMODE blocks depend on the link's current send mode.
        let mut ends = Vec::with_capacity(batch.len());
        let mut kept = Vec::with_capacity(batch.len());
        let protocol = self.shared.protocol();
        let mut pushed_acks = 0;
        let mut failed = 0;
        for mut item in batch {
            if let Payload::Deferred { message, mode } = &item.payload {
                match prepare(protocol, &self.shared.cfg, message, *mode) {
                    Ok(p) => item.payload = p,
                    Err(e) => {
                        log::warn!("serpy {}: a message queued before the protocol was known cannot be sent: {e}", self.shared.label());
                        if let Some(ack) = item.ack.take() {
                            let _ = ack.send(Err(e));
                        }
                        failed += 1;
                        continue;
                    }
                }
            }
            match &item.payload {
                Payload::V1 { mode, parts } => {
                    if *mode != link.send_mode {
                        v1::encode_control(v1::Control::SetMode(*mode), &mut link.wire);
                        link.send_mode = *mode;
                    }
                    for p in parts {
                        link.wire.put_bytes(p.clone());
                    }
                }
                Payload::V2 { header, body } => {
                    link.wire.put_slice(header);
                    link.wire.put_bytes(body.clone());
                }
                Payload::Deferred { .. } => {}
            }
            if let Some(ack) = &item.ack {
                // Registered before the bytes go out, so the ACKEOT cannot come first.
                lock(&self.shared.acks).waiting.push_back(ack.clone());
                pushed_acks += 1;
            }
            ends.push(link.wire.len());
            kept.push(item);
        }
        let parts = link.wire.take_parts();
        let (written, result) = write_parts(link.stream.as_ref(), &parts);
        link.wrote(&self.shared, written);
        match result {
            Ok(()) => {
                self.shared
                    .pending
                    .fetch_sub(kept.len() + failed, Ordering::AcqRel);
                Next::Go
            }
            Err(e) => {
                // Messages not fully handed to the socket go out again on the next link;
                // their acknowledgement slots are taken back (they are the newest ones).
                let done = ends.iter().take_while(|&&end| end <= written).count();
                self.shared
                    .pending
                    .fetch_sub(done + failed, Ordering::AcqRel);
                let mut acks = lock(&self.shared.acks);
                let not_written_acks = kept[done..].iter().filter(|i| i.ack.is_some()).count();
                for _ in 0..not_written_acks.min(pushed_acks) {
                    acks.waiting.pop_back();
                }
                drop(acks);
                link.retry.extend(kept.drain(done..));
                self.link_down(link, format!("write failed: {e}"))
            }
        }
    }

    /// The link broke: fail what waits for an acknowledgement, then reconnect or stop.
    fn link_down(&self, link: &mut Link, reason: String) -> Next {
        if let Some(s) = link.stream.take() {
            let _ = s.shutdown(Shutdown::Both);
        }
        link.wire.clear();
        link.broken = None;
        if let Some((item, _)) = link.partial.take() {
            // Not fully written: it goes out again (it is older than anything in `retry`).
            link.retry.push_front(item);
        }
        self.shared.connected.store(false, Ordering::Release);
        {
            let mut acks = lock(&self.shared.acks);
            acks.epoch = 0;
            for slot in acks.waiting.drain(..) {
                let _ = slot.send(Err(Error::AckUncertain));
            }
        }
        let reconnecting = self.may_restart();
        self.shared.event(Event::Disconnected {
            reason,
            reconnecting,
        });
        if !reconnecting {
            return Next::Stop;
        }
        let mut delay = self.shared.cfg.backoff_first;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            match connect_any(&self.shared.addrs, self.shared.cfg.connect_timeout) {
                Ok(_) if self.shared.closed.load(Ordering::Acquire) => return Next::Stop,
                Ok(stream) => {
                    let attached = configure(&stream, &self.shared.cfg)
                        .map_err(|e| Error::io("configuring the socket", e))
                        .and_then(|()| self.attach(link, stream));
                    match attached {
                        Ok(()) => {
                            let peer = self.shared.addrs[0];
                            let peer = (*lock(&self.shared.peer)).unwrap_or(peer);
                            self.shared.event(Event::Reconnected { peer, attempts });
                            return Next::Go;
                        }
                        Err(e) => {
                            log::debug!("serpy {}: reconnect failed: {e}", self.shared.label())
                        }
                    }
                }
                Err(e) => log::debug!(
                    "serpy {}: reconnect attempt {attempts} failed: {e}",
                    self.shared.label()
                ),
            }
            if self.shared.cfg.give_up_after.is_some_and(|n| attempts >= n) {
                self.shared.event(Event::GaveUp { attempts });
                return Next::Stop;
            }
            // Wait, but wake at once for close().
            select! {
                recv(self.shared.shutdown_rx) -> _ => return Next::Stop,
                default(delay) => {}
            }
            if !self.may_restart() {
                return Next::Stop;
            }
            delay = (delay * 2).min(self.shared.cfg.backoff_max);
        }
    }

    fn may_restart(&self) -> bool {
        self.shared.is_client
            && self.shared.restart.load(Ordering::Acquire)
            && !self.shared.closed.load(Ordering::Acquire)
    }

    /// The writer ends: on close, write what is queued (bounded by the close timeout);
    /// otherwise the link is down for good and what is queued is reported lost.
    fn finish(self) {
        let shared = self.shared.clone();
        let mut link = lock(&shared.link);
        let closing = self.shared.closed.load(Ordering::Acquire);
        if closing && link.stream.is_some() && self.shared.protocol() != Protocol::Auto {
            if let Some(s) = &link.stream {
                let _ = s.set_write_timeout(Some(
                    self.shared.cfg.close_timeout.max(Duration::from_millis(1)),
                ));
            }
            let mut rest: Vec<Outgoing> = link.retry.drain(..).collect();
            rest.extend(self.out_rx.try_iter());
            for item in &mut rest {
                if let Some(ack) = item.ack.take() {
                    let _ = ack.send(Err(Error::Closed));
                }
            }
            if !rest.is_empty() || !link.wire.is_empty() {
                link.retry.extend(rest);
                let _ = self.write_batch(&mut link, None);
                link.retry.clear();
            }
            if let Some(s) = &link.stream {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
        self.shared.alive.store(false, Ordering::Release);
        self.shared.connected.store(false, Ordering::Release);
        {
            let mut acks = lock(&self.shared.acks);
            for slot in acks.waiting.drain(..) {
                let _ = slot.send(Err(if closing {
                    Error::Closed
                } else {
                    Error::AckUncertain
                }));
            }
        }
        let mut lost = 0;
        let partial = link.partial.take().map(|(item, _)| item);
        let rest: Vec<Outgoing> = partial
            .into_iter()
            .chain(link.retry.drain(..))
            .chain(self.out_rx.try_iter())
            .collect();
        for mut item in rest {
            match item.ack.take() {
                Some(ack) => {
                    let _ = ack.send(Err(if closing {
                        Error::Closed
                    } else {
                        Error::NotSent
                    }));
                }
                None => lost += 1,
            }
        }
        if lost > 0 {
            self.shared.event(Event::Lost { messages: lost });
        }
        if let Some(s) = link.stream.take() {
            let _ = s.shutdown(Shutdown::Both);
        }
        // Dropping out_rx, in_tx (readers keep theirs until they end) ends the queues.
    }
}

impl Outgoing {
    fn payload_len(&self) -> usize {
        match &self.payload {
            Payload::V1 { parts, .. } => parts.iter().map(Bytes::len).sum(),
            Payload::V2 { body, .. } => v2::HEADER_LEN + body.len(),
            Payload::Deferred { message, .. } => message.len(),
        }
    }
}

/// The reader thread of one link.
struct Reader {
    shared: Arc<Shared>,
    stream: TcpStream,
    epoch: u64,
    in_tx: Sender<Incoming>,
    ctl_tx: Sender<Control>,
    /// The reader of the previous link: joined first, so messages stay in order.
    previous: Option<JoinHandle<()>>,
}

impl Reader {
    fn run(mut self) {
        if let Some(p) = self.previous.take() {
            let _ = p.join();
        }
        let reason = match self.read_loop() {
            Ok(()) => "the peer closed the connection".to_string(),
            Err(ReadEnd::Io(e)) => format!("read failed: {e}"),
            Err(ReadEnd::Stopped) => return,
        };
        let _ = self.ctl(Control::LinkDown {
            epoch: self.epoch,
            reason,
        });
    }

    /// Reads until the peer closes (`Ok`), the socket fails, or the connection stops.
    fn read_loop(&mut self) -> std::result::Result<(), ReadEnd> {
        let mut frames = Vec::new();
        let mut buf = vec![0u8; READ_CHUNK];
        let (protocol, first) = match self.shared.protocol() {
            Protocol::Auto => match self.detect(&mut buf)? {
                Some(found) => found,
                None => return Ok(()),
            },
            p => (p, Vec::new()),
        };
        let mut decoder = Decoder::new(protocol, self.shared.cfg.max_message_size);
        decoder.decode(&first, &mut frames);
        self.deliver(&mut frames)?;
        loop {
            let n = match &mut decoder {
                // v2 reads straight into the decoder's buffer: large payloads are handed
                // to the program without a copy.
                Decoder::V2(d) => d.read_from(&mut self.stream, &mut frames),
                Decoder::V1(d) => self
                    .stream
                    .read(&mut buf)
                    .inspect(|&n| d.decode(&buf[..n], &mut frames)),
            };
            match n {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ReadEnd::Io(e)),
            }
            self.deliver(&mut frames)?;
        }
    }

    /// Auto servers: reads until the first bytes tell the protocol; returns it with the
    /// bytes read so far, or `None` if the peer closed first.
    fn detect(
        &mut self,
        buf: &mut [u8],
    ) -> std::result::Result<Option<(Protocol, Vec<u8>)>, ReadEnd> {
        let mut seen = Vec::new();
        let started = Instant::now();
        let timeout = self.shared.cfg.detect_timeout;
        let protocol = loop {
            match protocol::detect(&seen) {
                Detection::V1 => break Protocol::V1,
                Detection::V2 => break Protocol::V2,
                Detection::NeedMore => {}
            }
            // Only a proper prefix of the magic makes us wait with a bound; before the
            // first byte, the peer may be silent for as long as it likes.
            let wait = if seen.is_empty() {
                None
            } else {
                match timeout.checked_sub(started.elapsed()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => {
                        self.protocol_error(crate::ProtocolError::DetectionTimeout);
                        break Protocol::V1;
                    }
                }
            };
            let _ = self.stream.set_read_timeout(wait);
            match self.stream.read(buf) {
                Ok(0) => return Ok(None),
                Ok(n) => seen.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(ReadEnd::Io(e)),
            }
        };
        let _ = self.stream.set_read_timeout(None);
        self.shared.set_protocol(protocol);
        self.ctl(Control::Detected(protocol))?;
        Ok(Some((protocol, seen)))
    }

    fn protocol_error(&self, e: crate::ProtocolError) {
        self.shared.event(Event::ProtocolError(e));
    }

    fn deliver(&mut self, frames: &mut Vec<Frame>) -> std::result::Result<(), ReadEnd> {
        for frame in frames.drain(..) {
            match frame {
                Frame::Data { message, mode } => {
                    let acked = mode.is_some_and(Mode::is_acked);
                    self.wait_for_room(message.len())?;
                    self.shared
                        .queued_bytes
                        .fetch_add(message.len(), Ordering::SeqCst);
                    // A plain send while there is room (the usual case), cheaper than a select.
                    match self.in_tx.try_send((message, mode)) {
                        Ok(()) => {}
                        Err(TrySendError::Disconnected(_)) => return Err(ReadEnd::Stopped),
                        Err(TrySendError::Full(item)) => select! {
                            send(self.in_tx, item) -> r => if r.is_err() { return Err(ReadEnd::Stopped) },
                            recv(self.shared.shutdown_rx) -> _ => return Err(ReadEnd::Stopped),
                        },
                    }
                    self.shared.notify();
                    if acked {
                        self.reply(|r| r.ack_eot += 1);
                    }
                }
                Frame::SetMode(_) => self.reply(|r| r.ack_mode_change += 1),
                Frame::AckModeChange => {}
                Frame::AckEot => {
                    let mut acks = lock(&self.shared.acks);
                    if acks.epoch == self.epoch {
                        match acks.waiting.pop_front() {
                            Some(slot) => {
                                let _ = slot.send(Ok(()));
                            }
                            None => log::warn!(
                                "serpy {}: the peer acknowledged a message that was not sent in an acknowledged mode; ignored",
                                self.shared.label()
                            ),
                        }
                    }
                }
                Frame::Error(e) => self.protocol_error(e),
            }
        }
        Ok(())
    }

    /// Waits until a message of `size` bytes fits in the incoming byte budget (always when
    /// nothing waits to be read), woken by the program taking messages or by close().
    fn wait_for_room(&self, size: usize) -> std::result::Result<(), ReadEnd> {
        let shared = &self.shared;
        let fits = || {
            let queued = shared.queued_bytes.load(Ordering::SeqCst);
            queued == 0 || queued.saturating_add(size) <= shared.cfg.incoming_bytes
        };
        while !fits() {
            shared.reader_waiting.store(true, Ordering::SeqCst);
            // Checked again after announcing the wait, so a wake-up cannot be missed.
            if !fits() {
                select! {
                    recv(shared.room_rx) -> _ => {}
                    recv(shared.shutdown_rx) -> _ => {
                        shared.reader_waiting.store(false, Ordering::SeqCst);
                        return Err(ReadEnd::Stopped);
                    }
                }
            }
            shared.reader_waiting.store(false, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Owes the peer a control reply; the writer sends it as soon as it can.
    fn reply(&self, owe: impl FnOnce(&mut Replies)) {
        {
            let mut r = lock(&self.shared.replies);
            if r.epoch != self.epoch {
                return;
            }
            owe(&mut r);
        }
        // While the writer thread is idle, write the reply from here without blocking,
        // which saves waking it; otherwise (and for what could not go at once) wake it.
        if let Some(mut link) = try_lock(&self.shared.link) {
            if link.write_replies_now(&self.shared, self.epoch) {
                return;
            }
        }
        // One wake-up waiting is enough: the writer reads the counters.
        let _ = self.ctl_tx.try_send(Control::Wake);
    }

    fn ctl(&self, c: Control) -> std::result::Result<(), ReadEnd> {
        select! {
            send(self.ctl_tx, c) -> r => r.map_err(|_| ReadEnd::Stopped),
            recv(self.shared.shutdown_rx) -> _ => Err(ReadEnd::Stopped),
        }
    }
}

enum ReadEnd {
    Io(io::Error),
    Stopped,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A connection over a socket whose other end is a plain stream the test controls.
    fn raw_peer_with(cfg: Config) -> (Connection, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let raw = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        raw.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let conn = Connection::start(accepted, cfg, Vec::new(), false, None).unwrap();
        (conn, raw)
    }

    fn raw_peer() -> (Connection, TcpStream) {
        raw_peer_with(Config::default())
    }

    /// Fills the connection's side of the socket, holding the link as a writer would;
    /// returns how many bytes of `b'x'` it wrote.
    fn fill(conn: &Connection) -> usize {
        let link = lock(&conn.shared().link);
        let s = link.stream.as_ref().unwrap();
        // A write timeout, not non-blocking mode: the reader is reading this socket.
        s.set_write_timeout(Some(Duration::from_millis(5))).unwrap();
        let chunk = [b'x'; 4096];
        let mut filler = 0;
        // Until the socket stays full (loopback keeps moving bytes to the peer for a while).
        let mut full_since = Instant::now();
        while full_since.elapsed() < Duration::from_millis(50) {
            match (&*s).write(&chunk) {
                Ok(n) => {
                    filler += n;
                    full_since = Instant::now();
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("{e}"),
            }
        }
        s.set_write_timeout(None).unwrap();
        filler
    }

    #[test]
    fn a_plain_send_the_socket_takes_in_part_is_finished_by_the_writer() {
        let cfg = Config {
            protocol: Protocol::V2,
            ..Config::default()
        };
        let (conn, mut raw) = raw_peer_with(cfg);
        let filler = fill(&conn);
        // Make room, less than the message: the send writes part of it at once.
        let mut got = vec![0u8; filler / 2];
        raw.read_exact(&mut got).unwrap();
        // The link counts as quiet once QUIET has passed since its last write: set that
        // time in the past instead of waiting.
        let past = Instant::now()
            .checked_sub(QUIET * 4)
            .expect("a clock past boot");
        lock(&conn.shared().link).last_write = past;
        let big = Bytes::from((0..filler as u32 * 2).map(|i| i as u8).collect::<Vec<u8>>());
        conn.send(big.clone()).unwrap();
        conn.send("after").unwrap();
        let mut rest = vec![0u8; filler - got.len()];
        raw.read_exact(&mut rest).unwrap();
        assert!(rest.iter().all(|&b| b == b'x'));
        let mut wire = WireBuf::new();
        v2::encode(&Message::Bytes(big), &mut wire).unwrap();
        v2::encode(&Message::from("after"), &mut wire).unwrap();
        let want = wire.to_vec();
        let mut frames = vec![0u8; want.len()];
        raw.read_exact(&mut frames).unwrap();
        assert!(frames == want, "the frames arrive whole and in order");
        // Once the writer thread has ended, nothing may still count as pending.
        conn.close();
        assert_eq!(
            conn.shared().pending.load(Ordering::Acquire),
            0,
            "a message stayed pending"
        );
    }

    #[test]
    fn a_message_prepared_once_shares_its_payload() {
        let blob = Bytes::from(vec![1u8; 1 << 20]);
        let message = Message::Bytes(blob.clone());
        let cfg = Config::default();
        for protocol in [Protocol::V1, Protocol::V2] {
            let prepared = Prepared::new(protocol, &cfg, &message).unwrap();
            let payload_ptr = |p: &Prepared| match &p.0 {
                Payload::V2 { body, .. } => body.as_ptr(),
                // v1 sends bytes as base85: encoded once, shared by every copy.
                Payload::V1 { parts, .. } => parts.iter().max_by_key(|b| b.len()).unwrap().as_ptr(),
                Payload::Deferred { .. } => panic!("deferred"),
            };
            let first = payload_ptr(&prepared);
            if protocol == Protocol::V2 {
                assert_eq!(first, blob.as_ptr());
            }
            for copy in (0..10).map(|_| prepared.clone()) {
                assert_eq!(payload_ptr(&copy), first);
            }
        }
    }

    #[test]
    fn a_reply_that_would_block_is_finished_by_the_writer() {
        let (conn, mut raw) = raw_peer();
        let filler = fill(&conn);
        // The peer switches modes: the connection owes an ACKMODCG, which cannot go out
        // without blocking, so the writer thread must finish it.
        raw.write_all(b"\x01SETMODE2\x1fVPaz\x1f").unwrap();
        assert_eq!(
            conn.get_data_timeout(Duration::from_secs(20))
                .unwrap()
                .as_str(),
            Some("abc")
        );
        let mut got = vec![0u8; filler + 10];
        raw.read_exact(&mut got).unwrap();
        assert!(got[..filler].iter().all(|&b| b == b'x'));
        assert_eq!(&got[filler..], b"\x01ACKMODCG\x1f");
        // The link is sound afterwards: data and replies keep their framing.
        conn.send_data("after", Mode::Plain).unwrap();
        let mut after = [0u8; 6];
        raw.read_exact(&mut after).unwrap();
        assert_eq!(&after, b"after\x1f");
    }
}
