//! `serpy listen` and `serpy send` as programs, against peers of the library, over loopback.

mod common;

use std::io::Write;
use std::time::Duration;

use assert_cmd::Command;
use common::{bin, Running, WAIT};
use predicates::prelude::*;
use serde_json::Value;
use serpy::{Connection, Message, Mode, Protocol, Server};

fn client(addr: std::net::SocketAddr, protocol: Protocol) -> Connection {
    Connection::builder()
        .protocol(protocol)
        .connect(addr)
        .expect("connect")
}

#[test]
fn every_command_has_help_with_examples() {
    for cmd in ["listen", "send", "dump", "ping", "bench"] {
        Command::new(bin())
            .args([cmd, "--help"])
            .assert()
            .success()
            .stdout(predicate::str::contains("Examples:"))
            .stdout(predicate::str::contains("Exit codes:"))
            .stdout(predicate::str::contains(format!("serpy {cmd}")));
    }
    Command::new(bin())
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("Examples:"));
}

#[test]
fn listen_prints_every_v1_mode_and_v2_type() {
    let mut listen = Running::start(&["listen", "127.0.0.1:0"]);
    let addr = listen.bound_addr();

    let c = client(addr, Protocol::V1);
    c.send_data("plain", Mode::Plain).unwrap();
    c.send_data("acked", Mode::PlainAck).unwrap();
    c.send_data(vec![0u8, 0x1f, 0xff], Mode::Base85).unwrap();
    c.send_data("b85", Mode::Base85Ack).unwrap();
    c.send_data(7, Mode::Pickle).unwrap();
    c.send_data("last", Mode::PickleAck).unwrap();
    let lines = listen.until("mode 5 pickle");
    c.close();
    let text = lines.join("\n");
    for want in [
        "connected",
        "v1 mode 0 bytes 5 B \"plain\"",
        "v1 mode 1 bytes 5 B \"acked\"",
        "v1 mode 2 bytes 3 B 00 1f ff |...|",
        "v1 mode 3 bytes 3 B \"b85\"",
        "v1 mode 4 pickle 5 B 7",
        "v1 mode 5 pickle 12 B 'last'",
    ] {
        assert!(text.contains(want), "{want:?} not in {text}");
    }
    listen.until("disconnected");

    let c = client(addr, Protocol::V2);
    c.send(-42).unwrap();
    c.send(12.35).unwrap();
    c.send("µ text").unwrap();
    c.send(vec![1u8, 2, 3]).unwrap();
    let text = listen.until("v2 bytes").join("\n");
    for want in [
        "v2 int -42",
        "v2 float 12.35",
        "v2 text 7 B \"µ text\"",
        "v2 bytes 3 B 01 02 03 |...|",
    ] {
        assert!(text.contains(want), "{want:?} not in {text}");
    }
}

