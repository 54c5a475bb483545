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
    pub close_timeout: Duration,
    pub detect_timeout: Duration,
}

/// Default maximum message size: 64 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;
/// Default budget of received bytes waiting to be read, per connection: 256 MiB.
pub const DEFAULT_INCOMING_BYTES: usize = 256 * 1024 * 1024;
/// Default capacity of the outgoing queue, in messages. (The incoming queue has no
/// bound by count unless one is set: its byte budget bounds it.)
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;

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
            close_timeout: Duration::from_secs(2),
            detect_timeout: Duration::from_secs(5),
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
    };
}
pub(crate) use connection_options;
