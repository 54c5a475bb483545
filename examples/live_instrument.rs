//! Publishing from an instrument (protocol v1): one program, three roles.
//!
//! - `--role server` (the default): the instrument. It publishes frames at a fixed rate
//!   to every live viewer, with `FullQueue::KeepLatest`, so a viewer that falls behind
//!   (or freezes) gets the newest frames and never holds up the others or pins memory;
//!   and it takes commands (`exposure=N`), which change what the next frames say.
//! - `--role view`: a live view. It says `view`, then prints the frames it gets.
//! - `--role command`: sends one command as an acknowledged send (mode 1): it returns
//!   once the instrument has the command, and fails if the link broke before that.
//!
//! ```text
//! cargo run --release --example live_instrument                      # the instrument
//! cargo run --release --example live_instrument -- --role view       # another terminal
//! cargo run --release --example live_instrument -- --role command --set exposure=7
//! cargo run --release --example live_instrument -- --role command --stop
//! ```

mod common;

use std::error::Error;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serpy::{Connection, FullQueue, Mode, Received, Server};

const USAGE: &str = "\
live_instrument: an instrument that publishes frames to live views and takes commands (v1)

usage: live_instrument [--role server|view|command] [--bind ADDR] [--port N] [options]

  --role R     server (default): publish frames, take commands;
               view: show frames; command: send one acknowledged command
  --bind ADDR  (server) address to listen on (default 127.0.0.1: this machine only;
               0.0.0.0 opens the server to the network)
  --port N     port to listen on or connect to (default 8000; 0 picks a free port)
  --size B     (server) frame size in bytes (default 1048576)
  --hz F       (server) frames per second (default 50)
  --keep N     (server) frames a slow viewer may have queued (default 2)
  --frames K   (view) how many frames to show before it ends (default 10)
  --set CMD    (command) the command, e.g. exposure=7
  --stop       (command) stop the instrument (/KTHXBYE)
  -h, --help   print this help

The server's first line is `listening on ADDR:PORT`. A viewer sends `view` and then
gets every frame published while its peer keeps up; one that falls behind gets the
newest. A command is sent in mode 1: it returns once the instrument has it.";

/// How long a viewer or command waits for the instrument.
const WAIT: Duration = Duration::from_secs(10);

struct Options {
    role: String,
    bind: String,
    port: u16,
    size: usize,
    hz: f64,
    keep: usize,
    frames: u64,
    set: Option<String>,
    stop: bool,
}

