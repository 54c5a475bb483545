//! `serpy dump` between two peers of this crate (every v1 mode, v2), and between raw
//! sockets, asserting what it prints and that the bytes arrive unchanged.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread;

use common::{Running, WAIT};
use serpy::{Connection, Message, Mode, Protocol, Server};

/// Starts `serpy dump --once 127.0.0.1:0 TARGET [extra]` and returns it with its address.
fn dump(target: SocketAddr, extra: &[&str]) -> (Running, SocketAddr) {
    let target = target.to_string();
    let mut args = vec!["dump", "127.0.0.1:0", &target, "--once"];
    args.extend_from_slice(extra);
    let mut d = Running::start(&args);
    let addr = d.bound_addr();
    (d, addr)
}

/// The lines of one direction (`c>s` or `s>c`), without the `#N dir ` prefix.
fn side(lines: &[String], dir: &str) -> Vec<String> {
    let tag = format!(" {dir} ");
    lines
        .iter()
        .filter_map(|l| l.split_once(&tag).map(|(_, rest)| rest.to_string()))
        .collect()
}

#[test]
fn dump_between_v1_peers_in_every_mode() {
    let server = Server::builder()
        .protocol(Protocol::V1)
        .bind("127.0.0.1:0")
        .unwrap();
    let (mut d, addr) = dump(server.local_addr(), &[]);
    let client = Connection::connect(addr).unwrap();
    let sent: Vec<(Message, Mode)> = vec![
        (Message::from("plain"), Mode::Plain),
        (Message::from("acked"), Mode::PlainAck),
        (Message::from(vec![0u8, 0x1f, 0xff]), Mode::Base85),
        (Message::from("b85 acked"), Mode::Base85Ack),
        (Message::from(7), Mode::Pickle),
        (Message::from("pickled"), Mode::PickleAck),
    ];
    for (m, mode) in &sent {
        client.send_data(m.clone(), *mode).unwrap();
    }
    let peer = server.get_connection_timeout(WAIT).unwrap();
    let mut got = Vec::new();
    for _ in 0..sent.len() {
        got.push(peer.get_data_with_mode(Some(WAIT)).unwrap());
    }
    // What the server got is what was sent, in the mode it was sent in.
    assert_eq!(got[0], (Message::Bytes("plain".into()), Some(Mode::Plain)));
    assert_eq!(
        got[1],
        (Message::Bytes("acked".into()), Some(Mode::PlainAck))
    );
    assert_eq!(got[2].0.as_bytes(), Some(&[0u8, 0x1f, 0xff][..]));
    assert_eq!(got[3].0.as_str(), Some("b85 acked"));
    assert_eq!(
        got[4].0,
        Message::Pickle(serpy::Bytes::from_static(b"\x80\x03K\x07."))
    );
    assert_eq!(got[5].1, Some(Mode::PickleAck));
    client.close();
    peer.close();
    let lines = d.rest();
    let (status, stderr) = d.wait();
    assert!(status.success(), "{stderr}");

    let up = side(&lines, "c>s");
    let want_up = [
        "v1 data mode 0, 5 B: \"plain\"",
        "v1 SETMODE1",
        "v1 data mode 1, 5 B: \"acked\"",
        "v1 SETMODE2",
        "v1 data mode 2 (base85), 3 B: 00 1f ff |...|",
        "v1 SETMODE3",
        "v1 data mode 3 (base85), 9 B: \"b85 acked\"",
        "v1 SETMODE4",
        "v1 data mode 4 (base85 pickle), 5 B: 7",
        "v1 SETMODE5",
        "v1 data mode 5 (base85 pickle), 15 B: 'pickled'",
    ];
    assert_eq!(&up[..want_up.len()], &want_up[..], "{lines:#?}");
    assert!(
        up[want_up.len()].starts_with("end of stream after "),
        "{up:#?}"
    );
    let down = side(&lines, "s>c");
    let acks = |what: &str| down.iter().filter(|l| *l == what).count();
    assert_eq!(acks("v1 ACKMODCG"), 5, "{down:#?}");
    assert_eq!(acks("v1 ACKEOT!!"), 3, "{down:#?}");
    assert!(lines[0].contains(" open 127.0.0.1:"), "{lines:#?}");
    assert!(lines.last().unwrap().ends_with("closed"), "{lines:#?}");
}

