//! Registration policy over real sockets (SPEC §6): enrollment tokens in
//! the registration URL, `open`, `token` and `approve` per tenant, pending
//! registrations approved or rejected, and every real-tagent flow (first
//! registration, restart, resetcred, reinstall) under each policy. An
//! impostor's registration changes nothing of the real tagent's.

mod common;

use std::time::{Duration, Instant};

use common::{Options, Server, Tagent};
use reqwest::Method;
use serde_json::{Value, json};

const READ_TOKEN: &str = "reader-token-0123456789";

fn hub_with(policy: &str, extra: &str) -> Server {
    Server::start_with(Options::default().config(&format!(
        "[[admin_token]]\ntoken = \"{READ_TOKEN}\"\nscope = \"read\"\n\
         [heartbeat]\ncommand_quiet_ms = 200\nstatus_flush_ms = 10\n\
         [registration]\npolicy = \"{policy}\"\n{extra}"
    )))
}

/// `POST /register?tenant=t[&token=...]` as a tagent at `ip`:3939 sends it.
async fn register(
    hub: &Server,
    tenant: &str,
    ip: &str,
    id: Option<u64>,
    credential: &str,
    token: Option<&str>,
) -> (u16, Value) {
    let mut url = hub.url(&format!("{}?tenant={tenant}", common::REGISTER_PATH));
    if let Some(t) = token {
        url.push_str("&token=");
        url.push_str(t);
    }
    let body = json!({"tagentId": id.map_or(String::new(), |i| i.to_string()), "port": "3939",
        "ipString": ip, "mgmtIp": ip, "name": "h", "version": "1.5.4", "osType": "Linux",
        "credential": credential});
    let resp = common::client()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("POST register");
    common::reply_json(resp).await
}

async fn call(hub: &Server, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    call_as(hub, method, path, body, common::ADMIN_TOKEN).await
}

