//! serpy's benchmark: every row beside the same workload over a plain `std::net::TcpStream`
//! (4-byte length prefix, TCP_NODELAY, a `BufWriter` for the throughput rows), on
//! loopback, in one run. Run it with
//!
//! ```text
//! cargo run --release --example bench                 # the full run (a few minutes)
//! cargo run --release --example bench -- --quick      # a smoke run (under a minute)
//! cargo run --release --example bench -- --json FILE  # also write the rows as JSON
//! cargo run --release --example bench -- --only v2    # only the rows whose name has "v2"
//! ```
//!
//! What it measures (payload bytes only: MB/s are 10^6 payload bytes per second, counted
//! at the receiver, from the first send to the last message received):
//!
//! - v2 one-way throughput, 64 B to 16 MiB messages, one `send` per message; and 64 KiB
//!   messages to a receiving program that works on each for 20 µs (a busy loop, on both
//!   sides), where serpy's reader thread can read while the program works;
//! - v1 one-way throughput, mode 0 (text) and mode 2 (base85), 64 B and 64 KiB;
//! - v1 acknowledged send (mode 1, 64 B): how long each `send_data` takes, against a raw
//!   ping-pong (send 68 bytes, wait for the echo);
//! - v2 ping-pong: `send`, then `get_data` of the echo, against the same raw ping-pong;
//! - one 1 MiB frame broadcast to 10 clients (in a child process), aggregate MB/s and the
//!   bytes the sending process allocates per client per frame (a counting allocator): a
//!   copy of the payload per client would show up as at least 1 MiB;
//! - the receiving side's peak memory (VmHWM of a receiving child process, less its RSS
//!   before the stream) while 1 MiB frames stream in faster than the program reads them,
//!   against the bound incoming_capacity × message size, at a quarter of the stream and
//!   at its end;
//! - a server (a child process, measured alone) holding 1,000 connections, each after
//!   one message echoed: resident memory (VmRSS) and threads per connection, against a
//!   thread per accepted `TcpStream`.
//!
//! One-way rows of 1 MiB messages and more send the same number of messages on both
//! sides (a byte budget) after the same untimed warm-up, and are timed at the receiver
//! from the end of the warm-up; smaller ones send for a fixed time from the first send
//! (see `run_limits`).
//!
//! Every load loop stops after a number of messages or a time, whichever comes first;
//! every wait has a timeout. Only 127.0.0.1 with port 0 is used.

mod common;
// println! that ends quietly when stdout is closed (`--help | head -1`).
use common::println;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, ChildStdout, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serpy::protocol::v2;
use serpy::{Bytes, Connection, Message, Mode, Protocol, Server, Text};

// ---------------------------------------------------------------------------------------
// A counting allocator: switched on only while the broadcast row runs, so that the other
// rows pay one load of a flag per allocation and nothing else.
// ---------------------------------------------------------------------------------------

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATED: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATED.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATED.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) && new_size > layout.size() {
            ALLOCATED.fetch_add((new_size - layout.size()) as u64, Ordering::Relaxed);
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

// ---------------------------------------------------------------------------------------
// Plan: how long and how much each row runs.
// ---------------------------------------------------------------------------------------

type BoxResult<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Longest wait for any one message or reply; a row that stalls fails instead of hanging.
const WAIT: Duration = Duration::from_secs(20);
/// The end-of-stream marker of the raw rows (a length no frame has).
const RAW_END: u32 = u32::MAX;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

#[derive(Clone, Debug)]
struct Plan {
    quick: bool,
    /// Measure only serpy (`Some(true)`) or only raw (`Some(false)`), for profiling.
    side: Option<bool>,
    /// Runs of each throughput and latency measurement (serpy and raw alternate); the
    /// median run is reported.
    runs: usize,
    /// Time limit of one throughput run.
    run_time: Duration,
    /// Message limit of one throughput run.
    run_messages: u64,
    /// Byte limit of one throughput run.
    run_bytes: u64,
    /// Round trips of one latency run, and its time limit.
    round_trips: usize,
    latency_time: Duration,
    /// Broadcast: clients, frames, time limit.
    clients: usize,
    broadcast_frames: usize,
    broadcast_time: Duration,
    /// Memory: frames streamed, time limit, incoming capacity of the receiver.
    memory_frames: usize,
    memory_time: Duration,
    memory_capacity: usize,
    /// Many connections: how many, and the time limit of one side's run.
    connections: usize,
    connections_time: Duration,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                side: None,
                runs: 1,
                run_time: Duration::from_millis(250),
                run_messages: 2_000_000,
                run_bytes: 1 << 30,
                round_trips: 2_000,
                latency_time: Duration::from_millis(400),
                clients: 10,
                broadcast_frames: 40,
                broadcast_time: Duration::from_secs(3),
                memory_frames: 256,
                memory_time: Duration::from_secs(5),
                memory_capacity: 16,
                connections: 1000,
                connections_time: Duration::from_secs(60),
            }
        } else {
            Plan {
                quick,
                side: None,
                runs: 3,
                run_time: Duration::from_millis(1200),
                run_messages: 50_000_000,
                run_bytes: 16 << 30,
                round_trips: 20_000,
                latency_time: Duration::from_secs(3),
                clients: 10,
                broadcast_frames: 400,
                broadcast_time: Duration::from_secs(10),
                memory_frames: 2048,
                memory_time: Duration::from_secs(30),
                memory_capacity: 16,
                connections: 1000,
                connections_time: Duration::from_secs(60),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
struct Throughput {
    messages: u64,
    bytes: u64,
    secs: f64,
    /// CPU time of this process (every thread) over the run, in seconds.
    cpu: f64,
}

impl Throughput {
    fn msgs_per_sec(&self) -> f64 {
        self.messages as f64 / self.secs
    }
    fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / self.secs / 1e6
    }
    /// CPU time per message, in microseconds (all threads of sender and receiver).
    fn cpu_us_per_msg(&self) -> f64 {
        self.cpu * 1e6 / self.messages as f64
    }
}

/// CPU time used so far by this process, all threads, in seconds (from /proc; 0 where
/// it cannot be read).
fn process_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) end with ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat(5), here 11 and 12; ticks of 1/100 s.
    (ticks(11) + ticks(12)) / 100.0
}

#[derive(Clone, Copy, Debug)]
struct Latency {
    samples: usize,
    median_us: f64,
    p99_us: f64,
}

enum Value {
    Throughput(Throughput),
    Latency(Latency),
    Broadcast {
        t: Throughput,
        allocated_per_client_frame: Option<f64>,
    },
    Memory {
        quarter: u64,
        end: u64,
        bound: u64,
    },
    /// Resident memory and threads a server process gains per held connection.
    PerConnection {
        connections: usize,
        rss_kib: u64,
        threads: u64,
    },
}

struct Row {
    name: String,
    serpy: Value,
    raw: Value,
    note: String,
}

