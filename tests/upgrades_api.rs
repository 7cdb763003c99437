//! Upgrades over real sockets against fake tagent listeners (SPEC §5.5):
//! a package uploaded, listed, refused when it is not a tar or a duplicate;
//! a rollout where one tagent upgrades (it registers again with the new
//! version), one fails at unpack and one has no package for its os; a
//! failure limit that stops a rollout; an abort; a hub killed in the middle
//! of a rollout, whose history then says what became of the tagent; ctl.

mod common;
mod fake_tagent;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use common::{Options, Server, tar_of};
use fake_tagent::{FakeTagent, Hostile, Setup};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const PREPARE: &str = r#"cd "$TAGENT_BASE" && mkdir -p tmp"#;

async fn bounded<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), f)
        .await
        .expect("the test finished within 120 s")
}

/// The unpack command the hub sends for `tar`.
fn unpack_of(version: &str, tar: &[u8]) -> String {
    let sha = hex::encode(Sha256::digest(tar));
    format!(
        r#"cd "$TAGENT_BASE" && tar xvf "$TAGENT_BASE/tmp/tagent-{version}-{}.tar" bin lib tools mod"#,
        &sha[..12]
    )
}

/// A fake whose prepare passes and whose unpack of `tar` exits `code`.
async fn fake(tar: &[u8], code: i32) -> FakeTagent {
    let mut setup = Setup::default();
    let mut commands = BTreeMap::new();
    commands.insert(PREPARE.to_owned(), (vec![], 0));
    commands.insert(unpack_of("1.6.0", tar), (vec!["x bin/tagent".into()], code));
    setup.commands = commands;
    FakeTagent::start(setup).await
}

async fn register(hub: &Server, port: u16, credential: &str, version: &str, os: &str) -> u64 {
    let (status, reply) = hub
        .register(
            &json!({"tagentId":"","port":port.to_string(),"ipString":"127.0.0.1",
                    "mgmtIp":"127.0.0.1","name":format!("host-{port}"),"osType":os,
                    "osbit":"x86_64","version":version,"credential":credential}),
            Some("demo"),
        )
        .await;
    common::ok_id(status, &reply)
}

async fn call(hub: &Server, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = common::client().request(method, hub.url(path));
    if let Some(b) = body {
        req = req.json(&b);
    }
    common::reply_json(req.send().await.unwrap()).await
}

async fn upload(hub: &Server, query: &str, tar: Vec<u8>) -> (u16, Value) {
    let resp = common::client()
        .post(hub.url(&format!("/api/v1/packages?{query}")))
        .header("content-type", "application/x-tar")
        .body(tar)
        .send()
        .await
        .unwrap();
    common::reply_json(resp).await
}

/// Poll the rollout until it ends.
async fn finished(hub: &Server, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (s, v) = call(hub, Method::GET, &format!("/api/v1/upgrades/{id}"), None).await;
        assert_eq!(s, 200, "{v}");
        if v["state"] != "running" {
            return v;
        }
        assert!(Instant::now() < deadline, "the rollout never ended: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn target(rollout: &Value, id: u64) -> &Value {
    rollout["tagents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tagent"] == id)
        .unwrap_or_else(|| panic!("tagent {id} in {rollout}"))
}

/// Register `port` again with `version` once the fake has been reloaded,
/// as a real tagent does when it restarts with the new files.
fn reregister_after_reload(hub: &Server, fake: &FakeTagent, version: &'static str) {
    let http = hub.http_addr();
    let (port, credential) = (fake.port(), fake.credential());
    let reloads = fake.reloads_counter();
    tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(60);
        while reloads.load(std::sync::atomic::Ordering::SeqCst) == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let body = json!({"tagentId":"","port":port.to_string(),"ipString":"127.0.0.1",
            "mgmtIp":"127.0.0.1","name":format!("host-{port}"),"osType":"Linux",
            "osbit":"x86_64","version":version,"credential":credential});
        common::register(http, &body, Some("demo")).await;
    });
}

