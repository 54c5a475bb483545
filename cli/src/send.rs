//! `serpy send`: send values, or a stream of synthetic messages, and say what happened.

use std::io::{self, BufRead};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use clap::{ArgMatches, Args};
use indicatif::{ProgressBar, ProgressStyle};
use serpy::{Bytes, Connection, Message, Mode, Protocol, Text};

use crate::out::{CmdResult, Failure};
use crate::render;
use crate::{noteln, outln, parse_addr, parse_size, ClientOpts};

/// Send values (text, numbers, files, lines of stdin) or a stream of synthetic messages.
///
/// Waits for the acknowledgements of modes 1, 3 and 5; the exit code says what happened.
#[derive(Args, Debug)]
#[command(after_help = concat!(
    "Values are sent in the order they are given on the command line, then the lines of
--stdin. Text goes as text (v1: its UTF-8 bytes; v2: a text frame), --int and --float as
numbers (v1: their text, as Python's str(); v2: typed frames), --bytes-file as bytes
(v1: base85, mode 2 or 3, unless --mode 0 or 1 is given and the file is text that can
travel raw).

Without --mode, v1 sends in mode 0 and switches a value that mode 0 cannot carry (a 0x1F,
a leading 0x01, bytes) to base85 by itself, saying so on stderr. With --mode, a value the
mode cannot carry is refused (exit code 1) and nothing is sent. In modes 1, 3 and 5 every
message waits for the peer's acknowledgement (at most --timeout seconds).

Examples:
  serpy send 8000 hello                          # one text message, v1 mode 0
  serpy send 8000 --int 42 --float -1.5 done     # 42, -1.5 and \"done\", in this order
  serpy send 8000 --mode 1 'are you there?'      # waits for the acknowledgement
  serpy send 8000 --protocol v2 --bytes-file image.raw
  tail -f log.txt | serpy send 8000 --stdin      # one message per line
  serpy send 8000 --count 1000 --size 1M --protocol v2   # stream, with progress and rate

", crate::exit_codes_help!()))]
pub struct SendArgs {
    /// Where to send: HOST:PORT, or PORT for 127.0.0.1:PORT.
    #[arg(value_parser = parse_addr)]
    pub addr: SocketAddr,
    /// Text messages (put `--` before a text that starts with `-`).
    #[arg(value_name = "TEXT")]
    pub text: Vec<String>,
    /// An integer message (i64); repeatable.
    #[arg(long = "int", value_name = "N", allow_negative_numbers = true)]
    pub ints: Vec<i64>,
    /// A float message (f64; inf, -inf and nan too); repeatable.
    #[arg(long = "float", value_name = "X", allow_negative_numbers = true)]
    pub floats: Vec<f64>,
    /// A bytes message with the contents of FILE; repeatable.
    #[arg(long = "bytes-file", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Also send each line of standard input as a text message (without its line end).
    #[arg(long)]
    pub stdin: bool,
    /// v1 mode: 0 raw, 1 raw acknowledged, 2 base85, 3 base85 acknowledged, 4 pickle,
    /// 5 pickle acknowledged.
    #[arg(short, long, value_parser = clap::value_parser!(u8).range(0..=5))]
    pub mode: Option<u8>,
    /// Send the values N times, or with --size, N synthetic messages; shows progress and
    /// prints the rate.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// With --count: each synthetic message has SIZE bytes (100, 64k, 1M).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, requires = "count")]
    pub size: Option<usize>,
    #[command(flatten)]
    pub client: ClientOpts,
}

/// One value from the command line.
enum Value {
    Text(String),
    Int(i64),
    Float(f64),
    File(PathBuf),
}

/// The values in command-line order.
fn values_in_order(a: &SendArgs, m: &ArgMatches) -> Vec<Value> {
    let mut v: Vec<(usize, Value)> = Vec::new();
    let mut add = |id: &str, vals: Vec<Value>| {
        if let Some(idx) = m.indices_of(id) {
            v.extend(idx.zip(vals));
        }
    };
    add("text", a.text.iter().cloned().map(Value::Text).collect());
    add("ints", a.ints.iter().copied().map(Value::Int).collect());
    add(
        "floats",
        a.floats.iter().copied().map(Value::Float).collect(),
    );
    add("files", a.files.iter().cloned().map(Value::File).collect());
    v.sort_by_key(|(i, _)| *i);
    v.into_iter().map(|(_, value)| value).collect()
}

/// How a message will travel: the protocol, and for v1 the mode and whether it was chosen.
#[derive(Clone, Copy)]
struct Plan {
    protocol: Protocol,
    mode: Mode,
    explicit: bool,
}

impl Plan {
    /// Checks that `message` (`what`, for the messages) can go as planned; returns the
    /// message as it will be handed to the library, and says on stderr where the library
    /// will send it in another mode than the one asked for.
    fn check(&self, message: Message, what: &str) -> Result<Message, Failure> {
        if self.protocol == Protocol::V2 {
            return Ok(message);
        }
        let mode = self.mode;
        let message = match message {
            // Raw modes carry text: a file that is text goes raw when a raw mode was asked for.
            Message::Bytes(b) if self.explicit && !mode.is_base85() => {
                match Text::from_utf8(b.clone()) {
                    Ok(t) => Message::Text(t),
                    Err(_) => {
                        return Err(Failure::input(format!(
                            "{what} is not UTF-8 text, which mode {mode} cannot carry; use --mode {} (base85), which carries any bytes",
                            Mode::Base85.with_ack(mode.is_acked())
                        )))
                    }
                }
            }
            Message::Bytes(b) if !mode.is_base85() => {
                noteln!(
                    "{what} is bytes: it goes in mode {} (base85) instead of mode {mode}, as bytes do over v1",
                    Mode::Base85.with_ack(mode.is_acked())
                );
                Message::Bytes(b)
            }
            m => m,
        };
        if message.is_empty() && !mode.is_acked() {
            return Err(Failure::input(format!(
                "{what} is empty, and an empty message in mode {mode} never arrives (the receiver drops it); use --mode {} or send something",
                mode.with_ack(true)
            )));
        }
        if !mode.is_base85() {
            let raw = match &message {
                Message::Text(t) => t.as_bytes(),
                _ => &[],
            };
            if let Some(why) = raw_obstacle(raw, mode.is_acked()) {
                let to = Mode::Base85.with_ack(mode.is_acked());
                if self.explicit {
                    return Err(Failure::input(format!(
                        "{what} {why}, which mode {mode} cannot carry; use --mode {to} (base85), which carries any bytes"
                    )));
                }
                noteln!("{what} {why}: it goes in mode {to} (base85) instead of mode {mode}");
            }
        }
        Ok(message)
    }
}

/// Why raw bytes cannot travel in mode 0 (`acked == false`) or 1 (PROTOCOL.md, "Data modes").
fn raw_obstacle(raw: &[u8], acked: bool) -> Option<&'static str> {
    if raw.first() == Some(&0x01) {
        Some("starts with 0x01 (it would be read as a control block)")
    } else if raw.contains(&0x1F) {
        Some("contains 0x1F (the v1 block separator)")
    } else if acked && raw.contains(&0x04) {
        Some("contains 0x04 (the end of an acknowledged v1 message)")
    } else {
        None
    }
}

