//! [`Connection`]: one TCP link with a reader and a writer thread behind blocking calls.
//!
//! The files of this module are layered, each using only those below it:
//! `vocab` (plain data) ← `inbox` (the incoming queue), `outbox` (the outgoing queue) ←
//! `link` (the write side of one TCP link) ← `state` (what the threads share) ← `inline`,
//! `reader`, `direct`, `session`, `outgoing`, `writer` ← `mod` (this
//! file: the public handle, starting and closing) ← `builder`. (The incoming queue also
//! keeps the link's read side, `reader::ReadSide`, for the read role: one lock for both,
//! see `direct.rs`.)
//!
//! # 1. Threads
//!
//! | thread | owns | blocks on |
//! |---|---|---|
//! | callers (any thread with a handle) | nothing between calls; a send encodes its message in the caller's thread (`outgoing::prepare`); on Linux, the link's read side while a `get_data` or an acknowledged send reads the socket itself (`direct.rs`) | room in the outgoing queue (or shutdown); the answer of an acknowledged send; the incoming queue's condition variable, only while it is empty (`get_data`); on Linux, a socket read while holding the read side (its timeout the socket's receive timeout; `close()` ends it by shutting the socket down) |
//! | writer `serpy-wr-N`, one per connection for its whole life | the link (`Shared::link`) while it works; the session: it takes broken links down and reconnects (`session`), and makes the first connect of a client built with `connect_in_background` (`session::connect_first`) | `select!` on the control channel, the outgoing queue's wake-up (`Outbox::wake_rx`, only while the link is writable) and shutdown, with a timeout when a probe or a v1 keep-alive is due (`session::keepalive_due`); socket writes; a connect attempt; the backoff wait (shutdown, with a timeout) |
//! | reader `serpy-rd-N`, one per TCP link | the read half of the socket and the decoder (`reader::ReadSide`), shared on Linux once the first bytes are checked and no idle timer runs (`direct.rs`) | the socket read, whose receive timeout is the idle timer (and, for a server's connection, the first-message deadline until the peer has spoken); when shared: a one-byte `MSG_PEEK` without the read side, and the read side's return (`Inbox::reader_take_side`); room in the incoming queue (`Inbox::wait_for_room`: woken once the queue has drained to its low-water mark, or by shutdown); handing `Control` to the writer (or shutdown) |
//!
//! The handle (`Inner`) owns the writer's `JoinHandle`; `Shared::reader` holds the newest
//! reader's, and each reader joins the one before it.
//!
//! # 2. The socket rule
//!
//! Only a thread that holds the `Shared::link` lock writes to the socket, and it writes
//! whole blocks (a v1 block up to its `0x1F`, a whole v2 frame), so writes never
//! interleave. The writer thread takes the lock and may block in a write while it holds
//! it. Callers and the reader only ever `try_lock` it (`inline.rs`): a caller writes an
//! acknowledged v1 send (`inline::write_now`) or, without blocking, a plain send after a
//! quiet spell (`inline::try_write_now`); the reader writes the replies it owes, without
//! blocking (`inline::write_replies_now`). What goes first: bytes left in `Link::wire`
//! (the tail of a reply or a partial send), then owed control replies, then
//! `Link::retry`, then the queue. A v1 SETMODE goes right before the first block of a new
//! mode, on the same link (`Link::put`).
//!
//! # 3. What `pending` counts
//!
//! `Shared::pending` counts the messages a send accepted that have left the outgoing
//! queue and are not yet written whole or failed: those the writer took out and is
//! writing, those in `Link::retry`, and `Link::partial`. The writer adds what it takes
//! out of the queue (a caller adds one when an inline write hands its message over), and
//! takes them off once written; what is still in the queue is counted by the queue
//! itself (`Outbox::len`), so that a send into a busy queue touches nothing but its lock.
//! The fast paths (`inline.rs`) write only while `pending` is zero and the queue empty
//! (`Link::idle`): otherwise a message written from the caller would overtake one
//! accepted earlier and still queued, and the order of messages on a connection is a
//! promise.
//!
//! # 4. Epochs
//!
//! Every TCP link of a connection gets a new epoch (`Link::start`, from `session::attach`).
//! The queue of waiting acknowledgements (`Shared::acks`) and the owed replies
//! (`Shared::replies`) carry the epoch of their link: an ACKEOT read from an old link
//! never answers a send written on a new one, and replies owed to an old link are never
//! written to a new one. They live outside the link lock because the reader must reach
//! them without waiting: the writer may hold the link while it is blocked in a write to a
//! peer that does not read, and what the reader handles (an ACKEOT, a SETMODE to answer)
//! is what lets things move again.
//!
//! # 5. One message out, one message in
//!
//! Out:
//! 1. `Connection::send_data` → `outgoing::prepare_send`: the lifecycle may refuse
//!    (`Lifecycle::refusal`); `outgoing::prepare` encodes (a v1 block without its
//!    SETMODE, a v2 frame, or the message itself for an auto server before detection).
//!    A small plain text or bytes message while the queue is busy skips both steps
//!    (`outgoing::send_small`): its frame is copied straight into the queue's last run
//!    (`Outbox::try_push_small`), under one lock holding; any other case, and a full
//!    queue, goes the general way.
//! 2. `outgoing::enqueue`: an acknowledged send on an idle link → `inline::write_now`; a
//!    plain send on an idle, quiet link → `inline::try_write_now`; otherwise into the
//!    outgoing queue (`outgoing::queue` → `Shared::outbox`, see
//!    `outbox.rs`), within its count bound and its byte budget, both counted under the
//!    queue's lock. A small plain message (payload under `outbox::SMALL`) is copied into
//!    the queue, after the small messages sent just before it, in one buffer (a run); a larger,
//!    acknowledged or deferred one is queued as it is, its payload shared. The first message
//!    in after the writer found nothing to take wakes it (`Outbox::wake_rx`); while it
//!    writes it takes again by itself after each write, and nobody wakes it. A full queue meets the
//!    connection's `FullQueue` policy: `Block` and `Disconnect` wait for room (the
//!    writer's `Outbox::take` wakes one waiting caller, which passes the wake-up on, once
//!    the queue is down to half its bounds; `Outbox::announce_room` before anything
//!    that may block the writer);
//!    `KeepLatest` takes the oldest messages out itself, under the same lock (plain ones
//!    are dropped and reported through `Shared::drops`; acknowledged ones are kept aside
//!    and go before the queue). `Disconnect(t)` is the socket's write timeout
//!    (`Link::write_timeout`): a write the peer takes no byte of for `t` fails and takes
//!    the link down.
//! 3. The writer wakes (`Writer::run`) → `Writer::write_batch`: `Link::retry`, then
//!    `Outbox::take` (runs and messages, up to 1,024 messages or about 256 KiB, counted out
//!    of the bounds at once), `Writer::encode` → `Link::put` (adds SETMODE blocks; a run
//!    is one slice of the write, not copied again); acknowledgement slots go into
//!    `Shared::acks` before the bytes go out; `Link::write_wire`; `pending`
//!    − n. The statistics (`Shared::stats`, `stats.rs`) count bytes in `Link::wrote` and
//!    messages where they are handed to the socket; the reader counts bytes and the time
//!    once per socket read, and messages as it queues them.
//! 4. An acknowledged send waits in `outgoing::await_answer`: `Ok` from
//!    `Reader::acknowledged` when the ACKEOT comes, `AckUncertain` from
//!    `session::link_down`, `Closed` or `NotSent` from `Writer::finish`.
//!
//! In:
//! 1. `Reader::read_loop` reads (v2 straight into the decoder's buffer, v1 in 64 KiB
//!    chunks) and feeds the pure decoder, which gives `Frame`s. The first bytes of a
//!    link pass a `Sniffer` first: the other protocol's start ends the link.
//! 2. `Reader::deliver`: a read that decoded data only, all of which fits, goes into the
//!    incoming queue whole (`Inbox::push_all`: one bounds check, one move); else the
//!    data frames of one read, in a run → `Reader::queue`, which puts as many as fit into the incoming queue (`Inbox::push_some`: one lock holding
//!    for the run, within the byte budget and the count bound, one wake-up of waiting
//!    takers that no earlier push has woken, and the readiness token `Select` waits on armed if the queue was empty)
//!    and, if some are left, waits for room (`Inbox::wait_for_room`) and goes on;
//!    `Shared::notify` tells a server's `recv_any`; each acknowledged message in the
//!    queue, or a SETMODE → `Reader::reply` owes an ACKEOT or ACKMODCG; an ACKEOT →
//!    `Reader::acknowledged`; an error → an event.
//! 3. `Reader::reply` writes the owed replies at once if the link is free
//!    (`inline::write_replies_now`), else wakes the writer (`Control::Wake` →
//!    `Writer::write_replies`).
//! 4. On Linux, a caller of `get_data` that finds the queue empty waits for a message
//!    or for the read role, whichever comes first (`Inbox::take_or_side`); with the
//!    role it reads the socket itself and runs steps 1 to 3 in its own thread
//!    (`direct.rs`), which saves the reader thread's wake-up and the hand-over; an
//!    acknowledged send waiting for its answer does the same if the role is free. A
//!    caller that keeps up keeps the role through a stream of small messages (the
//!    reader thread, asleep, takes it back once the program falls behind by
//!    `inbox::LINGER`, or for a stream of large messages, or of tiny ones over v1,
//!    read in parallel; having
//!    taken it back for such small messages, it gives it to the first caller that
//!    waits for it, `Inbox::reader_yield`); what a
//!    caller's read brings beyond the queue's bounds waits in the read side, delivered
//!    first by whoever reads next.
//! 5. The program takes the message (`get_data` and friends, `recv_any`):
//!    `Inbox::take_now` takes it from the takers' own front of the queue (refilled with
//!    everything the readers pushed, in one holding of the queue's lock, when it runs
//!    empty) without reading the clock (a deadline is made only when the queue is empty
//!    and the caller must wait), gives its bytes back to the budget,
//!    empties the readiness token when the queue becomes empty, and wakes a waiting
//!    reader only once the queue has drained to half of each bound (or is empty): the
//!    reader then fills it again in a few large pushes, instead of the two threads
//!    waking each other once per message.
//! 6. The link ends: a read error, or a message in an acknowledged mode that must be
//!    dropped (`Reader::unackable`), sends `Control::LinkDown` → `session::link_down`.
//!    The end of the peer's data sends `Control::PeerDone` → `Writer::peer_done`: a v1
//!    link stays up for writing, probed by empty blocks (`Writer::probe`) until a write
//!    fails; a v2 link writes what is queued and ends.
//!
//! # 6. Closing
//!
//! `close()` (or the last handle dropped) runs `Inner::close`: it moves the lifecycle to
//! `Closed` (new sends get `Error::Closed`) and drops the shutdown sender, which wakes
//! every `select!` on `Shared::shutdown_rx` (the writer, a reader waiting for room or to
//! hand over a control message, callers waiting for room, the backoff wait). The incoming
//! queue closes when the writer and every reader have ended (the last `InboxTx` goes):
//! that wakes every waiting taker, who gets what is left, then the end. A reconnect
//! stuck in `connect()` has its socket (`Shared::connecting`) shut down, which ends the
//! attempt at once on Linux. The writer ends in `Writer::finish`: it writes what is
//! queued, answers waiting acknowledged sends with `Closed`, reports unsent plain
//! messages as `EventKind::Lost`, and shuts the socket down, which ends the reader's read.
//! `close()` waits for the writer until `close_timeout` has passed (one deadline for the
//! whole close); then it shuts the sockets down under it, which frees a write blocked
//! on a peer that does not read. Then it joins the writer, and the newest reader (which
//! joined the older ones), and emits `EventKind::Closed`, which ends the events. The whole
//! takes about `close_timeout` at most: the time to write what was queued, bounded by it.
//! Every "shut down" here is `crate::sys::wake_blocked`, which on Windows also cancels
//! the calls blocked on the socket (shutting down alone does not wake them there).

