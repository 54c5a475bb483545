//! The v2 codec against bytes recorded between two original Python peers
//! (`tests/v2.json`), and the float text against Python's `float.hex()` and
//! `float.fromhex()` (`tests/data/hexfloat.json`, made by `tests/data/hexfloat_gen.py`).

use serde_json::Value;
use serpy::protocol::v2::{self, float_fromhex, float_hex, HexFloatError};
use serpy::protocol::{Frame, WireBuf};
use serpy::Message;

/// The message each recorded case sent. An unknown case name fails the test, so that a
/// new vector cannot be skipped silently.
fn message_of(case: &str) -> Message {
    match case {
        "int 123" => Message::Int(123),
        "int -1" => Message::Int(-1),
        "int 600000" => Message::Int(600_000),
        "float 12.35" => Message::Float(12.35),
        "float -1e6" => Message::Float(-1e6),
        "float 0.0" => Message::Float(0.0),
        "float inf" => Message::Float(f64::INFINITY),
        "float nan" => Message::Float(f64::NAN),
        "float 5e-324" => Message::Float(5e-324),
        "str 'hello'" => Message::from("hello"),
        "str 'yes µù'" => Message::from("yes µù"),
        "str ''" => Message::from(""),
        "bytes b'\\x00\\xff\\x1f'" => Message::from(&b"\x00\xff\x1f"[..]),
        "bytes b''" => Message::from(&b""[..]),
        other => panic!(
            "tests/v2.json has a case this test does not know: {other:?}; add it to message_of()"
        ),
    }
}

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

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// (case name, message, recorded client-to-server bytes), in file order.
fn cases() -> Vec<(String, Message, Vec<u8>)> {
    let json: Value = serde_json::from_str(include_str!("v2.json")).unwrap();
    let cases = json["cases"].as_array().expect("cases");
    assert!(!cases.is_empty());
    cases
        .iter()
        .map(|case| {
            let name = case["case"].as_str().unwrap().to_string();
            let wire = case["wire"].as_array().unwrap();
            let c2s: Vec<u8> = wire
                .iter()
                .filter(|w| w["dir"] == "c2s")
                .flat_map(|w| unhex(w["hex"].as_str().unwrap()))
                .collect();
            assert!(
                wire.iter().all(|w| w["dir"] == "c2s"),
                "{name}: v2 peers send nothing back"
            );
            (name.clone(), message_of(&name), c2s)
        })
        .collect()
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
