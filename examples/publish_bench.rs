//! Publishing to a frozen peer: 1 MiB frames at 50 Hz to 5 client processes over v2, one
//! of them stopped with SIGSTOP for the whole run. Reports the frame rate each client
//! receives and the sender's memory (resident set: now and its peak).
//!
//! ```text
//! cargo run --release --example publish_bench                      # keep-latest
//! cargo run --release --example publish_bench -- --policy block    # the default policy
//! ```
//!
//! The clients are this program run again with `--client ADDR`, so that their memory is
//! not the sender's. The run is bounded: `--seconds` of publishing, then every client
//! is told to end (the stopped one is killed), each with a bound on the wait.
//! Linux only (SIGSTOP, /proc/self/status).

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    linux::main()
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("publish_bench runs on Linux only (it stops a client with SIGSTOP)");
}

#[cfg(target_os = "linux")]
mod linux {
    use std::error::Error;
    use std::io::{BufRead, BufReader};
    use std::process::{Child, Command, ExitCode, Stdio};
    use std::sync::mpsc;
    use std::thread;
    use std::time::{Duration, Instant};

    use serpy::{Connection, FullQueue, Message, Protocol, Server};

    const USAGE: &str = "\
    publish_bench: frames at a fixed rate to client processes, one of them stopped (SIGSTOP)

    usage: publish_bench [--clients N] [--stopped K] [--size B] [--hz F] [--seconds S]
                         [--policy keep|block] [--keep N]

      --clients N       client processes (default 5)
      --stopped K       how many of them are stopped with SIGSTOP (default 1)
      --size B          frame size in bytes (default 1048576)
      --hz F            frames per second (default 50)
      --seconds S       how long to publish (default 10)
      --policy P        keep: FullQueue::KeepLatest (default); block: FullQueue::Block
      --keep N          frames kept for a slow client under keep (default 4)
  --outgoing-bytes B  the byte budget of each connection's queue (default 64 MiB)
      -h, --help        print this help";

    /// The text that tells a client the run is over.
    const END: &str = "end";

    struct Options {
        clients: usize,
        stopped: usize,
        size: usize,
        hz: f64,
        seconds: f64,
        policy: String,
        keep: usize,
        outgoing_bytes: usize,
    }

    fn parse() -> Result<Options, String> {
        let mut o = Options {
            clients: 5,
            stopped: 1,
            size: 1 << 20,
            hz: 50.0,
            seconds: 10.0,
            policy: "keep".into(),
            keep: 4,
            outgoing_bytes: serpy::DEFAULT_OUTGOING_BYTES,
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or(format!("{flag} needs a value"));
            match flag.as_str() {
                "--clients" => o.clients = value()?.parse().map_err(|e| format!("{e}"))?,
                "--stopped" => o.stopped = value()?.parse().map_err(|e| format!("{e}"))?,
                "--size" => o.size = value()?.parse().map_err(|e| format!("{e}"))?,
                "--hz" => o.hz = value()?.parse().map_err(|e| format!("{e}"))?,
                "--seconds" => o.seconds = value()?.parse().map_err(|e| format!("{e}"))?,
                "--policy" => o.policy = value()?,
                "--keep" => o.keep = value()?.parse().map_err(|e| format!("{e}"))?,
                "--outgoing-bytes" => {
                    o.outgoing_bytes = value()?.parse().map_err(|e| format!("{e}"))?
                }
                _ => return Err(format!("unknown option {flag}")),
            }
        }
        if !(1..=64).contains(&o.clients) || o.stopped > o.clients {
            return Err("--clients must be 1 to 64, --stopped at most --clients".into());
        }
        if !(o.hz > 0.0 && o.hz <= 1000.0 && o.seconds > 0.0 && o.seconds <= 120.0) {
            return Err("--hz must be in (0, 1000], --seconds in (0, 120]".into());
        }
        if !["keep", "block"].contains(&o.policy.as_str()) {
            return Err(format!("unknown policy {:?}", o.policy));
        }
        Ok(o)
    }

    pub fn main() -> ExitCode {
        let args: Vec<String> = std::env::args().collect();
        if args.iter().any(|a| a == "-h" || a == "--help") {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        if args.get(1).map(String::as_str) == Some("--client") {
            return match client(args.get(2).map(String::as_str).unwrap_or("")) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("publish_bench client: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        let o = match parse() {
            Ok(o) => o,
            Err(e) => {
                eprintln!("error: {e}\n\n{USAGE}");
                return ExitCode::from(2);
            }
        };
        match publish(&o) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("publish_bench: {e}");
                ExitCode::FAILURE
            }
        }
    }

    /// A client: counts frames until END, then prints `frames N rate R` (R over the time
    /// between its first and its last frame).
    fn client(addr: &str) -> Result<(), Box<dyn Error>> {
        let conn = Connection::builder().protocol(Protocol::V2).connect(addr)?;
        let (mut n, mut first, mut last) = (0u64, None, Instant::now());
        loop {
            match conn.get_data_timeout(Duration::from_secs(30))? {
                Message::Text(t) if t.as_str() == END => break,
                _ => {
                    n += 1;
                    last = Instant::now();
                    first.get_or_insert(last);
                }
            }
        }
        let span = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
        let rate = if span > 0.0 {
            (n - 1) as f64 / span
        } else {
            0.0
        };
        println!("frames {n} rate {rate:.2}");
        conn.close();
        Ok(())
    }

