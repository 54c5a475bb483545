//! v2 ("serpy2"): 14-byte header, typed frames.
//!
//! STUB: the signatures below are the contract used by the rest of the crate.

use crate::error::Result;
use crate::message::Message;
use crate::protocol::{Frame, WireBuf};

/// The magic that starts every v2 frame.
pub const MAGIC: [u8; 5] = [0xDE, 0xCA, 0xFE, 0xCA, 0xFE];
/// Header length.
pub const HEADER_LEN: usize = 14;

/// Appends one frame for `message` (header, then the payload by reference where large).
pub fn encode(message: &Message, out: &mut WireBuf) -> Result<()> {
    let _ = (message, out);
    todo!()
}

/// The receiving half of v2.
#[derive(Debug)]
pub struct Decoder {
    _private: (),
}

impl Decoder {
    /// A decoder that refuses frames above `max_message_size` bytes.
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
}
