//! Helpers of the issue 9 suites (`edges_*.rs`): a logger that counts lines, the
//! process's CPU time, which sockets the process holds, and running one test in a child
//! process with a lower descriptor limit.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Upper bound for anything a test waits for; never a pause.
pub const T: Duration = Duration::from_secs(20);

/// Counts the log lines of the `serpy` targets whose text holds a watched needle.
struct Counter {
    watched: Mutex<Vec<(String, log::Level, Arc<AtomicUsize>)>>,
}

impl log::Log for Counter {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.target().starts_with("serpy")
    }
    fn log(&self, r: &log::Record) {
        if !r.target().starts_with("serpy") {
            return;
        }
        let watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        if watched.is_empty() {
            return;
        }
        let text = r.args().to_string();
        for (needle, level, count) in watched.iter() {
            if r.level() <= *level && text.contains(needle.as_str()) {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    fn flush(&self) {}
}

fn counter() -> &'static Counter {
    static COUNTER: OnceLock<&'static Counter> = OnceLock::new();
    COUNTER.get_or_init(|| {
        let c: &'static Counter = Box::leak(Box::new(Counter {
            watched: Mutex::new(Vec::new()),
        }));
        log::set_logger(c).expect("no other logger in this test binary");
        log::set_max_level(log::LevelFilter::Trace);
        c
    })
}

/// From now on, counts the log lines at `level` or more severe whose text contains
/// `needle` (an empty needle counts every line of the crate).
pub fn count_log_lines(needle: &str, level: log::Level) -> Arc<AtomicUsize> {
    let count = Arc::new(AtomicUsize::new(0));
    counter()
        .watched
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((needle.to_string(), level, count.clone()));
    count
}

/// Reads the CPU time (user + system) this process has used, from `/proc/self/stat`,
/// through a descriptor opened beforehand (it works when the process has none left).
pub struct CpuClock(std::fs::File);

impl CpuClock {
    /// Opens `/proc/self/stat`.
    pub fn new() -> CpuClock {
        CpuClock(std::fs::File::open("/proc/self/stat").expect("/proc/self/stat"))
    }

    /// The CPU time used so far.
    pub fn now(&mut self) -> Duration {
        use std::io::{Read, Seek};
        let mut stat = String::new();
        self.0.rewind().expect("rewind /proc/self/stat");
        self.0
            .read_to_string(&mut stat)
            .expect("read /proc/self/stat");
        // The command name (field 2) may hold spaces: count the fields after its ')'.
        let rest = &stat[stat.rfind(')').expect("a ')' in /proc/self/stat") + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime: fields 14 and 15 of the line, 12 and 13 after the ')'.
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // USER_HZ is 100 on every Linux ABI.
        Duration::from_millis(ticks * 10)
    }
}

/// The inode of the server side of a loopback TCP link from `client_port` to
/// `server_port`, from `/proc/net/tcp` (0 if not found, or not held by any process).
pub fn server_socket_inode(server_port: u16, client_port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let port_of = |field: &str| {
        field
            .rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
    };
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() > 9 && port_of(f[1]) == Some(server_port) && port_of(f[2]) == Some(client_port) {
            return f[9].parse().unwrap_or(0);
        }
    }
    0
}

/// True if one of this process's descriptors refers to the socket with `inode`.
pub fn holds_socket(inode: u64) -> bool {
    let want = format!("socket:[{inode}]");
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .any(|target| target.to_str() == Some(want.as_str()))
}

/// Closes `stream` with a reset (SO_LINGER 0): the peer sees a connection that is
/// really gone, not a half-close.
pub fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// The environment variable that marks the child process of [`in_child_with_fd_limit`].
const CHILD: &str = "SERPY_EDGES_CHILD";

/// Runs the calling test in a child process whose descriptor limit is `limit`, because
/// the limit is per process and the tests of one binary share it.
///
/// In the parent, returns `false` once the child has passed (and panics with the
/// child's output if it failed); in the child, returns `true`: the caller then runs the
/// body of the test. `test` is the test's name, as `--exact` wants it.
pub fn in_child_with_fd_limit(test: &str, limit: u32) -> bool {
    if std::env::var(CHILD).as_deref() == Ok(test) {
        return true;
    }
    let exe: PathBuf = std::env::current_exe().expect("the test binary's path");
    // `ulimit -n` in a shell, then the test binary itself, running just this test.
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
        .arg(&exe)
        .args([
            test,
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, test)
        .output()
        .expect("start the test binary again under /bin/sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{test} failed in the child process with {limit} descriptors ({})\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    false
}

/// Opens descriptors (of `/dev/null`) until the process has none left; the caller frees
/// them by dropping the vector.
pub fn exhaust_descriptors() -> Vec<std::fs::File> {
    let mut files = Vec::new();
    loop {
        match std::fs::File::open("/dev/null") {
            Ok(f) => files.push(f),
            Err(e) => {
                assert!(
                    e.raw_os_error() == Some(24), // EMFILE
                    "opening /dev/null failed otherwise than with EMFILE: {e}"
                );
                return files;
            }
        }
        assert!(files.len() < 100_000, "no descriptor limit in sight");
    }
}