fn parse(args: &mut common::Args) -> Result<Options, String> {
    let mut o = Options {
        role: "server".into(),
        bind: common::DEFAULT_HOST.to_string(),
        port: common::DEFAULT_PORT,
        size: 1 << 20,
        hz: 50.0,
        keep: 2,
        frames: 10,
        set: None,
        stop: false,
    };
    while let Some(flag) = args.next_flag()? {
        match flag.as_str() {
            "--role" => o.role = args.value(&flag)?,
            "--bind" => o.bind = args.value(&flag)?,
            "--port" => o.port = args.value(&flag)?,
            "--size" => o.size = args.value(&flag)?,
            "--hz" => o.hz = args.value(&flag)?,
            "--keep" => o.keep = args.value(&flag)?,
            "--frames" => o.frames = args.value(&flag)?,
            "--set" => o.set = Some(args.value(&flag)?),
            "--stop" => o.stop = args.switch(&flag)?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if !["server", "view", "command"].contains(&o.role.as_str()) {
        return Err(format!("unknown role {:?}", o.role));
    }
    if !(o.hz > 0.0 && o.hz <= 10_000.0) {
        return Err(format!("--hz {} is not between 0 and 10000", o.hz));
    }
    if !(64..=64 << 20).contains(&o.size) {
        return Err(format!("--size {} is not between 64 and 64 MiB", o.size));
    }
    Ok(o)
}

fn main() -> ExitCode {
    let o = common::parse_args(USAGE, parse);
    let result = match o.role.as_str() {
        "view" => view(&o),
        "command" => command(&o),
        _ => serve(&o),
    };
    common::exit_code("live_instrument", result)
}

/// A frame: a text header line, then padding up to `size` bytes (text, so that v1 sends
/// it as it is).
fn frame(seq: u64, exposure: i64, size: usize) -> String {
    let mut f = format!("frame {seq} exposure {exposure}\n");
    let pad = size.saturating_sub(f.len());
    f.push_str(&".".repeat(pad));
    f
}

fn serve(o: &Options) -> Result<(), Box<dyn Error>> {
    let server = common::listen(
        Server::builder().full_queue(FullQueue::KeepLatest(o.keep)),
        &o.bind,
        o.port,
    )?;
    println!(
        "instrument: {} B frames at {} Hz, a slow viewer keeps the latest {}",
        o.size, o.hz, o.keep
    );
    let period = Duration::from_secs_f64(1.0 / o.hz);
    let mut viewers: Vec<Connection> = Vec::new();
    let (mut seq, mut exposure, mut dropped) = (0u64, 1i64, 0u64);
    let mut next = Instant::now();
    loop {
        // Commands and viewers arrive between two frames.
        match server.recv_any_timeout(next.saturating_duration_since(Instant::now())) {
            Ok(Received {
                connection,
                message,
                ..
            }) => {
                if common::is_stop(&message, serpy::Protocol::V1) {
                    break;
                }
                let text = message.as_str().unwrap_or("").trim().to_string();
                if text == "view" {
                    println!("viewer #{} joined", connection.id());
                    viewers.push(connection);
                } else if let Some(v) = text.strip_prefix("exposure=") {
                    match v.parse() {
                        Ok(v) => {
                            exposure = v;
                            println!("command: exposure {exposure}");
                        }
                        Err(_) => println!("command {text:?}: not a number, ignored"),
                    }
                } else {
                    println!("{}: ignored", common::describe(&message));
                }
                continue;
            }
            Err(serpy::Error::Timeout { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        if Instant::now() < next {
            continue;
        }
        // Never waits on a viewer: keep-latest makes room in a slow viewer's queue.
        let report = server.broadcast_to(viewers.clone(), frame(seq, exposure, o.size))?;
        dropped += report.dropped_total();
        let gone: Vec<u64> = report
            .failures()
            .filter(|(_, e)| e.is_final())
            .map(|(c, _)| c.id())
            .collect();
        for id in gone {
            println!("viewer #{id} left");
            viewers.retain(|c| c.id() != id);
        }
        seq += 1;
        next += period;
    }
    println!(
        "{} received: {seq} frames published, {dropped} dropped for slow viewers",
        common::STOP
    );
    println!("stats: {}", server.stats());
    server.close_all();
    Ok(())
}

fn view(o: &Options) -> Result<(), Box<dyn Error>> {
    let conn = Connection::builder()
        .auto_restart(true)
        .connect((common::DEFAULT_HOST, o.port))?;
    conn.send("view")?;
    let mut last: Option<u64> = None;
    let mut skipped = 0;
    for _ in 0..o.frames {
        let m = conn.get_data_timeout(WAIT)?;
        let text = m.as_str().ok_or("a frame that is not text")?;
        let header = text.lines().next().unwrap_or("");
        let seq: u64 = header
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or("a frame without its number")?;
        if let Some(l) = last {
            skipped += seq.saturating_sub(l + 1);
        }
        last = Some(seq);
        println!("{header} ({} bytes)", text.len());
    }
    println!(
        "view: {} frames, {skipped} skipped; {}",
        o.frames,
        conn.stats()
    );
    conn.close();
    Ok(())
}

fn command(o: &Options) -> Result<(), Box<dyn Error>> {
    let conn = Connection::connect((common::DEFAULT_HOST, o.port))?;
    if let Some(cmd) = &o.set {
        let sent = Instant::now();
        // Mode 1: returns once the instrument has the command.
        conn.send_data_timeout(cmd.as_str(), Mode::PlainAck, WAIT)?;
        println!(
            "acknowledged: {cmd} (after {:.1} ms)",
            sent.elapsed().as_secs_f64() * 1e3
        );
    }
    if o.stop {
        common::send_stop(conn)?;
    } else {
        conn.close();
    }
    Ok(())
}
