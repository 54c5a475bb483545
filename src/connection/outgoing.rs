//! The send path, in the caller's thread: encode a message once ([`prepare`]), hand it to
//! the writer or to the socket ([`enqueue`]), and wait for its acknowledgement
//! ([`await_answer`]).
//!
//! Threads: callers.

use bytes::Bytes;
use crossbeam_channel::{self as channel, select, Receiver, RecvTimeoutError};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::inline;
use super::outbox::{Full, Refused, SMALL};
use super::state::{Shared, DROP_REPORT_EVERY};
use super::vocab::{Outgoing, Payload};
use crate::config::{Config, FullQueue};
use crate::error::{Error, Result};
use crate::event::EventKind;
use crate::message::{Message, TextEncoding};
use crate::protocol::{v1, v2, Mode, Protocol, WireBuf};
use crate::sync::{lock, try_lock, Deadline};

/// Length of a v1 SETMODE block (`01 "SETMODE" d 1F`).
const SETMODE_LEN: usize = 10;

/// A message encoded once for the connections of one protocol (see `Server::broadcast`).
#[derive(Clone)]
pub(crate) struct Prepared(pub(crate) Payload);

impl Prepared {
    /// Encodes `message` as `Connection::send` would for a connection of `protocol`.
    pub(crate) fn new(protocol: Protocol, cfg: &Config, message: &Message) -> Result<Self> {
        prepare(protocol, cfg, message, Mode::Plain).map(Prepared)
    }
}

/// Encodes `message` into what the writer will send, in the caller's thread.
pub(crate) fn prepare(
    protocol: Protocol,
    cfg: &Config,
    message: &Message,
    mode: Mode,
) -> Result<Payload> {
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

/// Checks that a send may go ahead, then encodes it (the first half of `send_data`).
pub(crate) fn prepare_send(shared: &Shared, message: Message, mode: Mode) -> Result<Payload> {
    if let Some(e) = shared.life.refusal() {
        return Err(e);
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
    if protocol == Protocol::V2 {
        // What `prepare` does, with the payload moved out of the message.
        if message.len() > shared.cfg.max_message_size {
            return Err(Error::MessageTooLarge {
                size: message.len() as u64,
                max: shared.cfg.max_message_size,
            });
        }
        let (code, body) = v2::payload_owned(message)?;
        return Ok(if v2::sums_late(body.len()) {
            Payload::V2Late { code, body }
        } else {
            Payload::V2 {
                header: v2::header(code, &body),
                body,
            }
        });
    }
    if protocol == Protocol::V1 && v1::encodes_late(message.len()) {
        // Bytes of these sizes are encoded by the writer (`Payload::V1Late`); what
        // `prepare` would refuse is refused here all the same.
        if let Some(late) = v1::late_base85(&message, mode, shared.cfg.max_message_size) {
            let (mode, body) = late?;
            return Ok(Payload::V1Late { mode, body });
        }
    }
    prepare(protocol, &shared.cfg, &message, mode)
}

/// The fast path of `send_data` for a small plain message while messages stream out
/// (the outgoing queue holds some, or the writer is writing): a text message, or a
/// bytes message over v2, under [`SMALL`] bytes, that the encoder would send as it is
/// (v1: UTF-8 text in mode 0 that needs no base85). Its frame goes straight into the
/// queue's last run under one lock holding: no encoding into pieces, no shared
/// reference taken, nothing else counted. Returns false, having done nothing, when the
/// message or the moment is for the general path (`prepare_send`, `enqueue`), which
/// then does all the checks and takes all the decisions.
pub(crate) fn send_small(shared: &Shared, message: &Message, mode: Mode) -> bool {
    let body = match message {
        Message::Text(t) => t.as_bytes(),
        Message::Bytes(b) => b,
        _ => return false,
    };
    if mode != Mode::Plain
        || body.len() >= SMALL
        || body.len() > shared.cfg.max_message_size
        || shared.life.refusal().is_some()
    {
        return false;
    }
    // Under KeepLatest(n) the queue holds at most n: at n, the general path drops.
    let cap = match shared.cfg.full_queue {
        FullQueue::KeepLatest(n) => n,
        _ => usize::MAX,
    };
    match shared.protocol() {
        Protocol::V2 => {
            let code = match message {
                Message::Text(_) => v2::TYPE_TEXT,
                _ => v2::TYPE_BYTES,
            };
            let header = v2::header(code, body);
            shared
                .outbox
                .try_push_small(None, [&header, body], &shared.pending, cap)
        }
        Protocol::V1 => {
            // What `v1::Encoder` sends as it is in mode 0: non-empty UTF-8 text that
            // cannot be read as a control block and has no separator in it.
            let raw = matches!(message, Message::Text(_))
                && shared.cfg.encoding == TextEncoding::Utf8
                && !body.is_empty()
                && body[0] != v1::CTRL
                && !v1::contains_byte(v1::SEP, body);
            raw && shared.outbox.try_push_small(
                Some(Mode::Plain),
                [body, &[v1::SEP]],
                &shared.pending,
                cap,
            )
        }
        Protocol::Auto => false,
    }
}

/// Hands `payload` to the writer (or writes it at once, see `inline.rs`), and waits for
/// its acknowledgement if it asks for one, all within `deadline`. A full queue is met by
/// the connection's `FullQueue` policy.
pub(crate) fn enqueue(shared: &Shared, payload: Payload, deadline: Deadline) -> Result<()> {
    let acked = payload.is_acked();
    let (ack, answer) = if acked {
        let (tx, rx) = channel::bounded(1);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    // The round trip of an acknowledged send, for the statistics (one clock read per
    // acknowledged send, none for the others).
    let started = acked.then(Instant::now);
    let item = Outgoing {
        payload,
        ack,
        cut: false,
    };
    if acked && !deadline.is_bounded() && shared.pending.load(Ordering::Acquire) == 0 {
        // The caller waits for the peer anyway: when nothing accepted earlier is still
        // waiting and the writer thread is idle, write from here.
        if let Some(mut link) = try_lock(&shared.link) {
            if link.idle(&shared.pending, &shared.outbox)
                && matches!(item.payload, Payload::V1 { .. } | Payload::V1Late { .. })
            {
                inline::write_now(&mut link, shared, item);
                drop(link);
                return answered(shared, started, await_answer(shared, answer, deadline));
            }
        }
    }
    #[cfg(all(
        any(target_os = "linux", target_os = "android"),
        not(serpy_portable_send)
    ))]
    let item = match try_write_first(shared, item) {
        Some(item) => item,
        None => return Ok(()),
    };
    queue(shared, item, Some(deadline))?;
    answered(shared, started, await_answer(shared, answer, deadline))
}

