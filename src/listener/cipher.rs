//! RC4 as the tagent uses it (SPEC §5.1, §5.3): plain RC4, no drop, a fresh
//! key schedule per call; and the password a stored credential stands for.

use rc4::{KeyInit, Rc4, StreamCipher};

/// The tagent's public constant its `{ENCRYPTED}` credential is RC4'd with.
const CREDENTIAL_KEY: &[u8] = b"#ts=9^0$1";
/// What marks an encrypted credential; without it the credential is the
/// password itself.
const ENCRYPTED: &str = "{ENCRYPTED}";
/// RC4 takes keys of 1 to 256 bytes.
const MAX_KEY: usize = 256;

/// Why a stored credential names no usable password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    #[error("the credential's {{ENCRYPTED}} value is not hex")]
    NotHex,
    #[error("the credential's password is empty or longer than 256 bytes")]
    BadLength,
}

/// A tagent's password: the RC4 key of its handshake and of `Tagent1.1s`
/// chunks. Never printed: `Debug` shows `Password(***)`.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(Box<[u8]>);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

impl Password {
    /// The password of a credential as the tagent registered it (SPEC §5.1).
    pub fn from_credential(credential: &str) -> Result<Password, CredentialError> {
        let bytes = match credential.strip_prefix(ENCRYPTED) {
            Some(hex_text) => {
                let mut bytes =
                    hex::decode(hex_text.trim()).map_err(|_| CredentialError::NotHex)?;
                if bytes.is_empty() {
                    return Err(CredentialError::BadLength);
                }
                rc4(CREDENTIAL_KEY, &mut bytes);
                bytes
            }
            None => credential.as_bytes().to_vec(),
        };
        Password::new(bytes)
    }

    /// A password of 1 to 256 bytes.
    pub fn new(bytes: Vec<u8>) -> Result<Password, CredentialError> {
        if !(1..=MAX_KEY).contains(&bytes.len()) {
            return Err(CredentialError::BadLength);
        }
        Ok(Password(bytes.into_boxed_slice()))
    }

    /// RC4 `data` in place with this password as the key (its own inverse).
    pub fn apply(&self, data: &mut [u8]) {
        rc4(&self.0, data);
    }

    /// The credential a tagent with this password registers:
    /// `{ENCRYPTED}` + hex of RC4(key constant, password).
    pub fn to_credential(&self) -> String {
        let mut bytes = self.0.to_vec();
        rc4(CREDENTIAL_KEY, &mut bytes);
        format!("{ENCRYPTED}{}", hex::encode(bytes))
    }
}

/// RC4 of `data` in place; `key` is 1 to 256 bytes (checked by callers).
fn rc4(key: &[u8], data: &mut [u8]) {
    let mut cipher = Rc4::new_from_slice(key).expect("keys are checked to be 1..=256 bytes");
    cipher.apply_keystream(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SPEC §5.1's example.
    #[test]
    fn the_spec_credential_is_its_password() {
        let p = Password::from_credential("{ENCRYPTED}03b423680bafbbe3b506d377bec03c0b").unwrap();
        assert_eq!(p, Password::new(b"h2WE1YStN2oI749g".to_vec()).unwrap());
        assert_eq!(
            p.to_credential(),
            "{ENCRYPTED}03b423680bafbbe3b506d377bec03c0b"
        );
        assert_eq!(
            Password::from_credential("h2WE1YStN2oI749g").unwrap(),
            p,
            "no prefix: the password itself"
        );
        assert_eq!(format!("{p:?}"), "Password(***)");
    }

    #[test]
    fn unusable_credentials_are_refused() {
        assert_eq!(
            Password::from_credential("{ENCRYPTED}zz"),
            Err(CredentialError::NotHex)
        );
        assert_eq!(
            Password::from_credential("{ENCRYPTED}"),
            Err(CredentialError::BadLength)
        );
        assert_eq!(
            Password::from_credential(""),
            Err(CredentialError::BadLength)
        );
        assert_eq!(
            Password::new(vec![b'x'; 257]),
            Err(CredentialError::BadLength)
        );
    }
}
