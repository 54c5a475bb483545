//! Property tests of the v1 codec: what one encoder writes, one decoder reads back
//! whatever the chunking; random bytes never make the decoder panic or hold too much;
//! base85 agrees with the `base85` crate's encoder and with Python's decoding rules.

use proptest::prelude::*;
use serpy::protocol::v1::{self, Decoder, Encoder};
use serpy::protocol::{python_float_repr, Frame, WireBuf};
use serpy::{Bytes, Error, Message, Mode, TextEncoding};

fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            3 => any::<char>(),
            2 => prop::char::range('a', 'z'),
            1 => Just('\x1f'),
            1 => Just('\x04'),
            1 => Just('\x01'),
            1 => Just('µ'),
        ],
        0..24,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        text().prop_map(Message::from),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(Message::from),
        any::<i64>().prop_map(Message::Int),
        any::<f64>().prop_map(Message::Float),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(|v| Message::Pickle(Bytes::from(v))),
    ]
}

fn mode() -> impl Strategy<Value = Mode> {
    (0u8..6).prop_map(|m| Mode::try_from(m).unwrap())
}

/// What the receiver must get for `message` sent in `asked` (UTF-8 text), worked out
/// from the rules, or `None` when the encoder must refuse it as empty.
fn expected(message: &Message, asked: Mode) -> Option<(Mode, Message)> {
    let mut mode = asked;
    match message {
        Message::Bytes(_) if !mode.is_base85() => mode = Mode::Base85.with_ack(mode.is_acked()),
        Message::Pickle(_) if !mode.is_pickle() => mode = Mode::Pickle.with_ack(mode.is_acked()),
        _ => {}
    }
    let payload: Vec<u8> = if mode.is_pickle() {
        v1::to_pickle(message).unwrap().to_vec()
    } else {
        match message {
            Message::Text(t) => t.as_bytes().to_vec(),
            Message::Int(i) => i.to_string().into_bytes(),
            Message::Float(x) => python_float_repr(*x).into_bytes(),
            Message::Bytes(b) | Message::Pickle(b) => b.to_vec(),
            other => unreachable!("the strategies make no {other:?}"),
        }
    };
    let leading_ctrl = payload.first() == Some(&v1::CTRL);
    if mode == Mode::Plain && (leading_ctrl || payload.contains(&v1::SEP)) {
        mode = Mode::Base85;
    }
    if mode == Mode::PlainAck
        && (leading_ctrl || payload.contains(&v1::SEP) || payload.contains(&v1::EOT))
    {
        mode = Mode::Base85Ack;
    }
    if payload.is_empty() && !mode.is_acked() {
        return None;
    }
    let payload = Bytes::from(payload);
    let delivered = if mode.is_pickle() {
        Message::Pickle(payload)
    } else {
        Message::Bytes(payload)
    };
    Some((mode, delivered))
}

/// Feeds `input` in chunks whose sizes cycle through `sizes` (0 feeds an empty chunk).
fn feed_chunked(d: &mut Decoder, input: &[u8], sizes: &[usize]) -> Vec<Frame> {
    let mut out = Vec::new();
    let mut rest = input;
    let mut k = 0;
    while !rest.is_empty() {
        let n = if sizes.is_empty() {
            rest.len()
        } else {
            sizes[k % sizes.len()].min(rest.len())
        };
        k += 1;
        if n == 0 {
            d.decode(&[], &mut out);
        }
        let n = n.max(1);
        let (a, b) = rest.split_at(n);
        d.decode(a, &mut out);
        assert!(d.buffered() <= d.limit());
        rest = b;
    }
    out
}

