//! The upgrade of one tagent over its listener (SPEC §5.5): prepare its
//! `tmp` directory, upload the package, unpack it, reload. Each step's
//! result and output (bounded) is reported as it ends, so a rollout shows
//! progress; the first failure ends the run. Whether the tagent then
//! registers with the new version is the rollout's to watch.

use bytes::Bytes;

use super::audit::{self, Record};
use super::commands;
use super::operations::Target;
use super::{Greeting, Kind, OperationError, Operations};
use crate::model::TagentId;

pub use crate::model::rollout::{MAX_STEP_OUTPUT, UpgradeStep, UpgradeStepResult};

/// A step's result from how its operation ended.
fn step_result<T>(
    step: UpgradeStep,
    output: String,
    r: &Result<T, OperationError>,
) -> UpgradeStepResult {
    let (result, error) = match r {
        Ok(_) => ("ok".to_owned(), None),
        Err(e) => (audit::result_of(e).to_owned(), Some(e.to_string())),
    };
    UpgradeStepResult {
        step,
        result,
        output,
        error,
    }
}

/// The last `MAX_STEP_OUTPUT` bytes of `lines`, cut at a character.
pub fn bounded_output(lines: &[String]) -> String {
    let text = lines.join("\n");
    if text.len() <= MAX_STEP_OUTPUT {
        return text;
    }
    let mut from = text.len() - MAX_STEP_OUTPUT;
    while !text.is_char_boundary(from) {
        from += 1;
    }
    text[from..].to_owned()
}

impl Operations {
    /// Run the listener steps of an upgrade of `id` with the package
    /// `file` (a plain name) holding `data`; `report` hears each step as
    /// it ends. An error before any step (unknown or busy tagent, no
    /// credential) is the `prepare` step's. True when every step passed.
    pub async fn upgrade_steps(
        &self,
        id: TagentId,
        file: &str,
        data: Bytes,
        mut report: impl FnMut(UpgradeStepResult),
    ) -> bool {
        let target = match self.target(id, Kind::Execmd).await {
            Ok(t) => t,
            Err(e) => {
                report(step_result::<()>(
                    UpgradeStep::Prepare,
                    String::new(),
                    &Err(e),
                ));
                return false;
            }
        };
        let step = self
            .exec_step(&target, UpgradeStep::Prepare, |on| {
                commands::upgrade_prepare(on).to_owned()
            })
            .await;
        let passed = step.ok();
        report(step);
        if !passed {
            return false;
        }

        let r = self
            .exchange(&target, Kind::Upload, |conn| async move {
                let dir = commands::upgrade_dir(conn.greeting());
                conn.upload(file, dir, &data).await
            })
            .await;
        let step = step_result(UpgradeStep::Upload, String::new(), &r);
        let passed = step.ok();
        report(step);
        if !passed {
            return false;
        }

        let step = self
            .exec_step(&target, UpgradeStep::Unpack, |on| {
                commands::upgrade_unpack(on, file)
            })
            .await;
        let passed = step.ok();
        report(step);
        if !passed {
            return false;
        }

        let r = self.exchange(&target, Kind::Reload, |c| c.reload()).await;
        let step = step_result(UpgradeStep::Reload, String::new(), &r);
        let passed = step.ok();
        report(step);
        passed
    }

    /// An `execmd` step: the command for the tagent's os, its output kept.
    async fn exec_step(
        &self,
        target: &Target,
        step: UpgradeStep,
        command: impl FnOnce(&Greeting) -> String,
    ) -> UpgradeStepResult {
        let max = self.limits().max_output_bytes;
        let mut output = Vec::new();
        let r = self
            .exchange(target, Kind::Execmd, |conn| async move {
                let command = command(conn.greeting());
                conn.execmd(&command, max).await
            })
            .await;
        let r = r.and_then(|out| {
            output = out.lines.clone();
            out.success().map_err(|source| OperationError::Listener {
                id: target.id(),
                source,
            })
        });
        step_result(step, bounded_output(&output), &r)
    }

    /// The audit log's entry of one tagent's upgrade in a rollout.
    pub async fn audit_upgrade(&self, who: &str, id: TagentId, result: &str, detail: String) {
        self.audit(Record {
            who,
            action: "upgrade",
            tagent: id,
            result,
            detail: Some(detail),
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_keeps_the_last_bytes_at_a_character() {
        let lines = vec!["é".repeat(3000)];
        let out = bounded_output(&lines);
        assert!(out.len() <= MAX_STEP_OUTPUT && out.len() >= MAX_STEP_OUTPUT - 1);
        assert!(out.chars().all(|c| c == 'é'));
        assert_eq!(bounded_output(&["a".into(), "b".into()]), "a\nb");
    }

    #[test]
    fn steps_by_name() {
        for s in ["prepare", "upload", "unpack", "reload", "register"] {
            assert_eq!(UpgradeStep::parse(s).unwrap().as_str(), s);
        }
        assert_eq!(UpgradeStep::parse("x"), None);
    }
}
