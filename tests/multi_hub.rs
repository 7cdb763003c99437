//! A runner group of three hub processes sharing one PostgreSQL registry
//! (issue 7): registrations seen by every hub without any traffic of their
//! own (change notifications), tagents registered on one hub and connected
//! to another, the IP-conflict rule, status views and commands across hubs,
//! a hub killed and its tagents `runner-lost`, then connected again through
//! the other hubs.
//!
//! Needs `TAGENT_HUB_TEST_DATABASE_URL` (`.ci/with-postgres` sets it);
//! without it the test prints that it was skipped.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::{Options, Server, Tagent};
use serde_json::{Value, json};

const KEY: &str = "6b1d000000000000000000000000000000000000000000000000000000000007";
/// Tagents in the test, spread over the hubs.
const TAGENTS: usize = 12;
/// A hub's lease; a dead hub's tagents are runner-lost within about this.
const LEASE_SECS: u64 = 3;
/// Bound on every wait for something another hub did.
const SETTLE: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn config(url: &str, schema: &str, ports: &[u16]) -> String {
    let mut toml = format!(
        "credential_key = \"{KEY}\"\n\
         [store]\nengine = \"postgres\"\nurl = \"{url}\"\nschema = \"{schema}\"\n\
         lease_secs = {LEASE_SECS}\n\
         [heartbeat]\nstatus_flush_ms = 10\ncommand_quiet_ms = 200\n\
         [[runner_group]]\nid = 1\nname = \"dc\"\nnetworks = [\"127.0.0.0/8\"]\n"
    );
    for (i, port) in ports.iter().enumerate() {
        toml.push_str(&format!(
            "[[runner_group.runner]]\nid = {}\nname = \"hub-{i}\"\nheartbeat = \"127.0.0.1:{port}\"\n",
            i + 1
        ));
    }
    toml
}

fn monitor(id: u64, ip: &str, group: &str) -> Value {
    json!({"type":"monitor","tenant":"demo","agentId":id,"port":3939,"ipString":ip,
           "proxyGroup":group,"proxyGroupId":"1","status":"working","version":"1.5.4",
           "mgmtIp":ip})
}

