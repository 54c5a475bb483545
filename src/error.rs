//! The one error type of the crate, and the protocol errors that a peer can cause.

use std::io;
use std::time::Duration;

use crate::message::TextEncoding;
use crate::protocol::Mode;

/// A convenient alias: every fallible call of this crate returns `Result<T, serpy::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in this crate.
///
/// Each variant carries what a caller needs to act on it, and its `Display` text is a
/// sentence that says what happened and what to do.
///
/// ```
/// use serpy::{Error, Mode};
///
/// let err = Error::EmptyMessage { mode: Mode::Plain };
/// assert!(err.to_string().contains("empty"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Connecting to the peer failed (refused, unreachable, timed out).
    #[error("could not connect to {addr}: {source}; check that a serpy server listens there and that the address and port are right")]
    Connect {
        /// The address that was tried (the last one, if a name resolved to several).
        addr: String,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },

    /// The address could not be resolved or bound.
    #[error("bad address {addr}: {source}; give an IP address and a port, such as (\"127.0.0.1\", 8000) or \"[::1]:8000\"")]
    Address {
        /// The address as given.
        addr: String,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },

    /// Another I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the crate was doing.
        context: &'static str,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },

    /// The operation did not complete within the time it was given.
    #[error("{operation} timed out after {after:?}; try again, allow more time, or check that the peer reads its data")]
    Timeout {
        /// What timed out ("get_data", "send_data (queue full)", "send_data (waiting for the acknowledgement)", ...).
        operation: &'static str,
        /// The timeout that ran out.
        after: Duration,
    },

    /// The link is down for good and everything that had arrived has been read.
    #[error("the connection to the peer is down and everything it delivered has been read; connect again, or enable auto-restart on the client")]
    Disconnected,

    /// The handle was closed by [`Connection::close`](crate::Connection::close) or
    /// [`Server::close`](crate::Server::close).
    #[error("this connection or server was closed by the program; open a new one to go on")]
    Closed,

    /// An acknowledged send was written, but the link broke before its acknowledgement came
    /// back: the peer may or may not have received it.
    #[error("the link broke after the acknowledged message was sent and before the peer acknowledged it: it may or may not have arrived; check on the peer's side before sending it again")]
    AckUncertain,

    /// The message was queued but never written, because the link went down for good.
    #[error("the message was not sent: the link went down before it could be written and will not come back; nothing of it reached the peer")]
    NotSent,

    /// A message is larger than the configured maximum.
    #[error("message of {size} bytes is larger than the maximum of {max} bytes; raise it with the builder's max_message_size(), or split the message")]
    MessageTooLarge {
        /// Size of the message (after encoding, where the encoding enlarges it).
        size: u64,
        /// The configured maximum.
        max: usize,
    },

    /// An empty message in mode 0 or 2 would be dropped by the receiver.
    #[error("an empty message cannot be sent in mode {mode}: the receiver would drop it; send it in an acknowledged mode (1 or 3) or over v2, or send something non-empty")]
    EmptyMessage {
        /// The mode that was asked for.
        mode: Mode,
    },

    /// Text cannot be encoded in the connection's text encoding.
    #[error("text cannot be encoded as {encoding}: {detail}; choose TextEncoding::Utf8 in the builder, or send the text as bytes")]
    Encoding {
        /// The connection's text encoding.
        encoding: TextEncoding,
        /// What was wrong with the text.
        detail: String,
    },

    /// The message or mode cannot travel over this protocol.
    #[error("{what}")]
    Unsupported {
        /// What was refused, and what to use instead.
        what: String,
    },

    /// A number that is not a v1 mode (0..=5).
    #[error("{0} is not a serpy mode; modes are 0 to 5")]
    InvalidMode(u8),

    /// The peer broke the protocol.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),

    /// A pickle could not be read or written, or a value not converted (see
    /// [`pickle::Error`](crate::pickle::Error)).
    #[error(transparent)]
    Pickle(#[from] crate::pickle::Error),
}

impl Error {
    pub(crate) fn io(context: &'static str, source: io::Error) -> Self {
        Error::Io { context, source }
    }

    /// A [`Error::Timeout`] made deep down, where only a deadline is known, gets the
    /// timeout the caller gave; other errors pass unchanged.
    pub(crate) fn timed_out_after(self, after: Duration) -> Self {
        match self {
            Error::Timeout { operation, .. } => Error::Timeout { operation, after },
            e => e,
        }
    }

