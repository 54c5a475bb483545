//! Hostile peers: a raw socket on the other side sends what no serpy peer would. Each case
//! must give a typed protocol error on the connection's events (or a typed error from the
//! call), must not make the decoders hold more than their bound, and must leave the server
//! serving its other clients.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{wait_event, T};
use serpy::protocol::{v1, v2, Decoder, Frame};
use serpy::{
    Bytes, Connection, ConnectionBuilder, Error, EventKind, Mode, Protocol, ProtocolError, Server,
    ServerBuilder,
};

/// The maximum message size of these servers.
const MAX: usize = 1024;

/// A server with one well-behaved client, and hostile peers connecting beside it.
struct Bench {
    server: Server,
    protocol: Protocol,
    good: Connection,
    good_peer: Connection,
    round: u32,
}

impl Bench {
    fn new(protocol: Protocol, builder: ServerBuilder) -> Bench {
        Bench::with_max(protocol, builder, MAX)
    }

    fn with_max(protocol: Protocol, builder: ServerBuilder, max: usize) -> Bench {
        let server = common::server(builder.protocol(protocol).max_message_size(max));
        let client_protocol = if protocol == Protocol::Auto {
            Protocol::V1
        } else {
            protocol
        };
        let (good, good_peer) =
            common::pair(&server, ConnectionBuilder::new().protocol(client_protocol));
        Bench {
            server,
            protocol: client_protocol,
            good,
            good_peer,
            round: 0,
        }
    }

    /// A raw peer, and the server's connection for it.
    fn hostile(&self) -> (TcpStream, Connection) {
        let raw = TcpStream::connect(self.server.local_addr()).expect("connect");
        let conn = self.server.get_connection_timeout(T).expect("accepted");
        (raw, conn)
    }

    /// The good client still gets an answer from the server.
    fn still_serves(&mut self) {
        self.round += 1;
        let text = format!("round {}", self.round);
        match self.protocol {
            Protocol::V2 => self.good.send(text.as_str()).unwrap(),
            _ => self
                .good
                .send_data_timeout(text.as_str(), Mode::PlainAck, T)
                .unwrap(),
        }
        let got = self
            .good_peer
            .get_data_timeout(T)
            .expect("the good client was served");
        assert_eq!(got.as_str(), Some(text.as_str()));
        self.good_peer.send("answer").unwrap();
        assert_eq!(
            self.good.get_data_timeout(T).unwrap().as_str(),
            Some("answer")
        );
    }
}

fn protocol_error(conn: &Connection, what: &str, pred: impl Fn(&ProtocolError) -> bool) {
    wait_event(
        conn,
        what,
        |e| matches!(&e.kind, EventKind::ProtocolError(p) if pred(p)),
    );
}

fn frame(code: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = v2::header(code, payload).to_vec();
    v.extend_from_slice(payload);
    v
}

/// After a bad frame, a good one from the same peer still arrives.
fn next_frame_arrives(raw: &mut TcpStream, conn: &Connection) {
    raw.write_all(&frame(v2::TYPE_TEXT, b"after")).unwrap();
    assert_eq!(conn.get_data_timeout(T).unwrap().as_str(), Some("after"));
}

#[test]
fn v2_garbage_bytes() {
    let mut b = Bench::new(Protocol::V2, ServerBuilder::new());
    let (mut raw, conn) = b.hostile();
    let garbage: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 200) as u8).collect();
    raw.write_all(&garbage).unwrap();
    protocol_error(&conn, "bad magic", |p| {
        matches!(p, ProtocolError::BadMagic { .. })
    });
    b.still_serves();
    next_frame_arrives(&mut raw, &conn);
    b.still_serves();
}

