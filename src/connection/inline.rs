//! The writes made outside the writer thread, side by side. Each saves waking the writer
//! thread for something that can go out at once while the link is idle:
//!
//! - [`try_write_now`]: a plain send after a quiet spell, from its caller, never blocking
//!   (Linux and Android, where a single send can be made non-blocking; elsewhere the
//!   message goes to the writer thread, which keeps the same promise, that a plain
//!   send never waits in a socket write, at the cost of a wake-up: see BENCHMARKS.md);
//! - [`write_now`]: an acknowledged v1 send, from its caller (who waits anyway);
//! - [`write_replies_now`]: the control replies owed, from the reader, never blocking.
//!
//! All three are called with the link lock held (taken with `try_lock`, so they never
//! wait for the writer), write whole blocks, and hand whatever they could not finish to
//! the writer thread through the link (`wire`, `partial`, `retry`, `broken`) and a
//! [`Control::Wake`].
//!
//! Threads: callers, reader.

use std::io;
use std::sync::atomic::Ordering;

use bytes::Bytes;

#[cfg(not(all(
    any(target_os = "linux", target_os = "android"),
    not(serpy_portable_send)
)))]
use super::link::write_parts;
use super::link::{encode_replies, put_back, write_failed, Link};
use super::state::Shared;
use super::vocab::{Control, Outgoing};
use crate::sync::lock;
// What only the fast path (Linux and Android, unless `--cfg serpy_portable_send`) uses.
#[cfg(all(
    any(target_os = "linux", target_os = "android"),
    not(serpy_portable_send)
))]
use {
    super::vocab::Payload,
    crate::protocol::Mode,
    std::io::IoSlice,
    std::time::{Duration, Instant},
};

/// A plain send is written by its caller only after the link has been quiet this long,
/// so that a stream of sends still goes through the queue and the writer's batches.
#[cfg(all(
    any(target_os = "linux", target_os = "android"),
    not(serpy_portable_send)
))]
pub(crate) const QUIET: Duration = Duration::from_micros(5);

/// A write outside the writer thread failed: the message becomes the writer's, as if it
/// had been queued (it goes out again on the next link, or fails with the link), and
/// the writer is woken to take the link down.
fn hand_over(link: &mut Link, shared: &Shared, item: Outgoing, e: &io::Error) {
    shared.pending.fetch_add(1, Ordering::AcqRel);
    link.retry.push_back(item);
    link.broken = Some((link.epoch, write_failed(link, e)));
    let _ = shared.ctl_tx.try_send(Control::Wake);
}

/// Writes a plain message from the caller's thread if the socket takes it without
/// blocking, when the link is idle and has been quiet (see [`QUIET`]). Gives the message
/// back if nothing was written (it is then queued as usual); what the socket did not
/// take, the writer thread finishes.
#[cfg(all(
    any(target_os = "linux", target_os = "android"),
    not(serpy_portable_send)
))]
pub(crate) fn try_write_now(link: &mut Link, shared: &Shared, item: Outgoing) -> Option<Outgoing> {
    if !link.idle(&shared.pending, &shared.outbox)
        || !link.wire.is_empty()
        || link.partial.is_some()
        || item.ack.is_some()
        || matches!(item.payload, Payload::Deferred { .. })
        || link.last_write.elapsed() < QUIET
    {
        return Some(item);
    }
    if let Some((sent, total)) = send_direct(link, &item.payload) {
        let mode = link.send_mode;
        return settle(link, shared, item, sent, total, mode, |link, item| {
            // The rest goes to the writer thread through `wire`: the frame encoded
            // there whole (it needs nothing before it: no SETMODE), less what went out.
            link.put(&item.payload);
            link.wire.take_parts()
        });
    }
    let mode_before = link.send_mode;
    link.put(&item.payload);
    let parts = link.wire.take_parts();
    let Some(stream) = link.stream.as_ref() else {
        return Some(item); // not reached: an idle link has a socket
    };
    let total: usize = parts.iter().map(Bytes::len).sum();
    let slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
    let sent = socket2::SockRef::from(stream)
        .send_vectored_with_flags(&slices, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL);
    settle(link, shared, item, sent, total, mode_before, |_, _| parts)
}