/// Reads `input` with [`Decoder::read_from`] from a reader that gives at most the next
/// of `sizes` bytes a read (cycling; all of it at once without sizes).
fn read_chunked(d: &mut Decoder, input: &[u8], sizes: &[usize]) -> Vec<Frame> {
    struct Pieces<'a> {
        rest: &'a [u8],
        sizes: &'a [usize],
        k: usize,
    }
    impl std::io::Read for Pieces<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let most = match self.sizes {
                [] => usize::MAX,
                s => s[self.k % s.len()].max(1),
            };
            self.k += 1;
            let n = self.rest.len().min(buf.len()).min(most);
            buf[..n].copy_from_slice(&self.rest[..n]);
            self.rest = &self.rest[n..];
            Ok(n)
        }
    }
    let mut reader = Pieces {
        rest: input,
        sizes,
        k: 0,
    };
    let mut out = Vec::new();
    while d.read_from(&mut reader, &mut out).unwrap() > 0 {
        assert!(d.buffered() <= d.limit());
    }
    out
}

/// Input that exercises the decoder: separators, EOTs, control blocks (good and bad),
/// base85 text, long runs and arbitrary bytes.
fn noisy_input() -> impl Strategy<Value = Vec<u8>> {
    let b85 = prop::sample::select(
        b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%&()*+-;<=>?@^_`{|}~"
            .to_vec(),
    );
    let token = prop_oneof![
        3 => any::<u8>().prop_map(|b| vec![b]),
        2 => Just(vec![v1::SEP]),
        1 => Just(vec![v1::EOT]),
        1 => Just(vec![v1::CTRL]),
        2 => (0u8..8).prop_map(|d| format!("\x01SETMODE{d}\x1f").into_bytes()),
        1 => Just(b"\x01ACKEOT!!\x1f".to_vec()),
        1 => Just(b"\x01ACKMODCG\x1f".to_vec()),
        3 => prop::collection::vec(b85, 0..30),
        1 => (1usize..150).prop_map(|n| vec![b'~'; n]),
        1 => (1usize..150).prop_map(|n| vec![b'0'; n]),
    ];
    prop::collection::vec(token, 0..40).prop_map(|t| t.concat())
}

/// Python's `base64.b85decode`, written plainly (plus: a lone final character is refused).
fn reference_b85decode(text: &[u8]) -> Option<Vec<u8>> {
    const ALPHABET: &[u8] =
        b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%&()*+-;<=>?@^_`{|}~";
    if text.len() % 5 == 1 {
        return None;
    }
    let padding = (5 - text.len() % 5) % 5;
    let mut padded = text.to_vec();
    padded.extend(std::iter::repeat(b'~').take(padding));
    let mut out = Vec::new();
    for group in padded.chunks(5) {
        let mut acc: u64 = 0;
        for c in group {
            acc = acc * 85 + ALPHABET.iter().position(|a| a == c)? as u64;
        }
        out.extend_from_slice(&u32::try_from(acc).ok()?.to_be_bytes());
    }
    out.truncate(out.len() - padding);
    Some(out)
}

/// What `b85decode` makes of `text`, one group and one character at a time, with the
/// errors the crate documents: the first group (in order) that is wrong names its first
/// character outside the alphabet, or else its overflow; a lone final character is a
/// `LoneChar` (or a `BadChar`) once every full group before it is good.
fn naive_b85decode(text: &[u8]) -> Result<Vec<u8>, v1::Base85Error> {
    const ALPHABET: &[u8] =
        b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%&()*+-;<=>?@^_`{|}~";
    let mut out = Vec::new();
    for (k, group) in text.chunks(5).enumerate() {
        let mut acc: u64 = 0;
        for j in 0..5 {
            let position = k * 5 + j;
            let c = group.get(j).copied().unwrap_or(b'~');
            let Some(digit) = ALPHABET.iter().position(|&a| a == c) else {
                return Err(v1::Base85Error::BadChar { position, byte: c });
            };
            acc = acc * 85 + digit as u64;
        }
        if group.len() == 1 {
            return Err(v1::Base85Error::LoneChar { position: k * 5 });
        }
        let Ok(value) = u32::try_from(acc) else {
            return Err(v1::Base85Error::Overflow { position: k * 5 });
        };
        out.extend_from_slice(&value.to_be_bytes()[..group.len() - 1]);
    }
    Ok(out)
}

/// One base85 block: the text of random bytes (a few characters up to past the sizes
/// where the decoder changes paths: 2048 characters, whole or streamed; 16 KiB decoded,
/// cut from a chunk or not), then up to three faults: a character outside the alphabet,
/// a group of `~~~~~` (too large), one character more or fewer at the end.
fn base85_block() -> impl Strategy<Value = Vec<u8>> {
    let len = prop_oneof![
        4 => 0usize..40,
        4 => 0usize..700,
        3 => 1500usize..1700,
        1 => 16_000usize..16_600,
    ];
    // (kind, where, a byte outside the alphabet but neither 0x1F nor 0x01, which end or
    // start a block, a character of the alphabet)
    let fault = (
        0u8..4,
        any::<prop::sample::Index>(),
        prop::sample::select(vec![0u8, b' ', b'"', b'\'', b'.', 0x04, 0x7F, 0x80, 0xFF]),
        prop::sample::select(b"0~|".to_vec()),
    );
    (len, any::<u64>(), prop::collection::vec(fault, 0..4)).prop_map(|(len, seed, faults)| {
        let mut x = seed | 1;
        let data: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        let mut text = Vec::new();
        v1::encode_base85(&data, &mut text);
        for (kind, at, bad, good) in faults {
            match kind {
                0 if !text.is_empty() => {
                    let i = at.index(text.len());
                    text[i] = bad;
                }
                1 if text.len() >= 5 => {
                    let g = at.index(text.len() / 5) * 5;
                    text[g..g + 5].copy_from_slice(b"~~~~~");
                }
                2 => text.push(good),
                3 => {
                    text.pop();
                }
                _ => {}
            }
        }
        text
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
    /// The decoder's fast paths (pairs of groups decoded as they arrive, blocks decoded
    /// whole, bytes cut out of a chunk) deliver what the naive decoder above gives, error
    /// texts included, whatever the chunking.
    #[test]
    fn base85_blocks_decode_like_the_naive_decoder_in_any_chunks(
        pickle in any::<bool>(),
        blocks in prop::collection::vec(base85_block(), 1..6),
        sizes in prop::collection::vec(1usize..3000, 0..6),
    ) {
        let mode = if pickle { Mode::Pickle } else { Mode::Base85 };
        let mut input = format!("\x01SETMODE{}\x1f", u8::from(mode)).into_bytes();
        let mut want = vec![Frame::SetMode(mode)];
        for text in &blocks {
            input.extend_from_slice(text);
            input.push(v1::SEP);
            if text.is_empty() {
                continue;
            }
            want.push(match naive_b85decode(text) {
                Ok(bytes) => Frame::Data {
                    message: if pickle {
                        Message::Pickle(Bytes::from(bytes))
                    } else {
                        Message::Bytes(Bytes::from(bytes))
                    },
                    mode: Some(mode),
                },
                Err(e) => Frame::Error(serpy::ProtocolError::BadBase85 { mode, detail: e.to_string() }),
            });
        }
        let mut decoder = Decoder::new(1 << 20);
        prop_assert_eq!(&feed_chunked(&mut decoder, &input, &sizes), &want);
        prop_assert_eq!(decoder.buffered(), 0);
        // The same text alone, through decode_base85.
        for text in &blocks {
            let mut ours = b"kept".to_vec();
            let result = v1::decode_base85(text, &mut ours);
            match naive_b85decode(text) {
                Ok(bytes) => {
                    prop_assert_eq!(result, Ok(()));
                    prop_assert_eq!(&ours[4..], &bytes[..]);
                }
                Err(e) => {
                    prop_assert_eq!(result, Err(e));
                    prop_assert_eq!(&ours[..], b"kept");
                }
            }
        }
    }
}

proptest! {
    #[test]
    fn what_is_encoded_is_decoded(
        messages in prop::collection::vec((message(), mode()), 0..12),
        sizes in prop::collection::vec(0usize..40, 0..8),
    ) {
        let mut encoder = Encoder::new(TextEncoding::Utf8, 1 << 16);
        let mut wire = WireBuf::new();
        let mut want = Vec::new();
        for (message, asked) in &messages {
            let (len_before, mode_before) = (wire.len(), encoder.mode());
            match (encoder.encode(message, *asked, &mut wire), expected(message, *asked)) {
                (Ok(done), Some((mode, delivered))) => {
                    prop_assert_eq!(done.mode, mode);
                    prop_assert_eq!(done.set_mode, mode != mode_before);
                    prop_assert_eq!(encoder.mode(), mode);
                    if done.set_mode {
                        want.push(Frame::SetMode(mode));
                    }
                    want.push(Frame::Data { message: delivered, mode: Some(mode) });
                }
                (Err(Error::EmptyMessage { mode }), None) => {
                    prop_assert_eq!(mode, *asked);
                    prop_assert_eq!(wire.len(), len_before);
                    prop_assert_eq!(encoder.mode(), mode_before);
                }
                (got, want) => prop_assert!(false, "{:?} for {:?}, expected {:?}", got, message, want),
            }
        }
        let bytes = wire.to_vec();
        let mut decoder = Decoder::new(1 << 16);
        prop_assert_eq!(&feed_chunked(&mut decoder, &bytes, &sizes), &want);
        prop_assert_eq!(decoder.buffered(), 0);
        let mut decoder = Decoder::new(1 << 16);
        prop_assert_eq!(&feed_chunked(&mut decoder, &bytes, &[]), &want);
        // Read into the decoder's receive chunk (small raw messages cut out of it).
        let mut decoder = Decoder::new(1 << 16);
        prop_assert_eq!(&read_chunked(&mut decoder, &bytes, &sizes), &want);
        prop_assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn random_bytes_never_break_the_decoder(
        input in noisy_input(),
        sizes in prop::collection::vec(0usize..20, 1..8),
    ) {
        let mut whole = Decoder::new(64);
        prop_assert_eq!(whole.limit(), 96);
        let reference = feed_chunked(&mut whole, &input, &[]);
        let mut chunked = Decoder::new(64);
        let frames = feed_chunked(&mut chunked, &input, &sizes);
        prop_assert_eq!(&frames, &reference);
        prop_assert_eq!(chunked.buffered(), whole.buffered());
        prop_assert_eq!(chunked.mode(), whole.mode());
        let mut read = Decoder::new(64);
        prop_assert_eq!(&read_chunked(&mut read, &input, &sizes), &reference);
        prop_assert_eq!(read.buffered(), whole.buffered());
        prop_assert_eq!(read.mode(), whole.mode());
        for f in &frames {
            if let Frame::Data { message, .. } = f {
                prop_assert!(message.len() <= 64);
            }
        }
    }

    #[test]
    fn base85_agrees_with_the_reference(data in prop::collection::vec(any::<u8>(), 0..200)) {
        let mut ours = Vec::new();
        v1::encode_base85(&data, &mut ours);
        let reference = base85::encode(&data);
        prop_assert_eq!(&ours[..], reference.as_bytes());
        prop_assert_eq!(ours.len(), v1::base85_encoded_len(data.len()));
        let mut back = Vec::new();
        v1::decode_base85(&ours, &mut back).unwrap();
        prop_assert_eq!(back, data);
    }

    #[test]
    fn base85_decodes_like_python(text in prop::collection::vec(
        prop_oneof![
            8 => prop::sample::select(b"0189AZaz!#_`{|}~~~~".to_vec()),
            1 => any::<u8>(),
        ],
        0..30,
    )) {
        let mut ours = Vec::new();
        let result = v1::decode_base85(&text, &mut ours);
        match reference_b85decode(&text) {
            Some(bytes) => {
                prop_assert_eq!(result, Ok(()));
                prop_assert_eq!(ours, bytes);
            }
            None => {
                prop_assert!(result.is_err());
                prop_assert!(ours.is_empty());
            }
        }
    }
}
