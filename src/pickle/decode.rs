//! The pickle decoder: bytes in, [`Value`] out; nothing is imported or executed.
//!
//! The decoder runs the pickle machine (a stack, marks and a memo) over a flat arena of
//! objects, as Python's unpickler does over its heap: containers are arena entries and
//! the stack and memo hold handles to them, so that a list memoized while empty and
//! filled afterwards is seen filled through every reference. No arena entry owns
//! another, so building and dropping it never recurses. At STOP the result is turned
//! into a [`Value`] tree, within the depth and size limits.

use std::collections::HashMap;

use bytes::Bytes;

use super::numpy::{read_item, Array, DType};
use super::value::{BigInt, Value};
use super::{Error, Result};
use crate::message::Text;

/// The default for [`DecodeOptions::max_depth`]: containers nested deeper than this are
/// refused with [`Error::TooDeep`].
pub const DEFAULT_MAX_DEPTH: usize = 256;

/// Limits for [`decode_with`].
///
/// ```
/// use serpy::pickle::{decode_with, DecodeOptions, Error};
///
/// let opts = DecodeOptions::new().max_depth(1);
/// // pickle.dumps([[1]], protocol=2)
/// let e = decode_with(&b"\x80\x02]q\x00]q\x01K\x01aa."[..].into(), &opts).unwrap_err();
/// assert_eq!(e, Error::TooDeep { max: 1 });
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DecodeOptions {
    /// The deepest nesting of containers accepted (default [`DEFAULT_MAX_DEPTH`]).
    pub max_depth: usize,
    /// The most values that may be built: the containers and the items put into them
    /// while reading, plus the values of the result. `None` (the default) allows 65 536
    /// plus 8 per byte of the pickle: a pickle spends at most 3 per byte unless memo
    /// references (one object referred to many times) expand it. A value takes about
    /// 100 bytes while it is built, so this bounds memory to roughly 1 kB per byte of
    /// pickle plus 7 MB, whatever the pickle says. Raise it for data that shares large
    /// objects many times (`[big_list] * 1000`).
    pub max_values: Option<usize>,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            max_depth: DEFAULT_MAX_DEPTH,
            max_values: None,
        }
    }
}

impl DecodeOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`max_depth`](DecodeOptions::max_depth).
    pub fn max_depth(mut self, depth: usize) -> Self {
        self.max_depth = depth;
        self
    }

    /// Sets [`max_values`](DecodeOptions::max_values).
    pub fn max_values(mut self, values: usize) -> Self {
        self.max_values = Some(values);
        self
    }
}

/// Decodes a pickle of protocol 0 to 5 (copying the input once; [`decode_bytes`] shares it).
///
/// ```
/// use serpy::pickle::{decode, Value};
/// // pickle.dumps((1, 'a', None), protocol=0)
/// assert_eq!(decode(b"(I1\nVa\np0\nNtp1\n.")?.to_string(), "(1, 'a', None)");
/// # Ok::<(), serpy::pickle::Error>(())
/// ```
pub fn decode(pickle: &[u8]) -> Result<Value> {
    decode_with(&Bytes::copy_from_slice(pickle), &DecodeOptions::default())
}

/// Decodes a pickle; strings, bytes and array data in the result share `pickle`'s memory.
///
/// ```
/// use serpy::pickle::{decode_bytes, Value};
/// let p = bytes::Bytes::from_static(b"\x80\x03C\x03abcq\x00.");
/// let v = decode_bytes(&p)?;
/// assert_eq!(v.as_bytes().map(|b| b.as_ptr()), Some(p[4..].as_ptr())); // no copy
/// # Ok::<(), serpy::pickle::Error>(())
/// ```
pub fn decode_bytes(pickle: &Bytes) -> Result<Value> {
    decode_with(pickle, &DecodeOptions::default())
}

/// Decodes a pickle with the given limits.
pub fn decode_with(pickle: &Bytes, options: &DecodeOptions) -> Result<Value> {
    let max_values = options
        .max_values
        .unwrap_or_else(|| (1usize << 16).saturating_add(pickle.len().saturating_mul(8)));
    let mut m = Machine {
        input: pickle.clone(),
        pos: 0,
        at: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        arena: Vec::new(),
        spent: 0,
        max_values,
        max_depth: options.max_depth,
    };
    let top = m.run()?;
    let mut visiting = vec![false; m.arena.len()];
    m.resolve(&top, 0, &mut visiting)
}

/// A global of the allow-list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Global {
    Set,
    FrozenSet,
    ByteArray,
    Bytes,
    Complex,
    List,
    Tuple,
    Dict,
    CodecsEncode,
    Reconstruct,
    NdArray,
    DType,
    Scalar,
    FromBuffer,
}

fn find_global(module: &str, name: &str) -> Option<Global> {
    use Global::*;
    Some(match (module, name) {
        ("builtins" | "__builtin__", n) => match n {
            "set" => Set,
            "frozenset" => FrozenSet,
            "bytearray" => ByteArray,
            "bytes" => Bytes,
            "complex" => Complex,
            "list" => List,
            "tuple" => Tuple,
            "dict" => Dict,
            _ => return None,
        },
        ("_codecs", "encode") => CodecsEncode,
        ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct") => Reconstruct,
        ("numpy.core.multiarray" | "numpy._core.multiarray", "scalar") => Scalar,
        ("numpy.core.numeric" | "numpy._core.numeric", "_frombuffer") => FromBuffer,
        ("numpy", "ndarray") => NdArray,
        ("numpy", "dtype") => DType,
        _ => return None,
    })
}