/// What a non-blocking send of `item` did (`sent`, of its `total` bytes), as
/// [`try_write_now`] returns it: when nothing went out the link's send mode is set back
/// to `mode_before` and the message given back; when part of it went out, `rest` gives
/// the message's encoded parts, and what the socket did not take of them goes into
/// `wire` for the writer thread.
#[cfg(all(
    any(target_os = "linux", target_os = "android"),
    not(serpy_portable_send)
))]
fn settle(
    link: &mut Link,
    shared: &Shared,
    item: Outgoing,
    sent: io::Result<usize>,
    total: usize,
    mode_before: Mode,
    rest: impl FnOnce(&mut Link, &Outgoing) -> Vec<Bytes>,
) -> Option<Outgoing> {
    match sent {
        Ok(n) if n >= total => {
            link.wrote(n, &shared.pending);
            shared.stats.sent(1);
            None
        }
        Ok(n) if n > 0 => {
            let parts = rest(link, &item);
            put_back(&mut link.wire, &parts, n);
            partly_written(link, shared, item, n, total);
            None
        }
        Ok(_) => {
            link.send_mode = mode_before;
            Some(item)
        }
        Err(e) if would_block(&e) => {
            link.send_mode = mode_before;
            Some(item)
        }
        Err(e) => {
            hand_over(link, shared, item, &e);
            None
        }
    }
}

/// The most parts a message is sent in straight from its own buffers (a v2 frame has
/// two, its header and its payload; a v1 block a few; more go through `wire`).
#[cfg(all(
    any(target_os = "linux", target_os = "android"),
    not(serpy_portable_send)
))]
const DIRECT_PARTS: usize = 4;

/// Sends `payload` straight from its own buffers (no copy into `wire`, nothing
/// allocated: the slices are on the stack) when it needs nothing put before it: a v2
/// frame, or a v1 block in the link's send mode of at most [`DIRECT_PARTS`] parts.
/// Returns the socket's answer and the frame's length, or `None` for the other payloads
/// (they go through `wire`).
#[cfg(all(
    any(target_os = "linux", target_os = "android"),
    not(serpy_portable_send)
))]
fn send_direct(link: &Link, payload: &Payload) -> Option<(io::Result<usize>, usize)> {
    let mut slices = [IoSlice::new(&[]); DIRECT_PARTS];
    let count = match payload {
        Payload::V2 { header, body } => {
            slices[0] = IoSlice::new(header);
            slices[1] = IoSlice::new(body);
            2
        }
        Payload::V1 { mode, parts } if *mode == link.send_mode && parts.len() <= DIRECT_PARTS => {
            for (slice, part) in slices.iter_mut().zip(parts) {
                *slice = IoSlice::new(part);
            }
            parts.len()
        }
        _ => return None,
    };
    let slices = &slices[..count];
    let total: usize = slices.iter().map(|s| s.len()).sum();
    let stream = link.stream.as_ref()?;
    let sent = socket2::SockRef::from(stream)
        .send_vectored_with_flags(slices, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL);
    Some((sent, total))
}

/// The socket took `n` of the `total` bytes of `item`, whose rest is in `wire`: the
/// writer thread finishes it.
#[cfg(all(
    any(target_os = "linux", target_os = "android"),
    not(serpy_portable_send)
))]
fn partly_written(link: &mut Link, shared: &Shared, item: Outgoing, n: usize, total: usize) {
    link.stats.wrote(n);
    shared.stats.sent(1);
    shared.pending.fetch_add(1, Ordering::AcqRel);
    link.partial = Some((item, total - n));
    link.last_write = Instant::now();
    let _ = shared.ctl_tx.try_send(Control::Wake);
}

