//! The reader thread of one link: detect the protocol (auto servers), read, decode,
//! deliver data to the incoming queue, match acknowledgements, owe replies.
//!
//! What a read needs (the socket, the decoder, the link's receive mode...) is the
//! link's [`ReadSide`], and what is done with what a read decoded is its
//! [`deliver`](ReadSide::deliver): the same code whichever thread read. On Linux, once
//! the first bytes are checked and no idle or first-message timer runs, the reader
//! shares the read side with the program's threads (see `direct.rs`): it waits for
//! bytes without holding it (a one-byte `MSG_PEEK`), reads without blocking while it
//! holds it, and a caller of `get_data` (or an acknowledged send waiting for its
//! answer) that finds it free reads the socket itself, without a thread hop.
//!
//! Threads: reader (one per link; each joins the one before it, so messages stay in
//! order across reconnects); on Linux, callers too, through `direct.rs`.

use std::io::{self, Read};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Sender};

use super::inbox::InboxTx;
use super::inline;
use super::state::{Replies, Shared};
use super::vocab::{charge, Control, Incoming};
use crate::error::ProtocolError;
use crate::event::EventKind;
use crate::protocol::{self, Decoder, Detection, Frame, Mode, Protocol};
use crate::sync::{lock, try_lock};
#[cfg(any(target_os = "linux", target_os = "android"))]
use {crate::protocol::v2::Source, bytes::BytesMut};

/// Size of the reader's buffer for v1.
const READ_CHUNK: usize = 64 * 1024;
/// Size of the reader's buffer until a read fills it: a connection that sends little
/// (one that has not spoken yet, most of all) holds 4 KiB, not 64.
const FIRST_CHUNK: usize = 4 * 1024;

/// The reader thread of one link.
pub(crate) struct Reader {
    /// What the connection's threads share.
    pub shared: Arc<Shared>,
    /// The reader's hold on the incoming queue: it stays open while a reader lives.
    pub _in_tx: InboxTx,
    /// To the writer.
    pub ctl_tx: Sender<Control>,
    /// The reader of the previous link: joined first, so messages stay in order.
    pub previous: Option<JoinHandle<()>>,
    /// What reading the link needs.
    pub side: Box<ReadSide>,
}

/// What reading one link needs, and what a read decoded until it is delivered: owned by
/// the reader thread, or (Linux, see `direct.rs`) by whichever thread holds the link's
/// read role.
pub(crate) struct ReadSide {
    /// The read half of the link's socket (shared with the reader thread, which waits
    /// on it for bytes without holding the read side).
    pub stream: Arc<TcpStream>,
    /// The link this side reads.
    pub epoch: u64,
    /// The v1 mode the peer sends in on this link (every link starts in mode 0).
    pub recv_mode: Mode,
    /// Servers with a first-message timeout: when the peer must have sent a whole
    /// first message (or control block) by; `None` once it has, or without one.
    pub first_by: Option<Instant>,
    /// A server's connection whose peer has not sent a whole message or control block
    /// yet (see `Shared::proven`).
    pub unproven: bool,
    /// The link's decoder (v1 until an auto server has detected the protocol).
    pub decoder: Decoder,
    /// What the last read decoded, until delivered. After a caller's read (which never
    /// waits for room, see `direct.rs`), what did not fit in the incoming queue: at
    /// most what one read decodes, as the reader thread holds while it waits for room,
    /// and delivered before anything is read again, by whichever thread holds the read
    /// side next.
    pub frames: Vec<Frame>,
    /// The buffer of the reads that detect the protocol and check the first bytes
    /// (freed after them: then both decoders read into buffers of their own).
    pub buf: Vec<u8>,
    /// (Linux and Android) The end of the link as a caller reading it met it (the end of the peer's data,
    /// a failed read, a message that ends the link), for the reader thread to report
    /// as if it had met it itself.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub seen: Option<Seen>,
    /// (Linux and Android) The socket's receive timeout as last set while the read side was shared (the
    /// callers' reads wait with it).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub timeout: Option<Duration>,
    /// (Linux and Android) The bytes the caller holding the read side read since it took
    /// it (see `direct::take`: a caller that read none, or a stream of large messages,
    /// gives it back without the linger).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub caller_read: usize,
    /// (Linux and Android) The frames the caller's reads decoded since it took the read
    /// side (with `caller_read`, the size of the messages it reads: see `direct.rs`).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub caller_frames: usize,
    /// (Linux and Android) When a caller that read large messages (`direct::LARGE`
    /// bytes or more) gave the read side back with the linger (see `direct::take`): the
    /// next caller to take it learns how long the program was away between its takes.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub given_back: Option<Instant>,
    /// (Linux and Android) How long the program was away (working on what it took)
    /// before the caller holding the read side took it: the shorter of the last two
    /// such gaps, each after a caller that read large messages (see `direct::hand_over`).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub away: Option<Duration>,
    /// (Linux and Android) The last such gap alone.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub last_away: Option<Duration>,
}

