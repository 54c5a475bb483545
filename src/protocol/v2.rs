//! v2 ("serpy2"): 14-byte header, typed frames.
//!
//! Every message is one frame: the magic `DE CA FE CA FE`, a type code, the checksum
//! (sum of the payload bytes modulo 2^32, little endian), the payload length (u32, little
//! endian), then the payload. See `docs/PROTOCOL.md` in the repository, section "v2".
//!
//! | code | [`Message`] | payload |
//! |---|---|---|
//! | [`TYPE_INT`] `0x01` | `Int` | i64, little endian, 8 bytes |
//! | [`TYPE_FLOAT`] `0x11` | `Float` | the ASCII text of Python's `float.hex()` ([`float_hex`]) |
//! | [`TYPE_TEXT`] `0x21` | `Text` | UTF-8 |
//! | [`TYPE_BYTES`] `0x81` | `Bytes` | raw bytes |
//!
//! # How the decoder treats a broken stream
//!
//! It never panics and never stops: it reports a [`Frame::Error`] and goes on.
//!
//! - **Bytes that are not a frame** are skipped up to the next full magic; a partial magic
//!   at the end of the input is kept in case the next bytes complete it. Skipped bytes are
//!   reported as [`ProtocolError::BadMagic`] when the next magic is found or, at the
//!   latest, when the `decode` (or [`Decoder::read_from`]) call that threw them away ends,
//!   so that garbage followed by silence is still seen. A run of garbage is thus reported
//!   once per call that threw bytes of it away (never twice in one call), and the
//!   `skipped` counts of its reports add up to the bytes skipped, whatever the chunking.
//!   Apart from this split of the reports, the frames do not depend on how the input is
//!   cut into chunks.
//! - **A length above the maximum message size**: [`ProtocolError::TooLarge`] as soon as
//!   the header is read, then that many bytes are thrown away as they arrive, without
//!   being stored, and decoding resumes at the next frame.
//! - **A checksum mismatch**: [`ProtocolError::BadChecksum`], the frame is dropped. Then a
//!   type code other than the four ([`ProtocolError::UnknownType`]), an integer payload
//!   that is not 8 bytes ([`ProtocolError::BadInt`]), a float text that Python's
//!   `float.fromhex()` would refuse ([`ProtocolError::BadFloat`]) or text that is not
//!   UTF-8 ([`ProtocolError::InvalidUtf8`]) drop the frame, reported likewise.
//!
//! # Memory
//!
//! The decoder's buffers grow with the bytes that arrive, never with what a header
//! claims. Headers and small payloads go through a receive buffer of about
//! [`CHUNK`] bytes plus one small frame. A payload of [`SHARE_THRESHOLD`] bytes or
//! more is collected in a buffer of its own (with room for its header before it), which
//! grows by at most what already arrived
//! of it (at least [`MIN_READ`] at a time) and which the message
//! then takes along, without a copy: with [`Decoder::read_from`], the bytes that arrive
//! after the header's read go from the socket into the message directly, and after a
//! large frame the next header is read together with its payload into such a buffer
//! (the next frame is expected to be as long; if it is not, its bytes are decoded as
//! they came). Between calls the decoder holds less than one frame ([`Decoder::buffered`]
//! is at most `max(max_message_size, HEADER_LEN)`); during a call, at most [`MIN_READ`]
//! plus [`HEADER_LEN`] bytes more.
//! An oversized frame is thrown away as it arrives and never stored (its bytes only pass
//! through room already allocated).
//!
//! When the program lets go of a large message (every clone of it), its buffer goes back
//! to the decoder, which keeps up to 16 such buffers (at most [`RETAIN_MAX`] bytes in
//! all) to receive the next large payloads into: a stream of large frames then costs no
//! allocation, no page faults and no zeroing. A kept buffer is reused only for a payload
//! at least half its size; the buffers are freed with the decoder.
//!
//! The receive buffer comes in chunks of [`CHUNK`] bytes (plus a small frame at most),
//! and small text and bytes payloads are cut out of it without a copy (one allocation
//! per chunk, not one per message). A small message therefore keeps its chunk alive
//! while it lives: at most [`CHUNK`] bytes and one small frame more than itself (the
//! messages that arrive together share it). A program that keeps a few small messages
//! for long and drops the rest can copy them (`Bytes::copy_from_slice`). Once every
//! payload cut from a chunk is gone, the decoder reuses it for the next reads.

use std::fmt;
use std::io::{self, Read};

use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bytes::{Buf, Bytes, BytesMut};

use crate::error::{lossy_excerpt, Error, ProtocolError, Result};
use crate::message::{Message, Text};
use crate::protocol::{Frame, WireBuf, SHARE_THRESHOLD};

mod hexfloat;

pub use hexfloat::{float_fromhex, float_hex, HexFloatError, FLOAT_HEX_MAX_LEN};

/// The magic that starts every v2 frame.
pub const MAGIC: [u8; 5] = [0xDE, 0xCA, 0xFE, 0xCA, 0xFE];
/// Header length: magic (5), type code (1), checksum (4), payload length (4).
pub const HEADER_LEN: usize = 14;

/// Type code of an integer frame (i64, little endian).
pub const TYPE_INT: u8 = 0x01;
/// Type code of a float frame (text of Python's `float.hex()`).
pub const TYPE_FLOAT: u8 = 0x11;
/// Type code of a text frame (UTF-8).
pub const TYPE_TEXT: u8 = 0x21;
/// Type code of a bytes frame.
pub const TYPE_BYTES: u8 = 0x81;

/// The largest payload a frame can carry: its length field is a u32.
pub const MAX_PAYLOAD: usize = u32::MAX as usize;

/// The room [`Decoder::read_from`] offers outside a large payload, and the least it lets
/// the buffer of a large payload grow by.
pub const MIN_READ: usize = 64 * 1024;
/// The largest read [`Decoder::read_from`] asks for (inside a large payload).
pub const MAX_READ: usize = 4 * 1024 * 1024;
/// Inside a payload of more than [`PIECE_FROM`] bytes, [`Decoder::read_from`] asks for at
/// most this many: small enough that the bytes a read brings are still in the processor's
/// cache when their checksum is added right after it (at 16 MiB the reader's checksum
/// took half the time; at 1 MiB, where a whole read stays in cache, more reads cost
/// more than they save).
const PIECE: usize = 256 * 1024;
/// See [`PIECE`].
const PIECE_FROM: usize = 2 * 1024 * 1024;
/// The decoder sets a receive low-water mark only inside payloads of this many bytes or
/// more (see `Decoder::tune_low_water`): for smaller ones, the system calls that set it
/// cost more than the wake-ups they save.
const LOW_WATER_FROM: usize = 256 * 1024;
/// The highest receive low-water mark the decoder sets on a socket (see
/// `Decoder::tune_low_water`): the kernel holds twice as much for it.
const LOW_WATER_MOST: usize = 1024 * 1024;
/// The most bytes of payload buffers, given back by messages the program has let go of,
/// that a decoder keeps to receive the next large payloads into (and a header each, see
/// [`Decoder::read_from`]).
pub const RETAIN_MAX: usize = 32 * 1024 * 1024;
/// The most payload buffers a decoder keeps (see [`RETAIN_MAX`]).
const POOL_BUFFERS: usize = 16;
/// The receive buffer comes in chunks of this many bytes (plus what is held of a frame
/// when a new one starts), out of which small payloads are cut.
pub const CHUNK: usize = 64 * 1024;
/// [`Decoder::read_from`] takes a new chunk when less room than this is left in the one
/// it reads into.
const LEAST_READ: usize = 16 * 1024;

/// The v2 checksum: the sum of all bytes, modulo 2^32.
///
/// On x86-64 processors that have AVX2 it sums payloads of 256 bytes or more with those
/// 32-byte vectors, chosen at run time (the crate is built for baseline x86-64); the
/// result is the same on every processor.
///
/// ```
/// use serpy::protocol::v2::checksum;
/// assert_eq!(checksum(b""), 0);
/// assert_eq!(checksum(b"hello"), 532);
/// assert_eq!(checksum(&vec![0xff; 1 << 24]), 0xff00_0000);
/// ```
pub fn checksum(payload: &[u8]) -> u32 {
    crate::sys::byte_sum(payload)
}

/// [`checksum`] in portable Rust: what the other processors and short payloads take.
#[inline(always)]
pub(crate) fn portable_checksum(payload: &[u8]) -> u32 {
    // Sums of 64 bytes each fit a u32 and compile to wide byte-sum instructions (psadbw
    // on x86-64); measured faster than adding into u16 lanes.
    let mut blocks = payload.chunks_exact(64);
    let total = blocks.by_ref().fold(0u32, |total, block| {
        total.wrapping_add(block.iter().map(|&byte| u32::from(byte)).sum::<u32>())
    });
    blocks
        .remainder()
        .iter()
        .fold(total, |sum, &byte| sum.wrapping_add(u32::from(byte)))
}

/// The 14-byte header of a frame of type `type_code` carrying `payload`.
///
/// The length field is `payload.len()` modulo 2^32: payloads longer than [`MAX_PAYLOAD`]
/// cannot be framed ([`encode`] refuses them).
///
/// ```
/// use serpy::protocol::v2::{header, MAGIC, TYPE_BYTES};
/// let h = header(TYPE_BYTES, b"\x00\xff\x1f");
/// assert_eq!(h[..5], MAGIC);
/// assert_eq!(h[5..], [0x81, 0x1e, 0x01, 0, 0, 3, 0, 0, 0]);
/// ```
pub fn header(type_code: u8, payload: &[u8]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..5].copy_from_slice(&MAGIC);
    h[5] = type_code;
    h[6..10].copy_from_slice(&checksum(payload).to_le_bytes());
    h[10..14].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    h
}

