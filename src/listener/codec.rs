//! The listener's chunks (SPEC §5.2): a 2-byte big-endian length and that
//! many payload bytes; `00 00` ends the stream, and whatever follows it up
//! to the peer's close is the tail. In `Tagent1.1s` every payload and a
//! non-empty tail are RC4'd with the password, the key schedule restarted
//! each time; the length headers stay in clear.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::Password;

/// The largest payload a length header can name.
pub const MAX_CHUNK: usize = u16::MAX as usize;
/// The longest tail kept (a status or an error text).
pub const MAX_TAIL: usize = 16 * 1024;

/// What the peer sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// One payload, decrypted.
    Chunk(Bytes),
    /// `00 00`: the end of the stream.
    End,
    /// What followed the end up to the close (decrypted); empty means success.
    Tail(Bytes),
}

/// What the hub sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Out<'a> {
    /// A payload of 1 to [`MAX_CHUNK`] bytes.
    Chunk(&'a [u8]),
    /// `00 00`.
    End,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    #[error("a chunk of {len} bytes, more than the {max} expected here")]
    ChunkTooLarge { len: usize, max: usize },
    #[error("the text after the end of the stream is longer than {max} bytes")]
    TailTooLong { max: usize },
    #[error("the connection closed in the middle of a chunk")]
    Truncated,
    #[error("a chunk must hold 1 to 65535 bytes, not {0}")]
    BadLength(usize),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Where the decoder is in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Chunks,
    Tail,
    Done,
}

/// Chunks both ways, encrypted once [`ChunkCodec::encrypt_with`] is called.
#[derive(Debug)]
pub struct ChunkCodec {
    key: Option<Password>,
    max_chunk: usize,
    state: State,
}

impl Default for ChunkCodec {
    fn default() -> Self {
        ChunkCodec::new(MAX_CHUNK)
    }
}

impl ChunkCodec {
    /// A codec in clear that refuses chunks longer than `max_chunk`.
    pub fn new(max_chunk: usize) -> ChunkCodec {
        ChunkCodec {
            key: None,
            max_chunk: max_chunk.min(MAX_CHUNK),
            state: State::Chunks,
        }
    }

    /// From now on, RC4 every payload and tail with `password` (`Tagent1.1s`).
    pub fn encrypt_with(&mut self, password: Password) {
        self.key = Some(password);
    }

    pub fn set_max_chunk(&mut self, max_chunk: usize) {
        self.max_chunk = max_chunk.min(MAX_CHUNK);
    }

    fn decrypt(&self, buf: &mut BytesMut) {
        if let Some(key) = &self.key {
            key.apply(buf);
        }
    }
}

impl Decoder for ChunkCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        match self.state {
            State::Chunks => {
                let Some(head) = src.get(..2) else {
                    return Ok(None);
                };
                let len = usize::from(u16::from_be_bytes([head[0], head[1]]));
                if len == 0 {
                    src.advance(2);
                    self.state = State::Tail;
                    return Ok(Some(Frame::End));
                }
                if len > self.max_chunk {
                    return Err(CodecError::ChunkTooLarge {
                        len,
                        max: self.max_chunk,
                    });
                }
                if src.len() < 2 + len {
                    src.reserve(2 + len - src.len());
                    return Ok(None);
                }
                src.advance(2);
                let mut payload = src.split_to(len);
                self.decrypt(&mut payload);
                Ok(Some(Frame::Chunk(payload.freeze())))
            }
            State::Tail if src.len() > MAX_TAIL => Err(CodecError::TailTooLong { max: MAX_TAIL }),
            State::Tail => Ok(None),
            State::Done => {
                src.clear();
                Ok(None)
            }
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        if let Some(frame) = self.decode(src)? {
            return Ok(Some(frame));
        }
        match self.state {
            State::Chunks if src.is_empty() => Ok(None),
            State::Chunks => Err(CodecError::Truncated),
            State::Tail => {
                self.state = State::Done;
                let mut tail = src.split();
                self.decrypt(&mut tail);
                Ok(Some(Frame::Tail(tail.freeze())))
            }
            State::Done => Ok(None),
        }
    }
}

