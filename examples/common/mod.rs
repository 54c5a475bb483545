//! Helpers shared by the examples (not an example itself): command-line parsing with
//! nothing but `std::env::args`, the end-of-run reporting, the stop word of the servers,
//! and the test image of the instrument pair.
#![allow(dead_code, unused_imports)] // each example uses a different part of this module

/// `println!` for the examples: the same, except that a closed stdout (`... | head -1`)
/// ends the program quietly, with exit code 0, as it ends most command-line programs,
/// where `std::println!` would panic. An example opts in with `use common::println;`.
macro_rules! println {
    () => {
        $crate::common::print_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::common::print_line(format_args!($($arg)*))
    };
}
pub(crate) use println;

/// Writes `args` and a newline on stdout, for [`println!`]. A closed stdout ends the
/// program with 0 (whoever read the output has all they wanted); any other write error
/// ends it with 1 and says so on stderr.
pub fn print_line(args: std::fmt::Arguments) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let written = out.write_fmt(args).and_then(|()| out.write_all(b"\n"));
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("cannot write to stdout: {e}");
            std::process::exit(1);
        }
    }
}

use std::error::Error;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::{Duration, Instant};

use serpy::{Connection, Message, Protocol};

/// The text that stops the example servers, as in the original scripts.
pub const STOP: &str = "/KTHXBYE";

/// Default host for clients and default bind address for servers: this machine only.
pub const DEFAULT_HOST: &str = "127.0.0.1";

/// Default port, as in the original scripts.
pub const DEFAULT_PORT: u16 = 8000;

/// The command-line arguments after the program name, read one flag at a time.
///
/// Flags take their value as the next argument (`--port 8000`) or after `=`
/// (`--port=8000`).
pub struct Args {
    args: std::vec::IntoIter<String>,
    /// The value given with `--flag=value`, waiting for [`Args::value`].
    inline: Option<String>,
}

impl Args {
    /// The next flag, or `None` at the end.
    pub fn next_flag(&mut self) -> Result<Option<String>, String> {
        if let Some(v) = self.inline.take() {
            return Err(format!("unexpected value {v:?}"));
        }
        let Some(arg) = self.args.next() else {
            return Ok(None);
        };
        if !arg.starts_with("--") {
            return Err(format!("unexpected argument {arg:?}"));
        }
        match arg.split_once('=') {
            Some((flag, value)) => {
                self.inline = Some(value.to_string());
                Ok(Some(flag.to_string()))
            }
            None => Ok(Some(arg)),
        }
    }

    /// The value of `flag`, parsed.
    pub fn value<T: FromStr>(&mut self, flag: &str) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        let raw = self
            .inline
            .take()
            .or_else(|| self.args.next())
            .ok_or_else(|| format!("{flag} needs a value"))?;
        raw.parse()
            .map_err(|e| format!("bad value {raw:?} for {flag}: {e}"))
    }

    /// A flag that takes no value.
    pub fn switch(&mut self, flag: &str) -> Result<bool, String> {
        match self.inline.take() {
            Some(v) => Err(format!("{flag} takes no value (got {v:?})")),
            None => Ok(true),
        }
    }
}

/// Parses the command line with `parse`. Prints `usage` and exits with 0 for `-h` or
/// `--help`; prints the problem and exits with 2 for a bad command line.
pub fn parse_args<T>(usage: &str, parse: impl FnOnce(&mut Args) -> Result<T, String>) -> T {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{usage}");
        std::process::exit(0);
    }
    let mut args = Args {
        args: args.into_iter(),
        inline: None,
    };
    match parse(&mut args) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("error: {e}\n\n{usage}");
            std::process::exit(2);
        }
    }
}

