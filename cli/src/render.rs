//! How messages are shown: a short human rendering and the JSON fields of `--json`.
//!
//! Text as text, numbers as numbers, bytes as a short hex/ASCII preview, pickles through
//! [`render_pickle`], the one place where mode 4/5 payloads are turned into something to
//! read.

use std::fmt::Write as _;

use serde_json::{json, Map, Value};
use serpy::pickle::Value as PickleValue;
use serpy::protocol::python_float_repr;
use serpy::{Bytes, Message};

/// How many characters of text, and bytes of binary payloads, a human line shows.
pub const DEFAULT_PREVIEW: usize = 32;

/// `00 1f ff 41 |...A|` of the first `max` bytes, with `…` when there are more.
pub fn hex_preview(bytes: &[u8], max: usize) -> String {
    let shown = &bytes[..bytes.len().min(max)];
    let mut s = String::with_capacity(shown.len() * 4 + 8);
    for (i, b) in shown.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        let _ = write!(s, "{b:02x}");
    }
    s.push_str(" |");
    s.extend(shown.iter().map(|&b| {
        if b.is_ascii_graphic() || b == b' ' {
            char::from(b)
        } else {
            '.'
        }
    }));
    s.push('|');
    if bytes.len() > shown.len() {
        s.push_str(" …");
    }
    s
}

/// The text quoted and escaped as Rust would (`"a\tb"`), cut to `max` characters.
pub fn quoted(text: &str, max: usize) -> String {
    let mut s = String::from("\"");
    let mut chars = text.chars();
    for c in chars.by_ref().take(max) {
        s.extend(c.escape_debug());
    }
    s.push('"');
    if chars.next().is_some() {
        s.push_str(" …");
    }
    s
}

/// `5 B`, `64.0 KiB`, `1.0 MiB`.
pub fn size(n: usize) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut x = n as f64 / 1024.0;
    let mut unit = 0;
    while x >= 1024.0 && unit + 1 < UNITS.len() {
        x /= 1024.0;
        unit += 1;
    }
    format!("{x:.1} {}", UNITS[unit])
}

/// The human rendering of a message's value (without kind and size).
pub fn human(message: &Message, preview: usize) -> String {
    match message {
        Message::Int(i) => i.to_string(),
        Message::Float(x) => python_float_repr(*x),
        Message::Text(t) => quoted(t.as_str(), preview),
        Message::Bytes(b) => match text_prefix(b, preview) {
            // v1 delivers text as bytes: show it as text when it reads as text.
            Some(text) => quoted_prefix(text, preview, b.len()),
            None => hex_preview(b, preview),
        },
        Message::Pickle(p) => render_pickle(p, preview, false).human,
        // A kind of message this tool does not know yet.
        other => format!("{other:?}"),
    }
}

/// The first `chars` characters of `bytes` when they read as text (UTF-8 without control
/// characters but tab and line ends); only that prefix is looked at, so a large payload
/// costs nothing more than a small one.
fn text_prefix(bytes: &[u8], chars: usize) -> Option<&str> {
    let prefix = &bytes[..bytes.len().min(chars.saturating_mul(4))];
    let text = match std::str::from_utf8(prefix) {
        Ok(t) => t,
        // A character cut at the end of the prefix is not an error.
        Err(e) if e.error_len().is_none() && prefix.len() < bytes.len() => {
            std::str::from_utf8(&prefix[..e.valid_up_to()]).ok()?
        }
        Err(_) => return None,
    };
    let end = text
        .char_indices()
        .nth(chars)
        .map_or(text.len(), |(i, _)| i);
    let text = &text[..end];
    let readable = !text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'));
    readable.then_some(text)
}

/// [`quoted`] of a prefix of a payload of `total` bytes, with `…` when there is more.
fn quoted_prefix(text: &str, max: usize, total: usize) -> String {
    let mut s = quoted(text, max);
    if text.len() < total && !s.ends_with('…') {
        s.push_str(" …");
    }
    s
}

/// A pickle as the tool shows it.
pub struct PickleView {
    /// One line for humans: Python's `repr()` of the value, cut to the preview, or the
    /// reason it could not be decoded and a hex preview.
    pub human: String,
    /// The decoded value as JSON (see [`pickle_json`]), `None` when it cannot be decoded.
    pub decoded: Option<Value>,
    /// Why it was not decoded.
    pub error: Option<String>,
}

/// The one place where mode 4/5 payloads (Python pickles) are rendered: decoded by the
/// library ([`serpy::pickle::decode_bytes`]: safe, nothing is executed, bounded), shown
/// as Python's `repr()` for humans and as JSON for `--json`. A pickle that cannot be
/// decoded is shown as a hex preview with the reason.
pub fn render_pickle(pickle: &Bytes, preview: usize, json: bool) -> PickleView {
    match serpy::pickle::decode_bytes(pickle) {
        Ok(value) => PickleView {
            human: repr_prefix(&value, preview.saturating_mul(4).max(16)),
            decoded: json.then(|| pickle_json(&value)),
            error: None,
        },
        Err(e) => PickleView {
            human: format!("(not decoded: {e}) {}", hex_preview(pickle, preview)),
            decoded: None,
            error: Some(e.to_string()),
        },
    }
}

