//! `serpy dump`: a transparent proxy that prints what each side sends, decoded.
//!
//! Each accepted client gets a connection to the target and two threads, one per
//! direction. A thread reads from one socket, writes exactly those bytes to the other,
//! and feeds the same bytes to the library's pure decoder of that direction
//! ([`serpy::protocol::v1::Decoder`] or [`serpy::protocol::v2::Decoder`]); printing
//! never changes what is forwarded.
//!
//! Copies: a v1 direction reads into one buffer, forwards it and decodes it in place
//! (the decoder keeps only a block that spans reads, and the base85 it decodes). A v2
//! direction reads with [`serpy::protocol::v2::Decoder::read_from`] through a reader
//! that forwards what it reads, so the bytes of a large frame go from the socket into
//! the frame's own buffer, from which they are forwarded and checked: no copy at all.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::Duration;

use clap::Args;
use serde_json::{json, Map, Value};
use serpy::protocol::{detect, v1, v2, Detection, Frame};
use serpy::{Message, Mode, Protocol, ProtocolError};

use crate::out::{style, CmdResult, Failure};
use crate::render;
use crate::{noteln, outln, parse_addr, parse_size, ProtocolArg};

/// The `--json` schema of dump as a literal, for `--help` (cli/README.md shows the same text).
macro_rules! dump_json_schema {
    () => {
        "JSON output (--json): one object per line, keys in alphabetical order. Every object has
\"event\", \"time\" (seconds since 1970-01-01 UTC) and, except \"listening\", \"conn\" (the
connection's number). The items of one direction (all but listening, open,
target_unreachable, refused and closed) have \"dir\" (\"c>s\" or \"s>c\"), and all of them
but end have \"protocol\" (\"v1\", \"v2\", or \"--\" while it is not known).
  listening          \"addr\" (the bound address, always the first line), \"target\", \"protocol\"
  open               \"client\", \"target\"
  target_unreachable \"client\", \"target\", \"error\"
  refused            \"reason\" (too many connections)
  message            the fields of `serpy listen --json` (\"mode\", \"kind\", \"size\", \"value\",
                     \"hex\", \"truncated\"); v2 also \"type_code\", \"frame_len\" (as in the
                     header), \"checksum\": \"ok\", \"resynchronised\" (garbage came before it)
  control            v1: \"control\": \"SETMODE\"|\"ACKMODCG\"|\"ACKEOT!!\", \"mode\" (SETMODE) or null
  garbage            v2: \"skipped\": bytes that are not a frame, skipped up to the next magic
  error              \"error\": \"bad_checksum\" (with \"expected\", \"computed\"), \"unknown_type\",
                     \"bad_int\", \"bad_float\", \"invalid_utf8\", \"too_large\", \"unknown_control\",
                     \"bad_setmode\", \"bad_base85\" or \"other\"; \"detail\" in words; v2 frame
                     errors also \"type_code\", \"frame_len\", \"resynchronised\"
  unfinished         \"bytes\" held of a message cut by the end of the stream
  end                \"bytes\" that went this way, \"error\": why it ended, or null (end of stream)
  closed             both directions ended (the connection's last line)
New fields may be added; existing ones keep their name, type and meaning."
    };
}

/// A transparent proxy that prints what each side sends, decoded.
///
/// v1 blocks and control blocks, base85 decoded, v2 frames with type, length and checksum
/// verdict, garbage and resynchronisation; the bytes are forwarded unchanged.
#[derive(Args, Debug)]
#[command(after_help = concat!(
    "Point the client at LISTEN instead of at the target: every byte is forwarded unchanged
in both directions, and each side's traffic is printed as it is decoded, one line per
item, `#N` being the connection and `c>s` / `s>c` the direction:

  #1 open 127.0.0.1:40312 -> 127.0.0.1:8000
  #1 c>s v1 SETMODE1
  #1 s>c v1 ACKMODCG
  #1 c>s v1 data mode 1, 5 B: \"hello\"
  #1 s>c v1 ACKEOT!!
  #1 c>s v1 data mode 2 (base85), 3 B: 00 1f ff |...|
  #1 c>s v2 frame bytes (0x81), 1.0 MiB, checksum ok: 00 01 02 03 |....| …
  #1 c>s v2 garbage: 4 bytes that are not a frame were skipped
  #1 c>s v2 resynchronised: frame int (0x01), 8 B, checksum ok: 42
  #1 c>s v2 frame text (0x21), 5 B: bad checksum: header says 0x00000210, payload sums
         to 0x00000214; the receiver drops the frame
  #1 c>s end of stream after 1048640 bytes
  #1 closed

