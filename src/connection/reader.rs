//! The reader thread of one link: detect the protocol (auto servers), read, decode,
//! deliver data to the incoming queue, match acknowledgements, owe replies.
//!
//! Threads: reader (one per link; each joins the one before it, so messages stay in
//! order across reconnects).

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
use super::vocab::{Control, Incoming};
use crate::error::ProtocolError;
use crate::event::EventKind;
use crate::protocol::{self, Decoder, Detection, Frame, Mode, Protocol};
use crate::sync::{lock, try_lock};

/// Size of the reader's buffer for v1.
const READ_CHUNK: usize = 64 * 1024;
/// Size of the reader's buffer until a read fills it: a connection that sends little
/// (one that has not spoken yet, most of all) holds 4 KiB, not 64.
const FIRST_CHUNK: usize = 4 * 1024;

/// The reader thread of one link.
pub(crate) struct Reader {
    /// What the connection's threads share.
    pub shared: Arc<Shared>,
    /// The read half of the link's socket.
    pub stream: TcpStream,
    /// The link this reader reads.
    pub epoch: u64,
    /// The reader's hold on the incoming queue.
    pub in_tx: InboxTx,
    /// To the writer.
    pub ctl_tx: Sender<Control>,
    /// The reader of the previous link: joined first, so messages stay in order.
    pub previous: Option<JoinHandle<()>>,
    /// The v1 mode the peer sends in on this link (every link starts in mode 0).
    pub recv_mode: Mode,
    /// Servers with a first-message timeout: when the peer must have sent a whole
    /// first message (or control block) by; `None` once it has, or without one.
    pub first_by: Option<Instant>,
    /// A server's connection whose peer has not sent a whole message or control block
    /// yet (see `Shared::proven`).
    pub unproven: bool,
}

