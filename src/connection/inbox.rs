//! The incoming queue of one connection ([`Inbox`]): what the readers received and the
//! program has not taken yet, under one lock with its two bounds (bytes and, if set,
//! count), and the ends that keep it open ([`InboxTx`]).
//!
//! Threads: the readers push (one lock holding per socket read, whatever it decoded);
//! the program's threads take (`get_data` and friends, `recv_any`); `Select` waits on
//! [`Inbox::ready`].
//!
//! The queue has two parts: the readers push at the back (`State::queue`, under the
//! queue's lock); takers take from the front (`Front`, under a lock of its own that only
//! takers hold), which they refill with everything the back holds, in one lock holding,
//! whenever it runs empty. A taker then locks the queue's lock once per batch, not once
//! per message, and that lock's cache line no longer moves between the reader and the
//! taker at each message. The bounds count both parts: a message taken from the front
//! gives its room back when the front runs empty, or, while a reader waits for room, as
//! soon as the taken ones make the low-water mark (below), so the reader is woken at the
//! same take as without the front.
//!
//! The wake-ups are few by design:
//! - a taker waits on a condition variable only when the queue is empty, and reads the
//!   clock only then (for its deadline); a push wakes waiting takers once per read;
//! - a reader that found no room waits until the queue has drained to its low-water
//!   mark (half of each bound), not for the next take: it then pushes many messages at
//!   once instead of one per take, and the two threads do not run in lock-step;
//! - `Select` and `recv_any` see a readiness channel that holds one token while messages
//!   wait (armed when the queue stops being empty, emptied when it becomes empty), and
//!   is disconnected once the queue is closed.
//!
//! The queue closes when the last [`InboxTx`] goes (the writer and every reader hold
//! one): waiting takers then get what is left, then the end.

use std::collections::VecDeque;
use std::iter::Peekable;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};

#[cfg(any(target_os = "linux", target_os = "android"))]
use super::reader::ReadSide;
use super::vocab::Incoming;
use crate::sync::{lock, try_lock};

use super::vocab::charge;

/// A queue drained empty gives back its slots beyond this many (after a burst, an idle
/// connection does not keep them).
const KEEP_SLOTS: usize = 1024;

/// Why a take found nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Empty {
    /// Nothing waits now (or the timeout passed); more may come.
    Now,
    /// Closed and drained: nothing will come.
    Gone,
}

/// What the lock guards.
struct State {
    /// The back of the queue: what the readers pushed since the front was last refilled.
    queue: VecDeque<Incoming>,
    /// Messages counted against the count bound: those of `queue`, those of the front,
    /// and those taken from the front that have not given their room back yet.
    count: usize,
    /// Bytes of the same messages, as charged ([`charge`]).
    bytes: usize,
    /// Live [`InboxTx`]; the queue is closed at zero.
    senders: usize,
    /// Takers waiting on `Inbox::data`.
    takers: usize,
    /// Of those, how many a push has already woken (and that have not taken the lock
    /// back yet): a push wakes only takers beyond these. It never counts more than the
    /// takers that are no longer asleep on `data` (woken, timed out or woken early), so
    /// a sleeping taker is always woken; it may count fewer (a woken taker that another
    /// wake-up reached first), which costs at most a wake-up nobody needed.
    woken: usize,
    /// While the reader waits for room: the charge of the message it holds.
    reader_needs: Option<usize>,
    /// The readiness channel's sender; dropped when the queue closes.
    ready_tx: Option<Sender<()>>,
    /// True while a token waits in the readiness channel.
    armed: bool,
    /// Run once when the queue closes (see [`InboxTx::at_close`]).
    at_close: Option<Box<dyn FnOnce() + Send>>,
    /// The read role (Linux and Android, see `direct.rs`).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    role: RoleSlot,
}

/// The read role of the current link (see `direct.rs`), under the queue's lock: a taker
/// waits for a message or for the role at once, and no wake-up is lost between the two.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[derive(Default)]
struct RoleSlot {
    /// The link's read side while nobody holds it; `None` while a thread does, or while
    /// the link's reader thread does not share it.
    side: Option<Box<ReadSide>>,
    /// Takers waiting that would take the read side ([`Inbox::take_or_side`]).
    side_takers: usize,
    /// The read side was given back for those takers: the reader thread leaves it to
    /// them (while some wait).
    offered: bool,
    /// The reader thread waits on `Inbox::back`, to be woken when the side comes back.
    reader_waits: bool,
    /// The reader thread is in [`Inbox::reader_take_side`] (it leaves only with the
    /// read side): it delivers what a caller left undelivered as soon as it takes the
    /// side (see `direct.rs`), whereas a reader thread waiting for bytes in the socket
    /// would not see it until bytes come.
    reader_taking: bool,
    /// When a caller last gave the read side back, if one did since the reader thread
    /// last took it.
    caller_left: Option<Instant>,
}

/// The front of the queue, under the takers' own lock (see the module doc).
#[derive(Default)]
struct Front {
    /// The oldest messages, moved from `State::queue` in one go.
    queue: VecDeque<Incoming>,
    /// Messages taken from `queue` whose room is not given back yet (`State::count`
    /// still counts them), and their bytes as charged.
    taken: usize,
    taken_bytes: usize,
    /// While a reader waits for room: how many messages and bytes `taken` must reach
    /// for the queue to have drained to its low-water mark (then a take gives the room
    /// back and wakes the reader).
    due: Option<(usize, usize)>,
}

/// What takers use at each take, on cache lines of their own: away from the queue's
/// lock, which the readers write at each push.
#[repr(align(64))]
struct Taking {
    /// The front of the queue (locked before `Inbox::state` when both are).
    front: Mutex<Front>,
    /// True while a reader waits for room (`State::reader_needs` is set): a taker then
    /// computes when to give room back ([`Front::due`]).
    reader_waits: AtomicBool,
}

