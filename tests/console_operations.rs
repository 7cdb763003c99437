//! The console's operations over a tagent's listener, over real sockets
//! against a fake tagent (no browser: forms as a browser posts them): the
//! config file edited and written back (credential kept masked, a refused
//! file shown with why), the audit log page, and an operator allowing a
//! reinstall.

mod common;
mod fake_tagent;

use std::future::Future;
use std::time::Duration;

use common::{ADMIN_TOKEN, Server, tar_of};
use fake_tagent::{EXAMPLE_CONFIG, FakeTagent, Setup};
use serde_json::json;

const FORM: &str = "application/x-www-form-urlencoded";

async fn bounded<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), f)
        .await
        .expect("the test finished within 120 s")
}

fn http() -> reqwest::Client {
    common::http_builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signed in as admin: the cookie and the session's CSRF token.
async fn sign_in(http: &reqwest::Client, hub: &Server) -> (String, String) {
    let resp = http
        .post(hub.url("/ui/signin"))
        .header("content-type", FORM)
        .body(serde_urlencoded::to_string([("token", ADMIN_TOKEN)]).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let page = get(http, hub, &cookie, "/ui/").await.1;
    let at = page.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    (cookie, page[at..at + 64].to_owned())
}

async fn get(http: &reqwest::Client, hub: &Server, cookie: &str, path: &str) -> (u16, String) {
    let resp = http
        .get(hub.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn post(
    http: &reqwest::Client,
    hub: &Server,
    cookie: &str,
    path: &str,
    fields: &[(&str, &str)],
) -> (u16, String) {
    let resp = http
        .post(hub.url(path))
        .header("cookie", cookie)
        .header("content-type", FORM)
        .body(serde_urlencoded::to_string(fields).unwrap())
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// The textarea's content, unescaped as a browser would.
fn textarea(page: &str) -> String {
    let start = page.find("<textarea").expect("a textarea");
    let start = start + page[start..].find('>').unwrap() + 1;
    let end = start + page[start..].find("</textarea>").unwrap();
    page[start..end]
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

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

#[tokio::test]
async fn an_operator_edits_a_config_in_the_console_and_sees_it_audited() {
    bounded(async {
        let hub = Server::start();
        let fake = FakeTagent::start(Setup::default()).await;
        let id = register(&hub, &fake).await;
        let http = http();
        let (cookie, csrf) = sign_in(&http, &hub).await;
        let path = format!("/ui/tagents/{id}/config");

        let (status, page) = get(&http, &hub, &cookie, &path).await;
        assert_eq!(status, 200, "{page}");
        let text = textarea(&page);
        assert!(text.contains("credential=******"), "masked: {text}");
        assert!(!text.contains("03b4236"), "never the credential: {text}");
        assert!(text.contains("# runners, comma separated"), "{text}");

        // One value changed in the form, the masked credential sent back.
        let edited = text.replace("127.0.0.2:8888", "127.0.0.3:8888");
        let (status, page) = post(
            &http,
            &hub,
            &cookie,
            &path,
            &[("csrf", &csrf), ("file", &edited.replace('\n', "\r\n"))],
        )
        .await;
        assert_eq!(status, 200, "{page}");
        assert!(page.contains("changed: uploaded and reloaded"), "{page}");
        assert_eq!(
            page.matches("<td class=\"ok\">ok</td>").count(),
            3,
            "{page}"
        );
        let uploads = fake.uploads();
        assert_eq!(uploads.len(), 1);
        let sent = String::from_utf8(uploads[0].2.clone()).unwrap();
        let want = EXAMPLE_CONFIG.replace("127.0.0.2:8888", "127.0.0.3:8888");
        assert_eq!(sent.trim_end(), want.trim_end(), "the real credential kept");
        assert_eq!(fake.reloads(), 1);

        // A file without a required key: refused before any upload, the
        // reason and the text kept on the page.
        let broken: String = edited
            .lines()
            .filter(|l| !l.starts_with("listen.port"))
            .collect::<Vec<_>>()
            .join("\n");
        let (status, page) = post(
            &http,
            &hub,
            &cookie,
            &path,
            &[("csrf", &csrf), ("file", &broken)],
        )
        .await;
        assert_eq!(status, 400, "{page}");
        assert!(page.contains("listen.port"), "{page}");
        assert!(textarea(&page).contains("127.0.0.3:8888"), "{page}");
        assert_eq!(fake.uploads().len(), 1, "nothing sent");

        // A lone carriage return is refused as the API refuses it.
        let (status, page) = post(
            &http,
            &hub,
            &cookie,
            &path,
            &[
                ("csrf", &csrf),
                ("file", &edited.replace("listen.port", "x=\rlisten.port")),
            ],
        )
        .await;
        assert_eq!(status, 400, "{page}");
        assert!(page.contains("carriage return"), "{page}");
        assert_eq!(fake.uploads().len(), 1, "nothing sent");

        // Without the CSRF token nothing happens.
        let (status, _) = post(&http, &hub, &cookie, &path, &[("file", &edited)]).await;
        assert_eq!(status, 403);
        assert_eq!(fake.uploads().len(), 1);

        // The audit page lists the reads and the write, newest first.
        let (status, page) = get(&http, &hub, &cookie, "/ui/audit").await;
        assert_eq!(status, 200, "{page}");
        let write = page.find("write-config").expect("the write audited");
        let read = page.find("read-config").expect("the read audited");
        assert!(write < read, "newest first: {page}");
        assert!(page.contains("bad_config"), "the refused write: {page}");
        assert!(!page.contains(ADMIN_TOKEN), "never the token");
    })
    .await;
}

#[tokio::test]
async fn an_operator_allows_a_reinstall_from_the_console() {
    bounded(async {
        let hub = Server::start();
        let (id, _) = hub.register_tagent("demo", "127.0.31.1", "first").await;
        let again = json!({"tagentId":"","port":"3939","ipString":"127.0.31.1",
                           "mgmtIp":"127.0.31.1","name":"h","credential":"second"});
        let (status, _) = hub.register(&again, Some("demo")).await;
        assert_eq!(status, 403, "a new credential needs an approval");

        let http = http();
        let (cookie, csrf) = sign_in(&http, &hub).await;
        let action = format!("/ui/tagents/{id}/action/allow-reinstall");
        let (status, page) = post(
            &http,
            &hub,
            &cookie,
            &action,
            &[("csrf", &csrf), ("minutes", "abc")],
        )
        .await;
        assert_eq!(status, 200);
        assert!(page.contains("is not a number of minutes"), "{page}");
        let (_, page) = post(
            &http,
            &hub,
            &cookie,
            &action,
            &[("csrf", &csrf), ("minutes", "99999")],
        )
        .await;
        assert!(page.contains("between 1 and 10080"), "{page}");
        let (status, _) = hub.register(&again, Some("demo")).await;
        assert_eq!(status, 403, "still refused after refused approvals");

        let (_, page) = post(
            &http,
            &hub,
            &cookie,
            &action,
            &[("csrf", &csrf), ("minutes", "5")],
        )
        .await;
        assert!(page.contains("for 5 minutes"), "{page}");
        let (status, reply) = hub.register(&again, Some("demo")).await;
        assert_eq!(
            common::ok_id(status, &reply),
            id,
            "the reinstall is the same tagent"
        );
    })
    .await;
}

#[tokio::test]
async fn a_batch_sets_a_config_key_on_every_tagent_of_a_filter() {
    bounded(async {
        let hub = Server::start();
        let up = FakeTagent::start(Setup::default()).await;
        let down = FakeTagent::start(Setup::default()).await;
        let (up_id, down_id) = (register(&hub, &up).await, register(&hub, &down).await);
        let down_port = down.port();
        drop(down);
        let http = http();
        let (cookie, csrf) = sign_in(&http, &hub).await;
        let fields = |expect: &'static str| {
            vec![
                ("csrf", csrf.clone()),
                ("command", "set-config".to_owned()),
                ("set_key", "log.level".to_owned()),
                ("set_value", "DEBUG".to_owned()),
                ("target", "filter".to_owned()),
                ("filter", "ip=127.0.0.1/32".to_owned()),
                ("expect", expect.to_owned()),
            ]
        };
        let send = |v: Vec<(&'static str, String)>| {
            let v: Vec<(&str, &str)> = v.iter().map(|(k, x)| (*k, x.as_str())).collect();
            let body = serde_urlencoded::to_string(&v).unwrap();
            http.post(hub.url("/ui/batch"))
                .header("cookie", &cookie)
                .header("content-type", FORM)
                .body(body)
                .send()
        };
        // A stale count asks again, carrying the key and value.
        let stale = send(fields("5")).await.unwrap();
        assert_eq!(stale.status(), 409);
        let page = stale.text().await.unwrap();
        assert!(page.contains("matches 2 now"), "{page}");
        assert!(
            page.contains("name=\"set_key\" value=\"log.level\""),
            "{page}"
        );
        assert!(
            up.uploads().is_empty(),
            "nothing sent before the count is confirmed"
        );

        let done = send(fields("2")).await.unwrap();
        assert_eq!(done.status(), 200);
        let page = done.text().await.unwrap();
        assert!(
            page.contains("set-config log.level=DEBUG: 2 tagents"),
            "{page}"
        );
        assert!(
            page.contains("changed 1") && page.contains("failed 1"),
            "{page}"
        );
        let sent = String::from_utf8(up.uploads()[0].2.clone()).unwrap();
        assert!(sent.ends_with("log.level=DEBUG\n"), "appended: {sent}");
        assert!(
            sent.contains("# runners, comma separated"),
            "the rest kept: {sent}"
        );

        let at = page.find("/ui/batch/").expect("a CSV link");
        let link = &page[at..at + page[at..].find('"').unwrap()];
        let csv = get(&http, &hub, &cookie, link).await.1;
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "id,command,result,message");
        assert!(
            lines.contains(&format!("{up_id},set-config log.level=DEBUG,changed,").as_str()),
            "{csv}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("{down_id},set-config log.level=DEBUG,failed,"))),
            "{csv} (tagent on port {down_port} was down)"
        );
    })
    .await;
}

/// The enrollment page: a pending registration approved from its form
/// (the tagent's retry is then accepted), a token created (its text shown
/// once) and revoked, a form without the CSRF token refused.
#[tokio::test]
async fn an_operator_approves_a_pending_registration_and_manages_tokens_in_the_console() {
    bounded(async {
        let hub = Server::start_with(
            common::Options::default().config("[registration]\npolicy = \"approve\"\n"),
        );
        let body = json!({"tagentId":"","port":"3939","ipString":"127.0.47.1",
            "mgmtIp":"127.0.47.1","name":"waiting-host","credential":"c"});
        let (status, _) = hub.register(&body, Some("demo")).await;
        assert_eq!(status, 403);
        let http = http();
        let (cookie, csrf) = sign_in(&http, &hub).await;
        let (status, overview) = get(&http, &hub, &cookie, "/ui/").await;
        assert_eq!(status, 200);
        assert!(overview.contains("1 waiting for an operator"), "{overview}");
        let (status, page) = get(&http, &hub, &cookie, "/ui/enrollment").await;
        assert_eq!(status, 200);
        assert!(
            page.contains("waiting-host") && page.contains("127.0.47.1:3939"),
            "{page}"
        );
        let at = page.find("id=\"pending-").expect("a pending row") + 12;
        let id = page[at..at + 16].to_owned();

        let approve = format!("/ui/pending/{id}/approve");
        let (status, _) = post(&http, &hub, &cookie, &approve, &[]).await;
        assert_eq!(status, 403, "no CSRF token, no change");
        let (status, _) = post(&http, &hub, &cookie, &approve, &[("csrf", &csrf)]).await;
        assert_eq!(status, 303);
        let (status, reply) = hub.register(&body, Some("demo")).await;
        common::ok_id(status, &reply);
        let (_, page) = get(&http, &hub, &cookie, "/ui/enrollment").await;
        assert!(page.contains("Nothing waits."), "{page}");

        // A token: created from the form, its text shown once.
        let (status, page) = post(
            &http,
            &hub,
            &cookie,
            "/ui/tokens",
            &[
                ("csrf", &csrf),
                ("tenant", "demo"),
                ("uses", "3"),
                ("hours", "2"),
                ("note", "lab"),
            ],
        )
        .await;
        assert_eq!(status, 201, "{page}");
        let needle = "id=\"created-token\">";
        let at = page.find(needle).expect("the token shown") + needle.len();
        let token = page[at..at + 49].to_owned();
        let token_id = &token[..16];
        assert!(page.contains(&format!("id=\"token-{token_id}\"")), "{page}");
        let (_, again) = get(&http, &hub, &cookie, "/ui/enrollment").await;
        assert!(
            !again.contains(&token[17..]),
            "the secret is shown once only"
        );
        // Refused input is shown with the API's words.
        let (status, page) = post(
            &http,
            &hub,
            &cookie,
            "/ui/tokens",
            &[("csrf", &csrf), ("tenant", "demo"), ("uses", "0")],
        )
        .await;
        assert_eq!(status, 400);
        assert!(page.contains("max_uses must be between"), "{page}");
        let revoke = format!("/ui/tokens/{token_id}/revoke");
        let (status, _) = post(&http, &hub, &cookie, &revoke, &[("csrf", &csrf)]).await;
        assert_eq!(status, 303);
        let (_, page) = get(&http, &hub, &cookie, "/ui/enrollment").await;
        assert!(page.contains("revoked"), "{page}");
    })
    .await;
}

/// The Upgrades page: a package listed, a rollout started from the form
/// on a filter, its page following it to the end (refreshing itself while
/// it runs), the package deleted.
#[tokio::test]
async fn an_operator_rolls_out_an_upgrade_from_the_console() {
    bounded(async {
        let hub = Server::start();
        let tar = tar_of("bin/tagent", b"tagent 1.6.0");
        let http = http();
        let (cookie, csrf) = sign_in(&http, &hub).await;
        // Uploaded from the page's file form, as a browser sends it.
        let multipart = |csrf: &str| {
            let mut body = Vec::new();
            for (k, v) in [("version", "1.6.0"), ("os_type", "Linux"), ("arch", "default")] {
                body.extend_from_slice(
                    format!("--XyZ\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                        .as_bytes(),
                );
            }
            body.extend_from_slice(
                b"--XyZ\r\nContent-Disposition: form-data; name=\"package\"; filename=\"t.tar\"\r\nContent-Type: application/x-tar\r\n\r\n",
            );
            body.extend_from_slice(&tar);
            body.extend_from_slice(b"\r\n--XyZ--\r\n");
            http.post(hub.url(&format!("/ui/packages?csrf={csrf}")))
                .header("cookie", &cookie)
                .header("content-type", "multipart/form-data; boundary=XyZ")
                .body(body)
        };
        let resp = multipart("0".repeat(64).as_str()).send().await.unwrap();
        assert_eq!(resp.status(), 403, "no upload without the CSRF token");
        let resp = multipart(&csrf).send().await.unwrap();
        assert_eq!(resp.status(), 303, "{}", resp.text().await.unwrap());
        let sha = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(&tar))
        };
        let mut setup = Setup::default();
        setup
            .commands
            .insert(r#"cd "$TAGENT_BASE" && mkdir -p tmp"#.into(), (vec![], 0));
        setup.commands.insert(
            format!(
                r#"cd "$TAGENT_BASE" && tar xvf "$TAGENT_BASE/tmp/tagent-1.6.0-{}.tar" bin lib tools mod"#,
                &sha[..12]
            ),
            (vec![], 0),
        );
        let fake = FakeTagent::start(setup).await;
        let body = |version: &str| {
            json!({"tagentId":"","port":fake.port().to_string(),"ipString":"127.0.0.1",
                   "mgmtIp":"127.0.0.1","name":"fake","osType":"Linux","osbit":"x86_64",
                   "version":version,"credential":fake.credential()})
        };
        let (status, reply) = hub.register(&body("1.5.0"), Some("demo")).await;
        common::ok_id(status, &reply);

        let (status, page) = get(&http, &hub, &cookie, "/ui/upgrades").await;
        assert_eq!(status, 200);
        assert!(page.contains(&sha) && page.contains("rollout-form"), "{page}");
        let resp = http
            .post(hub.url("/ui/upgrades"))
            .header("cookie", &cookie)
            .header("content-type", FORM)
            .body(
                serde_urlencoded::to_string([
                    ("csrf", csrf.as_str()),
                    ("version", "1.6.0"),
                    ("ip", "127.0.0.1"),
                    ("from_version", "1.5.0"),
                    ("concurrency", "2"),
                ])
                .unwrap(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 303);
        let at = resp.headers()["location"].to_str().unwrap().to_owned();
        assert!(at.starts_with("/ui/upgrades/"), "{at}");
        // The tagent restarts with the new files and registers again.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while fake.reloads() == 0 {
            assert!(std::time::Instant::now() < deadline, "never reloaded");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (status, reply) = hub.register(&body("1.6.0"), Some("demo")).await;
        common::ok_id(status, &reply);
        let page = loop {
            let (status, page) = get(&http, &hub, &cookie, &at).await;
            assert_eq!(status, 200);
            if !page.contains("http-equiv=\"refresh\"") {
                break page;
            }
            assert!(std::time::Instant::now() < deadline, "never ended: {page}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(page.contains("id=\"rollout-state\">done"), "{page}");
        assert!(page.contains(">upgraded<") && page.contains("register ok"), "{page}");
        // A bad form is shown with the API's words.
        let (status, page) = post(
            &http,
            &hub,
            &cookie,
            "/ui/upgrades",
            &[("csrf", &csrf), ("version", "1.6.0"), ("concurrency", "0"), ("ip", "127.0.0.1")],
        )
        .await;
        assert_eq!(status, 400);
        assert!(page.contains("concurrency must be between"), "{page}");
        let (status, _) = post(
            &http,
            &hub,
            &cookie,
            &format!("/ui/packages/{sha}/delete"),
            &[("csrf", &csrf)],
        )
        .await;
        assert_eq!(status, 303);
        let (_, page) = get(&http, &hub, &cookie, "/ui/upgrades").await;
        assert!(page.contains("No package yet."), "{page}");
    })
    .await;
}
