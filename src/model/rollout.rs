//! Upgrades as the store keeps them (SPEC §5.5): an installation package,
//! a rollout (a version to a set of tagents, at a concurrency, stopping
//! after so many failures) and what became of each of its tagents, step
//! by step: the history operators read after the fact, across restarts.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::TagentId;

/// The most bytes of a step's output kept (its last lines).
pub const MAX_STEP_OUTPUT: usize = 4096;

/// A step of an upgrade, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UpgradeStep {
    /// `execmd` `mkdir -p tmp` in `$TAGENT_BASE`.
    Prepare,
    /// `upload` the package to `$TAGENT_BASE/tmp/`.
    Upload,
    /// `execmd` `tar xvf` (Windows: `7z x -ttar`) of `bin lib tools mod`.
    Unpack,
    /// `reload`: the tagent restarts with the new files.
    Reload,
    /// The tagent registers again, reporting the package's version.
    Register,
}

impl UpgradeStep {
    pub fn as_str(self) -> &'static str {
        match self {
            UpgradeStep::Prepare => "prepare",
            UpgradeStep::Upload => "upload",
            UpgradeStep::Unpack => "unpack",
            UpgradeStep::Reload => "reload",
            UpgradeStep::Register => "register",
        }
    }

    pub fn parse(s: &str) -> Option<UpgradeStep> {
        [
            UpgradeStep::Prepare,
            UpgradeStep::Upload,
            UpgradeStep::Unpack,
            UpgradeStep::Reload,
            UpgradeStep::Register,
        ]
        .into_iter()
        .find(|step| step.as_str() == s)
    }
}

/// One step and how it went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UpgradeStepResult {
    pub step: UpgradeStep,
    /// `ok`, or why not (a label: `connect_failed`, `failed`, `deadline`, ...).
    pub result: String,
    /// The command's output (its last 4 KiB), for `prepare` and `unpack`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl UpgradeStepResult {
    pub fn ok(&self) -> bool {
        self.result == "ok"
    }
}

/// An installation package: a tar of the tagent's `bin lib tools mod`,
/// kept in the data directory by its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Package {
    /// Hex SHA-256 of the tar: its name in the data directory.
    pub sha256: String,
    pub version: String,
    /// `Linux`, `Windows`, ... as tagents report `osType` (matched without case).
    pub os_type: String,
    /// As tagents report `osbit` (`x86_64`, `aarch64`, ...), or `default`:
    /// for every arch that has no package of its own.
    pub arch: String,
    pub size: u64,
    pub uploaded_ms: u64,
    pub uploaded_by: String,
}

impl Package {
    /// The name the tagent's `tmp` directory gets it under (a plain name).
    pub fn file_name(&self) -> String {
        format!("tagent-{}-{}.tar", self.version, &self.sha256[..12])
    }
}

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RolloutState {
    Running,
    /// Every tagent was tried.
    Done,
    /// It met its failure limit: no tagent was started after.
    Stopped,
    /// An operator aborted it.
    Aborted,
    /// The hub running it stopped before it ended.
    Interrupted,
}

/// A rollout's header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Rollout {
    /// 16 hex digits.
    pub id: String,
    pub version: String,
    pub created_ms: u64,
    /// 0 while it runs.
    pub ended_ms: u64,
    /// Who started it (an admin token's fingerprint).
    pub by: String,
    /// The hub running it (its heartbeat address).
    pub hub: String,
    pub concurrency: u32,
    /// Stop starting tagents once this many failed (0: never stop).
    pub max_failures: u32,
    /// How long a reloaded tagent has to register with the new version.
    pub register_timeout_secs: u64,
    pub state: RolloutState,
    pub targets: u32,
    pub upgraded: u32,
    pub failed: u32,
    pub skipped: u32,
}

/// What became of one tagent of a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TargetState {
    Waiting,
    Running,
    /// It registered with the new version.
    Upgraded,
    Failed,
    /// Nothing to do: already at the version.
    Skipped,
    /// Never started: the rollout was aborted or stopped first.
    NotStarted,
    /// The hub stopped during its upgrade: see `reason` for the last step.
    Interrupted,
}

/// One tagent of a rollout, step by step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RolloutTarget {
    pub tagent: TagentId,
    pub ip: String,
    pub os_type: String,
    pub arch: String,
    pub from_version: String,
    /// The package used (its SHA-256), once matched.
    pub package: Option<String>,
    pub state: TargetState,
    pub steps: Vec<UpgradeStepResult>,
    /// Why it failed, was skipped or interrupted.
    pub reason: Option<String>,
    pub started_ms: u64,
    pub ended_ms: u64,
}
