//! The send path, in the caller's thread: encode a message once ([`prepare`]), hand it to
//! the writer or to the socket ([`enqueue`]), and wait for its acknowledgement
//! ([`await_answer`]).
//!
//! Threads: callers.

use bytes::Bytes;
use crossbeam_channel::{self as channel, select, Receiver, RecvTimeoutError, TrySendError};
use std::sync::atomic::Ordering;

use super::inline;
use super::state::Shared;
use super::vocab::{Outgoing, Payload};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::message::Message;
use crate::protocol::{v1, v2, Mode, Protocol, WireBuf};
use crate::sync::{try_lock, Deadline};

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
pub(crate) fn prepare_send(shared: &Shared, message: &Message, mode: Mode) -> Result<Payload> {
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
    prepare(protocol, &shared.cfg, message, mode)
}

/// Hands `payload` to the writer (or writes it at once, see `inline.rs`), and waits for
/// its acknowledgement if it asks for one, all within `deadline`.
pub(crate) fn enqueue(shared: &Shared, payload: Payload, deadline: Deadline) -> Result<()> {
    let acked = payload.is_acked();
    let (ack, answer) = if acked {
        let (tx, rx) = channel::bounded(1);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let item = Outgoing {
        payload,
        ack,
        cut: false,
    };
    if acked && !deadline.is_bounded() && shared.pending.load(Ordering::Acquire) == 0 {
        // The caller waits for the peer anyway: when nothing accepted earlier is still
        // waiting and the writer thread is idle, write from here.
        if let Some(mut link) = try_lock(&shared.link) {
            if link.idle(&shared.pending) && matches!(item.payload, Payload::V1 { .. }) {
                inline::write_now(&mut link, shared, item);
                drop(link);
                return await_answer(shared, answer, deadline);
            }
        }
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let item = match try_write_first(shared, item) {
        Some(item) => item,
        None => return Ok(()),
    };
    shared.pending.fetch_add(1, Ordering::AcqRel);
    // Without a wait (the usual case), a plain send: cheaper than a select.
    // A send racing close() or the end of the link finds the queue gone: the lifecycle
    // says which (Closed, or Disconnected).
    let sent = match shared.out_tx.try_send(item) {
        Ok(()) => Ok(()),
        Err(TrySendError::Disconnected(_)) => Err(shared.life.gone_error()),
        Err(TrySendError::Full(item)) => select! {
            send(shared.out_tx, item) -> r => r.map_err(|_| shared.life.gone_error()),
            recv(shared.shutdown_rx) -> _ => Err(Error::Closed),
            default(deadline.remaining()) => Err(deadline.timed_out(
                "send_data (waiting for room in the outgoing queue)",
            )),
        },
    };
    if let Err(e) = sent {
        shared.pending.fetch_sub(1, Ordering::AcqRel);
        return Err(e);
    }
    await_answer(shared, answer, deadline)
}

/// A plain send while nothing waits: offered to the socket at once (see
/// `inline::try_write_now`); gives the message back if it must be queued.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn try_write_first(shared: &Shared, item: Outgoing) -> Option<Outgoing> {
    if item.ack.is_some() || shared.pending.load(Ordering::Acquire) != 0 {
        return Some(item);
    }
    match try_lock(&shared.link) {
        Some(mut link) => inline::try_write_now(&mut link, shared, item),
        None => Some(item),
    }
}

/// Queues `prepared` without ever blocking (for the server): [`Error::QueueFull`] when
/// the outgoing queue is full, the lifecycle's error when the connection is gone.
pub(crate) fn try_enqueue(shared: &Shared, payload: Payload) -> Result<()> {
    if let Some(e) = shared.life.refusal() {
        return Err(e);
    }
    let item = Outgoing {
        payload,
        ack: None,
        cut: false,
    };
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let item = match try_write_first(shared, item) {
        Some(item) => item,
        None => return Ok(()),
    };
    shared.pending.fetch_add(1, Ordering::AcqRel);
    match shared.out_tx.try_send(item) {
        Ok(()) => Ok(()),
        Err(e) => {
            shared.pending.fetch_sub(1, Ordering::AcqRel);
            Err(match e {
                TrySendError::Full(_) => Error::QueueFull {
                    capacity: shared.cfg.outgoing_capacity,
                },
                TrySendError::Disconnected(_) => shared.life.gone_error(),
            })
        }
    }
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