#[tokio::test]
async fn a_rollout_upgrades_one_tagent_and_says_why_the_others_failed() {
    bounded(async {
        let hub = Server::start();
        let tar = tar_of("bin/tagent", b"tagent 1.6.0");
        // Packages: refused when not a tar, kept once, refused twice.
        let (s, v) = upload(
            &hub,
            "version=1.6.0&os_type=Linux&arch=default",
            vec![7; 2048],
        )
        .await;
        assert_eq!(s, 400, "{v}");
        let (s, v) = upload(
            &hub,
            "version=1.6.0&os_type=Linux&arch=default",
            tar.clone(),
        )
        .await;
        assert_eq!(s, 201, "{v}");
        let sha = v["sha256"].as_str().unwrap().to_owned();
        assert_eq!(sha, hex::encode(Sha256::digest(&tar)));
        let (s, _) = upload(
            &hub,
            "version=1.6.0&os_type=Linux&arch=default",
            tar.clone(),
        )
        .await;
        assert_eq!(s, 409);
        let (s, _) = upload(
            &hub,
            "version=1.6.0;rm&os_type=Linux&arch=default",
            tar.clone(),
        )
        .await;
        assert_eq!(s, 400);
        let (_, list) = call(&hub, Method::GET, "/api/v1/packages", None).await;
        assert_eq!(list.as_array().unwrap().len(), 1, "{list}");

        let good = fake(&tar, 0).await;
        let broken = fake(&tar, 2).await;
        let windows = FakeTagent::start(Setup::default().windows()).await;
        let a = register(&hub, good.port(), &good.credential(), "1.5.0", "Linux").await;
        let b = register(&hub, broken.port(), &broken.credential(), "1.5.0", "Linux").await;
        let c = register(
            &hub,
            windows.port(),
            &windows.credential(),
            "1.5.0",
            "Windows",
        )
        .await;
        let current = register(&hub, 1, "x", "1.6.0", "Linux").await;
        reregister_after_reload(&hub, &good, "1.6.0");

        let (s, v) = call(
            &hub,
            Method::POST,
            "/api/v1/upgrades",
            Some(json!({"version":"1.6.0","ids":[a,b,c,current],"concurrency":2})),
        )
        .await;
        assert_eq!(s, 202, "{v}");
        let r = finished(&hub, v["id"].as_str().unwrap()).await;
        assert_eq!(r["state"], "done", "{r}");
        assert_eq!(
            (
                r["upgraded"].as_u64(),
                r["failed"].as_u64(),
                r["skipped"].as_u64()
            ),
            (Some(1), Some(2), Some(1)),
            "{r}"
        );

        let ta = target(&r, a);
        assert_eq!(ta["state"], "upgraded", "{ta}");
        let steps: Vec<&str> = ta["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["step"].as_str().unwrap())
            .collect();
        assert_eq!(steps, ["prepare", "upload", "unpack", "reload", "register"]);
        assert_eq!(ta["from_version"], "1.5.0");
        assert_eq!(ta["package"], sha.as_str());
        let uploads = good.uploads();
        assert_eq!(uploads.len(), 1);
        assert_eq!(uploads[0].1, "$TAGENT_BASE/tmp/");
        assert_eq!(uploads[0].2, tar, "the package's bytes, whole");

        let tb = target(&r, b);
        assert_eq!(tb["state"], "failed");
        assert!(
            tb["reason"].as_str().unwrap().starts_with("unpack failed"),
            "{tb}"
        );
        assert_eq!(broken.reloads(), 0, "no reload after a failed unpack");
        let tc = target(&r, c);
        assert_eq!(tc["state"], "failed");
        assert!(
            tc["reason"]
                .as_str()
                .unwrap()
                .contains("no package of version 1.6.0 for Windows/x86_64"),
            "{tc}"
        );
        assert_eq!(windows.logins(), 0, "nothing sent without a package");
        assert_eq!(target(&r, current)["state"], "skipped");

        // In the audit log, and in the list.
        let (_, audit) = call(&hub, Method::GET, "/api/v1/audit", None).await;
        let upgrades: Vec<&Value> = audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "upgrade")
            .collect();
        assert_eq!(upgrades.len(), 2, "{audit}");
        let (_, list) = call(&hub, Method::GET, "/api/v1/upgrades", None).await;
        assert_eq!(list[0]["id"], r["id"]);
        let m = hub.metrics().await;
        assert_eq!(
            m.value("tagent_hub_upgrades_total{result=\"upgraded\"}"),
            1.0
        );

        // Bad requests.
        for bad in [
            json!({"version":"9.9.9","ids":[a]}),
            json!({"version":"1.6.0","ids":[]}),
            json!({"version":"1.6.0","ids":[a],"concurrency":0}),
            json!({"version":"1.6.0"}),
        ] {
            let (s, v) = call(&hub, Method::POST, "/api/v1/upgrades", Some(bad.clone())).await;
            assert_eq!(s, 400, "{bad}: {v}");
        }
        let (s, _) = call(&hub, Method::GET, "/api/v1/upgrades/0000000000000000", None).await;
        assert_eq!(s, 404);
        // Deleted, then it is gone.
        let (s, _) = call(
            &hub,
            Method::DELETE,
            &format!("/api/v1/packages/{sha}"),
            None,
        )
        .await;
        assert_eq!(s, 200);
        let (s, _) = call(
            &hub,
            Method::DELETE,
            &format!("/api/v1/packages/{sha}"),
            None,
        )
        .await;
        assert_eq!(s, 404);
    })
    .await;
}

