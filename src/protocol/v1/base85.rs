//! Base85 with the RFC 1924 alphabet, exactly as Python's `base64.b85encode` /
//! `b85decode` (no padding): the text of v1 modes 2 to 5. Pure functions of bytes; the
//! encoder and decoder of [`super`] call the slice forms directly, the rest of the crate
//! the functions [`super`] re-exports.

use crate::sys::{base85_decode_wide, base85_encode_wide, B85Kernel, B85Tables};

const B85_ALPHABET: &[u8; 85] =
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%&()*+-;<=>?@^_`{|}~";

/// Character -> digit; 0xFF for characters outside the alphabet.
const B85_DIGITS: [u8; 256] = {
    let mut t = [0xFFu8; 256];
    let mut i = 0;
    while i < 85 {
        t[B85_ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    t
};

/// Why [`decode_base85`] refused its input (the texts are those of Python's `b85decode`
/// where it has one).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Base85Error {
    /// A byte outside the base85 alphabet.
    #[error("bad base85 character {byte:#04x} at position {position}")]
    BadChar {
        /// Its index in the input.
        position: usize,
        /// The byte.
        byte: u8,
    },
    /// A group of five characters whose value does not fit in 32 bits.
    #[error("base85 overflow in hunk starting at byte {position}")]
    Overflow {
        /// Index of the group's first character in the input.
        position: usize,
    },
    /// The input ends with a group of one character, which encodes no byte.
    #[error("a lone base85 character at position {position} ends the input; a final group has 2 to 5 characters")]
    LoneChar {
        /// Its index in the input.
        position: usize,
    },
}

impl Base85Error {
    /// The same error in a text that had `by` more characters before this one.
    pub(super) fn shifted(self, by: usize) -> Self {
        match self {
            Base85Error::BadChar { position, byte } => Base85Error::BadChar {
                position: position + by,
                byte,
            },
            Base85Error::Overflow { position } => Base85Error::Overflow {
                position: position + by,
            },
            Base85Error::LoneChar { position } => Base85Error::LoneChar {
                position: position + by,
            },
        }
    }
}

/// Length of the base85 of `n` bytes: 5 characters per 4 bytes, and n + 1 characters for
/// a final group of n < 4 bytes.
pub fn base85_encoded_len(n: usize) -> usize {
    let rem = n % 4;
    n / 4 * 5 + if rem == 0 { 0 } else { rem + 1 }
}

/// Length of the bytes that `n` base85 characters decode to, or `None` when a final
/// group of one character makes the length impossible.
pub fn base85_decoded_len(n: usize) -> Option<usize> {
    match n % 5 {
        1 => None,
        0 => Some(n / 5 * 4),
        rem => Some(n / 5 * 4 + rem - 1),
    }
}

/// Appends the base85 of `data` to `out`, exactly as Python's `base64.b85encode` (no padding).
///
/// ```
/// let mut out = Vec::new();
/// serpy::protocol::v1::encode_base85(b"abc", &mut out);
/// assert_eq!(out, b"VPaz");
/// ```
pub fn encode_base85(data: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + base85_encoded_len(data.len()), 0);
    encode_base85_to_slice(data, &mut out[start..]);
}

/// Two-character base85 of every value below 85 * 85.
const B85_PAIRS: [[u8; 2]; 85 * 85] = {
    let mut t = [[0u8; 2]; 85 * 85];
    let mut i = 0;
    while i < 85 * 85 {
        t[i] = [B85_ALPHABET[i / 85], B85_ALPHABET[i % 85]];
        i += 1;
    }
    t
};

/// 2^64 / 85^4, rounded up: `v * B85_SCALE` is `v / 85^4` in 64.64 fixed point.
const B85_SCALE: u128 = (1u128 << 64).div_ceil(52_200_625);

/// The digits of `v` as `(first, middle pair, last pair)`: `v / 85^4`, `v / 85^2 % 85^2`
/// and `v % 85^2`. Three 64 × 64 → 128-bit products and nothing else: `v * B85_SCALE`
/// holds the first digit in its high half and the rest of `v / 85^4` as a 64-bit
/// fraction; each product of the fraction with 85^2 moves the next pair into the high
/// half. Exact for every `u32` (checked for all of them once; the tests check the edges):
/// the scale is high by less than `v / 2^64 < 2^-32` of a unit, which after the two
/// multiplications by 85^2 is still less than a unit of the last pair. The compiler also
/// sees that each result is below its table's length, so the lookups need no checks.
#[inline(always)]
fn b85_digits(v: u32) -> (usize, usize, usize) {
    let t = u128::from(v) * B85_SCALE;
    let first = (t >> 64) as usize;
    let t = u128::from(t as u64) * 7225;
    let middle = (t >> 64) as usize;
    let t = u128::from(t as u64) * 7225;
    (first, middle, (t >> 64) as usize)
}

