//! The two wire protocols as pure code: bytes in, frames out; no sockets, no threads.
//!
//! - [`v1`]: the original serpy protocol (`0x1F`-separated blocks, six modes, acknowledgements).
//! - [`v2`]: the serpy2 protocol (14-byte header, typed frames).
//! - [`detect`]: tells the two apart from the first bytes of a stream.
//!
//! Encoders append to a [`WireBuf`]; decoders take input in chunks of any size and push
//! [`Frame`]s. The connection threads only move bytes between sockets and these codecs,
//! so everything here is unit-tested, property-tested and fuzzed without a network.
//!
//! ```
//! use serpy::protocol::{v2, Frame, WireBuf};
//! use serpy::Message;
//!
//! let mut wire = WireBuf::new();
//! v2::encode(&Message::from(123), &mut wire).unwrap();
//! let bytes = wire.to_vec();
//!
//! let mut decoder = v2::Decoder::new(1 << 20);
//! let mut frames = Vec::new();
//! for b in &bytes {
//!     decoder.decode(std::slice::from_ref(b), &mut frames); // one byte at a time works
//! }
//! assert_eq!(frames, vec![Frame::Data { message: Message::Int(123), mode: None }]);
//! ```

use std::fmt;

use bytes::{Bytes, BytesMut};

use crate::error::{Error, ProtocolError};
use crate::message::Message;

pub mod v1;
pub mod v2;

/// Which wire protocol a connection speaks.
///
/// ```
/// use serpy::Protocol;
/// assert_eq!(Protocol::default(), Protocol::V1);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Protocol {
    /// serpy: `0x1F`-separated blocks, modes 0 to 5 with acknowledgements (the default,
    /// as in the original examples).
    #[default]
    V1,
    /// serpy2: typed frames with a 14-byte header, for large binary objects.
    V2,
    /// Server side only: pick V1 or V2 for each connection from its first bytes
    /// (see [`detect`]). A client using `Auto` speaks V1.
    Auto,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::V1 => "v1",
            Protocol::V2 => "v2",
            Protocol::Auto => "auto",
        })
    }
}

/// The answer of [`detect`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Detection {
    /// The stream is v1.
    V1,
    /// The stream is v2.
    V2,
    /// The bytes so far are a proper prefix of the v2 magic: wait for more.
    NeedMore,
}

/// Tells v1 from v2 by the first bytes of a stream (`docs/PROTOCOL.md` in the repository,
/// "Telling v1 from v2").
///
/// A v2 stream starts with the magic `DE CA FE CA FE`, which cannot start UTF-8 or ASCII
/// text; anything else is v1. Empty input, or a proper prefix of the magic, needs more.
///
/// ```
/// use serpy::protocol::{detect, Detection};
/// assert_eq!(detect(b"\xde\xca\xfe\xca\xfe\x01"), Detection::V2);
/// assert_eq!(detect(b"\xde\xca"), Detection::NeedMore);
/// assert_eq!(detect(b"hello\x1f"), Detection::V1);
/// assert_eq!(detect(b"\xde\x00"), Detection::V1);
/// assert_eq!(detect(b""), Detection::NeedMore);
/// ```
pub fn detect(first_bytes: &[u8]) -> Detection {
    let n = first_bytes.len().min(v2::MAGIC.len());
    if first_bytes[..n] != v2::MAGIC[..n] {
        Detection::V1
    } else if n == v2::MAGIC.len() {
        Detection::V2
    } else {
        Detection::NeedMore
    }
}

/// The six v1 modes. v2 has no modes: its frames are typed.
///
/// ```
/// use serpy::Mode;
/// assert_eq!(Mode::try_from(3).unwrap(), Mode::Base85Ack);
/// assert_eq!(u8::from(Mode::PickleAck), 5);
/// assert!(Mode::PlainAck.is_acked());
/// assert!(Mode::try_from(6).is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
#[repr(u8)]
pub enum Mode {
    /// 0: the bytes as they are; returns once queued.
    #[default]
    Plain = 0,
    /// 1: the bytes as they are; returns once the peer acknowledged.
    PlainAck = 1,
    /// 2: base85 of the bytes; returns once queued.
    Base85 = 2,
    /// 3: base85 of the bytes; returns once the peer acknowledged.
    Base85Ack = 3,
    /// 4: base85 of a Python pickle; returns once queued.
    Pickle = 4,
    /// 5: base85 of a Python pickle; returns once the peer acknowledged.
    PickleAck = 5,
}

