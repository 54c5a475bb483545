//! [`Value`]: what a pickle holds, and [`BigInt`] for integers beyond 64 bits.

use std::fmt;

use bytes::Bytes;

use super::numpy::Array;
use super::{Error, Result};
use crate::message::Text;

/// A Python value as a pickle carries it (see the [module docs](super) for the table).
///
/// Strings and bytes share the bytes of the message they were read from; dicts keep
/// their insertion order (two dicts are equal when their items are equal in order).
/// `==` follows f64: a value holding a NaN is not equal to itself.
///
/// ```
/// use serpy::pickle::Value;
///
/// let v = Value::dict([("exposure", Value::from(10)), ("gain", Value::from(2.5))]);
/// assert_eq!(v.get("gain").and_then(Value::as_f64), Some(2.5));
/// assert_eq!(v.type_name(), "dict");
/// assert_eq!(Value::from(vec![1, 2]).to_string(), "[1, 2]");
/// assert_eq!(i64::try_from(Value::from(7)).unwrap(), 7);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An `int` that fits in an i64.
    Int(i64),
    /// An `int` beyond i64 (Python ints have no limit).
    BigInt(BigInt),
    /// A `float`.
    Float(f64),
    /// A `complex`.
    Complex {
        /// Real part.
        re: f64,
        /// Imaginary part.
        im: f64,
    },
    /// A `str`.
    Str(Text),
    /// A `bytes`.
    Bytes(Bytes),
    /// A `bytearray`.
    ByteArray(Bytes),
    /// A `list`.
    List(Vec<Value>),
    /// A `tuple`.
    Tuple(Vec<Value>),
    /// A `dict`, as its items in insertion order.
    Dict(Vec<(Value, Value)>),
    /// A `set`.
    Set(Vec<Value>),
    /// A `frozenset`.
    FrozenSet(Vec<Value>),
    /// A `numpy.ndarray`.
    Array(Array),
}

impl Value {
    /// A dict from `(key, value)` pairs, keeping their order.
    ///
    /// ```
    /// use serpy::pickle::Value;
    /// let d = Value::dict([("a", 1), ("b", 2)]);
    /// assert_eq!(d.to_string(), "{'a': 1, 'b': 2}");
    /// ```
    pub fn dict<K: Into<Value>, V: Into<Value>>(items: impl IntoIterator<Item = (K, V)>) -> Value {
        Value::Dict(
            items
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// The Python type name: `"int"`, `"str"`, `"dict"`, `"numpy.ndarray"`, ...
    ///
    /// ```
    /// assert_eq!(serpy::pickle::Value::from("x").type_name(), "str");
    /// ```
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "NoneType",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt(_) => "int",
            Value::Float(_) => "float",
            Value::Complex { .. } => "complex",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::ByteArray(_) => "bytearray",
            Value::List(_) => "list",
            Value::Tuple(_) => "tuple",
            Value::Dict(_) => "dict",
            Value::Set(_) => "set",
            Value::FrozenSet(_) => "frozenset",
            Value::Array(_) => "numpy.ndarray",
        }
    }

    /// True for `None`.
    ///
    /// ```
    /// assert!(serpy::pickle::Value::None.is_none());
    /// ```
    pub fn is_none(&self) -> bool {
        matches!(self, Value::None)
    }

