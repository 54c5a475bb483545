//! Issue 10, the incoming side: liveness (idle timeout and keep-alive), servers that
//! protect their slots, the first connect in the background, and events in one place.
//!
//! Timings are upper bounds only (`T`), or lower bounds that follow from what is
//! configured (an idle timeout cannot fire before it has passed).

mod common;

use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::{pair, server, wait_event, T};
use serpy::{ConnectionBuilder, EventKind, Mode, Protocol, ServerBuilder};

/// A short idle timeout: a bound of what is asserted, never a pause.
const IDLE: Duration = Duration::from_millis(300);

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

// ---------------------------------------------------------------- item 4: liveness

#[test]
fn a_silent_peer_is_declared_dead_and_a_client_with_auto_restart_reconnects() {
    // A "hung" peer: it accepts and never sends a byte, as a frozen process would.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let started = Instant::now();
    let client = ConnectionBuilder::new()
        .idle_timeout(Some(IDLE))
        .auto_restart(true)
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(50))
        .connect(listener.local_addr().unwrap())
        .unwrap();
    let (_first, _) = listener.accept().unwrap();
    let e = wait_event(&client, "IdleTimeout", |e| {
        matches!(e.kind, EventKind::IdleTimeout { .. })
    });
    assert!(
        started.elapsed() >= IDLE,
        "declared dead after {:?}, before the idle timeout",
        started.elapsed()
    );
    assert_eq!(e.kind, EventKind::IdleTimeout { after: IDLE });
    assert_eq!(e.id, client.id());
    wait_event(&client, "Disconnected", |e| {
        matches!(
            &e.kind,
            EventKind::Disconnected {
                reconnecting: true,
                ..
            }
        )
    });
    let (_second, _) = listener.accept().unwrap();
    wait_event(&client, "Reconnected", |e| {
        matches!(e.kind, EventKind::Reconnected { .. })
    });
    client.close();
}

#[test]
fn without_auto_restart_an_idle_timeout_ends_the_link_for_good() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = ConnectionBuilder::new()
        .idle_timeout(Some(IDLE))
        .connect(listener.local_addr().unwrap())
        .unwrap();
    let (_raw, _) = listener.accept().unwrap();
    let r = client.get_data_timeout(T);
    assert!(matches!(r, Err(serpy::Error::Disconnected)), "{r:?}");
    assert!(!client.is_connected());
}

#[test]
fn a_quiet_v1_link_sends_keep_alives_that_deliver_nothing() {
    // Long enough that a loaded machine writes the first keep-alive (due at a third of
    // it) well before the link is declared dead.
    let idle = Duration::from_millis(1500);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = ConnectionBuilder::new()
        .idle_timeout(Some(idle))
        .connect(listener.local_addr().unwrap())
        .unwrap();
    let (mut raw, _) = listener.accept().unwrap();
    raw.set_read_timeout(Some(T)).unwrap();
    // The raw peer is silent, so the client ends the link after `idle`; before that, it
    // has written at least one keep-alive: lone 0x1F bytes only.
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        match raw.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(!got.is_empty(), "no keep-alive before the idle timeout");
    assert!(got.iter().all(|&b| b == 0x1f), "{got:?}");
    client.close();
}

#[test]
fn two_serpy_peers_with_an_idle_timeout_keep_a_quiet_link_alive() {
    // Long enough that a loaded machine does not miss three keep-alives in a row.
    let idle = Duration::from_millis(1500);
    let s = server(ServerBuilder::new().idle_timeout(Some(idle)));
    let (client, peer) = pair(&s, ConnectionBuilder::new().idle_timeout(Some(idle)));
    // Three idle timeouts of silence from both programs: the keep-alives carry it.
    let events = client.events();
    let deadline = Instant::now() + idle * 3;
    while let Ok(e) = events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        assert!(
            !matches!(
                e.kind,
                EventKind::IdleTimeout { .. } | EventKind::Disconnected { .. }
            ),
            "{e}"
        );
    }
    assert!(client.is_connected() && peer.is_connected());
    // The keep-alives delivered nothing, and the link carries messages as before.
    assert!(peer.try_get_data().unwrap().is_none());
    assert!(client.try_get_data().unwrap().is_none());
    client.send_data("still here", Mode::PlainAck).unwrap();
    assert_eq!(
        peer.get_data_timeout(T).unwrap().as_str(),
        Some("still here")
    );
    peer.send("me too").unwrap();
    assert_eq!(client.get_data_timeout(T).unwrap().as_str(), Some("me too"));
}