fn to_message(value: Value) -> Result<(Message, String), Failure> {
    Ok(match value {
        Value::Text(t) => (Message::from(t), "the text".to_string()),
        Value::Int(i) => (Message::Int(i), format!("the integer {i}")),
        Value::Float(x) => (Message::Float(x), format!("the float {x}")),
        Value::File(path) => {
            let bytes = std::fs::read(&path)
                .map_err(|e| Failure::input(format!("cannot read {}: {e}", path.display())))?;
            (Message::from(bytes), format!("the file {}", path.display()))
        }
    })
}

/// A synthetic payload of `size` bytes: printable ASCII, so that every mode carries it.
fn synthetic(size: usize, plan: Plan) -> Message {
    const PATTERN: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let bytes: Vec<u8> = PATTERN.iter().copied().cycle().take(size).collect();
    if plan.protocol == Protocol::V1 && !plan.mode.is_base85() {
        Message::Text(Text::from(String::from_utf8(bytes).unwrap_or_default()))
    } else {
        Message::Bytes(Bytes::from(bytes))
    }
}

/// Sends the messages; counts what was sent and acknowledged.
struct Sender {
    conn: Connection,
    plan: Plan,
    timeout: std::time::Duration,
    sent: u64,
    acked: u64,
    bytes: u64,
}

impl Sender {
    fn send(&mut self, message: Message, what: &str) -> CmdResult {
        let len = message.len() as u64;
        self.conn
            .send_data_timeout(message, self.plan.mode, self.timeout)
            .map_err(|e| Failure::from_serpy(&format!("sending {what}"), &e))?;
        self.sent += 1;
        self.bytes += len;
        if self.plan.protocol == Protocol::V1 && self.plan.mode.is_acked() {
            self.acked += 1;
        }
        Ok(())
    }
}

