//! Python's `float.hex()` and `float.fromhex()`, byte for byte and value for value.
//!
//! v2 sends a float as the text of `float.hex()`, and the original receiver reads it with
//! `float.fromhex()`. [`float_hex`] writes exactly what Python writes; [`float_fromhex`]
//! accepts exactly the strings Python accepts and gives the same value (correctly
//! rounded, ties to even, subnormals included), in one pass and without allocating.

use std::fmt;

/// Why [`float_fromhex`] refused a string (the two exceptions of Python's `float.fromhex`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HexFloatError {
    /// Not a hexadecimal float (Python raises `ValueError`).
    Invalid,
    /// A well-formed hexadecimal float too large for an `f64` (Python raises `OverflowError`).
    Overflow,
}

impl fmt::Display for HexFloatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HexFloatError::Invalid => "invalid hexadecimal floating-point string",
            HexFloatError::Overflow => "hexadecimal value too large to represent as a float",
        })
    }
}

impl std::error::Error for HexFloatError {}

/// The longest text [`float_hex`] produces (`-0x1.0000000000000p-1022` is 24 bytes).
pub const FLOAT_HEX_MAX_LEN: usize = 24;

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Writes `float.hex()` of `x` into `buf` and returns its length.
pub(crate) fn float_hex_into(x: f64, buf: &mut [u8; FLOAT_HEX_MAX_LEN]) -> usize {
    fn put(buf: &mut [u8; FLOAT_HEX_MAX_LEN], n: &mut usize, bytes: &[u8]) {
        buf[*n..*n + bytes.len()].copy_from_slice(bytes);
        *n += bytes.len();
    }
    let mut n = 0;
    if x.is_nan() {
        put(buf, &mut n, b"nan");
        return n;
    }
    if x.is_sign_negative() {
        put(buf, &mut n, b"-");
    }
    if x.is_infinite() {
        put(buf, &mut n, b"inf");
        return n;
    }
    let bits = x.to_bits();
    let biased = (bits >> 52) & 0x7ff;
    let fraction = bits & ((1 << 52) - 1);
    if biased == 0 && fraction == 0 {
        put(buf, &mut n, b"0x0.0p+0");
        return n;
    }
    // Subnormals keep the exponent of the smallest normal, with a leading 0.
    let (lead, exp) = if biased == 0 {
        (b'0', -1022)
    } else {
        (b'1', biased as i32 - 1023)
    };
    put(buf, &mut n, &[b'0', b'x', lead, b'.']);
    for i in (0..13).rev() {
        let nibble = (fraction >> (4 * i)) & 0xf;
        put(buf, &mut n, &[HEX_DIGITS[nibble as usize]]);
    }
    put(buf, &mut n, if exp < 0 { b"p-" } else { b"p+" });
    let mut digits = [0u8; 4];
    let mut e = exp.unsigned_abs();
    let mut len = 0;
    loop {
        digits[len] = b'0' + (e % 10) as u8;
        len += 1;
        e /= 10;
        if e == 0 {
            break;
        }
    }
    for i in (0..len).rev() {
        put(buf, &mut n, &[digits[i]]);
    }
    n
}

/// Python's `float.hex()`: the exact value of `x` in hexadecimal.
///
/// Normal numbers have all 13 hex digits of the fraction, subnormals a leading `0` and the
/// exponent `-1022`; zeros are `0x0.0p+0` and `-0x0.0p+0`; every NaN is `nan`.
///
/// ```
/// use serpy::protocol::v2::float_hex;
/// assert_eq!(float_hex(1.0), "0x1.0000000000000p+0");
/// assert_eq!(float_hex(12.35), "0x1.8b33333333333p+3");
/// assert_eq!(float_hex(-1e6), "-0x1.e848000000000p+19");
/// assert_eq!(float_hex(-0.0), "-0x0.0p+0");
/// assert_eq!(float_hex(5e-324), "0x0.0000000000001p-1022");
/// assert_eq!(float_hex(f64::NEG_INFINITY), "-inf");
/// assert_eq!(float_hex(-f64::NAN), "nan");
/// ```
pub fn float_hex(x: f64) -> String {
    let mut buf = [0u8; FLOAT_HEX_MAX_LEN];
    let n = float_hex_into(x, &mut buf);
    // Only ASCII was written.
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// The whitespace Python's `float.fromhex` skips around the number (ASCII only).
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn strip_sign(s: &[u8]) -> (bool, &[u8]) {
    match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    }
}

