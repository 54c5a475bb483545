//! The write side of the current TCP link, and its invariants, written once.
//!
//! A [`Link`] lives behind `Shared::link`. Whoever holds that lock may write the socket,
//! and only whole blocks (a v1 block up to its `0x1F`, a whole v2 frame), so writes from
//! different threads never interleave. Bytes left in [`Link::wire`] between two writes
//! are the tail of something already begun (a control reply, a partly written plain
//! send): they go out first, before anything new. This file takes what it needs as
//! arguments; it knows nothing of the threads.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::outbox::{Outbox, Spare, BATCH_BYTES, SPARE_CAPACITY};
use super::vocab::{Outgoing, Payload};
use crate::protocol::{v1, v2, Mode, WireBuf};
use crate::stats::Counters;

/// The write half of the link and what goes with it. The writer thread holds the lock
/// while it works; other threads only ever `try_lock` it, to write at once, while the link
/// is idle, what would otherwise wait for the writer thread to wake up: an acknowledged
/// send (its caller waits anyway), a plain send after a quiet spell (without blocking), or
/// a control reply (without blocking).
pub(crate) struct Link {
    /// The socket of the current link; `None` while the link is down.
    pub stream: Option<TcpStream>,
    /// Counts the links of this connection (1 for the first); what is owed or awaited on
    /// a link carries its epoch, so that nothing of an old link is applied to a new one.
    pub epoch: u64,
    /// The v1 mode of what we send on this link (every link starts in mode 0).
    pub send_mode: Mode,
    /// Messages taken from the queue but not fully written on a link that broke; they
    /// count as pending and go out first on the next link.
    pub retry: VecDeque<Outgoing>,
    /// Bytes about to be written. Between writes it holds only what a write that must
    /// not block could not finish (control replies, the rest of `partial`): it goes first.
    pub wire: WireBuf,
    /// A write made outside the writer thread failed on the link of this epoch: the
    /// writer takes the link down when it next runs.
    pub broken: Option<(u64, String)>,
    /// A plain send written from its caller's thread that the socket took only part of,
    /// and how many of its bytes, at the front of `wire`, are still to go. It counts as
    /// pending until they are written; if the link breaks first, it is sent again.
    pub partial: Option<(Outgoing, usize)>,
    /// When the last write on this link ended.
    pub last_write: Instant,
    /// Set once the peer has finished sending on this link (v1): the wait before the
    /// next probe, an empty block that a peer ignores and that finds out whether it
    /// still reads (see `Writer::probe`).
    pub peer_done: Option<Duration>,
    /// The connection's statistics (bytes written are counted here, for every writer).
    pub stats: Arc<Counters>,
    /// The socket's write timeout under `FullQueue::Disconnect`: a write that the peer
    /// takes no byte of for this long fails, which takes the link down.
    pub write_timeout: Option<Duration>,
    /// Buffers of runs written whole, to give back to the outgoing queue
    /// (`Outbox::take`); the writer thread's alone.
    pub spare: Vec<Spare>,
    /// The writer's last take found nothing and marked it asleep in the outgoing
    /// queue (`Outbox::park`): it may wait for a wake-up. The writer thread's alone.
    pub parked: bool,
    /// The reused buffer the base85 blocks of `Payload::V1Late` are encoded into, when
    /// put (see [`Link::late_room`]): each block is split off it, and once every block
    /// split off was written (nothing else refers to the buffer), the next block starts
    /// again at its front, in lines this thread has just written.
    late: BytesMut,
    /// The capacity `late` was allocated with.
    late_cap: usize,
    /// Bytes of blocks put into `late` since it last started again at its front.
    late_used: usize,
}

/// The most a link's reused base85 buffer is allocated with: one batch of the writer
/// (`BATCH_BYTES`, and the block that crosses it) of the largest late-encoded blocks.
/// (The largest payload is a multiple of 4: 5 characters per 4 bytes, and `0x04 0x1F`.)
pub(crate) const LATE_BUFFER: usize = BATCH_BYTES + v1::LATE_BASE85_UNTIL / 4 * 5 + 2;

