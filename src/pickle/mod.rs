//! Python pickles, read safely and written so that Python unpickles native objects.
//!
//! A Python serpy peer sends modes 4 and 5 as pickles; they arrive as
//! [`Message::Pickle`](crate::Message::Pickle). [`Message::to_value`](crate::Message::to_value)
//! (or [`decode`]) reads one into a [`Value`]; [`Message::pickle`](crate::Message::pickle)
//! (or [`encode`]) writes a [`Value`] that Python unpickles into `int`, `str`, `dict`, a
//! numpy array, and so on. With the `serde` feature (on by default) any
//! `serde::Deserialize` type can be read from a pickle and any `serde::Serialize` type
//! sent as one.
//!
//! ```
//! use serpy::pickle::{self, Value};
//!
//! // pickle.dumps({'exposure': 10, 'gain': 2.5}, protocol=4)
//! let p = b"\x80\x04\x95\x22\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x08exposure\x94K\n\x8c\x04gain\x94G@\x04\x00\x00\x00\x00\x00\x00u.";
//! let v = pickle::decode(p)?;
//! assert_eq!(v.get("exposure").and_then(Value::as_i64), Some(10));
//! assert_eq!(v.get("gain").and_then(Value::as_f64), Some(2.5));
//! assert_eq!(v.to_string(), "{'exposure': 10, 'gain': 2.5}");
//!
//! // And back: Python's pickle.loads() gives the same dict.
//! let bytes = pickle::encode(&v)?;
//! assert_eq!(pickle::decode(&bytes)?, v);
//! # Ok::<(), serpy::pickle::Error>(())
//! ```
//!
//! # Safety: nothing is executed
//!
//! Python's own `pickle.loads` imports modules and calls whatever callables a pickle
//! names, so unpickling data from a peer runs the peer's code. This decoder never imports
//! or calls anything: it knows the few globals that the standard types and numpy arrays
//! are pickled with (below) and rebuilds those objects itself. Any other global (a
//! class of the peer's program, `os.system`, ...) is refused with
//! [`Error::UnknownGlobal`], which names it. A typed error was chosen over an opaque
//! placeholder: a placeholder would hand back a value with a hole where data was, which
//! a program could mistake for the data; the error says exactly what to change on the
//! Python side (send a dict, a list or an array instead of an object).
//!
//! Known globals (under both Python 3 and Python 2 module names): `builtins.set`,
//! `frozenset`, `bytearray`, `bytes`, `complex`, `list`, `tuple`, `dict`, `int`, `float`,
//! `bool`, `str`; `_codecs.encode` (how protocols 0 to 2 carry bytes);
//! `numpy.ndarray`, `numpy.dtype`, and `_reconstruct`, `scalar`, `_frombuffer` from
//! `numpy.core` (numpy 1) and `numpy._core` (numpy 2).
//!
//! # Bounded memory and depth
//!
//! - No allocation is sized by a length that the pickle claims: a length is first checked
//!   against the bytes that are actually there; strings and bytes are slices of the
//!   received payload (no copy, see [`bytes::Bytes`]).
//! - The value built is at most [`DecodeOptions::max_depth`] containers deep (default
//!   [`DEFAULT_MAX_DEPTH`]) and holds at most [`DecodeOptions::max_values`] values, which
//!   bounds what memo references (one object referred to many times) can expand to.
//! - Errors are typed ([`Error`]) and give the byte offset in the pickle; no input makes
//!   the decoder panic (it is fuzzed: `fuzz/fuzz_targets/pickle_decoder.rs`).
//!
//! # Python object <-> Rust value
//!
//! | Python | [`Value`] | Python gets back |
//! |---|---|---|
//! | `None` | `None` | `None` |
//! | `bool` | `Bool` | `bool` |
//! | `int` (fits i64) | `Int(i64)` | `int` |
//! | `int` (beyond i64) | `BigInt(`[`BigInt`]`)` | `int` |
//! | `float` | `Float(f64)` | `float` |
//! | `complex` | `Complex { re, im }` | `complex` |
//! | `str` | `Str(`[`Text`](crate::Text)`)` | `str` |
//! | `bytes` | `Bytes(`[`Bytes`]`)` | `bytes` |
//! | `bytearray` | `ByteArray(Bytes)` | `bytearray` |
//! | `list` / `tuple` | `List(Vec)` / `Tuple(Vec)` | `list` / `tuple` |
//! | `dict` | `Dict(Vec<(Value, Value)>)`, in insertion order | `dict` |
//! | `set` / `frozenset` | `Set(Vec)` / `FrozenSet(Vec)` | `set` / `frozenset` |
//! | `numpy.ndarray` (bool, int, uint, float, complex dtypes) | `Array(`[`Array`]`)` | `numpy.ndarray` |
//! | numpy scalar (`np.float64(1.5)`, `np.int32(3)`, ...) | `Float`, `Int`, `Bool`, `Complex` | the Python scalar |
//!
//! # Which parts are hand-written, and why
//!
//! The `serde-pickle` crate reads protocols 0 to 5 and writes protocols 2 and 3 for the
//! serde data model. Its writer does that well: with the `serde` feature (on by default)
//! `to_pickle` and `Message::from_serialize` use it.
//! Its reader is not used for what a peer sends, because it reads no numpy arrays (an
//! array comes out as its raw state tuple, without its dtype) nor protocol 5 buffers,
//! turns `bytearray` into `bytes`, copies every string, and bounds neither nesting depth
//! (a pickle of 400 kB nesting lists 200 000 deep overflows its stack and aborts the
//! process) nor memo expansion. This decoder is hand-written for those reasons; so is the
//! writer of [`Value`]s (numpy arrays, `bytearray`, dicts in insertion order), and the
//! serde `Deserializer` over [`Value`] (`from_value`), because serde-pickle's refuses
//! integers beyond i64 (a `u64` above `i64::MAX`).
//!
//! # numpy specifics
//!
//! - Arrays of bool, int, uint, float (16, 32, 64 bits) and complex dtypes in either byte
//!   order and C or Fortran order are read; structured, string, object and datetime
//!   dtypes, and subclasses such as `numpy.matrix`, are refused with a typed error.
//! - Arrays are written as numpy writes them for protocols 0 to 4
//!   (`numpy.core.multiarray._reconstruct`, readable by numpy 1 and 2). When numpy
//!   unpickles that form it gives a big-endian array back in native byte order, with the
//!   same values, as it does for its own pickles.
//! - Protocol 5 out-of-band buffers cannot travel in a serpy message (one payload, no
//!   buffers); they are refused with [`Error::Unsupported`]. In-band ones (what
//!   `pickle.dumps(a, protocol=5)` writes) are read without a copy.

