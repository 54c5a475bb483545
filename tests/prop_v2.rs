//! Property tests of the v2 codec: round trips in random chunks, and random or hostile
//! bytes that must never panic the decoder nor make it hold more than one frame.

use std::io::{self, Read};

use proptest::prelude::*;
use serpy::protocol::v2::{self, Decoder, HEADER_LEN, MAGIC};
use serpy::protocol::{Frame, WireBuf};
use serpy::{Bytes, Message, ProtocolError};

fn arb_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        4 => any::<i64>().prop_map(Message::Int),
        4 => any::<u64>().prop_map(|bits| Message::Float(f64::from_bits(bits))),
        1 => prop::sample::select(vec![0.0, -0.0, f64::INFINITY, f64::NEG_INFINITY, f64::NAN, 5e-324, f64::MAX])
            .prop_map(Message::Float),
        4 => any::<String>().prop_map(Message::from),
        4 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Message::from),
        // Sometimes a large payload (filled from a seed: cheap to make and to shrink).
        1 => (0usize..100_000, any::<u8>()).prop_map(|(len, seed)| {
            Message::from((0..len).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect::<Vec<u8>>())
        }),
        1 => (16_000usize..40_000).prop_map(|len| Message::from("é".repeat(len / 2))),
    ]
}

fn encode_all(messages: &[Message]) -> Vec<u8> {
    let mut wire = WireBuf::new();
    for m in messages {
        v2::encode(m, &mut wire).unwrap();
    }
    wire.to_vec()
}

fn same(a: &Message, b: &Message) -> bool {
    match (a, b) {
        (Message::Float(x), Message::Float(y)) => {
            (x.is_nan() && y.is_nan()) || x.to_bits() == y.to_bits()
        }
        _ => a == b,
    }
}

fn assert_data(frames: &[Frame], want: &[Message]) -> Result<(), TestCaseError> {
    prop_assert_eq!(frames.len(), want.len());
    for (frame, want) in frames.iter().zip(want) {
        match frame {
            Frame::Data {
                message,
                mode: None,
            } => prop_assert!(same(message, want), "{:?} != {:?}", message, want),
            other => prop_assert!(false, "unexpected {:?}", other),
        }
    }
    Ok(())
}

/// Feeds `input` cut at the sizes of `chunks` (cycled), checking the memory bound after
/// each call.
fn decode_chunked(
    decoder: &mut Decoder,
    input: &[u8],
    chunks: &[usize],
    bound: usize,
) -> Result<Vec<Frame>, TestCaseError> {
    let mut out = Vec::new();
    let mut rest = input;
    for &size in chunks.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at(size.min(rest.len()));
        decoder.decode(piece, &mut out);
        prop_assert!(
            decoder.buffered() <= bound,
            "buffered {} > {}",
            decoder.buffered(),
            bound
        );
        rest = tail;
    }
    Ok(out)
}

/// A reader that returns the sizes of `chunks` (cycled).
struct Chunked<'a> {
    data: &'a [u8],
    chunks: &'a [usize],
    next: usize,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let size = self.chunks[self.next % self.chunks.len()];
        self.next += 1;
        let n = size.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Reads `data` through [`Decoder::read_from`] from a reader handing out the sizes of
/// `chunks` (cycled), checking the memory bound after each read; returns the frames and
/// the decoder.
fn read_chunked(
    data: &[u8],
    chunks: &[usize],
    max: usize,
    bound: usize,
) -> Result<(Vec<Frame>, Decoder), TestCaseError> {
    let mut reader = Chunked {
        data,
        chunks,
        next: 0,
    };
    let mut decoder = Decoder::new(max);
    let mut frames = Vec::new();
    while decoder.read_from(&mut reader, &mut frames).unwrap() > 0 {
        prop_assert!(decoder.buffered() <= bound);
    }
    Ok((frames, decoder))
}

/// Frames equal, with NaN equal to NaN (and the sign of zero compared).
fn same_frames(a: &[Frame], b: &[Frame]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|pair| match pair {
            (
                Frame::Data {
                    message: x,
                    mode: mx,
                },
                Frame::Data {
                    message: y,
                    mode: my,
                },
            ) => mx == my && same(x, y),
            (x, y) => x == y,
        })
}