#[test]
fn listen_json_follows_its_schema() {
    let mut listen = Running::start(&["listen", "127.0.0.1:0", "--json", "--hex-limit", "2"]);
    let first: Value = serde_json::from_str(&listen.line()).unwrap();
    assert_eq!(first["event"], "listening");
    assert_eq!(first["protocol"], "auto");
    let addr: std::net::SocketAddr = first["addr"].as_str().unwrap().parse().unwrap();

    let c = client(addr, Protocol::V1);
    c.send_data("hello", Mode::PlainAck).unwrap();
    c.send_data(vec![0xffu8, 0, 1], Mode::Base85).unwrap();
    c.send_data("p", Mode::PickleAck).unwrap();
    let mut next = |event: &str| loop {
        let v: Value = serde_json::from_str(&listen.line()).unwrap();
        assert!(v["time"].as_f64().unwrap() > 1.6e9);
        if v["event"] == event {
            return v;
        }
    };
    let v = next("message");
    assert_eq!(v["protocol"], "v1");
    assert_eq!(v["mode"], 1);
    assert_eq!(v["kind"], "bytes");
    assert_eq!(v["size"], 5);
    assert_eq!(v["value"], "hello");
    assert_eq!(v["hex"], "6865");
    assert_eq!(v["truncated"], true);
    assert!(v["conn"].is_u64());
    assert_eq!(v["peer"], c.local_addr().unwrap().to_string());
    let v = next("message");
    assert_eq!(v["mode"], 2);
    assert_eq!(v["value"], Value::Null);
    assert_eq!(v["hex"], "ff00");
    let v = next("message");
    assert_eq!(v["kind"], "pickle");
    assert_eq!(v["mode"], 5);
    assert_eq!(v["value"], "p", "the decoded pickle");
    assert!(v.get("pickle_error").is_none());
    c.close();
    let v = next("disconnected");
    assert!(v.get("reason").is_some());

    let c = client(addr, Protocol::V2);
    c.send(5).unwrap();
    c.send(f64::NEG_INFINITY).unwrap();
    c.send(0.5).unwrap();
    c.send("t").unwrap();
    let values: Vec<Value> = (0..4).map(|_| next("message")).collect();
    assert!(values
        .iter()
        .all(|v| v["protocol"] == "v2" && v["mode"].is_null()));
    assert_eq!(values[0]["value"], 5);
    assert_eq!(values[0]["kind"], "int");
    assert_eq!(values[1]["value"], "-inf");
    assert_eq!(values[2]["value"], 0.5);
    assert_eq!(values[3]["value"], "t");
    assert_eq!(values[3]["kind"], "text");
}

#[test]
fn listen_echo_sends_back_in_the_same_mode() {
    let mut listen = Running::start(&["listen", "0", "--echo", "--quiet"]);
    let addr = listen.bound_addr();
    let c = client(addr, Protocol::V1);
    for (m, mode) in [
        ("raw", Mode::Plain),
        ("ack", Mode::PlainAck),
        ("b85", Mode::Base85),
    ] {
        c.send_data(m, mode).unwrap();
        let (got, got_mode) = c.get_data_with_mode(Some(WAIT)).unwrap();
        assert_eq!(got.as_str(), Some(m));
        assert_eq!(got_mode, Some(mode));
    }
    let c2 = client(addr, Protocol::V2);
    c2.send(1.25).unwrap();
    assert_eq!(c2.get_data_timeout(WAIT).unwrap(), Message::Float(1.25));
}

/// `serpy send`'s messages as a library server receives them.
fn received(server: &Server, n: usize) -> Vec<(Message, Option<Mode>)> {
    (0..n)
        .map(|_| {
            let r = server.recv_any_timeout(WAIT).expect("a message");
            (r.message, r.mode)
        })
        .collect()
}

#[test]
fn send_sends_values_in_order_and_waits_for_acks() {
    let server = Server::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().to_string();
    Command::new(bin())
        .args([
            "send", &addr, "a", "--int", "-1", "--float", "2.5", "b", "--mode", "1",
        ])
        .timeout(WAIT)
        .assert()
        .success()
        .stdout(predicate::str::contains("sent 4 messages"))
        .stdout(predicate::str::contains("4 acknowledged"));
    let got = received(&server, 4);
    let texts: Vec<_> = got
        .iter()
        .map(|(m, _)| m.as_str().unwrap().to_string())
        .collect();
    assert_eq!(texts, ["a", "-1", "2.5", "b"]);
    assert!(got.iter().all(|(_, mode)| *mode == Some(Mode::PlainAck)));
}