    /// True for the errors after which the handle is of no more use
    /// ([`Error::Disconnected`], [`Error::Closed`]).
    ///
    /// ```
    /// assert!(serpy::Error::Closed.is_final());
    /// assert!(!serpy::Error::AckUncertain.is_final());
    /// ```
    pub fn is_final(&self) -> bool {
        matches!(self, Error::Disconnected | Error::Closed)
    }
}

/// A breach of the wire protocol by the peer, reported by the decoders.
///
/// The decoders never panic on bad input: they report one of these, skip what they
/// cannot read and go on with the next frame or block.
///
/// ```
/// use serpy::ProtocolError;
///
/// let e = ProtocolError::BadChecksum { expected: 1, computed: 2 };
/// assert!(e.to_string().contains("checksum"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A message or block larger than the configured maximum; it was skipped.
    #[error("the peer sent a message of {size} bytes, above the maximum of {max} bytes; it was skipped. Raise max_message_size() in the builder if such messages are expected")]
    TooLarge {
        /// The size announced (v2) or reached so far (v1).
        size: u64,
        /// The configured maximum.
        max: usize,
    },
    /// v1: a control block (`0x01 ...`) that is not SETMODE, ACKMODCG or ACKEOT!!.
    #[error("the peer sent an unknown v1 control block {block:?}; it was ignored. Check that the peer speaks serpy v1")]
    UnknownControl {
        /// The block, lossily decoded and cut to 64 characters.
        block: String,
    },
    /// v1: SETMODE followed by something other than one digit 0..=5.
    #[error("the peer sent SETMODE with {arg:?}, not a mode 0 to 5; the receive mode was left unchanged")]
    BadSetMode {
        /// What followed `SETMODE`, lossily decoded.
        arg: String,
    },
    /// v1: a block in mode 2..=5 that is not valid base85.
    #[error(
        "the peer sent a block in mode {mode} that is not valid base85 ({detail}); it was dropped"
    )]
    BadBase85 {
        /// The receive mode.
        mode: Mode,
        /// What was wrong.
        detail: String,
    },
    /// v2: bytes that do not start with the magic `DE CA FE CA FE`; they were skipped.
    #[error("the peer sent {skipped} bytes that are not a serpy2 frame; they were skipped up to the next frame. Check that the peer speaks serpy v2")]
    BadMagic {
        /// How many bytes were skipped.
        skipped: usize,
    },
    /// v2: the payload's checksum does not match the header.
    #[error("a frame's checksum does not match (header says {expected:#010x}, payload sums to {computed:#010x}); the frame was dropped")]
    BadChecksum {
        /// The checksum in the header.
        expected: u32,
        /// The checksum of the payload that arrived.
        computed: u32,
    },
    /// v2: a type code that is not int, float, str or bytes.
    #[error("a frame has the unknown type code {code:#04x}; it was dropped. Check that both sides run a serpy2-compatible version")]
    UnknownType {
        /// The type code.
        code: u8,
    },
    /// v2: an integer frame whose payload is not 8 bytes.
    #[error("an integer frame has {len} bytes instead of 8; it was dropped")]
    BadInt {
        /// The payload length.
        len: usize,
    },
    /// v2: a float frame that is not a hexadecimal float.
    #[error("a float frame holds {text:?}, which is not a hexadecimal float; it was dropped")]
    BadFloat {
        /// The payload, lossily decoded and cut to 64 characters.
        text: String,
    },
    /// v2: a text frame that is not UTF-8.
    #[error("a text frame is not valid UTF-8 (at byte {valid_up_to}); it was dropped. Send such data as bytes")]
    InvalidUtf8 {
        /// Length of the valid prefix.
        valid_up_to: usize,
    },
    /// Auto-detection: the first bytes matched neither protocol in time.
    #[error("the peer sent only a prefix of the v2 magic and then nothing within the detection timeout; the connection was taken as v1")]
    DetectionTimeout,
}

/// Cuts `bytes` to at most 64 bytes and decodes them lossily, for error messages.
pub(crate) fn lossy_excerpt(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(64)];
    String::from_utf8_lossy(cut).into_owned()
}