/// How the reader thread's turn with the read side ended (shared reads).
#[cfg(any(target_os = "linux", target_os = "android"))]
enum Turn {
    /// The link's reading is over.
    Over(Result<(), ReadEnd>),
    /// The socket is empty.
    Empty,
    /// It read (and delivered) messages of the kind a caller keeps the read role for
    /// (`direct::caller_keeps`): the side goes to a caller waiting for it, if one does.
    Yield,
}

/// How a caller's read met the end of its link.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[derive(Debug)]
pub(crate) enum Seen {
    /// The peer sends no more (or the socket was shut down).
    Eof,
    /// The read failed.
    Failed(io::Error),
    /// What was read ends the link (the reason, in words).
    Broken(String),
}

/// Why a read loop ended without the peer closing.
pub(crate) enum ReadEnd {
    Io(io::Error),
    /// The connection stops (close, or the writer ended): nothing to report.
    Stopped,
    /// The link cannot go on (the reason, in words); the writer takes it down.
    Broken(String),
}

impl Reader {
    /// The thread's body: read until the link ends, then tell the writer.
    pub fn run(mut self) {
        if let Some(p) = self.previous.take() {
            let _ = p.join();
        }
        let reason = match self.read_loop() {
            Ok(()) => {
                // The peer sends no more; it may still read: the writer goes on.
                let _ = self.ctl(Control::PeerDone {
                    epoch: self.side_epoch(),
                });
                return;
            }
            Err(ReadEnd::Io(e)) => format!("read failed: {e}"),
            Err(ReadEnd::Broken(reason)) => reason,
            Err(ReadEnd::Stopped) => return,
        };
        let _ = self.ctl(Control::LinkDown {
            epoch: self.side_epoch(),
            reason,
        });
    }

    fn side_epoch(&self) -> u64 {
        self.side.epoch
    }

