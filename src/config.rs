//! Options shared by connections and servers.

use std::time::Duration;

use crate::message::TextEncoding;
use crate::protocol::Protocol;

/// The options of one connection. Built with [`ConnectionBuilder`](crate::ConnectionBuilder)
/// or [`ServerBuilder`](crate::ServerBuilder); every field has a sensible default.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub protocol: Protocol,
    pub encoding: TextEncoding,
    pub auto_restart: bool,
    /// `None`: no bound by count (the byte budget bounds the incoming queue).
    pub incoming_capacity: Option<usize>,
    pub incoming_bytes: usize,
    pub outgoing_capacity: usize,
    pub max_message_size: usize,
    pub connect_timeout: Duration,
    pub backoff_first: Duration,
    pub backoff_max: Duration,
    pub give_up_after: Option<u32>,
    pub nodelay: bool,
    pub keepalive: Option<Duration>,
    /// The sockets' TCP congestion control, by the kernel's name (`None`: the system's).
    pub congestion_control: Option<String>,
    pub close_timeout: Duration,
    pub detect_timeout: Duration,
    /// Budget of bytes waiting in the outgoing queue (see `outgoing_bytes`).
    pub outgoing_bytes: usize,
    /// What a send does when the outgoing queue is full (see `full_queue`).
    pub full_queue: FullQueue,
    /// Nothing received for this long: the link is declared dead (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// Servers: a connection that has not sent a whole first message (or control
    /// block) this long after it was accepted is closed (`None`: never).
    pub first_message_timeout: Option<Duration>,
    /// Clients: `connect()` returns at once and the first connect is made in the
    /// background, with the reconnect backoff.
    pub background_connect: bool,
}

/// Default maximum message size: 64 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;
/// Default budget of received bytes waiting to be read, per connection: 256 MiB.
pub const DEFAULT_INCOMING_BYTES: usize = 256 * 1024 * 1024;
/// Default capacity of the outgoing queue, in messages. (The incoming queue has no
/// bound by count unless one is set: its byte budget bounds it.)
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;
/// Default budget of bytes waiting in the outgoing queue, per connection: 64 MiB (a
/// message larger than that still goes when nothing else waits).
pub const DEFAULT_OUTGOING_BYTES: usize = 64 * 1024 * 1024;

/// What a send does when the outgoing queue of a connection is full: it holds
/// [`outgoing_capacity`](crate::ConnectionBuilder::outgoing_capacity) messages or
/// [`outgoing_bytes`](crate::ConnectionBuilder::outgoing_bytes) bytes, because the peer
/// reads more slowly than the program sends (or not at all). Set with
/// [`full_queue`](crate::ConnectionBuilder::full_queue), per connection; a server's
/// setting applies to every connection it accepts.
///
/// Acknowledged sends (v1 modes 1, 3, 5) are never dropped by a policy.
///
/// ```
/// use serpy::{FullQueue, Server};
/// use std::time::Duration;
///
/// # fn main() -> serpy::Result<()> {
/// // A live view: a slow viewer gets the newest frames, never an old backlog.
/// let server = Server::builder()
///     .full_queue(FullQueue::KeepLatest(4))
///     .bind("127.0.0.1:0")?;
/// // Or: a peer that reads nothing for 10 s is disconnected.
/// let strict = Server::builder()
///     .full_queue(FullQueue::Disconnect(Duration::from_secs(10)))
///     .bind("127.0.0.1:0")?;
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum FullQueue {
    /// The send waits for room (as long as it takes, or the timeout of
    /// [`send_data_timeout`](crate::Connection::send_data_timeout)). The default.
    /// A stream of sends that keeps the queue full goes on once the writer has taken
    /// it down to half of its bounds, or sooner when the writer would otherwise wait
    /// (a socket that takes nothing more at once, a reconnect), so that a send never
    /// waits for room that exists while the writer cannot write.
    /// [`Server::broadcast`](crate::Server::broadcast) never waits: the peer misses
    /// the message ([`Error::QueueFull`](crate::Error::QueueFull)).
    #[default]
    Block,
    /// Keep at most this many messages queued (and within the byte budget): a new
    /// message drops the oldest plain messages still queued. Dropped messages are
    /// counted ([`Stats::dropped`](crate::Stats::dropped)) and reported by
    /// [`EventKind::Dropped`](crate::EventKind::Dropped). A send never waits for room.
    KeepLatest(usize),
    /// As `Block`, but a peer that takes no byte from the socket for this long is
    /// disconnected (the write times out): the link goes down with
    /// [`EventKind::Disconnected`](crate::EventKind::Disconnected), and a client with
    /// auto-restart reconnects. What was queued then goes as for any broken link.
    Disconnect(Duration),
}

