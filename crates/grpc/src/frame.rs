//! gRPC message framing (gRPC over HTTP/2, "Length-Prefixed-Message"): a compressed flag
//! byte, a 4-byte big-endian length, the message.
//!
//! The decoder takes body chunks as they arrive and yields whole messages, refusing one over
//! the limit as soon as its length prefix is read (before buffering it).

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Why a gRPC body cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("a message of {size} bytes is over the limit of {limit} (grpc.services.*.max_message_size)")]
    TooLarge { size: usize, limit: usize },
    #[error("the message is compressed, but no compression was offered")]
    Compressed,
    #[error("the body ended inside a message")]
    Truncated,
}

/// One message with its 5-byte prefix.
pub fn encode(message: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(message.len() + 5);
    b.put_u8(0);
    b.put_u32(message.len() as u32);
    b.put_slice(message);
    b.freeze()
}

/// Splits a stream of body chunks into messages.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    limit: usize,
}

impl Decoder {
    pub fn new(limit: usize) -> Self {
        Decoder { buf: BytesMut::new(), limit }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next whole message, if one has arrived.
    pub fn next_message(&mut self) -> Result<Option<Bytes>, FrameError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let compressed = self.buf[0];
        let size = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if size > self.limit {
            return Err(FrameError::TooLarge { size, limit: self.limit });
        }
        if compressed != 0 {
            return Err(FrameError::Compressed);
        }
        if self.buf.len() < 5 + size {
            return Ok(None);
        }
        self.buf.advance(5);
        Ok(Some(self.buf.split_to(size).freeze()))
    }

    /// The body is over: anything left is a cut-off message.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buf.is_empty() { Ok(()) } else { Err(FrameError::Truncated) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_split_across_chunks_come_out_whole() {
        let mut wire = encode(b"hello").to_vec();
        wire.extend_from_slice(&encode(b""));
        wire.extend_from_slice(&encode(b"world!"));
        let mut d = Decoder::new(16);
        let mut out = Vec::new();
        for chunk in wire.chunks(3) {
            d.push(chunk);
            while let Some(m) = d.next_message().unwrap() {
                out.push(m);
            }
        }
        assert_eq!(out, [&b"hello"[..], b"", b"world!"]);
        assert_eq!(d.finish(), Ok(()));
        d.push(&encode(b"cut")[..4]);
        assert_eq!(d.next_message(), Ok(None));
        assert_eq!(d.finish(), Err(FrameError::Truncated));
    }

    #[test]
    fn oversized_and_compressed_messages_are_refused_at_their_prefix() {
        let mut d = Decoder::new(4);
        d.push(&[0, 0, 0, 0, 5]);
        assert_eq!(d.next_message(), Err(FrameError::TooLarge { size: 5, limit: 4 }));
        let mut d = Decoder::new(4);
        d.push(&[1, 0, 0, 0, 1, 0]);
        assert_eq!(d.next_message(), Err(FrameError::Compressed));
    }
}