/// What [`Inbox::take_or_side`] got.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) enum Got {
    Message(Incoming),
    /// The read role: read the socket, then give it back ([`Inbox::caller_put_back`]).
    Side(Box<ReadSide>),
}

#[cfg(any(target_os = "linux", target_os = "android"))]
impl From<Incoming> for Got {
    fn from(item: Incoming) -> Self {
        Got::Message(item)
    }
}

/// After a caller gave the read side back, the reader thread leaves it this long before
/// it takes it again to wait for bytes itself: a program that reads again within that
/// time (a request and its answer, in a loop) finds it free, and the reader thread is
/// not woken for each message. What comes meanwhile waits in the socket, where a caller
/// of `get_data` reads it at once; other takers (`Select`, `recv_any`, `try_get_data`)
/// see it at most this much later.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) const LINGER: Duration = Duration::from_millis(1);

/// The incoming queue; see the module doc.
pub(crate) struct Inbox {
    taking: Taking,
    state: Mutex<State>,
    /// Wakes takers: a message came, or the queue closed (or the read role is offered).
    data: Condvar,
    /// Wakes the reader thread waiting for the read role.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    back: Condvar,
    /// Wakes the reader waiting for room (a coalesced signal: capacity 1). A channel, not
    /// a condition variable, so that the reader can wait on shutdown at the same time.
    room_tx: Sender<()>,
    room_rx: Receiver<()>,
    /// One token while messages wait; disconnected once closed (for `Select`).
    ready_rx: Receiver<()>,
    /// The byte budget (`Config::incoming_bytes`).
    limit: usize,
    /// The count bound (`Config::incoming_capacity`; `usize::MAX` for none).
    capacity: usize,
}

impl Inbox {
    /// An empty, open queue of `limit` bytes and at most `capacity` messages, and its
    /// first sender.
    pub fn new(limit: usize, capacity: Option<usize>) -> (Arc<Inbox>, InboxTx) {
        let (room_tx, room_rx) = crossbeam_channel::bounded(1);
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
        let inbox = Arc::new(Inbox {
            taking: Taking {
                front: Mutex::new(Front::default()),
                reader_waits: AtomicBool::new(false),
            },
            state: Mutex::new(State {
                queue: VecDeque::new(),
                count: 0,
                bytes: 0,
                senders: 1,
                takers: 0,
                woken: 0,
                reader_needs: None,
                ready_tx: Some(ready_tx),
                armed: false,
                at_close: None,
                #[cfg(any(target_os = "linux", target_os = "android"))]
                role: RoleSlot::default(),
            }),
            data: Condvar::new(),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            back: Condvar::new(),
            room_tx,
            room_rx,
            ready_rx,
            limit,
            capacity: capacity.unwrap_or(usize::MAX).max(1),
        });
        let tx = InboxTx(inbox.clone());
        (inbox, tx)
    }

    /// True when a reader waiting to put in a message of charge `cost` is to be woken:
    /// the queue has drained to half of each bound and the message fits, or is empty.
    fn drained(&self, s: &State, cost: usize) -> bool {
        s.count == 0
            || (s.count <= self.capacity / 2
                && s.bytes <= self.limit / 2
                && s.bytes.saturating_add(cost) <= self.limit)
    }

    /// Marks the reader as waiting to put in a message of charge `cost` (`None`: not
    /// waiting).
    fn set_needs(&self, s: &mut State, needs: Option<usize>) {
        s.reader_needs = needs;
        self.taking
            .reader_waits
            .store(needs.is_some(), Ordering::Relaxed);
    }

    /// Moves messages from `items` into the queue, in order, as many as fit now; returns
    /// how many went and how many of them came in an acknowledged mode. Wakes waiting
    /// takers once. If the next message does not fit, the reader is marked as waiting:
    /// call [`wait_for_room`](Self::wait_for_room) next.
    pub fn push_some<I: Iterator<Item = Incoming>>(&self, items: &mut Peekable<I>) -> (usize, u64) {
        let mut s = lock(&self.state);
        let st = &mut *s;
        // The counters stay in registers while the batch goes in.
        let (mut count, mut bytes, mut acked) = (st.count, st.bytes, 0);
        let (capacity, limit) = (self.capacity, self.limit);
        // A message may go in now if it is within both bounds, or into an empty queue
        // whatever its size.
        let fits = |count: usize, bytes: usize, item: &Incoming| {
            count == 0 || (count < capacity && bytes.saturating_add(charge(item.0.len())) <= limit)
        };
        while let Some(item) = items.next_if(|item| fits(count, bytes, item)) {
            bytes += charge(item.0.len());
            count += 1;
            acked += u64::from(item.1.is_some_and(|m| m.is_acked()));
            st.queue.push_back(item);
        }
        let n = count - st.count;
        (st.count, st.bytes) = (count, bytes);
        if let Some(item) = items.peek() {
            let cost = charge(item.0.len());
            self.set_needs(&mut s, Some(cost));
        }
        self.pushed(s, n);
        (n, acked)
    }

