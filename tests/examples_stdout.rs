//! No example panics when its stdout is closed (`cargo run --example NAME -- --help |
//! head -1`): each one ends quietly, with exit code 0, at its first line. The test gives
//! every example a stdout whose reader is already gone, so its first write fails with a
//! broken pipe every time, not only when the reader happens to go away first.
//!
//! Unix only, for the socket pair that stands in for the closed pipe; the examples' code
//! for this is the same on every platform (`examples/common`'s `println!`).
#![cfg(unix)]

use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// Upper bound for an example to end; never a pause.
const T: Duration = Duration::from_secs(20);

/// Every example, with arguments that make it print at once.
const RUNS: &[(&str, &[&str])] = &[
    ("base85_bench", &["--help"]),
    ("bench", &["--help"]),
    ("instrument_client", &["--help"]),
    ("instrument_server", &["--help"]),
    ("pingpong_client", &["--help"]),
    ("pingpong_server", &["--help"]),
    ("quickstart", &["--help"]),
    ("simple_broadcast", &["--help"]),
    ("simple_chat", &["--help"]),
    // Not only the help: the first line of a run.
    ("quickstart", &[]),
    ("pingpong_server", &["--port", "0"]),
    ("instrument_server", &["--port", "0"]),
    ("simple_broadcast", &["--port", "0"]),
];

/// The path of the built example `name` (`target/<profile>/examples/`).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    let path = dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "the example binary {} is missing: run `cargo test`, which builds the examples before the integration tests (or `cargo build --examples` first)",
        path.display()
    );
    path
}

#[test]
fn examples_end_quietly_on_a_closed_stdout() {
    for &(name, args) in RUNS {
        // A stdout whose other end is closed: the first write gets EPIPE.
        let (reader, writer) = UnixStream::pair().expect("a socket pair");
        drop(reader);
        let mut child = Command::new(example(name))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(OwnedFd::from(writer)))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        // The example ends at its first line, which closes its stderr: read that to
        // its end in a thread, and wait for it at most T.
        let mut stderr = child.stderr.take().expect("the example's stderr");
        let (tx, rx) = mpsc::channel();
        let reader = thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            let _ = tx.send(text);
        });
        let stderr = match rx.recv_timeout(T) {
            Ok(text) => text,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{name} {args:?} still runs after {T:?} with a closed stdout");
            }
        };
        reader.join().expect("the stderr reader");
        let status = child.wait().expect("the example's status");
        assert!(
            !stderr.contains("panicked"),
            "{name} {args:?} panicked on a closed stdout:\n{stderr}"
        );
        assert!(
            status.success(),
            "{name} {args:?} did not end with 0 on a closed stdout: {status}"
        );
    }
}
