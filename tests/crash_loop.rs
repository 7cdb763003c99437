//! Crash loop: the real binary under registration and heartbeat load, killed
//! with SIGKILL at a random moment of every round and restarted on the same
//! data dir. After each round:
//!
//! 1. every acknowledged registration is present and identical (tenant, ip,
//!    ips, port, name, version), and every record present is whole: it
//!    equals a registration that was sent (acknowledged, or in flight when
//!    the hub died), never a mix;
//! 2. the store opens cleanly (the hub comes back up and answers);
//! 3. the index equals the store: a sample re-registered with its tagentId,
//!    and again without it from the same ip/port, gets the same id;
//! 4. right after the restart, before any session can come back, every
//!    tagent is `disconnected` (reason `restart`, `shutdown` or
//!    `never-connected`);
//! 5. the simulated heartbeat clients reconnect and their tagents show
//!    `connected` again (bounded wait).
//!
//! `CRASH_ROUNDS` sets the rounds (default 5; 50 for the long run) and
//! `CRASH_SEED` replays a seed (the seed is printed). The decisions (kill
//! moments, operations) follow the seed; the interleaving with the hub does
//! not, so a replay reproduces the workload, not every timing.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::Server;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tagent_hub::heartbeat::client::{Identity, NativeClient};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;

const TENANT: &str = "crash";
/// Concurrent registration tasks; even ones send `mgmtIp`, odd ones let the
/// hub take the primary ip from their (bound) loopback source address.
const TASKS: usize = 6;
/// Tagents per registration task.
const SLOTS: usize = 40;
/// Addresses each slot may use as its primary ip (a re-registration moves
/// the record between them).
const VARIANTS: usize = 3;
/// Compat heartbeat sessions (tagents of their own, registered once).
const SESSIONS: usize = 32;
const HB_PORT: u16 = 3939;
/// Every bounded wait of the test, unless said otherwise.
const WAIT: Duration = Duration::from_secs(15);
/// How far past the highest known id the store is scanned.
const SCAN_MARGIN: u64 = 64;

// ------------------------------------------------------------------ model

/// One registration as sent: what the record must look like if it landed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reg {
    ip: Ipv4Addr,
    ips: Vec<Ipv4Addr>,
    name: String,
    version: String,
    /// The credential it brings: its own name on a first registration and
    /// on a reinstall, the one before on a restart (SPEC §6: a known
    /// tagent's credential changes only when the hub allowed it).
    credential: String,
}

impl Reg {
    /// Whether the record shown by `GET /api/v1/tagents/{id}` is this one.
    fn matches(&self, port: u16, t: &Value) -> bool {
        let ips: Vec<Value> = self.ips.iter().map(|ip| json!(ip.to_string())).collect();
        t["tenant"] == TENANT
            && t["ip"] == self.ip.to_string()
            && t["ips"] == Value::Array(ips)
            && t["port"] == port
            && t["name"] == self.name.as_str()
            && t["version"] == self.version.as_str()
    }
}

/// One simulated tagent of a registration task.
#[derive(Debug, Default, Clone)]
struct Slot {
    id: Option<u64>,
    /// The last registration answered OK.
    acked: Option<Reg>,
    /// A registration sent whose reply never came (the hub died).
    pending: Option<Reg>,
}

fn task_port(task: usize) -> u16 {
    4000 + task as u16
}

fn slot_ip(task: usize, slot: usize, variant: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 3, task as u8, (slot * VARIANTS + variant + 1) as u8)
}

/// The (task, slot) an address of 127.3.0.0/16 belongs to.
fn slot_of(ip: Ipv4Addr) -> Option<(usize, usize)> {
    let [a, b, c, d] = ip.octets();
    let (task, slot) = (c as usize, (d as usize).checked_sub(1)? / VARIANTS);
    (a == 127 && b == 3 && task < TASKS && slot < SLOTS).then_some((task, slot))
}