    /// The value of a `bool`.
    ///
    /// ```
    /// use serpy::pickle::Value;
    /// assert_eq!(Value::Bool(true).as_bool(), Some(true));
    /// assert_eq!(Value::Int(1).as_bool(), None);
    /// ```
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The value of an `int` that fits in an i64 (a `bool` is not an int here).
    ///
    /// ```
    /// use serpy::pickle::Value;
    /// assert_eq!(Value::from(-3).as_i64(), Some(-3));
    /// assert_eq!(Value::from(u64::MAX).as_i64(), None);
    /// ```
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::BigInt(b) => b.to_i64(),
            _ => None,
        }
    }

    /// The value of an `int` from 0 to `u64::MAX`.
    ///
    /// ```
    /// use serpy::pickle::Value;
    /// assert_eq!(Value::from(u64::MAX).as_u64(), Some(u64::MAX));
    /// assert_eq!(Value::from(-1).as_u64(), None);
    /// ```
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Int(i) => u64::try_from(*i).ok(),
            Value::BigInt(b) => b.to_u64(),
            _ => None,
        }
    }

    /// The value of a `float`, or of an `int` as a float.
    ///
    /// ```
    /// use serpy::pickle::Value;
    /// assert_eq!(Value::Float(2.5).as_f64(), Some(2.5));
    /// assert_eq!(Value::Int(2).as_f64(), Some(2.0));
    /// ```
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            Value::BigInt(b) => Some(b.to_f64()),
            _ => None,
        }
    }

    /// The text of a `str`.
    ///
    /// ```
    /// assert_eq!(serpy::pickle::Value::from("µ").as_str(), Some("µ"));
    /// ```
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(t) => Some(t.as_str()),
            _ => None,
        }
    }

    /// The bytes of a `bytes` or `bytearray` (shared, not copied).
    ///
    /// ```
    /// use serpy::pickle::Value;
    /// let v = Value::ByteArray(bytes::Bytes::from_static(b"ab"));
    /// assert_eq!(v.as_bytes().map(|b| &b[..]), Some(&b"ab"[..]));
    /// ```
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Value::Bytes(b) | Value::ByteArray(b) => Some(b),
            _ => None,
        }
    }

    /// The items of a `list`, `tuple`, `set` or `frozenset`.
    ///
    /// ```
    /// use serpy::pickle::Value;
    /// assert_eq!(Value::from(vec![1, 2]).as_slice().map(|s| s.len()), Some(2));
    /// ```
    pub fn as_slice(&self) -> Option<&[Value]> {
        match self {
            Value::List(v) | Value::Tuple(v) | Value::Set(v) | Value::FrozenSet(v) => Some(v),
            _ => None,
        }
    }

    /// The items of a `dict`, in insertion order.
    ///
    /// ```
    /// use serpy::pickle::Value;
    /// let d = Value::dict([("a", 1)]);
    /// assert_eq!(d.as_dict(), Some(&[(Value::from("a"), Value::from(1))][..]));
    /// ```
    pub fn as_dict(&self) -> Option<&[(Value, Value)]> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// The numpy array.
    ///
    /// ```
    /// use serpy::pickle::{Array, Value};
    /// let v = Value::from(Array::from_slice(&[1u8, 2], &[2]).unwrap());
    /// assert_eq!(v.as_array().map(|a| a.shape().to_vec()), Some(vec![2]));
    /// ```
    pub fn as_array(&self) -> Option<&Array> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The value of a dict's `str` key (the last one, if a pickle repeats it).
    ///
    /// ```
    /// use serpy::pickle::Value;
    /// let d = Value::dict([("gain", 2.5)]);
    /// assert_eq!(d.get("gain"), Some(&Value::Float(2.5)));
    /// assert_eq!(d.get("offset"), None);
    /// ```
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_dict()?
            .iter()
            .rev()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// True for the values Python can hash, which alone can be dict keys and set items:
    /// not lists, dicts, sets, bytearrays or arrays, nor tuples holding one.
    ///
    /// ```
    /// use serpy::pickle::Value;
    /// assert!(Value::Tuple(vec![1.into(), "a".into()]).is_hashable());
    /// assert!(!Value::Tuple(vec![Value::List(vec![])]).is_hashable());
    /// ```
    pub fn is_hashable(&self) -> bool {
        match self {
            Value::List(_)
            | Value::Dict(_)
            | Value::Set(_)
            | Value::ByteArray(_)
            | Value::Array(_) => false,
            Value::Tuple(items) => items.iter().all(Value::is_hashable),
            _ => true,
        }
    }

    fn wrong(&self, expected: &'static str) -> Error {
        Error::WrongType {
            expected,
            found: self.type_name().to_string(),
        }
    }
}

