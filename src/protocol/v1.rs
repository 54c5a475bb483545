//! v1 ("serpy"): `0x1F`-separated blocks, modes 0 to 5, SETMODE/ACKMODCG/ACKEOT!! control blocks.
//!
//! - [`Encoder`] turns messages into blocks, switching to base85 by itself where the raw
//!   bytes could not travel, and writes a SETMODE block where the mode changes.
//! - [`Decoder`] splits the incoming stream into blocks, whatever the chunk sizes, and
//!   turns them into [`Frame`]s; it never holds more than [`Decoder::limit`] bytes.
//! - [`encode_base85`] / [`decode_base85`]: the RFC 1924 base85 of Python's
//!   `base64.b85encode` / `b85decode`.
//! - [`to_pickle`]: the Python pickle (protocol 3) of a message, as sent in modes 4 and 5.
//!
//! See `docs/PROTOCOL.md` in the repository, section "v1", for the wire format.

use std::fmt;

use bytes::{Bytes, BytesMut};

use crate::error::{lossy_excerpt, Error, ProtocolError, Result};
use crate::message::{Message, TextEncoding};
use crate::protocol::{python_float_repr, Frame, Mode, WireBuf, SHARE_THRESHOLD};

/// The block separator (ASCII Unit Separator).
pub const SEP: u8 = 0x1F;
/// Ends the payload of an acknowledged message (modes 1, 3, 5).
pub const EOT: u8 = 0x04;
/// Starts a control block.
pub const CTRL: u8 = 0x01;

/// A v1 control block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// `SETMODE<d>`: from now on my data blocks are in mode d.
    SetMode(Mode),
    /// `ACKMODCG`: your SETMODE was seen.
    AckModeChange,
    /// `ACKEOT!!`: one acknowledged message of yours arrived whole.
    AckEot,
}

/// Appends the bytes of a control block (with its separator).
///
/// ```
/// use serpy::protocol::v1::{encode_control, Control};
/// use serpy::protocol::WireBuf;
/// use serpy::Mode;
///
/// let mut w = WireBuf::new();
/// encode_control(Control::SetMode(Mode::Base85), &mut w);
/// encode_control(Control::AckModeChange, &mut w);
/// encode_control(Control::AckEot, &mut w);
/// assert_eq!(w.to_vec(), b"\x01SETMODE2\x1f\x01ACKMODCG\x1f\x01ACKEOT!!\x1f");
/// ```
pub fn encode_control(control: Control, out: &mut WireBuf) {
    match control {
        Control::SetMode(mode) => {
            out.put_slice(b"\x01SETMODE");
            out.put_slice(&[b'0' + u8::from(mode), SEP]);
        }
        Control::AckModeChange => out.put_slice(b"\x01ACKMODCG\x1f"),
        Control::AckEot => out.put_slice(b"\x01ACKEOT!!\x1f"),
    }
}

/// The SETMODE block of each mode, with its separator.
static SETMODE_BLOCKS: [&[u8]; 6] = [
    b"\x01SETMODE0\x1f",
    b"\x01SETMODE1\x1f",
    b"\x01SETMODE2\x1f",
    b"\x01SETMODE3\x1f",
    b"\x01SETMODE4\x1f",
    b"\x01SETMODE5\x1f",
];

/// What [`Encoder::encode`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// The mode the message actually went in (it may differ from the one asked for).
    pub mode: Mode,
    /// True when a SETMODE block was written first: one ACKMODCG will come back.
    pub set_mode: bool,
}

/// The sending half of v1 for one direction of one connection.
///
/// It remembers the mode the peer believes our data is in, and writes a SETMODE block
/// whenever a message goes in another mode. Where the raw bytes of a message cannot
/// travel in the mode asked for (a `0x1F` in mode 0, a `0x04` in mode 1, a leading
/// `0x01`), it switches to the base85 mode of the same kind by itself; `bytes` always
/// travel as base85 and pickles in mode 4 or 5, as in the original.
///
/// ```
/// use serpy::protocol::v1::Encoder;
/// use serpy::protocol::WireBuf;
/// use serpy::{Message, Mode, TextEncoding};
///
/// let mut enc = Encoder::new(TextEncoding::Utf8, 1 << 20);
/// let mut wire = WireBuf::new();
///
/// let done = enc.encode(&Message::from("hello"), Mode::Plain, &mut wire).unwrap();
/// assert_eq!((done.mode, done.set_mode), (Mode::Plain, false));
/// assert_eq!(wire.to_vec(), b"hello\x1f");
///
/// // A 0x1F cannot travel in mode 0: the message goes in mode 2 (base85) instead.
/// wire.clear();
/// let done = enc.encode(&Message::from("a\x1fb"), Mode::Plain, &mut wire).unwrap();
/// assert_eq!((done.mode, done.set_mode), (Mode::Base85, true));
/// assert_eq!(wire.to_vec(), b"\x01SETMODE2\x1fVIN`\x1f");
/// assert_eq!(enc.mode(), Mode::Base85);
/// ```
#[derive(Debug, Clone)]
pub struct Encoder {
    encoding: TextEncoding,
    max_message_size: usize,
    mode: Mode,
}

impl Encoder {
    /// A new encoder in mode 0.
    pub fn new(encoding: TextEncoding, max_message_size: usize) -> Self {
        Encoder {
            encoding,
            max_message_size,
            mode: Mode::Plain,
        }
    }

    /// The current send mode (what the peer believes our data is in).
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Back to mode 0, as on a new TCP connection.
    pub fn reset(&mut self) {
        self.mode = Mode::Plain;
    }

    /// Appends the bytes of `message` sent in `mode` (a SETMODE first where the mode changes).
    ///
    /// # Errors
    /// Nothing is appended and the mode is unchanged when an error is returned:
    /// - [`Error::Encoding`]: text that the connection's [`TextEncoding`] cannot encode;
    /// - [`Error::EmptyMessage`]: an empty payload in an unacknowledged mode (0, 2, 4),
    ///   which the receiver would drop;
    /// - [`Error::MessageTooLarge`]: a payload (before base85) above the maximum size;
    /// - [`Error::Unsupported`]: text or bytes of 4 GiB or more in a protocol 3 pickle.
    pub fn encode(&mut self, message: &Message, mode: Mode, out: &mut WireBuf) -> Result<Encoded> {
        let requested = mode;
        let mut mode = mode;
        match message {
            Message::Bytes(_) if !mode.is_base85() => {
                mode = Mode::Base85.with_ack(mode.is_acked());
                log::debug!("bytes travel as base85: mode {requested} was asked for, sending in mode {mode}");
            }
            Message::Pickle(_) if !mode.is_pickle() => {
                mode = Mode::Pickle.with_ack(mode.is_acked());
                log::debug!("a pickle travels in mode 4 or 5: mode {requested} was asked for, sending in mode {mode}");
            }
            _ => {}
        }

        let payload: Bytes = if mode.is_pickle() {
            to_pickle(message)?
        } else {
            match message {
                Message::Text(t) => match self.encoding {
                    TextEncoding::Utf8 => t.clone().into_bytes(),
                    encoding => Bytes::from(encoding.encode(t.as_str())?),
                },
                Message::Int(i) => Bytes::from(i.to_string()),
                Message::Float(x) => Bytes::from(python_float_repr(*x)),
                Message::Bytes(b) | Message::Pickle(b) => b.clone(),
            }
        };

        if !mode.is_base85() {
            if let Some(why) = raw_obstacle(&payload, mode.is_acked()) {
                let to = Mode::Base85.with_ack(mode.is_acked());
                log::warn!(
                    "a {} message {why}, which mode {mode} cannot carry; sending it in mode {to} (base85) instead",
                    message.kind()
                );
                mode = to;
            }
        }

        if payload.is_empty() && !mode.is_acked() {
            return Err(Error::EmptyMessage { mode: requested });
        }
        if payload.len() > self.max_message_size {
            return Err(Error::MessageTooLarge {
                size: payload.len() as u64,
                max: self.max_message_size,
            });
        }

        let set_mode = mode != self.mode;
        if set_mode {
            // A piece of its own, by reference: no copy, and a caller that sends the
            // SETMODE itself drops the piece whole.
            out.put_static(SETMODE_BLOCKS[usize::from(u8::from(mode))]);
            self.mode = mode;
        }
        let end: &[u8] = if mode.is_acked() { &[EOT, SEP] } else { &[SEP] };
        // One allocation for what is copied: the base85 text or a small payload, and
        // the end of the block.
        let copied = if mode.is_base85() {
            base85_encoded_len(payload.len())
        } else if payload.len() < SHARE_THRESHOLD {
            payload.len()
        } else {
            0
        };
        out.reserve(copied + end.len());
        if mode.is_base85() {
            put_base85(&payload, out);
        } else {
            out.put_bytes(payload);
        }
        out.put_slice(end);
        Ok(Encoded { mode, set_mode })
    }
}

