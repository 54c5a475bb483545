//! The one error type of the crate, and the protocol errors that a peer can cause.

use std::io;
use std::time::Duration;

use crate::message::TextEncoding;
use crate::protocol::{Mode, Protocol};

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
    #[error("cannot use the address {addr}: {source}; {}", address_hint(.source))]
    Address {
        /// The address as given.
        addr: String,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },

    /// The TCP congestion control chosen with the builder's `congestion_control` could
    /// not be set on a socket: the kernel has no algorithm of that name, or does not let
    /// this program choose it.
    #[error("cannot use the TCP congestion control {name:?}: {source}; {}", congestion_hint(.source))]
    CongestionControl {
        /// The name as given.
        name: String,
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
    #[error("{operation} timed out after {after:?}; {}", timeout_hint(.operation))]
    Timeout {
        /// What timed out ("get_data", "send_data (queue full)", "send_data (waiting for the acknowledgement)", ...).
        operation: &'static str,
        /// The timeout that ran out.
        after: Duration,
    },

    /// The link is down for good and everything that had arrived has been read.
    #[error("the link to the peer is down for good (it broke, and auto-restart was off or gave up) and everything it delivered has been read; open a new connection once the peer is back (a client with auto_restart(true) reconnects by itself, for as many attempts as give_up_after() allows)")]
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

    /// The link went down for good while the message was being written: part of it
    /// reached the peer, which drops a message cut short, so it was not delivered.
    #[error("the link went down while the message was being written and will not come back: part of it reached the peer, which drops a message cut short, so it was not delivered; send it again on a new connection")]
    CutShort,

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

    /// The message or mode cannot travel over this protocol, or an option is not
    /// available on this system.
    #[error("{what}")]
    Unsupported {
        /// What was refused, and what to use instead.
        what: String,
    },

    /// A send that must not wait found the connection's outgoing queue full: the peer
    /// does not read as fast as messages are sent to it, or its link is down and
    /// reconnecting.
    #[error("the outgoing queue of this connection is full ({capacity} messages waiting): the peer does not read as fast as messages are sent, or the link is reconnecting; send more slowly, raise outgoing_capacity() in the builder, or drop this peer")]
    QueueFull {
        /// The capacity of the outgoing queue, in messages.
        capacity: usize,
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

    /// A send that must not wait found the bytes already waiting in the connection's
    /// outgoing queue at its budget (`outgoing_bytes`): the peer does not read as fast
    /// as messages are sent to it, or its link is reconnecting.
    #[error("the outgoing queue of this connection holds {queued} bytes, its budget is {limit}: the peer does not read as fast as messages are sent, or the link is reconnecting; send less, raise outgoing_bytes() in the builder, use FullQueue::KeepLatest for a live view, or drop this peer")]
    OutgoingBytesFull {
        /// Bytes waiting in the outgoing queue (as counted by the budget).
        queued: usize,
        /// The budget, `outgoing_bytes`.
        limit: usize,
    },
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

/// What to do about an address that cannot be used, by what the system said.
fn address_hint(source: &io::Error) -> &'static str {
    match source.kind() {
        io::ErrorKind::AddrInUse => "another program (or another server) listens on that port already; choose another port, port 0 for any free one, or stop the other program",
        io::ErrorKind::AddrNotAvailable => "that IP address is not one of this machine's; give one of its addresses, such as 127.0.0.1",
        io::ErrorKind::PermissionDenied => "this program may not listen on that port (ports below 1024 need privileges); choose a port from 1024 up",
        _ => "give an IP address and a port, such as (\"127.0.0.1\", 8000) or \"[::1]:8000\"",
    }
}

/// What to do about a congestion control that could not be set.
fn congestion_hint(source: &io::Error) -> &'static str {
    match source.kind() {
        io::ErrorKind::PermissionDenied => "without CAP_NET_ADMIN a program may choose only the names in /proc/sys/net/ipv4/tcp_allowed_congestion_control (reno always is); choose one of those, or leave congestion_control unset for the system's default",
        _ => "the names this kernel has are in /proc/sys/net/ipv4/tcp_available_congestion_control (a module such as tcp_cubic may have to be loaded); choose one of those, or leave congestion_control unset for the system's default",
    }
}

/// What to do about a timeout, by what timed out: waiting to receive points at the
/// sender, waiting to send at the receiver.
fn timeout_hint(operation: &str) -> &'static str {
    if operation.contains("room in the outgoing queue") {
        "the peer does not read as fast as messages are sent to it, or the link is reconnecting; allow more time, send less, or check that the peer reads its data"
    } else if operation.contains("this side has not read") {
        "read the messages waiting on this connection (get_data), or raise incoming_capacity() (or incoming_bytes()) in the builder; the acknowledgement comes once the reader can go on"
    } else if operation.contains("acknowledgement") {
        "the message may still arrive and be acknowledged later; allow more time, and check that the peer's program takes its messages (a receiver acknowledges a message once it has room for it)"
    } else if operation.starts_with("get_connection") {
        "no client connected in that time; try again or allow more time"
    } else {
        "nothing arrived in that time; try again, allow more time, or check that the peer sends"
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
    /// The first bytes of the link are the other protocol's: a v2 frame on a v1 link, or
    /// a v1 block on a v2 link. The link cannot work; it was closed.
    #[error("the peer speaks {found}, but this connection speaks {expected}; the link was closed. Use Protocol::{} on this side, or Protocol::Auto on a server", protocol_name(*.found))]
    WrongProtocol {
        /// The protocol of this connection.
        expected: Protocol,
        /// The protocol the peer's first bytes are in.
        found: Protocol,
    },
    /// The link ended in the middle of a message (the peer closed, or the link broke):
    /// the part received was dropped.
    #[error(
        "the link ended in the middle of a message: the {bytes} bytes received of it were dropped"
    )]
    CutShort {
        /// How many bytes of it had arrived, as the peer sent them: for v2 its 14-byte
        /// header included (so a link cut right after a header is reported too), for v1
        /// the block's bytes before the missing separator.
        bytes: usize,
    },
    /// Auto-detection: the first bytes matched neither protocol in time.
    #[error("the peer sent only a prefix of the v2 magic and then nothing within the detection timeout; the connection was taken as v1")]
    DetectionTimeout,
}

/// The name of the `Protocol` variant, for hints.
fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::V1 => "V1",
        Protocol::V2 => "V2",
        Protocol::Auto => "Auto",
    }
}

/// Cuts `bytes` to at most 64 bytes and decodes them lossily, for error messages.
pub(crate) fn lossy_excerpt(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(64)];
    String::from_utf8_lossy(cut).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_point_the_right_way() {
        let timeout = |operation| Error::Timeout {
            operation,
            after: Duration::from_secs(1),
        };
        let recv = timeout("get_data").to_string();
        assert!(!recv.contains("reads its data"), "{recv}");
        assert!(recv.contains("the peer sends"), "{recv}");
        let send = timeout("send_data (waiting for room in the outgoing queue)").to_string();
        assert!(send.contains("reads its data"), "{send}");
        let gone = Error::Disconnected.to_string();
        assert!(!gone.contains("enable auto-restart"), "{gone}");
        let busy = Error::Address {
            addr: "127.0.0.1:80".into(),
            source: io::Error::from(io::ErrorKind::AddrInUse),
        }
        .to_string();
        assert!(!busy.contains("give an IP address"), "{busy}");
        assert!(busy.contains("another port"), "{busy}");
    }
}