async fn call_as(
    hub: &Server,
    method: Method,
    path: &str,
    body: Option<Value>,
    token: &str,
) -> (u16, Value) {
    let mut req = common::http_builder()
        .build()
        .unwrap()
        .request(method, hub.url(path))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("admin call");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn new_token(hub: &Server, tenant: &str, uses: u32) -> String {
    token_of(
        hub,
        json!({"tenant": tenant, "max_uses": uses, "note": "rack 12"}),
    )
    .await
}

/// A token that may also bring a known tagent a new credential.
async fn reinstall_token(hub: &Server, tenant: &str) -> String {
    token_of(
        hub,
        json!({"tenant": tenant, "max_uses": 1, "reinstall": true}),
    )
    .await
}

async fn token_of(hub: &Server, body: Value) -> String {
    let (s, v) = call(hub, Method::POST, "/api/v1/enrollment-tokens", Some(body)).await;
    assert_eq!(s, 201, "{v}");
    v["token"].as_str().expect("the token's text").to_owned()
}

async fn pending(hub: &Server) -> Vec<Value> {
    let (s, v) = call(hub, Method::GET, "/api/v1/pending", None).await;
    assert_eq!(s, 200, "{v}");
    v["pending"].as_array().unwrap().clone()
}

fn message(v: &Value) -> &str {
    v["Message"].as_str().unwrap_or("")
}

/// The tagent's record as the API shows it.
async fn record(hub: &Server, id: u64) -> Value {
    common::tagent_json(hub, id).await
}

async fn wait_status(hub: &Server, id: u64, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = record(hub, id).await;
        if v["status"] == want {
            return;
        }
        assert!(Instant::now() < deadline, "never {want}: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Register a first time under `policy` the way that policy allows: plain
/// (open), with a token (token), or pending then approved (approve).
async fn first_registration(hub: &Server, policy: &str, ip: &str, credential: &str) -> u64 {
    match policy {
        "open" => {
            let (s, v) = register(hub, "t", ip, None, credential, None).await;
            common::ok_id(s, &v)
        }
        "token" => {
            let token = new_token(hub, "t", 1).await;
            let (s, v) = register(hub, "t", ip, None, credential, Some(&token)).await;
            common::ok_id(s, &v)
        }
        "approve" => {
            let (s, v) = register(hub, "t", ip, None, credential, None).await;
            assert_eq!(s, 403, "{v}");
            assert!(message(&v).contains("pending approval"), "{v}");
            let id = approve_only_entry_for(hub, ip).await;
            let (s, v) = register(hub, "t", ip, None, credential, None).await;
            let tagent = common::ok_id(s, &v);
            assert!(
                pending(hub).await.iter().all(|p| p["id"] != id),
                "the entry goes with the registration it let in"
            );
            tagent
        }
        other => panic!("no policy {other}"),
    }
}

/// Approve the one pending entry for `ip`; returns its id.
async fn approve_only_entry_for(hub: &Server, ip: &str) -> String {
    let list = pending(hub).await;
    let mine: Vec<&Value> = list.iter().filter(|p| p["ip"] == ip).collect();
    assert_eq!(mine.len(), 1, "{list:?}");
    let id = mine[0]["id"].as_str().unwrap().to_owned();
    let (s, v) = call(
        hub,
        Method::POST,
        &format!("/api/v1/pending/{id}/approve"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert!(
        v["approved_by"].as_str().unwrap().starts_with("token:"),
        "{v}"
    );
    id
}

#[tokio::test]
async fn every_real_tagent_flow_works_under_every_policy() {
    for (n, policy) in ["open", "token", "approve"].into_iter().enumerate() {
        let hub = hub_with(policy, "");
        let ip = format!("127.0.40.{}", n + 1);
        // First registration.
        let id = first_registration(&hub, policy, &ip, "one").await;
        // Restart and reload: same id, same credential, no token.
        for _ in 0..2 {
            let (s, v) = register(&hub, "t", &ip, Some(id), "one", None).await;
            assert_eq!(common::ok_id(s, &v), id, "{policy}");
        }
        // resetcred: the hub asks, the tagent registers with a new credential.
        let (_, group) = {
            let (s, v) = register(&hub, "t", &ip, Some(id), "one", None).await;
            common::ok_id(s, &v);
            let list = v["Data"]["proxyList"][0].clone();
            (
                id,
                format!(
                    "{}:{}",
                    list["ip"].as_str().unwrap(),
                    list["port"].as_str().unwrap()
                ),
            )
        };
        let mut tagent = Tagent::connect_from(hub.heartbeat_addr(), &ip).await;
        let line = json!({"type":"monitor","tenant":"t","agentId":id,"port":3939,
            "ipString":ip,"proxyGroup":group,"mgmtIp":ip,"status":"working","version":"1.5.4"});
        assert_eq!(tagent.send(&line).await, json!({"Status":"OK"}), "{policy}");
        wait_status(&hub, id, "connected").await;
        let (s, v) = call(
            &hub,
            Method::POST,
            &format!("/api/v1/tagents/{id}/resetcred"),
            None,
        )
        .await;
        assert_eq!(s, 200, "{policy}: {v}");
        assert_eq!(tagent.line().await, json!({"type":"resetcred"}));
        drop(tagent);
        wait_status(&hub, id, "disconnected").await;
        let (s, v) = register(&hub, "t", &ip, Some(id), "two", None).await;
        assert_eq!(common::ok_id(s, &v), id, "{policy}: resetcred");
        // Reinstall on the same host: no id, a new credential. Without a
        // token it waits for an operator, in every policy.
        let (s, v) = register(&hub, "t", &ip, None, "three", None).await;
        assert_eq!(s, 403, "{policy}: {v}");
        assert!(
            message(&v).contains("a new credential for a known tagent"),
            "{policy}: {v}"
        );
        assert!(
            !message(&v).contains(&format!("tagent {id}")),
            "no tagent id for the caller: {v}"
        );
        let list = pending(&hub).await;
        assert_eq!(list.len(), 1, "{policy}: {list:?}");
        assert_eq!(list[0]["kind"], "reinstall");
        assert_eq!(list[0]["tagent"], id);
        approve_only_entry_for(&hub, &ip).await;
        let (s, v) = register(&hub, "t", &ip, None, "three", None).await;
        assert_eq!(common::ok_id(s, &v), id, "{policy}: approved reinstall");
        // ... or with a reinstall token, at once; an enrollment token (the
        // one every enrolled host's config holds) admits no reinstall.
        let enrollment = new_token(&hub, "t", 5).await;
        let (s, v) = register(&hub, "t", &ip, None, "four", Some(&enrollment)).await;
        assert_eq!(
            s, 403,
            "{policy}: an enrollment token took over a tagent: {v}"
        );
        call(
            &hub,
            Method::DELETE,
            &format!(
                "/api/v1/pending/{}",
                pending(&hub).await[0]["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
        let token = reinstall_token(&hub, "t").await;
        let (s, v) = register(&hub, "t", &ip, None, "four", Some(&token)).await;
        assert_eq!(common::ok_id(s, &v), id, "{policy}: reinstall with a token");
        // The restart after it brings the new credential, token still in
        // its URL though used up: accepted (a restart needs no token).
        let (s, v) = register(&hub, "t", &ip, Some(id), "four", Some(&token)).await;
        assert_eq!(
            common::ok_id(s, &v),
            id,
            "{policy}: restart with a used token"
        );
        assert!(pending(&hub).await.is_empty(), "{policy}");
    }
}

#[tokio::test]
async fn the_token_policy_admits_new_tagents_only_with_a_valid_token() {
    let hub = hub_with("token", "[registration.tenants]\nlab = \"open\"\n");
    // None, malformed, unknown: refused, nothing stored.
    let unknown = format!("{}.{}", "0".repeat(16), "0".repeat(32));
    for token in [None, Some("nonsense"), Some(unknown.as_str())] {
        let (s, v) = register(&hub, "t", "127.0.41.1", None, "c", token).await;
        assert_eq!(s, 403, "{v}");
        assert!(message(&v).contains("enrollment token"), "{v}");
    }
    let (s, v) = call(&hub, Method::GET, "/api/v1/tagents", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["items"].as_array().unwrap().len(), 0, "{v}");
    assert!(pending(&hub).await.is_empty(), "token refusals do not wait");
    // A tenant of its own policy.
    let (s, v) = register(&hub, "lab", "127.0.41.9", None, "c", None).await;
    common::ok_id(s, &v);

    // Two uses: two hosts, then it is used up.
    let token = new_token(&hub, "t", 2).await;
    for ip in ["127.0.41.1", "127.0.41.2"] {
        let (s, v) = register(&hub, "t", ip, None, "c", Some(&token)).await;
        common::ok_id(s, &v);
    }
    let (s, v) = register(&hub, "t", "127.0.41.3", None, "c", Some(&token)).await;
    assert_eq!(s, 403, "{v}");
    assert!(message(&v).contains("used up"), "{v}");
    // Another tenant's registration cannot use it.
    let (s, v) = register(&hub, "u", "127.0.41.4", None, "c", Some(&token)).await;
    assert_eq!(s, 403, "{v}");
    assert!(message(&v).contains("not valid for this tenant"), "{v}");
    // The wrong secret for a real id says no more than an unknown id.
    let id = token.split('.').next().unwrap();
    let forged = format!("{id}.{}", "f".repeat(32));
    let (_, v) = register(&hub, "t", "127.0.41.3", None, "c", Some(&forged)).await;
    assert!(message(&v).contains("not valid for this tenant"), "{v}");

    let (s, list) = call(&hub, Method::GET, "/api/v1/enrollment-tokens", None).await;
    assert_eq!(s, 200, "{list}");
    let listed = &list.as_array().unwrap()[0];
    assert_eq!(listed["id"], id);
    assert_eq!(listed["uses"], 2);
    assert_eq!(listed["state"], "used-up");
    assert_eq!(listed["note"], "rack 12");
    assert!(
        !list.to_string().contains(token.split('.').nth(1).unwrap()),
        "the secret is never listed"
    );

    // Revoked: it admits nothing, and stays listed.
    let fresh = new_token(&hub, "t", 10).await;
    let fresh_id = fresh.split('.').next().unwrap();
    let (s, v) = call(
        &hub,
        Method::DELETE,
        &format!("/api/v1/enrollment-tokens/{fresh_id}"),
        None,
    )
    .await;
    assert_eq!((s, v["state"].as_str()), (200, Some("revoked")), "{v}");
    let (s, v) = register(&hub, "t", "127.0.41.5", None, "c", Some(&fresh)).await;
    assert_eq!(s, 403, "{v}");
    assert!(message(&v).contains("revoked"), "{v}");

    // Tokens need an admin token even to be listed; bad requests are 400.
    let (s, _) = call_as(
        &hub,
        Method::GET,
        "/api/v1/enrollment-tokens",
        None,
        READ_TOKEN,
    )
    .await;
    assert_eq!(s, 403);
    for bad in [
        json!({"tenant": "t", "max_uses": 0}),
        json!({"tenant": "t", "ttl_secs": 0}),
        json!({"tenant": "bad tenant"}),
        json!({"tenant": "t", "note": "a\nb"}),
        json!({"tenant": "t", "extra": 1}),
    ] {
        let (s, v) = call(
            &hub,
            Method::POST,
            "/api/v1/enrollment-tokens",
            Some(bad.clone()),
        )
        .await;
        assert!(s == 400 || s == 422, "{bad}: {s} {v}");
    }
    let m = hub.metrics().await;
    assert!(m.value("tagent_hub_registrations_total{outcome=\"token_required\"}") >= 7.0);
    assert_eq!(m.value("tagent_hub_enrollment_token_uses_total"), 2.0);

    // Tokens and their uses are in the store: a restart keeps them.
    let mut hub = hub;
    hub.restart();
    let (s, v) = register(&hub, "t", "127.0.41.6", None, "c", Some(&token)).await;
    assert_eq!(s, 403, "still used up after a restart: {v}");
    let (_, list) = call(&hub, Method::GET, "/api/v1/enrollment-tokens", None).await;
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
}

#[tokio::test]
async fn the_approve_policy_keeps_new_tagents_pending_until_an_operator_decides() {
    let hub = hub_with("approve", "max_pending = 3\n");
    // A first registration that must be authorized brings a credential.
    let body = json!({"tagentId": "", "port": "3939", "ipString": "127.0.42.9",
        "mgmtIp": "127.0.42.9", "name": "h"});
    let (s, v) = hub.register(&body, Some("t")).await;
    assert_eq!(s, 400, "{v}");
    assert!(message(&v).contains("must bring its credential"), "{v}");
    let (s, v) = register(&hub, "t", "127.0.42.1", None, "c", None).await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["Status"], "ERROR");
    // The tagent retries: one entry (its attempts written at most once a
    // minute, so a flood of retries costs no commit each).
    register(&hub, "t", "127.0.42.1", None, "c", None).await;
    let list = pending(&hub).await;
    assert_eq!(list.len(), 1, "{list:?}");
    let p = &list[0];
    assert_eq!(p["kind"], "new");
    assert_eq!(p["attempts"], 1);
    assert_eq!(p["tenant"], "t");
    assert_eq!(p["port"], 3939);
    assert_eq!(p["name"], "h");
    assert_eq!(p["version"], "1.5.4");
    assert_eq!(p["source"], "127.0.0.1");
    assert!(p["approved_by"].is_null());
    let entry = p["id"].as_str().unwrap().to_owned();
    assert!(
        message(&v).contains(&entry),
        "the reply names the entry: {v}"
    );

    // A read token lists, and may not decide.
    let (s, _) = call_as(&hub, Method::GET, "/api/v1/pending", None, READ_TOKEN).await;
    assert_eq!(s, 200);
    let approve = format!("/api/v1/pending/{entry}/approve");
    let (s, _) = call_as(&hub, Method::POST, &approve, None, READ_TOKEN).await;
    assert_eq!(s, 403);

    // Rejected: gone; the next attempt waits again, as new.
    let (s, v) = call(
        &hub,
        Method::DELETE,
        &format!("/api/v1/pending/{entry}"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert!(pending(&hub).await.is_empty());
    let (s, _) = register(&hub, "t", "127.0.42.1", None, "c", None).await;
    assert_eq!(s, 403);
    assert_eq!(pending(&hub).await[0]["attempts"], 1);

    // Another credential for the same ip and port is an entry of its own:
    // approving the one shown admits that credential only.
    register(&hub, "t", "127.0.42.1", None, "other", None).await;
    assert_eq!(pending(&hub).await.len(), 2);
    let (s, _) = call(&hub, Method::POST, &approve, None).await;
    assert_eq!(s, 200);
    let (s, v) = register(&hub, "t", "127.0.42.1", None, "other", None).await;
    assert_eq!(s, 403, "the other credential is not approved: {v}");

    // The approval is durable: a restart between it and the tagent's retry
    // loses nothing.
    let mut hub = hub;
    hub.restart();
    let (s, v) = register(&hub, "t", "127.0.42.1", None, "c", None).await;
    let id = common::ok_id(s, &v);
    let left = pending(&hub).await;
    assert_eq!(left.len(), 1, "only the other credential waits: {left:?}");

    // The list is bounded: past max_pending a new entry is refused.
    for ip in ["127.0.42.2", "127.0.42.3"] {
        let (s, _) = register(&hub, "t", ip, None, "c", None).await;
        assert_eq!(s, 403);
    }
    let (s, v) = register(&hub, "t", "127.0.42.4", None, "c", None).await;
    assert_eq!(s, 503, "{v}");
    assert!(message(&v).contains("pending approval already"), "{v}");
    // A known entry's retry still counts.
    let (s, _) = register(&hub, "t", "127.0.42.2", None, "c", None).await;
    assert_eq!(s, 403);
    // Unknown and malformed ids.
    for path in [
        "/api/v1/pending/0000000000000000/approve",
        "/api/v1/pending/nonsense/approve",
        "/api/v1/pending/..%2F..%2Fetc/approve",
    ] {
        let (s, _) = call(&hub, Method::POST, path, None).await;
        assert_eq!(s, 404, "{path}");
    }
    // The audit log has each decision.
    let (_, audit) = call(&hub, Method::GET, "/api/v1/audit", None).await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"pending-approve"), "{actions:?}");
    assert!(actions.contains(&"pending-reject"), "{actions:?}");
    assert_eq!(record(&hub, id).await["id"], id);
}

#[tokio::test]
async fn an_impostors_registration_waits_apart_and_changes_nothing_of_the_real_tagent() {
    let hub = hub_with("open", "");
    let (id, _) = hub.register_tagent("t", "127.0.43.1", "real").await;
    let before = record(&hub, id).await;
    // From another host, claiming the tagent's ip, with and without its id.
    let from = common::client_from(Some("127.0.43.99".parse().unwrap()));
    for tagent_id in [String::new(), id.to_string()] {
        let body = json!({"tagentId": tagent_id, "port": "3939", "ipString": "127.0.43.1",
            "mgmtIp": "127.0.43.1", "name": "evil", "credential": "evil"});
        let (s, v) = common::register_with(&from, hub.http_addr(), &body, Some("t")).await;
        assert_eq!(s, 403, "{v}");
        assert!(message(&v).contains("pending approval"), "{v}");
    }
    let list = pending(&hub).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(
        list[0]["source"], "127.0.43.99",
        "the operator sees where it came from"
    );
    assert_eq!(list[0]["name"], "evil");
    let after = record(&hub, id).await;
    assert_eq!(before["name"], after["name"]);
    assert_eq!(before["ip"], after["ip"]);
    assert_eq!(
        before["last_registered_ms"], after["last_registered_ms"],
        "{after}"
    );
    // The real tagent still restarts with its credential.
    let (s, v) = register(&hub, "t", "127.0.43.1", Some(id), "real", None).await;
    assert_eq!(common::ok_id(s, &v), id);
}

#[tokio::test]
async fn ctl_creates_lists_and_revokes_tokens_and_approves_pending_registrations() {
    let hub = hub_with("token", "");
    let run = |args: &[&str]| {
        let out = hub.ctl_command().args(args).output().expect("run ctl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "ctl {args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let token = run(&[
        "tokens", "create", "--tenant", "t", "--uses", "1", "--ttl", "1h",
    ])
    .trim()
    .to_owned();
    let (s, v) = register(&hub, "t", "127.0.44.1", None, "c", Some(&token)).await;
    let id = common::ok_id(s, &v);
    let listed = run(&["tokens", "list"]);
    assert!(
        listed.contains("used-up") && listed.contains("1/1"),
        "{listed}"
    );
    let json: Value = serde_json::from_str(&run(&["--json", "tokens", "list"])).unwrap();
    let token_id = json[0]["id"].as_str().unwrap().to_owned();
    run(&["tokens", "revoke", &token_id]);
    let json: Value = serde_json::from_str(&run(&["--json", "tokens", "list"])).unwrap();
    assert_eq!(json[0]["state"], "revoked");

    // A reinstall waits; ctl lists it and approves it.
    let (s, _) = register(&hub, "t", "127.0.44.1", None, "new", None).await;
    assert_eq!(s, 403);
    let listed = run(&["pending", "list"]);
    assert!(
        listed.contains("reinstall") && listed.contains("127.0.44.1:3939"),
        "{listed}"
    );
    let json: Value = serde_json::from_str(&run(&["--json", "pending", "list"])).unwrap();
    let entry = json["pending"][0]["id"].as_str().unwrap().to_owned();
    let said = run(&["pending", "approve", &entry]);
    assert!(said.contains("approved"), "{said}");
    let (s, v) = register(&hub, "t", "127.0.44.1", None, "new", None).await;
    assert_eq!(common::ok_id(s, &v), id);
    // Rejecting an entry that is gone fails with the API's words.
    let out = hub
        .ctl_command()
        .args(["pending", "reject", &entry])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no pending registration"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two hubs of a runner group on one PostgreSQL: a token's uses are spent
/// under the registry's lock, so registrations racing on both hubs never
/// get more tagents in than it admits; an approval given on one hub admits
/// the tagent's retry on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_never_spend_more_uses_of_a_token_than_it_has() {
    let Some((url, schema)) = common::postgres("two_hubs_token_uses") else {
        return;
    };
    let ports: Vec<u16> = (0..2)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .unwrap()
        })
        .collect();
    let mut toml = format!(
        "credential_key = \"{}\"\n\
         [store]\nengine = \"postgres\"\nurl = \"{url}\"\nschema = \"{schema}\"\n\
         [registration]\npolicy = \"token\"\n[registration.tenants]\nops = \"approve\"\n\
         [[runner_group]]\nid = 1\nname = \"dc\"\nnetworks = [\"127.0.0.0/8\"]\n",
        "7c1d".to_owned() + &"0".repeat(59) + "1"
    );
    for (i, port) in ports.iter().enumerate() {
        toml.push_str(&format!(
            "[[runner_group.runner]]\nid = {}\nname = \"hub-{i}\"\nheartbeat = \"127.0.0.1:{port}\"\n",
            i + 1
        ));
    }
    let hubs: Vec<Server> = ports
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
    let token = new_token(&hubs[0], "t", 5).await;
    // 24 hosts at once, half through each hub.
    let mut tasks = Vec::new();
    for i in 0..24 {
        let (http, token) = (hubs[i % 2].http_addr(), token.clone());
        tasks.push(tokio::spawn(async move {
            let url = format!("http://{http}/register?tenant=t&token={token}");
            let ip = format!("127.0.45.{}", i + 1);
            let body = json!({"tagentId": "", "port": "3939", "ipString": ip, "mgmtIp": ip,
                "name": "h", "credential": "c"});
            let resp = common::client()
                .post(url)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            resp.status().as_u16()
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        match t.await.unwrap() {
            200 => accepted += 1,
            403 => {}
            other => panic!("HTTP {other}"),
        }
    }
    assert_eq!(accepted, 5, "a token of 5 uses admitted {accepted}");
    let (_, list) = call(&hubs[1], Method::GET, "/api/v1/enrollment-tokens", None).await;
    assert_eq!(list[0]["uses"], 5, "{list}");
    assert_eq!(list[0]["state"], "used-up");

    // Pending on hub 0, approved on hub 1, accepted at a retry on hub 0.
    let (s, _) = register(&hubs[0], "ops", "127.0.46.1", None, "c", None).await;
    assert_eq!(s, 403);
    let list = pending(&hubs[1]).await;
    assert_eq!(list.len(), 1, "{list:?}");
    let id = list[0]["id"].as_str().unwrap();
    let (s, v) = call(
        &hubs[1],
        Method::POST,
        &format!("/api/v1/pending/{id}/approve"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = register(&hubs[0], "ops", "127.0.46.1", None, "c", None).await;
    common::ok_id(s, &v);
    assert!(pending(&hubs[1]).await.is_empty());
}