/// Why `payload` cannot travel raw in mode 0 (`acked == false`) or 1 (`acked == true`).
fn raw_obstacle(payload: &[u8], acked: bool) -> Option<&'static str> {
    if payload.first() == Some(&CTRL) {
        Some("starts with 0x01 (it would be read as a control block)")
    } else if payload.contains(&SEP) {
        Some("contains 0x1F (the block separator)")
    } else if acked && payload.contains(&EOT) {
        Some("contains 0x04 (the end of an acknowledged message)")
    } else {
        None
    }
}

/// Appends the base85 of `data` to `out` without an intermediate buffer.
fn put_base85(data: &[u8], out: &mut WireBuf) {
    let n = base85_encoded_len(data.len());
    let start = out.tail.len();
    out.tail.resize(start + n, 0);
    encode_base85_to_slice(data, &mut out.tail[start..]);
    out.len += n;
}

// ---------------------------------------------------------------------------------------
// Pickle writer
// ---------------------------------------------------------------------------------------

/// The Python pickle (protocol 3) of a message, as modes 4 and 5 send it, so that a
/// Python peer receives the native object: `int`, `float`, `str` or `bytes`.
/// A [`Message::Pickle`] is already a pickle and is returned as it is.
///
/// The same as [`crate::pickle::message_to_pickle`], where the pickle writer lives (with
/// the writer of whole [`crate::pickle::Value`]s: dicts, lists, numpy arrays...).
///
/// # Errors
/// [`Error::Unsupported`] for text or bytes of 4 GiB or more, which protocol 3 cannot hold.
///
/// ```
/// use serpy::protocol::v1::to_pickle;
/// use serpy::Message;
/// assert_eq!(&to_pickle(&Message::from(5)).unwrap()[..], b"\x80\x03K\x05.");
/// assert_eq!(&to_pickle(&Message::from(1.5)).unwrap()[..], b"\x80\x03G?\xf8\x00\x00\x00\x00\x00\x00.");
/// assert_eq!(&to_pickle(&Message::from("x")).unwrap()[..], b"\x80\x03X\x01\x00\x00\x00x.");
/// ```
pub fn to_pickle(message: &Message) -> Result<Bytes> {
    crate::pickle::message_to_pickle(message)
}

// ---------------------------------------------------------------------------------------
// Base85 (RFC 1924 alphabet, as Python's base64.b85encode / b85decode)
// ---------------------------------------------------------------------------------------

const B85_ALPHABET: &[u8; 85] =
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%&()*+-;<=>?@^_`{|}~";

/// Character -> digit; 0xFF for characters outside the alphabet.
const B85_DIGITS: [u8; 256] = {
    let mut t = [0xFFu8; 256];
    let mut i = 0;
    while i < 85 {
        t[B85_ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    t
};

/// Why [`decode_base85`] refused its input (the texts are those of Python's `b85decode`
/// where it has one).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Base85Error {
    /// A byte outside the base85 alphabet.
    #[error("bad base85 character {byte:#04x} at position {position}")]
    BadChar {
        /// Its index in the input.
        position: usize,
        /// The byte.
        byte: u8,
    },
    /// A group of five characters whose value does not fit in 32 bits.
    #[error("base85 overflow in hunk starting at byte {position}")]
    Overflow {
        /// Index of the group's first character in the input.
        position: usize,
    },
    /// The input ends with a group of one character, which encodes no byte.
    #[error("a lone base85 character at position {position} ends the input; a final group has 2 to 5 characters")]
    LoneChar {
        /// Its index in the input.
        position: usize,
    },
}

impl Base85Error {
    /// The same error in a text that had `by` more characters before this one.
    fn shifted(self, by: usize) -> Self {
        match self {
            Base85Error::BadChar { position, byte } => Base85Error::BadChar {
                position: position + by,
                byte,
            },
            Base85Error::Overflow { position } => Base85Error::Overflow {
                position: position + by,
            },
            Base85Error::LoneChar { position } => Base85Error::LoneChar {
                position: position + by,
            },
        }
    }
}

/// Length of the base85 of `n` bytes: 5 characters per 4 bytes, and n + 1 characters for
/// a final group of n < 4 bytes.
pub fn base85_encoded_len(n: usize) -> usize {
    let rem = n % 4;
    n / 4 * 5 + if rem == 0 { 0 } else { rem + 1 }
}

/// Length of the bytes that `n` base85 characters decode to, or `None` when a final
/// group of one character makes the length impossible.
pub fn base85_decoded_len(n: usize) -> Option<usize> {
    match n % 5 {
        1 => None,
        0 => Some(n / 5 * 4),
        rem => Some(n / 5 * 4 + rem - 1),
    }
}

/// Appends the base85 of `data` to `out`, exactly as Python's `base64.b85encode` (no padding).
///
/// ```
/// let mut out = Vec::new();
/// serpy::protocol::v1::encode_base85(b"abc", &mut out);
/// assert_eq!(out, b"VPaz");
/// ```
pub fn encode_base85(data: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + base85_encoded_len(data.len()), 0);
    encode_base85_to_slice(data, &mut out[start..]);
}

/// Two-character base85 of every value below 85 * 85.
const B85_PAIRS: [[u8; 2]; 85 * 85] = {
    let mut t = [[0u8; 2]; 85 * 85];
    let mut i = 0;
    while i < 85 * 85 {
        t[i] = [B85_ALPHABET[i / 85], B85_ALPHABET[i % 85]];
        i += 1;
    }
    t
};

/// 2^64 / 85^4, rounded up: `v * B85_SCALE` is `v / 85^4` in 64.64 fixed point.
const B85_SCALE: u128 = (1u128 << 64).div_ceil(52_200_625);

/// The digits of `v` as `(first, middle pair, last pair)`: `v / 85^4`, `v / 85^2 % 85^2`
/// and `v % 85^2`. Three 64 × 64 → 128-bit products and nothing else: `v * B85_SCALE`
/// holds the first digit in its high half and the rest of `v / 85^4` as a 64-bit
/// fraction; each product of the fraction with 85^2 moves the next pair into the high
/// half. Exact for every `u32` (checked for all of them once; the tests check the edges):
/// the scale is high by less than `v / 2^64 < 2^-32` of a unit, which after the two
/// multiplications by 85^2 is still less than a unit of the last pair. The compiler also
/// sees that each result is below its table's length, so the lookups need no checks.
#[inline(always)]
fn b85_digits(v: u32) -> (usize, usize, usize) {
    let t = u128::from(v) * B85_SCALE;
    let first = (t >> 64) as usize;
    let t = u128::from(t as u64) * 7225;
    let middle = (t >> 64) as usize;
    let t = u128::from(t as u64) * 7225;
    (first, middle, (t >> 64) as usize)
}

/// Writes the five characters of `v` into `out[..5]`.
#[inline(always)]
fn encode_group(v: u32, out: &mut [u8]) {
    let (first, middle, low) = b85_digits(v);
    out[0] = B85_ALPHABET[first];
    out[1..3].copy_from_slice(&B85_PAIRS[middle]);
    out[3..5].copy_from_slice(&B85_PAIRS[low]);
}

/// `out` must be exactly `base85_encoded_len(data.len())` long.
fn encode_base85_to_slice(data: &[u8], out: &mut [u8]) {
    // Four groups per step, whose products overlap: base85_bench, 64 KiB, 1320 -> 1781
    // MB/s against two groups a step with divisions by 85^2 (2-vCPU Intel Xeon).
    let quads = data.chunks_exact(16);
    let single = quads.remainder();
    let mut slots = out.chunks_exact_mut(20);
    for (g, o) in quads.zip(&mut slots) {
        let mut twenty = [0u8; 20];
        for (k, t) in twenty.chunks_exact_mut(5).enumerate() {
            let b = &g[4 * k..4 * k + 4];
            encode_group(u32::from_be_bytes([b[0], b[1], b[2], b[3]]), t);
        }
        o.copy_from_slice(&twenty);
    }
    let out = slots.into_remainder();
    let groups = single.chunks_exact(4);
    let rem = groups.remainder();
    let mut slots = out.chunks_exact_mut(5);
    for (g, o) in groups.zip(&mut slots) {
        encode_group(u32::from_be_bytes([g[0], g[1], g[2], g[3]]), o);
    }
    if !rem.is_empty() {
        let mut g = [0u8; 4];
        g[..rem.len()].copy_from_slice(rem);
        let mut five = [0u8; 5];
        encode_group(u32::from_be_bytes(g), &mut five);
        let tail = slots.into_remainder();
        let n = tail.len().min(five.len());
        tail[..n].copy_from_slice(&five[..n]);
    }
}