/// What the stack and the memo hold.
#[derive(Clone, Debug)]
enum Item {
    /// A finished value that holds no other (never a list, tuple, dict or set).
    Leaf(Value),
    /// An arena object.
    Obj(usize),
    /// A global of the allow-list.
    Global(Global),
}

/// An arena object.
#[derive(Debug)]
enum Obj {
    List(Vec<Item>),
    Tuple(Vec<Item>),
    Dict(Vec<(Item, Item)>),
    Set(Vec<Item>),
    FrozenSet(Vec<Item>),
    /// `_reconstruct(ndarray, ...)`, waiting for its BUILD.
    PendingArray,
    /// `numpy.dtype(code, ...)`, and the byte order its BUILD gave.
    DType {
        code: String,
        order: Option<char>,
    },
    /// A built array.
    Array(Array),
}

struct Machine {
    input: Bytes,
    pos: usize,
    /// Offset of the opcode being run.
    at: usize,
    stack: Vec<Item>,
    marks: Vec<usize>,
    memo: HashMap<u64, Item>,
    arena: Vec<Obj>,
    spent: usize,
    max_values: usize,
    max_depth: usize,
}

mod op {
    pub const MARK: u8 = b'(';
    pub const STOP: u8 = b'.';
    pub const POP: u8 = b'0';
    pub const POP_MARK: u8 = b'1';
    pub const DUP: u8 = b'2';
    pub const FLOAT: u8 = b'F';
    pub const INT: u8 = b'I';
    pub const BININT: u8 = b'J';
    pub const BININT1: u8 = b'K';
    pub const LONG: u8 = b'L';
    pub const BININT2: u8 = b'M';
    pub const NONE: u8 = b'N';
    pub const PERSID: u8 = b'P';
    pub const BINPERSID: u8 = b'Q';
    pub const REDUCE: u8 = b'R';
    pub const STRING: u8 = b'S';
    pub const BINSTRING: u8 = b'T';
    pub const SHORT_BINSTRING: u8 = b'U';
    pub const UNICODE: u8 = b'V';
    pub const BINUNICODE: u8 = b'X';
    pub const APPEND: u8 = b'a';
    pub const BUILD: u8 = b'b';
    pub const GLOBAL: u8 = b'c';
    pub const DICT: u8 = b'd';
    pub const EMPTY_DICT: u8 = b'}';
    pub const APPENDS: u8 = b'e';
    pub const GET: u8 = b'g';
    pub const BINGET: u8 = b'h';
    pub const INST: u8 = b'i';
    pub const LONG_BINGET: u8 = b'j';
    pub const LIST: u8 = b'l';
    pub const EMPTY_LIST: u8 = b']';
    pub const OBJ: u8 = b'o';
    pub const PUT: u8 = b'p';
    pub const BINPUT: u8 = b'q';
    pub const LONG_BINPUT: u8 = b'r';
    pub const SETITEM: u8 = b's';
    pub const TUPLE: u8 = b't';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const SETITEMS: u8 = b'u';
    pub const BINFLOAT: u8 = b'G';
    pub const PROTO: u8 = 0x80;
    pub const NEWOBJ: u8 = 0x81;
    pub const EXT1: u8 = 0x82;
    pub const EXT2: u8 = 0x83;
    pub const EXT4: u8 = 0x84;
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE2: u8 = 0x86;
    pub const TUPLE3: u8 = 0x87;
    pub const NEWTRUE: u8 = 0x88;
    pub const NEWFALSE: u8 = 0x89;
    pub const LONG1: u8 = 0x8a;
    pub const LONG4: u8 = 0x8b;
    pub const BINBYTES: u8 = b'B';
    pub const SHORT_BINBYTES: u8 = b'C';
    pub const SHORT_BINUNICODE: u8 = 0x8c;
    pub const BINUNICODE8: u8 = 0x8d;
    pub const BINBYTES8: u8 = 0x8e;
    pub const EMPTY_SET: u8 = 0x8f;
    pub const ADDITEMS: u8 = 0x90;
    pub const FROZENSET: u8 = 0x91;
    pub const NEWOBJ_EX: u8 = 0x92;
    pub const STACK_GLOBAL: u8 = 0x93;
    pub const MEMOIZE: u8 = 0x94;
    pub const FRAME: u8 = 0x95;
    pub const BYTEARRAY8: u8 = 0x96;
    pub const NEXT_BUFFER: u8 = 0x97;
    pub const READONLY_BUFFER: u8 = 0x98;
}

impl Machine {
    // ---- errors ----

    fn malformed<T>(&self, detail: impl Into<String>) -> Result<T> {
        Err(Error::Malformed {
            detail: detail.into(),
            at: self.at,
        })
    }

    fn unsupported<T>(&self, what: impl Into<String>) -> Result<T> {
        Err(Error::Unsupported {
            what: what.into(),
            at: self.at,
        })
    }

    /// Errors of the array and dtype helpers get this opcode's offset.
    fn here(&self, e: Error) -> Error {
        match e {
            Error::Malformed { detail, .. } => Error::Malformed {
                detail,
                at: self.at,
            },
            Error::Unsupported { what, .. } => Error::Unsupported { what, at: self.at },
            e => e,
        }
    }

    fn spend(&mut self, n: usize) -> Result<()> {
        self.spent = self.spent.saturating_add(n);
        if self.spent > self.max_values {
            return Err(Error::TooManyValues {
                max: self.max_values,
            });
        }
        Ok(())
    }

    // ---- input ----

    fn take(&mut self, n: usize, what: &'static str) -> Result<Bytes> {
        if self.input.len() - self.pos < n {
            return Err(Error::Truncated {
                at: self.input.len(),
                what,
            });
        }
        let b = self.input.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(b)
    }