    /// Moves all of a batch into the queue at once if it fits whole: `n` messages of
    /// `charged` bytes in all (as charged), which `items` yields (called only if they
    /// fit). False, with nothing taken, if they do not (then
    /// [`push_some`](Self::push_some) puts in what fits, message by message). The
    /// reader's common case, a read's worth of data that the queue has room for, then
    /// costs one bounds check, not one a message.
    pub fn push_all<I: Iterator<Item = Incoming>>(
        &self,
        n: usize,
        charged: usize,
        items: impl FnOnce() -> I,
    ) -> bool {
        let mut s = lock(&self.state);
        let st = &mut *s;
        // Within both bounds after the last message: each one was (`push_some`'s rule
        // lets a message larger than the budget into an empty queue too; that one goes
        // there).
        let count = st.count.saturating_add(n);
        let bytes = st.bytes.saturating_add(charged);
        if count > self.capacity || bytes > self.limit {
            return false;
        }
        let before = st.queue.len();
        st.queue.reserve(n);
        st.queue.extend(items());
        debug_assert_eq!(st.queue.len() - before, n, "the batch is as counted");
        (st.count, st.bytes) = (count, bytes);
        self.pushed(s, n);
        true
    }

    /// After a push of `n` messages, the lock `s` still held: arms the readiness
    /// channel and wakes waiting takers, once; releases the lock.
    #[inline]
    fn pushed(&self, mut s: MutexGuard<'_, State>, n: usize) {
        if n > 0 {
            if !s.armed {
                if let Some(tx) = &s.ready_tx {
                    let _ = tx.try_send(());
                    s.armed = true;
                }
            }
            // Takers already woken by an earlier push (that have not run yet) are not
            // woken again: on a stream the reader pushes more often than a woken
            // taker gets the processor, and each wake-up is a system call.
            let asleep = s.takers - s.woken;
            let all = asleep > 1 && n > 1;
            match asleep {
                0 => {}
                _ if all => s.woken = s.takers,
                _ => s.woken += 1,
            }
            drop(s);
            match asleep {
                0 => {}
                _ if all => self.data.notify_all(),
                _ => self.data.notify_one(),
            }
        }
    }