/// `B85_PLACE[k][c]`: what character `c` adds to a group's value in place `k` (its digit
/// times 85 to the power 4 - k), or 2^40 for a character outside the alphabet, which
/// puts the sum above 32 bits so that one comparison catches both errors.
static B85_PLACE: [[u64; 256]; 5] = {
    let mut t = [[1u64 << 40; 256]; 5];
    let mut k = 0;
    while k < 5 {
        let mut weight = 1u64;
        let mut j = k;
        while j < 4 {
            weight *= 85;
            j += 1;
        }
        let mut i = 0;
        while i < 85 {
            t[k][B85_ALPHABET[i] as usize] = i as u64 * weight;
            i += 1;
        }
        k += 1;
    }
    t
};

/// Decodes one group of five characters starting at `position` (for error reports):
/// five table lookups and additions (measured 3 times faster than digits and products).
#[inline(always)]
fn decode_group(c: &[u8; 5], position: usize) -> Result<u32, Base85Error> {
    let acc = B85_PLACE[0][usize::from(c[0])]
        + B85_PLACE[1][usize::from(c[1])]
        + B85_PLACE[2][usize::from(c[2])]
        + B85_PLACE[3][usize::from(c[3])]
        + B85_PLACE[4][usize::from(c[4])];
    if acc <= u64::from(u32::MAX) {
        Ok(acc as u32)
    } else {
        Err(group_error(c, position))
    }
}

/// What is wrong with a group that [`decode_group`] refused.
#[cold]
#[inline(never)]
fn group_error(c: &[u8; 5], position: usize) -> Base85Error {
    match c.iter().position(|&ch| B85_DIGITS[usize::from(ch)] == 0xFF) {
        Some(j) => Base85Error::BadChar {
            position: position + j,
            byte: c[j],
        },
        None => Base85Error::Overflow { position },
    }
}

/// Appends the bytes of the base85 text `text` to `out`, as Python's `base64.b85decode`:
/// a final group of n characters (2 to 4) is padded with `~` and gives n - 1 bytes.
///
/// # Errors
/// A character outside the alphabet, a group whose value exceeds 32 bits, or a final
/// group of one character; `out` is then left as it was.
///
/// ```
/// use serpy::protocol::v1::{decode_base85, Base85Error};
/// let mut out = Vec::new();
/// decode_base85(b"VPaz", &mut out).unwrap();
/// assert_eq!(out, b"abc");
/// assert_eq!(decode_base85(b"~~~~~", &mut out), Err(Base85Error::Overflow { position: 0 }));
/// assert_eq!(out, b"abc");
/// ```
pub fn decode_base85(text: &[u8], out: &mut Vec<u8>) -> Result<(), Base85Error> {
    let start = out.len();
    let groups = text.chunks_exact(5);
    let rem = groups.remainder();
    let Some(len) = base85_decoded_len(text.len()) else {
        // Report a bad character or an overflow in the full groups first, as Python would.
        for (k, g) in groups.enumerate() {
            decode_group(&[g[0], g[1], g[2], g[3], g[4]], k * 5)?;
        }
        let position = text.len() - 1;
        let byte = text[position];
        return Err(if B85_DIGITS[usize::from(byte)] == 0xFF {
            Base85Error::BadChar { position, byte }
        } else {
            Base85Error::LoneChar { position }
        });
    };
    out.resize(start + len, 0);
    let whole = &text[..text.len() - rem.len()];
    let result = decode_base85_to_slice(whole, rem, &mut out[start..]);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// The value of the five characters in the low 40 bits of `w` (the first character in
/// the low byte): above `u32::MAX` when one is outside the alphabet or the group
/// overflows.
#[inline(always)]
fn group_sum(w: u64) -> u64 {
    B85_PLACE[0][(w & 0xFF) as usize]
        + B85_PLACE[1][(w >> 8 & 0xFF) as usize]
        + B85_PLACE[2][(w >> 16 & 0xFF) as usize]
        + B85_PLACE[3][(w >> 24 & 0xFF) as usize]
        + B85_PLACE[4][(w >> 32 & 0xFF) as usize]
}

/// What is wrong with one of the two groups in `g` (ten characters from `position`).
#[cold]
#[inline(never)]
fn pair_error(g: &[u8], position: usize) -> Base85Error {
    let (a, b) = g.split_at(5);
    let first = [a[0], a[1], a[2], a[3], a[4]];
    match decode_group(&first, position) {
        Err(e) => e,
        Ok(_) => group_error(&[b[0], b[1], b[2], b[3], b[4]], position + 5),
    }
}

/// Decodes the pairs of groups (ten characters) of `text` into `out` (eight bytes each)
/// up to the first pair that is not valid base85, or the end of either; returns how
/// many pairs it decoded. Two groups per step: one 8-byte and one 2-byte load in, one
/// 8-byte store out, and one test for both groups.
#[inline]
fn decode_pairs(text: &[u8], out: &mut [u8]) -> usize {
    let mut done = 0;
    for (g, o) in text.chunks_exact(10).zip(out.chunks_exact_mut(8)) {
        let lo = u64::from_le_bytes([g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]]);
        let hi = u64::from(u16::from_le_bytes([g[8], g[9]]));
        let a = group_sum(lo);
        let b = group_sum(lo >> 40 | hi << 24);
        if (a | b) > u64::from(u32::MAX) {
            break;
        }
        o.copy_from_slice(&(a << 32 | b).to_be_bytes());
        done += 1;
    }
    done
}

