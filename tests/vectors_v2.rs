//! The v2 codec against bytes recorded between two original Python peers
//! (`tests/v2.json`), and the float text against Python's `float.hex()` and
//! `float.fromhex()` (`tests/data/hexfloat.json`, made by `tests/data/hexfloat_gen.py`).

use serde_json::Value;

mod common;

use common::vectors::*;
use serpy::protocol::v2::{self, float_fromhex, float_hex, HexFloatError};
use serpy::protocol::{Frame, WireBuf};
use serpy::Message;

/// Equal, with NaN equal to NaN and the sign of zero compared.
fn same(a: &Message, b: &Message) -> bool {
    match (a, b) {
        (Message::Float(x), Message::Float(y)) => {
            (x.is_nan() && y.is_nan()) || x.to_bits() == y.to_bits()
        }
        _ => a == b,
    }
}

fn assert_frames(frames: &[Frame], want: &[Message], what: &str) {
    assert_eq!(frames.len(), want.len(), "{what}: {frames:?}");
    for (frame, want) in frames.iter().zip(want) {
        match frame {
            Frame::Data {
                message,
                mode: None,
            } if same(message, want) => {}
            other => panic!("{what}: got {other:?}, want {want:?}"),
        }
    }
}

fn decode_in_pieces(bytes: &[u8], cuts: &[usize]) -> Vec<Frame> {
    let mut decoder = v2::Decoder::new(1 << 20);
    let mut frames = Vec::new();
    let mut start = 0;
    for &cut in cuts.iter().chain([bytes.len()].iter()) {
        decoder.decode(&bytes[start..cut], &mut frames);
        start = cut;
    }
    assert_eq!(decoder.buffered(), 0);
    frames
}

/// Deterministic random cut points.
fn random_cuts(len: usize, seed: &mut u64) -> Vec<usize> {
    let mut cuts = Vec::new();
    for pos in 1..len {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        if *seed % 5 == 0 {
            cuts.push(pos);
        }
    }
    cuts
}

#[test]
fn encoder_writes_the_recorded_bytes() {
    for (name, message, c2s) in cases() {
        let mut wire = WireBuf::new();
        v2::encode(&message, &mut wire).unwrap();
        assert_eq!(wire.to_vec(), c2s, "{name}");
    }
}

#[test]
fn decoder_reads_the_recorded_bytes_in_any_chunks() {
    let mut seed = 0x2545_f491_4f6c_dd1d;
    for (name, message, c2s) in cases() {
        let want = [message];
        assert_frames(&decode_in_pieces(&c2s, &[]), &want, &name);
        let every_byte: Vec<usize> = (1..c2s.len()).collect();
        assert_frames(&decode_in_pieces(&c2s, &every_byte), &want, &name);
        for _ in 0..20 {
            let cuts = random_cuts(c2s.len(), &mut seed);
            assert_frames(&decode_in_pieces(&c2s, &cuts), &want, &name);
        }
        let mut reader = &c2s[..];
        let mut decoder = v2::Decoder::new(1 << 20);
        let mut frames = Vec::new();
        while decoder.read_from(&mut reader, &mut frames).unwrap() > 0 {}
        assert_frames(&frames, &want, &name);
    }
}

#[test]
fn decoder_reads_all_recorded_cases_as_one_stream() {
    let cases = cases();
    let stream: Vec<u8> = cases.iter().flat_map(|(_, _, c2s)| c2s.clone()).collect();
    let want: Vec<Message> = cases.iter().map(|(_, m, _)| m.clone()).collect();
    assert_frames(&decode_in_pieces(&stream, &[]), &want, "one stream");
    let every_byte: Vec<usize> = (1..stream.len()).collect();
    assert_frames(
        &decode_in_pieces(&stream, &every_byte),
        &want,
        "one stream, bytewise",
    );
    let mut seed = 7;
    for _ in 0..20 {
        let cuts = random_cuts(stream.len(), &mut seed);
        assert_frames(
            &decode_in_pieces(&stream, &cuts),
            &want,
            "one stream, random cuts",
        );
    }
}

fn hexfloat_table() -> Value {
    serde_json::from_str(include_str!("data/hexfloat.json")).unwrap()
}

#[test]
fn float_hex_matches_python() {
    let table = hexfloat_table();
    let cases = table["hex"].as_array().unwrap();
    assert!(cases.len() > 300);
    for case in cases {
        let bits = u64::from_str_radix(case["bits"].as_str().unwrap(), 16).unwrap();
        let want = case["hex"].as_str().unwrap();
        assert_eq!(float_hex(f64::from_bits(bits)), want, "bits {bits:016x}");
    }
}

#[test]
fn float_fromhex_matches_python() {
    let table = hexfloat_table();
    let cases = table["fromhex"].as_array().unwrap();
    assert!(cases.len() > 1000);
    for case in cases {
        let text = case["in"].as_str().unwrap();
        let got = float_fromhex(text);
        match (
            case.get("bits").and_then(Value::as_str),
            case.get("err").and_then(Value::as_str),
        ) {
            (Some("nan"), _) => assert!(got.is_ok_and(f64::is_nan), "{text:?}: {got:?}"),
            (Some(bits), _) => {
                let bits = u64::from_str_radix(bits, 16).unwrap();
                assert_eq!(got.map(f64::to_bits), Ok(bits), "{text:?}");
            }
            (None, Some("invalid")) => assert_eq!(got, Err(HexFloatError::Invalid), "{text:?}"),
            (None, Some("overflow")) => assert_eq!(got, Err(HexFloatError::Overflow), "{text:?}"),
            _ => panic!("bad table entry {case}"),
        }
    }
}