mod decode;
mod encode;
mod numpy;
#[cfg(feature = "serde")]
mod serde;
mod value;

#[cfg(feature = "serde")]
pub use self::serde::{from_value, to_pickle, to_value};
pub use bytes::Bytes;
pub use decode::{decode, decode_bytes, decode_with, DecodeOptions, DEFAULT_MAX_DEPTH};
pub use encode::{encode, message_to_pickle};
pub(crate) use numpy::{cast_slice as numpy_cast_slice, to_vec_of as numpy_to_vec_of};
pub use numpy::{Array, ByteOrder, DType, Element, Kind, MAX_DIMS};
pub use value::{BigInt, Value};

/// Why a pickle could not be read or written, or a value not converted.
///
/// Decoding errors carry `at`, the byte offset in the pickle of the opcode that failed.
///
/// ```
/// use serpy::pickle::{decode, Error};
///
/// // pickle.dumps(os.system) names a global that is never imported here.
/// let e = decode(b"\x80\x04\x95\x14\x00\x00\x00\x00\x00\x00\x00\x8c\x05posix\x94\x8c\x06system\x94\x93\x94.").unwrap_err();
/// assert!(matches!(&e, Error::UnknownGlobal { module, name, .. } if module == "posix" && name == "system"));
/// assert!(matches!(decode(b"\x80\x04K"), Err(Error::Truncated { .. })));
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The pickle ends before its STOP opcode, or in the middle of an opcode.
    #[error("the pickle ends at byte {at}, before it is complete ({what}); the peer sent a cut or damaged pickle")]
    Truncated {
        /// Where the input ended.
        at: usize,
        /// What was being read.
        what: &'static str,
    },
    /// A byte that is not a pickle opcode of protocols 0 to 5.
    #[error("byte {at} of the pickle is {opcode:#04x}, which is not a pickle opcode (protocols 0 to 5); the data is not a pickle, or is damaged")]
    UnknownOpcode {
        /// The byte.
        opcode: u8,
        /// Its offset.
        at: usize,
    },
    /// A global other than the few that the standard types and numpy arrays need; it was
    /// not imported and nothing was executed.
    #[error("the pickle refers to {module}.{name} (at byte {at}), which is never imported or called here; send built-in types (dict, list, str, numbers, bytes) or numpy arrays instead of objects of other classes")]
    UnknownGlobal {
        /// The module.
        module: String,
        /// The name in the module.
        name: String,
        /// Offset of the opcode.
        at: usize,
    },
    /// A pickle feature that this decoder does not support (persistent ids, extension
    /// registry codes, out-of-band buffers, object construction, unsupported dtypes...).
    #[error("unsupported pickle content at byte {at}: {what}")]
    Unsupported {
        /// What it was, and what to send instead.
        what: String,
        /// Offset of the opcode.
        at: usize,
    },
    /// The opcodes do not make sense together (an empty stack, a wrong argument type, a
    /// bad literal, text that is not UTF-8, array data of the wrong length...).
    #[error("malformed pickle at byte {at}: {detail}")]
    Malformed {
        /// What was wrong.
        detail: String,
        /// Offset of the opcode.
        at: usize,
    },
    /// The value nests containers deeper than the limit.
    #[error("the value nests more than {max} containers deep; raise DecodeOptions::max_depth if such data is expected")]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// The value would hold more values than the limit (memo references can make a short
    /// pickle expand to a huge value).
    #[error("the value would hold more than {max} values; raise DecodeOptions::max_values if such data is expected")]
    TooManyValues {
        /// The limit.
        max: usize,
    },
    /// An object that contains itself (such as `l = []; l.append(l)`), which a
    /// [`Value`] cannot represent.
    #[error("the pickled object contains itself (at memo entry {memo}); a Value cannot represent a cycle: send data without self references")]
    Recursive {
        /// The memo entry of the object.
        memo: usize,
    },
    /// The value cannot be written as a protocol 3 pickle.
    #[error("cannot pickle this value: {what}")]
    Encode {
        /// What was wrong, and what to do instead.
        what: String,
    },
    /// A value (or a message) is not of the type asked for.
    #[error(
        "a {found} cannot be read as {expected}; look at the value's type_name() before converting"
    )]
    WrongType {
        /// What was asked for.
        expected: &'static str,
        /// What the value is (its Python type name).
        found: String,
    },
    /// Bytes cannot be viewed as a slice of the type asked for.
    #[error("{len} bytes cannot be viewed as [{type_name}]: {why}")]
    Cast {
        /// The element type.
        type_name: &'static str,
        /// The number of bytes.
        len: usize,
        /// Why: the length is not a multiple of the element size, or the data is not aligned
        /// (then copy with `to_vec_of` instead), or the byte order is not the machine's.
        why: &'static str,
    },
    /// A serde type could not be read from or written as a value.
    #[error("serde: {0}")]
    Serde(String),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
