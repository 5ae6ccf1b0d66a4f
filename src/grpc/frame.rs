//! gRPC message framing (the 5-byte prefix of PROTOCOL-HTTP2: a flags byte, a big-endian u32
//! length, then the message), shared by gRPC and gRPC-Web. The decoder takes the body in
//! whatever chunks the connection delivers and refuses a frame longer than the limit before
//! buffering it, so a hostile length prefix cannot make us allocate.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;

/// The prefix before each message.
pub const PREFIX_LEN: usize = 5;
/// Flag bit: the message is compressed (we never ask for compression).
pub const COMPRESSED: u8 = 0x01;
/// Flag bit (gRPC-Web only): the frame carries the trailers, not a message.
pub const TRAILERS: u8 = 0x80;

/// One frame off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The flags byte.
    pub flags: u8,
    /// The message (or trailer block) bytes.
    pub payload: Bytes,
}

impl Frame {
    /// Whether this is a gRPC-Web trailer frame.
    pub fn is_trailers(&self) -> bool {
        self.flags & TRAILERS != 0
    }
}

/// Why a body is not a sequence of frames we accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces more than the limit.
    #[error("a gRPC message of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Announced length.
        len: u64,
        /// The limit.
        limit: usize,
    },
    /// The body ended inside a frame.
    #[error("the body ended inside a gRPC message ({have} of {want} bytes)")]
    Truncated {
        /// Bytes received of the frame, prefix included.
        have: usize,
        /// Bytes the frame needs, prefix included.
        want: usize,
    },
    /// The compressed flag is set: we never offer compression, so a peer may not use it.
    #[error("a compressed gRPC message, but no compression was negotiated")]
    Compressed,
}

/// Prefix and encode one message.
pub fn encode(message: &impl Message) -> Bytes {
    let len = message.encoded_len();
    let mut out = BytesMut::with_capacity(PREFIX_LEN + len);
    out.put_u8(0);
    out.put_u32(len as u32);
    message.encode_raw(&mut out);
    out.freeze()
}

/// Prefix already encoded bytes with `flags`.
pub fn encode_bytes(flags: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(PREFIX_LEN + payload.len());
    out.put_u8(flags);
    out.put_u32(payload.len() as u32);
    out.put_slice(payload);
    out.freeze()
}

/// Splits a body into frames across arbitrary chunk boundaries.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max: usize,
}

impl FrameDecoder {
    /// A decoder refusing frames whose payload exceeds `max` bytes.
    pub fn new(max: usize) -> Self {
        FrameDecoder { buf: BytesMut::new(), max }
    }

    /// Add the next chunk of the body.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete frame, `None` until one is buffered. A compressed message is an
    /// error; a gRPC-Web trailer frame is returned as it is (its flag tells it apart).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buf.len() < PREFIX_LEN {
            return Ok(None);
        }
        let flags = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
        if len as u64 > self.max as u64 {
            return Err(FrameError::TooLarge { len: len.into(), limit: self.max });
        }
        if flags & COMPRESSED != 0 {
            return Err(FrameError::Compressed);
        }
        let want = PREFIX_LEN + len as usize;
        if self.buf.len() < want {
            // Reserve once for the whole frame instead of growing chunk by chunk.
            self.buf.reserve(want - self.buf.len());
            return Ok(None);
        }
        let mut frame = self.buf.split_to(want);
        frame.advance(PREFIX_LEN);
        Ok(Some(Frame { flags, payload: frame.freeze() }))
    }

    /// At the end of the body: an error when a frame was left incomplete.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let want = if self.buf.len() >= PREFIX_LEN {
            PREFIX_LEN + u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize
        } else {
            PREFIX_LEN
        };
        Err(FrameError::Truncated { have: self.buf.len(), want })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames_of(body: &[u8], split: usize, max: usize) -> Result<Vec<Frame>, FrameError> {
        let mut decoder = FrameDecoder::new(max);
        let mut out = Vec::new();
        for chunk in body.chunks(split.max(1)) {
            decoder.push(chunk);
            while let Some(frame) = decoder.next_frame()? {
                out.push(frame);
            }
        }
        decoder.finish()?;
        Ok(out)
    }

    #[test]
    fn frames_survive_every_chunk_split() {
        let mut body = Vec::new();
        body.extend_from_slice(&encode_bytes(0, b"first"));
        body.extend_from_slice(&encode_bytes(0, b""));
        body.extend_from_slice(&encode_bytes(TRAILERS, b"grpc-status:0\r\n"));
        for split in 1..=body.len() {
            let frames = frames_of(&body, split, 64).expect("frames");
            assert_eq!(frames.len(), 3, "split {split}");
            assert_eq!(&frames[0].payload[..], b"first");
            assert!(frames[1].payload.is_empty());
            assert!(frames[2].is_trailers() && !frames[0].is_trailers());
        }
    }

    #[test]
    fn a_length_over_the_limit_is_refused_before_it_is_buffered() {
        let mut decoder = FrameDecoder::new(1024);
        decoder.push(&[0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(decoder.next_frame(), Err(FrameError::TooLarge { len: u32::MAX.into(), limit: 1024 }));
    }

    #[test]
    fn a_one_mebibyte_message_in_small_chunks() {
        let payload = vec![7u8; 1 << 20];
        let body = encode_bytes(0, &payload);
        let frames = frames_of(&body, 16 * 1024 + 3, 4 << 20).expect("frames");
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].payload.len(), 1 << 20);
        assert_eq!(
            frames_of(&body, 4096, (1 << 20) - 1),
            Err(FrameError::TooLarge { len: 1 << 20, limit: (1 << 20) - 1 })
        );
    }

    #[test]
    fn truncated_and_compressed_bodies_are_errors() {
        let body = encode_bytes(0, b"hello");
        assert_eq!(frames_of(&body[..7], 3, 64), Err(FrameError::Truncated { have: 7, want: 10 }));
        assert_eq!(frames_of(&body[..2], 3, 64), Err(FrameError::Truncated { have: 2, want: 5 }));
        assert_eq!(frames_of(&encode_bytes(COMPRESSED, b"x"), 64, 64), Err(FrameError::Compressed));
    }
}
