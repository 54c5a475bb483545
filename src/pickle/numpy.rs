//! numpy arrays: [`Array`], its [`DType`], and typed views of the data.

use std::fmt;

use bytes::Bytes;

use super::value::Value;
use super::{Error, Result};

/// The most dimensions an array may have (numpy 2 allows 64, numpy 1 allows 32).
pub const MAX_DIMS: usize = 64;

/// An empty array's dimensions before its first zero may multiply to at most this, so that
/// [`Array::to_list`] of a shape such as `(10**18, 0)` stays small.
const MAX_EMPTY_OUTER: usize = 1 << 20;

/// The kind of a numpy dtype.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `bool` (`b1`).
    Bool,
    /// Signed integers (`i1`, `i2`, `i4`, `i8`).
    Int,
    /// Unsigned integers (`u1`, `u2`, `u4`, `u8`).
    UInt,
    /// Floats (`f2`, `f4`, `f8`).
    Float,
    /// Complex numbers (`c8`, `c16`): two floats, real then imaginary.
    Complex,
}

/// The byte order of an array's items.
///
/// ```
/// use serpy::pickle::ByteOrder;
/// assert_eq!(ByteOrder::NATIVE, if cfg!(target_endian = "little") { ByteOrder::Little } else { ByteOrder::Big });
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ByteOrder {
    /// Least significant byte first (`<`; what x86 and ARM machines use).
    Little,
    /// Most significant byte first (`>`).
    Big,
}

impl ByteOrder {
    /// The byte order of this machine.
    pub const NATIVE: ByteOrder = if cfg!(target_endian = "little") {
        ByteOrder::Little
    } else {
        ByteOrder::Big
    };
}

/// A numpy dtype of the kinds this crate reads: bool, integers, floats, complex.
///
/// ```
/// use serpy::pickle::{ByteOrder, DType, Kind};
///
/// let d: DType = ">u2".parse().unwrap();
/// assert_eq!((d.kind, d.size, d.order), (Kind::UInt, 2, ByteOrder::Big));
/// assert_eq!(d.to_string(), ">u2");
/// assert_eq!(d.name(), "uint16");
/// assert_eq!(DType::of::<f32>().to_string(), "<f4");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DType {
    /// What the items are.
    pub kind: Kind,
    /// Bytes per item.
    pub size: usize,
    /// Byte order of the items (for one-byte items it does not matter; it is `Little`).
    pub order: ByteOrder,
}

impl DType {
    /// A dtype, checked: the size must be one that numpy has for the kind.
    ///
    /// ```
    /// use serpy::pickle::{ByteOrder, DType, Kind};
    /// assert!(DType::new(Kind::Float, 4, ByteOrder::Big).is_ok());
    /// assert!(DType::new(Kind::Float, 3, ByteOrder::Big).is_err());
    /// ```
    pub fn new(kind: Kind, size: usize, order: ByteOrder) -> Result<DType> {
        let ok = match kind {
            Kind::Bool => size == 1,
            Kind::Int | Kind::UInt => matches!(size, 1 | 2 | 4 | 8),
            Kind::Float => matches!(size, 2 | 4 | 8),
            Kind::Complex => matches!(size, 8 | 16),
        };
        if !ok {
            return Err(Error::Unsupported {
                what: format!("a {kind:?} dtype of {size} bytes is not supported (bool, int and uint of 1 to 8 bytes, float of 2, 4 or 8, complex of 8 or 16 are)"),
                at: 0,
            });
        }
        let order = if size == 1 { ByteOrder::Little } else { order };
        Ok(DType { kind, size, order })
    }

    /// The dtype of `T` in this machine's byte order.
    pub fn of<T: Element>() -> DType {
        DType {
            kind: T::KIND,
            size: std::mem::size_of::<T>(),
            order: if std::mem::size_of::<T>() == 1 {
                ByteOrder::Little
            } else {
                ByteOrder::NATIVE
            },
        }
    }

    /// numpy's name: `"uint16"`, `"float64"`, `"complex128"`, `"bool"`.
    pub fn name(&self) -> String {
        match self.kind {
            Kind::Bool => "bool".into(),
            Kind::Int => format!("int{}", self.size * 8),
            Kind::UInt => format!("uint{}", self.size * 8),
            Kind::Float => format!("float{}", self.size * 8),
            Kind::Complex => format!("complex{}", self.size * 8),
        }
    }

