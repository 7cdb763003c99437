//! The hub: the session tables and heartbeat accounting.
//!
//! A session is in `by_key` once its first heartbeat named its (tenant, ip,
//! port), and in `live` while it belongs to a registered tagent. A reconnect
//! replaces the old session in both (SPEC §3.4): the old one's close only
//! removes entries that still point at it, so it never touches its
//! replacement.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use parking_lot::RwLock;
use tokio::sync::mpsc;

use super::credentials::CredentialReader;
use super::groups::GroupLists;
use super::identity::{self, Refused, outranks};
use super::lot::Lot;
use super::metrics::HbMetrics;
use super::proof_throttle::ProofThrottle;
use super::reloader::reloader;
use super::session::{ProtocolKind, Reported, Session, SessionKey, UNKNOWN_TENANT};
use super::settings::Settings;
use super::status::StatusReports;
use super::sweeper::sweeper;
use crate::model::now_millis;
use crate::model::{DisconnectReason, TagentId};
use crate::net::source_key;
use crate::registry::{IndexView, Liveness, Registry};
use crate::shutdown::Shutdown;

/// A cheap-to-clone handle to the heartbeat server's shared state.
#[derive(Clone)]
pub struct Hub {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) registry: Registry,
    pub(super) settings: Settings,
    /// Identified sessions by (tenant, ip, port).
    pub(super) by_key: DashMap<SessionKey, Arc<Session>>,
    /// Sessions that belong to a registered tagent, by its id.
    pub(super) live: DashMap<TagentId, Arc<Session>>,
    /// Open connections, identified or not (what `max_sessions` bounds).
    pub(super) open: AtomicUsize,
    /// Open connections by the hash of their source, outside the unlimited
    /// networks (what `max_sessions_per_ip` bounds); a source leaves with
    /// its last connection.
    pub(super) by_source: DashMap<u64, usize>,
    /// Where status transitions go, batched, to the registry's writer.
    pub(super) status: StatusReports,
    /// Sessions waiting for their rate-limited `reload`; each session is
    /// queued at most once, and the queue holds at most `max_sessions`.
    pub(super) reload_tx: mpsc::Sender<Weak<Session>>,
    pub(super) groups: RwLock<GroupLists>,
    pub(super) advertised: (String, u16),
    pub(super) shutdown: Shutdown,
    pub(super) metrics: HbMetrics,
    /// Where parked sessions get their task back.
    pub(super) runtime: tokio::runtime::Handle,
    /// Where parked sessions' sockets wait.
    pub(super) lot: Arc<Lot>,
    /// Where native handshakes get their credentials (one thread, in batches).
    pub(super) credentials: CredentialReader,
    /// Failed native handshakes per source, with back-off.
    pub(super) proofs: ProofThrottle,
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

    fn closed(&self, id: TagentId) -> Option<DisconnectReason> {
        self.inner.status.closed(id)
    }
}

/// What a heartbeat resolved to.
#[derive(Debug, Clone, Copy)]
pub struct Beat {
    pub tagent: Option<TagentId>,
    pub group: Option<u32>,
}

/// The facts a heartbeat brings.
#[derive(Debug, Default, Clone, Copy)]
pub struct Facts<'a> {
    pub agent_id: u64,
    pub pcpu: Option<f32>,
    pub mem: Option<f32>,
    pub version: Option<&'a str>,
    pub ip_string: Option<&'a str>,
}

/// A page of unregistered sessions.
#[derive(Debug)]
pub struct UnregisteredPage {
    /// Unregistered sessions in all.
    pub total: usize,
    pub sessions: Vec<SessionView>,
    /// The peer of the page's last session, when more follow.
    pub next: Option<SocketAddr>,
}

