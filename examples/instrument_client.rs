//! The "camera" client (protocol v2): asks an instrument server for images, checks every
//! pixel against its own computation of the image, and prints the throughput. Between
//! the requests it sends values the server must ignore. At the end it stops the server
//! with `/KTHXBYE`. Exits with 1 if any image was missing or wrong.
//!
//! ```text
//! cargo run --release --example instrument_server
//! cargo run --release --example instrument_client -- --images 10 --connections 5
//! ```
//!
//! It checks the original Python `test_serpy2_2_instrumentServer` as well.

mod common;
// println! that ends quietly when stdout is closed (`--help | head -1`).
use common::println;

use std::error::Error;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serpy::{Connection, Message, Protocol};

const USAGE: &str = "\
instrument_client: asks an instrument server (v2) for images and checks every pixel

usage: instrument_client [--host HOST] [--port N] [--images N] [--connections M]
                         [--size S] [--no-stop]

  --host HOST      the server's address (default 127.0.0.1)
  --port N         the server's port (default 8000)
  --images N       images requested on each connection (default 3)
  --connections M  connections made one after the other (default 10)
  --size S         image side the server uses (default 512)
  --no-stop        leave the server running (by default it is sent /KTHXBYE at the end)
  -h, --help       print this help

Prints MB/s and frames/s; exits with 0 when every image arrived as expected, 1 otherwise.";

/// How long to wait for each image: only a transfer problem takes that long.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Requests the server must ignore, sent between the image requests.
fn noise(k: usize) -> Message {
    match k % 4 {
        0 => "hello".into(),
        1 => 12.35.into(),
        2 => (-1e6).into(),
        _ => "yes éµù utf8".into(),
    }
}

struct Options {
    host: String,
    port: u16,
    images: usize,
    connections: usize,
    side: usize,
    stop: bool,
}

fn parse(args: &mut common::Args) -> Result<Options, String> {
    let mut o = Options {
        host: common::DEFAULT_HOST.to_string(),
        port: common::DEFAULT_PORT,
        images: 3,
        connections: 10,
        side: 512,
        stop: true,
    };
    while let Some(flag) = args.next_flag()? {
        match flag.as_str() {
            "--host" => o.host = args.value(&flag)?,
            "--port" => o.port = args.value(&flag)?,
            "--images" => o.images = args.value(&flag)?,
            "--connections" => o.connections = args.value(&flag)?,
            "--size" => o.side = common::check_side(args.value(&flag)?)?,
            "--no-stop" => o.stop = !args.switch(&flag)?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if o.images == 0 || o.connections == 0 {
        return Err("--images and --connections must be at least 1".into());
    }
    Ok(o)
}

fn main() -> ExitCode {
    let options = common::parse_args(USAGE, parse);
    common::exit_code("instrument_client", run(options))
}

fn connect(o: &Options) -> Result<Connection, String> {
    Connection::builder()
        .protocol(Protocol::V2)
        .max_message_size(common::max_message_size(o.side))
        .connect((o.host.as_str(), o.port))
        .map_err(|e| format!("cannot connect to {}:{}: {e}", o.host, o.port))
}

/// Counts and timings of a run.
#[derive(Default)]
struct Tally {
    bytes: usize,
    frames: usize,
    errors: usize,
    /// Time spent computing and comparing the expected images (not part of the transfer).
    checking: Duration,
}

fn run(o: Options) -> Result<(), Box<dyn Error>> {
    let started = Instant::now();
    let mut tally = Tally::default();
    for c in 0..o.connections {
        let conn = connect(&o)?;
        // All requests go out at once; only the integers get an answer.
        let requests: Vec<i64> = (0..o.images)
            .map(|k| (c * o.images + k + 1) as i64)
            .collect();
        for (k, &p) in requests.iter().enumerate() {
            conn.send(p)?;
            conn.send(noise(k))?;
        }
        for (k, &p) in requests.iter().enumerate() {
            match conn.get_data_timeout(ANSWER_TIMEOUT) {
                Ok(Message::Bytes(image)) => {
                    tally.bytes += image.len();
                    let t = Instant::now();
                    let verdict = check(&image, p, o.side);
                    tally.checking += t.elapsed();
                    match verdict {
                        Ok(()) => {
                            tally.frames += 1;
                            println!(
                                "connection {c}: image for p = {p}: {} bytes, OK",
                                image.len()
                            );
                        }
                        Err(e) => {
                            tally.errors += 1;
                            println!("connection {c}: image for p = {p}: DATA CONTENT ERROR: {e}");
                        }
                    }
                }
                Ok(other) => {
                    tally.errors += 1;
                    println!(
                        "connection {c}: image for p = {p}: DATA RECEPTION ERROR: got a {} message",
                        other.kind()
                    );
                }
                Err(e) => {
                    // Nothing more will come on this connection.
                    tally.errors += requests.len() - k;
                    println!("connection {c}: image for p = {p}: nothing came: {e}");
                    break;
                }
            }
        }
        conn.close();
    }
    report(&o, &tally, started.elapsed());
    if o.stop {
        common::send_stop(connect(&o)?)?;
    }
    if tally.errors > 0 {
        return Err(format!("{} image(s) missing or wrong", tally.errors).into());
    }
    Ok(())
}

/// Compares a received image with the expected one, pixel by pixel: bit for bit, but for
/// the last bit of a C library's sin or cos in the pixels near 0.
fn check(got: &[u8], p: i64, side: usize) -> Result<(), String> {
    let expected = common::image(p, side);
    if got.len() != expected.len() {
        return Err(format!(
            "{} bytes, expected {} (a {side} x {side} float32 image; is the server's --size the same?)",
            got.len(),
            expected.len()
        ));
    }
    let value = |b: &[u8]| f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    // Equal, or as good as: C libraries round some sin and cos results differently in the
    // last bit, which shows in the pixels near 0 (made on Windows, 512 of the 262,144
    // pixels for p = 3 differ from Linux's, by at most 1.3e-20). That must not count as
    // a transmission error; one wrong bit in any other pixel does.
    let same = |g: &[u8], e: &[u8]| g == e || (value(g) - value(e)).abs() <= 1e-12;
    let pixels = got.chunks_exact(4).zip(expected.chunks_exact(4));
    let wrong: Vec<usize> = pixels
        .enumerate()
        .filter(|(_, (g, e))| !same(g, e))
        .map(|(k, _)| k)
        .collect();
    match wrong.first() {
        None => Ok(()),
        Some(&k) => Err(format!(
            "{} pixel(s) differ; the first at row {}, column {}: {} instead of {}",
            wrong.len(),
            k / side,
            k % side,
            value(&got[4 * k..]),
            value(&expected[4 * k..])
        )),
    }
}

fn report(o: &Options, tally: &Tally, elapsed: Duration) {
    let total = elapsed.as_secs_f64();
    let transfer = (elapsed.saturating_sub(tally.checking))
        .as_secs_f64()
        .max(1e-9);
    println!("-------------------------------------");
    println!(
        "received {} bytes in {total:.3} seconds ({:.3} s of it checking the images)",
        tally.bytes,
        tally.checking.as_secs_f64()
    );
    println!("{:.1} MB per second", tally.bytes as f64 / 1e6 / transfer);
    println!("{:.1} frames per second", tally.frames as f64 / transfer);
    println!("frame dimensions: {0} x {0} (32 bits per pixel)", o.side);
    println!("{} errors", tally.errors);
    println!("-------------------------------------");
}