/// The reports of one run of garbage may be split over calls; merge them.
fn merge_bad_magic(frames: Vec<Frame>) -> Vec<Frame> {
    let mut merged: Vec<Frame> = Vec::new();
    for frame in frames {
        if let (
            Some(Frame::Error(ProtocolError::BadMagic { skipped: a })),
            Frame::Error(ProtocolError::BadMagic { skipped: b }),
        ) = (merged.last_mut(), &frame)
        {
            *a += b;
            continue;
        }
        merged.push(frame);
    }
    merged
}

/// Pieces of hostile streams: noise, magics, headers with random fields, real frames.
fn arb_hostile(max: usize) -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..40),
        Just(MAGIC.to_vec()),
        prop::sample::select(vec![1usize, 2, 3, 4]).prop_map(|n| MAGIC[..n].to_vec()),
        (
            any::<u8>(),
            any::<u32>(),
            0..(max as u32 * 2),
            prop::collection::vec(any::<u8>(), 0..20)
        )
            .prop_map(|(code, sum, len, tail)| {
                let mut v = MAGIC.to_vec();
                v.push(code);
                v.extend(sum.to_le_bytes());
                v.extend(len.to_le_bytes());
                v.extend(tail);
                v
            }),
        (
            any::<u8>(),
            prop::collection::vec(any::<u8>(), 0..(max * 2))
        )
            .prop_map(|(code, payload)| {
                let mut v = v2::header(code, &payload).to_vec();
                v.extend(payload);
                v
            }),
        arb_message()
            .prop_filter("small", |m| m.len() <= 200)
            .prop_map(|m| encode_all(&[m])),
    ];
    prop::collection::vec(piece, 0..30).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn messages_round_trip_in_any_chunks(
        messages in prop::collection::vec(arb_message(), 0..8),
        chunks in prop::collection::vec(1usize..5000, 1..20),
    ) {
        let bytes = encode_all(&messages);
        let max = 1 << 20;
        let mut decoder = Decoder::new(max);
        let frames = decode_chunked(&mut decoder, &bytes, &chunks, max + HEADER_LEN)?;
        assert_data(&frames, &messages)?;
        prop_assert_eq!(decoder.buffered(), 0);

        let (frames, _) = read_chunked(&bytes, &chunks, max, max + HEADER_LEN)?;
        assert_data(&frames, &messages)?;
    }

    #[test]
    fn random_bytes_never_panic_and_stay_bounded(
        bytes in prop::collection::vec(any::<u8>(), 0..2000),
        chunks in prop::collection::vec(1usize..300, 1..10),
    ) {
        let max = 256;
        let mut decoder = Decoder::new(max);
        decode_chunked(&mut decoder, &bytes, &chunks, max + HEADER_LEN)?;
    }

    #[test]
    fn hostile_streams_decode_alike_in_any_chunks(
        bytes in arb_hostile(256),
        chunks in prop::collection::vec(1usize..300, 1..10),
    ) {
        let max = 256;
        let bound = max + HEADER_LEN;
        let mut whole = Decoder::new(max);
        let all_at_once = decode_chunked(&mut whole, &bytes, &[usize::MAX], bound)?;
        let mut chunked = Decoder::new(max);
        let in_chunks = decode_chunked(&mut chunked, &bytes, &chunks, bound)?;
        let want = merge_bad_magic(all_at_once);
        let got = merge_bad_magic(in_chunks);
        prop_assert!(same_frames(&got, &want), "{:?} != {:?}", got, want);
        let mut bytewise = Decoder::new(max);
        let one_by_one = decode_chunked(&mut bytewise, &bytes, &[1], bound)?;
        let got = merge_bad_magic(one_by_one);
        prop_assert!(same_frames(&got, &want), "{:?} != {:?}", got, want);
        prop_assert_eq!(chunked.buffered(), whole.buffered());

        let (frames, _) = read_chunked(&bytes, &chunks, max, bound)?;
        let got = merge_bad_magic(frames);
        prop_assert!(same_frames(&got, &want), "{:?} != {:?}", got, want);
    }

    #[test]
    fn a_huge_claim_holds_nothing(
        len in 257u32..=u32::MAX,
        follow in 0usize..200_000,
        chunks in prop::collection::vec(1usize..70_000, 1..5),
    ) {
        let max = 256;
        let mut bytes = v2::header(v2::TYPE_BYTES, b"").to_vec();
        bytes[10..14].copy_from_slice(&len.to_le_bytes());
        // Only bytes inside the claimed frame: what follows a frame is another matter
        // (garbage there is rightly reported as such).
        let follow = follow.min(len as usize);
        bytes.resize(HEADER_LEN + follow, 0xab);
        let mut decoder = Decoder::new(max);
        let frames = decode_chunked(&mut decoder, &bytes, &chunks, HEADER_LEN)?;
        prop_assert_eq!(&frames, &[Frame::Error(ProtocolError::TooLarge { size: u64::from(len), max })]);
        prop_assert!(decoder.buffered() < HEADER_LEN);

        let mut reader = Chunked { data: &bytes, chunks: &chunks, next: 0 };
        let mut decoder = Decoder::new(max);
        let mut frames = Vec::new();
        while decoder.read_from(&mut reader, &mut frames).unwrap() > 0 {
            prop_assert!(decoder.buffered() < HEADER_LEN);
        }
        prop_assert_eq!(&frames, &[Frame::Error(ProtocolError::TooLarge { size: u64::from(len), max })]);
    }

    #[test]
    fn float_text_round_trips(bits in any::<u64>()) {
        let x = f64::from_bits(bits);
        let back = v2::float_fromhex(&v2::float_hex(x)).unwrap();
        prop_assert!(same(&Message::Float(back), &Message::Float(x)));
    }

    #[test]
    fn float_text_never_panics(text in "[ 0-9a-fA-FxXpP.+-]{0,40}|\\PC{0,20}") {
        let _ = v2::float_fromhex(&text);
    }
}

