//! Reads made by the program's own threads (Linux and Android): a caller of `get_data`
//! that finds the incoming queue empty, or an acknowledged send waiting for its answer,
//! reads the socket itself when nobody else does, instead of waiting for the reader
//! thread to read and wake it. Each message that comes then costs one thread wake-up
//! (the caller's, by the socket), not two (the reader's, then the caller's).
//!
//! The link's [`ReadSide`] (its socket, decoder and receive mode) is the read role:
//! whoever holds it reads, decodes and delivers, with the same code
//! (`ReadSide::deliver`: acknowledgements matched, replies owed and written, events,
//! the queue's bounds). The [`Role`] holds it while nobody does. The reader thread
//! takes it to read without blocking until the socket is empty, gives it back, and
//! waits for bytes without it (a one-byte `MSG_PEEK`); when the bytes come, it takes the
//! role again, waiting for a caller that holds it to give it back.
//!
//! A caller that takes the role:
//! - reads with a blocking `recv`, its timeout as the socket's receive timeout (set only
//!   when it differs much from the one in place, see [`ReadSide::wait_with`]);
//! - puts what it decoded in the queue, as much as fits: it never waits for room, which
//!   only its own takes would make. What does not fit stays decoded in the read side
//!   (`ReadSide::frames`, at most one read's worth, as the reader thread holds while it
//!   waits for room) and goes in first, before anything is read again, by whichever
//!   thread holds the role next. A read may bring more than fits only while the reader
//!   thread waits for the role (it then delivers the rest as soon as it gets it, should
//!   no caller come first); else (the reader thread may be waiting for bytes in the
//!   socket, and would not see what a caller left) it reads at most what surely fits
//!   ([`read_cap`]);
//! - takes the oldest message (or, for an acknowledged send, looks for its answer), and
//!   gives the role back;
//! - when the read meets the end of the link (the end of the peer's data, an error, a
//!   message that ends the link), records it in `ReadSide::seen` for the reader thread,
//!   which reports it as if it had met it itself (a failed read also shuts the socket's
//!   reading down, which ends the reader's wait for bytes), gives the role back, and
//!   waits as before: on the incoming queue, or on the answer.
//!
//! The reader thread alone installs the role (once the link's first bytes are checked,
//! and only without an idle timeout, whose timer is the socket's receive timeout) and
//! alone ends it: the read side is not given back once its link's reading is over.
//! `close()` shuts the socket down, which ends a caller's `recv` as it ends the reader's.
//!
//! Threads: callers; the reader.

use std::io;
use std::net::Shutdown;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};

use super::inbox::{Empty, Got};
use super::reader::{ReadEnd, ReadSide, Seen};
use super::state::Shared;
use super::vocab::{Incoming, MESSAGE_OVERHEAD};
use crate::error::Result;
use crate::protocol::{v2, Decoder};
use crate::sync::Deadline;

/// A caller reads the socket only if it may read at least this many bytes at once
/// (a nearly full incoming queue, or one bounded to a few messages, leaves it to the
/// reader thread).
const LEAST_CALLER_READ: usize = 1024;

/// A caller reads at most this much at once (the decoder reads less: at most the room
/// of its receive chunk, 64 KiB, between and into small frames).
const MOST_CALLER_READ: usize = 256 * 1024;

/// What a caller's read did.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// It read bytes and delivered what they completed (maybe nothing), or it delivered
    /// some of what an earlier read left undelivered.
    Read,
    /// It read and delivered, and large (or, over v1, tiny) messages come faster than it takes
    /// them (see [`hand_over`]): the reader thread reads on, in parallel with the
    /// program.
    Streaming,
    /// Its timeout ran out (or a signal interrupted it): look again.
    Again,
    /// It met the end of the link (recorded for the reader thread), or may not read (the
    /// incoming queue has no room for what an earlier read left undelivered, or the
    /// timeout could not be set).
    Stop,
}