/// A non-blocking send that sent nothing, to be tried again by the writer thread.
#[cfg(all(
    any(target_os = "linux", target_os = "android"),
    not(serpy_portable_send)
))]
fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// Writes an acknowledged v1 message from the caller's thread (the link is idle). On a
/// write error the message becomes the writer thread's, as if it had been queued.
pub(crate) fn write_now(link: &mut Link, shared: &Shared, mut item: Outgoing) {
    let before = link.wire.len();
    link.put(&item.payload);
    if let Some(ack) = &item.ack {
        // Registered before the bytes go out, so the ACKEOT cannot come first.
        lock(&shared.acks).waiting.push_back(ack.clone());
    }
    let (written, result) = link.write_wire(&shared.pending);
    if result.is_ok() {
        shared.stats.sent(1);
    }
    if let Err(e) = result {
        item.cut = written > before || crate::sys::FAILED_WRITE_HIDES_PROGRESS;
        if item.ack.is_some() {
            lock(&shared.acks).waiting.pop_back();
        }
        hand_over(link, shared, item, &e);
    }
}

/// Writes the control replies owed on the link of `epoch` without blocking. Returns
/// false when the writer thread has something left to do.
///
/// Only the reader of that link may call this: where a send cannot be made
/// non-blocking by itself, non-blocking mode belongs to the socket, which that thread
/// alone reads.
pub(crate) fn write_replies_now(link: &mut Link, shared: &Shared, epoch: u64) -> bool {
    let Some(stream) = link.stream.as_ref() else {
        return false;
    };
    if link.epoch != epoch || link.broken.is_some() {
        return false;
    }
    let (modcg, eot, more) = {
        let mut r = lock(&shared.replies);
        let (m, e) = r.take_batch();
        (m, e, r.any())
    };
    encode_replies(modcg, eot, &mut link.wire);
    let parts = link.wire.take_parts();
    let (written, result) = send_without_blocking(stream, &parts);
    link.wrote(written, &shared.pending);
    match result {
        Ok(()) => !more,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            // The rest goes out first, from the writer thread.
            put_back(&mut link.wire, &parts, written);
            false
        }
        Err(e) => {
            link.broken = Some((link.epoch, format!("write failed: {e}")));
            false
        }
    }
}

/// Writes all `parts` unless the socket would block (`WouldBlock`, with how many bytes
/// it took): one non-blocking send per try (Linux and Android: `MSG_DONTWAIT`, which
/// saves switching the socket's mode twice per reply).
#[cfg(all(
    any(target_os = "linux", target_os = "android"),
    not(serpy_portable_send)
))]
fn send_without_blocking(stream: &std::net::TcpStream, parts: &[Bytes]) -> (usize, io::Result<()>) {
    let total: usize = parts.iter().map(Bytes::len).sum();
    let mut written = 0;
    while written < total {
        let mut slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        let mut rest = &mut slices[..];
        IoSlice::advance_slices(&mut rest, written);
        match socket2::SockRef::from(stream)
            .send_vectored_with_flags(rest, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
        {
            Ok(0) => return (written, Err(io::Error::from(io::ErrorKind::WriteZero))),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (written, Err(e)),
        }
    }
    (written, Ok(()))
}

/// Writes all `parts` unless the socket would block (`WouldBlock`, with how many bytes
/// it took), in non-blocking mode for the while.
///
/// Nobody else uses the socket meanwhile: its reader is the calling thread, and whoever
/// writes holds the link.
#[cfg(not(all(
    any(target_os = "linux", target_os = "android"),
    not(serpy_portable_send)
)))]
fn send_without_blocking(stream: &std::net::TcpStream, parts: &[Bytes]) -> (usize, io::Result<()>) {
    if let Err(e) = stream.set_nonblocking(true) {
        return (0, Err(io::Error::new(io::ErrorKind::WouldBlock, e)));
    }
    let (written, result) = write_parts(Some(stream), parts);
    match stream.set_nonblocking(false) {
        Ok(()) => (written, result),
        // Not a would-block: the link is taken down.
        Err(e) => (written, Err(io::Error::other(e))),
    }
}
