//! What travels: [`Message`], its text type [`Text`], and the v1 [`TextEncoding`].

use std::fmt;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::pickle::{self, ByteOrder, Element, Value};

/// One message, as sent and as received.
///
/// - v2 (serpy2) carries all four value types as they are: `Int`, `Float`, `Text`, `Bytes`.
/// - v1 (serpy) carries bytes: text and numbers travel as their text and arrive as
///   `Bytes`; modes 4 and 5 (Python pickle) arrive as `Pickle` with the raw pickle bytes.
///
/// Payloads are reference counted ([`bytes::Bytes`]): cloning a message to send it to many
/// peers copies no payload.
///
/// A pickle is read with [`to_value`](Message::to_value) (any message, into a
/// [`pickle::Value`]) or `deserialize` (into a serde type, feature `serde`); one is
/// made with [`Message::pickle`] or `Message::from_serialize`. Received bytes can be
/// viewed as numbers with [`as_slice_of`](Message::as_slice_of) (no copy) and
/// [`to_vec_of`](Message::to_vec_of).
///
/// ```
/// use serpy::Message;
///
/// let m: Message = "hello".into();
/// assert_eq!(m.as_str(), Some("hello"));
/// let n: Message = 42.into();
/// assert_eq!(n.as_int(), Some(42));
/// let b: Message = vec![0u8, 1, 2].into();
/// assert_eq!(b.as_bytes(), Some(&[0u8, 1, 2][..]));
/// // v1 delivers numbers as text; as_int() reads them.
/// assert_eq!(Message::Bytes("42".into()).as_int(), Some(42));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    /// A 64-bit signed integer (v2 type `0x01`).
    Int(i64),
    /// A 64-bit float (v2 type `0x11`, sent as hexadecimal text).
    Float(f64),
    /// UTF-8 text (v2 type `0x21`).
    Text(Text),
    /// Raw bytes (v2 type `0x81`; what v1 delivers in modes 0 to 3).
    Bytes(Bytes),
    /// The raw bytes of a Python pickle (v1 modes 4 and 5).
    Pickle(Bytes),
}