    /// Reads until the peer closes (`Ok`), the socket fails, or the connection stops.
    fn read_loop(&mut self) -> Result<(), ReadEnd> {
        self.side.buf = vec![0u8; FIRST_CHUNK];
        let (protocol, first, mut sniffer) = match self.shared.protocol() {
            Protocol::Auto => match self.detect()? {
                Some((p, first)) => (p, first, Sniffer::done()),
                None => return Ok(()),
            },
            p => (p, Vec::new(), Sniffer::new(p)),
        };
        let shared = &*self.shared;
        let side = &mut *self.side;
        side.decoder = Decoder::new(protocol, shared.cfg.max_message_size);
        side.decoder.decode(&first, &mut side.frames);
        side.deliver(shared, true)?;
        side.arm_timer(shared);
        loop {
            if sniffer.is_done() && !side.buf.is_empty() {
                // From now on reads go into the decoder's own buffers.
                side.buf = Vec::new();
            }
            if sniffer.is_done() && side.first_by.is_none() && shared_reads(shared) {
                return self.read_shared();
            }
            if side.first_by.is_some() {
                // Until the first message, the receive timeout also runs out at its
                // deadline (one clock read per read, for these reads only).
                side.arm_timer(shared);
            }
            let n = match &mut side.decoder {
                // Once the first bytes are checked, v2 reads straight into the decoder's
                // buffer: large payloads are handed to the program without a copy.
                Decoder::V2(d) if sniffer.is_done() => {
                    d.fill_from(&mut &*side.stream, &mut side.frames)
                }
                // v1 into the decoder's receive chunk: small messages are cut out of it.
                Decoder::V1(d) if sniffer.is_done() => {
                    d.fill_from(&mut &*side.stream, usize::MAX, &mut side.frames)
                }
                d => {
                    let (buf, frames) = (&mut side.buf, &mut side.frames);
                    (&*side.stream).read(buf).inspect(|&n| {
                        if n > 0 {
                            sniffer.check(&buf[..n], |bytes| d.decode(bytes, frames));
                        }
                        if n == buf.len() && n < READ_CHUNK {
                            buf.resize(READ_CHUNK, 0);
                        }
                    })
                }
            };
            match n {
                Ok(0) => return side.ended(shared, Ok(())),
                Ok(n) => side.got(shared, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_timeout(&e) && side.timer(shared).is_some() => {
                    let silent = side.silent(shared);
                    return side.ended(shared, Err(silent));
                }
                Err(e) => return side.ended(shared, Err(ReadEnd::Io(e))),
            }
            if let Some(found) = sniffer.wrong() {
                return Err(side.wrong_protocol(shared, protocol, found));
            }
            side.deliver(shared, true)?;
        }
    }

    /// Auto servers: reads until the first bytes tell the protocol; returns it with the
    /// bytes read so far, or `None` if the peer closed first.
    fn detect(&mut self) -> Result<Option<(Protocol, Vec<u8>)>, ReadEnd> {
        let mut seen = Vec::new();
        let started = Instant::now();
        let timeout = self.shared.cfg.detect_timeout;
        let shared = &*self.shared;
        let side = &mut *self.side;
        let protocol = loop {
            match protocol::detect(&seen) {
                Detection::V1 => break Protocol::V1,
                Detection::V2 => break Protocol::V2,
                Detection::NeedMore => {}
            }
            // Only a proper prefix of the magic makes us wait with a bound; before the
            // first byte, the peer may be silent for as long as the idle and
            // first-message timeouts let it (without them, for as long as it likes).
            let wait = if seen.is_empty() {
                side.timer(shared)
            } else {
                match timeout.checked_sub(started.elapsed()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => {
                        side.protocol_error(shared, ProtocolError::DetectionTimeout);
                        break Protocol::V1;
                    }
                }
            };
            let _ = side.stream.set_read_timeout(wait);
            match (&*side.stream).read(&mut side.buf) {
                Ok(0) => return Ok(None),
                Ok(n) => {
                    shared.stats.read(n);
                    seen.extend_from_slice(&side.buf[..n]);
                }
                Err(e) if seen.is_empty() && is_timeout(&e) && wait.is_some() => {
                    return Err(side.silent(shared))
                }
                Err(e)
                    if !crate::sys::is_cancelled(&e)
                        && matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock
                                | io::ErrorKind::TimedOut
                                | io::ErrorKind::Interrupted
                        ) => {}
                Err(e) => return Err(ReadEnd::Io(e)),
            }
        };
        self.shared.set_protocol(protocol);
        self.ctl(Control::Detected(protocol))?;
        Ok(Some((protocol, seen)))
    }

    fn ctl(&self, c: Control) -> Result<(), ReadEnd> {
        select! {
            send(self.ctl_tx, c) -> r => r.map_err(|_| ReadEnd::Stopped),
            recv(self.shared.shutdown_rx) -> _ => Err(ReadEnd::Stopped),
        }
    }

    /// Without the shared read path (other platforms, or while a timer runs).
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn read_shared(&mut self) -> Result<(), ReadEnd> {
        unreachable!("shared_reads() is false here")
    }

    /// Reads the link with its read side shared with the callers (see `direct.rs`):
    /// holding it, reads without blocking and delivers until the socket is empty; then
    /// gives it back and waits for bytes with a one-byte `MSG_PEEK`, which leaves them
    /// for whoever holds the read side when they come.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn read_shared(&mut self) -> Result<(), ReadEnd> {
        let shared = &*self.shared;
        let inbox = &shared.inbox;
        let stream = self.side.stream.clone();
        // The socket's receive timeout is none here (no timer runs): say so, whatever
        // the detection left.
        let _ = stream.set_read_timeout(None);
        self.side.timeout = None;
        let side = std::mem::replace(&mut self.side, Box::new(ReadSide::new(stream.clone(), 0)));
        inbox.install_side(side);
        // What the last wait for bytes met: an error (the peek took it from the socket),
        // or the receive timeout a caller had set.
        let mut met: Option<io::Error> = None;
        let mut timed_out = false;
        loop {
            let mut side = inbox.reader_take_side();
            let side = match side.reader_turn(shared, met.take(), &mut timed_out) {
                Turn::Over(end) => {
                    // The read side is not given back: callers read no more on this link.
                    self.side = side;
                    return end;
                }
                Turn::Yield => match inbox.reader_yield(side) {
                    // A caller reads next; the reader thread lingers as after a caller.
                    Ok(()) => continue,
                    Err(side) => side,
                },
                Turn::Empty => side,
            };
            if inbox.reader_put_back(side) {
                // Callers wait for the read side: one of them reads next.
                continue;
            }
            let mut byte = [0u8; 1];
            match stream.peek(&mut byte) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => timed_out = true,
                Err(e) => met = Some(e),
            }
        }
    }
}