#[test]
fn v1_garbage_bytes() {
    let mut b = Bench::new(Protocol::V1, ServerBuilder::new());
    let (mut raw, conn) = b.hostile();
    // Control-looking garbage, then base85-mode garbage.
    raw.write_all(b"\x01\xff\xfe\x00garbage\x1f\x01SETMODE2\x1f\xff\xfe\"\x1f")
        .unwrap();
    protocol_error(&conn, "unknown control", |p| {
        matches!(p, ProtocolError::UnknownControl { .. })
    });
    protocol_error(&conn, "bad base85", |p| {
        matches!(
            p,
            ProtocolError::BadBase85 {
                mode: Mode::Base85,
                ..
            }
        )
    });
    b.still_serves();
    raw.write_all(b"VPaz\x1f").unwrap();
    assert_eq!(
        conn.get_data_timeout(T).unwrap().as_bytes(),
        Some(&b"abc"[..])
    );
}

#[test]
fn v2_header_claiming_4_gib_then_silence() {
    let mut b = Bench::new(Protocol::V2, ServerBuilder::new());
    let (mut raw, conn) = b.hostile();
    let mut header = v2::header(v2::TYPE_BYTES, b"").to_vec();
    header[10..14].copy_from_slice(&u32::MAX.to_le_bytes());
    raw.write_all(&header).unwrap();
    protocol_error(&conn, "too large", |p| {
        *p == ProtocolError::TooLarge {
            size: u64::from(u32::MAX),
            max: MAX,
        }
    });
    // The peer stays silent; the others are served meanwhile.
    b.still_serves();
    assert!(conn.is_connected());
    drop(raw);
    assert!(matches!(conn.get_data_timeout(T), Err(Error::Disconnected)));
    b.still_serves();

    // The decoder does not allocate for what the header claims: it holds nothing and
    // throws the bytes away as they come.
    let mut d = v2::Decoder::new(MAX);
    let mut out = Vec::new();
    d.decode(&header, &mut out);
    assert_eq!(d.buffered(), 0);
    for _ in 0..64 {
        d.decode(&[0xAB; 64 * 1024], &mut out);
        assert_eq!(d.buffered(), 0);
    }
    assert_eq!(out.len(), 1);
}

#[test]
fn v2_length_above_the_maximum() {
    let mut b = Bench::new(Protocol::V2, ServerBuilder::new());
    let (mut raw, conn) = b.hostile();
    let big = vec![b'x'; MAX + 1];
    raw.write_all(&frame(v2::TYPE_BYTES, &big)).unwrap();
    protocol_error(&conn, "too large", |p| {
        *p == ProtocolError::TooLarge {
            size: MAX as u64 + 1,
            max: MAX,
        }
    });
    // The oversized frame was skipped whole: the next one is read.
    next_frame_arrives(&mut raw, &conn);
    b.still_serves();
}

#[test]
fn v2_bad_checksum() {
    let mut b = Bench::new(Protocol::V2, ServerBuilder::new());
    let (mut raw, conn) = b.hostile();
    let mut f = frame(v2::TYPE_TEXT, b"hello");
    f[6] ^= 0x55;
    raw.write_all(&f).unwrap();
    protocol_error(&conn, "bad checksum", |p| {
        matches!(p, ProtocolError::BadChecksum { computed: 532, .. })
    });
    next_frame_arrives(&mut raw, &conn);
    b.still_serves();
}

#[test]
fn v2_invalid_utf8_text() {
    let mut b = Bench::new(Protocol::V2, ServerBuilder::new());
    let (mut raw, conn) = b.hostile();
    raw.write_all(&frame(v2::TYPE_TEXT, b"ok\xff\xfe")).unwrap();
    protocol_error(&conn, "invalid utf-8", |p| {
        *p == ProtocolError::InvalidUtf8 { valid_up_to: 2 }
    });
    next_frame_arrives(&mut raw, &conn);
    b.still_serves();
}

