//! `serpy`: listen, send, dump and measure serpy (v1) and serpy2 (v2) traffic from a shell.
//!
//! See `serpy --help`, `serpy COMMAND --help` and `cli/README.md`.
#![forbid(unsafe_code)]

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

mod out;

mod dump;
mod listen;
mod measure;
mod render;
mod send;

use out::{exit, Failure};

/// The exit codes, as a literal for the commands' `--help` (see [`out::exit`]).
#[macro_export]
macro_rules! exit_codes_help {
    () => {
        "Exit codes:
  0  done (every acknowledged message was acknowledged, every echo came back)
  1  bad input: a value the protocol or mode cannot carry, a file that is not there
  2  bad command line
  3  could not connect or listen: refused, unreachable, bad address, port in use
  4  delivery failed: the link broke, an acknowledgement or echo did not come in time"
    };
}

/// Listen, send, dump and measure serpy (v1) and serpy2 (v2) traffic.
///
/// Addresses are HOST:PORT (`127.0.0.1:8000`, `[::1]:8000`, `localhost:8000`) or a bare
/// PORT, which means 127.0.0.1:PORT. Port 0 picks a free port; commands that listen print
/// the address they bound on their first line.
#[derive(Parser, Debug)]
#[command(name = "serpy", version, propagate_version = true, after_help = MAIN_EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const MAIN_EXAMPLES: &str = "\
Examples:
  serpy listen 8000                          # print what arrives (v1 and v2)
  serpy send 8000 hello --int 42 --mode 1    # send text and a number, acknowledged
  serpy dump 9000 192.168.1.20:8000          # watch an instrument through a proxy
  serpy listen 8000 --echo --quiet & serpy ping 8000

Exit codes:
  0 done, 1 bad input, 2 bad command line, 3 could not connect or listen,
  4 delivery failed (see `serpy send --help`).";

#[derive(Subcommand, Debug)]
enum Command {
    Listen(listen::ListenArgs),
    Send(send::SendArgs),
    Dump(dump::DumpArgs),
    Ping(measure::PingArgs),
    Bench(measure::BenchArgs),
}

/// The protocol a command speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProtocolArg {
    /// serpy: `0x1F`-separated blocks, modes 0 to 5.
    V1,
    /// serpy2: typed frames with a 14-byte header.
    V2,
    /// Tell them apart by the first bytes of each connection (servers and dump only).
    Auto,
}

impl From<ProtocolArg> for serpy::Protocol {
    fn from(p: ProtocolArg) -> Self {
        match p {
            ProtocolArg::V1 => serpy::Protocol::V1,
            ProtocolArg::V2 => serpy::Protocol::V2,
            ProtocolArg::Auto => serpy::Protocol::Auto,
        }
    }
}

/// Options of the commands that connect to a peer.
#[derive(Args, Debug, Clone)]
pub struct ClientOpts {
    /// The protocol to speak.
    #[arg(short, long, value_enum, default_value_t = ClientProtocol::V1)]
    pub protocol: ClientProtocol,
    /// Seconds to wait for the connection, an acknowledgement or an echo.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0, value_parser = parse_seconds)]
    pub timeout: f64,
}

/// The protocol of a client (no `auto`: a client has to choose).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ClientProtocol {
    /// serpy: `0x1F`-separated blocks, modes 0 to 5.
    V1,
    /// serpy2: typed frames with a 14-byte header.
    V2,
}

impl From<ClientProtocol> for serpy::Protocol {
    fn from(p: ClientProtocol) -> Self {
        match p {
            ClientProtocol::V1 => serpy::Protocol::V1,
            ClientProtocol::V2 => serpy::Protocol::V2,
        }
    }
}

impl ClientOpts {
    /// The timeout as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout)
    }

    /// Connects to `addr` without auto-restart (a tool reports a broken link, it does
    /// not hide it).
    pub fn connect(&self, addr: SocketAddr) -> Result<serpy::Connection, Failure> {
        serpy::Connection::builder()
            .protocol(self.protocol.into())
            .connect_timeout(self.timeout())
            .close_timeout(self.timeout())
            .max_message_size(serpy::protocol::v2::MAX_PAYLOAD)
            .connect(addr)
            .map_err(|e| Failure::from_serpy("", &e))
    }
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 && x < 1e9 => Ok(x),
        _ => Err(format!("{s:?} is not a number of seconds above 0")),
    }
}

/// Parses `HOST:PORT` or a bare `PORT` (127.0.0.1:PORT) into one socket address.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    match s.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("{s:?} resolves to no address")),
        Err(e) => Err(format!(
            "{s:?} is not an address ({e}); give HOST:PORT such as 127.0.0.1:8000 or [::1]:8000, or a bare PORT"
        )),
    }
}

/// A byte count: `100`, `64k`, `1M`, `1MiB`, `2G`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: usize = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size; give bytes such as 100, 64k or 1M"))?;
    let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "{s:?} is not a size; units are k, M and G (powers of 1024)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

fn main() -> ExitCode {
    let matches = match Cli::command().try_get_matches() {
        Ok(m) => m,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(exit::USAGE);
        }
    };
    let sub: &ArgMatches = matches.subcommand().map(|(_, m)| m).unwrap_or(&matches);
    let result = match cli.command {
        Command::Listen(a) => listen::run(a),
        Command::Send(a) => send::run(a, sub),
        Command::Dump(a) => dump::run(a),
        Command::Ping(a) => measure::ping(a),
        Command::Bench(a) => measure::bench(a),
    };
    match result {
        Ok(()) => ExitCode::from(exit::OK),
        Err(f) => {
            noteln!("error: {}", f.message.replace('\n', " "));
            ExitCode::from(f.code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_sizes() {
        assert_eq!(parse_addr("8000").unwrap().to_string(), "127.0.0.1:8000");
        assert_eq!(parse_addr("[::1]:9").unwrap().to_string(), "[::1]:9");
        assert!(parse_addr("no port").is_err());
        assert_eq!(parse_size("64k"), Ok(65536));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("7"), Ok(7));
        assert!(parse_size("1x").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn exit_codes_are_documented_once() {
        assert!(exit_codes_help!().contains("4  delivery failed"));
    }
}