/// True when the reader may share the link's read side with the callers: on Linux,
/// without an idle timeout (the reader's timer is the socket's receive timeout, which
/// the callers' reads would change), unless built with `--cfg serpy_threaded_reads`
/// (the other platforms' path, for CI to test it on Linux too).
fn shared_reads(shared: &Shared) -> bool {
    cfg!(any(target_os = "linux", target_os = "android"))
        && !cfg!(serpy_threaded_reads)
        && shared.cfg.idle_timeout.is_none()
}

impl ReadSide {
    /// The read side of a new link over `stream`, before its first byte.
    pub fn new(stream: Arc<TcpStream>, epoch: u64) -> Self {
        ReadSide {
            stream,
            epoch,
            recv_mode: Mode::Plain,
            first_by: None,
            unproven: false,
            decoder: Decoder::new(Protocol::V1, 0),
            frames: Vec::new(),
            buf: Vec::new(),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            seen: None,
            #[cfg(any(target_os = "linux", target_os = "android"))]
            timeout: None,
            #[cfg(any(target_os = "linux", target_os = "android"))]
            caller_read: 0,
            #[cfg(any(target_os = "linux", target_os = "android"))]
            caller_frames: 0,
            #[cfg(any(target_os = "linux", target_os = "android"))]
            given_back: None,
            #[cfg(any(target_os = "linux", target_os = "android"))]
            away: None,
            #[cfg(any(target_os = "linux", target_os = "android"))]
            last_away: None,
        }
    }

    /// Accounts for a read of `n` bytes (not zero) in the statistics.
    pub fn got(&mut self, shared: &Shared, n: usize) {
        shared.stats.read(n);
    }

