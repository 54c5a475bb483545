//! What this crate pickles, Python unpickles into the native objects.
//!
//! Every pickle of tests/data (made by Python and numpy) is decoded here and written back
//! by this crate's encoder; then `python3` loads both and checks that they are the same
//! objects, of the same types (a `bytearray` stays a `bytearray`, a `tuple` a `tuple`, an
//! array keeps dtype, shape, memory order and items; numpy itself turns a big-endian
//! array into a native one with the same values when it unpickles the `_reconstruct`
//! form that it and this crate write for protocols 0 to 4). Pickles of serde types are checked
//! against the Python value they must give.
//!
//! The interpreter is `$SERPY_PYTHON`, or `python3`. Without one the test passes with a
//! message saying it checked nothing; without numpy it skips the arrays, saying so.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value as Json};
use serpy::pickle::{self, Value};

fn python() -> Option<String> {
    let py = std::env::var("SERPY_PYTHON").unwrap_or_else(|_| "python3".into());
    match Command::new(&py).arg("--version").output() {
        Ok(o) if o.status.success() => Some(py),
        _ => {
            eprintln!("SKIPPED: no Python interpreter ({py}) found: the pickles this crate writes were not checked with Python. Install python3 (or set SERPY_PYTHON) to run this test.");
            None
        }
    }
}

const CHECK: &str = r#"
import json, math, pickle, sys
try:
    import numpy as np
except ImportError:
    np = None

def same(a, b):
    if np is not None and isinstance(a, np.generic):
        a = a.item()
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, complex):
        return same(a.real, b.real) and same(a.imag, b.imag)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if np is not None and isinstance(a, np.ndarray):
        # numpy unpickles _reconstruct pickles (its own of protocols 0-4, and this crate's)
        # into native byte order, with the same values; protocol 5 keeps the order.
        a = a.astype(a.dtype.newbyteorder("="), order="K")
        b = b.astype(b.dtype.newbyteorder("="), order="K")
        return (a.dtype == b.dtype and a.shape == b.shape
                and a.flags.c_contiguous == b.flags.c_contiguous
                and a.flags.f_contiguous == b.flags.f_contiguous
                and a.tobytes(order="A") == b.tobytes(order="A"))
    return a == b

cases = json.load(open(sys.argv[1]))
bad, skipped, checked = [], 0, 0
for c in cases:
    if c.get("numpy") and np is None:
        skipped += 1
        continue
    got = pickle.loads(bytes.fromhex(c["rust"]))
    if "expect" in c:
        ok = repr(got) == c["expect"]
    else:
        ok = same(pickle.loads(bytes.fromhex(c["python"])), got)
    checked += 1
    if not ok:
        bad.append(c["name"] + ": " + repr(got)[:200])
print(json.dumps({"checked": checked, "skipped": skipped, "bad": bad}))
"#;

fn load(name: &str) -> Vec<Json> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    let doc: Json = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    doc["cases"].as_array().unwrap().clone()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Runs the check script over `cases`; returns (checked, skipped).
fn run_python(py: &str, tag: &str, cases: &[Json]) -> (u64, u64) {
    let dir = std::env::temp_dir().join(format!("serpy-pickle-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("cases.json");
    let script = dir.join("check.py");
    std::fs::write(&input, serde_json::to_string(cases).unwrap()).unwrap();
    std::fs::write(&script, CHECK).unwrap();
    let out = Command::new(py).arg(&script).arg(&input).output().unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["bad"], json!([]), "Python read these differently");
    (
        report["checked"].as_u64().unwrap(),
        report["skipped"].as_u64().unwrap(),
    )
}

fn rewritten(file: &str, numpy: bool) -> Vec<Json> {
    load(file)
        .iter()
        .map(|c| {
            let original = hex(c["pickle"].as_str().unwrap());
            let v = pickle::decode(&original).unwrap();
            let mine = pickle::encode(&v).unwrap();
            json!({
                "name": format!("{} (protocol {})", c["name"].as_str().unwrap(), c["protocol"]),
                "python": c["pickle"],
                "rust": to_hex(&mine),
                "numpy": numpy,
            })
        })
        .collect()
}

#[test]
fn python_reads_back_the_builtins() {
    let Some(py) = python() else { return };
    let cases = rewritten("pickles.json", false);
    let (checked, _) = run_python(&py, "builtins", &cases);
    assert_eq!(checked as usize, cases.len());
}

#[test]
fn python_reads_back_numpy_arrays() {
    let Some(py) = python() else { return };
    let cases = rewritten("numpy_pickles.json", true);
    let (checked, skipped) = run_python(&py, "numpy", &cases);
    if skipped > 0 {
        eprintln!("SKIPPED: numpy is not installed for {py}: {skipped} array pickles were not checked with numpy (pip install numpy, or set SERPY_PYTHON).");
    } else {
        assert_eq!(checked as usize, cases.len());
    }
}

#[test]
fn python_reads_values_built_in_rust() {
    let Some(py) = python() else { return };
    let mut cases = Vec::new();
    let mut add = |name: &str, v: &Value, expect: &str| {
        cases.push(
            json!({"name": name, "rust": to_hex(&pickle::encode(v).unwrap()), "expect": expect}),
        );
    };
    add(
        "settings",
        &Value::dict([("exposure", Value::from(10)), ("gain", Value::from(2.5))]),
        "{'exposure': 10, 'gain': 2.5}",
    );
    add("u64", &Value::from(u64::MAX), "18446744073709551615");
    add(
        "i128",
        &Value::from(i128::MIN),
        "-170141183460469231731687303715884105728",
    );
    add(
        "bytearray",
        &Value::ByteArray(serpy::Bytes::from_static(b"\x00\xff")),
        "bytearray(b'\\x00\\xff')",
    );
    add(
        "sets",
        &Value::Tuple(vec![
            Value::Set(vec![1.into()]),
            Value::FrozenSet(vec![]),
            Value::Set(vec![]),
        ]),
        "({1}, frozenset(), set())",
    );
    add("complex", &Value::Complex { re: 1.0, im: -2.0 }, "(1-2j)");
    add(
        "empty tuple in list",
        &Value::from(vec![Value::Tuple(vec![])]),
        "[()]",
    );
    #[cfg(feature = "serde")]
    {
        #[derive(serde::Serialize)]
        struct Settings<'a> {
            exposure: u32,
            gain: f64,
            name: &'a str,
            roi: [u16; 4],
            on: bool,
            note: Option<String>,
            #[serde(with = "serde_bytes")]
            raw: Vec<u8>,
        }
        let s = Settings {
            exposure: 10,
            gain: 2.5,
            name: "cam",
            roi: [0, 0, 640, 480],
            on: true,
            note: None,
            raw: vec![1, 2],
        };
        cases.push(json!({
            "name": "serde struct",
            "rust": to_hex(&pickle::to_pickle(&s).unwrap()),
            "expect": "{'exposure': 10, 'gain': 2.5, 'name': 'cam', 'roi': (0, 0, 640, 480), 'on': True, 'note': None, 'raw': b'\\x01\\x02'}",
        }));
        let m: std::collections::BTreeMap<&str, Vec<u64>> = [("a", vec![u64::MAX])].into();
        cases.push(json!({
            "name": "serde map",
            "rust": to_hex(&pickle::to_pickle(&m).unwrap()),
            "expect": "{'a': [18446744073709551615]}",
        }));
    }
    let n = cases.len();
    let (checked, _) = run_python(&py, "built", &cases);
    assert_eq!(checked as usize, n);
}