#[test]
fn dump_between_v2_peers_keeps_up_with_1_mib_frames() {
    let server = Server::builder()
        .protocol(Protocol::V2)
        .bind("127.0.0.1:0")
        .unwrap();
    let (mut d, addr) = dump(server.local_addr(), &["--protocol", "v2"]);
    let client = Connection::builder()
        .protocol(Protocol::V2)
        .connect(addr)
        .unwrap();
    const FRAMES: usize = 16;
    let blob = |i: usize| -> Vec<u8> { (0..1 << 20).map(|j: usize| (j * 7 + i) as u8).collect() };
    client.send(42).unwrap();
    client.send("text").unwrap();
    client.send(-0.5).unwrap();
    for i in 0..FRAMES {
        client.send(blob(i)).unwrap();
    }
    let peer = server.get_connection_timeout(WAIT).unwrap();
    assert_eq!(peer.get_data_timeout(WAIT).unwrap(), Message::Int(42));
    assert_eq!(peer.get_data_timeout(WAIT).unwrap().as_str(), Some("text"));
    assert_eq!(peer.get_data_timeout(WAIT).unwrap(), Message::Float(-0.5));
    for i in 0..FRAMES {
        let m = peer.get_data_timeout(WAIT).unwrap();
        assert!(
            m.as_bytes() == Some(&blob(i)[..]),
            "frame {i} arrived changed"
        );
    }
    peer.send("back").unwrap();
    assert_eq!(
        client.get_data_timeout(WAIT).unwrap().as_str(),
        Some("back")
    );
    client.close();
    peer.close();
    let lines = d.rest();
    let up = side(&lines, "c>s");
    assert_eq!(up[0], "v2 frame int (0x01), 8 B, checksum ok: 42");
    assert_eq!(up[1], "v2 frame text (0x21), 4 B, checksum ok: \"text\"");
    assert_eq!(up[2], "v2 frame float (0x11), 21 B, checksum ok: -0.5");
    let big = up
        .iter()
        .filter(|l| l.starts_with("v2 frame bytes (0x81), 1.0 MiB, checksum ok: "))
        .count();
    assert_eq!(big, FRAMES, "{up:#?}");
    let total = 14 * (FRAMES + 3) + 8 + 4 + 21 + FRAMES * (1 << 20);
    assert!(
        up.contains(&format!("end of stream after {total} bytes")),
        "{up:#?}"
    );
    let down = side(&lines, "s>c");
    assert_eq!(down[0], "v2 frame text (0x21), 4 B, checksum ok: \"back\"");
}

fn v2_frame(code: u8, payload: &[u8], checksum: Option<u32>) -> Vec<u8> {
    let sum = checksum.unwrap_or_else(|| payload.iter().map(|&b| u32::from(b)).sum());
    let mut f = vec![0xDE, 0xCA, 0xFE, 0xCA, 0xFE, code];
    f.extend_from_slice(&sum.to_le_bytes());
    f.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    f.extend_from_slice(payload);
    f
}

/// Sends `up` from a raw client and `down` from a raw target through the dump, checks
/// that each side received exactly the other's bytes, and returns what the dump printed.
fn raw_through_dump(extra: &[&str], up: &[u8], down: &[u8]) -> Vec<String> {
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    let (mut d, addr) = dump(target.local_addr().unwrap(), extra);
    let mut client = TcpStream::connect(addr).unwrap();
    let (mut server, _) = target.accept().unwrap();
    let up_len = up.len();
    let reader = thread::spawn(move || {
        let mut got = vec![0u8; up_len];
        server.read_exact(&mut got).map(|()| (got, server))
    });
    client.write_all(up).unwrap();
    let (got, mut server) = reader.join().unwrap().unwrap();
    assert!(got == up, "the target got other bytes than the client sent");
    server.write_all(down).unwrap();
    let mut back = vec![0u8; down.len()];
    client.read_exact(&mut back).unwrap();
    assert!(
        back == down,
        "the client got other bytes than the target sent"
    );
    client.shutdown(Shutdown::Write).unwrap();
    // The target sees the end of the client's stream, then ends its own.
    let mut rest = Vec::new();
    server.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    drop(server);
    client.read_to_end(&mut rest).unwrap();
    let lines = d.rest();
    let (status, stderr) = d.wait();
    assert!(status.success(), "{stderr}");
    lines
}

