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
    } else if contains_byte(SEP, payload) {
        Some("contains 0x1F (the block separator)")
    } else if acked && contains_byte(EOT, payload) {
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

/// The smallest payload a send leaves to the writer to encode as base85 (see
/// [`encodes_late`]): below it the block is a small copy the caller makes at once.
pub(crate) const LATE_BASE85_FROM: usize = SHARE_THRESHOLD;
/// The largest payload a send leaves to the writer to encode as base85 (see
/// [`encodes_late`]), which bounds the writer's reused buffer.
pub(crate) const LATE_BASE85_UNTIL: usize = 256 * 1024;

/// True when a bytes message of `len` bytes, which travels as base85, is encoded by the
/// connection's writer just before it writes the block ([`base85_block`]), into a
/// buffer it reuses, rather than by the sender: the writer's core then copies into the
/// socket what it has just written, from its cache, and no fresh buffer is filled per
/// message. What the sender must know at once (the block's length, the errors) does
/// not need the encoding: [`late_base85`], [`base85_block_len`].
pub(crate) fn encodes_late(len: usize) -> bool {
    (LATE_BASE85_FROM..=LATE_BASE85_UNTIL).contains(&len)
}

/// What [`Encoder::encode`] decides for a bytes message sent in `mode`, without
/// encoding it: the mode of its block (2, or 3 when acknowledged: bytes always travel
/// as base85) and the payload, or the error `encode` returns
/// ([`Error::EmptyMessage`], [`Error::MessageTooLarge`]). `None` for the other
/// messages (they go through `encode`).
pub(crate) fn late_base85(
    message: &Message,
    mode: Mode,
    max_message_size: usize,
) -> Option<Result<(Mode, Bytes)>> {
    let Message::Bytes(body) = message else {
        return None;
    };
    let to = Mode::Base85.with_ack(mode.is_acked());
    if !mode.is_base85() {
        log::debug!("bytes travel as base85: mode {mode} was asked for, sending in mode {to}");
    }
    Some(if body.is_empty() && !to.is_acked() {
        Err(Error::EmptyMessage { mode })
    } else if body.len() > max_message_size {
        Err(Error::MessageTooLarge {
            size: body.len() as u64,
            max: max_message_size,
        })
    } else {
        Ok((to, body.clone()))
    })
}

/// The length of the data block of `len` bytes in the base85 mode `mode` (2 or 3): its
/// base85 (5 characters per 4 bytes, n + 1 for a last group of n < 4) and its end
/// (`0x1F`, or `0x04 0x1F` when acknowledged). No SETMODE.
pub(crate) fn base85_block_len(len: usize, mode: Mode) -> usize {
    base85_encoded_len(len) + if mode.is_acked() { 2 } else { 1 }
}

/// Writes the data block of `data` in the base85 mode `mode` (what [`Encoder::encode`]
/// writes after any SETMODE) into `out`, which must be exactly
/// [`base85_block_len`]`(data.len(), mode)` long.
pub(crate) fn base85_block(data: &[u8], mode: Mode, out: &mut [u8]) {
    let text = base85_encoded_len(data.len());
    let (b85, end) = out.split_at_mut(text);
    encode_base85_to_slice(data, b85);
    if mode.is_acked() {
        end.copy_from_slice(&[EOT, SEP]);
    } else {
        end.copy_from_slice(&[SEP]);
    }
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

mod base85;

use base85::*;
pub use base85::{
    base85_decoded_len, base85_encoded_len, decode_base85, encode_base85, Base85Error,
};

mod decoder;

pub(crate) use decoder::contains_byte;
pub use decoder::Decoder;
#[cfg(test)]
use decoder::*;

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
    use super::base85::tests::{b85, unb85};
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