impl Row {
    /// serpy/raw of the row's main figure (throughput, or the median; for memory the
    /// growth at the end of the stream).
    fn ratio(&self) -> f64 {
        match (&self.serpy, &self.raw) {
            (Value::Throughput(s), Value::Throughput(r))
            | (Value::Broadcast { t: s, .. }, Value::Broadcast { t: r, .. }) => {
                s.mb_per_sec() / r.mb_per_sec()
            }
            (Value::Latency(s), Value::Latency(r)) => s.median_us / r.median_us,
            (Value::Memory { end: s, .. }, Value::Memory { end: r, .. }) => {
                *s as f64 / (*r).max(1) as f64
            }
            (Value::PerConnection { rss_kib: s, .. }, Value::PerConnection { rss_kib: r, .. }) => {
                *s as f64 / (*r).max(1) as f64
            }
            _ => f64::NAN,
        }
    }
}

fn fmt_rate(x: f64) -> String {
    if x >= 1e9 {
        format!("{:.2} G", x / 1e9)
    } else if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1} k", x / 1e3)
    } else {
        format!("{x:.1} ")
    }
}

/// Three significant digits.
fn fmt_sig(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else if x >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

fn fmt_mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB as f64)
}

fn fmt_value(v: &Value) -> String {
    match v {
        Value::Throughput(t) => format!(
            "{}msg/s {:>8.0} MB/s",
            fmt_rate(t.msgs_per_sec()),
            t.mb_per_sec()
        ),
        Value::Latency(l) => format!("med {:>6.1} µs p99 {:>6.1} µs", l.median_us, l.p99_us),
        Value::Broadcast { t, .. } => format!("{:.0} MB/s aggregate", t.mb_per_sec()),
        Value::Memory { quarter, end, .. } => {
            format!("+{} (¼: +{})", fmt_mib(*end), fmt_mib(*quarter))
        }
        Value::PerConnection {
            connections,
            rss_kib,
            threads,
        } => format!(
            "{:.1} KiB/conn, {:.2} threads/conn",
            *rss_kib as f64 / (*connections).max(1) as f64,
            *threads as f64 / (*connections).max(1) as f64
        ),
    }
}

fn size_name(size: usize) -> String {
    if size >= MIB {
        format!("{} MiB", size / MIB)
    } else if size >= KIB {
        format!("{} KiB", size / KIB)
    } else {
        format!("{size} B")
    }
}

fn print_table(rows: &[Row]) {
    let w0 = rows
        .iter()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(4);
    let cells: Vec<(String, String)> = rows
        .iter()
        .map(|r| (fmt_value(&r.serpy), fmt_value(&r.raw)))
        .collect();
    let w1 = cells.iter().map(|c| c.0.chars().count()).max().unwrap_or(5);
    let w2 = cells.iter().map(|c| c.1.chars().count()).max().unwrap_or(3);
    let pad = |s: &str, w: usize| format!("{s}{}", " ".repeat(w.saturating_sub(s.chars().count())));
    println!();
    println!(
        "{} | {} | {} | serpy/raw | notes",
        pad("row", w0),
        pad("serpy", w1),
        pad("raw TcpStream", w2)
    );
    println!(
        "{}-|-{}-|-{}-|-----------|------",
        "-".repeat(w0),
        "-".repeat(w1),
        "-".repeat(w2)
    );
    for (r, (s, raw)) in rows.iter().zip(&cells) {
        println!(
            "{} | {} | {} | {:>9.2} | {}",
            pad(&r.name, w0),
            pad(s, w1),
            pad(raw, w2),
            r.ratio(),
            r.note
        );
    }
    println!();
}

fn value_json(v: &Value) -> serde_json::Value {
    use serde_json::json;
    match v {
        Value::Throughput(t) => json!({
            "messages": t.messages, "bytes": t.bytes, "seconds": t.secs,
            "msgs_per_sec": t.msgs_per_sec(), "mb_per_sec": t.mb_per_sec(),
        }),
        Value::Latency(l) => json!({
            "samples": l.samples, "median_us": l.median_us, "p99_us": l.p99_us,
        }),
        Value::Broadcast {
            t,
            allocated_per_client_frame,
        } => json!({
            "frames_delivered": t.messages, "bytes_delivered": t.bytes, "seconds": t.secs,
            "aggregate_mb_per_sec": t.mb_per_sec(),
            "bytes_allocated_per_client_per_frame": allocated_per_client_frame,
        }),
        Value::Memory {
            quarter,
            end,
            bound,
        } => json!({
            "peak_growth_bytes_at_quarter": quarter, "peak_growth_bytes_at_end": end,
            "bound_bytes": bound,
        }),
        Value::PerConnection {
            connections,
            rss_kib,
            threads,
        } => json!({
            "connections": connections, "rss_growth_kib": rss_kib, "threads_growth": threads,
            "kib_per_connection": *rss_kib as f64 / (*connections).max(1) as f64,
        }),
    }
}

fn write_json(path: &str, plan: &Plan, machine: &Machine, rows: &[Row]) -> io::Result<()> {
    use serde_json::json;
    let rows: Vec<_> = rows
        .iter()
        .map(|r| {
            json!({
                "row": r.name, "serpy": value_json(&r.serpy), "raw": value_json(&r.raw),
                "ratio_serpy_over_raw": r.ratio(), "note": r.note,
            })
        })
        .collect();
    let doc = json!({
        "quick": plan.quick,
        "unix_time": SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        "machine": {
            "nproc": machine.nproc, "cpu": machine.cpu, "memory": machine.memory,
            "tcp_congestion_control": machine.tcp,
            "load_before": machine.load_before, "load_after": machine.load_after,
        },
        "rows": rows,
    });
    std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
}

struct Machine {
    nproc: usize,
    /// The model name, and on x86 its family and model (one name may cover several
    /// generations).
    cpu: String,
    memory: String,
    /// The kernel's TCP congestion control on Linux (`bbr` paces every socket itself,
    /// with a timer whenever a sender gets ahead of its rate), or `unknown`.
    tcp: String,
    load_before: String,
    load_after: String,
}