/// Counts the round trip of an acknowledged send that was acknowledged.
fn answered(shared: &Shared, started: Option<Instant>, r: Result<()>) -> Result<()> {
    if let (Some(t), Ok(())) = (started, &r) {
        shared.stats.acked(t.elapsed());
    }
    r
}

/// Puts `item` in the outgoing queue, under the connection's
/// `FullQueue` policy: waiting for room until `deadline` (`Block`, `Disconnect`), or
/// dropping older plain messages (`KeepLatest`). Without a deadline (`None`: the server's
/// sends) it never waits: a full queue is an error. Returns how many older messages it
/// dropped.
fn queue(shared: &Shared, item: Outgoing, deadline: Option<Deadline>) -> Result<u64> {
    let size = item.payload_len();
    match shared.cfg.full_queue {
        FullQueue::KeepLatest(n) => keep_latest(shared, item, size, n),
        _ => queue_waiting(shared, item, size, deadline).map(|()| 0),
    }
}

/// `FullQueue::Block` and `Disconnect`: waits for room by count and by bytes.
fn queue_waiting(
    shared: &Shared,
    item: Outgoing,
    size: usize,
    deadline: Option<Deadline>,
) -> Result<()> {
    match shared.outbox.try_push(item, size) {
        Ok(()) => Ok(()),
        // Gone: racing close() or the end of the link; the lifecycle says which.
        Err(Refused::Gone) => Err(shared.life.gone_error()),
        Err(Refused::Full(full, item)) => match deadline {
            None => Err(full_error(shared, full)),
            Some(d) => wait_for_room(shared, item, size, d),
        },
    }
}

/// The error of a send that meets a full outgoing queue and may not wait.
fn full_error(shared: &Shared, full: Full) -> Error {
    match full {
        Full::Count => Error::QueueFull {
            capacity: shared.cfg.outgoing_capacity,
        },
        Full::Bytes => Error::OutgoingBytesFull {
            queued: shared.outbox.queued(),
            limit: shared.outbox.limit,
        },
    }
}

/// Waits until `item`, of `size` bytes, enters the outgoing queue's bounds (a free slot
/// and room in the byte budget), woken by the writer taking messages out.
fn wait_for_room(shared: &Shared, item: Outgoing, size: usize, deadline: Deadline) -> Result<()> {
    let outbox = &shared.outbox;
    outbox.wait(true);
    let mut item = item;
    let r = loop {
        // Tried after announcing the wait, so a wake-up cannot be missed.
        let full = match outbox.try_push(item, size) {
            Ok(()) => break Ok(()),
            Err(Refused::Gone) => break Err(shared.life.gone_error()),
            Err(Refused::Full(f, back)) => {
                item = back;
                f
            }
        };
        if let Some(e) = shared.life.refusal() {
            break Err(e);
        }
        select! {
            recv(outbox.room_rx) -> _ => {}
            recv(shared.shutdown_rx) -> _ => break Err(Error::Closed),
            default(deadline.remaining()) => break Err(deadline.timed_out(match full {
                Full::Count => "send_data (waiting for room in the outgoing queue)",
                Full::Bytes => "send_data (waiting for room in the outgoing byte budget)",
            })),
        }
    };
    outbox.wait(false);
    r
}