impl Mode {
    /// All six modes in order.
    pub const ALL: [Mode; 6] = [
        Mode::Plain,
        Mode::PlainAck,
        Mode::Base85,
        Mode::Base85Ack,
        Mode::Pickle,
        Mode::PickleAck,
    ];

    /// True for modes 1, 3 and 5, whose sends wait for the peer's acknowledgement.
    pub fn is_acked(self) -> bool {
        matches!(self, Mode::PlainAck | Mode::Base85Ack | Mode::PickleAck)
    }

    /// True for modes 2 to 5, whose payload travels as base85.
    pub fn is_base85(self) -> bool {
        !matches!(self, Mode::Plain | Mode::PlainAck)
    }

    /// True for modes 4 and 5 (Python pickle).
    pub fn is_pickle(self) -> bool {
        matches!(self, Mode::Pickle | Mode::PickleAck)
    }

    /// The same kind of mode with or without acknowledgement.
    ///
    /// ```
    /// use serpy::Mode;
    /// assert_eq!(Mode::Base85.with_ack(true), Mode::Base85Ack);
    /// assert_eq!(Mode::PickleAck.with_ack(false), Mode::Pickle);
    /// ```
    pub fn with_ack(self, acked: bool) -> Mode {
        let base = (self as u8) & !1;
        Mode::ALL[usize::from(base + u8::from(acked))]
    }
}

impl TryFrom<u8> for Mode {
    type Error = Error;
    fn try_from(n: u8) -> Result<Mode, Error> {
        Mode::ALL
            .get(usize::from(n))
            .copied()
            .ok_or(Error::InvalidMode(n))
    }
}

impl From<Mode> for u8 {
    fn from(m: Mode) -> u8 {
        m as u8
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", *self as u8)
    }
}

/// What a decoder found in the stream.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Frame {
    /// A whole message. `mode` is the v1 mode it arrived in (`None` for v2). For modes 1,
    /// 3 and 5 the receiver must answer with an ACKEOT (see [`v1::Control::AckEot`]).
    Data {
        /// The message.
        message: Message,
        /// The v1 mode it came in, `None` for v2.
        mode: Option<Mode>,
    },
    /// v1: the peer switched the mode of what it sends; answer with ACKMODCG.
    SetMode(Mode),
    /// v1: the peer saw our SETMODE.
    AckModeChange,
    /// v1: the peer received one acknowledged message whole.
    AckEot,
    /// The peer broke the protocol; the decoder skipped what it could not read and goes on.
    Error(ProtocolError),
}

/// Either decoder, for code that handles both protocols alike.
#[derive(Debug)]
#[non_exhaustive]
pub enum Decoder {
    /// A v1 decoder.
    V1(v1::Decoder),
    /// A v2 decoder.
    V2(v2::Decoder),
}

impl Decoder {
    /// A decoder for `protocol` (`Auto` is not a wire protocol: it gives v1).
    ///
    /// ```
    /// use serpy::protocol::{Decoder, Frame};
    /// use serpy::Protocol;
    /// let mut d = Decoder::new(Protocol::V1, 1024);
    /// let mut out = Vec::new();
    /// d.decode(b"hi\x1f", &mut out);
    /// assert!(matches!(&out[0], Frame::Data { .. }));
    /// ```
    pub fn new(protocol: Protocol, max_message_size: usize) -> Self {
        match protocol {
            Protocol::V2 => Decoder::V2(v2::Decoder::new(max_message_size)),
            Protocol::V1 | Protocol::Auto => Decoder::V1(v1::Decoder::new(max_message_size)),
        }
    }

    /// Feeds `input` (any number of bytes) and pushes what it completes to `out`.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<Frame>) {
        match self {
            Decoder::V1(d) => d.decode(input, out),
            Decoder::V2(d) => d.decode(input, out),
        }
    }

    /// How many bytes the decoder holds (never much more than the maximum message size).
    pub fn buffered(&self) -> usize {
        match self {
            Decoder::V1(d) => d.buffered(),
            Decoder::V2(d) => d.buffered(),
        }
    }

    /// The bytes of an unfinished message that have arrived (for v2, its header
    /// included): what [`ProtocolError::CutShort`]
    /// reports when the link ends now.
    pub fn cut_bytes(&self) -> usize {
        match self {
            Decoder::V1(d) => d.buffered(),
            Decoder::V2(d) => d.cut_bytes(),
        }
    }
}

/// Payloads at least this large are kept by reference in a [`WireBuf`], not copied.
pub const SHARE_THRESHOLD: usize = 16 * 1024;

