//! v1 over loopback: every mode in both directions, acknowledgements, concurrency.

mod common;

use std::sync::Arc;
use std::thread;

use common::{pair, server, T};
use std::time::Duration;

use serpy::{
    Connection, ConnectionBuilder, Error, EventKind, Message, Mode, Server, ServerBuilder,
};

fn v1_pair() -> (Server, Connection, Connection) {
    let s = server(ServerBuilder::new());
    let (c, p) = pair(&s, ConnectionBuilder::new());
    (s, c, p)
}

/// What a v1 receiver gets for `msg`: bytes (text and numbers as their text) or a pickle.
fn check_arrival(got: &Message, sent: &Message, mode: Mode) {
    match (sent, mode.is_pickle()) {
        (Message::Pickle(p), _) => assert_eq!(got, &Message::Pickle(p.clone())),
        (_, true) => assert!(matches!(got, Message::Pickle(_)), "{got:?}"),
        (Message::Int(i), false) => assert_eq!(got.as_int(), Some(*i)),
        (Message::Float(f), false) => assert_eq!(got.as_float(), Some(*f)),
        (other, false) => assert_eq!(
            got.as_bytes(),
            other.as_bytes(),
            "sent {other:?} in mode {mode}"
        ),
    }
}

fn every_mode_one_way(from: &Connection, to: &Connection) {
    let samples: Vec<Message> = vec![
        "hello".into(),
        "µé utf-8".into(),
        42.into(),
        (-1.5).into(),
        vec![0u8, 1, 0x1f, 0x04, 0xff].into(),
        "with\x1fseparator".into(),
        "\x01starts like control".into(),
    ];
    for mode in Mode::ALL {
        for msg in &samples {
            from.send_data(msg.clone(), mode)
                .unwrap_or_else(|e| panic!("send {msg:?} in mode {mode}: {e}"));
            if mode.is_acked() {
                // An acknowledged send returns only once the message was delivered.
                assert!(
                    to.is_data_available(),
                    "mode {mode}: returned before delivery"
                );
            }
            let (got, got_mode) = to.get_data_with_mode(Some(T)).expect("delivered");
            check_arrival(&got, msg, mode);
            let got_mode = got_mode.expect("v1 reports the mode");
            assert_eq!(
                got_mode.is_acked(),
                mode.is_acked(),
                "{msg:?} in mode {mode}"
            );
        }
    }
    // A pickle goes in a pickle mode whatever was asked.
    let pickle = Message::Pickle(serpy::Bytes::from_static(b"\x80\x03K\x05."));
    from.send_data(pickle.clone(), Mode::Plain).unwrap();
    let (got, m) = to.get_data_with_mode(Some(T)).unwrap();
    assert_eq!(got, pickle);
    assert_eq!(m, Some(Mode::Pickle));
}

#[test]
fn every_mode_client_to_server() {
    let (_s, c, p) = v1_pair();
    every_mode_one_way(&c, &p);
}

#[test]
fn every_mode_server_to_client() {
    let (_s, c, p) = v1_pair();
    every_mode_one_way(&p, &c);
}