// ---- conversions into Value ----

macro_rules! from_small_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Self {
                Value::Int(i64::from(v))
            }
        }
    )*};
}
from_small_int!(i8, i16, i32, i64, u8, u16, u32);

impl From<u64> for Value {
    /// An `Int`, or a `BigInt` beyond `i64::MAX` (Python ints have no limit).
    fn from(v: u64) -> Self {
        match i64::try_from(v) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::BigInt(BigInt::from(v)),
        }
    }
}

impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Value::from(v as u64)
    }
}

impl From<i128> for Value {
    fn from(v: i128) -> Self {
        match i64::try_from(v) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::BigInt(BigInt::from(v)),
        }
    }
}

impl From<u128> for Value {
    fn from(v: u128) -> Self {
        match i64::try_from(v) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::BigInt(BigInt::from(v)),
        }
    }
}

impl From<BigInt> for Value {
    /// Normalised: an `Int` where the number fits in an i64.
    fn from(v: BigInt) -> Self {
        match v.to_i64() {
            Some(i) => Value::Int(i),
            None => Value::BigInt(v),
        }
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

impl From<f32> for Value {
    fn from(v: f32) -> Self {
        Value::Float(f64::from(v))
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(Text::from(v))
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(Text::from(v))
    }
}

impl From<Text> for Value {
    fn from(v: Text) -> Self {
        Value::Str(v)
    }
}

impl From<Bytes> for Value {
    /// A `bytes`.
    fn from(v: Bytes) -> Self {
        Value::Bytes(v)
    }
}

impl From<&[u8]> for Value {
    /// A `bytes`.
    fn from(v: &[u8]) -> Self {
        Value::Bytes(Bytes::copy_from_slice(v))
    }
}

impl From<Array> for Value {
    fn from(v: Array) -> Self {
        Value::Array(v)
    }
}

impl From<()> for Value {
    /// `None`.
    fn from(_: ()) -> Self {
        Value::None
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    /// `None`, or the value.
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::None, Into::into)
    }
}

impl<T: Into<Value>> From<Vec<T>> for Value {
    /// A `list` (use [`Value::Bytes`] for `bytes`).
    fn from(v: Vec<T>) -> Self {
        Value::List(v.into_iter().map(Into::into).collect())
    }
}

impl<T: Into<Value>> FromIterator<T> for Value {
    /// A `list`.
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        Value::List(iter.into_iter().map(Into::into).collect())
    }
}

// ---- conversions out of Value ----

impl TryFrom<Value> for i64 {
    type Error = Error;
    /// An `int` that fits.
    fn try_from(v: Value) -> Result<i64> {
        v.as_i64().ok_or_else(|| v.wrong("an i64"))
    }
}

impl TryFrom<Value> for u64 {
    type Error = Error;
    /// An `int` from 0 to `u64::MAX`.
    fn try_from(v: Value) -> Result<u64> {
        v.as_u64().ok_or_else(|| v.wrong("a u64"))
    }
}

impl TryFrom<Value> for f64 {
    type Error = Error;
    /// A `float` or an `int`.
    fn try_from(v: Value) -> Result<f64> {
        v.as_f64().ok_or_else(|| v.wrong("an f64"))
    }
}

impl TryFrom<Value> for bool {
    type Error = Error;
    /// A `bool`.
    fn try_from(v: Value) -> Result<bool> {
        v.as_bool().ok_or_else(|| v.wrong("a bool"))
    }
}

impl TryFrom<Value> for String {
    type Error = Error;
    /// A `str`.
    fn try_from(v: Value) -> Result<String> {
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| v.wrong("a str"))
    }
}