fn check_payload_len(len: usize) -> Result<()> {
    if len > MAX_PAYLOAD {
        return Err(Error::MessageTooLarge {
            size: len as u64,
            max: MAX_PAYLOAD,
        });
    }
    Ok(())
}

/// Appends one frame for `message`: the header, then the payload (by reference where
/// large, see [`WireBuf::put_bytes`]).
///
/// Refuses a [`Message::Pickle`] ([`Error::Unsupported`]: v2 has no pickle frames) and a
/// payload longer than [`MAX_PAYLOAD`] ([`Error::MessageTooLarge`]); on error nothing is
/// appended.
///
/// ```
/// use serpy::protocol::{v2, WireBuf};
/// use serpy::Message;
///
/// let mut wire = WireBuf::new();
/// v2::encode(&Message::from("hello"), &mut wire).unwrap();
/// assert_eq!(wire.to_vec(), b"\xde\xca\xfe\xca\xfe\x21\x14\x02\0\0\x05\0\0\0hello");
///
/// let pickle = Message::Pickle(bytes::Bytes::from_static(b"\x80\x04K\x01."));
/// assert!(v2::encode(&pickle, &mut wire).is_err());
/// assert_eq!(wire.len(), 19);
/// ```
pub fn encode(message: &Message, out: &mut WireBuf) -> Result<()> {
    match message {
        Message::Int(i) => {
            let payload = i.to_le_bytes();
            out.put_slice(&header(TYPE_INT, &payload));
            out.put_slice(&payload);
        }
        Message::Float(x) => {
            let mut text = [0u8; FLOAT_HEX_MAX_LEN];
            let n = hexfloat::float_hex_into(*x, &mut text);
            out.put_slice(&header(TYPE_FLOAT, &text[..n]));
            out.put_slice(&text[..n]);
        }
        Message::Text(text) => {
            check_payload_len(text.len())?;
            out.put_slice(&header(TYPE_TEXT, text.as_bytes()));
            out.put_bytes(text.clone().into_bytes());
        }
        Message::Bytes(bytes) => {
            check_payload_len(bytes.len())?;
            out.put_slice(&header(TYPE_BYTES, bytes));
            out.put_bytes(bytes.clone());
        }
        Message::Pickle(_) => return Err(no_pickles()),
    }
    Ok(())
}

fn no_pickles() -> Error {
    Error::Unsupported {
        what: "a pickle cannot be sent over v2: v2 has no pickle frames; send the pickle \
               bytes as Message::Bytes (the Python peer receives bytes and can unpickle them \
               with pickle.loads), or use protocol v1, modes 4 and 5"
            .into(),
    }
}

/// The frame for `message` as two pieces: its header and its payload, for writers that
/// gather pieces into one vectored write. A text or bytes payload is the message's own
/// bytes, shared and not copied, whatever its size; a number's payload is made here.
/// `header ++ payload` is what [`encode`] appends, and the same errors are returned.
///
/// ```
/// use serpy::protocol::{v2, WireBuf};
/// use serpy::{Bytes, Message};
///
/// let blob = Bytes::from(vec![9u8; 100]);
/// let (header, payload) = v2::encode_parts(&Message::Bytes(blob.clone())).unwrap();
/// assert_eq!(payload.as_ptr(), blob.as_ptr()); // shared, not copied
///
/// let mut wire = WireBuf::new();
/// v2::encode(&Message::Bytes(blob), &mut wire).unwrap();
/// assert_eq!(wire.to_vec(), [&header[..], &payload[..]].concat());
/// ```
pub fn encode_parts(message: &Message) -> Result<([u8; HEADER_LEN], Bytes)> {
    let (code, payload) = match message {
        Message::Text(text) => (TYPE_TEXT, text.clone().into_bytes()),
        Message::Bytes(bytes) => (TYPE_BYTES, bytes.clone()),
        Message::Int(i) => (TYPE_INT, Bytes::copy_from_slice(&i.to_le_bytes())),
        Message::Float(x) => {
            let mut text = [0u8; FLOAT_HEX_MAX_LEN];
            let n = hexfloat::float_hex_into(*x, &mut text);
            (TYPE_FLOAT, Bytes::copy_from_slice(&text[..n]))
        }
        Message::Pickle(_) => return Err(no_pickles()),
    };
    check_payload_len(payload.len())?;
    Ok((header(code, &payload), payload))
}

/// The type code and payload of the frame for `message`, for a message its caller gives
/// up (a send): a text or bytes payload is moved out of it, so that no new reference to
/// its buffer is taken (and none dropped later). No header is made: the caller makes it
/// with [`header`], now or just before the frame is written ([`sums_late`]). `header(code,
/// &payload) ++ payload` is what [`encode_parts`] gives, with the same errors.
pub(crate) fn payload_owned(message: Message) -> Result<(u8, Bytes)> {
    let (code, payload) = match message {
        Message::Text(text) => (TYPE_TEXT, text.into_bytes()),
        Message::Bytes(bytes) => (TYPE_BYTES, bytes),
        other => {
            let (h, payload) = encode_parts(&other)?;
            return Ok((h[5], payload));
        }
    };
    check_payload_len(payload.len())?;
    Ok((code, payload))
}

/// The smallest payload whose checksum a send leaves to the writer (see [`sums_late`]).
pub(crate) const LATE_SUM_FROM: usize = 256 * 1024;
/// The largest payload whose checksum a send leaves to the writer (see [`sums_late`]).
pub(crate) const LATE_SUM_UNTIL: usize = PIECE_FROM;

/// Whether a send leaves the checksum of a payload of `len` bytes to whoever writes the
/// frame, to compute just before the socket copies the payload: the sum's reads then
/// bring the payload into the writing processor's cache, and the copy finds it there
/// (measured at 1 MiB: the sum costs what it cost at send time, the copy less, and the
/// throughput rose by about a fifth). Only
/// between [`LATE_SUM_FROM`] and [`LATE_SUM_UNTIL`] bytes: a smaller payload is likely
/// still in the sending processor's cache, and a larger one no longer fits in the
/// cache with the copy (at 16 MiB the late sum made the writer the slowest thread, and
/// cost more than it saved).
pub(crate) fn sums_late(len: usize) -> bool {
    (LATE_SUM_FROM..=LATE_SUM_UNTIL).contains(&len)
}

/// Where the decoder is in the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Looking for a magic and a whole header at the start of the buffer.
    Header,
    /// A header was read; waiting for its `len` payload bytes (in the receive buffer for
    /// a small payload, in a buffer of its own from [`SHARE_THRESHOLD`] bytes on).
    Payload { code: u8, checksum: u32, len: usize },
    /// Throwing away the `remaining` bytes of a frame above the maximum size.
    Discard { remaining: u64 },
}

/// A large payload being collected in a buffer of its own: `vec[at..at + filled]` has
/// arrived, `sum` is their checksum, and `vec[at + filled..]` is initialized room. `at`
/// is [`HEADER_LEN`] (0 only while no payload is collected): room for the frame's
/// header, which is read into the buffer with the payload when the frame was expected
/// (see [`Decoder::read_from`]).
#[derive(Default)]
struct Own {
    vec: Vec<u8>,
    at: usize,
    filled: usize,
    sum: u32,
}

impl Own {
    /// The end of what arrived, in `vec`.
    fn end(&self) -> usize {
        self.at + self.filled
    }
}

/// Buffers of large payloads that the program has let go of, kept for the next ones.
#[derive(Default)]
struct Pool {
    free: Mutex<Vec<Vec<u8>>>,
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, Vec<Vec<u8>>> {
        self.free.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The smallest kept buffer that holds `len` bytes without wasting more than as much.
    fn take(&self, len: usize) -> Option<Vec<u8>> {
        let mut free = self.lock();
        // The last given back among the smallest: likely still in cache.
        let best = free
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, b)| (len..=len.saturating_mul(2)).contains(&b.len()))
            .min_by_key(|(_, b)| b.len())
            .map(|(i, _)| i)?;
        Some(free.remove(best))
    }

    /// Keeps `vec` for a later payload if there is room for it.
    fn give(&self, vec: Vec<u8>) {
        let mut free = self.lock();
        // Payload room: a buffer that also held its frame's header counts without it.
        let room = |v: &Vec<u8>| v.capacity().saturating_sub(HEADER_LEN);
        let kept: usize = free.iter().map(room).sum();
        if free.len() < POOL_BUFFERS && kept + room(&vec) <= RETAIN_MAX {
            free.push(vec);
        }
    }
}

/// The owner of a large payload handed to the program: gives its buffer back to the
/// decoder's pool (if the decoder still exists) when the last copy of the message goes.
struct Recycled {
    vec: Vec<u8>,
    /// The payload is `vec[at..at + len]`.
    at: usize,
    len: usize,
    pool: Weak<Pool>,
}

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.vec[self.at..self.at + self.len]
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.give(std::mem::take(&mut self.vec));
        }
    }
}