With --protocol auto, the first bytes of a connection tell v1 from v2 (as a serpy server
does). Messages above --max-size are reported and not decoded, but still forwarded.

Examples:
  serpy dump 9000 127.0.0.1:8000            # then point the client at 127.0.0.1:9000
  serpy dump 0 192.168.1.20:8000 --once     # any free port (first line), one connection
  serpy dump 9000 8000 --protocol v2 --preview 64
  serpy dump 9000 8000 --json | jq -c 'select(.event == \"error\")'

", dump_json_schema!(), "

", crate::exit_codes_help!()))]
pub struct DumpArgs {
    /// Where to listen for the client: HOST:PORT, or PORT for 127.0.0.1:PORT (0: any free port).
    #[arg(value_parser = parse_addr)]
    pub listen: SocketAddr,
    /// Where to forward to: the real server.
    #[arg(value_parser = parse_addr)]
    pub target: SocketAddr,
    /// The protocol to decode; auto tells v1 and v2 apart by the first bytes.
    #[arg(short, long, value_enum, default_value_t = ProtocolArg::Auto)]
    pub protocol: ProtocolArg,
    /// Characters of text and bytes of binary payloads shown per line.
    #[arg(long, value_name = "N", default_value_t = render::DEFAULT_PREVIEW)]
    pub preview: usize,
    /// Largest message decoded (larger ones are reported and forwarded undecoded).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "64M")]
    pub max_size: usize,
    /// Seconds to wait for the target to accept a connection.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub connect_timeout: u64,
    /// Serve one connection, then exit.
    #[arg(long)]
    pub once: bool,
    /// One JSON object per line (schema in `--help`).
    #[arg(long)]
    pub json: bool,
    /// Bytes of payload given in the JSON field "hex" (0: all).
    #[arg(long, value_name = "BYTES", default_value_t = 64)]
    pub hex_limit: usize,
    /// Most connections proxied at once; more are closed at once, with a line that says so.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_connections: u32,
}

#[derive(Clone, Copy)]
struct Opts {
    target: SocketAddr,
    protocol: Protocol,
    preview: usize,
    max_size: usize,
    connect_timeout: Duration,
    once: bool,
    json: bool,
    hex_limit: usize,
}

