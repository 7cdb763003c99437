//! The operations over a tagent's listener from the admin API (SPEC §5.5),
//! a real hub against fake tagents on loopback: reachability, the config
//! file (credential masked), the log files (listed, streamed), admin scope,
//! one operation per tagent, and hostile listeners giving clear, counted
//! errors without a hang.

mod common;
mod fake_tagent;

use std::future::Future;
use std::time::Duration;

use common::{ADMIN_TOKEN, Server, client};
use fake_tagent::{FakeTagent, Hostile, Setup};
use serde_json::{Value, json};

const READ_TOKEN: &str = "read-only-token-0123456789";

fn hub() -> Server {
    Server::with_config(&format!(
        r#"
[[admin_token]]
token = "{READ_TOKEN}"
scope = "read"
[[admin_token]]
token = "{ADMIN_TOKEN}"

[listener]
read_timeout_ms = 1000
operation_timeout_secs = 20
max_download_bytes = 300000
"#
    ))
}

async fn bounded<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), f)
        .await
        .expect("the test finished within 120 s")
}

/// Register a tagent whose listener is `fake` (127.0.0.1, its port).
async fn register(hub: &Server, fake: &FakeTagent) -> u64 {
    let (status, reply) = hub
        .register(
            &json!({"tagentId":"","port":fake.port().to_string(),"ipString":"127.0.0.1",
                    "mgmtIp":"127.0.0.1","name":"fake","osType":"Linux",
                    "credential":fake.credential()}),
            Some("demo"),
        )
        .await;
    common::ok_id(status, &reply)
}

