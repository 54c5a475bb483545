//! A chat-room server: every message a client sends goes to every other client, in the
//! v1 mode it came in (v1) or with its type (v2). The text `/KTHXBYE` stops it.
//!
//! ```text
//! cargo run --example simple_broadcast            # v1, 127.0.0.1:8000
//! cargo run --example simple_broadcast -- --v2    # v2
//! cargo run --example simple_chat                 # in other terminals, same --v2 flag
//! ```
//!
//! It speaks to the original Python `simpleBroadcast`/`simpleChat` peers as well.

mod common;
// println! that ends quietly when stdout is closed (`--help | head -1`).
use common::println;

use std::error::Error;
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

use serpy::{Message, Mode, Protocol, Received, Server, Text};

const USAGE: &str = "\
simple_broadcast: a server that sends every message it receives to all its other clients

usage: simple_broadcast [--v2] [--bind ADDR] [--port N]

  --v2         speak protocol v2 (serpy2) instead of v1 (serpy)
  --bind ADDR  address to listen on (default 127.0.0.1: this machine only;
               0.0.0.0 opens the server to the network)
  --port N     port to listen on (default 8000; 0 picks a free port)
  -h, --help   print this help

The first line printed is `listening on ADDR:PORT`. Any client stops the server by
sending the text /KTHXBYE. Talk to it with simple_chat (with the same --v2 flag).";

/// How long forwarding one message to one client may take (room in its queue and, for
/// the acknowledged v1 modes, its acknowledgement) before that client is skipped.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

struct Options {
    protocol: Protocol,
    bind: String,
    port: u16,
}

fn parse(args: &mut common::Args) -> Result<Options, String> {
    let mut o = Options {
        protocol: Protocol::V1,
        bind: common::DEFAULT_HOST.to_string(),
        port: common::DEFAULT_PORT,
    };
    while let Some(flag) = args.next_flag()? {
        match flag.as_str() {
            "--v2" => {
                args.switch(&flag)?;
                o.protocol = Protocol::V2;
            }
            "--bind" => o.bind = args.value(&flag)?,
            "--port" => o.port = args.value(&flag)?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(o)
}

fn main() -> ExitCode {
    let options = common::parse_args(USAGE, parse);
    common::exit_code("simple_broadcast", run(options))
}

fn run(o: Options) -> Result<(), Box<dyn Error>> {
    let server = common::listen(Server::builder().protocol(o.protocol), &o.bind, o.port)?;
    println!(
        "broadcast server ({}) started; a client sends {} to stop it",
        o.protocol,
        common::STOP
    );
    let result = thread::scope(|s| {
        // Say who comes in; this thread ends when the server is closed.
        s.spawn(|| {
            while let Ok(c) = server.get_connection() {
                match c.peer_addr() {
                    Some(peer) => println!("new connection from {peer}"),
                    None => println!("new connection"),
                }
            }
        });
        let result = broadcast(&server, o.protocol);
        server.close_all();
        result
    });
    result?;
    println!("server closed");
    Ok(())
}

/// Forwards messages until the stop word arrives.
fn broadcast(server: &Server, protocol: Protocol) -> Result<(), Box<dyn Error>> {
    loop {
        let Received {
            connection: from,
            message,
            mode,
        } = server.recv_any()?;
        let sender = from.peer_addr().map_or("?".into(), |a| a.to_string());
        match mode {
            Some(mode) => println!("{sender} (mode {mode}): {}", common::describe(&message)),
            None => println!("{sender}: {}", common::describe(&message)),
        }
        if common::is_stop(&message, protocol) {
            println!("{} received: stopping", common::STOP);
            return Ok(());
        }
        let message = keep_raw(message, mode);
        for to in server.connections() {
            if to.id() == from.id() {
                continue;
            }
            let sent = to.send_data_timeout(
                message.clone(),
                mode.unwrap_or(Mode::Plain),
                FORWARD_TIMEOUT,
            );
            match sent {
                Ok(()) => {}
                // It left; the server forgets it by itself.
                Err(serpy::Error::Disconnected | serpy::Error::Closed) => {}
                Err(e) => eprintln!(
                    "could not forward to {}: {e}",
                    to.peer_addr().map_or("?".into(), |a| a.to_string())
                ),
            }
        }
    }
}

/// v1 delivers modes 0 to 3 as bytes, and the crate sends bytes as base85 (mode 2 or 3)
/// because raw bytes could hold a separator. What came in mode 0 or 1 can go out the same
/// way, so text (all a chat sends) is passed on as text, byte for byte, in its own mode.
/// Anything else goes out as it came, and a receiver reads the same bytes either way.
fn keep_raw(message: Message, mode: Option<Mode>) -> Message {
    match (message, mode) {
        (Message::Bytes(b), Some(Mode::Plain | Mode::PlainAck)) => match Text::from_utf8(b.clone())
        {
            // (cloning `Bytes` copies no payload)
            Ok(text) => Message::Text(text),
            Err(_) => Message::Bytes(b),
        },
        (message, _) => message,
    }
}
