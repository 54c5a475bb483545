//! serpy: easy, fast and dependable TCP/IP messaging between programs.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod connection;
pub mod error;
mod event;
pub mod message;
pub mod protocol;
mod server;

pub use bytes::Bytes;
pub use config::{DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_QUEUE_CAPACITY};
pub use connection::{Connection, ConnectionBuilder};
pub use error::{Error, ProtocolError, Result};
pub use event::{Event, Events};
pub use message::{Message, Text, TextEncoding};
pub use protocol::{Mode, Protocol};
pub use server::{Received, Server, ServerBuilder, DEFAULT_MAX_CONNECTIONS};