#[test]
fn send_v2_types_and_files() {
    let server = Server::builder()
        .protocol(Protocol::V2)
        .bind("127.0.0.1:0")
        .unwrap();
    let dir = std::env::temp_dir().join(format!("serpy-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("blob.bin");
    let blob: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    std::fs::write(&file, &blob).unwrap();
    Command::new(bin())
        .args(["send", &server.local_addr().to_string(), "--protocol", "v2"])
        .args(["--int", "-5", "--float", "nan", "hi", "--bytes-file"])
        .arg(&file)
        .timeout(WAIT)
        .assert()
        .success()
        .stdout(predicate::str::contains("sent 4 messages"));
    let got = received(&server, 4);
    assert_eq!(got[0].0, Message::Int(-5));
    assert!(got[1].0.as_float().unwrap().is_nan());
    assert_eq!(got[2].0.as_str(), Some("hi"));
    assert_eq!(got[3].0.as_bytes(), Some(&blob[..]));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn send_stdin_line_by_line() {
    let server = Server::bind("127.0.0.1:0").unwrap();
    let mut send = Running::start(&["send", &server.local_addr().to_string(), "--stdin"]);
    send.stdin
        .as_mut()
        .unwrap()
        .write_all(b"first\n\nsecond\r\nno newline")
        .unwrap();
    let (status, stderr) = send.wait();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("empty lines are skipped"), "{stderr}");
    let got = received(&server, 3);
    let texts: Vec<_> = got
        .iter()
        .map(|(m, _)| m.as_str().unwrap().to_string())
        .collect();
    assert_eq!(texts, ["first", "second", "no newline"]);
}

#[test]
fn send_streams_with_count_and_size() {
    let server = Server::builder()
        .protocol(Protocol::V2)
        .bind("127.0.0.1:0")
        .unwrap();
    Command::new(bin())
        .args(["send", &server.local_addr().to_string(), "--protocol", "v2"])
        .args(["--count", "50", "--size", "1k"])
        .timeout(WAIT)
        .assert()
        .success()
        .stdout(predicate::str::contains("sent 50 messages (50.0 KiB)"))
        .stdout(predicate::str::contains("msg/s"))
        .stdout(predicate::str::contains("MiB/s"))
        // No progress bar where stderr is not a terminal.
        .stderr(predicate::str::is_empty());
    for (m, _) in received(&server, 50) {
        assert_eq!(m.len(), 1024);
    }
    assert!(server.recv_any_timeout(Duration::from_millis(50)).is_err());
}

#[test]
fn listen_into_a_closed_pipe_ends_quietly() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command as Std, Stdio};
    let mut child = Std::new(bin())
        .args(["listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap(); // the reader is dropped here: the pipe is closed, as `head -1` does
    let addr = common::addr_in(&first);
    let c = client(addr, Protocol::V1);
    // Printing "connected" (or this message) finds the pipe closed.
    let _ = c.send("anyone?");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx.recv_timeout(WAIT).expect("serpy ends").unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?} {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn listen_reports_what_a_peer_breaks() {
    use std::io::Read;
    let mut listen = Running::start(&["listen", "127.0.0.1:0", "--json", "--protocol", "v2"]);
    let first: Value = serde_json::from_str(&listen.line()).unwrap();
    let addr: std::net::SocketAddr = first["addr"].as_str().unwrap().parse().unwrap();
    let mut raw = std::net::TcpStream::connect(addr).unwrap();
    // Garbage, then a frame whose checksum is wrong, then a good int frame.
    let mut bytes = b"junk".to_vec();
    bytes.extend_from_slice(b"\xde\xca\xfe\xca\xfe\x81\x05\x00\x00\x00\x03\x00\x00\x00abc");
    bytes.extend_from_slice(
        b"\xde\xca\xfe\xca\xfe\x01\x07\x00\x00\x00\x08\x00\x00\x00\x07\0\0\0\0\0\0\0",
    );
    raw.write_all(&bytes).unwrap();
    raw.shutdown(std::net::Shutdown::Write).unwrap();
    let mut events = Vec::new();
    loop {
        let v: Value = serde_json::from_str(&listen.line()).unwrap();
        let done = v["event"] == "disconnected";
        events.push(v);
        if done {
            break;
        }
    }
    let errors: Vec<&str> = events
        .iter()
        .filter(|v| v["event"] == "error")
        .map(|v| v["error"].as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 2, "{events:#?}");
    assert!(errors[0].contains("4 bytes"), "{errors:?}");
    assert!(errors[1].contains("checksum"), "{errors:?}");
    let message = events.iter().find(|v| v["event"] == "message").unwrap();
    assert_eq!(message["value"], 7);
    let _ = raw.read_to_end(&mut Vec::new());
}
