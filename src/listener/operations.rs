//! The operations on a tagent over its listener (SPEC §5.5): find its
//! address and password, take its pass, run one or more connections within
//! the operation's deadline, count each request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio::time::{Instant, timeout_at};

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
}

/// The tagent an operation runs on, held with its pass.
struct Target {
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
    pub fn new(registry: Registry, limits: Limits) -> Operations {
        Operations {
            inner: Arc::new(Inner {
                gate: Gate::new(limits.max_operations),
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
    pub async fn check_reachability(&self, id: TagentId) -> Result<Reachability, OperationError> {
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
    pub async fn read_config(&self, id: TagentId) -> Result<ConfigFile, OperationError> {
        let target = self.target(id, Kind::Execmd).await?;
        let max = self.inner.limits.max_output_bytes;
        let out = self
            .exchange(&target, Kind::Execmd, |conn| async move {
                let command = commands::read_config(conn.greeting());
                conn.execmd(command, max).await?.success()
            })
            .await?;
        let missing_keys = config_file::missing_keys(&out.lines);
        Ok(ConfigFile {
            lines: config_file::masked(out.lines),
            missing_keys,
        })
    }

    /// The tagent's log files, as plain names.
    pub async fn list_logs(&self, id: TagentId) -> Result<Vec<String>, OperationError> {
        let target = self.target(id, Kind::Execmd).await?;
        self.logs_of(&target).await
    }

    /// One log file, `name` a plain name from [`Operations::list_logs`]:
    /// its head is read here, its data by [`LogStream::into_stream`].
    pub async fn download_log(
        &self,
        id: TagentId,
        name: &str,
    ) -> Result<LogStream, OperationError> {
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
    async fn target(&self, id: TagentId, kind: Kind) -> Result<Target, OperationError> {
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
    async fn exchange<T, F, Fut>(
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
