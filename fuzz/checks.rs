//! The invariants the fuzz targets check on any input. Shared by the targets in
//! `fuzz/fuzz_targets/` and by `tests/fuzz_regressions.rs`, which replays every input the
//! fuzzers ever found a problem with.
//!
//! Input layout of the codec targets: byte 0 picks the maximum message size, byte 1 how the stream is cut into
//! chunks (and, with bit 6 set, that the checksums of v2 frames are made to match, see
//! [`fix_checksums`]; with bit 7 set, that a v2 stream's 0xF5 bytes stand for 16 KiB
//! each and its reads are longer, see [`expand`]), and the rest is the stream a peer
//! sends.
//!
//! For every input: nothing panics; between calls a decoder holds no more than its bound
//! ([`serpy::protocol::v1::Decoder::limit`], or `max(max_message_size, HEADER_LEN)` for
//! v2); no message above the maximum size comes out; decoding the stream in one chunk or
//! cut into pieces gives the same frames, and so does reading it (`read_from`, which
//! cuts small payloads out of the decoder's receive chunk); and what the encoders write decodes back to the
//! message it came from.
//!
//! The `pickle_decoder` target ([`check_pickle`]): byte 0 picks the decoder's limits, the
//! rest is the pickle. For every input: nothing panics (nor overflows the stack); decoding
//! twice gives the same answer; a value that decodes is displayed, written back by the
//! encoder, and the encoder's pickle decodes to the same value.
#![allow(dead_code)] // each user needs a different part

use std::io::Read;

use serpy::protocol::{detect, v1, v2, Decoder, Detection, Frame, WireBuf};
use serpy::{Message, Mode, Protocol, ProtocolError, TextEncoding};

/// Splits a fuzz input into (maximum message size, chunking seed, stream).
pub fn split_input(data: &[u8]) -> Option<(usize, u8, &[u8])> {
    let (&size, rest) = data.split_first()?;
    let (&seed, stream) = rest.split_first()?;
    let max = match size % 4 {
        // Tiny maxima make the "too large" paths easy to reach.
        0 => usize::from(size / 4),
        1 => 64,
        2 => 1024,
        _ => 1 << 20,
    };
    Some((max, seed, stream))
}

/// Chunk lengths for `seed`: 0 gives one byte at a time, others a pseudo-random mix of
/// short and longer pieces.
pub fn chunks(stream: &[u8], seed: u8) -> Vec<&[u8]> {
    chunks_scaled(stream, seed, 1)
}

/// [`chunks`] with the longer pieces `scale` times as long.
pub fn chunks_scaled(stream: &[u8], seed: u8, scale: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = stream;
    let mut state = u32::from(seed).wrapping_mul(2_654_435_761) | 1;
    while !rest.is_empty() {
        let n = if seed == 0 {
            1
        } else {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let r = state as usize;
            if r % 3 == 0 {
                1 + r % 5
            } else {
                1 + r % (97 * scale)
            }
        };
        let (a, b) = rest.split_at(n.min(rest.len()));
        out.push(a);
        rest = b;
    }
    out
}

/// The most bytes `decoder` may hold between calls.
pub fn bound(decoder: &Decoder, max: usize) -> usize {
    match decoder {
        Decoder::V1(d) => d.limit(),
        Decoder::V2(_) => max.max(v2::HEADER_LEN),
        other => panic!("no memory bound known for {other:?}"),
    }
}

/// Decodes `pieces` one call each, checking the memory bound after every call.
fn decode_pieces(decoder: &mut Decoder, max: usize, pieces: &[&[u8]]) -> Vec<Frame> {
    let mut out = Vec::new();
    for p in pieces {
        decoder.decode(p, &mut out);
        assert!(
            decoder.buffered() <= bound(decoder, max),
            "holds {} bytes, more than the bound {}",
            decoder.buffered(),
            bound(decoder, max)
        );
    }
    out
}

/// Merges adjacent BadMagic reports: v2 reports a run of garbage once per call that threw
/// some of it away, so only their sum does not depend on the chunking.
fn merge_garbage(frames: Vec<Frame>) -> Vec<Frame> {
    let mut out: Vec<Frame> = Vec::with_capacity(frames.len());
    for f in frames {
        if let Frame::Error(ProtocolError::BadMagic { skipped }) = f {
            if let Some(Frame::Error(ProtocolError::BadMagic { skipped: before })) = out.last_mut()
            {
                *before += skipped;
                continue;
            }
        }
        out.push(f);
    }
    out
}

