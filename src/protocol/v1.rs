//! v1 ("serpy"): `0x1F`-separated blocks, modes 0 to 5, SETMODE/ACKMODCG/ACKEOT!! control blocks.
//!
//! STUB: the signatures below are the contract used by the rest of the crate.

use crate::error::Result;
use crate::message::{Message, TextEncoding};
use crate::protocol::{Frame, Mode, WireBuf};

/// The block separator (ASCII Unit Separator).
pub const SEP: u8 = 0x1F;
/// Ends the payload of an acknowledged message (modes 1, 3, 5).
pub const EOT: u8 = 0x04;
/// Starts a control block.
pub const CTRL: u8 = 0x01;

/// A v1 control block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// `SETMODE<d>`: from now on my data blocks are in mode d.
    SetMode(Mode),
    /// `ACKMODCG`: your SETMODE was seen.
    AckModeChange,
    /// `ACKEOT!!`: one acknowledged message of yours arrived whole.
    AckEot,
}

/// Appends the bytes of a control block (with its separator).
pub fn encode_control(control: Control, out: &mut WireBuf) {
    let _ = (control, out);
    todo!()
}

/// What [`Encoder::encode`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// The mode the message actually went in (it may differ from the one asked for).
    pub mode: Mode,
    /// True when a SETMODE block was written first: one ACKMODCG will come back.
    pub set_mode: bool,
}

/// The sending half of v1 for one direction of one connection.
#[derive(Debug, Clone)]
pub struct Encoder {
    _private: (),
}

impl Encoder {
    /// A new encoder in mode 0.
    pub fn new(encoding: TextEncoding, max_message_size: usize) -> Self {
        let _ = (encoding, max_message_size);
        todo!()
    }
    /// The current send mode (what the peer believes our data is in).
    pub fn mode(&self) -> Mode {
        todo!()
    }
    /// Back to mode 0, as on a new TCP connection.
    pub fn reset(&mut self) {
        todo!()
    }
    /// Appends the bytes of `message` sent in `mode` (a SETMODE first where the mode changes).
    pub fn encode(&mut self, message: &Message, mode: Mode, out: &mut WireBuf) -> Result<Encoded> {
        let _ = (message, mode, out);
        todo!()
    }
}

/// The receiving half of v1 for one direction of one connection.
#[derive(Debug)]
pub struct Decoder {
    _private: (),
}

impl Decoder {
    /// A new decoder in mode 0 that never holds more than about `max_message_size` bytes.
    pub fn new(max_message_size: usize) -> Self {
        let _ = max_message_size;
        todo!()
    }
    /// Feeds bytes; pushes what they complete.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<Frame>) {
        let _ = (input, out);
        todo!()
    }
    /// Bytes held.
    pub fn buffered(&self) -> usize {
        todo!()
    }
    /// The current receive mode.
    pub fn mode(&self) -> Mode {
        todo!()
    }
}