/// The most a caller may read at once so that whatever the bytes decode to fits in the
/// incoming queue: `count_room` more messages and `bytes_room` more bytes of charge (see
/// `Inbox::room`), with `held` bytes of an unfinished message in the decoder already,
/// and frames of at least `least_frame` bytes on the wire. A read of `n` bytes completes
/// at most `(held > 0) + n / least_frame` messages, whose payloads (as charged, less the
/// overhead per message) add up to at most `held + n`.
pub(crate) fn read_cap(
    count_room: usize,
    bytes_room: usize,
    held: usize,
    least_frame: usize,
) -> usize {
    let unfinished = usize::from(held > 0);
    let by_count = count_room
        .saturating_sub(unfinished)
        .saturating_mul(least_frame);
    let fixed = held.saturating_add(MESSAGE_OVERHEAD * unfinished);
    let by_bytes = bytes_room.saturating_sub(fixed).saturating_mul(least_frame)
        / (least_frame + MESSAGE_OVERHEAD);
    by_count.min(by_bytes)
}

/// The fewest bytes a whole data message takes on the wire.
fn least_frame(decoder: &Decoder) -> usize {
    match decoder {
        // A header and an empty payload.
        Decoder::V2(_) => v2::HEADER_LEN,
        // One byte and the 0x1F that ends the block.
        _ => 2,
    }
}

impl ReadSide {
    /// Sets the socket's receive timeout for a caller that waits at most `wait` (`None`:
    /// as long as it takes), unless the one in place already ends between half of it and
    /// all of it (a repeated `get_data_timeout` costs no system call; a wait cut short
    /// is taken again). False if it could not be set.
    fn wait_with(&mut self, wait: Option<Duration>) -> bool {
        let keep = match (self.timeout, wait) {
            (None, None) => true,
            (Some(t), Some(w)) => t <= w && t >= w / 2,
            _ => false,
        };
        if keep {
            return true;
        }
        // std refuses a zero timeout; the deadline is checked by the caller anyway.
        let set = wait.map(|w| w.max(Duration::from_micros(1)));
        match self.stream.set_read_timeout(set) {
            Ok(()) => {
                self.timeout = set;
                true
            }
            Err(_) => false,
        }
    }

