//! Streams of sends while the writer is busy: what a client puts on the wire for many
//! messages queued behind a large one (the small ones go into the outgoing queue's runs,
//! by the send path's fast path) is exactly what the codec writes for the same
//! messages, in the same order, SETMODE blocks included.

mod common;

use std::io::Read;
use std::net::{TcpListener, TcpStream};

use common::T;
use serpy::protocol::{v1, v2, WireBuf};
use serpy::{Bytes, Connection, Error, FullQueue, Message, Mode, Protocol, TextEncoding};

/// A listener whose accepted sockets have a small receive buffer, so that a large first
/// message keeps the client's writer busy until the test reads.
fn listener() -> TcpListener {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    socket2::SockRef::from(&listener)
        .set_recv_buffer_size(64 * 1024)
        .unwrap();
    listener
}

fn accept(listener: &TcpListener) -> TcpStream {
    let (raw, _) = listener.accept().unwrap();
    raw.set_read_timeout(Some(T)).unwrap();
    raw
}

/// Larger than what the socket buffers hold, so the sends after it are queued.
const HEAD: usize = 8 << 20;

/// The messages sent after the head, in order: small ones of each kind, ones the v1
/// encoder must send in base85, ones above the small-run size, and a few one byte long.
fn stream() -> Vec<Message> {
    let mut out = Vec::new();
    for i in 0..3000usize {
        out.push(match i % 9 {
            0 => Message::from(format!("text {i}")),
            1 => Message::Bytes(Bytes::from(vec![i as u8; i % 200 + 1])),
            // A separator inside the first 64 bytes, or after them (the send path's
            // scan looks at 64 bytes a step, then at the rest).
            2 => Message::from(format!("{}sep\x1f{i}", "w".repeat(i % 130))),
            3 => Message::from("\x01starts like a control block"),
            4 => Message::from("x".repeat(3000 + i)),
            5 => Message::Int(i as i64),
            6 => Message::from("µ".repeat(i % 1000 + 1)),
            7 => Message::from("y"),
            _ => Message::from("z".repeat(2047)),
        });
    }
    out
}

fn read_all(raw: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    raw.read_exact(&mut buf)
        .expect("the expected bytes within the timeout");
    buf
}

#[test]
fn a_v2_stream_behind_a_large_message_is_the_codecs_bytes_in_order() {
    let l = listener();
    let client = Connection::builder()
        .protocol(Protocol::V2)
        .outgoing_capacity(10_000)
        .connect(l.local_addr().unwrap())
        .unwrap();
    let mut raw = accept(&l);
    let head = Message::Bytes(Bytes::from(vec![7u8; HEAD]));
    let mut want = WireBuf::new();
    v2::encode(&head, &mut want).unwrap();
    client.send(head).unwrap();
    for m in stream() {
        v2::encode(&m, &mut want).unwrap();
        client.send(m).unwrap();
    }
    let want = want.to_vec();
    let got = read_all(&mut raw, want.len());
    assert!(got == want, "the frames arrive whole, in order, as encoded");
    client.close();
}

#[test]
fn a_v1_stream_behind_a_large_message_is_the_codecs_bytes_in_order() {
    let l = listener();
    let client = Connection::builder()
        .protocol(Protocol::V1)
        .outgoing_capacity(10_000)
        .connect(l.local_addr().unwrap())
        .unwrap();
    let mut raw = accept(&l);
    let mut enc = v1::Encoder::new(TextEncoding::Utf8, usize::MAX);
    let mut want = WireBuf::new();
    let head = Message::from("h".repeat(HEAD));
    enc.encode(&head, Mode::Plain, &mut want).unwrap();
    client.send_data(head, Mode::Plain).unwrap();
    for (i, m) in stream().into_iter().enumerate() {
        // Some in base85 on purpose, so that the link changes mode back and forth.
        let mode = if i % 13 == 0 {
            Mode::Base85
        } else {
            Mode::Plain
        };
        enc.encode(&m, mode, &mut want).unwrap();
        client.send_data(m, mode).unwrap();
    }
    // Refused, and nothing of it on the wire.
    assert!(matches!(
        client.send_data("", Mode::Plain),
        Err(Error::EmptyMessage { .. })
    ));
    let want = want.to_vec();
    let got = read_all(&mut raw, want.len());
    assert!(got == want, "the blocks arrive whole, in order, as encoded");
    client.close();
}

/// Reads one v2 frame: its payload.
fn read_frame(raw: &mut TcpStream) -> Vec<u8> {
    let header = read_all(raw, v2::HEADER_LEN);
    let len = u32::from_le_bytes(header[10..14].try_into().unwrap()) as usize;
    read_all(raw, len)
}

