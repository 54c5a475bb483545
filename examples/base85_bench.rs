//! serpy's own base85 (`serpy::protocol::v1::encode_base85` / `decode_base85`, what v1
//! modes 2 to 5 use) against the `base85` crate (the same RFC 1924 alphabet), in one run,
//! on the same bytes. Run it with
//!
//! ```text
//! cargo run --release --example base85_bench              # about 10 s
//! cargo run --release --example base85_bench -- --quick   # about 1 s
//! ```
//!
//! Throughput is in MB/s (10^6 bytes) of binary data: encoded from or decoded to. Each
//! figure is the median of 3 runs, the two implementations alternating; every loop stops
//! after a number of bytes or a time, whichever comes first. serpy's functions append to
//! a buffer the caller keeps (as the connection does); the crate returns a new `String` or
//! `Vec` each time, which is its API. Both must give the same text and bytes back, or the
//! benchmark stops with an error. The last column is the floor: a copy of the same binary
//! data into a kept buffer, measured in the same run.

mod common;
// println! that ends quietly when stdout is closed (`--help | head -1`).
use common::println;

use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serpy::protocol::v1::{decode_base85, encode_base85};

/// Message sizes measured.
const SIZES: [usize; 4] = [64, 4 << 10, 64 << 10, 1 << 20];

/// One timed run: at most this many bytes of binary data, at most this long.
const RUN_BYTES: usize = 512 << 20;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("base85_bench: serpy's base85 against the base85 crate, in one run");
        println!("usage: cargo run --release --example base85_bench -- [--quick]");
        println!("  --quick   a smoke run (about 1 s)");
        return ExitCode::SUCCESS;
    }
    let quick = match args.as_slice() {
        [] => false,
        [q] if q == "--quick" => true,
        _ => {
            eprintln!("base85_bench: unknown arguments {args:?} (try --help)");
            return ExitCode::from(2);
        }
    };
    if cfg!(debug_assertions) {
        eprintln!("note: a debug build; run with --release for meaningful numbers");
    }
    let run_time = Duration::from_millis(if quick { 30 } else { 300 });
    match run(run_time) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("base85_bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(run_time: Duration) -> Result<(), String> {
    println!("| size | direction | serpy | base85 crate | serpy/crate | memcpy (same bytes) |");
    println!("|---|---|---|---|---|---|");
    for size in SIZES {
        let data = noise(size);
        // Both implementations must agree before they are timed.
        let mut ours = Vec::new();
        encode_base85(&data, &mut ours);
        let theirs = base85::encode(&data);
        if ours != theirs.as_bytes() {
            return Err(format!("the encodings of {size} bytes differ"));
        }
        let mut back = Vec::new();
        decode_base85(&ours, &mut back).map_err(|e| format!("serpy decode: {e}"))?;
        let back_crate = base85::decode(&theirs).map_err(|e| format!("crate decode: {e}"))?;
        if back != data || back_crate != data {
            return Err(format!("a decoding of {size} bytes differs from the data"));
        }

        let mut buf = Vec::with_capacity(ours.len().max(size));
        let encode = median_pair(size, |n| {
            let a = timed(n, run_time, size, || {
                buf.clear();
                encode_base85(black_box(&data), &mut buf);
                black_box(&buf);
            });
            let b = timed(n, run_time, size, || {
                black_box(base85::encode(black_box(&data)));
            });
            (a, b)
        });
        let decode = median_pair(size, |n| {
            let a = timed(n, run_time, size, || {
                buf.clear();
                decode_base85(black_box(&ours), &mut buf).expect("checked above");
                black_box(&buf);
            });
            let b = timed(n, run_time, size, || {
                black_box(base85::decode(black_box(&theirs)).expect("checked above"));
            });
            (a, b)
        });
        // The floor: a copy of the binary data into a buffer kept the same way.
        let mut copy = Vec::with_capacity(size);
        let (memcpy, _) = median_pair(size, |n| {
            let a = timed(n, run_time, size, || {
                copy.clear();
                copy.extend_from_slice(black_box(&data));
                black_box(&copy);
            });
            (a, a)
        });
        for (direction, (a, b)) in [("encode", encode), ("decode", decode)] {
            println!(
                "| {} | {direction} | {a:.0} MB/s | {b:.0} MB/s | {:.2} | {memcpy:.0} MB/s |",
                human(size),
                a / b
            );
        }
    }
    Ok(())
}

/// The medians over 3 runs of `pair`, which times serpy then the crate, each at most
/// `n` calls.
fn median_pair(size: usize, mut pair: impl FnMut(usize) -> (f64, f64)) -> (f64, f64) {
    let n = (RUN_BYTES / size).max(1);
    let mut a = Vec::new();
    let mut b = Vec::new();
    for _ in 0..3 {
        let (x, y) = pair(n);
        a.push(x);
        b.push(y);
    }
    (median(a), median(b))
}

/// MB/s of `size` bytes per call over at most `n` calls of `f` or `limit`, whichever
/// ends first.
fn timed(n: usize, limit: Duration, size: usize, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut calls = 0usize;
    while calls < n {
        // Look at the clock every 64 calls only: the small sizes take well under 1 µs.
        for _ in 0..64.min(n - calls) {
            f();
            calls += 1;
        }
        if start.elapsed() >= limit {
            break;
        }
    }
    (calls * size) as f64 / 1e6 / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Reproducible bytes that do not compress into a pattern (xorshift64).
fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn human(size: usize) -> String {
    match size {
        s if s >= 1 << 20 => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}
