//! The writer thread: serves control first (replies never wait behind data), writes what
//! is queued in few large batches, takes broken links down (and, through the session,
//! brings them back), and on its way out writes what is left or reports it lost.
//!
//! Threads: writer.

use std::cell::RefCell;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{select, Receiver, Sender};

use super::inbox::InboxTx;
use super::link::{encode_replies, write_failed, Link};
use super::outbox::{BATCH_BYTES, BATCH_MESSAGES};
use super::outgoing::{flush_drops, prepare};
use super::session::{self, Next, Session};
use super::state::{Phase, Shared};
use super::vocab::{Control, Outgoing, Payload};
use crate::config::FullQueue;
use crate::error::Error;
use crate::event::EventKind;
use crate::protocol::{v1, Protocol};
use crate::sync::lock;

/// After the peer's end of sending (v1), the first wait between two probes; it doubles
/// up to [`PROBE_MAX`]. A peer that closed answers the first probe with a reset, so the
/// second finds it gone.
const PROBE_FIRST: Duration = Duration::from_millis(5);
/// The longest wait between two probes of a half-closed link (one byte per wait).
const PROBE_MAX: Duration = Duration::from_secs(1);

/// How long the writer may wait before the next probe of a half-closed link: the probe
/// wait since the last write (`Duration::MAX` when the link needs no probe).
fn probe_due(link: &Link) -> Duration {
    match link.peer_done {
        Some(wait) => wait.saturating_sub(link.last_write.elapsed()),
        None => Duration::MAX,
    }
}

/// The writer thread: writes what is queued (with [`Link`]), and reconnects.
pub(crate) struct Writer {
    /// What the connection's threads share.
    pub shared: Arc<Shared>,
    /// What readers and callers tell the writer.
    pub ctl_rx: Receiver<Control>,
    /// Handed to each reader; dropped when the writer ends, so `get_data` sees the end.
    pub in_tx: InboxTx,
    /// What survives a reconnect (the backoff); the writer alone uses it.
    pub session: RefCell<Session>,
    /// Dropped with the writer: tells `close()` that the writer has ended.
    pub _done: Sender<()>,
}

/// A batch encoded into the link's `wire`, not yet written.
struct Batch {
    /// The messages in it, in order.
    kept: Vec<Outgoing>,
    /// Where each message ends in the wire bytes.
    ends: Vec<usize>,
    /// Acknowledgement slots registered for it (the newest in the ack queue).
    pushed_acks: usize,
    /// Deferred messages that could not be encoded (their senders were told).
    failed: usize,
    /// Where the first message begins in the wire bytes (after what was left in it).
    start: usize,
}