/// The receiving half of v2: bytes in, [`Frame`]s out.
///
/// Takes input in chunks of any size ([`decode`](Self::decode)), or reads from a socket
/// straight into its own buffers ([`read_from`](Self::read_from)). See the
/// [module documentation](self) for how it treats a broken stream and how much memory it
/// holds.
///
/// ```
/// use serpy::protocol::{v2, Frame, WireBuf};
/// use serpy::{Message, ProtocolError};
///
/// let mut wire = WireBuf::new();
/// v2::encode(&Message::from(1.5), &mut wire).unwrap();
/// v2::encode(&Message::from(vec![1u8, 2, 3]), &mut wire).unwrap();
/// let mut bytes = b"junk".to_vec();
/// bytes.extend(wire.to_vec());
///
/// let mut decoder = v2::Decoder::new(1 << 20);
/// let mut frames = Vec::new();
/// let (a, b) = bytes.split_at(10);
/// decoder.decode(a, &mut frames);
/// decoder.decode(b, &mut frames);
/// assert_eq!(
///     frames,
///     [
///         Frame::Error(ProtocolError::BadMagic { skipped: 4 }),
///         Frame::Data { message: Message::Float(1.5), mode: None },
///         Frame::Data { message: Message::from(vec![1u8, 2, 3]), mode: None },
///     ]
/// );
/// assert_eq!(decoder.buffered(), 0);
/// ```
pub struct Decoder {
    max: usize,
    /// The receive buffer, the rest of a chunk: `buf[start..end]` holds the bytes
    /// received and not decoded yet; `buf[end..]` is initialized room and the capacity
    /// after it uninitialized room, which [`read_from`](Self::read_from) reads into
    /// (a socket's reads fill the uninitialized room directly, see [`Source`]). Small text and bytes payloads are cut
    /// off its front and handed over without a copy; what was before `buf` in its
    /// chunk belongs to them.
    buf: BytesMut,
    start: usize,
    end: usize,
    state: State,
    /// The payload being collected, when it is large.
    own: Own,
    pool: Arc<Pool>,
    /// The length of the last frame, when it was large and complete: the next read
    /// between frames expects a frame of that length (see [`Decoder::read_from`]).
    expect: usize,
    /// Bytes of garbage thrown away in this call and not reported yet.
    garbage: usize,
    /// The receive low-water mark this decoder last set on the socket it reads (1: the
    /// socket's default), see [`Decoder::tune_low_water`].
    low_water: usize,
}

impl fmt::Debug for Decoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoder")
            .field("max_message_size", &self.max)
            .field("buffered", &self.buffered())
            .field("state", &self.state)
            .field("unreported_garbage", &self.garbage)
            .finish()
    }
}

impl Decoder {
    /// A decoder that refuses frames above `max_message_size` bytes (reported as
    /// [`ProtocolError::TooLarge`] and skipped).
    pub fn new(max_message_size: usize) -> Self {
        Decoder {
            max: max_message_size,
            buf: BytesMut::new(),
            start: 0,
            end: 0,
            state: State::Header,
            own: Own::default(),
            pool: Arc::default(),
            expect: 0,
            garbage: 0,
            low_water: 1,
        }
    }

    /// The maximum message size this decoder accepts.
    pub fn max_message_size(&self) -> usize {
        self.max
    }

    /// Feeds bytes (any number, from any position in the stream); pushes the frames and
    /// errors they complete to `out`.
    pub fn decode(&mut self, mut input: &[u8], out: &mut Vec<Frame>) {
        while !input.is_empty() {
            let n = match self.state {
                State::Discard { remaining } => {
                    // The buffer is empty here: skip straight from the input.
                    let n = usize::try_from(remaining).map_or(input.len(), |r| r.min(input.len()));
                    self.set_discard(remaining - n as u64);
                    n
                }
                State::Payload { len, .. } if len >= SHARE_THRESHOLD => {
                    let n = input.len().min(len - self.own.filled);
                    self.own_push(&input[..n], len);
                    n
                }
                _ => {
                    let n = input.len().min(MIN_READ);
                    self.push(&input[..n]);
                    n
                }
            };
            input = &input[n..];
            self.process(out);
        }
        self.report_garbage(out);
    }

    /// Reads once from `reader` straight into the decoder's buffers, pushes the frames and
    /// errors that completed to `out`, and returns the number of bytes read (0 at end of
    /// stream). Errors of the reader are returned as they are (a read interrupted by a
    /// signal is retried).
    ///
    /// Outside a large payload it offers the reader the room left in its receive chunk
    /// (at most [`CHUNK`] bytes; a new chunk when less than 16 KiB is left), except right
    /// after a large frame: then it reads the next header and as much of a payload as
    /// long as the last one as it would read of that payload (at most [`MIN_READ`] bytes
    /// of it into a new buffer) into a payload buffer, the payload going to the message
    /// without a copy if the frame is one of [`SHARE_THRESHOLD`] bytes or more that the
    /// read did not overrun. Inside a payload of
    /// [`SHARE_THRESHOLD`] bytes or more it reads into the payload's own buffer, at most
    /// the rest of the payload and at most [`MAX_READ`] bytes (256 KiB in a payload of
    /// more than 2 MiB, so that the checksum reads them from the cache); that buffer
    /// grows by at most what already arrived of the payload (at least [`MIN_READ`]), so
    /// a header alone
    /// cannot make it allocate, unless a buffer that a dropped message gave back is reused.
    /// The payload's bytes that arrive after its header's read go from the socket into
    /// the message with no copy.
    ///
    /// ```
    /// use serpy::protocol::{v2, Frame, WireBuf};
    /// use serpy::Message;
    ///
    /// let mut wire = WireBuf::new();
    /// v2::encode(&Message::from(-7), &mut wire).unwrap();
    /// let bytes = wire.to_vec();
    /// let mut reader = &bytes[..];
    ///
    /// let mut decoder = v2::Decoder::new(1024);
    /// let mut frames = Vec::new();
    /// assert_eq!(decoder.read_from(&mut reader, &mut frames).unwrap(), 22);
    /// assert_eq!(frames, [Frame::Data { message: Message::Int(-7), mode: None }]);
    /// assert_eq!(decoder.read_from(&mut reader, &mut frames).unwrap(), 0);
    /// ```
    pub fn read_from<R: Read + ?Sized>(
        &mut self,
        reader: &mut R,
        out: &mut Vec<Frame>,
    ) -> io::Result<usize> {
        self.fill_from(&mut Plain(reader), out)
    }

    /// [`read_from`](Self::read_from) from a [`Source`], which may read into the receive
    /// chunk's uninitialized room (a socket does), so that no chunk is zero-filled first.
    pub(crate) fn fill_from<S: Source + ?Sized>(
        &mut self,
        reader: &mut S,
        out: &mut Vec<Frame>,
    ) -> io::Result<usize> {
        if self.low_water > 1 && reader.waits() {
            // A read that waits meets no mark (see `tune_low_water`).
            self.tune_low_water(reader);
        }
        let n = match self.state {
            State::Payload { len, .. } if len >= SHARE_THRESHOLD => {
                let own = &mut self.own;
                let rest = len - own.filled;
                let want = rest.min(read_size(len));
                if own.vec.len() - own.end() < want {
                    // By what arrived (not by the read's size: fewer reallocations).
                    let room = rest.min(own.filled.max(MIN_READ));
                    let end = own.end();
                    grow(&mut own.vec, end + room);
                }
                let (from, to) = (own.end(), own.vec.len().min(own.end() + want));
                let n = read_retrying(reader, &mut own.vec[from..to])?;
                own.sum = own.sum.wrapping_add(checksum(&own.vec[from..from + n]));
                own.filled += n;
                n
            }
            State::Header if self.expect > 0 && self.held() == 0 => {
                let n = self.read_expected(reader, out)?;
                self.tune_low_water(reader);
                return Ok(n);
            }
            state => {
                let most = match state {
                    State::Discard { remaining } => usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .clamp(MIN_READ, MAX_READ),
                    _ => MIN_READ,
                };
                self.make_room(LEAST_READ);
                let n = reader.read_into(&mut self.buf, self.end, most)?;
                self.end += n;
                n
            }
        };
        self.process(out);
        self.report_garbage(out);
        self.tune_low_water(reader);
        Ok(n)
    }

    /// Inside a payload of [`LOW_WATER_FROM`] bytes or more, read from a source that
    /// does not wait (the reader's reads until the socket is empty, after which it waits
    /// with a one-byte peek, which takes nothing), asks `reader` to wake a blocked read
    /// only once the rest of the payload is there (at most [`LOW_WATER_MOST`] bytes):
    /// the reading thread then wakes once for a payload (or a piece of it), not for
    /// every burst of bytes, and reads it whole. Elsewhere (a header next, of any frame)
    /// the mark is 1 again, set before this call returns, so that no wait is for bytes
    /// that may not come; and before a read that waits (see [`Decoder::fill_from`]):
    /// such a read may take part of the bytes it waits for and then sleep until the
    /// socket holds as many as the mark, which the rest of the payload may never make.
    fn tune_low_water<S: Source + ?Sized>(&mut self, reader: &mut S) {
        let want = match self.state {
            State::Payload { len, .. } if len >= LOW_WATER_FROM && !reader.waits() => {
                (len - self.own.filled).clamp(1, LOW_WATER_MOST)
            }
            _ => 1,
        };
        if want != self.low_water && reader.set_low_water(want) {
            self.low_water = want;
        }
    }

