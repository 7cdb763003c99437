//! The one request of a connection (SPEC §5.4): a chunk
//! `user|type|charset|hex(arg1)|hex(arg2)...`, always as the tagent's own
//! user (`none`).

/// The request types the hub sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Execmd,
    Download,
    Upload,
    Reload,
    Echo,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Execmd,
        Kind::Download,
        Kind::Upload,
        Kind::Reload,
        Kind::Echo,
    ];

    /// Its name on the wire and in metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Execmd => "execmd",
            Kind::Download => "download",
            Kind::Upload => "upload",
            Kind::Reload => "reload",
            Kind::Echo => "echo",
        }
    }
}

/// One request with its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    /// Run a command (stderr merged into stdout); no eof-regex, env nor
    /// timeout: the hub's own deadline bounds it.
    Execmd { command: &'a str },
    /// A file (or a directory, as tar), following symbolic links or not.
    Download { path: &'a str, follow_links: bool },
    /// A file into `dest_dir` (ending `/`: `source_name` is appended).
    Upload {
        source_name: &'a str,
        dest_dir: &'a str,
    },
    /// Restart the tagent, which registers again.
    Reload,
    /// The text back: can the hub reach and log in.
    Echo { text: &'a str },
}

impl Request<'_> {
    pub fn kind(&self) -> Kind {
        match self {
            Request::Execmd { .. } => Kind::Execmd,
            Request::Download { .. } => Kind::Download,
            Request::Upload { .. } => Kind::Upload,
            Request::Reload => Kind::Reload,
            Request::Echo { .. } => Kind::Echo,
        }
    }

    /// The request chunk's payload, in the tagent's `charset`.
    pub fn encode(&self, charset: &str) -> String {
        let args: Vec<String> = match *self {
            // The empty second argument is the absent eof-regex.
            Request::Execmd { command } => vec![hex::encode(command), String::new()],
            Request::Download { path, follow_links } => {
                vec![
                    hex::encode(path),
                    hex::encode(if follow_links { "1" } else { "0" }),
                ]
            }
            Request::Upload {
                source_name,
                dest_dir,
            } => vec![
                hex::encode("file"),
                hex::encode(source_name),
                hex::encode(dest_dir),
            ],
            Request::Reload => vec![hex::encode("none")],
            Request::Echo { text } => vec![hex::encode(text)],
        };
        format!("none|{}|{charset}|{}", self.kind().as_str(), args.join("|"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SPEC §5.4's byte examples.
    #[test]
    fn the_spec_examples() {
        let read_config = Request::Execmd {
            command: "cat $TAGENT_HOME/conf/tagent.conf",
        }
        .encode("UTF-8");
        assert_eq!(
            read_config,
            "none|execmd|UTF-8|6361742024544147454e545f484f4d452f636f6e662f746167656e742e636f6e66|"
        );
        assert_eq!(read_config.len(), 0x55);
        let reload = Request::Reload.encode("UTF-8");
        assert_eq!(reload, "none|reload|UTF-8|6e6f6e65");
        assert_eq!(reload.len(), 0x1a);
    }

    #[test]
    fn every_request_names_its_kind_and_hexes_its_arguments() {
        assert_eq!(
            Request::Download {
                path: "/a",
                follow_links: false
            }
            .encode("UTF-8"),
            "none|download|UTF-8|2f61|30"
        );
        assert_eq!(
            Request::Upload {
                source_name: "f",
                dest_dir: "/d/"
            }
            .encode("cp936"),
            "none|upload|cp936|66696c65|66|2f642f"
        );
        assert_eq!(
            Request::Echo { text: "hi" }.encode("UTF-8"),
            "none|echo|UTF-8|6869"
        );
    }
}