    /// Reads what the socket holds without blocking (at most one buffer) and decodes it
    /// into `frames`; `WouldBlock` when it holds nothing.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub fn read_now(&mut self) -> io::Result<usize> {
        let stream = self.stream.clone();
        self.read_with(&mut NoWait(&stream), usize::MAX)
    }

    /// Reads with `reader` (at most `most` bytes; it may read less) and decodes what came
    /// into `frames`.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub fn read_with(&mut self, reader: &mut impl Source, most: usize) -> io::Result<usize> {
        match &mut self.decoder {
            Decoder::V2(d) => d.fill_from(&mut Limited(reader, most), &mut self.frames),
            Decoder::V1(d) => d.fill_from(reader, most, &mut self.frames),
        }
    }

    /// The reader thread's turn with the read side (shared reads): delivers what a
    /// caller left undelivered (waiting for room), reports what a caller met or what the
    /// last wait for bytes met, else reads and delivers until the socket is empty, or
    /// until a read brought messages that a caller reads better itself (a caller may
    /// wait for the read side meanwhile: see [`Turn::Yield`]).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn reader_turn(
        &mut self,
        shared: &Shared,
        met: Option<io::Error>,
        timed_out: &mut bool,
    ) -> Turn {
        // What a caller read and could not deliver (no room) came before anything else.
        if let Err(end) = self.deliver(shared, true) {
            return Turn::Over(Err(end));
        }
        if let Some(e) = met {
            // The error came before anything a caller may have met after it.
            return Turn::Over(self.ended(shared, Err(ReadEnd::Io(e))));
        }
        match self.seen.take() {
            Some(Seen::Eof) => return Turn::Over(self.ended(shared, Ok(()))),
            Some(Seen::Failed(e)) => return Turn::Over(self.ended(shared, Err(ReadEnd::Io(e)))),
            Some(Seen::Broken(reason)) => return Turn::Over(Err(ReadEnd::Broken(reason))),
            None => {}
        }
        if std::mem::take(timed_out) && self.timeout.is_some() {
            // A caller's receive timeout ran out on the reader's wait: the reader waits
            // without one.
            if self.stream.set_read_timeout(None).is_ok() {
                self.timeout = None;
            }
        }
        loop {
            match self.read_now() {
                Ok(0) => return Turn::Over(self.ended(shared, Ok(()))),
                Ok(n) => {
                    self.got(shared, n);
                    let frames = self.frames.len();
                    if let Err(end) = self.deliver(shared, true) {
                        return Turn::Over(Err(end));
                    }
                    // Everything is delivered: a caller may read on from here.
                    if super::direct::caller_keeps(self, n, frames) {
                        return Turn::Yield;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Turn::Empty,
                Err(e) => return Turn::Over(self.ended(shared, Err(ReadEnd::Io(e)))),
            }
        }
    }

    /// How long the next read may wait for bytes: the idle timeout, or less, until the
    /// first-message deadline; `None`: as long as it takes.
    fn timer(&self, shared: &Shared) -> Option<Duration> {
        let idle = shared.cfg.idle_timeout;
        let first = self.first_by.map(|at| {
            at.saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1))
        });
        match (idle, first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Sets the socket's receive timeout to [`timer`](Self::timer): the idle timer is
    /// the socket's, so that it costs nothing per message.
    fn arm_timer(&self, shared: &Shared) {
        let _ = self.stream.set_read_timeout(self.timer(shared));
    }

    /// A read waited its whole timer and nothing came: the first-message deadline
    /// passed, or the idle timeout did. Reports it; the link ends.
    fn silent(&self, shared: &Shared) -> ReadEnd {
        if let Some(at) = self.first_by {
            if Instant::now() >= at {
                let after = shared.cfg.first_message_timeout.unwrap_or_default();
                let reason = format!(
                    "the peer sent no whole message within the first-message timeout ({after:?})"
                );
                shared.event(EventKind::Unproven {
                    reason: reason.clone(),
                });
                return ReadEnd::Broken(reason);
            }
        }
        let after = shared.cfg.idle_timeout.unwrap_or_default();
        shared.event(EventKind::IdleTimeout { after });
        ReadEnd::Broken(format!(
            "nothing was received for {after:?}, the idle timeout: the peer is taken as dead"
        ))
    }

    /// The link ended (`end`): a message cut short in the decoder is reported.
    fn ended(&self, shared: &Shared, end: Result<(), ReadEnd>) -> Result<(), ReadEnd> {
        let bytes = self.decoder.cut_bytes();
        if bytes > 0 {
            self.protocol_error(shared, ProtocolError::CutShort { bytes });
        }
        end
    }

    /// The peer speaks `found`, not `expected`: say so, and end the link.
    fn wrong_protocol(&self, shared: &Shared, expected: Protocol, found: Protocol) -> ReadEnd {
        self.protocol_error(shared, ProtocolError::WrongProtocol { expected, found });
        ReadEnd::Broken(format!(
            "the peer speaks {found}, but this connection speaks {expected}"
        ))
    }

    fn protocol_error(&self, shared: &Shared, e: ProtocolError) {
        shared.event(EventKind::ProtocolError(e));
    }

    /// Hands what the decoder found (`frames`) to the program, the ack queue, and the
    /// replies. `may_wait`: the reader thread, which waits for room in the incoming
    /// queue; a caller never does: from the first message that does not fit, what is
    /// left stays in `frames`, in order (see [`queue`](Self::queue)).
    pub fn deliver(&mut self, shared: &Shared, may_wait: bool) -> Result<(), ReadEnd> {
        if self.frames.is_empty() {
            return Ok(());
        }
        if self.unproven && self.frames.iter().any(|f| !matches!(f, Frame::Error(_))) {
            // The first whole message or control block: the peer has spoken.
            self.unproven = false;
            shared.proven.store(true, Ordering::Release);
            if self.first_by.take().is_some() {
                self.arm_timer(shared);
            }
        }
        let mut taken = std::mem::take(&mut self.frames);
        let r = self.deliver_frames(shared, &mut taken, may_wait);
        // The vector is kept for the next read: it holds what a caller could not
        // deliver yet, or nothing (all was delivered, or the link ends).
        if r.is_err() {
            taken.clear();
        }
        self.frames = taken;
        r
    }

    fn deliver_frames(
        &mut self,
        shared: &Shared,
        all: &mut Vec<Frame>,
        may_wait: bool,
    ) -> Result<(), ReadEnd> {
        if self.queue_whole(shared, all) {
            return Ok(());
        }
        // What a caller could not deliver (no room), from the first message that did
        // not fit.
        let mut left = Vec::new();
        {
            let mut frames = all.drain(..).peekable();
            while let Some(frame) = frames.next() {
                match frame {
                    Frame::Data { message, mode } => {
                        // This message and the data right after it go in at once.
                        let first = std::iter::once((message, mode));
                        let rest = std::iter::from_fn(|| {
                            match frames.next_if(|f| matches!(f, Frame::Data { .. })) {
                                Some(Frame::Data { message, mode }) => Some((message, mode)),
                                _ => None,
                            }
                        });
                        let mut items = first.chain(rest).peekable();
                        self.queue(shared, &mut items, may_wait)?;
                        if items.peek().is_some() {
                            left.extend(items.map(|(message, mode)| Frame::Data { message, mode }));
                            left.extend(frames);
                            break;
                        }
                    }
                    Frame::SetMode(mode) => {
                        self.recv_mode = mode;
                        self.reply(shared, |r| r.ack_mode_change += 1)
                    }
                    Frame::AckModeChange => {}
                    Frame::AckEot => self.acknowledged(shared),
                    Frame::Error(e) => {
                        let unackable = self.unackable(&e);
                        self.protocol_error(shared, e);
                        if let Some(reason) = unackable {
                            return Err(ReadEnd::Broken(reason));
                        }
                    }
                }
            }
        }
        all.append(&mut left);
        Ok(())
    }

    /// When `e` means that a message in an acknowledged mode was dropped: why the link
    /// must end. v1 acknowledgements carry no id and are matched in order, so without
    /// an ACKEOT for it every later one would answer the wrong send; with one, the
    /// sender would be told that its message arrived. Ending the link fails the sends in
    /// flight instead (the sender gets `AckUncertain`), and a reconnect starts in step.
    fn unackable(&self, e: &ProtocolError) -> Option<String> {
        if !self.recv_mode.is_acked() {
            return None;
        }
        let what = match e {
            ProtocolError::TooLarge { max, .. } => {
                format!("it is larger than max_message_size ({max} bytes)")
            }
            ProtocolError::BadBase85 { .. } => "it is not valid base85".to_string(),
            _ => return None,
        };
        Some(format!(
            "the peer sent a message in acknowledged mode {} that could not be delivered \
             ({what}); the link was closed so that later acknowledgements are not matched \
             to the wrong messages",
            self.recv_mode
        ))
    }

    /// Puts received messages in the incoming queue, in order, within its bounds: as
    /// many as fit in one go, then (if some are left) waits for room and goes on. An
    /// ACKEOT is owed for each acknowledged one once it is in the queue. A caller
    /// (`may_wait` false) must not wait for room that only its own takes would make: it
    /// puts in what fits and returns, what is left still in `items` (the reader is then
    /// marked as waiting for room, `Inbox::reader_waiting`: the link is held back until
    /// the program reads).
    fn queue<I: Iterator<Item = Incoming>>(
        &self,
        shared: &Shared,
        items: &mut std::iter::Peekable<I>,
        may_wait: bool,
    ) -> Result<(), ReadEnd> {
        let inbox = &shared.inbox;
        loop {
            let (n, acked) = inbox.push_some(items);
            if n > 0 {
                shared.stats.received_many(n);
                shared.notify();
            }
            if acked > 0 {
                self.reply(shared, |r| r.ack_eot += acked);
            }
            if items.peek().is_none() || !may_wait {
                return Ok(());
            }
            if !inbox.wait_for_room(&shared.shutdown_rx) {
                return Err(ReadEnd::Stopped);
            }
        }
    }

    /// The common case of [`deliver_frames`](Self::deliver_frames): `all` holds data
    /// only, and all of it fits in the incoming queue: it goes in at once (one pass to
    /// count it, one to move it), its ACKEOTs owed. False, with `all` untouched,
    /// otherwise.
    fn queue_whole(&self, shared: &Shared, all: &mut Vec<Frame>) -> bool {
        let (mut charged, mut acked) = (0usize, 0u64);
        for frame in all.iter() {
            match frame {
                Frame::Data { message, mode } => {
                    charged = charged.saturating_add(charge(message.len()));
                    acked += u64::from(mode.is_some_and(|m| m.is_acked()));
                }
                _ => return false,
            }
        }
        let n = all.len();
        let data = |f| match f {
            Frame::Data { message, mode } => Some((message, mode)),
            _ => None,
        };
        if !shared
            .inbox
            .push_all(n, charged, || all.drain(..).filter_map(data))
        {
            return false;
        }
        shared.stats.received_many(n);
        shared.notify();
        if acked > 0 {
            self.reply(shared, |r| r.ack_eot += acked);
        }
        true
    }

    /// The peer acknowledged the oldest acknowledged message written on this link.
    fn acknowledged(&self, shared: &Shared) {
        let mut acks = lock(&shared.acks);
        if acks.epoch != self.epoch {
            return;
        }
        match acks.waiting.pop_front() {
            Some(slot) => {
                let _ = slot.send(Ok(()));
            }
            None => {
                // A peer can send these without end: rate-limited.
                if let Some(n) = shared.stray_acks.hit() {
                    log::warn!(
                        "serpy {}: the peer acknowledged a message that was not sent in an acknowledged mode; ignored ({n} so far on this connection)",
                        shared.label()
                    )
                }
            }
        }
    }

    /// Owes the peer a control reply; the writer sends it as soon as it can.
    fn reply(&self, shared: &Shared, owe: impl FnOnce(&mut Replies)) {
        {
            let mut r = lock(&shared.replies);
            if r.epoch != self.epoch {
                return;
            }
            owe(&mut r);
        }
        // While the writer thread is idle, write the reply from here without blocking,
        // which saves waking it; otherwise (and for what could not go at once) wake it.
        if let Some(mut link) = try_lock(&shared.link) {
            if inline::write_replies_now(&mut link, shared, self.epoch) {
                return;
            }
        }
        // One wake-up waiting is enough: the writer reads the counters.
        let _ = shared.ctl_tx.try_send(Control::Wake);
    }
}

/// A reader that reads at most `.1` bytes at a time from `.0`.
#[cfg(any(target_os = "linux", target_os = "android"))]
struct Limited<'a, R>(&'a mut R, usize);

