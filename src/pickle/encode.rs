//! The pickle writer: a [`Value`] (or a message) as a protocol 3 pickle, which every
//! Python 3 reads and unpickles into the native objects.

use bytes::Bytes;

use super::numpy::Array;
use super::value::{BigInt, Value};
use super::{Error, Result, DEFAULT_MAX_DEPTH};
use crate::message::Message;

/// The pickle (protocol 3) of `value`.
///
/// Python's `pickle.loads` gives back the native objects of the table in the
/// [module docs](super): a `dict` for [`Value::Dict`], a `numpy.ndarray` for
/// [`Value::Array`] (written as numpy writes it, with `numpy.core.multiarray._reconstruct`,
/// which numpy 1 and numpy 2 both read; the peer needs numpy installed), and so on.
/// No memo entries are written: a value used twice is written twice.
///
/// # Errors
/// [`Error::Encode`] for a `str`, `bytes` or array data of 4 GiB or more (protocol 3
/// cannot hold them: send them in mode 2/3 or over v2), for values nested more than
/// [`DEFAULT_MAX_DEPTH`] deep, and for dict keys or set items that Python cannot hash
/// (a list, dict, set, bytearray or array: see [`Value::is_hashable`]).
///
/// ```
/// use serpy::pickle::{encode, Value};
/// let v = Value::dict([("exposure", 10)]);
/// assert_eq!(&encode(&v)?[..], b"\x80\x03}(X\x08\x00\x00\x00exposureK\nu.");
/// # Ok::<(), serpy::pickle::Error>(())
/// ```
pub fn encode(value: &Value) -> Result<Bytes> {
    let mut w = Writer {
        out: Vec::with_capacity(64),
    };
    w.out.extend_from_slice(b"\x80\x03");
    w.value(value, 0)?;
    w.out.push(b'.');
    Ok(Bytes::from(w.out))
}

/// The pickle (protocol 3) of a message, as v1 modes 4 and 5 send it, so that a Python
/// peer receives the native object: `int`, `float`, `str` or `bytes`. A
/// [`Message::Pickle`] is already a pickle and is returned as it is (no copy).
///
/// Integers use the shortest opcode (`K`, `M`, `J`, then `LONG1`), floats `G` (big
/// endian), text `X` (always UTF-8) and bytes `C` or `B`; no memo entries are written.
///
/// # Errors
/// [`crate::Error::Unsupported`] for text or bytes of 4 GiB or more, which protocol 3
/// cannot hold.
///
/// ```
/// use serpy::pickle::message_to_pickle;
/// use serpy::Message;
/// assert_eq!(&message_to_pickle(&Message::from(5)).unwrap()[..], b"\x80\x03K\x05.");
/// assert_eq!(&message_to_pickle(&Message::from("x")).unwrap()[..], b"\x80\x03X\x01\x00\x00\x00x.");
/// ```
pub fn message_to_pickle(message: &Message) -> crate::Result<Bytes> {
    let mut w = Writer {
        out: Vec::with_capacity(16 + message.len()),
    };
    w.out.extend_from_slice(b"\x80\x03");
    let r = match message {
        Message::Pickle(b) => return Ok(b.clone()),
        Message::Int(i) => {
            w.int(*i);
            Ok(())
        }
        Message::Float(x) => {
            w.float(*x);
            Ok(())
        }
        Message::Text(t) => w.str(t.as_str()),
        Message::Bytes(b) => w.bytes(b),
    };
    r.map_err(|e| crate::Error::Unsupported {
        what: match e {
            Error::Encode { what } => what,
            e => e.to_string(),
        },
    })?;
    w.out.push(b'.');
    Ok(Bytes::from(w.out))
}

/// Python refuses to unpickle a dict key or set item it cannot hash: refuse to write one.
fn unhashable(v: &Value, what: &str) -> Result<()> {
    if v.is_hashable() {
        Ok(())
    } else {
        Err(Error::Encode {
            what: format!(
                "{what} of type {} cannot be unpickled by Python (it is unhashable); use a tuple, a str or a number",
                v.type_name()
            ),
        })
    }
}

struct Writer {
    out: Vec<u8>,
}

fn len32(len: usize, what: &str) -> Result<u32> {
    u32::try_from(len).map_err(|_| Error::Encode {
        what: format!(
            "a pickle (protocol 3) cannot hold {what} of {len} bytes (4 GiB or more); send it in mode 2 or 3, or over v2"
        ),
    })
}

impl Writer {
    fn op(&mut self, b: &[u8]) {
        self.out.extend_from_slice(b);
    }

    fn int(&mut self, i: i64) {
        if let Ok(v) = u8::try_from(i) {
            self.op(&[b'K', v]);
        } else if let Ok(v) = u16::try_from(i) {
            self.op(b"M");
            self.op(&v.to_le_bytes());
        } else if let Ok(v) = i32::try_from(i) {
            self.op(b"J");
            self.op(&v.to_le_bytes());
        } else {
            self.bigint(&BigInt::from(i));
        }
    }

    fn bigint(&mut self, b: &BigInt) {
        let bytes = b.to_signed_bytes_le();
        match u8::try_from(bytes.len()) {
            Ok(n) => self.op(&[0x8a, n]),
            Err(_) => {
                self.op(&[0x8b]);
                // A BigInt is never 2 GiB long: its bytes came from a pickle or a u128.
                self.op(&(bytes.len() as u32).to_le_bytes());
            }
        }
        self.op(bytes);
    }

