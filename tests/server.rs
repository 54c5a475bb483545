//! Server behaviour over loopback: many clients, limits, auto protocol, closing, restart.

mod common;

use std::collections::HashMap;
use std::thread;
use std::time::Duration;

use common::{pair, server, wait_event, T};
use serpy::{Connection, ConnectionBuilder, Error, EventKind, Mode, Protocol, ServerBuilder};

#[test]
fn hundred_clients_one_server() {
    let s = server(ServerBuilder::new());
    let clients: Vec<Connection> = (0..100)
        .map(|_| Connection::connect(s.local_addr()).unwrap())
        .collect();
    for (i, c) in clients.iter().enumerate() {
        c.send_data(format!("client {i}"), Mode::Plain).unwrap();
    }
    let mut seen = HashMap::new();
    for _ in 0..100 {
        let r = s.recv_any_timeout(T).expect("a message");
        r.connection
            .send_data(r.message.clone(), Mode::Plain)
            .unwrap();
        *seen
            .entry(r.message.as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 100);
    assert!(seen.values().all(|&n| n == 1));
    assert_eq!(s.len(), 100);
    for (i, c) in clients.iter().enumerate() {
        assert_eq!(
            c.get_data_timeout(T).unwrap().as_str(),
            Some(format!("client {i}").as_str())
        );
    }
}

#[test]
fn recv_any_is_fair_between_connections() {
    let s = server(ServerBuilder::new());
    let busy = Connection::connect(s.local_addr()).unwrap();
    let quiet = Connection::connect(s.local_addr()).unwrap();
    for i in 0..200 {
        busy.send_data(i, Mode::Plain).unwrap();
    }
    busy.send_data("flush", Mode::PlainAck).unwrap();
    quiet.send_data("me too", Mode::PlainAck).unwrap();
    // Both have data now; the quiet one must be served long before the busy one drains.
    let mut position = None;
    for n in 0..202 {
        let r = s.recv_any_timeout(T).unwrap();
        if r.message.as_str() == Some("me too") {
            position = Some(n);
            break;
        }
    }
    let position = position.expect("the quiet connection was served");
    assert!(
        position < 10,
        "served only after {position} messages of the busy one"
    );
}

#[test]
fn readable_connections_and_snapshot() {
    let s = server(ServerBuilder::new());
    let (a, _pa) = pair(&s, ConnectionBuilder::new());
    let (_b, _pb) = pair(&s, ConnectionBuilder::new());
    assert_eq!(s.connections().len(), 2);
    assert!(s.readable_connections().is_empty());
    a.send_data("x", Mode::PlainAck).unwrap();
    let readable = s.readable_connections();
    assert_eq!(readable.len(), 1);
    assert_eq!(readable[0].get_data().unwrap().as_str(), Some("x"));
    assert_eq!((&s).into_iter().count(), 2);
}

#[test]
fn closed_connections_drop_out_of_the_list() {
    let s = server(ServerBuilder::new());
    let (c, p) = pair(&s, ConnectionBuilder::new());
    assert_eq!(s.len(), 1);
    c.close();
    // The server side sees the end of the link.
    assert!(matches!(p.get_data_timeout(T), Err(Error::Disconnected)));
    assert_eq!(s.len(), 0);
}

#[test]
fn connection_limit_refuses_one_more_and_goes_on() {
    let s = server(ServerBuilder::new().max_connections(2));
    let (a, pa) = pair(&s, ConnectionBuilder::new());
    let (b, _pb) = pair(&s, ConnectionBuilder::new());
    let extra = Connection::connect(s.local_addr()).unwrap();
    // The extra one is accepted by the kernel and closed at once by the server.
    assert!(matches!(
        extra.get_data_timeout(T),
        Err(Error::Disconnected)
    ));
    assert!(matches!(s.try_get_connection(), Ok(None)));
    // The others are still served.
    a.send_data("still here", Mode::PlainAck).unwrap();
    assert_eq!(pa.get_data_timeout(T).unwrap().as_str(), Some("still here"));
    drop(b);
    // Room again once a client left.
    assert!(matches!(_pb.get_data_timeout(T), Err(Error::Disconnected)));
    let (late, pl) = pair(&s, ConnectionBuilder::new());
    late.send_data("in", Mode::PlainAck).unwrap();
    assert_eq!(pl.get_data_timeout(T).unwrap().as_str(), Some("in"));
}

#[test]
fn auto_server_serves_v1_and_v2_clients_at_once() {
    let s = server(ServerBuilder::new().protocol(Protocol::Auto));
    let v1 = Connection::builder()
        .protocol(Protocol::V1)
        .connect(s.local_addr())
        .unwrap();
    let v2 = Connection::builder()
        .protocol(Protocol::V2)
        .connect(s.local_addr())
        .unwrap();
    v1.send_data("from v1", Mode::PlainAck).unwrap();
    v2.send(2.5).unwrap();
    let mut got = 0;
    while got < 2 {
        let r = s.recv_any_timeout(T).unwrap();
        match r.connection.protocol() {
            Protocol::V1 => {
                assert_eq!(r.message.as_str(), Some("from v1"));
                r.connection.send_data("v1 reply", Mode::Base85Ack).unwrap();
            }
            Protocol::V2 => {
                assert_eq!(r.message, serpy::Message::Float(2.5));
                r.connection.send(7).unwrap();
            }
            other => panic!("protocol not detected: {other:?}"),
        }
        got += 1;
    }
    assert_eq!(v1.get_data_timeout(T).unwrap().as_str(), Some("v1 reply"));
    assert_eq!(v2.get_data_timeout(T).unwrap(), serpy::Message::Int(7));
}

#[test]
fn auto_server_holds_what_it_sends_until_the_protocol_is_known() {
    let s = server(ServerBuilder::new().protocol(Protocol::Auto));
    let c = Connection::builder()
        .protocol(Protocol::V2)
        .connect(s.local_addr())
        .unwrap();
    let p = s.get_connection_timeout(T).unwrap();
    assert_eq!(p.protocol(), Protocol::Auto);
    p.send("early").unwrap();
    c.send(1).unwrap();
    assert_eq!(p.get_data_timeout(T).unwrap(), serpy::Message::Int(1));
    assert_eq!(p.protocol(), Protocol::V2);
    assert_eq!(c.get_data_timeout(T).unwrap().as_str(), Some("early"));
}

#[test]
fn server_closed_while_clients_send() {
    let s = server(ServerBuilder::new());
    let clients: Vec<Connection> = (0..8)
        .map(|_| Connection::connect(s.local_addr()).unwrap())
        .collect();
    let senders: Vec<_> = clients
        .into_iter()
        .map(|c| {
            thread::spawn(move || {
                // Send until the link is gone; each call must return, none may hang.
                for i in 0..100_000 {
                    match c.send_data_timeout(i, Mode::Plain, T) {
                        Ok(()) => {}
                        Err(Error::Disconnected) => return true,
                        Err(e) => panic!("unexpected {e}"),
                    }
                }
                false
            })
        })
        .collect();
    let r = s.recv_any_timeout(T).unwrap();
    assert!(r.message.as_int().is_some());
    s.close_all();
    for h in senders {
        // Either the sender saw the end, or it finished its bounded loop first.
        let _saw_end = h.join().unwrap();
    }
}

#[test]
fn close_stops_accepting_but_keeps_connections() {
    let s = server(ServerBuilder::new());
    let (c, p) = pair(&s, ConnectionBuilder::new());
    s.close();
    s.close();
    assert!(
        Connection::connect(s.local_addr()).is_err()
            || !matches!(s.try_get_connection(), Ok(Some(_)))
    );
    c.send_data("still", Mode::PlainAck).unwrap();
    assert_eq!(p.get_data_timeout(T).unwrap().as_str(), Some("still"));
    s.close_all();
    assert!(!p.is_connected());
    assert!(matches!(
        s.recv_any_timeout(Duration::from_millis(10)),
        Err(Error::Closed)
    ));
}

#[test]
fn client_reconnects_after_server_restart_and_loses_nothing_queued() {
    for protocol in [Protocol::V1, Protocol::V2] {
        let s1 = server(ServerBuilder::new().protocol(protocol));
        let addr = s1.local_addr();
        let c = Connection::builder()
            .protocol(protocol)
            .auto_restart(true)
            .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(100))
            .connect(addr)
            .unwrap();
        let p1 = s1.get_connection_timeout(T).unwrap();
        c.send(1).unwrap();
        assert_eq!(p1.get_data_timeout(T).unwrap().as_int(), Some(1));
        wait_event(&c, "connected", |e| {
            matches!(&e.kind, EventKind::Connected { .. })
        });

        s1.close_all();
        drop(s1);
        wait_event(&c, "disconnected", |e| {
            matches!(
                &e.kind,
                EventKind::Disconnected {
                    reconnecting: true,
                    ..
                }
            )
        });
        // Queued while the server is away: none of it may be lost.
        for i in 0..50 {
            c.send_data_timeout(format!("queued {i}"), Mode::Plain, T)
                .unwrap();
        }
        let s2 = ServerBuilder::new()
            .protocol(protocol)
            .bind(addr)
            .expect("rebind the same port");
        let p2 = s2.get_connection_timeout(T).unwrap();
        wait_event(&c, "reconnected", |e| {
            matches!(&e.kind, EventKind::Reconnected { .. })
        });
        for i in 0..50 {
            let m = p2.get_data_timeout(T).unwrap();
            assert_eq!(
                m.as_str(),
                Some(format!("queued {i}").as_str()),
                "{protocol}"
            );
        }
        // Modes start again at 0 on the new link, so acknowledged sends work too.
        if protocol == Protocol::V1 {
            c.send_data("acked", Mode::Base85Ack).unwrap();
            assert_eq!(p2.get_data_timeout(T).unwrap().as_str(), Some("acked"));
        }
        assert!(c.is_connected());
    }
}