impl Message {
    /// The text of a `Text` message, or of a `Bytes` message that is valid UTF-8
    /// (v1 delivers text as bytes).
    ///
    /// ```
    /// use serpy::Message;
    /// assert_eq!(Message::from("µ").as_str(), Some("µ"));
    /// assert_eq!(Message::from(&b"\xff"[..]).as_str(), None);
    /// assert_eq!(Message::from(1).as_str(), None);
    /// ```
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Message::Text(t) => Some(t.as_str()),
            Message::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// The bytes of a `Text`, `Bytes` or `Pickle` message.
    ///
    /// ```
    /// use serpy::Message;
    /// assert_eq!(Message::from("ab").as_bytes(), Some(&b"ab"[..]));
    /// assert_eq!(Message::from(1.5).as_bytes(), None);
    /// ```
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Message::Text(t) => Some(t.as_bytes()),
            Message::Bytes(b) | Message::Pickle(b) => Some(b),
            _ => None,
        }
    }

    /// The payload of a `Text`, `Bytes` or `Pickle` message without a copy; numbers give their
    /// text (as v1 would send them).
    ///
    /// ```
    /// use serpy::Message;
    /// assert_eq!(&Message::from("ab").into_bytes()[..], b"ab");
    /// assert_eq!(&Message::from(7).into_bytes()[..], b"7");
    /// ```
    pub fn into_bytes(self) -> Bytes {
        match self {
            Message::Text(t) => t.into_bytes(),
            Message::Bytes(b) | Message::Pickle(b) => b,
            Message::Int(i) => Bytes::from(i.to_string()),
            Message::Float(f) => Bytes::from(crate::protocol::python_float_repr(f)),
        }
    }

    /// The integer of an `Int` message, or the integer written as text in a `Text` or
    /// `Bytes` message (how v1 carries numbers).
    ///
    /// ```
    /// use serpy::Message;
    /// assert_eq!(Message::from(-3).as_int(), Some(-3));
    /// assert_eq!(Message::from(" 12 ").as_int(), Some(12));
    /// assert_eq!(Message::from(1.5).as_int(), None);
    /// ```
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Message::Int(i) => Some(*i),
            Message::Text(_) | Message::Bytes(_) => self.as_str()?.trim().parse().ok(),
            _ => None,
        }
    }

    /// The number of a `Float` or `Int` message, or a number written as text in a `Text`
    /// or `Bytes` message (how v1 carries numbers; `inf` and `nan` are understood).
    ///
    /// ```
    /// use serpy::Message;
    /// assert_eq!(Message::from(1.5).as_float(), Some(1.5));
    /// assert_eq!(Message::from(2).as_float(), Some(2.0));
    /// assert_eq!(Message::from("1e-05").as_float(), Some(1e-5));
    /// ```
    pub fn as_float(&self) -> Option<f64> {
        match self {
            Message::Float(f) => Some(*f),
            Message::Int(i) => Some(*i as f64),
            Message::Text(_) | Message::Bytes(_) => self.as_str()?.trim().parse().ok(),
            Message::Pickle(_) => None,
        }
    }

    /// The message as a [`Value`]: a `Pickle` is decoded (safely: nothing is executed, see
    /// [`pickle`]); an `Int`, `Float`, `Text` or `Bytes` gives the same value.
    ///
    /// Strings, bytes and numpy array data in the value share the message's bytes.
    ///
    /// # Errors
    /// [`Error::Pickle`] when the pickle cannot be read (damaged, or naming a class that is
    /// never imported: the error says which).
    ///
    /// ```
    /// use serpy::{pickle::Value, Message};
    ///
    /// // What a Python peer sends for {'exposure': 10, 'gain': 2.5} in mode 4.
    /// let msg = Message::Pickle(bytes::Bytes::from_static(b"\x80\x04\x95\x22\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x08exposure\x94K\n\x8c\x04gain\x94G@\x04\x00\x00\x00\x00\x00\x00u."));
    /// let v = msg.to_value()?;
    /// assert_eq!(v.get("exposure").and_then(Value::as_i64), Some(10));
    /// assert_eq!(Message::from(3).to_value()?, Value::Int(3));
    /// # Ok::<(), serpy::Error>(())
    /// ```
    pub fn to_value(&self) -> Result<Value> {
        Ok(match self {
            Message::Pickle(b) => pickle::decode_bytes(b)?,
            Message::Int(i) => Value::Int(*i),
            Message::Float(f) => Value::Float(*f),
            Message::Text(t) => Value::Str(t.clone()),
            Message::Bytes(b) => Value::Bytes(b.clone()),
        })
    }

    /// A `Pickle` message of `value`, which a Python peer receives (in mode 4 or 5) as the
    /// native object: a dict, a list, a numpy array... (see [`pickle::encode`]).
    ///
    /// # Errors
    /// [`Error::Pickle`] for a str, bytes or array data of 4 GiB or more.
    ///
    /// ```
    /// use serpy::{pickle::Value, Message};
    /// let msg = Message::pickle(&Value::dict([("exposure", 10)]))?;
    /// assert_eq!(msg.kind(), "pickle");
    /// assert_eq!(msg.to_value()?.to_string(), "{'exposure': 10}");
    /// // conn.send_data(msg, Mode::Pickle)?;
    /// # Ok::<(), serpy::Error>(())
    /// ```
    pub fn pickle(value: &Value) -> Result<Message> {
        Ok(Message::Pickle(pickle::encode(value)?))
    }

    /// A `Pickle` message of any `serde::Serialize` type (feature `serde`): structs and
    /// maps arrive in Python as dicts, sequences as lists (see [`pickle::to_pickle`]).
    ///
    /// # Errors
    /// [`Error::Pickle`] when the type cannot be serialized.
    ///
    /// ```
    /// #[derive(serde::Serialize)]
    /// struct Settings { exposure: u32, gain: f64 }
    ///
    /// let msg = serpy::Message::from_serialize(&Settings { exposure: 10, gain: 2.5 })?;
    /// assert_eq!(msg.to_value()?.to_string(), "{'exposure': 10, 'gain': 2.5}");
    /// # Ok::<(), serpy::Error>(())
    /// ```
    #[cfg(feature = "serde")]
    pub fn from_serialize<T: serde::Serialize + ?Sized>(value: &T) -> Result<Message> {
        Ok(Message::Pickle(pickle::to_pickle(value)?))
    }

    /// The message read into any `serde::Deserialize` type (feature `serde`): a pickle is
    /// decoded first ([`to_value`](Message::to_value)), other messages are read as their
    /// value (an `Int` into an integer type, a `Text` into a `String`, ...).
    ///
    /// # Errors
    /// [`Error::Pickle`] when the pickle cannot be read or does not fit `T`.
    ///
    /// ```
    /// #[derive(serde::Deserialize, Debug, PartialEq)]
    /// struct Settings { exposure: u32, gain: f64 }
    ///
    /// let msg = serpy::Message::Pickle(bytes::Bytes::from_static(b"\x80\x04\x95\x22\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x08exposure\x94K\n\x8c\x04gain\x94G@\x04\x00\x00\x00\x00\x00\x00u."));
    /// let s: Settings = msg.deserialize()?;
    /// assert_eq!(s, Settings { exposure: 10, gain: 2.5 });
    /// # Ok::<(), serpy::Error>(())
    /// ```
    #[cfg(feature = "serde")]
    pub fn deserialize<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        Ok(pickle::from_value(&self.to_value()?)?)
    }

    /// The payload bytes of a `Bytes` (or `Text`) message viewed as numbers, without a
    /// copy, in this machine's byte order: an image of u16 pixels as `&[u16]`.
    ///
    /// # Errors
    /// [`Error::Pickle`] ([`pickle::Error::Cast`]) when the length is not a multiple of the
    /// item size or the bytes are not aligned in memory for `T` (received data usually is,
    /// but nothing guarantees it): then copy with [`to_vec_of`](Message::to_vec_of).
    /// For a numpy array in a pickle, use [`pickle::Array::as_slice`].
    ///
    /// ```
    /// use serpy::Message;
    /// let pixels: Vec<u16> = vec![1, 2, 3];
    /// let msg = Message::from(bytes::Bytes::from(pixels.iter().flat_map(|p| p.to_ne_bytes()).collect::<Vec<u8>>()));
    /// match msg.as_slice_of::<u16>() {
    ///     Ok(view) => assert_eq!(view, &[1, 2, 3]),                        // no copy
    ///     Err(_) => assert_eq!(msg.to_vec_of::<u16>(serpy::pickle::ByteOrder::NATIVE)?, vec![1, 2, 3]),
    /// }
    /// assert!(Message::from(&[0u8; 3]).as_slice_of::<u16>().is_err());  // 3 bytes are not u16s
    /// # Ok::<(), serpy::Error>(())
    /// ```
    pub fn as_slice_of<T: Element>(&self) -> Result<&[T]> {
        let b = self.as_bytes().ok_or_else(|| wrong_kind(self, "bytes"))?;
        Ok(crate::pickle::numpy_cast_slice(b)?)
    }

    /// The payload bytes of a `Bytes` (or `Text`) message copied into numbers that were
    /// sent in byte order `order` (any alignment).
    ///
    /// # Errors
    /// [`Error::Pickle`] when the length is not a multiple of the item size.
    ///
    /// ```
    /// use serpy::{pickle::ByteOrder, Message};
    /// let msg = Message::from(&[0u8, 1, 0, 2]);
    /// assert_eq!(msg.to_vec_of::<u16>(ByteOrder::Big)?, vec![1, 2]);
    /// assert_eq!(msg.to_vec_of::<u16>(ByteOrder::Little)?, vec![256, 512]);
    /// # Ok::<(), serpy::Error>(())
    /// ```
    pub fn to_vec_of<T: Element>(&self, order: ByteOrder) -> Result<Vec<T>> {
        let b = self.as_bytes().ok_or_else(|| wrong_kind(self, "bytes"))?;
        Ok(crate::pickle::numpy_to_vec_of(b, order)?)
    }

    /// The name of the message's kind, for logs and errors.
    ///
    /// ```
    /// assert_eq!(serpy::Message::from(1).kind(), "int");
    /// ```
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Int(_) => "int",
            Message::Float(_) => "float",
            Message::Text(_) => "text",
            Message::Bytes(_) => "bytes",
            Message::Pickle(_) => "pickle",
        }
    }

    /// The payload size in bytes: 8 for numbers, the byte length otherwise.
    ///
    /// ```
    /// assert_eq!(serpy::Message::from("abc").len(), 3);
    /// ```
    pub fn len(&self) -> usize {
        match self {
            Message::Int(_) | Message::Float(_) => 8,
            Message::Text(t) => t.len(),
            Message::Bytes(b) | Message::Pickle(b) => b.len(),
        }
    }

    /// True for an empty text, bytes or pickle payload.
    ///
    /// ```
    /// assert!(serpy::Message::from("").is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        match self {
            Message::Int(_) | Message::Float(_) => false,
            _ => self.len() == 0,
        }
    }
}

