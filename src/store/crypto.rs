//! Credentials at rest: XChaCha20-Poly1305 with a random 24-byte nonce per
//! value, the row's key as associated data (a sealed credential cannot be
//! moved to another account). The key comes from the configuration or from a
//! file generated on first start, readable by the owner only.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::StoreError;
use crate::model::CredentialPrint;

pub const KEY_FILE: &str = "credential.key";

pub struct CredentialCipher {
    aead: XChaCha20Poly1305,
    /// Derived from the key: what the hubs of a runner group (which share
    /// the key) prove to each other when they forward a command.
    peer: [u8; 32],
    /// The key of credential fingerprints.
    print: [u8; 32],
}

impl std::fmt::Debug for CredentialCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialCipher(***)")
    }
}

fn parse_key(hex_key: &str) -> Result<[u8; 32], StoreError> {
    let mut key = [0u8; 32];
    hex::decode_to_slice(hex_key.trim(), &mut key).map_err(|_| {
        StoreError::Key("the credential key must be 64 hex digits (32 bytes)".into())
    })?;
    Ok(key)
}

impl CredentialCipher {
    pub fn from_hex(hex_key: &str) -> Result<Self, StoreError> {
        let key = parse_key(hex_key)?;
        let derive = |label: &[u8]| -> [u8; 32] {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("HMAC takes any key");
            mac.update(label);
            mac.finalize().into_bytes().into()
        };
        Ok(CredentialCipher {
            aead: XChaCha20Poly1305::new(&key.into()),
            peer: derive(b"tagent-hub hub-to-hub v1"),
            print: derive(b"tagent-hub credential print v1"),
        })
    }

    /// The key in `dir/credential.key`, generated (mode 0600) if missing.
    pub fn from_key_file(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(KEY_FILE);
        match fs::read_to_string(&path) {
            Ok(s) => return Self::from_hex(&s),
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(StoreError::file("read the credential key file", path, e));
            }
            Err(_) => {}
        }
        let mut key = [0u8; 32];
        rand::fill(&mut key);
        let hex_key = hex::encode(key);
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            f.write_all(hex_key.as_bytes())?;
            f.sync_all()?;
            fs::File::open(dir)?.sync_all()
        };
        match write() {
            Ok(()) => Self::from_hex(&hex_key),
            // Another process won the race to create it: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::from_key_file(dir),
            Err(e) => Err(StoreError::file("create the credential key file", path, e)),
        }
    }

    /// The fingerprint of a credential: the same for every hub sharing the
    /// key, and nothing about the credential without it.
    pub fn print(&self, credential: &str) -> CredentialPrint {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.print).expect("HMAC takes any key");
        mac.update(credential.as_bytes());
        let full = mac.finalize().into_bytes();
        let mut print = [0u8; 16];
        print.copy_from_slice(&full[..16]);
        CredentialPrint(print)
    }

    /// The MAC hubs sharing this key sign what they send each other with.
    pub fn peer_mac(&self, message: &[u8]) -> [u8; 32] {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.peer).expect("HMAC takes any key");
        mac.update(message);
        mac.finalize().into_bytes().into()
    }

    /// Whether `presented` is [`CredentialCipher::peer_mac`] of `message`,
    /// compared in constant time.
    pub fn is_peer_mac(&self, message: &[u8], presented: &[u8]) -> bool {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.peer).expect("HMAC takes any key");
        mac.update(message);
        mac.verify_slice(presented).is_ok()
    }

    /// `nonce || ciphertext+tag`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 24];
        rand::fill(&mut nonce);
        let sealed = self
            .aead
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory buffers");
        let mut out = Vec::with_capacity(24 + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        if sealed.len() < 24 {
            return Err(StoreError::Corrupt("sealed credential is truncated".into()));
        }
        let (nonce, ct) = sealed.split_at(24);
        self.aead
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
            .map_err(|_| {
                StoreError::Key("a credential does not decrypt with the configured key".into())
            })
    }
}

/// Open the credential `sealed` of (tenant, ip, port); `None` stays `None`.
pub(crate) fn open_credential(
    cipher: &CredentialCipher,
    tenant: &str,
    ip: IpAddr,
    port: u16,
    sealed: Option<Vec<u8>>,
) -> Result<Option<String>, StoreError> {
    let Some(sealed) = sealed else {
        return Ok(None);
    };
    let name = crate::model::account_name(ip, port);
    let plain = cipher.open(&account_aad(tenant, &name), &sealed)?;
    String::from_utf8(plain)
        .map(Some)
        .map_err(|e| StoreError::Corrupt(format!("account {name}: credential: {e}")))
}

/// The associated data a credential is sealed with: the account's key.
pub(crate) fn account_aad(tenant: &str, name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(tenant.len() + name.len() + 1);
    aad.extend_from_slice(tenant.as_bytes());
    aad.push(0);
    aad.extend_from_slice(name.as_bytes());
    aad
}

/// Text sealed with the credential key, to refuse a wrong key at start.
pub(crate) const KEY_CHECK_TEXT: &[u8] = b"tagent-hub credential key check";

pub(crate) fn wrong_key() -> StoreError {
    StoreError::Key(
        "this store was written with another credential key; \
         configure that key (credential_key) or restore its key file"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_credential_opens_only_with_its_key_and_row() {
        let c = CredentialCipher::from_hex(&"11".repeat(32)).unwrap();
        let sealed = c.seal(b"row-a", b"{ENCRYPTED}00ff");
        assert_eq!(c.open(b"row-a", &sealed).unwrap(), b"{ENCRYPTED}00ff");
        assert!(c.open(b"row-b", &sealed).is_err());
        let other = CredentialCipher::from_hex(&"22".repeat(32)).unwrap();
        assert!(other.open(b"row-a", &sealed).is_err());
        // Hubs with the same key recognise each other; others do not.
        let same = CredentialCipher::from_hex(&"11".repeat(32)).unwrap();
        let mac = c.peer_mac(b"POST /x");
        assert!(same.is_peer_mac(b"POST /x", &mac));
        assert!(!same.is_peer_mac(b"POST /y", &mac));
        assert!(!other.is_peer_mac(b"POST /x", &mac));
        assert!(!c.is_peer_mac(b"POST /x", b"zz"));
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let a = CredentialCipher::from_key_file(dir.path()).unwrap();
        let mode = fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = CredentialCipher::from_key_file(dir.path()).unwrap();
        let sealed = a.seal(b"", b"x");
        assert_eq!(b.open(b"", &sealed).unwrap(), b"x");
    }
}
