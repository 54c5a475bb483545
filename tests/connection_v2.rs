//! v2 over loopback: every type in both directions, large blobs.

mod common;

use common::{pair, server, T};
use serpy::{Connection, ConnectionBuilder, Error, Message, Mode, Protocol, Server, ServerBuilder};

fn v2_pair(max: usize) -> (Server, Connection, Connection) {
    let s = server(
        ServerBuilder::new()
            .protocol(Protocol::V2)
            .max_message_size(max),
    );
    let (c, p) = pair(
        &s,
        ConnectionBuilder::new()
            .protocol(Protocol::V2)
            .max_message_size(max),
    );
    (s, c, p)
}

fn samples() -> Vec<Message> {
    vec![
        123.into(),
        (-1).into(),
        i64::MIN.into(),
        12.35.into(),
        (-1e6).into(),
        f64::INFINITY.into(),
        5e-324.into(),
        "hello".into(),
        "yes µù".into(),
        "".into(),
        vec![0u8, 0xff, 0x1f].into(),
        Vec::<u8>::new().into(),
    ]
}

#[test]
fn every_type_both_ways() {
    let (_s, c, p) = v2_pair(1 << 20);
    for (from, to) in [(&c, &p), (&p, &c)] {
        for m in samples() {
            from.send(m.clone()).unwrap();
            let (got, mode) = to.get_data_with_mode(Some(T)).unwrap();
            assert_eq!(got, m);
            assert_eq!(mode, None);
        }
        from.send(f64::NAN).unwrap();
        assert!(to.get_data_timeout(T).unwrap().as_float().unwrap().is_nan());
    }
}

#[test]
fn acknowledged_modes_are_refused_over_v2() {
    let (_s, c, _p) = v2_pair(1 << 20);
    assert!(matches!(
        c.send_data("x", Mode::PlainAck),
        Err(Error::Unsupported { .. })
    ));
    let pickle = Message::Pickle(serpy::Bytes::from_static(b"\x80\x03K\x05."));
    assert!(matches!(c.send(pickle), Err(Error::Unsupported { .. })));
}

#[test]
fn blob_of_64_mib() {
    let size = 64 << 20;
    let (_s, c, p) = v2_pair(size);
    let blob: Vec<u8> = (0..size).map(|i| (i * 7 + i / 4096) as u8).collect();
    let blob = serpy::Bytes::from(blob);
    c.send(blob.clone()).unwrap();
    let got = p.get_data_timeout(T).unwrap();
    assert_eq!(got.as_bytes().map(<[u8]>::len), Some(size));
    assert!(got.as_bytes() == Some(&blob[..]), "blob corrupted");
}

/// Payloads of 256 KiB to 2 MiB have their checksum computed when they are written (by
/// the writer thread in a stream, by the caller when the link is idle), the others when
/// they are sent: every size around those bounds, alone and streamed back to back, goes
/// out as `v2::encode` frames it.
#[test]
fn large_payloads_are_framed_exactly_whoever_writes_them() {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = Connection::builder()
        .protocol(Protocol::V2)
        .max_message_size(4 << 20)
        .connect(listener.local_addr().unwrap())
        .unwrap();
    let (mut raw, _) = listener.accept().unwrap();
    raw.set_read_timeout(Some(T)).unwrap();
    let sizes = [
        (256 << 10) - 1,
        256 << 10,
        1 << 20,
        (2 << 20) - 1,
        2 << 20,
        (2 << 20) + 1,
    ];
    let messages: Vec<Message> = sizes
        .iter()
        .enumerate()
        .map(|(k, &n)| {
            let blob: Vec<u8> = (0..n).map(|i| (i * 31 + k * 7 + i / 999) as u8).collect();
            if k % 2 == 0 {
                Message::from(blob)
            } else {
                // Text too (its own type code), ASCII: as long as the blob.
                let text: String = blob.iter().map(|b| char::from(b'a' + b % 26)).collect();
                Message::from(text)
            }
        })
        .collect();
    let mut expected = serpy::protocol::WireBuf::new();
    for m in &messages {
        serpy::protocol::v2::encode(m, &mut expected).unwrap();
    }
    let expected = expected.to_vec();
    // Alone (each read whole before the next send: the link is idle), then streamed.
    let mut at = 0;
    for m in &messages {
        client.send_data(m.clone(), Mode::Plain).unwrap();
        let len = serpy::protocol::v2::HEADER_LEN + m.len();
        let mut got = vec![0u8; len];
        raw.read_exact(&mut got).unwrap();
        assert!(got == expected[at..at + len], "alone: {} bytes", m.len());
        at += len;
    }
    let sender = std::thread::spawn(move || {
        for m in messages {
            client.send_data(m, Mode::Plain).unwrap();
        }
        client
    });
    let mut got = vec![0u8; expected.len()];
    raw.read_exact(&mut got).unwrap();
    assert!(got == expected, "streamed");
    sender.join().unwrap().close();
}