fn read_machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown".into());
    let field = |name: &str| {
        cpuinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    };
    let cpu = match (field("cpu family"), field("model")) {
        (Some(family), Some(model)) => format!("{cpu} (family {family}, model {model})"),
        _ => cpu,
    };
    let tcp = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let tcp = match CONGESTION.get() {
        Some(name) => format!("{name} on the benchmark's pairs (the system's: {tcp})"),
        None => tcp,
    };
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .map(|l| l.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    Machine {
        nproc: thread::available_parallelism().map_or(1, |n| n.get()),
        cpu,
        memory,
        tcp,
        load_before: loadavg(),
        load_after: String::new(),
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn median_by<T: Copy>(mut runs: Vec<T>, key: impl Fn(&T) -> f64) -> T {
    runs.sort_by(|a, b| key(a).total_cmp(&key(b)));
    runs[runs.len() / 2]
}

fn latency_of(mut samples: Vec<Duration>) -> Latency {
    samples.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    Latency {
        samples: samples.len(),
        median_us: us(samples[samples.len() / 2]),
        p99_us: us(samples[(samples.len() * 99 / 100).min(samples.len() - 1)]),
    }
}

fn payload(size: usize) -> Bytes {
    Bytes::from((0..size).map(|i| (i * 7 + 3) as u8).collect::<Vec<u8>>())
}

fn text_payload(size: usize) -> Text {
    Text::from("x".repeat(size))
}

/// `--congestion-control NAME`: the TCP congestion control of the sockets of the pairs
/// below (serpy's and raw's alike), instead of the system's.
static CONGESTION: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// A serpy server on 127.0.0.1:0 and a client connected to it, with the server's side.
fn serpy_pair(
    protocol: Protocol,
    incoming_capacity: usize,
) -> BoxResult<(Server, Connection, Connection)> {
    let mut server = Server::builder()
        .protocol(protocol)
        .incoming_capacity(incoming_capacity);
    let mut client = Connection::builder()
        .protocol(protocol)
        .incoming_capacity(incoming_capacity);
    if let Some(name) = CONGESTION.get() {
        server = server.congestion_control(name.as_str());
        client = client.congestion_control(name.as_str());
    }
    let server = server.bind("127.0.0.1:0")?;
    let client = client.connect(server.local_addr())?;
    let peer = server.get_connection_timeout(WAIT)?;
    Ok((server, client, peer))
}

/// A raw TCP pair on loopback with TCP_NODELAY on both ends.
fn raw_pair() -> io::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;
    for s in [&client, &server] {
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(WAIT))?;
        if let Some(name) = CONGESTION.get() {
            #[cfg(any(target_os = "linux", target_os = "freebsd"))]
            socket2::SockRef::from(s).set_tcp_congestion(name.as_bytes())?;
            #[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("no per-socket congestion control here ({name})"),
            ));
        }
    }
    Ok((client, server))
}

/// Incoming queue capacity for throughput rows: the default (1024) for small messages,
/// fewer for large ones so that a full queue stays below 256 MiB.
fn capacity_for(size: usize) -> usize {
    ((256 * MIB) / size).clamp(16, serpy::DEFAULT_QUEUE_CAPACITY)
}

/// Reads raw frames (4-byte little-endian length, payload) into one reused buffer until
/// the end marker; returns (messages, payload bytes, when the last one arrived).
fn raw_receive(stream: TcpStream) -> io::Result<(u64, u64, Instant)> {
    raw_receive_after(stream, 0, Duration::ZERO).map(|(m, b, _, end)| (m, b, end))
}

/// [`raw_receive`] that counts only what follows the first `warm` messages: returns
/// (messages, payload bytes, the [`Mark`] when the last warm-up message arrived, if any,
/// when the last one arrived).
fn raw_receive_after(stream: TcpStream, warm: u64, work: Duration) -> io::Result<Received> {
    let mut r = BufReader::with_capacity(64 * KIB, stream);
    let mut buf = Vec::new();
    let mut count = Counter::new(warm, work);
    loop {
        let mut len = [0u8; 4];
        r.read_exact(&mut len)?;
        let len = u32::from_le_bytes(len);
        if len == RAW_END {
            return Ok((count.messages, count.bytes, count.mark, Instant::now()));
        }
        buf.resize(len as usize, 0);
        r.read_exact(&mut buf)?;
        count.add(u64::from(len));
    }
}

/// What a receiver counted after the warm-up: messages, payload bytes, the end of the
/// warm-up (if there was one), the arrival of the last message.
type Received = (u64, u64, Option<Mark>, Instant);

/// When a run's timing starts at its receiver: the instant and the process's CPU time.
#[derive(Clone, Copy, Debug)]
struct Mark {
    at: Instant,
    cpu: f64,
}

impl Mark {
    fn now() -> Mark {
        Mark {
            at: Instant::now(),
            cpu: process_cpu(),
        }
    }
}

/// A receiver's count of the messages after the first `warm`, which it takes as the
/// warm-up: the [`Mark`] is set when the last of those arrives. With `work`, the
/// receiver then works on each message that long (a busy loop: the program's own
/// processing, the same for serpy and raw).
struct Counter {
    warm: u64,
    work: Duration,
    messages: u64,
    bytes: u64,
    mark: Option<Mark>,
}

impl Counter {
    fn new(warm: u64, work: Duration) -> Counter {
        Counter {
            warm,
            work,
            messages: 0,
            bytes: 0,
            mark: None,
        }
    }

    fn add(&mut self, len: u64) {
        if !self.work.is_zero() {
            let start = Instant::now();
            while start.elapsed() < self.work {
                std::hint::spin_loop();
            }
        }
        if self.warm > 0 {
            self.warm -= 1;
            if self.warm == 0 {
                self.mark = Some(Mark::now());
            }
        } else {
            self.messages += 1;
            self.bytes += len;
        }
    }
}

// ---------------------------------------------------------------------------------------
// One-way throughput
// ---------------------------------------------------------------------------------------

/// Messages of this size and more are sent in runs of a fixed number, the same for serpy
/// and raw, after a warm-up that is not timed (see [`run_limits`]).
const FIXED_FROM: usize = MIB;

/// How one throughput run goes: `warm` messages first (not timed, not counted), then
/// `count` more, or fewer if `time` runs out first (checked every `step` messages).
#[derive(Clone, Copy, Debug)]
struct RunLimits {
    warm: u64,
    count: u64,
    time: Duration,
    step: u64,
}

/// Below [`FIXED_FROM`] a run sends for `run_time` (or up to its message and byte
/// limits), timed from the first send. From [`FIXED_FROM`] on, a run is a few hundred
/// messages, so its length would depend on when the 64-message clock check falls and its
/// time on how fast each side warms up (serpy's queues, its pool of payload buffers, the
/// sockets' buffers); both sides send the same number of messages (a byte budget: 4 GiB,
/// `--quick` 512 MiB) after the same warm-up (256 MiB, `--quick` 64 MiB, at least 4
/// messages), timed at the receiver from the arrival of the last warm-up message to the
/// arrival of the last message; the time limit is only an upper bound (ten times
/// `run_time`), checked every message.
fn run_limits(plan: &Plan, size: usize) -> RunLimits {
    let size = size as u64;
    if size < FIXED_FROM as u64 {
        return RunLimits {
            warm: 0,
            count: plan.run_messages.min(plan.run_bytes / size).max(4),
            time: plan.run_time,
            step: 64,
        };
    }
    let (warm, budget) = if plan.quick {
        (64 << 20, 512 << 20)
    } else {
        (256 << 20, 4 << 30)
    };
    RunLimits {
        warm: (warm / size).max(4),
        count: (budget / size).max(8),
        time: plan.run_time * 10,
        step: 1,
    }
}

