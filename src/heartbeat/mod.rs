//! The heartbeat server on port 8888 (SPEC §3).
//!
//! - [`listener`]: the accept loop (fd exhaustion, `max_sessions`, protocol sniffing).
//! - [`conn`]: socket I/O with no read buffer kept while idle, bounded lines and frames.
//! - [`compat`]: real tagents' JSON lines.
//! - [`native`]: the framed MessagePack protocol with challenge-response auth.
//! - [`proto`]: native messages; [`client`]: a small async native client.
//! - [`session`]: one connection's shared state.
//! - [`credentials`]: native handshakes' credentials, read in batches by one thread.
//!
//! This module holds the session tables and what both protocols share:
//! identifying a session, resolving its tagent, status transitions (batched
//! to the registry's writer, never on the I/O path), the idle sweep, the
//! rate-limited reloads of unregistered tagents, and commands.

pub mod client;
pub mod compat;
pub mod conn;
mod credentials;
pub mod listener;
mod lot;
mod metrics;
pub mod native;
pub mod proto;
pub mod session;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use dashmap::DashMap;
use lot::Lot;
use parking_lot::RwLock;
use tokio::sync::{mpsc, oneshot};

use crate::config::HeartbeatConfig;
use crate::model::now_millis;
use crate::model::{CommandOutcome, DisconnectReason, RunnerGroups, Status, TagentId};
use crate::registry::{IndexView, Liveness, Registry, StatusChange};
use crate::shutdown::Shutdown;
use credentials::CredentialReader;
pub use metrics::HbMetrics;
pub use proto::CommandKind;
pub use session::{Delivery, Protocol, Session, SessionKey, UNKNOWN_TENANT};

/// Settings resolved from [`HeartbeatConfig`].
#[derive(Debug, Clone)]
pub struct Settings {
    pub max_sessions: usize,
    pub idle_timeout: Duration,
    pub first_message_timeout: Duration,
    pub max_line: usize,
    pub max_frame: usize,
    pub compat: bool,
    pub compat_networks: Vec<ipnet::IpNet>,
    pub native: bool,
    pub reload_rate: u32,
    pub command_quiet: Duration,
    pub command_timeout: Duration,
    pub status_flush: Duration,
}

/// File descriptors kept back from `max_sessions` for the store, HTTP,
/// listeners and the runtime.
const FD_RESERVE: usize = 100;

impl Settings {
    pub fn from_config(c: &HeartbeatConfig) -> Settings {
        let max_sessions = c.max_sessions.unwrap_or_else(|| {
            let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((1024, 1024));
            (soft as usize).saturating_sub(FD_RESERVE).max(16)
        });
        Settings {
            max_sessions,
            idle_timeout: Duration::from_secs(c.idle_timeout_secs),
            first_message_timeout: Duration::from_secs(c.first_message_timeout_secs),
            max_line: c.max_line_bytes,
            max_frame: c.max_frame_bytes,
            compat: c.compat,
            compat_networks: c.compat_networks.clone(),
            native: c.native,
            reload_rate: c.reload_rate_per_sec,
            command_quiet: Duration::from_millis(c.command_quiet_ms),
            command_timeout: Duration::from_secs(c.command_timeout_secs),
            status_flush: Duration::from_millis(c.status_flush_ms.max(1)),
        }
    }
}

enum StatusMsg {
    Change(StatusChange),
    Flush(oneshot::Sender<()>),
}

/// The runner-group lists as tagents hold them (`proxy.group`), cached per
/// version of the groups so a heartbeat compares without allocating.
struct GroupLists {
    groups: Arc<RunnerGroups>,
    /// By group id, sorted (a heartbeat looks its group up without hashing).
    lists: Vec<(u32, GroupList)>,
    /// The runner id of this hub in each group, if it is one of them.
    me: HashMap<u32, u32>,
}

/// A runner group's list, and the compat reply that hands it to a tagent.
pub struct GroupList {
    /// `ip:port,ip:port`, by runner id.
    pub list: String,
    /// `compat::updategroup_line` for `list`, written once per version of
    /// the groups rather than on every heartbeat of a tagent on another list.
    pub updategroup: Box<[u8]>,
}