/// A session as operators see it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct SessionView {
    /// `compat` (JSON lines) or `native` (framed).
    #[schema(value_type = String)]
    pub protocol: std::borrow::Cow<'static, str>,
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
        let (reload_tx, reload_rx) = mpsc::channel(settings.max_sessions.max(1));
        let groups = registry.groups();
        let lot = Lot::start()?;
        let credentials = CredentialReader::start(registry.store())?;
        let status = StatusReports::start(registry.clone(), settings.status_flush);
        let hub = Hub {
            inner: Arc::new(Inner {
                groups: RwLock::new(GroupLists::new(groups, &advertised)),
                registry: registry.clone(),
                settings,
                by_key: DashMap::new(),
                live: DashMap::new(),
                open: AtomicUsize::new(0),
                by_source: DashMap::new(),
                status,
                reload_tx,
                advertised,
                shutdown,
                metrics: HbMetrics::new(),
                runtime: tokio::runtime::Handle::current(),
                lot,
                credentials,
                proofs: ProofThrottle::default(),
            }),
        };
        registry.set_liveness(Arc::new(hub.clone()));
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
            .map(|(id, g)| (id, g.and_then(|g| groups.my_runner(g))))
            .collect();
        drop(groups);
        for (id, runner) in runners {
            self.inner.status.connected(id, runner);
        }
    }

    /// Count a new connection; `None` when `max_sessions` are open.
    /// Count a new connection from `peer`, or say which bound refuses it:
    /// `max_sessions`, or `max_sessions_per_ip` for its source.
    pub(crate) fn admit(&self, peer: IpAddr) -> Result<OpenGuard, &'static str> {
        let max = self.inner.settings.max_sessions;
        let mut cur = self.inner.open.load(Ordering::Acquire);
        loop {
            if cur >= max {
                return Err("max_sessions");
            }
            match self.inner.open.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        let mut guard = OpenGuard {
            hub: self.clone(),
            source: 0,
        };
        let settings = &self.inner.settings;
        let peer = peer.to_canonical();
        if settings.unlimited_sources.iter().any(|n| n.contains(&peer)) {
            return Ok(guard);
        }
        // Counted under a hash of the source (8 bytes in every session's
        // guard, not an address): two sources that collide share a count,
        // which can only refuse early, never admit more.
        let source =
            foldhash::fast::FixedState::with_seed(0x7461_6765_6e74).hash_one(source_key(peer)) | 1;
        let mut n = self.inner.by_source.entry(source).or_insert(0);
        if *n >= settings.max_per_source {
            drop(n);
            // `guard` gives the total back as it drops.
            return Err("max_sessions_per_ip");
        }
        *n += 1;
        drop(n);
        guard.source = source;
        Ok(guard)
    }

    pub(crate) fn new_session(
        &self,
        peer: std::net::SocketAddr,
        protocol: ProtocolKind,
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
    /// facts. Refused (and the session to be closed) when the heartbeat names
    /// another identity than the session's first one, when a compat
    /// connection claims a tagent it does not come from, or when it would
    /// displace a session that proved the credential (see `identity.rs`).
    pub fn heartbeat(
        &self,
        session: &Arc<Session>,
        key: SessionKey,
        facts: Facts<'_>,
    ) -> Result<Beat, Refused> {
        let now = now_millis();
        session.touch(now);
        let generation = self.inner.registry.generation();
        // The tagent stays resolved until the registry changes or the
        // heartbeat names another agentId.
        let (first, cached, current) = {
            let st = session.state.lock();
            match st.key {
                Some(k) if k != key => return Err(Refused::IdentityChanged),
                Some(_) if st.generation == generation && st.agent_id == facts.agent_id => {
                    (false, Some(st.tagent.map(|id| (id, st.group))), st.tagent)
                }
                Some(_) => (false, None, st.tagent),
                None => (true, None, None),
            }
        };
        let resolved = match cached {
            Some(r) => r,
            None => {
                let resolved = self
                    .resolve(&key, facts.agent_id)
                    .map(|(id, g)| (id, Some(g)));
                self.vouch(session, &key, resolved.map(|(id, _)| id), facts.ip_string)?;
                resolved
            }
        };
        let tagent = resolved.map(|(id, _)| id);
        if let Some(id) = tagent
            && current != tagent
            && self.session_of(id).is_some_and(|s| outranks(&s, session))
        {
            return self.refuse(Refused::Proved);
        }
        if first {
            self.claim(session, key)?;
        }
        let (previous, reload) = {
            let mut st = session.state.lock();
            let previous = st.tagent;
            st.key = Some(key);
            st.generation = generation;
            st.agent_id = facts.agent_id;
            st.tagent = tagent;
            st.group = resolved.and_then(|(_, g)| g);
            st.heartbeats += 1;
            let (version, ip_string) = match resolved {
                Some(_) => (facts.version, facts.ip_string),
                // Nobody vouched for these: a few hundred bytes at most.
                None => (
                    facts.version.map(Reported::clip_version),
                    facts.ip_string.map(Reported::clip_ip_string),
                ),
            };
            st.reported
                .update(facts.pcpu, facts.mem, version, ip_string);
            let reload = resolved.is_none() && !st.reload_queued;
            if reload {
                st.reload_queued = true;
            }
            if resolved.is_some() {
                st.reload_queued = false;
            }
            (previous, reload)
        };
        if previous != tagent {
            if let Some(old) = previous {
                self.detach(session, old, DisconnectReason::Replaced);
            }
            if let Some((id, group)) = resolved {
                self.attach(session, id, group)?;
            }
        }
        if reload {
            self.inner.metrics.unregistered_heartbeats.increment(1);
            if self
                .inner
                .reload_tx
                .try_send(Arc::downgrade(session))
                .is_err()
            {
                // Full (or shutting down): its next heartbeat queues it again.
                session.state.lock().reload_queued = false;
            }
        }
        Ok(Beat {
            tagent,
            group: resolved.and_then(|(_, g)| g),
        })
    }

    /// Whether a compat session may claim `key` from where it connects.
    fn vouch(
        &self,
        session: &Session,
        key: &SessionKey,
        resolved: Option<TagentId>,
        ip_string: Option<&str>,
    ) -> Result<(), Refused> {
        if session.protocol != ProtocolKind::Compat {
            return Ok(());
        }
        let vouched = identity::vouched(
            &*self.inner.registry.index(),
            &self.inner.settings.compat_trusted_networks,
            session.peer.ip().to_canonical(),
            key,
            resolved,
            ip_string,
        );
        if vouched {
            Ok(())
        } else {
            self.refuse(Refused::Impostor)
        }
    }

    /// Count a refusal about trust and return it.
    fn refuse<T>(&self, why: Refused) -> Result<T, Refused> {
        HbMetrics::identity_refused(why.as_str());
        Err(why)
    }

    /// Make `session` the one under `key`, closing any session it replaces,
    /// unless that one outranks it.
    fn claim(&self, session: &Arc<Session>, key: SessionKey) -> Result<(), Refused> {
        self.install(&self.inner.by_key, key, session)?;
        self.inner.metrics.session_opened(session.protocol);
        Ok(())
    }

    /// Make `session` the live one of tagent `id`, closing the one it
    /// replaces, unless that one outranks it (checked before, and again
    /// here under the table's lock).
    fn attach(
        &self,
        session: &Arc<Session>,
        id: TagentId,
        group: Option<u32>,
    ) -> Result<(), Refused> {
        if !self.install(&self.inner.live, id, session)? {
            return Ok(());
        }
        let runner = group.and_then(|g| self.inner.groups.read().my_runner(g));
        self.inner.status.connected(id, runner);
        Ok(())
    }

    /// Put `session` in `table` under `k` and close the one it replaces;
    /// refused if that one outranks it. `false` when it was there already.
    fn install<K: Eq + std::hash::Hash>(
        &self,
        table: &DashMap<K, Arc<Session>>,
        k: K,
        session: &Arc<Session>,
    ) -> Result<bool, Refused> {
        let old = match table.entry(k) {
            Entry::Occupied(mut e) => {
                if Arc::ptr_eq(e.get(), session) {
                    return Ok(false);
                }
                if outranks(e.get(), session) {
                    drop(e);
                    return self.refuse(Refused::Proved);
                }
                Some(e.insert(session.clone()))
            }
            Entry::Vacant(e) => {
                e.insert(session.clone());
                None
            }
        };
        // Closed outside the table's lock: closing wakes the old task.
        if let Some(old) = old {
            old.close(DisconnectReason::Replaced);
        }
        Ok(true)
    }

    fn detach(&self, session: &Arc<Session>, id: TagentId, reason: DisconnectReason) {
        self.inner.status.disconnected(id, reason, || {
            self.inner
                .live
                .remove_if(&id, |_, s| Arc::ptr_eq(s, session))
                .is_some()
        });
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
            protocol: session.protocol.as_str().into(),
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

    /// One page of the unregistered sessions, as operators see them, in
    /// order of their peer address: the `limit` first after `after`.
    pub fn unregistered(&self, after: Option<SocketAddr>, limit: usize) -> UnregisteredPage {
        let mut total = 0;
        let mut sessions: Vec<Arc<Session>> = Vec::new();
        for e in self.inner.by_key.iter() {
            if e.value().state.lock().tagent.is_some() {
                continue;
            }
            total += 1;
            if after.is_none_or(|a| e.value().peer > a) {
                sessions.push(e.value().clone());
            }
        }
        let more = sessions.len() > limit;
        if more {
            sessions.select_nth_unstable_by_key(limit, |s| s.peer);
            sessions.truncate(limit);
        }
        sessions.sort_unstable_by_key(|s| s.peer);
        UnregisteredPage {
            total,
            next: more.then(|| sessions.last().map(|s| s.peer)).flatten(),
            sessions: sessions.iter().map(|s| self.view(s)).collect(),
        }
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
        self.inner.status.flush().await;
    }
}

/// A connection's handle on the hub, which counts it as open until dropped
/// (what `max_sessions` and `max_sessions_per_ip` bound). A session's
/// protocol half holds it.
pub struct OpenGuard {
    hub: Hub,
    /// The hash its source is counted under; 0: not counted (unlimited).
    source: u64,
}

impl std::ops::Deref for OpenGuard {
    type Target = Hub;

    fn deref(&self) -> &Hub {
        &self.hub
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        if self.source != 0 {
            self.hub
                .inner
                .by_source
                .remove_if_mut(&self.source, |_, n| {
                    *n -= 1;
                    *n == 0
                });
        }
        self.hub.inner.open.fetch_sub(1, Ordering::AcqRel);
    }
}