/// The throughput of a run that began at `start` (the sender's first send, with the CPU
/// time then) or at the receiver's `mark`, when there was a warm-up.
fn timed(
    messages: u64,
    bytes: u64,
    start: Mark,
    mark: Option<Mark>,
    end: Instant,
    cpu_end: f64,
) -> Throughput {
    let from = mark.unwrap_or(start);
    Throughput {
        messages,
        bytes,
        secs: (end - from.at).as_secs_f64(),
        cpu: cpu_end - from.cpu,
    }
}

fn raw_oneway(plan: &Plan, size: usize, work: Duration) -> BoxResult<Throughput> {
    let limits = run_limits(plan, size);
    let (client, server) = raw_pair()?;
    let warm = limits.warm;
    let receiver = thread::spawn(move || raw_receive_after(server, warm, work));
    let data = payload(size);
    let start = Mark::now();
    let deadline = start.at + limits.time;
    let mut w = BufWriter::with_capacity(64 * KIB, client);
    let mut sent = 0u64;
    let n = limits.warm + limits.count;
    while sent < n && (sent % limits.step != 0 || Instant::now() < deadline) {
        w.write_all(&(size as u32).to_le_bytes())?;
        w.write_all(&data)?;
        sent += 1;
    }
    w.write_all(&RAW_END.to_le_bytes())?;
    w.flush()?;
    let (messages, bytes, mark, end) = receiver.join().map_err(|_| "raw receiver panicked")??;
    assert_eq!(
        messages,
        sent.saturating_sub(limits.warm),
        "raw: every message arrives"
    );
    Ok(timed(messages, bytes, start, mark, end, process_cpu()))
}

/// serpy one-way: the client sends `message` (of `size` payload bytes) in `mode`, the
/// server's side counts with `get_data`; a message of another length ends the stream.
fn serpy_oneway(
    plan: &Plan,
    protocol: Protocol,
    mode: Mode,
    message: Message,
    size: usize,
    work: Duration,
) -> BoxResult<Throughput> {
    let limits = run_limits(plan, size);
    let (_server, client, peer) = serpy_pair(protocol, capacity_for(size))?;
    let warm = limits.warm;
    let receiver = thread::spawn(move || -> serpy::Result<Received> {
        let mut count = Counter::new(warm, work);
        loop {
            let m = peer.get_data_timeout(WAIT)?;
            if m.len() != size {
                return Ok((count.messages, count.bytes, count.mark, Instant::now()));
            }
            count.add(m.len() as u64);
        }
    });
    let start = Mark::now();
    let deadline = start.at + limits.time;
    let mut sent = 0u64;
    let n = limits.warm + limits.count;
    while sent < n && (sent % limits.step != 0 || Instant::now() < deadline) {
        client.send_data(message.clone(), mode)?;
        sent += 1;
    }
    client.send_data("end", Mode::Plain)?;
    let (messages, bytes, mark, end) = receiver.join().map_err(|_| "receiver panicked")??;
    let cpu_end = process_cpu();
    assert_eq!(
        messages,
        sent.saturating_sub(limits.warm),
        "serpy: every message arrives"
    );
    client.close();
    Ok(timed(messages, bytes, start, mark, end, cpu_end))
}

fn throughput_row(
    plan: &Plan,
    name: String,
    size: usize,
    work: Duration,
    serpy: impl Fn() -> BoxResult<Throughput>,
) -> BoxResult<Row> {
    let (mut s, mut r) = (Vec::new(), Vec::new());
    for _ in 0..plan.runs {
        if plan.side != Some(true) {
            r.push(raw_oneway(plan, size, work)?);
        }
        if plan.side != Some(false) {
            s.push(serpy()?);
        }
    }
    let none = Throughput {
        messages: 0,
        bytes: 0,
        secs: f64::NAN,
        cpu: f64::NAN,
    };
    for v in [&mut s, &mut r] {
        if v.is_empty() {
            v.push(none);
        }
    }
    let s = median_by(s, Throughput::mb_per_sec);
    let r = median_by(r, Throughput::mb_per_sec);
    Ok(Row {
        name,
        serpy: Value::Throughput(s),
        raw: Value::Throughput(r),
        note: format!(
            "CPU {} µs/msg vs {} ({:.1}×); {} msgs",
            fmt_sig(s.cpu_us_per_msg()),
            fmt_sig(r.cpu_us_per_msg()),
            s.cpu_us_per_msg() / r.cpu_us_per_msg(),
            s.messages
        ),
    })
}

// ---------------------------------------------------------------------------------------
// Latency
// ---------------------------------------------------------------------------------------

const PING: usize = 64;

fn latency_loop(plan: &Plan, mut one: impl FnMut() -> BoxResult<()>) -> BoxResult<Latency> {
    for _ in 0..(plan.round_trips / 20).max(10) {
        one()?; // warm-up
    }
    let mut samples = Vec::with_capacity(plan.round_trips);
    let start = Instant::now();
    while samples.len() < plan.round_trips && start.elapsed() < plan.latency_time {
        let t = Instant::now();
        one()?;
        samples.push(t.elapsed());
    }
    Ok(latency_of(samples))
}

fn raw_ping_pong(plan: &Plan) -> BoxResult<Latency> {
    let (mut client, server) = raw_pair()?;
    let echo = thread::spawn(move || -> io::Result<()> {
        let mut w = server.try_clone()?;
        let mut r = BufReader::new(server);
        let mut frame = [0u8; 4 + PING];
        loop {
            let mut len = [0u8; 4];
            r.read_exact(&mut len)?;
            if u32::from_le_bytes(len) == RAW_END {
                return Ok(());
            }
            frame[..4].copy_from_slice(&len);
            r.read_exact(&mut frame[4..])?;
            w.write_all(&frame)?;
        }
    });
    let mut frame = vec![7u8; 4 + PING];
    frame[..4].copy_from_slice(&(PING as u32).to_le_bytes());
    let mut r = BufReader::new(client.try_clone()?);
    let mut back = [0u8; 4 + PING];
    let lat = latency_loop(plan, || {
        client.write_all(&frame)?;
        r.read_exact(&mut back[..4])?;
        r.read_exact(&mut back[4..])?;
        Ok(())
    })?;
    client.write_all(&RAW_END.to_le_bytes())?;
    echo.join().map_err(|_| "echo panicked")??;
    Ok(lat)
}

fn serpy_acked(plan: &Plan) -> BoxResult<Latency> {
    let (_server, client, peer) = serpy_pair(Protocol::V1, serpy::DEFAULT_QUEUE_CAPACITY)?;
    let drain = thread::spawn(move || -> serpy::Result<u64> {
        let mut n = 0;
        loop {
            if peer.get_data_timeout(WAIT)?.len() != PING {
                return Ok(n);
            }
            n += 1;
        }
    });
    let msg = Message::Text(text_payload(PING));
    let lat = latency_loop(plan, || Ok(client.send_data(msg.clone(), Mode::PlainAck)?))?;
    client.send_data("end", Mode::Plain)?;
    drain.join().map_err(|_| "drain panicked")??;
    client.close();
    Ok(lat)
}