#[cfg(any(target_os = "linux", target_os = "android"))]
impl<R: Read> Read for Limited<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let to = buf.len().min(self.1);
        self.0.read(&mut buf[..to])
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
impl<R: Source> Source for Limited<'_, R> {
    fn read_into(&mut self, buf: &mut BytesMut, from: usize, most: usize) -> io::Result<usize> {
        self.0.read_into(buf, from, most.min(self.1))
    }

    fn set_low_water(&mut self, bytes: usize) -> bool {
        self.0.set_low_water(bytes)
    }

    fn waits(&self) -> bool {
        self.0.waits()
    }
}

/// Reads from the socket without blocking (`WouldBlock` when it holds nothing), though
/// other threads may block on it.
#[cfg(any(target_os = "linux", target_os = "android"))]
struct NoWait<'a>(&'a TcpStream);

#[cfg(any(target_os = "linux", target_os = "android"))]
impl Read for NoWait<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        crate::sys::recv_now(self.0, buf)
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
impl Source for NoWait<'_> {
    fn read_into(&mut self, buf: &mut BytesMut, from: usize, most: usize) -> io::Result<usize> {
        crate::sys::recv_into(self.0, buf, from, most, libc::MSG_DONTWAIT)
    }

    fn set_low_water(&mut self, bytes: usize) -> bool {
        crate::sys::set_recv_low_water(self.0, bytes).is_ok()
    }

    fn waits(&self) -> bool {
        false
    }
}