    /// The room left now: how many more messages the count bound lets in, and how many
    /// more bytes (as charged) the byte budget does; and whether the reader thread waits
    /// for the read side (it then stays in [`reader_take_side`](Self::reader_take_side)
    /// until it gets it).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub fn room(&self) -> (usize, usize, bool) {
        let s = lock(&self.state);
        (
            self.capacity.saturating_sub(s.count),
            self.limit.saturating_sub(s.bytes),
            s.role.reader_taking,
        )
    }

    /// Waits until the reader may push again (the queue drained to its low-water mark),
    /// woken by takers; false if `stop` fired first.
    pub fn wait_for_room(&self, stop: &Receiver<()>) -> bool {
        loop {
            {
                let s = lock(&self.state);
                if s.reader_needs.is_none() {
                    // A wake-up sent while the reader was not waiting yet is spent.
                    let _ = self.room_rx.try_recv();
                    return true;
                }
            }
            select! {
                recv(self.room_rx) -> _ => {}
                recv(stop) -> _ => {
                    self.set_needs(&mut lock(&self.state), None);
                    return false;
                }
            }
        }
    }

    /// Settles the front with the back, both locks held: gives back the room of what
    /// was taken from the front, wakes a waiting reader at the low-water mark (else
    /// computes when the front's takes will make it), refills an empty front with
    /// everything the back holds, and disarms the readiness channel when both are
    /// empty.
    #[inline(never)]
    fn settle(&self, f: &mut Front, s: &mut State) {
        s.count -= std::mem::take(&mut f.taken);
        s.bytes -= std::mem::take(&mut f.taken_bytes);
        f.due = None;
        if let Some(cost) = s.reader_needs {
            if self.drained(s, cost) {
                self.set_needs(s, None);
                let _ = self.room_tx.try_send(());
            } else {
                // The reader pushes nothing while it waits, so the count and the bytes
                // fall only by the front's takes (should they not, the next settling
                // computes this again; the front running empty settles in any case).
                let by_count = s.count.saturating_sub(self.capacity / 2);
                let by_bytes = s
                    .bytes
                    .saturating_sub(self.limit / 2)
                    .max(s.bytes.saturating_add(cost).saturating_sub(self.limit));
                f.due = Some((by_count, by_bytes));
            }
        }
        if f.queue.is_empty() {
            if f.queue.capacity() > KEEP_SLOTS {
                f.queue.shrink_to(KEEP_SLOTS);
            }
            if s.queue.is_empty() {
                if s.armed {
                    let _ = self.ready_rx.try_recv();
                    s.armed = false;
                }
                if s.queue.capacity() > KEEP_SLOTS {
                    s.queue.shrink_to(KEEP_SLOTS);
                }
            } else {
                std::mem::swap(&mut f.queue, &mut s.queue);
            }
        }
    }

    /// Takes the oldest message from the front, if it holds one, counting its room as
    /// taken; settles (locking the back) when that empties the front, or when the takes
    /// made a waiting reader's low-water mark. With whether more wait after it.
    /// (Always inlined: the message then goes to the caller's return slot without a
    /// copy through this function's, which cost a store-forwarding stall at each take
    /// of a stream of small messages.)
    #[inline(always)]
    fn pop(&self, f: &mut Front) -> Option<(Incoming, bool)> {
        let item = f.queue.pop_front()?;
        f.taken += 1;
        f.taken_bytes += charge(item.0.len());
        let due = match f.due {
            Some((count, bytes)) => f.taken >= count && f.taken_bytes >= bytes,
            None => self.taking.reader_waits.load(Ordering::Relaxed),
        };
        if f.queue.is_empty() || due {
            self.settle(f, &mut lock(&self.state));
        }
        let more = !f.queue.is_empty();
        Some((item, more))
    }

    /// The oldest message, if one waits (`None` also once the queue is closed and
    /// empty): `get_data`'s first look, with nothing else to return.
    #[inline]
    pub fn take_now(&self) -> Option<Incoming> {
        let mut f = lock(&self.taking.front);
        match self.pop(&mut f) {
            Some((item, _)) => Some(item),
            None => self
                .take_locked(&mut f, &mut lock(&self.state))
                .map(|(item, _)| item),
        }
    }

    /// The oldest message, if one waits; with whether more wait after it.
    pub fn try_take(&self) -> Result<(Incoming, bool), Empty> {
        let mut f = lock(&self.taking.front);
        if let Some(got) = self.pop(&mut f) {
            return Ok(got);
        }
        let mut s = lock(&self.state);
        match self.take_locked(&mut f, &mut s) {
            Some(got) => Ok(got),
            None if s.senders == 0 => Err(Empty::Gone),
            None => Err(Empty::Now),
        }
    }

    /// Takes the oldest message with both locks held and the front found empty:
    /// refills the front from the back, takes from it, and settles again if that
    /// emptied it.
    fn take_locked(&self, f: &mut Front, s: &mut State) -> Option<(Incoming, bool)> {
        self.settle(f, s);
        let item = f.queue.pop_front()?;
        f.taken += 1;
        f.taken_bytes += charge(item.0.len());
        if f.queue.is_empty()
            || f.due
                .is_some_and(|(c, b)| f.taken >= c && f.taken_bytes >= b)
        {
            self.settle(f, s);
        }
        let more = !f.queue.is_empty();
        Some((item, more))
    }

    /// The oldest message, waiting for one as long as it takes (`None`), or at most
    /// `timeout`. The clock is read only when the queue is empty. (On Linux and Android
    /// `get_data` waits with [`take_or_side`](Self::take_or_side) instead.)
    #[cfg_attr(any(target_os = "linux", target_os = "android"), allow(dead_code))]
    pub fn take(&self, timeout: Option<Duration>) -> Result<Incoming, Empty> {
        self.wait_for(timeout, |_| None, |_, _| {})
    }

    /// Waits until a message can be taken (it is taken) or `other` gives something (it
    /// runs with the queue's lock held, after the front and the back were found empty),
    /// the queue is closed (`Gone`, once both are empty and `other` gave nothing), or
    /// `timeout` passes (`Now`). `waiting(state, true)` runs as the taker starts to
    /// wait, `waiting(state, false)` as it stops. The clock is read only if it waits.
    fn wait_for<T: From<Incoming>>(
        &self,
        timeout: Option<Duration>,
        mut other: impl FnMut(&mut State) -> Option<T>,
        mut waiting: impl FnMut(&mut State, bool),
    ) -> Result<T, Empty> {
        let mut deadline = None;
        'again: loop {
            let mut f = lock(&self.taking.front);
            if let Some((item, _)) = self.pop(&mut f) {
                return Ok(item.into());
            }
            let mut s = lock(&self.state);
            loop {
                if let Some((item, _)) = self.take_locked(&mut f, &mut s) {
                    return Ok(item.into());
                }
                // Waiting takers do not hold the front: others may take meanwhile.
                drop(f);
                if let Some(got) = other(&mut s) {
                    return Ok(got);
                }
                if s.senders == 0 {
                    return Err(Empty::Gone);
                }
                let at =
                    *deadline.get_or_insert_with(|| timeout.map(|t| Instant::now().checked_add(t)));
                let left = match at {
                    None | Some(None) => None,
                    Some(Some(at)) => {
                        let left = at.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            return Err(Empty::Now);
                        }
                        Some(left)
                    }
                };
                s = self.wait_on_data(s, left, &mut waiting);
                // The front is locked before the queue's lock: with this one held, only
                // if it is free; else from the start.
                f = match try_lock(&self.taking.front) {
                    Some(f) => f,
                    None => {
                        drop(s);
                        continue 'again;
                    }
                };
            }
        }
    }

    /// Waits on `data` once (at most `left`), counted as a waiting taker.
    fn wait_on_data<'a>(
        &self,
        mut s: MutexGuard<'a, State>,
        left: Option<Duration>,
        waiting: &mut impl FnMut(&mut State, bool),
    ) -> MutexGuard<'a, State> {
        s.takers += 1;
        waiting(&mut s, true);
        s = match left {
            None => self.data.wait(s).unwrap_or_else(|p| p.into_inner()),
            Some(left) => {
                self.data
                    .wait_timeout(s, left)
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
        };
        s.takers -= 1;
        s.woken = s.woken.saturating_sub(1).min(s.takers);
        waiting(&mut s, false);
        s
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        let f = lock(&self.taking.front);
        f.queue.len() + lock(&self.state).queue.len()
    }

    /// Bytes of the messages waiting, as charged.
    pub fn bytes(&self) -> usize {
        let f = lock(&self.taking.front);
        lock(&self.state).bytes - f.taken_bytes
    }

    /// True when a message waits.
    pub fn has_data(&self) -> bool {
        let f = lock(&self.taking.front);
        !f.queue.is_empty() || !lock(&self.state).queue.is_empty()
    }

    /// True while the reader waits for room: what the peer sent next (acknowledgements
    /// too) waits in the socket until the program reads.
    pub fn reader_waiting(&self) -> bool {
        lock(&self.state).reader_needs.is_some()
    }

    /// Ready (for `Select`) while a message waits, or once the queue is closed.
    pub fn ready(&self) -> &Receiver<()> {
        &self.ready_rx
    }
}

/// The read role (see `direct.rs` for how the threads share it).
#[cfg(any(target_os = "linux", target_os = "android"))]
impl Inbox {
    /// The reader thread shares its link's read side from now on (takers waiting for
    /// it are woken).
    pub fn install_side(&self, side: Box<ReadSide>) {
        let mut s = lock(&self.state);
        s.role.side = Some(side);
        s.role.caller_left = None;
        s.role.offered = s.role.side_takers > 0;
        let offer = s.role.offered;
        drop(s);
        if offer {
            self.data.notify_all();
        }
    }