/// Python's `repr()` of `value`, cut after `max` characters (with `…`), without
/// formatting more than that of a large value.
fn repr_prefix(value: &PickleValue, max: usize) -> String {
    struct Bounded {
        s: String,
        left: usize,
        cut: bool,
    }
    impl std::fmt::Write for Bounded {
        fn write_str(&mut self, part: &str) -> std::fmt::Result {
            for c in part.chars() {
                if self.left == 0 {
                    self.cut = true;
                    return Err(std::fmt::Error);
                }
                self.s.push(c);
                self.left -= 1;
            }
            Ok(())
        }
    }
    let mut out = Bounded {
        s: String::new(),
        left: max,
        cut: false,
    };
    let _ = write!(out, "{value}");
    if out.cut {
        out.s.truncate(out.s.trim_end().len());
        out.s.push_str(" …");
    }
    out.s
}

/// Numpy arrays of at most this many items are given with their items in JSON.
pub const ARRAY_ITEMS_IN_JSON: usize = 65_536;

/// A decoded pickle as JSON: `None` null; bool; int a number (beyond 64 bits its decimal
/// text); float a number (`"inf"`, `"-inf"`, `"nan"` as strings); complex `[re, im]`;
/// str a string; bytes and bytearray `{"hex": "..."}`; list, tuple, set, frozenset an
/// array; dict an object when every key is a str, else an array of `[key, value]`
/// pairs; numpy array `{"dtype", "shape", "items"}` (`items` the nested lists of
/// `tolist()`, null above [`ARRAY_ITEMS_IN_JSON`] items).
pub fn pickle_json(value: &PickleValue) -> Value {
    match value {
        PickleValue::None => Value::Null,
        PickleValue::Bool(b) => json!(b),
        PickleValue::Int(i) => json!(i),
        PickleValue::BigInt(b) => b
            .to_u64()
            .map_or_else(|| json!(b.to_string()), |u| json!(u)),
        PickleValue::Float(x) => float_json(*x),
        PickleValue::Complex { re, im } => json!([float_json(*re), float_json(*im)]),
        PickleValue::Str(t) => json!(t.as_str()),
        PickleValue::Bytes(b) | PickleValue::ByteArray(b) => json!({"hex": hex_all(b, 0).0}),
        PickleValue::List(v)
        | PickleValue::Tuple(v)
        | PickleValue::Set(v)
        | PickleValue::FrozenSet(v) => Value::Array(v.iter().map(pickle_json).collect()),
        PickleValue::Dict(d) if d.iter().all(|(k, _)| k.as_str().is_some()) => Value::Object(
            d.iter()
                .map(|(k, v)| (k.as_str().unwrap_or_default().to_string(), pickle_json(v)))
                .collect(),
        ),
        PickleValue::Dict(d) => Value::Array(
            d.iter()
                .map(|(k, v)| json!([pickle_json(k), pickle_json(v)]))
                .collect(),
        ),
        PickleValue::Array(a) => json!({
            "dtype": a.dtype().name(),
            "shape": a.shape(),
            "items": if a.len() <= ARRAY_ITEMS_IN_JSON { pickle_json(&a.to_list()) } else { Value::Null },
        }),
    }
}

/// A float as JSON: a number, or the strings `"inf"`, `"-inf"`, `"nan"`, which JSON
/// numbers cannot hold.
pub fn float_json(x: f64) -> Value {
    if x.is_finite() {
        json!(x)
    } else {
        Value::String(python_float_repr(x))
    }
}

/// Lower-case hex of all of `bytes`, or of the first `limit` when `limit` is not 0.
fn hex_all(bytes: &[u8], limit: usize) -> (String, bool) {
    let n = if limit == 0 {
        bytes.len()
    } else {
        bytes.len().min(limit)
    };
    let mut s = String::with_capacity(n * 2);
    for b in &bytes[..n] {
        let _ = write!(s, "{b:02x}");
    }
    (s, n < bytes.len())
}

