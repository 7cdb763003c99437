//! The tagent's config file (`$TAGENT_HOME/conf/tagent.conf`) as lines of
//! `key=value`, comments and blanks kept in place; the credential masked
//! before any of it leaves the hub.

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
}
