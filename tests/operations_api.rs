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
        let read = common::http_builder().build().unwrap();
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

/// Register a tagent at 127.0.0.1:`port` with `credential`.
async fn register_at(hub: &Server, port: u16, credential: &str) -> u64 {
    let (status, reply) = hub
        .register(
            &json!({"tagentId":"","port":port.to_string(),"ipString":"127.0.0.1",
                    "mgmtIp":"127.0.0.1","name":format!("t{port}"),"osType":"Linux",
                    "credential":credential}),
            Some("demo"),
        )
        .await;
    common::ok_id(status, &reply)
}

/// A port where nothing listens (bound, then closed).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

async fn send(hub: &Server, method: &str, path: &str, body: Value, token: &str) -> (u16, Value) {
    let req = match method {
        "PUT" => client().put(hub.url(path)),
        _ => client().post(hub.url(path)),
    };
    let resp = req.bearer_auth(token).json(&body).send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn audit(hub: &Server, query: &str) -> Value {
    let resp = client()
        .get(hub.url(&format!("/api/v1/audit{query}")))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        200,
        "a read token lists the audit log"
    );
    resp.json().await.unwrap()
}

/// EXAMPLE_CONFIG with `key`'s line given `value`.
fn example_with(changes: &[(&str, &str)], appended: &[&str]) -> String {
    let mut out = String::new();
    for line in fake_tagent::EXAMPLE_CONFIG.lines() {
        match changes
            .iter()
            .find(|(k, _)| line.starts_with(&format!("{k}=")))
        {
            Some((k, v)) => out.push_str(&format!("{k}={v}")),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    for a in appended {
        out.push_str(a);
        out.push('\n');
    }
    out
}

#[tokio::test]
async fn the_whole_config_is_written_then_reloaded() {
    bounded(async {
        let hub = hub();
        let fake = FakeTagent::start(Setup::default().encrypted()).await;
        let id = register(&hub, &fake).await;
        let path = format!("/api/v1/tagents/{id}/config");
        let (_, c) = call(&hub, "GET", &path).await;
        let mut lines: Vec<String> = serde_json::from_value(c["lines"].clone()).unwrap();
        for l in lines.iter_mut() {
            if l == "listen.port=3939" {
                *l = "listen.port=3940".into();
            }
        }
        let (status, r) = send(&hub, "PUT", &path, json!({"lines": lines}), ADMIN_TOKEN).await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(r["result"], "changed");
        assert_eq!(
            r["steps"],
            json!([{"step":"read","result":"ok"},{"step":"upload","result":"ok"},
                   {"step":"reload","result":"ok"}]),
            "the masked credential was read back from the tagent"
        );
        let uploads = fake.uploads();
        assert_eq!(uploads.len(), 1);
        assert_eq!(uploads[0].0, "tagent.conf");
        assert_eq!(uploads[0].1, "$TAGENT_HOME/conf/");
        assert_eq!(
            String::from_utf8(uploads[0].2.clone()).unwrap(),
            example_with(&[("listen.port", "3940")], &[]),
            "the real credential kept, every other line as it was"
        );
        assert_eq!(fake.reloads(), 1);

        // The credential cannot change here: the hub logs in with it.
        let changed: Vec<String> = lines
            .iter()
            .map(|l| {
                if l.starts_with("credential=") {
                    "credential=something-else".to_owned()
                } else {
                    l.clone()
                }
            })
            .collect();
        let (status, r) = send(&hub, "PUT", &path, json!({"lines": changed}), ADMIN_TOKEN).await;
        assert_eq!(status, 400, "{r}");
        assert_eq!(
            r["steps"],
            json!([{"step":"read","result":"bad_config","error":
                "the credential cannot be changed here (the hub must keep knowing it): leave it ****** or use resetcred"}])
        );
        assert_eq!(fake.uploads().len(), 1, "nothing uploaded");

        // A file without a required key is refused before any connection.
        let before = fake.requests().len();
        let (status, r) = send(
            &hub,
            "PUT",
            &path,
            json!({"lines": ["tenant=demo", "credential=x"]}),
            ADMIN_TOKEN,
        )
        .await;
        assert_eq!(status, 400, "{r}");
        assert!(r["error"].as_str().unwrap().contains("listen.port"), "{r}");
        let (status, _) = send(&hub, "PUT", &path, json!({"lines": ["a\nb"]}), ADMIN_TOKEN).await;
        assert_eq!(status, 400);
        let (status, _) = send(&hub, "PUT", &path, json!({"lines": lines}), READ_TOKEN).await;
        assert_eq!(status, 403, "writing needs an admin token");
        assert_eq!(fake.requests().len(), before);

        // A listener with another password: the failed step says so.
        let impostor = FakeTagent::start(Setup::default().hostile(Hostile::WrongPassword)).await;
        let other = register(&hub, &impostor).await;
        let (status, r) = send(
            &hub,
            "PUT",
            &format!("/api/v1/tagents/{other}/config"),
            json!({"lines": lines}),
            ADMIN_TOKEN,
        )
        .await;
        assert_eq!(status, 502, "{r}");
        assert_eq!(r["result"], "failed");
        assert_eq!(r["steps"][0]["step"], "read");
        assert_eq!(r["steps"][0]["result"], "wrong_credential");
        assert!(impostor.uploads().is_empty());
    })
    .await;
}

#[tokio::test]
async fn keys_are_set_on_many_tagents_with_a_result_each() {
    bounded(async {
        let hub = hub();
        let good = FakeTagent::start(Setup::default()).await;
        let windows = FakeTagent::start(Setup::default().windows().encrypted()).await;
        let impostor = FakeTagent::start(Setup::default().hostile(Hostile::WrongPassword)).await;
        let good_id = register(&hub, &good).await;
        let windows_id = register(&hub, &windows).await;
        let impostor_id = register(&hub, &impostor).await;
        let down_id = register_at(&hub, closed_port(), &good.credential()).await;

        let set = json!({"proxy.group":"10.0.0.1:8888,10.0.0.2:8888","log.level":"debug"});
        let (status, r) = send(
            &hub,
            "POST",
            "/api/v1/config",
            json!({"set": set, "filter": {"ip": "127.0.0.1"}}),
            ADMIN_TOKEN,
        )
        .await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(r["matched"], 4);
        assert_eq!(r["summary"], json!({"changed": 2, "failed": 2}), "{r}");
        let result_of = |id: u64| {
            r["results"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["id"] == id)
                .cloned()
                .unwrap()
        };
        let expected = example_with(
            &[("proxy.group", "10.0.0.1:8888,10.0.0.2:8888")],
            &["log.level=debug"],
        );
        for (fake, id) in [(&good, good_id), (&windows, windows_id)] {
            assert_eq!(result_of(id)["result"], "changed");
            let uploads = fake.uploads();
            assert_eq!(uploads.len(), 1);
            assert_eq!(String::from_utf8(uploads[0].2.clone()).unwrap(), expected);
            assert_eq!(fake.reloads(), 1);
        }
        assert_eq!(windows.uploads()[0].1, r"%TAGENT_HOME%\conf\");
        let impostor_r = result_of(impostor_id);
        assert_eq!(impostor_r["result"], "failed");
        assert_eq!(
            impostor_r["steps"][0]["result"], "wrong_credential",
            "{impostor_r}"
        );
        let down = result_of(down_id);
        assert_eq!(down["steps"][0]["step"], "read");
        assert_eq!(down["steps"][0]["result"], "connect_failed", "{down}");
        assert!(impostor.uploads().is_empty());

        // Values on one line, never the credential, and a target named.
        for (body, why) in [
            (json!({"set": {"a": "x\ny"}, "ids": [good_id]}), "newline"),
            (
                json!({"set": {"credential": "x"}, "ids": [good_id]}),
                "credential",
            ),
            (json!({"set": {}, "ids": [good_id]}), "no keys"),
            (json!({"set": {"a": "b"}}), "empty filter"),
        ] {
            let (status, r) = send(&hub, "POST", "/api/v1/config", body, ADMIN_TOKEN).await;
            assert_eq!(status, 400, "{why}: {r}");
        }
        assert_eq!(good.uploads().len(), 1, "nothing refused was sent");

        // Each operation is in the audit log, without the token.
        let page = audit(&hub, "").await;
        let entries = page["entries"].as_array().unwrap();
        let sets: Vec<&Value> = entries
            .iter()
            .filter(|e| e["action"] == "set-config")
            .collect();
        assert_eq!(sets.len(), 4, "{page}");
        let impostor_entry = sets.iter().find(|e| e["tagent"] == impostor_id).unwrap();
        assert_eq!(impostor_entry["result"], "wrong_credential");
        let who = impostor_entry["who"].as_str().unwrap();
        assert!(who.starts_with("token:") && who.len() == 14, "{who}");
        assert!(!page.to_string().contains(ADMIN_TOKEN));
        assert!(
            impostor_entry["detail"]
                .as_str()
                .unwrap()
                .contains("log.level,proxy.group")
        );
        let page = audit(&hub, "?limit=2").await;
        assert_eq!(page["entries"].as_array().unwrap().len(), 2);
        let next = page["next"].as_u64().unwrap();
        let older = audit(&hub, &format!("?before={next}&limit=100")).await;
        assert!(
            older["entries"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e["seq"].as_u64().unwrap() < next)
        );
        assert_eq!(older["entries"].as_array().unwrap().len(), 2);
        assert_eq!(older["next"], Value::Null, "the last page");
        let m = hub.metrics().await;
        assert_eq!(
            m.value(r#"tagent_hub_audit_entries_total{result="written"}"#),
            4.0
        );
    })
    .await;
}

#[tokio::test]
async fn a_reload_without_a_session_goes_to_the_listener() {
    bounded(async {
        let mut hub = hub();
        let fake = FakeTagent::start(Setup::default()).await;
        let id = register(&hub, &fake).await;
        let down = register_at(&hub, closed_port(), &fake.credential()).await;

        let (status, r) = call(&hub, "POST", &format!("/api/v1/tagents/{id}/reload")).await;
        assert_eq!(
            (status, r["result"].as_str()),
            (200, Some("delivered")),
            "{r}"
        );
        assert!(r["message"].as_str().unwrap().contains("listener"), "{r}");
        assert_eq!(fake.reloads(), 1);
        assert_eq!(fake.requests().last().unwrap().kind, "reload");

        let (status, r) = send(
            &hub,
            "POST",
            "/api/v1/commands",
            json!({"command": "reload", "ids": [id, down]}),
            ADMIN_TOKEN,
        )
        .await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(
            r["summary"],
            json!({"delivered": 1, "not-connected": 1}),
            "{r}"
        );
        assert!(
            r["results"][1]["message"]
                .as_str()
                .unwrap()
                .contains("cannot connect"),
            "{r}"
        );
        assert_eq!(fake.reloads(), 2);

        // resetcred needs the session.
        let (status, r) = call(&hub, "POST", &format!("/api/v1/tagents/{id}/resetcred")).await;
        assert_eq!((status, r["result"].as_str()), (409, Some("not-connected")));
        assert_eq!(fake.reloads(), 2);

        let entries = audit(&hub, "").await["entries"].clone();
        let mut reloads: Vec<(u64, &str)> = entries
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "reload")
            .map(|e| (e["tagent"].as_u64().unwrap(), e["result"].as_str().unwrap()))
            .collect();
        reloads.sort_unstable();
        assert_eq!(reloads, [(id, "ok"), (id, "ok"), (down, "connect_failed")]);
        hub.restart();
        let after = audit(&hub, "").await["entries"].clone();
        assert_eq!(after, entries, "the audit log is kept in the store");
    })
    .await;
}

#[tokio::test]
async fn ctl_changes_configs_and_lists_the_audit_log() {
    bounded(async {
        let hub = hub();
        let a = FakeTagent::start(Setup::default()).await;
        let b = FakeTagent::start(Setup::default().hostile(Hostile::WrongPassword)).await;
        let (ida, idb) = (register(&hub, &a).await, register(&hub, &b).await);
        let (ida_s, idb_s) = (ida.to_string(), idb.to_string());

        let (ok, out, err) = ctl(&hub, &["config", &ida_s, "--set", "log.level=debug"]).await;
        assert!(ok, "{out}{err}");
        assert!(out.contains("changed"), "{out}");
        assert_eq!(
            String::from_utf8(a.uploads()[0].2.clone()).unwrap(),
            example_with(&[], &["log.level=debug"])
        );

        let ids = format!("{ida},{idb}");
        let (ok, out, err) = ctl(
            &hub,
            &[
                "config-set",
                "--ids",
                &ids,
                "proxy.group=10.9.9.9:8888",
                "--json",
            ],
        )
        .await;
        assert!(!ok, "a failed tagent fails the command: {out}");
        let reply: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            reply["summary"],
            json!({"changed": 1, "failed": 1}),
            "{err}"
        );
        assert_eq!(a.uploads().len(), 2);

        let file = hub.tmp_dir().join("tagent.conf");
        let text = example_with(&[("credential", "******"), ("tenant", "prod")], &[]);
        std::fs::write(&file, &text).unwrap();
        let (ok, out, err) = ctl(&hub, &["config-put", &ida_s, file.to_str().unwrap()]).await;
        assert!(ok, "{out}{err}");
        assert_eq!(
            String::from_utf8(a.uploads()[2].2.clone()).unwrap(),
            example_with(&[("tenant", "prod")], &[])
        );
        let (ok, out, err) = ctl(&hub, &["config-put", &idb_s, file.to_str().unwrap()]).await;
        assert!(!ok);
        assert!(out.contains("wrong credential"), "{out}");
        assert!(err.contains("was not written"), "{err}");

        let (ok, out, err) = ctl(&hub, &["audit", "--limit", "3"]).await;
        assert!(ok, "{err}");
        assert_eq!(out.lines().count(), 3, "{out}");
        assert!(
            out.lines().next().unwrap().contains("write-config"),
            "{out}"
        );
        assert!(err.contains("--before"), "{err}");
        let (ok, out, _) = ctl(&hub, &["audit", "--json"]).await;
        assert!(ok);
        let page: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(page["entries"].as_array().unwrap().len(), 5, "{page}");
    })
    .await;
}