fn session_ip(n: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 4, 0, n as u8 + 1)
}

fn uses_mgmt_ip(task: usize) -> bool {
    task.is_multiple_of(2)
}

/// Differs per first registration and reinstall (it holds the name), so
/// the account shows which registration wrote it.
fn credential(reg: &Reg) -> String {
    format!("{{ENCRYPTED}}{}", reg.credential)
}

/// Share of re-registrations that are reinstalls: an operator allows them
/// first, then they bring a new credential.
const REINSTALLS: f64 = 0.3;

fn body(reg: &Reg, port: u16, id: Option<u64>, mgmt: bool) -> Value {
    let ip_string = reg
        .ips
        .iter()
        .map(Ipv4Addr::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let mut b = json!({
        "tagentId": id.map_or(String::new(), |id| id.to_string()),
        "port": port.to_string(),
        "ipString": ip_string,
        "name": reg.name,
        "user": "root",
        "version": reg.version,
        "osType": "Linux",
        "osVersion": "6.1",
        "osbit": "64",
        "credential": credential(reg),
    });
    if mgmt {
        b["mgmtIp"] = json!(reg.ip.to_string());
    }
    b
}

/// What a registration came to.
enum Outcome {
    Ok(u64),
    /// An answer that is not OK: nothing was stored.
    Refused(String),
    /// No answer (connection refused or reset: the hub died).
    NoReply(String),
}

async fn send_register(client: &reqwest::Client, http: SocketAddr, body: &Value) -> Outcome {
    let url = format!("http://{http}/register?tenant={TENANT}");
    let resp = client
        .post(&url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) => return Outcome::NoReply(e.to_string()),
    };
    let status = resp.status().as_u16();
    let text = match resp.text().await {
        Ok(t) => t,
        Err(e) => return Outcome::NoReply(e.to_string()),
    };
    let reply: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(_) => return Outcome::Refused(format!("HTTP {status}, not JSON: {text:?}")),
    };
    match (
        status,
        reply["Status"].as_str(),
        reply["Data"]["tagentId"].as_u64(),
    ) {
        (200, Some("OK"), Some(id)) => Outcome::Ok(id),
        _ => Outcome::Refused(format!("HTTP {status}: {reply}")),
    }
}

/// A registration client from `ip` (mgmtIp tasks all use 127.0.0.1).
fn client_for(cache: &mut HashMap<Ipv4Addr, reqwest::Client>, ip: Ipv4Addr) -> &reqwest::Client {
    cache.entry(ip).or_insert_with(|| {
        let local = (ip != Ipv4Addr::LOCALHOST).then_some(IpAddr::V4(ip));
        common::http_builder()
            .no_proxy()
            .local_address(local)
            .timeout(Duration::from_secs(10))
            .build()
            .expect("build an HTTP client")
    })
}

/// The next registration of a slot, from its acknowledged state, and
/// whether it goes with its tagentId. A reinstall has a new credential.
fn next_reg(
    rng: &mut StdRng,
    task: usize,
    slot: usize,
    acked: Option<&Reg>,
    n: u64,
) -> (Reg, bool) {
    let name = format!("t{task}-s{slot}-n{n}");
    let version = format!("v{}", rng.random_range(0..1000));
    let others = |rng: &mut StdRng, primary: Ipv4Addr| {
        let mut ips = vec![primary];
        for v in 0..VARIANTS {
            let ip = slot_ip(task, slot, v);
            if ip != primary && rng.random_bool(0.6) {
                ips.push(ip);
            }
        }
        ips
    };
    match acked {
        // A first registration, without tagentId.
        None => {
            let ip = slot_ip(task, slot, rng.random_range(0..VARIANTS));
            let ips = others(rng, ip);
            (
                Reg {
                    ip,
                    ips,
                    credential: name.clone(),
                    name,
                    version,
                },
                false,
            )
        }
        Some(a) => {
            // The new primary is one the tagent already answers for (its
            // primary or a contained ip), so it is the same tagent: with
            // tagentId by rule 2's first branch, without by lookup.
            let ip = if rng.random_bool(0.5) {
                a.ip
            } else {
                a.ips[rng.random_range(0..a.ips.len())]
            };
            let ips = others(rng, ip);
            let with_id = rng.random_bool(0.7);
            let credential = if rng.random_bool(REINSTALLS) {
                name.clone()
            } else {
                a.credential.clone()
            };
            (
                Reg {
                    ip,
                    ips,
                    name,
                    version,
                    credential,
                },
                with_id,
            )
        }
    }
}