#[test]
fn v2_sends_no_keep_alive_and_declares_a_silent_peer_dead() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = ConnectionBuilder::new()
        .protocol(Protocol::V2)
        .idle_timeout(Some(IDLE))
        .connect(listener.local_addr().unwrap())
        .unwrap();
    let (mut raw, _) = listener.accept().unwrap();
    raw.set_read_timeout(Some(T)).unwrap();
    let mut got = Vec::new();
    let r = raw.read_to_end(&mut got);
    assert!(
        r.is_ok() || r.as_ref().is_err_and(|e| !is_timeout(e)),
        "the link was not ended: {r:?}"
    );
    assert!(got.is_empty(), "a v2 link wrote {got:?}");
    wait_event(&client, "IdleTimeout", |e| {
        matches!(e.kind, EventKind::IdleTimeout { .. })
    });
}

#[test]
fn a_peer_that_sends_keeps_the_idle_timer_from_firing() {
    // A Python-like peer that sends a message more often than the idle timeout.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let idle = Duration::from_millis(1500);
    let client = ConnectionBuilder::new()
        .idle_timeout(Some(idle))
        .connect(listener.local_addr().unwrap())
        .unwrap();
    let (mut raw, _) = listener.accept().unwrap();
    for i in 0..6 {
        raw.write_all(format!("tick {i}\x1f").as_bytes()).unwrap();
        // The message itself is the pacing: the next goes once this one arrived, and
        // the idle timer must not fire in between.
        let m = client.get_data_timeout(T).unwrap();
        assert_eq!(m.as_str(), Some(format!("tick {i}").as_str()));
        let _ = client.get_data_timeout(idle / 3);
    }
    assert!(client.is_connected());
    client.close();
}

// ------------------------------------------------- item 5: servers protect their slots

#[test]
fn a_connection_that_sends_no_whole_first_message_in_time_is_closed() {
    let first = Duration::from_millis(300);
    let s = server(ServerBuilder::new().first_message_timeout(Some(first)));
    let started = Instant::now();
    let mut raw = std::net::TcpStream::connect(s.local_addr()).unwrap();
    raw.write_all(b"x").unwrap(); // one byte: never a whole block
    raw.set_read_timeout(Some(T)).unwrap();
    let peer = s.get_connection_timeout(T).unwrap();
    let e = wait_event(&peer, "Unproven", |e| {
        matches!(e.kind, EventKind::Unproven { .. })
    });
    assert!(
        started.elapsed() >= first,
        "closed after {:?}",
        started.elapsed()
    );
    assert_eq!(e.id, peer.id());
    let mut rest = Vec::new();
    let r = raw.read_to_end(&mut rest);
    assert!(
        r.is_ok() || r.as_ref().is_err_and(|e| !is_timeout(e)),
        "the server did not close it: {r:?}"
    );
    let r = peer.get_data_timeout(T);
    assert!(matches!(r, Err(serpy::Error::Disconnected)), "{r:?}");
}

#[test]
fn an_auto_server_closes_a_socket_that_says_nothing_before_detection() {
    let first = Duration::from_millis(300);
    let s = server(
        ServerBuilder::new()
            .protocol(Protocol::Auto)
            .first_message_timeout(Some(first)),
    );
    let started = Instant::now();
    let mut raw = std::net::TcpStream::connect(s.local_addr()).unwrap();
    raw.set_read_timeout(Some(T)).unwrap();
    let peer = s.get_connection_timeout(T).unwrap();
    wait_event(&peer, "Unproven", |e| {
        matches!(e.kind, EventKind::Unproven { .. })
    });
    assert!(
        started.elapsed() >= first,
        "closed after {:?}",
        started.elapsed()
    );
    let mut rest = Vec::new();
    let r = raw.read_to_end(&mut rest);
    assert!(
        r.is_ok() || r.as_ref().is_err_and(|e| !is_timeout(e)),
        "the server did not close it: {r:?}"
    );
    assert!(rest.is_empty(), "{rest:?}");
}

#[test]
fn a_connection_that_spoke_in_time_stays() {
    let first = Duration::from_millis(300);
    let s = server(ServerBuilder::new().first_message_timeout(Some(first)));
    let (client, peer) = pair(&s, ConnectionBuilder::new());
    client.send("hello").unwrap();
    assert_eq!(peer.get_data_timeout(T).unwrap().as_str(), Some("hello"));
    // Three timeouts later it is still there: the deadline ended with the first message.
    let events = peer.events();
    let deadline = Instant::now() + first * 3;
    while let Ok(e) = events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        assert!(
            !matches!(
                e.kind,
                EventKind::Unproven { .. } | EventKind::Disconnected { .. }
            ),
            "{e}"
        );
    }
    peer.send("still here").unwrap();
    assert_eq!(
        client.get_data_timeout(T).unwrap().as_str(),
        Some("still here")
    );
}