#[test]
fn dump_forwards_v1_bytes_unchanged_and_decodes_control_blocks() {
    let up = b"hello\x1f\x01SETMODE1\x1fone\x04\x1f\x01SETMODE3\x1fVPaz\x04\x1f\x01HELLO\x1f\x01SETMODE2\x1fab\"cd\x1f\x01SETMODE0\x1fpartial";
    let down = b"\x01ACKMODCG\x1f\x01ACKEOT!!\x1f\x01ACKMODCG\x1f\x01ACKEOT!!\x1f";
    let lines = raw_through_dump(&[], up, down);
    let c2s = side(&lines, "c>s");
    let want = [
        "v1 data mode 0, 5 B: \"hello\"",
        "v1 SETMODE1",
        "v1 data mode 1, 3 B: \"one\"",
        "v1 SETMODE3",
        "v1 data mode 3 (base85), 3 B: \"abc\"",
        "v1 unknown control block \"HELLO\"; the receiver ignores it",
        "v1 SETMODE2",
    ];
    assert_eq!(&c2s[..want.len()], &want[..], "{lines:#?}");
    assert!(
        c2s[want.len()].starts_with("v1 block in mode 2 that is not base85 (bad base85 character"),
        "{c2s:#?}"
    );
    assert_eq!(c2s[want.len() + 1], "v1 SETMODE0");
    assert_eq!(
        c2s[want.len() + 2],
        "v1 7 bytes of an unfinished message at the end of the stream"
    );
    assert_eq!(
        c2s[want.len() + 3],
        format!("end of stream after {} bytes", up.len())
    );
    assert_eq!(
        side(&lines, "s>c"),
        [
            "v1 ACKMODCG",
            "v1 ACKEOT!!",
            "v1 ACKMODCG",
            "v1 ACKEOT!!",
            &format!("end of stream after {} bytes", down.len())
        ]
    );
}

#[test]
fn dump_forwards_v2_bytes_unchanged_and_shows_checksums_garbage_and_resync() {
    let mut up = v2_frame(0x21, b"hello", None);
    up.extend_from_slice(b"junk");
    up.extend(v2_frame(0x01, &42i64.to_le_bytes(), None));
    up.extend(v2_frame(0x81, b"abc", Some(5)));
    up.extend(v2_frame(0x77, b"x", None));
    up.extend(v2_frame(0x11, b"0x1.8p+1", None));
    let down = v2_frame(0x81, &[0, 1, 2, 255], None);
    let lines = raw_through_dump(&[], &up, &down);
    let c2s = side(&lines, "c>s");
    let want = [
        "v2 frame text (0x21), 5 B, checksum ok: \"hello\"",
        "v2 garbage: 4 bytes that are not a frame were skipped",
        "v2 resynchronised: frame int (0x01), 8 B, checksum ok: 42",
        "v2 frame bytes (0x81), 3 B: bad checksum: header says 0x00000005, payload sums to 0x00000126; the receiver drops the frame",
        "v2 frame of unknown type (0x77), 1 B: unknown type 0x77; the receiver drops the frame",
        "v2 frame float (0x11), 8 B, checksum ok: 3.0",
    ];
    assert_eq!(&c2s[..want.len()], &want[..], "{lines:#?}");
    assert_eq!(
        c2s[want.len()],
        format!("end of stream after {} bytes", up.len())
    );
    assert_eq!(
        side(&lines, "s>c")[0],
        "v2 frame bytes (0x81), 4 B, checksum ok: 00 01 02 ff |....|"
    );
}

#[test]
fn dump_to_an_unreachable_target_says_so() {
    let (mut d, addr) = dump(common::closed_port(), &["--connect-timeout", "5"]);
    let mut client = TcpStream::connect(addr).unwrap();
    let mut rest = Vec::new();
    // The dump closes the client once the target refused.
    let _ = client.read_to_end(&mut rest);
    let lines = d.rest();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("cannot connect to the target")),
        "{lines:#?}"
    );
    let (status, stderr) = d.wait();
    assert_eq!(status.code(), Some(3), "{stderr}");
    common::one_error_line(&stderr);
}