#[test]
fn acked_send_in_flight_when_the_link_breaks_gets_a_clear_error() {
    let s = server(ServerBuilder::new().incoming_capacity(1));
    let (c, p) = pair(&s, ConnectionBuilder::new());
    c.send_data("fills the queue", Mode::Plain).unwrap();
    let sender = thread::spawn({
        let c = c.clone();
        move || c.send_data_timeout("never acked", Mode::PlainAck, T)
    });
    // Break the link from the server side while the acknowledged send waits: whether
    // its bytes were written or not yet, the sender gets a clear error, and no hang.
    p.close();
    let r = sender.join().unwrap();
    assert!(
        matches!(
            r,
            Err(Error::AckUncertain | Error::Disconnected | Error::NotSent)
        ),
        "{r:?}"
    );
}

#[test]
fn give_up_after_attempts() {
    let s = server(ServerBuilder::new());
    let c = Connection::builder()
        .auto_restart(true)
        .reconnect_backoff(Duration::from_millis(1), Duration::from_millis(5))
        .give_up_after(Some(3))
        .connect(s.local_addr())
        .unwrap();
    drop(s);
    wait_event(&c, "gave up", |e| {
        matches!(&e.kind, EventKind::GaveUp { attempts: 3 })
    });
    assert!(matches!(c.get_data_timeout(T), Err(Error::Disconnected)));
}

