//! How hubs of a runner group prove to each other that a request comes
//! from one of them, now, once: every forwarded request is signed with an
//! HMAC (under a key derived from the credential key the hubs share) over
//! its method, path, body digest, a timestamp and a nonce. The receiver
//! refuses a signature outside a short window of its own clock, or one it
//! has seen before: a sniffed request cannot be replayed, nor its path or
//! body changed.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::HeaderMap;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use crate::store::CredentialCipher;

pub const TIME_HEADER: &str = "x-tagent-hub-peer-time";
pub const NONCE_HEADER: &str = "x-tagent-hub-peer-nonce";
pub const SIGNATURE_HEADER: &str = "x-tagent-hub-peer-signature";

/// How far the sender's clock may be from the receiver's (ms).
pub const WINDOW_MS: u64 = 30_000;
/// Nonces remembered at most: beyond, the receiver refuses (it is flooded
/// with validly signed requests, which only a hub could make).
const MOST_NONCES: usize = 100_000;

/// Why a peer's request was refused: the metric label and the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PeerRefusal {
    #[error("no peer signature")]
    Missing,
    #[error("a peer signature that does not verify")]
    BadSignature,
    #[error("a peer signature outside the time window")]
    Stale,
    #[error("a peer signature already used")]
    Replayed,
    #[error("too many peer requests in the time window")]
    Flooded,
}

impl PeerRefusal {
    pub const ALL: [PeerRefusal; 5] = [
        PeerRefusal::Missing,
        PeerRefusal::BadSignature,
        PeerRefusal::Stale,
        PeerRefusal::Replayed,
        PeerRefusal::Flooded,
    ];

    pub const fn label(self) -> &'static str {
        match self {
            PeerRefusal::Missing => "missing",
            PeerRefusal::BadSignature => "bad_signature",
            PeerRefusal::Stale => "stale",
            PeerRefusal::Replayed => "replayed",
            PeerRefusal::Flooded => "flooded",
        }
    }
}

fn message(method: &str, path: &str, body: &[u8], time: u64, nonce: &str) -> Vec<u8> {
    let digest = hex::encode(Sha256::digest(body));
    format!("tagent-hub peer v2\n{method}\n{path}\n{digest}\n{time}\n{nonce}").into_bytes()
}

/// The headers that sign `method path` with `body` at `now` (Unix ms).
pub fn sign(
    cipher: &CredentialCipher,
    method: &str,
    path: &str,
    body: &[u8],
    now: u64,
) -> [(&'static str, String); 3] {
    let mut nonce = [0u8; 16];
    rand::fill(&mut nonce);
    let nonce = hex::encode(nonce);
    let mac = cipher.peer_mac(&message(method, path, body, now, &nonce));
    [
        (TIME_HEADER, now.to_string()),
        (NONCE_HEADER, nonce),
        (SIGNATURE_HEADER, hex::encode(mac)),
    ]
}

/// The receiver's side: checks signatures and remembers the nonces of the
/// window.
#[derive(Clone, Default)]
pub struct Verifier {
    seen: Arc<Mutex<HashMap<[u8; 16], u64>>>,
}

impl Verifier {
    /// Accept the request (`headers`, `method path`, `body`) at `now`, or
    /// say why not.
    pub fn verify(
        &self,
        cipher: &CredentialCipher,
        headers: &HeaderMap,
        method: &str,
        path: &str,
        body: &[u8],
        now: u64,
    ) -> Result<(), PeerRefusal> {
        let get = |name| headers.get(name).and_then(|v| v.to_str().ok());
        let (Some(time), Some(nonce_hex), Some(sig)) =
            (get(TIME_HEADER), get(NONCE_HEADER), get(SIGNATURE_HEADER))
        else {
            return Err(PeerRefusal::Missing);
        };
        let time: u64 = time.parse().map_err(|_| PeerRefusal::BadSignature)?;
        let mut nonce = [0u8; 16];
        hex::decode_to_slice(nonce_hex, &mut nonce).map_err(|_| PeerRefusal::BadSignature)?;
        let mut mac = [0u8; 32];
        hex::decode_to_slice(sig, &mut mac).map_err(|_| PeerRefusal::BadSignature)?;
        if !cipher.is_peer_mac(&message(method, path, body, time, nonce_hex), &mac) {
            return Err(PeerRefusal::BadSignature);
        }
        if time.abs_diff(now) > WINDOW_MS {
            return Err(PeerRefusal::Stale);
        }
        let mut seen = self.seen.lock();
        if seen.contains_key(&nonce) {
            return Err(PeerRefusal::Replayed);
        }
        if seen.len() >= MOST_NONCES {
            // A nonce older than the window can never verify again.
            seen.retain(|_, t| t.abs_diff(now) <= WINDOW_MS);
            if seen.len() >= MOST_NONCES {
                return Err(PeerRefusal::Flooded);
            }
        }
        seen.insert(nonce, time);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher(byte: &str) -> CredentialCipher {
        CredentialCipher::from_hex(&byte.repeat(32)).unwrap()
    }

    fn headers(signed: [(&'static str, String); 3]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in signed {
            h.insert(k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn a_signature_verifies_once_for_its_request_and_window() {
        let c = cipher("11");
        let v = Verifier::default();
        let h = headers(sign(
            &c,
            "POST",
            "/internal/v1/tagents/1/reload",
            b"",
            1_000_000,
        ));
        let path = "/internal/v1/tagents/1/reload";
        assert_eq!(v.verify(&c, &h, "POST", path, b"", 1_000_500), Ok(()));
        // The same request again: a replay.
        assert_eq!(
            v.verify(&c, &h, "POST", path, b"", 1_000_600),
            Err(PeerRefusal::Replayed)
        );
        // Another path, body or key: the signature does not verify.
        let h = headers(sign(&c, "POST", path, b"", 1_000_000));
        for (p, b, key) in [
            ("/internal/v1/tagents/2/reload", &b""[..], "11"),
            (path, &b"x"[..], "11"),
            (path, &b""[..], "22"),
        ] {
            assert_eq!(
                v.verify(&cipher(key), &h, "POST", p, b, 1_000_000),
                Err(PeerRefusal::BadSignature)
            );
        }
        // Outside the window, either way.
        assert_eq!(
            v.verify(&c, &h, "POST", path, b"", 1_000_000 + WINDOW_MS + 1),
            Err(PeerRefusal::Stale)
        );
        assert_eq!(
            v.verify(&c, &h, "POST", path, b"", 1_000_000 - WINDOW_MS - 1),
            Err(PeerRefusal::Stale)
        );
        assert_eq!(
            v.verify(&c, &HeaderMap::new(), "POST", path, b"", 1_000_000),
            Err(PeerRefusal::Missing)
        );
    }
}