impl TryFrom<Value> for Bytes {
    type Error = Error;
    /// A `bytes` or `bytearray`, without a copy.
    fn try_from(v: Value) -> Result<Bytes> {
        match v {
            Value::Bytes(b) | Value::ByteArray(b) => Ok(b),
            other => Err(other.wrong("bytes")),
        }
    }
}

impl TryFrom<Value> for Array {
    type Error = Error;
    /// A numpy array.
    fn try_from(v: Value) -> Result<Array> {
        match v {
            Value::Array(a) => Ok(a),
            other => Err(other.wrong("a numpy array")),
        }
    }
}

// ---- Display: Python's repr ----

impl fmt::Display for Value {
    /// Python's `repr()` of the value (arrays as numpy prints them, cut after 64 items).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::None => f.write_str("None"),
            Value::Bool(true) => f.write_str("True"),
            Value::Bool(false) => f.write_str("False"),
            Value::Int(i) => write!(f, "{i}"),
            Value::BigInt(b) => write!(f, "{b}"),
            Value::Float(x) => f.write_str(&crate::protocol::python_float_repr(*x)),
            Value::Complex { re, im } => write_complex(f, *re, *im),
            Value::Str(s) => write_str_repr(f, s.as_str()),
            Value::Bytes(b) => write_bytes_repr(f, b),
            Value::ByteArray(b) => {
                f.write_str("bytearray(")?;
                write_bytes_repr(f, b)?;
                f.write_str(")")
            }
            Value::List(v) => write_seq(f, "[", v, "]"),
            Value::Tuple(v) if v.len() == 1 => write!(f, "({},)", v[0]),
            Value::Tuple(v) => write_seq(f, "(", v, ")"),
            Value::Set(v) if v.is_empty() => f.write_str("set()"),
            Value::Set(v) => write_seq(f, "{", v, "}"),
            Value::FrozenSet(v) if v.is_empty() => f.write_str("frozenset()"),
            Value::FrozenSet(v) => {
                f.write_str("frozenset(")?;
                write_seq(f, "{", v, "}")?;
                f.write_str(")")
            }
            Value::Dict(d) => {
                f.write_str("{")?;
                for (i, (k, v)) in d.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                f.write_str("}")
            }
            Value::Array(a) => fmt::Display::fmt(a, f),
        }
    }
}

pub(super) fn write_complex(f: &mut fmt::Formatter<'_>, re: f64, im: f64) -> fmt::Result {
    let r = crate::protocol::python_float_repr;
    let trim = |s: String| s.strip_suffix(".0").map(str::to_owned).unwrap_or(s);
    if re == 0.0 && re.is_sign_positive() {
        write!(f, "{}j", trim(r(im)))
    } else {
        let sign = if im.is_sign_negative() && !im.is_nan() {
            "-"
        } else {
            "+"
        };
        write!(f, "({}{sign}{}j)", trim(r(re)), trim(r(im.abs())))
    }
}

fn write_seq(f: &mut fmt::Formatter<'_>, open: &str, v: &[Value], close: &str) -> fmt::Result {
    f.write_str(open)?;
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{x}")?;
    }
    f.write_str(close)
}

fn write_str_repr(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    write!(f, "{quote}")?;
    for c in s.chars() {
        match c {
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if c == quote => write!(f, "\\{c}")?,
            c if (c as u32) < 0x20 || c as u32 == 0x7f => write!(f, "\\x{:02x}", c as u32)?,
            c => write!(f, "{c}")?,
        }
    }
    write!(f, "{quote}")
}