/// Runs `serpy send`.
pub fn run(a: SendArgs, matches: &ArgMatches) -> CmdResult {
    let protocol: Protocol = a.client.protocol.into();
    if protocol == Protocol::V2 && a.mode.is_some() {
        return Err(Failure::input(
            "v2 has no modes (its frames are typed and never acknowledged); leave out --mode, or use --protocol v1",
        ));
    }
    let plan = Plan {
        protocol,
        mode: Mode::try_from(a.mode.unwrap_or(0)).unwrap_or_default(),
        explicit: a.mode.is_some(),
    };
    let values = values_in_order(&a, matches);
    if values.is_empty() && !a.stdin && a.size.is_none() {
        return Err(Failure::input(
            "nothing to send; give TEXT, --int, --float, --bytes-file, --stdin or --count N --size S (see serpy send --help)",
        ));
    }
    if a.size.is_some() && (!values.is_empty() || a.stdin) {
        return Err(Failure::input(
            "--size makes synthetic messages: give it without values and without --stdin",
        ));
    }
    // Every value is read and checked before anything is sent.
    let mut messages = Vec::with_capacity(values.len());
    for (i, value) in values.into_iter().enumerate() {
        let (message, what) = to_message(value)?;
        let what = format!("value {} ({what})", i + 1);
        messages.push((plan.check(message, &what)?, what));
    }
    if let Some(size) = a.size {
        if size > serpy::protocol::v2::MAX_PAYLOAD {
            return Err(Failure::input(format!(
                "--size {size} is above {}, the largest message this tool sends; give a smaller size",
                serpy::protocol::v2::MAX_PAYLOAD
            )));
        }
        let message = synthetic(size, plan);
        messages.push((
            plan.check(message, "the synthetic message")?,
            "a synthetic message".into(),
        ));
    }

    let conn = a.client.connect(a.addr)?;
    let mut sender = Sender {
        conn,
        plan,
        timeout: a.client.timeout(),
        sent: 0,
        acked: 0,
        bytes: 0,
    };
    let started = Instant::now();
    let result = match a.count {
        Some(count) => stream(&mut sender, &messages, count),
        None => messages
            .iter()
            .try_for_each(|(m, what)| sender.send(m.clone(), what)),
    };
    let result = result.and_then(|()| {
        if a.stdin {
            send_stdin(&mut sender)
        } else {
            Ok(())
        }
    });
    // Closing writes what is queued (for at most --timeout).
    sender.conn.close();
    let elapsed = started.elapsed();
    if let Err(mut f) = result {
        if sender.sent > 0 {
            f.message = format!("{} message(s) sent, then: {}", sender.sent, f.message);
        }
        return Err(f);
    }
    let over = format!("{} over {protocol}", a.addr);
    let acked = if sender.acked > 0 {
        format!(", {} acknowledged", sender.acked)
    } else {
        String::new()
    };
    if a.count.is_some() {
        let secs = elapsed.as_secs_f64().max(1e-9);
        outln!(
            "sent {} messages ({}) to {over}{acked} in {:.3} s: {:.0} msg/s, {:.1} MiB/s",
            sender.sent,
            render::size(sender.bytes as usize),
            secs,
            sender.sent as f64 / secs,
            sender.bytes as f64 / secs / (1024.0 * 1024.0)
        );
    } else {
        let s = if sender.sent == 1 { "" } else { "s" };
        outln!("sent {} message{s} to {over}{acked}", sender.sent);
    }
    Ok(())
}

/// Sends `messages` `count` times over, with a progress bar on stderr (when it is a terminal).
fn stream(sender: &mut Sender, messages: &[(Message, String)], count: u64) -> CmdResult {
    let per_round: u64 = messages.iter().map(|(m, _)| m.len() as u64).sum();
    let bar = ProgressBar::new(per_round.saturating_mul(count));
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{wide_bar}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    for round in 0..count {
        for (m, what) in messages {
            sender.send(m.clone(), what)?;
            bar.inc(m.len() as u64);
        }
        if round % 64 == 0 || round + 1 == count {
            bar.set_message(format!("{}/{count}", round + 1));
        }
    }
    bar.finish_and_clear();
    Ok(())
}

fn send_stdin(sender: &mut Sender) -> CmdResult {
    let stdin = io::stdin();
    let mut lock = stdin.lock();
    let mut line = Vec::new();
    let mut n = 0u64;
    let mut skipped = false;
    loop {
        line.clear();
        let read = lock
            .read_until(b'\n', &mut line)
            .map_err(|e| Failure::input(format!("cannot read standard input: {e}")))?;
        if read == 0 {
            return Ok(());
        }
        n += 1;
        if line.ends_with(b"\n") {
            line.pop();
            if line.ends_with(b"\r") {
                line.pop();
            }
        }
        let what = format!("line {n} of standard input");
        let message = match String::from_utf8(std::mem::take(&mut line)) {
            Ok(s) => Message::from(s),
            Err(e) => Message::from(e.into_bytes()),
        };
        if message.is_empty()
            && sender.plan.protocol == Protocol::V1
            && !sender.plan.mode.is_acked()
        {
            if !skipped {
                noteln!(
                    "{what} is empty: empty lines are skipped in mode {} (they would never arrive)",
                    sender.plan.mode
                );
                skipped = true;
            }
            continue;
        }
        let message = sender.plan.check(message, &what)?;
        sender.send(message, &what)?;
    }
}