/// True for the error of a read whose receive timeout ran out (not for a read that
/// closing cancelled, which Windows reports with the same kind).
fn is_timeout(e: &io::Error) -> bool {
    !crate::sys::is_cancelled(e)
        && matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        )
}

/// Looks at the first bytes of a link for the other protocol: a v2 magic at the start of
/// a v1 link, a v1 block at the start of a v2 link (a v1 peer sending to a v2 server).
/// Pure, so it is tested without sockets.
pub(crate) struct Sniffer {
    /// The protocol the link speaks; `None` once the check is over.
    speaks: Option<Protocol>,
    /// v1: the first bytes while they are a proper prefix of the v2 magic (held back
    /// from the decoder). v2: up to [`SNIFF_BYTES`] first bytes (also given on).
    seen: Vec<u8>,
    /// Set when the peer speaks the other protocol.
    wrong: Option<Protocol>,
}

/// A v2 link looks at most this many first bytes for a v1 block.
const SNIFF_BYTES: usize = 64;

impl Sniffer {
    /// Checks the first bytes of a link that speaks `protocol`.
    pub fn new(protocol: Protocol) -> Self {
        Sniffer {
            speaks: (protocol != Protocol::Auto).then_some(protocol),
            seen: Vec::new(),
            wrong: None,
        }
    }

    /// No check (the protocol was detected from these bytes already).
    pub fn done() -> Self {
        Sniffer::new(Protocol::Auto)
    }

    /// True once the check is over.
    pub fn is_done(&self) -> bool {
        self.speaks.is_none()
    }

    /// The protocol the peer speaks, when it is the other one.
    pub fn wrong(&self) -> Option<Protocol> {
        self.wrong
    }