impl Writer {
    /// The thread's body.
    pub fn run(self) {
        // Woken by a caller's message into an empty queue, the writer does not preempt
        // that caller (which, in a stream, goes on filling the queue: the writer then
        // takes a batch, not one message and a wake-up each); it runs on an idle
        // processor at once, else when the caller blocks or its time slice ends.
        #[cfg(any(target_os = "linux", target_os = "android"))]
        crate::sys::stop_wakeup_preemption();
        let shared = self.shared.clone();
        let keep_latest = matches!(shared.cfg.full_queue, FullQueue::KeepLatest(_));
        loop {
            // The link is locked while the writer works, not while it waits.
            let (ready, probe, parked) = {
                let mut link = lock(&shared.link);
                match self.serve(&mut link) {
                    Some(ready) => (
                        ready,
                        probe_due(&link).min(session::keepalive_due(&shared, &link)),
                        // Waits for a wake-up only with nothing left to take (a message
                        // that enters afterwards sends one, see `Outbox::park`).
                        !ready || link.parked || shared.outbox.park(),
                    ),
                    None => {
                        drop(link);
                        return self.finish();
                    }
                }
            };
            // (After a close, the select below, which sees it.)
            if parked || shared.life.is_closed() {
                // About to wait: callers waiting for room that exists go on.
                shared.outbox.announce_room();
            }
            let next = if !parked && !shared.life.is_closed() {
                self.write_batch(&mut lock(&shared.link))
            } else if ready {
                // Under KeepLatest, drops may wait to be reported (`flush_drops`).
                let report = if keep_latest {
                    flush_drops(&shared, false).unwrap_or(Duration::MAX)
                } else {
                    Duration::MAX
                };
                select! {
                    recv(self.ctl_rx) -> c => match c {
                        Ok(c) => self.control(&mut lock(&shared.link), c),
                        Err(_) => Next::Stop,
                    },
                    recv(shared.outbox.wake_rx) -> _ => self.write_batch(&mut lock(&shared.link)),
                    recv(self.shared.shutdown_rx) -> _ => Next::Stop,
                    default(probe.min(report)) => {
                        if keep_latest {
                            flush_drops(&shared, false);
                        }
                        self.probe(&mut lock(&shared.link))
                    }
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

    fn link_down(&self, link: &mut Link, reason: String) -> Next {
        // Reconnecting may take long: callers waiting for room that exists go on.
        self.shared.outbox.announce_room();
        let mut session = self.session.borrow_mut();
        session::link_down(&self.shared, link, reason, &self.in_tx, &mut session)
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
            if let Next::Stop = self.write_batch(link) {
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
                r.take_batch()
            };
            if modcg == 0 && eot == 0 && link.wire.is_empty() {
                return Next::Go;
            }
            encode_replies(modcg, eot, &mut link.wire);
            self.shared.outbox.announce_room();
            let (_, result) = link.write_wire(&self.shared.pending);
            if let Err(e) = result {
                let reason = write_failed(link, &e);
                return self.link_down(link, reason);
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
            Control::PeerDone { epoch } => {
                if epoch == link.epoch && link.stream.is_some() {
                    self.peer_done(link)
                } else {
                    Next::Go
                }
            }
            Control::Detected(p) => {
                // The reader already set the protocol; this wakes the writer to send
                // what waited for it.
                self.shared.event(EventKind::ProtocolDetected(p));
                Next::Go
            }
        }
    }

    /// The peer will send no more on this link. A v1 peer may still read (it shut down
    /// its sending side only): the link stays up for writing, and when it is quiet,
    /// empty blocks, which a v1 receiver ignores, find out whether the peer really
    /// closed (its system then answers with a reset, and the next write fails). v2 has no message a receiver
    /// ignores, so a v2 link cannot tell a half close from a close: it writes what is
    /// queued, then ends, as the original does.
    fn peer_done(&self, link: &mut Link) -> Next {
        if self.shared.protocol() == Protocol::V1 {
            log::debug!(
                "serpy {}: the peer sends no more; writing on until it closes",
                self.shared.label()
            );
            // The first probe once the link has been quiet for PROBE_FIRST.
            link.peer_done = Some(PROBE_FIRST);
            return Next::Go;
        }
        // A write that fails takes this link down inside `write_batch`, which may
        // reconnect: the new link (a new epoch) has a peer that did not close, so it is
        // left to the normal writes, never taken down here.
        let epoch = link.epoch;
        while self.shared.protocol() == Protocol::V2 && !self.shared.outbox.is_empty() {
            if let Next::Stop = self.write_batch(link) {
                return Next::Stop;
            }
            if link.stream.is_none() || link.epoch != epoch {
                return Next::Go;
            }
        }
        self.link_down(link, "the peer closed the connection".to_string())
    }

    /// The probe's wait ran out: unless something was written meanwhile (which probes
    /// as well), probe, and wait twice as long next time. Or a keep-alive is due (see
    /// `session::keepalive_due`): the same empty block.
    fn probe(&self, link: &mut Link) -> Next {
        match link.peer_done {
            Some(wait) if link.last_write.elapsed() >= wait => {
                link.peer_done = Some(wait.saturating_mul(2).min(PROBE_MAX));
                self.write_probe(link)
            }
            None if session::keepalive_due(&self.shared, link).is_zero() => {
                self.shared.outbox.announce_room();
                link.wire.put_u8(v1::SEP);
                match link.write_wire(&self.shared.pending) {
                    (_, Ok(())) => Next::Go,
                    (_, Err(e)) => self.link_down(link, format!("write failed: {e}")),
                }
            }
            _ => Next::Go,
        }
    }

    /// Writes one empty v1 block (after what a write left in `wire`, so between whole
    /// blocks); a write that fails takes the link down.
    fn write_probe(&self, link: &mut Link) -> Next {
        self.shared.outbox.announce_room();
        link.wire.put_u8(v1::SEP);
        match link.write_wire(&self.shared.pending) {
            (_, Ok(())) => Next::Go,
            (_, Err(e)) => self.link_down(
                link,
                format!("the peer closed the connection (a write after its end failed: {e})"),
            ),
        }
    }

    /// Encodes and writes what is to go again (`Link::retry`) and what is queued, in
    /// few large writes: after each write it takes what entered the queue meanwhile
    /// (callers send no wake-up while it writes), until it finds nothing (it then waits
    /// for the next wake-up), a write fails, or control or a close wants the thread
    /// (control first: replies never wait behind a stream of data).
    fn write_batch(&self, link: &mut Link) -> Next {
        loop {
            if let Some(next) = self.write_once(link) {
                return next;
            }
            if !self.ctl_rx.is_empty() || self.shared.life.is_closed() {
                // The main loop serves it, then comes back for the rest.
                link.parked = false;
                return Next::Go;
            }
        }
    }

    /// One batch of [`Writer::write_batch`]: `None` when it was written whole.
    fn write_once(&self, link: &mut Link) -> Option<Next> {
        link.parked = false;
        if link.stream.is_none() || self.shared.protocol() == Protocol::Auto {
            // Not writable now: later, when the link is (the wake-up is kept for then).
            self.shared.outbox.wake();
            return Some(Next::Go);
        }
        let mut items: Vec<Outgoing> = link.retry.drain(..).collect();
        let again = items.len();
        // Out of the queue's bounds, all at once, and pending until written.
        let taken =
            self.shared
                .outbox
                .take(&mut items, BATCH_BYTES, BATCH_MESSAGES, &mut link.spare);
        if taken > 0 {
            self.shared.pending.fetch_add(taken, Ordering::AcqRel);
        }
        // Nothing taken: the queue marked the writer asleep.
        link.parked = items.len() == again;
        if items.is_empty() && link.wire.is_empty() {
            return Some(Next::Go);
        }
        let mut batch = self.encode(link, items);
        // A write that must wait for the peer first wakes a caller waiting for room the
        // take freed (see `Outbox::take`).
        let outbox = &self.shared.outbox;
        let (written, result) = link.write_wire_then(&self.shared.pending, || {
            outbox.announce_room();
        });
        match result {
            Ok(()) => {
                let messages: usize = batch.kept.iter().map(Outgoing::messages).sum();
                self.shared.stats.sent(messages as u64);
                self.shared
                    .pending
                    .fetch_sub(messages + batch.failed, Ordering::AcqRel);
                link.recycle(&mut batch.kept);
                None
            }
            Err(e) => {
                // Messages not fully handed to the socket go out again on the next link;
                // their acknowledgement slots are taken back (they are the newest ones).
                let done = batch.ends.iter().take_while(|&&end| end <= written).count();
                let mut sent: usize = batch.kept[..done].iter().map(Outgoing::messages).sum();
                if let Some(first_unwritten) = batch.kept.get_mut(done) {
                    let start = done.checked_sub(1).map_or(batch.start, |i| batch.ends[i]);
                    let end = batch.ends[done];
                    if let Payload::Run(run) = &mut first_unwritten.payload {
                        // The messages of a run written whole are sent; the one cut goes
                        // again whole (a plain message: nobody waits to hear it was cut).
                        let begin = end - run.bytes.len();
                        let within = written.saturating_sub(begin);
                        let whole = run.ends.iter().take_while(|&&e| e <= within).count();
                        if whole > 0 {
                            let off = run.ends[whole - 1];
                            run.bytes = run.bytes.slice(off..);
                            run.ends = run.ends[whole..].iter().map(|e| e - off).collect();
                            sent += whole;
                        }
                    } else {
                        first_unwritten.cut |=
                            written > start || crate::sys::FAILED_WRITE_HIDES_PROGRESS;
                    }
                }
                self.shared.stats.sent(sent as u64);
                self.shared
                    .pending
                    .fetch_sub(sent + batch.failed, Ordering::AcqRel);
                let mut acks = lock(&self.shared.acks);
                let unwritten = batch.kept[done..]
                    .iter()
                    .filter(|i| i.ack.is_some())
                    .count();
                for _ in 0..unwritten.min(batch.pushed_acks) {
                    acks.waiting.pop_back();
                }
                drop(acks);
                link.retry.extend(batch.kept.drain(done..));
                let reason = write_failed(link, &e);
                Some(self.link_down(link, reason))
            }
        }
    }

    /// Encodes `items` into the link's wire (the SETMODE blocks depend on the link's
    /// current send mode), registering their acknowledgement slots.
    fn encode(&self, link: &mut Link, items: Vec<Outgoing>) -> Batch {
        let mut batch = Batch {
            ends: Vec::with_capacity(items.len()),
            kept: Vec::with_capacity(items.len()),
            pushed_acks: 0,
            failed: 0,
            start: link.wire.len(),
        };
        let protocol = self.shared.protocol();
        for mut item in items {
            if let Payload::Deferred { message, mode } = &item.payload {
                let encoded = if protocol == Protocol::V2 && mode.is_acked() {
                    Err(Error::Unsupported {
                        what: format!(
                            "the message in mode {mode} was queued before the peer's protocol \
                             was known, and the peer speaks v2, which has no acknowledgement; \
                             it was not sent. Send with Mode::Plain to v2 peers"
                        ),
                    })
                } else {
                    prepare(protocol, &self.shared.cfg, message, *mode)
                };
                match encoded {
                    Ok(p) => item.payload = p,
                    Err(e) => {
                        log::warn!("serpy {}: a message queued before the protocol was known cannot be sent: {e}", self.shared.label());
                        if let Some(ack) = item.ack.take() {
                            let _ = ack.send(Err(e));
                        }
                        batch.failed += 1;
                        continue;
                    }
                }
            }
            link.put(&item.payload);
            if let Some(ack) = &item.ack {
                // Registered before the bytes go out, so the ACKEOT cannot come first.
                lock(&self.shared.acks).waiting.push_back(ack.clone());
                batch.pushed_acks += 1;
            }
            batch.ends.push(link.wire.len());
            batch.kept.push(item);
        }
        batch
    }

    /// The writer ends: on close, write what is queued (bounded by the close timeout);
    /// otherwise the link is down for good and what is queued is reported lost.
    pub(crate) fn finish(self) {
        let shared = self.shared.clone();
        let mut link = lock(&shared.link);
        let closing = shared.life.is_closed();
        if closing && link.stream.is_some() && shared.protocol() != Protocol::Auto {
            self.flush_on_close(&mut link);
        }
        shared.life.set(Phase::Down);
        {
            let mut acks = lock(&shared.acks);
            for slot in acks.waiting.drain(..) {
                let _ = slot.send(Err(if closing {
                    Error::Closed
                } else {
                    Error::AckUncertain
                }));
            }
        }
        let partial = link.partial.take().map(|(item, _)| item);
        // Nothing enters the queue after this: later sends fail as gone.
        let queued = shared.outbox.take_all(true);
        let rest: Vec<Outgoing> = partial
            .into_iter()
            .chain(link.retry.drain(..))
            .chain(queued)
            .collect();
        let mut lost = 0;
        for mut item in rest {
            match item.ack.take() {
                Some(ack) => {
                    let _ = ack.send(Err(match (closing, item.cut) {
                        (true, _) => Error::Closed,
                        (false, true) => Error::CutShort,
                        (false, false) => Error::NotSent,
                    }));
                }
                None => lost += item.messages(),
            }
        }
        flush_drops(&shared, true);
        if lost > 0 {
            shared.event(EventKind::Lost { messages: lost });
        }
        if let Some(s) = link.stream.take() {
            crate::sys::wake_blocked(&s);
        }
        if !closing {
            // Down for good: nothing more will happen (close() ends them otherwise,
            // after its own event). The events end when the incoming queue closes: once
            // the last reader has delivered what it read, not before.
            let weak = Arc::downgrade(&shared);
            self.in_tx.at_close(move || {
                if let Some(shared) = weak.upgrade() {
                    shared.events.end();
                }
            });
        }
        // The outgoing queue is marked gone above; dropping in_tx (readers keep theirs
        // until they end) ends the incoming queue.
    }

    /// On close: writes what is queued, bounded by the close timeout; acknowledged
    /// sends among it are answered `Closed` (nobody waits for their ACKEOT any more).
    fn flush_on_close(&self, link: &mut Link) {
        // The close timeout replaces a full-queue policy's write timeout.
        link.write_timeout = None;
        if let Some(s) = &link.stream {
            let _ = s.set_write_timeout(Some(
                self.shared.cfg.close_timeout.max(Duration::from_millis(1)),
            ));
        }
        let mut rest: Vec<Outgoing> = link.retry.drain(..).collect();
        let queued = self.shared.outbox.take_all(false);
        // Out of the queue, pending until written (as `write_batch` counts them).
        let taken: usize = queued.iter().map(Outgoing::messages).sum();
        self.shared.pending.fetch_add(taken, Ordering::AcqRel);
        rest.extend(queued);
        for item in &mut rest {
            if let Some(ack) = item.ack.take() {
                let _ = ack.send(Err(Error::Closed));
            }
        }
        if !rest.is_empty() || !link.wire.is_empty() {
            link.retry.extend(rest);
            let _ = self.write_batch(link);
            link.retry.clear();
        }
        if let Some(s) = &link.stream {
            crate::sys::wake_blocked(&s);
        }
    }
}

#[cfg(all(test, any(target_os = "linux", target_os = "android")))]
mod tests {
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::path::Path;
    use std::time::Duration;

    use super::super::Connection;
    use crate::config::Config;
    use crate::protocol::Protocol;
    use crate::sync::lock;

    /// The scheduling policy in a thread's `/proc` directory (field 41 of its stat line).
    fn policy_in(task: &Path) -> Option<i32> {
        let stat = std::fs::read_to_string(task.join("stat")).ok()?;
        // After the name in parentheses, the fields from the third on.
        let (_, rest) = stat.rsplit_once(") ")?;
        rest.split(' ').nth(38)?.parse().ok()
    }

    /// The scheduling policy of this process's thread named `name`, if there is one.
    fn policy_of(name: &str) -> Option<i32> {
        let task = std::fs::read_dir("/proc/self/task")
            .ok()?
            .flatten()
            .find(|t| {
                std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
            })?;
        policy_in(&task.path())
    }

    /// The writer thread's wake-ups do not preempt the caller that wakes it
    /// (`SCHED_BATCH`); the reader thread keeps the policy it inherits. (Under another
    /// policy than the default, the writer is left as it is too.)
    #[test]
    fn the_writer_thread_does_not_preempt_its_callers_and_the_reader_is_left_as_it_was() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut raw = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        raw.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let cfg = Config {
            protocol: Protocol::V2,
            ..Config::default()
        };
        let conn = Connection::start(accepted, cfg, Vec::new(), false, None).unwrap();
        let id = conn.shared().id;
        // With the link held here, the send cannot be written by this thread: the writer
        // thread writes it, so it has run by the time it arrives.
        {
            let _link = lock(&conn.shared().link);
            conn.send("through the writer").unwrap();
        }
        let mut frame = [0u8; 14 + 18];
        raw.read_exact(&mut frame).unwrap();
        assert_eq!(&frame[14..], b"through the writer");
        let inherited = policy_in(Path::new("/proc/thread-self")).expect("this thread's policy");
        let writer = policy_of(&format!("serpy-wr-{id}"));
        if inherited == libc::SCHED_OTHER {
            assert_eq!(writer, Some(libc::SCHED_BATCH));
        } else {
            assert_eq!(writer, Some(inherited));
        }
        // The reader names itself once it runs (it may not have yet): if it has, it has
        // the policy of the thread that started it.
        if let Some(reader) = policy_of(&format!("serpy-rd-{id}")) {
            assert_eq!(reader, inherited);
        }
        conn.close();
    }
}
