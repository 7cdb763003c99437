//! Enrollment tokens (SPEC §6): a secret an operator hands out, carried in
//! a tagent's registration URL (`?tenant=t&token=<id>.<secret>`), that lets
//! a registration create a tagent under the `token` and `approve` policies,
//! or bring a known tagent a new credential (a reinstall). Like Fleet's
//! enroll secrets and Salt's pre-accepted keys.
//!
//! The hub keeps only the secret's SHA-256: the token is shown once, when it
//! is created. Its id is public (lists, logs, the audit log).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Hex digits of a token's id, and of its secret.
pub const TOKEN_ID_LEN: usize = 16;
pub const TOKEN_SECRET_LEN: usize = 32;

/// An enrollment token as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollToken {
    /// 16 lowercase hex digits.
    pub id: String,
    /// The tenant whose registrations it admits.
    pub tenant: String,
    /// SHA-256 of the secret's text.
    #[serde(with = "serde_bytes")]
    pub secret_sha256: [u8; 32],
    /// Unix ms.
    pub created_ms: u64,
    pub expires_ms: u64,
    /// Registrations it may admit (each tagent created or reinstalled is one).
    pub max_uses: u32,
    pub uses: u32,
    /// Unix ms of the last use; 0: never used.
    pub last_used_ms: u64,
    /// Unix ms of its revocation; 0: not revoked.
    pub revoked_ms: u64,
    /// Who created it (an admin token's fingerprint).
    pub created_by: String,
    /// The operator's note ("rack 12 rollout").
    pub note: String,
    /// It may also bring a known tagent a new credential (a reinstall).
    /// Off by default: a token sits in every enrolled host's config, so an
    /// enrollment token must not let whoever reads one host's config take
    /// over the others.
    #[serde(default)]
    pub reinstall: bool,
}

/// Why a token presented with a registration admits nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    /// Not of the form `<id>.<secret>`, unknown, of another tenant, or the
    /// secret does not match: one answer for all, so the reply tells an
    /// attacker nothing about which ids exist.
    Invalid,
    Expired,
    Revoked,
    UsedUp,
    /// Valid, but not for a known tagent's new credential.
    NotForReinstall,
}

impl TokenRefusal {
    /// A metrics label, and the reply's words.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenRefusal::Invalid => "invalid",
            TokenRefusal::Expired => "expired",
            TokenRefusal::Revoked => "revoked",
            TokenRefusal::UsedUp => "used_up",
            TokenRefusal::NotForReinstall => "not_for_reinstall",
        }
    }
}

/// The id and secret of a token's text, if it has the token's form.
pub fn split_token(text: &str) -> Option<(&str, &str)> {
    let (id, secret) = text.split_once('.')?;
    (is_hex(id, TOKEN_ID_LEN) && is_hex(secret, TOKEN_SECRET_LEN)).then_some((id, secret))
}

/// Whether `s` is `len` hex digits: the form of every id the hub hands out
/// (tokens, pending registrations, rollouts), checked before any lookup.
pub fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

pub fn secret_digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

impl EnrollToken {
    /// A new token for `tenant` valid until `expires_ms`, and its text (to
    /// show once).
    pub fn generate(
        tenant: &str,
        now: u64,
        expires_ms: u64,
        max_uses: u32,
        created_by: &str,
        note: &str,
        reinstall: bool,
    ) -> (EnrollToken, String) {
        let id: [u8; TOKEN_ID_LEN / 2] = rand::random();
        let secret: [u8; TOKEN_SECRET_LEN / 2] = rand::random();
        let (id, secret) = (hex::encode(id), hex::encode(secret));
        let text = format!("{id}.{secret}");
        let token = EnrollToken {
            id,
            tenant: tenant.to_owned(),
            secret_sha256: secret_digest(&secret),
            created_ms: now,
            expires_ms,
            max_uses,
            uses: 0,
            last_used_ms: 0,
            revoked_ms: 0,
            created_by: created_by.to_owned(),
            note: note.to_owned(),
            reinstall,
        };
        (token, text)
    }

    /// Whether `secret` is this token's, in constant time.
    pub fn matches(&self, secret: &str) -> bool {
        bool::from(self.secret_sha256.ct_eq(&secret_digest(secret)))
    }

    /// Whether it admits a registration of `tenant` bringing `secret` at
    /// `now` (the use is not counted here); `reinstall`: the registration
    /// would change a known tagent's credential.
    pub fn admits(
        &self,
        tenant: &str,
        secret: &str,
        reinstall: bool,
        now: u64,
    ) -> Result<(), TokenRefusal> {
        if self.tenant != tenant || !self.matches(secret) {
            return Err(TokenRefusal::Invalid);
        }
        if self.revoked_ms != 0 {
            return Err(TokenRefusal::Revoked);
        }
        if now > self.expires_ms {
            return Err(TokenRefusal::Expired);
        }
        if self.uses >= self.max_uses {
            return Err(TokenRefusal::UsedUp);
        }
        if reinstall && !self.reinstall {
            return Err(TokenRefusal::NotForReinstall);
        }
        Ok(())
    }

    /// `active`, `expired`, `revoked` or `used-up` at `now`.
    pub fn state(&self, now: u64) -> &'static str {
        if self.revoked_ms != 0 {
            "revoked"
        } else if now > self.expires_ms {
            "expired"
        } else if self.uses >= self.max_uses {
            "used-up"
        } else {
            "active"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_admits_its_tenant_with_its_secret_until_it_expires_or_is_used_up() {
        let (mut t, text) = EnrollToken::generate("bank", 1_000, 2_000, 2, "token:ab", "", false);
        let (id, secret) = split_token(&text).expect("the token's own form");
        assert_eq!(id, t.id);
        assert_eq!(t.admits("bank", secret, false, 1_500), Ok(()));
        assert_eq!(
            t.admits("bank", secret, true, 1_500),
            Err(TokenRefusal::NotForReinstall)
        );
        assert_eq!(
            t.admits("lab", secret, false, 1_500),
            Err(TokenRefusal::Invalid)
        );
        let other = "0".repeat(TOKEN_SECRET_LEN);
        assert_eq!(
            t.admits("bank", &other, false, 1_500),
            Err(TokenRefusal::Invalid)
        );
        assert_eq!(
            t.admits("bank", secret, false, 2_001),
            Err(TokenRefusal::Expired)
        );
        t.uses = 2;
        assert_eq!(
            t.admits("bank", secret, false, 1_500),
            Err(TokenRefusal::UsedUp)
        );
        t.revoked_ms = 1_600;
        assert_eq!(
            t.admits("bank", secret, false, 1_500),
            Err(TokenRefusal::Revoked)
        );
        assert_eq!(t.state(1_500), "revoked");
    }

    #[test]
    fn only_the_tokens_own_form_splits() {
        let id = "0123456789abcdef";
        let secret = "0123456789abcdef0123456789abcdef";
        assert_eq!(split_token(&format!("{id}.{secret}")), Some((id, secret)));
        for bad in [
            "",
            ".",
            id,
            &format!("{id}.{secret}0"),
            &format!("{id}x.{secret}"),
            &format!("{id}.{}", &secret[1..]),
            &format!("{}.{secret}", "g".repeat(16)),
        ] {
            assert_eq!(split_token(bad), None, "{bad:?}");
        }
    }
}
