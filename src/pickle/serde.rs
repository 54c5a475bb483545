//! serde support (feature `serde`): `Serialize` types as pickles, `Deserialize` types from
//! [`Value`]s, and `Serialize` for [`Value`] itself (for JSON output, say).
//!
//! The serde data model is mapped to pickles by the `serde-pickle` crate: structs and maps
//! become `dict`s (fields in declaration order), sequences `list`s, tuples `tuple`s, `Option`
//! `None` or the value, unit enum variants their name as a `str`, other variants a
//! one-item dict `{'Variant': data}`, byte buffers (with `serde_bytes`) `bytes`.

use std::collections::{BTreeMap, BTreeSet};

use ::serde::de::DeserializeOwned;
use ::serde::ser::{SerializeMap, SerializeSeq};
use ::serde::{Serialize, Serializer};
use bytes::Bytes;
use serde_pickle::{HashableValue as HV, Value as SV};

use super::value::Value;
use super::{decode_bytes, Error, Result, DEFAULT_MAX_DEPTH};

fn serde_err(e: serde_pickle::Error) -> Error {
    Error::Serde(e.to_string())
}

/// The pickle (protocol 3) of any `Serialize` type, as Python unpickles it natively.
///
/// ```
/// #[derive(serde::Serialize)]
/// struct Settings { exposure: u32, gain: f64 }
///
/// let p = serpy::pickle::to_pickle(&Settings { exposure: 10, gain: 2.5 })?;
/// let v = serpy::pickle::decode(&p)?;
/// assert_eq!(v.to_string(), "{'exposure': 10, 'gain': 2.5}");
/// # Ok::<(), serpy::pickle::Error>(())
/// ```
pub fn to_pickle<T: Serialize + ?Sized>(value: &T) -> Result<Bytes> {
    serde_pickle::to_vec(&value, serde_pickle::SerOptions::new())
        .map(Bytes::from)
        .map_err(serde_err)
}

/// A `Serialize` type as a [`Value`] (what Python would unpickle from [`to_pickle`]).
///
/// ```
/// let v = serpy::pickle::to_value(&vec![(1, "a")])?;
/// assert_eq!(v.to_string(), "[(1, 'a')]");
/// # Ok::<(), serpy::pickle::Error>(())
/// ```
pub fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<Value> {
    decode_bytes(&to_pickle(value)?)
}

/// A `Deserialize` type from a [`Value`].
///
/// Python `int`s, `float`s, `str`, `bytes` (into `serde_bytes::ByteBuf`), lists, tuples,
/// dicts (into structs and maps), sets and `None` map as serde-pickle maps them; a
/// `complex` reads as the tuple `(re, im)`, and a numpy array as its `tolist()` (nested
/// lists of numbers: fine for small arrays, for large ones use [`Value::as_array`]).
///
/// ```
/// #[derive(serde::Deserialize, Debug, PartialEq)]
/// struct Settings { exposure: u32, gain: f64 }
///
/// // pickle.dumps({'exposure': 10, 'gain': 2.5}, protocol=4)
/// let p = b"\x80\x04\x95\x22\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x08exposure\x94K\n\x8c\x04gain\x94G@\x04\x00\x00\x00\x00\x00\x00u.";
/// let v = serpy::pickle::decode(p)?;
/// let s: Settings = serpy::pickle::from_value(&v)?;
/// assert_eq!(s, Settings { exposure: 10, gain: 2.5 });
/// # Ok::<(), serpy::pickle::Error>(())
/// ```
pub fn from_value<T: DeserializeOwned>(value: &Value) -> Result<T> {
    serde_pickle::from_value(to_serde_pickle(value, 0)?).map_err(serde_err)
}

fn too_deep() -> Error {
    Error::TooDeep {
        max: DEFAULT_MAX_DEPTH,
    }
}

fn to_serde_pickle(v: &Value, depth: usize) -> Result<SV> {
    if depth > DEFAULT_MAX_DEPTH {
        return Err(too_deep());
    }
    let seq = |items: &[Value]| -> Result<Vec<SV>> {
        items
            .iter()
            .map(|x| to_serde_pickle(x, depth + 1))
            .collect()
    };
    let set = |items: &[Value]| -> Result<BTreeSet<HV>> {
        items
            .iter()
            .map(|x| to_serde_pickle(x, depth + 1).and_then(hashable))
            .collect()
    };
    Ok(match v {
        Value::None => SV::None,
        Value::Bool(b) => SV::Bool(*b),
        Value::Int(i) => SV::I64(*i),
        Value::BigInt(b) => SV::Int(num_bigint::BigInt::from_signed_bytes_le(
            b.to_signed_bytes_le(),
        )),
        Value::Float(f) => SV::F64(*f),
        Value::Complex { re, im } => SV::Tuple(vec![SV::F64(*re), SV::F64(*im)]),
        Value::Str(s) => SV::String(s.as_str().to_owned()),
        Value::Bytes(b) | Value::ByteArray(b) => SV::Bytes(b.to_vec()),
        Value::List(items) => SV::List(seq(items)?),
        Value::Tuple(items) => SV::Tuple(seq(items)?),
        Value::Set(items) => SV::Set(set(items)?),
        Value::FrozenSet(items) => SV::FrozenSet(set(items)?),
        Value::Dict(items) => {
            let mut map = BTreeMap::new();
            for (k, x) in items {
                map.insert(
                    hashable(to_serde_pickle(k, depth + 1)?)?,
                    to_serde_pickle(x, depth + 1)?,
                );
            }
            SV::Dict(map)
        }
        Value::Array(a) => to_serde_pickle(&a.to_list(), depth)?,
    })
}

fn hashable(v: SV) -> Result<HV> {
    v.into_hashable().map_err(|_| Error::WrongType {
        expected: "a hashable value (a dict key or set item)",
        found: "list, dict or set".into(),
    })
}

impl Serialize for Value {
    /// The serde data model of the value: `None` as none, numbers as numbers (an int
    /// beyond u64 and i64 as its decimal text), `str` as a string, `bytes` as bytes,
    /// lists, tuples and sets as sequences, a complex as `[re, im]`, dicts as maps, arrays
    /// as their `tolist()`.
    ///
    /// ```
    /// use serpy::pickle::Value;
    /// let v = Value::dict([("a", Value::from(vec![1, 2]))]);
    /// assert_eq!(serde_json::to_string(&v).unwrap(), r#"{"a":[1,2]}"#);
    /// ```
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Value::None => s.serialize_none(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::BigInt(b) => match b.to_u64() {
                Some(u) => s.serialize_u64(u),
                None => s.serialize_str(&b.to_string()),
            },
            Value::Float(f) => s.serialize_f64(*f),
            Value::Complex { re, im } => {
                let mut seq = s.serialize_seq(Some(2))?;
                seq.serialize_element(re)?;
                seq.serialize_element(im)?;
                seq.end()
            }
            Value::Str(t) => s.serialize_str(t.as_str()),
            Value::Bytes(b) | Value::ByteArray(b) => s.serialize_bytes(b),
            Value::List(v) | Value::Tuple(v) | Value::Set(v) | Value::FrozenSet(v) => {
                let mut seq = s.serialize_seq(Some(v.len()))?;
                for x in v {
                    seq.serialize_element(x)?;
                }
                seq.end()
            }
            Value::Dict(d) => {
                let mut map = s.serialize_map(Some(d.len()))?;
                for (k, v) in d {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
            Value::Array(a) => a.to_list().serialize(s),
        }
    }
}
