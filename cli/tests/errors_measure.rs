//! Bad input gives one line on stderr and the documented exit code; `ping` and `bench`
//! against `serpy listen --echo`.

mod common;

use std::net::TcpListener;

use assert_cmd::Command;
use common::{bin, closed_port, one_error_line, Running, WAIT};
use predicates::prelude::*;

/// Runs `serpy ARGS` to its end; returns the exit code and stderr.
fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(bin())
        .args(args)
        .env("NO_COLOR", "1")
        .timeout(WAIT)
        .output()
        .expect("run serpy");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_unreachable_address_is_exit_code_3() {
    let addr = closed_port().to_string();
    for args in [
        vec!["send", &addr, "hello"],
        vec!["ping", &addr],
        vec!["bench", &addr, "--sizes", "16"],
    ] {
        let (code, stderr) = run(&args);
        assert_eq!(code, Some(3), "{args:?}: {stderr}");
        one_error_line(&stderr);
        assert!(stderr.contains("could not connect"), "{stderr}");
    }
}

#[test]
fn a_port_in_use_is_exit_code_3() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for args in [vec!["listen", &addr], vec!["dump", &addr, "127.0.0.1:9"]] {
        let (code, stderr) = run(&args);
        assert_eq!(code, Some(3), "{args:?}: {stderr}");
        one_error_line(&stderr);
        assert!(stderr.contains("already in use"), "{stderr}");
    }
}

#[test]
fn bad_values_are_refused_before_connecting() {
    // The port is closed: exit code 1 (not 3) shows that nothing tried to connect.
    let addr = closed_port().to_string();
    let cases: &[(&[&str], &str)] = &[
        (&["--mode", "0", "a\u{1f}b"], "contains 0x1F"),
        (&["--mode", "1", "a\u{4}b"], "contains 0x04"),
        (&["--mode", "0", "\u{1}SETMODE1"], "starts with 0x01"),
        (&["--mode", "2", ""], "is empty"),
        (&["--protocol", "v2", "--mode", "1", "x"], "v2 has no modes"),
        (
            &["--bytes-file", "/nonexistent/serpy-test-file"],
            "cannot read /nonexistent/serpy-test-file",
        ),
        (&[], "nothing to send"),
        (&["--count", "1", "--size", "5G"], "the largest message"),
    ];
    for (extra, why) in cases {
        let mut args = vec!["send", &addr];
        args.extend_from_slice(extra);
        let (code, stderr) = run(&args);
        assert_eq!(code, Some(1), "{args:?}: {stderr}");
        one_error_line(&stderr);
        assert!(stderr.contains(why), "{args:?}: {stderr}");
    }
}

#[test]
fn a_bad_command_line_is_exit_code_2() {
    for args in [
        vec!["send"],
        vec!["send", "127.0.0.1:1", "--mode", "6", "x"],
        vec!["send", "127.0.0.1:1", "--int", "1.5"],
        vec!["listen", "not an address"],
        vec!["frobnicate"],
    ] {
        let (code, stderr) = run(&args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn an_acknowledgement_that_never_comes_is_exit_code_4() {
    // A peer that accepts (the kernel does, from the backlog) and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let (code, stderr) = run(&["send", &addr, "--mode", "1", "--timeout", "1", "anyone?"]);
    assert_eq!(code, Some(4), "{stderr}");
    one_error_line(&stderr);
    assert!(stderr.contains("timed out"), "{stderr}");
}

#[test]
fn ping_and_bench_against_an_echoing_listen() {
    let mut listen = Running::start(&["listen", "127.0.0.1:0", "--echo", "--quiet"]);
    let addr = listen.bound_addr().to_string();
    for protocol in ["v1", "v2"] {
        Command::new(bin())
            .args([
                "ping",
                &addr,
                "-n",
                "5",
                "--size",
                "100",
                "--protocol",
                protocol,
            ])
            .timeout(WAIT)
            .assert()
            .success()
            .stdout(predicate::str::contains(format!(
                "5 round trips of 100 B to {addr} over {protocol}"
            )))
            .stdout(predicate::str::is_match(r"min +median +p99 +max").unwrap());
        Command::new(bin())
            .args([
                "bench",
                &addr,
                "--sizes",
                "16,64k",
                "-n",
                "20",
                "--seconds",
                "30",
            ])
            .args(["--protocol", protocol])
            .timeout(WAIT)
            .assert()
            .success()
            .stdout(predicate::str::contains("messages/s"))
            .stdout(predicate::str::is_match(r"16 B +20 ").unwrap())
            .stdout(predicate::str::is_match(r"64\.0 KiB +20 ").unwrap());
    }
}

#[test]
fn ping_without_an_echo_is_exit_code_4() {
    let mut listen = Running::start(&["listen", "127.0.0.1:0", "--quiet"]);
    let addr = listen.bound_addr().to_string();
    let (code, stderr) = run(&["ping", &addr, "-n", "1", "--timeout", "1"]);
    assert_eq!(code, Some(4), "{stderr}");
    one_error_line(&stderr);
    assert!(stderr.contains("no echo"), "{stderr}");
}