    /// The oldest message, or the read side if it is free and no message waits (only
    /// if `want_side`), waiting for either as [`take`](Self::take) waits.
    pub fn take_or_side(&self, timeout: Option<Duration>, want_side: bool) -> Result<Got, Empty> {
        self.wait_for(
            timeout,
            |s| {
                if want_side {
                    return Self::usable_side(s).map(Got::Side);
                }
                None
            },
            |s, starts| {
                if !want_side {
                    return;
                }
                let r = &mut s.role;
                if starts {
                    r.side_takers += 1;
                    return;
                }
                r.side_takers -= 1;
                if r.side_takers == 0 && r.offered {
                    // Nobody is left to take what was offered: the reader thread does.
                    r.offered = false;
                    if std::mem::take(&mut r.reader_waits) {
                        self.back.notify_one();
                    }
                }
            },
        )
    }

    /// The read side, if it is free and its link's reading is not over.
    fn usable_side(s: &mut State) -> Option<Box<ReadSide>> {
        match &s.role.side {
            Some(side) if side.seen.is_none() => {
                s.role.offered = false;
                s.role.side.take()
            }
            _ => None,
        }
    }

    /// The read side if it is free (an acknowledged send looking for its answer).
    pub fn try_take_side(&self) -> Option<Box<ReadSide>> {
        Self::usable_side(&mut lock(&self.state))
    }

    /// A caller gives the read side back: to another taker that waits for it, else to
    /// the reader thread (woken if it waits; it takes the side once [`LINGER`] has
    /// passed, or at once if the caller met the end of the link or `linger` is false).
    ///
    /// With `timed` (and the linger), the side keeps the moment it was given back
    /// (`ReadSide::given_back`, see `direct::hand_over`).
    pub fn caller_put_back(&self, mut side: Box<ReadSide>, linger: bool, timed: bool) {
        let left = linger.then(Instant::now);
        side.given_back = left.filter(|_| timed);
        let mut s = lock(&self.state);
        let over = side.seen.is_some();
        let r = &mut s.role;
        r.side = Some(side);
        r.caller_left = left;
        r.offered = !over && r.side_takers > 0;
        let offer = r.offered;
        // What the caller met is for the reader thread at once, even while it lingers.
        // Without the linger (`linger` false) the reader thread takes it at once: woken
        // also from a linger of an earlier caller.
        let wake_reader = over || (!offer && (r.reader_waits || !linger));
        if wake_reader {
            r.reader_waits = false;
        }
        drop(s);
        if offer {
            self.data.notify_all();
        }
        if wake_reader {
            self.back.notify_one();
        }
    }

