//! serpy: easy, fast and dependable TCP/IP messaging between programs.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod error;
pub mod message;
pub mod protocol;

pub use error::{Error, ProtocolError, Result};
pub use message::{Message, Text, TextEncoding};
pub use protocol::{Mode, Protocol};
pub use bytes::Bytes;