    /// The type code numpy pickles, without byte order: `"u2"`, `"f8"`, `"b1"`.
    pub fn code(&self) -> String {
        let c = match self.kind {
            Kind::Bool => 'b',
            Kind::Int => 'i',
            Kind::UInt => 'u',
            Kind::Float => 'f',
            Kind::Complex => 'c',
        };
        format!("{c}{}", self.size)
    }

    /// The byte order character numpy pickles: `<`, `>`, or `|` for one-byte items.
    pub fn order_char(&self) -> char {
        match (self.size, self.order) {
            (1, _) => '|',
            (_, ByteOrder::Little) => '<',
            (_, ByteOrder::Big) => '>',
        }
    }

    /// Parses a type code as numpy pickles it (`"u2"`) with the byte order of the dtype's
    /// state (`"<"`, `">"`, `"|"`, `"="`).
    pub(super) fn from_code(code: &str, order: char) -> Result<DType> {
        let unsupported = || {
            Error::Unsupported {
            what: format!("the numpy dtype {order}{code} is not supported; send arrays of bool, int, uint, float or complex numbers"),
            at: 0,
        }
        };
        let mut chars = code.chars();
        let kind = match chars.next() {
            Some('b') | Some('?') => Kind::Bool,
            Some('i') => Kind::Int,
            Some('u') => Kind::UInt,
            Some('f') => Kind::Float,
            Some('c') => Kind::Complex,
            _ => return Err(unsupported()),
        };
        let size: usize = chars.as_str().parse().map_err(|_| unsupported())?;
        let order = match order {
            '<' | '|' => ByteOrder::Little,
            '>' => ByteOrder::Big,
            '=' => ByteOrder::NATIVE,
            _ => return Err(unsupported()),
        };
        DType::new(kind, size, order).map_err(|_| unsupported())
    }
}

impl std::str::FromStr for DType {
    type Err = Error;
    /// numpy's `dtype.str`: `"<u2"`, `">f8"`, `"|b1"` (without an order character: little endian).
    fn from_str(s: &str) -> Result<DType> {
        match s.chars().next() {
            Some(c @ ('<' | '>' | '|' | '=')) => DType::from_code(&s[1..], c),
            _ => DType::from_code(s, '<'),
        }
    }
}

impl fmt::Display for DType {
    /// numpy's `dtype.str`: `"<u2"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.order_char(), self.code())
    }
}

mod sealed {
    pub trait Sealed {}
}

/// The Rust types that array items and message bytes can be viewed as: `u8`, `i8`, `u16`,
/// `i16`, `u32`, `i32`, `u64`, `i64`, `f32`, `f64`.
///
/// A complex array can be viewed as its floats (`f32` for `c8`, `f64` for `c16`), real and
/// imaginary parts interleaved; a bool array as `u8` (0 or 1).
pub trait Element: bytemuck::Pod + sealed::Sealed {
    /// The dtype kind of this type.
    const KIND: Kind;
}

macro_rules! element {
    ($($t:ty => $k:ident),*) => {$(
        impl sealed::Sealed for $t {}
        impl Element for $t {
            const KIND: Kind = Kind::$k;
        }
    )*};
}
element!(u8 => UInt, i8 => Int, u16 => UInt, i16 => Int, u32 => UInt, i32 => Int,
         u64 => UInt, i64 => Int, f32 => Float, f64 => Float);

/// Views `data` as `&[T]` without a copy (native byte order), or says why it cannot.
pub(crate) fn cast_slice<T: Element>(data: &[u8]) -> Result<&[T]> {
    let size = std::mem::size_of::<T>();
    let err = |why| Error::Cast {
        type_name: std::any::type_name::<T>(),
        len: data.len(),
        why,
    };
    if data.len() % size != 0 {
        return Err(err("the length is not a multiple of the item size"));
    }
    bytemuck::try_cast_slice(data).map_err(|_| {
        err("the bytes are not aligned for this type in memory; copy them with to_vec_of() instead")
    })
}