impl fmt::Display for Message {
    /// Numbers as numbers, text as text, bytes as text where they are UTF-8 and as
    /// escaped bytes otherwise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Message::Int(i) => write!(f, "{i}"),
            Message::Float(x) => write!(f, "{}", crate::protocol::python_float_repr(*x)),
            Message::Text(t) => f.write_str(t.as_str()),
            Message::Bytes(b) => match std::str::from_utf8(b) {
                Ok(s) => f.write_str(s),
                Err(_) => write!(f, "{}", b.escape_ascii()),
            },
            Message::Pickle(b) => write!(f, "<pickle of {} bytes>", b.len()),
        }
    }
}

/// UTF-8 text whose bytes are shared, not copied, when the message is cloned.
///
/// ```
/// use serpy::Text;
/// let t = Text::from("µ");
/// assert_eq!(t.as_str(), "µ");
/// assert_eq!(t.len(), 2);
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Text(Bytes);

impl Text {
    /// Checks that `bytes` are UTF-8 and wraps them without a copy.
    ///
    /// ```
    /// use serpy::Text;
    /// assert!(Text::from_utf8(bytes::Bytes::from_static(b"ok")).is_ok());
    /// assert!(Text::from_utf8(bytes::Bytes::from_static(b"\xff")).is_err());
    /// ```
    pub fn from_utf8(bytes: Bytes) -> std::result::Result<Self, std::str::Utf8Error> {
        std::str::from_utf8(&bytes)?;
        Ok(Text(bytes))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // The bytes were checked when the Text was made; this cannot fail.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The UTF-8 bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The UTF-8 bytes, without a copy.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for the empty text.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Text(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Text(Bytes::from(s))
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

macro_rules! from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Message {
            fn from(v: $t) -> Self {
                Message::Int(i64::from(v))
            }
        }
    )*};
}
from_int!(i8, i16, i32, i64, u8, u16, u32);