/// `text` holds whole groups, `rem` the final group of 2 to 4 characters (or nothing);
/// `out` must be exactly as long as they decode to.
fn decode_base85_to_slice(text: &[u8], rem: &[u8], out: &mut [u8]) -> Result<(), Base85Error> {
    let whole = text.len() / 10 * 10;
    let (text, single) = text.split_at(whole);
    let (head, out) = out.split_at_mut(whole / 10 * 8);
    let done = decode_pairs(text, head);
    let mut position = done * 10;
    if position < whole {
        return Err(pair_error(&text[position..position + 10], position));
    }
    let (head, tail) = out.split_at_mut(single.len() / 5 * 4);
    if let [c0, c1, c2, c3, c4] = *single {
        let v = decode_group(&[c0, c1, c2, c3, c4], position)?;
        head.copy_from_slice(&v.to_be_bytes());
        position += 5;
    }
    if !rem.is_empty() {
        let mut g = [b'~'; 5];
        g[..rem.len()].copy_from_slice(rem);
        let v = decode_group(&g, position)?;
        let n = tail.len().min(4);
        tail[..n].copy_from_slice(&v.to_be_bytes()[..n]);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Decoder
// ---------------------------------------------------------------------------------------

/// Index of the first `needle` in `hay`, eight bytes at a time.
#[inline]
fn find_byte(needle: u8, hay: &[u8]) -> Option<usize> {
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
/// chunk is gone, the decoder reuses it. A program that keeps a few small messages for
/// long and drops the rest can copy them (`Bytes::copy_from_slice`).
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
    buf: Vec<u8>,
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
    chunk: BytesMut,
}

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
            self.block(part, out);
        }
    }

    /// Completes the current block with `part` (the bytes before its separator).
    fn block(&mut self, part: &[u8], out: &mut Vec<Frame>) {
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
                            &mut self.chunk,
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
                            &mut self.chunk,
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
                    payload(self.mode, self.max_message_size, &mut self.chunk, part, out);
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
                        &mut self.chunk,
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
const CHUNK: usize = 64 * 1024;

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
/// base85 one are decoded into `chunk` and cut out of it ([`cut`]).
fn payload(mode: Mode, max: usize, chunk: &mut BytesMut, raw: &[u8], out: &mut Vec<Frame>) {
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
            // Copied, not cut out of the chunk: measured no faster for raw payloads
            // (the chunk's shared count moves between threads where an allocation does not).
            Frame::Data {
                message: Message::Bytes(Bytes::copy_from_slice(raw)),
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

impl fmt::Display for Control {
    /// The block's text after the leading `0x01`: `SETMODE2`, `ACKMODCG`, `ACKEOT!!`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Control::SetMode(m) => write!(f, "SETMODE{m}"),
            Control::AckModeChange => f.write_str("ACKMODCG"),
            Control::AckEot => f.write_str("ACKEOT!!"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Text;

    fn enc() -> Encoder {
        Encoder::new(TextEncoding::Utf8, 1 << 20)
    }

    /// Encodes and returns (wire bytes, what encode said).
    fn wire(e: &mut Encoder, m: impl Into<Message>, mode: u8) -> (Vec<u8>, Result<Encoded>) {
        let mut w = WireBuf::new();
        let r = e.encode(&m.into(), Mode::try_from(mode).unwrap(), &mut w);
        (w.to_vec(), r)
    }

    fn ok(e: &mut Encoder, m: impl Into<Message>, mode: u8) -> (Vec<u8>, Mode, bool) {
        let (w, r) = wire(e, m, mode);
        let r = r.unwrap();
        (w, r.mode, r.set_mode)
    }

    fn b85(data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_base85(data, &mut v);
        v
    }

    fn unb85(text: &[u8]) -> Result<Vec<u8>, Base85Error> {
        let mut v = Vec::new();
        decode_base85(text, &mut v).map(|()| v)
    }

    fn decode_all(d: &mut Decoder, input: &[u8]) -> Vec<Frame> {
        let mut out = Vec::new();
        d.decode(input, &mut out);
        out
    }

    fn bytes_frame(b: &[u8], mode: Mode) -> Frame {
        Frame::Data {
            message: Message::Bytes(Bytes::copy_from_slice(b)),
            mode: Some(mode),
        }
    }

    // ---- encoder ----

    #[test]
    fn text_in_every_mode() {
        let mut e = enc();
        assert_eq!(
            ok(&mut e, "hi", 0),
            (b"hi\x1f".to_vec(), Mode::Plain, false)
        );
        assert_eq!(
            ok(&mut e, "hi", 1),
            (b"\x01SETMODE1\x1fhi\x04\x1f".to_vec(), Mode::PlainAck, true)
        );
        assert_eq!(
            ok(&mut e, "hi", 1),
            (b"hi\x04\x1f".to_vec(), Mode::PlainAck, false)
        );
        let hi85 = b85(b"hi");
        assert_eq!(
            ok(&mut e, "hi", 2),
            (
                [&b"\x01SETMODE2\x1f"[..], &hi85, b"\x1f"].concat(),
                Mode::Base85,
                true
            )
        );
        assert_eq!(
            ok(&mut e, "hi", 3),
            (
                [&b"\x01SETMODE3\x1f"[..], &hi85, b"\x04\x1f"].concat(),
                Mode::Base85Ack,
                true
            )
        );
        let p = b85(b"\x80\x03X\x02\x00\x00\x00hi.");
        assert_eq!(
            ok(&mut e, "hi", 4),
            (
                [&b"\x01SETMODE4\x1f"[..], &p, b"\x1f"].concat(),
                Mode::Pickle,
                true
            )
        );
        assert_eq!(
            ok(&mut e, "hi", 5),
            (
                [&b"\x01SETMODE5\x1f"[..], &p, b"\x04\x1f"].concat(),
                Mode::PickleAck,
                true
            )
        );
        assert_eq!(e.mode(), Mode::PickleAck);
        e.reset();
        assert_eq!(e.mode(), Mode::Plain);
        assert_eq!(
            ok(&mut e, "hi", 0),
            (b"hi\x1f".to_vec(), Mode::Plain, false)
        );
    }

    #[test]
    fn numbers_travel_as_text() {
        let mut e = enc();
        assert_eq!(ok(&mut e, 42, 0).0, b"42\x1f");
        assert_eq!(ok(&mut e, -7, 0).0, b"-7\x1f");
        assert_eq!(ok(&mut e, 1.5, 0).0, b"1.5\x1f");
        assert_eq!(ok(&mut e, 1e16, 0).0, b"1e+16\x1f");
        assert_eq!(ok(&mut e, f64::NAN, 0).0, b"nan\x1f");
        assert_eq!(ok(&mut e, 42, 1).0, b"\x01SETMODE1\x1f42\x04\x1f");
        assert_eq!(
            ok(&mut e, 42, 2).0,
            [&b"\x01SETMODE2\x1f"[..], &b85(b"42"), b"\x1f"].concat()
        );
    }

    #[test]
    fn bytes_and_pickles_switch_mode_by_themselves() {
        let mut e = enc();
        let (w, m, s) = ok(&mut e, &b"abc"[..], 0);
        assert_eq!(
            (w, m, s),
            (b"\x01SETMODE2\x1fVPaz\x1f".to_vec(), Mode::Base85, true)
        );
        let (w, m, s) = ok(&mut e, &b"abc"[..], 1);
        assert_eq!(
            (w, m, s),
            (
                b"\x01SETMODE3\x1fVPaz\x04\x1f".to_vec(),
                Mode::Base85Ack,
                true
            )
        );
        let (w, m, _) = ok(&mut e, &b"abc"[..], 2);
        assert_eq!((w, m), (b"\x01SETMODE2\x1fVPaz\x1f".to_vec(), Mode::Base85));
        // Bytes in mode 4 are pickled (C opcode).
        let (w, m, _) = ok(&mut e, &b"ab"[..], 4);
        assert_eq!(m, Mode::Pickle);
        assert_eq!(
            w,
            [&b"\x01SETMODE4\x1f"[..], &b85(b"\x80\x03C\x02ab."), b"\x1f"].concat()
        );

        let pickle = Message::Pickle(Bytes::from_static(b"\x80\x03K\x05."));
        for (asked, got) in [
            (0, Mode::Pickle),
            (1, Mode::PickleAck),
            (2, Mode::Pickle),
            (3, Mode::PickleAck),
            (4, Mode::Pickle),
            (5, Mode::PickleAck),
        ] {
            let mut e = enc();
            let (w, m, s) = ok(&mut e, pickle.clone(), asked);
            assert_eq!((m, s), (got, true), "asked {asked}");
            let tail: &[u8] = if got.is_acked() { b"\x04\x1f" } else { b"\x1f" };
            let set = format!("\x01SETMODE{got}\x1f");
            // The pickle bytes themselves are sent, not pickled again.
            assert_eq!(w, [set.as_bytes(), &b85(b"\x80\x03K\x05."), tail].concat());
        }
    }

    #[test]
    fn raw_bytes_that_cannot_travel_switch_to_base85() {
        let mut e = enc();
        let (_, m, s) = ok(&mut e, "a\x1fb", 0);
        assert_eq!((m, s), (Mode::Base85, true));
        let (w, m, s) = ok(&mut e, "\x01SETMODE0", 0);
        assert_eq!((m, s), (Mode::Base85, false));
        assert_eq!(w, [&b85(b"\x01SETMODE0")[..], b"\x1f"].concat());
        // 0x04 is fine in mode 0, and 0x01 after the start too.
        let (w, m, s) = ok(&mut e, "a\x04\x01", 0);
        assert_eq!(
            (w, m, s),
            (b"\x01SETMODE0\x1fa\x04\x01\x1f".to_vec(), Mode::Plain, true)
        );
        // Mode 1: 0x04, 0x1F or a leading 0x01 -> mode 3.
        for text in ["a\x04b", "a\x1fb", "\x01x"] {
            let mut e = enc();
            let (w, m, s) = ok(&mut e, text, 1);
            assert_eq!((m, s), (Mode::Base85Ack, true), "{text:?}");
            assert_eq!(
                w,
                [&b"\x01SETMODE3\x1f"[..], &b85(text.as_bytes()), b"\x04\x1f"].concat()
            );
        }
        let (w, m, _) = ok(&mut enc(), "a\x01b", 1);
        assert_eq!(
            (w, m),
            (b"\x01SETMODE1\x1fa\x01b\x04\x1f".to_vec(), Mode::PlainAck)
        );
    }

    #[test]
    fn empty_messages() {
        let mut e = enc();
        for (m, mode) in [
            (Message::from(""), 0),
            (Message::from(&b""[..]), 0),
            (Message::from(""), 2),
            (Message::Pickle(Bytes::new()), 4),
            (Message::Pickle(Bytes::new()), 0),
        ] {
            let (w, r) = wire(&mut e, m, mode);
            let want = Mode::try_from(mode).unwrap();
            assert!(
                matches!(r, Err(Error::EmptyMessage { mode }) if mode == want),
                "{r:?}"
            );
            assert!(w.is_empty());
            assert_eq!(e.mode(), Mode::Plain);
        }
        assert_eq!(ok(&mut e, "", 1).0, b"\x01SETMODE1\x1f\x04\x1f");
        assert_eq!(ok(&mut e, "", 3).0, b"\x01SETMODE3\x1f\x04\x1f");
        assert_eq!(ok(&mut e, &b""[..], 1).0, b"\x04\x1f");
        // An empty text in mode 4 is a pickle of '' and is not empty.
        assert_eq!(ok(&mut e, "", 4).1, Mode::Pickle);
    }

    #[test]
    fn too_large_and_unencodable() {
        let mut e = Encoder::new(TextEncoding::Utf8, 4);
        let (w, r) = wire(&mut e, "hello", 1);
        assert!(
            matches!(r, Err(Error::MessageTooLarge { size: 5, max: 4 })),
            "{r:?}"
        );
        assert!(w.is_empty());
        assert_eq!(e.mode(), Mode::Plain);
        assert_eq!(ok(&mut e, "hell", 3).1, Mode::Base85Ack); // base85 may be larger
                                                              // In mode 4 the pickle is what counts.
        let (_, r) = wire(&mut e, 1, 4);
        assert!(
            matches!(r, Err(Error::MessageTooLarge { size: 5, max: 4 })),
            "{r:?}"
        );

        let mut ascii = Encoder::new(TextEncoding::Ascii, 100);
        let (w, r) = wire(&mut ascii, "µ", 1);
        assert!(matches!(r, Err(Error::Encoding { .. })), "{r:?}");
        assert!(w.is_empty());
        assert_eq!(ascii.mode(), Mode::Plain);
        // Pickled text is always UTF-8.
        assert_eq!(ok(&mut ascii, "µ", 4).1, Mode::Pickle);
        let mut latin = Encoder::new(TextEncoding::Latin1, 100);
        assert_eq!(ok(&mut latin, "µ", 0).0, b"\xb5\x1f");
    }

    #[test]
    fn control_blocks() {
        let mut w = WireBuf::new();
        for m in Mode::ALL {
            encode_control(Control::SetMode(m), &mut w);
        }
        encode_control(Control::AckModeChange, &mut w);
        encode_control(Control::AckEot, &mut w);
        let mut want = Vec::new();
        for d in 0..=5 {
            want.extend_from_slice(format!("\x01SETMODE{d}\x1f").as_bytes());
        }
        want.extend_from_slice(b"\x01ACKMODCG\x1f\x01ACKEOT!!\x1f");
        assert_eq!(w.to_vec(), want);
        assert_eq!(Control::SetMode(Mode::Base85).to_string(), "SETMODE2");

        let mut d = Decoder::new(100);
        let mut frames = decode_all(&mut d, &want);
        assert_eq!(frames.pop(), Some(Frame::AckEot));
        assert_eq!(frames.pop(), Some(Frame::AckModeChange));
        assert_eq!(frames, Mode::ALL.map(Frame::SetMode).to_vec());
        assert_eq!(d.mode(), Mode::PickleAck);
    }

    // ---- pickle ----

    #[test]
    fn pickles_match_python_protocol_3() {
        // Expected bytes from pickle.dumps(value, protocol=3) (without the memo
        // opcode Python adds after str and bytes, which loads the same).
        let ints: [(i64, &[u8]); 13] = [
            (0, b"K\x00"),
            (5, b"K\x05"),
            (255, b"K\xff"),
            (256, b"M\x00\x01"),
            (65535, b"M\xff\xff"),
            (65536, b"J\x00\x00\x01\x00"),
            (-1, b"J\xff\xff\xff\xff"),
            (-2147483648, b"J\x00\x00\x00\x80"),
            (2147483647, b"J\xff\xff\xff\x7f"),
            (2147483648, b"\x8a\x05\x00\x00\x00\x80\x00"),
            (-2147483649, b"\x8a\x05\xff\xff\xff\x7f\xff"),
            (i64::MAX, b"\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7f"),
            (i64::MIN, b"\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80"),
        ];
        for (i, body) in ints {
            let want = [&b"\x80\x03"[..], body, b"."].concat();
            assert_eq!(to_pickle(&Message::Int(i)).unwrap()[..], want[..], "{i}");
        }
        // -2**40 and 2**40: 6-byte LONG1.
        assert_eq!(
            to_pickle(&Message::Int(-(1 << 40))).unwrap()[..],
            b"\x80\x03\x8a\x06\x00\x00\x00\x00\x00\xff."[..]
        );
        assert_eq!(
            to_pickle(&Message::Int(1 << 40)).unwrap()[..],
            b"\x80\x03\x8a\x06\x00\x00\x00\x00\x00\x01."[..]
        );
        assert_eq!(
            to_pickle(&Message::Float(1.5)).unwrap()[..],
            b"\x80\x03G?\xf8\x00\x00\x00\x00\x00\x00."[..]
        );
        assert_eq!(
            to_pickle(&Message::Float(-0.0)).unwrap()[..],
            b"\x80\x03G\x80\x00\x00\x00\x00\x00\x00\x00."[..]
        );
        assert_eq!(
            to_pickle(&Message::from("µé")).unwrap()[..],
            b"\x80\x03X\x04\x00\x00\x00\xc2\xb5\xc3\xa9."[..]
        );
        assert_eq!(
            to_pickle(&Message::from("")).unwrap()[..],
            b"\x80\x03X\x00\x00\x00\x00."[..]
        );
        assert_eq!(
            to_pickle(&Message::from(&b""[..])).unwrap()[..],
            b"\x80\x03C\x00."[..]
        );
        let big = vec![b'a'; 300];
        let want = [&b"\x80\x03B\x2c\x01\x00\x00"[..], &big, b"."].concat();
        assert_eq!(to_pickle(&Message::from(big)).unwrap()[..], want[..]);
        let raw = Message::Pickle(Bytes::from_static(b"anything"));
        assert_eq!(to_pickle(&raw).unwrap()[..], b"anything"[..]);
    }

    // ---- base85 ----

    #[test]
    fn base85_matches_python() {
        // base64.b85encode of each input.
        let cases: [(&[u8], &[u8]); 11] = [
            (b"", b""),
            (b"\x00", b"00"),
            (b"\x00\x01", b"009"),
            (b"abc", b"VPaz"),
            (b"abcd", b"VPa!s"),
            (b"abcde", b"VPa!sWd"),
            (b"\x01\x02\x03\x04\x05\x06", b"0RjUA1qJ"),
            (b"\x01\x02\x03\x04\x05\x06\x07", b"0RjUA1qKH"),
            (b"\xff\xff\xff\xff", b"|NsC0"),
            (b"\xff\xff\xff\xff\xff\xff\xff", b"|NsC0|Ns9"),
            (b"\x00\x01\x1f\xff", b"00AHW"),
        ];
        for (data, text) in cases {
            assert_eq!(b85(data), text, "{data:?}");
            assert_eq!(base85_encoded_len(data.len()), text.len());
            assert_eq!(unb85(text).unwrap(), data, "{text:?}");
            assert_eq!(base85_decoded_len(text.len()), Some(data.len()));
        }
        for n in 0..=7 {
            let data: Vec<u8> = (0..n).map(|i| 0xF0 | i as u8).collect();
            assert_eq!(unb85(&b85(&data)).unwrap(), data);
            let all_ff = vec![0xFF; n];
            assert_eq!(unb85(&b85(&all_ff)).unwrap(), all_ff);
        }
        // Appends to what is there.
        let mut v = b"x".to_vec();
        encode_base85(b"abc", &mut v);
        decode_base85(b"VPaz", &mut v).unwrap();
        assert_eq!(v, b"xVPazabc");
    }

    /// Python's `b85encode`, one digit at a time: the reference for the encoder.
    fn b85_reference(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in data.chunks(4) {
            let mut g = [0u8; 4];
            g[..chunk.len()].copy_from_slice(chunk);
            let mut v = u32::from_be_bytes(g);
            let mut five = [0u8; 5];
            for c in five.iter_mut().rev() {
                *c = B85_ALPHABET[(v % 85) as usize];
                v /= 85;
            }
            out.extend_from_slice(&five[..chunk.len() + 1]);
        }
        out
    }

    #[test]
    fn base85_encoder_matches_the_reference_at_every_length() {
        // Every length up to 300 (each remainder after the pairs of groups) and some
        // longer ones, random bytes and the extremes, appended after a prefix to check
        // the offset too.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut noise = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 32) as u8
                })
                .collect()
        };
        for len in (0..300).chain([511, 512, 515, 1031, 4099, 70_001]) {
            for data in [noise(len), vec![0xFF; len], vec![0; len], noise(len)] {
                let mut ours = b"prefix".to_vec();
                encode_base85(&data, &mut ours);
                assert_eq!(&ours[..6], b"prefix");
                assert_eq!(ours[6..], b85_reference(&data), "{data:?}");
                assert_eq!(unb85(&ours[6..]).unwrap(), data);
            }
        }
        // Group values at the edges of the digit ranges.
        for v in [
            0u32, 84, 85, 7224, 7225, 614_124, 614_125, 52_200_624, 52_200_625,
        ]
        .into_iter()
        .chain([u32::MAX - 1, u32::MAX, 0x8000_0000, 0x7FFF_FFFF])
        {
            let data = [v.to_be_bytes(), (!v).to_be_bytes()].concat();
            assert_eq!(b85(&data), b85_reference(&data), "{v}");
        }
    }

    #[test]
    fn base85_digits_are_exact_on_both_sides_of_every_pair_boundary() {
        // The fixed-point products are exact for every u32 (checked once, exhaustively);
        // the values where an error would first show are those next to a multiple of
        // 85^2, where the last pair wraps and a carry reaches the others.
        let check = |v: u32| {
            let want = (
                (v / 52_200_625) as usize,
                (v / 7225 % 7225) as usize,
                (v % 7225) as usize,
            );
            assert_eq!(b85_digits(v), want, "{v}");
        };
        for h in 0..=u32::MAX / 7225 {
            let v = h * 7225;
            check(v);
            check(v.saturating_add(7224));
            check(v.saturating_sub(1));
        }
        check(u32::MAX);
    }

    #[test]
    fn base85_errors() {
        use Base85Error::*;
        assert_eq!(unb85(b"~~~~~"), Err(Overflow { position: 0 }));
        assert_eq!(unb85(b"|NsC1"), Err(Overflow { position: 0 }));
        assert_eq!(unb85(b"00000~~~~~"), Err(Overflow { position: 5 }));
        assert_eq!(unb85(b"00000~~"), Err(Overflow { position: 5 }));
        assert_eq!(unb85(b"~~"), Err(Overflow { position: 0 }));
        assert_eq!(
            unb85(b"00\"00"),
            Err(BadChar {
                position: 2,
                byte: b'"'
            })
        );
        assert_eq!(
            unb85(b"00000 0"),
            Err(BadChar {
                position: 5,
                byte: b' '
            })
        );
        assert_eq!(
            unb85(b"\x1f"),
            Err(BadChar {
                position: 0,
                byte: 0x1F
            })
        );
        assert_eq!(unb85(b"0"), Err(LoneChar { position: 0 }));
        assert_eq!(unb85(b"VPa!sW"), Err(LoneChar { position: 5 }));
        assert_eq!(
            unb85(b"VPa!s'"),
            Err(BadChar {
                position: 5,
                byte: b'\''
            })
        );
        // An error in a full group is reported before a lone final character.
        assert_eq!(unb85(b"~~~~~0"), Err(Overflow { position: 0 }));
        assert_eq!(
            unb85(b"\xff0000A"),
            Err(BadChar {
                position: 0,
                byte: 0xFF
            })
        );
        // The output is left as it was.
        let mut v = b"keep".to_vec();
        assert!(decode_base85(b"0000000~~~~~", &mut v).is_err());
        assert_eq!(v, b"keep");
        assert!(Overflow { position: 3 }.to_string().contains("overflow"));
        assert_eq!(base85_decoded_len(6), None);
    }

    #[test]
    fn a_frame_is_one_piece_and_a_setmode_one_more() {
        let mut e = enc();
        let mut w = WireBuf::new();
        e.encode(&Message::from("hi"), Mode::Plain, &mut w).unwrap();
        assert_eq!(w.take_parts(), vec![Bytes::from_static(b"hi\x1f")]);
        // The SETMODE is a piece of its own, which a caller that writes its own drops whole.
        e.encode(&Message::from(&b"abc"[..]), Mode::Base85Ack, &mut w)
            .unwrap();
        assert_eq!(
            w.take_parts(),
            vec![
                Bytes::from_static(b"\x01SETMODE3\x1f"),
                Bytes::from_static(b"VPaz\x04\x1f")
            ]
        );
        // A large raw payload is kept by reference, its separator copied after it.
        let big = Bytes::from(vec![b'a'; SHARE_THRESHOLD]);
        e.encode(
            &Message::Text(Text::from_utf8(big.clone()).unwrap()),
            Mode::Plain,
            &mut w,
        )
        .unwrap();
        let parts = w.take_parts();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[1].as_ptr(), big.as_ptr());
        assert_eq!(&parts[2][..], b"\x1f");
    }

    #[test]
    fn base85_errors_in_either_group_of_a_pair() {
        use Base85Error::*;
        // The decoder tests two groups at once: the error must still name the first bad
        // group and character, wherever it is and whatever follows.
        let good = b85(&[0x5A; 40]); // 50 characters
        for at in 0..good.len() {
            for (bad, want) in [
                (
                    b'"',
                    BadChar {
                        position: at,
                        byte: b'"',
                    },
                ),
                (
                    0x1F,
                    BadChar {
                        position: at,
                        byte: 0x1F,
                    },
                ),
            ] {
                let mut t = good.clone();
                t[at] = bad;
                assert_eq!(unb85(&t), Err(want.clone()), "{at}");
                // A second error later does not change the report.
                if at + 6 < t.len() {
                    t[at + 6] = b'\'';
                    assert_eq!(unb85(&t), Err(want), "{at}");
                }
            }
            let mut t = good.clone();
            let group = at / 5 * 5;
            t[group..group + 5].copy_from_slice(b"~~~~~");
            assert_eq!(unb85(&t), Err(Overflow { position: group }), "{at}");
        }
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
    }

    // ---- decoder ----

    #[test]
    fn decodes_every_mode() {
        let mut d = Decoder::new(1 << 10);
        let mut input = b"hi\x1f".to_vec();
        input.extend_from_slice(b"\x01SETMODE1\x1fack\x04\x1f");
        input.extend_from_slice(b"\x01SETMODE2\x1fVPaz\x1f");
        input.extend_from_slice(b"\x01SETMODE3\x1fVPaz\x04\x1f");
        let p = b85(b"\x80\x03K\x05.");
        input.extend_from_slice(b"\x01SETMODE4\x1f");
        input.extend_from_slice(&p);
        input.extend_from_slice(b"\x1f\x01SETMODE5\x1f");
        input.extend_from_slice(&p);
        input.extend_from_slice(b"\x04\x1f");
        let pickle = Message::Pickle(Bytes::from_static(b"\x80\x03K\x05."));
        let want = vec![
            bytes_frame(b"hi", Mode::Plain),
            Frame::SetMode(Mode::PlainAck),
            bytes_frame(b"ack", Mode::PlainAck),
            Frame::SetMode(Mode::Base85),
            bytes_frame(b"abc", Mode::Base85),
            Frame::SetMode(Mode::Base85Ack),
            bytes_frame(b"abc", Mode::Base85Ack),
            Frame::SetMode(Mode::Pickle),
            Frame::Data {
                message: pickle.clone(),
                mode: Some(Mode::Pickle),
            },
            Frame::SetMode(Mode::PickleAck),
            Frame::Data {
                message: pickle,
                mode: Some(Mode::PickleAck),
            },
        ];
        assert_eq!(decode_all(&mut d, &input), want);
        assert_eq!(d.buffered(), 0);
        // One byte at a time.
        let mut d = Decoder::new(1 << 10);
        let mut out = Vec::new();
        for b in &input {
            d.decode(std::slice::from_ref(b), &mut out);
        }
        assert_eq!(out, want);
    }

    #[test]
    fn empty_blocks_are_ignored() {
        let mut d = Decoder::new(100);
        assert_eq!(
            decode_all(&mut d, b"\x1f\x1f\x1fa\x1f\x1f"),
            vec![bytes_frame(b"a", Mode::Plain)]
        );
        decode_all(&mut d, b"\x01SETMODE1\x1f");
        assert_eq!(decode_all(&mut d, b"\x1f\x1f"), vec![]);
        assert_eq!(
            decode_all(&mut d, b"\x04\x1f"),
            vec![bytes_frame(b"", Mode::PlainAck)]
        );
        decode_all(&mut d, b"\x01SETMODE3\x1f");
        assert_eq!(
            decode_all(&mut d, b"\x04\x1f"),
            vec![bytes_frame(b"", Mode::Base85Ack)]
        );
    }

    #[test]
    fn bad_control_blocks() {
        let mut d = Decoder::new(100);
        let frames = decode_all(
            &mut d,
            b"\x01SETMODE9\x1f\x01SETMODE\x1f\x01SETMODE12\x1f\x01HELLO\x1f\x01\x1f\x01ACKEOT!\x1f",
        );
        let bad = |arg: &str| Frame::Error(ProtocolError::BadSetMode { arg: arg.into() });
        let unknown = |b: &str| Frame::Error(ProtocolError::UnknownControl { block: b.into() });
        assert_eq!(
            frames,
            vec![
                bad("9"),
                bad(""),
                bad("12"),
                unknown("HELLO"),
                unknown(""),
                unknown("ACKEOT!")
            ]
        );
        assert_eq!(d.mode(), Mode::Plain);
        let long = [&b"\x01"[..], &[b'x'; 80]].concat();
        let frames = decode_all(&mut d, &[&long[..], b"\x1f"].concat());
        assert_eq!(frames, vec![unknown(&"x".repeat(64))]);
    }

    #[test]
    fn acked_modes_collect_until_eot() {
        let mut d = Decoder::new(100);
        decode_all(&mut d, b"\x01SETMODE1\x1f");
        // Blocks are joined without a separator until an 0x04 comes.
        assert_eq!(decode_all(&mut d, b"ab\x1f"), vec![]);
        assert_eq!(d.buffered(), 2);
        // Control blocks are handled while a message is being collected.
        assert_eq!(decode_all(&mut d, b"\x01ACKEOT!!\x1f"), vec![Frame::AckEot]);
        assert_eq!(
            decode_all(&mut d, b"cd\x04\x1f"),
            vec![bytes_frame(b"abcd", Mode::PlainAck)]
        );
        // Several 0x04 in one block; what follows the last stays for the next message.
        assert_eq!(
            decode_all(&mut d, b"a\x04b\x04c\x1f"),
            vec![
                bytes_frame(b"a", Mode::PlainAck),
                bytes_frame(b"b", Mode::PlainAck)
            ]
        );
        assert_eq!(d.buffered(), 1);
        assert_eq!(
            decode_all(&mut d, b"d\x04\x1f"),
            vec![bytes_frame(b"cd", Mode::PlainAck)]
        );
        // A leading 0x01 after an 0x04 is data: the block did not start with it.
        assert_eq!(
            decode_all(&mut d, b"x\x04\x01ACKEOT!!\x04\x1f"),
            vec![
                bytes_frame(b"x", Mode::PlainAck),
                bytes_frame(b"\x01ACKEOT!!", Mode::PlainAck)
            ]
        );
        // Mode 3: the collected base85 is decoded whole.
        decode_all(&mut d, b"\x01SETMODE3\x1f");
        assert_eq!(
            decode_all(&mut d, b"VP\x1f\x1faz\x04\x1f"),
            vec![bytes_frame(b"abc", Mode::Base85Ack)]
        );
        assert_eq!(d.buffered(), 0);
        // Chunked: the same.
        let mut d2 = Decoder::new(100);
        let mut out = Vec::new();
        for chunk in [
            &b"\x01SETMODE1\x1fa"[..],
            b"b\x1f\x01ACK",
            b"EOT!!\x1fc",
            b"d\x04",
            b"\x1f",
        ] {
            d2.decode(chunk, &mut out);
        }
        assert_eq!(
            out,
            vec![
                Frame::SetMode(Mode::PlainAck),
                Frame::AckEot,
                bytes_frame(b"abcd", Mode::PlainAck)
            ]
        );
    }

    #[test]
    fn bad_base85_is_reported_and_dropped() {
        let mut d = Decoder::new(100);
        let frames = decode_all(&mut d, b"\x01SETMODE2\x1fab\"cd\x1f~~~~~\x1f0\x1fVPaz\x1f");
        assert_eq!(frames.len(), 5);
        let detail = |f: &Frame| match f {
            Frame::Error(ProtocolError::BadBase85 {
                mode: Mode::Base85,
                detail,
            }) => detail.clone(),
            other => panic!("{other:?}"),
        };
        assert!(detail(&frames[1]).contains("bad base85 character"));
        assert!(detail(&frames[2]).contains("overflow"));
        assert!(detail(&frames[3]).contains("lone"));
        assert_eq!(frames[4], bytes_frame(b"abc", Mode::Base85));
        decode_all(&mut d, b"\x01SETMODE5\x1f");
        let frames = decode_all(&mut d, b"~~~~~\x04VPaz\x04\x1f");
        assert!(matches!(
            &frames[0],
            Frame::Error(ProtocolError::BadBase85 {
                mode: Mode::PickleAck,
                ..
            })
        ));
        assert_eq!(
            frames[1],
            Frame::Data {
                message: Message::Pickle(Bytes::from_static(b"abc")),
                mode: Some(Mode::PickleAck)
            }
        );
    }

    #[test]
    fn the_bound_holds() {
        let too_large = |size: u64| Frame::Error(ProtocolError::TooLarge { size, max: 64 });
        let mut d = Decoder::new(64);
        assert_eq!(d.limit(), 96);
        // A block that never ends: one error, then skipped to the next separator.
        assert_eq!(decode_all(&mut d, &[b'a'; 200]), vec![too_large(97)]);
        assert_eq!(d.buffered(), 0);
        assert_eq!(decode_all(&mut d, &[b'a'; 200]), vec![]);
        assert_eq!(
            decode_all(&mut d, b"\x1fok\x1f"),
            vec![bytes_frame(b"ok", Mode::Plain)]
        );
        // Byte by byte: the same, and never more than the limit held.
        let mut d = Decoder::new(64);
        let mut out = Vec::new();
        for b in [&[b'a'; 200][..], b"\x1fok\x1f"].concat() {
            d.decode(&[b], &mut out);
            assert!(d.buffered() <= d.limit());
        }
        assert_eq!(out, vec![too_large(97), bytes_frame(b"ok", Mode::Plain)]);
        // Within the limit but above the maximum once decoded.
        let mut d = Decoder::new(64);
        assert_eq!(
            decode_all(&mut d, &[&[b'a'; 80][..], b"\x1f"].concat()),
            vec![too_large(80)]
        );
        assert_eq!(
            decode_all(&mut d, &[&[b'a'; 64][..], b"\x1f"].concat()).len(),
            1
        );
        decode_all(&mut d, b"\x01SETMODE2\x1f");
        assert_eq!(
            decode_all(&mut d, &[&[b'0'; 85][..], b"\x1f"].concat()),
            vec![too_large(68)]
        );
        assert_eq!(
            decode_all(&mut d, &[&[b'0'; 80][..], b"\x1f"].concat()),
            vec![bytes_frame(&[0; 64], Mode::Base85)]
        );
        // Acked: the collected message counts; it is dropped with the block that crossed.
        decode_all(&mut d, b"\x01SETMODE3\x1f");
        assert_eq!(
            decode_all(&mut d, &[&[b'0'; 60][..], b"\x1f"].concat()),
            vec![]
        );
        assert_eq!(d.buffered(), 60);
        assert_eq!(
            decode_all(&mut d, &[&[b'0'; 60][..], b"\x04\x1f"].concat()),
            vec![too_large(97)]
        );
        assert_eq!(d.buffered(), 0);
        assert_eq!(
            decode_all(&mut d, b"VPaz\x04\x1f"),
            vec![bytes_frame(b"abc", Mode::Base85Ack)]
        );
        // No maximum at all: nothing overflows.
        let mut d = Decoder::new(usize::MAX);
        assert_eq!(d.limit(), usize::MAX);
        assert_eq!(
            decode_all(&mut d, b"abc\x1f"),
            vec![bytes_frame(b"abc", Mode::Plain)]
        );
        // The buffer's capacity stays within the limit too.
        let mut d = Decoder::new(64);
        for _ in 0..96 {
            d.decode(b"a", &mut Vec::new());
            assert!(d.buf.capacity() <= 96, "{}", d.buf.capacity());
        }
        assert_eq!(d.buffered(), 96);
        // A tiny maximum still lets control blocks through.
        let mut d = Decoder::new(0);
        assert_eq!(
            decode_all(&mut d, b"\x01SETMODE1\x1f\x04\x1f"),
            vec![
                Frame::SetMode(Mode::PlainAck),
                bytes_frame(b"", Mode::PlainAck)
            ]
        );
    }

    #[test]
    fn base85_blocks_decoded_as_they_come_match_whole_ones() {
        // Modes 2 and 4 decode a block as it arrives: whatever the chunks, the frames
        // (errors and their positions included) are those of the whole block decoded at once.
        let good = b85(&(0..=255u8).cycle().take(203).collect::<Vec<u8>>());
        let mut blocks: Vec<Vec<u8>> = vec![good.clone(), b"VPaz".to_vec(), Vec::new()];
        for at in [0, 3, 9, 10, 11, 57, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] = b'"';
            blocks.push(bad);
            let mut over = good.clone();
            let g = (at / 5 * 5).min(good.len() / 5 * 5 - 5);
            over[g..g + 5].copy_from_slice(b"~~~~~");
            blocks.push(over);
        }
        blocks.push([&good[..], b"0"].concat()); // a lone final character
        blocks.push(vec![b'0'; 380]); // too large once decoded
        blocks.push(vec![b'0'; 400]); // beyond the limit
        blocks.push(b"0\x04\x01SETMODE9".to_vec());
        for mode in [Mode::Base85, Mode::Pickle] {
            let mut input = SETMODE_BLOCKS[usize::from(u8::from(mode))].to_vec();
            let mut want = vec![Frame::SetMode(mode)];
            for b in &blocks {
                input.extend_from_slice(b);
                input.push(SEP);
                let limit = Decoder::new(300).limit();
                let size = if b.len() > limit {
                    limit + 1
                } else {
                    b.len() / 5 * 4 + (b.len() % 5).saturating_sub(1)
                };
                if b.is_empty() {
                    continue;
                }
                want.push(if size > 300 {
                    Frame::Error(ProtocolError::TooLarge {
                        size: size as u64,
                        max: 300,
                    })
                } else {
                    match unb85(b) {
                        Ok(v) => Frame::Data {
                            message: if mode.is_pickle() {
                                Message::Pickle(v.into())
                            } else {
                                Message::Bytes(v.into())
                            },
                            mode: Some(mode),
                        },
                        Err(e) => Frame::Error(ProtocolError::BadBase85 {
                            mode,
                            detail: e.to_string(),
                        }),
                    }
                });
            }
            for chunk in [input.len(), 1, 2, 3, 7, 9, 10, 11, 13, 64, 100] {
                let mut d = Decoder::new(300);
                let mut out = Vec::new();
                for c in input.chunks(chunk) {
                    d.decode(c, &mut out);
                    assert!(d.buffered() <= d.limit());
                }
                assert_eq!(out, want, "mode {mode}, chunks of {chunk}");
                assert_eq!(d.buffered(), 0);
            }
        }
    }

    #[test]
    fn large_raw_blocks_of_changing_sizes() {
        // Room is reserved for a block the size of the last one: larger, smaller and
        // control blocks after it arrive the same.
        let sizes = [70_000usize, 100_000, 20_000, 70_000];
        let mut input = Vec::new();
        let mut want = Vec::new();
        for (k, &n) in sizes.iter().enumerate() {
            let block: Vec<u8> = (0..n).map(|i| b'a' + ((i + k) % 26) as u8).collect();
            input.extend_from_slice(&block);
            input.push(SEP);
            input.extend_from_slice(b"\x01ACKEOT!!\x1f");
            want.push(bytes_frame(&block, Mode::Plain));
            want.push(Frame::AckEot);
        }
        for chunk in [4096, 5000, 65_536] {
            let mut d = Decoder::new(1 << 20);
            let mut out = Vec::new();
            for c in input.chunks(chunk) {
                d.decode(c, &mut out);
            }
            assert_eq!(out, want, "chunks of {chunk}");
            assert_eq!(d.buffered(), 0);
        }
    }

    /// The payload of a data frame.
    fn data(f: &Frame) -> &Bytes {
        match f {
            Frame::Data {
                message: Message::Bytes(b) | Message::Pickle(b),
                ..
            } => b,
            other => panic!("not a data frame: {other:?}"),
        }
    }

    #[test]
    fn small_base85_payloads_are_cut_out_of_one_chunk_which_is_reused_once_they_are_gone() {
        // Small mode 2 (decoded whole, not as they come) and mode 3 messages.
        for (mode, setmode) in [
            (Mode::Base85, &b"\x01SETMODE2\x1f"[..]),
            (Mode::Base85Ack, b"\x01SETMODE3\x1f"),
        ] {
            let mut d = Decoder::new(1 << 20);
            let mut out = Vec::new();
            d.decode(setmode, &mut out);
            out.clear();
            let mut e = enc();
            let mut input = Vec::new();
            let mut want = Vec::new();
            let mut one_wire = Vec::new();
            for i in 0..100u32 {
                let msg = format!("message {i} {}", "x".repeat(i as usize));
                let mut w = WireBuf::new();
                e.encode(&Message::from(msg.as_str()), mode, &mut w)
                    .unwrap();
                let wire = w.to_vec();
                // The SETMODE the encoder writes first was fed above.
                input.extend_from_slice(if i == 0 {
                    &wire[setmode.len()..]
                } else {
                    &wire[..]
                });
                one_wire = wire;
                want.push(bytes_frame(msg.as_bytes(), mode));
            }
            d.decode(&input, &mut out);
            assert_eq!(out, want, "{mode}");
            // One after the other in one chunk.
            let first = data(&out[0]).as_ptr() as usize;
            for f in &out {
                let at = data(f).as_ptr() as usize;
                assert!(at >= first && at - first < CHUNK, "{mode}");
            }
            // Once they are gone, the chunk is used again: over many more messages than
            // one chunk holds, each dropped before the next arrives, every one is cut
            // from the same chunk.
            drop(out);
            let mut spots = Vec::new();
            let one = &want[99];
            for _ in 0..4 * CHUNK / one_wire.len() {
                let mut out = Vec::new();
                d.decode(&one_wire, &mut out);
                assert_eq!(out, std::slice::from_ref(one), "{mode}");
                spots.push(data(&out[0]).as_ptr() as usize);
            }
            let (lo, hi) = (spots.iter().min().unwrap(), spots.iter().max().unwrap());
            assert!(hi - lo < CHUNK, "{mode}: {lo:#x}..{hi:#x}");
            assert!(d.chunk.capacity() <= CHUNK, "{mode}");
        }
    }

    #[test]
    fn large_raw_blocks_arrive_whole() {
        let big: Vec<u8> = (0..100_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let mut input = big.clone();
        input.push(SEP);
        input.extend_from_slice(b"next\x1f");
        let mut d = Decoder::new(1 << 20);
        let mut out = Vec::new();
        for chunk in input.chunks(4096) {
            d.decode(chunk, &mut out);
        }
        assert_eq!(
            out,
            vec![
                bytes_frame(&big, Mode::Plain),
                bytes_frame(b"next", Mode::Plain)
            ]
        );
        assert_eq!(d.buffered(), 0);

        // And in mode 2 over the encoder.
        let mut e = enc();
        let mut w = WireBuf::new();
        e.encode(&Message::from(big.clone()), Mode::Plain, &mut w)
            .unwrap();
        let mut out = Vec::new();
        for chunk in w.to_vec().chunks(1000) {
            d.decode(chunk, &mut out);
        }
        assert_eq!(
            out,
            vec![
                Frame::SetMode(Mode::Base85),
                bytes_frame(&big, Mode::Base85)
            ]
        );
    }

    #[test]
    fn encoder_and_decoder_agree() {
        let mut e = enc();
        let mut d = Decoder::new(1 << 20);
        let msgs: Vec<(Message, u8)> = vec![
            ("plain".into(), 0),
            ("with\x1fsep".into(), 0),
            ("with\x04eot".into(), 1),
            (Message::from(&b"\x00\x01\x1f\xff"[..]), 0),
            (12.5.into(), 3),
            ("µ".into(), 5),
        ];
        let mut w = WireBuf::new();
        for (m, mode) in &msgs {
            e.encode(m, Mode::try_from(*mode).unwrap(), &mut w).unwrap();
        }
        let data: Vec<(Message, Option<Mode>)> = decode_all(&mut d, &w.to_vec())
            .into_iter()
            .filter_map(|f| match f {
                Frame::Data { message, mode } => Some((message, mode)),
                _ => None,
            })
            .collect();
        let b = |s: &[u8]| Message::Bytes(Bytes::copy_from_slice(s));
        assert_eq!(
            data,
            vec![
                (b(b"plain"), Some(Mode::Plain)),
                (b(b"with\x1fsep"), Some(Mode::Base85)),
                (b(b"with\x04eot"), Some(Mode::Base85Ack)),
                (b(b"\x00\x01\x1f\xff"), Some(Mode::Base85)),
                (b(b"12.5"), Some(Mode::Base85Ack)),
                (
                    Message::Pickle(to_pickle(&"µ".into()).unwrap()),
                    Some(Mode::PickleAck)
                ),
            ]
        );
    }
}
