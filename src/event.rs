//! The life of a link as the program can watch it: [`Event`] and the [`Events`] receiver.

use std::net::SocketAddr;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::error::ProtocolError;
use crate::protocol::Protocol;

/// Something that happened to a connection. Every event is also logged (`log` crate):
/// info for connects and disconnects, warn for protocol errors and lost messages.
///
/// ```no_run
/// # fn main() -> serpy::Result<()> {
/// let conn = serpy::Connection::builder().auto_restart(true).connect(("127.0.0.1", 8000))?;
/// for event in conn.events().iter() {
///     println!("{event}");
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The link is up (the first connect, or an accepted connection).
    Connected {
        /// The peer's address.
        peer: SocketAddr,
    },
    /// The link went down.
    Disconnected {
        /// Why, in words.
        reason: String,
        /// Whether the connection will try to reconnect (auto-restart).
        reconnecting: bool,
    },
    /// Auto-restart brought the link back.
    Reconnected {
        /// The peer's address.
        peer: SocketAddr,
        /// How many connection attempts it took.
        attempts: u32,
    },
    /// Auto-restart gave up after the configured number of attempts.
    GaveUp {
        /// How many attempts were made.
        attempts: u32,
    },
    /// Messages that had been queued were dropped because the link is down for good.
    /// (Acknowledged sends among them got [`Error::NotSent`](crate::Error::NotSent).)
    Lost {
        /// How many messages.
        messages: usize,
    },
    /// A server in [`Protocol::Auto`] found out which protocol the peer speaks.
    ProtocolDetected(Protocol),
    /// The peer broke the protocol; the connection skipped the bad part and goes on.
    ProtocolError(ProtocolError),
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Connected { peer } => write!(f, "connected to {peer}"),
            Event::Disconnected {
                reason,
                reconnecting,
            } => write!(
                f,
                "disconnected: {reason}{}",
                if *reconnecting { "; reconnecting" } else { "" }
            ),
            Event::Reconnected { peer, attempts } => {
                write!(f, "reconnected to {peer} after {attempts} attempt(s)")
            }
            Event::GaveUp { attempts } => {
                write!(f, "gave up reconnecting after {attempts} attempts")
            }
            Event::Lost { messages } => {
                write!(
                    f,
                    "{messages} queued message(s) dropped: the link is down for good"
                )
            }
            Event::ProtocolDetected(p) => write!(f, "peer speaks {p}"),
            Event::ProtocolError(e) => write!(f, "protocol error: {e}"),
        }
    }
}

/// Capacity of a connection's event queue. When the program does not read events, the
/// oldest are dropped (they are logged all the same).
pub(crate) const EVENT_CAPACITY: usize = 256;

#[derive(Debug)]
pub(crate) struct EventSink {
    tx: Sender<Event>,
    rx: Receiver<Event>,
}

impl EventSink {
    pub fn new() -> Self {
        let (tx, rx) = crossbeam_channel::bounded(EVENT_CAPACITY);
        EventSink { tx, rx }
    }

    /// Queues an event, dropping the oldest one if the program does not read them.
    pub fn emit(&self, event: Event) {
        let mut event = event;
        loop {
            match self.tx.try_send(event) {
                Ok(()) => return,
                Err(TrySendError::Full(e)) => {
                    let _ = self.rx.try_recv();
                    event = e;
                }
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
    }

    pub fn receiver(&self) -> Events {
        Events {
            rx: self.rx.clone(),
        }
    }
}

/// Receives a connection's [`Event`]s: see [`Connection::events`](crate::Connection::events).
///
/// ```
/// # fn main() -> serpy::Result<()> {
/// let server = serpy::Server::bind("127.0.0.1:0")?;
/// let conn = serpy::Connection::connect(server.local_addr())?;
/// let ev = conn.events().recv_timeout(std::time::Duration::from_secs(5));
/// assert!(matches!(ev, Some(serpy::Event::Connected { .. })));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Events {
    rx: Receiver<Event>,
}

impl Events {
    /// The next event, waiting at most `timeout`; `None` if none came.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Event> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// The next event if one is waiting.
    pub fn try_recv(&self) -> Option<Event> {
        self.rx.try_recv().ok()
    }

    /// A blocking iterator over events; it ends when the connection is gone.
    pub fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        self.rx.iter()
    }
}