impl Default for Config {
    fn default() -> Self {
        Config {
            protocol: Protocol::V1,
            encoding: TextEncoding::Utf8,
            auto_restart: false,
            incoming_capacity: None,
            incoming_bytes: DEFAULT_INCOMING_BYTES,
            outgoing_capacity: DEFAULT_QUEUE_CAPACITY,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            connect_timeout: Duration::from_secs(5),
            backoff_first: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            give_up_after: None,
            nodelay: true,
            keepalive: None,
            congestion_control: None,
            close_timeout: Duration::from_secs(2),
            detect_timeout: Duration::from_secs(5),
            outgoing_bytes: DEFAULT_OUTGOING_BYTES,
            full_queue: FullQueue::Block,
            idle_timeout: None,
            first_message_timeout: None,
            background_connect: false,
        }
    }
}

/// Generates the option setters that connection and server builders share, so that both
/// take the same names with the same documentation.
macro_rules! connection_options {
    ($builder:literal) => {
        /// Text encoding for v1 text messages (default UTF-8; the original used ASCII).
        ///
        /// ```
        #[doc = concat!("let b = ", $builder, ".encoding(serpy::TextEncoding::Ascii);")]
        /// ```
        pub fn encoding(mut self, encoding: $crate::TextEncoding) -> Self {
            self.cfg.encoding = encoding;
            self
        }

        /// A bound on the number of received messages waiting to be read (default: none;
        /// [`incoming_bytes`](Self::incoming_bytes) bounds them). When it is reached, the
        /// connection stops reading from the socket until the program reads, so a slow
        /// reader slows the sender down instead of growing memory. Note that what the
        /// peer sent after those messages waits too, acknowledgements included: an
        /// acknowledged send of this side then times out, with an error that says so.
        ///
        /// ```
        #[doc = concat!("let b = ", $builder, ".incoming_capacity(64);")]
        /// ```
        pub fn incoming_capacity(mut self, messages: usize) -> Self {
            self.cfg.incoming_capacity = Some(messages.max(1));
            self
        }

        /// How many bytes of received messages may wait to be read (default 256 MiB). When
        /// the next message would go beyond it, the connection stops reading from the
        /// socket until the program reads; a message larger than the budget is still
        /// delivered when nothing else waits. Each message counts 64 bytes more than its
        /// length (what holding it costs), so the budget bounds the memory a peer can make
        /// a connection hold however small its messages. Acknowledgements the peer sends
        /// behind unread messages are read as long as those fit in the budget.
        ///
        /// ```
        #[doc = concat!("let b = ", $builder, ".incoming_bytes(16 << 20);")]
        /// ```
        pub fn incoming_bytes(mut self, bytes: usize) -> Self {
            self.cfg.incoming_bytes = bytes;
            self
        }

        /// Capacity of the queue of messages waiting to be written (default 1024).
        /// `send_data` blocks while it is full.
        ///
        /// ```
        #[doc = concat!("let b = ", $builder, ".outgoing_capacity(64);")]
        /// ```
        pub fn outgoing_capacity(mut self, messages: usize) -> Self {
            self.cfg.outgoing_capacity = messages.max(1);
            self
        }

        /// Largest message accepted in either direction, in bytes (default 64 MiB). A larger
        /// incoming message is skipped and reported; a larger outgoing one is refused.
        ///
        /// ```
        #[doc = concat!("let b = ", $builder, ".max_message_size(256 << 20);")]
        /// ```
        pub fn max_message_size(mut self, bytes: usize) -> Self {
            self.cfg.max_message_size = bytes;
            self
        }

        /// TCP_NODELAY (default on: small messages go out at once).
        ///
        /// ```
        #[doc = concat!("let b = ", $builder, ".nodelay(false);")]
        /// ```
        pub fn nodelay(mut self, on: bool) -> Self {
            self.cfg.nodelay = on;
            self
        }

        /// TCP keepalive: probe an idle link after `idle` (default off). Finds peers that
        /// vanished without closing (a pulled cable, a crashed machine).
        ///
        /// ```
        #[doc = concat!("let b = ", $builder, ".keepalive(Some(std::time::Duration::from_secs(30)));")]
        /// ```
        pub fn keepalive(mut self, idle: Option<std::time::Duration>) -> Self {
            self.cfg.keepalive = idle;
            self
        }

        /// The TCP congestion control of the connection's sockets (`TCP_CONGESTION`, Linux
        /// and FreeBSD), by the kernel's name for it, e.g. `"reno"` or `"cubic"` (default:
        /// the system's, `net.ipv4.tcp_congestion_control` on Linux). A name the kernel
        /// does not have, or may not give this program (without `CAP_NET_ADMIN`, Linux
        /// lets a program choose only those in `net.ipv4.tcp_allowed_congestion_control`;
        /// `reno` always is), fails `connect`/`bind` with
        /// [`Error::CongestionControl`](crate::Error::CongestionControl); on other systems
        /// setting it fails them with [`Error::Unsupported`](crate::Error::Unsupported).
        ///
        /// For links inside one machine or one local network, and measured first: there
        /// `bbr`, which paces each socket with a timer whenever a sender gets ahead of
        /// its estimate of the path's rate, makes a stream of mid-size messages pay for
        /// those timers (on loopback, the bench's 4 KiB stream went 1.6 × as fast under
        /// `reno`, median of three, and its 1 MiB stream about a third slower; see
        /// BENCHMARKS.md). Over the internet keep the system's choice.
        ///
        /// ```
        #[doc = concat!("let b = ", $builder, ".congestion_control(\"reno\");")]
        /// ```
        pub fn congestion_control(mut self, name: impl Into<String>) -> Self {
            self.cfg.congestion_control = Some(name.into());
            self
        }

        /// How long `close()` waits for queued messages to be written (default 2 s); it
        /// bounds the whole `close()` (and `Drop`): what is not written by then is cut.
        ///
        /// ```
        #[doc = concat!("let b = ", $builder, ".close_timeout(std::time::Duration::from_millis(500));")]
        /// ```
        pub fn close_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.cfg.close_timeout = timeout;
            self
        }

        /// How many bytes of messages may wait in the outgoing queue (default 64 MiB,
        /// [`DEFAULT_OUTGOING_BYTES`](crate::DEFAULT_OUTGOING_BYTES)). With
        /// [`outgoing_capacity`](Self::outgoing_capacity) it bounds what a peer that
        /// reads slowly, or not at all, makes this side hold: when the next message
        /// would go beyond it, the [`full_queue`](Self::full_queue) policy applies. A
        /// message larger than the budget still goes when nothing else waits. Each
        /// message counts 64 bytes more than its encoded length. The writer holds at most
        /// one batch (about 256 KiB, or one larger message) beyond the queue.
        ///
        /// ```
        #[doc = concat!("let b = ", $builder, ".outgoing_bytes(8 << 20);")]
        /// ```
        pub fn outgoing_bytes(mut self, bytes: usize) -> Self {
            self.cfg.outgoing_bytes = bytes;
            self
        }

        /// What a send does when the outgoing queue is full (default
        /// [`FullQueue::Block`](crate::FullQueue::Block)); see [`FullQueue`](crate::FullQueue).
        ///
        /// ```
        #[doc = concat!("let b = ", $builder, ".full_queue(serpy::FullQueue::KeepLatest(2));")]
        /// ```
        pub fn full_queue(mut self, policy: $crate::FullQueue) -> Self {
            self.cfg.full_queue = match policy {
                $crate::FullQueue::KeepLatest(n) => $crate::FullQueue::KeepLatest(n.max(1)),
                p => p,
            };
            self
        }

        /// Liveness: when nothing at all has been received for `timeout`, the link is
        /// declared dead (default `None`: never). The connection reports
        /// [`EventKind::IdleTimeout`](crate::EventKind::IdleTimeout), then the link goes
        /// down as if it had broken: a client with auto-restart reconnects.
        ///
        /// So that two serpy peers keep a quiet link alive, a v1 connection with an idle
        /// timeout writes a keep-alive (an empty block, a lone `0x1F`, which every v1
        /// receiver, the original Python `serpy` included, skips without effect) when it
        /// has written nothing for a third of `timeout`: give both ends the same timeout.
        /// A Python peer sends no keep-alive, and serpy2 (v2) has none at all: against
        /// those, or over v2, set an idle timeout only when the peer sends something
        /// regularly (an instrument that streams), longer than its longest pause.
        /// The timer is the socket's receive timeout: it costs nothing per message.
        ///
        /// ```
        #[doc = concat!("let b = ", $builder, ".idle_timeout(Some(std::time::Duration::from_secs(10)));")]
        /// ```
        pub fn idle_timeout(mut self, timeout: Option<std::time::Duration>) -> Self {
            self.cfg.idle_timeout = timeout.filter(|t| !t.is_zero());
            self
        }
    };
}
pub(crate) use connection_options;