fn with_sign(negative: bool, x: f64) -> f64 {
    if negative {
        -x
    } else {
        x
    }
}

// The limits of CPython's float_fromhex, whose C `long` is 64 bits on the platforms
// that matter here: exponents are read like strtol (saturating), and beyond half the
// range of a long the value is taken as 0 or as an overflow without further ado.
const LONG_MAX: i128 = i64::MAX as i128;
const LONG_MIN: i128 = i64::MIN as i128;
/// CPython refuses coefficients with more hex digits than this ("too long to convert").
const MAX_DIGITS: i128 = {
    let a = -1021 - 53 - LONG_MIN / 2;
    let b = LONG_MAX / 2 + 1 - 1024;
    (if a < b { a } else { b }) / 4
};

/// Python's `float.fromhex()`: reads a hexadecimal float, correctly rounded.
///
/// Accepts optional ASCII whitespace around the number and an optional sign, then either
/// `inf`, `infinity` or `nan` in any case, or an optional `0x`/`0X`, hex digits with an
/// optional point (at least one digit) and an optional binary exponent `p`/`P` with
/// optional sign and decimal digits. The value is rounded to the nearest `f64`, ties to
/// even, subnormals included; values too large give [`HexFloatError::Overflow`] (also
/// when something invalid follows them, as in Python). It takes time linear in the length
/// of the text and does not allocate, whatever the exponent or the number of digits.
///
/// ```
/// use serpy::protocol::v2::{float_fromhex, HexFloatError};
/// assert_eq!(float_fromhex("0x1.8b33333333333p+3"), Ok(12.35));
/// assert_eq!(float_fromhex(" -1.8p1\n"), Ok(-3.0));
/// assert_eq!(float_fromhex(".8"), Ok(0.5));
/// assert_eq!(float_fromhex("0x1p-1075"), Ok(0.0)); // a tie, to even
/// assert_eq!(float_fromhex("-Infinity"), Ok(f64::NEG_INFINITY));
/// assert!(float_fromhex("NaN").unwrap().is_nan());
/// assert_eq!(float_fromhex("0x1p1024"), Err(HexFloatError::Overflow));
/// assert_eq!(float_fromhex("0x1.5e3"), Ok(f64::from(0x15e3) / 4096.0));
/// assert_eq!(float_fromhex("1e3 x"), Err(HexFloatError::Invalid));
/// assert_eq!(float_fromhex(&b"0x10"[..]), Ok(16.0));
/// ```
pub fn float_fromhex<T: AsRef<[u8]> + ?Sized>(text: &T) -> Result<f64, HexFloatError> {
    let mut s = text.as_ref();
    while let [first, rest @ ..] = s {
        if !is_space(*first) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !is_space(*last) {
            break;
        }
        s = rest;
    }

    let (negative, s) = strip_sign(s);
    if s.eq_ignore_ascii_case(b"inf") || s.eq_ignore_ascii_case(b"infinity") {
        return Ok(with_sign(negative, f64::INFINITY));
    }
    if s.eq_ignore_ascii_case(b"nan") {
        return Ok(with_sign(negative, f64::NAN));
    }

    let s = match s {
        [b'0', b'x' | b'X', rest @ ..] => rest,
        _ => s,
    };
    let int_len = s.iter().take_while(|&&b| hex_value(b).is_some()).count();
    let int_digits = &s[..int_len];
    let mut rest = &s[int_len..];
    let mut frac_digits: &[u8] = &[];
    if let [b'.', after @ ..] = rest {
        let frac_len = after
            .iter()
            .take_while(|&&b| hex_value(b).is_some())
            .count();
        frac_digits = &after[..frac_len];
        rest = &after[frac_len..];
    }
    let ndigits = (int_digits.len() + frac_digits.len()) as i128;
    if ndigits == 0 || ndigits > MAX_DIGITS {
        return Err(HexFloatError::Invalid);
    }

    // Binary exponent, saturating like strtol.
    let mut exp: i128 = 0;
    if let [b'p' | b'P', after @ ..] = rest {
        let (exp_negative, after) = strip_sign(after);
        let exp_len = after.iter().take_while(|b| b.is_ascii_digit()).count();
        if exp_len == 0 {
            return Err(HexFloatError::Invalid);
        }
        for &d in &after[..exp_len] {
            exp = (exp * 10 + i128::from(d - b'0')).min(LONG_MAX + 1);
        }
        exp = if exp_negative {
            (-exp).max(LONG_MIN)
        } else {
            exp.min(LONG_MAX)
        };
        rest = &after[exp_len..];
    }

    // Like CPython, an overflow is reported before anything that follows the number is
    // looked at ("0x1p9999 x" is an overflow, not a syntax error).
    let magnitude = magnitude(int_digits, frac_digits, exp)?;
    if !rest.is_empty() {
        return Err(HexFloatError::Invalid);
    }
    Ok(with_sign(negative, magnitude))
}

