//! Changing a tagent's config file over its listener (SPEC §5.5): the whole
//! file, or some keys in place; then the upload and a reload. Each step's
//! result is kept, so an operator sees which one failed and why. Also the
//! reload alone, for a tagent whose heartbeat session is gone.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::audit::{self, Record};
use super::commands::{self, CONFIG_FILE};
use super::config_file::{self, ConfigError, KeyChanges};
use super::operations::Target;
use super::{Kind, OperationError, Operations};
use crate::model::TagentId;

/// A step of a config change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StepName {
    /// `execmd` the file's `cat` (for the keys, or the masked credential).
    Read,
    /// `upload` the new file to `$TAGENT_HOME/conf/`.
    Upload,
    /// `reload`: the tagent restarts with the new file.
    Reload,
}

/// One step and how it went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Step {
    pub step: StepName,
    /// `ok`, or why not (a label: `connect_failed`, `wrong_credential`, ...).
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What became of a config change on one tagent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConfigChange {
    pub id: TagentId,
    /// `changed` (uploaded and reloaded), `unchanged` (the keys already
    /// had those values: nothing sent), or `failed`.
    pub result: String,
    /// The steps run, in order; the last failed when `result` is `failed`.
    pub steps: Vec<Step>,
    /// Why it failed (also for a failure before any step: busy, unknown
    /// tagent, no credential).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl ConfigChange {
    fn new(id: TagentId) -> ConfigChange {
        ConfigChange {
            id,
            result: "changed".into(),
            steps: Vec::new(),
            message: None,
        }
    }

    pub fn ok(&self) -> bool {
        self.result != "failed"
    }

    fn passed(&mut self, step: StepName) {
        self.steps.push(Step {
            step,
            result: "ok".into(),
            error: None,
        });
    }

    /// Failed at `step` (a step that had passed, such as a read whose file
    /// is then refused, is marked failed instead).
    fn failed(mut self, step: Option<StepName>, label: &str, error: String) -> ConfigChange {
        if let Some(step) = step {
            if self.steps.last().is_some_and(|s| s.step == step) {
                self.steps.pop();
            }
            self.steps.push(Step {
                step,
                result: label.to_owned(),
                error: Some(error.clone()),
            });
        }
        self.result = "failed".into();
        self.message = Some(error);
        self
    }

    fn failed_op(self, step: Option<StepName>, e: &OperationError) -> ConfigChange {
        self.failed(step, audit::result_of(e), e.to_string())
    }

    /// Whether it failed because the file was refused (not the tagent).
    pub fn refused(&self) -> bool {
        !self.ok() && self.label() == "bad_config"
    }

    /// The label the audit log keeps: the result, or the failed step's.
    fn label(&self) -> &str {
        match self.steps.last() {
            Some(step) if !self.ok() => &step.result,
            _ => &self.result,
        }
    }
}

impl Operations {
    /// Write the whole file: required keys checked, a masked credential
    /// given back its real value (read from the tagent; another value is
    /// refused), then the upload and a reload. An error for what is refused before any step (a
    /// file that lacks a required key, an unknown or busy tagent); a
    /// failed step is in the change.
    pub async fn write_config(
        &self,
        who: &str,
        id: TagentId,
        lines: Vec<String>,
    ) -> Result<ConfigChange, OperationError> {
        let result = self.write_whole(id, lines).await;
        match &result {
            Ok(change) => self.audit_change(who, "write-config", change, None).await,
            Err(e) => {
                let detail = Some(e.to_string());
                self.audit(Record {
                    who,
                    action: "write-config",
                    tagent: id,
                    result: audit::result_of(e),
                    detail,
                })
                .await;
            }
        }
        result
    }