    /// [`read_from`](Self::read_from) between frames, after a large frame (of
    /// `self.expect` bytes): the next one is likely as long, so its header and payload
    /// are read into a payload buffer at once, the payload after the header, where the
    /// message takes it from (one read per frame, and no copy out of the receive
    /// buffer). If what came is not such a frame (another length, a small one, garbage),
    /// it is decoded as if it had been read into the receive buffer.
    fn read_expected<R: Source + ?Sized>(
        &mut self,
        reader: &mut R,
        out: &mut Vec<Frame>,
    ) -> io::Result<usize> {
        let expect = self.expect;
        let mut vec = self.pool.take(HEADER_LEN + expect).unwrap_or_default();
        // No more than the last frame's length, and at most MIN_READ before anything
        // came, unless a buffer given back holds more.
        grow(&mut vec, HEADER_LEN + expect.min(MIN_READ));
        let want = HEADER_LEN + expect.min(read_size(expect));
        let to = vec.len().min(want);
        let n = match read_retrying(reader, &mut vec[..to]) {
            Ok(n) => n,
            Err(e) => {
                self.pool.give(vec);
                return Err(e);
            }
        };
        if n >= HEADER_LEN && vec.starts_with(&MAGIC) {
            let (code, expected, len) = parse_header(&vec[..HEADER_LEN]);
            let len = len as usize;
            if (SHARE_THRESHOLD..=self.max).contains(&len) && n - HEADER_LEN <= len {
                let filled = n - HEADER_LEN;
                self.expect = 0;
                self.own = Own {
                    sum: checksum(&vec[HEADER_LEN..n]),
                    vec,
                    at: HEADER_LEN,
                    filled,
                };
                self.state = State::Payload {
                    code,
                    checksum: expected,
                    len,
                };
                self.process(out);
                self.report_garbage(out);
                return Ok(n);
            }
        }
        // Not the frame expected: decoded as it comes.
        self.expect = 0;
        self.decode(&vec[..n], out);
        self.pool.give(vec);
        Ok(n)
    }

    /// The number of bytes received and not decoded yet (less than one frame: at most
    /// `max(max_message_size, HEADER_LEN)` between calls).
    pub fn buffered(&self) -> usize {
        self.end - self.start + self.own.filled
    }

    /// The payload length the header of the frame being collected declares (0 between
    /// frames, and for a frame being thrown away). Used by the reads a program's thread
    /// makes itself (Linux and Android).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub(crate) fn payload_coming(&self) -> usize {
        match self.state {
            State::Payload { len, .. } => len,
            State::Header | State::Discard { .. } => 0,
        }
    }

    /// The bytes of the unfinished message that have arrived, as the peer sent them: its
    /// header included once the header is in (so a link cut right after a header still
    /// counts it), what is held of a header otherwise. A frame being thrown away (already
    /// reported as too large) counts nothing more. For
    /// [`ProtocolError::CutShort`].
    ///
    /// ```
    /// use serpy::protocol::v2;
    ///
    /// let mut d = v2::Decoder::new(1 << 20);
    /// d.decode(&v2::header(v2::TYPE_BYTES, &[0u8; 100]), &mut Vec::new());
    /// assert_eq!(d.cut_bytes(), 14); // the header is in, no payload yet
    /// ```
    pub fn cut_bytes(&self) -> usize {
        match self.state {
            State::Payload { .. } => HEADER_LEN + self.buffered(),
            State::Header | State::Discard { .. } => self.buffered(),
        }
    }

    /// Makes at least `room` bytes of room (capacity) after the bytes held in the
    /// receive buffer: if there is less, the bytes held move to the front of a chunk
    /// (the same one, if every payload cut out of it is gone, else a new one) with
    /// [`CHUNK`] bytes of room or more, left uninitialized (not zero-filled: the reads
    /// fill it, see [`Source::read_into`]).
    fn make_room(&mut self, room: usize) {
        if self.buf.capacity() - self.end >= room {
            return;
        }
        let held = self.held();
        self.buf.advance(self.start);
        self.buf.truncate(held);
        self.start = 0;
        self.end = held;
        let room = room.max(CHUNK);
        if !self.buf.try_reclaim(room) {
            let mut fresh = BytesMut::with_capacity(held + room);
            fresh.extend_from_slice(&self.buf);
            self.buf = fresh;
        }
    }

    /// Appends `data` to the receive buffer.
    fn push(&mut self, data: &[u8]) {
        self.make_room(data.len());
        self.buf.truncate(self.end);
        self.buf.extend_from_slice(data);
        self.end += data.len();
    }

    /// Appends `data` (part of a payload of `len` bytes) to the payload's own buffer.
    fn own_push(&mut self, data: &[u8], len: usize) {
        let own = &mut self.own;
        let need = own.filled + data.len();
        if own.vec.len() < own.at + need {
            // By at most what already arrived (or what this call brings), up to the payload.
            grow(&mut own.vec, own.at + need.max(own.filled * 2).min(len));
        }
        let from = own.end();
        own.vec[from..own.at + need].copy_from_slice(data);
        own.sum = own.sum.wrapping_add(checksum(data));
        own.filled = need;
    }

    /// The number of bytes held in the receive buffer.
    fn held(&self) -> usize {
        self.end - self.start
    }

    /// Drops the first `n` bytes held in the receive buffer.
    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    fn set_discard(&mut self, remaining: u64) {
        self.state = if remaining == 0 {
            State::Header
        } else {
            State::Discard { remaining }
        };
    }

    /// Decodes all that the bytes held complete.
    fn process(&mut self, out: &mut Vec<Frame>) {
        loop {
            match self.state {
                State::Discard { remaining } => {
                    let n = usize::try_from(remaining).map_or(self.held(), |r| r.min(self.held()));
                    self.consume(n);
                    self.set_discard(remaining - n as u64);
                    if self.state != State::Header {
                        return;
                    }
                }
                State::Header => {
                    if !self.find_magic(out) || self.held() < HEADER_LEN {
                        return;
                    }
                    let (code, checksum, len) =
                        parse_header(&self.buf[self.start..self.start + HEADER_LEN]);
                    self.consume(HEADER_LEN);
                    self.expect = 0;
                    match usize::try_from(len) {
                        Ok(len) if len <= self.max => {
                            if len >= SHARE_THRESHOLD {
                                // Room for the header before the payload, as when
                                // the header is read into the buffer (`read_expected`):
                                // every payload buffer fits either way.
                                let mut vec = self.pool.take(HEADER_LEN + len).unwrap_or_default();
                                grow(&mut vec, HEADER_LEN);
                                self.own = Own {
                                    vec,
                                    at: HEADER_LEN,
                                    ..Own::default()
                                };
                            }
                            self.state = State::Payload {
                                code,
                                checksum,
                                len,
                            }
                        }
                        _ => {
                            out.push(Frame::Error(ProtocolError::TooLarge {
                                size: u64::from(len),
                                max: self.max,
                            }));
                            self.set_discard(u64::from(len));
                        }
                    }
                }
                State::Payload {
                    code,
                    checksum,
                    len,
                } => {
                    let frame = if len >= SHARE_THRESHOLD {
                        // What the receive buffer holds of the payload moves to its own buffer.
                        let n = self.held().min(len - self.own.filled);
                        if n > 0 {
                            let start = self.start;
                            let data = std::mem::take(&mut self.buf);
                            self.own_push(&data[start..start + n], len);
                            self.buf = data;
                            self.consume(n);
                        }
                        if self.own.filled < len {
                            return;
                        }
                        self.take_own(code, checksum, len)
                    } else {
                        if self.held() < len {
                            return;
                        }
                        self.take_small(code, checksum, len)
                    };
                    out.push(frame);
                    self.state = State::Header;
                }
            }
        }
    }

    /// Throws away what precedes the first full magic (keeping a partial magic at the end)
    /// and returns whether the bytes held now start with a full magic.
    fn find_magic(&mut self, out: &mut Vec<Frame>) -> bool {
        let data = &self.buf[self.start..self.end];
        let (start, found) = if data.starts_with(&MAGIC) {
            (0, true)
        } else {
            let mut result = (data.len(), false);
            let mut from = 0;
            while let Some(offset) = data[from..].iter().position(|&b| b == MAGIC[0]) {
                let at = from + offset;
                let rest = &data[at..];
                if rest.starts_with(&MAGIC) {
                    result = (at, true);
                    break;
                }
                if rest.len() < MAGIC.len() && MAGIC.starts_with(rest) {
                    result = (at, false);
                    break;
                }
                from = at + 1;
            }
            result
        };
        if start > 0 {
            self.consume(start);
            self.garbage += start;
        }
        if found {
            // The run of garbage ends here: report it before the frame.
            self.report_garbage(out);
        }
        found
    }

    /// Reports the garbage thrown away since the last report, if any (at the end of each
    /// call, and when a magic ends a run of garbage).
    fn report_garbage(&mut self, out: &mut Vec<Frame>) {
        if self.garbage > 0 {
            out.push(Frame::Error(ProtocolError::BadMagic {
                skipped: self.garbage,
            }));
            self.garbage = 0;
        }
    }

    /// Decodes a small payload: the `len` bytes at the start of the receive buffer, which
    /// it drops from there. Text and bytes are cut out of the chunk, not copied.
    fn take_small(&mut self, code: u8, expected: u32, len: usize) -> Frame {
        let payload = &self.buf[self.start..self.start + len];
        let computed = checksum(payload);
        if let Some(frame) = check(code, expected, computed, payload) {
            self.consume(len);
            return frame;
        }
        if len == 0 {
            return typed(code, Bytes::new());
        }
        self.buf.advance(self.start);
        let bytes = self.buf.split_to(len).freeze();
        self.end -= self.start + len;
        self.start = 0;
        typed(code, bytes)
    }

    /// Decodes the large payload collected in its own buffer, which the message takes
    /// along (and gives back to the pool when it goes).
    fn take_own(&mut self, code: u8, expected: u32, len: usize) -> Frame {
        let own = std::mem::take(&mut self.own);
        match check(code, expected, own.sum, &own.vec[own.at..own.at + len]) {
            Some(frame) => {
                self.pool.give(own.vec);
                frame
            }
            None => {
                self.expect = len;
                typed(
                    code,
                    Bytes::from_owner(Recycled {
                        vec: own.vec,
                        at: own.at,
                        len,
                        pool: Arc::downgrade(&self.pool),
                    }),
                )
            }
        }
    }
}

