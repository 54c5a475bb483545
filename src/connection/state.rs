//! What the handle and the threads of one connection share ([`Shared`]), regrouped: the
//! [`Lifecycle`], the incoming queue (`Inbox`, in `inbox.rs`), the server's [`ReadyList`] entry, the waiting
//! acknowledgements ([`AckQueue`]) and the owed replies ([`Replies`]).
//!
//! Threads: all of them read it; who writes which field is said at the field.

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::inbox::Inbox;
use super::link::Link;
use super::outbox::Outbox;
use super::vocab::{AckSlot, Control, Incoming};
use crate::config::Config;
use crate::error::Error;
use crate::event::{EventKind, EventSink, Forward, LogLimit};
use crate::protocol::Protocol;
use crate::stats::Counters;
use crate::sync::lock;

/// Where a connection is in its life. Every thread reads it through [`Lifecycle`];
/// `Down` and `Closed` are final.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// The threads are starting; no link is attached yet.
    Connecting = 0,
    /// A link is attached.
    Up = 1,
    /// The link broke and auto-restart is trying to bring it back.
    Reconnecting = 2,
    /// The link is down for good (broke without auto-restart, or auto-restart gave up).
    Down = 3,
    /// The program closed the connection (`close()`, or the last handle was dropped).
    Closed = 4,
}

/// The one lifecycle state of a connection, in place of separate flags: read by
/// `is_connected`, the send path (which refuses once the connection is gone), the
/// server's pruning, and the end of `Events`.
#[derive(Debug)]
pub(crate) struct Lifecycle(AtomicU8);

impl Lifecycle {
    /// A connection whose threads are starting.
    pub fn new() -> Self {
        Lifecycle(AtomicU8::new(Phase::Connecting as u8))
    }

    /// The current phase.
    pub fn get(&self) -> Phase {
        match self.0.load(Ordering::Acquire) {
            0 => Phase::Connecting,
            1 => Phase::Up,
            2 => Phase::Reconnecting,
            3 => Phase::Down,
            _ => Phase::Closed,
        }
    }

    /// Moves to `to`, unless the connection is already in a final phase (`Closed` stays;
    /// `Down` only moves to `Closed`). Returns whether it moved.
    pub fn set(&self, to: Phase) -> bool {
        let mut now = self.0.load(Ordering::Acquire);
        loop {
            let allowed = match now {
                x if x == Phase::Closed as u8 => false,
                x if x == Phase::Down as u8 => to == Phase::Closed,
                _ => true,
            };
            if !allowed {
                return false;
            }
            match self
                .0
                .compare_exchange(now, to as u8, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(actual) => now = actual,
            }
        }
    }

    /// True while a link is attached.
    pub fn is_up(&self) -> bool {
        self.get() == Phase::Up
    }

    /// True once the program closed the connection.
    pub fn is_closed(&self) -> bool {
        self.get() == Phase::Closed
    }

    /// True once the connection is gone for good: down without coming back, or closed.
    pub fn is_gone(&self) -> bool {
        matches!(self.get(), Phase::Down | Phase::Closed)
    }

    /// The error a new send gets in this phase, if it is refused.
    pub fn refusal(&self) -> Option<Error> {
        match self.get() {
            Phase::Closed => Some(Error::Closed),
            Phase::Down => Some(Error::Disconnected),
            _ => None,
        }
    }

    /// The error of an operation that found a queue or a thread gone: `Closed` if the
    /// program closed the connection, else `Disconnected`.
    pub fn gone_error(&self) -> Error {
        if self.is_closed() {
            Error::Closed
        } else {
            Error::Disconnected
        }
    }
}

/// For servers: lets `recv_any` wait on all connections at once.
#[derive(Clone)]
pub(crate) struct Notifier {
    /// The server's channel of connection ids with data waiting.
    pub tx: Sender<u64>,
    /// The server's event queue, where the connection's events go too.
    pub events: Option<Forward>,
}

/// A connection's entry in its server's list of connections with data waiting: at most
/// one notice per connection waits in the server's channel.
pub(crate) struct ReadyList {
    /// The server's channel (`None` for a client).
    notifier: Option<Notifier>,
    /// Set while this connection's id waits in the channel.
    notified: AtomicBool,
}

impl ReadyList {
    pub fn new(notifier: Option<Notifier>) -> Self {
        ReadyList {
            notifier,
            notified: AtomicBool::new(false),
        }
    }