/// A cheap-to-clone handle to the heartbeat server's shared state.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    settings: Settings,
    /// Identified sessions by (tenant, ip, port).
    by_key: DashMap<SessionKey, Arc<Session>>,
    /// Sessions that belong to a registered tagent, by its id.
    live: DashMap<TagentId, Arc<Session>>,
    /// Open connections, identified or not (what `max_sessions` bounds).
    open: AtomicUsize,
    status_tx: mpsc::UnboundedSender<StatusMsg>,
    reload_tx: mpsc::UnboundedSender<Weak<Session>>,
    groups: RwLock<GroupLists>,
    advertised: (String, u16),
    shutdown: Shutdown,
    metrics: HbMetrics,
    /// Where parked sessions get their task back.
    runtime: tokio::runtime::Handle,
    /// Where parked sessions' sockets wait.
    lot: Arc<Lot>,
    /// Where native handshakes get their credentials (one thread, in batches).
    credentials: CredentialReader,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.lot.stop();
    }
}

impl Liveness for Hub {
    fn is_live(&self, id: TagentId) -> bool {
        self.inner.live.contains_key(&id)
    }
}

/// What a heartbeat resolved to.
#[derive(Debug, Clone, Copy)]
pub struct Beat {
    pub tagent: Option<TagentId>,
    pub group: Option<u32>,
}

/// A heartbeat named another (tenant, ip, port) than the session's first one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentityChanged;

/// The facts a heartbeat brings.
#[derive(Debug, Default, Clone, Copy)]
pub struct Facts<'a> {
    pub agent_id: u64,
    pub pcpu: Option<f32>,
    pub mem: Option<f32>,
    pub version: Option<&'a str>,
    pub ip_string: Option<&'a str>,
}

/// A session as operators see it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct SessionView {
    /// `compat` (JSON lines) or `native` (framed).
    #[schema(value_type = String)]
    pub protocol: &'static str,
    pub peer: String,
    /// `None` for a tenant no tagent was ever registered in.
    pub tenant: Option<String>,
    pub ip: Option<String>,
    pub port: Option<u16>,
    pub tagent_id: Option<TagentId>,
    pub registered: bool,
    pub connected_at: u64,
    pub last_heartbeat: u64,
    pub heartbeats: u64,
    pub pcpu: Option<f32>,
    pub mem: Option<f32>,
    pub version: Option<String>,
    pub ip_string: Option<String>,
}

/// Why a command could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("tagent {0} has no live heartbeat session on this hub")]
    NotConnected(TagentId),
    #[error("the session closed before the command was delivered")]
    SessionClosed,
    #[error("no quiet moment in the session within {0:?}; the command was withdrawn")]
    Timeout(Duration),
    #[error("the agent refused the command: {0}")]
    Failed(String),
}

impl CommandError {
    pub fn outcome(&self) -> CommandOutcome {
        match self {
            CommandError::NotConnected(_) => CommandOutcome::NotConnected,
            CommandError::SessionClosed => CommandOutcome::SessionClosed,
            CommandError::Timeout(_) => CommandOutcome::Timeout,
            CommandError::Failed(_) => CommandOutcome::Failed,
        }
    }
}

