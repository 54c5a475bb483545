//! The outgoing queue ([`Outbox`]): what callers hand the writer thread, behind one lock,
//! with its two bounds (a count, `Config::outgoing_capacity`, and a byte budget,
//! `Config::outgoing_bytes`) and the wake-ups both ways.
//!
//! A small plain message (a payload under [`SMALL`] bytes) is copied into the queue when
//! it is sent, after the small messages sent just before it, into one buffer (a run): the
//! caller keeps none of its buffer referenced, and the writer takes a run of many messages
//! in one hand-over, as one slice of its vectored write. Larger messages, acknowledged
//! ones and those waiting for the peer's protocol are queued as they are
//! ([`Outgoing`]), their payload shared, never copied. Runs and those items sit in one
//! deque, in the order they were sent.
//!
//! The send path's fast path ([`Outbox::try_push_small`]) copies a small message's frame
//! into the last run from the caller's own bytes, without making an [`Outgoing`] first.
//!
//! The bounds are exact: a message is counted in when it enters the queue, under the
//! lock, and counted out when the writer takes it (one update for all it takes). A
//! caller that waits for room is woken by the writer's take that leaves the queue at
//! half its bounds or less, or, for room freed above that, before the writer may block
//! ([`Outbox::room_rx`], [`Outbox::announce_room`]); the
//! writer is woken ([`Outbox::wake_rx`]) only by the first message in after it found
//! nothing to take: while it writes, it takes again by itself when done.
//!
//! Threads: callers push (and, under `FullQueue::KeepLatest`, drop the oldest); the
//! writer takes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};

use super::vocab::{Outgoing, Payload, Run};
use crate::protocol::{v2, Mode};
use crate::sync::lock;

/// Payloads under this many bytes are copied into the queue at send time (see the
/// module doc); from this size on they are queued by reference (the link still copies
/// those under `WireBuf`'s threshold into its write buffer). Measured on the bench's
/// one-way rows: copying 4 KiB payloads in the caller made that row 10-15 % slower,
/// and the 64 B row showed no difference beyond the spread (it is bound by the
/// receiving side); 2 KiB keeps the 4 KiB row as it was. Measured again with 8 KiB
/// (so that a 4 KiB payload is copied by its caller and its reference dropped in the
/// caller's thread): the 4 KiB row went from 0.53 to 0.48 of raw (medians of three):
/// the copy makes new lines the writer's core must fetch, where a payload sent by
/// reference is read where it already is.
pub(crate) const SMALL: usize = 2048;

/// The writer takes at most about this many bytes out of the queue at once (at least one
/// run or message). Payloads under `WireBuf`'s sharing threshold are copied into the
/// link's write buffer, which the socket then copies again: at 256 KiB that buffer is
/// still in the writer's cache when the socket reads it, where 1 MiB is not. Smaller
/// batches mean more takes, which is cheap because a take wakes a caller waiting for
/// room only once the queue is down to half ([`Outbox::take`]; with a wake-up at
/// every take, 256 KiB was no better than 1 MiB). Measured on the bench's v2 one-way
/// 4 KiB row, both together: 0.46 -> 0.54 of raw, CPU 2.09 -> 1.75 µs a message
/// (medians of five alternations).
pub(crate) const BATCH_BYTES: usize = 1 << 18;
/// A run is closed once it holds this many bytes (so that its buffer can be reused,
/// see [`SPARE_CAPACITY`], and never grows by large steps).
const RUN_BYTES: usize = 64 * 1024;
/// The writer takes at most this many messages out of the queue at once. A run is
/// closed once it holds this many messages.
pub(crate) const BATCH_MESSAGES: usize = 1024;

/// How many cache lines past its end a small send into a run fetches for the next
/// ones (see [`Outbox::try_push_small`]): about two 64-byte messages ahead.
const PREFETCH_LINES: usize = 3;

/// The buffers of a run the writer has written, for the next runs (see
/// [`Outbox::take`]): kept only up to [`SPARE_CAPACITY`] bytes, at most [`SPARES`] of them.
pub(crate) type Spare = (Vec<u8>, Vec<usize>);
/// The largest run buffer kept for reuse.
pub(crate) const SPARE_CAPACITY: usize = 2 * RUN_BYTES;
/// How many run buffers the queue keeps for reuse.
const SPARES: usize = 2;

