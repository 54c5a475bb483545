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
//! ## Names
//!
//! The calls keep the names a Python serpy user knows, in Rust's spelling (`getData` →
//! [`get_data`](Connection::get_data), `sendData` → [`send_data`](Connection::send_data),
//! `getConnection` → [`get_connection`](Server::get_connection), `closeServer` →
//! [`close_all`](Server::close_all)); where Rust has a convention of its own, a second,
//! shorter name follows it. Both stay, each doing one thing:
//!
//! - `send_data(data, mode)` is serpy's call, with its v1 [`Mode`];
//!   [`send(data)`](Connection::send) is `send_data(data, Mode::Plain)`, the one call of a
//!   v2 link (which has no modes) and of most v1 programs, named like `Sender::send`.
//! - `get_data` takes from one connection; [`Server::recv_any`] from whichever of a
//!   server's connections has a message (serpy had no such call: a server loop polled
//!   each connection), and gives the connection with it ([`Received`]). It is named
//!   like the other queues of Rust that a thread waits on: `recv`.
//! - Queues that are not serpy's are Rust's: [`Events::recv`] and friends, like
//!   crossbeam-channel's `Receiver`.
//!
//! Every queue the program takes from comes in three calls, and they mean the same
//! everywhere:
//!
//! | waits | a connection's messages | a server's messages | a server's new connections | events |
//! |---|---|---|---|---|
//! | as long as it takes | [`get_data`](Connection::get_data) | [`recv_any`](Server::recv_any) | [`get_connection`](Server::get_connection) | [`recv`](Events::recv) |
//! | at most a timeout | [`get_data_timeout`](Connection::get_data_timeout) | [`recv_any_timeout`](Server::recv_any_timeout) | [`get_connection_timeout`](Server::get_connection_timeout) | [`recv_timeout`](Events::recv_timeout) |
//! | not at all | [`try_get_data`](Connection::try_get_data) | [`try_recv_any`](Server::try_recv_any) | [`try_get_connection`](Server::try_get_connection) | [`try_recv`](Events::try_recv) |
//!
//! - The blocking call returns the item, or the error that ends the queue:
//!   [`Error::Closed`] (the program closed the connection or the server) or
//!   [`Error::Disconnected`] (the link is down for good), once everything that arrived
//!   has been taken.
//! - `_timeout` returns [`Error::Timeout`] when nothing came in time (Python serpy's
//!   `queue.Empty`), and the same ending errors.
//! - `try_` never waits: `Ok(Some(item))`, `Ok(None)` when nothing is waiting *yet*, or
//!   the ending error once nothing ever will be. This is crossbeam-channel's
//!   `TryRecvError::{Empty, Disconnected}` in the shape of the crate's one [`Error`]
//!   type, so that `?` passes the end on: `while let Some(m) = conn.try_get_data()? {}`
//!   takes what is waiting and returns the error once the connection is gone.
//!   [`Error::is_final`] tells the ending errors from the others.
//! - Iterators (`for msg in &conn`, [`Connection::iter`], [`Events::iter`], and
//!   [`Connection::try_iter`] for what is waiting now) end where the blocking call would
//!   return its ending error.
//! - Sends: [`send_data`](Connection::send_data) blocks while the outgoing queue is full,
//!   [`send_data_timeout`](Connection::send_data_timeout) gives up after its timeout;
//!   a send never waits for a socket write (except an acknowledged one, which waits for
//!   the peer anyway): the writer thread writes.
//!
//! ```
//! use serpy::{Connection, Error, Server};
//!
//! # fn main() -> serpy::Result<()> {
//! let server = Server::bind("127.0.0.1:0")?;
//! let client = Connection::connect(server.local_addr())?;
//! let peer = server.get_connection()?;
//! assert!(peer.try_get_data()?.is_none());        // nothing waiting yet
//! client.send("one")?;
//! client.close();
//! let mut got = Vec::new();
//! for msg in &peer {                               // ends once the link is down for good
//!     got.push(msg);
//! }
//! assert_eq!(got.len(), 1);
//! assert!(matches!(peer.try_get_data(), Err(Error::Disconnected))); // and never will be
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
//! - Liveness and slots: an idle timeout finds a hung peer (v1 keeps a quiet link alive
//!   with keep-alives), and a server can bound the connections that have not spoken
//!   yet; a client can make its first connect in the background.
//! - [`Connection::events`] shows the link's life; the same is logged with the `log`
//!   crate: info for connect, disconnect and reconnect; warn for protocol errors and lost
//!   messages; debug for detail. Payloads are never logged. Every [`Event`] carries its
//!   connection's id and its time; [`Server::events`] gathers a server's, and [`Select`]
//!   waits on messages, events and the program's own channels together.
//!
//! ## Threads
//!
//! A connection runs two threads (`serpy-rd-N`, `serpy-wr-N`), a server one more
//! (`serpy-accept-PORT`). [`Server::close_all`] closes the connections in parallel, in
//! short-lived `serpy-close` threads (up to 255, besides the calling thread).
//! [`Connection::close`], [`Server::close_all`] and `Drop` return only after the threads
//! they started have ended.
//!
//! On Linux and Android the writer thread runs under `SCHED_BATCH` (when the program's
//! thread that starts it runs under the default `SCHED_OTHER`; a real-time policy is
//! left alone): the same share of the processor and nice value, but its wake-ups do
//! not preempt the thread that woke it. A stream of sends then fills the outgoing queue
//! while the writer waits for a processor and is written in batches, rather than the
//! writer interrupting the sender for every message (the v2 64 B row of the bench,
//! about 7.8 → 8.7 M msg/s on a 2-vCPU machine). When every processor is busy, a queued
//! message may wait for the writer up to one scheduler time slice (about a
//! millisecond); a send on a quiet link is written by its caller and never waits for
//! the writer. The reader thread keeps the program's policy.
//!
//! The codecs in [`protocol`] are pure (bytes in, frames out) and usable on their own.
// Unsafe code only where the platform leaves no other way: src/sys.rs (a foreign call on
// Windows, a slice cast for a non-blocking recv on Linux, the receive low-water mark
// (`SO_RCVLOWAT`, a setsockopt call) on Linux, the length of what a recv wrote into
// spare capacity on Unix, the AVX2 checksum and base85 kernels chosen at run time on
// x86-64, the PREFETCHW hint of the send path and its CPUID check on x86-64, the writer
// thread's scheduling policy on Linux).
#![deny(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod connection;
pub mod error;
mod event;
pub mod message;
pub mod pickle;
pub mod protocol;
mod server;
mod stats;
mod sync;
mod sys;

pub use bytes::Bytes;
pub use config::{
    FullQueue, DEFAULT_INCOMING_BYTES, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_OUTGOING_BYTES,
    DEFAULT_QUEUE_CAPACITY,
};
pub use connection::{Connection, ConnectionBuilder, Messages};
pub use error::{Error, ProtocolError, Result};
pub use event::{Event, EventKind, Events, Refusal, Select};
pub use message::{Message, Text, TextEncoding};
pub use protocol::{Mode, Protocol};
pub use server::{Broadcast, Received, Server, ServerBuilder, DEFAULT_MAX_CONNECTIONS};
pub use stats::Stats;

/// The README's examples, compiled as doctests so that they cannot rot, and without a
/// warning: what a user copies from it compiles cleanly.
#[cfg(doctest)]
#[doc(test(attr(deny(warnings))))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
