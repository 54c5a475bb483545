//! The recorded vectors (`tests/v1.json`, `tests/v2.json`: bytes captured between two
//! original Python peers) and what was sent in each case, shared by the codec-level and
//! the socket-level conformance tests.
#![allow(dead_code)] // each test binary uses a different part of this module

use serde_json::Value;
use serpy::protocol::v1;
use serpy::{Bytes, Message, Mode};

/// One recorded case.
pub struct Case {
    pub name: String,
    pub sender_returned: String,
    pub delivered: Vec<String>,
    pub c2s: Vec<Vec<u8>>,
    pub s2c: Vec<Vec<u8>>,
}

pub fn hex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd hex {s:?}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

pub fn load() -> Vec<Case> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/v1.json");
    let text = std::fs::read_to_string(path).expect("tests/v1.json");
    let json: Value = serde_json::from_str(&text).expect("valid JSON");
    let cases = json["cases"].as_array().expect("a list of cases");
    cases
        .iter()
        .map(|c| {
            let mut case = Case {
                name: c["case"].as_str().expect("case name").to_owned(),
                sender_returned: c["sender_returned"].as_str().unwrap_or("").to_owned(),
                delivered: c["receiver_delivered_python_repr"]
                    .as_array()
                    .expect("deliveries")
                    .iter()
                    .map(|r| r.as_str().expect("repr").to_owned())
                    .collect(),
                c2s: Vec::new(),
                s2c: Vec::new(),
            };
            for w in c["wire"].as_array().expect("wire") {
                let bytes = hex(w["hex"].as_str().expect("hex"));
                match w["dir"].as_str() {
                    Some("c2s") => case.c2s.push(bytes),
                    Some("s2c") => case.s2c.push(bytes),
                    other => panic!("unknown direction {other:?}"),
                }
            }
            case
        })
        .collect()
}

/// Parses Python's `repr()` of a `bytes` object (`b'...'` or `b"..."`).
pub fn parse_bytes_repr(repr: &str) -> Option<Vec<u8>> {
    let body = repr
        .strip_prefix("b'")
        .and_then(|r| r.strip_suffix('\''))
        .or_else(|| repr.strip_prefix("b\"").and_then(|r| r.strip_suffix('"')))?;
    let mut out = Vec::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            assert!(c.is_ascii(), "non-ASCII in a bytes repr: {repr}");
            out.push(c as u8);
            continue;
        }
        out.push(match chars.next() {
            Some('x') => {
                let h: String = chars.by_ref().take(2).collect();
                u8::from_str_radix(&h, 16).expect("\\x escape")
            }
            Some('n') => b'\n',
            Some('r') => b'\r',
            Some('t') => b'\t',
            Some('\\') => b'\\',
            Some('\'') => b'\'',
            Some('"') => b'"',
            other => panic!("unknown escape {other:?} in {repr}"),
        });
    }
    Some(out)
}

/// The payload of the last client block: base85 text without `0x04` and `0x1F`.
pub fn last_payload(case: &Case) -> Vec<u8> {
    let last = case.c2s.last().expect("a c2s block");
    let mut p = last.strip_suffix(&[v1::SEP]).expect("ends with 0x1F");
    if let Some(q) = p.strip_suffix(&[v1::EOT]) {
        p = q;
    }
    p.to_vec()
}

/// The pickle bytes that the Python client sent in a mode 4/5 case.
pub fn recorded_pickle(case: &Case) -> Bytes {
    let mut out = Vec::new();
    v1::decode_base85(&last_payload(case), &mut out).expect("recorded base85");
    Bytes::from(out)
}

/// What was sent in a case.
pub enum Sent {
    /// The client sent this message in this mode.
    Client(Message, Mode),
    /// The server sent this message in this mode.
    Server(Message, Mode),
}

pub fn sent(case: &Case) -> Sent {
    use Sent::*;
    let bytes = |b: &[u8]| Message::Bytes(Bytes::copy_from_slice(b));
    match case.name.as_str() {
        "mode 0 str 'hello'" => Client("hello".into(), Mode::Plain),
        "mode 0 int 42" => Client(42.into(), Mode::Plain),
        "mode 0 float 1.5" => Client(1.5.into(), Mode::Plain),
        "mode 0 utf-8 str 'µé'" => Client("µé".into(), Mode::Plain),
        "mode 1 str 'ack me'" => Client("ack me".into(), Mode::PlainAck),
        r"mode 2 bytes b'\x00\x01\x1f\xff'" => Client(bytes(b"\x00\x01\x1f\xff"), Mode::Base85),
        "mode 0 bytes b'abc' (auto-switches to 2)" => Client(bytes(b"abc"), Mode::Plain),
        "mode 3 bytes b'hello world'" => Client(bytes(b"hello world"), Mode::Base85Ack),
        "mode 4 list [1, 2.5, 'x']" => Client(Message::Pickle(recorded_pickle(case)), Mode::Pickle),
        "mode 5 dict {'a': 1}" => Client(Message::Pickle(recorded_pickle(case)), Mode::PickleAck),
        "mode 0 str 'back to zero'" => Client("back to zero".into(), Mode::Plain),
        "server->client mode 0 'pong'" => Server("pong".into(), Mode::Plain),
        "mode 0 empty str ''" => Client("".into(), Mode::Plain),
        other => panic!("unknown v1 vector case {other:?}: add it to the table in this test"),
    }
}

/// The message each recorded case sent. An unknown case name fails the test, so that a
/// new vector cannot be skipped silently.
pub fn message_of(case: &str) -> Message {
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

pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// (case name, message, recorded client-to-server bytes), in file order.
pub fn cases() -> Vec<(String, Message, Vec<u8>)> {
    let json: Value = serde_json::from_str(include_str!("../v2.json")).unwrap();
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
