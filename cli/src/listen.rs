//! `serpy listen`: a server that prints every message, as lines or as JSON.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use clap::Args;
use serde_json::{json, Map, Value};
use serpy::{Connection, EventKind, Message, Mode, Server, Text};

use crate::out::{style, CmdResult, Failure};
use crate::render::{self, now};
use crate::{outln, parse_addr, parse_size, ProtocolArg};

/// The `--json` schema as a literal, for `--help` (cli/README.md shows the same text).
macro_rules! json_schema {
    () => {
        "JSON output (--json): one object per line, keys in alphabetical order. Every object has
  \"event\"   what happened (below)      \"time\"  seconds since 1970-01-01 UTC (float)
and, except \"listening\", \"conn\" (the connection's number) and \"peer\" (\"IP:PORT\").
  listening     \"addr\" (the bound address, always the first line), \"protocol\"
  connected     (nothing more)
  message       \"protocol\": \"v1\"|\"v2\"; \"mode\": 0..5 (v1) or null (v2);
                \"kind\": \"int\"|\"float\"|\"text\"|\"bytes\"|\"pickle\"; \"size\": payload bytes;
                \"value\": int and float as numbers (\"inf\", \"-inf\", \"nan\" as strings),
                  text as a string, bytes as a string when they are UTF-8 (v1 delivers
                  text as bytes), else null; for a pickle the decoded object (below),
                  null when it cannot be decoded (then \"pickle_error\" says why);
                \"hex\": the payload in lower-case hex (null for numbers), cut to
                  --hex-limit bytes; \"truncated\": true when it was cut
  error         \"error\": a protocol error of the peer (the bad part was skipped)
  echo_failed   \"error\": why the echo of a message could not be sent
  note          \"note\": another event of the link, in words
  disconnected  \"reason\": why, or null (always the connection's last line)
Decoded pickles (modes 4, 5): None null; bool; int a number (beyond 64 bits its decimal
text); float a number (\"inf\", \"-inf\", \"nan\" as strings); complex [re, im]; str a
string; bytes and bytearray {\"hex\": \"...\"}; list, tuple, set, frozenset an array; dict
an object when every key is a str, else an array of [key, value] pairs; numpy array
{\"dtype\", \"shape\", \"items\"} (items as numpy's tolist(), null above 65536 items).
New fields may be added; existing ones keep their name, type and meaning."
    };
}

/// Run a server; print every message with its peer, protocol, mode or type, size and value.
///
/// One line per message, or one JSON object per line with --json.
#[derive(Args, Debug)]
#[command(after_help = concat!(
    "Examples:
  serpy listen                       # 127.0.0.1:8000, v1 and v2 told apart per connection
  serpy listen 0                     # any free port; the first line says which
  serpy listen 8000 --protocol v2 --json | jq .value
  serpy listen 8000 --echo --quiet   # an echoing peer for `serpy ping` and `serpy bench`

Acknowledgements follow the protocol: a v1 message in mode 1, 3 or 5 is acknowledged
(ACKEOT!!) as soon as it has arrived whole, and every SETMODE is answered (ACKMODCG).
v2 has no acknowledgements. --echo sends each message back in the mode it came in (v1)
or as the same type (v2).

", json_schema!(), "

", crate::exit_codes_help!()))]
pub struct ListenArgs {
    /// Address to listen on: HOST:PORT, or PORT for 127.0.0.1:PORT (0: any free port).
    #[arg(value_parser = parse_addr, default_value = "127.0.0.1:8000")]
    pub addr: SocketAddr,
    /// The protocol to speak; auto tells v1 and v2 apart by each connection's first bytes.
    #[arg(short, long, value_enum, default_value_t = ProtocolArg::Auto)]
    pub protocol: ProtocolArg,
    /// One JSON object per line (schema in `--help`).
    #[arg(long)]
    pub json: bool,
    /// Send every message back to its sender.
    #[arg(long)]
    pub echo: bool,
    /// Print no line per message (connections and errors are still printed).
    #[arg(short, long)]
    pub quiet: bool,
    /// Characters of text and bytes of binary payloads shown per line.
    #[arg(long, value_name = "N", default_value_t = render::DEFAULT_PREVIEW)]
    pub preview: usize,
    /// Bytes of payload given in the JSON field "hex" (0: all).
    #[arg(long, value_name = "BYTES", default_value_t = 64)]
    pub hex_limit: usize,
    /// Largest message accepted; larger ones are skipped and reported (64M by default).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "64M")]
    pub max_size: usize,
}

#[derive(Clone, Copy)]
struct View {
    json: bool,
    quiet: bool,
    echo: bool,
    preview: usize,
    hex_limit: usize,
}

/// Runs `serpy listen` until the process is stopped.
pub fn run(a: ListenArgs) -> CmdResult {
    let protocol: serpy::Protocol = a.protocol.into();
    let server = Server::builder()
        .protocol(protocol)
        .max_message_size(a.max_size)
        .bind(a.addr)
        .map_err(|e| Failure::from_serpy("", &e))?;
    let local = server.local_addr();
    if a.json {
        outln!(
            "{}",
            json!({"event": "listening", "time": now(), "addr": local.to_string(), "protocol": protocol.to_string()})
        );
    } else {
        outln!("listening on {local} ({protocol})");
    }
    let view = View {
        json: a.json,
        quiet: a.quiet,
        echo: a.echo,
        preview: a.preview,
        hex_limit: a.hex_limit,
    };
    loop {
        let conn = server
            .get_connection()
            .map_err(|e| Failure::from_serpy("the server stopped", &e))?;
        let spawned = thread::Builder::new()
            .name(format!("listen-{}", conn.id()))
            .spawn(move || serve(conn, view));
        if let Err(e) = spawned {
            crate::noteln!("cannot start a thread for a new connection: {e}");
        }
    }
}

/// Prints `event` with the connection's `conn` and `peer`, as JSON or as a line.
fn event(view: View, conn: u64, peer: &str, name: &str, fields: Value, human: String) {
    if view.json {
        let mut obj = Map::new();
        obj.insert("event".into(), json!(name));
        obj.insert("time".into(), json!(now()));
        obj.insert("conn".into(), json!(conn));
        obj.insert("peer".into(), json!(peer));
        if let Value::Object(more) = fields {
            obj.extend(more);
        }
        outln!("{}", Value::Object(obj));
    } else {
        outln!("{}#{conn} {peer}{:#} {human}", style::PEER, style::PEER);
    }
}

/// Prints and (with --echo) answers what one connection sends, until it goes.
fn serve(conn: Connection, view: View) {
    let id = conn.id();
    let peer = conn
        .peer_addr()
        .map_or_else(|| "?".to_string(), |p| p.to_string());
    event(
        view,
        id,
        &peer,
        "connected",
        json!({}),
        format!("{}connected{:#}", style::GOOD, style::GOOD),
    );

    // Events (protocol detected, protocol errors) come on their own channel; the thread
    // ends with the connection's last event, Disconnected, whose reason it hands over.
    let (reason_tx, reason_rx) = mpsc::channel::<String>();
    let events = conn.events();
    let peer_w = peer.clone();
    let _ = thread::Builder::new()
        .name(format!("listen-ev-{id}"))
        .spawn(move || {
            for ev in events.iter() {
                match ev.kind {
                    EventKind::Connected { .. } => {}
                    // The protocol is on every message line.
                    EventKind::ProtocolDetected(_) => {}
                    EventKind::ProtocolError(e) => event(
                        view,
                        id,
                        &peer_w,
                        "error",
                        json!({"error": e.to_string()}),
                        format!("{}protocol error:{:#} {e}", style::BAD, style::BAD),
                    ),
                    EventKind::Disconnected { reason, .. } => {
                        let _ = reason_tx.send(reason);
                        break;
                    }
                    EventKind::Closed => break,
                    other => event(
                        view,
                        id,
                        &peer_w,
                        "note",
                        json!({"note": other.to_string()}),
                        other.to_string(),
                    ),
                }
            }
        });

    while let Ok((message, mode)) = conn.get_data_with_mode(None) {
        if !view.quiet {
            print_message(view, &conn, &peer, &message, mode);
        }
        if view.echo {
            if let Err(e) = echo(&conn, message, mode) {
                event(
                    view,
                    id,
                    &peer,
                    "echo_failed",
                    json!({"error": e.to_string()}),
                    format!("{}echo failed:{:#} {e}", style::BAD, style::BAD),
                );
            }
        }
    }
    // The event that says why comes on the other thread, about when the data ends.
    let reason = reason_rx.recv_timeout(Duration::from_secs(10)).ok();
    let human = match &reason {
        Some(r) => format!("disconnected: {r}"),
        None => "disconnected".to_string(),
    };
    event(
        view,
        id,
        &peer,
        "disconnected",
        json!({"reason": reason}),
        human,
    );
}

fn print_message(view: View, conn: &Connection, peer: &str, message: &Message, mode: Option<Mode>) {
    let protocol = if mode.is_some() { "v1" } else { "v2" };
    let mut fields = Map::new();
    fields.insert("protocol".into(), json!(protocol));
    fields.insert("mode".into(), json!(mode.map(u8::from)));
    if view.json {
        render::json_fields(message, view.hex_limit, &mut fields);
        event(
            view,
            conn.id(),
            peer,
            "message",
            Value::Object(fields),
            String::new(),
        );
        return;
    }
    let mode = mode.map_or(String::new(), |m| format!(" mode {m}"));
    let size = match message {
        Message::Int(_) | Message::Float(_) => String::new(),
        m => format!(" {}", render::size(m.len())),
    };
    let human = format!(
        "{}{protocol}{mode} {}{size}{:#} {}",
        style::KIND,
        message.kind(),
        style::KIND,
        render::human(message, view.preview)
    );
    event(view, conn.id(), peer, "message", Value::Null, human);
}

/// Sends `message` back as it came: in its v1 mode (text that arrived raw goes back raw)
/// or as the same v2 type.
fn echo(conn: &Connection, message: Message, mode: Option<Mode>) -> serpy::Result<()> {
    let Some(mode) = mode else {
        return conn.send(message);
    };
    let message = match message {
        // Bytes would go out as base85; raw text goes back raw, byte for byte.
        Message::Bytes(b) if !mode.is_base85() => match Text::from_utf8(b.clone()) {
            Ok(t) => Message::Text(t),
            Err(_) => Message::Bytes(b),
        },
        other => other,
    };
    conn.send_data_timeout(message, mode, Duration::from_secs(10))
}

#[cfg(test)]
mod tests {
    /// The schema in `--help` and in cli/README.md are the same text.
    #[test]
    fn the_readme_shows_the_json_schema_of_the_help() {
        let readme = include_str!("../README.md");
        for line in json_schema!().lines() {
            assert!(
                readme.contains(line),
                "cli/README.md lacks the schema line {line:?}"
            );
        }
    }
}
