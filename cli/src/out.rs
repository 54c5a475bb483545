//! Output: lines on stdout (styled only when stdout is a terminal), one-line errors on
//! stderr, and the exit codes.
//!
//! Every line goes through [`line()`], which takes the lock of stdout for the whole line,
//! so that the threads of `listen` and `dump` never interleave inside a line, and which
//! ends the program quietly when stdout is a closed pipe (`serpy listen | head`).

use std::fmt;
use std::io::{self, Write};
use std::process;
use std::sync::{LazyLock, Mutex, PoisonError};

use anstyle::{AnsiColor, Style};

/// The exit codes of every command (also in `serpy --help` and the README).
pub mod exit {
    /// Everything was done (and acknowledged, where the mode asks for it).
    pub const OK: u8 = 0;
    /// Bad input: a value the chosen protocol or mode cannot carry, a file that is not
    /// there, a line of `--stdin` that cannot be read.
    pub const INPUT: u8 = 1;
    /// Bad command line (from the argument parser).
    pub const USAGE: u8 = 2;
    /// Could not connect or listen: refused, unreachable, bad address, port in use.
    pub const CONNECT: u8 = 3;
    /// Delivery failed: the link broke, or an acknowledgement or echo did not come in time.
    pub const DELIVERY: u8 = 4;
}

/// A failure that ends the command: one line on stderr and an exit code.
#[derive(Debug)]
pub struct Failure {
    /// One of [`exit`].
    pub code: u8,
    /// What happened and what to do, in one line.
    pub message: String,
}

impl Failure {
    /// Bad input (exit code 1).
    pub fn input(message: impl Into<String>) -> Self {
        Failure {
            code: exit::INPUT,
            message: message.into(),
        }
    }

    /// Could not connect or listen (exit code 3).
    pub fn connect(message: impl Into<String>) -> Self {
        Failure {
            code: exit::CONNECT,
            message: message.into(),
        }
    }

    /// Delivery failed (exit code 4).
    pub fn delivery(message: impl Into<String>) -> Self {
        Failure {
            code: exit::DELIVERY,
            message: message.into(),
        }
    }

    /// A library error, with the exit code of its kind.
    pub fn from_serpy(context: &str, e: &serpy::Error) -> Self {
        use serpy::Error as E;
        let code = match e {
            E::Connect { .. } | E::Address { .. } => exit::CONNECT,
            E::Disconnected
            | E::Closed
            | E::AckUncertain
            | E::NotSent
            | E::Timeout { .. }
            | E::Io { .. }
            | E::Protocol(_) => exit::DELIVERY,
            _ => exit::INPUT,
        };
        let message = match e {
            E::Address { addr, source } if source.kind() == io::ErrorKind::AddrInUse => format!(
                "cannot listen on {addr}: the port is already in use; choose another port \
                 (port 0 picks a free one) or stop the program that holds it"
            ),
            _ if context.is_empty() => e.to_string(),
            _ => format!("{context}: {e}"),
        };
        Failure { code, message }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// What every command returns.
pub type CmdResult = Result<(), Failure>;

static STDOUT: LazyLock<Mutex<anstream::AutoStream<io::Stdout>>> =
    LazyLock::new(|| Mutex::new(anstream::AutoStream::auto(io::stdout())));

/// Writes one line to stdout. A closed pipe (the reader went away, as `head` does) ends
/// the program at once with exit code 0; another write error ends it with code 1.
pub fn line(args: fmt::Arguments<'_>) {
    let mut out = STDOUT.lock().unwrap_or_else(PoisonError::into_inner);
    let result = out.write_fmt(args).and_then(|()| out.write_all(b"\n"));
    if let Err(e) = result.and_then(|()| out.flush()) {
        if e.kind() == io::ErrorKind::BrokenPipe {
            process::exit(0);
        }
        let _ = writeln!(io::stderr(), "serpy: error: cannot write to stdout: {e}");
        process::exit(i32::from(exit::INPUT));
    }
}

/// `println!` through [`line()`].
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::out::line(format_args!($($arg)*))
    };
}

/// Writes one line to stderr, prefixed with `serpy: `; errors writing it are ignored.
pub fn note(args: fmt::Arguments<'_>) {
    let mut err = anstream::stderr().lock();
    let _ = err.write_fmt(format_args!("serpy: {args}\n"));
}

/// `eprintln!` through [`note()`].
#[macro_export]
macro_rules! noteln {
    ($($arg:tt)*) => {
        $crate::out::note(format_args!($($arg)*))
    };
}

/// Styles of the human-readable output (stripped when stdout is not a terminal).
pub mod style {
    use super::*;

    /// Connection numbers and peers.
    pub const PEER: Style = Style::new().dimmed();
    /// Protocol, mode, type.
    pub const KIND: Style = AnsiColor::Cyan.on_default();
    /// Control blocks.
    pub const CONTROL: Style = AnsiColor::Magenta.on_default();
    /// Errors, garbage, bad checksums.
    pub const BAD: Style = AnsiColor::Red.on_default().bold();
    /// Good news: connected, checksum ok.
    pub const GOOD: Style = AnsiColor::Green.on_default();
}
