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