/// Copies `data` into a `Vec<T>`, turning items of byte order `order` into native ones.
pub(crate) fn to_vec_of<T: Element>(data: &[u8], order: ByteOrder) -> Result<Vec<T>> {
    let size = std::mem::size_of::<T>();
    if data.len() % size != 0 {
        return Err(Error::Cast {
            type_name: std::any::type_name::<T>(),
            len: data.len(),
            why: "the length is not a multiple of the item size",
        });
    }
    let mut v: Vec<T> = bytemuck::pod_collect_to_vec(data);
    if order != ByteOrder::NATIVE && size > 1 {
        for item in bytemuck::cast_slice_mut::<T, u8>(&mut v).chunks_exact_mut(size) {
            item.reverse();
        }
    }
    Ok(v)
}

/// A numpy array: dtype, shape, memory order and the raw item bytes.
///
/// The data is the slice of the received message that holds it: decoding copies nothing
/// (except for protocols 0 to 2, which carry bytes as text). Items are in C order (last
/// index fastest) or, when [`is_fortran_order`](Array::is_fortran_order), in Fortran
/// order (first index fastest), in the dtype's byte order.
///
/// ```
/// use serpy::pickle::{Array, Value};
///
/// let a = Array::from_slice(&[1u16, 2, 3, 4, 5, 6], &[2, 3]).unwrap();
/// assert_eq!(a.shape(), &[2, 3]);
/// assert_eq!(a.to_vec::<u16>().unwrap(), vec![1, 2, 3, 4, 5, 6]);
/// assert_eq!(a.to_list().to_string(), "[[1, 2, 3], [4, 5, 6]]");
/// assert_eq!(Value::from(a).to_string(), "array([[1, 2, 3], [4, 5, 6]], dtype=uint16)");
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    dtype: DType,
    shape: Vec<usize>,
    fortran_order: bool,
    data: Bytes,
}

impl Array {
    /// An array over `data`, checked: at most 64 dimensions, and exactly
    /// `shape.iter().product() * dtype.size` bytes of data.
    ///
    /// ```
    /// use serpy::pickle::{Array, DType};
    /// let d: DType = ">u2".parse().unwrap();
    /// let a = Array::new(d, vec![2], false, bytes::Bytes::from_static(&[0, 1, 1, 0])).unwrap();
    /// assert_eq!(a.to_vec::<u16>().unwrap(), vec![1, 256]);
    /// assert!(Array::new(d, vec![3], false, bytes::Bytes::from_static(&[0, 1])).is_err());
    /// ```
    pub fn new(dtype: DType, shape: Vec<usize>, fortran_order: bool, data: Bytes) -> Result<Array> {
        let bad = |detail: String| Error::Malformed { detail, at: 0 };
        if shape.len() > MAX_DIMS {
            return Err(bad(format!(
                "an array of {} dimensions (numpy allows at most {MAX_DIMS})",
                shape.len()
            )));
        }
        let count = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .and_then(|n| n.checked_mul(dtype.size));
        if count != Some(data.len()) {
            return Err(bad(format!(
                "array data of {} bytes does not match its shape {:?} and dtype {dtype} ({} bytes)",
                data.len(),
                shape,
                count.map_or("too many".to_string(), |c| c.to_string())
            )));
        }
        if data.is_empty() {
            let outer = shape
                .iter()
                .take_while(|&&d| d != 0)
                .try_fold(1usize, |acc, &d| acc.checked_mul(d));
            if outer.map_or(true, |n| n > MAX_EMPTY_OUTER) {
                return Err(bad(format!(
                    "an empty array of shape {shape:?} has more than {MAX_EMPTY_OUTER} sub-arrays"
                )));
            }
        }
        Ok(Array {
            dtype,
            shape,
            fortran_order,
            data,
        })
    }

    /// A C-order array of `items` in this machine's byte order, with `shape`.
    pub fn from_slice<T: Element>(items: &[T], shape: &[usize]) -> Result<Array> {
        Array::new(
            DType::of::<T>(),
            shape.to_vec(),
            false,
            Bytes::copy_from_slice(bytemuck::cast_slice(items)),
        )
    }

    /// The dtype.
    ///
    /// ```
    /// use serpy::pickle::{Array, DType};
    /// let a = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
    /// assert_eq!(a.dtype(), DType::of::<f32>());
    /// assert_eq!((a.ndim(), a.len(), a.data().len()), (2, 4, 16));
    /// assert!(!a.is_fortran_order() && !a.is_empty());
    /// ```
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The shape (empty for a 0-d array).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of dimensions.
    pub fn ndim(&self) -> usize {
        self.shape.len()
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.data.len() / self.dtype.size
    }

