//! The ping-pong client (protocol v2): sends `[123, "hello", 12.35, -1e6, 600000,
//! "yes µù"]` to a ping-pong server, checks that each value comes back with its type,
//! on a fresh connection for each cycle, then stops the server with `/KTHXBYE`.
//! Exits with 1 if anything came back wrong.
//!
//! ```text
//! cargo run --example pingpong_server
//! cargo run --example pingpong_client -- --cycles 100
//! ```
//!
//! It checks the original Python `test_serpy2_1_pingpongServer` as well.

mod common;
// println! that ends quietly when stdout is closed (`--help | head -1`).
use common::println;

use std::error::Error;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serpy::{Connection, Message, Protocol};

const USAGE: &str = "\
pingpong_client: sends typed values (v2) to a ping-pong server and checks the echo

usage: pingpong_client [--host HOST] [--port N] [--cycles N] [--no-stop]

  --host HOST  the server's address (default 127.0.0.1)
  --port N     the server's port (default 8000)
  --cycles N   how many cycles, each on a new connection (default 10)
  --no-stop    leave the server running (by default it is sent /KTHXBYE at the end)
  -h, --help   print this help

Exits with 0 when every value came back as sent, 1 otherwise.";

/// How long to wait for each answer: only a transfer problem takes that long.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

struct Options {
    host: String,
    port: u16,
    cycles: u32,
    stop: bool,
}

fn parse(args: &mut common::Args) -> Result<Options, String> {
    let mut o = Options {
        host: common::DEFAULT_HOST.to_string(),
        port: common::DEFAULT_PORT,
        cycles: 10,
        stop: true,
    };
    while let Some(flag) = args.next_flag()? {
        match flag.as_str() {
            "--host" => o.host = args.value(&flag)?,
            "--port" => o.port = args.value(&flag)?,
            "--cycles" => o.cycles = args.value(&flag)?,
            "--no-stop" => o.stop = !args.switch(&flag)?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(o)
}

fn main() -> ExitCode {
    let options = common::parse_args(USAGE, parse);
    common::exit_code("pingpong_client", run(options))
}

/// What each cycle sends, as the original client does.
fn values() -> Vec<Message> {
    vec![
        123.into(),
        "hello".into(),
        12.35.into(),
        (-1e6).into(),
        600000.into(),
        "yes µù".into(),
    ]
}

fn connect(o: &Options) -> Result<Connection, String> {
    Connection::builder()
        .protocol(Protocol::V2)
        .connect((o.host.as_str(), o.port))
        .map_err(|e| format!("cannot connect to {}:{}: {e}", o.host, o.port))
}

fn run(o: Options) -> Result<(), Box<dyn Error>> {
    let started = Instant::now();
    let values = values();
    let mut errors = 0usize;
    for cycle in 1..=o.cycles {
        let conn = connect(&o)?;
        // Everything goes out in one go before the answers are read.
        for v in &values {
            conn.send(v.clone())?;
        }
        let mut cycle_errors = 0;
        for (k, sent) in values.iter().enumerate() {
            match conn.get_data_timeout(ANSWER_TIMEOUT) {
                Ok(got) if &got == sent => {}
                Ok(got) => {
                    cycle_errors += 1;
                    println!("cycle {cycle}: ping-pong error: sent {sent:?}, got back {got:?}");
                }
                Err(e) => {
                    // Nothing more will come on this connection.
                    cycle_errors += values.len() - k;
                    println!(
                        "cycle {cycle}: ping-pong error: sent {sent:?}, got nothing back: {e}"
                    );
                    break;
                }
            }
        }
        conn.close();
        if cycle_errors == 0 {
            println!("cycle {cycle}: OK");
        }
        errors += cycle_errors;
    }
    println!(
        "{} cycles in {:.3} seconds",
        o.cycles,
        started.elapsed().as_secs_f64()
    );
    println!("{errors} ping-pong errors");
    if o.stop {
        common::send_stop(connect(&o)?)?;
    }
    if errors > 0 {
        return Err(format!("{errors} value(s) did not come back as sent").into());
    }
    Ok(())
}
