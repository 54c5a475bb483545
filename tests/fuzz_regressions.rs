//! Replays the fuzz targets' checks (`fuzz/checks.rs`) on every input kept in
//! `tests/fuzz_regressions/<target>/` (each one once made a fuzz target fail, or is a seed
//! worth keeping), and on a deterministic sweep of inputs made from valid streams, so that
//! `cargo test` runs the same invariants as the fuzzers without them.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::path::Path;

use serpy::protocol::{v1, v2, WireBuf};
use serpy::{Message, Mode, TextEncoding};

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_regressions")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for f in &files {
        if f.extension().is_some_and(|e| e == "md") {
            continue;
        }
        let data = std::fs::read(f).unwrap();
        let name = f.display().to_string();
        if let Err(e) = std::panic::catch_unwind(|| check(&data)) {
            std::panic::resume_unwind(Box::new(format!("{name}: {e:?}")));
        }
    }
    files.len()
}

/// Streams worth mutating: valid traffic of both protocols, with some breakage.
fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut v1w = WireBuf::new();
    let mut enc = v1::Encoder::new(TextEncoding::Utf8, 1 << 20);
    let msgs: Vec<Message> = vec![
        "hello".into(),
        vec![0u8, 0x1f, 0x04, 0x01, 0xde].into(),
        42.into(),
        1.5.into(),
        "µ".into(),
    ];
    for (i, m) in msgs.iter().enumerate() {
        let _ = enc.encode(m, Mode::ALL[i % 6], &mut v1w);
    }
    v1::encode_control(v1::Control::AckEot, &mut v1w);
    out.push(v1w.to_vec());
    let mut v2w = WireBuf::new();
    for m in &msgs {
        v2::encode(m, &mut v2w).unwrap();
    }
    out.push(v2w.to_vec());
    out.push(b"\x01SETMODE3\x1fVPaz\x04\x1f\x01SETMODE9\x1f\x01XYZ\x1f".to_vec());
    // Large v2 frames for inputs whose seed byte has bit 7 set (`checks::expand`): one of
    // 16 KiB and a byte, two of 16 KiB (a read of the length expected overruns the first
    // into the next), then a small one; each payload is one expanded byte (and an "x").
    let mut large = Vec::new();
    for (len, tail) in [(16_385u32, &b"x"[..]), (16_384, b""), (16_384, b"")] {
        large.extend_from_slice(&v2::header(v2::TYPE_BYTES, b"")[..10]);
        large.extend_from_slice(&len.to_le_bytes());
        large.push(checks::EXPAND_BYTE);
        large.extend_from_slice(tail);
    }
    let mut after = WireBuf::new();
    v2::encode(&Message::from("after"), &mut after).unwrap();
    large.extend_from_slice(&after.to_vec());
    out.push(large);
    out
}

/// A small deterministic sweep: each seed under a few thousand mutations.
fn sweep(check: fn(&[u8])) {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut rand = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for seed in seeds() {
        for _ in 0..700 {
            let mut data = vec![(rand() % 256) as u8, (rand() % 256) as u8];
            data.extend_from_slice(&seed);
            for _ in 0..rand() % 4 {
                let at = (rand() as usize) % data.len();
                match rand() % 4 {
                    0 => data[at] = rand() as u8,
                    1 => data.truncate(at.max(2)),
                    2 => data.insert(at, rand() as u8),
                    _ => {
                        let from = (rand() as usize) % data.len();
                        let piece: Vec<u8> = data[from..].iter().take(20).copied().collect();
                        data.splice(at..at, piece);
                    }
                }
            }
            check(&data);
        }
    }
}

#[test]
fn v1_decoder_regressions() {
    replay("v1_decoder", checks::check_v1);
    sweep(checks::check_v1);
}

#[test]
fn v2_decoder_regressions() {
    replay("v2_decoder", checks::check_v2);
    sweep(checks::check_v2);
}

#[test]
fn detect_regressions() {
    replay("detect", checks::check_detect);
    sweep(checks::check_detect);
}

/// Pickles worth mutating: every pickle of tests/data made by Python and numpy, with a
/// limits byte in front.
fn pickle_seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for file in ["pickles.json", "numpy_pickles.json"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(file);
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        for (i, c) in doc["cases"].as_array().unwrap().iter().enumerate() {
            let h = c["pickle"].as_str().unwrap();
            if h.len() > 4000 {
                continue;
            }
            let mut p = vec![i as u8];
            p.extend(
                (0..h.len())
                    .step_by(2)
                    .map(|j| u8::from_str_radix(&h[j..j + 2], 16).unwrap()),
            );
            out.push(p);
        }
    }
    out
}

#[test]
fn pickle_decoder_regressions() {
    replay("pickle_decoder", checks::check_pickle);
    let seeds = pickle_seeds();
    assert!(seeds.len() > 500);
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut rand = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for seed in &seeds {
        checks::check_pickle(seed);
        for _ in 0..8 {
            let mut data = seed.clone();
            for _ in 0..1 + rand() % 3 {
                let at = 1 + (rand() as usize) % (data.len() - 1).max(1);
                match rand() % 3 {
                    0 if at < data.len() => data[at] = rand() as u8,
                    1 => data.truncate(at),
                    _ => data.insert(at.min(data.len()), rand() as u8),
                }
            }
            checks::check_pickle(&data);
        }
    }
}