/// Frame equality where a float NaN equals the same NaN (`PartialEq` says NaN != NaN).
pub fn same_frames(a: &[Frame], b: &[Frame]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| match (x, y) {
            (
                Frame::Data {
                    message: Message::Float(p),
                    mode: m,
                },
                Frame::Data {
                    message: Message::Float(q),
                    mode: n,
                },
            ) => p.to_bits() == q.to_bits() && m == n,
            _ => x == y,
        })
}

/// No message above the maximum comes out.
fn check_sizes(frames: &[Frame], max: usize) {
    for f in frames {
        if let Frame::Data { message, .. } = f {
            if let Message::Bytes(b) | Message::Pickle(b) = message {
                assert!(b.len() <= max, "{} bytes > max {max}", b.len());
            }
            if let Message::Text(t) = message {
                assert!(t.len() <= max, "{} bytes > max {max}", t.len());
            }
        }
    }
}

/// Decodes `stream` whole and in pieces with a decoder for `protocol`; checks they agree.
fn whole_and_split(protocol: Protocol, max: usize, seed: u8, stream: &[u8]) -> Vec<Frame> {
    let mut whole = Decoder::new(protocol, max);
    let a = decode_pieces(&mut whole, max, &[stream]);
    let mut split = Decoder::new(protocol, max);
    let b = decode_pieces(&mut split, max, &chunks(stream, seed));
    check_sizes(&a, max);
    let (a, b) = if protocol == Protocol::V2 {
        (merge_garbage(a), merge_garbage(b))
    } else {
        (a, b)
    };
    assert!(
        same_frames(&a, &b),
        "one chunk and split chunks disagree:\n{a:?}\n{b:?}"
    );
    assert_eq!(whole.buffered(), split.buffered());
    a
}

/// The byte that [`expand`] makes [`EXPANDED`] bytes long.
pub const EXPAND_BYTE: u8 = 0xF5;
/// How long an [`EXPAND_BYTE`] becomes.
pub const EXPANDED: usize = 16 * 1024;
/// At most this many [`EXPAND_BYTE`]s are expanded (the rest stay as they are), so that an
/// input never makes more than about 1 MiB of stream.
const MAX_EXPANSIONS: usize = 64;

/// With bit 7 of the seed set, each of the first [`MAX_EXPANSIONS`] bytes 0xF5 of a v2
/// stream becomes 16 KiB of 0xF5: so that short inputs reach large payloads (16 KiB and
/// more, read into buffers of their own) and the reads of a whole frame that follow a
/// large one (with [`chunks_scaled`]). A frame of length 16384 (`00 40 00 00`) with one
/// 0xF5 as its payload is then whole.
pub fn expand(seed: u8, stream: &[u8]) -> Vec<u8> {
    if seed & 0x80 == 0 {
        return stream.to_vec();
    }
    let mut out = Vec::with_capacity(stream.len());
    let mut left = MAX_EXPANSIONS;
    for &b in stream {
        if b == EXPAND_BYTE && left > 0 {
            left -= 1;
            out.resize(out.len() + EXPANDED, EXPAND_BYTE);
        } else {
            out.push(b);
        }
    }
    out
}

/// With bit 6 of the seed set, rewrites the checksum of every whole v2 frame in `stream`
/// to match its payload, so that the fuzzer gets past the checksum to the type checks,
/// the float parser and UTF-8 validation.
pub fn fix_checksums(seed: u8, stream: &[u8]) -> Vec<u8> {
    let mut s = stream.to_vec();
    if seed & 0x40 == 0 {
        return s;
    }
    let mut at = 0;
    while let Some(offset) = s[at..].windows(5).position(|w| w == v2::MAGIC) {
        let start = at + offset;
        if start + v2::HEADER_LEN > s.len() {
            break;
        }
        let len = u32::from_le_bytes(s[start + 10..start + 14].try_into().unwrap()) as usize;
        let body = start + v2::HEADER_LEN;
        if len <= s.len() - body {
            let sum = v2::checksum(&s[body..body + len]);
            s[start + 6..start + 10].copy_from_slice(&sum.to_le_bytes());
            at = body + len;
        } else {
            at = body;
        }
    }
    s
}

