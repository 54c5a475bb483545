//! The v1 [`Decoder`]: splits the incoming stream into `0x1F`-separated blocks, whatever
//! the chunk sizes, and turns them into frames (control blocks, messages in the current
//! mode, base85 decoded as it comes). Pure: bytes in, frames out.

use std::io::{self, Read};

use super::*;
use crate::protocol::v2::{Plain, Source};

/// Index of the first `needle` in `hay`: blocks of 64 bytes tested at once (the test
/// compiles to wide compares, 16 bytes an instruction on baseline x86-64), and the block
/// that holds it searched eight bytes at a time. Measured 36-48 GB/s on 64 KiB against
/// 12-18 for the word search alone and 15-16 for `<[u8]>::contains` (2-vCPU Intel Xeon).
#[inline]
pub(super) fn find_byte(needle: u8, hay: &[u8]) -> Option<usize> {
    let mut blocks = hay.chunks_exact(64);
    let mut base = 0;
    for block in &mut blocks {
        if block
            .iter()
            .fold(0u8, |any, &b| any | u8::from(b == needle))
            != 0
        {
            return find_in_words(needle, block).map(|i| base + i);
        }
        base += 64;
    }
    find_in_words(needle, blocks.remainder()).map(|i| base + i)
}

/// Whether `hay` holds `needle` ([`find_byte`]'s block test alone).
#[inline]
pub(crate) fn contains_byte(needle: u8, hay: &[u8]) -> bool {
    let mut blocks = hay.chunks_exact(64);
    blocks.any(|block| {
        block
            .iter()
            .fold(0u8, |any, &b| any | u8::from(b == needle))
            != 0
    }) || blocks.remainder().contains(&needle)
}

/// Index of the first `needle` in `hay`, eight bytes at a time.
#[inline]
fn find_in_words(needle: u8, hay: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    #[inline(always)]
    fn zero_bytes(x: u64) -> u64 {
        // Exact for the lowest zero byte (the first one, little endian).
        x.wrapping_sub(LO) & !x & HI
    }
    let pattern = LO * u64::from(needle);
    let mut chunks = hay.chunks_exact(16);
    let mut base = 0;
    for c in &mut chunks {
        let a = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) ^ pattern;
        let b =
            u64::from_le_bytes([c[8], c[9], c[10], c[11], c[12], c[13], c[14], c[15]]) ^ pattern;
        let (za, zb) = (zero_bytes(a), zero_bytes(b));
        if za | zb != 0 {
            let at = if za != 0 {
                za.trailing_zeros() / 8
            } else {
                8 + zb.trailing_zeros() / 8
            };
            return Some(base + at as usize);
        }
        base += 16;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == needle)
        .map(|i| base + i)
}

/// Modes 2 and 4: a block of at most this many characters whose end is in the input
/// where it starts is decoded whole, not as it comes.
const SMALL_BLOCK: usize = 2048;

/// Above this capacity an empty buffer is released rather than kept for the next block.
const KEEP_CAPACITY: usize = 64 * 1024;