use super::vocab::{charge, MESSAGE_OVERHEAD};

/// Which bound of the outgoing queue a message met.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Full {
    /// `Config::outgoing_capacity` messages are queued.
    Count,
    /// The message does not fit in `Config::outgoing_bytes`.
    Bytes,
}

/// Why a message did not enter the queue; it is given back.
pub(crate) enum Refused {
    /// A bound is reached.
    Full(Full, Outgoing),
    /// The writer has ended: nothing will be written any more.
    Gone,
}

/// Small plain messages encoded back to back, still open for more.
struct Building {
    /// The v1 mode of all its messages (`None` for v2).
    mode: Option<Mode>,
    buf: Vec<u8>,
    /// Where each message ends in `buf`.
    ends: Vec<usize>,
    /// How many messages at the front a keep-latest drop took out.
    dropped: usize,
}

impl Building {
    fn messages(&self) -> usize {
        self.ends.len() - self.dropped
    }

    fn start(&self) -> usize {
        match self.dropped {
            0 => 0,
            n => self.ends[n - 1],
        }
    }

    fn bytes(&self) -> usize {
        self.buf.len() - self.start()
    }

    /// The run as the writer puts it on the wire.
    fn freeze(self) -> Outgoing {
        let start = self.start();
        let mut bytes = Bytes::from(self.buf);
        if start > 0 {
            bytes = bytes.slice(start..);
        }
        let ends = self.ends[self.dropped..]
            .iter()
            .map(|e| e - start)
            .collect();
        Outgoing {
            payload: Payload::Run(Run {
                mode: self.mode,
                bytes,
                ends,
            }),
            ack: None,
            cut: false,
        }
    }
}

enum Entry {
    Run(Building),
    Item(Outgoing),
}

/// What the lock guards.
struct Queue {
    entries: VecDeque<Entry>,
    /// Messages in `entries` (at most `Outbox::capacity`).
    count: usize,
    /// Bytes charged for them (see [`charge`]).
    bytes: usize,
    /// Acknowledged messages a keep-latest drop took out of `entries` (they are never
    /// dropped): they go before what is still queued, and count in neither bound.
    kept: VecDeque<Outgoing>,
    /// Set when the writer ends: nothing enters any more.
    gone: bool,
    /// Run buffers the writer gave back: a new run takes one instead of allocating
    /// (and the buffer is not freed by another thread than the one that made it).
    spare: Vec<Spare>,
    /// Set when the writer found nothing to take and is about to wait for a wake-up;
    /// cleared by the first message in after that, which sends the wake-up. While it
    /// is clear the writer comes back for more by itself (it takes again after each
    /// write), so no wake-up is sent.
    asleep: bool,
}

impl Queue {
    fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.kept.is_empty()
    }

    /// A message entered: true if it is the one that must wake the writer.
    fn wake(&mut self) -> bool {
        std::mem::take(&mut self.asleep)
    }
}

impl Default for Queue {
    fn default() -> Self {
        Queue {
            entries: VecDeque::new(),
            count: 0,
            bytes: 0,
            kept: VecDeque::new(),
            gone: false,
            spare: Vec::new(),
            // The writer has not started taking: the first message wakes it.
            asleep: true,
        }
    }
}

/// The outgoing queue of one connection (see the module doc).
pub(crate) struct Outbox {
    /// The byte budget (`Config::outgoing_bytes`).
    pub limit: usize,
    /// The count bound (`Config::outgoing_capacity`).
    pub capacity: usize,
    q: Mutex<Queue>,
    /// How many callers wait for room, so that the writer knows to wake one.
    waiting: AtomicUsize,
    /// A take freed room while callers waited and did not wake them (the queue was not
    /// down to half): the writer wakes one before it may block ([`Outbox::announce_room`]).
    owed: AtomicBool,
    /// Wakes one waiting caller (a coalesced signal: capacity 1; a woken caller passes
    /// it on while others wait and room is left).
    room_tx: Sender<()>,
    pub room_rx: Receiver<()>,
    /// Wakes the writer: a message entered after it found nothing to take, or it
    /// left some behind (a coalesced signal: capacity 1).
    wake_tx: Sender<()>,
    pub wake_rx: Receiver<()>,
}

