//! The recorded v1 vectors (`tests/v1.json`, bytes captured between two original Python
//! peers) against our encoder and decoders.
//!
//! The cases ran in order on one connection, so one client encoder and one decoder per
//! direction walk all of them: the mode state carries over from case to case.

use serpy::protocol::v1::{self, Control, Decoder, Encoder};
use serpy::protocol::{Frame, WireBuf};
use serpy::{Bytes, Error, Message, Mode, TextEncoding};

mod common;

use common::vectors::*;

const MAX: usize = 1 << 20;

#[test]
fn repr_parser() {
    assert_eq!(parse_bytes_repr("b'hello'").unwrap(), b"hello");
    assert_eq!(
        parse_bytes_repr(r"b'\x00\x01\x1f\xff'").unwrap(),
        b"\x00\x01\x1f\xff"
    );
    assert_eq!(
        parse_bytes_repr(r#"b"it's\n\\""#).unwrap(),
        b"it's\n\\".to_vec()
    );
    assert_eq!(parse_bytes_repr("[1, 2.5, 'x']"), None);
}

/// How the bytes of one direction of one case are fed to a decoder.
#[derive(Clone, Copy, Debug)]
enum Split {
    /// Chunk by chunk as recorded.
    AsRecorded,
    /// All the bytes of the case at once.
    Whole,
    /// One byte at a time.
    OneByte,
    /// Random chunk sizes from this seed.
    Random(u64),
}

fn feed(d: &mut Decoder, chunks: &[Vec<u8>], split: Split, rng: &mut u64) -> Vec<Frame> {
    let all = chunks.concat();
    let mut out = Vec::new();
    match split {
        Split::AsRecorded => chunks.iter().for_each(|c| d.decode(c, &mut out)),
        Split::Whole => d.decode(&all, &mut out),
        Split::OneByte => all.chunks(1).for_each(|c| d.decode(c, &mut out)),
        Split::Random(_) => {
            let mut rest = &all[..];
            while !rest.is_empty() {
                // xorshift64
                *rng ^= *rng << 13;
                *rng ^= *rng >> 7;
                *rng ^= *rng << 17;
                let n = (*rng % 9) as usize; // 0 feeds an empty chunk
                let (a, b) = rest.split_at(n.min(rest.len()));
                d.decode(a, &mut out);
                rest = b;
            }
        }
    }
    out
}

/// Walks all cases, checks everything, and returns the frames each side received.
fn run(cases: &[Case], split: Split) -> Vec<(Vec<Frame>, Vec<Frame>)> {
    let mut client = Encoder::new(TextEncoding::Utf8, MAX);
    let mut server = Encoder::new(TextEncoding::Utf8, MAX);
    let mut at_server = Decoder::new(MAX);
    let mut at_client = Decoder::new(MAX);
    let mut rng = match split {
        Split::Random(seed) => seed | 1,
        _ => 1,
    };
    let mut transcript = Vec::new();

    for case in cases {
        let name = &case.name;
        let c2s = case.c2s.concat();
        let s2c = case.s2c.concat();

        // (a) our encoder gives the recorded bytes.
        let mut wire = WireBuf::new();
        let mut want_server = Vec::new();
        let mut want_client = Vec::new();
        match sent(case) {
            Sent::Client(message, mode) if message.is_empty() && mode == Mode::Plain => {
                // The original put a bare 0x1F on the wire, which the receiver drops; we refuse.
                let r = client.encode(&message, mode, &mut wire);
                assert!(
                    matches!(r, Err(Error::EmptyMessage { mode: Mode::Plain })),
                    "{name}: {r:?}"
                );
                assert!(wire.is_empty(), "{name}: nothing appended on error");
                assert_eq!(c2s, b"\x1f", "{name}");
                assert!(case.delivered.is_empty(), "{name}");
            }
            Sent::Client(message, mode) => {
                let done = client
                    .encode(&message, mode, &mut wire)
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(wire.to_vec(), c2s, "{name}: client bytes");
                assert_eq!(
                    case.sender_returned == "True",
                    done.mode.is_acked(),
                    "{name}: an acknowledged send returns True"
                );
                if done.set_mode {
                    want_server.push(Frame::SetMode(done.mode));
                    want_client.push(Frame::AckModeChange);
                }
                for repr in &case.delivered {
                    let message = match parse_bytes_repr(repr) {
                        Some(b) => Message::Bytes(Bytes::from(b)),
                        None => {
                            // A Python object (list, dict): it travelled as a pickle.
                            assert!(
                                done.mode.is_pickle(),
                                "{name}: {repr} in mode {}",
                                done.mode
                            );
                            message.clone()
                        }
                    };
                    want_server.push(Frame::Data {
                        message,
                        mode: Some(done.mode),
                    });
                    if done.mode.is_acked() {
                        want_client.push(Frame::AckEot);
                    }
                }
            }
            Sent::Server(message, mode) => {
                let done = server.encode(&message, mode, &mut wire).unwrap();
                assert_eq!(wire.to_vec(), s2c, "{name}: server bytes");
                assert!(!done.set_mode && c2s.is_empty(), "{name}");
                assert!(case.delivered.is_empty(), "{name}: recorded as s2c only");
                want_client.push(Frame::Data {
                    message: Message::Bytes(Bytes::from_static(b"pong")),
                    mode: Some(done.mode),
                });
            }
        }

        // (b) the server side receives what the Python server delivered...
        let got_server = feed(&mut at_server, &case.c2s, split, &mut rng);
        assert_eq!(got_server, want_server, "{name}: server frames ({split:?})");
        assert_eq!(at_server.buffered(), 0, "{name}");
        for f in &got_server {
            if let Frame::Data {
                message: Message::Pickle(p),
                ..
            } = f
            {
                // A pickle: PROTO opcode first, STOP last (the recording used protocol 5).
                assert!(p.starts_with(b"\x80") && p.ends_with(b"."), "{name}");
                let mut again = Vec::new();
                v1::encode_base85(p, &mut again);
                assert_eq!(
                    again,
                    last_payload(case),
                    "{name}: pickle re-encodes to the wire"
                );
            }
        }

        // ... and answers as the Python server did.
        if !matches!(sent(case), Sent::Server(..)) {
            let mut answers = WireBuf::new();
            for f in &got_server {
                match f {
                    Frame::SetMode(_) => v1::encode_control(Control::AckModeChange, &mut answers),
                    Frame::Data { mode: Some(m), .. } if m.is_acked() => {
                        v1::encode_control(Control::AckEot, &mut answers)
                    }
                    _ => {}
                }
            }
            assert_eq!(answers.to_vec(), s2c, "{name}: server answers");
        }

        // The client side reads the answers (and the server's own message).
        let got_client = feed(&mut at_client, &case.s2c, split, &mut rng);
        assert_eq!(got_client, want_client, "{name}: client frames ({split:?})");
        assert_eq!(at_client.buffered(), 0, "{name}");

        transcript.push((got_server, got_client));
    }
    transcript
}

#[test]
fn recorded_vectors() {
    let cases = load();
    assert!(cases.len() >= 13, "all recorded cases are read");
    let reference = run(&cases, Split::AsRecorded);
    // (c) the same frames whatever the chunking.
    for split in [Split::Whole, Split::OneByte] {
        assert_eq!(run(&cases, split), reference, "{split:?}");
    }
    for seed in 1..=32u64 {
        let split = Split::Random(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        assert_eq!(run(&cases, split), reference, "{split:?}");
    }
}

#[test]
fn case_names_are_unique() {
    let cases = load();
    let mut names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), cases.len());
}
