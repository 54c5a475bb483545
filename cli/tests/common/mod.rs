//! Helpers of the command-line tests: run `serpy` as a program and read its lines as they
//! come, with generous timeouts as upper bounds only.
#![allow(dead_code)] // each test file uses a different part of this module

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

/// The upper bound of every wait (a loaded 2-core machine can be slow).
pub const WAIT: Duration = Duration::from_secs(60);

/// The path of the `serpy` binary built for these tests.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_serpy")
}

/// A `serpy` process that runs in the background; killed and reaped when dropped.
pub struct Running {
    child: Child,
    pub stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Receiver<String>,
    /// Every stdout line read so far.
    pub seen: Vec<String>,
}

fn pump(stream: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Running {
    /// Starts `serpy ARGS...` with stdout and stderr read by threads.
    pub fn start(args: &[&str]) -> Running {
        let mut child = Command::new(bin())
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start serpy");
        let lines = pump(child.stdout.take().expect("stdout"));
        let stderr = pump(child.stderr.take().expect("stderr"));
        let stdin = child.stdin.take();
        Running {
            child,
            stdin,
            lines,
            stderr,
            seen: Vec::new(),
        }
    }

    /// The next stdout line (panics after [`WAIT`] or at the end of the output).
    pub fn line(&mut self) -> String {
        match self.lines.recv_timeout(WAIT) {
            Ok(l) => {
                self.seen.push(l.clone());
                l
            }
            Err(e) => panic!(
                "no line from serpy ({e:?}); stdout so far: {:#?}; stderr: {:#?}",
                self.seen,
                self.stderr.try_iter().collect::<Vec<_>>()
            ),
        }
    }

    /// Reads stdout lines until one contains `needle`; returns the lines read, that one included.
    pub fn until(&mut self, needle: &str) -> Vec<String> {
        let mut got = Vec::new();
        loop {
            let l = self.line();
            let done = l.contains(needle);
            got.push(l);
            if done {
                return got;
            }
        }
    }

    /// Every stdout line until the process closes its stdout.
    pub fn rest(&mut self) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        let mut got = Vec::new();
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(l) => {
                    self.seen.push(l.clone());
                    got.push(l);
                }
                Err(RecvTimeoutError::Disconnected) => return got,
                Err(RecvTimeoutError::Timeout) => panic!("serpy did not end; stdout: {got:#?}"),
            }
        }
    }

    /// The address in the first line (`listening on ADDR ...`).
    pub fn bound_addr(&mut self) -> SocketAddr {
        let first = self.line();
        addr_in(&first)
    }

    /// Waits (at most [`WAIT`]) for the process to end and returns its status and stderr.
    pub fn wait(mut self) -> (ExitStatus, String) {
        drop(self.stdin.take());
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                let mut err = Vec::new();
                while let Ok(l) = self.stderr.recv_timeout(WAIT) {
                    err.push(l);
                }
                return (status, err.join("\n"));
            }
            // The process ends by itself; a blocking wait on its stdout end is the event.
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(l) => self.seen.push(l),
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().expect("wait");
                    let mut err = Vec::new();
                    while let Ok(l) = self.stderr.recv_timeout(WAIT) {
                        err.push(l);
                    }
                    return (status, err.join("\n"));
                }
                Err(RecvTimeoutError::Timeout) => panic!("serpy did not end in time"),
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The socket address after "listening on " in `line`, or in its field "addr" (JSON).
pub fn addr_in(line: &str) -> SocketAddr {
    if line.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(line).expect("JSON");
        return v["addr"]
            .as_str()
            .expect("addr")
            .parse()
            .expect("an address");
    }
    let rest = line
        .split("listening on ")
        .nth(1)
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    let addr = rest
        .split([' ', ','])
        .next()
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    addr.parse().unwrap_or_else(|e| panic!("{addr:?}: {e}"))
}

/// A loopback port that nothing listens on (bound, then released).
pub fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// Asserts that `stderr` is one line that starts with `serpy: error:` and has no panic.
pub fn one_error_line(stderr: &str) {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {stderr:?}");
    assert!(lines[0].starts_with("serpy: error: "), "{stderr:?}");
    assert!(!stderr.contains("panicked"), "{stderr:?}");
}