/// The bytes of `payload` if it goes into a run: a plain message under [`SMALL`] bytes.
fn small(payload: &Payload) -> Option<(Option<Mode>, &[u8], &[Bytes])> {
    match payload {
        Payload::V2 { header, body } if body.len() < SMALL => {
            Some((None, &header[..], std::slice::from_ref(body)))
        }
        Payload::V1 { mode, parts }
            if !mode.is_acked() && parts.iter().map(Bytes::len).sum::<usize>() < SMALL =>
        {
            Some((Some(*mode), &[][..], &parts[..]))
        }
        _ => None,
    }
}

impl Outbox {
    /// An empty queue of at most `capacity` messages and `limit` bytes.
    pub fn new(limit: usize, capacity: usize) -> Self {
        let (room_tx, room_rx) = crossbeam_channel::bounded(1);
        let (wake_tx, wake_rx) = crossbeam_channel::bounded(1);
        Outbox {
            limit,
            capacity,
            q: Mutex::new(Queue::default()),
            waiting: AtomicUsize::new(0),
            owed: AtomicBool::new(false),
            room_tx,
            room_rx,
            wake_tx,
            wake_rx,
        }
    }

    /// Messages in the queue.
    pub fn len(&self) -> usize {
        lock(&self.q).count
    }

    /// Bytes charged for the messages in the queue.
    pub fn queued(&self) -> usize {
        lock(&self.q).bytes
    }

    /// True when the writer has nothing to take.
    pub fn is_empty(&self) -> bool {
        lock(&self.q).is_empty()
    }

    fn fits(&self, q: &Queue, size: usize) -> bool {
        q.bytes == 0 || q.bytes.saturating_add(charge(size)) <= self.limit
    }

    /// Puts `item` (of `size` bytes on the wire) at the end of the queue if it fits by
    /// bytes and a slot is free; else gives it back, saying why.
    pub fn try_push(&self, item: Outgoing, size: usize) -> Result<(), Refused> {
        let mut q = lock(&self.q);
        if q.gone {
            return Err(Refused::Gone);
        }
        if !self.fits(&q, size) {
            return Err(Refused::Full(Full::Bytes, item));
        }
        if q.count >= self.capacity {
            return Err(Refused::Full(Full::Count, item));
        }
        let wake = q.wake();
        let rest = Self::insert(&mut q, item, size);
        drop(q);
        drop(rest);
        if wake {
            let _ = self.wake_tx.try_send(());
        }
        Ok(())
    }

    /// `FullQueue::KeepLatest(n)`: takes the oldest messages out while the queue holds
    /// `cap` or more, or `item` would not fit in the byte budget (plain ones are
    /// dropped, acknowledged ones kept to go first), then puts `item` in. Never waits.
    /// Returns how many were dropped, or gives `item` back when the writer has ended.
    pub fn push_keep_latest(
        &self,
        item: Outgoing,
        size: usize,
        cap: usize,
    ) -> Result<usize, Outgoing> {
        let mut q = lock(&self.q);
        if q.gone {
            return Err(item);
        }
        let mut dropped = 0;
        let mut gone_items = Vec::new();
        while q.count > 0 && (q.count >= cap || !self.fits(&q, size)) {
            match q.entries.front_mut() {
                Some(Entry::Run(run)) => {
                    let i = run.dropped;
                    let len = run.ends[i] - run.start();
                    run.dropped += 1;
                    let empty = run.messages() == 0;
                    if empty {
                        q.entries.pop_front();
                    }
                    q.count -= 1;
                    q.bytes -= charge(len);
                    dropped += 1;
                }
                Some(Entry::Item(_)) => {
                    let Some(Entry::Item(old)) = q.entries.pop_front() else {
                        unreachable!("the front was an item")
                    };
                    q.count -= 1;
                    q.bytes -= charge(old.payload_len());
                    if old.ack.is_some() {
                        q.kept.push_back(old);
                    } else {
                        dropped += 1;
                        gone_items.push(old);
                    }
                }
                None => break,
            }
        }
        let wake = q.wake();
        let rest = Self::insert(&mut q, item, size);
        drop(q);
        drop(rest);
        drop(gone_items);
        if wake {
            let _ = self.wake_tx.try_send(());
        }
        Ok(dropped)
    }

