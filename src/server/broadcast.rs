//! [`Server::broadcast`]: one message to every connection, encoded once per protocol,
//! never waiting on one peer; and [`Broadcast`], what became of it for each.
//!
//! Threads: the caller's only; it queues for each connection's writer.

use std::time::Duration;

use super::Server;
use crate::connection::{Connection, Prepared};
use crate::error::{Error, Result};
use crate::message::Message;
use crate::protocol::Protocol;
use crate::sync::Deadline;

/// What [`Server::broadcast`] did, connection by connection.
///
/// For each connection of the server at the time of the call: `Ok(())` when the message
/// was queued for it (or written at once); otherwise why not: [`Error::QueueFull`] when
/// its outgoing queue was full (the peer does not read as fast, its link is
/// reconnecting, or an auto server does not know its protocol yet),
/// [`Error::Timeout`] from [`Server::broadcast_timeout`] when no room came in time,
/// [`Error::Closed`] or [`Error::Disconnected`] when it went away meanwhile.
///
/// ```
/// use serpy::{Connection, Server};
/// use std::time::Duration;
///
/// # fn main() -> serpy::Result<()> {
/// let server = Server::bind("127.0.0.1:0")?;
/// let client = Connection::connect(server.local_addr())?;
/// server.get_connection_timeout(Duration::from_secs(5))?;
/// let report = server.broadcast("hello, all")?;
/// assert_eq!(report.sent(), 1);
/// for (conn, why) in report.failures() {
///     eprintln!("{:?} missed it: {why}", conn.peer_addr());
/// }
/// assert_eq!(client.get_data()?.as_str(), Some("hello, all"));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Broadcast {
    outcomes: Vec<(Connection, Result<()>)>,
}

impl Broadcast {
    /// How many connections the message was queued for.
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// let server = serpy::Server::bind("127.0.0.1:0")?;
    /// assert_eq!(server.broadcast("nobody listens")?.sent(), 0);
    /// # Ok(()) }
    /// ```
    pub fn sent(&self) -> usize {
        self.outcomes.iter().filter(|(_, r)| r.is_ok()).count()
    }

    /// How many connections it was tried on (every connection of the server then).
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// let server = serpy::Server::bind("127.0.0.1:0")?;
    /// assert_eq!(server.broadcast("x")?.len(), 0);
    /// # Ok(()) }
    /// ```
    pub fn len(&self) -> usize {
        self.outcomes.len()
    }

    /// True when the server had no connection to try.
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// let server = serpy::Server::bind("127.0.0.1:0")?;
    /// assert!(server.broadcast("x")?.is_empty());
    /// # Ok(()) }
    /// ```
    pub fn is_empty(&self) -> bool {
        self.outcomes.is_empty()
    }

    /// True when every connection tried got the message.
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// let server = serpy::Server::bind("127.0.0.1:0")?;
    /// assert!(server.broadcast("x")?.is_complete());
    /// # Ok(()) }
    /// ```
    pub fn is_complete(&self) -> bool {
        self.outcomes.iter().all(|(_, r)| r.is_ok())
    }

    /// Each connection, with what became of the message for it.
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// let server = serpy::Server::bind("127.0.0.1:0")?;
    /// for (conn, outcome) in server.broadcast("x")?.iter() {
    ///     println!("{}: {outcome:?}", conn.id());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = (&Connection, &Result<()>)> + '_ {
        self.outcomes.iter().map(|(c, r)| (c, r))
    }

    /// The connections that did not get the message, with why.
    ///
    /// ```
    /// # fn main() -> serpy::Result<()> {
    /// let server = serpy::Server::bind("127.0.0.1:0")?;
    /// assert_eq!(server.broadcast("x")?.failures().count(), 0);
    /// # Ok(()) }
    /// ```
    pub fn failures(&self) -> impl Iterator<Item = (&Connection, &Error)> + '_ {
        self.outcomes
            .iter()
            .filter_map(|(c, r)| r.as_ref().err().map(|e| (c, e)))
    }
}

impl IntoIterator for Broadcast {
    type Item = (Connection, Result<()>);
    type IntoIter = std::vec::IntoIter<(Connection, Result<()>)>;

    /// Each connection with what became of the message for it.
    fn into_iter(self) -> Self::IntoIter {
        self.outcomes.into_iter()
    }
}