#[tokio::test]
async fn a_failure_limit_stops_a_rollout_and_an_abort_ends_one() {
    bounded(async {
        let hub = Server::start_with(
            Options::default()
                .config("[listener]\nread_timeout_ms = 1500\nconnect_timeout_ms = 500\n"),
        );
        let tar = tar_of("bin/tagent", b"tagent 1.6.0");
        let (s, _) = upload(
            &hub,
            "version=1.6.0&os_type=Linux&arch=default",
            tar.clone(),
        )
        .await;
        assert_eq!(s, 201);
        // Registered first: a rollout takes its tagents in id order.
        let stall = FakeTagent::start(Setup::default().hostile(Hostile::StallRequest)).await;
        let s_id = register(&hub, stall.port(), &stall.credential(), "1.5.0", "Linux").await;
        let mut ids = Vec::new();
        let mut fakes = Vec::new();
        for _ in 0..4 {
            let f = fake(&tar, 2).await;
            ids.push(register(&hub, f.port(), &f.credential(), "1.5.0", "Linux").await);
            fakes.push(f);
        }
        let (_, v) = call(
            &hub,
            Method::POST,
            "/api/v1/upgrades",
            Some(json!({"version":"1.6.0","ids":ids,"concurrency":1,"max_failures":2})),
        )
        .await;
        let r = finished(&hub, v["id"].as_str().unwrap()).await;
        assert_eq!(r["state"], "stopped", "{r}");
        assert_eq!(r["failed"], 2);
        let not_started = r["tagents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["state"] == "not-started")
            .count();
        assert_eq!(not_started, 2, "{r}");

        // A tagent that stalls holds the rollout; the abort starts no other.
        let (_, v) = call(
            &hub,
            Method::POST,
            "/api/v1/upgrades",
            Some(json!({"version":"1.6.0","ids":[s_id, ids[0], ids[1]],"concurrency":1})),
        )
        .await;
        let id = v["id"].as_str().unwrap().to_owned();
        // Followed as events while it runs (the stalled tagent holds it).
        let events = common::client()
            .get(hub.url(&format!("/api/v1/upgrades/{id}/events")))
            .send()
            .await
            .unwrap();
        assert_eq!(events.status(), 200);
        let (s, v) = call(
            &hub,
            Method::POST,
            &format!("/api/v1/upgrades/{id}/abort"),
            None,
        )
        .await;
        assert_eq!(s, 200, "{v}");
        let r = finished(&hub, &id).await;
        assert_eq!(r["state"], "aborted", "{r}");
        // The stream ends with the rollout: its snapshot, each change, the end.
        let text = events.text().await.unwrap();
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_eq!(names.first(), Some(&"rollout"), "{text}");
        assert_eq!(names.last(), Some(&"end"), "{text}");
        assert!(names.contains(&"tagent"), "{text}");
        assert!(text.contains("\"state\":\"aborted\""), "{text}");
        // An ended one: its history, then the end.
        let text = common::client()
            .get(hub.url(&format!("/api/v1/upgrades/{id}/events")))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_eq!(names, ["rollout", "end"], "{text}");
        assert_eq!(target(&r, s_id)["state"], "failed", "{r}");
        assert_eq!(target(&r, ids[0])["state"], "not-started");
        let (s, _) = call(
            &hub,
            Method::POST,
            &format!("/api/v1/upgrades/{id}/abort"),
            None,
        )
        .await;
        assert_eq!(s, 409, "an ended rollout cannot be aborted");
    })
    .await;
}

#[tokio::test]
async fn a_hub_killed_mid_rollout_keeps_its_history_and_says_what_became_of_the_tagent() {
    bounded(async {
        let mut hub = Server::start();
        let tar = tar_of("bin/tagent", b"tagent 1.6.0");
        upload(
            &hub,
            "version=1.6.0&os_type=Linux&arch=default",
            tar.clone(),
        )
        .await;
        // Reloaded, it never registers again: the rollout waits for it.
        let f = fake(&tar, 0).await;
        let id = register(&hub, f.port(), &f.credential(), "1.5.0", "Linux").await;
        let (_, v) = call(
            &hub,
            Method::POST,
            "/api/v1/upgrades",
            Some(json!({"version":"1.6.0","ids":[id],"register_timeout_secs":600})),
        )
        .await;
        let rollout = v["id"].as_str().unwrap().to_owned();
        let deadline = Instant::now() + Duration::from_secs(30);
        while f.reloads() == 0 {
            assert!(Instant::now() < deadline, "never reloaded");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The reload step is in the store before the kill.
        tokio::time::sleep(Duration::from_millis(300)).await;
        hub.kill9();
        hub.restart();
        let (s, r) = call(
            &hub,
            Method::GET,
            &format!("/api/v1/upgrades/{rollout}"),
            None,
        )
        .await;
        assert_eq!(s, 200, "{r}");
        assert_eq!(r["state"], "interrupted", "{r}");
        let t = target(&r, id);
        assert_eq!(t["state"], "interrupted", "{t}");
        let reason = t["reason"].as_str().unwrap();
        assert!(
            reason.contains("last step: reload") && reason.contains("\"1.5.0\""),
            "{reason}"
        );
        let steps: Vec<&str> = t["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["step"].as_str().unwrap())
            .collect();
        assert_eq!(steps, ["prepare", "upload", "unpack", "reload"]);
    })
    .await;
}

#[tokio::test]
async fn ctl_uploads_a_package_and_rolls_it_out() {
    bounded(async {
        let hub = Server::start();
        let tar = tar_of("bin/tagent", b"tagent 1.6.0");
        let file = hub.tmp_dir().join("tagent-1.6.0.tar");
        std::fs::write(&file, &tar).unwrap();
        let f = fake(&tar, 0).await;
        let id = register(&hub, f.port(), &f.credential(), "1.5.0", "Linux").await;
        reregister_after_reload(&hub, &f, "1.6.0");
        let run = |args: Vec<String>| {
            let mut cmd = hub.ctl_command();
            cmd.args(&args);
            async move {
                tokio::task::spawn_blocking(move || cmd.output().unwrap())
                    .await
                    .unwrap()
            }
        };
        let out = run(vec![
            "packages".into(),
            "upload".into(),
            file.display().to_string(),
            "--version".into(),
            "1.6.0".into(),
            "--os-type".into(),
            "Linux".into(),
        ])
        .await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listed = run(vec!["packages".into(), "list".into()]).await;
        assert!(String::from_utf8_lossy(&listed.stdout).contains("1.6.0"));
        let out = run(vec![
            "upgrade".into(),
            "start".into(),
            "--to".into(),
            "1.6.0".into(),
            "--ids".into(),
            id.to_string(),
            "--wait".into(),
        ])
        .await;
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("upgraded") && text.contains("register:ok"),
            "{text}"
        );
        let out = run(vec!["--json".into(), "upgrade".into(), "list".into()]).await;
        let list: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(list[0]["upgraded"], 1);
    })
    .await;
}