/// The receiving half of v1 for one direction of one connection.
///
/// Feed it the bytes as they come, in chunks of any size: it gives the same frames for
/// one byte at a time as for everything at once. Control blocks are answered by the
/// caller: [`Frame::SetMode`] with ACKMODCG, and a [`Frame::Data`] of mode 1, 3 or 5 with
/// ACKEOT!! (see [`encode_control`]).
///
/// In modes 1, 3 and 5 the blocks are joined until a `0x04` comes, as in the original:
/// the message is what precedes the first `0x04`, and what follows it starts the next
/// message. A message still being collected is kept across a SETMODE (as the original
/// does) and is completed by the next `0x04` received in an acknowledged mode.
///
/// It never holds more than [`Decoder::limit`] bytes: a block (or, in modes 1, 3 and 5,
/// a message collected over several blocks) that grows beyond it is reported once as
/// [`ProtocolError::TooLarge`], with `size` = limit + 1 (the point where it crossed, the
/// same whatever the chunking), dropped, and skipped up to the next `0x1F`.
///
/// The bytes of small base85 messages (modes 2 to 5, below 16 KiB decoded) are decoded
/// into chunks of 64 KiB and cut out of them: one allocation per chunk, not one per
/// message. Such a message keeps its chunk alive while it lives (at most 64 KiB more
/// than itself; the messages decoded with it share it); once every message cut from a
/// chunk is gone, the decoder reuses it. The same holds for small raw messages (modes 0
/// and 1, below 16 KiB) read with [`read_from`](Decoder::read_from): a read goes into a
/// receive chunk of the decoder's (4 KiB until a read fills one, then 64 KiB), and a
/// message whose block is whole in it is cut out of it, without a copy (one that spans
/// reads is copied out of the decoder's buffer). A program that keeps a few small
/// messages for long and drops the rest can copy them (`Bytes::copy_from_slice`).
///
/// ```
/// use serpy::protocol::v1::Decoder;
/// use serpy::protocol::Frame;
/// use serpy::{Message, Mode};
///
/// let mut dec = Decoder::new(1 << 20);
/// let mut frames = Vec::new();
/// for chunk in [&b"hel"[..], b"lo\x1f\x01SETMO", b"DE3\x1fVPaz\x04\x1f"] {
///     dec.decode(chunk, &mut frames);
/// }
/// assert_eq!(frames, vec![
///     Frame::Data { message: Message::Bytes("hello".into()), mode: Some(Mode::Plain) },
///     Frame::SetMode(Mode::Base85Ack),
///     Frame::Data { message: Message::Bytes("abc".into()), mode: Some(Mode::Base85Ack) },
/// ]);
/// assert_eq!(dec.mode(), Mode::Base85Ack);
/// assert_eq!(dec.buffered(), 0);
/// ```
#[derive(Debug)]
pub struct Decoder {
    mode: Mode,
    max_message_size: usize,
    limit: usize,
    /// The message collected so far in an acknowledged mode (`acc_len` bytes, no `0x04`
    /// in it), then the part of the current block received so far.
    pub(super) buf: Vec<u8>,
    acc_len: usize,
    /// Discarding input up to the next separator (after a block that was too large).
    skipping: bool,
    /// Modes 2 and 4: the bytes of the whole pairs of groups at the start of the current
    /// block, decoded as they arrived (`b85_text` characters of it; `buf` holds the
    /// characters after them), so that a large block is neither held as text across
    /// reads nor scanned for its separator apart from being decoded.
    b85: Vec<u8>,
    b85_text: usize,
    /// The size of the last message decoded that way: the room reserved for the next.
    b85_hint: usize,
    /// The same for the last large mode 0 block handed over whole.
    raw_hint: usize,
    /// Small base85 payloads are decoded into this chunk and cut out of it (see [`cut`]).
    pub(super) chunk: BytesMut,
    /// [`Decoder::read_from`] reads into this receive chunk's room (what a read brought
    /// is split off and decoded; what it holds between calls is room, maybe
    /// initialized), and small raw payloads whole in a read are cut out of it.
    rx: BytesMut,
    /// The size of the next receive chunk: [`FIRST_RX`] until a read fills one, then
    /// [`CHUNK`].
    rx_size: usize,
}

/// The first receive chunk of a decoder that reads for itself (see [`Decoder::read_from`]):
/// a connection that sends little holds 4 KiB, not 64.
const FIRST_RX: usize = 4 * 1024;

impl Decoder {
    /// A new decoder in mode 0 that never holds more than about `max_message_size` bytes
    /// (see [`Decoder::limit`]).
    pub fn new(max_message_size: usize) -> Self {
        let limit = max_message_size
            .div_ceil(4)
            .saturating_mul(5)
            .saturating_add(16);
        Decoder {
            mode: Mode::Plain,
            max_message_size,
            limit,
            buf: Vec::new(),
            acc_len: 0,
            skipping: false,
            b85: Vec::new(),
            b85_text: 0,
            b85_hint: 0,
            raw_hint: 0,
            chunk: BytesMut::new(),
            rx: BytesMut::new(),
            rx_size: FIRST_RX,
        }
    }