#[derive(Default)]
struct TaskResult {
    acked: u64,
    sent: u64,
    violations: Vec<String>,
}

/// One registration task for one round: registers its slots until a request
/// gets no reply or `killed` is set (just before the hub is killed).
async fn registration_task(
    task: usize,
    mut slots: Vec<Slot>,
    http: SocketAddr,
    seed: u64,
    counter: Arc<AtomicU64>,
    killed: Arc<AtomicBool>,
) -> (Vec<Slot>, TaskResult) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut clients = HashMap::new();
    let mut result = TaskResult::default();
    let port = task_port(task);
    let mgmt = uses_mgmt_ip(task);
    while !killed.load(Ordering::SeqCst) {
        let s = rng.random_range(0..SLOTS);
        let slot = &mut slots[s];
        debug_assert!(slot.pending.is_none());
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let (reg, with_id) = next_reg(&mut rng, task, s, slot.acked.as_ref(), n);
        let id = if with_id { slot.id } else { None };
        // A reinstall: the operator allows it first.
        if let (Some(known), Some(a)) = (slot.id, &slot.acked)
            && a.credential != reg.credential
        {
            let url = format!("http://{http}/api/v1/tagents/{known}/allow-reinstall");
            match common::client().post(&url).send().await {
                Ok(r) if r.status() == 204 => {}
                Ok(r) => {
                    result.violations.push(format!(
                        "task {task} slot {s}: allow-reinstall {known}: HTTP {}",
                        r.status()
                    ));
                    continue;
                }
                Err(e) => {
                    if !killed.load(Ordering::SeqCst) {
                        result.violations.push(format!(
                            "task {task} slot {s}: allow-reinstall {known} while the hub was up: {e}"
                        ));
                    }
                    break;
                }
            }
        }
        let body = body(&reg, port, id, mgmt);
        let source = if mgmt { Ipv4Addr::LOCALHOST } else { reg.ip };
        slot.pending = Some(reg);
        result.sent += 1;
        match send_register(client_for(&mut clients, source), http, &body).await {
            Outcome::Ok(id) => {
                if let Some(known) = slot.id
                    && known != id
                {
                    result.violations.push(format!(
                        "task {task} slot {s}: re-registration answered id {id}, the tagent is {known}: {body}"
                    ));
                }
                slot.id = Some(id);
                slot.acked = slot.pending.take();
                result.acked += 1;
            }
            Outcome::Refused(why) => {
                slot.pending = None;
                result
                    .violations
                    .push(format!("task {task} slot {s}: refused: {why}; body {body}"));
            }
            Outcome::NoReply(why) => {
                if !killed.load(Ordering::SeqCst) {
                    result.violations.push(format!(
                        "task {task} slot {s}: no reply while the hub was up: {why}"
                    ));
                }
                break;
            }
        }
    }
    (slots, result)
}

// ------------------------------------------------------------- heartbeats

struct Sessions {
    /// The hub's heartbeat address; `None` while it is down or restarting,
    /// so no client can reach the new process before the test lets it.
    addr: watch::Sender<Option<SocketAddr>>,
    stop: AtomicBool,
    connects: AtomicU64,
    heartbeats: AtomicU64,
    odd_replies: AtomicU64,
}