/// Runs `serpy dump`.
pub fn run(a: DumpArgs) -> CmdResult {
    let listener = TcpListener::bind(a.listen).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            Failure::connect(format!(
                "cannot listen on {}: the port is already in use; choose another port (port 0 picks a free one) or stop the program that holds it",
                a.listen
            ))
        } else {
            Failure::connect(format!("cannot listen on {}: {e}", a.listen))
        }
    })?;
    let local = listener
        .local_addr()
        .map_err(|e| Failure::connect(format!("cannot read the bound address: {e}")))?;
    let opts = Opts {
        target: a.target,
        protocol: a.protocol.into(),
        preview: a.preview,
        max_size: a.max_size,
        connect_timeout: Duration::from_secs(a.connect_timeout.max(1)),
        once: a.once,
        json: a.json,
        hex_limit: a.hex_limit,
    };
    if opts.json {
        outln!(
            "{}",
            json!({"event": "listening", "time": render::now(), "addr": local.to_string(),
                   "target": a.target.to_string(), "protocol": opts.protocol.to_string()})
        );
    } else {
        outln!(
            "dump: listening on {local}, forwarding to {} ({})",
            a.target,
            opts.protocol
        );
    }
    let mut n = 0u64;
    let active = Arc::new(AtomicU32::new(0));
    let mut last_error = String::new();
    for client in listener.incoming() {
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors, say: the same error again and again is said once,
                // and the loop waits a little instead of spinning on it.
                let text = e.to_string();
                if text != last_error {
                    noteln!("dump: accepting a connection failed: {text}");
                    last_error = text;
                }
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        last_error.clear();
        n += 1;
        if a.once {
            return session(n, client, opts);
        }
        if active.load(Ordering::Acquire) >= a.max_connections {
            let max = a.max_connections;
            emit(
                opts.json,
                n,
                None,
                "refused",
                json!({"reason": format!("{max} connections are proxied already (--max-connections)")}),
                || {
                    format!(
                        "{}refused: {max} connections are proxied already (--max-connections){:#}",
                        style::BAD,
                        style::BAD
                    )
                },
            );
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        active.fetch_add(1, Ordering::AcqRel);
        let done = active.clone();
        let spawned = thread::Builder::new()
            .name(format!("dump-{n}"))
            .spawn(move || {
                let _ = session(n, client, opts);
                done.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(e) = spawned {
            active.fetch_sub(1, Ordering::AcqRel);
            noteln!("dump: cannot start a thread for connection #{n}: {e}");
        }
    }
    Ok(())
}

/// Proxies one client until both directions have ended.
fn session(n: u64, client: TcpStream, opts: Opts) -> CmdResult {
    let peer = client
        .peer_addr()
        .map_or_else(|_| "?".to_string(), |p| p.to_string());
    let server = match TcpStream::connect_timeout(&opts.target, opts.connect_timeout) {
        Ok(s) => s,
        Err(e) => {
            let _ = client.shutdown(Shutdown::Both);
            let f = Failure::connect(format!(
                "#{n}: cannot connect to the target {}: {e}; the client {peer} was disconnected. Check that a server listens there",
                opts.target
            ));
            emit(
                opts.json,
                n,
                None,
                "target_unreachable",
                json!({"client": peer, "target": opts.target.to_string(), "error": e.to_string()}),
                || {
                    format!(
                        "{}cannot connect to the target {}: {e}{:#}",
                        style::BAD,
                        opts.target,
                        style::BAD
                    )
                },
            );
            // With --once the error ends the program, which prints it; otherwise say it here.
            if !opts.once {
                noteln!("error: {f}");
            }
            return Err(f);
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    emit(
        opts.json,
        n,
        None,
        "open",
        json!({"client": peer, "target": opts.target.to_string()}),
        || format!("open {peer} -> {}", opts.target),
    );

    let decided = Arc::new(OnceLock::new());
    if opts.protocol != Protocol::Auto {
        let _ = decided.set(opts.protocol);
    }
    let clones = (client.try_clone(), server.try_clone());
    let (Ok(client2), Ok(server2)) = clones else {
        return Err(Failure::connect(format!(
            "#{n}: cannot share the sockets between threads"
        )));
    };
    let up = Direction {
        n,
        label: "c>s",
        src: client,
        dst: server,
        decided: decided.clone(),
        opts,
    };
    let down = Direction {
        n,
        label: "s>c",
        src: server2,
        dst: client2,
        decided,
        opts,
    };
    let handle = thread::Builder::new()
        .name(format!("dump-{n}-s>c"))
        .spawn(move || down.run());
    up.run();
    if let Ok(h) = handle {
        let _ = h.join();
    }
    emit(opts.json, n, None, "closed", json!({}), || "closed".into());
    Ok(())
}

/// One direction of a proxied connection.
struct Direction {
    n: u64,
    label: &'static str,
    src: TcpStream,
    dst: TcpStream,
    /// The protocol of the connection, once the first direction to see bytes has told.
    decided: Arc<OnceLock<Protocol>>,
    opts: Opts,
}

enum Dec {
    V1(v1::Decoder),
    V2(v2::Decoder),
}

/// Reads from `src` and writes what it read to `dst` (and shows it to `headers`)
/// before handing it on.
struct Tee<'a> {
    src: &'a TcpStream,
    dst: &'a TcpStream,
    headers: &'a mut Headers,
    write_failed: bool,
}

impl Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (&*self.src).read(buf)?;
        if let Err(e) = (&*self.dst).write_all(&buf[..n]) {
            self.write_failed = true;
            return Err(e);
        }
        self.headers.feed(&buf[..n]);
        Ok(n)
    }
}

/// The header fields of one v2 frame.
#[derive(Clone, Copy, Debug)]
struct Header {
    code: u8,
    len: u32,
}

/// Follows the v2 framing of the bytes as they pass, without keeping any payload, to
/// tell the type code and length of every frame: the decoder's [`Frame`]s carry the
/// message, not its header, and its errors (a bad checksum, an unknown type) name no
/// frame. It skips garbage up to the next magic and skips each header's length, as the
/// decoder does, so the n-th header it finds is the n-th frame (or frame error) that the
/// decoder reports.
#[derive(Default)]
struct Headers {
    /// The magic (or the part of it seen so far) and the header bytes after it.
    held: Vec<u8>,
    /// Payload bytes still to skip.
    skip: u64,
    found: std::collections::VecDeque<Header>,
}

impl Headers {
    fn feed(&mut self, mut input: &[u8]) {
        while !input.is_empty() {
            if self.skip > 0 {
                let n = usize::try_from(self.skip).map_or(input.len(), |s| s.min(input.len()));
                self.skip -= n as u64;
                input = &input[n..];
                continue;
            }
            let b = input[0];
            input = &input[1..];
            let at = self.held.len();
            if at < v2::MAGIC.len() && b != v2::MAGIC[at] {
                // No suffix of a partial magic starts a magic again, but this byte may.
                self.held.clear();
                if b == v2::MAGIC[0] {
                    self.held.push(b);
                }
                continue;
            }
            self.held.push(b);
            if self.held.len() == v2::HEADER_LEN {
                let h = &self.held;
                let len = u32::from_le_bytes([h[10], h[11], h[12], h[13]]);
                self.found.push_back(Header { code: h[5], len });
                self.skip = u64::from(len);
                self.held.clear();
            }
        }
    }
}

/// The name of a v2 type code.
fn type_name(code: u8) -> &'static str {
    match code {
        v2::TYPE_INT => "int",
        v2::TYPE_FLOAT => "float",
        v2::TYPE_TEXT => "text",
        v2::TYPE_BYTES => "bytes",
        _ => "of unknown type",
    }
}