impl From<bool> for Message {
    /// `Int(1)` or `Int(0)`: v2 sends an int frame (as serpy2 does for a Python bool),
    /// v1 the text `1` or `0`, a pickle mode `1` or `0`.
    fn from(v: bool) -> Self {
        Message::Int(i64::from(v))
    }
}

fn out_of_i64(v: impl fmt::Display) -> Error {
    Error::Unsupported {
        what: format!(
            "{v} is beyond i64, which an Int message (a v2 int frame) carries; send it as text (Message::from(n.to_string())), or pickled (Message::pickle(&Value::from(n)), a Python int)"
        ),
    }
}

impl TryFrom<u64> for Message {
    type Error = Error;
    /// An `Int`, for values up to `i64::MAX`; beyond, [`Error::Unsupported`] says how to
    /// send it (as text in v1, or pickled).
    ///
    /// ```
    /// use serpy::Message;
    /// assert_eq!(Message::try_from(7u64).unwrap(), Message::Int(7));
    /// assert!(Message::try_from(u64::MAX).is_err());
    /// ```
    fn try_from(v: u64) -> Result<Self> {
        i64::try_from(v)
            .map(Message::Int)
            .map_err(|_| out_of_i64(v))
    }
}

impl TryFrom<usize> for Message {
    type Error = Error;
    /// An `Int`, for values up to `i64::MAX` (see `TryFrom<u64>`).
    fn try_from(v: usize) -> Result<Self> {
        i64::try_from(v)
            .map(Message::Int)
            .map_err(|_| out_of_i64(v))
    }
}