    /// The most bytes this decoder ever holds: the base85 length of a message of the
    /// maximum size (rounded up to a whole group), plus 16 for control blocks.
    ///
    /// ```
    /// assert_eq!(serpy::protocol::v1::Decoder::new(64).limit(), 96);
    /// ```
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Feeds bytes; pushes what they complete.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<Frame>) {
        self.decode_in(input, None, out);
    }

    /// Reads once from `reader` into the decoder's receive chunk, pushes the frames and
    /// errors that completed to `out`, and returns the number of bytes read (0 at the
    /// end of the stream). The frames are those [`decode`](Self::decode) gives for the
    /// same bytes; a small raw message (modes 0 and 1, below 16 KiB) whose block is whole
    /// in the read is cut out of the chunk rather than copied (see [`Decoder`] for what
    /// that keeps alive). Errors of the reader are returned as they are (a read
    /// interrupted by a signal is retried).
    ///
    /// ```
    /// use serpy::protocol::{v1, Frame};
    /// use serpy::{Message, Mode};
    ///
    /// let mut reader: &[u8] = b"hello\x1fwor";
    /// let mut dec = v1::Decoder::new(1 << 20);
    /// let mut frames = Vec::new();
    /// assert_eq!(dec.read_from(&mut reader, &mut frames).unwrap(), 9);
    /// assert_eq!(frames, [Frame::Data { message: Message::Bytes("hello".into()), mode: Some(Mode::Plain) }]);
    /// assert_eq!(dec.buffered(), 3); // "wor", waiting for its separator
    /// assert_eq!(dec.read_from(&mut reader, &mut frames).unwrap(), 0);
    /// ```
    pub fn read_from<R: Read + ?Sized>(
        &mut self,
        reader: &mut R,
        out: &mut Vec<Frame>,
    ) -> io::Result<usize> {
        self.fill_from(&mut Plain(reader), usize::MAX, out)
    }

    /// [`read_from`](Self::read_from) from a [`Source`] (a socket reads into the chunk's
    /// uninitialized room), at most `most` bytes (at least one).
    pub(crate) fn fill_from<S: Source + ?Sized>(
        &mut self,
        reader: &mut S,
        most: usize,
        out: &mut Vec<Frame>,
    ) -> io::Result<usize> {
        // A new chunk (or the same, once every message cut from it is gone) when less
        // than a quarter of one is left.
        if self.rx.capacity() < self.rx_size / 4 {
            self.rx.clear();
            if !self.rx.try_reclaim(self.rx_size) {
                self.rx = BytesMut::with_capacity(self.rx_size);
            }
        }
        let room = self.rx.capacity();
        let n = reader.read_into(&mut self.rx, 0, most.max(1))?;
        if n == room {
            self.rx_size = CHUNK;
        }
        if n > 0 {
            // What follows the bytes read (room a reader that cannot read into
            // uninitialized memory has zero-filled) stays, for the next read.
            let data = self.rx.split_to(n).freeze();
            self.decode_in(&data, Some(&data), out);
        }
        Ok(n)
    }

    /// [`decode`](Self::decode) of `input`, which is `src` when given: then small raw
    /// payloads whole in it are cut out of it.
    fn decode_in(&mut self, input: &[u8], src: Option<&Bytes>, out: &mut Vec<Frame>) {
        let mut rest = input;
        while !rest.is_empty() {
            let mut sep = None;
            if self.streams_base85() {
                // A small block that starts here and ends in this input is decoded whole,
                // straight into the chunk its message is cut from.
                if self.b85_text == 0 && self.buf.is_empty() {
                    sep = find_byte(SEP, &rest[..rest.len().min(SMALL_BLOCK)]);
                }
                if sep.is_none() {
                    rest = self.stream_base85(rest);
                    if rest.is_empty() {
                        break;
                    }
                }
            }
            let (part, complete) = match sep.or_else(|| find_byte(SEP, rest)) {
                Some(i) => {
                    let part = &rest[..i];
                    rest = &rest[i + 1..];
                    (part, true)
                }
                None => (std::mem::take(&mut rest), false),
            };
            if self.skipping {
                self.skipping = !complete;
                continue;
            }
            let held = self.buffered();
            if part.len() > self.limit.saturating_sub(held) {
                // Deterministic whatever the chunking: the size is where the limit was crossed.
                out.push(Frame::Error(ProtocolError::TooLarge {
                    size: (self.limit as u64).saturating_add(1),
                    max: self.max_message_size,
                }));
                self.release();
                self.skipping = !complete;
                continue;
            }
            if !complete {
                self.hold(part);
                continue;
            }
            self.block(part, src, out);
        }
    }

    /// Completes the current block with `part` (the bytes before its separator), a part
    /// of `src` if given.
    fn block(&mut self, part: &[u8], src: Option<&Bytes>, out: &mut Vec<Frame>) {
        if self.b85_text > 0 {
            let tail = if self.buf.is_empty() {
                part
            } else {
                self.hold(part);
                &self.buf[..]
            };
            self.b85_hint = finish_base85(
                self.mode,
                self.max_message_size,
                (&mut self.b85, self.b85_text),
                tail,
                out,
            )
            .unwrap_or(self.b85_hint);
            self.b85_text = 0;
            self.buf.clear();
            return;
        }
        let start = self.acc_len;
        let in_input = self.buf.len() == start; // nothing of this block was buffered
        let first = if in_input {
            part.first()
        } else {
            self.buf.get(start)
        };
        match first.copied() {
            None => {} // an empty block
            Some(CTRL) => {
                let new_mode = if in_input {
                    control(part, out)
                } else {
                    self.hold(part);
                    let new_mode = control(&self.buf[start..], out);
                    self.buf.truncate(start);
                    new_mode
                };
                if let Some(mode) = new_mode {
                    self.mode = mode;
                }
            }
            Some(_) if self.mode.is_acked() => {
                if in_input && start == 0 {
                    // Fast path: deliver straight from the input, keep what follows the last 0x04.
                    let mut msg = part;
                    while let Some(i) = find_byte(EOT, msg) {
                        payload(
                            self.mode,
                            self.max_message_size,
                            (&mut self.chunk, src),
                            &msg[..i],
                            out,
                        );
                        msg = &msg[i + 1..];
                    }
                    self.hold(msg);
                } else {
                    self.hold(part);
                    let mut begin = 0;
                    let mut from = start; // the collected part holds no 0x04
                    while let Some(i) = find_byte(EOT, &self.buf[from..]) {
                        let end = from + i;
                        payload(
                            self.mode,
                            self.max_message_size,
                            (&mut self.chunk, None),
                            &self.buf[begin..end],
                            out,
                        );
                        begin = end + 1;
                        from = begin;
                    }
                    self.buf.drain(..begin);
                }
                self.acc_len = self.buf.len();
            }
            Some(_) => {
                if in_input {
                    let chunks = (&mut self.chunk, src);
                    payload(self.mode, self.max_message_size, chunks, part, out);
                } else if self.mode == Mode::Plain
                    && start == 0
                    && self.buf.len() + part.len() >= SHARE_THRESHOLD
                    && self.buf.len() + part.len() <= self.max_message_size
                {
                    // A large raw block: hand the buffer over instead of copying it.
                    self.hold(part);
                    let mut block = std::mem::take(&mut self.buf);
                    if block.capacity() - block.len() > block.len() / 8 {
                        // A kept message holds only its own bytes.
                        block.shrink_to_fit();
                    }
                    self.raw_hint = block.len();
                    out.push(Frame::Data {
                        message: Message::Bytes(Bytes::from(block)),
                        mode: Some(Mode::Plain),
                    });
                } else {
                    self.hold(part);
                    payload(
                        self.mode,
                        self.max_message_size,
                        (&mut self.chunk, None),
                        &self.buf[start..],
                        out,
                    );
                    self.buf.truncate(start);
                }
            }
        }
        if self.buf.is_empty() && self.buf.capacity() > KEEP_CAPACITY {
            self.buf = Vec::new();
        }
    }

    /// Appends to the buffer, growing its capacity geometrically but never beyond the
    /// limit (the callers have checked that the bytes fit).
    fn hold(&mut self, bytes: &[u8]) {
        let needed = self.buf.len() + bytes.len();
        if needed > self.buf.capacity() {
            // A large raw block that starts: room for one the size of the last large
            // one, at once, rather than growing (and copying) it read after read.
            let hint = if self.buf.is_empty()
                && self.mode == Mode::Plain
                && bytes.len() >= 4096
                && bytes[0] != CTRL
            {
                self.raw_hint
            } else {
                0
            };
            let target = needed
                .max(hint)
                .max(self.buf.capacity().saturating_mul(2).min(self.limit));
            self.buf.reserve_exact(target - self.buf.len());
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Whether the next input may be decoded as it comes ([`Decoder::stream_base85`]):
    /// modes 2 and 4, no acknowledged message being collected, and the current block
    /// not a control block nor held as text (after a group that is not valid base85).
    fn streams_base85(&self) -> bool {
        self.mode.is_base85()
            && !self.mode.is_acked()
            && !self.skipping
            && self.acc_len == 0
            && self.buf.len() < 10
            && self.buf.first() != Some(&CTRL)
    }

    /// Decodes the whole pairs of groups at the start of `input` that are valid base85
    /// into `b85`, within the limit; returns the rest. Base85 holds no `0x1F`: the pair
    /// that holds the separator stops it, and the search for the separator starts there.
    fn stream_base85<'a>(&mut self, mut input: &'a [u8]) -> &'a [u8] {
        let mut room = self.limit.saturating_sub(self.buffered());
        if !self.buf.is_empty() {
            // Complete the pair that the last input ended in.
            let need = 10 - self.buf.len();
            if input.len() < need || room < need {
                return input;
            }
            let mut pair = [0u8; 10];
            pair[..self.buf.len()].copy_from_slice(&self.buf);
            pair[self.buf.len()..].copy_from_slice(&input[..need]);
            if !self.push_pairs(&pair) {
                return input;
            }
            self.buf.clear();
            input = &input[need..];
            room -= need;
        }
        let text = &input[..input.len().min(room) / 10 * 10];
        if self.b85_text == 0 && self.b85.capacity() == 0 {
            // A new block: room for a message the size of the last one, at once.
            self.b85
                .reserve_exact(self.b85_hint.max(text.len() / 10 * 8));
        }
        let start = self.b85.len();
        self.b85.resize(start + text.len() / 10 * 8, 0);
        let done = decode_pairs(text, &mut self.b85[start..]);
        self.b85.truncate(start + done * 8);
        self.b85_text += done * 10;
        &input[done * 10..]
    }

    /// Decodes one pair of groups into `b85`, if valid.
    fn push_pairs(&mut self, pair: &[u8; 10]) -> bool {
        let mut eight = [0u8; 8];
        if decode_pairs(pair, &mut eight) == 1 {
            self.b85.extend_from_slice(&eight);
            self.b85_text += 10;
            true
        } else {
            false
        }
    }

    /// Drops everything held (after a block that was too large).
    fn release(&mut self) {
        self.b85.clear();
        self.b85_text = 0;
        self.acc_len = 0;
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
    }

    /// Bytes held (as received: base85 that is already decoded counts as its text).
    pub fn buffered(&self) -> usize {
        self.b85_text + self.buf.len()
    }

    /// The current receive mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }
}