/// Prints one item of the dump: as a line `#N [DIR] TEXT` (`human` gives TEXT), or with
/// `--json` as one object: `fields` with `event`, `time`, `conn` and `dir` (where there
/// is one) added.
fn emit(
    json: bool,
    conn: u64,
    dir: Option<&str>,
    event: &str,
    fields: Value,
    human: impl FnOnce() -> String,
) {
    if json {
        let mut obj = match fields {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        obj.insert("event".into(), json!(event));
        obj.insert("time".into(), json!(render::now()));
        obj.insert("conn".into(), json!(conn));
        if let Some(dir) = dir {
            obj.insert("dir".into(), json!(dir));
        }
        outln!("{}", Value::Object(obj));
    } else {
        match dir {
            Some(dir) => outln!("{}#{conn} {dir}{:#} {}", style::PEER, style::PEER, human()),
            None => outln!("{}#{conn}{:#} {}", style::PEER, style::PEER, human()),
        }
    }
}

/// What a direction's printer remembers between frames.
struct Printer {
    n: u64,
    label: &'static str,
    preview: usize,
    hex_limit: usize,
    json: bool,
    /// Garbage was skipped since the last good frame.
    after_garbage: bool,
    /// The headers of the v2 frames seen and not reported yet.
    headers: Headers,
}

impl Printer {
    /// Prints an item of this direction: `protocol` and `text` on a line, or `fields`.
    fn item(
        &self,
        protocol: &str,
        event: &str,
        mut fields: Map<String, Value>,
        text: impl FnOnce() -> String,
    ) {
        fields.insert("protocol".into(), json!(protocol));
        emit(
            self.json,
            self.n,
            Some(self.label),
            event,
            Value::Object(fields),
            || format!("{}{protocol}{:#} {}", style::KIND, style::KIND, text()),
        );
    }

    fn frame(&mut self, frame: Frame, v2: bool) {
        let control = |name: &str, mode: Option<Mode>| {
            let mut f = Map::new();
            f.insert("control".into(), json!(name));
            f.insert("mode".into(), json!(mode.map(u8::from)));
            f
        };
        match frame {
            Frame::Data {
                message,
                mode: Some(mode),
            } => self.v1_data(&message, mode),
            Frame::Data {
                message,
                mode: None,
            } => self.v2_data(&message),
            Frame::SetMode(m) => self.item("v1", "control", control("SETMODE", Some(m)), || {
                format!("{}SETMODE{m}{:#}", style::CONTROL, style::CONTROL)
            }),
            Frame::AckModeChange => self.item("v1", "control", control("ACKMODCG", None), || {
                format!("{}ACKMODCG{:#}", style::CONTROL, style::CONTROL)
            }),
            Frame::AckEot => self.item("v1", "control", control("ACKEOT!!", None), || {
                format!("{}ACKEOT!!{:#}", style::CONTROL, style::CONTROL)
            }),
            Frame::Error(e) => self.error(&e, v2),
            // A kind of frame this tool does not know yet: shown, not dropped.
            other => {
                let text = format!("{other:?}");
                let mut f = Map::new();
                f.insert("note".into(), json!(text));
                self.item(if v2 { "v2" } else { "v1" }, "note", f, || text.clone())
            }
        }
    }

    fn message_fields(&self, message: &Message, mode: Option<Mode>) -> Map<String, Value> {
        let mut f = Map::new();
        if self.json {
            f.insert("mode".into(), json!(mode.map(u8::from)));
            render::json_fields(message, self.hex_limit, &mut f);
        }
        f
    }

    fn v1_data(&mut self, message: &Message, mode: Mode) {
        let how = match u8::from(mode) {
            0 | 1 => "",
            2 | 3 => " (base85)",
            _ => " (base85 pickle)",
        };
        let fields = self.message_fields(message, Some(mode));
        self.item("v1", "message", fields, || {
            format!(
                "data mode {mode}{how}, {}: {}",
                render::size(message.len()),
                render::human(message, self.preview)
            )
        });
    }

    /// The header of the frame the decoder reports now: its fields for JSON, and
    /// "TYPE (0xCODE), LEN" for a line.
    fn next_header(&mut self) -> (Map<String, Value>, String) {
        let resync = std::mem::take(&mut self.after_garbage);
        let mut f = Map::new();
        f.insert("resynchronised".into(), json!(resync));
        let text = match self.headers.found.pop_front() {
            Some(h) => {
                f.insert("type_code".into(), json!(h.code));
                f.insert("frame_len".into(), json!(h.len));
                format!(
                    "{} ({:#04x}), {}",
                    type_name(h.code),
                    h.code,
                    render::size(h.len as usize)
                )
            }
            None => "(header not seen)".to_string(),
        };
        let resync = if resync { "resynchronised: " } else { "" };
        (f, format!("{resync}frame {text}"))
    }

    fn v2_data(&mut self, message: &Message) {
        let (mut fields, header) = self.next_header();
        fields.insert("checksum".into(), json!("ok"));
        fields.extend(self.message_fields(message, None));
        self.item("v2", "message", fields, || {
            format!(
                "{header}, {}checksum ok{:#}: {}",
                style::GOOD,
                style::GOOD,
                render::human(message, self.preview)
            )
        });
    }

    fn error(&mut self, e: &ProtocolError, v2: bool) {
        if let ProtocolError::BadMagic { skipped } = e {
            self.after_garbage = true;
            let mut f = Map::new();
            f.insert("skipped".into(), json!(skipped));
            return self.item("v2", "garbage", f, || {
                format!(
                    "{}garbage: {skipped} bytes that are not a frame were skipped{:#}",
                    style::BAD,
                    style::BAD
                )
            });
        }
        // Every other v2 error is about the frame whose header comes next.
        let (mut fields, frame) = if v2 {
            let (f, text) = self.next_header();
            (f, format!("{text}: "))
        } else {
            (Map::new(), String::new())
        };
        let (protocol, kind, text) = match e {
            ProtocolError::BadChecksum { expected, computed } => {
                fields.insert("expected".into(), json!(expected));
                fields.insert("computed".into(), json!(computed));
                ("v2", "bad_checksum", format!("bad checksum: header says {expected:#010x}, payload sums to {computed:#010x}; the receiver drops the frame"))
            }
            ProtocolError::UnknownType { code } => (
                "v2",
                "unknown_type",
                format!("unknown type {code:#04x}; the receiver drops the frame"),
            ),
            ProtocolError::BadInt { len } => (
                "v2",
                "bad_int",
                format!("{len} bytes instead of 8 for an int; the receiver drops the frame"),
            ),
            ProtocolError::BadFloat { text } => (
                "v2",
                "bad_float",
                format!("{text:?} is not a hexadecimal float; the receiver drops the frame"),
            ),
            ProtocolError::InvalidUtf8 { valid_up_to } => (
                "v2",
                "invalid_utf8",
                format!("not UTF-8 (from byte {valid_up_to}); the receiver drops the frame"),
            ),
            ProtocolError::TooLarge { size, max } => (
                if v2 { "v2" } else { "v1" },
                "too_large",
                format!("a message of {size} bytes or more, above --max-size {max}: not decoded (forwarded all the same)"),
            ),
            ProtocolError::UnknownControl { block } => (
                "v1",
                "unknown_control",
                format!("unknown control block {block:?}; the receiver ignores it"),
            ),
            ProtocolError::BadSetMode { arg } => (
                "v1",
                "bad_setmode",
                format!("SETMODE with {arg:?}, not a mode 0 to 5; the receiver ignores it"),
            ),
            ProtocolError::BadBase85 { mode, detail } => (
                "v1",
                "bad_base85",
                format!("block in mode {mode} that is not base85 ({detail}); the receiver drops it"),
            ),
            other => ("--", "other", other.to_string()),
        };
        fields.insert("error".into(), json!(kind));
        fields.insert("detail".into(), json!(text));
        self.item(protocol, "error", fields, || {
            format!("{}{frame}{text}{:#}", style::BAD, style::BAD)
        });
    }
}

impl Direction {
    fn decoder(&self, protocol: Protocol) -> Dec {
        match protocol {
            Protocol::V2 => Dec::V2(v2::Decoder::new(self.opts.max_size)),
            _ => Dec::V1(v1::Decoder::new(self.opts.max_size)),
        }
    }

    /// Forwards and prints until the source ends or either socket fails.
    fn run(self) {
        let mut printer = Printer {
            n: self.n,
            label: self.label,
            preview: self.opts.preview,
            hex_limit: self.opts.hex_limit,
            json: self.opts.json,
            after_garbage: false,
            headers: Headers::default(),
        };
        let mut buf = vec![0u8; 256 * 1024];
        let mut pending: Vec<u8> = Vec::new();
        let mut decoder: Option<Dec> = None;
        let mut frames = Vec::new();
        let mut total: u64 = 0;
        let ended = loop {
            if decoder.is_none() {
                if let Some(&p) = self.decided.get() {
                    let mut d = self.decoder(p);
                    feed(&mut d, &mut printer.headers, &pending, &mut frames);
                    pending = Vec::new();
                    decoder = Some(d);
                }
            }
            let step = match &mut decoder {
                Some(Dec::V2(d)) => {
                    let mut tee = Tee {
                        src: &self.src,
                        dst: &self.dst,
                        headers: &mut printer.headers,
                        write_failed: false,
                    };
                    d.read_from(&mut tee, &mut frames)
                        .map_err(|e| (tee.write_failed, e))
                }
                other => match (&self.src).read(&mut buf) {
                    Err(e) => Err((false, e)),
                    Ok(n) => match (&self.dst).write_all(&buf[..n]) {
                        Err(e) => Err((true, e)),
                        Ok(()) => {
                            let chunk = &buf[..n];
                            match other {
                                Some(d) => feed(d, &mut printer.headers, chunk, &mut frames),
                                None if n > 0 => {
                                    pending.extend_from_slice(chunk);
                                    let found = match detect(&pending) {
                                        Detection::V1 => Some(Protocol::V1),
                                        Detection::V2 => Some(Protocol::V2),
                                        // NeedMore, or a verdict this tool does not
                                        // know yet: wait for more bytes.
                                        _ => None,
                                    };
                                    if let Some(p) = found {
                                        let p = *self.decided.get_or_init(|| p);
                                        let mut d = self.decoder(p);
                                        feed(&mut d, &mut printer.headers, &pending, &mut frames);
                                        pending = Vec::new();
                                        *other = Some(d);
                                    }
                                }
                                None => {}
                            }
                            Ok(n)
                        }
                    },
                },
            };
            let v2 = matches!(decoder, Some(Dec::V2(_)));
            for f in frames.drain(..) {
                printer.frame(f, v2);
            }
            match step {
                Ok(0) => break None,
                Ok(n) => total += n as u64,
                Err((true, e)) => break Some(format!("writing to the other side failed: {e}")),
                Err((false, e)) => break Some(format!("reading failed: {e}")),
            }
        };
        let held = match &decoder {
            Some(Dec::V1(d)) => d.buffered(),
            Some(Dec::V2(d)) => d.buffered(),
            None => pending.len(),
        };
        if held > 0 {
            let protocol = match &decoder {
                Some(Dec::V1(_)) => "v1",
                Some(Dec::V2(_)) => "v2",
                None => "--",
            };
            let mut f = Map::new();
            f.insert("bytes".into(), json!(held));
            printer.item(protocol, "unfinished", f, || {
                format!(
                    "{}{held} bytes of an unfinished message at the end of the stream{:#}",
                    style::BAD,
                    style::BAD
                )
            });
        }
        let fields = json!({"bytes": total, "error": ended});
        let json = self.opts.json;
        match ended {
            None => {
                emit(json, self.n, Some(self.label), "end", fields, || {
                    format!("end of stream after {total} bytes")
                });
                let _ = self.dst.shutdown(Shutdown::Write);
            }
            Some(why) => {
                emit(json, self.n, Some(self.label), "end", fields, || {
                    format!(
                        "{}{why} after {total} bytes; closing both sides{:#}",
                        style::BAD,
                        style::BAD
                    )
                });
                let _ = self.src.shutdown(Shutdown::Both);
                let _ = self.dst.shutdown(Shutdown::Both);
            }
        }
    }
}

/// Decodes `bytes` (which were forwarded already) with `d`.
fn feed(d: &mut Dec, headers: &mut Headers, bytes: &[u8], frames: &mut Vec<Frame>) {
    match d {
        Dec::V1(d) => d.decode(bytes, frames),
        Dec::V2(d) => {
            headers.feed(bytes);
            d.decode(bytes, frames);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema in `--help` and in cli/README.md are the same text.
    #[test]
    fn the_readme_shows_the_json_schema_of_the_help() {
        let readme = include_str!("../README.md");
        for line in dump_json_schema!().lines() {
            assert!(
                readme.contains(line),
                "cli/README.md lacks the schema line {line:?}"
            );
        }
    }

    fn frame(code: u8, payload: &[u8], checksum: Option<u32>) -> Vec<u8> {
        let mut h = v2::header(code, payload).to_vec();
        if let Some(c) = checksum {
            h[6..10].copy_from_slice(&c.to_le_bytes());
        }
        h.extend_from_slice(payload);
        h
    }

    /// The tracker finds one header per frame or frame error of the decoder, in order,
    /// whatever the chunking, through garbage and partial magics.
    #[test]
    fn headers_follow_the_decoder() {
        let mut wire = b"\xde\xca\xde\xca\xfe\xca".to_vec(); // garbage with partial magics
        wire.extend(frame(v2::TYPE_TEXT, b"hello", None));
        wire.extend_from_slice(b"\xde\xca\xfe junk \xde");
        wire.extend(frame(v2::TYPE_BYTES, &[0xde; 40_000], None)); // above the maximum below
        wire.extend(frame(v2::TYPE_INT, &7i64.to_le_bytes(), Some(1)));
        wire.extend(frame(0x42, b"?", None));
        wire.extend(frame(v2::TYPE_FLOAT, b"0x1p+0", None));
        wire.extend(frame(v2::TYPE_BYTES, &[1; 100], None));
        wire.extend(frame(v2::TYPE_INT, &(-1i64).to_le_bytes(), None));
        for chunk in [1, 3, 13, 14, 4096, wire.len()] {
            let mut headers = Headers::default();
            let mut decoder = v2::Decoder::new(1000);
            let mut frames = Vec::new();
            for c in wire.chunks(chunk) {
                headers.feed(c);
                decoder.decode(c, &mut frames);
            }
            let framed: Vec<&Frame> = frames
                .iter()
                .filter(|f| !matches!(f, Frame::Error(ProtocolError::BadMagic { .. })))
                .collect();
            let found: Vec<(u8, u32)> = headers.found.iter().map(|h| (h.code, h.len)).collect();
            assert_eq!(
                found,
                [
                    (0x21, 5),
                    (0x81, 40_000),
                    (0x01, 8),
                    (0x42, 1),
                    (0x11, 6),
                    (0x81, 100),
                    (0x01, 8)
                ],
                "chunks of {chunk}"
            );
            assert_eq!(framed.len(), found.len(), "chunks of {chunk}: {frames:?}");
        }
    }

    #[derive(Debug, Clone)]
    enum Piece {
        Frame {
            code: u8,
            payload: Vec<u8>,
            good: bool,
        },
        Garbage(Vec<u8>),
    }

    fn piece() -> impl proptest::strategy::Strategy<Value = Piece> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (
                prop_oneof![Just(v2::TYPE_INT), Just(v2::TYPE_FLOAT), Just(v2::TYPE_TEXT), Just(v2::TYPE_BYTES), any::<u8>()],
                proptest::collection::vec(any::<u8>(), 0..80),
                any::<bool>(),
            )
                .prop_map(|(code, payload, good)| Piece::Frame { code, payload, good }),
            1 => proptest::collection::vec(
                prop_oneof![Just(0xDEu8), Just(0xCA), Just(0xFE), any::<u8>()],
                1..20
            )
            .prop_map(Piece::Garbage),
        ]
    }

    proptest::proptest! {
        /// Whatever the stream and its chunking, the n-th header the tracker finds is the
        /// one of the n-th frame (or frame error) the decoder reports.
        #[test]
        fn headers_match_the_decoder_on_any_stream(
            pieces in proptest::collection::vec(piece(), 0..30),
            chunk in 1usize..64,
            max in 0usize..100,
        ) {
            let mut wire = Vec::new();
            for p in &pieces {
                match p {
                    Piece::Frame { code, payload, good } => {
                        let bad = (!good).then(|| v2::checksum(payload).wrapping_add(1));
                        wire.extend(frame(*code, payload, bad));
                    }
                    Piece::Garbage(g) => wire.extend_from_slice(g),
                }
            }
            let mut headers = Headers::default();
            let mut decoder = v2::Decoder::new(max);
            let mut frames = Vec::new();
            for c in wire.chunks(chunk) {
                headers.feed(c);
                decoder.decode(c, &mut frames);
            }
            let reported: Vec<&Frame> = frames
                .iter()
                .filter(|f| !matches!(f, Frame::Error(ProtocolError::BadMagic { .. })))
                .collect();
            let found: Vec<Header> = headers.found.iter().copied().collect();
            // A frame cut by the end of the stream has a header and no report yet.
            proptest::prop_assert!(found.len() == reported.len() || found.len() == reported.len() + 1);
            for (h, f) in found.iter().zip(&reported) {
                if let Frame::Data { message, .. } = f {
                    let (code, len) = match message {
                        Message::Int(_) => (v2::TYPE_INT, Some(8)),
                        Message::Float(_) => (v2::TYPE_FLOAT, None),
                        Message::Text(t) => (v2::TYPE_TEXT, Some(t.len())),
                        other => (v2::TYPE_BYTES, Some(other.len())),
                    };
                    proptest::prop_assert_eq!(h.code, code);
                    if let Some(len) = len {
                        proptest::prop_assert_eq!(h.len as usize, len);
                    }
                }
            }
        }
    }
}