use std::cell::RefCell;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{self as channel, Receiver, RecvTimeoutError, Sender};

use crate::config::{Config, FullQueue};
use crate::error::{Error, Result};
use crate::event::{EventKind, EventSink, Events, LogLimit};
use crate::message::Message;
use crate::protocol::{Mode, Protocol};
use crate::stats::{Counters, Stats};
use crate::sync::{lock, Deadline};

mod builder;
#[cfg(any(target_os = "linux", target_os = "android"))]
mod direct;
mod inbox;
mod inline;
mod link;
mod outbox;
mod outgoing;
mod reader;
mod session;
mod state;
mod vocab;
mod writer;

pub use builder::ConnectionBuilder;
pub(crate) use outgoing::Prepared;
pub(crate) use session::check_congestion;
use session::Session;
pub(crate) use state::Notifier;
use state::{AckQueue, Lifecycle, ReadyList, Replies, Shared};
use writer::Writer;

/// Capacity of the control channel from readers to the writer (wake-ups, link down).
const CONTROL_CAPACITY: usize = 64;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A new connection id (also given to sockets a server refuses, for their event).
pub(crate) fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// The owner of a connection's threads; closing happens when the last handle goes.
struct Inner {
    shared: Arc<Shared>,
    /// Dropped by `close()`: wakes everything that waits on `Shared::shutdown_rx`.
    shutdown_tx: Mutex<Option<Sender<()>>>,
    /// The writer thread; taken by the first `close()`, whose lock makes a concurrent
    /// second `close()` wait for the first.
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Disconnects when the writer thread ends.
    writer_done: Receiver<()>,
}