impl TryFrom<&Value> for Message {
    type Error = Error;
    /// See [`Message::pickle`].
    fn try_from(v: &Value) -> Result<Self> {
        Message::pickle(v)
    }
}

impl From<f64> for Message {
    fn from(v: f64) -> Self {
        Message::Float(v)
    }
}

impl From<f32> for Message {
    fn from(v: f32) -> Self {
        Message::Float(f64::from(v))
    }
}

impl From<&str> for Message {
    fn from(v: &str) -> Self {
        Message::Text(Text::from(v))
    }
}

impl From<String> for Message {
    fn from(v: String) -> Self {
        Message::Text(Text::from(v))
    }
}

impl From<&String> for Message {
    fn from(v: &String) -> Self {
        Message::Text(Text::from(v.as_str()))
    }
}

impl From<Text> for Message {
    fn from(v: Text) -> Self {
        Message::Text(v)
    }
}

impl From<&[u8]> for Message {
    fn from(v: &[u8]) -> Self {
        Message::Bytes(Bytes::copy_from_slice(v))
    }
}

impl<const N: usize> From<&[u8; N]> for Message {
    fn from(v: &[u8; N]) -> Self {
        Message::Bytes(Bytes::copy_from_slice(v))
    }
}

impl From<Vec<u8>> for Message {
    fn from(v: Vec<u8>) -> Self {
        Message::Bytes(Bytes::from(v))
    }
}

impl From<Bytes> for Message {
    fn from(v: Bytes) -> Self {
        Message::Bytes(v)
    }
}

impl From<&Message> for Message {
    fn from(v: &Message) -> Self {
        v.clone()
    }
}

fn wrong_kind(msg: &Message, wanted: &str) -> Error {
    Error::Unsupported {
        what: format!(
            "a {} message cannot be read as {wanted}; look at Message::kind() before converting",
            msg.kind()
        ),
    }
}

/// The value of a `Pickle` message, for the number conversions.
fn pickled(m: &Message) -> Option<Value> {
    match m {
        Message::Pickle(_) => m.to_value().ok(),
        _ => None,
    }
}

impl TryFrom<Message> for i64 {
    type Error = Error;
    /// See [`Message::as_int`]; a pickled Python `int` is read too.
    fn try_from(m: Message) -> Result<i64> {
        m.as_int()
            .or_else(|| pickled(&m)?.as_i64())
            .ok_or_else(|| wrong_kind(&m, "an integer"))
    }
}