/// Writes the five characters of `v` into `out[..5]`.
#[inline(always)]
fn encode_group(v: u32, out: &mut [u8]) {
    let (first, middle, low) = b85_digits(v);
    out[0] = B85_ALPHABET[first];
    out[1..3].copy_from_slice(&B85_PAIRS[middle]);
    out[3..5].copy_from_slice(&B85_PAIRS[low]);
}

/// `out` must be exactly `base85_encoded_len(data.len())` long. Where the processor has
/// AVX2, blocks of 32 bytes are encoded by `sys::base85_encode_wide`, the rest by the
/// portable code.
pub(super) fn encode_base85_to_slice(data: &[u8], out: &mut [u8]) {
    if data.len() < 32 {
        return encode_base85_portable(data, out);
    }
    encode_base85_with(B85Kernel::detect(), data, out);
}

/// [`encode_base85_to_slice`] with the wide kernel `kernel`.
fn encode_base85_with(kernel: B85Kernel, data: &[u8], out: &mut [u8]) {
    let blocks = base85_encode_wide(kernel, &B85_WIDE, data, out);
    encode_base85_portable(&data[blocks * 32..], &mut out[blocks * 40..]);
}

/// [`encode_base85_to_slice`] in portable code.
fn encode_base85_portable(data: &[u8], out: &mut [u8]) {
    // Four groups per step, whose products overlap: base85_bench, 64 KiB, 1320 -> 1781
    // MB/s against two groups a step with divisions by 85^2 (2-vCPU Intel Xeon).
    let quads = data.chunks_exact(16);
    let single = quads.remainder();
    let mut slots = out.chunks_exact_mut(20);
    for (g, o) in quads.zip(&mut slots) {
        let mut twenty = [0u8; 20];
        for (k, t) in twenty.chunks_exact_mut(5).enumerate() {
            let b = &g[4 * k..4 * k + 4];
            encode_group(u32::from_be_bytes([b[0], b[1], b[2], b[3]]), t);
        }
        o.copy_from_slice(&twenty);
    }
    let out = slots.into_remainder();
    let groups = single.chunks_exact(4);
    let rem = groups.remainder();
    let mut slots = out.chunks_exact_mut(5);
    for (g, o) in groups.zip(&mut slots) {
        encode_group(u32::from_be_bytes([g[0], g[1], g[2], g[3]]), o);
    }
    if !rem.is_empty() {
        let mut g = [0u8; 4];
        g[..rem.len()].copy_from_slice(rem);
        let mut five = [0u8; 5];
        encode_group(u32::from_be_bytes(g), &mut five);
        let tail = slots.into_remainder();
        let n = tail.len().min(five.len());
        tail[..n].copy_from_slice(&five[..n]);
    }
}

/// `B85_PLACE[k][c]`: what character `c` adds to a group's value in place `k` (its digit
/// times 85 to the power 4 - k), or 2^40 for a character outside the alphabet, which
/// puts the sum above 32 bits so that one comparison catches both errors.
static B85_PLACE: [[u64; 256]; 5] = {
    let mut t = [[1u64 << 40; 256]; 5];
    let mut k = 0;
    while k < 5 {
        let mut weight = 1u64;
        let mut j = k;
        while j < 4 {
            weight *= 85;
            j += 1;
        }
        let mut i = 0;
        while i < 85 {
            t[k][B85_ALPHABET[i] as usize] = i as u64 * weight;
            i += 1;
        }
        k += 1;
    }
    t
};