fn monitor(id: u64, ip: Ipv4Addr, group: &str) -> Value {
    json!({"type":"monitor","tenant":TENANT,"agentId":id,"port":HB_PORT,
           "ipString":ip.to_string(),"proxyGroup":group,"proxyGroupId":"1",
           "proxyIp":"127.0.0.1","proxyPort":8888,"pcpu":0.3,"mem":41,
           "status":"working","version":"1.5.4","mgmtIp":ip.to_string()})
}

/// A compat tagent: connects to the published address, heartbeats every
/// 50–250 ms, and reconnects (after 20–80 ms) whenever the session drops.
async fn heartbeat_client(n: usize, id: u64, shared: Arc<Sessions>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut rx = shared.addr.subscribe();
    let ip = session_ip(n);
    while !shared.stop.load(Ordering::Relaxed) {
        let Some(addr) = *rx.borrow_and_update() else {
            let _ = tokio::time::timeout(Duration::from_millis(100), rx.changed()).await;
            continue;
        };
        let Ok(Ok(stream)) = tokio::time::timeout(
            Duration::from_secs(2),
            common::connect_from(addr, ip.into()),
        )
        .await
        else {
            tokio::time::sleep(Duration::from_millis(rng.random_range(20..80))).await;
            continue;
        };
        shared.connects.fetch_add(1, Ordering::Relaxed);
        let (r, mut w) = stream.into_split();
        let mut r = BufReader::new(r);
        let mut line = String::new();
        let group = addr.to_string();
        loop {
            if shared.stop.load(Ordering::Relaxed) || *rx.borrow() != Some(addr) {
                break;
            }
            let hb = format!("{}\n", monitor(id, ip, &group));
            if w.write_all(hb.as_bytes()).await.is_err() {
                break;
            }
            line.clear();
            match tokio::time::timeout(Duration::from_secs(5), r.read_line(&mut line)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => break,
            }
            match serde_json::from_str::<Value>(&line) {
                Ok(v) if v["Status"] == "OK" => {
                    shared.heartbeats.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    shared.odd_replies.fetch_add(1, Ordering::Relaxed);
                }
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(50..250))).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..80))).await;
    }
}

// ------------------------------------------------------------------ checks