    /// One read by a caller, waiting at most `wait`: reads, decodes and delivers what
    /// fits in the incoming queue. What an earlier read left undelivered goes first,
    /// without a read.
    fn read_for_caller(&mut self, shared: &Shared, wait: Option<Duration>) -> Step {
        if !self.frames.is_empty() {
            let before = self.frames.len();
            return match self.deliver(shared, false) {
                // Nothing went in: the queue is full, the program takes first.
                Ok(()) if self.frames.len() == before => Step::Stop,
                Ok(()) => Step::Read,
                Err(end) => self.broken(end),
            };
        }
        let (count_room, bytes_room, reader_taking) = shared.inbox.room();
        // What does not fit is left for the reader thread only when it waits for the
        // read side: it delivers it first thing. Else (it may be waiting for bytes in the
        // socket, which this read takes) the read is no larger than what surely fits.
        let cap = if reader_taking {
            MOST_CALLER_READ
        } else {
            read_cap(
                count_room,
                bytes_room,
                self.decoder.buffered(),
                least_frame(&self.decoder),
            )
            .min(MOST_CALLER_READ)
        };
        if cap < LEAST_CALLER_READ || !self.wait_with(wait) {
            return Step::Stop;
        }
        let stream = self.stream.clone();
        let read = self.read_with(&mut &*stream, cap);
        match read {
            Ok(0) => {
                self.seen = Some(Seen::Eof);
                Step::Stop
            }
            Ok(n) => {
                self.got(shared, n);
                self.caller_read += n;
                self.caller_frames += self.frames.len();
                match self.deliver(shared, false) {
                    Ok(()) if hand_over(self) => Step::Streaming,
                    Ok(()) => Step::Read,
                    Err(end) => self.broken(end),
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                Step::Again
            }
            Err(e) => {
                self.seen = Some(Seen::Failed(e));
                self.end_reader_wait();
                Step::Stop
            }
        }
    }

    /// What a caller delivered ends the link (`end`): recorded for the reader thread.
    fn broken(&mut self, end: ReadEnd) -> Step {
        self.seen = Some(match end {
            ReadEnd::Broken(reason) => Seen::Broken(reason),
            ReadEnd::Io(e) => Seen::Failed(e),
            // Not reached: a caller never waits, so nothing stops it.
            ReadEnd::Stopped => Seen::Eof,
        });
        self.end_reader_wait();
        Step::Stop
    }

    /// After a caller met an error or a message that ends the link: the reader thread,
    /// which may be waiting for bytes that will not come (the caller took the error from
    /// the socket), must see it. Shutting the socket's reading down ends that wait.
    fn end_reader_wait(&self) {
        let _ = self.stream.shutdown(Shutdown::Read);
    }
}

/// For `get_data` and friends, once the incoming queue was found empty: the next
/// message, waiting at most `timeout` (as long as it takes if `None`). It waits for a
/// message or for the read role, whichever comes first; with the role, it reads the
/// socket itself until a message is in the queue, then gives the role back. Once a read
/// met the end of the link (or found too little room), it leaves the reading to the
/// reader thread and waits for a message only.
pub(crate) fn take(
    shared: &Shared,
    timeout: Option<Duration>,
) -> std::result::Result<Incoming, Empty> {
    let inbox = &shared.inbox;
    // The clock is read once here; the first wait is the whole timeout (what passed
    // since is microseconds, within the receive timeout's own granularity), and the
    // clock is read again only for a wait after the first.
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let mut first = true;
    let mut want_side = true;
    loop {
        let left = match (timeout, deadline) {
            (Some(t), _) if first => Some(t),
            (Some(_), Some(at)) => Some(at.saturating_duration_since(Instant::now())),
            (t, _) => t,
        };
        let mut side = match inbox.take_or_side(left, want_side)? {
            Got::Message(item) => return Ok(item),
            Got::Side(side) => side,
        };
        // After a stream of large messages: how long the program worked on the last one
        // (a clock read only then), for `hand_over`.
        let gap = side.given_back.take().map(|at| at.elapsed());
        note_away(&mut side, gap);
        side.caller_read = 0;
        side.caller_frames = 0;
        let first_wait = if first { left } else { None };
        first = false;
        let got = read_until_taken(shared, &mut side, deadline, first_wait);
        let linger = lingers(&side);
        let timed =
            side.caller_frames > 0 && side.caller_read >= LARGE.saturating_mul(side.caller_frames);
        inbox.caller_put_back(side, linger, timed);
        match got {
            Taken::Message(item) => return Ok(item),
            Taken::Gone => return Err(Empty::Gone),
            Taken::TimedOut => return Err(Empty::Now),
            Taken::Stopped => want_side = false,
        }
    }
}

/// How [`read_until_taken`] ended.
enum Taken {
    Message(Incoming),
    /// The incoming queue is closed and empty.
    Gone,
    /// The deadline passed.
    TimedOut,
    /// The read met the end of the link, or may not read.
    Stopped,
}

/// Reads the socket with the read side until a message can be taken from the incoming
/// queue (a message this read put there may go to another taker first: then it reads
/// on), or until `deadline`. The first read waits at most `first_wait` if given (the
/// time left, just computed by the caller: no clock read), the others what is left.
fn read_until_taken(
    shared: &Shared,
    side: &mut ReadSide,
    deadline: Option<Instant>,
    mut first_wait: Option<Duration>,
) -> Taken {
    loop {
        match shared.inbox.try_take() {
            Ok((item, _)) => return Taken::Message(item),
            Err(Empty::Gone) => return Taken::Gone,
            Err(Empty::Now) => {}
        }
        let wait = match (first_wait.take(), deadline) {
            (Some(left), Some(_)) if !left.is_zero() => Some(left),
            (_, Some(at)) => match at.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Some(left),
                _ => return Taken::TimedOut,
            },
            (_, None) => None,
        };
        match side.read_for_caller(shared, wait) {
            Step::Stop => return Taken::Stopped,
            Step::Streaming => {
                return match shared.inbox.try_take() {
                    Ok((item, _)) => Taken::Message(item),
                    Err(Empty::Gone) => Taken::Gone,
                    Err(Empty::Now) => Taken::Stopped,
                }
            }
            Step::Read | Step::Again => {}
        }
    }
}