    /// The sender's resident set and its peak, in MiB (from /proc/self/status).
    fn memory() -> (f64, f64) {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
                .map_or(f64::NAN, |kb| kb / 1024.0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// A client process and the line it prints at the end.
    struct Peer {
        child: Child,
        line: mpsc::Receiver<String>,
        stopped: bool,
    }

    fn signal(child: &Child, sig: libc::c_int) {
        // SAFETY: kill() on the id of a child this program started and has not reaped.
        unsafe {
            libc::kill(child.id() as libc::pid_t, sig);
        }
    }

    fn publish(o: &Options) -> Result<(), Box<dyn Error>> {
        let policy = match o.policy.as_str() {
            "block" => FullQueue::Block,
            _ => FullQueue::KeepLatest(o.keep),
        };
        let server = Server::builder()
            .protocol(Protocol::V2)
            .full_queue(policy)
            .outgoing_bytes(o.outgoing_bytes)
            .bind("127.0.0.1:0")?;
        let addr = server.local_addr().to_string();
        let exe = std::env::current_exe()?;
        let mut peers = Vec::new();
        for i in 0..o.clients {
            let mut child = Command::new(&exe)
                .args(["--client", &addr])
                .stdout(Stdio::piped())
                .spawn()?;
            let out = child.stdout.take().expect("piped");
            let (tx, rx) = mpsc::channel();
            thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
            server.get_connection_timeout(Duration::from_secs(20))?;
            let stopped = i < o.stopped;
            if stopped {
                signal(&child, libc::SIGSTOP);
            }
            peers.push(Peer {
                child,
                line: rx,
                stopped,
            });
        }
        let period = Duration::from_secs_f64(1.0 / o.hz);
        let frames = (o.seconds * o.hz).round() as u64;
        let (mut dropped, mut missed, mut late) = (0u64, 0u64, 0u64);
        let mut peak_rss: f64 = 0.0;
        let start = Instant::now();
        let mut next = start;
        for i in 0..frames {
            let now = Instant::now();
            if now < next {
                // Pacing: the publisher has nothing else to wait on.
                thread::sleep(next - now);
            } else if now > next + period {
                late += 1;
            }
            // A new frame each time, as an instrument makes them (one buffer, shared by
            // the connections).
            let report = server.broadcast(vec![i as u8; o.size])?;
            dropped += report.dropped_total();
            missed += report.failures().count() as u64;
            next += period;
            if i % (o.hz as u64).max(1) == 0 {
                peak_rss = peak_rss.max(memory().0);
            }
        }
        let elapsed = start.elapsed().as_secs_f64();
        let (rss, hwm) = memory();
        let stats = server.stats();
        // The end: the running clients get END; the stopped ones are resumed and killed.
        for p in &peers {
            if p.stopped {
                signal(&p.child, libc::SIGCONT);
                signal(&p.child, libc::SIGKILL);
            }
        }
        server.broadcast_timeout(END, Duration::from_secs(10))?;
        let mut rates = Vec::new();
        for (i, p) in peers.iter_mut().enumerate() {
            let line = if p.stopped {
                "stopped (SIGSTOP), killed at the end".to_string()
            } else {
                p.line
                    .recv_timeout(Duration::from_secs(30))
                    .unwrap_or_else(|_| "no report within 30 s".into())
            };
            if let Some(r) = line
                .split_whitespace()
                .nth(3)
                .and_then(|r| r.parse::<f64>().ok())
            {
                rates.push(r);
            }
            println!("client {i}: {line}");
        }
        for p in &mut peers {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        let budget = |per: f64| per * (o.clients as f64) / (1 << 20) as f64;
        println!(
            "policy {}: {frames} frames of {} B at {} Hz in {elapsed:.2} s ({:.2} Hz sent, {late} late); \
             dropped for slow clients {dropped}, missed {missed}",
            o.policy,
            o.size,
            o.hz,
            frames as f64 / elapsed
        );
        println!(
            "running clients: min {:.2} Hz, max {:.2} Hz",
            rates.iter().cloned().fold(f64::INFINITY, f64::min),
            rates.iter().cloned().fold(0.0, f64::max)
        );
        println!(
            "sender memory: RSS {rss:.1} MiB at the end, peak {hwm:.1} MiB (sampled {peak_rss:.1}); \
             per-connection budget: {} MiB queued under keep-latest ({} frames), {} MiB \
             outgoing_bytes; for {} clients at most {:.0} MiB",
            (o.keep * o.size) >> 20,
            o.keep,
            o.outgoing_bytes >> 20,
            o.clients,
            budget(o.outgoing_bytes as f64),
        );
        println!("server stats: {stats}");
        Ok(())
    }
}
