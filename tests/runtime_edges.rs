//! The runtime at its edges (issue 9): each test here failed before its fix.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{pair, server, wait_event, T};
use serpy::{Connection, ConnectionBuilder, Error, Event, Mode, Protocol, ServerBuilder};

/// Collects `events` in a thread until the iterator ends; the receiver gets them then.
fn collect_events(conn: &Connection) -> (mpsc::Receiver<Vec<Event>>, thread::JoinHandle<()>) {
    let events = conn.events();
    let (tx, rx) = mpsc::channel();
    let h = thread::spawn(move || {
        let all: Vec<Event> = events.iter().collect();
        let _ = tx.send(all);
    });
    (rx, h)
}

#[test]
fn events_end_with_closed_when_the_program_closes() {
    let s = server(ServerBuilder::new());
    let (client, _peer) = pair(&s, ConnectionBuilder::new());
    let (rx, h) = collect_events(&client);
    client.close();
    let all = rx.recv_timeout(T).expect("the events end after close()");
    h.join().unwrap();
    assert_eq!(all.last(), Some(&Event::Closed), "{all:?}");
}

#[test]
fn events_end_when_the_link_is_down_for_good() {
    let s = server(ServerBuilder::new());
    let (client, peer) = pair(&s, ConnectionBuilder::new());
    let (rx, h) = collect_events(&client);
    peer.close();
    let all = rx.recv_timeout(T).expect("the events end once the link is down");
    h.join().unwrap();
    assert!(
        matches!(
            all.last(),
            Some(Event::Disconnected {
                reconnecting: false,
                ..
            })
        ),
        "{all:?}"
    );
    // The handle still exists: the end did not wait for it.
    assert!(!client.is_connected());
}