impl Inner {
    /// Closes: see "Closing" in the module doc. Returns within about `close_timeout`.
    fn close(&self) {
        let writer = {
            // Holding this lock makes a second, concurrent close() wait for the first.
            let mut w = lock(&self.writer);
            self.shared.life.set(state::Phase::Closed);
            drop(lock(&self.shutdown_tx).take());
            w.take().map(|h| (h, w))
        };
        let Some((handle, _guard)) = writer else {
            return;
        };
        // A reconnect stuck in connect() ends now, not at its connect timeout.
        if let Some(s) = lock(&self.shared.connecting).as_ref() {
            crate::sys::wake_blocked(&s);
        }
        // The writer writes what is queued until the close deadline; if it is still at
        // it then (a peer that does not read), shutting the socket down frees it.
        let deadline = Deadline::after(self.shared.cfg.close_timeout);
        if let Some(at) = deadline.at {
            if let Err(RecvTimeoutError::Timeout) = self.writer_done.recv_deadline(at) {
                self.shut_down_sockets();
            }
        }
        let _ = handle.join();
        if let Some(s) = lock(&self.shared.stream).take() {
            crate::sys::wake_blocked(&s);
        }
        if let Some(r) = lock(&self.shared.reader).take() {
            let _ = r.join();
        }
        if !self.shared.events.ended() {
            self.shared.event(EventKind::Closed);
            self.shared.events.end_closed();
        }
    }