    /// Counts `item` in and queues it: copied into the last run if small, else as it is.
    /// Returns what is left of it to drop once the lock is let go.
    fn insert(q: &mut Queue, item: Outgoing, size: usize) -> Option<Outgoing> {
        q.count += 1;
        q.bytes += charge(size);
        let Some((mode, head, parts)) = small(&item.payload).filter(|_| item.ack.is_none()) else {
            q.entries.push_back(Entry::Item(item));
            return None;
        };
        let run = Self::open_run(q, mode, size);
        run.buf.extend_from_slice(head);
        for p in parts {
            run.buf.extend_from_slice(p);
        }
        run.ends.push(run.buf.len());
        Some(item)
    }

    /// The run a small message of `mode` and `size` bytes goes into: the last one if it
    /// is of that mode and has room, else a new one.
    fn open_run(q: &mut Queue, mode: Option<Mode>, size: usize) -> &mut Building {
        let open = matches!(
            q.entries.back(),
            Some(Entry::Run(run)) if run.mode == mode
                && run.ends.len() < BATCH_MESSAGES
                && run.buf.len() + size <= RUN_BYTES
        );
        if !open {
            let (buf, ends) = q.spare.pop().unwrap_or_else(|| {
                (
                    Vec::with_capacity((size * 16).clamp(4096, RUN_BYTES)),
                    Vec::with_capacity(16),
                )
            });
            q.entries.push_back(Entry::Run(Building {
                mode,
                buf,
                ends,
                dropped: 0,
            }));
        }
        match q.entries.back_mut() {
            Some(Entry::Run(run)) => run,
            _ => unreachable!("the last entry is a run"),
        }
    }

    /// The fast path of a small plain message (under [`SMALL`] bytes, not acknowledged),
    /// given as the two pieces of its wire bytes (`pieces[0] ++ pieces[1]`, what
    /// `Payload::V2` or a `Payload::V1` of `mode` would put on the wire): copied into
    /// the last run under one lock holding, with no [`Outgoing`] made and nothing else
    /// counted. `cap` is the count the policy lets the queue reach (the count bound, or
    /// less under `FullQueue::KeepLatest`). Declines (returns false, nothing queued)
    /// whenever the general path has something to do: the writer has ended, a bound or
    /// `cap` is reached (it waits, drops or fails by the policy), or the queue is empty
    /// while the writer writes nothing (`pending` is zero: the message may be written
    /// at once, see `inline.rs`).
    pub fn try_push_small(
        &self,
        mode: Option<Mode>,
        pieces: [&[u8]; 2],
        pending: &AtomicUsize,
        cap: usize,
    ) -> bool {
        let size = pieces[0].len() + pieces[1].len();
        debug_assert!(size < SMALL + v2::HEADER_LEN);
        let mut q = lock(&self.q);
        if q.gone || !self.fits(&q, size) || q.count >= self.capacity.min(cap) {
            return false;
        }
        if q.is_empty() && pending.load(Ordering::Acquire) == 0 {
            return false;
        }
        let wake = q.wake();
        q.count += 1;
        q.bytes += charge(size);
        let run = Self::open_run(&mut q, mode, size);
        run.buf.extend_from_slice(pieces[0]);
        run.buf.extend_from_slice(pieces[1]);
        run.ends.push(run.buf.len());
        // Where the next message will go, fetched for writing once the lock is let go:
        // the lines of a reused run buffer were last read by the writer's core (its
        // socket write), and a store into them waits for that core to give them up,
        // which the next lock operation would wait for, with the lock held. Fetched
        // now, they arrive while this caller goes on.
        let next = run.buf.as_ptr().wrapping_add(run.buf.len());
        let next_end = run.ends.as_ptr().wrapping_add(run.ends.len()).cast::<u8>();
        drop(q);
        crate::sys::prefetch_for_write(next, PREFETCH_LINES);
        crate::sys::prefetch_for_write(next_end, 1);
        if wake {
            let _ = self.wake_tx.try_send(());
        }
        true
    }

    /// True when the queue is down to half its bounds or less (both of them): a take
    /// that leaves it so wakes a caller waiting for room (see [`Outbox::take`]).
    fn low(&self, q: &Queue) -> bool {
        q.count <= self.capacity / 2 && q.bytes <= self.limit / 2
    }