fn write_bytes_repr(f: &mut fmt::Formatter<'_>, b: &[u8]) -> fmt::Result {
    let quote = if b.contains(&b'\'') && !b.contains(&b'"') {
        b'"'
    } else {
        b'\''
    };
    write!(f, "b{}", quote as char)?;
    for &c in b {
        match c {
            b'\\' => f.write_str("\\\\")?,
            b'\n' => f.write_str("\\n")?,
            b'\r' => f.write_str("\\r")?,
            b'\t' => f.write_str("\\t")?,
            c if c == quote => write!(f, "\\{}", c as char)?,
            0x20..=0x7e => write!(f, "{}", c as char)?,
            c => write!(f, "\\x{c:02x}")?,
        }
    }
    write!(f, "{}", quote as char)
}

// ---- BigInt ----

/// An integer of any size, as Python's `int` (two's complement, little endian).
///
/// Only what a message needs: conversion to and from the machine integers, bytes,
/// decimal text, and an f64 approximation. Arithmetic is left to a big-number crate.
///
/// ```
/// use serpy::pickle::BigInt;
///
/// let b = BigInt::from(u64::MAX);
/// assert_eq!(b.to_string(), "18446744073709551615");
/// assert_eq!(b.to_u64(), Some(u64::MAX));
/// assert_eq!(b.to_i64(), None);
/// let big: BigInt = "-1180591620717411303424".parse().unwrap(); // -2**70
/// assert_eq!(big.to_signed_bytes_le(), &[0, 0, 0, 0, 0, 0, 0, 0, 0xc0]);
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BigInt {
    /// Minimal two's complement, little endian; at least one byte.
    le: Bytes,
}

/// Python refuses to convert ints of more decimal digits than this (since 3.11), because
/// the conversion takes quadratic time; this crate does the same.
const MAX_DECIMAL_DIGITS: usize = 4300;

impl BigInt {
    /// From two's complement, little endian bytes (as pickle's LONG1 and LONG4 carry them);
    /// empty bytes are zero.
    pub fn from_signed_bytes_le(bytes: &[u8]) -> BigInt {
        Self::from_le_bytes_shared(Bytes::copy_from_slice(bytes))
    }

    /// As `from_signed_bytes_le`, without a copy where the bytes are already minimal.
    pub(super) fn from_le_bytes_shared(bytes: Bytes) -> BigInt {
        let n = minimal_len(&bytes);
        if n == 0 {
            return BigInt {
                le: Bytes::from_static(&[0]),
            };
        }
        BigInt {
            le: bytes.slice(..n),
        }
    }

    /// Minimal two's complement, little endian.
    pub fn to_signed_bytes_le(&self) -> &[u8] {
        &self.le
    }

    /// True below zero.
    pub fn is_negative(&self) -> bool {
        self.le.last().is_some_and(|b| b & 0x80 != 0)
    }

    /// The value as an i128, if it fits.
    pub fn to_i128(&self) -> Option<i128> {
        if self.le.len() > 16 {
            return None;
        }
        let fill = if self.is_negative() { 0xFF } else { 0 };
        let mut buf = [fill; 16];
        buf[..self.le.len()].copy_from_slice(&self.le);
        Some(i128::from_le_bytes(buf))
    }

    /// The value as an i64, if it fits.
    pub fn to_i64(&self) -> Option<i64> {
        self.to_i128().and_then(|v| i64::try_from(v).ok())
    }

    /// The value as a u64, if it fits.
    pub fn to_u64(&self) -> Option<u64> {
        self.to_u128().and_then(|v| u64::try_from(v).ok())
    }

    /// The value as a u128, if it fits.
    pub fn to_u128(&self) -> Option<u128> {
        if self.is_negative() || self.le.len() > 17 || (self.le.len() == 17 && self.le[16] != 0) {
            return None;
        }
        let mut buf = [0u8; 16];
        let n = self.le.len().min(16);
        buf[..n].copy_from_slice(&self.le[..n]);
        Some(u128::from_le_bytes(buf))
    }

    /// The nearest f64 (infinite beyond f64's range).
    pub fn to_f64(&self) -> f64 {
        let (neg, mag) = self.magnitude();
        let mut x = 0.0f64;
        for limb in mag.iter().rev() {
            x = x * 4294967296.0 + f64::from(*limb);
        }
        if neg {
            -x
        } else {
            x
        }
    }

