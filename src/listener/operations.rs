//! The operations on a tagent over its listener (SPEC §5.5): find its
//! address and password, take its pass, run one or more connections within
//! the operation's deadline, count each request; each operation goes into
//! the audit log with who asked for it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio::time::{Instant, timeout_at};

use super::audit::{self, AuditLog, Record};
use super::client::{Connection, Download};
use super::commands::{self, is_plain_name};
use super::config_file;
use super::gate::{Gate, Pass};
use super::metrics::Recorder;
use super::reachability::LastChecks;
use super::{Kind, Limits, ListenerError, OperationError, Password, Reachability};
use crate::model::{TagentId, now_millis};
use crate::registry::Registry;

/// What `echo` sends in a reachability check.
const ECHO_TEXT: &str = "tagent-hub";

/// The hub's handle to run operations; cheap to clone.
#[derive(Clone)]
pub struct Operations {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    limits: Limits,
    gate: Arc<Gate>,
    checks: LastChecks,
    audit: AuditLog,
}

/// The tagent an operation runs on, held with its pass.
pub(super) struct Target {
    id: TagentId,
    addr: SocketAddr,
    password: Password,
    deadline: Instant,
    /// The operation's time limit, which `deadline` ends.
    limit: Duration,
    _pass: Pass,
}

/// The config file as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFile {
    /// Every line as the file has it, the credential's value masked.
    pub lines: Vec<String>,
    /// Required keys the file lacks.
    pub missing_keys: Vec<&'static str>,
}

/// A log file on its way from the tagent, holding the tagent's pass.
pub struct LogStream {
    download: Download,
    target: Target,
    recorder: Recorder,
}