impl Link {
    /// A link with no socket yet (epoch 0).
    pub fn new(stats: Arc<Counters>, write_timeout: Option<Duration>) -> Self {
        Link {
            stream: None,
            epoch: 0,
            send_mode: Mode::Plain,
            retry: VecDeque::new(),
            wire: WireBuf::new(),
            broken: None,
            partial: None,
            last_write: Instant::now(),
            peer_done: None,
            stats,
            write_timeout,
            spare: Vec::new(),
            parked: false,
            late: BytesMut::new(),
            late_cap: 0,
            late_used: 0,
        }
    }

    /// True when a thread other than the writer may write now: the link is up, and no
    /// message accepted earlier is still waiting to be written (in the outgoing queue,
    /// or counted in `pending`: taken out of it, or to go again).
    pub fn idle(&self, pending: &AtomicUsize, outbox: &Outbox) -> bool {
        self.stream.is_some()
            && self.broken.is_none()
            && self.retry.is_empty()
            && pending.load(Ordering::Acquire) == 0
            && outbox.is_empty()
    }

    /// Starts a new link over `stream`: a new epoch, mode 0, nothing left of the old one
    /// but `retry` and `partial`. Returns the new epoch.
    pub fn start(&mut self, stream: TcpStream) -> u64 {
        self.epoch += 1;
        self.send_mode = Mode::Plain;
        self.wire.clear();
        self.broken = None;
        self.peer_done = None;
        if self.write_timeout.is_some() {
            if let Err(e) = stream.set_write_timeout(self.write_timeout) {
                log::warn!("serpy: cannot set the write timeout of FullQueue::Disconnect: {e}");
            }
        }
        self.stream = Some(stream);
        self.epoch
    }

    /// Ends the current link: the socket is shut down, what was half written is
    /// forgotten (the peer drops a cut block), and a partly written plain send goes out
    /// again on the next link (it is older than anything in `retry`).
    pub fn take_down(&mut self) {
        if let Some(s) = self.stream.take() {
            crate::sys::wake_blocked(&s);
        }
        self.wire.clear();
        self.broken = None;
        if let Some((mut item, _)) = self.partial.take() {
            item.cut = true;
            self.retry.push_front(item);
        }
    }

    /// Appends `payload` to `wire`, after a SETMODE if its v1 mode is not the link's
    /// send mode. A deferred payload (not encoded yet) appends nothing.
    pub fn put(&mut self, payload: &Payload) {
        match payload {
            Payload::V1 { mode, parts } => {
                if *mode != self.send_mode {
                    v1::encode_control(v1::Control::SetMode(*mode), &mut self.wire);
                    self.send_mode = *mode;
                }
                for p in parts {
                    self.wire.put_ref(p);
                }
            }
            Payload::V2 { header, body } => {
                self.wire.put_slice(header);
                self.wire.put_ref(body);
            }
            Payload::V2Late { code, body } => {
                // The checksum now, just before the socket copies the payload (see
                // `v2::sums_late`); a frame written again (after a broken link) is
                // summed again.
                self.wire.put_slice(&v2::header(*code, body));
                self.wire.put_bytes(body.clone());
            }
            Payload::V1Late { mode, body } => {
                if *mode != self.send_mode {
                    v1::encode_control(v1::Control::SetMode(*mode), &mut self.wire);
                    self.send_mode = *mode;
                }
                // Encoded now, into the reused buffer, just before the socket copies it
                // (see `v1::encodes_late`); a block written again (after a broken
                // link) is encoded again.
                let n = v1::base85_block_len(body.len(), *mode);
                self.late_room(n);
                self.late.resize(n, 0);
                v1::base85_block(body, *mode, &mut self.late);
                self.wire.put_shared(self.late.split().freeze());
            }
            Payload::Run(run) => {
                if let Some(mode) = run.mode {
                    if mode != self.send_mode {
                        v1::encode_control(v1::Control::SetMode(mode), &mut self.wire);
                        self.send_mode = mode;
                    }
                }
                // Already a copy made for the wire: one more part, not copied again.
                self.wire.put_shared(run.bytes.clone());
            }
            Payload::Deferred { .. } => {}
        }
    }