    /// Puts `id` in the server's channel unless a notice of it already waits there.
    pub fn notify(&self, id: u64) {
        if let Some(n) = &self.notifier {
            if !self.notified.swap(true, Ordering::AcqRel) {
                let _ = n.tx.send(id);
            }
        }
    }

    /// The server took this connection's notice out of its channel.
    pub fn taken(&self) {
        self.notified.store(false, Ordering::Release);
    }
}

/// At most this many control replies are written in one go.
pub(crate) const REPLY_BATCH: u64 = 4096;

/// v1 control replies owed to the peer on the link of `epoch`. Counters, not a queue: the
/// reader never blocks handing them over and a flood of SETMODEs costs no memory.
#[derive(Default)]
pub(crate) struct Replies {
    /// The link they are owed on; replies for an older link are dropped with it.
    pub epoch: u64,
    /// ACKMODCG owed (one per SETMODE received).
    pub ack_mode_change: u64,
    /// ACKEOT owed (one per acknowledged message delivered).
    pub ack_eot: u64,
}

impl Replies {
    /// Takes up to [`REPLY_BATCH`] of each kind: (ACKMODCG, ACKEOT).
    pub fn take_batch(&mut self) -> (u64, u64) {
        let m = self.ack_mode_change.min(REPLY_BATCH);
        let e = self.ack_eot.min(REPLY_BATCH);
        self.ack_mode_change -= m;
        self.ack_eot -= e;
        (m, e)
    }

    /// True when replies are still owed.
    pub fn any(&self) -> bool {
        self.ack_mode_change + self.ack_eot > 0
    }
}

/// Waiting acknowledged sends, in the order they were written, for the link of `epoch`.
pub(crate) struct AckQueue {
    /// The link they were written on (0 while no link is up).
    pub epoch: u64,
    /// One slot per acknowledged message written and not yet acknowledged.
    pub waiting: VecDeque<AckSlot>,
}

/// State shared by the handle and the threads.
pub(crate) struct Shared {
    /// Identifies the connection within the process (see `Connection::id`).
    pub id: u64,
    /// The options; fixed for the connection's life.
    pub cfg: Config,
    /// Where a client reconnects to (empty for an accepted connection).
    pub addrs: Vec<SocketAddr>,
    /// True for a client (only a client may reconnect).
    pub is_client: bool,
    /// The protocol, as a [`protocol_code`]; read on every send, written once by the
    /// reader of an auto server when it detects the peer's protocol.
    pub protocol: AtomicU8,
    /// The peer's address; set at each attach.
    pub peer: Mutex<Option<SocketAddr>>,
    /// Where the connection is in its life.
    pub life: Lifecycle,
    /// Reconnect when the link breaks: set by the builder and by `enable_restart` /
    /// `disable_restart`; a setting, read by the writer when a link breaks.
    pub restart: AtomicBool,
    /// The incoming queue and its byte and count bounds; the writer and the readers
    /// hold its senders (`InboxTx`).
    pub inbox: Arc<Inbox>,
    /// The outgoing queue, with its bounds (see `outbox.rs`).
    pub outbox: Outbox,
    /// Disconnects when `close()` begins: wakes every thread that waits on a channel.
    pub shutdown_rx: Receiver<()>,
    /// Acknowledged sends written and waiting for their ACKEOT. Pushed by whoever writes
    /// the message, while holding the link, before the bytes go out; popped by the
    /// reader, which must not wait for the link lock (the writer may hold it while
    /// blocked in a write), hence a lock of its own, with the epoch inside.
    pub acks: Mutex<AckQueue>,
    /// Control replies the reader owes the peer; for the same reason outside the link.
    pub replies: Mutex<Replies>,
    /// The write side of the link; see `link.rs` for who may hold it.
    pub link: Mutex<Link>,
    /// Messages out of the outgoing queue (taken by the writer, in `Link::retry`, or
    /// `Link::partial`) and not yet written or failed; the queue counts its own. Writes
    /// outside the writer thread need it at zero and the queue empty, so that they never
    /// overtake a message accepted earlier.
    pub pending: AtomicUsize,
    /// To the writer thread (wake-ups, link down, detection).
    pub ctl_tx: Sender<Control>,
    /// A clone of the current link's socket, to shut it down from `close()` (and for
    /// `local_addr`); replaced at each attach.
    pub stream: Mutex<Option<TcpStream>>,
    /// The socket a reconnect attempt is connecting, so that `close()` can shut it down
    /// instead of waiting out the connect timeout; set by the writer while it connects.
    pub connecting: Mutex<Option<socket2::Socket>>,
    /// Where events are logged and queued.
    pub events: EventSink,
    /// The reader thread of the newest link (each reader joins the one before it);
    /// joined by `close()`.
    pub reader: Mutex<Option<JoinHandle<()>>>,
    /// For a server's connection: its entry in the server's ready list.
    pub ready: ReadyList,
    /// ACKEOTs the peer sent for nothing, for rate-limiting their log lines.
    pub stray_acks: LogLimit,
    /// The statistics (`Connection::stats`); the link holds a handle too.
    pub stats: Arc<Counters>,
    /// Drops not yet reported by an `EventKind::Dropped`.
    pub drops: DropReport,
    /// Set by the reader once the peer has sent a whole message or control block (a
    /// server's connection is "unproven" until then).
    pub proven: AtomicBool,
    /// Set when the server closes this connection to make room (see
    /// `Connection::abort`); it then counts as gone for the server's limits.
    pub aborted: AtomicBool,
}