/// Adds the message fields of the JSON schema (`kind`, `size`, `value`, `hex`,
/// `truncated`, and `pickle_error` for an undecoded pickle) to `obj`.
pub fn json_fields(message: &Message, hex_limit: usize, obj: &mut Map<String, Value>) {
    obj.insert("kind".into(), json!(message.kind()));
    obj.insert("size".into(), json!(message.len()));
    let (value, payload): (Value, Option<&[u8]>) = match message {
        Message::Int(i) => (json!(i), None),
        Message::Float(x) => (float_json(*x), None),
        Message::Text(t) => (json!(t.as_str()), Some(t.as_bytes())),
        Message::Bytes(b) => (
            std::str::from_utf8(b).map_or(Value::Null, |s| json!(s)),
            Some(b),
        ),
        Message::Pickle(p) => {
            let view = render_pickle(p, 0, true);
            if let Some(e) = view.error {
                obj.insert("pickle_error".into(), json!(e));
            }
            (view.decoded.unwrap_or(Value::Null), Some(p))
        }
        // A kind of message this tool does not know yet: its debug form.
        other => (json!(format!("{other:?}")), None),
    };
    obj.insert("value".into(), value);
    match payload {
        Some(p) => {
            let (hex, truncated) = hex_all(p, hex_limit);
            obj.insert("hex".into(), json!(hex));
            obj.insert("truncated".into(), json!(truncated));
        }
        None => {
            obj.insert("hex".into(), Value::Null);
            obj.insert("truncated".into(), json!(false));
        }
    }
}

/// Seconds since the Unix epoch, with microseconds.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| (d.as_micros() as f64) / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews() {
        assert_eq!(hex_preview(b"\x00A ", 8), "00 41 20 |.A |");
        assert_eq!(hex_preview(b"abcdef", 2), "61 62 |ab| …");
        assert_eq!(quoted("a\tb", 10), "\"a\\tb\"");
        assert_eq!(quoted("abcdef", 3), "\"abc\" …");
        assert_eq!(size(5), "5 B");
        assert_eq!(size(1 << 20), "1.0 MiB");
        assert_eq!(human(&Message::from(1.5), 8), "1.5");
        assert_eq!(human(&Message::from(&b"\xff\x00"[..]), 8), "ff 00 |..|");
        assert_eq!(
            human(&Message::from(&b"abc\x01"[..]), 8),
            "61 62 63 01 |abc.|"
        );
        assert_eq!(human(&Message::from(&b"abcdef"[..]), 3), "\"abc\" …");
        // A character cut by the prefix, then bytes that are not UTF-8 further on.
        let mut big = "é".repeat(10).into_bytes();
        big.push(0xff);
        assert_eq!(human(&Message::from(big), 2), "\"éé\" …");
    }

    #[test]
    fn json_of_each_kind() {
        let fields = |m: &Message, limit| {
            let mut o = Map::new();
            json_fields(m, limit, &mut o);
            Value::Object(o)
        };
        let v = fields(&Message::from(-3), 0);
        assert_eq!(v["kind"], "int");
        assert_eq!(v["value"], -3);
        assert_eq!(v["hex"], Value::Null);
        assert_eq!(fields(&Message::from(f64::NAN), 0)["value"], "nan");
        let v = fields(&Message::from(&b"\xffab"[..]), 2);
        assert_eq!(v["value"], Value::Null);
        assert_eq!(v["hex"], "ff61");
        assert_eq!(v["truncated"], true);
        let v = fields(
            &Message::Pickle(serpy::Bytes::from_static(b"\x80\x03K\x05.")),
            0,
        );
        assert_eq!(v["kind"], "pickle");
        assert_eq!(v["hex"], "80034b052e");
        assert_eq!(v["value"], 5);
        assert!(v.get("pickle_error").is_none());
        let v = fields(&Message::Pickle(serpy::Bytes::from_static(b"\x80\x03K")), 0);
        assert_eq!(v["value"], Value::Null);
        assert!(v["pickle_error"].is_string());
    }

    #[test]
    fn pickles_as_json_and_repr() {
        use serpy::pickle::{Array, Value as P};
        let v = P::dict([("a", P::from(vec![1, 2])), ("b", P::from(f64::INFINITY))]);
        assert_eq!(pickle_json(&v), json!({"a": [1, 2], "b": "inf"}));
        let v = P::Dict(vec![(P::Int(1), P::None)]);
        assert_eq!(pickle_json(&v), json!([[1, null]]));
        assert_eq!(
            pickle_json(&P::from(&b"\x00\xff"[..])),
            json!({"hex": "00ff"})
        );
        let a = Array::from_slice(&[1.5f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
        assert_eq!(
            pickle_json(&P::Array(a)),
            json!({"dtype": "float32", "shape": [2, 2], "items": [[1.5, 2.0], [3.0, 4.0]]})
        );
        let long = P::from((0..1000).collect::<Vec<i64>>());
        assert_eq!(repr_prefix(&long, 10), "[0, 1, 2, …");
        let p = serpy::pickle::encode(&P::dict([("exposure", 10)])).unwrap();
        assert_eq!(render_pickle(&p, 32, false).human, "{'exposure': 10}");
        let bad = render_pickle(&serpy::Bytes::from_static(b"\x80\x03K"), 32, false).human;
        assert!(bad.starts_with("(not decoded: "), "{bad}");
    }
}