    /// Makes room in `late` for a block of `n` bytes. When every block split off it was
    /// written, it starts again at its front (a new batch), unless it is far larger than
    /// the last batch needed (more than four times: it is then dropped). When the room
    /// left is too small while blocks are still in flight, a new buffer is allocated,
    /// twice what this batch has needed so far, at most [`LATE_BUFFER`] (or one block):
    /// so a buffer holds a whole batch after the first, and no more than a few times
    /// what the blocks of a batch need.
    fn late_room(&mut self, n: usize) {
        if self.late.try_reclaim(self.late_cap) {
            let need = self.late_used.max(n);
            self.late_used = 0;
            if self.late_cap > 4 * need {
                self.late = BytesMut::new();
                self.late_cap = 0;
            }
        }
        if self.late.capacity() < n {
            let cap = (2 * (self.late_used + n)).clamp(n, LATE_BUFFER.max(n));
            self.late = BytesMut::with_capacity(cap);
            self.late_cap = self.late.capacity();
        }
        self.late_used += n;
    }

    /// Keeps the buffers of the runs among `written` (messages written whole) for reuse,
    /// when nothing else refers to them any more.
    pub fn recycle(&mut self, written: &mut [Outgoing]) {
        for item in written {
            if let Payload::Run(run) = &mut item.payload {
                if self.spare.len() >= 2 {
                    return;
                }
                let bytes = std::mem::take(&mut run.bytes);
                if let Ok(mut m) = bytes.try_into_mut() {
                    if m.capacity() <= SPARE_CAPACITY {
                        m.clear();
                        let mut ends = std::mem::take(&mut run.ends);
                        ends.clear();
                        self.spare.push((m.into(), ends));
                    }
                }
            }
        }
    }