    /// True for an array without items.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// True when items are in Fortran order (first index fastest), false for C order.
    pub fn is_fortran_order(&self) -> bool {
        self.fortran_order
    }

    /// The raw item bytes (shared, not copied).
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    fn check_type<T: Element>(&self) -> Result<()> {
        let size = std::mem::size_of::<T>();
        let ok = match self.dtype.kind {
            Kind::Complex => T::KIND == Kind::Float && 2 * size == self.dtype.size,
            Kind::Bool => T::KIND == Kind::UInt && size == 1,
            k => k == T::KIND && size == self.dtype.size,
        };
        if ok {
            Ok(())
        } else {
            Err(Error::WrongType {
                expected: std::any::type_name::<T>(),
                found: format!("numpy array of {}", self.dtype.name()),
            })
        }
    }

    /// The items as `&[T]` without a copy, in memory order (see
    /// [`is_fortran_order`](Array::is_fortran_order)).
    ///
    /// # Errors
    /// [`Error::WrongType`] when `T` is not the dtype; [`Error::Cast`] when the data is not
    /// in this machine's byte order or not aligned for `T` in memory: then use
    /// [`to_vec`](Array::to_vec), which copies.
    ///
    /// ```
    /// use serpy::pickle::Array;
    /// let a = Array::from_slice(&[1.5f64, 2.5], &[2]).unwrap();
    /// if let Ok(view) = a.as_slice::<f64>() {  // aligned: zero copy
    ///     assert_eq!(view, &[1.5, 2.5]);
    /// }
    /// assert!(a.as_slice::<f32>().is_err());
    /// ```
    pub fn as_slice<T: Element>(&self) -> Result<&[T]> {
        self.check_type::<T>()?;
        if self.dtype.order != ByteOrder::NATIVE && std::mem::size_of::<T>() > 1 {
            return Err(Error::Cast {
                type_name: std::any::type_name::<T>(),
                len: self.data.len(),
                why: "the items are not in this machine's byte order; copy them with to_vec()",
            });
        }
        cast_slice(&self.data)
    }

    /// The items copied into a `Vec<T>` in this machine's byte order, in memory order.
    ///
    /// # Errors
    /// [`Error::WrongType`] when `T` is not the dtype.
    ///
    /// ```
    /// use serpy::pickle::Array;
    /// let a = Array::from_slice(&[-1i32, 7], &[2]).unwrap();
    /// assert_eq!(a.to_vec::<i32>().unwrap(), vec![-1, 7]);
    /// assert!(a.to_vec::<u32>().is_err());
    /// ```
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        self.check_type::<T>()?;
        to_vec_of(&self.data, self.dtype.order)
    }

    /// The item at flat memory position `i`, as a value.
    fn item(&self, i: usize) -> Value {
        let s = self.dtype.size;
        let raw = &self.data[i * s..(i + 1) * s];
        read_item(self.dtype, raw)
    }

    /// The nested lists of the items, as numpy's `tolist()` (a 0-d array gives its item).
    ///
    /// ```
    /// use serpy::pickle::{Array, Value};
    /// let a = Array::from_slice(&[7i32], &[]).unwrap();
    /// assert_eq!(a.to_list(), Value::Int(7));
    /// ```
    pub fn to_list(&self) -> Value {
        // Strides in items, for the memory order.
        let n = self.shape.len();
        let mut strides = vec![1usize; n];
        if self.fortran_order {
            for k in 1..n {
                strides[k] = strides[k - 1].saturating_mul(self.shape[k - 1]);
            }
        } else {
            for k in (0..n.saturating_sub(1)).rev() {
                strides[k] = strides[k + 1].saturating_mul(self.shape[k + 1]);
            }
        }
        self.build_list(0, 0, &strides)
    }

    fn build_list(&self, dim: usize, offset: usize, strides: &[usize]) -> Value {
        if dim == self.shape.len() {
            return self.item(offset);
        }
        Value::List(
            (0..self.shape[dim])
                .map(|i| self.build_list(dim + 1, offset + i * strides[dim], strides))
                .collect(),
        )
    }
}

