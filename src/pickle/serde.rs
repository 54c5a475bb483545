//! serde support (feature `serde`): `Serialize` types as pickles, `Deserialize` types from
//! [`Value`]s, and `Serialize` for [`Value`] itself (for JSON output, say).
//!
//! Writing: the serde data model is mapped to pickles by the `serde-pickle` crate: structs and maps
//! become `dict`s (fields in declaration order), sequences `list`s, tuples `tuple`s, `Option`
//! `None` or the value, unit enum variants their name as a `str`, other variants a
//! one-item dict `{'Variant': data}`, byte buffers (with `serde_bytes`) `bytes`.
//!
//! Reading: a serde `Deserializer` over [`Value`], hand-written because serde-pickle's
//! refuses ints beyond i64 (a u64 above `i64::MAX`) and would need a copy of the value.

use std::fmt;

use ::serde::de::{self, DeserializeOwned, Deserializer as _};
use ::serde::ser::{SerializeMap, SerializeSeq};
use ::serde::{forward_to_deserialize_any, Serialize, Serializer};
use bytes::Bytes;

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
/// Python `int`s (any that fit the Rust type: u64 and i128 beyond i64 too), `float`s,
/// `str`, `bytes` (into `serde_bytes::ByteBuf`), lists, tuples, sets, dicts (into
/// structs and maps) and `None` (into `Option`) are read as serde expects; an enum from
/// its variant name (`'Idle'`) or a one-item dict (`{'Busy': 3}`), as [`to_pickle`]
/// writes them; a `complex` as the tuple `(re, im)`; a numpy array as its `tolist()`
/// (nested lists of numbers: fine for small arrays, for large ones use
/// [`Value::as_array`]).
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
    T::deserialize(ValueDe { value, depth: 0 })
}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error::Serde(msg.to_string())
    }
}

/// A serde `Deserializer` over a borrowed [`Value`] (every `T` read is owned, so the
/// lifetime of the value does not matter).
#[derive(Clone, Copy)]
struct ValueDe<'a> {
    value: &'a Value,
    depth: usize,
}

impl<'a> ValueDe<'a> {
    fn child(&self, value: &'a Value) -> Result<ValueDe<'a>> {
        if self.depth >= DEFAULT_MAX_DEPTH {
            return Err(Error::TooDeep {
                max: DEFAULT_MAX_DEPTH,
            });
        }
        Ok(ValueDe {
            value,
            depth: self.depth + 1,
        })
    }
}

struct Seq<'a> {
    parent: ValueDe<'a>,
    items: std::slice::Iter<'a, Value>,
}

impl<'de> de::SeqAccess<'de> for Seq<'_> {
    type Error = Error;
    fn next_element_seed<S: de::DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>> {
        match self.items.next() {
            Some(v) => seed.deserialize(self.parent.child(v)?).map(Some),
            None => Ok(None),
        }
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct Map<'a> {
    parent: ValueDe<'a>,
    items: std::slice::Iter<'a, (Value, Value)>,
    value: Option<&'a Value>,
}

impl<'de> de::MapAccess<'de> for Map<'_> {
    type Error = Error;
    fn next_key_seed<K: de::DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        match self.items.next() {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(self.parent.child(k)?).map(Some)
            }
            None => Ok(None),
        }
    }
    fn next_value_seed<V: de::DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        match self.value.take() {
            Some(v) => seed.deserialize(self.parent.child(v)?),
            None => Err(Error::Serde(
                "a map value was asked for before its key".into(),
            )),
        }
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

/// An enum as `{'Variant': data}`, `('Variant', data)`, or `'Variant'` for a unit variant.
struct Enum<'a> {
    parent: ValueDe<'a>,
    name: &'a Value,
    data: Option<&'a Value>,
}

impl<'de> de::EnumAccess<'de> for Enum<'_> {
    type Error = Error;
    type Variant = Self;
    fn variant_seed<V: de::DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self)> {
        let v = seed.deserialize(self.parent.child(self.name)?)?;
        Ok((v, self))
    }
}

impl<'de> de::VariantAccess<'de> for Enum<'_> {
    type Error = Error;
    fn unit_variant(self) -> Result<()> {
        match self.data {
            None | Some(Value::None) => Ok(()),
            Some(v) => Err(Error::Serde(format!(
                "a unit variant with data ({})",
                v.type_name()
            ))),
        }
    }
    fn newtype_variant_seed<T: de::DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value> {
        match self.data {
            Some(v) => seed.deserialize(self.parent.child(v)?),
            None => Err(Error::Serde("a newtype variant without data".into())),
        }
    }
    fn tuple_variant<V: de::Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value> {
        match self.data {
            Some(v) => self.parent.child(v)?.deserialize_any(visitor),
            None => Err(Error::Serde("a tuple variant without data".into())),
        }
    }
    fn struct_variant<V: de::Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        match self.data {
            Some(v) => self.parent.child(v)?.deserialize_any(visitor),
            None => Err(Error::Serde("a struct variant without data".into())),
        }
    }
}

impl<'de> de::Deserializer<'de> for ValueDe<'_> {
    type Error = Error;

    fn deserialize_any<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.value {
            Value::None => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => visitor.visit_i64(*i),
            Value::BigInt(b) => {
                if let Some(u) = b.to_u64() {
                    visitor.visit_u64(u)
                } else if let Some(i) = b.to_i128() {
                    visitor.visit_i128(i)
                } else if let Some(u) = b.to_u128() {
                    visitor.visit_u128(u)
                } else {
                    Err(Error::Serde(format!(
                        "the integer {b} does not fit in 128 bits"
                    )))
                }
            }
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Complex { re, im } => {
                let parts = [Value::Float(*re), Value::Float(*im)];
                visitor.visit_seq(Seq {
                    parent: self,
                    items: parts.iter(),
                })
            }
            Value::Str(s) => visitor.visit_str(s.as_str()),
            Value::Bytes(b) | Value::ByteArray(b) => visitor.visit_bytes(b),
            Value::List(v) | Value::Tuple(v) | Value::Set(v) | Value::FrozenSet(v) => visitor
                .visit_seq(Seq {
                    parent: self,
                    items: v.iter(),
                }),
            Value::Dict(d) => visitor.visit_map(Map {
                parent: self,
                items: d.iter(),
                value: None,
            }),
            Value::Array(a) => {
                let list = a.to_list();
                ValueDe {
                    value: &list,
                    depth: self.depth,
                }
                .deserialize_any(visitor)
            }
        }
    }

    fn deserialize_option<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.value {
            Value::None => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        match self.value {
            Value::Str(_) => visitor.visit_enum(Enum {
                parent: self,
                name: self.value,
                data: None,
            }),
            Value::Dict(d) if d.len() == 1 => visitor.visit_enum(Enum {
                parent: self,
                name: &d[0].0,
                data: Some(&d[0].1),
            }),
            // serde-pickle's compat form: ('Variant', data).
            Value::Tuple(t) if (1..=2).contains(&t.len()) => visitor.visit_enum(Enum {
                parent: self,
                name: &t[0],
                data: t.get(1),
            }),
            v => Err(Error::WrongType {
                expected: "an enum (a str, or a dict of one item)",
                found: v.type_name().to_string(),
            }),
        }
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
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