/// Where encoders put bytes: small pieces are copied into one contiguous buffer, large
/// payloads are kept by reference, so that a blob sent to many peers is never copied and
/// a writer can hand everything to the socket in one vectored write.
///
/// ```
/// use serpy::protocol::WireBuf;
/// let mut w = WireBuf::new();
/// w.put_slice(b"ab");
/// w.put_bytes(bytes::Bytes::from(vec![7u8; 100_000]));
/// w.put_slice(b"cd");
/// assert_eq!(w.len(), 100_004);
/// assert_eq!(w.to_vec()[..2], *b"ab");
/// ```
#[derive(Debug, Default)]
pub struct WireBuf {
    parts: Vec<Bytes>,
    tail: BytesMut,
    len: usize,
}

impl WireBuf {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a copy of `bytes`.
    pub fn put_slice(&mut self, bytes: &[u8]) {
        self.tail.extend_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Appends one byte.
    pub fn put_u8(&mut self, byte: u8) {
        self.put_slice(&[byte]);
    }

    /// Appends `bytes`: by reference if large ([`SHARE_THRESHOLD`]), copied if small.
    pub fn put_bytes(&mut self, bytes: Bytes) {
        if bytes.len() < SHARE_THRESHOLD {
            self.put_slice(&bytes);
        } else {
            self.flush_tail();
            self.len += bytes.len();
            self.parts.push(bytes);
        }
    }

    /// Appends `bytes` as [`put_bytes`](WireBuf::put_bytes) does, touching its reference
    /// count only when it is kept by reference (large): a small payload is copied
    /// straight from the caller's buffer.
    pub(crate) fn put_ref(&mut self, bytes: &Bytes) {
        if bytes.len() < SHARE_THRESHOLD {
            self.put_slice(bytes);
        } else {
            self.put_bytes(bytes.clone());
        }
    }

    /// Appends `bytes` by reference whatever its size (bytes already copied for the
    /// wire, which a second copy would only slow down).
    pub(crate) fn put_shared(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        self.flush_tail();
        self.len += bytes.len();
        self.parts.push(bytes);
    }

    /// Makes room for `additional` more bytes of small pieces in one allocation: an
    /// encoder that knows the size of what it writes calls this once, so that the
    /// buffer is neither grown piece by piece nor left with spare room.
    ///
    /// ```
    /// use serpy::protocol::WireBuf;
    /// let mut w = WireBuf::new();
    /// w.reserve(3);
    /// w.put_slice(b"abc");
    /// assert_eq!(w.take_parts(), vec![bytes::Bytes::from_static(b"abc")]);
    /// ```
    pub fn reserve(&mut self, additional: usize) {
        if self.tail.is_empty() && self.tail.capacity() < additional {
            // Exactly this much, not the doubling of a growing buffer.
            self.tail = BytesMut::with_capacity(additional);
        } else {
            self.tail.reserve(additional);
        }
    }

    /// Appends `bytes` by reference, as a piece of its own (a control block, say),
    /// whatever its size.
    ///
    /// ```
    /// use serpy::protocol::WireBuf;
    /// let mut w = WireBuf::new();
    /// w.put_slice(b"ab");
    /// w.put_static(b"\x01SETMODE2\x1f");
    /// assert_eq!(w.len(), 12);
    /// assert_eq!(w.take_parts().len(), 2);
    /// ```
    pub fn put_static(&mut self, bytes: &'static [u8]) {
        self.put_shared(Bytes::from_static(bytes));
    }

    fn flush_tail(&mut self) {
        if self.tail.is_empty() {
            return;
        }
        if self.tail.len() == self.tail.capacity() {
            // Full: hand the whole buffer over, which makes a `Bytes` without the shared
            // header that splitting it would allocate.
            self.parts.push(std::mem::take(&mut self.tail).freeze());
        } else {
            self.parts.push(self.tail.split().freeze());
        }
    }

    /// Total number of bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing was put.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Takes all the pieces out, in order, leaving the buffer empty.
    pub fn take_parts(&mut self) -> Vec<Bytes> {
        self.flush_tail();
        self.len = 0;
        std::mem::take(&mut self.parts)
    }

    /// Empties the buffer, keeping its allocation for small pieces.
    pub fn clear(&mut self) {
        self.parts.clear();
        self.tail.clear();
        self.len = 0;
    }

    /// A contiguous copy of everything (for tests and small messages).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len);
        for p in &self.parts {
            v.extend_from_slice(p);
        }
        v.extend_from_slice(&self.tail);
        v
    }
}