    /// Shuts down the link's socket and a socket being connected, which frees a thread
    /// blocked on either.
    fn shut_down_sockets(&self) {
        if let Some(s) = lock(&self.shared.stream).as_ref() {
            crate::sys::wake_blocked(&s);
        }
        if let Some(s) = lock(&self.shared.connecting).as_ref() {
            crate::sys::wake_blocked(&s);
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.close();
    }
}

/// The ends of a new connection's channels that are not in [`Shared`]: the writer's
/// and the handle's.
struct Ends {
    in_tx: inbox::InboxTx,
    ctl_rx: Receiver<vocab::Control>,
    shutdown_tx: Sender<()>,
    done_tx: Sender<()>,
    writer_done: Receiver<()>,
}

/// The shared state of a new connection, with no link attached yet.
fn new_shared(
    cfg: Config,
    addrs: Vec<SocketAddr>,
    is_client: bool,
    notifier: Option<Notifier>,
    peer: Option<SocketAddr>,
) -> (Arc<Shared>, Ends) {
    let (inbox, in_tx) = inbox::Inbox::new(cfg.incoming_bytes, cfg.incoming_capacity);
    let (shutdown_tx, shutdown_rx) = channel::bounded::<()>(0);
    let (ctl_tx, ctl_rx) = channel::bounded(CONTROL_CAPACITY);
    let (done_tx, writer_done) = channel::bounded::<()>(0);
    let restart = is_client && cfg.auto_restart;
    let stats = Arc::new(Counters::new());
    let outbox = outbox::Outbox::new(cfg.outgoing_bytes, cfg.outgoing_capacity);
    let write_timeout = match cfg.full_queue {
        FullQueue::Disconnect(t) => Some(t.max(Duration::from_millis(1))),
        _ => None,
    };
    let id = next_id();
    let forward = notifier.as_ref().and_then(|n| n.events.clone());
    let shared = Arc::new(Shared {
        id,
        protocol: AtomicU8::new(state::protocol_code(cfg.protocol)),
        cfg,
        addrs,
        is_client,
        peer: Mutex::new(peer),
        life: Lifecycle::new(),
        restart: AtomicBool::new(restart),
        inbox,
        outbox,
        shutdown_rx,
        acks: Mutex::new(AckQueue {
            epoch: 0,
            waiting: Default::default(),
        }),
        replies: Mutex::new(Replies::default()),
        link: Mutex::new(link::Link::new(stats.clone(), write_timeout)),
        pending: AtomicUsize::new(0),
        ctl_tx,
        stream: Mutex::new(None),
        connecting: Mutex::new(None),
        events: EventSink::new(id, forward),
        reader: Mutex::new(None),
        ready: ReadyList::new(notifier),
        stray_acks: LogLimit::new(),
        stats,
        drops: state::DropReport::new(),
        proven: AtomicBool::new(false),
        aborted: AtomicBool::new(false),
    });
    let ends = Ends {
        in_tx,
        ctl_rx,
        shutdown_tx,
        done_tx,
        writer_done,
    };
    (shared, ends)
}

/// The writer could not be started, but the reader runs already: end it (the socket
/// shut down, the shutdown signal given) and join it, rather than leave it detached.
fn abandon(shared: &Shared, shutdown_tx: Sender<()>) {
    shared.life.set(state::Phase::Closed);
    drop(shutdown_tx);
    if let Some(s) = lock(&shared.stream).take() {
        crate::sys::wake_blocked(&s);
    }
    if let Some(r) = lock(&shared.reader).take() {
        let _ = r.join();
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

impl Connection {
    /// Starts the threads of a connection over `stream` (client or accepted socket).
    pub(crate) fn start(
        stream: TcpStream,
        cfg: Config,
        addrs: Vec<SocketAddr>,
        is_client: bool,
        notifier: Option<Notifier>,
    ) -> Result<Connection> {
        session::configure(&stream, &cfg)?;
        let peer = stream.peer_addr().ok();
        let (shared, ends) = new_shared(cfg, addrs, is_client, notifier, peer);
        if let Some(p) = peer {
            shared.event(EventKind::Connected { peer: p });
        }
        let writer = Writer {
            shared: shared.clone(),
            ctl_rx: ends.ctl_rx,
            in_tx: ends.in_tx,
            session: RefCell::new(Session::new(&shared.cfg)),
            _done: ends.done_tx,
        };
        session::attach(&shared, &mut lock(&shared.link), stream, &writer.in_tx)?;
        let name = format!("serpy-wr-{}", shared.id);
        let handle = match thread::Builder::new()
            .name(name)
            .spawn(move || writer.run())
        {
            Ok(h) => h,
            Err(e) => {
                abandon(&shared, ends.shutdown_tx);
                return Err(Error::io("starting the writer thread", e));
            }
        };
        Ok(Connection {
            inner: Arc::new(Inner {
                shared,
                shutdown_tx: Mutex::new(Some(ends.shutdown_tx)),
                writer: Mutex::new(Some(handle)),
                writer_done: ends.writer_done,
            }),
        })
    }

    /// Starts a client whose first connect is made in the background, by the writer
    /// thread, with the reconnect backoff (`ConnectionBuilder::connect_in_background`).
    pub(crate) fn start_background(cfg: Config, addrs: Vec<SocketAddr>) -> Result<Connection> {
        let (shared, ends) = new_shared(cfg, addrs, true, None, None);
        let writer = Writer {
            shared: shared.clone(),
            ctl_rx: ends.ctl_rx,
            in_tx: ends.in_tx,
            session: RefCell::new(Session::new(&shared.cfg)),
            _done: ends.done_tx,
        };
        let handle = thread::Builder::new()
            .name(format!("serpy-wr-{}", shared.id))
            .spawn(move || {
                let next = session::connect_first(
                    &writer.shared,
                    &mut lock(&writer.shared.link),
                    &writer.in_tx,
                    &mut writer.session.borrow_mut(),
                );
                match next {
                    session::Next::Go => writer.run(),
                    session::Next::Stop => writer.finish(),
                }
            })
            .map_err(|e| Error::io("starting the writer thread", e))?;
        Ok(Connection {
            inner: Arc::new(Inner {
                shared,
                shutdown_tx: Mutex::new(Some(ends.shutdown_tx)),
                writer: Mutex::new(Some(handle)),
                writer_done: ends.writer_done,
            }),
        })
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// Sends `data` in `mode` (v1; see [`Mode`]).
    ///
    /// - Modes 0, 2, 4 (and every send over v2) return once the message is queued; they
    ///   block while the outgoing queue is full, and never wait in a socket write. (On
    ///   Linux, when the link has been idle, the message is handed to the socket at once
    ///   instead, if that needs no waiting, which saves waking the writer thread.)
    /// - Modes 1, 3, 5 return once the peer has acknowledged this very message. Several
    ///   threads may send acknowledged messages at once: each gets its own answer.
    ///
    /// v1 switches to base85 by itself where the bytes could not travel as they are
    /// (bytes, or text holding `0x1F`, `0x04` or a leading `0x01`). v2 frames are typed and
    /// have no acknowledgement: modes 1, 3, 5 are refused there.
    ///
    /// Errors: [`Error::Closed`], [`Error::Disconnected`], [`Error::AckUncertain`] (the
    /// link broke while waiting for the acknowledgement, or the peer had to drop the
    /// message: it then closes the link, see below), [`Error::NotSent`],
    /// [`Error::CutShort`] (the link went down for good while the message was being
    /// written), [`Error::EmptyMessage`], [`Error::MessageTooLarge`],
    /// [`Error::Encoding`], [`Error::Unsupported`].
    ///
    /// An acknowledged send returns `Ok` only for a message the peer's program can take.
    /// v1 acknowledgements carry no id, so a receiver that must drop an acknowledged
    /// message (larger than its `max_message_size`, say) closes the link rather than
    /// leave later acknowledgements matched to the wrong messages; with auto-restart
    /// the link comes back in step.
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
        self.send_impl(data.into(), mode, Deadline::never())
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
        self.send_impl(data.into(), mode, Deadline::after(timeout))
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
        self.send_impl(data.into(), Mode::Plain, Deadline::never())
    }

    fn send_impl(&self, message: Message, mode: Mode, deadline: Deadline) -> Result<()> {
        let shared = &self.inner.shared;
        if outgoing::send_small(shared, &message, mode) {
            return Ok(());
        }
        let payload = outgoing::prepare_send(shared, message, mode)?;
        outgoing::enqueue(shared, payload, deadline)
    }

    /// Queues `prepared` as `send` would, waiting for room in the queue until `deadline`
    /// (see `Server::broadcast_timeout`).
    pub(crate) fn send_prepared(&self, prepared: &Prepared, deadline: Deadline) -> Result<()> {
        let shared = &self.inner.shared;
        if let Some(e) = shared.life.refusal() {
            return Err(e);
        }
        outgoing::enqueue(shared, prepared.0.clone(), deadline)
    }

    /// Queues `prepared` as `send` would, but never blocks: [`Error::QueueFull`] when the
    /// outgoing queue is full, [`Error::Closed`] or [`Error::Disconnected`] when the
    /// connection is gone. For the server, which must not wait on one slow peer. Under
    /// `FullQueue::KeepLatest`, returns how many older messages it dropped.
    pub(crate) fn try_send_prepared(&self, prepared: &Prepared) -> Result<u64> {
        outgoing::try_enqueue(&self.inner.shared, prepared.0.clone())
    }

    /// True once the connection is gone for good (down without coming back, or closed):
    /// a server may forget it once nothing it received is left to read.
    pub(crate) fn is_gone(&self) -> bool {
        self.inner.shared.is_gone()
    }

    /// True once the peer has sent a whole message or control block.
    pub(crate) fn is_proven(&self) -> bool {
        self.inner.shared.proven.load(Ordering::Acquire)
    }

    /// True once [`abort`](Connection::abort) was called.
    pub(crate) fn is_aborted(&self) -> bool {
        self.inner.shared.aborted.load(Ordering::Acquire)
    }

    /// The server takes this unproven connection down, without waiting (the accept
    /// thread calls it): the event says why, the writer takes the link down, and the
    /// socket is shut down, which ends the reader.
    pub(crate) fn abort(&self, reason: String) {
        let shared = &self.inner.shared;
        if shared.aborted.swap(true, Ordering::AcqRel) {
            return;
        }
        shared.event(EventKind::Unproven {
            reason: reason.clone(),
        });
        let epoch = lock(&shared.acks).epoch;
        let _ = shared
            .ctl_tx
            .try_send(vocab::Control::LinkDown { epoch, reason });
        if let Some(s) = lock(&shared.stream).as_ref() {
            crate::sys::wake_blocked(&s);
        }
    }

    /// The configuration of this connection.
    pub(crate) fn config(&self) -> &Config {
        &self.inner.shared.cfg
    }

    /// The next message, waiting as long as it takes. Returns [`Error::Disconnected`]
    /// once the link is down for good and everything it delivered has been read, and
    /// [`Error::Closed`] after [`close`](Connection::close). (A v1 peer that shut down
    /// only its sending side keeps the link up for what this side sends: this waits
    /// until it closes.)
    ///
    /// v1 delivers bytes (read text with [`Message::as_str`]); v2 delivers typed values.
    ///
    /// On Linux, when nothing waits and no other thread is reading the link, this call
    /// reads the socket in its own thread instead of waiting for the reader thread to
    /// wake it (a request and its answer then cost one thread wake-up on each side, as
    /// with a plain socket). Without an idle timeout only; and for about a millisecond
    /// after such a call, what arrives waits in the socket for the next `get_data`
    /// rather than in the incoming queue, so other ways of taking messages
    /// ([`try_get_data`](Connection::try_get_data), [`Select`](crate::Select),
    /// [`Server::recv_any`](crate::Server::recv_any)) may see
    /// it up to that much later. When large messages come faster than one at a time
    /// (more than 16 KiB in one call, of messages of 16 KiB or more over v1, of
    /// 128 KiB or more over v2, or of 16 KiB or more while the program works on each
    /// about as long as reading it takes), or tiny ones over v1, the call leaves the reading to the reader thread
    /// at once, which then reads in parallel with the program.
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
        match self.inner.shared.inbox.take_now() {
            Some((m, _)) => Ok(m),
            None => self.get_data_waiting(None).map(|(m, _)| m),
        }
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
        match self.inner.shared.inbox.take_now() {
            Some((m, _)) => Ok(m),
            None => self.get_data_waiting(Some(timeout)).map(|(m, _)| m),
        }
    }

    /// The next message if one is waiting, without waiting: `Ok(None)` when none is
    /// waiting yet (the link is up, or down and coming back); once the link is down for
    /// good and everything it delivered has been read, [`Error::Disconnected`], and
    /// after [`close`](Connection::close) [`Error::Closed`], as
    /// [`get_data`](Connection::get_data) would return. (crossbeam-channel's
    /// `TryRecvError::Empty` is `Ok(None)` here, its `Disconnected` the error; so
    /// `while let Some(m) = conn.try_get_data()? {}` drains what is waiting and passes
    /// the end of the connection on.)
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// # let server = serpy::Server::bind("127.0.0.1:0")?;
    /// # let conn = serpy::Connection::connect(server.local_addr())?;
    /// assert!(conn.try_get_data()?.is_none()); // nothing waiting
    /// conn.close();
    /// assert!(matches!(conn.try_get_data(), Err(serpy::Error::Closed))); // gone
    /// # Ok(()) }
    /// ```
    pub fn try_get_data(&self) -> Result<Option<Message>> {
        let shared = &self.inner.shared;
        match shared.inbox.try_take() {
            Ok(((m, _), _)) => Ok(Some(m)),
            Err(inbox::Empty::Now) => Ok(None),
            Err(inbox::Empty::Gone) => Err(self.gone()),
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
        match self.inner.shared.inbox.take_now() {
            Some(item) => Ok(item),
            None => self.get_data_waiting(timeout),
        }
    }

    /// `get_data_with_mode` once the first look found nothing.
    #[cold]
    #[inline(never)]
    fn get_data_waiting(&self, timeout: Option<Duration>) -> Result<(Message, Option<Mode>)> {
        take_waiting(&self.inner.shared, timeout).map_err(|e| match (e, timeout) {
            (inbox::Empty::Now, Some(after)) => Error::Timeout {
                operation: "get_data",
                after,
            },
            _ => self.gone(),
        })
    }

    fn gone(&self) -> Error {
        self.inner.shared.life.gone_error()
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
    pub fn iter(&self) -> Messages<'_> {
        self.into_iter()
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
        let inbox = &self.inner.shared.inbox;
        std::iter::from_fn(move || inbox.try_take().ok().map(|((m, _), _)| m))
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
        self.inner.shared.life.is_up()
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

    /// Closes the connection: what is queued is written (for at most the close timeout,
    /// which bounds the whole call), the socket is closed, and every thread of the
    /// connection has ended when this returns. A reconnect attempt under way is cut
    /// short (on Linux; elsewhere it may run to its connect timeout). The connection's
    /// events end with [`EventKind::Closed`](crate::EventKind::Closed). Calling it again does nothing. Messages already received can still be
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

    /// This side's address of the link; `None` while no link is up (before a background
    /// connect succeeds, and once a link has ended).
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
    /// Every clone of the returned receiver takes from the same queue. They end when the
    /// connection is gone for good, with a last event that says why (see [`Events`]):
    /// a loop over `events().iter()` ends.
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// # let server = serpy::Server::bind("127.0.0.1:0")?;
    /// let conn = serpy::Connection::connect(server.local_addr())?;
    /// while let Some(event) = conn.events().try_recv()? {
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

    /// The connection's statistics, as of now: messages and bytes in and out, queue
    /// depths, drops, reconnects, protocol errors, the last receipt, the round trip of
    /// acknowledged sends (see [`Stats`]). Cheap: a few atomic loads.
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// # let server = serpy::Server::bind("127.0.0.1:0")?;
    /// let conn = serpy::Connection::connect(server.local_addr())?;
    /// conn.send("hello")?;
    /// let stats = conn.stats();
    /// assert_eq!(stats.dropped, 0);
    /// println!("{stats}");
    /// # Ok(()) }
    /// ```
    pub fn stats(&self) -> Stats {
        let shared = &self.inner.shared;
        let mut s = shared.stats.snapshot();
        s.queued_in = shared.inbox.len();
        s.queued_in_bytes = shared.inbox.bytes();
        s.queued_out = shared.outbox.len();
        s.queued_out_bytes = shared.outbox.queued();
        s
    }
}

impl PartialEq for Connection {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for Connection {}

/// Hashes the handle's identity, as `==` compares it: clones of one connection hash
/// alike, two connections (even to the same peer) apart. The identity never changes,
/// so a connection is a sound key of a `HashMap` or `HashSet` (clippy's
/// `mutable_key_type` lint sees the state behind the handle, not that the hash ignores
/// it: allow the lint where a connection is a key).
///
/// ```
/// # fn main() -> serpy::Result<()> {
/// # let server = serpy::Server::bind("127.0.0.1:0")?;
/// use std::collections::HashSet;
/// let a = serpy::Connection::connect(server.local_addr())?;
/// let b = serpy::Connection::connect(server.local_addr())?;
/// let set: HashSet<_> = [a.clone(), a.clone(), b].into_iter().collect();
/// assert_eq!(set.len(), 2);
/// assert!(set.contains(&a));
/// # Ok(()) }
/// ```
impl std::hash::Hash for Connection {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // The address `eq` compares with `Arc::ptr_eq`.
        std::ptr::hash(Arc::as_ptr(&self.inner), state);
    }
}

/// `for msg in &conn` iterates over the received messages as [`Connection::iter`]
/// does: blocking, until the connection is gone for good and everything was read.
///
/// ```no_run
/// # fn main() -> serpy::Result<()> {
/// # let conn = serpy::Connection::connect(("127.0.0.1", 8000))?;
/// for msg in &conn {
///     println!("{msg}");
/// }
/// # Ok(()) }
/// ```
impl<'a> IntoIterator for &'a Connection {
    type Item = Message;
    type IntoIter = Messages<'a>;

    fn into_iter(self) -> Messages<'a> {
        Messages {
            shared: &self.inner.shared,
        }
    }
}

/// The blocking iterator over a connection's received messages that
/// `for msg in &conn` uses: see [`IntoIterator for &Connection`](Connection#impl-IntoIterator-for-%26Connection).
///
/// ```no_run
/// # fn main() -> serpy::Result<()> {
/// # let conn = serpy::Connection::connect(("127.0.0.1", 8000))?;
/// let first_two: Vec<serpy::Message> = (&conn).into_iter().take(2).collect();
/// # Ok(()) }
/// ```
pub struct Messages<'a> {
    shared: &'a Shared,
}

impl std::fmt::Debug for Messages<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Messages")
            .field("connection", &self.shared.id)
            .finish()
    }
}