#[test]
fn both_ends_switch_modes_at_once() {
    let (_s, c, p) = v1_pair();
    let (c, p) = (Arc::new(c), Arc::new(p));
    let mut handles = Vec::new();
    for (from, to) in [(c.clone(), p.clone()), (p.clone(), c.clone())] {
        handles.push(thread::spawn(move || {
            for i in 0..60u32 {
                // Modes 0-3 (4 and 5 would deliver the text as a pickle).
                let mode = Mode::ALL[(i % 4) as usize];
                from.send_data_timeout(format!("m{i}"), mode, T)
                    .expect("send");
            }
            for i in 0..60u32 {
                let got = to.get_data_timeout(T).expect("get");
                assert_eq!(got.as_str(), Some(format!("m{i}").as_str()));
            }
        }));
    }
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn concurrent_acknowledged_senders_each_get_their_answer() {
    let (_s, c, p) = v1_pair();
    let c = Arc::new(c);
    let threads = 4;
    let per = 50;
    let senders: Vec<_> = (0..threads)
        .map(|t| {
            let c = c.clone();
            thread::spawn(move || {
                for i in 0..per {
                    let mode = if i % 2 == 0 {
                        Mode::PlainAck
                    } else {
                        Mode::Base85Ack
                    };
                    c.send_data_timeout(format!("{t}:{i}"), mode, T)
                        .expect("acked send");
                }
            })
        })
        .collect();
    let mut seen = Vec::new();
    for _ in 0..threads * per {
        seen.push(p.get_data_timeout(T).unwrap().as_str().unwrap().to_string());
    }
    for h in senders {
        h.join().unwrap();
    }
    // Every message once, and each sender's messages in its own order.
    assert_each_sender_in_order(&seen, threads, per);
}

/// Every message `t:i` of `threads` senders arrived once, each sender's in its own order.
fn assert_each_sender_in_order(seen: &[String], threads: usize, per: usize) {
    for t in 0..threads {
        let mine: Vec<_> = seen
            .iter()
            .filter(|s| s.starts_with(&format!("{t}:")))
            .cloned()
            .collect();
        let want: Vec<_> = (0..per).map(|i| format!("{t}:{i}")).collect();
        assert_eq!(mine, want);
    }
}

#[test]
fn acknowledged_send_times_out_when_the_peer_does_not_read() {
    let s = server(ServerBuilder::new().incoming_capacity(1));
    let (c, _p) = pair(&s, ConnectionBuilder::new());
    // The peer's queue holds one message; the second cannot be delivered, so no ack.
    c.send_data("first", Mode::Plain).unwrap();
    let r = c.send_data_timeout(
        "second",
        Mode::PlainAck,
        std::time::Duration::from_millis(300),
    );
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
}

#[test]
fn empty_message_is_refused_where_it_would_vanish() {
    let (_s, c, p) = v1_pair();
    assert!(matches!(
        c.send_data("", Mode::Plain),
        Err(Error::EmptyMessage { .. })
    ));
    assert!(matches!(
        c.send_data(Vec::<u8>::new(), Mode::Base85),
        Err(Error::EmptyMessage { .. })
    ));
    // In an acknowledged mode it does arrive.
    c.send_data("", Mode::PlainAck).unwrap();
    assert_eq!(p.get_data_timeout(T).unwrap().as_bytes(), Some(&b""[..]));
}

#[test]
fn ascii_connection_refuses_non_ascii_text() {
    let s = server(ServerBuilder::new());
    let (c, _p) = pair(
        &s,
        ConnectionBuilder::new().encoding(serpy::TextEncoding::Ascii),
    );
    assert!(matches!(c.send("µ"), Err(Error::Encoding { .. })));
    c.send("plain").unwrap();
}

#[test]
fn too_large_messages_are_refused_before_sending() {
    let s = server(ServerBuilder::new());
    let (c, _p) = pair(&s, ConnectionBuilder::new().max_message_size(10));
    let r = c.send(vec![0u8; 11]);
    assert!(
        matches!(r, Err(Error::MessageTooLarge { size: 11, max: 10 })),
        "{r:?}"
    );
}

#[test]
fn peer_closing_gives_disconnected_after_the_data_is_read() {
    let (s, c, p) = v1_pair();
    p.send_data("last words", Mode::PlainAck).unwrap();
    p.close();
    drop(s);
    assert_eq!(c.get_data_timeout(T).unwrap().as_str(), Some("last words"));
    assert!(matches!(c.get_data_timeout(T), Err(Error::Disconnected)));
    assert!(!c.is_connected());
    assert!(matches!(c.send("x"), Err(Error::Disconnected)));
}

#[test]
fn iterators() {
    let (_s, c, p) = v1_pair();
    for i in 0..5 {
        c.send_data(i, Mode::PlainAck).unwrap();
    }
    let got: Vec<i64> = p.try_iter().map(|m| m.as_int().unwrap()).collect();
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
    c.send("a").unwrap();
    c.close();
    let rest: Vec<_> = p.iter().collect();
    assert_eq!(rest.len(), 1);
}

#[test]
fn handles_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Connection>();
    check::<Server>();
    check::<serpy::Events>();
    check::<Error>();
    check::<serpy::Event>();
    check::<serpy::Message>();
    check::<serpy::Received>();
    check::<serpy::Broadcast>();
    check::<serpy::ConnectionBuilder>();
    check::<serpy::ServerBuilder>();
    check::<serpy::Stats>();
    check::<serpy::Messages<'static>>();
}

#[test]
// The hash is the handle's identity, which never changes: the interior mutability
// behind the handle does not touch it (clippy cannot see that).
#[allow(clippy::mutable_key_type)]
fn connections_hash_as_they_compare() {
    use std::collections::HashSet;
    let (_s, c, p) = v1_pair();
    let set: HashSet<Connection> = [c.clone(), c.clone(), p.clone()].into_iter().collect();
    assert_eq!(set.len(), 2, "clones are one key, two connections two");
    assert!(set.contains(&c) && set.contains(&p));
}

#[test]
fn iterating_a_borrowed_connection_gives_its_messages_until_it_is_gone() {
    let (_s, c, p) = v1_pair();
    c.send("a").unwrap();
    c.send("b").unwrap();
    c.close();
    let mut got = Vec::new();
    for m in &p {
        got.push(m.as_str().unwrap().to_string());
    }
    assert_eq!(got, ["a", "b"]);
    assert!(matches!(p.try_get_data(), Err(Error::Disconnected)));
}