/// The most [`Decoder::read_from`] reads at once of a payload of `len` bytes.
fn read_size(len: usize) -> usize {
    if len > PIECE_FROM {
        PIECE
    } else {
        MAX_READ
    }
}

/// The type code, checksum and payload length of a header (whose magic is checked
/// elsewhere).
fn parse_header(h: &[u8]) -> (u8, u32, u32) {
    let code = h[5];
    let checksum = u32::from_le_bytes([h[6], h[7], h[8], h[9]]);
    let len = u32::from_le_bytes([h[10], h[11], h[12], h[13]]);
    (code, checksum, len)
}

/// Grows `vec` to `len` initialized bytes, allocating no more than that.
fn grow(vec: &mut Vec<u8>, len: usize) {
    if len <= vec.len() {
        return;
    }
    vec.reserve_exact(len.saturating_sub(vec.len()));
    vec.resize(len, 0);
}

/// What [`Decoder::fill_from`] reads from: a reader that may also read into the
/// uninitialized capacity of the receive chunk. Its default reads as [`Read`] does, into
/// room it zero-fills first (once: the room stays initialized for the next reads); a
/// socket reads into the capacity directly (`src/sys.rs`, Unix), which saves zero-filling
/// every new chunk.
pub(crate) trait Source: Read {
    /// Reads at most `most` bytes into `buf` from index `from` (at most `buf.len()`), within
    /// its capacity (which holds at least one byte more than `from`); on success,
    /// `buf[from..from + n]` holds the `n` bytes read and `buf.len()` is at least
    /// `from + n`. A read interrupted by a signal is retried.
    fn read_into(&mut self, buf: &mut BytesMut, from: usize, most: usize) -> io::Result<usize> {
        let to = buf.capacity().min(from.saturating_add(most));
        if buf.len() < to {
            buf.resize(to, 0);
        }
        read_retrying(self, &mut buf[from..to])
    }

    /// Asks that a read of this source blocked for want of bytes be woken only once
    /// `bytes` bytes are there (a socket's receive low-water mark); true if the source
    /// did (a socket on Linux and Android), false if it cannot. Every source that reads
    /// a socket whose mark the decoder set must be able to (it resets the mark to 1
    /// through whichever source reads when a payload ends).
    fn set_low_water(&mut self, bytes: usize) -> bool;

    /// Whether a read of this source waits for bytes (a blocking `recv`), rather than
    /// returning at once with what is there. The decoder sets a mark above 1 only for
    /// sources that do not wait (see `Decoder::tune_low_water`).
    fn waits(&self) -> bool {
        true
    }
}

/// A socket reads into the chunk's uninitialized capacity on Unix (elsewhere as any
/// reader).
impl Source for &std::net::TcpStream {
    #[cfg(unix)]
    fn read_into(&mut self, buf: &mut BytesMut, from: usize, most: usize) -> io::Result<usize> {
        crate::sys::recv_into(self, buf, from, most, 0)
    }

    fn set_low_water(&mut self, bytes: usize) -> bool {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        return crate::sys::set_recv_low_water(self, bytes).is_ok();
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            let _ = bytes;
            false
        }
    }
}

/// Any reader, as a [`Source`] that reads into initialized room.
pub(crate) struct Plain<'a, R: ?Sized>(pub(crate) &'a mut R);

impl<R: Read + ?Sized> Read for Plain<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R: Read + ?Sized> Source for Plain<'_, R> {
    fn set_low_water(&mut self, _bytes: usize) -> bool {
        false
    }
}

