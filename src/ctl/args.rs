//! The command line: `ctl`'s subcommands and their arguments.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::http::groups::{GroupBody, RunnerBody};
use crate::model::FilterParams;

#[derive(Args)]
pub struct CtlArgs {
    /// The hub's HTTP address.
    #[arg(long, env = "TAGENT_HUB_URL", default_value = "http://127.0.0.1:8084")]
    pub(super) url: String,
    /// An admin API token. Default: the hub's generated one, read from
    /// `<data-dir>/admin-token`.
    #[arg(long, env = "TAGENT_HUB_ADMIN_TOKEN", hide_env_values = true)]
    pub(super) token: Option<String>,
    /// PEM certificates the hub's certificate must chain to, for an
    /// `https://` URL (default: the system's roots).
    #[arg(long, env = "TAGENT_HUB_CA")]
    pub(super) ca: Option<PathBuf>,
    /// Where to find a generated token.
    #[arg(long, env = "TAGENT_HUB_DATA_DIR", default_value = "./data")]
    pub(super) data_dir: PathBuf,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    pub(super) json: bool,
    #[command(subcommand)]
    pub(super) command: CtlCommand,
}

#[derive(Subcommand)]
pub(super) enum CtlCommand {
    /// List tagents (all pages), filtered.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// Stop after this many.
        #[arg(long)]
        max: Option<usize>,
    },
    /// One tagent: record, accounts, live session.
    Show { id: u64 },
    /// Counts by status, by runner group and by disconnect reason.
    Counts {
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Delete a tagent (refused while it is connected).
    Delete { id: u64 },
    /// Runner groups.
    #[command(subcommand)]
    Groups(GroupCommand),
    /// Tell tagents to restart and register again.
    Reload(Targets),
    /// Tell tagents to pick a new credential and register again.
    Resetcred(Targets),
    /// Allow a tagent's next registration to bring a new credential (a
    /// reinstall on the same host); otherwise it is refused.
    AllowReinstall {
        id: u64,
        /// How long the approval lasts.
        #[arg(long, default_value_t = 60)]
        minutes: u64,
    },
    /// Whether tagents hold a live session.
    StatusCheck(Targets),
    /// Connect to a tagent's own listener and log in (an admin token).
    Reachability { id: u64 },
    /// A tagent's config file, read over its listener, the credential
    /// masked; with --set, those keys set in it (then a reload).
    Config {
        id: u64,
        /// KEY=VALUE to set; repeat.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Set KEY=VALUE in the config files of many tagents (ids or filters),
    /// every other line kept; each is reloaded.
    ConfigSet(ConfigSetArgs),
    /// Write a tagent's whole config file from FILE (a credential of
    /// `******` keeps the real one), then reload it.
    ConfigPut { id: u64, file: PathBuf },
    /// The audit log of operations over tagents' listeners, newest first.
    Audit {
        /// Entries older than this seq.
        #[arg(long)]
        before: Option<u64>,
        /// How many (default 100).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// A tagent's log files; with a NAME, that file (to stdout or --output).
    Logs {
        id: u64,
        name: Option<String>,
        /// Write the file here instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Enrollment tokens: what a tenant's registrations need under the
    /// `token` policy, or to reinstall a known tagent.
    #[command(subcommand)]
    Tokens(TokenCommand),
    /// Registrations waiting for an operator's approval.
    #[command(subcommand)]
    Pending(PendingCommand),
    /// Installation packages (tars of a tagent's bin lib tools mod).
    #[command(subcommand)]
    Packages(PackageCommand),
    /// Rollouts of a version to tagents.
    #[command(subcommand)]
    Upgrade(UpgradeCommand),
    /// Follow registrations and status changes as they happen.
    Watch {
        /// Resume after this event id.
        #[arg(long)]
        after: Option<String>,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<usize>,
    },
}

#[derive(Subcommand)]
pub(super) enum GroupCommand {
    /// Every runner group, in scan order (the first network that matches wins).
    List,
    Show {
        id: u32,
    },
    /// Create a group; it is scanned after the existing ones.
    Create(GroupArgs),
    /// Replace a group's name, networks and runners.
    Update {
        id: u32,
        #[command(flatten)]
        group: GroupArgs,
    },
    /// Delete a group that no tagent belongs to.
    Delete {
        id: u32,
    },
}

#[derive(Subcommand)]
pub(super) enum TokenCommand {
    /// Every token (never its secret).
    List,
    /// Create a token; it is printed once, on stdout.
    Create {
        #[arg(long)]
        tenant: String,
        /// How long it stays valid, e.g. 24h, 7d.
        #[arg(long, default_value = "7d")]
        ttl: humantime::Duration,
        /// How many registrations it may admit.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        #[arg(long)]
        note: Option<String>,
        /// It may also bring a known tagent a new credential (a reinstall).
        #[arg(long)]
        reinstall: bool,
    },
    /// Revoke a token by id: it admits nothing from now on.
    Revoke { id: String },
}

#[derive(Subcommand)]
pub(super) enum PackageCommand {
    List,
    /// Upload FILE (a tar) as the package of VERSION for an os type and arch.
    Upload {
        file: PathBuf,
        #[arg(long)]
        version: String,
        /// As tagents report osType: Linux, Windows, ...
        #[arg(long)]
        os_type: String,
        /// As tagents report osbit (x86_64, aarch64), or default.
        #[arg(long, default_value = "default")]
        arch: String,
    },
    /// Delete a package by its SHA-256.
    Delete {
        sha256: String,
    },
}

// Parsed once per run: the size of a variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub(super) enum UpgradeCommand {
    /// Start a rollout of VERSION to tagents (ids or filters).
    Start {
        /// The version to roll out (`--version` filters by the current one).
        #[arg(long = "to")]
        to: String,
        /// Tagent ids, comma separated; or use filters.
        #[arg(long, value_delimiter = ',')]
        ids: Vec<u64>,
        #[command(flatten)]
        filter: FilterArgs,
        /// With no ids and no filter: every tagent.
        #[arg(long)]
        all: bool,
        #[arg(long, default_value_t = 10)]
        concurrency: u32,
        /// Stop starting tagents once this many failed (0: never).
        #[arg(long, default_value_t = 0)]
        max_failures: u32,
        /// Seconds a reloaded tagent has to register with the new version.
        #[arg(long, default_value_t = 300)]
        register_timeout: u64,
        /// Wait for the end, printing progress.
        #[arg(long)]
        wait: bool,
    },
    /// The rollouts, newest first.
    List,
    /// One rollout, each tagent's state and steps.
    Show { id: String },
    /// Stop starting tagents of a running rollout.
    Abort { id: String },
}

#[derive(Subcommand)]
pub(super) enum PendingCommand {
    /// Every pending registration.
    List,
    /// Approve a pending registration by id: the tagent's next attempt is accepted.
    Approve { id: String },
    /// Reject a pending registration by id: the entry is dropped.
    Reject { id: String },
}

#[derive(Args)]
pub(super) struct GroupArgs {
    /// For create: the id (default: one above the highest).
    #[arg(long)]
    pub(super) id: Option<u32>,
    #[arg(long)]
    pub(super) name: String,
    /// A CIDR network; repeat, in scan order.
    #[arg(long = "network")]
    pub(super) networks: Vec<String>,
    /// A runner as ID=NAME@HOST:PORT (or ID=NAME@this-hub); repeat.
    #[arg(long = "runner")]
    pub(super) runners: Vec<String>,
}

#[derive(Args, Default)]
pub(super) struct FilterArgs {
    #[arg(long)]
    pub(super) tenant: Option<String>,
    /// connected or disconnected.
    #[arg(long)]
    pub(super) status: Option<String>,
    /// Why the last session ended: eof, reset, idle-timeout, restart, ...
    #[arg(long)]
    pub(super) reason: Option<String>,
    /// An ip or a CIDR network (primary or contained ips).
    #[arg(long)]
    pub(super) ip: Option<String>,
    #[arg(long)]
    pub(super) port: Option<u16>,
    /// Runner group id.
    #[arg(long)]
    pub(super) group: Option<u32>,
    #[arg(long)]
    pub(super) name_prefix: Option<String>,
    #[arg(long)]
    pub(super) version: Option<String>,
    /// Status changed within this long, e.g. 1h, 30m, 2d.
    #[arg(long)]
    pub(super) since: Option<humantime::Duration>,
}

#[derive(Args)]
pub(super) struct Targets {
    /// Tagent ids; or use filters.
    pub(super) ids: Vec<u64>,
    #[command(flatten)]
    pub(super) filter: FilterArgs,
    /// With no ids and no filter: every tagent.
    #[arg(long)]
    pub(super) all: bool,
}

#[derive(Args)]
pub(super) struct ConfigSetArgs {
    /// KEY=VALUE to set; one or more.
    #[arg(required = true, value_name = "KEY=VALUE")]
    pub(super) pairs: Vec<String>,
    /// Tagent ids, comma separated; or use filters.
    #[arg(long, value_delimiter = ',')]
    pub(super) ids: Vec<u64>,
    #[command(flatten)]
    pub(super) filter: FilterArgs,
    /// With no ids and no filter: every tagent.
    #[arg(long)]
    pub(super) all: bool,
}

impl FilterArgs {
    /// The filter as the API takes it: the one place ctl's flags become it.
    pub(super) fn params(&self) -> anyhow::Result<FilterParams> {
        let changed_since = match self.since {
            None => None,
            Some(d) => {
                let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
                Some(now.saturating_sub(d.into()).as_millis() as u64)
            }
        };
        Ok(FilterParams {
            tenant: self.tenant.clone(),
            status: self.status.clone(),
            reason: self.reason.clone(),
            ip: self.ip.clone(),
            port: self.port,
            group: self.group,
            name_prefix: self.name_prefix.clone(),
            version: self.version.clone(),
            changed_since,
        })
    }
}

impl GroupArgs {
    /// The group as the API takes it.
    pub(super) fn body(&self) -> anyhow::Result<GroupBody> {
        let mut runners = Vec::new();
        for r in &self.runners {
            let (id, rest) = r
                .split_once('=')
                .with_context(|| format!("runner '{r}' is not ID=NAME@HOST:PORT"))?;
            let (name, addr) = rest
                .split_once('@')
                .with_context(|| format!("runner '{r}' is not ID=NAME@HOST:PORT"))?;
            let id: u32 = id
                .parse()
                .with_context(|| format!("runner '{r}': '{id}' is not an id"))?;
            let this_hub = addr == "this-hub";
            runners.push(RunnerBody {
                id,
                name: name.to_owned(),
                heartbeat: (!this_hub).then(|| addr.to_owned()),
                this_hub,
            });
        }
        Ok(GroupBody {
            id: self.id,
            name: self.name.clone(),
            networks: self.networks.clone(),
            runners,
        })
    }
}