#[test]
fn close_all_wakes_a_blocked_recv_any() {
    let s = std::sync::Arc::new(server(ServerBuilder::new()));
    let waiter = thread::spawn({
        let s = s.clone();
        move || s.recv_any()
    });
    let (_c, _p) = pair(&s, ConnectionBuilder::new());
    s.close_all();
    assert!(matches!(waiter.join().unwrap(), Err(Error::Closed)));
}

#[test]
fn close_returns_even_when_the_peer_never_reads() {
    use std::io::Read;
    use std::net::TcpListener;
    // A raw peer that accepts and never reads: the client's writes block once the socket
    // buffers are full.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = Connection::builder()
        .protocol(Protocol::V2)
        .close_timeout(Duration::from_millis(200))
        .outgoing_capacity(4)
        .connect(listener.local_addr().unwrap())
        .unwrap();
    let (mut raw, _) = listener.accept().unwrap();
    let blob = serpy::Bytes::from(vec![0u8; 1 << 20]);
    let mut refused = false;
    for _ in 0..200 {
        if let Err(e) = c.send_data_timeout(blob.clone(), Mode::Plain, Duration::from_millis(200)) {
            assert!(matches!(e, Error::Timeout { .. }), "{e}");
            refused = true;
            break;
        }
    }
    assert!(refused, "the bounded queue never filled");
    let started = std::time::Instant::now();
    c.close();
    assert!(
        started.elapsed() < T,
        "close() took {:?}",
        started.elapsed()
    );
    // The peer sees the end of the stream after what was written.
    raw.set_read_timeout(Some(T)).unwrap();
    let mut sink = Vec::new();
    let _ = raw.read_to_end(&mut sink);
}