impl Shared {
    /// Logs and queues an event of this connection, now.
    pub fn event(&self, kind: EventKind) {
        match &kind {
            EventKind::Reconnected { .. } => {
                self.stats.rare.reconnects.fetch_add(1, Ordering::Relaxed);
            }
            EventKind::ProtocolError(_) => {
                self.stats
                    .rare
                    .protocol_errors
                    .fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        self.events.emit(|| self.label(), kind);
    }

    /// The connection's name in log lines: `#id peer`.
    pub fn label(&self) -> String {
        match *lock(&self.peer) {
            Some(p) => format!("#{} {p}", self.id),
            None => format!("#{}", self.id),
        }
    }

    /// The protocol (`Auto` until an auto server detected the peer's).
    pub fn protocol(&self) -> Protocol {
        match self.protocol.load(Ordering::Acquire) {
            0 => Protocol::V1,
            1 => Protocol::V2,
            _ => Protocol::Auto,
        }
    }

    /// Sets the protocol (the reader, at detection).
    pub fn set_protocol(&self, protocol: Protocol) {
        self.protocol
            .store(protocol_code(protocol), Ordering::Release);
    }

    /// Tells the server's `recv_any` that this connection has data.
    pub fn notify(&self) {
        self.ready.notify(self.id);
    }

    /// Takes a received message if one waits; with whether more wait after it.
    pub(crate) fn try_recv(&self) -> Option<(Incoming, bool)> {
        self.inbox.try_take().ok()
    }

    /// True when the reader cannot go on until the program reads: the incoming queue is
    /// at its byte budget or its count bound (one the program set).
    pub(crate) fn reader_held_back(&self) -> bool {
        self.inbox.reader_waiting()
    }

    /// True when a received message waits to be read.
    pub(crate) fn has_data(&self) -> bool {
        self.inbox.has_data()
    }

    /// True once the connection is gone for good (down for good, or closed): a server
    /// may forget it once nothing it received is left to read.
    pub(crate) fn is_gone(&self) -> bool {
        self.life.is_gone()
    }
}

/// How a protocol is stored in `Shared::protocol`.
pub(crate) fn protocol_code(protocol: Protocol) -> u8 {
    match protocol {
        Protocol::V1 => 0,
        Protocol::V2 => 1,
        Protocol::Auto => 2,
    }
}

/// How often, at most, `EventKind::Dropped` reports keep-latest drops while they go on.
pub(crate) const DROP_REPORT_EVERY: Duration = Duration::from_secs(1);

/// Keep-latest drops not yet reported, and when the last report went: the first drop is
/// reported at once, later ones at most once per [`DROP_REPORT_EVERY`] by the callers
/// that drop, and the rest by the writer once it has written again (or when it ends).
pub(crate) struct DropReport {
    /// Drops since the last `EventKind::Dropped`.
    pub unreported: AtomicU64,
    /// When the last one went (only touched by callers that drop, and by the writer
    /// when `unreported` is not zero).
    pub last: Mutex<Option<Instant>>,
}

impl DropReport {
    pub fn new() -> Self {
        DropReport {
            unreported: AtomicU64::new(0),
            last: Mutex::new(None),
        }
    }
}