impl Server {
    /// Sends `data` to every connection of the server, as [`Connection::send`] would to
    /// each (mode 0 over v1, its typed frame over v2), without ever waiting: a
    /// connection whose outgoing queue is full misses this message, and the returned
    /// [`Broadcast`] says so ([`Error::QueueFull`]), connection by connection. One peer
    /// that does not read, or a client of an auto server that has not spoken yet, never
    /// holds up the others. To wait for room, within a bound, use
    /// [`broadcast_timeout`](Server::broadcast_timeout).
    ///
    /// The message is encoded once per protocol, and that encoding is shared by the
    /// connections: a large payload is neither copied nor checksummed once per
    /// connection; its memory goes when the last connection has written it.
    ///
    /// Connections that are down for good with nothing left to read are not tried.
    /// Errors: the message cannot be sent over the protocol of one of the connections
    /// ([`Error::EmptyMessage`], [`Error::MessageTooLarge`], [`Error::Encoding`],
    /// [`Error::Unsupported`]); it is then sent to none.
    ///
    /// ```
    /// use serpy::{Connection, Protocol, Server};
    /// use std::time::Duration;
    ///
    /// # fn main() -> serpy::Result<()> {
    /// let server = Server::builder().protocol(Protocol::V2).bind("127.0.0.1:0")?;
    /// let a = Connection::builder().protocol(Protocol::V2).connect(server.local_addr())?;
    /// let b = Connection::builder().protocol(Protocol::V2).connect(server.local_addr())?;
    /// for _ in 0..2 {
    ///     server.get_connection_timeout(Duration::from_secs(5))?;
    /// }
    /// let image = vec![7u8; 1 << 20];
    /// assert_eq!(server.broadcast(image)?.sent(), 2);
    /// assert_eq!(a.get_data()?.len(), 1 << 20);
    /// assert_eq!(b.get_data()?.len(), 1 << 20);
    /// # Ok(()) }
    /// ```
    pub fn broadcast(&self, data: impl Into<Message>) -> Result<Broadcast> {
        let plan = self.plan_broadcast(&data.into())?;
        let outcomes = plan
            .targets
            .into_iter()
            .map(|(c, i)| {
                let r = c.try_send_prepared(&plan.encodings[i]);
                (c, r)
            })
            .collect();
        Ok(Broadcast { outcomes })
    }

    /// [`broadcast`](Server::broadcast) that waits for room in the full queues, for at
    /// most `timeout` in all: the message is first queued where there is room, then the
    /// full queues are waited on, one after the other, until one deadline. A connection
    /// that has no room by then misses the message ([`Error::Timeout`] in the report).
    /// So the call takes at most about `timeout`, however many peers do not read.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// # fn main() -> serpy::Result<()> {
    /// let server = serpy::Server::bind("127.0.0.1:0")?;
    /// let client = serpy::Connection::connect(server.local_addr())?;
    /// server.get_connection_timeout(Duration::from_secs(5))?;
    /// let report = server.broadcast_timeout("tick", Duration::from_millis(100))?;
    /// assert!(report.is_complete());
    /// assert_eq!(client.get_data()?.as_str(), Some("tick"));
    /// # Ok(()) }
    /// ```
    pub fn broadcast_timeout(
        &self,
        data: impl Into<Message>,
        timeout: Duration,
    ) -> Result<Broadcast> {
        let deadline = Deadline::after(timeout);
        let plan = self.plan_broadcast(&data.into())?;
        let first: Vec<Result<()>> = plan
            .targets
            .iter()
            .map(|(c, i)| c.try_send_prepared(&plan.encodings[*i]))
            .collect();
        let outcomes = plan
            .targets
            .into_iter()
            .zip(first)
            .map(|((c, i), r)| {
                let r = match r {
                    Err(Error::QueueFull { .. }) => c
                        .send_prepared(&plan.encodings[i], deadline)
                        .map_err(|e| e.timed_out_after(timeout)),
                    r => r,
                };
                (c, r)
            })
            .collect();
        Ok(Broadcast { outcomes })
    }

    /// The connections to send to, and the message encoded once per protocol, all made
    /// before anything is sent. (A connection of an auto server whose protocol is not
    /// known yet gets the message as it is; its writer encodes it once the protocol is
    /// known, as for `send`.)
    fn plan_broadcast(&self, message: &Message) -> Result<Plan> {
        let conns = self.connections();
        let mut protocols: Vec<Protocol> = Vec::new();
        let mut encodings = Vec::new();
        let mut targets = Vec::with_capacity(conns.len());
        for c in conns {
            let protocol = c.protocol();
            let i = match protocols.iter().position(|p| *p == protocol) {
                Some(i) => i,
                None => {
                    encodings.push(Prepared::new(protocol, c.config(), message)?);
                    protocols.push(protocol);
                    encodings.len() - 1
                }
            };
            targets.push((c, i));
        }
        Ok(Plan { encodings, targets })
    }
}

/// What a broadcast sends where: each connection with the index of its encoding.
struct Plan {
    encodings: Vec<Prepared>,
    targets: Vec<(Connection, usize)>,
}