impl TryFrom<Message> for f64 {
    type Error = Error;
    /// See [`Message::as_float`]; a pickled Python `float` or `int` is read too.
    fn try_from(m: Message) -> Result<f64> {
        m.as_float()
            .or_else(|| pickled(&m)?.as_f64())
            .ok_or_else(|| wrong_kind(&m, "a float"))
    }
}

impl TryFrom<Message> for u64 {
    type Error = Error;
    /// A non-negative `Int`, an integer written as text (up to `u64::MAX`, which v1 text
    /// can carry), or a pickled Python `int` from 0 to `u64::MAX`.
    ///
    /// ```
    /// use serpy::Message;
    /// assert_eq!(u64::try_from(Message::from("18446744073709551615")).unwrap(), u64::MAX);
    /// assert_eq!(u64::try_from(Message::from(5)).unwrap(), 5);
    /// assert!(u64::try_from(Message::from(-5)).is_err());
    /// ```
    fn try_from(m: Message) -> Result<u64> {
        let v = match &m {
            Message::Int(i) => u64::try_from(*i).ok(),
            Message::Text(_) | Message::Bytes(_) => m.as_str().and_then(|s| s.trim().parse().ok()),
            Message::Pickle(_) => pickled(&m).and_then(|v| v.as_u64()),
            Message::Float(_) => None,
        };
        v.ok_or_else(|| wrong_kind(&m, "an unsigned 64-bit integer"))
    }
}

macro_rules! try_from_unsigned {
    ($($t:ty),*) => {$(
        impl TryFrom<Message> for $t {
            type Error = Error;
            /// As `TryFrom<Message> for u64`, within the range of the type.
            fn try_from(m: Message) -> Result<$t> {
                let what = wrong_kind(&m, concat!("a ", stringify!($t)));
                u64::try_from(m).ok().and_then(|v| <$t>::try_from(v).ok()).ok_or(what)
            }
        }
    )*};
}
try_from_unsigned!(u32, usize);

impl TryFrom<Message> for bool {
    type Error = Error;
    /// `Int` 0 or 1, the text `True`/`False`/`true`/`false`/`1`/`0`, or a pickled `bool`
    /// (or int 0 or 1).
    ///
    /// ```
    /// use serpy::Message;
    /// assert!(bool::try_from(Message::from(true)).unwrap());
    /// assert!(!bool::try_from(Message::from("False")).unwrap());
    /// assert!(bool::try_from(Message::from(2)).is_err());
    /// ```
    fn try_from(m: Message) -> Result<bool> {
        let v = match &m {
            Message::Int(0) => Some(false),
            Message::Int(1) => Some(true),
            Message::Text(_) | Message::Bytes(_) => match m.as_str().map(str::trim) {
                Some("True" | "true" | "1") => Some(true),
                Some("False" | "false" | "0") => Some(false),
                _ => None,
            },
            Message::Pickle(_) => match pickled(&m) {
                Some(Value::Bool(b)) => Some(b),
                Some(Value::Int(0)) => Some(false),
                Some(Value::Int(1)) => Some(true),
                _ => None,
            },
            _ => None,
        };
        v.ok_or_else(|| wrong_kind(&m, "a bool"))
    }
}

impl TryFrom<Message> for f32 {
    type Error = Error;
    /// As `TryFrom<Message> for f64`, rounded to the nearest f32.
    fn try_from(m: Message) -> Result<f32> {
        f64::try_from(m).map(|f| f as f32)
    }
}

impl TryFrom<Message> for Value {
    type Error = Error;
    /// See [`Message::to_value`].
    fn try_from(m: Message) -> Result<Value> {
        m.to_value()
    }
}

impl TryFrom<Message> for String {
    type Error = Error;
    /// See [`Message::as_str`].
    fn try_from(m: Message) -> Result<String> {
        m.as_str()
            .map(str::to_owned)
            .ok_or_else(|| wrong_kind(&m, "UTF-8 text"))
    }
}