impl Iterator for Messages<'_> {
    type Item = Message;

    fn next(&mut self) -> Option<Message> {
        match self.shared.inbox.take_now() {
            Some((m, _)) => Some(m),
            None => take_waiting(self.shared, None).ok().map(|(m, _)| m),
        }
    }
}

/// The next received message once a first look at the incoming queue
/// ([`Inbox::take_now`](inbox::Inbox::take_now)) found none, waiting at most `timeout`
/// (as long as it takes if `None`): from the incoming queue if one came meanwhile; else,
/// on Linux, read from the socket by this thread if it can take the read role
/// (`direct.rs`); else from the incoming queue once the reader thread has put one there.
/// The clock is read only here, when the first look found nothing (for the deadline).
fn take_waiting(
    shared: &Shared,
    timeout: Option<Duration>,
) -> std::result::Result<vocab::Incoming, inbox::Empty> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    return direct::take(shared, timeout);
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    shared.inbox.take(timeout)
}

#[cfg(test)]
mod tests {
    use super::vocab::Payload;
    use super::*;
    use bytes::Bytes;
    use std::io::{self, Read, Write};
    use std::net::TcpListener;
    use std::time::Instant;

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

    /// A connection of `protocol` to a raw peer whose socket buffers are full, after the
    /// peer has read half of the filler (room, but less than the big message to come),
    /// with the link counted as quiet. Returns the connection, the peer and how many
    /// filler bytes are still to be read.
    #[cfg(all(
        any(target_os = "linux", target_os = "android"),
        not(serpy_portable_send)
    ))]
    fn half_drained_quiet_link(protocol: Protocol) -> (Connection, TcpStream, usize) {
        let cfg = Config {
            protocol,
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
            .checked_sub(inline::QUIET * 4)
            .expect("a clock past boot");
        lock(&conn.shared().link).last_write = past;
        (conn, raw, filler - got.len())
    }

    /// Reads the rest of the filler, then `want`, which must arrive exactly; closes the
    /// connection and checks that nothing stayed pending.
    #[cfg(all(
        any(target_os = "linux", target_os = "android"),
        not(serpy_portable_send)
    ))]
    fn expect_after_filler(conn: Connection, mut raw: TcpStream, rest: usize, want: &[u8]) {
        let mut filler = vec![0u8; rest];
        raw.read_exact(&mut filler).unwrap();
        assert!(filler.iter().all(|&b| b == b'x'));
        let mut got = vec![0u8; want.len()];
        raw.read_exact(&mut got).unwrap();
        assert!(got == want, "the messages arrive whole and in order");
        // Once the writer thread has ended, nothing may still count as pending.
        conn.close();
        assert_eq!(
            conn.shared().pending.load(Ordering::Acquire),
            0,
            "a message stayed pending"
        );
    }

    /// The caller's own non-blocking write exists on Linux and Android only.
    #[cfg(all(
        any(target_os = "linux", target_os = "android"),
        not(serpy_portable_send)
    ))]
    #[test]
    fn a_plain_send_the_socket_takes_in_part_is_finished_by_the_writer() {
        use crate::protocol::{v2, WireBuf};
        let (conn, raw, rest) = half_drained_quiet_link(Protocol::V2);
        let size = rest * 4;
        let big = Bytes::from((0..size as u32).map(|i| i as u8).collect::<Vec<u8>>());
        conn.send(big.clone()).unwrap();
        conn.send("after").unwrap();
        let mut wire = WireBuf::new();
        v2::encode(&Message::Bytes(big), &mut wire).unwrap();
        v2::encode(&Message::from("after"), &mut wire).unwrap();
        expect_after_filler(conn, raw, rest, &wire.to_vec());
    }

    /// The v1 side of the test above: a plain block in the link's send mode goes out
    /// straight from its own parts, and what the socket did not take goes to the writer.
    #[cfg(all(
        any(target_os = "linux", target_os = "android"),
        not(serpy_portable_send)
    ))]
    #[test]
    fn a_plain_v1_send_the_socket_takes_in_part_is_finished_by_the_writer() {
        use crate::protocol::{v1, WireBuf};
        let (conn, raw, rest) = half_drained_quiet_link(Protocol::V1);
        let big: String = (0..rest * 4)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        conn.send_data(big.as_str(), Mode::Plain).unwrap();
        conn.send_data("after", Mode::Plain).unwrap();
        let mut enc = v1::Encoder::new(crate::TextEncoding::Utf8, usize::MAX);
        let mut wire = WireBuf::new();
        enc.encode(&Message::from(big.as_str()), Mode::Plain, &mut wire)
            .unwrap();
        enc.encode(&Message::from("after"), Mode::Plain, &mut wire)
            .unwrap();
        expect_after_filler(conn, raw, rest, &wire.to_vec());
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
                Payload::Deferred { .. }
                | Payload::V2Late { .. }
                | Payload::V1Late { .. }
                | Payload::Run(_) => {
                    panic!("not encoded for one message")
                }
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

    /// Base85 blocks encoded by the writer (`Payload::V1Late`) go out in their place
    /// among small runs and large blocks encoded by the sender, with the SETMODE blocks
    /// the sender's encoder would write, byte for byte.
    #[test]
    fn a_late_encoded_message_keeps_its_place() {
        use crate::protocol::{v1, WireBuf};
        let (conn, mut raw) = raw_peer();
        let filler = fill(&conn);
        let bytes = |len: usize, seed: u8| {
            Message::Bytes(Bytes::from(
                (0..len)
                    .map(|i| (i as u8).wrapping_mul(seed))
                    .collect::<Vec<u8>>(),
            ))
        };
        let big_text: String = (0..70_000)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let sends: Vec<(Message, Mode)> = vec![
            (Message::from("a"), Mode::Plain),
            (bytes(65536, 7), Mode::Plain),
            (Message::from("b"), Mode::Plain),
            (Message::from("c"), Mode::Plain),
            (bytes(v1::LATE_BASE85_FROM, 3), Mode::Base85),
            (bytes(v1::LATE_BASE85_FROM + 3, 5), Mode::Base85),
            (Message::from(big_text.as_str()), Mode::Plain),
            (bytes(v1::LATE_BASE85_UNTIL, 11), Mode::Plain),
            (Message::from("d"), Mode::Plain),
        ];
        let mut enc = v1::Encoder::new(crate::TextEncoding::Utf8, usize::MAX);
        let mut wire = WireBuf::new();
        for (m, mode) in &sends {
            conn.send_data(m.clone(), *mode).unwrap();
            enc.encode(m, *mode, &mut wire).unwrap();
        }
        let want = wire.to_vec();
        let mut got = vec![0u8; filler + want.len()];
        raw.read_exact(&mut got).unwrap();
        assert!(got[..filler].iter().all(|&b| b == b'x'));
        assert!(
            got[filler..] == want[..],
            "the messages arrive whole and in order"
        );
        conn.close();
        assert_eq!(conn.shared().pending.load(Ordering::Acquire), 0);
    }

    /// A base85 message left to the writer to encode is refused at send time as the
    /// sender's encoder would refuse it: too large, nothing queued.
    #[test]
    fn a_late_encoded_message_is_checked_at_send_time() {
        use crate::protocol::v1;
        let max = v1::LATE_BASE85_FROM + 10;
        let (conn, _raw) = raw_peer_with(Config {
            max_message_size: max,
            ..Config::default()
        });
        let too_large = Message::Bytes(Bytes::from(vec![0u8; max + 1]));
        assert!(v1::encodes_late(max + 1));
        for mode in [Mode::Plain, Mode::Base85, Mode::Base85Ack] {
            match conn.send_data(too_large.clone(), mode) {
                Err(Error::MessageTooLarge { size, max: m }) => {
                    assert_eq!((size, m), (max as u64 + 1, max));
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(conn.shared().pending.load(Ordering::Acquire), 0);
        assert!(conn.shared().outbox.is_empty());
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