fn read_retrying<R: Read + ?Sized>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match reader.read(buf) {
            Ok(n) => return Ok(n.min(buf.len())),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The error a payload of type `code` makes, if any: a checksum mismatch, an unknown
/// type, or a number that does not decode. `None` for text and bytes, which
/// [`typed`] decodes.
fn check(code: u8, expected: u32, computed: u32, payload: &[u8]) -> Option<Frame> {
    if computed != expected {
        return Some(Frame::Error(ProtocolError::BadChecksum {
            expected,
            computed,
        }));
    }
    match code {
        TYPE_INT => Some(match <[u8; 8]>::try_from(payload) {
            Ok(le) => data(Message::Int(i64::from_le_bytes(le))),
            Err(_) => Frame::Error(ProtocolError::BadInt { len: payload.len() }),
        }),
        TYPE_FLOAT => Some(match float_fromhex(payload) {
            Ok(x) => data(Message::Float(x)),
            Err(_) => Frame::Error(ProtocolError::BadFloat {
                text: lossy_excerpt(payload),
            }),
        }),
        TYPE_TEXT | TYPE_BYTES => None,
        _ => Some(Frame::Error(ProtocolError::UnknownType { code })),
    }
}

/// The frame of a text or bytes payload.
fn typed(code: u8, bytes: Bytes) -> Frame {
    if code == TYPE_BYTES {
        return data(Message::Bytes(bytes));
    }
    match Text::from_utf8(bytes) {
        Ok(text) => data(Message::Text(text)),
        Err(e) => Frame::Error(ProtocolError::InvalidUtf8 {
            valid_up_to: e.valid_up_to(),
        }),
    }
}

fn data(message: Message) -> Frame {
    Frame::Data {
        message,
        mode: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bytes_of_a_cut_message_count_its_header() {
        let mut out = Vec::new();
        let payload = [7u8; 100];
        let h = header(TYPE_BYTES, &payload);
        let mut d = Decoder::new(1 << 20);
        d.decode(&h[..6], &mut out);
        assert_eq!(d.cut_bytes(), 6, "part of a header");
        d.decode(&h[6..], &mut out);
        assert_eq!(d.cut_bytes(), HEADER_LEN, "a whole header, no payload yet");
        d.decode(&payload[..50], &mut out);
        assert_eq!(d.cut_bytes(), HEADER_LEN + 50);
        d.decode(&payload[50..], &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(d.cut_bytes(), 0, "nothing is cut between frames");
    }

    fn wire(message: &Message) -> Vec<u8> {
        let mut out = WireBuf::new();
        encode(message, &mut out).unwrap();
        out.to_vec()
    }

    fn frame(code: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = header(code, payload).to_vec();
        v.extend_from_slice(payload);
        v
    }

    fn decode_all(decoder: &mut Decoder, input: &[u8]) -> Vec<Frame> {
        let mut out = Vec::new();
        decoder.decode(input, &mut out);
        out
    }

    fn err(e: ProtocolError) -> Frame {
        Frame::Error(e)
    }

    #[test]
    fn encodes_each_type() {
        assert_eq!(
            wire(&Message::Int(123)),
            b"\xde\xca\xfe\xca\xfe\x01\x7b\0\0\0\x08\0\0\0\x7b\0\0\0\0\0\0\0"
        );
        assert_eq!(
            wire(&Message::Float(12.35)),
            frame(0x11, b"0x1.8b33333333333p+3")
        );
        assert_eq!(wire(&Message::Float(-0.0)), frame(0x11, b"-0x0.0p+0"));
        assert_eq!(
            wire(&Message::from("yes µù")),
            frame(0x21, "yes µù".as_bytes())
        );
        assert_eq!(wire(&Message::from(&b""[..])), frame(0x81, b""));
        assert_eq!(
            wire(&Message::from(&b"\x00\xff\x1f"[..])),
            b"\xde\xca\xfe\xca\xfe\x81\x1e\x01\0\0\x03\0\0\0\x00\xff\x1f"
        );
    }

    #[test]
    fn encode_parts_is_encode_in_two_pieces() {
        let messages = [
            Message::Int(-5),
            Message::Float(-0.1),
            Message::from("µ"),
            Message::from(&b""[..]),
            Message::from(vec![0xde; 70_000]),
        ];
        for m in &messages {
            let (header, payload) = encode_parts(m).unwrap();
            assert_eq!([&header[..], &payload[..]].concat(), wire(m), "{m:?}");
        }
        let pickle = Message::Pickle(Bytes::from_static(b"\x80\x03N."));
        assert!(matches!(
            encode_parts(&pickle),
            Err(Error::Unsupported { .. })
        ));
    }

    #[test]
    fn payload_owned_is_encode_parts_without_the_header() {
        let blob = Bytes::from(vec![3u8; 5000]);
        for m in [
            Message::Bytes(blob.clone()),
            Message::from("µ"),
            Message::Int(7),
            Message::Float(0.5),
        ] {
            let (code, payload) = payload_owned(m.clone()).unwrap();
            let (h, p) = encode_parts(&m).unwrap();
            assert_eq!((header(code, &payload), payload), (h, p), "{m:?}");
        }
        let (_, payload) = payload_owned(Message::Bytes(blob.clone())).unwrap();
        assert_eq!(payload.as_ptr(), blob.as_ptr(), "moved, not copied");
        let pickle = Message::Pickle(Bytes::from_static(b"\x80\x03N."));
        assert!(matches!(
            payload_owned(pickle),
            Err(Error::Unsupported { .. })
        ));
        assert!(!sums_late(LATE_SUM_FROM - 1) && sums_late(LATE_SUM_FROM));
        assert!(sums_late(LATE_SUM_UNTIL) && !sums_late(LATE_SUM_UNTIL + 1));
    }

    #[test]
    fn refuses_pickles_and_appends_nothing() {
        let mut out = WireBuf::new();
        out.put_slice(b"before");
        let e = encode(
            &Message::Pickle(Bytes::from_static(b"\x80\x03N.")),
            &mut out,
        )
        .unwrap_err();
        assert!(matches!(&e, Error::Unsupported { what } if what.contains("Message::Bytes")));
        assert_eq!(out.to_vec(), b"before");
    }

    #[test]
    fn payload_length_limit() {
        assert!(check_payload_len(MAX_PAYLOAD).is_ok());
        match check_payload_len(MAX_PAYLOAD + 1) {
            Err(Error::MessageTooLarge { size, max }) => {
                assert_eq!(size, 1 << 32);
                assert_eq!(max, u32::MAX as usize);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn large_payloads_are_not_copied() {
        let blob = Bytes::from(vec![7u8; 100_000]);
        let mut out = WireBuf::new();
        encode(&Message::Bytes(blob.clone()), &mut out).unwrap();
        encode(
            &Message::Text(Text::from("x".repeat(SHARE_THRESHOLD))),
            &mut out,
        )
        .unwrap();
        assert_eq!(out.len(), 2 * HEADER_LEN + 100_000 + SHARE_THRESHOLD);
        let parts = out.take_parts();
        assert!(parts
            .iter()
            .any(|p| p.as_ptr() == blob.as_ptr() && p.len() == blob.len()));
    }

    #[test]
    fn checksum_is_the_byte_sum() {
        let data: Vec<u8> = (0..40_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for len in [0, 1, 31, 32, 33, 8191, 8192, 8193, 16_384, 20_000, 40_000] {
            let naive = data[..len].iter().map(|&b| u32::from(b)).sum::<u32>();
            assert_eq!(checksum(&data[..len]), naive, "{len}");
            assert_eq!(
                checksum(&data[len / 3..len]),
                data[len / 3..len]
                    .iter()
                    .map(|&b| u32::from(b))
                    .sum::<u32>()
            );
        }
        // Wraps modulo 2^32.
        let big = vec![0xffu8; (1 << 24) + 1];
        assert_eq!(checksum(&big), 0xff00_00ff);
    }

    #[test]
    fn decodes_good_frames_in_any_chunks() {
        let messages = [
            Message::Int(i64::MIN),
            Message::Float(f64::MIN_POSITIVE / 3.0),
            Message::from("µ"),
            Message::from(vec![0xde, 0xca, 0xfe, 0xca, 0xfe]),
            Message::from(""),
            Message::from(vec![1u8; 70_000]),
        ];
        let stream: Vec<u8> = messages.iter().flat_map(wire).collect();
        let want: Vec<Frame> = messages.iter().cloned().map(data).collect();
        for chunk in [1, 2, 3, 13, 14, 15, 1000, stream.len()] {
            let mut d = Decoder::new(1 << 20);
            let mut out = Vec::new();
            for piece in stream.chunks(chunk) {
                d.decode(piece, &mut out);
            }
            assert_eq!(out, want, "chunk {chunk}");
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn reports_bad_frames_and_goes_on() {
        let good = wire(&Message::Int(5));
        let mut bad_sum = frame(TYPE_BYTES, b"abc");
        bad_sum[6] ^= 1;
        let cases: Vec<(Vec<u8>, ProtocolError)> = vec![
            (
                bad_sum,
                ProtocolError::BadChecksum {
                    expected: 295,
                    computed: 294,
                },
            ),
            (frame(0x42, b"x"), ProtocolError::UnknownType { code: 0x42 }),
            (
                frame(TYPE_INT, b"1234567"),
                ProtocolError::BadInt { len: 7 },
            ),
            (frame(TYPE_INT, b""), ProtocolError::BadInt { len: 0 }),
            (
                frame(TYPE_FLOAT, b"1.5e-3"),
                ProtocolError::BadFloat {
                    text: "1.5e-3".into(),
                },
            ),
            (
                frame(TYPE_FLOAT, b"\xff1"),
                ProtocolError::BadFloat {
                    text: "\u{fffd}1".into(),
                },
            ),
            (
                frame(TYPE_FLOAT, &[b'z'; 100]),
                ProtocolError::BadFloat {
                    text: "z".repeat(64),
                },
            ),
            (
                frame(TYPE_TEXT, b"ab\xffcd"),
                ProtocolError::InvalidUtf8 { valid_up_to: 2 },
            ),
        ];
        for (bytes, e) in cases {
            let mut d = Decoder::new(1024);
            let mut input = bytes.clone();
            input.extend_from_slice(&good);
            assert_eq!(
                decode_all(&mut d, &input),
                [err(e.clone()), data(Message::Int(5))],
                "{e}"
            );
        }
        // Python-style spellings that float.fromhex accepts are accepted.
        let mut d = Decoder::new(1024);
        assert_eq!(
            decode_all(&mut d, &frame(TYPE_FLOAT, b" 1.8P1\n")),
            [data(Message::Float(3.0))]
        );
    }

    #[test]
    fn too_large_is_skipped_without_storing_it() {
        let mut d = Decoder::new(10);
        let mut input = frame(TYPE_BYTES, &[9u8; 11]);
        input.extend(wire(&Message::from("ok")));
        let mut out = Vec::new();
        for b in &input {
            d.decode(std::slice::from_ref(b), &mut out);
            assert!(d.buffered() <= HEADER_LEN);
        }
        assert_eq!(
            out,
            [
                err(ProtocolError::TooLarge { size: 11, max: 10 }),
                data(Message::from("ok"))
            ]
        );

        // A 4 GiB claim followed by a little data.
        let mut d = Decoder::new(256);
        let mut claim = header(TYPE_BYTES, b"").to_vec();
        claim[10..14].copy_from_slice(&u32::MAX.to_le_bytes());
        claim.extend_from_slice(&[0u8; 100_000]);
        assert_eq!(
            decode_all(&mut d, &claim),
            [err(ProtocolError::TooLarge {
                size: u64::from(u32::MAX),
                max: 256
            })]
        );
        assert_eq!(d.buffered(), 0);
        assert_eq!(
            d.state,
            State::Discard {
                remaining: u64::from(u32::MAX) - 100_000
            }
        );
    }

    #[test]
    fn garbage_is_reported_once_per_run_per_call() {
        let good = wire(&Message::Int(1));
        // Garbage then a frame, in one call: one report.
        let mut d = Decoder::new(64);
        let mut input = b"hello\x1f".to_vec();
        input.extend(&good);
        assert_eq!(
            decode_all(&mut d, &input),
            [
                err(ProtocolError::BadMagic { skipped: 6 }),
                data(Message::Int(1))
            ]
        );
        // Garbage and then silence is seen at once.
        let mut d = Decoder::new(64);
        assert_eq!(
            decode_all(&mut d, b"hello\x1f"),
            [err(ProtocolError::BadMagic { skipped: 6 })]
        );
        assert_eq!(d.buffered(), 0);
        // ... and so is each further piece of the run, once per call.
        assert_eq!(
            decode_all(&mut d, b"more"),
            [err(ProtocolError::BadMagic { skipped: 4 })]
        );
        let mut input = b"junk".to_vec();
        input.extend(&good);
        assert_eq!(
            decode_all(&mut d, &input),
            [
                err(ProtocolError::BadMagic { skipped: 4 }),
                data(Message::Int(1))
            ]
        );
        // Two runs in one call: two reports.
        let mut input = b"ab".to_vec();
        input.extend(&good);
        input.extend(b"cde");
        input.extend(&good);
        assert_eq!(
            decode_all(&mut d, &input),
            [
                err(ProtocolError::BadMagic { skipped: 2 }),
                data(Message::Int(1)),
                err(ProtocolError::BadMagic { skipped: 3 }),
                data(Message::Int(1)),
            ]
        );
    }

    #[test]
    fn partial_magic_is_kept() {
        let good = wire(&Message::Int(2));
        let mut d = Decoder::new(64);
        let mut input = b"xy".to_vec();
        input.extend(&MAGIC[..4]);
        assert_eq!(
            decode_all(&mut d, &input),
            [err(ProtocolError::BadMagic { skipped: 2 })]
        );
        assert_eq!(d.buffered(), 4);
        assert_eq!(decode_all(&mut d, &good[4..]), [data(Message::Int(2))]);

        // A partial magic that does not complete is garbage.
        let mut d = Decoder::new(64);
        assert_eq!(decode_all(&mut d, &MAGIC[..3]), []);
        let mut input = b"\xde\xca\xfe\xca".to_vec();
        input.extend(&good);
        assert_eq!(
            decode_all(&mut d, &input),
            [
                err(ProtocolError::BadMagic { skipped: 7 }),
                data(Message::Int(2))
            ]
        );
        // The magic inside garbage is found, also overlapping a false start.
        let mut d = Decoder::new(64);
        let mut input = b"\xde\xde\xca\xfe\xde\xca\xfe\xca".to_vec();
        input.extend(&good);
        assert_eq!(
            decode_all(&mut d, &input),
            [
                err(ProtocolError::BadMagic { skipped: 8 }),
                data(Message::Int(2))
            ]
        );
    }

    #[test]
    fn max_message_size_zero_accepts_empty_frames() {
        let mut d = Decoder::new(0);
        let mut input = wire(&Message::from(""));
        input.extend(wire(&Message::Int(3)));
        input.extend(wire(&Message::from(&b""[..])));
        assert_eq!(
            decode_all(&mut d, &input),
            [
                data(Message::from("")),
                err(ProtocolError::TooLarge { size: 8, max: 0 }),
                data(Message::Bytes(Bytes::new())),
            ]
        );
        assert_eq!(d.max_message_size(), 0);
    }

    /// Gives at most `step` bytes per read and records the buffer sizes it was offered.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
        asked: Vec<usize>,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.asked.push(buf.len());
            let n = buf.len().min(self.step).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// A source that records the receive low-water marks asked of it.
    struct Marks<'a> {
        data: &'a [u8],
        step: usize,
        marks: Vec<usize>,
        waits: bool,
    }

    impl Read for Marks<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.step).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    impl Source for Marks<'_> {
        fn set_low_water(&mut self, bytes: usize) -> bool {
            self.marks.push(bytes);
            true
        }

        fn waits(&self) -> bool {
            self.waits
        }
    }

    /// Inside a payload of LOW_WATER_FROM bytes or more read without waiting, the mark
    /// is the rest of the payload (at most LOW_WATER_MOST), never more: no read waits
    /// for bytes of a frame that may not come; everywhere else it is 1, set again as
    /// soon as the payload ends, before the next header is read, and before any read
    /// that waits; smaller payloads set none.
    #[test]
    fn the_low_water_mark_never_exceeds_the_rest_of_the_payload() {
        let mut input = Vec::new();
        for len in [
            LOW_WATER_FROM,
            3 * LOW_WATER_MOST + 5,
            LOW_WATER_FROM - 1,
            10,
        ] {
            input.extend(frame(TYPE_BYTES, &vec![7u8; len]));
            input.extend(frame(TYPE_TEXT, b"small"));
        }
        for step in [usize::MAX, 100_000, 4321] {
            let mut reader = Marks {
                data: &input,
                step,
                marks: Vec::new(),
                waits: false,
            };
            let mut d = Decoder::new(16 << 20);
            let mut out = Vec::new();
            let (mut raised, mut reads) = (0, 0);
            loop {
                // Every fifth read waits: it reads with the mark at 1, and leaves it so.
                reads += 1;
                reader.waits = reads % 5 == 0;
                let marks = reader.marks.len();
                if d.fill_from(&mut reader, &mut out).unwrap() == 0 {
                    break;
                }
                let want = match d.state {
                    State::Payload { len, .. } if len >= LOW_WATER_FROM && !reader.waits => {
                        let rest = len - d.own.filled;
                        assert!(d.low_water <= rest, "{} > {rest}", d.low_water);
                        rest.min(LOW_WATER_MOST)
                    }
                    _ => 1,
                };
                if reader.waits {
                    let set = &reader.marks[marks..];
                    assert!(set.iter().all(|&m| m == 1), "reads of {step}: {set:?}");
                }
                assert_eq!(d.low_water, want, "reads of {step}");
                raised += usize::from(want > 1);
            }
            assert_eq!(out.len(), 8);
            assert!(raised > 0, "reads of {step}: no mark set");
            assert_eq!(reader.marks.last(), Some(&1));
            assert!(reader
                .marks
                .iter()
                .all(|&m| (1..=LOW_WATER_MOST).contains(&m)));
        }
        // Small payloads only: no mark at all.
        let small = frame(TYPE_BYTES, &vec![1u8; LOW_WATER_FROM - 1]);
        let mut reader = Marks {
            data: &small,
            step: 1000,
            marks: Vec::new(),
            waits: false,
        };
        let mut d = Decoder::new(1 << 20);
        while d.fill_from(&mut reader, &mut Vec::new()).unwrap() > 0 {}
        assert!(reader.marks.is_empty(), "{:?}", reader.marks);
    }

    /// A socket's reads go into the receive chunks' uninitialized room (`Source` for
    /// `&TcpStream`): the frames are those the bytes make, across chunks that are new,
    /// reused, or left while payloads cut from them live.
    #[test]
    fn reads_from_a_socket_into_uninitialized_room() {
        use std::net::{TcpListener, TcpStream};
        let mut bytes = Vec::new();
        let mut want = Vec::new();
        for i in 0..600usize {
            let message = match i % 7 {
                0 => Message::from(i as i64),
                1 => Message::from(vec![(i % 251) as u8; 40_000 + i]),
                2 => Message::from("é".repeat(i)),
                _ => Message::from(vec![(i % 253) as u8; 4096 + i % 13]),
            };
            bytes.extend(wire(&message));
            want.push(data(message));
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut tx = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (rx, _) = listener.accept().unwrap();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            for (i, piece) in bytes.chunks(5_000).enumerate() {
                // Uneven pieces: frames and reads straddle each other.
                let (a, b) = piece.split_at(i * 37 % piece.len());
                tx.write_all(a).unwrap();
                tx.write_all(b).unwrap();
            }
        });
        let mut d = Decoder::new(1 << 20);
        let mut out = Vec::new();
        let (mut seen, mut kept) = (0, Vec::new());
        while d.fill_from(&mut &rx, &mut out).unwrap() > 0 {
            for f in out.drain(..) {
                assert!(f == want[seen], "frame {seen}");
                // Every third message is kept until the end (its chunk is not reused
                // while it lives), the others are dropped (theirs may be).
                if seen % 3 == 0 {
                    kept.push((seen, f));
                }
                seen += 1;
            }
        }
        writer.join().unwrap();
        assert_eq!(seen, want.len());
        assert!(kept.iter().all(|(i, f)| *f == want[*i]));
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn read_from_grows_with_the_data() {
        let len = (10 << 20) + 12_345;
        let payload = vec![3u8; len];
        let input = frame(TYPE_BYTES, &payload);
        let mut reader = Trickle {
            data: &input,
            step: usize::MAX,
            asked: Vec::new(),
        };
        let mut d = Decoder::new(16 << 20);
        let mut out = Vec::new();
        let mut total = 0;
        let mut sizes = Vec::new();
        loop {
            let before = d.buffered();
            let n = d.read_from(&mut reader, &mut out).unwrap();
            if sizes.last() != Some(&d.own.vec.len()) {
                sizes.push(d.own.vec.len());
            }
            let asked = *reader.asked.last().unwrap();
            // At least MIN_READ, or the rest of the payload; pieces of PIECE at most.
            let rest = input.len() - total;
            assert!(
                (MIN_READ..=PIECE).contains(&asked) || asked == rest,
                "{asked}"
            );
            // (A header more: once the frame is in, the next read expects another.)
            assert!(
                asked <= before.max(MIN_READ) + HEADER_LEN,
                "asked {asked} with {before} buffered"
            );
            total += n;
            if n == 0 {
                break;
            }
            assert!(d.buffered() < len);
        }
        assert_eq!(total, input.len());
        assert!(reader.asked.contains(&PIECE));
        // The buffer doubles (from MIN_READ) rather than grows by a read at a time: 10
        // MiB in about log2(10 MiB / 64 KiB) steps, not 40 of PIECE.
        assert!(sizes.len() <= 12, "{sizes:?}");
        assert_eq!(out.len(), 1);
        assert!(
            matches!(&out[0], Frame::Data { message: Message::Bytes(b), .. } if b.len() == len && b.iter().all(|&x| x == 3))
        );
    }

    #[test]
    fn read_from_one_byte_at_a_time_and_errors() {
        let mut input = b"zz".to_vec();
        input.extend(wire(&Message::from("one")));
        input.extend(wire(&Message::Float(f64::INFINITY)));
        let mut reader = Trickle {
            data: &input,
            step: 1,
            asked: Vec::new(),
        };
        let mut d = Decoder::new(64);
        let mut out = Vec::new();
        while d.read_from(&mut reader, &mut out).unwrap() == 1 {}
        assert_eq!(
            out,
            [
                err(ProtocolError::BadMagic { skipped: 1 }),
                err(ProtocolError::BadMagic { skipped: 1 }),
                data(Message::from("one")),
                data(Message::Float(f64::INFINITY)),
            ]
        );

        struct Flaky(usize);
        impl Read for Flaky {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.0 += 1;
                match self.0 {
                    1 => Err(io::ErrorKind::Interrupted.into()),
                    2 => {
                        buf[..5].copy_from_slice(&MAGIC);
                        Ok(5)
                    }
                    3 => Err(io::ErrorKind::WouldBlock.into()),
                    _ => Ok(buf.len() + 10), // a reader that lies
                }
            }
        }
        let mut d = Decoder::new(64);
        let mut r = Flaky(0);
        assert_eq!(d.read_from(&mut r, &mut out).unwrap(), 5);
        assert_eq!(d.buffered(), 5);
        let e = d.read_from(&mut r, &mut out).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        // The rest of the chunk is offered.
        assert_eq!(d.read_from(&mut r, &mut out).unwrap(), CHUNK - 5);
    }

    /// Records where each read was asked to put its bytes.
    struct Spy<'a> {
        data: &'a [u8],
        first: usize,
        reads: Vec<(usize, usize)>,
    }

    impl Read for Spy<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let limit = if self.reads.is_empty() {
                self.first
            } else {
                usize::MAX
            };
            let n = buf.len().min(limit).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            self.reads.push((buf.as_ptr() as usize, n));
            Ok(n)
        }
    }

    fn ptr(frame: &Frame) -> usize {
        match frame {
            Frame::Data { message, .. } => message.as_bytes().unwrap().as_ptr() as usize,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn large_payloads_are_read_into_their_own_buffer() {
        let len = SHARE_THRESHOLD + 100;
        let mut input = wire(&Message::from(vec![1u8; len]));
        input.extend(wire(&Message::from("é".repeat(len / 2))));
        input.extend(wire(&Message::from(vec![2u8; 10])));
        // The first read brings the header and 10 bytes of the payload; the rest of the
        // payload is read straight into the buffer the message takes along.
        let mut reader = Spy {
            data: &input,
            first: HEADER_LEN + 10,
            reads: Vec::new(),
        };
        let mut d = Decoder::new(1 << 20);
        let mut out = Vec::new();
        while d.read_from(&mut reader, &mut out).unwrap() > 0 {}
        assert_eq!(out.len(), 3);
        assert_eq!(reader.reads[1], (ptr(&out[0]) + 10, len - 10));
        assert_eq!(out[0], data(Message::from(vec![1u8; len])));
        assert_eq!(out[1], data(Message::from("é".repeat(len / 2))));
        assert_eq!(out[2], data(Message::from(vec![2u8; 10])));
        assert!(d.buf.capacity() <= 2 * MIN_READ, "{}", d.buf.capacity());
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn after_a_large_frame_the_next_is_read_whole_into_its_own_buffer() {
        // As long as the most a new buffer takes before anything came (MIN_READ): no
        // buffer grows, so each stays where its first read put the bytes.
        let len = MIN_READ;
        let mut input = Vec::new();
        for i in 0..4u8 {
            input.extend(wire(&Message::from(vec![i; len])));
        }
        let mut reader = Spy {
            data: &input,
            first: usize::MAX,
            reads: Vec::new(),
        };
        let mut d = Decoder::new(1 << 20);
        let mut out = Vec::new();
        while d.read_from(&mut reader, &mut out).unwrap() > 0 {}
        assert_eq!(out.len(), 4);
        for (i, f) in out.iter().enumerate() {
            assert_eq!(*f, data(Message::from(vec![i as u8; len])));
        }
        // From the second frame on: header and payload in one read, the header just
        // before the payload the message holds.
        let last = reader.reads.len() - 1; // the read that met the end
        assert_eq!(
            reader.reads[last - 3..last],
            (1..4)
                .map(|i| (ptr(&out[i]) - HEADER_LEN, HEADER_LEN + len))
                .collect::<Vec<_>>()
        );
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn a_frame_other_than_the_one_expected_is_decoded_as_it_comes() {
        let big = |n: usize, b: u8| wire(&Message::from(vec![b; n]));
        let mut input = big(20_000, 1);
        // Longer, shorter (with the next frame read along), small, garbage, then a
        // frame whose header comes in pieces.
        input.extend(big(30_000, 2));
        input.extend(big(SHARE_THRESHOLD, 3));
        input.extend(wire(&Message::from("small")));
        input.extend(big(20_000, 4));
        input.extend(b"junk");
        input.extend(big(20_000, 5));
        input.extend(big(20_000, 6));
        let expected = [
            data(Message::from(vec![1u8; 20_000])),
            data(Message::from(vec![2u8; 30_000])),
            data(Message::from(vec![3u8; SHARE_THRESHOLD])),
            data(Message::from("small")),
            data(Message::from(vec![4u8; 20_000])),
            err(ProtocolError::BadMagic { skipped: 4 }),
            data(Message::from(vec![5u8; 20_000])),
            data(Message::from(vec![6u8; 20_000])),
        ];
        for step in [usize::MAX, 7, 13, 5000] {
            let mut reader = Trickle {
                data: &input,
                step,
                asked: Vec::new(),
            };
            let mut d = Decoder::new(1 << 20);
            let mut out = Vec::new();
            while d.read_from(&mut reader, &mut out).unwrap() > 0 {}
            assert_eq!(out, expected, "reads of at most {step}");
            assert_eq!(d.buffered(), 0);
        }
        // Too large for this decoder: thrown away, as without the expectation.
        let mut input = big(20_000, 1);
        input.extend(big(40_000, 2));
        input.extend(big(20_000, 3));
        let mut reader = &input[..];
        let mut d = Decoder::new(30_000);
        let mut out = Vec::new();
        while d.read_from(&mut reader, &mut out).unwrap() > 0 {}
        assert_eq!(
            out,
            [
                data(Message::from(vec![1u8; 20_000])),
                err(ProtocolError::TooLarge {
                    size: 40_000,
                    max: 30_000
                }),
                data(Message::from(vec![3u8; 20_000])),
            ]
        );
    }

    #[test]
    fn payload_buffers_are_recycled() {
        let len = 200_000;
        let one = wire(&Message::from(vec![3u8; len]));
        let mut d = Decoder::new(1 << 20);
        let mut out = Vec::new();
        d.decode(&one, &mut out);
        let first = ptr(&out[0]);
        let kept = out[0].clone();
        out.clear();
        // Held by the program: not reused.
        d.decode(&one, &mut out);
        let second = ptr(&out[0]);
        assert_ne!(second, first);
        // Let go of: reused for the next payloads of a fitting size, the last given back
        // first, and not for a much smaller payload.
        drop(kept);
        out.clear();
        d.decode(&wire(&Message::from(vec![4u8; len / 3])), &mut out);
        assert!(![first, second].contains(&ptr(&out[0])));
        d.decode(&wire(&Message::from("ü".repeat(len / 2 - 7))), &mut out);
        assert_eq!(ptr(&out[1]), second);
        assert_eq!(out[1], data(Message::from("ü".repeat(len / 2 - 7))));
        d.decode(&one, &mut out);
        assert_eq!(ptr(&out[2]), first);
        // A bad checksum gives its buffer back too.
        out.clear();
        let mut bad = wire(&Message::from(vec![5u8; len]));
        bad[6] ^= 1;
        d.decode(&bad, &mut out);
        assert!(matches!(
            out[..],
            [Frame::Error(ProtocolError::BadChecksum { .. })]
        ));
        d.decode(&one, &mut out);
        assert!([first, second].contains(&ptr(&out[1])));
        assert_eq!(out[1], data(Message::from(vec![3u8; len])));
        // A message that outlives its decoder keeps its bytes.
        drop(d);
        assert_eq!(out[1], data(Message::from(vec![3u8; len])));
    }

    #[test]
    fn small_payloads_are_cut_out_of_one_chunk_which_is_reused_once_they_are_gone() {
        let mut input = Vec::new();
        for i in 0..100u8 {
            input.extend(wire(&Message::from(vec![i; 100])));
        }
        let mut reader = &input[..];
        let mut d = Decoder::new(1 << 20);
        let mut out = Vec::new();
        while d.read_from(&mut reader, &mut out).unwrap() > 0 {}
        assert_eq!(out.len(), 100);
        let first = ptr(&out[0]);
        for (i, f) in out.iter().enumerate() {
            assert_eq!(*f, data(Message::from(vec![i as u8; 100])));
            // One after the other in the chunk, each header between them.
            assert_eq!(ptr(f), first + i * (100 + HEADER_LEN), "frame {i}");
        }
        // One of them kept while much more comes keeps its bytes.
        let kept = out.swap_remove(50);
        out.clear();
        let fill = wire(&Message::from(vec![7u8; 1000]));
        let mut more = Vec::new();
        while more.len() < 2 * CHUNK {
            more.extend_from_slice(&fill);
        }
        let mut reader = &more[..];
        while d.read_from(&mut reader, &mut out).unwrap() > 0 {}
        assert!(out
            .iter()
            .all(|f| *f == data(Message::from(vec![7u8; 1000]))));
        assert_eq!(kept, data(Message::from(vec![50u8; 100])));
        // Once everything cut out of the chunks is gone, the decoder reads into the one
        // it has without allocating another.
        drop(kept);
        out.clear();
        d.decode(&fill, &mut out);
        let now = ptr(&out[0]);
        out.clear();
        for _ in 0..3 * CHUNK / fill.len() {
            d.decode(&fill, &mut out);
            assert!(out
                .iter()
                .all(|f| ptr(f).abs_diff(now) <= CHUNK + SHARE_THRESHOLD));
            out.clear();
        }
        assert!(d.buf.capacity() <= CHUNK + SHARE_THRESHOLD + HEADER_LEN);
    }

    #[test]
    fn the_pool_is_bounded() {
        let pool = Pool::default();
        for _ in 0..POOL_BUFFERS + 2 {
            pool.give(vec![0u8; 100]);
        }
        assert_eq!(pool.lock().len(), POOL_BUFFERS);
        assert!(
            pool.take(49).is_none(),
            "reused only for a payload half its size"
        );
        assert_eq!(pool.take(50).map(|b| b.len()), Some(100));
        let pool = Pool::default();
        // Capacity that is never touched costs no memory here.
        for _ in 0..3 {
            pool.give(Vec::with_capacity(RETAIN_MAX / 2));
        }
        assert_eq!(pool.lock().len(), 2);
        // Buffers that held their frame's header too count their payload room only.
        let pool = Pool::default();
        for _ in 0..3 {
            pool.give(Vec::with_capacity(RETAIN_MAX / 2 + HEADER_LEN));
        }
        assert_eq!(pool.lock().len(), 2);
    }

    #[test]
    fn debug_does_not_dump_the_buffer() {
        let mut d = Decoder::new(64);
        decode_all(&mut d, &MAGIC);
        let s = format!("{d:?}");
        assert!(s.contains("buffered: 5"), "{s}");
    }
}