/// A reader that hands out `pieces` one per read (and less when the buffer is smaller).
struct Pieces<'a> {
    pieces: Vec<&'a [u8]>,
    at: usize,
}

impl Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some(p) = self.pieces.get(self.at) else {
            return Ok(0);
        };
        let n = p.len().min(buf.len());
        buf[..n].copy_from_slice(&p[..n]);
        if n == p.len() {
            self.at += 1;
        } else {
            self.pieces[self.at] = &p[n..];
        }
        Ok(n)
    }
}

/// The v1 decoder on any stream, and the v1 encoder on the stream taken as a message.
pub fn check_v1(data: &[u8]) {
    let Some((max, seed, stream)) = split_input(data) else {
        return;
    };
    let frames = whole_and_split(Protocol::V1, max, seed, stream);

    // read_from (small raw messages cut out of the decoder's receive chunk) gives the same.
    let mut d = v1::Decoder::new(max);
    let mut reader = Pieces {
        pieces: chunks(stream, seed.wrapping_add(1)),
        at: 0,
    };
    let mut got = Vec::new();
    while d.read_from(&mut reader, &mut got).unwrap() > 0 {
        assert!(d.buffered() <= d.limit());
    }
    assert!(
        same_frames(&got, &frames),
        "read_from and decode disagree:\n{got:?}\n{frames:?}"
    );

    // Round trip: the stream as a message, in the mode the seed picks.
    let mode = Mode::ALL[usize::from(seed % 6)];
    let mut messages = vec![Message::from(stream)];
    if let Ok(text) = std::str::from_utf8(stream) {
        messages.push(Message::from(text));
    }
    for message in messages {
        let mut enc = v1::Encoder::new(TextEncoding::Utf8, max);
        let mut wire = WireBuf::new();
        let Ok(done) = enc.encode(&message, mode, &mut wire) else {
            continue; // refused (empty, too large): nothing was written
        };
        let frames = whole_and_split(Protocol::V1, max, seed, &wire.to_vec());
        let data: Vec<&Frame> = frames
            .iter()
            .filter(|f| !matches!(f, Frame::SetMode(_)))
            .collect();
        assert_eq!(data.len(), 1, "{frames:?}");
        let Frame::Data {
            message: got,
            mode: got_mode,
        } = data[0]
        else {
            panic!("the encoder's output did not decode: {frames:?}");
        };
        assert_eq!(*got_mode, Some(done.mode));
        let want = if done.mode.is_pickle() {
            Message::Pickle(v1::to_pickle(&message).unwrap())
        } else {
            Message::from(message.as_bytes().unwrap())
        };
        assert_eq!(*got, want);
    }
}

/// The v2 decoder on any stream, through `decode` and `read_from`, and the v2 encoder on
/// the stream taken as a message.
pub fn check_v2(data: &[u8]) {
    let Some((max, seed, stream)) = split_input(data) else {
        return;
    };
    let fixed = fix_checksums(seed, &expand(seed, stream));
    let stream = &fixed[..];
    let frames = whole_and_split(Protocol::V2, max, seed, stream);

    // read_from, reading from a socket-like source, gives the same (in reads of up to
    // whole large frames when the stream was expanded).
    let mut d = v2::Decoder::new(max);
    let scale = if seed & 0x80 != 0 { 700 } else { 1 };
    let mut reader = Pieces {
        pieces: chunks_scaled(stream, seed.wrapping_add(1), scale),
        at: 0,
    };
    let mut got = Vec::new();
    while d.read_from(&mut reader, &mut got).unwrap() > 0 {
        assert!(d.buffered() <= max.max(v2::HEADER_LEN));
    }
    let got = merge_garbage(got);
    assert!(
        same_frames(&got, &frames),
        "read_from and decode disagree:\n{got:?}\n{frames:?}"
    );

    let mut messages = vec![Message::from(stream)];
    if let Ok(text) = std::str::from_utf8(stream) {
        messages.push(Message::from(text));
    }
    if let Ok(le) = <[u8; 8]>::try_from(stream) {
        messages.push(Message::Int(i64::from_le_bytes(le)));
        messages.push(Message::Float(f64::from_le_bytes(le)));
    }
    for message in messages {
        let mut wire = WireBuf::new();
        v2::encode(&message, &mut wire).unwrap();
        let frames = whole_and_split(Protocol::V2, max, seed, &wire.to_vec());
        if message.len() > max && !matches!(message, Message::Int(_) | Message::Float(_)) {
            assert!(
                matches!(frames[..], [Frame::Error(ProtocolError::TooLarge { .. })]),
                "{frames:?}"
            );
            continue;
        }
        match (&frames[..], &message) {
            ([Frame::Error(ProtocolError::TooLarge { .. })], _) => {
                // An int or a float text longer than a tiny maximum.
                assert!(max < v2::FLOAT_HEX_MAX_LEN);
            }
            (
                [Frame::Data {
                    message: Message::Float(a),
                    mode: None,
                }],
                Message::Float(b),
            ) => assert!(a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())),
            ([Frame::Data { message: got, mode }], want) => {
                assert_eq!(got, want);
                assert_eq!(*mode, None);
            }
            _ => panic!("the encoder's output did not decode: {frames:?}"),
        }
    }
}

