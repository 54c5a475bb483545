//! A tour of serpy in one process: a server and a client on 127.0.0.1, every v1 mode and
//! every v2 type in both directions, an acknowledged send, and a reconnect after the
//! server restarts. Run it with
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! It takes no arguments, prints what happens, and exits with 0 when all went as shown.

mod common;
// println! that ends quietly when stdout is closed (`--help | head -1`).
use common::println;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use serpy::pickle::Value;
use serpy::{Connection, Event, EventKind, Message, Mode, Protocol, Server};

const WAIT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        println!("quickstart: a tour of serpy in one process (no arguments).");
        println!("usage: cargo run --example quickstart");
        return ExitCode::SUCCESS;
    }
    match run() {
        Ok(()) => {
            println!("\nall done: serpy works on this machine.");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("quickstart failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    println!("== v1 (serpy): blocks, modes 0-5 ==");
    let server = Server::bind("127.0.0.1:0")?;
    println!("server listening on {}", server.local_addr());
    let client = Connection::connect(server.local_addr())?;
    let peer = server.get_connection_timeout(WAIT)?;
    println!(
        "client connected from {:?}",
        client.local_addr().map(|a| a.to_string())
    );

    // What a Python peer would send with sendData({'exposure': 10, 'gain': 2.5}, 5).
    let settings = Value::dict([("exposure", Value::from(10)), ("gain", Value::from(2.5))]);
    let samples: [(Message, Mode); 7] = [
        ("hello".into(), Mode::Plain),
        ("hello, acknowledged".into(), Mode::PlainAck),
        (vec![0u8, 0x1f, 0xff].into(), Mode::Base85),
        ("base85, acknowledged".into(), Mode::Base85Ack),
        (42.into(), Mode::Pickle),
        ("pickled, acknowledged".into(), Mode::PickleAck),
        (Message::pickle(&settings)?, Mode::PickleAck),
    ];
    for (from, to, who) in [
        (&client, &peer, "client -> server"),
        (&peer, &client, "server -> client"),
    ] {
        for (msg, mode) in &samples {
            let t = Instant::now();
            from.send_data(msg.clone(), *mode)?;
            let (got, got_mode) = to.get_data_with_mode(Some(WAIT))?;
            let mode_in = got_mode.map_or("-".to_string(), |m| m.to_string());
            println!(
                "{who}: mode {mode} sent {}, received {} in mode {mode_in}{}",
                describe(msg),
                describe(&got),
                if mode.is_acked() {
                    format!(" (acknowledged after {:?})", t.elapsed())
                } else {
                    String::new()
                }
            );
        }
    }

    println!("\n== v2 (serpy2): typed frames ==");
    let server2 = Server::builder()
        .protocol(Protocol::V2)
        .bind("127.0.0.1:0")?;
    let client2 = Connection::builder()
        .protocol(Protocol::V2)
        .connect(server2.local_addr())?;
    let peer2 = server2.get_connection_timeout(WAIT)?;
    let values: [Message; 5] = [
        123.into(),
        12.35.into(),
        "yes µù".into(),
        vec![1u8, 2, 3].into(),
        vec![7u8; 1 << 20].into(),
    ];
    for (from, to, who) in [
        (&client2, &peer2, "client -> server"),
        (&peer2, &client2, "server -> client"),
    ] {
        for v in &values {
            from.send(v.clone())?;
            let got = to.get_data_timeout(WAIT)?;
            if &got != v {
                return Err(format!("{who}: sent {v:?}, got {got:?}").into());
            }
            println!("{who}: {} arrived as sent", describe(&got));
        }
    }

    println!("\n== auto-restart: the server goes away and comes back ==");
    let addr = server2.local_addr();
    let client3 = Connection::builder()
        .protocol(Protocol::V2)
        .auto_restart(true)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .connect(addr)?;
    let events = client3.events();
    drop(peer2);
    server2.close_all();
    drop(server2);
    wait_for(&events, |e| {
        matches!(&e.kind, EventKind::Disconnected { .. })
    })?;
    println!("server stopped; the client saw the link go down and keeps its queue");
    for i in 0..3 {
        client3.send(format!("queued while down #{i}"))?;
    }
    let server3 = Server::builder().protocol(Protocol::V2).bind(addr)?;
    println!("server restarted on {addr}");
    let peer3 = server3.get_connection_timeout(WAIT)?;
    wait_for(&events, |e| {
        matches!(&e.kind, EventKind::Reconnected { .. })
    })?;
    for _ in 0..3 {
        println!(
            "after the reconnect the server got {}",
            describe(&peer3.get_data_timeout(WAIT)?)
        );
    }
    client3.close();
    server3.close_all();
    Ok(())
}

fn describe(m: &Message) -> String {
    match m {
        Message::Bytes(b) if b.len() > 64 => format!("{} bytes", b.len()),
        Message::Bytes(b) => match std::str::from_utf8(b) {
            Ok(s) => format!("{s:?}"),
            Err(_) => format!("bytes {:?}", b.as_ref()),
        },
        // Decoded safely: nothing in a pickle is ever executed (see serpy::pickle).
        Message::Pickle(b) => match m.to_value() {
            Ok(v) => format!("a pickle of {} bytes: {v}", b.len()),
            Err(e) => format!("a pickle of {} bytes that cannot be read ({e})", b.len()),
        },
        Message::Text(t) => format!("text {:?}", t.as_str()),
        Message::Int(i) => format!("int {i}"),
        Message::Float(f) => format!("float {f}"),
        // `Message` is #[non_exhaustive]: a kind added later is described by its name.
        other => format!("a {} message", other.kind()),
    }
}

fn wait_for(events: &serpy::Events, pred: impl Fn(&Event) -> bool) -> Result<(), String> {
    let deadline = Instant::now() + WAIT;
    while let Ok(e) = events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if pred(&e) {
            return Ok(());
        }
    }
    Err("an expected link event did not come".into())
}
