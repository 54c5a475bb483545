//! The plain data the parts of a connection hand each other: what a caller queues for
//! the writer ([`Outgoing`], [`Payload`]), what the reader queues for the program
//! ([`Incoming`]), the answer slot of an acknowledged send ([`AckSlot`]), and what
//! readers tell the writer ([`Control`]). It imports only the protocol and the message
//! types, so every other file of the connection can build on it.

use bytes::Bytes;
use crossbeam_channel::Sender;

use crate::error::Result;
use crate::message::Message;
use crate::protocol::{v1, v2, Mode, Protocol};

/// A message as received, with the v1 mode it came in (`None` for v2).
pub(crate) type Incoming = (Message, Option<Mode>);

/// The answer an acknowledged send waits for: `Ok` once the peer's ACKEOT for it came.
pub(crate) type AckSlot = Sender<Result<()>>;

/// A message ready for the writer.
pub(crate) struct Outgoing {
    /// Its encoding (or the message itself, for an auto server before detection).
    pub payload: Payload,
    /// Where its acknowledgement goes, for modes 1, 3 and 5.
    pub ack: Option<AckSlot>,
    /// Part of it was written on a link that then broke (the peer dropped that part).
    /// It goes out whole on the next link; if none comes, its sender learns that bytes
    /// of it went out (`Error::CutShort`), not that nothing did.
    pub cut: bool,
}

/// A message encoded for the wire, as far as that does not depend on the link's state.
#[derive(Clone)]
pub(crate) enum Payload {
    /// A v1 data block (no SETMODE) and the mode it is in.
    V1 { mode: Mode, parts: Vec<Bytes> },
    /// A whole v2 frame: its header, and its payload (the message's own bytes).
    V2 {
        header: [u8; v2::HEADER_LEN],
        body: Bytes,
    },
    /// A whole v2 frame whose header (type code `code`) is made when it is written:
    /// the checksum of a payload of the sizes `v2::sums_late` names is computed just
    /// before the socket copies the payload (the message's own bytes), see `Link::put`.
    V2Late { code: u8, body: Bytes },
    /// A v1 base85 data block (mode 2 or 3, no SETMODE) of the payload `body`, encoded
    /// when it is written: into the writer's reused buffer, just before the socket
    /// copies it (see `v1::encodes_late`, `Link::put`).
    V1Late { mode: Mode, body: Bytes },
    /// Server in auto mode before the peer's protocol is known: encoded later.
    Deferred { message: Message, mode: Mode },
    /// Small plain messages copied into the outgoing queue back to back (see `outbox`).
    Run(Run),
}

/// Small plain messages, encoded back to back (v2 frames, or v1 data blocks of one mode).
#[derive(Clone)]
pub(crate) struct Run {
    /// The v1 mode of all of them (`None` for v2): the link puts a SETMODE first if its
    /// send mode is another.
    pub mode: Option<Mode>,
    /// Their bytes.
    pub bytes: Bytes,
    /// Where each message ends in `bytes` (the last one is `bytes.len()`).
    pub ends: Vec<usize>,
}

impl Payload {
    /// True when the peer is to acknowledge it (v1 modes 1, 3, 5).
    pub fn is_acked(&self) -> bool {
        match self {
            Payload::V1 { mode, .. }
            | Payload::V1Late { mode, .. }
            | Payload::Deferred { mode, .. } => mode.is_acked(),
            Payload::V2 { .. } | Payload::V2Late { .. } | Payload::Run(_) => false,
        }
    }
}

impl Outgoing {
    /// About how many bytes it puts on the wire (for the writer's batch bound).
    pub fn payload_len(&self) -> usize {
        match &self.payload {
            Payload::V1 { parts, .. } => parts.iter().map(Bytes::len).sum(),
            Payload::V2 { body, .. } | Payload::V2Late { body, .. } => v2::HEADER_LEN + body.len(),
            Payload::V1Late { mode, body } => v1::base85_block_len(body.len(), *mode),
            Payload::Deferred { message, .. } => message.len(),
            Payload::Run(run) => run.bytes.len(),
        }
    }

    /// How many messages it holds (a run holds many).
    pub fn messages(&self) -> usize {
        match &self.payload {
            Payload::Run(run) => run.ends.len(),
            _ => 1,
        }
    }
}

/// What readers (and callers that wrote to the socket themselves) tell the writer.
pub(crate) enum Control {
    /// Control replies are waiting, or a write made outside the writer left work for it.
    Wake,
    /// The link of `epoch` broke.
    LinkDown { epoch: u64, reason: String },
    /// The peer of the link of `epoch` will send no more (it shut down its sending
    /// side, or closed); it may still read.
    PeerDone { epoch: u64 },
    /// The peer's protocol was detected (auto servers).
    Detected(Protocol),
}

/// What holding a queued message of `len` bytes costs in a queue's byte budget (incoming
/// and outgoing alike): its length and the queue slot, message and buffer headers that
/// go with it, so that many empty messages still meet the bound.
pub(crate) const MESSAGE_OVERHEAD: usize = 64;

/// The cost of a message of `len` bytes in a byte budget.
pub(crate) fn charge(len: usize) -> usize {
    len.saturating_add(MESSAGE_OVERHEAD)
}
