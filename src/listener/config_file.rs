//! The tagent's config file (`$TAGENT_HOME/conf/tagent.conf`) as lines of
//! `key=value`, comments and blanks kept in place; the credential masked
//! before any of it leaves the hub; keys set in place, every other line
//! kept as it was (SPEC §5.5: better than the original).

use std::fmt;

/// Keys a tagent's config must have (SPEC §5.5).
pub const REQUIRED_KEYS: [&str; 4] = [
    "credential",
    "listen.port",
    "proxy.registeraddress",
    "tenant",
];

/// What a masked value reads as.
pub const MASK: &str = "******";

/// The key of a `key=value` line (trimmed), `None` for comments, blanks and
/// lines without `=`.
pub fn key_of(line: &str) -> Option<&str> {
    let trimmed = line.trim_start();
    if trimmed.starts_with('#') {
        return None;
    }
    let (key, _) = trimmed.split_once('=')?;
    let key = key.trim();
    (!key.is_empty()).then_some(key)
}

/// The lines with every `credential` value replaced by [`MASK`].
pub fn masked(lines: Vec<String>) -> Vec<String> {
    lines
        .into_iter()
        .map(|line| {
            if key_of(&line) != Some("credential") {
                return line;
            }
            let at = line.find('=').expect("a key line has '='");
            format!("{}={MASK}", &line[..at])
        })
        .collect()
}

/// The required keys no line sets.
pub fn missing_keys(lines: &[String]) -> Vec<&'static str> {
    REQUIRED_KEYS
        .into_iter()
        .filter(|k| !lines.iter().any(|l| key_of(l) == Some(k)))
        .collect()
}

/// Why keys cannot be set, or a file cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("'{0}' is not a config key (empty, or with '=', '#', a space or a control character)")]
    BadKey(String),
    #[error("the value of '{0}' has a newline or another control character")]
    BadValue(String),
    #[error("'credential' is not set here: the hub must keep knowing it (use resetcred)")]
    Credential,
    #[error("the file lacks the required keys {}", .0.join(", "))]
    MissingKeys(Vec<&'static str>),
    #[error("the file keeps the masked credential but the tagent's own file has none")]
    NoCredentialToKeep,
    #[error(
        "the credential cannot be changed here (the hub must keep knowing it): leave it ****** or use resetcred"
    )]
    CredentialChanged,
    #[error("no keys to set")]
    Nothing,
    #[error("line {0} holds a line break (a carriage return or a newline): send one line per item")]
    LineBreak(usize),
}

/// Keys and values checked for [`set_keys`]: in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyChanges(Vec<(String, String)>);

impl KeyChanges {
    /// Check every key and value: a key a line could read back as itself,
    /// a value on one line; never the credential.
    pub fn new(
        pairs: impl IntoIterator<Item = (String, String)>,
    ) -> Result<KeyChanges, ConfigError> {
        let pairs: Vec<(String, String)> = pairs.into_iter().collect();
        if pairs.is_empty() {
            return Err(ConfigError::Nothing);
        }
        for (key, value) in &pairs {
            let bad_key = key.is_empty()
                || key.starts_with('#')
                || key
                    .chars()
                    .any(|c| c == '=' || c.is_whitespace() || c.is_control());
            if bad_key {
                return Err(ConfigError::BadKey(key.clone()));
            }
            if key == "credential" {
                return Err(ConfigError::Credential);
            }
            if value.chars().any(char::is_control) {
                return Err(ConfigError::BadValue(key.clone()));
            }
        }
        Ok(KeyChanges(pairs))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl fmt::Display for KeyChanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<&str> = self.0.iter().map(|(k, _)| k.as_str()).collect();
        write!(f, "{}", keys.join(","))
    }
}