/// Python's `repr()` of a float: the shortest text that reads back to the same number,
/// in fixed notation for decimal exponents from -4 to 15 and in scientific notation
/// (`1e+16`, `1e-05`) otherwise. This is how v1 sends a float.
///
/// ```
/// use serpy::protocol::python_float_repr as r;
/// assert_eq!(r(1.5), "1.5");
/// assert_eq!(r(1e16), "1e+16");
/// assert_eq!(r(1e15), "1000000000000000.0");
/// assert_eq!(r(1e-5), "1e-05");
/// assert_eq!(r(0.0001), "0.0001");
/// assert_eq!(r(-0.0), "-0.0");
/// assert_eq!(r(f64::INFINITY), "inf");
/// assert_eq!(r(f64::NAN), "nan");
/// assert_eq!(r(1.2345678901234568e17), "1.2345678901234568e+17");
/// assert_eq!(r(5e-324), "5e-324");
/// ```
pub fn python_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.into();
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "-1.2345e17", "5e-324", "0e0".
    let sci = format!("{:e}", x);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exp) {
        let n = digits.len() as i32;
        let (int_part, frac_part) = if exp >= 0 {
            if n > exp + 1 {
                let split = (exp + 1) as usize;
                (digits[..split].to_string(), digits[split..].to_string())
            } else {
                let zeros = "0".repeat((exp + 1 - n) as usize);
                (format!("{digits}{zeros}"), String::new())
            }
        } else {
            let zeros = "0".repeat((-exp - 1) as usize);
            ("0".to_string(), format!("{zeros}{digits}"))
        };
        let frac = if frac_part.is_empty() {
            "0".to_string()
        } else {
            frac_part
        };
        format!("{sign}{int_part}.{frac}")
    } else {
        let m = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{m}e{esign}{:02}", exp.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detect_every_prefix_of_the_magic_needs_more() {
        for n in 0..v2::MAGIC.len() {
            assert_eq!(detect(&v2::MAGIC[..n]), Detection::NeedMore, "prefix {n}");
        }
        assert_eq!(detect(&v2::MAGIC), Detection::V2);
        assert_eq!(detect(b"\x01SETMODE1\x1f"), Detection::V1);
        assert_eq!(detect(b"\xde\xca\xfe\xca\xff"), Detection::V1);
    }

    #[test]
    fn mode_round_trips() {
        for n in 0..=5u8 {
            assert_eq!(u8::from(Mode::try_from(n).unwrap()), n);
        }
        assert!(matches!(Mode::try_from(9), Err(Error::InvalidMode(9))));
    }

    #[test]
    fn float_repr_matches_python() {
        let cases = [
            (0.0, "0.0"),
            (1.0, "1.0"),
            (12.35, "12.35"),
            (-1e6, "-1000000.0"),
            (0.1, "0.1"),
            (1e22, "1e+22"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (2.2250738585072014e-308, "2.2250738585072014e-308"),
            (123456789.125, "123456789.125"),
            (0.000123, "0.000123"),
            (9999999999999998.0, "9999999999999998.0"),
        ];
        for (x, want) in cases {
            assert_eq!(python_float_repr(x), want);
        }
    }

    #[test]
    fn wirebuf_shares_large_payloads() {
        let big = Bytes::from(vec![1u8; SHARE_THRESHOLD]);
        let mut w = WireBuf::new();
        w.put_slice(b"h");
        w.put_bytes(big.clone());
        let parts = w.take_parts();
        assert_eq!(parts.len(), 2);
        assert_eq!(
            parts[1].as_ptr(),
            big.as_ptr(),
            "payload must not be copied"
        );
        assert!(w.is_empty());
    }

    #[test]
    fn put_ref_copies_small_payloads_and_shares_large_ones_like_put_bytes() {
        let small = Bytes::from(vec![2u8; SHARE_THRESHOLD - 1]);
        let big = Bytes::from(vec![3u8; SHARE_THRESHOLD]);
        let mut w = WireBuf::new();
        w.put_slice(b"h");
        w.put_ref(&small);
        w.put_ref(&big);
        assert_eq!(w.len(), 1 + small.len() + big.len());
        let parts = w.take_parts();
        assert_eq!(parts.len(), 2, "the small payload joins the header's part");
        assert_eq!(parts[0].len(), 1 + small.len());
        assert_eq!(&parts[0][1..], &small[..]);
        assert_ne!(parts[0].as_ptr().wrapping_add(1), small.as_ptr());
        assert_eq!(
            parts[1].as_ptr(),
            big.as_ptr(),
            "the large one by reference"
        );
    }
}