impl Operations {
    /// Operations through `registry`'s tagents, audited into its store
    /// (starts the audit writer: call on a tokio runtime).
    pub fn new(registry: Registry, limits: Limits) -> Operations {
        Operations {
            inner: Arc::new(Inner {
                gate: Gate::new(limits.max_operations),
                audit: AuditLog::start(registry.store().clone()),
                registry,
                limits,
                checks: LastChecks::default(),
            }),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// The last reachability check of `id`, if any since the hub started.
    pub fn last_check(&self, id: TagentId) -> Option<Reachability> {
        self.inner.checks.get(id)
    }

    /// Connect and log in (`echo`); the result is also kept as the
    /// tagent's last check. Errors only for an unknown or busy tagent.
    /// `who` asked (for the audit log).
    pub async fn check_reachability(
        &self,
        who: &str,
        id: TagentId,
    ) -> Result<Reachability, OperationError> {
        let result = self.reachability_of(id).await;
        let (label, detail) = match &result {
            Ok(check) => (check.result.clone(), check.message.clone()),
            Err(e) => (audit::result_of(e).to_owned(), Some(e.to_string())),
        };
        self.audit(Record {
            who,
            action: "reachability",
            tagent: id,
            result: &label,
            detail,
        })
        .await;
        result
    }

    async fn reachability_of(&self, id: TagentId) -> Result<Reachability, OperationError> {
        let result = match self.target(id, Kind::Echo).await {
            Ok(target) => {
                self.exchange(&target, Kind::Echo, |conn| async move {
                    let greeting = conn.greeting().clone();
                    conn.echo(ECHO_TEXT).await?;
                    Ok(greeting)
                })
                .await
            }
            Err(e) => Err(e),
        };
        match result {
            Err(OperationError::NoTagent(id)) => {
                self.inner.checks.forget(id);
                Err(OperationError::NoTagent(id))
            }
            Err(e @ (OperationError::Busy(_) | OperationError::HubBusy(_))) => Err(e),
            result => {
                let check = Reachability::new(&result, now_millis());
                self.inner.checks.set(id, check.clone());
                Ok(check)
            }
        }
    }

    /// The tagent's config file, its credential masked.
    pub async fn read_config(&self, who: &str, id: TagentId) -> Result<ConfigFile, OperationError> {
        let result = async {
            let target = self.target(id, Kind::Execmd).await?;
            let lines = self.config_lines(&target).await?;
            let missing_keys = config_file::missing_keys(&lines);
            Ok(ConfigFile {
                lines: config_file::masked(lines),
                missing_keys,
            })
        }
        .await;
        self.audited(who, "read-config", id, None, result).await
    }

    /// The config file's lines as the tagent has them (credential too).
    pub(super) async fn config_lines(
        &self,
        target: &Target,
    ) -> Result<Vec<String>, OperationError> {
        let max = self.inner.limits.max_output_bytes;
        let out = self
            .exchange(target, Kind::Execmd, |conn| async move {
                let command = commands::read_config(conn.greeting());
                conn.execmd(command, max).await?.success()
            })
            .await?;
        Ok(out.lines)
    }

    /// The tagent's log files, as plain names.
    pub async fn list_logs(&self, who: &str, id: TagentId) -> Result<Vec<String>, OperationError> {
        let result = async {
            let target = self.target(id, Kind::Execmd).await?;
            self.logs_of(&target).await
        }
        .await;
        self.audited(who, "list-logs", id, None, result).await
    }

    /// Append `who`'s operation `action` on `id` to the audit log, with its
    /// result; the result passes through.
    pub(super) async fn audited<T>(
        &self,
        who: &str,
        action: &'static str,
        id: TagentId,
        detail: Option<String>,
        result: Result<T, OperationError>,
    ) -> Result<T, OperationError> {
        let (label, detail) = match &result {
            Ok(_) => ("ok", detail),
            Err(e) => (
                audit::result_of(e),
                Some(match detail {
                    Some(d) => format!("{d}: {e}"),
                    None => e.to_string(),
                }),
            ),
        };
        self.audit(Record {
            who,
            action,
            tagent: id,
            result: label,
            detail,
        })
        .await;
        result
    }

    /// Append an entry to the audit log: an operation, or an operator's
    /// change to enrollment tokens and pending registrations.
    pub async fn audit(&self, record: Record<'_>) {
        self.inner.audit.append(record).await;
    }

    /// One log file, `name` a plain name from [`Operations::list_logs`]:
    /// its head is read here, its data by [`LogStream::into_stream`]. The
    /// audit log has its start (the stream's end is in the metrics).
    pub async fn download_log(
        &self,
        who: &str,
        id: TagentId,
        name: &str,
    ) -> Result<LogStream, OperationError> {
        let result = self.open_log(id, name).await;
        self.audited(who, "download-log", id, Some(name.to_owned()), result)
            .await
    }

    async fn open_log(&self, id: TagentId, name: &str) -> Result<LogStream, OperationError> {
        if !is_plain_name(name) {
            return Err(OperationError::BadName(name.to_owned()));
        }
        let target = self.target(id, Kind::Download).await?;
        if !self.logs_of(&target).await?.iter().any(|n| n == name) {
            return Err(OperationError::NoSuchLog {
                id,
                name: name.to_owned(),
            });
        }
        let mut recorder = Recorder::start(Kind::Download);
        let max = self.inner.limits.max_download_bytes;
        let opened = self
            .connect(&target, |conn| async move {
                let path = commands::log_path(conn.greeting(), name);
                conn.download(&path, false, max).await
            })
            .await;
        match opened {
            Ok(download) => Ok(LogStream {
                download,
                target,
                recorder,
            }),
            Err(e) => {
                recorder.finish(e.label().unwrap_or("failed"));
                Err(e)
            }
        }
    }

    async fn logs_of(&self, target: &Target) -> Result<Vec<String>, OperationError> {
        let max = self.inner.limits.max_output_bytes;
        let out = self
            .exchange(target, Kind::Execmd, |conn| async move {
                let command = commands::list_logs(conn.greeting());
                conn.execmd(command, max).await?.success()
            })
            .await?;
        Ok(out
            .lines
            .iter()
            .map(|l| l.trim())
            .filter(|n| is_plain_name(n))
            .map(str::to_owned)
            .collect())
    }

    /// Find the tagent and its password and take its pass; a failure is
    /// counted under `kind`.
    pub(super) async fn target(&self, id: TagentId, kind: Kind) -> Result<Target, OperationError> {
        let mut recorder = Recorder::start(kind);
        let found = self.find(id).await;
        match found.as_ref().err().and_then(OperationError::label) {
            Some(label) => recorder.finish(label),
            None => recorder.discard(),
        }
        found
    }

    async fn find(&self, id: TagentId) -> Result<Target, OperationError> {
        let registry = &self.inner.registry;
        let tagent = registry.tagent(id).ok_or(OperationError::NoTagent(id))?;
        let deadline = Instant::now() + self.inner.limits.operation;
        let pass = self
            .inner
            .gate
            .enter(id, self.inner.limits.operation)
            .await?;
        let tenant = registry.interner().resolve(tagent.tenant).to_string();
        let (ip, port) = (tagent.ip, tagent.port);
        let store = registry.store().clone();
        let credential = tokio::task::spawn_blocking(move || store.credential(&tenant, ip, port))
            .await
            .map_err(|_| OperationError::StorePanicked(id))?
            .map_err(|source| OperationError::Store { id, source })?
            .ok_or(OperationError::NoCredential(id))?;
        let password = Password::from_credential(&credential)
            .map_err(|source| OperationError::BadCredential { id, source })?;
        Ok(Target {
            id,
            addr: SocketAddr::new(ip, port),
            password,
            deadline,
            limit: self.inner.limits.operation,
            _pass: pass,
        })
    }

    /// One connection running `f`, counted under `kind`.
    pub(super) async fn exchange<T, F, Fut>(
        &self,
        target: &Target,
        kind: Kind,
        f: F,
    ) -> Result<T, OperationError>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = Result<T, ListenerError>>,
    {
        let mut recorder = Recorder::start(kind);
        let result = self.connect(target, f).await;
        recorder.finish(match &result {
            Ok(_) => "ok",
            Err(e) => e.label().unwrap_or("failed"),
        });
        result
    }

    /// Connect, log in and run `f`, all before the operation's deadline.
    async fn connect<T, F, Fut>(&self, target: &Target, f: F) -> Result<T, OperationError>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = Result<T, ListenerError>>,
    {
        let limits = &self.inner.limits;
        let run = async {
            let conn = Connection::open(target.addr, &target.password, limits).await?;
            f(conn).await
        };
        match timeout_at(target.deadline, run).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(OperationError::Listener {
                id: target.id,
                source,
            }),
            Err(_) => Err(OperationError::Deadline(target.limit)),
        }
    }
}

impl Target {
    pub(super) fn id(&self) -> TagentId {
        self.id
    }
}

impl LogStream {
    /// The data, chunk by chunk, before the operation's deadline; an error
    /// ends the stream (the HTTP body is then cut short).
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, OperationError>> + Send + 'static {
        futures_util::stream::unfold(Some(self), |state| async move {
            let mut s = state?;
            let id = s.target.id;
            match timeout_at(s.target.deadline, s.download.next_chunk()).await {
                Ok(Ok(Some(data))) => Some((Ok(data), Some(s))),
                Ok(Ok(None)) => {
                    s.recorder.finish("ok");
                    None
                }
                Ok(Err(source)) => {
                    s.recorder.finish(source.label());
                    Some((Err(OperationError::Listener { id, source }), None))
                }
                Err(_) => {
                    s.recorder.finish("deadline");
                    Some((Err(OperationError::Deadline(s.target.limit)), None))
                }
            }
        })
    }
}