/// The lines with each key's lines given its new value (what precedes the
/// `=` kept, so indentation and spacing stay), every other line as it was;
/// a key no line sets is appended at the end. `None` when nothing changes.
pub fn set_keys(lines: &[String], changes: &KeyChanges) -> Option<Vec<String>> {
    let mut out = lines.to_vec();
    let mut changed = false;
    for (key, value) in changes.iter() {
        let mut found = false;
        for line in out.iter_mut() {
            if key_of(line) != Some(key) {
                continue;
            }
            found = true;
            let at = line.find('=').expect("a key line has '='");
            let new = format!("{}={value}", &line[..at]);
            if *line != new {
                *line = new;
                changed = true;
            }
        }
        if !found {
            out.push(format!("{key}={value}"));
            changed = true;
        }
    }
    changed.then_some(out)
}

/// The file an operator sent, its masked credential lines given the real
/// value from the tagent's own `current` lines; required keys checked. A
/// credential other than the real one is refused (the hub logs in with
/// it); any goes when the tagent's file has none.
pub fn unmask(lines: Vec<String>, current: Option<&[String]>) -> Result<Vec<String>, ConfigError> {
    let missing = missing_keys(&lines);
    if !missing.is_empty() {
        return Err(ConfigError::MissingKeys(missing));
    }
    let real = current.and_then(|c| {
        c.iter()
            .find(|l| key_of(l) == Some("credential"))
            .map(|l| l[l.find('=').expect("a key line has '='") + 1..].to_owned())
    });
    lines
        .into_iter()
        .map(|line| {
            if key_of(&line) != Some("credential") {
                return Ok(line);
            }
            if !is_masked_credential(&line) {
                let value = line.split_once('=').map_or("", |(_, v)| v.trim());
                return match &real {
                    Some(r) if r.trim() != value => Err(ConfigError::CredentialChanged),
                    _ => Ok(line),
                };
            }
            let real = real.as_deref().ok_or(ConfigError::NoCredentialToKeep)?;
            let at = line.find('=').expect("a key line has '='");
            Ok(format!("{}={real}", &line[..at]))
        })
        .collect()
}

/// A `credential` line whose value is the mask.
pub fn is_masked_credential(line: &str) -> bool {
    key_of(line) == Some("credential")
        && line.split_once('=').is_some_and(|(_, v)| v.trim() == MASK)
}