/// For an acknowledged send waiting for its answer: the answer, reading the socket in
/// this thread (which also delivers whatever else comes) while it can take the read
/// role; `None` when it cannot (any more), for the wait on `answer`.
pub(crate) fn await_answer(
    shared: &Shared,
    answer: &Receiver<Result<()>>,
    deadline: Deadline,
) -> Option<Result<()>> {
    if let Ok(r) = answer.try_recv() {
        return Some(r);
    }
    let mut side = shared.inbox.try_take_side()?;
    side.caller_read = 0;
    side.caller_frames = 0;
    let got = loop {
        match answer.try_recv() {
            Ok(r) => break Some(r),
            Err(TryRecvError::Disconnected) => break None,
            Err(TryRecvError::Empty) => {}
        }
        let wait = match deadline.at {
            Some(at) => match at.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Some(left),
                _ => break None,
            },
            None => None,
        };
        match side.read_for_caller(shared, wait) {
            Step::Stop => break None,
            Step::Streaming => break answer.try_recv().ok(),
            Step::Read | Step::Again => {}
        }
    };
    let linger = lingers(&side);
    shared.inbox.caller_put_back(side, linger, false);
    got
}

/// A caller that read more than this while it held the read side, of messages of
/// [`LARGE`] bytes or more (v2: [`LARGE_V2`]), or over v1 of fewer than [`TINY_V1`],
/// gives it back without the linger: the reader thread reads the rest in parallel with the program
/// (the streaming rows of the bench from 64 KiB up, v1; from 1 MiB up, v2: without
/// this, a consumer that reads for itself does the reading, decoding and its own work
/// in one thread).
const STREAMING: usize = 16 * 1024;

/// The size of v1 message, on average over what a caller read while it held the read
/// side, from which a stream is handed to the reader thread ([`STREAMING`]). Below it, a
/// caller that keeps up keeps the read role (see [`lingers`]): for small messages what a
/// hand-over costs (the reader thread woken, then the program's thread woken by it, at
/// nearly every read) is more than the reading itself, and one thread reading, decoding
/// and taking is faster than two that wake each other. (A v1 base85 stream of 64 KiB
/// messages, whose decoding is most of its cost, is faster read by the reader thread.)
const LARGE: usize = 16 * 1024;

/// [`LARGE`] for v2, whose decoding is a checksum pass: a caller keeps the read role
/// through a stream of 64 KiB messages too, read one or two a `recv`, woken by the
/// socket as a plain socket's reader is (`--only "v2 one-way 64 KiB"`, three
/// alternations, one sitting: 0.88 x raw with the hand-over from 16 KiB, 1.08 x from
/// 128 KiB). A payload still coming is handed over once its header declares
/// `LARGE_V2` or more (or that much of it was read): the reader thread then reads it
/// with the receive low-water mark (256 KiB and up) or in pieces (over 2 MiB). A program
/// that works on each message as long as its reading would take or longer (see
/// [`busy`]) has a stream of [`LARGE`] messages or more read by the reader thread in
/// parallel with it, as before.
const LARGE_V2: usize = 128 * 1024;