impl Encoder<Out<'_>> for ChunkCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Out<'_>, dst: &mut BytesMut) -> Result<(), CodecError> {
        match item {
            Out::End => dst.put_u16(0),
            Out::Chunk(payload) => {
                let len = u16::try_from(payload.len())
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or(CodecError::BadLength(payload.len()))?;
                dst.reserve(2 + payload.len());
                dst.put_u16(len);
                let start = dst.len();
                dst.extend_from_slice(payload);
                if let Some(key) = &self.key {
                    key.apply(&mut dst[start..]);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(codec: &mut ChunkCodec, bytes: &[u8]) -> Result<Vec<Frame>, CodecError> {
        let mut src = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(f) = codec.decode(&mut src)? {
            out.push(f);
        }
        while let Some(f) = codec.decode_eof(&mut src)? {
            out.push(f);
        }
        Ok(out)
    }

    #[test]
    fn chunks_end_and_tail() {
        let frames =
            decode_all(&mut ChunkCodec::default(), b"\x00\x02hi\x00\x01!\x00\x0033").unwrap();
        assert_eq!(
            frames,
            [
                Frame::Chunk(Bytes::from_static(b"hi")),
                Frame::Chunk(Bytes::from_static(b"!")),
                Frame::End,
                Frame::Tail(Bytes::from_static(b"33")),
            ]
        );
        let frames = decode_all(&mut ChunkCodec::default(), b"\x00\x00").unwrap();
        assert_eq!(frames, [Frame::End, Frame::Tail(Bytes::new())]);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(matches!(
            decode_all(&mut ChunkCodec::new(4), b"\x00\x05hello"),
            Err(CodecError::ChunkTooLarge { len: 5, max: 4 })
        ));
        assert!(matches!(
            decode_all(&mut ChunkCodec::default(), b"\x00\x05hel"),
            Err(CodecError::Truncated)
        ));
        let mut long = vec![0, 0];
        long.resize(MAX_TAIL + 3, b'x');
        assert!(matches!(
            decode_all(&mut ChunkCodec::default(), &long),
            Err(CodecError::TailTooLong { .. })
        ));
        // A close between chunks is no error here: the caller knows
        // whether the end was due.
        assert_eq!(
            decode_all(&mut ChunkCodec::default(), b"\x00\x01x")
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn encrypted_chunks_round_trip_each_with_a_fresh_key_schedule() {
        let password = Password::new(b"secret".to_vec()).unwrap();
        let mut codec = ChunkCodec::default();
        codec.encrypt_with(password.clone());
        let mut wire = BytesMut::new();
        codec.encode(Out::Chunk(b"abc"), &mut wire).unwrap();
        codec.encode(Out::Chunk(b"abc"), &mut wire).unwrap();
        codec.encode(Out::End, &mut wire).unwrap();
        assert_eq!(&wire[..2], b"\x00\x03", "lengths stay in clear");
        assert_eq!(wire[2..5], wire[7..10], "each chunk restarts RC4");
        assert_ne!(&wire[2..5], b"abc");
        let mut tail = b"boom".to_vec();
        password.apply(&mut tail);
        wire.extend_from_slice(&tail);
        let mut reader = ChunkCodec::default();
        reader.encrypt_with(password);
        let frames = decode_all(&mut reader, &wire).unwrap();
        assert_eq!(frames[0], Frame::Chunk(Bytes::from_static(b"abc")));
        assert_eq!(frames[3], Frame::Tail(Bytes::from_static(b"boom")));
    }

    #[test]
    fn empty_and_oversized_chunks_are_not_sent() {
        let mut codec = ChunkCodec::default();
        let mut dst = BytesMut::new();
        assert!(codec.encode(Out::Chunk(b""), &mut dst).is_err());
        assert!(
            codec
                .encode(Out::Chunk(&vec![0; MAX_CHUNK + 1]), &mut dst)
                .is_err()
        );
        assert!(dst.is_empty());
    }
}
