//! The JSON-line side of the heartbeat port: bytes cut into lines as the
//! server cuts them, each line decoded as a heartbeat.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tagent_hub::heartbeat::compat::{Decoded, decode_line};
use tagent_hub::heartbeat::conn::{Framing, Split};

const MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let framing = Framing::Lines { max: MAX };
    let mut at = 0;
    while at < data.len() {
        match framing.split(&data[at..]) {
            Split::Unit { start, end, next } => {
                let line = &data[at + start..at + end];
                assert!(line.len() <= MAX && !line.contains(&b'\n'));
                assert!(next > 0 && end <= next, "no progress");
                if let Decoded::Heartbeat(h) = decode_line(line) {
                    assert!(!h.tenant.trim().is_empty() && h.port != 0);
                }
                at += next;
            }
            Split::NeedMore => {
                assert!(data.len() - at <= MAX);
                break;
            }
            Split::TooLong => break,
        }
    }
    // A line as a whole, whatever it holds.
    let _ = decode_line(data);
});