/// Inside a large payload the receiving socket wakes its reader only once the rest of
/// the payload is there (its receive low-water mark): a small message sent once a
/// large one has arrived, one sent right after it, and a large one sent in two halves
/// with the receiver waiting between them, all arrive (a mark left above what is still
/// to come would keep them waiting).
#[test]
fn large_then_small_messages_all_arrive() {
    let (_s, c, p) = v2_pair(4 << 20);
    for len in [(256 << 10) - 1, 256 << 10, 1 << 20, (3 << 20) + 7] {
        let blob = serpy::Bytes::from((0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
        c.send(blob.clone()).unwrap();
        let got = p.get_data_timeout(T).unwrap();
        assert!(got.as_bytes() == Some(&blob[..]), "{len} bytes");
        // Waited for as the reader or a caller waits for the next header: promptly
        // (a mark left too high keeps the read waiting until its timeout, T at least
        // half, or for ever).
        let sent = std::time::Instant::now();
        c.send("alone").unwrap();
        assert_eq!(p.get_data_timeout(T).unwrap(), Message::from("alone"));
        assert!(
            sent.elapsed() < T / 2,
            "{len} bytes, then waited {:?}",
            sent.elapsed()
        );
        c.send(blob.clone()).unwrap();
        c.send("right after").unwrap();
        assert!(p.get_data_timeout(T).unwrap().as_bytes() == Some(&blob[..]));
        assert_eq!(p.get_data_timeout(T).unwrap(), Message::from("right after"));
    }
    // A large frame whose payload comes in two halves, the receiver waiting for it in
    // between: the first half's bytes are read, the rest waits for the second.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let rx = Connection::builder()
        .protocol(Protocol::V2)
        .max_message_size(4 << 20)
        .connect(listener.local_addr().unwrap())
        .unwrap();
    let (mut raw, _) = listener.accept().unwrap();
    let mut wire = serpy::protocol::WireBuf::new();
    let blob = vec![9u8; 1 << 20];
    serpy::protocol::v2::encode(&Message::from(blob.clone()), &mut wire).unwrap();
    serpy::protocol::v2::encode(&Message::from("after"), &mut wire).unwrap();
    let wire = wire.to_vec();
    let half = wire.len() / 2;
    use std::io::Write;
    raw.write_all(&wire[..half]).unwrap();
    assert!(matches!(
        rx.get_data_timeout(std::time::Duration::from_millis(50)),
        Err(Error::Timeout { .. })
    ));
    raw.write_all(&wire[half..]).unwrap();
    assert!(rx.get_data_timeout(T).unwrap().as_bytes() == Some(&blob[..]));
    assert_eq!(rx.get_data_timeout(T).unwrap(), Message::from("after"));
    rx.close();
}

#[test]
fn message_above_the_receivers_limit_is_reported_and_skipped() {
    let s = server(
        ServerBuilder::new()
            .protocol(Protocol::V2)
            .max_message_size(1000),
    );
    let (c, p) = pair(&s, ConnectionBuilder::new().protocol(Protocol::V2));
    c.send(vec![1u8; 5000]).unwrap();
    c.send("after").unwrap();
    assert_eq!(p.get_data_timeout(T).unwrap().as_str(), Some("after"));
    common::wait_event(&p, "protocol error", |e| {
        matches!(
            &e.kind,
            serpy::EventKind::ProtocolError(serpy::ProtocolError::TooLarge {
                size: 5000,
                max: 1000
            })
        )
    });
}