#[test]
fn huge_timeouts_mean_no_deadline() {
    let (s, c, p) = {
        let s = server(ServerBuilder::new());
        let (c, p) = pair(&s, ConnectionBuilder::new());
        (s, c, p)
    };
    c.send_data_timeout("x", Mode::PlainAck, Duration::MAX)
        .unwrap();
    assert_eq!(
        p.get_data_timeout(Duration::MAX).unwrap().as_str(),
        Some("x")
    );
    c.send("y").unwrap();
    assert_eq!(
        s.recv_any_timeout(Duration::MAX).unwrap().message.as_str(),
        Some("y")
    );
}

#[test]
fn broadcast_reaches_every_connection_in_its_protocol() {
    let s = server(ServerBuilder::new().protocol(Protocol::Auto));
    let v1 = Connection::connect(s.local_addr()).unwrap();
    let v2 = ConnectionBuilder::new()
        .protocol(Protocol::V2)
        .connect(s.local_addr())
        .unwrap();
    let gone = Connection::connect(s.local_addr()).unwrap();
    // Each client speaks first, so that the server knows its protocol.
    for c in [&v1, &v2, &gone] {
        c.send("hello").unwrap();
    }
    let mut peers = Vec::new();
    for _ in 0..3 {
        peers.push(s.recv_any_timeout(T).unwrap().connection);
    }
    let gone_peer = peers
        .iter()
        .find(|p| p.peer_addr() == gone.local_addr())
        .unwrap();
    gone_peer.close();

    let blob = vec![0x1fu8; 100_000];
    assert_eq!(s.broadcast(blob.clone()).unwrap().sent(), 2);
    assert_eq!(s.broadcast(42).unwrap().sent(), 2);
    // v1 carries bytes as base85 and numbers as text; v2 keeps the types.
    assert_eq!(v1.get_data_timeout(T).unwrap().as_bytes(), Some(&blob[..]));
    assert_eq!(v1.get_data_timeout(T).unwrap().as_str(), Some("42"));
    assert_eq!(v2.get_data_timeout(T).unwrap().as_bytes(), Some(&blob[..]));
    assert_eq!(v2.get_data_timeout(T).unwrap().as_int(), Some(42));

    // A message that one protocol cannot carry goes to nobody.
    let pickle = serpy::Message::Pickle(serpy::Bytes::from_static(b"\x80\x03K\x01."));
    assert!(matches!(
        s.broadcast(pickle),
        Err(Error::Unsupported { .. })
    ));
    assert!(v1.get_data_timeout(Duration::from_millis(100)).is_err());
}

#[test]
fn address_errors_name_the_address() {
    // No port: refused while parsing, before any name lookup.
    let e = Connection::connect("127.0.0.1").unwrap_err();
    assert!(matches!(e, Error::Address { .. }), "{e}");
    assert!(e.to_string().contains("\"127.0.0.1\""), "{e}");
    let e = ServerBuilder::new().bind("127.0.0.1").unwrap_err();
    assert!(e.to_string().contains("\"127.0.0.1\""), "{e}");
}