async fn call(hub: &Server, method: &str, path: &str) -> (u16, Value) {
    let req = match method {
        "POST" => client().post(hub.url(path)),
        _ => client().get(hub.url(path)),
    };
    let resp = req.send().await.expect("the hub answers");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn reachability_is_checked_and_shown_on_the_tagent() {
    bounded(async {
        let hub = hub();
        let fake = FakeTagent::start(Setup::default().encrypted()).await;
        let id = register(&hub, &fake).await;
        let (_, before) = call(&hub, "GET", &format!("/api/v1/tagents/{id}")).await;
        assert_eq!(before["reachability"], Value::Null);

        let (status, r) = call(&hub, "POST", &format!("/api/v1/tagents/{id}/reachability")).await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(r["reachable"], true, "{r}");
        assert_eq!(r["result"], "ok");
        assert_eq!(r["ostype"], "Linux");
        assert_eq!(r["protocol"], "Tagent1.1s");
        assert!(r["checked_ms"].as_u64().unwrap() > 0);
        assert_eq!(fake.requests()[0].kind, "echo");

        let (_, t) = call(&hub, "GET", &format!("/api/v1/tagents/{id}")).await;
        assert_eq!(t["reachability"], r, "the view shows the last check");

        let (status, _) = call(&hub, "POST", "/api/v1/tagents/999999/reachability").await;
        assert_eq!(status, 404);
        let m = hub.metrics().await;
        assert_eq!(
            m.value(r#"tagent_hub_listener_operations_total{kind="echo",result="ok"}"#),
            1.0
        );
        assert!(fake.wait_all_closed().await);
        assert_eq!(
            hub.metrics().await.value("tagent_hub_listener_connections"),
            0.0
        );
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_or_impostor_listener_is_a_failed_check() {
    bounded(async {
        let hub = hub();
        let impostor = FakeTagent::start(Setup::default().hostile(Hostile::WrongPassword)).await;
        let id = register(&hub, &impostor).await;
        let (status, r) = call(&hub, "POST", &format!("/api/v1/tagents/{id}/reachability")).await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(r["reachable"], false);
        assert_eq!(r["result"], "wrong_credential");
        assert!(
            r["message"].as_str().unwrap().contains("wrong credential"),
            "{r}"
        );
        assert!(!r.to_string().contains(fake_tagent::EXAMPLE_PASSWORD));
        let (_, t) = call(&hub, "GET", &format!("/api/v1/tagents/{id}")).await;
        assert_eq!(t["reachability"]["result"], "wrong_credential");
        let m = hub.metrics().await;
        assert_eq!(
            m.value(
                r#"tagent_hub_listener_operations_total{kind="echo",result="wrong_credential"}"#
            ),
            1.0
        );
        assert!(!hub.logs().contains(fake_tagent::EXAMPLE_PASSWORD));
    })
    .await;
}

#[tokio::test]
async fn the_config_file_comes_with_its_credential_masked() {
    bounded(async {
        let hub = hub();
        for setup in [Setup::default(), Setup::default().windows().encrypted()] {
            let windows = setup.ostype == "windows";
            let fake = FakeTagent::start(setup).await;
            let id = register(&hub, &fake).await;
            let (status, c) = call(&hub, "GET", &format!("/api/v1/tagents/{id}/config")).await;
            assert_eq!(status, 200, "{c}");
            let lines: Vec<&str> = c["lines"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_str().unwrap())
                .collect();
            let expected: Vec<String> = fake_tagent::EXAMPLE_CONFIG
                .lines()
                .map(|l| {
                    if l.starts_with("credential=") {
                        "credential=******".to_owned()
                    } else {
                        l.to_owned()
                    }
                })
                .collect();
            assert_eq!(lines, expected, "every line kept, in order, comments too");
            assert!(!c.to_string().contains("ENCRYPTED"));
            assert_eq!(c["missing_keys"], json!([]));
            let command = &fake.requests()[0].args[0];
            if windows {
                assert_eq!(command, r"type %TAGENT_HOME%\conf\tagent.conf");
            } else {
                assert_eq!(command, "cat $TAGENT_HOME/conf/tagent.conf");
            }
        }
    })
    .await;
}

#[tokio::test]
async fn logs_are_listed_and_streamed_by_plain_name_only() {
    bounded(async {
        let hub = hub();
        let fake = FakeTagent::start(Setup::default()).await;
        let id = register(&hub, &fake).await;
        let (status, l) = call(&hub, "GET", &format!("/api/v1/tagents/{id}/logs")).await;
        assert_eq!(status, 200, "{l}");
        assert_eq!(l["logs"], json!(["tagent.log", "tagent.log.1"]));

        let resp = client()
            .get(hub.url(&format!("/api/v1/tagents/{id}/logs/tagent.log.1")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(
            resp.headers()["content-type"].to_str().unwrap(),
            "application/octet-stream"
        );
        assert_eq!(resp.bytes().await.unwrap().to_vec(), vec![b'x'; 100_000]);
        let download = fake.requests().pop().unwrap();
        assert_eq!(download.kind, "download");
        assert_eq!(download.args, ["$TAGENT_HOME/logs/tagent.log.1", "0"]);

        let (status, e) = call(&hub, "GET", &format!("/api/v1/tagents/{id}/logs/other.log")).await;
        assert_eq!(status, 404, "{e}");
        let before = fake.requests().len();
        // (A bare `..` never gets here: URLs normalise it away.)
        for bad in ["%2E%2E%2Fetc%2Fpasswd", "a%5Cb.log", "%24HOME", "a%00b"] {
            let (status, e) = call(&hub, "GET", &format!("/api/v1/tagents/{id}/logs/{bad}")).await;
            assert_eq!(status, 400, "{bad}: {e}");
        }
        assert_eq!(
            fake.requests().len(),
            before,
            "a bad name never reaches the tagent"
        );
        let m = hub.metrics().await;
        assert_eq!(
            m.value(r#"tagent_hub_listener_operations_total{kind="download",result="ok"}"#),
            1.0
        );
    })
    .await;
}

#[tokio::test]
async fn operations_need_an_admin_token_even_to_read() {
    bounded(async {
        let hub = hub();
        let fake = FakeTagent::start(Setup::default()).await;
        let id = register(&hub, &fake).await;
        let read = reqwest::Client::new();
        for (method, path) in [
            ("GET", format!("/api/v1/tagents/{id}/config")),
            ("GET", format!("/api/v1/tagents/{id}/logs")),
            ("GET", format!("/api/v1/tagents/{id}/logs/tagent.log")),
            ("POST", format!("/api/v1/tagents/{id}/reachability")),
        ] {
            let req = match method {
                "POST" => read.post(hub.url(&path)),
                _ => read.get(hub.url(&path)),
            };
            let resp = req.bearer_auth(READ_TOKEN).send().await.unwrap();
            assert_eq!(resp.status().as_u16(), 403, "{method} {path}");
        }
        // The read token still reads the tagent itself.
        let resp = read
            .get(hub.url(&format!("/api/v1/tagents/{id}")))
            .bearer_auth(READ_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(fake.accepted(), 0, "nothing reached the tagent");
    })
    .await;
}

#[tokio::test]
async fn hostile_listeners_give_clear_counted_errors() {
    bounded(async {
        let hub = hub();
        for (hostile, status, label, text) in [
            (
                Hostile::GarbageGreeting,
                502,
                "not_a_tagent",
                "not a tagent",
            ),
            (
                Hostile::WrongPassword,
                502,
                "wrong_credential",
                "wrong credential",
            ),
            (Hostile::StallRequest, 504, "timeout", "did not answer"),
            (Hostile::StallGreeting, 504, "timeout", "did not answer"),
            (
                Hostile::CloseEarly,
                502,
                "closed_early",
                "closed the connection",
            ),
            (Hostile::EndlessOutput, 502, "too_large", "more than"),
        ] {
            let fake = FakeTagent::start(Setup::default().hostile(hostile)).await;
            let id = register(&hub, &fake).await;
            let (got, e) = call(&hub, "GET", &format!("/api/v1/tagents/{id}/config")).await;
            assert_eq!(got, status, "{hostile:?}: {e}");
            assert!(
                e["error"].as_str().unwrap().contains(text),
                "{hostile:?}: {e}"
            );
            let m = hub.metrics().await;
            let series = format!(
                r#"tagent_hub_listener_operations_total{{kind="execmd",result="{label}"}}"#
            );
            assert!(m.value(&series) >= 1.0, "{hostile:?}: {series} counted");
            assert!(fake.wait_all_closed().await, "{hostile:?}: closed");
        }
        // An endless log download is cut at max_download_bytes.
        let fake = FakeTagent::start(Setup::default().hostile(Hostile::EndlessDownload)).await;
        let id = register(&hub, &fake).await;
        let resp = client()
            .get(hub.url(&format!("/api/v1/tagents/{id}/logs/tagent.log")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "the head came");
        // Either the body is cut short or it is aborted (an error here).
        if let Ok(body) = resp.bytes().await {
            assert!(body.len() <= 300_000, "cut short: {}", body.len());
        }
        assert!(fake.wait_all_closed().await);
        let m = hub.metrics().await;
        assert_eq!(
            m.value(r#"tagent_hub_listener_operations_total{kind="download",result="too_large"}"#),
            1.0
        );
        assert_eq!(
            hub.metrics().await.value("tagent_hub_listener_connections"),
            0.0
        );
    })
    .await;
}

#[tokio::test]
async fn one_operation_at_a_time_per_tagent() {
    bounded(async {
        let hub = hub();
        let fake = FakeTagent::start(Setup::default().hostile(Hostile::StallRequest)).await;
        let id = register(&hub, &fake).await;
        let url = hub.url(&format!("/api/v1/tagents/{id}/config"));
        let first = tokio::spawn(async move { client().get(url).send().await.unwrap().status() });
        for _ in 0..200 {
            if fake.logins() > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(fake.logins(), 1, "the first operation is under way");
        let (status, e) = call(&hub, "POST", &format!("/api/v1/tagents/{id}/reachability")).await;
        assert_eq!(status, 409, "{e}");
        assert!(
            e["error"].as_str().unwrap().contains("another operation"),
            "{e}"
        );
        assert_eq!(first.await.unwrap().as_u16(), 504);
        let m = hub.metrics().await;
        assert_eq!(
            m.value(r#"tagent_hub_listener_operations_total{kind="echo",result="busy"}"#),
            1.0
        );
    })
    .await;
}

/// `tagent-hub ctl` with the admin token; (success, stdout, stderr).
async fn ctl(hub: &Server, args: &[&str]) -> (bool, String, String) {
    let mut cmd = tokio::process::Command::from(hub.ctl_command());
    let out = cmd.args(args).output().await.expect("run tagent-hub ctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn ctl_runs_the_operations() {
    bounded(async {
        let hub = hub();
        let fake = FakeTagent::start(Setup::default()).await;
        let id = register(&hub, &fake).await.to_string();

        let (ok, out, err) = ctl(&hub, &["reachability", &id]).await;
        assert!(ok, "{err}");
        assert!(out.contains("reachable (Linux UTF-8, Tagent1.1)"), "{out}");
        let (ok, out, err) = ctl(&hub, &["show", &id]).await;
        assert!(ok, "{err}");
        assert!(
            out.contains("listener") && out.contains("ok (Tagent1.1)"),
            "{out}"
        );

        let (ok, out, err) = ctl(&hub, &["config", &id]).await;
        assert!(ok, "{err}");
        assert!(out.contains("credential=******\n"), "{out}");
        assert!(
            out.contains("proxy.group=127.0.0.1:8888,127.0.0.2:8888\n"),
            "{out}"
        );
        assert!(!out.contains("ENCRYPTED"));

        let (ok, out, err) = ctl(&hub, &["logs", &id, "--json"]).await;
        assert!(ok, "{err}");
        let list: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(list["logs"], json!(["tagent.log", "tagent.log.1"]));

        let (ok, out, err) = ctl(&hub, &["logs", &id, "tagent.log"]).await;
        assert!(ok, "{err}");
        assert_eq!(out, "line one\nline two\n");
        let file = hub.tmp_dir().join("saved.log");
        let (ok, _, err) = ctl(
            &hub,
            &[
                "logs",
                &id,
                "tagent.log.1",
                "--output",
                file.to_str().unwrap(),
            ],
        )
        .await;
        assert!(ok, "{err}");
        assert_eq!(std::fs::read(&file).unwrap(), vec![b'x'; 100_000]);

        let (ok, _, err) = ctl(&hub, &["logs", &id, "missing.log"]).await;
        assert!(!ok);
        assert!(err.contains("lists no log file"), "{err}");

        // An unreachable tagent fails the command, with the reason.
        drop(fake);
        let (ok, out, _) = ctl(&hub, &["reachability", &id]).await;
        assert!(!ok);
        assert!(out.contains("not reachable: connect_failed"), "{out}");
    })
    .await;
}