#[test]
fn large_payloads_keep_their_bytes() {
    let blob = Bytes::from(
        (0..300_000u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    let bytes = encode_all(&[Message::Bytes(blob.clone()), Message::from("after")]);
    let mut reader = &bytes[..];
    let mut decoder = Decoder::new(1 << 20);
    let mut frames = Vec::new();
    while decoder.read_from(&mut reader, &mut frames).unwrap() > 0 {}
    assert_eq!(
        frames,
        [
            Frame::Data {
                message: Message::Bytes(blob),
                mode: None
            },
            Frame::Data {
                message: Message::from("after"),
                mode: None
            },
        ]
    );
}

/// Pieces of streams around large frames: runs of frames of a few lengths of 16 KiB and
/// more (so that the decoder expects the next frame as long as the last one and reads it
/// whole into a payload buffer), bad checksums, small frames, noise and cut headers.
fn arb_around_large() -> impl Strategy<Value = Vec<u8>> {
    let len = prop::sample::select(vec![16_384usize, 20_000, 65_536, 65_543, 131_072]);
    let piece = prop_oneof![
        6 => (len.clone(), any::<u8>()).prop_map(|(len, seed)| {
            let payload: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect();
            encode_all(&[Message::from(payload)])
        }),
        1 => (len, any::<u8>()).prop_map(|(len, seed)| {
            let payload = vec![seed; len];
            let mut v = v2::header(v2::TYPE_BYTES, &payload).to_vec();
            v[6] ^= 1; // a bad checksum
            v.extend(payload);
            v
        }),
        2 => prop::collection::vec(any::<u8>(), 0..200).prop_map(|b| encode_all(&[Message::from(b)])),
        1 => prop::collection::vec(any::<u8>(), 0..40),
        1 => (1usize..HEADER_LEN).prop_map(|n| v2::header(v2::TYPE_BYTES, &[1; 20_000])[..n].to_vec()),
    ];
    prop::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// After a large frame the decoder reads the next header with its payload into a
    /// payload buffer: whatever actually follows (a frame of another length, a small one,
    /// garbage, a header cut short), in whatever reads, it decodes as from whole input.
    #[test]
    fn streams_around_large_frames_decode_alike_in_any_reads(
        bytes in arb_around_large(),
        chunks in prop::collection::vec(
            prop_oneof![1usize..64, 1000usize..70_000, Just(usize::MAX)],
            1..8,
        ),
    ) {
        let max = 1 << 20;
        let bound = max + HEADER_LEN;
        let mut whole = Decoder::new(max);
        let want = merge_bad_magic(decode_chunked(&mut whole, &bytes, &[usize::MAX], bound)?);
        let mut chunked = Decoder::new(max);
        let got = merge_bad_magic(decode_chunked(&mut chunked, &bytes, &chunks, bound)?);
        prop_assert!(same_frames(&got, &want), "decode in chunks differs");
        let (frames, decoder) = read_chunked(&bytes, &chunks, max, bound)?;
        let got = merge_bad_magic(frames);
        prop_assert!(same_frames(&got, &want), "read_from differs: {} frames, want {}", got.len(), want.len());
        prop_assert_eq!(decoder.buffered(), whole.buffered());
    }
}