    /// Sign and magnitude as little-endian u32 limbs.
    fn magnitude(&self) -> (bool, Vec<u32>) {
        let neg = self.is_negative();
        let mut bytes = self.le.to_vec();
        if neg {
            // Two's complement negation: invert and add one.
            let mut carry = true;
            for b in &mut bytes {
                let (v, c) = (!*b).overflowing_add(u8::from(carry));
                *b = v;
                carry = c;
            }
        }
        let limbs = bytes
            .chunks(4)
            .map(|c| {
                let mut w = [0u8; 4];
                w[..c.len()].copy_from_slice(c);
                u32::from_le_bytes(w)
            })
            .collect();
        (neg, limbs)
    }

    fn from_magnitude(neg: bool, mut limbs: Vec<u32>) -> BigInt {
        while limbs.last() == Some(&0) {
            limbs.pop();
        }
        let mut bytes: Vec<u8> = limbs.iter().flat_map(|l| l.to_le_bytes()).collect();
        bytes.push(0); // room for the sign bit
        if neg {
            let mut carry = true;
            for b in &mut bytes {
                let (v, c) = (!*b).overflowing_add(u8::from(carry));
                *b = v;
                carry = c;
            }
        }
        BigInt::from_signed_bytes_le(&bytes)
    }
}

/// The shortest length of `b` that keeps its two's complement value.
fn minimal_len(b: &[u8]) -> usize {
    let mut n = b.len();
    while n > 1 {
        let (top, below) = (b[n - 1], b[n - 2]);
        if (top == 0x00 && below & 0x80 == 0) || (top == 0xFF && below & 0x80 != 0) {
            n -= 1;
        } else {
            break;
        }
    }
    if n == 1 && b[0] == 0 {
        // Zero is kept as one byte by the caller.
        return 1;
    }
    n
}

impl From<i128> for BigInt {
    fn from(v: i128) -> Self {
        BigInt::from_signed_bytes_le(&v.to_le_bytes())
    }
}

impl From<u128> for BigInt {
    fn from(v: u128) -> Self {
        let mut b = v.to_le_bytes().to_vec();
        b.push(0);
        BigInt::from_signed_bytes_le(&b)
    }
}

impl From<i64> for BigInt {
    fn from(v: i64) -> Self {
        BigInt::from(i128::from(v))
    }
}

impl From<u64> for BigInt {
    fn from(v: u64) -> Self {
        BigInt::from(i128::from(v))
    }
}