/// The size of v1 message, on average, below which a stream is handed to the reader
/// thread too: a read then brings hundreds of messages, whose decoding and taking
/// outweigh the hand-over, and the reader thread drains the socket while the program
/// takes the last read's (v1 mode 0 64 B, on a 2-vCPU Intel machine: 5.83 M msg/s with
/// the hand-over against 4.80 M without; on the 2-vCPU AMD EPYC machine of round eight
/// of issue 15, within the spread, a little better with it). A v2 stream of tiny
/// messages stays with the caller: one thread reading, checking and taking them costs
/// less CPU there and is faster (v2 64 B, five alternations: see the commit that made
/// it so), with the reader thread giving the role back to a caller once it took it
/// ([`caller_keeps`]).
const TINY_V1: usize = 256;

/// True when the caller holding `side` reads a stream that the reader thread reads
/// better in parallel with the program: it read more than [`STREAMING`], and either
/// [`LARGE`] bytes or more per frame decoded (v2: [`LARGE_V2`]; a large payload still
/// coming counts as none for v1; for v2, as one, unless its header declares
/// `LARGE_V2` or more), or, over v1, fewer than [`TINY_V1`].
fn hand_over(side: &ReadSide) -> bool {
    hands_over(side, side.caller_read, side.caller_frames)
}

/// True when a read of `read` bytes that decoded `frames` frames brought messages under
/// [`LARGE`] that a caller would keep the read role for: the reader thread, having made
/// such a read, gives the role to a caller that waits for it (see
/// `Inbox::reader_yield`). Not for larger ones, which a program that works on each
/// message has read in parallel with it (see [`busy`]): a caller that waits for them
/// there has only caught up for a moment (`--only "v2 one-way 64 KiB, 20 µs"`, five
/// alternations in one sitting: 28.7 k msg/s with them given back too, 30.1 k without).
pub(crate) fn caller_keeps(side: &ReadSide, read: usize, frames: usize) -> bool {
    frames > 0 && read / frames < LARGE && !hands_over(side, read, frames)
}

/// [`hand_over`] for a caller that read `read` bytes which decoded `frames` frames.
fn hands_over(side: &ReadSide, read: usize, frames: usize) -> bool {
    let (large, tiny) = match &side.decoder {
        Decoder::V2(d) => {
            if frames == 0 && d.payload_coming() >= LARGE_V2 {
                return read > STREAMING;
            }
            // A program that works on each message about as long as its reading takes
            // gains from the reader thread reading the next ones meanwhile.
            let from = if side
                .away
                .is_some_and(|away| busy(away, read / frames.max(1)))
            {
                LARGE
            } else {
                LARGE_V2
            };
            (from.saturating_mul(frames.max(1)), 0)
        }
        _ => (LARGE.saturating_mul(frames), TINY_V1.saturating_mul(frames)),
    };
    read > STREAMING && (read >= large || read < tiny)
}

/// Records the time the program was away before this take (`gap`, if the caller before
/// read large messages): `ReadSide::away` is the shorter of the last two gaps, so that
/// one gap made by the scheduler (the program's thread preempted), not by the program's
/// work, does not count.
fn note_away(side: &mut ReadSide, gap: Option<Duration>) {
    side.away = match (side.last_away, gap) {
        (Some(last), Some(now)) => Some(last.min(now)),
        _ => None,
    };
    side.last_away = gap;
}

/// Bytes a second at which a thread reads and checks a large v2 message, as an order of
/// magnitude: a program away from `get_data` longer than the reading of a message would
/// take at this speed works on each message (it does not only take it), and a stream of
/// [`LARGE`] messages or more is then read by the reader thread in parallel with it.
const READ_SPEED: u128 = 10_000_000_000;

/// True when a program that was `away` between two takes of messages of `size` bytes
/// spent about as long working on one as reading one takes (see [`READ_SPEED`]).
fn busy(away: Duration, size: usize) -> bool {
    away.as_nanos().saturating_mul(READ_SPEED) >= (size as u128).saturating_mul(1_000_000_000)
}