/// Poll tagent `id` on `hub` until `f` holds (bounded by [`SETTLE`]).
async fn wait_until(hub: &Server, id: u64, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + SETTLE;
    loop {
        let (status, body) = hub.get(&format!("/api/v1/tagents/{id}")).await;
        if status == 200 {
            let t: Value = serde_json::from_str(&body).unwrap();
            if f(&t) {
                return t;
            }
        }
        assert!(
            Instant::now() < deadline,
            "tagent {id} never {what} on {}: HTTP {status} {body}",
            hub.advertise()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn post(hub: &Server, path: &str) -> (u16, Value) {
    let resp = common::client().post(hub.url(path)).send().await.unwrap();
    common::reply_json(resp).await
}

/// Connect a tagent to `hub` and send heartbeats until one is accounted to
/// its registration (the hub may learn of it a moment after it was made on
/// another hub).
async fn connect(hub: &Server, id: u64, ip: &str, group: &str) -> Tagent {
    let mut tagent = Tagent::connect_from(hub.heartbeat_addr(), ip).await;
    let deadline = Instant::now() + SETTLE;
    loop {
        assert_eq!(tagent.send(&monitor(id, ip, group)).await["Status"], "OK");
        let (_, body) = hub.get(&format!("/api/v1/tagents/{id}")).await;
        let t: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if t["session"]["protocol"] == "compat" {
            return tagent;
        }
        assert!(
            Instant::now() < deadline,
            "hub {} never accounted tagent {id}'s heartbeat: {body}",
            hub.advertise()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hubs_share_the_registry_and_take_over_a_dead_hubs_tagents() {
    let Some((url, schema)) = common::postgres("three_hubs_share_the_registry") else {
        return;
    };
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let toml = config(&url, &schema, &ports);
    let mut hubs: Vec<Server> = ports
        .iter()
        .map(|port| {
            Server::start_with(
                Options::default()
                    .config(&toml)
                    .arg("--heartbeat-addr")
                    .arg(format!("127.0.0.1:{port}")),
            )
        })
        .collect();

    // Registered on hub i % 3; every reply lists the three runners.
    let mut tagents = Vec::new();
    for i in 0..TAGENTS {
        let ip = format!("127.0.7.{}", i + 1);
        let (id, group) = hubs[i % 3].register_tagent("demo", &ip, "cred").await;
        assert_eq!(
            group,
            ports
                .iter()
                .map(|p| format!("127.0.0.1:{p}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        tagents.push((id, ip, group));
    }
    let ids: Vec<u64> = tagents.iter().map(|t| t.0).collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), TAGENTS, "ids are unique across hubs: {ids:?}");

    // Every hub learns of every registration, though it makes no write of
    // its own that would read them: the last ones reach hubs 0 and 1 by
    // change notification only.
    for hub in &hubs {
        for (id, ip, _) in &tagents {
            let t = wait_until(hub, *id, "known", |_| true).await;
            assert_eq!(t["ip"], json!(ip), "{t}");
        }
    }

    // Each connects to the hub after the one it registered on.
    let mut sessions = Vec::new();
    for (i, (id, ip, group)) in tagents.iter().enumerate() {
        sessions.push(Some(connect(&hubs[(i + 1) % 3], *id, ip, group).await));
    }

    // Every hub shows every tagent connected, through the runner holding it.
    for hub in &hubs {
        for (i, (id, _, _)) in tagents.iter().enumerate() {
            let runner = ((i + 1) % 3 + 1) as u64;
            wait_until(hub, *id, "connected through its runner", |t| {
                t["status"] == "connected" && t["runner"] == runner
            })
            .await;
        }
    }

    // Rule 3 across hubs: a tagent live on hub 1 cannot be registered over on hub 0.
    let (id0, ip0, _) = &tagents[0];
    let (status, reply) = hubs[0]
        .register(
            &json!({"tagentId": id0.to_string(), "port":"3939","ipString":ip0,"mgmtIp":ip0,
                    "name":"h","credential":"other"}),
            Some("demo"),
        )
        .await;
    assert_eq!(
        (status, &reply["Status"]),
        (409, &json!("ERROR")),
        "{reply}"
    );
    assert!(
        reply["Message"].as_str().unwrap().contains("IP conflict"),
        "{reply}"
    );

    // A command for a tagent whose session hub 1 holds, sent to hub 0,
    // reaches it (forwarded); a status check is answered from the store.
    let (status, result) = post(&hubs[0], &format!("/api/v1/tagents/{id0}/reload")).await;
    assert_eq!(
        (status, &result["result"]),
        (200, &json!("delivered")),
        "{result}"
    );
    let line = sessions[0].as_mut().unwrap().line().await;
    assert_eq!(line, json!({"type":"reload"}));
    let (status, result) = post(&hubs[2], &format!("/api/v1/tagents/{id0}/status-check")).await;
    assert_eq!(
        (status, &result["result"]),
        (200, &json!("connected")),
        "{result}"
    );
    // Another hub's route for forwarded commands wants a fresh signature
    // of the group's key: none, a stale one or a replayed one is refused.
    let path = format!("/internal/v1/tagents/{id0}/reload");
    let (status, _) = post(&hubs[1], &path).await;
    assert_eq!(status, 401);
    let cipher = tagent_hub::store::CredentialCipher::from_hex(KEY).unwrap();
    let signed_post = |signed: [(&'static str, String); 3]| {
        let mut req = common::client().post(hubs[1].url(&path));
        for (k, v) in signed {
            req = req.header(k, v);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let now = tagent_hub::model::now_millis();
    let sign = |at| tagent_hub::dispatch::signature::sign(&cipher, "POST", &path, b"", at);
    let stale = sign(now - 120_000);
    assert_eq!(signed_post(stale).await, 401);
    let fresh = sign(now);
    assert_eq!(signed_post(fresh.clone()).await, 200);
    assert_eq!(
        sessions[0].as_mut().unwrap().line().await,
        json!({"type":"reload"})
    );
    assert_eq!(signed_post(fresh).await, 401, "a replay");
    let m = hubs[1].metrics().await;
    for reason in ["missing", "stale", "replayed"] {
        assert_eq!(
            m.value(&format!(
                "tagent_hub_peer_refused_total{{reason=\"{reason}\"}}"
            )),
            1.0,
            "{reason}"
        );
    }

    // Hub 2 dies. Its tagents are runner-lost on the others within the lease.
    hubs[2].kill9();
    let lost: Vec<usize> = (0..TAGENTS).filter(|i| (i + 1) % 3 == 2).collect();
    for i in &lost {
        sessions[*i] = None;
        for hub in &hubs[..2] {
            wait_until(hub, tagents[*i].0, "runner-lost", |t| {
                t["status"] == "disconnected" && t["disconnect_reason"] == "runner-lost"
            })
            .await;
        }
    }
    // The others stay connected.
    for (i, (id, _, _)) in tagents.iter().enumerate() {
        if !lost.contains(&i) {
            let t = wait_until(&hubs[0], *id, "still connected", |_| true).await;
            assert_eq!(t["status"], "connected", "{t}");
        }
    }

    // They fail over to the next runner of the group, as a tagent does.
    for i in &lost {
        let (id, ip, group) = &tagents[*i];
        sessions[*i] = Some(connect(&hubs[0], *id, ip, group).await);
        for hub in &hubs[..2] {
            wait_until(hub, *id, "connected after failover", |t| {
                t["status"] == "connected" && t["runner"] == 1
            })
            .await;
        }
    }

    // Registrations go on with two hubs, and a new id is still unique.
    let (new_id, _) = hubs[1].register_tagent("demo", "127.0.7.200", "cred").await;
    assert!(!ids.contains(&new_id), "{new_id} reused");
    drop(sessions);
}

#[test]
fn a_hub_sharing_a_store_must_name_its_runner() {
    let Some((url, schema)) = common::postgres("a_hub_sharing_a_store_must_name_its_runner") else {
        return;
    };
    // No runner groups: the default one's only runner is "this hub", which
    // every hub of the group would take for itself.
    let toml = format!(
        "credential_key = \"{KEY}\"\n[store]\nengine = \"postgres\"\nurl = \"{url}\"\nschema = \"{schema}\"\n"
    );
    let err = match Server::try_start_with(Options::default().config(&toml)) {
        Ok(_) => panic!("a hub sharing a store started without naming its runner"),
        Err(e) => e,
    };
    assert!(
        err.contains("each be a runner with its own heartbeat address"),
        "{err}"
    );
}

/// Lease fencing (issue 13 finding 8): a runner-lost decision made when a
/// hub's lease was seen lapsed at some epoch applies only while it is still
/// lapsed at that epoch, as read inside the deciding transaction.
#[test]
fn a_renewed_lease_fences_off_an_older_runner_lost_decision() {
    use std::time::Duration;
    use tagent_hub::store::{CredentialCipher, HubInfo, PgStore, RegistryStore};
    let Some((url, schema)) = common::postgres("a_renewed_lease_fences_off") else {
        return;
    };
    let opts = common::pg_options(&url, &schema);
    let store = PgStore::open(&opts, CredentialCipher::from_hex(KEY).unwrap()).unwrap();
    let a = HubInfo {
        heartbeat: "127.0.0.1:18888".into(),
        http: "127.0.0.1:18084".into(),
    };
    let lease_of = |store: &PgStore| {
        store
            .hubs()
            .unwrap()
            .into_iter()
            .find(|h| h.hub.heartbeat == a.heartbeat)
            .unwrap()
    };
    // Hub A's lease lapses: another hub sees it lapsed at epoch e.
    assert!(!store.renew_lease(&a, Duration::from_millis(1)).unwrap());
    std::thread::sleep(Duration::from_millis(20));
    let seen = lease_of(&store);
    assert!(!seen.alive);
    let still = |store: &PgStore, epoch| {
        let mut txn = store.begin().unwrap();
        txn.still_lapsed(&a.heartbeat, epoch).unwrap()
    };
    assert!(
        still(&store, seen.epoch),
        "nothing renewed: the decision stands"
    );
    // A renews (and would reassert): the older decision no longer applies.
    assert!(store.renew_lease(&a, Duration::from_secs(30)).unwrap());
    let renewed = lease_of(&store);
    assert_eq!(renewed.epoch, seen.epoch + 1);
    assert!(!still(&store, seen.epoch));
    assert!(!still(&store, renewed.epoch), "alive: nothing is lost");
    // Renewing a running lease keeps its epoch; once it lapses again, only
    // a decision made at the new epoch applies.
    assert!(!store.renew_lease(&a, Duration::from_millis(1)).unwrap());
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(lease_of(&store).epoch, renewed.epoch);
    assert!(!still(&store, seen.epoch));
    assert!(still(&store, renewed.epoch));
}

/// TLS to PostgreSQL (issue 13 finding 7): with `tls_ca`, the store's
/// connections are encrypted and the server's certificate verified.
#[test]
fn the_store_talks_tls_to_postgresql_when_given_a_ca() {
    use tagent_hub::store::{CredentialCipher, PgOptions, PgStore};
    let Some((url, schema)) = common::postgres("the_store_talks_tls_to_postgresql") else {
        return;
    };
    let Some(ca) = std::env::var_os("TAGENT_HUB_TEST_PG_CA") else {
        eprintln!("skipped the_store_talks_tls_to_postgresql: TAGENT_HUB_TEST_PG_CA is not set");
        return;
    };
    let open = |tls_ca: Option<std::path::PathBuf>| {
        PgStore::open(
            &PgOptions {
                tls_ca,
                ..common::pg_options(&url, &schema)
            },
            CredentialCipher::from_hex(KEY).unwrap(),
        )
    };
    let store = open(Some(ca.into())).expect("open over TLS");
    assert!(store.encrypted().unwrap());
    drop(store);
    assert!(
        !open(None).unwrap().encrypted().unwrap(),
        "plain without tls_ca"
    );
    // A certificate that does not chain to the given CA: refused.
    let tmp = tempfile::tempdir().unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let wrong = tmp.path().join("other.crt");
    std::fs::write(&wrong, other.cert.pem()).unwrap();
    let err = open(Some(wrong)).err().expect("a wrong CA is refused");
    assert!(!err.to_string().contains("postgres://"), "{err}");
    // A URL asking for TLS without a CA is not silently downgraded.
    let sep = if url.contains('?') { '&' } else { '?' };
    let err = PgStore::open(
        &common::pg_options(&format!("{url}{sep}sslmode=require"), &schema),
        CredentialCipher::from_hex(KEY).unwrap(),
    )
    .err()
    .expect("sslmode=require without tls_ca is refused");
    assert!(err.to_string().contains("set store.tls_ca"), "{err}");
}