impl TryFrom<Message> for Vec<u8> {
    type Error = Error;
    /// The payload bytes of a `Text`, `Bytes` or `Pickle` message.
    fn try_from(m: Message) -> Result<Vec<u8>> {
        match m {
            Message::Text(_) | Message::Bytes(_) | Message::Pickle(_) => Ok(m.into_bytes().into()),
            _ => Err(wrong_kind(&m, "bytes")),
        }
    }
}

impl TryFrom<Message> for Bytes {
    type Error = Error;
    /// The payload bytes of a `Text`, `Bytes` or `Pickle` message, without a copy.
    fn try_from(m: Message) -> Result<Bytes> {
        match m {
            Message::Text(_) | Message::Bytes(_) | Message::Pickle(_) => Ok(m.into_bytes()),
            _ => Err(wrong_kind(&m, "bytes")),
        }
    }
}

/// How v1 turns text into bytes (v2 always uses UTF-8).
///
/// The original Python library defaults to ASCII; this crate defaults to UTF-8, which is
/// the same for ASCII text and carries every other text too. A Python peer receives v1
/// data as bytes whatever its own encoding is.
///
/// ```
/// use serpy::TextEncoding;
/// assert_eq!(TextEncoding::default(), TextEncoding::Utf8);
/// assert_eq!(TextEncoding::Ascii.encode("abc").unwrap(), b"abc");
/// assert!(TextEncoding::Ascii.encode("µ").is_err());
/// assert_eq!(TextEncoding::Latin1.encode("µ").unwrap(), b"\xb5");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum TextEncoding {
    /// 7-bit ASCII; other characters are refused with [`Error::Encoding`].
    Ascii,
    /// UTF-8 (the default).
    #[default]
    Utf8,
    /// ISO 8859-1: characters U+0000 to U+00FF, one byte each; others are refused.
    Latin1,
}

impl TextEncoding {
    /// Encodes `text`, or says which character cannot be encoded.
    pub fn encode(self, text: &str) -> Result<Vec<u8>> {
        match self {
            TextEncoding::Utf8 => Ok(text.as_bytes().to_vec()),
            TextEncoding::Ascii => match text.char_indices().find(|(_, c)| !c.is_ascii()) {
                None => Ok(text.as_bytes().to_vec()),
                Some((i, c)) => Err(Error::Encoding {
                    encoding: self,
                    detail: format!("{c:?} at byte {i} is not ASCII"),
                }),
            },
            TextEncoding::Latin1 => text
                .char_indices()
                .map(|(i, c)| {
                    u8::try_from(u32::from(c)).map_err(|_| Error::Encoding {
                        encoding: self,
                        detail: format!("{c:?} at byte {i} is not in Latin-1"),
                    })
                })
                .collect(),
        }
    }

    /// Decodes bytes received as text in this encoding (ASCII and UTF-8 must be valid;
    /// Latin-1 always decodes).
    ///
    /// ```
    /// use serpy::TextEncoding;
    /// assert_eq!(TextEncoding::Latin1.decode(b"\xb5").unwrap(), "µ");
    /// assert!(TextEncoding::Ascii.decode(b"\xb5").is_err());
    /// ```
    pub fn decode(self, bytes: &[u8]) -> Result<String> {
        match self {
            TextEncoding::Latin1 => Ok(bytes.iter().map(|&b| char::from(b)).collect()),
            TextEncoding::Ascii if !bytes.is_ascii() => Err(Error::Encoding {
                encoding: self,
                detail: "the bytes are not ASCII".into(),
            }),
            _ => String::from_utf8(bytes.to_vec()).map_err(|e| Error::Encoding {
                encoding: self,
                detail: e.to_string(),
            }),
        }
    }
}

impl fmt::Display for TextEncoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TextEncoding::Ascii => "ascii",
            TextEncoding::Utf8 => "utf-8",
            TextEncoding::Latin1 => "latin-1",
        })
    }
}