/// The file's bytes as uploaded: the lines, each ending with a newline.
pub fn to_bytes(lines: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for line in lines {
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn the_credential_is_masked_and_everything_else_kept() {
        let file = lines(
            "# tagent\ncredential={ENCRYPTED}03b4\n  credential = x=y\n#credential=keep\n\ntenant=demo\nproxy.group=a:1,b:2",
        );
        assert_eq!(
            masked(file),
            lines(
                "# tagent\ncredential=******\n  credential =******\n#credential=keep\n\ntenant=demo\nproxy.group=a:1,b:2"
            )
        );
    }

    #[test]
    fn missing_required_keys_are_named() {
        let file = lines("tenant=demo\nlisten.port=3939\n# credential=x");
        assert_eq!(missing_keys(&file), ["credential", "proxy.registeraddress"]);
    }

    fn changes(pairs: &[(&str, &str)]) -> KeyChanges {
        KeyChanges::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
    }

    #[test]
    fn a_key_is_set_in_place_and_an_absent_one_appended() {
        let file = lines("# tagent\n  tenant = demo\n#tenant=old\n\nproxy.group=a:1,b:2\nx.y=1");
        let out = set_keys(
            &file,
            &changes(&[
                ("tenant", "prod"),
                ("proxy.group", "c:3,d:4"),
                ("new.key", "v"),
            ]),
        )
        .unwrap();
        assert_eq!(
            out,
            lines("# tagent\n  tenant =prod\n#tenant=old\n\nproxy.group=c:3,d:4\nx.y=1\nnew.key=v")
        );
        assert_eq!(set_keys(&out, &changes(&[("tenant", "prod")])), None);
    }

    #[test]
    fn keys_and_values_are_checked() {
        let one = |k: &str, v: &str| KeyChanges::new([(k.to_owned(), v.to_owned())]);
        assert!(one("listen.port", "3940").is_ok());
        assert!(one("a", "").is_ok());
        for bad in ["", "a=b", "#a", "a b", "a\nb"] {
            assert_eq!(
                one(bad, "v"),
                Err(ConfigError::BadKey(bad.into())),
                "{bad:?}"
            );
        }
        assert_eq!(one("a", "x\ny"), Err(ConfigError::BadValue("a".into())));
        assert_eq!(one("a", "x\ry"), Err(ConfigError::BadValue("a".into())));
        assert_eq!(one("credential", "x"), Err(ConfigError::Credential));
        assert_eq!(KeyChanges::new([]), Err(ConfigError::Nothing));
    }

    #[test]
    fn a_masked_credential_keeps_the_real_one() {
        let current = lines("credential={ENCRYPTED}03b4\ntenant=demo");
        let sent = lines(
            "tenant=demo\n credential = ******\nlisten.port=3939\nproxy.registeraddress=http://h/",
        );
        assert_eq!(
            unmask(sent.clone(), Some(&current)).unwrap(),
            lines(
                "tenant=demo\n credential ={ENCRYPTED}03b4\nlisten.port=3939\nproxy.registeraddress=http://h/"
            )
        );
        assert_eq!(unmask(sent, None), Err(ConfigError::NoCredentialToKeep));
        let new = lines("credential=plain\ntenant=t\nlisten.port=1\nproxy.registeraddress=x");
        assert_eq!(unmask(new.clone(), None).unwrap(), new);
        assert_eq!(
            unmask(new, Some(&current)),
            Err(ConfigError::CredentialChanged)
        );
        let same =
            lines("credential={ENCRYPTED}03b4\ntenant=t\nlisten.port=1\nproxy.registeraddress=x");
        assert_eq!(unmask(same.clone(), Some(&current)).unwrap(), same);
        assert_eq!(
            unmask(lines("tenant=t\ncredential=x"), None),
            Err(ConfigError::MissingKeys(vec![
                "listen.port",
                "proxy.registeraddress"
            ]))
        );
        assert_eq!(to_bytes(&lines("a=1\n\nb")), b"a=1\n\nb\n");
    }

    mod kept {
        use super::*;
        use proptest::prelude::*;

        fn line() -> impl Strategy<Value = String> {
            prop_oneof![
                "[a-c]{1,2}[ ]{0,2}=[ -~]{0,6}",
                "[ ]{0,2}#[ -~]{0,8}",
                "[ -~]{0,8}",
                Just(String::new()),
            ]
        }

        proptest! {
            /// Every line whose key is not set stays byte for byte, in
            /// order; each set key's lines only change after the `=`.
            #[test]
            fn every_other_line_is_kept(
                file in proptest::collection::vec(line(), 0..20),
                set in proptest::collection::btree_map("[a-c]{1,2}", "[ -~]{0,6}", 1..4),
            ) {
                let set = KeyChanges::new(set.into_iter()).unwrap();
                let out = set_keys(&file, &set).unwrap_or_else(|| file.clone());
                prop_assert!(out.len() >= file.len());
                for (before, after) in file.iter().zip(&out) {
                    match key_of(before).and_then(|k| set.iter().find(|(s, _)| *s == k)) {
                        None => prop_assert_eq!(before, after),
                        Some((_, value)) => {
                            let at = before.find('=').unwrap();
                            prop_assert_eq!(&after[..at], &before[..at]);
                            prop_assert_eq!(&after[at + 1..], value);
                        }
                    }
                }
                for (i, added) in out[file.len()..].iter().enumerate() {
                    let (key, value) = added.split_once('=').unwrap();
                    prop_assert!(!file.iter().any(|l| key_of(l) == Some(key)));
                    prop_assert_eq!(set.iter().filter(|(k, _)| !file.iter().any(|l| key_of(l) == Some(*k))).nth(i), Some((key, value)));
                }
            }
        }
    }
}