/// Handles a control block (starting with `0x01`); returns the new receive mode, if any.
fn control(block: &[u8], out: &mut Vec<Frame>) -> Option<Mode> {
    let body = block.get(1..).unwrap_or_default();
    if let Some(arg) = body.strip_prefix(b"SETMODE") {
        if let [d @ b'0'..=b'5'] = arg {
            let mode = Mode::ALL[usize::from(d - b'0')];
            out.push(Frame::SetMode(mode));
            return Some(mode);
        }
        out.push(Frame::Error(ProtocolError::BadSetMode {
            arg: lossy_excerpt(arg),
        }));
    } else if body == b"ACKMODCG" {
        out.push(Frame::AckModeChange);
    } else if body == b"ACKEOT!!" {
        out.push(Frame::AckEot);
    } else {
        out.push(Frame::Error(ProtocolError::UnknownControl {
            block: lossy_excerpt(body),
        }));
    }
    None
}

/// Delivers a message of mode 2 or 4 whose first `done` characters are decoded in
/// `b85` and whose last characters are `tail`; returns its size when delivered.
/// `b85` is left empty.
fn finish_base85(
    mode: Mode,
    max: usize,
    (b85, done): (&mut Vec<u8>, usize),
    tail: &[u8],
    out: &mut Vec<Frame>,
) -> Option<usize> {
    let total = done + tail.len();
    let size = total / 5 * 4 + (total % 5).saturating_sub(1);
    if size > max {
        b85.clear();
        out.push(Frame::Error(ProtocolError::TooLarge {
            size: size as u64,
            max,
        }));
        return None;
    }
    if let Err(e) = decode_base85(tail, b85) {
        b85.clear();
        out.push(Frame::Error(ProtocolError::BadBase85 {
            mode,
            detail: e.shifted(done).to_string(),
        }));
        return None;
    }
    let mut bytes = std::mem::take(b85);
    if bytes.capacity() - bytes.len() > bytes.len() / 8 {
        // Reserved for a larger message: a kept message holds only its own bytes.
        bytes.shrink_to_fit();
    }
    let len = bytes.len();
    let bytes = Bytes::from(bytes);
    out.push(Frame::Data {
        message: if mode.is_pickle() {
            Message::Pickle(bytes)
        } else {
            Message::Bytes(bytes)
        },
        mode: Some(mode),
    });
    Some(len)
}