    async fn write_whole(
        &self,
        id: TagentId,
        lines: Vec<String>,
    ) -> Result<ConfigChange, OperationError> {
        if let Some(n) = lines.iter().position(|l| l.contains(['\n', '\r'])) {
            return Err(ConfigError::LineBreak(n + 1).into());
        }
        let missing = config_file::missing_keys(&lines);
        if !missing.is_empty() {
            return Err(ConfigError::MissingKeys(missing).into());
        }
        let target = self.target(id, Kind::Upload).await?;
        let mut change = ConfigChange::new(id);
        // The tagent's own file: the real credential, to keep it.
        let current = match self.config_lines(&target).await {
            Ok(current) => current,
            Err(e) => return Ok(change.failed_op(Some(StepName::Read), &e)),
        };
        change.passed(StepName::Read);
        let current = Some(current);
        let lines = match config_file::unmask(lines, current.as_deref()) {
            Ok(lines) => lines,
            Err(e) => return Ok(change.failed(Some(StepName::Read), "bad_config", e.to_string())),
        };
        Ok(self.upload_and_reload(&target, &lines, change).await)
    }

    /// Set `changes` in the tagent's file, every other line kept; nothing
    /// is sent when the keys already have those values. Never an error:
    /// a failure, even before any step, is the change's.
    pub async fn set_config(&self, who: &str, id: TagentId, changes: &KeyChanges) -> ConfigChange {
        let change = self.set_keys(id, changes).await;
        self.audit_change(who, "set-config", &change, Some(changes.to_string()))
            .await;
        change
    }

    async fn set_keys(&self, id: TagentId, changes: &KeyChanges) -> ConfigChange {
        let mut change = ConfigChange::new(id);
        let target = match self.target(id, Kind::Execmd).await {
            Ok(target) => target,
            Err(e) => return change.failed_op(None, &e),
        };
        let lines = match self.config_lines(&target).await {
            Ok(lines) => lines,
            Err(e) => return change.failed_op(Some(StepName::Read), &e),
        };
        change.passed(StepName::Read);
        let missing = config_file::missing_keys(&lines);
        if !missing.is_empty() {
            let e = ConfigError::MissingKeys(missing);
            return change.failed(Some(StepName::Read), "bad_config", e.to_string());
        }
        match config_file::set_keys(&lines, changes) {
            None => {
                change.result = "unchanged".into();
                change
            }
            Some(lines) => self.upload_and_reload(&target, &lines, change).await,
        }
    }

    async fn upload_and_reload(
        &self,
        target: &Target,
        lines: &[String],
        mut change: ConfigChange,
    ) -> ConfigChange {
        let data = config_file::to_bytes(lines);
        let uploaded = self
            .exchange(target, Kind::Upload, |conn| async move {
                let dir = commands::config_dir(conn.greeting());
                conn.upload(CONFIG_FILE, dir, &data).await
            })
            .await;
        if let Err(e) = uploaded {
            return change.failed_op(Some(StepName::Upload), &e);
        }
        change.passed(StepName::Upload);
        if let Err(e) = self.exchange(target, Kind::Reload, |c| c.reload()).await {
            return change.failed_op(Some(StepName::Reload), &e);
        }
        change.passed(StepName::Reload);
        change
    }

    async fn audit_change(
        &self,
        who: &str,
        action: &'static str,
        change: &ConfigChange,
        keys: Option<String>,
    ) {
        let detail = match (keys, &change.message) {
            (Some(k), Some(e)) => Some(format!("{k}: {e}")),
            (Some(k), None) => Some(k),
            (None, e) => e.clone(),
        };
        self.audit(Record {
            who,
            action,
            tagent: change.id,
            result: change.label(),
            detail,
        })
        .await;
    }

    /// `reload` over the tagent's listener (SPEC §5.5: when its heartbeat
    /// session is gone): the tagent answers `Status:200` and restarts.
    pub async fn reload(&self, who: &str, id: TagentId) -> Result<(), OperationError> {
        let result = async {
            let target = self.target(id, Kind::Reload).await?;
            self.exchange(&target, Kind::Reload, |c| c.reload()).await
        }
        .await;
        self.audited(who, "reload", id, None, result).await
    }
}
