//! The hub's side of a tagent's listener: bytes from a hostile peer cut
//! into chunks (in clear and RC4'd), and a first chunk read as a greeting
//! and answered. Nothing panics; every chunk respects its bound; the chunks
//! decoded encode back to bytes that decode to the same chunks.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tagent_hub::listener::Password;
use tagent_hub::listener::codec::{ChunkCodec, Frame, Out};
use tagent_hub::listener::handshake::Greeting;
use tokio_util::codec::{Decoder, Encoder};

const MAX: usize = 1024;

fn frames(codec: &mut ChunkCodec, data: &[u8]) -> Vec<Frame> {
    let mut src = BytesMut::from(data);
    let mut out = Vec::new();
    loop {
        match codec.decode(&mut src) {
            Ok(Some(f)) => out.push(f),
            Ok(None) => break,
            Err(_) => return out,
        }
    }
    while let Ok(Some(f)) = codec.decode_eof(&mut src) {
        out.push(f);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let password = Password::new(b"h2WE1YStN2oI749g".to_vec()).unwrap();
    for encrypted in [false, true] {
        let mut codec = ChunkCodec::new(MAX);
        if encrypted {
            codec.encrypt_with(password.clone());
        }
        let got = frames(&mut codec, data);
        let mut wire = BytesMut::new();
        let mut again = ChunkCodec::new(MAX);
        if encrypted {
            again.encrypt_with(password.clone());
        }
        for f in &got {
            match f {
                Frame::Chunk(c) => {
                    assert!(!c.is_empty() && c.len() <= MAX);
                    again.encode(Out::Chunk(c), &mut wire).unwrap();
                }
                Frame::End => again.encode(Out::End, &mut wire).unwrap(),
                Frame::Tail(_) => {}
            }
        }
        let mut reader = ChunkCodec::new(MAX);
        if encrypted {
            reader.encrypt_with(password.clone());
        }
        let round: Vec<Frame> = frames(&mut reader, &wire)
            .into_iter()
            .filter(|f| !matches!(f, Frame::Tail(_)))
            .collect();
        let want: Vec<&Frame> = got.iter().filter(|f| !matches!(f, Frame::Tail(_))).collect();
        assert_eq!(round.iter().collect::<Vec<_>>(), want);
    }
    if let Ok(greeting) = Greeting::parse(data) {
        if let Ok(answer) = greeting.answer(&password) {
            assert!(answer.iter().all(u8::is_ascii_hexdigit));
        }
    }
});