    /// Accounts for `n` bytes written from the front of `wire` (and what followed): a
    /// partly written send whose last bytes went out stops counting in `pending`.
    pub fn wrote(&mut self, n: usize, pending: &AtomicUsize) {
        self.last_write = Instant::now();
        self.stats.wrote(n);
        if let Some((_, left)) = &mut self.partial {
            *left = left.saturating_sub(n);
            if *left == 0 {
                self.partial = None;
                pending.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// Writes all of `wire`, blocking; returns how many bytes the socket took and the
    /// outcome.
    pub fn write_wire(&mut self, pending: &AtomicUsize) -> (usize, io::Result<()>) {
        let parts = self.wire.take_parts();
        let (written, result) = write_parts(self.stream.as_ref(), &parts);
        self.wrote(written, pending);
        (written, result)
    }

    /// [`Link::write_wire`], calling `before_blocking` before the write may block: on
    /// Linux and Android the socket is first offered everything without blocking, and
    /// only what it leaves is written blocking, after the call (one write, as before,
    /// when the socket has room); elsewhere the call comes first.
    pub fn write_wire_then(
        &mut self,
        pending: &AtomicUsize,
        before_blocking: impl FnOnce(),
    ) -> (usize, io::Result<()>) {
        let parts = self.wire.take_parts();
        let (written, result) = write_parts_then(self.stream.as_ref(), &parts, before_blocking);
        self.wrote(written, pending);
        (written, result)
    }
}

/// Encodes `modcg` ACKMODCG and `eot` ACKEOT replies.
pub(crate) fn encode_replies(modcg: u64, eot: u64, wire: &mut WireBuf) {
    for _ in 0..modcg {
        v1::encode_control(v1::Control::AckModeChange, wire);
    }
    for _ in 0..eot {
        v1::encode_control(v1::Control::AckEot, wire);
    }
}

/// Puts what follows the first `written` bytes of `parts` back into `wire`.
pub(crate) fn put_back(wire: &mut WireBuf, parts: &[Bytes], mut written: usize) {
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
pub(crate) fn write_parts(stream: Option<&TcpStream>, parts: &[Bytes]) -> (usize, io::Result<()>) {
    write_parts_then(stream, parts, || {})
}

/// [`write_parts`], calling `before_blocking` before a write that may block (see
/// [`Link::write_wire_then`]).
pub(crate) fn write_parts_then(
    stream: Option<&TcpStream>,
    parts: &[Bytes],
    before_blocking: impl FnOnce(),
) -> (usize, io::Result<()>) {
    let Some(mut stream) = stream else {
        return (0, Err(io::Error::from(io::ErrorKind::NotConnected)));
    };
    let mut slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
    let mut slices = &mut slices[..];
    let mut written = 0;
    #[cfg(all(
        any(target_os = "linux", target_os = "android"),
        not(serpy_portable_send)
    ))]
    {
        let total: usize = parts.iter().map(Bytes::len).sum();
        match socket2::SockRef::from(stream)
            .send_vectored_with_flags(slices, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
        {
            Ok(n) if n >= total => return (n, Ok(())),
            Ok(n) => {
                written = n;
                IoSlice::advance_slices(&mut slices, n);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return (0, Err(e)),
        }
    }
    before_blocking();
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

/// Why a write failed, in the words of the `Disconnected` event: a write that timed out
/// under `FullQueue::Disconnect` means the peer read nothing for that long.
pub(crate) fn write_failed(link: &Link, e: &io::Error) -> String {
    match (link.write_timeout, e.kind()) {
        _ if crate::sys::is_cancelled(e) => {
            "the write was cancelled: the link was shut down while it waited".to_string()
        }
        (Some(t), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
            link.stats
                .rare
                .policy_disconnects
                .fetch_add(1, Ordering::Relaxed);
            format!("the peer read nothing for {t:?} (full-queue policy Disconnect): disconnected")
        }
        _ => format!("write failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame whose checksum is left to its writer is put on the wire as `v2::encode`
    /// frames it, each time it is put (again after a broken link).
    #[test]
    fn a_late_summed_frame_gets_its_header_when_put() {
        let body = Bytes::from(
            (0..v2::LATE_SUM_FROM as u32)
                .map(|i| (i * 13) as u8)
                .collect::<Vec<u8>>(),
        );
        let mut expected = WireBuf::new();
        v2::encode(&crate::Message::Bytes(body.clone()), &mut expected).unwrap();
        let mut link = Link::new(Arc::new(Counters::new()), None);
        let payload = Payload::V2Late {
            code: v2::TYPE_BYTES,
            body: body.clone(),
        };
        for _ in 0..2 {
            link.put(&payload);
            let parts = link.wire.take_parts();
            assert_eq!(parts.concat(), expected.to_vec());
            assert!(
                parts.iter().any(|p| p.as_ptr() == body.as_ptr()),
                "the payload is not copied"
            );
        }
    }

    /// The bytes of a payload of `len` bytes that hit every base85 group and step.
    fn body(len: usize, seed: u32) -> Bytes {
        Bytes::from(
            (0..len as u32)
                .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 13) as u8)
                .collect::<Vec<u8>>(),
        )
    }

    /// What `v1::Encoder` sends for `body` in `mode` after `enc`'s earlier messages.
    fn eager(enc: &mut v1::Encoder, body: &Bytes, mode: Mode) -> Vec<u8> {
        let mut w = WireBuf::new();
        enc.encode(&crate::Message::Bytes(body.clone()), mode, &mut w)
            .unwrap();
        w.to_vec()
    }

    /// A block encoded by the writer is, byte for byte, the block the sender's encoder
    /// makes (modes 2 and 3, SETMODE included), at lengths around the groups (4 bytes),
    /// the portable and wide steps (16 and 32 bytes), the late range's ends and the
    /// reused buffer's size; and blocks still in flight (not written yet) are never
    /// overwritten by the next ones, in the same buffer or after it ran out.
    #[test]
    fn a_late_encoded_block_is_the_eager_one() {
        let mut lens: Vec<usize> = (0..=70).collect();
        for edge in [
            1000,
            v1::LATE_BASE85_FROM,
            65536,
            v1::LATE_BASE85_UNTIL,
            LATE_BUFFER / 5 * 4 / 2,
            LATE_BUFFER / 5 * 4,
        ] {
            lens.extend([edge - 1, edge, edge + 1]);
        }
        let mut link = Link::new(Arc::new(Counters::new()), None);
        let mut enc = v1::Encoder::new(crate::TextEncoding::Utf8, usize::MAX);
        let mut in_flight: Vec<(Vec<u8>, Vec<Bytes>)> = Vec::new();
        let mut puts = 0;
        for (round, &len) in lens.iter().enumerate() {
            for mode in [Mode::Base85, Mode::Base85Ack, Mode::Base85Ack, Mode::Base85] {
                if len == 0 && !mode.is_acked() {
                    continue; // an empty block in mode 2 is refused at send time
                }
                let b = body(len, round as u32);
                let want = eager(&mut enc, &b, mode);
                link.put(&Payload::V1Late { mode, body: b });
                let parts = link.wire.take_parts();
                assert_eq!(parts.concat(), want, "{len} bytes in mode {mode}");
                in_flight.push((want, parts));
                puts += 1;
                if puts % 7 == 0 {
                    // Written: their buffer may be used again.
                    for (want, parts) in in_flight.drain(..) {
                        assert_eq!(parts.concat(), want, "a block in flight was overwritten");
                    }
                }
                assert!(link.late_cap <= LATE_BUFFER.max(v1::base85_block_len(len, mode)));
            }
        }
        for (want, parts) in in_flight {
            assert_eq!(parts.concat(), want, "a block in flight was overwritten");
        }
    }

    /// Once its blocks were written, the buffer is used again from its front (no new
    /// buffer per message); while they are in flight the next block goes after them;
    /// a buffer grown for large blocks is dropped once it is far larger than a batch
    /// needs; and a block written again (after a broken link) is encoded again, whole.
    #[test]
    fn the_late_buffer_is_reused_bounded_and_written_again() {
        let mut link = Link::new(Arc::new(Counters::new()), None);
        let payload = Payload::V1Late {
            mode: Mode::Base85,
            body: body(65536, 1),
        };
        let put = |link: &mut Link, p: &Payload| {
            link.put(p);
            link.wire.take_parts()
        };
        // The first put also carries the SETMODE.
        let first = put(&mut link, &payload);
        let want = first.last().unwrap().to_vec();
        let at = first.last().unwrap().as_ptr();
        drop(first);
        for _ in 0..3 {
            let again = put(&mut link, &payload);
            assert_eq!(again.len(), 1);
            assert_eq!(again[0].as_ptr(), at, "the written buffer is used again");
            assert_eq!(again[0], want);
        }
        // A link broke while writing it: it is put again on the next link while the
        // part cut off may still be held; nothing of it is overwritten.
        let cut = put(&mut link, &payload);
        link.take_down();
        link.send_mode = Mode::Plain; // a new link starts in mode 0
        let next = put(&mut link, &payload);
        assert_eq!(next.len(), 2, "a SETMODE, then the whole block again");
        assert_eq!(next[1], want);
        assert_ne!(next[1].as_ptr(), cut[0].as_ptr());
        assert_eq!(cut[0], want);
        drop((cut, next));
        // Large blocks grow it (at most LATE_BUFFER); then small ones shrink it.
        let big = Payload::V1Late {
            mode: Mode::Base85,
            body: body(v1::LATE_BASE85_UNTIL, 2),
        };
        let held: Vec<_> = (0..6).map(|_| put(&mut link, &big)).collect();
        assert!(link.late_cap > 4 * 81921 && link.late_cap <= LATE_BUFFER);
        drop(held);
        drop(put(&mut link, &payload));
        drop(put(&mut link, &payload));
        assert!(
            link.late_cap <= 4 * 81921,
            "a buffer far larger than needed is dropped: {}",
            link.late_cap
        );
    }
}