/// Turns the outcome of an example into its exit code: 0, or 1 with the error on stderr.
pub fn exit_code(name: &str, result: Result<(), Box<dyn Error>>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// True for the stop word. As in the original scripts, a v2 server stops on the text
/// `/KTHXBYE`, and a v1 server (which receives text as bytes) on those bytes.
pub fn is_stop(message: &Message, protocol: Protocol) -> bool {
    match message {
        Message::Text(t) => t.as_str() == STOP,
        Message::Bytes(b) => protocol == Protocol::V1 && b.as_ref() == STOP.as_bytes(),
        _ => false,
    }
}

/// How long a client that sent the stop word waits for the server to close the link.
pub const STOP_WAIT: Duration = Duration::from_secs(5);

/// Sends the stop word on `conn` (a new connection), then waits (at most [`STOP_WAIT`])
/// until the server closes the link. Closing at once could lose the word: the original
/// Python server drops what it has not handed to the program yet when a link closes,
/// which is why the original clients pause before they close.
pub fn send_stop(conn: Connection) -> Result<(), Box<dyn Error>> {
    conn.send(STOP)?;
    let deadline = Instant::now() + STOP_WAIT;
    let closed = loop {
        match conn.get_data_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(_) => {} // whatever still comes before the end
            Err(serpy::Error::Timeout { .. }) => break false,
            Err(_) => break true,
        }
    };
    conn.close();
    if closed {
        println!("sent {STOP}: the server closed the connection");
    } else {
        println!("sent {STOP}; the server did not close the connection within {STOP_WAIT:?}");
    }
    Ok(())
}

/// A short description of a message for the servers' logs (large payloads by size only).
pub fn describe(message: &Message) -> String {
    const SHOWN: usize = 200;
    match message {
        Message::Int(i) => format!("int {i}"),
        Message::Float(_) => format!("float {message}"),
        Message::Text(t) if t.len() <= SHOWN => format!("text {t:?}"),
        Message::Text(t) => format!("text of {} bytes", t.len()),
        Message::Bytes(b) => match std::str::from_utf8(b) {
            Ok(s) if b.len() <= SHOWN => format!("{s:?}"),
            _ => format!("{} bytes", b.len()),
        },
        Message::Pickle(b) => format!("a pickle of {} bytes", b.len()),
        // `Message` is #[non_exhaustive]: a kind added later is described by its name.
        other => format!("a {} message", other.kind()),
    }
}

/// The original Python instrument server's `linspace(0.0, stop, n)`, value for value: `k * step + 0.0` with
/// `step = stop / (n - 1)`, and the last value exactly `stop`. (With `stop == 0`, where
/// the original divides first and multiplies after, every value is 0 either way.)
pub fn linspace(stop: f64, n: usize) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![0.0],
        _ => {
            let step = stop / (n - 1) as f64;
            let mut v: Vec<f64> = (0..n).map(|k| k as f64 * step + 0.0).collect();
            v[n - 1] = stop;
            v
        }
    }
}

/// The instrument pair's test image for request `p`: `side` × `side` float32 pixels,
/// little endian, row after row, pixel (row i, column j) = `cos(x[j]) * sin(y[i])`
/// computed in f64 and rounded to f32, with `x` and `y` both `linspace(0, p·π, side)`.
/// These are the bytes of the original Python utilities' image for the same `p` where
/// `sin` and `cos` are glibc's; other C libraries (Windows, macOS) differ from it in the
/// last bit of a few values near 0.
pub fn image(p: i64, side: usize) -> Vec<u8> {
    let axis = linspace(p as f64 * std::f64::consts::PI, side);
    let cos: Vec<f64> = axis.iter().map(|x| x.cos()).collect();
    let sin: Vec<f64> = axis.iter().map(|y| y.sin()).collect();
    let mut bytes = Vec::with_capacity(side * side * 4);
    for s in &sin {
        for c in &cos {
            bytes.extend_from_slice(&((c * s) as f32).to_le_bytes());
        }
    }
    bytes
}

/// The largest image side the instrument pair accepts (a 1 GiB image).
pub const MAX_SIDE: usize = 16384;

/// Checks an image side given on the command line.
pub fn check_side(side: usize) -> Result<usize, String> {
    if (1..=MAX_SIDE).contains(&side) {
        Ok(side)
    } else {
        Err(format!("--size must be 1 to {MAX_SIDE} (got {side})"))
    }
}

/// The largest message the instrument pair must accept for images of `side`.
pub fn max_message_size(side: usize) -> usize {
    (side * side * 4).max(serpy::DEFAULT_MAX_MESSAGE_SIZE)
}

/// Binds `builder` to `bind:port` and prints `listening on ADDR:PORT` as the first line
/// (the tests read the real port from it when `--port 0` was given).
pub fn listen(
    builder: serpy::ServerBuilder,
    bind: &str,
    port: u16,
) -> Result<serpy::Server, String> {
    let server = builder
        .bind((bind, port))
        .map_err(|e| format!("cannot listen on {bind}:{port}: {e}"))?;
    println!("listening on {}", server.local_addr());
    Ok(server)
}
