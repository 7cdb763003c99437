//! The handshake's pure half (SPEC §5.3): the tagent's greeting, and the
//! hub's answer to the challenge in it. The exchange itself is in
//! `client.rs`.

use super::Password;

/// The longest greeting accepted (a real one is under 100 bytes).
pub const MAX_GREETING: usize = 1024;
/// The longest decoded challenge (`f1,f2,t`: three 64-bit numbers).
const MAX_CHALLENGE: usize = 64;

/// `Tagent1.1`, or `Tagent1.1s` (the tagent's `data.encrypt=true`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Plain,
    Encrypted,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Plain => "Tagent1.1",
            Mode::Encrypted => "Tagent1.1s",
        }
    }
}

/// The tagent's first chunk: `ostype|charset|hex(challenge)|version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// `uname` sysname (`Linux`, `AIX`, ...) or `windows`.
    pub ostype: String,
    /// `UTF-8` on Unix, e.g. `cp936` on Windows.
    pub charset: String,
    pub mode: Mode,
    /// RC4(password, "f1,f2,t"), still encrypted.
    challenge: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The first chunk is not `ostype|charset|hex|Tagent1.1[s]`.
    #[error("its greeting is not a tagent's ({0})")]
    NotATagent(&'static str),
    /// SPEC §5.3 step 2: the password is wrong, or the peer is not that tagent.
    #[error(
        "the tagent's challenge does not decode with the stored password: \
         a wrong credential, or the peer is not that tagent"
    )]
    WrongCredential,
}

/// A short, printable field (ostype, charset).
fn field(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_graphic())
}

impl Greeting {
    pub fn parse(payload: &[u8]) -> Result<Greeting, HandshakeError> {
        use HandshakeError::NotATagent;
        let text = std::str::from_utf8(payload).map_err(|_| NotATagent("not text"))?;
        let mut fields = text.split('|');
        let (Some(ostype), Some(charset), Some(challenge), Some(version), None) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return Err(NotATagent("not four fields separated by '|'"));
        };
        let mode = match version {
            "Tagent1.1" => Mode::Plain,
            "Tagent1.1s" => Mode::Encrypted,
            _ => return Err(NotATagent("an unknown protocol version")),
        };
        if !field(ostype) || !field(charset) {
            return Err(NotATagent("a bad os type or charset"));
        }
        let challenge = hex::decode(challenge).map_err(|_| NotATagent("a challenge not in hex"))?;
        if challenge.is_empty() || challenge.len() > MAX_CHALLENGE {
            return Err(NotATagent("a challenge of a wrong size"));
        }
        Ok(Greeting {
            ostype: ostype.to_owned(),
            charset: charset.to_owned(),
            mode,
            challenge,
        })
    }

    /// Whether the tagent runs on Windows (its commands take another form).
    pub fn is_windows(&self) -> bool {
        self.ostype.eq_ignore_ascii_case("windows")
    }

    /// The hub's answer, in clear (the codec encrypts it in `Tagent1.1s`):
    /// hex of RC4(password, "<f1*f2>,<t>").
    pub fn answer(&self, password: &Password) -> Result<Vec<u8>, HandshakeError> {
        let mut plain = self.challenge.clone();
        password.apply(&mut plain);
        let mut answer = solve(&plain)
            .ok_or(HandshakeError::WrongCredential)?
            .into_bytes();
        password.apply(&mut answer);
        Ok(hex::encode(answer).into_bytes())
    }
}

/// "f1,f2,t" -> "<f1*f2>,<t>", or `None` when it is not three decimal
/// numbers (or the product overflows 64 bits).
fn solve(plain: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(plain).ok()?;
    let mut parts = text.split(',');
    let (f1, f2, t) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let number = |s: &str| -> Option<u64> {
        if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let product = number(f1)?.checked_mul(number(f2)?)?;
    number(t)?;
    Some(format!("{product},{t}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example_password() -> Password {
        Password::new(b"h2WE1YStN2oI749g".to_vec()).unwrap()
    }

    /// SPEC §5.3's worked example.
    #[test]
    fn the_spec_example_answers_as_the_tagent_expects() {
        let g = Greeting::parse(b"Linux|UTF-8|4fc119f3e02e81317adf5c22b5da35f8c39b1eb5|Tagent1.1")
            .unwrap();
        assert_eq!((g.ostype.as_str(), g.charset.as_str()), ("Linux", "UTF-8"));
        assert_eq!(g.mode, Mode::Plain);
        assert!(!g.is_windows());
        assert_eq!(
            g.answer(&example_password()).unwrap(),
            b"49c31af1fa2e852a73c45d25b5da35f8c39b"
        );
    }

    #[test]
    fn a_wrong_password_does_not_decode_the_challenge() {
        let g = Greeting::parse(b"Linux|UTF-8|4fc119f3e02e81317adf5c22b5da35f8c39b1eb5|Tagent1.1s")
            .unwrap();
        assert_eq!(g.mode, Mode::Encrypted);
        let wrong = Password::new(b"not-the-password".to_vec()).unwrap();
        assert_eq!(g.answer(&wrong), Err(HandshakeError::WrongCredential));
    }

    #[test]
    fn greetings_that_are_not_a_tagents_are_refused() {
        for bad in [
            &b"SSH-2.0-OpenSSH_9.6\r\n"[..],
            b"Linux|UTF-8|4fc1|Tagent2.0",
            b"Linux|UTF-8|zz|Tagent1.1",
            b"Linux|UTF-8||Tagent1.1",
            b"Linux|UTF-8|4fc1|Tagent1.1|extra",
            b"|UTF-8|4fc1|Tagent1.1",
            b"Li nux|UTF-8|4fc1|Tagent1.1",
            b"\xff|UTF-8|4fc1|Tagent1.1",
        ] {
            assert!(
                matches!(Greeting::parse(bad), Err(HandshakeError::NotATagent(_))),
                "accepted {:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn only_three_decimal_numbers_solve() {
        assert_eq!(
            solve(b"1234,5678,1700000000").unwrap(),
            "7006652,1700000000"
        );
        for bad in [
            &b"1,2"[..],
            b"1,2,3,4",
            b"1,-2,3",
            b"a,2,3",
            b"1,,3",
            b"18446744073709551615,2,3",
            b"\xff,1,1",
        ] {
            assert_eq!(solve(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