/// Small base85 payloads (below [`SHARE_THRESHOLD`]) are cut out of chunks of this many
/// bytes.
pub(super) const CHUNK: usize = 64 * 1024;

/// A payload of `len` bytes (below [`SHARE_THRESHOLD`]) that `fill` writes, cut out of
/// `chunk`: one allocation per chunk, not one per message. A new chunk is taken when the
/// room left is too small, unless every payload cut out of the current one is gone, in
/// which case it is reused. If `fill` fails, nothing is cut.
fn cut<E>(
    chunk: &mut BytesMut,
    len: usize,
    fill: impl FnOnce(&mut [u8]) -> Result<(), E>,
) -> Result<Bytes, E> {
    if chunk.capacity() < len && !chunk.try_reclaim(CHUNK) {
        *chunk = BytesMut::with_capacity(CHUNK);
    }
    chunk.resize(len, 0);
    match fill(&mut chunk[..]) {
        Ok(()) => Ok(chunk.split().freeze()),
        Err(e) => {
            chunk.clear();
            Err(e)
        }
    }
}

/// Delivers the payload of one message that arrived in `mode`; the bytes of a small
/// base85 one are decoded into `chunk` and cut out of it ([`cut`]), a small raw one is
/// cut out of `src` if it is given (`raw` is then part of it), else copied.
fn payload(
    mode: Mode,
    max: usize,
    (chunk, src): (&mut BytesMut, Option<&Bytes>),
    raw: &[u8],
    out: &mut Vec<Frame>,
) {
    let too_large = |size: usize| {
        Frame::Error(ProtocolError::TooLarge {
            size: size as u64,
            max,
        })
    };
    if !mode.is_base85() {
        out.push(if raw.len() > max {
            too_large(raw.len())
        } else {
            let bytes = match src {
                // The read's chunk is shared (a count) rather than an allocation made
                // here and freed by the program's thread.
                Some(src) if raw.len() < SHARE_THRESHOLD => src.slice_ref(raw),
                _ => Bytes::copy_from_slice(raw),
            };
            Frame::Data {
                message: Message::Bytes(bytes),
                mode: Some(mode),
            }
        });
        return;
    }
    // A final group of one character has no length: let the decoder report it.
    let size = raw.len() / 5 * 4 + (raw.len() % 5).saturating_sub(1);
    if size > max {
        out.push(too_large(size));
        return;
    }
    let decoded = match base85_decoded_len(raw.len()) {
        Some(len) if len < SHARE_THRESHOLD => {
            let groups = raw.len() / 5 * 5;
            cut(chunk, len, |o| {
                decode_base85_to_slice(&raw[..groups], &raw[groups..], o)
            })
        }
        _ => {
            let mut bytes = Vec::new();
            decode_base85(raw, &mut bytes).map(|()| Bytes::from(bytes))
        }
    };
    out.push(match decoded {
        Ok(bytes) => Frame::Data {
            message: if mode.is_pickle() {
                Message::Pickle(bytes)
            } else {
                Message::Bytes(bytes)
            },
            mode: Some(mode),
        },
        Err(e) => Frame::Error(ProtocolError::BadBase85 {
            mode,
            detail: e.to_string(),
        }),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that gives its pieces one a read.
    struct Pieces(std::collections::VecDeque<Vec<u8>>);

    impl Read for Pieces {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let Some(mut p) = self.0.pop_front() else {
                return Ok(0);
            };
            let n = p.len().min(buf.len());
            buf[..n].copy_from_slice(&p[..n]);
            if n < p.len() {
                self.0.push_front(p.split_off(n));
            }
            Ok(n)
        }
    }

    fn payloads(frames: &[Frame]) -> Vec<Bytes> {
        frames
            .iter()
            .map(|f| match f {
                Frame::Data { message, .. } => message.clone().into_bytes(),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn small_raw_messages_read_are_cut_out_of_the_receive_chunk() {
        let block = |c: u8, n: usize| [vec![c; n], vec![SEP]].concat();
        let first: Vec<u8> = (0..100u8).flat_map(|i| block(b'a' + i % 26, 63)).collect();
        let mut reader = Pieces(
            [
                first[..1000].to_vec(),
                first[1000..].to_vec(),
                // A message of two reads, then a large one whole in a read.
                b"spl".to_vec(),
                b"it\x1f".to_vec(),
                block(b'L', SHARE_THRESHOLD),
            ]
            .into(),
        );
        let mut d = Decoder::new(1 << 20);
        let mut out = Vec::new();
        assert_eq!(d.read_from(&mut reader, &mut out).unwrap(), 1000);
        let got = payloads(&out);
        assert_eq!(got.len(), 15);
        for (i, p) in got.iter().enumerate() {
            assert_eq!(&p[..], &vec![b'a' + i as u8; 63][..]);
        }
        // One after the other in the chunk, not copied each into its own allocation.
        for w in got.windows(2) {
            assert_eq!(w[1].as_ptr() as usize, w[0].as_ptr() as usize + 64);
        }
        // The first chunk is small; a read that fills it makes the next ones 64 KiB.
        assert_eq!(d.rx_size, FIRST_RX);
        let start = got[0].as_ptr() as usize;
        out.clear();
        let n = d.read_from(&mut reader, &mut out).unwrap();
        assert_eq!(n, FIRST_RX - 1000, "the rest of the first chunk");
        assert_eq!(d.rx_size, CHUNK);
        let more = payloads(&out);
        assert_eq!(more[1].as_ptr() as usize, start + 64 * 16);
        while d.read_from(&mut reader, &mut out).unwrap() > 0 {}
        let all = payloads(&out);
        assert_eq!(all.len(), 100 - 15 + 2);
        assert_eq!(&all[all.len() - 2][..], b"split");
        let large = &all[all.len() - 1];
        assert_eq!(large.len(), SHARE_THRESHOLD);
        assert_eq!(d.buffered(), 0);
        // What `decode` gives for the same bytes.
        let mut wire = first.clone();
        wire.extend_from_slice(b"split\x1f");
        wire.extend(block(b'L', SHARE_THRESHOLD));
        let mut want = Vec::new();
        Decoder::new(1 << 20).decode(&wire, &mut want);
        out.splice(
            0..0,
            got.iter().map(|p| Frame::Data {
                message: Message::Bytes(p.clone()),
                mode: Some(Mode::Plain),
            }),
        );
        assert_eq!(out, want);
    }

    #[test]
    fn the_receive_chunk_is_reused_once_its_messages_are_gone() {
        // 400 reads of 100 messages each, numbered.
        let text = |read: usize, i: usize| format!("m{read:03}-{i:02}");
        let reads: Vec<Vec<u8>> = (0..400)
            .map(|r| {
                (0..100)
                    .flat_map(|i| [text(r, i).into_bytes(), vec![SEP]].concat())
                    .collect()
            })
            .collect();
        let mut d = Decoder::new(1 << 20);
        let mut reader = Pieces(reads.into());
        let mut out = Vec::new();
        let mut kept = Vec::new();
        let mut starts = std::collections::HashSet::new();
        for r in 0..400 {
            out.clear();
            assert_eq!(d.read_from(&mut reader, &mut out).unwrap(), 800);
            let got = payloads(&out);
            for (i, p) in got.iter().enumerate() {
                assert_eq!(&p[..], text(r, i).as_bytes());
            }
            starts.insert(got[0].as_ptr() as usize);
            if r % 50 == 7 {
                // A kept message keeps its chunk alive: nothing is read over it.
                kept.push((r, got[5].clone()));
            }
            assert!(d.rx.capacity() <= CHUNK);
        }
        for (r, p) in &kept {
            assert_eq!(&p[..], text(*r, 5).as_bytes());
        }
        // Five reads a 4 KiB chunk, and the chunks come back: a few places only (the
        // kept messages' chunks, and the one reused).
        assert!(
            starts.len() <= 5 * (kept.len() + 2),
            "{} places",
            starts.len()
        );
    }

    #[test]
    fn find_byte_finds_the_first() {
        for len in 0..40 {
            let mut hay = vec![0x80u8; len];
            assert_eq!(find_byte(SEP, &hay), None);
            for at in 0..len {
                hay.fill(0x20);
                hay[at] = SEP;
                if at + 1 < len {
                    hay[len - 1] = SEP;
                }
                assert_eq!(find_byte(SEP, &hay), Some(at), "len {len} at {at}");
                // Bytes just around the needle's value do not confuse it.
                hay.fill(SEP + 1);
                hay[at] = SEP;
                assert_eq!(find_byte(SEP, &hay), Some(at));
                hay.fill(0x9F);
                hay[at] = SEP;
                assert_eq!(find_byte(SEP, &hay), Some(at));
            }
        }
        assert_eq!(find_byte(0, &[1, 1, 1, 1, 1, 1, 1, 1, 1, 0]), Some(9));
        assert_eq!(find_byte(0xFF, &[0u8; 17]), None);
        // Across, in and after the blocks of 64 tested at once.
        for len in [63, 64, 65, 127, 128, 129, 200, 1000] {
            let mut hay = vec![SEP + 1; len];
            assert_eq!(find_byte(SEP, &hay), None);
            assert!(!contains_byte(SEP, &hay));
            for at in (0..len).rev() {
                hay[at] = SEP;
                assert_eq!(find_byte(SEP, &hay), Some(at), "len {len} at {at}");
                assert!(contains_byte(SEP, &hay[at..]));
                assert!(!contains_byte(SEP, &hay[..at]), "len {len} at {at}");
            }
        }
    }
}