#[test]
fn sockets_that_never_speak_cannot_crowd_out_the_connections_that_did() {
    const MAX_UNPROVEN: usize = 3;
    const FLOOD: usize = 20;
    let s = server(
        ServerBuilder::new()
            .max_connections(8)
            .max_unproven(MAX_UNPROVEN),
    );
    let events = s.events();
    let a = ConnectionBuilder::new().connect(s.local_addr()).unwrap();
    let b = ConnectionBuilder::new().connect(s.local_addr()).unwrap();
    for (i, c) in [&a, &b].into_iter().enumerate() {
        c.send_data(format!("I am {i}"), Mode::PlainAck).unwrap();
    }
    // A flood: each socket sends one byte, never a whole block.
    let flood: Vec<std::net::TcpStream> = (0..FLOOD)
        .map(|_| {
            let mut raw = std::net::TcpStream::connect(s.local_addr()).unwrap();
            raw.write_all(b"x").unwrap();
            raw
        })
        .collect();
    // A real client after the flood gets in and is heard.
    let late = ConnectionBuilder::new().connect(s.local_addr()).unwrap();
    late.send_data("late but real", Mode::PlainAck).unwrap();
    // Every flood socket but the newest MAX_UNPROVEN - 1 was closed to make room, and
    // none was refused (the slots of the connections that spoke were never needed).
    let mut unproven = 0;
    let deadline = Instant::now() + T;
    while unproven < FLOOD + 1 - MAX_UNPROVEN {
        let e = events
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|e| panic!("only {unproven} unproven connections closed: {e}"));
        match e.kind {
            EventKind::Unproven { .. } => unproven += 1,
            EventKind::Refused { .. } => panic!("{e}"),
            _ => {}
        }
    }
    // Those that spoke are still served.
    for c in [&a, &b, &late] {
        assert!(c.is_connected());
        c.send_data("again", Mode::PlainAck).unwrap();
    }
    drop(flood);
}

// ------------------------------------------------ item 6: the first connect, in the background

/// An address where nothing listens (yet): a port the system just gave and took back.
fn free_addr() -> std::net::SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[test]
fn a_background_connect_returns_at_once_queues_and_connects_when_the_server_comes_up() {
    let addr = free_addr();
    let client = ConnectionBuilder::new()
        .connect_in_background(true)
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(100))
        .connect(addr)
        .expect("returns a handle although nothing listens");
    assert!(!client.is_connected());
    for i in 0..3 {
        client.send(format!("queued {i}")).unwrap();
    }
    // Nothing came up yet: no Connected before the server exists.
    let events = client.events();
    assert!(matches!(events.try_recv(), Ok(None)));
    let s = ServerBuilder::new()
        .bind(addr)
        .expect("bind the port again");
    let up = wait_event(&client, "Connected", |e| {
        matches!(e.kind, EventKind::Connected { .. })
    });
    assert_eq!(up.kind, EventKind::Connected { peer: addr });
    let peer = s.get_connection_timeout(T).unwrap();
    for i in 0..3 {
        assert_eq!(
            peer.get_data_timeout(T).unwrap().as_str(),
            Some(format!("queued {i}").as_str())
        );
    }
    assert!(client.is_connected());
    client.send_data("acknowledged", Mode::PlainAck).unwrap();
    assert_eq!(
        peer.get_data_timeout(T).unwrap().as_str(),
        Some("acknowledged")
    );
    // It is a client with auto-restart from then on.
    drop(peer);
    s.close_all();
    wait_event(&client, "Disconnected", |e| {
        matches!(
            &e.kind,
            EventKind::Disconnected {
                reconnecting: true,
                ..
            }
        )
    });
    client.close();
}

#[test]
fn a_background_connect_gives_up_after_its_attempts_and_reports_what_was_lost() {
    let addr = free_addr();
    let client = ConnectionBuilder::new()
        .connect_in_background(true)
        .reconnect_backoff(Duration::from_millis(5), Duration::from_millis(20))
        .give_up_after(Some(3))
        .connect(addr)
        .unwrap();
    client.send("never sent").unwrap();
    let all: Vec<_> = client.events().iter().collect();
    let kinds: Vec<_> = all.iter().map(|e| e.kind.clone()).collect();
    assert!(
        kinds.contains(&EventKind::GaveUp { attempts: 3 }),
        "{kinds:?}"
    );
    assert_eq!(kinds.last(), Some(&EventKind::Lost { messages: 1 }));
    assert!(!kinds
        .iter()
        .any(|k| matches!(k, EventKind::Connected { .. })));
    let r = client.send("after");
    assert!(matches!(r, Err(serpy::Error::Disconnected)), "{r:?}");
}