/// `FullQueue::KeepLatest(n)`: takes the oldest messages out of the queue while it holds
/// `n` or more, or `item` would not fit in the byte budget; plain ones are dropped,
/// acknowledged ones kept to go first. Never waits. Returns how many were dropped.
fn keep_latest(shared: &Shared, item: Outgoing, size: usize, n: usize) -> Result<u64> {
    let cap = n.min(shared.cfg.outgoing_capacity);
    let dropped = match shared.outbox.push_keep_latest(item, size, cap) {
        Ok(d) => d,
        Err(_) => return Err(shared.life.gone_error()),
    };
    if dropped > 0 {
        report_drops(shared, dropped as u64);
    }
    Ok(dropped as u64)
}

/// Counts `n` messages dropped by the keep-latest policy, and reports them by an event
/// unless one went less than `DROP_REPORT_EVERY` ago (the writer reports the rest).
fn report_drops(shared: &Shared, n: u64) {
    shared.stats.rare.dropped.fetch_add(n, Ordering::Relaxed);
    shared.drops.unreported.fetch_add(n, Ordering::AcqRel);
    flush_drops(shared, false);
}

/// Reports the drops not yet reported by an `EventKind::Dropped`: if `now`, or if the last
/// report is `DROP_REPORT_EVERY` old. Returns how long until a report is due, if drops
/// wait to be reported (for the writer's wait).
pub(crate) fn flush_drops(shared: &Shared, now: bool) -> Option<Duration> {
    if shared.drops.unreported.load(Ordering::Acquire) == 0 {
        return None;
    }
    let mut last = lock(&shared.drops.last);
    let since = last.map_or(DROP_REPORT_EVERY, |t| t.elapsed());
    if !now && since < DROP_REPORT_EVERY {
        return Some(DROP_REPORT_EVERY - since);
    }
    let messages = shared.drops.unreported.swap(0, Ordering::AcqRel);
    if messages > 0 {
        *last = Some(Instant::now());
        drop(last);
        shared.event(EventKind::Dropped { messages });
    }
    None
}

/// A plain send while nothing waits: offered to the socket at once (see
/// `inline::try_write_now`); gives the message back if it must be queued.
#[cfg(all(
    any(target_os = "linux", target_os = "android"),
    not(serpy_portable_send)
))]
fn try_write_first(shared: &Shared, item: Outgoing) -> Option<Outgoing> {
    if item.ack.is_some() || shared.pending.load(Ordering::Acquire) != 0 {
        return Some(item);
    }
    match try_lock(&shared.link) {
        Some(mut link) => inline::try_write_now(&mut link, shared, item),
        None => Some(item),
    }
}

/// Queues `prepared` without ever blocking (for the server): under `Block` and
/// `Disconnect`, [`Error::QueueFull`] or [`Error::OutgoingBytesFull`] when the outgoing
/// queue is full; under `KeepLatest`, older messages make room. The lifecycle's error
/// when the connection is gone. Returns how many older messages were dropped.
pub(crate) fn try_enqueue(shared: &Shared, payload: Payload) -> Result<u64> {
    if let Some(e) = shared.life.refusal() {
        return Err(e);
    }
    let item = Outgoing {
        payload,
        ack: None,
        cut: false,
    };
    #[cfg(all(
        any(target_os = "linux", target_os = "android"),
        not(serpy_portable_send)
    ))]
    let item = match try_write_first(shared, item) {
        Some(item) => item,
        None => return Ok(0),
    };
    queue(shared, item, None)
}

/// What timed out when the acknowledgement may be in the socket behind messages this
/// side has not read (the reader waits for the program to read).
const HELD_BACK: &str = "send_data (waiting for the acknowledgement, which may wait behind messages this side has not read: the incoming queue is full)";

/// Waits for the acknowledgement of an acknowledged send (`answer`), if any.
pub(crate) fn await_answer(
    shared: &Shared,
    answer: Option<Receiver<Result<()>>>,
    deadline: Deadline,
) -> Result<()> {
    let Some(answer) = answer else {
        return Ok(());
    };
    // Read the answer from the socket in this thread if nobody else reads (direct.rs).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Some(r) = super::direct::await_answer(shared, &answer, deadline) {
        return r;
    }
    let got = match deadline.at {
        None => answer.recv().map_err(|_| RecvTimeoutError::Disconnected),
        Some(d) => answer.recv_deadline(d),
    };
    match got {
        Ok(r) => r,
        Err(RecvTimeoutError::Timeout) if shared.reader_held_back() => {
            Err(deadline.timed_out(HELD_BACK))
        }
        Err(RecvTimeoutError::Timeout) => {
            Err(deadline.timed_out("send_data (waiting for the acknowledgement)"))
        }
        Err(RecvTimeoutError::Disconnected) => Err(if shared.life.is_closed() {
            Error::Closed
        } else {
            Error::NotSent
        }),
    }
}