fn serpy_ping_pong(plan: &Plan) -> BoxResult<Latency> {
    let (_server, client, peer) = serpy_pair(Protocol::V2, serpy::DEFAULT_QUEUE_CAPACITY)?;
    let echo = thread::spawn(move || -> serpy::Result<()> {
        loop {
            let m = peer.get_data_timeout(WAIT)?;
            if m.len() != PING {
                return Ok(());
            }
            peer.send(m)?;
        }
    });
    let msg = Message::Bytes(payload(PING));
    let lat = latency_loop(plan, || {
        client.send(msg.clone())?;
        client.get_data_timeout(WAIT)?;
        Ok(())
    })?;
    client.send("end")?;
    echo.join().map_err(|_| "echo panicked")??;
    client.close();
    Ok(lat)
}

fn latency_row(
    plan: &Plan,
    name: &str,
    serpy: impl Fn(&Plan) -> BoxResult<Latency>,
) -> BoxResult<Row> {
    let (mut s, mut r) = (Vec::new(), Vec::new());
    for _ in 0..plan.runs {
        if plan.side != Some(true) {
            r.push(raw_ping_pong(plan)?);
        }
        if plan.side != Some(false) {
            s.push(serpy(plan)?);
        }
    }
    let none = Latency {
        samples: 0,
        median_us: f64::NAN,
        p99_us: f64::NAN,
    };
    for v in [&mut s, &mut r] {
        if v.is_empty() {
            v.push(none);
        }
    }
    let s = median_by(s, |l| l.median_us);
    let r = median_by(r, |l| l.median_us);
    Ok(Row {
        name: name.into(),
        note: format!(
            "p99 ratio {:.2}; {} round trips",
            s.p99_us / r.p99_us,
            s.samples
        ),
        serpy: Value::Latency(s),
        raw: Value::Latency(r),
    })
}

// ---------------------------------------------------------------------------------------
// Child processes: broadcast receivers and the memory receiver
// ---------------------------------------------------------------------------------------

fn spawn_child(args: &[String]) -> BoxResult<(Child, BufReader<ChildStdout>)> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--child")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let out = BufReader::new(child.stdout.take().ok_or("no child stdout")?);
    Ok((child, out))
}

/// The next line the child prints (it ends on its own timeouts, so this cannot hang).
fn child_line(out: &mut BufReader<ChildStdout>) -> BoxResult<String> {
    let mut line = String::new();
    if out.read_line(&mut line)? == 0 {
        return Err("the child process ended early".into());
    }
    Ok(line.trim().to_string())
}

fn finish_child(mut child: Child) -> BoxResult<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait()? {
            return if status.success() {
                Ok(())
            } else {
                Err(format!("child process failed: {status}").into())
            };
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("child process did not end".into());
        }
        thread::sleep(Duration::from_millis(5));
    }
}

fn child_main(args: &[String]) -> BoxResult<()> {
    let arg = |i: usize| -> BoxResult<&str> {
        Ok(args
            .get(i)
            .map(String::as_str)
            .ok_or("missing child argument")?)
    };
    match arg(0)? {
        "broadcast" => {
            let addr: SocketAddr = arg(1)?.parse()?;
            let clients: usize = arg(2)?.parse()?;
            let raw = arg(3)? == "raw";
            child_broadcast(addr, clients, raw)
        }
        "memory" => {
            let capacity: usize = arg(1)?.parse()?;
            let raw = arg(2)? == "raw";
            child_memory(capacity, raw)
        }
        "connections" => {
            let n: usize = arg(1)?.parse()?;
            let raw = arg(2)? == "raw";
            child_connections(n, raw)
        }
        other => Err(format!("unknown child role {other}").into()),
    }
}

/// Connects `clients` receivers to `addr`, each counting frames until a message that is
/// not a frame; prints "ready", then "done FRAMES BYTES".
fn child_broadcast(addr: SocketAddr, clients: usize, raw: bool) -> BoxResult<()> {
    let mut handles = Vec::new();
    for _ in 0..clients {
        if raw {
            let s = TcpStream::connect(addr)?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(WAIT))?;
            handles.push(thread::spawn(move || -> BoxResult<(u64, u64)> {
                let (m, b, _) = raw_receive(s)?;
                Ok((m, b))
            }));
        } else {
            let c = Connection::builder()
                .protocol(Protocol::V2)
                .incoming_capacity(64)
                .connect(addr)?;
            handles.push(thread::spawn(move || -> BoxResult<(u64, u64)> {
                let (mut frames, mut bytes) = (0u64, 0u64);
                loop {
                    match c.get_data_timeout(WAIT)? {
                        Message::Bytes(b) => {
                            frames += 1;
                            bytes += b.len() as u64;
                        }
                        _ => return Ok((frames, bytes)),
                    }
                }
            }));
        }
    }
    println!("ready");
    let (mut frames, mut bytes) = (0, 0);
    for h in handles {
        let (f, b) = h.join().map_err(|_| "client panicked")??;
        frames += f;
        bytes += b;
    }
    println!("done {frames} {bytes}");
    Ok(())
}