/// Decodes one group of five characters starting at `position` (for error reports):
/// five table lookups and additions (measured 3 times faster than digits and products).
#[inline(always)]
fn decode_group(c: &[u8; 5], position: usize) -> Result<u32, Base85Error> {
    let acc = B85_PLACE[0][usize::from(c[0])]
        + B85_PLACE[1][usize::from(c[1])]
        + B85_PLACE[2][usize::from(c[2])]
        + B85_PLACE[3][usize::from(c[3])]
        + B85_PLACE[4][usize::from(c[4])];
    if acc <= u64::from(u32::MAX) {
        Ok(acc as u32)
    } else {
        Err(group_error(c, position))
    }
}

/// What is wrong with a group that [`decode_group`] refused.
#[cold]
#[inline(never)]
fn group_error(c: &[u8; 5], position: usize) -> Base85Error {
    match c.iter().position(|&ch| B85_DIGITS[usize::from(ch)] == 0xFF) {
        Some(j) => Base85Error::BadChar {
            position: position + j,
            byte: c[j],
        },
        None => Base85Error::Overflow { position },
    }
}

/// Appends the bytes of the base85 text `text` to `out`, as Python's `base64.b85decode`:
/// a final group of n characters (2 to 4) is padded with `~` and gives n - 1 bytes.
///
/// # Errors
/// A character outside the alphabet, a group whose value exceeds 32 bits, or a final
/// group of one character; `out` is then left as it was.
///
/// ```
/// use serpy::protocol::v1::{decode_base85, Base85Error};
/// let mut out = Vec::new();
/// decode_base85(b"VPaz", &mut out).unwrap();
/// assert_eq!(out, b"abc");
/// assert_eq!(decode_base85(b"~~~~~", &mut out), Err(Base85Error::Overflow { position: 0 }));
/// assert_eq!(out, b"abc");
/// ```
pub fn decode_base85(text: &[u8], out: &mut Vec<u8>) -> Result<(), Base85Error> {
    let start = out.len();
    let groups = text.chunks_exact(5);
    let rem = groups.remainder();
    let Some(len) = base85_decoded_len(text.len()) else {
        // Report a bad character or an overflow in the full groups first, as Python would.
        for (k, g) in groups.enumerate() {
            decode_group(&[g[0], g[1], g[2], g[3], g[4]], k * 5)?;
        }
        let position = text.len() - 1;
        let byte = text[position];
        return Err(if B85_DIGITS[usize::from(byte)] == 0xFF {
            Base85Error::BadChar { position, byte }
        } else {
            Base85Error::LoneChar { position }
        });
    };
    out.resize(start + len, 0);
    let whole = &text[..text.len() - rem.len()];
    let result = decode_base85_to_slice(whole, rem, &mut out[start..]);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// The value of the five characters in the low 40 bits of `w` (the first character in
/// the low byte): above `u32::MAX` when one is outside the alphabet or the group
/// overflows.
#[inline(always)]
fn group_sum(w: u64) -> u64 {
    B85_PLACE[0][(w & 0xFF) as usize]
        + B85_PLACE[1][(w >> 8 & 0xFF) as usize]
        + B85_PLACE[2][(w >> 16 & 0xFF) as usize]
        + B85_PLACE[3][(w >> 24 & 0xFF) as usize]
        + B85_PLACE[4][(w >> 32 & 0xFF) as usize]
}

/// What is wrong with one of the two groups in `g` (ten characters from `position`).
#[cold]
#[inline(never)]
fn pair_error(g: &[u8], position: usize) -> Base85Error {
    let (a, b) = g.split_at(5);
    let first = [a[0], a[1], a[2], a[3], a[4]];
    match decode_group(&first, position) {
        Err(e) => e,
        Ok(_) => group_error(&[b[0], b[1], b[2], b[3], b[4]], position + 5),
    }
}

/// The tables of the wide kernels in `sys` (AVX2), for this alphabet.
static B85_WIDE: B85Tables = B85Tables::new(B85_ALPHABET);

/// Decodes the pairs of groups (ten characters) of `text` into `out` (eight bytes each)
/// up to the first pair that is not valid base85, or the end of either; returns how
/// many pairs it decoded. Nothing of `out` after them is written. Where the processor
/// has AVX2, blocks of three pairs are decoded by `sys::base85_decode_wide` up to the
/// first block with an error, and the portable code goes on from there (so that it
/// alone decides where the valid pairs end).
#[inline]
pub(super) fn decode_pairs(text: &[u8], out: &mut [u8]) -> usize {
    if text.len() < 30 {
        return decode_pairs_portable(text, out);
    }
    decode_pairs_with(B85Kernel::detect(), text, out)
}

/// [`decode_pairs`] with the wide kernel `kernel`.
fn decode_pairs_with(kernel: B85Kernel, text: &[u8], out: &mut [u8]) -> usize {
    let blocks = base85_decode_wide(kernel, &B85_WIDE, text, out);
    let (text, out) = (&text[blocks * 30..], &mut out[blocks * 24..]);
    blocks * 3 + decode_pairs_portable(text, out)
}

/// [`decode_pairs`] in portable code, two groups per step: one 8-byte and one 2-byte
/// load in, one 8-byte store out, and one test for both groups.
#[inline]
fn decode_pairs_portable(text: &[u8], out: &mut [u8]) -> usize {
    let mut done = 0;
    for (g, o) in text.chunks_exact(10).zip(out.chunks_exact_mut(8)) {
        let lo = u64::from_le_bytes([g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]]);
        let hi = u64::from(u16::from_le_bytes([g[8], g[9]]));
        let a = group_sum(lo);
        let b = group_sum(lo >> 40 | hi << 24);
        if (a | b) > u64::from(u32::MAX) {
            break;
        }
        o.copy_from_slice(&(a << 32 | b).to_be_bytes());
        done += 1;
    }
    done
}