    /// Moves what the writer is to write next into `out`: the kept acknowledged
    /// messages, then runs and messages from the front, about `max_bytes` and at most
    /// `max_messages` (at least one). Counts them out of both bounds at once and, once
    /// the queue is down to half its bounds ([`Outbox::low`]), wakes a caller waiting
    /// for room: a caller that fills a full queue is woken once per half of it, not
    /// once per take (each wake-up on the writer's processor preempts the writer, and
    /// the caller then fills only what the take freed). Room it does not announce so
    /// is owed: the writer announces it ([`Outbox::announce_room`]) before anything
    /// that may block it (a socket write that cannot go at once, a wait, a reconnect),
    /// so a caller never waits for room that exists while the writer is stuck. Keeps
    /// some of the emptied
    /// run buffers of `spare` for the next runs. Returns how many messages it took.
    ///
    /// The writer calls it again after each write until it takes nothing: no wake-up
    /// is sent for what enters meanwhile. Taking nothing marks the writer asleep (the
    /// next message in wakes it, see [`Outbox::park`]).
    pub fn take(
        &self,
        out: &mut Vec<Outgoing>,
        max_bytes: usize,
        max_messages: usize,
        spare: &mut Vec<Spare>,
    ) -> usize {
        // Allocated and frozen outside the lock, so that a caller never waits long for it.
        let mut entries = Vec::with_capacity(16);
        let mut q = lock(&self.q);
        while q.spare.len() < SPARES {
            match spare.pop() {
                Some(s) => q.spare.push(s),
                None => break,
            }
        }
        let kept = q.kept.len();
        out.extend(q.kept.drain(..));
        let (mut messages, mut bytes, mut charged) = (0, 0, 0);
        while messages < max_messages && bytes < max_bytes {
            let Some(entry) = q.entries.pop_front() else {
                break;
            };
            let (n, b) = match &entry {
                Entry::Run(run) => (run.messages(), run.bytes()),
                Entry::Item(item) => (1, item.payload_len()),
            };
            messages += n;
            bytes += b;
            charged += b + n * MESSAGE_OVERHEAD;
            entries.push(entry);
        }
        q.count -= messages;
        q.bytes = q.bytes.saturating_sub(charged);
        if kept == 0 && entries.is_empty() {
            q.asleep = true;
        }
        let low = self.low(&q);
        drop(q);
        if messages > 0 && self.waiting.load(Ordering::SeqCst) > 0 {
            if low {
                self.owed.store(false, Ordering::SeqCst);
                let _ = self.room_tx.try_send(());
            } else {
                self.owed.store(true, Ordering::SeqCst);
            }
        }
        out.extend(entries.into_iter().map(|e| match e {
            Entry::Run(run) => run.freeze(),
            Entry::Item(item) => item,
        }));
        messages
    }

    /// Takes everything out (the kept acknowledged messages first), and wakes a caller
    /// waiting for room; if `end`, nothing enters afterwards (the writer ends), and
    /// waiting callers learn it.
    pub fn take_all(&self, end: bool) -> Vec<Outgoing> {
        let mut q = lock(&self.q);
        q.gone |= end;
        let mut out: Vec<Outgoing> = q.kept.drain(..).collect();
        out.extend(q.entries.drain(..).map(|e| match e {
            Entry::Run(run) => run.freeze(),
            Entry::Item(item) => item,
        }));
        q.count = 0;
        q.bytes = 0;
        drop(q);
        // Callers waiting for room find it, or find the queue gone.
        if self.waiting.load(Ordering::SeqCst) > 0 {
            let _ = self.room_tx.try_send(());
        }
        out
    }

    /// The writer is about to wait for a wake-up: true if it may (nothing to take; the
    /// next message in wakes it), false if it has something to take first.
    pub fn park(&self) -> bool {
        let mut q = lock(&self.q);
        if q.is_empty() {
            q.asleep = true;
            true
        } else {
            false
        }
    }

    /// Wakes the writer (it took a wake-up it could not act on, or leaves the queue
    /// for the moment with messages in it).
    pub fn wake(&self) {
        let _ = self.wake_tx.try_send(());
    }