/// The value of the hex digits `int_digits.frac_digits` times 2^exp, correctly rounded.
fn magnitude(int_digits: &[u8], frac_digits: &[u8], exp: i128) -> Result<f64, HexFloatError> {
    let ndigits = (int_digits.len() + frac_digits.len()) as i128;
    // The significant digits: from the first non-zero one on.
    let digits = || {
        int_digits
            .iter()
            .chain(frac_digits)
            .map(|&b| hex_value(b).unwrap_or(0))
    };
    let Some(first_nonzero) = digits().position(|d| d != 0) else {
        return Ok(0.0);
    };
    if exp < LONG_MIN / 2 {
        return Ok(0.0);
    }
    if exp > LONG_MAX / 2 {
        return Err(HexFloatError::Overflow);
    }
    let significant = ndigits - first_nonzero as i128;
    // The value is (the significant digits as an integer) * 2^exp0.
    let exp0 = exp - 4 * frac_digits.len() as i128;
    let mut sig = digits().skip(first_nonzero);
    let lead = sig.next().unwrap_or(1);
    // The value lies in [2^(top_exp - 1), 2^top_exp).
    let top_exp = exp0 + 4 * (significant - 1) + i128::from(8 - lead.leading_zeros() as u8);
    if top_exp < -1074 {
        // Below half the smallest subnormal: rounds to zero.
        return Ok(0.0);
    }
    if top_exp > 1024 {
        return Err(HexFloatError::Overflow);
    }
    // Exponent of the last bit kept: 53 bits, or fewer for subnormals.
    let lsb = top_exp.max(-1021) - 53;

    // The first 15 significant digits (at least 57 bits: more than the 54 needed for the
    // kept bits and the rounding bit) and whether any later digit is non-zero.
    let mut acc = u64::from(lead);
    let mut taken: i128 = 1;
    for d in sig.by_ref().take(14) {
        acc = acc << 4 | u64::from(d);
        taken += 1;
    }
    let sticky_rest = sig.any(|d| d != 0);
    let acc_exp = exp0 + 4 * (significant - taken);
    let shift = lsb - acc_exp;
    let mantissa = if shift <= 0 {
        // Exact: fewer than 54 bits, all kept (and then nothing was left over).
        acc << (-shift).min(63)
    } else {
        // 1 <= shift <= 60 by the choice of lsb.
        let shift = shift.min(63) as u32;
        let kept = acc >> shift;
        let half = (acc >> (shift - 1)) & 1 == 1;
        let below_half = acc & ((1u64 << (shift - 1)) - 1) != 0 || sticky_rest;
        if half && (below_half || kept & 1 == 1) {
            kept + 1
        } else {
            kept
        }
    };
    // value = mantissa * 2^lsb, with 2^52 <= mantissa <= 2^53 for normal numbers and
    // lsb = -1074 for subnormals. Adding the mantissa to the exponent field carries a
    // rounded-up 2^53 into the next binade (or into infinity: overflow).
    let bits = (((lsb + 1074) as u64) << 52) + mantissa;
    if bits >= 0x7ff0_0000_0000_0000 {
        return Err(HexFloatError::Overflow);
    }
    Ok(f64::from_bits(bits))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> f64 {
        float_fromhex(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn formats_like_python() {
        let cases = [
            (1.0, "0x1.0000000000000p+0"),
            (12.35, "0x1.8b33333333333p+3"),
            (-1e6, "-0x1.e848000000000p+19"),
            (0.0, "0x0.0p+0"),
            (-0.0, "-0x0.0p+0"),
            (5e-324, "0x0.0000000000001p-1022"),
            (-2.2250738585072014e-308, "-0x1.0000000000000p-1022"),
            (2.225073858507201e-308, "0x0.fffffffffffffp-1022"),
            (f64::MAX, "0x1.fffffffffffffp+1023"),
            (0.1, "0x1.999999999999ap-4"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (f64::NAN, "nan"),
            (-f64::NAN, "nan"),
            (f64::from_bits(0x7ff0_0000_0000_0001), "nan"),
        ];
        for (x, want) in cases {
            assert_eq!(float_hex(x), want, "{x:e}");
        }
        let mut buf = [0u8; FLOAT_HEX_MAX_LEN];
        assert_eq!(
            float_hex_into(-f64::MIN_POSITIVE, &mut buf),
            FLOAT_HEX_MAX_LEN
        );
    }

    #[test]
    fn reads_what_python_reads() {
        assert_eq!(ok("1"), 1.0);
        assert_eq!(ok("1."), 1.0);
        assert_eq!(ok(".8"), 0.5);
        assert_eq!(ok("0X.8P+1"), 1.0);
        assert_eq!(ok("\t\x0b\x0c\r\n 0x1p-2 \n"), 0.25);
        assert_eq!(ok("ff"), 255.0);
        assert_eq!(ok("1e3"), 483.0);
        assert_eq!(ok("-0x0p0").to_bits(), (-0.0f64).to_bits());
        assert_eq!(ok("iNfInItY"), f64::INFINITY);
        assert_eq!(ok("+inf"), f64::INFINITY);
        assert!(ok("-nan").is_nan());
        assert_eq!(ok("0x0p99999999999999999999999999"), 0.0);
        assert_eq!(ok("0x1p-99999999999999999999999999"), 0.0);
        assert_eq!(ok("0x1.fffffffffffff7ffp1023"), f64::MAX);
        assert_eq!(ok("0x1p-1074"), 5e-324);
        assert_eq!(ok("0x1p-1075"), 0.0);
        assert_eq!(ok("0x1.0000001p-1075"), 5e-324);
        assert_eq!(ok("0x1.8p-1074"), 1e-323);
        assert_eq!(ok("0x1.fffffffffffff8p-1023"), f64::MIN_POSITIVE);
        // Ties to even, and just above the tie.
        assert_eq!(ok("0x1.00000000000008p0"), 1.0);
        assert_eq!(ok("0x1.00000000000018p0"), 1.0 + 2.0 * f64::EPSILON);
        assert_eq!(
            ok("0x1.000000000000080000000000000001p0"),
            1.0 + f64::EPSILON
        );
    }

    #[test]
    fn rejects_what_python_rejects() {
        for s in [
            "",
            " ",
            "0x",
            "0x.",
            ".",
            "p1",
            "1p",
            "1p+",
            "1p-",
            "- 1",
            "--1",
            "+-1",
            "0x1_0",
            "1e3 x",
            "infinit",
            "infinityy",
            "nan(1)",
            "0xx1",
            "0x0x1",
            "1.2.3",
            "1p1.5",
            "\u{2003}1",
            "\x1c1",
            "1\0",
            "0x1p 1",
            "1 p1",
            "x1",
            "0x-1",
            "1pp1",
        ] {
            assert_eq!(float_fromhex(s), Err(HexFloatError::Invalid), "{s:?}");
        }
        assert_eq!(float_fromhex(&b"\xff1"[..]), Err(HexFloatError::Invalid));
    }

    #[test]
    fn overflows_like_python() {
        for s in [
            "0x1p1024",
            "0x1.fffffffffffff8p1023",
            "-0x2p1023",
            "0x1p+99999999999999999999999",
            "0x1p4611686018427387904",
            "0x1p9999 x",
            "0x1p2000p",
        ] {
            assert_eq!(float_fromhex(s), Err(HexFloatError::Overflow), "{s:?}");
        }
    }

    #[test]
    fn absurd_inputs_are_linear_and_exact() {
        let tiny = format!("0x0.{}1p+1000000", "0".repeat(250_000));
        assert_eq!(ok(&tiny), 0.0625);
        let many = format!("0x1.{}p0", "f".repeat(1_000_000));
        assert_eq!(ok(&many), 2.0);
        let long_int = format!("{}p-{}", "1".repeat(300), 4 * 299);
        assert_eq!(ok(&long_int), f64::from_bits(0x3ff1_1111_1111_1111));
    }

    #[test]
    fn round_trips_bit_patterns() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let x = f64::from_bits(state);
            let back = ok(&float_hex(x));
            if x.is_nan() {
                assert!(back.is_nan());
            } else {
                assert_eq!(back.to_bits(), x.to_bits(), "{}", float_hex(x));
            }
        }
    }
}