/// `text` holds whole groups, `rem` the final group of 2 to 4 characters (or nothing);
/// `out` must be exactly as long as they decode to.
pub(super) fn decode_base85_to_slice(
    text: &[u8],
    rem: &[u8],
    out: &mut [u8],
) -> Result<(), Base85Error> {
    let whole = text.len() / 10 * 10;
    let (text, single) = text.split_at(whole);
    let (head, out) = out.split_at_mut(whole / 10 * 8);
    let done = decode_pairs(text, head);
    let mut position = done * 10;
    if position < whole {
        return Err(pair_error(&text[position..position + 10], position));
    }
    let (head, tail) = out.split_at_mut(single.len() / 5 * 4);
    if let [c0, c1, c2, c3, c4] = *single {
        let v = decode_group(&[c0, c1, c2, c3, c4], position)?;
        head.copy_from_slice(&v.to_be_bytes());
        position += 5;
    }
    if !rem.is_empty() {
        let mut g = [b'~'; 5];
        g[..rem.len()].copy_from_slice(rem);
        let v = decode_group(&g, position)?;
        let n = tail.len().min(4);
        tail[..n].copy_from_slice(&v.to_be_bytes()[..n]);
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The base85 of `data` (also for the encoder's and decoder's tests in `v1.rs`).
    pub(in crate::protocol::v1) fn b85(data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_base85(data, &mut v);
        v
    }

    /// The bytes of base85 `text` (also for the tests in `v1.rs`).
    pub(in crate::protocol::v1) fn unb85(text: &[u8]) -> Result<Vec<u8>, Base85Error> {
        let mut v = Vec::new();
        decode_base85(text, &mut v).map(|()| v)
    }

    #[test]
    fn base85_matches_python() {
        // base64.b85encode of each input.
        let cases: [(&[u8], &[u8]); 11] = [
            (b"", b""),
            (b"\x00", b"00"),
            (b"\x00\x01", b"009"),
            (b"abc", b"VPaz"),
            (b"abcd", b"VPa!s"),
            (b"abcde", b"VPa!sWd"),
            (b"\x01\x02\x03\x04\x05\x06", b"0RjUA1qJ"),
            (b"\x01\x02\x03\x04\x05\x06\x07", b"0RjUA1qKH"),
            (b"\xff\xff\xff\xff", b"|NsC0"),
            (b"\xff\xff\xff\xff\xff\xff\xff", b"|NsC0|Ns9"),
            (b"\x00\x01\x1f\xff", b"00AHW"),
        ];
        for (data, text) in cases {
            assert_eq!(b85(data), text, "{data:?}");
            assert_eq!(base85_encoded_len(data.len()), text.len());
            assert_eq!(unb85(text).unwrap(), data, "{text:?}");
            assert_eq!(base85_decoded_len(text.len()), Some(data.len()));
        }
        for n in 0..=7 {
            let data: Vec<u8> = (0..n).map(|i| 0xF0 | i as u8).collect();
            assert_eq!(unb85(&b85(&data)).unwrap(), data);
            let all_ff = vec![0xFF; n];
            assert_eq!(unb85(&b85(&all_ff)).unwrap(), all_ff);
        }
        // Appends to what is there.
        let mut v = b"x".to_vec();
        encode_base85(b"abc", &mut v);
        decode_base85(b"VPaz", &mut v).unwrap();
        assert_eq!(v, b"xVPazabc");
    }

    /// Python's `b85encode`, one digit at a time: the reference for the encoder.
    fn b85_reference(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in data.chunks(4) {
            let mut g = [0u8; 4];
            g[..chunk.len()].copy_from_slice(chunk);
            let mut v = u32::from_be_bytes(g);
            let mut five = [0u8; 5];
            for c in five.iter_mut().rev() {
                *c = B85_ALPHABET[(v % 85) as usize];
                v /= 85;
            }
            out.extend_from_slice(&five[..chunk.len() + 1]);
        }
        out
    }

    #[test]
    fn base85_encoder_matches_the_reference_at_every_length() {
        // Every length up to 300 (each remainder after the pairs of groups) and some
        // longer ones, random bytes and the extremes, appended after a prefix to check
        // the offset too.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut noise = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 32) as u8
                })
                .collect()
        };
        for len in (0..300).chain([511, 512, 515, 1031, 4099, 70_001]) {
            for data in [noise(len), vec![0xFF; len], vec![0; len], noise(len)] {
                let mut ours = b"prefix".to_vec();
                encode_base85(&data, &mut ours);
                assert_eq!(&ours[..6], b"prefix");
                assert_eq!(ours[6..], b85_reference(&data), "{data:?}");
                assert_eq!(unb85(&ours[6..]).unwrap(), data);
            }
        }
        // Group values at the edges of the digit ranges.
        for v in [
            0u32, 84, 85, 7224, 7225, 614_124, 614_125, 52_200_624, 52_200_625,
        ]
        .into_iter()
        .chain([u32::MAX - 1, u32::MAX, 0x8000_0000, 0x7FFF_FFFF])
        {
            let data = [v.to_be_bytes(), (!v).to_be_bytes()].concat();
            assert_eq!(b85(&data), b85_reference(&data), "{v}");
        }
    }

    #[test]
    fn base85_digits_are_exact_on_both_sides_of_every_pair_boundary() {
        // The fixed-point products are exact for every u32 (checked once, exhaustively);
        // the values where an error would first show are those next to a multiple of
        // 85^2, where the last pair wraps and a carry reaches the others.
        let check = |v: u32| {
            let want = (
                (v / 52_200_625) as usize,
                (v / 7225 % 7225) as usize,
                (v % 7225) as usize,
            );
            assert_eq!(b85_digits(v), want, "{v}");
        };
        for h in 0..=u32::MAX / 7225 {
            let v = h * 7225;
            check(v);
            check(v.saturating_add(7224));
            check(v.saturating_sub(1));
        }
        check(u32::MAX);
    }

    /// Python's `b85decode`, one character at a time: the reference for the decoder.
    fn unb85_reference(text: &[u8]) -> Result<Vec<u8>, Base85Error> {
        let mut out = Vec::new();
        for (k, chunk) in text.chunks(5).enumerate() {
            let position = k * 5;
            let digit = |j: usize, c: u8| match B85_ALPHABET.iter().position(|&a| a == c) {
                Some(d) => Ok(d as u64),
                None => Err(Base85Error::BadChar {
                    position: position + j,
                    byte: c,
                }),
            };
            if chunk.len() == 1 {
                digit(0, chunk[0])?;
                return Err(Base85Error::LoneChar { position });
            }
            let mut acc = 0u64;
            for j in 0..5 {
                acc = acc * 85 + chunk.get(j).map_or(Ok(84), |&c| digit(j, c))?;
            }
            let v = u32::try_from(acc).map_err(|_| Base85Error::Overflow { position })?;
            out.extend_from_slice(&v.to_be_bytes()[..chunk.len() - 1]);
        }
        Ok(out)
    }

    /// A deterministic stream of pseudo-random bytes.
    fn noise(seed: u64) -> impl FnMut(usize) -> Vec<u8> {
        let mut x = seed;
        move |n| {
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 32) as u8
                })
                .collect()
        }
    }

    /// Every kernel's `decode_pairs` on `text` (into an output of `out_len` bytes,
    /// filled with a pattern first) gives the portable result: the same count, the same
    /// bytes, nothing written after them.
    fn same_pairs_everywhere(text: &[u8], out_len: usize) -> usize {
        let mut want = vec![0xA5u8; out_len];
        let n = decode_pairs_with(B85Kernel::Portable, text, &mut want);
        for kernel in B85Kernel::available() {
            let mut got = vec![0xA5u8; out_len];
            assert_eq!(
                decode_pairs_with(kernel, text, &mut got),
                n,
                "{kernel:?} {text:?}"
            );
            assert_eq!(got, want, "{kernel:?} {text:?}");
        }
        let mut got = vec![0xA5u8; out_len];
        assert_eq!(decode_pairs(text, &mut got), n);
        assert_eq!(got, want);
        n
    }

    #[test]
    fn wide_decoder_decodes_whole_blocks() {
        // The AVX2 kernel (where the processor has it) does the blocks itself: a wrong
        // kernel cannot hide behind the portable code that follows it.
        let text = b85(&noise(7)(240)); // 300 characters, ten blocks
        for kernel in B85Kernel::available() {
            let mut out = vec![0u8; 240];
            let blocks = base85_decode_wide(kernel, &B85_WIDE, &text, &mut out);
            if kernel == B85Kernel::Portable {
                assert_eq!(blocks, 0);
                continue;
            }
            assert_eq!(blocks, 10, "{kernel:?}");
            assert_eq!(out, unb85_reference(&text).unwrap(), "{kernel:?}");
            // Short of room or of text, it stops at the last whole block.
            assert_eq!(
                base85_decode_wide(kernel, &B85_WIDE, &text, &mut out[..71]),
                2
            );
            assert_eq!(
                base85_decode_wide(kernel, &B85_WIDE, &text[..89], &mut out),
                2
            );
        }
    }

    #[test]
    fn wide_decoder_matches_the_portable_one_at_every_length() {
        let mut noise = noise(0x9E37_79B9_7F4A_7C15);
        for len in 0..=200 {
            for data in [noise(len), vec![0xFF; len], vec![0; len]] {
                let text = b85(&data);
                // Whole decodes, through the kernel the processor has, against the
                // reference (the final group's padding included).
                assert_eq!(unb85(&text), Ok(data.clone()), "{len}");
                let whole = text.len() / 10 * 8;
                assert_eq!(same_pairs_everywhere(&text, whole), text.len() / 10);
                // Less room than the text needs.
                same_pairs_everywhere(&text, whole.saturating_sub(5));
            }
            // Random characters, mostly but not all from the alphabet.
            let text: Vec<u8> = noise(len)
                .into_iter()
                .map(|b| {
                    if b < 250 {
                        B85_ALPHABET[usize::from(b) % 85]
                    } else {
                        b
                    }
                })
                .collect();
            assert_eq!(unb85(&text), unb85_reference(&text), "{text:?}");
            same_pairs_everywhere(&text, len / 10 * 8);
        }
    }

    #[test]
    fn wide_decoder_refuses_every_character_outside_the_alphabet_anywhere() {
        let good = b85(&noise(3)(72)); // 90 characters: three blocks
        for at in 0..good.len() {
            for byte in 0..=255u8 {
                let mut text = good.clone();
                text[at] = byte;
                let n = same_pairs_everywhere(&text, 72);
                let reference = unb85_reference(&text);
                assert_eq!(unb85(&text), reference, "{at} {byte:#04x}");
                assert_eq!(n == 9, reference.is_ok(), "{at} {byte:#04x}");
                if !B85_ALPHABET.contains(&byte) {
                    assert_eq!(n, at / 10, "{at} {byte:#04x}");
                    assert_eq!(
                        unb85(&text),
                        Err(Base85Error::BadChar { position: at, byte })
                    );
                }
            }
        }
    }

    #[test]
    fn wide_decoder_refuses_every_group_that_overflows() {
        // The largest group value is |NsC0 (2^32 - 1); the first digit 82 (`|`) with
        // the rest around the limit, the first digit 83 and 84 (`}`, `~`).
        let edges: [&[u8; 5]; 8] = [
            b"|NsC0", b"|NsC1", b"|NsD0", b"|Nt00", b"|O000", b"}0000", b"~0000", b"~~~~~",
        ];
        let good = b85(&noise(5)(96)); // 120 characters: four blocks
        for (e, edge) in edges.iter().enumerate() {
            for group in 0..good.len() / 5 {
                let mut text = good.clone();
                text[group * 5..group * 5 + 5].copy_from_slice(*edge);
                let n = same_pairs_everywhere(&text, 96);
                if e == 0 {
                    assert_eq!(n, 12);
                    let v = unb85(&text).unwrap();
                    assert_eq!(v[group * 4..group * 4 + 4], [0xFF; 4]);
                } else {
                    assert_eq!(n, group / 2, "{edge:?} at {group}");
                    assert_eq!(
                        unb85(&text),
                        Err(Base85Error::Overflow {
                            position: group * 5
                        })
                    );
                }
            }
        }
        // The value just under and over the limit, in every digit below the first.
        for v in [u32::MAX, u32::MAX - 1, 82 * 52_200_625, 82 * 52_200_625 - 1] {
            let mut text = b85(&[v.to_be_bytes(); 6].concat());
            assert_eq!(same_pairs_everywhere(&text, 24), 3);
            text[25..30].copy_from_slice(b"|NsC1");
            assert_eq!(same_pairs_everywhere(&text, 24), 2);
        }
    }

    /// Every kernel encodes `data` as the reference does (after a prefix, so that the
    /// output starts at every offset).
    fn same_text_everywhere(data: &[u8]) {
        let want = b85_reference(data);
        for kernel in B85Kernel::available() {
            let mut got = vec![0xA5u8; want.len() + 3];
            encode_base85_with(kernel, data, &mut got[3..]);
            assert_eq!(got[..3], [0xA5; 3]);
            assert_eq!(got[3..], want, "{kernel:?} {data:?}");
        }
        assert_eq!(b85(data), want);
    }

    #[test]
    fn wide_encoder_matches_the_reference_at_every_length() {
        let mut noise = noise(0x2545_f491_4f6c_dd1d);
        for len in (0..=200).chain([255, 256, 257, 4096, 65_536 + 7]) {
            for data in [noise(len), vec![0xFF; len], vec![0; len]] {
                same_text_everywhere(&data);
            }
        }
        // The AVX2 kernel (where the processor has it) does the blocks itself.
        let data = noise(320);
        for kernel in B85Kernel::available() {
            let mut out = vec![0u8; 400];
            let blocks = base85_encode_wide(kernel, &B85_WIDE, &data, &mut out);
            if kernel != B85Kernel::Portable {
                assert_eq!(blocks, 10, "{kernel:?}");
                assert_eq!(out, b85_reference(&data), "{kernel:?}");
                // Short of room or of data, it stops at the last whole block.
                assert_eq!(
                    base85_encode_wide(kernel, &B85_WIDE, &data, &mut out[..79]),
                    1
                );
                assert_eq!(
                    base85_encode_wide(kernel, &B85_WIDE, &data[..95], &mut out),
                    2
                );
            }
        }
    }

    #[test]
    fn wide_encoder_is_exact_on_both_sides_of_every_pair_boundary() {
        // The values next to a multiple of 85^2 (85^4 included), where a division that
        // is off by one would first show, eight at a time in every lane.
        let mut values = Vec::new();
        for h in 0..=u32::MAX / 7225 {
            let v = h * 7225;
            values.extend([v, v.saturating_add(7224), v.saturating_sub(1)]);
        }
        values.extend([
            u32::MAX,
            u32::MAX - 1,
            82 * 52_200_625,
            0x8000_0000,
            0x7FFF_FFFF,
        ]);
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_be_bytes()).collect();
        for kernel in B85Kernel::available() {
            for (k, chunk) in data.chunks(4 * 8 * 1024).enumerate() {
                let mut got = vec![0u8; base85_encoded_len(chunk.len())];
                encode_base85_with(kernel, chunk, &mut got);
                for (g, (text, value)) in got.chunks(5).zip(chunk.chunks(4)).enumerate() {
                    let v = u32::from_be_bytes([value[0], value[1], value[2], value[3]]);
                    let (first, middle, low) = b85_digits(v);
                    let want = [
                        B85_ALPHABET[first],
                        B85_PAIRS[middle][0],
                        B85_PAIRS[middle][1],
                        B85_PAIRS[low][0],
                        B85_PAIRS[low][1],
                    ];
                    assert_eq!(text, want, "{kernel:?} {v} (chunk {k}, group {g})");
                }
            }
        }
    }

    /// The AVX2 encoder against the portable digits for every `u32` (about 15 s in a
    /// release build: `cargo test --release --lib every_u32 -- --ignored`).
    #[test]
    #[ignore]
    fn wide_encoder_is_exact_for_every_u32() {
        const BATCH: u32 = 1 << 16;
        let mut data = vec![0u8; 4 * BATCH as usize];
        let mut got = vec![0u8; 5 * BATCH as usize];
        let kernel = *B85Kernel::available().last().unwrap();
        for base in (0..=u32::MAX / BATCH).map(|b| b * BATCH) {
            for (i, o) in data.chunks_exact_mut(4).enumerate() {
                o.copy_from_slice(&(base + i as u32).to_be_bytes());
            }
            encode_base85_with(kernel, &data, &mut got);
            for (i, text) in got.chunks_exact(5).enumerate() {
                let (first, middle, low) = b85_digits(base + i as u32);
                assert_eq!(text[0], B85_ALPHABET[first]);
                assert_eq!(text[1..3], B85_PAIRS[middle]);
                assert_eq!(text[3..5], B85_PAIRS[low]);
            }
        }
    }

    #[test]
    fn base85_errors() {
        use Base85Error::*;
        assert_eq!(unb85(b"~~~~~"), Err(Overflow { position: 0 }));
        assert_eq!(unb85(b"|NsC1"), Err(Overflow { position: 0 }));
        assert_eq!(unb85(b"00000~~~~~"), Err(Overflow { position: 5 }));
        assert_eq!(unb85(b"00000~~"), Err(Overflow { position: 5 }));
        assert_eq!(unb85(b"~~"), Err(Overflow { position: 0 }));
        assert_eq!(
            unb85(b"00\"00"),
            Err(BadChar {
                position: 2,
                byte: b'"'
            })
        );
        assert_eq!(
            unb85(b"00000 0"),
            Err(BadChar {
                position: 5,
                byte: b' '
            })
        );
        assert_eq!(
            unb85(b"\x1f"),
            Err(BadChar {
                position: 0,
                byte: 0x1F
            })
        );
        assert_eq!(unb85(b"0"), Err(LoneChar { position: 0 }));
        assert_eq!(unb85(b"VPa!sW"), Err(LoneChar { position: 5 }));
        assert_eq!(
            unb85(b"VPa!s'"),
            Err(BadChar {
                position: 5,
                byte: b'\''
            })
        );
        // An error in a full group is reported before a lone final character.
        assert_eq!(unb85(b"~~~~~0"), Err(Overflow { position: 0 }));
        assert_eq!(
            unb85(b"\xff0000A"),
            Err(BadChar {
                position: 0,
                byte: 0xFF
            })
        );
        // The output is left as it was.
        let mut v = b"keep".to_vec();
        assert!(decode_base85(b"0000000~~~~~", &mut v).is_err());
        assert_eq!(v, b"keep");
        assert!(Overflow { position: 3 }.to_string().contains("overflow"));
        assert_eq!(base85_decoded_len(6), None);
    }

    #[test]
    fn base85_errors_in_either_group_of_a_pair() {
        use Base85Error::*;
        // The decoder tests two groups at once: the error must still name the first bad
        // group and character, wherever it is and whatever follows.
        let good = b85(&[0x5A; 40]); // 50 characters
        for at in 0..good.len() {
            for (bad, want) in [
                (
                    b'"',
                    BadChar {
                        position: at,
                        byte: b'"',
                    },
                ),
                (
                    0x1F,
                    BadChar {
                        position: at,
                        byte: 0x1F,
                    },
                ),
            ] {
                let mut t = good.clone();
                t[at] = bad;
                assert_eq!(unb85(&t), Err(want.clone()), "{at}");
                // A second error later does not change the report.
                if at + 6 < t.len() {
                    t[at + 6] = b'\'';
                    assert_eq!(unb85(&t), Err(want), "{at}");
                }
            }
            let mut t = good.clone();
            let group = at / 5 * 5;
            t[group..group + 5].copy_from_slice(b"~~~~~");
            assert_eq!(unb85(&t), Err(Overflow { position: group }), "{at}");
        }
    }
}