    fn take_array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N]> {
        let b = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&b);
        Ok(out)
    }

    fn byte(&mut self, what: &'static str) -> Result<u8> {
        Ok(self.take_array::<1>(what)?[0])
    }

    /// A length of 4 or 8 bytes (little endian), checked against what is left.
    fn len_prefixed(&mut self, width: usize, what: &'static str) -> Result<Bytes> {
        let n = match width {
            1 => u64::from(self.byte(what)?),
            4 => u64::from(u32::from_le_bytes(self.take_array(what)?)),
            _ => u64::from_le_bytes(self.take_array(what)?),
        };
        let left = (self.input.len() - self.pos) as u64;
        if n > left {
            return Err(Error::Truncated {
                at: self.input.len(),
                what,
            });
        }
        self.take(n as usize, what)
    }

    /// A line up to `\n` (without it, nor a `\r` before it).
    fn line(&mut self, what: &'static str) -> Result<Bytes> {
        let rest = &self.input[self.pos..];
        let Some(n) = rest.iter().position(|&b| b == b'\n') else {
            return Err(Error::Truncated {
                at: self.input.len(),
                what,
            });
        };
        let mut line = self.input.slice(self.pos..self.pos + n);
        self.pos += n + 1;
        if line.last() == Some(&b'\r') {
            line.truncate(line.len() - 1);
        }
        Ok(line)
    }

    fn line_str(&mut self, what: &'static str) -> Result<String> {
        let line = self.line(what)?;
        match std::str::from_utf8(&line) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => self.malformed(format!("the {what} is not UTF-8")),
        }
    }

    // ---- stack ----

    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn push(&mut self, item: Item) {
        self.stack.push(item);
    }

    fn push_leaf(&mut self, v: Value) {
        self.stack.push(Item::Leaf(v));
    }

    fn new_obj(&mut self, obj: Obj) -> Result<Item> {
        let n = match &obj {
            Obj::List(v) | Obj::Tuple(v) | Obj::Set(v) | Obj::FrozenSet(v) => v.len(),
            Obj::Dict(d) => d.len(),
            _ => 0,
        };
        self.spend(n + 1)?;
        self.arena.push(obj);
        Ok(Item::Obj(self.arena.len() - 1))
    }

    fn push_obj(&mut self, obj: Obj) -> Result<()> {
        let item = self.new_obj(obj)?;
        self.push(item);
        Ok(())
    }

    fn pop(&mut self) -> Result<Item> {
        if self.stack.len() <= self.floor() {
            return self.malformed("an opcode needs a value, but the stack is empty");
        }
        Ok(self.stack.pop().unwrap_or(Item::Leaf(Value::None)))
    }

    fn top(&self) -> Result<&Item> {
        if self.stack.len() <= self.floor() {
            return self.malformed("an opcode needs a value, but the stack is empty");
        }
        self.stack
            .last()
            .map_or_else(|| self.malformed("empty stack"), Ok)
    }

    fn pop_mark(&mut self) -> Result<Vec<Item>> {
        match self.marks.pop() {
            Some(m) => Ok(self.stack.split_off(m)),
            None => self.malformed("an opcode needs a MARK, but there is none"),
        }
    }

    /// The arena index of the stack top, which must be an object.
    fn top_obj(&self) -> Result<usize> {
        match self.top()? {
            Item::Obj(i) => Ok(*i),
            other => self.malformed(format!(
                "expected a container on the stack, found {}",
                describe(other)
            )),
        }
    }

    // ---- helpers for arguments ----

    fn tuple_items(&self, item: &Item) -> Result<Vec<Item>> {
        match item {
            Item::Obj(i) => match &self.arena[*i] {
                Obj::Tuple(v) => Ok(v.clone()),
                _ => self.malformed("expected a tuple"),
            },
            _ => self.malformed(format!("expected a tuple, found {}", describe(item))),
        }
    }

    /// The items of a list, tuple, set or frozenset (for `set(...)`, `list(...)`).
    fn iterable_items(&self, item: &Item) -> Result<Vec<Item>> {
        match item {
            Item::Obj(i) => match &self.arena[*i] {
                Obj::List(v) | Obj::Tuple(v) | Obj::Set(v) | Obj::FrozenSet(v) => Ok(v.clone()),
                Obj::Dict(d) => Ok(d.iter().map(|(k, _)| k.clone()).collect()),
                _ => self.malformed("expected a list, tuple or set"),
            },
            _ => self.malformed(format!(
                "expected a list, tuple or set, found {}",
                describe(item)
            )),
        }
    }

    fn leaf<'a>(&self, item: &'a Item) -> Result<&'a Value> {
        match item {
            Item::Leaf(v) => Ok(v),
            _ => self.malformed(format!(
                "expected a number, str or bytes, found {}",
                describe(item)
            )),
        }
    }

    fn str_arg(&self, item: &Item) -> Result<String> {
        match self.leaf(item)? {
            Value::Str(t) => Ok(t.as_str().to_owned()),
            v => self.malformed(format!("expected a str, found {}", v.type_name())),
        }
    }

    fn bytes_arg(&self, item: &Item) -> Result<Bytes> {
        match self.leaf(item)? {
            Value::Bytes(b) | Value::ByteArray(b) => Ok(b.clone()),
            // Python 2 pickles numpy data as a (byte) str.
            Value::Str(t) => Ok(t.clone().into_bytes()),
            v => self.malformed(format!("expected bytes, found {}", v.type_name())),
        }
    }

    fn int_arg(&self, item: &Item) -> Result<i64> {
        match self.leaf(item)? {
            Value::Int(i) => Ok(*i),
            Value::Bool(b) => Ok(i64::from(*b)),
            v => self.malformed(format!("expected an int, found {}", v.type_name())),
        }
    }

    fn float_arg(&self, item: &Item) -> Result<f64> {
        match self.leaf(item)? {
            Value::Float(f) => Ok(*f),
            Value::Int(i) => Ok(*i as f64),
            Value::Bool(b) => Ok(f64::from(u8::from(*b))),
            v => self.malformed(format!("expected a float, found {}", v.type_name())),
        }
    }

    fn shape_arg(&self, item: &Item) -> Result<Vec<usize>> {
        let items = match item {
            // numpy pickles a 1-d shape as a tuple; accept a bare int too.
            Item::Leaf(Value::Int(_)) => vec![item.clone()],
            _ => self.tuple_items(item)?,
        };
        if items.len() > super::numpy::MAX_DIMS {
            return self.malformed(format!("an array shape of {} dimensions", items.len()));
        }
        items
            .iter()
            .map(|d| {
                let n = self.int_arg(d)?;
                usize::try_from(n).or_else(|_| self.malformed(format!("an array dimension of {n}")))
            })
            .collect()
    }

    fn dtype_arg(&self, item: &Item) -> Result<DType> {
        match item {
            Item::Obj(i) => match &self.arena[*i] {
                Obj::DType { code, order } => {
                    DType::from_code(code, order.unwrap_or('=')).map_err(|e| self.here(e))
                }
                _ => self.malformed("expected a numpy dtype"),
            },
            _ => self.malformed(format!("expected a numpy dtype, found {}", describe(item))),
        }
    }

    fn latin1(&self, item: &Item) -> Result<Bytes> {
        let s = self.str_arg(item)?;
        let mut out = Vec::with_capacity(s.len());
        for c in s.chars() {
            match u8::try_from(u32::from(c)) {
                Ok(b) => out.push(b),
                Err(_) => {
                    return self.malformed(format!("{c:?} cannot be encoded as latin-1 bytes"))
                }
            }
        }
        Ok(Bytes::from(out))
    }

    fn check_latin1_name(&self, item: &Item) -> Result<()> {
        let enc = self.str_arg(item)?;
        match enc.to_ascii_lowercase().as_str() {
            "latin1" | "latin-1" | "iso-8859-1" | "iso8859-1" => Ok(()),
            _ => self.unsupported(format!(
                "bytes encoded as {enc:?} (only latin-1 is read, as Python writes it)"
            )),
        }
    }

    // ---- the machine ----

    fn run(&mut self) -> Result<Item> {
        loop {
            self.at = self.pos;
            let code = self.byte("an opcode (the STOP at the end is missing)")?;
            match code {
                op::PROTO => {
                    let v = self.byte("the protocol number")?;
                    if v > 5 {
                        return self.unsupported(format!("pickle protocol {v} (0 to 5 are read)"));
                    }
                }
                op::FRAME => {
                    self.take(8, "a frame length")?;
                }
                op::STOP => return self.pop(),
                op::MARK => self.marks.push(self.stack.len()),
                op::POP => {
                    if self.stack.len() > self.floor() {
                        self.stack.pop();
                    } else if self.marks.last() == Some(&self.stack.len()) {
                        self.marks.pop();
                    } else {
                        return self.malformed("POP on an empty stack");
                    }
                }
                op::POP_MARK => {
                    self.pop_mark()?;
                }
                op::DUP => {
                    let top = self.top()?.clone();
                    self.spend(1)?;
                    self.push(top);
                }

                // Memo
                op::PUT => {
                    let line = self.line_str("a memo index")?;
                    let id = self.parse_memo_id(&line)?;
                    self.put(id)?;
                }
                op::BINPUT => {
                    let id = self.byte("a memo index")?;
                    self.put(u64::from(id))?;
                }
                op::LONG_BINPUT => {
                    let id = u32::from_le_bytes(self.take_array("a memo index")?);
                    self.put(u64::from(id))?;
                }
                op::MEMOIZE => {
                    let id = self.memo.len() as u64;
                    self.put(id)?;
                }
                op::GET => {
                    let line = self.line_str("a memo index")?;
                    let id = self.parse_memo_id(&line)?;
                    self.get(id)?;
                }
                op::BINGET => {
                    let id = self.byte("a memo index")?;
                    self.get(u64::from(id))?;
                }
                op::LONG_BINGET => {
                    let id = u32::from_le_bytes(self.take_array("a memo index")?);
                    self.get(u64::from(id))?;
                }

                // Constants and numbers
                op::NONE => self.push_leaf(Value::None),
                op::NEWTRUE => self.push_leaf(Value::Bool(true)),
                op::NEWFALSE => self.push_leaf(Value::Bool(false)),
                op::INT => {
                    let line = self.line_str("an INT literal")?;
                    let v = match line.as_str() {
                        "00" => Value::Bool(false),
                        "01" => Value::Bool(true),
                        s => self.parse_int(s)?,
                    };
                    self.push_leaf(v);
                }
                op::LONG => {
                    let line = self.line_str("a LONG literal")?;
                    let v = self.parse_int(line.strip_suffix('L').unwrap_or(&line))?;
                    self.push_leaf(v);
                }
                op::BININT => {
                    let v = i32::from_le_bytes(self.take_array("a 4-byte int")?);
                    self.push_leaf(Value::Int(i64::from(v)));
                }
                op::BININT1 => {
                    let v = self.byte("a 1-byte int")?;
                    self.push_leaf(Value::Int(i64::from(v)));
                }
                op::BININT2 => {
                    let v = u16::from_le_bytes(self.take_array("a 2-byte int")?);
                    self.push_leaf(Value::Int(i64::from(v)));
                }
                op::LONG1 => {
                    let b = self.len_prefixed(1, "a LONG1 int")?;
                    self.push_leaf(Value::from(BigInt::from_le_bytes_shared(b)));
                }
                op::LONG4 => {
                    let n = i32::from_le_bytes(self.take_array("a LONG4 length")?);
                    let Ok(n) = usize::try_from(n) else {
                        return self.malformed(format!("LONG4 with the negative length {n}"));
                    };
                    let b = self.take(n, "a LONG4 int")?;
                    self.push_leaf(Value::from(BigInt::from_le_bytes_shared(b)));
                }
                op::FLOAT => {
                    let line = self.line_str("a FLOAT literal")?;
                    match line.trim().parse::<f64>() {
                        Ok(f) => self.push_leaf(Value::Float(f)),
                        Err(_) => return self.malformed(format!("{line:?} is not a float")),
                    }
                }
                op::BINFLOAT => {
                    let v = f64::from_be_bytes(self.take_array("an 8-byte float")?);
                    self.push_leaf(Value::Float(v));
                }

                // Strings and bytes
                op::STRING => {
                    let line = self.line("a STRING literal")?;
                    let raw = self.unescape_string(&line)?;
                    self.push_leaf(py2_str(raw));
                }
                op::BINSTRING => {
                    let n = i32::from_le_bytes(self.take_array("a BINSTRING length")?);
                    let Ok(n) = usize::try_from(n) else {
                        return self.malformed(format!("BINSTRING with the negative length {n}"));
                    };
                    let b = self.take(n, "a BINSTRING")?;
                    self.push_leaf(py2_str(b));
                }
                op::SHORT_BINSTRING => {
                    let b = self.len_prefixed(1, "a SHORT_BINSTRING")?;
                    self.push_leaf(py2_str(b));
                }
                op::UNICODE => {
                    let line = self.line("a UNICODE literal")?;
                    let s = self.raw_unicode_escape(&line)?;
                    self.push_leaf(Value::Str(Text::from(s)));
                }
                op::SHORT_BINUNICODE => {
                    let b = self.len_prefixed(1, "a str")?;
                    self.push_text(b)?;
                }
                op::BINUNICODE => {
                    let b = self.len_prefixed(4, "a str")?;
                    self.push_text(b)?;
                }
                op::BINUNICODE8 => {
                    let b = self.len_prefixed(8, "a str")?;
                    self.push_text(b)?;
                }
                op::SHORT_BINBYTES => {
                    let b = self.len_prefixed(1, "bytes")?;
                    self.push_leaf(Value::Bytes(b));
                }
                op::BINBYTES => {
                    let b = self.len_prefixed(4, "bytes")?;
                    self.push_leaf(Value::Bytes(b));
                }
                op::BINBYTES8 => {
                    let b = self.len_prefixed(8, "bytes")?;
                    self.push_leaf(Value::Bytes(b));
                }
                op::BYTEARRAY8 => {
                    let b = self.len_prefixed(8, "a bytearray")?;
                    self.push_leaf(Value::ByteArray(b));
                }
                op::NEXT_BUFFER => {
                    return self.unsupported(
                        "an out-of-band buffer (protocol 5 with buffer_callback): a serpy message carries one pickle and no buffers; pickle without buffer_callback",
                    )
                }
                op::READONLY_BUFFER => {
                    self.top()?;
                }

                // Containers
                op::EMPTY_TUPLE => self.push_obj(Obj::Tuple(Vec::new()))?,
                op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => {
                    let n = usize::from(code - op::TUPLE1 + 1);
                    if self.stack.len() < self.floor() + n {
                        return self.malformed("TUPLE1-3 with too few values on the stack");
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.push_obj(Obj::Tuple(items))?;
                }
                op::TUPLE => {
                    let items = self.pop_mark()?;
                    self.push_obj(Obj::Tuple(items))?;
                }
                op::EMPTY_LIST => self.push_obj(Obj::List(Vec::new()))?,
                op::LIST => {
                    let items = self.pop_mark()?;
                    self.push_obj(Obj::List(items))?;
                }
                op::APPEND => {
                    let v = self.pop()?;
                    self.extend_list(vec![v])?;
                }
                op::APPENDS => {
                    let items = self.pop_mark()?;
                    self.extend_list(items)?;
                }
                op::EMPTY_DICT => self.push_obj(Obj::Dict(Vec::new()))?,
                op::DICT => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    self.push_obj(Obj::Dict(pairs))?;
                }
                op::SETITEM => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.extend_dict(vec![(k, v)])?;
                }
                op::SETITEMS => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    self.extend_dict(pairs)?;
                }
                op::EMPTY_SET => self.push_obj(Obj::Set(Vec::new()))?,
                op::ADDITEMS => {
                    let items = self.pop_mark()?;
                    let i = self.top_obj()?;
                    self.spend(items.len())?;
                    match &mut self.arena[i] {
                        Obj::Set(s) => s.extend(items),
                        _ => return self.malformed("ADDITEMS on something that is not a set"),
                    }
                }
                op::FROZENSET => {
                    let items = self.pop_mark()?;
                    self.push_obj(Obj::FrozenSet(items))?;
                }

                // Globals and objects
                op::GLOBAL => {
                    let module = self.line_str("a GLOBAL module name")?;
                    let name = self.line_str("a GLOBAL name")?;
                    let g = self.global(module, name)?;
                    self.push(Item::Global(g));
                }
                op::STACK_GLOBAL => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (module, name) = (self.str_arg(&module)?, self.str_arg(&name)?);
                    let g = self.global(module, name)?;
                    self.push(Item::Global(g));
                }
                op::REDUCE => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let args = self.tuple_items(&args)?;
                    let out = self.reduce(func, args)?;
                    self.push(out);
                }
                op::BUILD => {
                    let state = self.pop()?;
                    let i = self.top_obj()?;
                    self.build(i, state)?;
                }
                op::INST => {
                    let module = self.line_str("an INST module name")?;
                    let name = self.line_str("an INST class name")?;
                    self.global(module.clone(), name.clone())?;
                    return self.unsupported(format!("an instance of {module}.{name} (INST); send built-in types instead"));
                }
                op::OBJ | op::NEWOBJ | op::NEWOBJ_EX => {
                    return self.unsupported("an object built with OBJ/NEWOBJ (an instance of a class); send built-in types, or numpy arrays, instead");
                }
                op::PERSID | op::BINPERSID => {
                    return self.unsupported("a persistent id (PERSID): it refers to an object outside the pickle");
                }
                op::EXT1 | op::EXT2 | op::EXT4 => {
                    return self.unsupported("an extension-registry code (EXT1/2/4), which names a global this decoder does not know");
                }
                other => {
                    return Err(Error::UnknownOpcode {
                        opcode: other,
                        at: self.at,
                    })
                }
            }
        }
    }

    fn parse_memo_id(&self, line: &str) -> Result<u64> {
        line.trim()
            .parse()
            .or_else(|_| self.malformed(format!("{line:?} is not a memo index")))
    }

    fn put(&mut self, id: u64) -> Result<()> {
        let top = self.top()?.clone();
        self.memo.insert(id, top);
        Ok(())
    }

    fn get(&mut self, id: u64) -> Result<()> {
        match self.memo.get(&id) {
            Some(item) => {
                let item = item.clone();
                self.spend(1)?;
                self.push(item);
                Ok(())
            }
            None => self.malformed(format!("memo entry {id} is read before it was written")),
        }
    }

    fn parse_int(&self, s: &str) -> Result<Value> {
        let s = s.trim();
        if let Ok(i) = s.parse::<i64>() {
            return Ok(Value::Int(i));
        }
        s.parse::<BigInt>()
            .map(Value::from)
            .map_err(|e| self.here(e))
            .or_else(|_| {
                self.malformed(format!(
                    "{:?} is not an integer",
                    crate::error::lossy_excerpt(s.as_bytes())
                ))
            })
    }

    fn push_text(&mut self, b: Bytes) -> Result<()> {
        match Text::from_utf8(b) {
            Ok(t) => {
                self.push_leaf(Value::Str(t));
                Ok(())
            }
            Err(e) => self.malformed(format!("a str that is not UTF-8 ({e})")),
        }
    }

    /// The bytes of a protocol 0 STRING literal: `'...'` or `"..."` with Python escapes.
    fn unescape_string(&self, line: &[u8]) -> Result<Bytes> {
        let inner = match line {
            [q @ (b'\'' | b'"'), inner @ .., last] if last == q => inner,
            _ => return self.malformed("a STRING literal without quotes"),
        };
        let mut out = Vec::with_capacity(inner.len());
        let mut i = 0;
        while i < inner.len() {
            let c = inner[i];
            i += 1;
            if c != b'\\' {
                out.push(c);
                continue;
            }
            let Some(&e) = inner.get(i) else {
                return self.malformed("a STRING literal ends with a backslash");
            };
            i += 1;
            match e {
                b'\\' | b'\'' | b'"' => out.push(e),
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                b't' => out.push(b'\t'),
                b'a' => out.push(0x07),
                b'b' => out.push(0x08),
                b'f' => out.push(0x0c),
                b'v' => out.push(0x0b),
                b'\n' => {}
                b'x' => {
                    let hex = inner
                        .get(i..i + 2)
                        .and_then(|h| std::str::from_utf8(h).ok());
                    match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                        Some(b) => out.push(b),
                        None => return self.malformed("a bad \\x escape in a STRING literal"),
                    }
                    i += 2;
                }
                b'0'..=b'7' => {
                    let mut v = u32::from(e - b'0');
                    for _ in 0..2 {
                        match inner.get(i) {
                            Some(&d @ b'0'..=b'7') => {
                                v = v * 8 + u32::from(d - b'0');
                                i += 1;
                            }
                            _ => break,
                        }
                    }
                    out.push(v as u8);
                }
                other => {
                    out.push(b'\\');
                    out.push(other);
                }
            }
        }
        Ok(Bytes::from(out))
    }

    /// Python's `raw-unicode-escape`: `\uXXXX` and `\UXXXXXXXX` escapes, other bytes as
    /// latin-1 characters.
    fn raw_unicode_escape(&self, line: &[u8]) -> Result<String> {
        let mut out = String::with_capacity(line.len());
        let mut i = 0;
        while i < line.len() {
            let c = line[i];
            let n = match (c, line.get(i + 1)) {
                (b'\\', Some(b'u')) => 4,
                (b'\\', Some(b'U')) => 8,
                _ => {
                    out.push(char::from(c));
                    i += 1;
                    continue;
                }
            };
            let hex = line
                .get(i + 2..i + 2 + n)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u32::from_str_radix(h, 16).ok());
            match hex.and_then(char::from_u32) {
                Some(ch) => out.push(ch),
                None => {
                    return self
                        .malformed("a bad \\u escape in a UNICODE literal (or a lone surrogate)")
                }
            }
            i += 2 + n;
        }
        Ok(out)
    }

    fn pairs(&self, items: Vec<Item>) -> Result<Vec<(Item, Item)>> {
        if items.len() % 2 != 0 {
            return self.malformed("a dict built from an odd number of keys and values");
        }
        let mut out = Vec::with_capacity(items.len() / 2);
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            out.push((k, v));
        }
        Ok(out)
    }

    fn extend_list(&mut self, items: Vec<Item>) -> Result<()> {
        let i = self.top_obj()?;
        self.spend(items.len())?;
        match &mut self.arena[i] {
            Obj::List(l) => {
                l.extend(items);
                Ok(())
            }
            _ => self.malformed("APPEND on something that is not a list"),
        }
    }

    fn extend_dict(&mut self, pairs: Vec<(Item, Item)>) -> Result<()> {
        let i = self.top_obj()?;
        self.spend(pairs.len())?;
        match &mut self.arena[i] {
            Obj::Dict(d) => {
                d.extend(pairs);
                Ok(())
            }
            _ => self.malformed("SETITEM on something that is not a dict"),
        }
    }

    fn global(&self, module: String, name: String) -> Result<Global> {
        find_global(&module, &name).ok_or(Error::UnknownGlobal {
            module,
            name,
            at: self.at,
        })
    }

    /// Calls an allow-listed global, by rebuilding what it would return.
    fn reduce(&mut self, func: Item, args: Vec<Item>) -> Result<Item> {
        let Item::Global(g) = func else {
            return self.malformed(format!(
                "REDUCE calls {}, which is not a known global",
                describe(&func)
            ));
        };
        let n = args.len();
        let bad_args = |m: &Self| m.malformed(format!("{g:?} called with {n} arguments"));
        match g {
            Global::Set | Global::FrozenSet | Global::List | Global::Tuple => {
                let items = match args.as_slice() {
                    [] => Vec::new(),
                    [it] => self.iterable_items(it)?,
                    _ => return bad_args(self),
                };
                self.new_obj(match g {
                    Global::Set => Obj::Set(items),
                    Global::FrozenSet => Obj::FrozenSet(items),
                    Global::List => Obj::List(items),
                    _ => Obj::Tuple(items),
                })
            }
            Global::Dict => match args.as_slice() {
                [] => self.new_obj(Obj::Dict(Vec::new())),
                _ => self.unsupported("dict() with arguments"),
            },
            Global::Bytes | Global::ByteArray => {
                let b = match args.as_slice() {
                    [] => Bytes::new(),
                    [b] => self.bytes_arg(b)?,
                    [s, enc] => {
                        self.check_latin1_name(enc)?;
                        self.latin1(s)?
                    }
                    _ => return bad_args(self),
                };
                Ok(Item::Leaf(if g == Global::Bytes {
                    Value::Bytes(b)
                } else {
                    Value::ByteArray(b)
                }))
            }
            Global::CodecsEncode => match args.as_slice() {
                [s, enc] => {
                    self.check_latin1_name(enc)?;
                    Ok(Item::Leaf(Value::Bytes(self.latin1(s)?)))
                }
                _ => bad_args(self),
            },
            Global::Complex => {
                let (re, im) = match args.as_slice() {
                    [] => (0.0, 0.0),
                    [re] => (self.float_arg(re)?, 0.0),
                    [re, im] => (self.float_arg(re)?, self.float_arg(im)?),
                    _ => return bad_args(self),
                };
                Ok(Item::Leaf(Value::Complex { re, im }))
            }
            Global::Reconstruct => match args.first() {
                Some(Item::Global(Global::NdArray)) => self.new_obj(Obj::PendingArray),
                _ => self.unsupported("numpy _reconstruct of a class other than numpy.ndarray (subclasses such as numpy.matrix are not read)"),
            },
            Global::DType => match args.first() {
                Some(code) => {
                    let code = self.str_arg(code)?;
                    if code.len() > 16 {
                        return self.unsupported("a numpy dtype with a long type code");
                    }
                    self.new_obj(Obj::DType { code, order: None })
                }
                None => bad_args(self),
            },
            Global::Scalar => match args.as_slice() {
                [dtype, data] => {
                    let dtype = self.dtype_arg(dtype)?;
                    let data = self.bytes_arg(data)?;
                    if data.len() != dtype.size {
                        return self.malformed(format!("a numpy {} scalar of {} bytes", dtype.name(), data.len()));
                    }
                    Ok(Item::Leaf(read_item(dtype, &data)))
                }
                _ => bad_args(self),
            },
            Global::FromBuffer => match args.as_slice() {
                [buf, dtype, shape, order] => {
                    let data = self.bytes_arg(buf)?;
                    let dtype = self.dtype_arg(dtype)?;
                    let shape = self.shape_arg(shape)?;
                    let fortran = match self.str_arg(order)?.as_str() {
                        "C" => false,
                        "F" => true,
                        o => return self.malformed(format!("numpy order {o:?} (C or F expected)")),
                    };
                    let a = Array::new(dtype, shape, fortran, data).map_err(|e| self.here(e))?;
                    Ok(Item::Leaf(Value::Array(a)))
                }
                _ => bad_args(self),
            },
            Global::NdArray => self.unsupported("numpy.ndarray called directly"),
        }
    }

    /// BUILD: `__setstate__` of a numpy array or dtype.
    fn build(&mut self, i: usize, state: Item) -> Result<()> {
        let st = self.tuple_items(&state)?;
        match &self.arena[i] {
            Obj::PendingArray => {
                // (version, shape, dtype, is_fortran, data), or without the version.
                let st = match st.len() {
                    5 => &st[1..],
                    4 => &st[..],
                    n => return self.malformed(format!("a numpy array state of {n} items")),
                };
                let shape = self.shape_arg(&st[0])?;
                let dtype = self.dtype_arg(&st[1])?;
                let fortran = match self.leaf(&st[2])? {
                    Value::Bool(b) => *b,
                    Value::Int(i) => *i != 0,
                    _ => {
                        return self.malformed("a numpy array state whose order flag is not a bool")
                    }
                };
                let data = match &st[3] {
                    Item::Obj(_) => {
                        return self.unsupported(
                            "a numpy array of Python objects (dtype object); send numbers",
                        )
                    }
                    item => self.bytes_arg(item)?,
                };
                let a = Array::new(dtype, shape, fortran, data).map_err(|e| self.here(e))?;
                self.arena[i] = Obj::Array(a);
                Ok(())
            }
            Obj::DType { code, .. } => {
                // (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata])
                if st.len() < 8 {
                    return self.malformed(format!("a numpy dtype state of {} items", st.len()));
                }
                let code = code.clone();
                let order = self.str_arg(&st[1])?;
                let is_none = |it: &Item| matches!(it, Item::Leaf(Value::None));
                if !is_none(&st[2]) || !is_none(&st[3]) || !is_none(&st[4]) {
                    return self.unsupported(
                        "a structured or sub-array numpy dtype; send plain arrays of numbers",
                    );
                }
                let c = match order.as_str() {
                    "<" => '<',
                    ">" => '>',
                    "|" => '|',
                    "=" => '=',
                    o => return self.malformed(format!("numpy byte order {o:?}")),
                };
                DType::from_code(&code, c).map_err(|e| self.here(e))?;
                self.arena[i] = Obj::DType {
                    code,
                    order: Some(c),
                };
                Ok(())
            }
            _ => self.unsupported(
                "BUILD (object state) on something that is not a numpy array or dtype",
            ),
        }
    }

    // ---- the result ----

    /// Python's unpickler refuses a dict key or set item that it cannot hash; so does this.
    fn all_hashable(&self, items: Vec<Value>, what: &str) -> Result<Vec<Value>> {
        match items.iter().find(|v| !v.is_hashable()) {
            Some(v) => self.malformed(format!(
                "{what} of type {} (Python cannot hash it)",
                v.type_name()
            )),
            None => Ok(items),
        }
    }

    fn resolve(&mut self, item: &Item, depth: usize, visiting: &mut [bool]) -> Result<Value> {
        self.spend(1)?;
        let i = match item {
            Item::Leaf(v) => return Ok(v.clone()),
            Item::Global(g) => {
                return self.unsupported(format!(
                    "the global {g:?} itself (a class or function, not data)"
                ))
            }
            Item::Obj(i) => *i,
        };
        if depth >= self.max_depth
            && matches!(
                self.arena[i],
                Obj::List(_) | Obj::Tuple(_) | Obj::Dict(_) | Obj::Set(_) | Obj::FrozenSet(_)
            )
        {
            return Err(Error::TooDeep {
                max: self.max_depth,
            });
        }
        if visiting[i] {
            return Err(Error::Recursive { memo: i });
        }
        visiting[i] = true;
        let seq = |m: &mut Self, items: Vec<Item>, visiting: &mut [bool]| -> Result<Vec<Value>> {
            items
                .iter()
                .map(|it| m.resolve(it, depth + 1, visiting))
                .collect()
        };
        // The items are cloned (handles only) so that `self` can be borrowed mutably for
        // the budget; a shared object is resolved again wherever it recurs.
        let out = match &self.arena[i] {
            Obj::List(v) => {
                let v = v.clone();
                Value::List(seq(self, v, visiting)?)
            }
            Obj::Tuple(v) => {
                let v = v.clone();
                Value::Tuple(seq(self, v, visiting)?)
            }
            Obj::Set(v) => {
                let v = v.clone();
                let items = seq(self, v, visiting)?;
                Value::Set(self.all_hashable(items, "a set item")?)
            }
            Obj::FrozenSet(v) => {
                let v = v.clone();
                let items = seq(self, v, visiting)?;
                Value::FrozenSet(self.all_hashable(items, "a frozenset item")?)
            }
            Obj::Dict(d) => {
                let d = d.clone();
                let mut out = Vec::with_capacity(d.len());
                for (k, v) in &d {
                    let key = self.resolve(k, depth + 1, visiting)?;
                    let key = self.all_hashable(vec![key], "a dict key")?.remove(0);
                    out.push((key, self.resolve(v, depth + 1, visiting)?));
                }
                Value::Dict(out)
            }
            Obj::Array(a) => Value::Array(a.clone()),
            Obj::PendingArray => {
                return self.malformed("a numpy array whose state (BUILD) never came")
            }
            Obj::DType { .. } => return self.unsupported("a numpy dtype on its own, not an array"),
        };
        visiting[i] = false;
        Ok(out)
    }
}

/// A Python 2 `str` (protocol 0 to 2 STRING opcodes): text if it is UTF-8, else bytes.
fn py2_str(b: Bytes) -> Value {
    match Text::from_utf8(b.clone()) {
        Ok(t) => Value::Str(t),
        Err(_) => Value::Bytes(b),
    }
}

fn describe(item: &Item) -> String {
    match item {
        Item::Leaf(v) => format!("a {}", v.type_name()),
        Item::Obj(_) => "a container".into(),
        Item::Global(g) => format!("the global {g:?}"),
    }
}
