//! The recorded Python exchanges replayed over real loopback sockets: a raw `TcpStream`
//! plays the original Python peer, byte for byte, against our `Server` and our client.
//! Where the codec tests prove the encoders and decoders, these prove that the threads put
//! exactly those bytes on the wire, answer SETMODE and acknowledged messages as a Python
//! peer expects, and deliver what the Python receiver delivered.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;

use common::vectors::{load, message_of, parse_bytes_repr, recorded_pickle, sent, Case, Sent};
use common::{server, T};
use serpy::{Connection, Error, Message, Mode, Protocol, ServerBuilder};

fn read_exact(raw: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    raw.read_exact(&mut buf)
        .expect("the expected bytes within the timeout");
    buf
}

fn raw_client(addr: std::net::SocketAddr) -> TcpStream {
    let raw = TcpStream::connect(addr).unwrap();
    raw.set_read_timeout(Some(T)).unwrap();
    raw
}

/// What the Python receiver delivered in `case`, checked against what we delivered.
fn check_delivered(case: &Case, got: &Message) {
    let want = &case.delivered[0];
    match parse_bytes_repr(want) {
        Some(bytes) => assert_eq!(got.as_bytes(), Some(&bytes[..]), "{}", case.name),
        // Python unpickled it; we deliver the pickle bytes that were sent.
        None => assert_eq!(
            got,
            &Message::Pickle(recorded_pickle(case)),
            "{}",
            case.name
        ),
    }
}

fn v1_server_answers_a_python_client(protocol: Protocol) {
    let s = server(ServerBuilder::new().protocol(protocol));
    let mut raw = raw_client(s.local_addr());
    let peer = s.get_connection_timeout(T).unwrap();
    for case in load() {
        match sent(&case) {
            Sent::Client(..) => {
                raw.write_all(&case.c2s.concat()).unwrap();
                // Our replies (ACKMODCG after SETMODE, ACKEOT!! after acknowledged data)
                // are exactly the recorded ones.
                let s2c = case.s2c.concat();
                assert_eq!(read_exact(&mut raw, s2c.len()), s2c, "{}", case.name);
                if !case.delivered.is_empty() {
                    check_delivered(&case, &peer.get_data_timeout(T).unwrap());
                }
            }
            Sent::Server(msg, mode) => {
                peer.send_data(msg, mode).unwrap();
                let s2c = case.s2c.concat();
                assert_eq!(read_exact(&mut raw, s2c.len()), s2c, "{}", case.name);
            }
        }
    }
    // The empty message of the last case was dropped: the next thing delivered is this.
    raw.write_all(b"end\x1f").unwrap();
    assert_eq!(peer.get_data_timeout(T).unwrap().as_str(), Some("end"));
}

#[test]
fn v1_server_answers_a_python_client_byte_for_byte() {
    v1_server_answers_a_python_client(Protocol::V1);
}

#[test]
fn auto_server_answers_a_python_v1_client_byte_for_byte() {
    v1_server_answers_a_python_client(Protocol::Auto);
}

#[test]
fn v1_client_talks_to_a_python_server_byte_for_byte() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = Connection::connect(listener.local_addr().unwrap()).unwrap();
    let (mut raw, _) = listener.accept().unwrap();
    raw.set_read_timeout(Some(T)).unwrap();
    for case in load() {
        match sent(&case) {
            Sent::Client(msg, mode) if msg.is_empty() => {
                // The original sends a bare 0x1F that never arrives; we refuse it.
                assert!(matches!(
                    client.send_data(msg, mode),
                    Err(Error::EmptyMessage { .. })
                ));
            }
            Sent::Client(msg, mode) => thread::scope(|scope| {
                // An acknowledged send returns only after the "Python server" answers.
                let sender = scope.spawn(|| client.send_data_timeout(msg, mode, T));
                let c2s = case.c2s.concat();
                assert_eq!(read_exact(&mut raw, c2s.len()), c2s, "{}", case.name);
                raw.write_all(&case.s2c.concat()).unwrap();
                sender.join().unwrap().expect("the send succeeds");
                assert_eq!(
                    case.sender_returned == "True",
                    mode.is_acked(),
                    "{}",
                    case.name
                );
            }),
            Sent::Server(msg, _) => {
                raw.write_all(&case.s2c.concat()).unwrap();
                assert_eq!(
                    client.get_data_timeout(T).unwrap().as_bytes(),
                    msg.as_bytes()
                );
            }
        }
    }
}

fn v2_cases() -> Vec<(String, Message, Vec<u8>)> {
    common::vectors::cases()
}

fn same(a: &Message, b: &Message) -> bool {
    match (a, b) {
        (Message::Float(x), Message::Float(y)) => {
            x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())
        }
        _ => a == b,
    }
}

#[test]
fn v2_server_reads_a_python_client() {
    for protocol in [Protocol::V2, Protocol::Auto] {
        let s = server(ServerBuilder::new().protocol(protocol));
        let mut raw = raw_client(s.local_addr());
        let peer = s.get_connection_timeout(T).unwrap();
        for (name, msg, wire) in v2_cases() {
            assert!(same(&message_of(&name), &msg));
            raw.write_all(&wire).unwrap();
            let got = peer.get_data_timeout(T).unwrap();
            assert!(same(&got, &msg), "{name}: got {got:?}");
        }
    }
}

#[test]
fn v2_client_writes_what_a_python_server_reads() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = Connection::builder()
        .protocol(Protocol::V2)
        .connect(listener.local_addr().unwrap())
        .unwrap();
    let (mut raw, _) = listener.accept().unwrap();
    raw.set_read_timeout(Some(T)).unwrap();
    for (name, msg, wire) in v2_cases() {
        client.send_data(msg, Mode::Plain).unwrap();
        assert_eq!(read_exact(&mut raw, wire.len()), wire, "{name}");
    }
}