#[test]
fn v2_unknown_type_code() {
    let mut b = Bench::new(Protocol::V2, ServerBuilder::new());
    let (mut raw, conn) = b.hostile();
    raw.write_all(&frame(0x42, b"what")).unwrap();
    protocol_error(&conn, "unknown type", |p| {
        *p == ProtocolError::UnknownType { code: 0x42 }
    });
    next_frame_arrives(&mut raw, &conn);
    b.still_serves();
}

#[test]
fn v1_unknown_control_block() {
    let mut b = Bench::new(Protocol::V1, ServerBuilder::new());
    let (mut raw, conn) = b.hostile();
    raw.write_all(b"\x01HELLO\x1fafter\x1f").unwrap();
    protocol_error(&conn, "unknown control", |p| {
        *p == ProtocolError::UnknownControl {
            block: "HELLO".into(),
        }
    });
    assert_eq!(conn.get_data_timeout(T).unwrap().as_str(), Some("after"));
    b.still_serves();
}

#[test]
fn v1_setmode_with_a_bad_digit() {
    let mut b = Bench::new(Protocol::V1, ServerBuilder::new());
    let (mut raw, conn) = b.hostile();
    raw.write_all(b"\x01SETMODE9\x1f\x01SETMODE\x1f\x01SETMODE12\x1fplain\x1f")
        .unwrap();
    for arg in ["9", "", "12"] {
        protocol_error(&conn, "bad setmode", |p| {
            *p == ProtocolError::BadSetMode { arg: arg.into() }
        });
    }
    // The mode stayed 0: the next block is delivered raw, and nothing was answered.
    let (m, mode) = conn.get_data_with_mode(Some(T)).unwrap();
    assert_eq!((m.as_str(), mode), (Some("plain"), Some(Mode::Plain)));
    b.still_serves();
}

#[test]
fn v1_block_that_never_ends() {
    let mut b = Bench::new(Protocol::V1, ServerBuilder::new());
    let (mut raw, conn) = b.hostile();
    let endless = vec![b'a'; 64 * 1024];
    for _ in 0..16 {
        raw.write_all(&endless).unwrap();
    }
    protocol_error(&conn, "too large", |p| {
        matches!(p, ProtocolError::TooLarge { max: MAX, .. })
    });
    b.still_serves();
    // Once the block ends, the next one is read.
    raw.write_all(b"\x1fnext\x1f").unwrap();
    assert_eq!(conn.get_data_timeout(T).unwrap().as_str(), Some("next"));

    // The decoder's buffer stays within its limit whatever the chunking.
    let mut d = v1::Decoder::new(MAX);
    let mut out = Vec::new();
    for chunk in [1usize, 7, 1000, 4096] {
        for piece in endless.chunks(chunk).take(2000) {
            d.decode(piece, &mut out);
            assert!(
                d.buffered() <= d.limit(),
                "{} > {}",
                d.buffered(),
                d.limit()
            );
        }
    }
    // Also while collecting an acknowledged message over many blocks.
    let mut d = Decoder::new(Protocol::V1, MAX);
    d.decode(b"\x01SETMODE1\x1f", &mut out);
    for _ in 0..1000 {
        d.decode(b"abcdefgh\x1f", &mut out);
        assert!(d.buffered() <= v1::Decoder::new(MAX).limit());
    }
    assert!(out
        .iter()
        .any(|f| matches!(f, Frame::Error(ProtocolError::TooLarge { .. }))));
}

#[test]
fn a_peer_that_trickles_one_byte_per_second() {
    let mut b = Bench::new(Protocol::Auto, ServerBuilder::new());
    let (mut raw, conn) = b.hostile();
    // A few bytes, one per second; the good client is served between them.
    for &byte in b"hi\x1f" {
        let next = Instant::now() + Duration::from_secs(1);
        raw.write_all(&[byte]).unwrap();
        b.still_serves();
        // Wait for the deadline on a timer channel.
        let _ = crossbeam_channel::at(next).recv();
    }
    assert_eq!(conn.get_data_timeout(T).unwrap().as_str(), Some("hi"));
    assert_eq!(conn.protocol(), Protocol::V1);
    b.still_serves();
}