    /// Wakes a caller waiting for room that a take freed without waking it (see
    /// [`Outbox::take`]); the writer calls it before it may block.
    pub fn announce_room(&self) {
        if self.owed.swap(false, Ordering::SeqCst) && self.waiting.load(Ordering::SeqCst) > 0 {
            let _ = self.room_tx.try_send(());
        }
    }

    /// A caller begins (`true`) or ends (`false`) waiting for room.
    pub fn wait(&self, on: bool) {
        if on {
            self.waiting.fetch_add(1, Ordering::SeqCst);
        } else {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            // Room may be left for another waiting caller: pass the wake-up on.
            if self.waiting.load(Ordering::SeqCst) > 0 {
                let room = {
                    let q = lock(&self.q);
                    q.bytes < self.limit && q.count < self.capacity
                };
                if room {
                    let _ = self.room_tx.try_send(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2_item(body: &[u8]) -> (Outgoing, usize) {
        let body = Bytes::copy_from_slice(body);
        let header = [0u8; v2::HEADER_LEN];
        let size = v2::HEADER_LEN + body.len();
        (
            Outgoing {
                payload: Payload::V2 { header, body },
                ack: None,
                cut: false,
            },
            size,
        )
    }

    fn wire(items: &[Outgoing]) -> Vec<u8> {
        let mut v = Vec::new();
        for i in items {
            match &i.payload {
                Payload::Run(r) => v.extend_from_slice(&r.bytes),
                Payload::V2 { header, body } => {
                    v.extend_from_slice(header);
                    v.extend_from_slice(body);
                }
                _ => panic!("unexpected payload"),
            }
        }
        v
    }

    #[test]
    fn small_messages_share_a_run_and_keep_their_order_with_large_ones() {
        let o = Outbox::new(1 << 30, 100);
        let big = vec![9u8; SMALL];
        for body in [&b"a"[..], b"bc", &big, b"d"] {
            let (item, size) = v2_item(body);
            assert!(o.try_push(item, size).is_ok());
        }
        assert_eq!(o.len(), 4);
        let mut out = Vec::new();
        assert_eq!(o.take(&mut out, usize::MAX, usize::MAX, &mut Vec::new()), 4);
        assert_eq!(out.len(), 3, "a run, the large message, a run");
        assert!(matches!(&out[0].payload, Payload::Run(r) if r.ends == [15, 31]));
        let h = [0u8; v2::HEADER_LEN];
        let mut want = Vec::new();
        for body in [&b"a"[..], b"bc", &big, b"d"] {
            want.extend_from_slice(&h);
            want.extend_from_slice(body);
        }
        assert_eq!(wire(&out), want);
        assert_eq!((o.len(), o.queued()), (0, 0));
    }

    #[test]
    fn the_bounds_are_exact_and_keep_latest_drops_the_oldest_whole_messages() {
        let o = Outbox::new(1 << 30, 3);
        for body in [b"1", b"2", b"3"] {
            let (item, size) = v2_item(body);
            assert!(o.try_push(item, size).is_ok());
        }
        let (item, size) = v2_item(b"4");
        assert!(matches!(
            o.try_push(item, size),
            Err(Refused::Full(Full::Count, _))
        ));
        let (item, size) = v2_item(b"4");
        assert!(matches!(o.push_keep_latest(item, size, 3), Ok(1)));
        let mut out = Vec::new();
        o.take(&mut out, usize::MAX, usize::MAX, &mut Vec::new());
        let h = [0u8; v2::HEADER_LEN];
        let want: Vec<u8> = [b"2", b"3", b"4"]
            .iter()
            .flat_map(|b| h.iter().chain(b.iter()).copied())
            .collect();
        assert_eq!(wire(&out), want);
        assert!(matches!(&out[0].payload, Payload::Run(r) if r.ends == [15, 30, 45]));
    }

    #[test]
    fn the_byte_budget_admits_one_message_when_empty_and_nothing_once_gone() {
        let o = Outbox::new(100, 10);
        let (item, size) = v2_item(&[1u8; 500]);
        assert!(
            o.try_push(item, size).is_ok(),
            "an empty queue takes any size"
        );
        let (item, size) = v2_item(b"x");
        assert!(matches!(
            o.try_push(item, size),
            Err(Refused::Full(Full::Bytes, _))
        ));
        assert_eq!(o.take_all(true).len(), 1);
        let (item, size) = v2_item(b"x");
        assert!(matches!(o.try_push(item, size), Err(Refused::Gone)));
    }

    #[test]
    fn the_fast_path_declines_an_idle_queue_and_keeps_the_order_and_the_bounds() {
        let o = Outbox::new(1 << 30, 3);
        let pending = AtomicUsize::new(0);
        let h = [7u8; v2::HEADER_LEN];
        // Empty queue, nothing being written: the message may go out at once, so the
        // fast path leaves it to the general one.
        assert!(!o.try_push_small(None, [&h, b"a"], &pending, usize::MAX));
        assert_eq!(o.len(), 0);
        let (item, size) = v2_item(b"first");
        assert!(o.try_push(item, size).is_ok());
        assert!(o.try_push_small(None, [&h, b"bc"], &pending, usize::MAX));
        assert!(o.try_push_small(None, [&h, b"d"], &pending, usize::MAX));
        assert_eq!(
            (o.len(), o.queued()),
            (3, 3 * MESSAGE_OVERHEAD + 3 * 14 + 8)
        );
        // The count bound: a fourth is declined (the general path waits or drops).
        assert!(!o.try_push_small(None, [&h, b"e"], &pending, usize::MAX));
        assert_eq!(o.len(), 3);
        let mut out = Vec::new();
        assert_eq!(o.take(&mut out, usize::MAX, usize::MAX, &mut Vec::new()), 3);
        let mut want = [0u8; v2::HEADER_LEN].to_vec();
        want.extend_from_slice(b"first");
        for b in [&b"bc"[..], b"d"] {
            want.extend_from_slice(&h);
            want.extend_from_slice(b);
        }
        assert_eq!(wire(&out), want);
        assert!(matches!(&out[0].payload, Payload::Run(r) if r.ends == [19, 35, 50]));
        // While the writer writes (pending), an empty queue takes it, in a run of its
        // v1 mode.
        pending.store(1, Ordering::Release);
        assert!(o.try_push_small(Some(Mode::Plain), [b"x", &[0x1f]], &pending, usize::MAX));
        // A keep-latest cap below the count bound: at the cap, declined (the general
        // path drops the oldest).
        assert!(o.try_push_small(Some(Mode::Plain), [b"y", &[0x1f]], &pending, 2));
        assert!(!o.try_push_small(Some(Mode::Plain), [b"z", &[0x1f]], &pending, 2));
        out.clear();
        assert_eq!(o.take(&mut out, usize::MAX, usize::MAX, &mut Vec::new()), 2);
        assert!(
            matches!(&out[0].payload, Payload::Run(r) if r.mode == Some(Mode::Plain) && &r.bytes[..] == b"x\x1fy\x1f")
        );
    }

    #[test]
    fn the_writer_is_woken_once_after_it_found_nothing_and_not_while_it_takes() {
        let o = Outbox::new(1 << 30, 100);
        let pending = AtomicUsize::new(1);
        let h = [0u8; v2::HEADER_LEN];
        let mut out = Vec::new();
        let take = |out: &mut Vec<Outgoing>| {
            out.clear();
            o.take(out, usize::MAX, usize::MAX, &mut Vec::new())
        };
        // Before the writer's first take, the first message wakes it, the next do not.
        let (item, size) = v2_item(b"a");
        assert!(o.try_push(item, size).is_ok());
        assert!(o.try_push_small(None, [&h, b"b"], &pending, usize::MAX));
        assert!(o.wake_rx.try_recv().is_ok());
        assert!(o.wake_rx.try_recv().is_err(), "one wake-up");
        // The writer takes them and writes: what enters meanwhile sends no wake-up
        // (the writer takes again when its write is done).
        assert_eq!(take(&mut out), 2);
        assert!(o.try_push_small(None, [&h, b"c"], &pending, usize::MAX));
        assert!(o.wake_rx.try_recv().is_err());
        assert_eq!(take(&mut out), 1);
        // It finds nothing: asleep, the next message wakes it, once.
        assert_eq!(take(&mut out), 0);
        let (item, size) = v2_item(b"d");
        assert!(o.try_push(item, size).is_ok());
        let (item, size) = v2_item(b"e");
        assert!(o.try_push(item, size).is_ok());
        assert!(o.wake_rx.try_recv().is_ok());
        assert!(o.wake_rx.try_recv().is_err());
        // Before waiting, `park` refuses while messages are left, and agrees once
        // they are taken; then the next message wakes it again.
        assert!(!o.park());
        assert_eq!(take(&mut out), 2);
        assert!(o.park());
        assert!(o.try_push_small(None, [&h, b"f"], &pending, usize::MAX));
        assert!(o.wake_rx.try_recv().is_ok());
        // A keep-latest push into a queue the writer left asleep wakes it too.
        assert_eq!(take(&mut out), 1);
        assert!(o.park());
        let (item, size) = v2_item(b"g");
        assert!(matches!(o.push_keep_latest(item, size, 10), Ok(0)));
        assert!(o.wake_rx.try_recv().is_ok());
    }

    /// A caller waiting for room is woken by the take that leaves the queue at half of
    /// both bounds or less, not by the takes before it; the take that empties the queue
    /// always wakes it.
    #[test]
    fn a_waiting_caller_is_woken_once_the_queue_is_down_to_half() {
        let (item, size) = v2_item(&[5; SMALL]);
        drop(item);
        // By count: 8 slots, 8 queued.
        let o = Outbox::new(1 << 30, 8);
        for _ in 0..8 {
            let (item, size) = v2_item(&[5; SMALL]);
            assert!(o.try_push(item, size).is_ok());
        }
        o.wait(true);
        let mut out = Vec::new();
        let mut take = |o: &Outbox, n: usize| {
            out.clear();
            o.take(&mut out, usize::MAX, n, &mut Vec::new())
        };
        assert_eq!(take(&o, 3), 3);
        assert!(o.room_rx.try_recv().is_err(), "5 of 8 left: not yet");
        // The room is owed: announced once, when the writer may block.
        o.announce_room();
        assert!(o.room_rx.try_recv().is_ok(), "announced");
        o.announce_room();
        assert!(o.room_rx.try_recv().is_err(), "once");
        assert_eq!(take(&o, 1), 1);
        assert!(o.room_rx.try_recv().is_ok(), "4 of 8 left: woken");
        assert_eq!(take(&o, 1), 1);
        assert!(o.room_rx.try_recv().is_ok(), "and again while it waits");
        o.wait(false);
        assert_eq!(take(&o, 8), 3);
        assert!(o.room_rx.try_recv().is_err(), "nobody waits");
        // By bytes: half the count is not enough while more than half the bytes are
        // queued.
        let o = Outbox::new(4 * charge(size), 100);
        for _ in 0..4 {
            let (item, size) = v2_item(&[5; SMALL]);
            assert!(o.try_push(item, size).is_ok());
        }
        o.wait(true);
        assert_eq!(take(&o, 1), 1);
        assert!(o.room_rx.try_recv().is_err(), "3 of 4 messages' bytes left");
        assert_eq!(take(&o, 1), 1);
        assert!(o.room_rx.try_recv().is_ok(), "half the bytes left: woken");
        o.wait(false);
        // A queue too small to halve (one slot) wakes the caller once it is empty.
        let o = Outbox::new(1 << 30, 1);
        let (item, size) = v2_item(b"x");
        assert!(o.try_push(item, size).is_ok());
        o.wait(true);
        assert_eq!(take(&o, 1), 1);
        assert!(o.room_rx.try_recv().is_ok());
        o.wait(false);
    }

    #[test]
    fn the_fast_path_meets_the_byte_budget_exactly_and_nothing_once_gone() {
        let size = v2::HEADER_LEN + 10;
        let o = Outbox::new(2 * charge(size), 100);
        let pending = AtomicUsize::new(1);
        let h = [0u8; v2::HEADER_LEN];
        assert!(o.try_push_small(None, [&h, &[1; 10]], &pending, usize::MAX));
        assert!(o.try_push_small(None, [&h, &[2; 10]], &pending, usize::MAX));
        assert!(!o.try_push_small(None, [&h, &[3; 10]], &pending, usize::MAX));
        assert_eq!(o.queued(), 2 * charge(size));
        assert_eq!(o.take_all(true).len(), 1, "one run");
        assert!(!o.try_push_small(None, [&h, &[4; 10]], &pending, usize::MAX));
    }
}