/// One item of `dtype` from its bytes.
pub(super) fn read_item(dtype: DType, raw: &[u8]) -> Value {
    let mut b = [0u8; 16];
    b[..raw.len()].copy_from_slice(raw);
    if dtype.order == ByteOrder::Big {
        b[..raw.len()].reverse();
        if dtype.kind == Kind::Complex {
            // Each half was reversed in place of the other: swap them back.
            let h = raw.len() / 2;
            let (re, im) = b[..raw.len()].split_at_mut(h);
            re.swap_with_slice(im);
        }
    }
    let u = u64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8]));
    let float = |bytes: &[u8]| -> f64 {
        match bytes.len() {
            2 => f16_to_f64(u16::from_le_bytes([bytes[0], bytes[1]])),
            4 => f64::from(f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])),
            _ => f64::from_le_bytes(bytes[..8].try_into().unwrap_or([0; 8])),
        }
    };
    match dtype.kind {
        Kind::Bool => Value::Bool(b[0] != 0),
        Kind::UInt => Value::from(u),
        Kind::Int => {
            let shift = 64 - 8 * dtype.size as u32;
            Value::Int(((u << shift) as i64) >> shift)
        }
        Kind::Float => Value::Float(float(&b[..dtype.size])),
        Kind::Complex => {
            let h = dtype.size / 2;
            Value::Complex {
                re: float(&b[..h]),
                im: float(&b[h..dtype.size]),
            }
        }
    }
}

/// IEEE 754 half precision to f64.
fn f16_to_f64(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let frac = f64::from(h & 0x3ff);
    match exp {
        0 => sign * frac * 2f64.powi(-24),
        31 if frac == 0.0 => sign * f64::INFINITY,
        31 => f64::NAN,
        e => sign * (1.0 + frac / 1024.0) * 2f64.powi(e - 15),
    }
}

impl fmt::Display for Array {
    /// As numpy's `repr()`: `array([1, 2], dtype=uint16)`; arrays of more than 64 items
    /// as a summary.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let default = matches!(
            (self.dtype.kind, self.dtype.size),
            (Kind::Int, 8) | (Kind::Float, 8) | (Kind::Bool, _) | (Kind::Complex, 16)
        );
        if self.len() > 64 {
            return write!(
                f,
                "array(<{} items of shape {:?}, dtype={}, {} bytes>)",
                self.len(),
                self.shape,
                self.dtype.name(),
                self.data.len()
            );
        }
        write!(f, "array({}", self.to_list())?;
        if !default || self.is_empty() {
            write!(f, ", dtype={}", self.dtype.name())?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_in_both_byte_orders() {
        let be: DType = ">i2".parse().unwrap();
        assert_eq!(read_item(be, &[0xff, 0xfe]), Value::Int(-2));
        let le: DType = "<i2".parse().unwrap();
        assert_eq!(read_item(le, &[0xfe, 0xff]), Value::Int(-2));
        let c: DType = ">c8".parse().unwrap();
        let mut raw = 1.5f32.to_be_bytes().to_vec();
        raw.extend(2.0f32.to_be_bytes());
        assert_eq!(read_item(c, &raw), Value::Complex { re: 1.5, im: 2.0 });
        let h: DType = "<f2".parse().unwrap();
        assert_eq!(read_item(h, &0x3e00u16.to_le_bytes()), Value::Float(1.5));
        assert_eq!(
            read_item(h, &0x0001u16.to_le_bytes()),
            Value::Float(2f64.powi(-24))
        );
        let u: DType = "<u8".parse().unwrap();
        assert_eq!(read_item(u, &[0xff; 8]), Value::from(u64::MAX));
    }

    #[test]
    fn fortran_order_lists() {
        // [[1, 2, 3], [4, 5, 6]] stored column by column.
        let data: Vec<u8> = [1u8, 4, 2, 5, 3, 6].to_vec();
        let a = Array::new(DType::of::<u8>(), vec![2, 3], true, Bytes::from(data)).unwrap();
        assert_eq!(a.to_list().to_string(), "[[1, 2, 3], [4, 5, 6]]");
    }

    #[test]
    fn bad_shapes_are_refused() {
        let d = DType::of::<u8>();
        assert!(Array::new(d, vec![usize::MAX, 2], false, Bytes::new()).is_err());
        assert!(Array::new(d, vec![1 << 40, 0], false, Bytes::new()).is_err());
        assert!(Array::new(d, vec![1; 65], false, Bytes::from_static(&[1])).is_err());
        assert!(Array::new(d, vec![3, 0], false, Bytes::new()).is_ok());
        assert!(Array::new(d, vec![], false, Bytes::new()).is_err());
    }
}