#[test]
fn a_peer_that_never_reads() {
    const CAPACITY: usize = 8;
    let mut b = Bench::with_max(
        Protocol::V2,
        ServerBuilder::new().outgoing_capacity(CAPACITY),
        1 << 20,
    );
    // A small receive buffer, so that the kernel holds little on its side.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    socket.connect(&b.server.local_addr().into()).unwrap();
    let rcvbuf = socket.recv_buffer_size().unwrap();
    let raw: TcpStream = socket.into();
    let conn = b.server.get_connection_timeout(T).unwrap();

    // Send until the queue is full; the queue bound holds: what was accepted fits in the
    // queue, one batch of the writer (at most 1 MiB) and the kernel's buffers.
    let blob = Bytes::from(vec![7u8; 256 * 1024]);
    let wmem_max: usize = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2).and_then(|n| n.parse().ok()))
        .unwrap_or(4 << 20);
    let bound = CAPACITY + 1 + (1 << 20) / blob.len() + (wmem_max + rcvbuf) / blob.len() + 2;
    let mut accepted = 0;
    let err = loop {
        match conn.send_data_timeout(blob.clone(), Mode::Plain, Duration::from_millis(300)) {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
        assert!(
            accepted <= bound,
            "accepted {accepted} messages, more than the bound {bound}"
        );
    };
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(accepted >= CAPACITY);
    // Still full: the next send fails the same way rather than growing the queue.
    assert!(matches!(
        conn.send_data_timeout(blob.clone(), Mode::Plain, Duration::from_millis(50)),
        Err(Error::Timeout { .. })
    ));
    // The others are not affected.
    b.still_serves();
    eprintln!("a peer that never reads: {accepted} messages of 256 KiB queued before the timeout (bound {bound})");
    drop(raw);
    assert!(matches!(conn.get_data_timeout(T), Err(Error::Disconnected)));
    b.still_serves();
}

#[test]
fn limits_have_safe_defaults_that_can_be_raised() {
    assert_eq!(serpy::DEFAULT_MAX_MESSAGE_SIZE, 64 << 20);
    assert_eq!(serpy::DEFAULT_MAX_CONNECTIONS, 1024);
    assert_eq!(serpy::DEFAULT_QUEUE_CAPACITY, 1024);
    // A frame above a server's maximum is skipped; a server with the maximum raised
    // takes it.
    let payload = vec![b'x'; MAX + 1];
    for (max, arrives) in [(MAX, false), (2 * MAX, true)] {
        let b = Bench::with_max(Protocol::V2, ServerBuilder::new(), max);
        let (mut raw, conn) = b.hostile();
        raw.write_all(&frame(v2::TYPE_BYTES, &payload)).unwrap();
        if arrives {
            assert_eq!(conn.get_data_timeout(T).unwrap().len(), MAX + 1);
        } else {
            protocol_error(&conn, "too large", |p| {
                matches!(p, ProtocolError::TooLarge { .. })
            });
        }
    }
}

#[test]
fn auto_detection_of_a_peer_that_stops_inside_the_magic() {
    let mut b = Bench::new(
        Protocol::Auto,
        ServerBuilder::new().detect_timeout(Duration::from_millis(200)),
    );
    let (mut raw, conn) = b.hostile();
    raw.write_all(&v2::MAGIC[..2]).unwrap();
    protocol_error(&conn, "detection timeout", |p| {
        *p == ProtocolError::DetectionTimeout
    });
    b.still_serves();
    // Taken as v1: the bytes so far start the first block.
    raw.write_all(b"x\x1f").unwrap();
    let got = conn.get_data_timeout(T).unwrap();
    assert_eq!(got.as_bytes(), Some(&b"\xde\xcax"[..]));
    assert_eq!(conn.protocol(), Protocol::V1);
}