#[test]
fn acked_and_plain_sends_from_many_threads_keep_each_threads_order() {
    // Acknowledged sends may be written by their caller and replies by the reader when
    // the writer thread is idle; with traffic both ways, order and answers must hold.
    let (_s, c, p) = v1_pair();
    let threads = 4;
    let per = 200;
    let modes = [Mode::Plain, Mode::PlainAck, Mode::Base85, Mode::Base85Ack];
    let back = {
        let p = p.clone();
        thread::spawn(move || {
            for i in 0..per {
                p.send_data(format!("back:{i}"), modes[i % 4])
                    .expect("send back");
            }
        })
    };
    let senders: Vec<_> = (0..threads)
        .map(|t| {
            let c = c.clone();
            thread::spawn(move || {
                for i in 0..per {
                    c.send_data(format!("{t}:{i}"), modes[(i + t) % 4])
                        .expect("send");
                }
            })
        })
        .collect();
    let mut seen = Vec::new();
    for _ in 0..threads * per {
        seen.push(p.get_data_timeout(T).unwrap().as_str().unwrap().to_string());
    }
    for i in 0..per {
        assert_eq!(
            c.get_data_timeout(T).unwrap().as_str(),
            Some(format!("back:{i}").as_str())
        );
    }
    for h in senders {
        h.join().unwrap();
    }
    back.join().unwrap();
    assert_each_sender_in_order(&seen, threads, per);
}

#[test]
fn incoming_byte_budget_holds_back_the_reader_until_the_program_reads() {
    let s = server(ServerBuilder::new().incoming_bytes(1000));
    let (c, p) = pair(&s, ConnectionBuilder::new());
    let block = "x".repeat(400);
    // Acknowledged sends show when a message was delivered into the incoming queue.
    c.send_data_timeout(block.as_str(), Mode::PlainAck, T)
        .unwrap();
    c.send_data_timeout(block.as_str(), Mode::PlainAck, T)
        .unwrap();
    // 800 bytes wait; 400 more would pass the 1000-byte budget, so the third is held in
    // the socket and not acknowledged while the program does not read.
    let short = std::time::Duration::from_millis(300);
    let r = c.send_data_timeout("y".repeat(400), Mode::PlainAck, short);
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    for _ in 0..2 {
        let m = p.get_data_timeout(T).unwrap();
        assert_eq!(m.as_str(), Some(block.as_str()));
    }
    // Reading made room: the third arrives, and acknowledged sends work again.
    assert_eq!(
        p.get_data_timeout(T).unwrap().as_str(),
        Some("y".repeat(400).as_str())
    );
    c.send_data_timeout("after", Mode::PlainAck, T).unwrap();
    assert_eq!(p.get_data_timeout(T).unwrap().as_str(), Some("after"));
}

#[test]
fn a_message_larger_than_the_budget_still_arrives_alone() {
    let s = server(ServerBuilder::new().incoming_bytes(10));
    let (c, p) = pair(&s, ConnectionBuilder::new());
    c.send_data_timeout("a".repeat(100), Mode::PlainAck, T)
        .unwrap();
    assert_eq!(p.get_data_timeout(T).unwrap().len(), 100);
}

#[test]
fn try_calls_tell_nothing_waiting_from_gone() {
    let (s, c, p) = v1_pair();
    let events = c.events();
    // The link is up: nothing waiting is Ok(None) everywhere.
    assert!(matches!(c.try_get_data(), Ok(None)));
    assert!(matches!(s.try_get_connection(), Ok(None)));
    assert!(matches!(s.try_recv_any(), Ok(None)));
    assert!(matches!(
        events.recv().map(|e| e.kind),
        Ok(EventKind::Connected { .. })
    ));
    assert!(matches!(events.try_recv(), Ok(None)));
    // The peer goes: the link is down for good, the events end with Disconnected.
    p.close();
    let rest: Vec<_> = events.iter().collect();
    assert!(
        rest.iter().any(|e| matches!(
            e.kind,
            EventKind::Disconnected {
                reconnecting: false,
                ..
            }
        )),
        "{rest:?}"
    );
    assert!(matches!(events.try_recv(), Err(Error::Disconnected)));
    assert!(matches!(events.recv(), Err(Error::Disconnected)));
    assert!(matches!(
        events.recv_timeout(Duration::from_secs(60)),
        Err(Error::Disconnected)
    ));
    assert!(matches!(c.try_get_data(), Err(Error::Disconnected)));
    // The program closes: Closed.
    c.close();
    assert!(matches!(c.try_get_data(), Err(Error::Closed)));
    s.close_all();
    assert!(matches!(s.try_recv_any(), Err(Error::Closed)));
    assert!(matches!(s.try_get_connection(), Err(Error::Closed)));
    let server_events = s.events();
    while let Ok(Some(_)) = server_events.try_recv() {}
    assert!(matches!(server_events.try_recv(), Err(Error::Closed)));
}