fn vm_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Receives 1 MiB frames on a server of its own and reads them slowly (a pause every
/// `capacity` frames), so that the incoming queue fills up; prints "port P", then
/// "mem BASE QUARTER END FRAMES" (bytes: RSS before the stream, VmHWM at a quarter of
/// the frames, VmHWM at the end).
fn child_memory(capacity: usize, raw: bool) -> BoxResult<()> {
    let base = vm_kib("VmRSS:") * 1024;
    let (frames, quarter) = if raw {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        println!("port {}", listener.local_addr()?.port());
        let (s, _) = listener.accept()?;
        s.set_read_timeout(Some(WAIT))?;
        let total = read_total()?;
        let mut r = BufReader::with_capacity(64 * KIB, s);
        let mut buf = Vec::new();
        read_slowly(capacity, total, || {
            let mut len = [0u8; 4];
            r.read_exact(&mut len)?;
            let len = u32::from_le_bytes(len);
            if len == RAW_END {
                return Ok(false);
            }
            buf.resize(len as usize, 0);
            r.read_exact(&mut buf)?;
            Ok(true)
        })?
    } else {
        let server = Server::builder()
            .protocol(Protocol::V2)
            .incoming_capacity(capacity)
            .bind("127.0.0.1:0")?;
        println!("port {}", server.local_addr().port());
        let total = read_total()?;
        let conn = server.get_connection_timeout(WAIT)?;
        read_slowly(capacity, total, || {
            Ok(matches!(conn.get_data_timeout(WAIT)?, Message::Bytes(_)))
        })?
    };
    println!("mem {base} {quarter} {} {frames}", vm_kib("VmHWM:") * 1024);
    Ok(())
}

/// The number of frames the parent will send, from the first line of stdin.
fn read_total() -> BoxResult<u64> {
    let mut line = String::new();
    io::stdin().read_line(&mut line)?;
    Ok(line.trim().parse()?)
}

/// Calls `next_frame` until it says the stream ended, pausing every `capacity` frames
/// (a slow reader, so that the queue fills up); returns the frames read and the VmHWM
/// (bytes) at a quarter of `total`.
fn read_slowly(
    capacity: usize,
    total: u64,
    mut next_frame: impl FnMut() -> BoxResult<bool>,
) -> BoxResult<(u64, u64)> {
    let pause = Duration::from_millis(5);
    let (mut frames, mut quarter) = (0u64, 0u64);
    while next_frame()? {
        frames += 1;
        if frames % capacity as u64 == 0 {
            thread::sleep(pause);
        }
        if frames == total / 4 {
            quarter = vm_kib("VmHWM:") * 1024;
        }
    }
    Ok((frames, quarter))
}

// ---------------------------------------------------------------------------------------
// Broadcast and memory rows
// ---------------------------------------------------------------------------------------

/// One 1 MiB frame to each of `clients` connections, `frames` times.
fn serpy_broadcast(plan: &Plan) -> BoxResult<(Throughput, f64)> {
    let size = MIB;
    let server = Server::builder()
        .protocol(Protocol::V2)
        .bind("127.0.0.1:0")?;
    let (child, mut out) = spawn_child(&[
        "broadcast".into(),
        server.local_addr().to_string(),
        plan.clients.to_string(),
        "serpy".into(),
    ])?;
    let mut conns = Vec::new();
    for _ in 0..plan.clients {
        conns.push(server.get_connection_timeout(WAIT)?);
    }
    if child_line(&mut out)? != "ready" {
        return Err("broadcast child not ready".into());
    }
    let frame = Message::Bytes(payload(size));
    ALLOCATED.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    let cpu = process_cpu();
    let start = Instant::now();
    let mut sent = 0;
    while sent < plan.broadcast_frames && start.elapsed() < plan.broadcast_time {
        // Waiting for room, as a sender keeping up with its slowest reader would.
        if server.broadcast_timeout(frame.clone(), WAIT)?.sent() != conns.len() {
            return Err("broadcast missed a connection".into());
        }
        sent += 1;
    }
    server.broadcast_timeout(0, WAIT)?;
    let done = child_line(&mut out)?;
    let end = Instant::now();
    let cpu = process_cpu() - cpu;
    COUNTING.store(false, Ordering::SeqCst);
    let allocated = ALLOCATED.load(Ordering::SeqCst);
    let mut it = done.split_whitespace().skip(1).map(str::parse::<u64>);
    let (frames, bytes) = match (it.next(), it.next()) {
        (Some(Ok(f)), Some(Ok(b))) => (f, b),
        _ => return Err(format!("broadcast child said {done:?}").into()),
    };
    assert_eq!(frames, (sent * plan.clients) as u64, "every frame arrives");
    finish_child(child)?;
    server.close_all();
    Ok((
        Throughput {
            messages: frames,
            bytes,
            secs: (end - start).as_secs_f64(),
            cpu,
        },
        allocated as f64 / frames as f64,
    ))
}

fn raw_broadcast(plan: &Plan) -> BoxResult<Throughput> {
    let size = MIB;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let (child, mut out) = spawn_child(&[
        "broadcast".into(),
        listener.local_addr()?.to_string(),
        plan.clients.to_string(),
        "raw".into(),
    ])?;
    let mut writers = Vec::new();
    for _ in 0..plan.clients {
        let (s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        s.set_write_timeout(Some(WAIT))?;
        writers.push(BufWriter::with_capacity(64 * KIB, s));
    }
    if child_line(&mut out)? != "ready" {
        return Err("broadcast child not ready".into());
    }
    let data = payload(size);
    let cpu = process_cpu();
    let start = Instant::now();
    let mut sent = 0;
    while sent < plan.broadcast_frames && start.elapsed() < plan.broadcast_time {
        for w in &mut writers {
            w.write_all(&(size as u32).to_le_bytes())?;
            w.write_all(&data)?;
        }
        sent += 1;
    }
    for w in &mut writers {
        w.write_all(&RAW_END.to_le_bytes())?;
        w.flush()?;
    }
    let done = child_line(&mut out)?;
    let end = Instant::now();
    let cpu = process_cpu() - cpu;
    let mut it = done.split_whitespace().skip(1).map(str::parse::<u64>);
    let (frames, bytes) = match (it.next(), it.next()) {
        (Some(Ok(f)), Some(Ok(b))) => (f, b),
        _ => return Err(format!("broadcast child said {done:?}").into()),
    };
    assert_eq!(frames, (sent * plan.clients) as u64, "every frame arrives");
    finish_child(child)?;
    Ok(Throughput {
        messages: frames,
        bytes,
        secs: (end - start).as_secs_f64(),
        cpu,
    })
}

fn broadcast_row(plan: &Plan) -> BoxResult<Row> {
    // Server::broadcast encodes once with v2::encode_parts, which keeps the payload by
    // reference: the same allocation goes to every connection's writer (checked here
    // through the public codec API; the library's tests check the rest of the way).
    let frame = payload(MIB);
    let (_, body) = v2::encode_parts(&Message::Bytes(frame.clone()))?;
    let shared = body.as_ptr() == frame.as_ptr();
    let (mut s, mut r) = (Vec::new(), Vec::new());
    for _ in 0..plan.runs {
        r.push(raw_broadcast(plan)?);
        s.push(serpy_broadcast(plan)?);
    }
    let (s, alloc) = median_by(s, |x| x.0.mb_per_sec());
    let r = median_by(r, Throughput::mb_per_sec);
    Ok(Row {
        name: format!("broadcast 1 MiB to {} clients", plan.clients),
        serpy: Value::Broadcast {
            t: s,
            allocated_per_client_frame: Some(alloc),
        },
        raw: Value::Broadcast {
            t: r,
            allocated_per_client_frame: None,
        },
        note: format!(
            "{} payload copies per client: {alloc:.0} B allocated per client per frame \
             (sender, counting allocator); payload pointer shared by the encoder: {}; \
             sender CPU {} µs/frame/client vs {}",
            (alloc / MIB as f64).floor(),
            if shared { "yes" } else { "NO" },
            fmt_sig(s.cpu_us_per_msg()),
            fmt_sig(r.cpu_us_per_msg()),
        ),
    })
}

fn memory_run(plan: &Plan, raw: bool) -> BoxResult<(u64, u64, u64)> {
    let size = MIB;
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--child")
        .args([
            "memory",
            &plan.memory_capacity.to_string(),
            if raw { "raw" } else { "serpy" },
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut out = BufReader::new(child.stdout.take().ok_or("no child stdout")?);
    let mut stdin = child.stdin.take().ok_or("no child stdin")?;
    let line = child_line(&mut out)?;
    let port: u16 = line
        .strip_prefix("port ")
        .ok_or("memory child gave no port")?
        .parse()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let n = plan.memory_frames;
    writeln!(stdin, "{n}")?;
    let data = payload(size);
    let start = Instant::now();
    let mut sent = 0;
    if raw {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.set_write_timeout(Some(WAIT))?;
        let mut w = BufWriter::with_capacity(64 * KIB, s);
        while sent < n && start.elapsed() < plan.memory_time {
            w.write_all(&(size as u32).to_le_bytes())?;
            w.write_all(&data)?;
            sent += 1;
        }
        w.write_all(&RAW_END.to_le_bytes())?;
        w.flush()?;
    } else {
        let c = Connection::builder().protocol(Protocol::V2).connect(addr)?;
        while sent < n && start.elapsed() < plan.memory_time {
            c.send(Message::Bytes(data.clone()))?;
            sent += 1;
        }
        c.send(0)?;
        // Wait for the report before closing, so that close() does not cut the stream.
        let report = child_line(&mut out)?;
        c.close();
        return parse_mem(&report, sent, child);
    }
    let report = child_line(&mut out)?;
    parse_mem(&report, sent, child)
}

fn parse_mem(report: &str, sent: usize, child: Child) -> BoxResult<(u64, u64, u64)> {
    let v: Vec<u64> = report
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let [base, quarter, end, frames] = v[..] else {
        return Err(format!("memory child said {report:?}").into());
    };
    assert_eq!(frames, sent as u64, "every frame arrives");
    finish_child(child)?;
    Ok((base, quarter.saturating_sub(base), end.saturating_sub(base)))
}

fn memory_row(plan: &Plan) -> BoxResult<Row> {
    let (_, rq, re) = memory_run(plan, true)?;
    let (_, sq, se) = memory_run(plan, false)?;
    let bound = (plan.memory_capacity * MIB) as u64;
    Ok(Row {
        name: format!(
            "receiver peak memory, {} × 1 MiB, capacity {}",
            plan.memory_frames, plan.memory_capacity
        ),
        serpy: Value::Memory {
            quarter: sq,
            end: se,
            bound,
        },
        raw: Value::Memory {
            quarter: rq,
            end: re,
            bound,
        },
        note: format!(
            "VmHWM growth of the receiving process (RSS before the stream subtracted); \
             serpy at {:.2}× capacity × size ({}) and {:.2}× (capacity + 1) × size, the queue \
             plus the frame its reader holds while it waits for room; the same at ¼ and at \
             the end of the stream: bounded by the queue, not the stream",
            se as f64 / bound as f64,
            fmt_mib(bound),
            se as f64 / (bound + MIB as u64) as f64,
        ),
    })
}

/// A server of its own, in this child process (so that its memory is measured alone,
/// in a fresh process): accepts `n` connections, echoes one message on each, keeps them
/// all, then prints "mem RSS_BEFORE RSS_AFTER THREADS_BEFORE THREADS_AFTER" (KiB, from
/// /proc/self/status) and holds them until a line (or the end) on stdin. The raw server
/// has a thread per accepted `TcpStream`, which echoes one length-prefixed message and
/// then blocks reading until the peer closes, as serpy's reader does.
fn child_connections(n: usize, raw: bool) -> BoxResult<()> {
    let mut release = String::new();
    if raw {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let (rss0, threads0) = (vm_kib("VmRSS:"), vm_kib("Threads:"));
        println!("port {}", listener.local_addr()?.port());
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let mut handles = Vec::with_capacity(n);
        for _ in 0..n {
            let (mut s, _) = listener.accept()?;
            s.set_read_timeout(Some(WAIT))?;
            let tx = tx.clone();
            handles.push(thread::spawn(move || -> io::Result<()> {
                let mut len = [0u8; 4];
                s.read_exact(&mut len)?;
                let mut buf = vec![0u8; u32::from_le_bytes(len) as usize];
                s.read_exact(&mut buf)?;
                s.write_all(&len)?;
                s.write_all(&buf)?;
                drop(buf);
                let _ = tx.send(());
                // Held until the peer closes.
                let mut rest = [0u8; 1];
                while s.read(&mut rest)? > 0 {}
                Ok(())
            }));
        }
        for _ in 0..n {
            rx.recv_timeout(WAIT)?;
        }
        let (rss1, threads1) = (vm_kib("VmRSS:"), vm_kib("Threads:"));
        println!("mem {rss0} {rss1} {threads0} {threads1}");
        io::stdin().read_line(&mut release)?;
        for h in handles {
            h.join().map_err(|_| "raw server thread panicked")??;
        }
    } else {
        let server = Server::builder()
            .max_connections(n + 16)
            .bind("127.0.0.1:0")?;
        let (rss0, threads0) = (vm_kib("VmRSS:"), vm_kib("Threads:"));
        println!("port {}", server.local_addr().port());
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            let c = server.get_connection_timeout(WAIT)?;
            let m = c.get_data_timeout(WAIT)?;
            c.send_data(m, Mode::Plain)?;
            conns.push(c);
        }
        let (rss1, threads1) = (vm_kib("VmRSS:"), vm_kib("Threads:"));
        println!("mem {rss0} {rss1} {threads0} {threads1}");
        io::stdin().read_line(&mut release)?;
        server.close_all();
        drop(conns);
    }
    Ok(())
}

/// One side of the many-connections row: a server child (see `child_connections`), and
/// `plan.connections` clients in this process, one after the other, each sending one
/// 64-byte message and waiting for its echo. Returns the server's growth (KiB of RSS,
/// threads).
fn connections_run(plan: &Plan, raw: bool) -> BoxResult<(u64, u64)> {
    let n = plan.connections;
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--child")
        .args([
            "connections",
            &n.to_string(),
            if raw { "raw" } else { "serpy" },
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut out = BufReader::new(child.stdout.take().ok_or("no child stdout")?);
    let mut stdin = child.stdin.take().ok_or("no child stdin")?;
    let line = child_line(&mut out)?;
    let port: u16 = line
        .strip_prefix("port ")
        .ok_or("connections child gave no port")?
        .parse()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let data = payload(64);
    let start = Instant::now();
    let mut raw_clients = Vec::new();
    let mut clients = Vec::new();
    for i in 0..n {
        if start.elapsed() > plan.connections_time {
            let _ = child.kill();
            let _ = child.wait();
            return Err(
                format!("{i} of {n} connections within {:?}", plan.connections_time).into(),
            );
        }
        if raw {
            let mut s = TcpStream::connect(addr)?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(WAIT))?;
            s.write_all(&(data.len() as u32).to_le_bytes())?;
            s.write_all(&data)?;
            let mut back = vec![0u8; 4 + data.len()];
            s.read_exact(&mut back)?;
            raw_clients.push(s);
        } else {
            let c = Connection::connect(addr)?;
            c.send_data(Message::Bytes(data.clone()), Mode::Plain)?;
            c.get_data_timeout(WAIT)?;
            clients.push(c);
        }
    }
    let report = child_line(&mut out)?;
    writeln!(stdin, "release")?;
    drop(raw_clients);
    for c in clients {
        c.close();
    }
    let v: Vec<u64> = report
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let [rss0, rss1, threads0, threads1] = v[..] else {
        return Err(format!("connections child said {report:?}").into());
    };
    finish_child(child)?;
    Ok((rss1.saturating_sub(rss0), threads1.saturating_sub(threads0)))
}

fn connections_row(plan: &Plan, name: String) -> BoxResult<Row> {
    let (raw_kib, raw_threads) = connections_run(plan, true)?;
    let (kib, threads) = connections_run(plan, false)?;
    let n = plan.connections;
    Ok(Row {
        name,
        serpy: Value::PerConnection {
            connections: n,
            rss_kib: kib,
            threads,
        },
        raw: Value::PerConnection {
            connections: n,
            rss_kib: raw_kib,
            threads: raw_threads,
        },
        note: format!(
            "VmRSS growth of a server process (a child, measured alone) holding {n} \
             connections (default options, v1), each after one 64-byte message echoed; \
             the clients are in the parent; raw: a thread per accepted TcpStream"
        ),
    })
}

// ---------------------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------------------

fn usage() {
    println!("bench: serpy against plain TcpStream on loopback");
    println!("usage: cargo run --release --example bench -- [--quick] [--json FILE] [--only TEXT]");
    println!("  --quick        a smoke run (under a minute)");
    println!("  --json FILE    also write the rows as JSON");
    println!("  --only TEXT    only the rows whose name contains TEXT (repeatable)");
    println!("  --serpy-only, --raw-only   measure one side of the throughput and latency rows (for profiling)");
    println!("  --congestion-control NAME  the TCP congestion control of the one-way and ping-pong rows' sockets, serpy's and raw's alike (Linux, FreeBSD)");
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        return match child_main(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench child: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let mut quick = false;
    let mut side = None;
    let mut json = None;
    let mut only: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--serpy-only" => side = Some(true),
            "--raw-only" => side = Some(false),
            "--json" => match it.next() {
                Some(f) => json = Some(f.clone()),
                None => {
                    usage();
                    return ExitCode::FAILURE;
                }
            },
            "--congestion-control" => match it.next() {
                Some(name) => {
                    let _ = CONGESTION.set(name.clone());
                }
                None => {
                    usage();
                    return ExitCode::FAILURE;
                }
            },
            "--only" => match it.next() {
                Some(f) => only.push(f.clone()),
                None => {
                    usage();
                    return ExitCode::FAILURE;
                }
            },
            "--help" | "-h" => {
                usage();
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("unknown argument {other}");
                usage();
                return ExitCode::FAILURE;
            }
        }
    }
    if cfg!(debug_assertions) {
        eprintln!("note: a debug build; run with --release for meaningful numbers");
    }
    let plan = Plan {
        side,
        ..Plan::new(quick)
    };
    let mut machine = read_machine();
    println!(
        "serpy bench{}: {} × {}, {}, TCP congestion control {}, load average {}",
        if quick { " (quick)" } else { "" },
        machine.nproc,
        machine.cpu,
        machine.memory,
        machine.tcp,
        machine.load_before
    );
    let started = Instant::now();
    match run(&plan, &only) {
        Ok(rows) => {
            machine.load_after = loadavg();
            print_table(&rows);
            println!(
                "took {:.1} s; load average after: {}",
                started.elapsed().as_secs_f64(),
                machine.load_after
            );
            if let Some(path) = json {
                if let Err(e) = write_json(&path, &plan, &machine, &rows) {
                    eprintln!("writing {path}: {e}");
                    return ExitCode::FAILURE;
                }
                println!("wrote {path}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(plan: &Plan, only: &[String]) -> BoxResult<Vec<Row>> {
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| name.contains(o.as_str()));
    let mut rows = Vec::new();
    let mut add = |name: String, row: &mut dyn FnMut(String) -> BoxResult<Row>| -> BoxResult<()> {
        if wanted(&name) {
            let t = Instant::now();
            let r = row(name.clone())?;
            eprintln!(
                "  {:<44} {:>6.2}  ({:.1} s)",
                r.name,
                r.ratio(),
                t.elapsed().as_secs_f64()
            );
            rows.push(r);
        }
        Ok(())
    };
    // The last row: a receiving program that works on each message (20 µs of a busy
    // loop) as well as taking it: raw reads and works in turn; serpy's reader thread may
    // read meanwhile.
    let v2_rows = [64, 4 * KIB, 64 * KIB, MIB, 16 * MIB]
        .map(|size| (size, Duration::ZERO))
        .into_iter()
        .chain([(64 * KIB, Duration::from_micros(20))]);
    for (size, work) in v2_rows {
        let data = payload(size);
        let name = match work.as_micros() {
            0 => format!("v2 one-way {}", size_name(size)),
            us => format!("v2 one-way {}, {us} µs of work a message", size_name(size)),
        };
        add(name, &mut |name| {
            throughput_row(plan, name, size, work, || {
                serpy_oneway(
                    plan,
                    Protocol::V2,
                    Mode::Plain,
                    Message::Bytes(data.clone()),
                    size,
                    work,
                )
            })
        })?;
    }
    for (mode, label) in [
        (Mode::Plain, "mode 0 text"),
        (Mode::Base85, "mode 2 base85"),
    ] {
        for size in [64, 64 * KIB] {
            let message = if mode == Mode::Plain {
                Message::Text(text_payload(size))
            } else {
                Message::Bytes(payload(size))
            };
            add(format!("v1 {label} {}", size_name(size)), &mut |name| {
                throughput_row(plan, name, size, Duration::ZERO, || {
                    serpy_oneway(
                        plan,
                        Protocol::V1,
                        mode,
                        message.clone(),
                        size,
                        Duration::ZERO,
                    )
                })
            })?;
        }
    }
    add("v1 acked send (mode 1, 64 B)".into(), &mut |name| {
        latency_row(plan, &name, serpy_acked)
    })?;
    add("v2 ping-pong 64 B".into(), &mut |name| {
        latency_row(plan, &name, serpy_ping_pong)
    })?;
    add(
        format!("broadcast 1 MiB to {} clients", plan.clients),
        &mut |_| broadcast_row(plan),
    )?;
    add("receiver peak memory 1 MiB frames".into(), &mut |_| {
        memory_row(plan)
    })?;
    add(
        format!("{} connections, memory per connection", plan.connections),
        &mut |name| connections_row(plan, name),
    )?;
    Ok(rows)
}