    /// The reader thread takes the read side: at once if a caller met the end of the
    /// link; else once [`LINGER`] has passed since a caller last gave it back (whether
    /// a caller holds it again meanwhile or not: a program reading in a loop wakes the
    /// reader thread about once per `LINGER`, not once per message), and it is free and
    /// not offered to waiting takers. Callers hold it only while they read (a blocking
    /// read that bytes, its timeout or a shutdown of the socket ends) and deliver (which
    /// never waits).
    pub fn reader_take_side(&self) -> Box<ReadSide> {
        let mut s = lock(&self.state);
        s.role.reader_taking = true;
        loop {
            let r = &mut s.role;
            let over = r.side.as_ref().is_some_and(|side| side.seen.is_some());
            let linger = r
                .caller_left
                .and_then(|at| at.checked_add(LINGER))
                .and_then(|end| end.checked_duration_since(Instant::now()))
                .filter(|left| !left.is_zero() && !over);
            let free = r.side.is_some() && (over || !r.offered || r.side_takers == 0);
            if free && linger.is_none() {
                r.offered = false;
                r.caller_left = None;
                if let Some(side) = r.side.take() {
                    r.reader_taking = false;
                    return side;
                }
            }
            s = match linger {
                Some(left) => {
                    self.back
                        .wait_timeout(s, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                None => {
                    r.reader_waits = true;
                    self.back.wait(s).unwrap_or_else(|p| p.into_inner())
                }
            };
        }
    }

    /// The reader thread gives the read side to the takers that wait for it, if any do
    /// (else it gets it back): the first of them to find the queue empty reads next,
    /// and the reader thread leaves the side to the callers for [`LINGER`], as after a
    /// caller gave it back. So a program that fell behind and had the reader thread
    /// read for it (it was away longer than `LINGER`) reads for itself again once it
    /// catches up, instead of waiting for the reader thread to wake it at each read.
    pub fn reader_yield(&self, side: Box<ReadSide>) -> Result<(), Box<ReadSide>> {
        let mut s = lock(&self.state);
        let r = &mut s.role;
        if r.side_takers == 0 {
            return Err(side);
        }
        r.side = Some(side);
        r.offered = true;
        r.caller_left = Some(Instant::now());
        drop(s);
        self.data.notify_all();
        Ok(())
    }

    /// The reader thread gives the read side back, having found the socket empty.
    /// Returns true if takers wait for it (they are woken): the reader thread then waits
    /// for it to come back rather than for bytes.
    pub fn reader_put_back(&self, side: Box<ReadSide>) -> bool {
        let mut s = lock(&self.state);
        s.role.side = Some(side);
        s.role.offered = s.role.side_takers > 0;
        let offer = s.role.offered;
        drop(s);
        if offer {
            self.data.notify_all();
        }
        offer
    }
}

/// A sender's hold on the queue: the writer keeps one for the connection's life and
/// hands a clone to each reader. The queue closes when the last one goes.
pub(crate) struct InboxTx(Arc<Inbox>);

impl InboxTx {
    /// The queue.
    #[cfg(test)]
    pub fn inbox(&self) -> &Inbox {
        &self.0
    }

    /// Runs `f` when the queue closes (when the last sender goes, which this one's being
    /// alive shows has not happened yet), after the takers are woken. The writer ends
    /// the events this way once the link is down for good, so that a program that saw
    /// the events end finds the queue closed too, not a reader still draining its socket.
    pub fn at_close(&self, f: impl FnOnce() + Send + 'static) {
        lock(&self.0.state).at_close = Some(Box::new(f));
    }
}

impl Clone for InboxTx {
    fn clone(&self) -> Self {
        lock(&self.0.state).senders += 1;
        InboxTx(self.0.clone())
    }
}

impl Drop for InboxTx {
    fn drop(&mut self) {
        let mut s = lock(&self.0.state);
        s.senders -= 1;
        if s.senders == 0 {
            // Disconnects the readiness channel: `Select` sees the end.
            s.ready_tx = None;
            let at_close = s.at_close.take();
            drop(s);
            self.0.data.notify_all();
            if let Some(f) = at_close {
                f();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use crate::protocol::Mode;
    use std::thread;

    const LONG: Duration = Duration::from_secs(20);

    fn msg(i: usize, len: usize) -> Incoming {
        let mut b = vec![0u8; len.max(8)];
        b[..8].copy_from_slice(&(i as u64).to_le_bytes());
        (Message::Bytes(b.into()), None)
    }

    fn id(item: &Incoming) -> u64 {
        match &item.0 {
            Message::Bytes(b) => u64::from_le_bytes(b[..8].try_into().unwrap()),
            _ => panic!("not bytes"),
        }
    }

    fn push(inbox: &Inbox, items: Vec<Incoming>) -> (usize, u64) {
        inbox.push_some(&mut items.into_iter().peekable())
    }

    #[test]
    fn both_bounds_hold_and_a_large_message_goes_into_an_empty_queue() {
        let (inbox, _tx) = Inbox::new(10 * charge(8), Some(3));
        // The count bound.
        assert_eq!(push(&inbox, (0..5).map(|i| msg(i, 8)).collect()).0, 3);
        assert!(inbox.reader_waiting());
        assert_eq!((inbox.len(), inbox.bytes()), (3, 3 * charge(8)));
        let (inbox, _tx) = Inbox::new(2 * charge(8), None);
        // The byte bound.
        assert_eq!(push(&inbox, (0..5).map(|i| msg(i, 8)).collect()).0, 2);
        // Larger than the budget: only into an empty queue.
        let (inbox, _tx) = Inbox::new(100, None);
        let mut items = vec![msg(0, 1000), msg(1, 1000)].into_iter().peekable();
        assert_eq!(inbox.push_some(&mut items).0, 1);
        assert_eq!(id(&inbox.try_take().unwrap().0), 0);
        assert_eq!(inbox.push_some(&mut items).0, 1);
        assert_eq!(inbox.bytes(), charge(1000));
    }

    #[test]
    fn a_batch_goes_in_whole_only_within_both_bounds() {
        let batch = |from: usize, n: usize| (from..from + n).map(|i| msg(i, 8)).collect::<Vec<_>>();
        let (inbox, _tx) = Inbox::new(6 * charge(8), Some(4));
        let b = batch(0, 3);
        assert!(inbox.push_all(3, 3 * charge(8), || b.into_iter()));
        assert_eq!((inbox.len(), inbox.bytes()), (3, 3 * charge(8)));
        assert!(
            inbox.ready().try_recv().is_ok(),
            "the readiness channel is armed"
        );
        // One more than the count bound lets in: nothing goes, the batch is not taken.
        assert!(
            !inbox.push_all(2, 2 * charge(8), || -> std::vec::IntoIter<Incoming> {
                panic!("taken from a batch that does not fit")
            })
        );
        assert!(!inbox.reader_waiting());
        // Within the count bound, beyond the bytes.
        let (bytes, _tx2) = Inbox::new(2 * charge(8), None);
        assert!(!bytes.push_all(3, 3 * charge(8), || batch(0, 3).into_iter()));
        assert_eq!(bytes.len(), 0);
        // A message larger than the budget goes into an empty queue by `push_some` only.
        assert!(!bytes.push_all(1, charge(1000), || vec![msg(0, 1000)].into_iter()));
        // Messages come out in order, after what was there.
        assert!(inbox.push_all(1, charge(8), || batch(3, 1).into_iter()));
        for i in 0..4 {
            assert_eq!(id(&inbox.try_take().unwrap().0), i);
        }
        assert_eq!((inbox.len(), inbox.bytes()), (0, 0));
    }

    #[test]
    fn a_batch_wakes_a_waiting_taker() {
        let (inbox, _tx) = Inbox::new(1 << 20, None);
        let taker = {
            let inbox = inbox.clone();
            thread::spawn(move || inbox.take(Some(LONG)).map(|item| id(&item)))
        };
        // Until the taker waits (then the batch must wake it).
        let started = Instant::now();
        while lock(&inbox.state).takers == 0 {
            assert!(started.elapsed() < LONG, "the taker never waited");
            thread::yield_now();
        }
        assert!(inbox.push_all(2, 2 * charge(8), || vec![msg(7, 8), msg(8, 8)].into_iter()));
        assert_eq!(taker.join().unwrap(), Ok(7));
    }

    #[test]
    fn acknowledged_messages_are_counted() {
        let (inbox, _tx) = Inbox::new(1 << 20, None);
        let items = vec![
            (Message::from("a"), Some(Mode::PlainAck)),
            (Message::from("b"), Some(Mode::Plain)),
            (Message::from("c"), Some(Mode::Base85Ack)),
            (Message::from("d"), None),
        ];
        assert_eq!(push(&inbox, items), (4, 2));
    }

    #[test]
    fn a_waiting_reader_is_woken_at_the_low_water_mark_only() {
        let (inbox, _tx) = Inbox::new(usize::MAX, Some(8));
        let (_stop_tx, stop) = crossbeam_channel::bounded::<()>(0);
        let mut items = (0..16).map(|i| msg(i, 8)).peekable();
        assert_eq!(inbox.push_some(&mut items).0, 8);
        for taken in 1..=4 {
            assert!(
                inbox.reader_waiting(),
                "woken after {taken} takes, before half"
            );
            inbox.try_take().unwrap();
        }
        // Four left, half the bound: the reader is free to go on.
        assert!(!inbox.reader_waiting());
        assert!(
            inbox.room_rx.try_recv().is_ok(),
            "the reader got its wake-up"
        );
        assert!(inbox.wait_for_room(&stop));
        assert_eq!(inbox.push_some(&mut items).0, 4);
    }

    #[test]
    fn what_takers_moved_to_the_front_still_counts_against_both_bounds() {
        let (inbox, _tx) = Inbox::new(usize::MAX, Some(8));
        let (_stop_tx, stop) = crossbeam_channel::bounded::<()>(0);
        let mut items = (0..20).map(|i| msg(i, 8)).peekable();
        assert_eq!(inbox.push_some(&mut items).0, 8);
        // The first take moves the eight to the front: the count bound still holds.
        assert_eq!(id(&inbox.try_take().unwrap().0), 0);
        assert_eq!(inbox.push_some(&mut items).0, 0);
        assert_eq!((inbox.len(), inbox.bytes()), (7, 7 * charge(8)));
        assert!(inbox.has_data());
        for i in 1..4 {
            assert!(inbox.reader_waiting(), "woken after {i} takes, before half");
            assert_eq!(id(&inbox.try_take().unwrap().0), i);
        }
        // Four taken from the front: half the bound, the reader goes on.
        assert!(!inbox.reader_waiting());
        assert!(inbox.wait_for_room(&stop));
        assert_eq!(inbox.push_some(&mut items).0, 4);
        assert_eq!(inbox.len(), 8);
        for i in 4..12 {
            assert_eq!(id(&inbox.try_take().unwrap().0), i, "in order");
        }
        assert_eq!((inbox.len(), inbox.bytes()), (0, 0));
        assert!(!inbox.has_data());
        // The byte bound likewise.
        let (inbox, _tx) = Inbox::new(4 * charge(8), None);
        let mut items = (0..8).map(|i| msg(i, 8)).peekable();
        assert_eq!(inbox.push_some(&mut items).0, 4);
        assert_eq!(id(&inbox.try_take().unwrap().0), 0);
        assert_eq!(inbox.push_some(&mut items).0, 0);
        assert_eq!(id(&inbox.try_take().unwrap().0), 1);
        assert_eq!(inbox.push_some(&mut items).0, 2, "drained to half");
        assert_eq!(inbox.bytes(), 4 * charge(8));
    }

    #[test]
    fn a_reader_waiting_for_room_takes_the_wake_up_or_the_stop() {
        let (inbox, _tx) = Inbox::new(usize::MAX, Some(2));
        let (stop_tx, stop) = crossbeam_channel::bounded::<()>(0);
        let mut items = (0..4).map(|i| msg(i, 8)).peekable();
        assert_eq!(inbox.push_some(&mut items).0, 2);
        thread::scope(|sc| {
            let waiting = sc.spawn(|| inbox.wait_for_room(&stop));
            assert_eq!(id(&inbox.take(Some(LONG)).unwrap()), 0);
            assert!(waiting.join().unwrap(), "woken by the take");
            assert_eq!(inbox.push_some(&mut items).0, 1);
            let waiting = sc.spawn(|| inbox.wait_for_room(&stop));
            drop(stop_tx);
            assert!(!waiting.join().unwrap(), "stopped");
        });
        assert!(!inbox.reader_waiting());
    }

    #[test]
    fn takes_time_out_and_closing_wakes_every_taker_after_the_rest() {
        let (inbox, tx) = Inbox::new(usize::MAX, None);
        let started = Instant::now();
        assert_eq!(
            inbox.take(Some(Duration::from_millis(20))).unwrap_err(),
            Empty::Now
        );
        assert!(started.elapsed() >= Duration::from_millis(20));
        assert_eq!(inbox.take(Some(Duration::ZERO)).unwrap_err(), Empty::Now);
        assert_eq!(inbox.try_take().unwrap_err(), Empty::Now);
        let reader = tx.clone();
        push(tx.inbox(), vec![msg(0, 8)]);
        thread::scope(|sc| {
            let takers: Vec<_> = (0..3).map(|_| sc.spawn(|| inbox.take(None))).collect();
            // One of them gets the message; the others are woken by the close.
            drop(tx);
            drop(reader);
            let mut got: Vec<_> = takers.into_iter().map(|t| t.join().unwrap()).collect();
            got.sort_by_key(|r| r.is_err());
            assert_eq!(id(got[0].as_ref().unwrap()), 0);
            assert!(got[1..].iter().all(|r| *r == Err(Empty::Gone)));
        });
        assert_eq!(inbox.try_take().unwrap_err(), Empty::Gone);
        assert!(inbox.ready().recv_timeout(LONG).is_err(), "disconnected");
    }

    #[test]
    fn the_readiness_channel_holds_a_token_while_messages_wait() {
        let (inbox, tx) = Inbox::new(usize::MAX, None);
        assert!(inbox.ready().is_empty());
        push(&inbox, vec![msg(0, 8), msg(1, 8)]);
        push(&inbox, vec![msg(2, 8)]);
        assert_eq!(inbox.ready().len(), 1);
        assert!(inbox.try_take().unwrap().1, "more wait");
        inbox.try_take().unwrap();
        assert_eq!(inbox.ready().len(), 1);
        assert!(!inbox.try_take().unwrap().1);
        assert!(inbox.ready().is_empty());
        drop(tx);
        assert!(inbox.ready().try_recv().is_err());
    }

    #[test]
    fn pushes_while_woken_takers_have_not_run_leave_no_taker_asleep_over_a_message() {
        // Single-message pushes in quick succession: a push skips the takers that an
        // earlier push woke and that have not taken the lock back yet. Were a sleeping
        // taker ever skipped, a message would wait with every taker asleep (no close
        // here to wake them), and it would never be reported taken.
        const N: usize = 5_000;
        let (inbox, tx) = Inbox::new(usize::MAX, None);
        let (taken_tx, taken) = crossbeam_channel::unbounded::<u64>();
        thread::scope(|sc| {
            for _ in 0..4 {
                let taken_tx = taken_tx.clone();
                let inbox = &inbox;
                sc.spawn(move || {
                    while let Ok(item) = inbox.take(None) {
                        taken_tx.send(id(&item)).unwrap();
                    }
                });
            }
            let mut count = 0;
            for i in 0..N {
                push(tx.inbox(), vec![msg(i, 8)]);
                if i % 64 == 63 || i == N - 1 {
                    // Until the takers have caught up, so that they are all asleep
                    // again when the next pushes come.
                    while count <= i {
                        if taken.recv_timeout(LONG).is_err() {
                            panic!("{count} of {} taken: a message waits, takers asleep", i + 1);
                        }
                        count += 1;
                    }
                }
            }
            assert_eq!(count, N);
            drop(tx); // closes the queue: the takers end
        });
    }

    #[test]
    fn two_takers_get_every_message_once_and_in_order() {
        const N: usize = 20_000;
        let (inbox, tx) = Inbox::new(64 * charge(8), Some(100));
        let (_stop_tx, stop) = crossbeam_channel::bounded::<()>(0);
        thread::scope(|sc| {
            let takers: Vec<_> = (0..2)
                .map(|_| {
                    sc.spawn(|| {
                        let mut got = Vec::new();
                        while let Ok(item) = inbox.take(Some(LONG)) {
                            got.push(id(&item));
                        }
                        got
                    })
                })
                .collect();
            let mut items = (0..N).map(|i| msg(i, 8)).peekable();
            while items.peek().is_some() {
                // Batches of various sizes, as reads would give.
                let take = 1 + items.peek().map_or(0, |m| id(m) as usize % 7);
                let mut batch = items
                    .by_ref()
                    .take(take)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .peekable();
                while batch.peek().is_some() {
                    tx.inbox().push_some(&mut batch);
                    if batch.peek().is_some() {
                        assert!(tx.inbox().wait_for_room(&stop));
                    }
                }
            }
            drop(tx);
            let got: Vec<Vec<u64>> = takers.into_iter().map(|t| t.join().unwrap()).collect();
            for g in &got {
                assert!(
                    g.windows(2).all(|w| w[0] < w[1]),
                    "each taker sees them in order"
                );
            }
            let mut all: Vec<u64> = got.concat();
            all.sort_unstable();
            assert_eq!(
                all,
                (0..N as u64).collect::<Vec<_>>(),
                "each one once, none lost"
            );
        });
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn the_reader_yields_the_read_side_only_to_a_waiting_caller_and_then_lingers() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (inbox, _tx) = Inbox::new(usize::MAX, None);
        let mut side = Box::new(ReadSide::new(Arc::new(stream), 0));
        // Nobody waits for it: the reader thread keeps it.
        side = inbox.reader_yield(side).unwrap_err();
        thread::scope(|sc| {
            let caller = sc.spawn(|| match inbox.take_or_side(Some(LONG), true) {
                Ok(Got::Side(side)) => side,
                _ => panic!("the caller did not get the read side"),
            });
            // Until the caller waits for it (then it goes).
            let started = Instant::now();
            loop {
                match inbox.reader_yield(side) {
                    Ok(()) => break,
                    Err(back) => side = back,
                }
                assert!(started.elapsed() < LONG, "the caller never waited");
                thread::yield_now();
            }
            let side = caller.join().unwrap();
            {
                let s = lock(&inbox.state);
                assert!(s.role.side.is_none() && !s.role.offered);
                // The reader thread leaves the side to the callers for LINGER, as after
                // a caller gave it back.
                assert!(s.role.caller_left.is_some());
            }
            // A caller that gives it back without the linger: the reader takes it at once.
            inbox.caller_put_back(side, false, false);
            let taken = Instant::now();
            let side = inbox.reader_take_side();
            assert!(taken.elapsed() < LONG);
            drop(side);
        });
    }

    #[test]
    fn at_close_runs_once_when_the_last_sender_goes() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let (inbox, writer) = Inbox::new(1 << 20, None);
        let reader = writer.clone();
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        writer.at_close(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        drop(writer);
        assert_eq!(
            runs.load(Ordering::SeqCst),
            0,
            "a reader still holds the queue"
        );
        assert_eq!(inbox.try_take().err(), Some(Empty::Now));
        drop(reader);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(inbox.try_take().err(), Some(Empty::Gone));
    }
}