/// Why a read loop ended without the peer closing.
enum ReadEnd {
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
                let _ = self.ctl(Control::PeerDone { epoch: self.epoch });
                return;
            }
            Err(ReadEnd::Io(e)) => format!("read failed: {e}"),
            Err(ReadEnd::Broken(reason)) => reason,
            Err(ReadEnd::Stopped) => return,
        };
        let _ = self.ctl(Control::LinkDown {
            epoch: self.epoch,
            reason,
        });
    }

    /// Reads until the peer closes (`Ok`), the socket fails, or the connection stops.
    fn read_loop(&mut self) -> Result<(), ReadEnd> {
        let mut frames = Vec::new();
        let mut buf = vec![0u8; FIRST_CHUNK];
        let (protocol, first, mut sniffer) = match self.shared.protocol() {
            Protocol::Auto => match self.detect(&mut buf)? {
                Some((p, first)) => (p, first, Sniffer::done()),
                None => return Ok(()),
            },
            p => (p, Vec::new(), Sniffer::new(p)),
        };
        let mut decoder = Decoder::new(protocol, self.shared.cfg.max_message_size);
        decoder.decode(&first, &mut frames);
        self.deliver(&mut frames)?;
        self.arm_timer();
        loop {
            if self.first_by.is_some() {
                // Until the first message, the receive timeout also runs out at its
                // deadline (one clock read per read, for these reads only).
                self.arm_timer();
            }
            let n = match &mut decoder {
                // Once the first bytes are checked, v2 reads straight into the decoder's
                // buffer: large payloads are handed to the program without a copy.
                Decoder::V2(d) if sniffer.is_done() => d.read_from(&mut self.stream, &mut frames),
                d => self.stream.read(&mut buf).inspect(|&n| {
                    if n > 0 {
                        sniffer.check(&buf[..n], |bytes| d.decode(bytes, &mut frames));
                    }
                }),
            };
            match n {
                Ok(0) => return self.ended(&decoder, Ok(())),
                Ok(n) => {
                    self.shared.stats.read(n);
                    if n == buf.len() && n < READ_CHUNK {
                        buf.resize(READ_CHUNK, 0);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_timeout(&e) && self.timer().is_some() => {
                    return self.ended(&decoder, Err(self.silent()))
                }
                Err(e) => return self.ended(&decoder, Err(ReadEnd::Io(e))),
            }
            if let Some(found) = sniffer.wrong() {
                return Err(self.wrong_protocol(protocol, found));
            }
            self.deliver(&mut frames)?;
        }
    }

    /// How long the next read may wait for bytes: the idle timeout, or less, until the
    /// first-message deadline; `None`: as long as it takes.
    fn timer(&self) -> Option<Duration> {
        let idle = self.shared.cfg.idle_timeout;
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
    fn arm_timer(&self) {
        let _ = self.stream.set_read_timeout(self.timer());
    }

    /// A read waited its whole timer and nothing came: the first-message deadline
    /// passed, or the idle timeout did. Reports it; the link ends.
    fn silent(&self) -> ReadEnd {
        if let Some(at) = self.first_by {
            if Instant::now() >= at {
                let after = self.shared.cfg.first_message_timeout.unwrap_or_default();
                let reason = format!(
                    "the peer sent no whole message within the first-message timeout ({after:?})"
                );
                self.shared.event(EventKind::Unproven {
                    reason: reason.clone(),
                });
                return ReadEnd::Broken(reason);
            }
        }
        let after = self.shared.cfg.idle_timeout.unwrap_or_default();
        self.shared.event(EventKind::IdleTimeout { after });
        ReadEnd::Broken(format!(
            "nothing was received for {after:?}, the idle timeout: the peer is taken as dead"
        ))
    }

    /// The link ended (`end`): a message cut short in the decoder is reported.
    fn ended(&self, decoder: &Decoder, end: Result<(), ReadEnd>) -> Result<(), ReadEnd> {
        let bytes = decoder.cut_bytes();
        if bytes > 0 {
            self.protocol_error(ProtocolError::CutShort { bytes });
        }
        end
    }

    /// The peer speaks `found`, not `expected`: say so, and end the link.
    fn wrong_protocol(&self, expected: Protocol, found: Protocol) -> ReadEnd {
        self.protocol_error(ProtocolError::WrongProtocol { expected, found });
        ReadEnd::Broken(format!(
            "the peer speaks {found}, but this connection speaks {expected}"
        ))
    }

    /// Auto servers: reads until the first bytes tell the protocol; returns it with the
    /// bytes read so far, or `None` if the peer closed first.
    fn detect(&mut self, buf: &mut [u8]) -> Result<Option<(Protocol, Vec<u8>)>, ReadEnd> {
        let mut seen = Vec::new();
        let started = Instant::now();
        let timeout = self.shared.cfg.detect_timeout;
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
                self.timer()
            } else {
                match timeout.checked_sub(started.elapsed()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => {
                        self.protocol_error(ProtocolError::DetectionTimeout);
                        break Protocol::V1;
                    }
                }
            };
            let _ = self.stream.set_read_timeout(wait);
            match self.stream.read(buf) {
                Ok(0) => return Ok(None),
                Ok(n) => {
                    self.shared.stats.read(n);
                    seen.extend_from_slice(&buf[..n]);
                }
                Err(e) if seen.is_empty() && is_timeout(&e) && wait.is_some() => {
                    return Err(self.silent())
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

    fn protocol_error(&self, e: ProtocolError) {
        self.shared.event(EventKind::ProtocolError(e));
    }

    /// Hands what the decoder found to the program, the ack queue, and the replies.
    fn deliver(&mut self, frames: &mut Vec<Frame>) -> Result<(), ReadEnd> {
        if self.unproven && frames.iter().any(|f| !matches!(f, Frame::Error(_))) {
            // The first whole message or control block: the peer has spoken.
            self.unproven = false;
            self.shared.proven.store(true, Ordering::Release);
            if self.first_by.take().is_some() {
                self.arm_timer();
            }
        }
        let mut frames = frames.drain(..).peekable();
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
                    self.queue(&mut first.chain(rest).peekable())?;
                }
                Frame::SetMode(mode) => {
                    self.recv_mode = mode;
                    self.reply(|r| r.ack_mode_change += 1)
                }
                Frame::AckModeChange => {}
                Frame::AckEot => self.acknowledged(),
                Frame::Error(e) => {
                    let unackable = self.unackable(&e);
                    self.protocol_error(e);
                    if let Some(reason) = unackable {
                        return Err(ReadEnd::Broken(reason));
                    }
                }
            }
        }
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
    /// ACKEOT is owed for each acknowledged one once it is in the queue.
    fn queue<I: Iterator<Item = Incoming>>(
        &self,
        items: &mut std::iter::Peekable<I>,
    ) -> Result<(), ReadEnd> {
        let inbox = self.in_tx.inbox();
        loop {
            let (n, acked) = inbox.push_some(items);
            if n > 0 {
                self.shared.stats.received_many(n);
                self.shared.notify();
            }
            if acked > 0 {
                self.reply(|r| r.ack_eot += acked);
            }
            if items.peek().is_none() {
                return Ok(());
            }
            if !inbox.wait_for_room(&self.shared.shutdown_rx) {
                return Err(ReadEnd::Stopped);
            }
        }
    }

    /// The peer acknowledged the oldest acknowledged message written on this link.
    fn acknowledged(&self) {
        let mut acks = lock(&self.shared.acks);
        if acks.epoch != self.epoch {
            return;
        }
        match acks.waiting.pop_front() {
            Some(slot) => {
                let _ = slot.send(Ok(()));
            }
            None => {
                // A peer can send these without end: rate-limited.
                if let Some(n) = self.shared.stray_acks.hit() {
                    log::warn!(
                        "serpy {}: the peer acknowledged a message that was not sent in an acknowledged mode; ignored ({n} so far on this connection)",
                        self.shared.label()
                    )
                }
            }
        }
    }

    /// Owes the peer a control reply; the writer sends it as soon as it can.
    fn reply(&self, owe: impl FnOnce(&mut Replies)) {
        {
            let mut r = lock(&self.shared.replies);
            if r.epoch != self.epoch {
                return;
            }
            owe(&mut r);
        }
        // While the writer thread is idle, write the reply from here without blocking,
        // which saves waking it; otherwise (and for what could not go at once) wake it.
        if let Some(mut link) = try_lock(&self.shared.link) {
            if inline::write_replies_now(&mut link, &self.shared, self.epoch) {
                return;
            }
        }
        // One wake-up waiting is enough: the writer reads the counters.
        let _ = self.ctl_tx.try_send(Control::Wake);
    }

    fn ctl(&self, c: Control) -> Result<(), ReadEnd> {
        select! {
            send(self.ctl_tx, c) -> r => r.map_err(|_| ReadEnd::Stopped),
            recv(self.shared.shutdown_rx) -> _ => Err(ReadEnd::Stopped),
        }
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