#[test]
fn close_ends_a_background_connect_that_is_still_trying() {
    let client = ConnectionBuilder::new()
        .connect_in_background(true)
        .reconnect_backoff(Duration::from_millis(50), Duration::from_secs(5))
        .connect(free_addr())
        .unwrap();
    let events = client.events();
    client.close();
    let all: Vec<_> = events.iter().collect();
    assert!(
        all.last().is_some_and(|e| *e == EventKind::Closed),
        "{all:?}"
    );
    assert!(matches!(client.send("x"), Err(serpy::Error::Closed)));
}

// ------------------------------------------------------- item 8: events in one place

#[test]
fn server_events_show_accepted_refused_and_each_connections_events() {
    let before = std::time::SystemTime::now();
    let s = server(ServerBuilder::new().max_connections(1));
    let events = s.events();
    let (client, peer) = pair(&s, ConnectionBuilder::new());
    let accepted = events
        .iter()
        .find(|e| matches!(e.kind, EventKind::Accepted { .. }))
        .unwrap();
    assert_eq!(accepted.id, peer.id());
    assert_eq!(
        accepted.kind,
        EventKind::Accepted {
            peer: client.local_addr().unwrap()
        }
    );
    assert!(accepted.at >= before && accepted.at <= std::time::SystemTime::now());
    // One more is refused, and the server's events say why.
    let extra = std::net::TcpStream::connect(s.local_addr()).unwrap();
    let refused = events
        .iter()
        .find(|e| matches!(e.kind, EventKind::Refused { .. }))
        .unwrap();
    assert_eq!(
        refused.kind,
        EventKind::Refused {
            peer: extra.local_addr().unwrap(),
            reason: serpy::Refusal::TooManyConnections { limit: 1 }
        }
    );
    assert_ne!(refused.id, peer.id());
    // The connection's own events come here too, with its id.
    client.close();
    let down = events
        .iter()
        .find(|e| matches!(e.kind, EventKind::Disconnected { .. }))
        .unwrap();
    assert_eq!(down.id, peer.id());
    // They end after close_all (this iterator ends), and nothing of others came.
    s.close_all();
    let rest: Vec<_> = events.iter().collect();
    assert!(rest.iter().all(|e| e.id == peer.id()), "{rest:?}");
}

#[test]
fn one_select_waits_on_messages_events_and_the_programs_own_channel() {
    let s = server(ServerBuilder::new());
    let (a, peer_a) = pair(&s, ConnectionBuilder::new());
    let (b, peer_b) = pair(&s, ConnectionBuilder::new());
    let (a_events, b_events) = (a.events(), b.events());
    // The Connected events are there already: take them.
    for ev in [&a_events, &b_events] {
        assert!(matches!(
            ev.recv_timeout(T).map(|e| e.kind),
            Ok(EventKind::Connected { .. })
        ));
    }
    let (tx, rx) = crossbeam_channel::unbounded::<u32>();
    let mut sel = serpy::Select::new();
    let (_from_a, from_b) = (sel.messages(&a), sel.messages(&b));
    let (_ev_a, _ev_b) = (sel.events(&a_events), sel.events(&b_events));
    let mine = sel.recv(&rx);
    assert_eq!(sel.try_ready(), None);

    peer_b.send("to b").unwrap();
    assert_eq!(sel.ready_timeout(T), Some(from_b));
    assert_eq!(b.try_get_data().unwrap().unwrap().as_str(), Some("to b"));

    let sender = std::thread::spawn(move || tx.send(42).unwrap());
    assert_eq!(sel.ready_timeout(T), Some(mine));
    assert_eq!(rx.try_recv(), Ok(42));
    sender.join().unwrap();

    // a's peer goes: a's events, then a's messages (ended) become ready, not b's.
    drop(sel);
    peer_a.close();
    let mut sel = serpy::Select::new();
    let (ev_a, ev_b) = (sel.events(&a_events), sel.events(&b_events));
    assert_eq!(sel.ready_timeout(T), Some(ev_a));
    assert_ne!(sel.try_ready(), Some(ev_b));
    let mut sel = serpy::Select::new();
    let (from_a, _from_b) = (sel.messages(&a), sel.messages(&b));
    assert_eq!(sel.ready_timeout(T), Some(from_a));
    assert!(matches!(a.try_get_data(), Err(serpy::Error::Disconnected)));
    assert!(b.try_get_data().unwrap().is_none());
}
