//! The native side of the heartbeat port: bytes cut into length-prefixed
//! frames as the server cuts them, each payload decoded as a client message.
//! A message that decodes must encode back to a frame that decodes to the
//! same bytes again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tagent_hub::heartbeat::conn::{Framing, Split};
use tagent_hub::heartbeat::proto::{decode_client, encode_frame};

const MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let framing = Framing::Frames { max: MAX };
    let mut at = 0;
    while at < data.len() {
        match framing.split(&data[at..]) {
            Split::Unit { start, end, next } => {
                assert_eq!((start, end), (4, next));
                let payload = &data[at + start..at + end];
                assert!(payload.len() <= MAX);
                if let Ok(msg) = decode_client(payload) {
                    let mut frame = Vec::new();
                    encode_frame(&msg, &mut frame);
                    let Split::Unit { start, end, .. } = framing.split(&frame) else {
                        panic!("an encoded message does not frame: {msg:?}");
                    };
                    let again = decode_client(&frame[start..end])
                        .unwrap_or_else(|e| panic!("{msg:?} does not decode again: {e}"));
                    let mut second = Vec::new();
                    encode_frame(&again, &mut second);
                    assert_eq!(frame, second, "{msg:?}");
                }
                at += next;
            }
            Split::NeedMore | Split::TooLong => break,
        }
    }
    let _ = decode_client(data);
});
