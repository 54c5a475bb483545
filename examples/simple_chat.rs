//! An interactive chat client for `simple_broadcast`: each line typed becomes the message
//! `NAME : text`, and what the others say is printed as `>>> ...`.
//!
//! ```text
//! cargo run --example simple_broadcast            # once
//! cargo run --example simple_chat -- --name ada   # in as many terminals as you like
//! ```
//!
//! Commands: `/name NAME` changes the name, `/stop` quits, `/KTHXBYE` stops the server
//! (and quits). The connection restarts by itself if the server goes away and comes
//! back. It speaks to the original Python `simpleBroadcast`/`simpleChat` peers as well.

mod common;
// println! that ends quietly when stdout is closed (`--help | head -1`).
use common::println;

use std::error::Error;
use std::io::{self, BufRead};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use serpy::{Connection, Event, EventKind, Mode, Protocol};

const USAGE: &str = "\
simple_chat: an interactive client for simple_broadcast

usage: simple_chat [--v2] [--host HOST] [--port N] [--name NAME]

  --v2         speak protocol v2 (serpy2) instead of v1 (serpy)
  --host HOST  the server's address (default 127.0.0.1)
  --port N     the server's port (default 8000)
  --name NAME  the name put before your messages (default anonymous)
  -h, --help   print this help

Type a line to send it to everyone else. Commands:
  /name NAME   change your name
  /stop        quit
  /KTHXBYE     stop the server, then quit
The end of the input (Ctrl-D) quits too.";

/// How long one send may wait for room in the outgoing queue (while the link is down).
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

struct Options {
    protocol: Protocol,
    host: String,
    port: u16,
    name: String,
}

fn parse(args: &mut common::Args) -> Result<Options, String> {
    let mut o = Options {
        protocol: Protocol::V1,
        host: common::DEFAULT_HOST.to_string(),
        port: common::DEFAULT_PORT,
        name: "anonymous".to_string(),
    };
    while let Some(flag) = args.next_flag()? {
        match flag.as_str() {
            "--v2" => {
                args.switch(&flag)?;
                o.protocol = Protocol::V2;
            }
            "--host" => o.host = args.value(&flag)?,
            "--port" => o.port = args.value(&flag)?,
            "--name" => o.name = args.value(&flag)?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(o)
}

fn main() -> ExitCode {
    let options = common::parse_args(USAGE, parse);
    common::exit_code("simple_chat", run(options))
}

fn run(o: Options) -> Result<(), Box<dyn Error>> {
    let conn = Connection::builder()
        .protocol(o.protocol)
        .auto_restart(true)
        .connect((o.host.as_str(), o.port))
        .map_err(|e| format!("cannot connect to {}:{}: {e}", o.host, o.port))?;
    println!(
        "connected to {}:{} ({}) as {}; type /stop to quit",
        o.host, o.port, o.protocol, o.name
    );
    let printer = {
        let conn = conn.clone();
        thread::spawn(move || {
            // get_data ends with an error once the connection is closed.
            while let Ok(message) = conn.get_data() {
                println!(">>> {message}");
            }
        })
    };
    let result = chat(&conn, o.name);
    // Writes what is still queued (bounded by the close timeout), then ends the threads.
    conn.close();
    let _ = printer.join();
    result
}

/// What one line of input asks for.
#[derive(Debug)]
enum Command<'a> {
    Nothing,
    Say(&'a str),
    Name(&'a str),
    Stop,
    StopServer,
    Unknown(&'a str),
}

impl<'a> Command<'a> {
    fn parse(line: &'a str) -> Self {
        if line.is_empty() {
            return Command::Nothing;
        }
        if !line.starts_with('/') {
            return Command::Say(line);
        }
        if line.eq_ignore_ascii_case("/stop") {
            Command::Stop
        } else if let Some(rest) = strip_prefix_ignore_case(line, "/name") {
            // "/name NAME", and "/name=NAME" as the original v2 chat suggests
            Command::Name(rest.trim_start_matches([' ', '=']).trim())
        } else if line == common::STOP {
            Command::StopServer
        } else {
            Command::Unknown(line)
        }
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Reads stdin until `/stop`, `/KTHXBYE` or the end of the input.
fn chat(conn: &Connection, mut name: String) -> Result<(), Box<dyn Error>> {
    let mut input = io::stdin().lock();
    let mut raw = Vec::new();
    loop {
        raw.clear();
        if input.read_until(b'\n', &mut raw)? == 0 {
            println!("end of input: bye");
            return Ok(());
        }
        let line = String::from_utf8_lossy(&raw);
        let line = line.trim_end_matches(['\n', '\r']);
        match Command::parse(line) {
            Command::Nothing => {}
            Command::Say(text) => send(conn, format!("{name} : {text}")),
            Command::Name("") => println!("WARNING : /name needs a name"),
            Command::Name(new) => {
                name = new.to_string();
                println!("you are now {name}");
            }
            Command::Stop => {
                println!("bye");
                return Ok(());
            }
            Command::StopServer => {
                stop_server(conn);
                return Ok(());
            }
            Command::Unknown(c) => println!(
                "WARNING : command {c:?} not recognized (try /name NAME, /stop or {})",
                common::STOP
            ),
        }
    }
}

/// Sends the stop word and waits (at most a few seconds) for the server to close the
/// link: closing at once could lose the word, since the original Python server drops what
/// it has not handed to the program yet when a link closes.
fn stop_server(conn: &Connection) {
    // Not back in after the server closes; and forget the link's earlier life.
    conn.disable_restart();
    let events = conn.events();
    while let Ok(Some(_)) = events.try_recv() {}
    send(conn, common::STOP.to_string());
    let deadline = Instant::now() + common::STOP_WAIT;
    loop {
        match events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Event {
                kind: EventKind::Disconnected { .. },
                ..
            }) => {
                println!(
                    "sent {}: the server closed the connection; bye",
                    common::STOP
                );
                return;
            }
            Ok(_) => {}
            Err(_) => {
                println!(
                    "sent {}; the server did not close the connection within {:?}; bye",
                    common::STOP,
                    common::STOP_WAIT
                );
                return;
            }
        }
    }
}

/// Sends text in mode 0 (v1) or as text (v2); a failure is reported and the chat goes on.
fn send(conn: &Connection, text: String) {
    if let Err(e) = conn.send_data_timeout(text, Mode::Plain, SEND_TIMEOUT) {
        eprintln!("WARNING : not sent: {e}");
    }
}