    /// Offers the next bytes read; `decode` gets what may go to the decoder.
    pub fn check(&mut self, input: &[u8], mut decode: impl FnMut(&[u8])) {
        match self.speaks {
            None => decode(input),
            Some(Protocol::V1) => {
                self.seen.extend_from_slice(input);
                match protocol::detect(&self.seen) {
                    Detection::NeedMore => {}
                    Detection::V2 => self.found(Protocol::V2),
                    Detection::V1 => {
                        self.speaks = None;
                        decode(&std::mem::take(&mut self.seen));
                    }
                }
            }
            Some(_) => {
                let room = SNIFF_BYTES.saturating_sub(self.seen.len());
                self.seen.extend_from_slice(&input[..input.len().min(room)]);
                match v1_start(&self.seen) {
                    Some(true) => self.found(Protocol::V1),
                    Some(false) => self.speaks = None,
                    None if self.seen.len() >= SNIFF_BYTES => self.speaks = None,
                    None => {}
                }
                if self.wrong.is_none() {
                    decode(input);
                }
            }
        }
    }

    fn found(&mut self, protocol: Protocol) {
        self.wrong = Some(protocol);
        self.speaks = None;
        self.seen = Vec::new();
    }
}

/// Whether a stream that should be v2 starts with a v1 block: `Some(true)` for a block
/// of printable text or a v1 control block (`01 SETMODE...`) ended by `0x1F`,
/// `Some(false)` when it cannot be one (the v2 magic, or other bytes), `None` while the
/// bytes so far could still be either.
fn v1_start(seen: &[u8]) -> Option<bool> {
    if protocol::detect(seen) != Detection::V1 {
        return match protocol::detect(seen) {
            Detection::V2 => Some(false),
            _ => None,
        };
    }
    let control = seen.first() == Some(&0x01);
    let body = if control { &seen[1..] } else { seen };
    for (i, &b) in body.iter().enumerate() {
        let fits = if control {
            b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'!'
        } else {
            (0x20..0x7f).contains(&b) || b == b'\t' || b == b'\n' || b == b'\r'
        };
        if b == 0x1f {
            return Some(i > 0);
        }
        if !fits {
            return Some(false);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sniff(protocol: Protocol, chunks: &[&[u8]]) -> (Option<Protocol>, Vec<u8>, bool) {
        let mut s = Sniffer::new(protocol);
        let mut passed = Vec::new();
        for c in chunks {
            s.check(c, |b| passed.extend_from_slice(b));
        }
        (s.wrong(), passed, s.is_done())
    }

    #[test]
    fn a_v1_link_holds_a_magic_prefix_and_finds_a_v2_peer() {
        let magic = protocol::v2::MAGIC;
        assert_eq!(
            sniff(Protocol::V1, &[&magic[..2], &magic[2..]]).0,
            Some(Protocol::V2)
        );
        // A prefix of the magic that turns out to be v1 is given on whole, in order.
        let (wrong, passed, done) = sniff(Protocol::V1, &[b"\xde", b"\xcaX\x1f"]);
        assert_eq!((wrong, done), (None, true));
        assert_eq!(passed, b"\xde\xcaX\x1f");
        let (wrong, passed, _) = sniff(Protocol::V1, &[b"hello\x1f", b"more"]);
        assert_eq!(wrong, None);
        assert_eq!(passed, b"hello\x1fmore");
    }

    #[test]
    fn a_v2_link_finds_a_v1_peer_and_lets_garbage_through() {
        assert_eq!(
            sniff(Protocol::V2, &[b"\x01SETMO", b"DE1\x1fhi\x04\x1f"]).0,
            Some(Protocol::V1)
        );
        assert_eq!(sniff(Protocol::V2, &[b"hello\x1f"]).0, Some(Protocol::V1));
        let (wrong, passed, done) = sniff(Protocol::V2, &[b"\x00\x07\x0e\x1f"]);
        assert_eq!((wrong, done), (None, true));
        assert_eq!(passed, b"\x00\x07\x0e\x1f");
        let mut frame = protocol::v2::MAGIC.to_vec();
        frame.extend_from_slice(b"\x21\x00\x00\x00\x00\x00\x00\x00\x00");
        assert_eq!(sniff(Protocol::V2, &[&frame]), (None, frame.clone(), true));
        // An empty block first is not a v1 message.
        assert_eq!(sniff(Protocol::V2, &[b"\x1f"]).0, None);
    }
}
