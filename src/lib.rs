//! # serpy
//!
//! Easy, fast and dependable TCP/IP messaging between programs: scientific instruments on
//! one side, data-acquisition and processing workstations on the other. No more worries
//! about sockets, threads, queues and sudden disconnections.
//!
//! A [`Server`] accepts [`Connection`]s; a client makes one with [`Connection::connect`].
//! Each connection has a reader and a writer thread behind blocking calls:
//! [`send_data`](Connection::send_data), [`get_data`](Connection::get_data) (with
//! `_timeout` and `try_` variants), [`is_connected`](Connection::is_connected),
//! [`close`](Connection::close). Both wire protocols of the original Python library are
//! spoken byte for byte, so a Rust peer and a Python peer talk to each other:
//!
//! - **v1** (serpy): text and bytes in `0x1F`-separated blocks, six [`Mode`]s with optional
//!   acknowledgement and base85.
//! - **v2** (serpy2): typed frames (int, float, text, bytes) with a 14-byte header, for
//!   large binary objects such as images.
//! - **pickles** (v1 modes 4 and 5): [`Message::to_value`] reads what a Python peer
//!   pickled (dicts, lists, numpy arrays, ...) into a [`pickle::Value`] without executing
//!   anything; [`Message::pickle`] and `Message::from_serialize` (feature `serde`, on by
//!   default) send values that Python unpickles into its native objects.
//!
//! ```
//! use serpy::{Connection, Mode, Protocol, Server};
//! use std::time::Duration;
//!
//! # fn main() -> serpy::Result<()> {
//! // v1, as the original serpy
//! let server = Server::bind("127.0.0.1:0")?;
//! let client = Connection::builder().auto_restart(true).connect(server.local_addr())?;
//! let peer = server.get_connection()?;
//!
//! client.send_data("hello", Mode::Plain)?;          // queued
//! client.send_data(vec![0u8, 0x1f], Mode::Base85)?;  // any bytes, as base85
//! client.send_data("sure?", Mode::PlainAck)?;        // returns once the peer has it
//! assert_eq!(peer.get_data()?.as_str(), Some("hello"));
//! assert_eq!(peer.get_data()?.as_bytes(), Some(&[0u8, 0x1f][..]));
//! assert_eq!(peer.get_data_timeout(Duration::from_secs(5))?.as_str(), Some("sure?"));
//!
//! // v2, as serpy2: values keep their type
//! let server2 = Server::builder().protocol(Protocol::V2).bind("127.0.0.1:0")?;
//! let c2 = Connection::builder().protocol(Protocol::V2).connect(server2.local_addr())?;
//! c2.send(12.35)?;
//! c2.send(vec![0u8; 1 << 20])?;
//! let r = server2.recv_any()?;                    // from whichever connection
//! assert_eq!(r.message.as_float(), Some(12.35));
//! r.connection.send("thanks")?;
//! assert_eq!(c2.get_data()?.as_str(), Some("thanks"));
//! # Ok(()) }
//! ```
//!
//! ## Dependability
//!
//! - A client with auto-restart reconnects by itself with backoff; what was queued and
//!   not yet written goes out on the new link, in order. Acknowledged sends caught by a
//!   broken link fail with [`Error::AckUncertain`] instead of hanging.
//! - Without auto-restart a broken link makes `get_data` return [`Error::Disconnected`]
//!   once everything that arrived has been read: nothing blocks forever.
//! - Queues are bounded, the decoders never hold more than the maximum message size, and
//!   no byte sequence a peer sends can make the crate panic.
//! - [`Connection::events`] shows the link's life; the same is logged with the `log`
//!   crate: info for connect, disconnect and reconnect; warn for protocol errors and lost
//!   messages; debug for detail. Payloads are never logged.
//!
//! ## Threads
//!
//! A connection runs two threads (`serpy-rd-N`, `serpy-wr-N`), a server one more
//! (`serpy-accept-PORT`). [`Connection::close`], [`Server::close_all`] and `Drop` return only
//! after the threads they started have ended.
//!
//! The codecs in [`protocol`] are pure (bytes in, frames out) and usable on their own.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod connection;
pub mod error;
mod event;
pub mod message;
pub mod pickle;
pub mod protocol;
mod server;

pub use bytes::Bytes;
pub use config::{DEFAULT_INCOMING_BYTES, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_QUEUE_CAPACITY};
pub use connection::{Connection, ConnectionBuilder};
pub use error::{Error, ProtocolError, Result};
pub use event::{Event, Events};
pub use message::{Message, Text, TextEncoding};
pub use protocol::{Mode, Protocol};
pub use server::{Received, Server, ServerBuilder, DEFAULT_MAX_CONNECTIONS};

/// The README's examples, compiled as doctests so that they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