#[test]
fn dump_bounds_the_connections_it_proxies() {
    let server = Server::bind("127.0.0.1:0").unwrap();
    let target = server.local_addr().to_string();
    let mut d = Running::start(&["dump", "127.0.0.1:0", &target, "--max-connections", "1"]);
    let addr = d.bound_addr();
    let first = Connection::connect(addr).unwrap();
    first.send_data("through", Mode::PlainAck).unwrap(); // acknowledged: the session is up
    d.until("#1 open");
    let mut second = TcpStream::connect(addr).unwrap();
    let mut rest = Vec::new();
    second.read_to_end(&mut rest).unwrap(); // closed by the dump
    assert!(d.until("#2 refused")[..]
        .last()
        .unwrap()
        .contains("--max-connections"));
    first.send_data("still", Mode::PlainAck).unwrap();
    let peer = server.get_connection_timeout(WAIT).unwrap();
    assert_eq!(
        peer.get_data_timeout(WAIT).unwrap().as_str(),
        Some("through")
    );
    assert_eq!(peer.get_data_timeout(WAIT).unwrap().as_str(), Some("still"));
}

#[test]
fn dump_json_follows_its_schema() {
    let mut up = b"\x01SETMODE3\x1fVPaz\x04\x1f".to_vec();
    up.extend(b"\x01SETMODE0\x1fend\x1f");
    let down = b"\x01ACKMODCG\x1f\x01ACKEOT!!\x1f".to_vec();
    let lines = raw_through_dump(&["--json"], &up, &down);
    let v: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert!(v
        .iter()
        .all(|o| o["time"].as_f64().unwrap() > 1.6e9 && o["conn"] == 1));
    let of =
        |dir: &str| -> Vec<&serde_json::Value> { v.iter().filter(|o| o["dir"] == dir).collect() };
    let up_items = of("c>s");
    assert_eq!(up_items[0]["event"], "control");
    assert_eq!(up_items[0]["control"], "SETMODE");
    assert_eq!(up_items[0]["mode"], 3);
    assert_eq!(up_items[1]["event"], "message");
    assert_eq!(up_items[1]["protocol"], "v1");
    assert_eq!(up_items[1]["mode"], 3);
    assert_eq!(up_items[1]["value"], "abc");
    assert_eq!(up_items[1]["hex"], "616263");
    assert_eq!(up_items[3]["value"], "end");
    assert_eq!(up_items[4]["event"], "end");
    assert_eq!(up_items[4]["bytes"], up.len());
    assert_eq!(up_items[4]["error"], serde_json::Value::Null);
    let down_items = of("s>c");
    assert_eq!(down_items[0]["control"], "ACKMODCG");
    assert_eq!(down_items[1]["control"], "ACKEOT!!");
    assert_eq!(v[0]["event"], "open");
    assert_eq!(v.last().unwrap()["event"], "closed");

    // v2: a good frame after garbage, and a bad checksum (a stream that starts with
    // garbage is not recognised as v2 by auto: the protocol is given).
    let mut up = b"xx".to_vec();
    up.extend(v2_frame(0x01, &7i64.to_le_bytes(), None));
    up.extend(v2_frame(0x21, b"hi", Some(1)));
    let lines = raw_through_dump(&["--json", "--protocol", "v2"], &up, b"");
    let v: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let items: Vec<&serde_json::Value> = v.iter().filter(|o| o["dir"] == "c>s").collect();
    assert_eq!(items[0]["event"], "garbage");
    assert_eq!(items[0]["skipped"], 2);
    assert_eq!(items[1]["event"], "message");
    assert_eq!(items[1]["kind"], "int");
    assert_eq!(items[1]["value"], 7);
    assert_eq!(items[1]["type_code"], 1);
    assert_eq!(items[1]["frame_len"], 8);
    assert_eq!(items[1]["checksum"], "ok");
    assert_eq!(items[1]["resynchronised"], true);
    assert_eq!(items[2]["event"], "error");
    assert_eq!(items[2]["error"], "bad_checksum");
    assert_eq!(items[2]["expected"], 1);
    assert_eq!(items[2]["computed"], 0x68 + 0x69);
    assert_eq!(items[2]["type_code"], 0x21);
    assert_eq!(items[2]["frame_len"], 2);
}