/// Protocol detection as an auto server does it: read until [`detect`] decides, then
/// decode everything with the decoder it chose.
pub fn check_detect(data: &[u8]) {
    let Some((max, seed, stream)) = split_input(data) else {
        return;
    };
    let fixed = fix_checksums(seed, stream);
    let stream = &fixed[..];
    let answer = detect(stream);
    // Once decided, more bytes never change the answer; five bytes always decide.
    for n in 0..=stream.len().min(8) {
        match detect(&stream[..n]) {
            Detection::NeedMore => assert!(n < v2::MAGIC.len()),
            d => assert_eq!(d, answer, "prefix {n}"),
        }
    }
    if stream.len() >= v2::MAGIC.len() {
        assert_ne!(answer, Detection::NeedMore);
    }
    let mut seen = Vec::new();
    let mut protocol = None;
    for piece in chunks(stream, seed) {
        seen.extend_from_slice(piece);
        match protocol {
            Some(_) => {}
            None => match detect(&seen) {
                Detection::V1 => protocol = Some(Protocol::V1),
                Detection::V2 => protocol = Some(Protocol::V2),
                Detection::NeedMore => {}
                other => panic!("detect answered {other:?}, which these checks do not know"),
            },
        }
    }
    if let Some(p) = protocol {
        assert_eq!(
            p,
            match answer {
                Detection::V1 => Protocol::V1,
                _ => Protocol::V2,
            }
        );
        let frames = whole_and_split(p, max, seed, stream);
        if p == Protocol::V2 {
            // A v2 stream starts with a whole magic: no garbage report can come first.
            assert!(!matches!(
                frames.first(),
                Some(Frame::Error(ProtocolError::BadMagic { .. }))
            ));
        }
    }
}

/// The pickle decoder's invariants (see the module docs).
pub fn check_pickle(data: &[u8]) {
    use serpy::pickle::{self, DecodeOptions};
    let Some((&sel, input)) = data.split_first() else {
        return;
    };
    let opts = match sel % 4 {
        0 => DecodeOptions::new(),
        1 => DecodeOptions::new().max_depth(usize::from(sel / 4 % 8)),
        2 => DecodeOptions::new().max_values(usize::from(sel) * 4),
        _ => DecodeOptions::new().max_depth(3).max_values(64),
    };
    let bytes = serpy::Bytes::copy_from_slice(input);
    let first = pickle::decode_with(&bytes, &opts);
    let second = pickle::decode_with(&bytes, &opts);
    // Debug, not ==: NaN != NaN, and Debug tells -0.0 from 0.0.
    assert_eq!(
        format!("{first:?}"),
        format!("{second:?}"),
        "not deterministic"
    );
    if let Ok(v) = first {
        let _ = v.to_string();
        let written = pickle::encode(&v).expect("a decoded value can be written");
        let back = pickle::decode_with(&written, &DecodeOptions::new().max_values(usize::MAX))
            .expect("what the encoder writes decodes");
        assert_eq!(
            format!("{v:?}"),
            format!("{back:?}"),
            "the round trip changed the value"
        );
    }
}