async fn get_tagent(client: &reqwest::Client, http: SocketAddr, id: u64) -> Option<Value> {
    let url = format!("http://{http}/api/v1/tagents/{id}");
    let resp = client
        .get(&url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("read the body");
    match status {
        404 => None,
        200 => Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: {e}: {text}"))),
        _ => panic!("GET {url}: HTTP {status}: {text}"),
    }
}

struct World {
    slots: Vec<Vec<Slot>>,
    /// The heartbeat tagents: id and their (only) registration.
    sessions: Vec<(u64, Reg)>,
    max_id: u64,
    acked: u64,
    lost: u64,
    /// Registrations in flight at a kill, and how many of them had landed.
    in_flight: u64,
    in_flight_landed: u64,
    /// Disconnect reasons seen right after restarts.
    reasons: HashMap<String, u64>,
    /// Tagents whose account was checked with a native session: that
    /// session's end (`eof`) may be their reason after a later restart.
    native_checked: HashSet<u64>,
}

impl World {
    /// Checks 1 and 4: scan every id the store may hold, right after the
    /// restart and before any session may come back.
    async fn scan(&mut self, http: SocketAddr, violations: &mut Vec<String>) {
        let client = common::client();
        let mut seen: HashMap<(usize, usize), u64> = HashMap::new();
        let mut seen_sessions = [false; SESSIONS];
        let mut id = 1;
        while id <= self.max_id + SCAN_MARGIN {
            let Some(t) = get_tagent(&client, http, id).await else {
                id += 1;
                continue;
            };
            // Check 4: nobody is connected before its session is back.
            let reason = t["disconnect_reason"].as_str().unwrap_or("");
            let allowed = matches!(reason, "restart" | "shutdown" | "never-connected")
                || (reason == "eof" && self.native_checked.contains(&id));
            if t["status"] != "disconnected" || !t["session"].is_null() || !allowed {
                violations.push(format!("tagent {id} right after the restart: {t}"));
            }
            *self.reasons.entry(reason.to_owned()).or_default() += 1;

            // Check 1: every record is one registration that was sent, whole.
            let ip: Option<Ipv4Addr> = t["ip"].as_str().and_then(|s| s.parse().ok());
            let port = t["port"].as_u64().unwrap_or(0);
            match ip {
                Some(ip) if port == u64::from(HB_PORT) && ip.octets()[..3] == [127, 4, 0] => {
                    let n = ip.octets()[3] as usize - 1;
                    match self.sessions.get(n) {
                        Some((sid, reg)) if *sid == id && reg.matches(HB_PORT, &t) => {
                            seen_sessions[n] = true;
                        }
                        _ => violations.push(format!(
                            "tagent {id} is not the heartbeat tagent it should be: {t}"
                        )),
                    }
                }
                Some(ip) if slot_of(ip).is_some_and(|(k, _)| port == u64::from(task_port(k))) => {
                    let (k, s) = slot_of(ip).unwrap();
                    let slot = &mut self.slots[k][s];
                    if let Some(other) = seen.insert((k, s), id) {
                        violations.push(format!(
                            "task {k} slot {s} is stored twice: tagents {other} and {id}"
                        ));
                    }
                    if slot.id.is_some_and(|known| known != id) {
                        violations.push(format!(
                            "task {k} slot {s}: stored as tagent {id}, acknowledged as {:?}: {t}",
                            slot.id
                        ));
                    } else if slot
                        .acked
                        .as_ref()
                        .is_some_and(|r| r.matches(port as u16, &t))
                    {
                        if slot.pending.take().is_some() {
                            self.in_flight += 1;
                        }
                    } else if slot
                        .pending
                        .as_ref()
                        .is_some_and(|r| r.matches(port as u16, &t))
                    {
                        // The in-flight registration landed: it is the state now.
                        slot.id = Some(id);
                        slot.acked = slot.pending.take();
                        self.in_flight += 1;
                        self.in_flight_landed += 1;
                    } else {
                        if slot.acked.is_some() {
                            self.lost += 1;
                        }
                        violations.push(format!(
                            "task {k} slot {s}: tagent {id} is neither the acknowledged \
                             registration {:?} nor the one in flight {:?} (half-written or \
                             lost): {t}",
                            slot.acked, slot.pending
                        ));
                    }
                }
                _ => violations.push(format!("tagent {id} was never registered: {t}")),
            }
            self.max_id = self.max_id.max(id);
            id += 1;
        }
        for (k, slots) in self.slots.iter_mut().enumerate() {
            for (s, slot) in slots.iter_mut().enumerate() {
                if seen.contains_key(&(k, s)) {
                    continue;
                }
                if slot.pending.take().is_some() {
                    self.in_flight += 1;
                }
                if slot.acked.is_some() {
                    self.lost += 1;
                    violations.push(format!(
                        "task {k} slot {s}: acknowledged as tagent {:?} ({:?}), missing after the restart",
                        slot.id, slot.acked
                    ));
                }
            }
        }
        for (n, seen) in seen_sessions.iter().enumerate() {
            if !seen {
                self.lost += 1;
                violations.push(format!(
                    "heartbeat tagent {} missing or changed after the restart",
                    self.sessions[n].0
                ));
            }
        }
    }

    /// Check 1, accounts: the credential of a sample's last acknowledged
    /// registration (new at every first registration and reinstall) opens a
    /// native session, so the account was written together with the record.
    /// Each session ends with a `bye`, and the tagent is shown disconnected
    /// again before the load resumes.
    async fn accounts_match(
        &mut self,
        http: SocketAddr,
        heartbeat: SocketAddr,
        rng: &mut StdRng,
        violations: &mut Vec<String>,
    ) -> u64 {
        let mut checked = Vec::new();
        for _ in 0..6 {
            let (k, s) = (rng.random_range(0..TASKS), rng.random_range(0..SLOTS));
            let (Some(id), Some(reg)) = (self.slots[k][s].id, &self.slots[k][s].acked) else {
                continue;
            };
            if checked.contains(&id) {
                continue;
            }
            let identity = Identity {
                tenant: TENANT.into(),
                agent_id: id,
                ip: Some(IpAddr::V4(reg.ip)),
                port: task_port(k),
                version: None,
            };
            let secret = credential(reg);
            let connect = NativeClient::connect(heartbeat, &identity, &secret);
            match tokio::time::timeout(WAIT, connect).await {
                Ok(Ok(client)) if client.tagent_id == id => {
                    self.native_checked.insert(id);
                    checked.push(id);
                    let _ = client.bye().await;
                }
                Ok(Ok(client)) => violations.push(format!(
                    "native session of tagent {id} welcomed as {}",
                    client.tagent_id
                )),
                Ok(Err(e)) => violations.push(format!(
                    "task {k} slot {s}: the credential of the acknowledged registration \
                     {reg:?} of tagent {id} is refused: {e}"
                )),
                Err(_) => violations.push(format!("native session of tagent {id}: no answer")),
            }
        }
        let client = common::client();
        let deadline = Instant::now() + WAIT;
        for &id in &checked {
            loop {
                let t = get_tagent(&client, http, id).await;
                if t.as_ref().is_some_and(|t| t["status"] == "disconnected") {
                    break;
                }
                if Instant::now() > deadline {
                    violations.push(format!("tagent {id} still connected after its bye: {t:?}"));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        checked.len() as u64
    }

    /// Check 3: the index equals the store. A sample re-registers with its
    /// tagentId and again without one from the same ip/port, unchanged; both
    /// must find the same tagent.
    async fn index_equals_store(
        &mut self,
        http: SocketAddr,
        rng: &mut StdRng,
        violations: &mut Vec<String>,
    ) -> u64 {
        let mut sample: Vec<(u16, bool, u64, Reg)> = Vec::new();
        for _ in 0..16 {
            let k = rng.random_range(0..TASKS);
            let s = rng.random_range(0..SLOTS);
            if let (Some(id), Some(reg)) = (self.slots[k][s].id, &self.slots[k][s].acked) {
                sample.push((task_port(k), uses_mgmt_ip(k), id, reg.clone()));
            }
        }
        for _ in 0..4 {
            let (id, reg) = &self.sessions[rng.random_range(0..SESSIONS)];
            sample.push((HB_PORT, true, *id, reg.clone()));
        }
        let mut clients = HashMap::new();
        let mut done = 0;
        for (port, mgmt, id, reg) in sample {
            let source = if mgmt { Ipv4Addr::LOCALHOST } else { reg.ip };
            for with_id in [Some(id), None] {
                let body = body(&reg, port, with_id, mgmt);
                match send_register(client_for(&mut clients, source), http, &body).await {
                    Outcome::Ok(got) if got == id => done += 1,
                    Outcome::Ok(got) => violations.push(format!(
                        "index != store: tagent {id} re-registered as {got}: {body}"
                    )),
                    Outcome::Refused(why) | Outcome::NoReply(why) => violations.push(format!(
                        "index check: re-registering tagent {id} failed: {why}; body {body}"
                    )),
                }
            }
        }
        done
    }
}

/// Check 5: every heartbeat tagent shows `connected` again (bounded).
async fn wait_connected(http: SocketAddr, sessions: &[(u64, Reg)]) -> Result<Duration, String> {
    let client = common::client();
    let started = Instant::now();
    let mut waiting: Vec<u64> = sessions.iter().map(|(id, _)| *id).collect();
    while !waiting.is_empty() {
        let mut still = Vec::new();
        for id in waiting {
            match get_tagent(&client, http, id).await {
                Some(t) if t["status"] == "connected" && !t["session"].is_null() => {}
                _ => still.push(id),
            }
        }
        waiting = still;
        if waiting.is_empty() {
            break;
        }
        if started.elapsed() > WAIT {
            return Err(format!(
                "{} heartbeat tagents not connected {WAIT:?} after the restart: {waiting:?}",
                waiting.len()
            ));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Ok(started.elapsed())
}

fn fail(hub: &Server, seed: u64, round: usize, violations: &[String]) -> ! {
    let log = hub.logs();
    let tail: Vec<&str> = log.lines().rev().take(60).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    panic!(
        "crash loop failed in round {round} (replay with CRASH_SEED={seed}): {} violation(s):\n  {}\nhub log (last lines):\n{}",
        violations.len(),
        violations
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n  "),
        tail.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_keeps_every_acknowledged_registration() {
    let rounds: usize = std::env::var("CRASH_ROUNDS")
        .ok()
        .map(|v| v.parse().expect("CRASH_ROUNDS is a number"))
        .unwrap_or(5);
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .map(|v| v.parse().expect("CRASH_SEED is a number"))
        .unwrap_or_else(rand::random);
    println!("crash_loop: seed={seed} rounds={rounds} (replay with CRASH_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let test_started = Instant::now();

    let mut hub = Server::start();

    // The heartbeat tagents, registered once.
    let mut world = World {
        slots: vec![vec![Slot::default(); SLOTS]; TASKS],
        sessions: Vec::new(),
        max_id: 0,
        acked: 0,
        lost: 0,
        in_flight: 0,
        in_flight_landed: 0,
        reasons: HashMap::new(),
        native_checked: HashSet::new(),
    };
    let client = common::client();
    for n in 0..SESSIONS {
        let ip = session_ip(n);
        let reg = Reg {
            ip,
            ips: vec![ip],
            name: format!("hb-{n}"),
            version: "1.5.4".into(),
            credential: format!("hb-{n}"),
        };
        match send_register(&client, hub.http_addr(), &body(&reg, HB_PORT, None, true)).await {
            Outcome::Ok(id) => {
                world.max_id = world.max_id.max(id);
                world.acked += 1;
                world.sessions.push((id, reg));
            }
            Outcome::Refused(why) | Outcome::NoReply(why) => panic!("register {ip}: {why}"),
        }
    }
    let (addr_tx, _) = watch::channel(Some(hub.heartbeat_addr()));
    let sessions = Arc::new(Sessions {
        addr: addr_tx,
        stop: AtomicBool::new(false),
        connects: AtomicU64::new(0),
        heartbeats: AtomicU64::new(0),
        odd_replies: AtomicU64::new(0),
    });
    let clients: Vec<_> = world
        .sessions
        .iter()
        .enumerate()
        .map(|(n, (id, _))| {
            tokio::spawn(heartbeat_client(
                n,
                *id,
                sessions.clone(),
                seed ^ (0x5e55 << 32) ^ n as u64,
            ))
        })
        .collect();
    if let Err(e) = wait_connected(hub.http_addr(), &world.sessions).await {
        fail(&hub, seed, 0, &[e]);
    }

    let counter = Arc::new(AtomicU64::new(0));
    let mut index_checks = 0;
    let mut account_checks = 0;
    let mut reconnect_max = Duration::ZERO;
    let mut restart_max = Duration::ZERO;
    for round in 1..=rounds {
        // Load: registration tasks and the heartbeat sessions, then SIGKILL.
        let killed = Arc::new(AtomicBool::new(false));
        let http = hub.http_addr();
        let tasks: Vec<_> = (0..TASKS)
            .map(|k| {
                tokio::spawn(registration_task(
                    k,
                    std::mem::take(&mut world.slots[k]),
                    http,
                    seed ^ ((round as u64) << 16) ^ k as u64,
                    counter.clone(),
                    killed.clone(),
                ))
            })
            .collect();
        let kill_at = Duration::from_millis(rng.random_range(100..=700));
        tokio::time::sleep(kill_at).await;
        sessions.addr.send_replace(None);
        killed.store(true, Ordering::SeqCst);
        tokio::task::block_in_place(|| hub.kill9());

        let mut violations = Vec::new();
        let mut round_acked = 0;
        let mut round_sent = 0;
        for (k, t) in tasks.into_iter().enumerate() {
            let (slots, result) = tokio::time::timeout(WAIT, t)
                .await
                .unwrap_or_else(|_| panic!("registration task {k} did not end within {WAIT:?}"))
                .expect("registration task panicked");
            world.slots[k] = slots;
            round_acked += result.acked;
            round_sent += result.sent;
            violations.extend(result.violations);
        }
        world.acked += round_acked;

        // Check 2: the store opens cleanly and the hub answers.
        let restart_started = Instant::now();
        tokio::task::block_in_place(|| hub.restart());
        let (status, _) = hub.get("/healthz").await;
        if status != 200 {
            violations.push(format!("/healthz answered {status} after the restart"));
        }
        let restart_took = restart_started.elapsed();
        restart_max = restart_max.max(restart_took);
        let http = hub.http_addr();

        // Checks 4 and 1, before any session can come back.
        world.scan(http, &mut violations).await;
        // Check 3.
        index_checks += world
            .index_equals_store(http, &mut rng, &mut violations)
            .await;
        account_checks += world
            .accounts_match(http, hub.heartbeat_addr(), &mut rng, &mut violations)
            .await;
        if !violations.is_empty() {
            fail(&hub, seed, round, &violations);
        }
        // Check 5: let the sessions find the new process.
        sessions.addr.send_replace(Some(hub.heartbeat_addr()));
        let reconnect = match wait_connected(http, &world.sessions).await {
            Ok(took) => took,
            Err(e) => fail(&hub, seed, round, &[e]),
        };
        reconnect_max = reconnect_max.max(reconnect);
        println!(
            "crash_loop: round {round}/{rounds}: killed at {kill_at:?}; {round_sent} registrations \
             sent, {round_acked} acknowledged; up again in {restart_took:?}; {SESSIONS} sessions \
             back in {reconnect:?}"
        );
    }

    sessions.stop.store(true, Ordering::Relaxed);
    sessions.addr.send_replace(None);
    for c in clients {
        tokio::time::timeout(WAIT, c)
            .await
            .expect("a heartbeat client did not stop")
            .expect("a heartbeat client panicked");
    }
    let tagents = world
        .slots
        .iter()
        .flatten()
        .filter(|s| s.id.is_some())
        .count()
        + SESSIONS;
    let mut reasons: Vec<_> = world.reasons.iter().collect();
    reasons.sort();
    println!(
        "crash_loop summary: seed={seed} rounds={rounds} registrations_acknowledged={} \
         registrations_lost={} in_flight_at_kill={} of_which_landed={} index_checks={index_checks} account_checks={account_checks} \
         tagents={tagents} session_connects={} heartbeats={} odd_replies={} \
         reasons_after_restart={reasons:?} max_restart={restart_max:?} max_reconnect={reconnect_max:?} \
         elapsed={:?}",
        world.acked,
        world.lost,
        world.in_flight,
        world.in_flight_landed,
        sessions.connects.load(Ordering::Relaxed),
        sessions.heartbeats.load(Ordering::Relaxed),
        sessions.odd_replies.load(Ordering::Relaxed),
        test_started.elapsed(),
    );
    assert_eq!(world.lost, 0, "acknowledged registrations were lost");
}