impl fmt::Display for BigInt {
    /// Decimal; numbers of more than 4300 digits (which Python refuses to print) in hexadecimal.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (neg, mut mag) = self.magnitude();
        let sign = if neg { "-" } else { "" };
        if mag.len() * 32 > MAX_DECIMAL_DIGITS * 3 {
            // 3 bits per decimal digit is an under-estimate: such numbers have > 4300 digits.
            write!(f, "{sign}0x")?;
            let mut first = true;
            for limb in mag.iter().rev() {
                if first {
                    write!(f, "{limb:x}")?;
                    first = false;
                } else {
                    write!(f, "{limb:08x}")?;
                }
            }
            return Ok(());
        }
        let mut chunks = Vec::new(); // base 10^9, least significant first
        while mag.iter().any(|&l| l != 0) {
            let mut rem = 0u64;
            for limb in mag.iter_mut().rev() {
                let cur = (rem << 32) | u64::from(*limb);
                *limb = (cur / 1_000_000_000) as u32;
                rem = cur % 1_000_000_000;
            }
            chunks.push(rem as u32);
            while mag.last() == Some(&0) {
                mag.pop();
            }
        }
        match chunks.split_last() {
            None => f.write_str("0"),
            Some((top, rest)) => {
                write!(f, "{sign}{top}")?;
                for c in rest.iter().rev() {
                    write!(f, "{c:09}")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Debug for BigInt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BigInt({self})")
    }
}

impl std::str::FromStr for BigInt {
    type Err = Error;
    /// Decimal text with an optional sign (and `_` separators, as Python allows); at most
    /// 4300 digits, as Python.
    fn from_str(s: &str) -> Result<BigInt> {
        let bad = |detail: String| Error::Malformed { detail, at: 0 };
        let t = s.trim();
        let (neg, digits) = match t.as_bytes().first() {
            Some(b'-') => (true, &t[1..]),
            Some(b'+') => (false, &t[1..]),
            _ => (false, t),
        };
        let digits: Vec<u8> = digits.bytes().filter(|&c| c != b'_').collect();
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(bad(format!(
                "{:?} is not a decimal integer",
                crate::error::lossy_excerpt(s.as_bytes())
            )));
        }
        if digits.len() > MAX_DECIMAL_DIGITS {
            return Err(bad(format!(
                "an integer of {} decimal digits is longer than the {MAX_DECIMAL_DIGITS} that Python itself converts",
                digits.len()
            )));
        }
        let mut limbs: Vec<u32> = Vec::new();
        for chunk in digits.chunks(9) {
            let mut mul = 1u64;
            let mut add = 0u64;
            for &d in chunk {
                mul *= 10;
                add = add * 10 + u64::from(d - b'0');
            }
            let mut carry = add;
            for l in &mut limbs {
                let cur = u64::from(*l) * mul + carry;
                *l = cur as u32;
                carry = cur >> 32;
            }
            if carry > 0 {
                limbs.push(carry as u32);
            }
        }
        Ok(BigInt::from_magnitude(neg, limbs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bigint_text_round_trips() {
        for s in [
            "0",
            "1",
            "-1",
            "127",
            "128",
            "-128",
            "-129",
            "9223372036854775808",
            "-9223372036854775809",
            "18446744073709551615",
            "1180591620717411303424",
            "-1180591620717411303424",
            "123456789012345678901234567890123456789012345678901234567890",
        ] {
            let b: BigInt = s.parse().unwrap();
            assert_eq!(b.to_string(), s);
        }
        assert_eq!(BigInt::from(-129i64).to_signed_bytes_le(), &[0x7f, 0xff]);
        assert_eq!(BigInt::from(128u64).to_signed_bytes_le(), &[0x80, 0]);
        assert_eq!(BigInt::from_signed_bytes_le(&[]).to_string(), "0");
        assert_eq!(BigInt::from(i128::MIN).to_i128(), Some(i128::MIN));
        assert_eq!(BigInt::from(u128::MAX).to_u128(), Some(u128::MAX));
        assert_eq!(BigInt::from(u128::MAX).to_i128(), None);
        assert!(("1".repeat(4301)).parse::<BigInt>().is_err());
        assert!("12a".parse::<BigInt>().is_err());
        assert_eq!(BigInt::from(1u64 << 63).to_f64(), 9223372036854775808.0);
    }

    #[test]
    fn reprs_are_pythons() {
        let v = Value::Tuple(vec![
            Value::None,
            Value::Bool(true),
            Value::Float(1.0),
            Value::from("it's"),
            Value::Bytes(Bytes::from_static(b"a\x00'")),
            Value::ByteArray(Bytes::from_static(b"x")),
            Value::Set(vec![]),
            Value::FrozenSet(vec![1.into()]),
            Value::Complex { re: 1.0, im: -2.0 },
            Value::Complex { re: 0.0, im: 1.5 },
            Value::Tuple(vec![1.into()]),
        ]);
        assert_eq!(
            v.to_string(),
            r#"(None, True, 1.0, "it's", b"a\x00'", bytearray(b'x'), set(), frozenset({1}), (1-2j), 1.5j, (1,))"#
        );
    }
}