    fn float(&mut self, x: f64) {
        self.op(b"G");
        self.op(&x.to_be_bytes());
    }

    fn str(&mut self, s: &str) -> Result<()> {
        let n = len32(s.len(), "text")?;
        self.op(b"X");
        self.op(&n.to_le_bytes());
        self.op(s.as_bytes());
        Ok(())
    }

    fn bytes(&mut self, b: &[u8]) -> Result<()> {
        match u8::try_from(b.len()) {
            Ok(n) => self.op(&[b'C', n]),
            Err(_) => {
                let n = len32(b.len(), "bytes")?;
                self.op(b"B");
                self.op(&n.to_le_bytes());
            }
        }
        self.op(b);
        Ok(())
    }

    fn global(&mut self, module: &str, name: &str) {
        self.op(b"c");
        self.op(module.as_bytes());
        self.op(b"\n");
        self.op(name.as_bytes());
        self.op(b"\n");
    }

    fn items(&mut self, items: &[Value], depth: usize) -> Result<()> {
        for v in items {
            self.value(v, depth + 1)?;
        }
        Ok(())
    }

    fn tuple(&mut self, items: &[Value], depth: usize) -> Result<()> {
        match items.len() {
            0 => self.op(b")"),
            1..=3 => {
                self.items(items, depth)?;
                self.op(&[0x85 + items.len() as u8 - 1]);
            }
            _ => {
                self.op(b"(");
                self.items(items, depth)?;
                self.op(b"t");
            }
        }
        Ok(())
    }

    fn list(&mut self, items: &[Value], depth: usize) -> Result<()> {
        self.op(b"]");
        if !items.is_empty() {
            self.op(b"(");
            self.items(items, depth)?;
            self.op(b"e");
        }
        Ok(())
    }

    fn value(&mut self, v: &Value, depth: usize) -> Result<()> {
        if depth > DEFAULT_MAX_DEPTH {
            return Err(Error::Encode {
                what: format!("the value nests more than {DEFAULT_MAX_DEPTH} containers deep"),
            });
        }
        match v {
            Value::None => self.op(b"N"),
            Value::Bool(true) => self.op(&[0x88]),
            Value::Bool(false) => self.op(&[0x89]),
            Value::Int(i) => self.int(*i),
            Value::BigInt(b) => self.bigint(b),
            Value::Float(x) => self.float(*x),
            Value::Complex { re, im } => {
                self.global("builtins", "complex");
                self.float(*re);
                self.float(*im);
                self.op(&[0x86, b'R']);
            }
            Value::Str(s) => self.str(s.as_str())?,
            Value::Bytes(b) => self.bytes(b)?,
            Value::ByteArray(b) => {
                self.global("builtins", "bytearray");
                self.bytes(b)?;
                self.op(&[0x85, b'R']);
            }
            Value::List(items) => self.list(items, depth)?,
            Value::Tuple(items) => self.tuple(items, depth)?,
            Value::Dict(items) => {
                self.op(b"}");
                if !items.is_empty() {
                    self.op(b"(");
                    for (k, v) in items {
                        unhashable(k, "a dict key")?;
                        self.value(k, depth + 1)?;
                        self.value(v, depth + 1)?;
                    }
                    self.op(b"u");
                }
            }
            Value::Set(items) | Value::FrozenSet(items) => {
                let name = if matches!(v, Value::Set(_)) {
                    "set"
                } else {
                    "frozenset"
                };
                for item in items {
                    unhashable(item, "a set item")?;
                }
                self.global("builtins", name);
                self.list(items, depth)?;
                self.op(&[0x85, b'R']);
            }
            Value::Array(a) => self.array(a)?,
        }
        Ok(())
    }

    /// As numpy's `ndarray.__reduce__`: `_reconstruct(ndarray, (0,), b'b')`, then
    /// `__setstate__((1, shape, dtype, is_fortran, data))`.
    fn array(&mut self, a: &Array) -> Result<()> {
        self.global("numpy.core.multiarray", "_reconstruct");
        self.global("numpy", "ndarray");
        self.op(&[b'K', 0, 0x85, b'C', 1, b'b', 0x87, b'R']);
        // State
        self.op(b"(K\x01");
        let mut dims = Writer { out: Vec::new() };
        for &d in a.shape() {
            match i64::try_from(d) {
                Ok(d) => dims.int(d),
                Err(_) => dims.bigint(&BigInt::from(d as u64)),
            }
        }
        match a.ndim() {
            0 => self.op(b")"),
            n @ 1..=3 => {
                self.op(&dims.out);
                self.op(&[0x85 + n as u8 - 1]);
            }
            _ => {
                self.op(b"(");
                self.op(&dims.out);
                self.op(b"t");
            }
        }
        let d = a.dtype();
        self.global("numpy", "dtype");
        self.str(&d.code())?;
        self.op(&[0x89, 0x88, 0x87, b'R']);
        self.op(b"(K\x03");
        self.str(&d.order_char().to_string())?;
        self.op(b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb");
        self.op(&[if a.is_fortran_order() { 0x88 } else { 0x89 }]);
        let data = a.data();
        let n = len32(data.len(), "array data")?;
        match u8::try_from(data.len()) {
            Ok(m) => self.op(&[b'C', m]),
            Err(_) => {
                self.op(b"B");
                self.op(&n.to_le_bytes());
            }
        }
        self.op(data);
        self.op(b"tb");
        Ok(())
    }
}
