//! The reader thread of one link: detect the protocol (auto servers), read, decode,
//! deliver data to the incoming queue, match acknowledgements, owe replies.
//!
//! Threads: reader (one per link; each joins the one before it, so messages stay in
//! order across reconnects).

use std::io::{self, Read};
use std::net::TcpStream;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{select, Sender, TrySendError};

use super::inline;
use super::state::{Replies, Shared};
use super::vocab::{Control, Incoming};
use crate::error::ProtocolError;
use crate::event::Event;
use crate::protocol::{self, Decoder, Detection, Frame, Mode, Protocol};
use crate::sync::{lock, try_lock};

/// Size of the reader's buffer for v1.
const READ_CHUNK: usize = 64 * 1024;

/// The reader thread of one link.
pub(crate) struct Reader {
    pub shared: Arc<Shared>,
    /// The read half of the link's socket.
    pub stream: TcpStream,
    /// The link this reader reads.
    pub epoch: u64,
    /// The reader's end of the incoming queue.
    pub in_tx: Sender<Incoming>,
    pub ctl_tx: Sender<Control>,
    /// The reader of the previous link: joined first, so messages stay in order.
    pub previous: Option<JoinHandle<()>>,
}

/// Why a read loop ended without the peer closing.
enum ReadEnd {
    Io(io::Error),
    Stopped,
}

impl Reader {
    /// The thread's body: read until the link ends, then tell the writer.
    pub fn run(mut self) {
        if let Some(p) = self.previous.take() {
            let _ = p.join();
        }
        let reason = match self.read_loop() {
            Ok(()) => "the peer closed the connection".to_string(),
            Err(ReadEnd::Io(e)) => format!("read failed: {e}"),
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
        let mut buf = vec![0u8; READ_CHUNK];
        let (protocol, first) = match self.shared.protocol() {
            Protocol::Auto => match self.detect(&mut buf)? {
                Some(found) => found,
                None => return Ok(()),
            },
            p => (p, Vec::new()),
        };
        let mut decoder = Decoder::new(protocol, self.shared.cfg.max_message_size);
        decoder.decode(&first, &mut frames);
        self.deliver(&mut frames)?;
        loop {
            let n = match &mut decoder {
                // v2 reads straight into the decoder's buffer: large payloads are handed
                // to the program without a copy.
                Decoder::V2(d) => d.read_from(&mut self.stream, &mut frames),
                Decoder::V1(d) => self
                    .stream
                    .read(&mut buf)
                    .inspect(|&n| d.decode(&buf[..n], &mut frames)),
            };
            match n {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ReadEnd::Io(e)),
            }
            self.deliver(&mut frames)?;
        }
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
            // first byte, the peer may be silent for as long as it likes.
            let wait = if seen.is_empty() {
                None
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
                Ok(n) => seen.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(ReadEnd::Io(e)),
            }
        };
        let _ = self.stream.set_read_timeout(None);
        self.shared.set_protocol(protocol);
        self.ctl(Control::Detected(protocol))?;
        Ok(Some((protocol, seen)))
    }

    fn protocol_error(&self, e: ProtocolError) {
        self.shared.event(Event::ProtocolError(e));
    }

    /// Hands what the decoder found to the program, the ack queue, and the replies.
    fn deliver(&mut self, frames: &mut Vec<Frame>) -> Result<(), ReadEnd> {
        for frame in frames.drain(..) {
            match frame {
                Frame::Data { message, mode } => {
                    let acked = mode.is_some_and(Mode::is_acked);
                    self.queue((message, mode))?;
                    if acked {
                        self.reply(|r| r.ack_eot += 1);
                    }
                }
                Frame::SetMode(_) => self.reply(|r| r.ack_mode_change += 1),
                Frame::AckModeChange => {}
                Frame::AckEot => self.acknowledged(),
                Frame::Error(e) => self.protocol_error(e),
            }
        }
        Ok(())
    }

    /// Puts a received message in the incoming queue, within the byte budget.
    fn queue(&self, item: Incoming) -> Result<(), ReadEnd> {
        let size = item.0.len();
        if !self
            .shared
            .budget
            .wait_for_room(size, &self.shared.shutdown_rx)
        {
            return Err(ReadEnd::Stopped);
        }
        self.shared.budget.add(size);
        // A plain send while there is room (the usual case), cheaper than a select.
        match self.in_tx.try_send(item) {
            Ok(()) => {}
            Err(TrySendError::Disconnected(_)) => return Err(ReadEnd::Stopped),
            Err(TrySendError::Full(item)) => select! {
                send(self.in_tx, item) -> r => if r.is_err() { return Err(ReadEnd::Stopped) },
                recv(self.shared.shutdown_rx) -> _ => return Err(ReadEnd::Stopped),
            },
        }
        self.shared.notify();
        Ok(())
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
            None => log::warn!(
                "serpy {}: the peer acknowledged a message that was not sent in an acknowledged mode; ignored",
                self.shared.label()
            ),
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
