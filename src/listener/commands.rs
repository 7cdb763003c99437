//! The commands and paths of the operations (SPEC §5.5), in the form of the
//! tagent's os: Unix shell, or Windows `cmd` for `ostype` `windows`.

use super::Greeting;

/// Print the tagent's config file.
pub fn read_config(on: &Greeting) -> &'static str {
    if on.is_windows() {
        r"type %TAGENT_HOME%\conf\tagent.conf"
    } else {
        "cat $TAGENT_HOME/conf/tagent.conf"
    }
}

/// The config file's name, as an upload sends it.
pub const CONFIG_FILE: &str = "tagent.conf";

/// The directory the config file is uploaded into (ending with the
/// separator: the tagent appends the file's name).
pub fn config_dir(on: &Greeting) -> &'static str {
    if on.is_windows() {
        r"%TAGENT_HOME%\conf\"
    } else {
        "$TAGENT_HOME/conf/"
    }
}

/// List the log files, one name a line.
pub fn list_logs(on: &Greeting) -> &'static str {
    if on.is_windows() {
        r"cd /d %TAGENT_HOME%\logs && dir /B"
    } else {
        "cd $TAGENT_HOME/logs/ && ls *.log*"
    }
}

/// The path of the log file `name` (a plain name, see [`is_plain_name`]).
pub fn log_path(on: &Greeting, name: &str) -> String {
    if on.is_windows() {
        format!(r"%TAGENT_HOME%\logs\{name}")
    } else {
        format!("$TAGENT_HOME/logs/{name}")
    }
}

/// Upgrade, step 1: the directory the package is uploaded into exists.
pub fn upgrade_prepare(on: &Greeting) -> &'static str {
    if on.is_windows() {
        r#"cd /d "%TAGENT_BASE%" && if not exist tmp mkdir tmp"#
    } else {
        r#"cd "$TAGENT_BASE" && mkdir -p tmp"#
    }
}

/// Upgrade, step 2: the directory the package is uploaded into (ending
/// with the separator: the tagent appends the file's name).
pub fn upgrade_dir(on: &Greeting) -> &'static str {
    if on.is_windows() {
        r"%TAGENT_BASE%\tmp\"
    } else {
        "$TAGENT_BASE/tmp/"
    }
}

/// Upgrade, step 3: unpack the package `file` (a plain name) over the
/// tagent's `bin lib tools mod`.
pub fn upgrade_unpack(on: &Greeting, file: &str) -> String {
    if on.is_windows() {
        format!(r#"7z x -ttar -y "%TAGENT_BASE%\tmp\{file}" -o"%TAGENT_BASE%" bin lib tools mod"#)
    } else {
        format!(r#"cd "$TAGENT_BASE" && tar xvf "$TAGENT_BASE/tmp/{file}" bin lib tools mod"#)
    }
}

/// A file name with nothing a path or a shell could read more into: no
/// separator, no `.`/`..`, no control character, no variable or quote.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| !c.is_control() && !matches!(c, '/' | '\\' | '$' | '%' | '"' | '\'' | '`'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn greeting(ostype: &str) -> Greeting {
        let text = format!("{ostype}|UTF-8|4fc119f3e02e81317adf5c22b5da35f8c39b1eb5|Tagent1.1");
        Greeting::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn upgrade_commands_per_os() {
        let (unix, win) = (greeting("Linux"), greeting("windows"));
        assert_eq!(
            upgrade_prepare(&unix),
            r#"cd "$TAGENT_BASE" && mkdir -p tmp"#
        );
        assert_eq!(upgrade_dir(&unix), "$TAGENT_BASE/tmp/");
        assert_eq!(
            upgrade_unpack(&unix, "p.tar"),
            r#"cd "$TAGENT_BASE" && tar xvf "$TAGENT_BASE/tmp/p.tar" bin lib tools mod"#
        );
        assert_eq!(upgrade_dir(&win), r"%TAGENT_BASE%\tmp\");
        assert_eq!(
            upgrade_unpack(&win, "p.tar"),
            r#"7z x -ttar -y "%TAGENT_BASE%\tmp\p.tar" -o"%TAGENT_BASE%" bin lib tools mod"#
        );
    }

    #[test]
    fn plain_names_only() {
        for ok in ["tagent.log", "tagent.log.1", "a b.log", "日志.log"] {
            assert!(is_plain_name(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x.log",
            "a/b.log",
            r"a\b.log",
            "$HOME.log",
            "%X%.log",
            "a\nb",
            "a\0b",
            "`x`",
        ] {
            assert!(!is_plain_name(bad), "{bad:?}");
        }
        assert!(!is_plain_name(&"x".repeat(256)));
    }
}
