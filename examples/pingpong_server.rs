//! The ping-pong server (protocol v2): every message a client sends goes back to that
//! client with its type. The text `/KTHXBYE` stops it.
//!
//! ```text
//! cargo run --example pingpong_server
//! cargo run --example pingpong_client     # in another terminal
//! ```
//!
//! It answers the original Python `test_serpy2_1_pingpongClient` as well.

mod common;
// println! that ends quietly when stdout is closed (`--help | head -1`).
use common::println;

use std::error::Error;
use std::process::ExitCode;
use std::time::Duration;

use serpy::{Protocol, Received, Server};

const USAGE: &str = "\
pingpong_server: sends every message (v2) back to its sender, with its type

usage: pingpong_server [--bind ADDR] [--port N]

  --bind ADDR  address to listen on (default 127.0.0.1: this machine only;
               0.0.0.0 opens the server to the network)
  --port N     port to listen on (default 8000; 0 picks a free port)
  -h, --help   print this help

The first line printed is `listening on ADDR:PORT`. A client stops the server by
sending the text /KTHXBYE. Try it with pingpong_client.";

/// How long sending one answer may wait for room in the client's outgoing queue.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

struct Options {
    bind: String,
    port: u16,
}

fn parse(args: &mut common::Args) -> Result<Options, String> {
    let mut o = Options {
        bind: common::DEFAULT_HOST.to_string(),
        port: common::DEFAULT_PORT,
    };
    while let Some(flag) = args.next_flag()? {
        match flag.as_str() {
            "--bind" => o.bind = args.value(&flag)?,
            "--port" => o.port = args.value(&flag)?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(o)
}

fn main() -> ExitCode {
    let options = common::parse_args(USAGE, parse);
    common::exit_code("pingpong_server", run(options))
}

fn run(o: Options) -> Result<(), Box<dyn Error>> {
    let server = common::listen(Server::builder().protocol(Protocol::V2), &o.bind, o.port)?;
    println!(
        "ping-pong server (v2) started; a client sends {} to stop it",
        common::STOP
    );
    loop {
        let Received {
            connection,
            message,
            ..
        } = server.recv_any()?;
        println!("{}", common::describe(&message));
        if common::is_stop(&message, Protocol::V2) {
            break;
        }
        match connection.send_data_timeout(message, serpy::Mode::Plain, SEND_TIMEOUT) {
            Ok(()) => {}
            // The client left before its answer: nobody to answer.
            Err(serpy::Error::Disconnected | serpy::Error::Closed) => {}
            Err(e) => eprintln!("could not answer: {e}"),
        }
    }
    println!("closing the server");
    server.close_all();
    println!("server closed");
    Ok(())
}