#[test]
fn keep_latest_holds_its_bound_for_small_sends_behind_a_large_message() {
    let l = listener();
    let client = Connection::builder()
        .protocol(Protocol::V2)
        .outgoing_capacity(1000)
        .full_queue(FullQueue::KeepLatest(4))
        .connect(l.local_addr().unwrap())
        .unwrap();
    let mut raw = accept(&l);
    client.send(Bytes::from(vec![7u8; HEAD])).unwrap();
    for i in 0..100 {
        client.send(format!("m{i}")).unwrap();
    }
    // Where the caller writes the first message itself while the writer is idle
    // (Linux), the large message has left the queue before the small ones come; where
    // every write is the writer's (`--cfg serpy_portable_send`, the Windows and macOS
    // path), it may still wait in the queue and be dropped as the oldest.
    let mut got = Vec::new();
    let mut head = false;
    while got.last().map(String::as_str) != Some("m99") {
        let frame = read_frame(&mut raw);
        if frame.len() == HEAD {
            assert!(
                got.is_empty() && !head,
                "the large message comes first, once"
            );
            head = true;
        } else {
            got.push(String::from_utf8(frame).unwrap());
        }
    }
    // While the writer writes the large message (8 MiB, more than the socket's buffers
    // hold before this end reads), at most 4 wait in the queue; a few may have left it
    // with the large message. Where the large message was dropped as the oldest, the
    // writer is free and may take small ones as they come (on a loaded machine, most
    // of them): then only the order, the last four and the count are checked.
    if head {
        assert!(got.len() < 50, "{} of 100 kept: {got:?}", got.len());
    }
    assert_eq!(&got[got.len() - 4..], ["m96", "m97", "m98", "m99"]);
    let order: Vec<usize> = got.iter().map(|m| m[1..].parse().unwrap()).collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "in order: {got:?}");
    assert_eq!(
        client.stats().dropped + got.len() as u64 + u64::from(head),
        101
    );
    client.close();
}

/// Two threads stream small messages (and now and then one above the run size, queued
/// by reference) into one connection whose queues are short, so that the senders often
/// wait for room while the writer writes: every message arrives exactly once, each
/// sender's in the order it sent them. Over v2 and v1 (text in mode 0: the same fast
/// path into the queue's runs).
#[test]
fn two_senders_streaming_small_messages_lose_nothing_and_keep_their_order() {
    for protocol in [Protocol::V2, Protocol::V1] {
        const EACH: usize = 20_000;
        let server = common::server(
            serpy::Server::builder()
                .protocol(protocol)
                .incoming_capacity(32),
        );
        let (client, peer) = common::pair(
            &server,
            Connection::builder()
                .protocol(protocol)
                .outgoing_capacity(64),
        );
        std::thread::scope(|s| {
            for sender in 0..2usize {
                let client = &client;
                s.spawn(move || {
                    for i in 0..EACH {
                        let text = if i % 97 == 0 {
                            format!("{sender} {i} {}", "p".repeat(3000))
                        } else {
                            format!("{sender} {i}")
                        };
                        client.send(text).expect("send");
                    }
                });
            }
            let mut next = [0usize; 2];
            for _ in 0..2 * EACH {
                let m = peer
                    .get_data_timeout(common::T)
                    .expect("every message arrives");
                let text = m.as_str().expect("text").to_string();
                let mut words = text.split(' ');
                let sender: usize = words.next().unwrap().parse().unwrap();
                let i: usize = words.next().unwrap().parse().unwrap();
                assert_eq!(
                    i, next[sender],
                    "{protocol:?}: sender {sender}'s messages arrive once each, in order"
                );
                next[sender] += 1;
            }
            assert_eq!(next, [EACH, EACH]);
        });
        assert!(
            peer.get_data_timeout(std::time::Duration::ZERO).is_err(),
            "{protocol:?}: nothing more"
        );
        client.close();
    }
}

/// A burst that fills the outgoing queue again and again (the sender waits for room,
/// the writer takes batches), then one message more and no further send: that last
/// message goes out by itself, after all the others, each once and in order (nothing
/// waits for a next send or a timer; the wait below is only an upper bound).
#[test]
fn the_last_message_after_a_burst_goes_out_without_another_send() {
    for protocol in [Protocol::V2, Protocol::V1] {
        const BURST: usize = 50_000;
        let server = common::server(serpy::Server::builder().protocol(protocol));
        let (client, peer) = common::pair(
            &server,
            Connection::builder()
                .protocol(protocol)
                .outgoing_capacity(16),
        );
        for i in 0..BURST {
            client.send(format!("{i}")).expect("send");
        }
        client.send("last").expect("send");
        for i in 0..BURST {
            let m = peer.get_data_timeout(T).expect("every message arrives");
            assert_eq!(
                m.as_str().expect("text"),
                i.to_string(),
                "{protocol:?}: in order"
            );
        }
        let last = peer.get_data_timeout(T).expect("the last message arrives");
        assert_eq!(last.as_str().expect("text"), "last", "{protocol:?}");
        client.close();
    }
}