/// Whether the reader thread leaves the read side to the program for `inbox::LINGER`
/// after `side` comes back: after a caller that read something, unless it reads a
/// stream of large (or, over v1, tiny) messages ([`hand_over`]) or left the start of a message in the
/// decoder without having decoded any (a large payload still coming). Else the reader
/// thread takes it at once. A caller that reads messages of sizes in between keeps the read role this
/// way while it comes back within `LINGER`, the reader thread asleep; a program that
/// falls behind (it takes from the queue for longer than that) has the reader thread
/// read in parallel with it again.
fn lingers(side: &ReadSide) -> bool {
    side.caller_read > 0
        && !hand_over(side)
        && (side.decoder.buffered() == 0 || side.caller_frames > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{v1, Frame, Mode, Protocol, WireBuf};
    use crate::Message;

    /// The charge of what `frames` holds, and how many data messages.
    fn charged(frames: &[Frame]) -> (usize, usize) {
        frames.iter().fold((0, 0), |(b, n), f| match f {
            Frame::Data { message, .. } => (b + message.len() + MESSAGE_OVERHEAD, n + 1),
            _ => (b, n),
        })
    }

    /// Feeds `wire` to `decoder` in reads of at most `read_cap` bytes, checking at each
    /// read that what it decodes stays within the room the cap was computed for (as if
    /// the queue were drained between reads). Where the cap is zero (an unfinished
    /// message as large as the room), the bytes are fed as the reader thread would read
    /// them, unchecked. Returns how many reads were checked.
    fn check_cap(mut decoder: Decoder, wire: &[u8], count_room: usize, bytes_room: usize) -> usize {
        let least = least_frame(&decoder);
        let (mut at, mut checked) = (0, 0);
        let mut frames = Vec::new();
        while at < wire.len() {
            let cap = read_cap(count_room, bytes_room, decoder.buffered(), least);
            let n = if cap == 0 { 64 } else { cap }.min(wire.len() - at);
            frames.clear();
            decoder.decode(&wire[at..at + n], &mut frames);
            let (bytes, count) = charged(&frames);
            if cap > 0 {
                checked += 1;
                assert!(
                    count <= count_room && bytes <= bytes_room,
                    "a read of {n} bytes decoded {count} messages of {bytes} bytes, room {count_room} and {bytes_room}"
                );
            }
            at += n;
        }
        checked
    }

    #[test]
    fn what_a_capped_read_decodes_fits_the_room_it_was_capped_for() {
        // The densest v1: one-byte blocks; and a long block that ends in a later read.
        let mut dense = b"x\x1f".repeat(5000);
        dense.extend_from_slice(&[b'y'; 3000]);
        dense.extend_from_slice(b"\x1f");
        dense.extend(b"ab\x1f".repeat(1000));
        for (count, bytes) in [(100, usize::MAX), (usize::MAX, 20_000), (7, 1000), (1, 200)] {
            let checked = check_cap(Decoder::new(Protocol::V1, 1 << 20), &dense, count, bytes);
            assert!(checked > 10, "{checked} reads checked");
        }
        // v1 base85 in an acknowledged mode: SETMODE blocks and shorter payloads.
        let mut enc = v1::Encoder::new(crate::TextEncoding::Utf8, 1 << 20);
        let mut wire = WireBuf::new();
        for i in 0..500u32 {
            let m = Message::from(i.to_le_bytes().to_vec());
            enc.encode(&m, Mode::Base85Ack, &mut wire).unwrap();
        }
        assert!(
            check_cap(
                Decoder::new(Protocol::V1, 1 << 20),
                &wire.to_vec(),
                50,
                10_000
            ) > 10
        );
        // The densest v2: empty payloads; numbers, whose messages count 8 bytes each;
        // and a large payload that takes many reads.
        let mut wire = WireBuf::new();
        for i in 0..3000 {
            let m = match i % 3 {
                0 => Message::from(""),
                1 => Message::Int(i),
                _ => Message::Float(0.5),
            };
            v2::encode(&m, &mut wire).unwrap();
        }
        v2::encode(&Message::from(vec![7u8; 100_000]), &mut wire).unwrap();
        v2::encode(&Message::from("after"), &mut wire).unwrap();
        let wire = wire.to_vec();
        for (count, bytes) in [(100, usize::MAX), (usize::MAX, 20_000), (3, 500)] {
            let checked = check_cap(Decoder::new(Protocol::V2, 1 << 20), &wire, count, bytes);
            assert!(checked > 10, "{checked} reads checked");
        }
    }

    #[test]
    fn the_cap_never_overflows_and_is_zero_without_room() {
        assert_eq!(read_cap(0, usize::MAX, 0, 2), 0);
        assert_eq!(read_cap(usize::MAX, 0, 0, 14), 0);
        // A message larger than the room is held: nothing more may be read.
        assert_eq!(read_cap(usize::MAX, 1000, 5000, 2), 0);
        assert!(read_cap(usize::MAX, usize::MAX, 0, 14) > MOST_CALLER_READ);
        // One message of room, none held: less than two frames' worth.
        assert!(read_cap(1, usize::MAX, 0, 14) < 2 * 14);
    }

    #[test]
    fn a_caller_keeps_the_read_role_through_small_messages_only() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let mut side = ReadSide::new(std::sync::Arc::new(stream), 0);
        side.decoder = Decoder::new(Protocol::V2, 1 << 20);
        let mut hold = |read: usize, frames: usize| {
            (side.caller_read, side.caller_frames) = (read, frames);
            (lingers(&side), hand_over(&side))
        };
        // Nothing read (it could not): the reader thread takes the read side at once.
        assert_eq!(hold(0, 0), (false, false));
        // An answer, or a few small messages.
        assert_eq!(hold(100, 1), (true, false));
        assert_eq!(hold(12_000, 3), (true, false));
        // Far more than STREAMING of 4 KiB messages: the caller keeps it.
        assert_eq!(hold(256 * 1024, 63), (true, false));
        assert_eq!(hold(64 * 1024, 16), (true, false));
        // v2 64 KiB messages, one or a few a read: the caller keeps it too.
        assert_eq!(hold(65_550, 1), (true, false));
        assert_eq!(hold(40_000, 2), (true, false));
        assert_eq!(hold(4 * 65_550, 4), (true, false));
        // Less than LARGE_V2 of a payload whose length is not known yet.
        assert_eq!(hold(100_000, 0), (true, false));
        // v2 messages of LARGE_V2 and up, or that much of a payload: the reader thread
        // reads on.
        assert_eq!(hold(LARGE_V2 + 14, 1), (false, true));
        assert_eq!(hold(3 << 20, 2), (false, true));
        assert_eq!(hold(200_000, 0), (false, true));
        // A read's worth of 64-byte messages: the caller keeps it too (v1: see below).
        assert_eq!(hold(64 * 1024, 840), (true, false));
        // Few of them: the caller keeps the read side.
        assert_eq!(hold(1000, 12), (true, false));
        // A program that works on each 64 KiB message about as long as reading it takes
        // (6.5 µs at READ_SPEED): the reader thread reads on, in parallel with it; one
        // that only takes them keeps the read side. 4 KiB messages are kept either way.
        let mut hold = |read: usize, frames: usize, away_us: u64| {
            (side.caller_read, side.caller_frames) = (read, frames);
            side.away = Some(Duration::from_micros(away_us));
            (lingers(&side), hand_over(&side))
        };
        assert_eq!(hold(65_550, 1, 20), (false, true));
        assert_eq!(hold(2 * 65_550, 2, 7), (false, true));
        assert_eq!(hold(65_550, 1, 1), (true, false));
        assert_eq!(hold(2 * 65_550, 2, 5), (true, false));
        assert_eq!(hold(64 * 1024, 16, 1000), (true, false));
        // Two gaps in a row count, the shorter one; one long gap alone does not.
        let us = Duration::from_micros;
        let mut fresh = ReadSide::new(side.stream.clone(), 0);
        note_away(&mut fresh, Some(us(500)));
        assert_eq!(fresh.away, None);
        note_away(&mut fresh, Some(us(2)));
        assert_eq!(fresh.away, Some(us(2)));
        note_away(&mut fresh, Some(us(30)));
        assert_eq!(fresh.away, Some(us(2)));
        note_away(&mut fresh, Some(us(20)));
        assert_eq!(fresh.away, Some(us(20)));
        note_away(&mut fresh, None);
        assert_eq!(fresh.away, None);
        assert!(busy(Duration::from_nanos(6554), 65_536));
        assert!(!busy(Duration::from_nanos(6553), 65_536));
        side.away = None;
        // A v1 stream hands 64 KiB messages over (LARGE).
        side.decoder = Decoder::new(Protocol::V1, 1 << 20);
        let mut hold = |read: usize, frames: usize| {
            (side.caller_read, side.caller_frames) = (read, frames);
            (lingers(&side), hand_over(&side))
        };
        assert_eq!(hold(65_540, 1), (false, true));
        assert_eq!(hold(40_000, 2), (false, true));
        assert_eq!(hold(20_000, 0), (false, true));
        assert_eq!(hold(12_000, 3), (true, false));
        // A read's worth of 64-byte v1 messages: the reader thread reads on.
        assert_eq!(hold(64 * 1024, 1000), (false, true));
        assert_eq!(hold(1000, 12), (true, false));
        // What the reader thread gives back to a waiting caller: reads of small
        // messages a caller keeps (v2 of any size under LARGE, v1 between TINY_V1 and
        // LARGE), not of larger ones (a program that works on each has them read in
        // parallel), nor reads that completed nothing.
        side.decoder = Decoder::new(Protocol::V2, 1 << 20);
        assert!(caller_keeps(&side, 64 * 1024, 840));
        assert!(caller_keeps(&side, 64 * 1024, 16));
        assert!(caller_keeps(&side, 300, 1));
        assert!(!caller_keeps(&side, 65_550, 1));
        assert!(!caller_keeps(&side, 64 * 1024, 0));
        side.decoder = Decoder::new(Protocol::V1, 1 << 20);
        assert!(!caller_keeps(&side, 64 * 1024, 1000));
        assert!(caller_keeps(&side, 64 * 1024, 16));
        assert!(!caller_keeps(&side, 40_000, 2));
        // A v2 payload still coming whose header declares LARGE_V2 or more: handed over
        // after STREAMING of it.
        side.decoder = Decoder::new(Protocol::V2, 1 << 20);
        let mut wire = WireBuf::new();
        v2::encode(&Message::from(vec![1u8; LARGE_V2]), &mut wire).unwrap();
        let mut frames = Vec::new();
        side.decoder
            .decode(&wire.to_vec()[..STREAMING + 100], &mut frames);
        assert!(frames.is_empty());
        side.caller_read = STREAMING + 100;
        side.caller_frames = 0;
        assert!(hand_over(&side));
        let mut side = ReadSide::new(side.stream.clone(), 0);
        side.decoder = Decoder::new(Protocol::V2, 1 << 20);
        // The start of a message left in the decoder: kept after small messages...
        let mut frames = Vec::new();
        let mut wire = WireBuf::new();
        v2::encode(&Message::from(vec![1u8; 100]), &mut wire).unwrap();
        side.decoder.decode(&wire.to_vec()[..50], &mut frames);
        assert!(frames.is_empty() && side.decoder.buffered() > 0);
        side.caller_read = 4000;
        side.caller_frames = 3;
        assert!(lingers(&side));
        // ...not when nothing was decoded (what is coming may be large).
        side.caller_frames = 0;
        assert!(!lingers(&side));
    }
}