impl Hub {
    /// Create the hub and start its background tasks (status batching, the
    /// idle sweep, reloads). `advertised` is this hub's heartbeat address as
    /// told to tagents: it names this hub's runner in each group.
    pub fn start(
        registry: Registry,
        settings: Settings,
        advertised: (String, u16),
        shutdown: Shutdown,
    ) -> std::io::Result<Hub> {
        let (status_tx, status_rx) = mpsc::unbounded_channel();
        let (reload_tx, reload_rx) = mpsc::unbounded_channel();
        let groups = registry.groups();
        let lot = Lot::start()?;
        let credentials = CredentialReader::start(registry.store())?;
        let hub = Hub {
            inner: Arc::new(Inner {
                groups: RwLock::new(group_lists(groups, &advertised)),
                registry: registry.clone(),
                settings,
                by_key: DashMap::new(),
                live: DashMap::new(),
                open: AtomicUsize::new(0),
                status_tx,
                reload_tx,
                advertised,
                shutdown,
                metrics: HbMetrics::new(),
                runtime: tokio::runtime::Handle::current(),
                lot,
                credentials,
            }),
        };
        registry.set_liveness(Arc::new(hub.clone()));
        tokio::spawn(status_batcher(
            hub.inner.registry.clone(),
            status_rx,
            hub.inner.settings.status_flush,
        ));
        tokio::spawn(sweeper(Arc::downgrade(&hub.inner)));
        tokio::spawn(reloader(reload_rx, hub.inner.settings.reload_rate));
        Ok(hub)
    }

    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.inner.runtime
    }

    pub(crate) fn lot(&self) -> &Lot {
        &self.inner.lot
    }

    pub(crate) fn credentials(&self) -> &CredentialReader {
        &self.inner.credentials
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// This hub's heartbeat address as told to tagents.
    pub fn advertised(&self) -> &(String, u16) {
        &self.inner.advertised
    }

    pub fn metrics(&self) -> &HbMetrics {
        &self.inner.metrics
    }

    pub fn shutdown_signal(&self) -> &Shutdown {
        &self.inner.shutdown
    }

    /// Open connections (identified or not).
    pub fn open_connections(&self) -> usize {
        self.inner.open.load(Ordering::Acquire)
    }

    /// Identified sessions, registered or not.
    pub fn sessions(&self) -> usize {
        self.inner.by_key.len()
    }

    /// Sessions that belong to a registered tagent.
    pub fn live_sessions(&self) -> usize {
        self.inner.live.len()
    }

    /// Report every live session as connected again: after this hub's lease
    /// lapsed, other hubs may have marked its tagents `runner-lost`.
    pub fn reassert(&self) {
        let held: Vec<(TagentId, Option<u32>)> = self
            .inner
            .live
            .iter()
            .map(|e| (*e.key(), e.value().state.lock().group))
            .collect();
        let groups = self.inner.groups.read();
        let runners: Vec<(TagentId, Option<u32>)> = held
            .into_iter()
            .map(|(id, g)| (id, g.and_then(|g| groups.me.get(&g).copied())))
            .collect();
        drop(groups);
        for (id, runner) in runners {
            self.report(id, Status::Connected, runner);
        }
    }

    /// Count a new connection; `None` when `max_sessions` are open.
    pub(crate) fn admit(&self) -> Option<OpenGuard> {
        let max = self.inner.settings.max_sessions;
        let mut cur = self.inner.open.load(Ordering::Acquire);
        loop {
            if cur >= max {
                return None;
            }
            match self.inner.open.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(OpenGuard(self.clone())),
                Err(now) => cur = now,
            }
        }
    }

    pub(crate) fn new_session(
        &self,
        peer: std::net::SocketAddr,
        protocol: Protocol,
    ) -> Arc<Session> {
        Arc::new(Session::new(peer, protocol, now_millis()))
    }

    /// Resolve the tagent registered under `key` whose id is `agent_id`.
    pub fn resolve(&self, key: &SessionKey, agent_id: u64) -> Option<(TagentId, u32)> {
        if key.tenant == UNKNOWN_TENANT || agent_id == 0 {
            return None;
        }
        let index = self.inner.registry.index();
        index
            .lookup(key.tenant, key.port, key.ip)
            .into_iter()
            .find(|id| *id == agent_id)
            .and_then(|id| index.get(id))
            .map(|t| (t.id, t.runner_group))
    }

    /// The session key for a (tenant, ip, port) as a heartbeat names it.
    pub fn key_for(&self, tenant: &str, ip: std::net::IpAddr, port: u16) -> SessionKey {
        SessionKey {
            tenant: self
                .inner
                .registry
                .interner()
                .get(tenant)
                .unwrap_or(UNKNOWN_TENANT),
            ip: ip.to_canonical(),
            port,
        }
    }

    /// Account a heartbeat to `session`: identify it on its first one, keep
    /// its tagent resolved, move status on registration changes, and keep the
    /// facts. `Err` when the heartbeat names another identity than the
    /// session's first one.
    pub fn heartbeat(
        &self,
        session: &Arc<Session>,
        key: SessionKey,
        facts: Facts<'_>,
    ) -> Result<Beat, IdentityChanged> {
        let now = now_millis();
        session.touch(now);
        let generation = self.inner.registry.generation();
        // The tagent stays resolved until the registry changes or the
        // heartbeat names another agentId.
        let (first, cached) = {
            let st = session.state.lock();
            match st.key {
                Some(k) if k != key => return Err(IdentityChanged),
                Some(_) if st.generation == generation && st.agent_id == facts.agent_id => {
                    (false, Some(st.tagent.map(|id| (id, st.group))))
                }
                Some(_) => (false, None),
                None => (true, None),
            }
        };
        if first {
            self.claim(session, key);
        }
        let resolved = match cached {
            Some(r) => r,
            None => self
                .resolve(&key, facts.agent_id)
                .map(|(id, g)| (id, Some(g))),
        };
        let (previous, reload) = {
            let mut st = session.state.lock();
            let previous = st.tagent;
            st.key = Some(key);
            st.generation = generation;
            st.agent_id = facts.agent_id;
            st.tagent = resolved.map(|(id, _)| id);
            st.group = resolved.and_then(|(_, g)| g);
            st.heartbeats += 1;
            st.reported
                .update(facts.pcpu, facts.mem, facts.version, facts.ip_string);
            let reload = resolved.is_none() && !st.reload_queued;
            if reload {
                st.reload_queued = true;
            }
            if resolved.is_some() {
                st.reload_queued = false;
            }
            (previous, reload)
        };
        let tagent = resolved.map(|(id, _)| id);
        if previous != tagent {
            if let Some(old) = previous {
                self.detach(session, old, DisconnectReason::Replaced);
            }
            if let Some((id, group)) = resolved {
                self.attach(session, id, group);
            }
        }
        if reload {
            self.inner.metrics.unregistered_heartbeats.increment(1);
            let _ = self.inner.reload_tx.send(Arc::downgrade(session));
        }
        Ok(Beat {
            tagent,
            group: resolved.and_then(|(_, g)| g),
        })
    }

    /// Make `session` the one under `key`, closing any session it replaces.
    fn claim(&self, session: &Arc<Session>, key: SessionKey) {
        if let Some(old) = self.inner.by_key.insert(key, session.clone())
            && !Arc::ptr_eq(&old, session)
        {
            old.close(DisconnectReason::Replaced);
        }
        self.inner.metrics.session_opened(session.protocol);
    }

    fn attach(&self, session: &Arc<Session>, id: TagentId, group: Option<u32>) {
        let old = self.inner.live.insert(id, session.clone());
        match old {
            Some(old) if Arc::ptr_eq(&old, session) => return,
            Some(old) => old.close(DisconnectReason::Replaced),
            None => {}
        }
        let runner = group.and_then(|g| self.inner.groups.read().me.get(&g).copied());
        self.report(id, Status::Connected, runner);
    }

    fn detach(&self, session: &Arc<Session>, id: TagentId, reason: DisconnectReason) {
        if self
            .inner
            .live
            .remove_if(&id, |_, s| Arc::ptr_eq(s, session))
            .is_some()
        {
            self.report(id, Status::Disconnected(reason), None);
        }
    }

    fn report(&self, id: TagentId, status: Status, runner: Option<u32>) {
        let change = StatusChange {
            id,
            status,
            at: now_millis(),
            runner,
        };
        let _ = self.inner.status_tx.send(StatusMsg::Change(change));
    }

    /// The connection task ended: drop the session from the tables (only if
    /// they still point at it: a replacement is never touched) and report.
    /// Public for the session-table bench (`benches/session_table.rs`).
    pub fn finish(&self, session: &Arc<Session>, reason: DisconnectReason) {
        let (key, tagent) = {
            let mut st = session.state.lock();
            st.close.get_or_insert(reason);
            (st.key, st.tagent)
        };
        if let Some(key) = key {
            self.inner
                .by_key
                .remove_if(&key, |_, s| Arc::ptr_eq(s, session));
            self.inner.metrics.session_closed(session.protocol, reason);
        }
        if let Some(id) = tagent {
            self.detach(session, id, reason);
        }
        session.drain_commands();
    }

    /// The `proxy.group` list of a group, if it has one.
    pub fn group_list<R>(&self, group: u32, f: impl FnOnce(Option<&GroupList>) -> R) -> R {
        let current = self.inner.registry.groups();
        {
            let lists = self.inner.groups.read();
            if Arc::ptr_eq(&lists.groups, &current) {
                return f(lists.get(group));
            }
        }
        let mut lists = self.inner.groups.write();
        if !Arc::ptr_eq(&lists.groups, &current) {
            *lists = group_lists(current, &self.inner.advertised);
        }
        f(lists.get(group))
    }

    /// The live session of a tagent, if any.
    pub fn session_of(&self, id: TagentId) -> Option<Arc<Session>> {
        self.inner.live.get(&id).map(|s| s.clone())
    }

    pub fn view(&self, session: &Session) -> SessionView {
        let st = session.state.lock();
        let tenant = st
            .key
            .filter(|k| k.tenant != UNKNOWN_TENANT)
            .map(|k| self.inner.registry.interner().resolve(k.tenant).to_string());
        SessionView {
            protocol: session.protocol.as_str(),
            peer: session.peer.to_string(),
            tenant,
            ip: st.key.map(|k| k.ip.to_string()),
            port: st.key.map(|k| k.port),
            tagent_id: st.tagent,
            registered: st.tagent.is_some(),
            connected_at: session.connected_at,
            last_heartbeat: session.last_seen.load(Ordering::Relaxed),
            heartbeats: st.heartbeats,
            pcpu: st.reported.pcpu(),
            mem: st.reported.mem(),
            version: st.reported.version().map(str::to_owned),
            ip_string: st.reported.ip_string().map(str::to_owned),
        }
    }

    /// Unregistered sessions, as operators see them.
    pub fn unregistered(&self) -> Vec<SessionView> {
        let sessions: Vec<Arc<Session>> = self
            .inner
            .by_key
            .iter()
            .filter(|e| e.value().state.lock().tagent.is_none())
            .map(|e| e.value().clone())
            .collect();
        sessions.iter().map(|s| self.view(s)).collect()
    }

    /// Send `kind` down the tagent's session and wait for the outcome.
    pub async fn command(&self, id: TagentId, kind: CommandKind) -> Result<(), CommandError> {
        let session = self.session_of(id).ok_or(CommandError::NotConnected(id))?;
        let (tx, rx) = oneshot::channel();
        session.push_command(kind, Some(tx));
        let timeout = self.inner.settings.command_timeout;
        let outcome = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Delivery::SessionClosed,
            Err(_) => {
                session.withdraw_command(kind);
                self.inner.metrics.command(kind, "timeout");
                return Err(CommandError::Timeout(timeout));
            }
        };
        let (label, result) = match outcome {
            Delivery::Delivered => ("delivered", Ok(())),
            Delivery::Failed(m) => ("failed", Err(CommandError::Failed(m))),
            Delivery::SessionClosed => ("session_closed", Err(CommandError::SessionClosed)),
        };
        self.inner.metrics.command(kind, label);
        result
    }

    /// Close every session (reason: shutdown) and wait, bounded, for their
    /// tasks to end; then make sure every status change reached the writer.
    pub async fn drain(&self, within: Duration) {
        let sessions: Vec<Arc<Session>> = self
            .inner
            .by_key
            .iter()
            .map(|e| e.value().clone())
            .collect();
        for s in sessions {
            s.close(DisconnectReason::Shutdown);
        }
        let deadline = tokio::time::Instant::now() + within;
        // Connections that never identified themselves are not waited for.
        while self.sessions() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.flush_status().await;
    }

    /// Wait until every status change reported so far is queued for the store.
    pub async fn flush_status(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.status_tx.send(StatusMsg::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// A connection's handle on the hub, which counts it as open until dropped
/// (what `max_sessions` bounds). A session's protocol half holds it.
pub struct OpenGuard(Hub);

impl std::ops::Deref for OpenGuard {
    type Target = Hub;

    fn deref(&self) -> &Hub {
        &self.0
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.inner.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl GroupLists {
    fn get(&self, group: u32) -> Option<&GroupList> {
        let i = self
            .lists
            .binary_search_by_key(&group, |(id, _)| *id)
            .ok()?;
        Some(&self.lists[i].1)
    }
}

fn group_lists(groups: Arc<RunnerGroups>, advertised: &(String, u16)) -> GroupLists {
    let mut lists: Vec<(u32, GroupList)> = groups
        .groups
        .iter()
        .map(|g| {
            let list = g.proxy_group();
            let mut updategroup = Vec::new();
            compat::updategroup_line(&mut updategroup, &list);
            let updategroup = updategroup.into_boxed_slice();
            (g.id, GroupList { list, updategroup })
        })
        .collect();
    // Group ids are unique (`RunnerGroups::validate`); sorted for `get`.
    lists.sort_unstable_by_key(|(id, _)| *id);
    let me = groups
        .groups
        .iter()
        .filter_map(|g| {
            g.runners
                .iter()
                .find(|r| r.host == advertised.0 && r.port == advertised.1)
                .map(|r| (g.id, r.id))
        })
        .collect();
    GroupLists { groups, lists, me }
}

/// Group-commit status transitions: collect for `flush`, then hand the batch
/// to the registry writer (one transaction for all of them).
async fn status_batcher(
    registry: Registry,
    mut rx: mpsc::UnboundedReceiver<StatusMsg>,
    flush: Duration,
) {
    let mut batch: Vec<StatusChange> = Vec::new();
    let mut waiters: Vec<oneshot::Sender<()>> = Vec::new();
    while let Some(first) = rx.recv().await {
        let take = |m: StatusMsg, batch: &mut Vec<StatusChange>, waiters: &mut Vec<_>| match m {
            StatusMsg::Change(c) => batch.push(c),
            StatusMsg::Flush(w) => waiters.push(w),
        };
        take(first, &mut batch, &mut waiters);
        if waiters.is_empty() {
            tokio::time::sleep(flush).await;
        }
        while let Ok(m) = rx.try_recv() {
            take(m, &mut batch, &mut waiters);
        }
        if !batch.is_empty() {
            registry
                .report_status_async(std::mem::take(&mut batch))
                .await;
        }
        for w in waiters.drain(..) {
            let _ = w.send(());
        }
    }
}

/// A session silent this long gives up its task until its next message.
const PARK_AFTER_MS: u64 = 1000;

/// Close sessions that have been silent longer than the idle timeout, and
/// park the ones that have been quiet a moment. One task for all sessions
/// instead of a timer per session.
async fn sweeper(hub: Weak<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let Some(inner) = hub.upgrade() else { return };
        let idle = inner.settings.idle_timeout.as_millis() as u64;
        let now = now_millis();
        let mut stale: Vec<Arc<Session>> = Vec::new();
        let mut quiet: Vec<Arc<Session>> = Vec::new();
        for e in inner.by_key.iter() {
            let silent = now.saturating_sub(e.value().last_seen.load(Ordering::Relaxed));
            if silent > idle {
                stale.push(e.value().clone());
            } else if silent > PARK_AFTER_MS && !e.value().is_parked() {
                quiet.push(e.value().clone());
            }
        }
        for s in stale {
            s.close(DisconnectReason::IdleTimeout);
        }
        for s in quiet {
            s.request_park();
        }
    }
}

/// Send `reload` to unregistered sessions, at most `rate` per second, so an
/// estate coming back to an empty store re-registers as a stream, not a storm.
async fn reloader(mut rx: mpsc::UnboundedReceiver<Weak<Session>>, rate: u32) {
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while let Some(weak) = rx.recv().await {
        let Some(session) = weak.upgrade() else {
            continue;
        };
        {
            let st = session.state.lock();
            if st.tagent.is_some() || st.close.is_some() {
                continue;
            }
        }
        tick.tick().await;
        session.push_command(CommandKind::Reload, None);
    }
}
