//! The web console in a real browser: Debian's chromium, headless, driven
//! over WebDriver (chromium-driver) with fantoccini. Skipped with a message
//! where no browser is installed. The CSRF and scope checks also run over
//! plain HTTP, with no browser.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ADMIN_TOKEN, Options, Server, Tagent};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const READ_TOKEN: &str = "reader-token-0123456789";
/// The longest any wait on the browser or the hub may take.
const WAIT: Duration = Duration::from_secs(20);

fn options() -> Options {
    Options::default().config(&format!(
        "[[admin_token]]\ntoken = \"{READ_TOKEN}\"\nscope = \"read\"\n\
         [heartbeat]\ncommand_quiet_ms = 100\nstatus_flush_ms = 10\n"
    ))
}

fn monitor(tid: u64, ip: &str, group: &str) -> Value {
    json!({"type":"monitor","tenant":"demo","agentId":tid,"port":3939,"ipString":ip,
           "proxyGroup":group,"pcpu":0.5,"mem":12,"status":"working","version":"1.5.4",
           "mgmtIp":ip})
}

/// A chromedriver on a free loopback port, killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The browser, or `None` (with a message) where none is installed.
async fn browser() -> Option<(Driver, Client)> {
    let installed = |p: &str| std::path::Path::new(p).exists();
    if !installed("/usr/bin/chromedriver") || !installed("/usr/bin/chromium") {
        eprintln!("skipped: no chromium/chromedriver (apt-get install chromium chromium-driver)");
        return None;
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("/usr/bin/chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver { child, port };
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"binary": "/usr/bin/chromium",
               "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                        "--disable-dev-shm-usage", "--no-proxy-server", "--window-size=1400,1000"]}),
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
        {
            Ok(c) => return Some((driver, c)),
            Err(e) if Instant::now() > deadline => panic!("no WebDriver session: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn text(c: &Client, css: &str) -> String {
    let el = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"));
    el.text().await.unwrap()
}

/// Wait until the element's text is `want`, without reloading the page.
async fn wait_text(c: &Client, css: &str, want: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = text(c, css).await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{css}: '{got}', not '{want}'");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn exists(c: &Client, css: &str) -> bool {
    c.find(Locator::Css(css)).await.is_ok()
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .click()
        .await
        .unwrap();
}

async fn sign_in(c: &Client, hub: &Server, token: &str) {
    c.goto(&hub.url("/ui/")).await.unwrap();
    // Not signed in: the sign-in page.
    let token_field = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#token"))
        .await
        .unwrap();
    token_field.send_keys(token).await.unwrap();
    click(c, "#signin").await;
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#count-total"))
        .await
        .unwrap();
}

async fn api(hub: &Server, path: &str) -> Value {
    let resp = common::client().get(hub.url(path)).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    resp.json().await.unwrap()
}

async fn wait_status(hub: &Server, id: u64, want: &str) {
    let deadline = Instant::now() + WAIT;
    while api(hub, &format!("/api/v1/tagents/{id}")).await["status"] != want {
        assert!(Instant::now() < deadline, "tagent {id} never {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_operator_works_the_console_in_a_browser() {
    let Some((_driver, c)) = browser().await else {
        return;
    };
    let hub = Server::start_with(options());
    let ips = ["127.0.5.1", "127.0.5.2", "127.0.5.3"];
    let mut ids = Vec::new();
    let mut groups = Vec::new();
    for ip in ips {
        let (id, group) = hub.register_tagent("demo", ip, "cred").await;
        ids.push(id);
        groups.push(group);
    }
    let mut sessions = Vec::new();
    for n in 0..2 {
        let mut t = Tagent::connect_from(hub.heartbeat_addr(), ips[n]).await;
        t.send(&monitor(ids[n], ips[n], &groups[n])).await;
        wait_status(&hub, ids[n], "connected").await;
        sessions.push(t);
    }

    // Sign in; the counts are the API's.
    sign_in(&c, &hub, ADMIN_TOKEN).await;
    let counts = api(&hub, "/api/v1/tagents/counts").await;
    for key in ["total", "connected", "disconnected"] {
        assert_eq!(
            text(&c, &format!("#count-{key}")).await,
            counts[key].to_string(),
            "{key}"
        );
    }

    // A tagent connecting and disconnecting changes its row, no reload.
    c.goto(&hub.url("/ui/tagents?ip=127.0.5.0%2F24"))
        .await
        .unwrap();
    let status = format!("tr[data-id=\"{}\"] .status", ids[2]);
    wait_text(&c, &status, "disconnected").await;
    assert_eq!(text(&c, "#matched").await, "3");
    let mut third = Tagent::connect_from(hub.heartbeat_addr(), ips[2]).await;
    third.send(&monitor(ids[2], ips[2], &groups[2])).await;
    wait_text(&c, &status, "connected").await;
    drop(third);
    wait_text(&c, &status, "disconnected").await;

    // A filter plus a batch reload: a result per tagent.
    c.goto(&hub.url("/ui/tagents?ip=127.0.5.0%2F24"))
        .await
        .unwrap();
    assert!(text(&c, "#batch-all").await.contains("all 3 that match"));
    click(&c, "#batch-all").await;
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#results"))
        .await
        .unwrap();
    let rows = c.find_all(Locator::Css("#results tbody tr")).await.unwrap();
    assert_eq!(rows.len(), 3);
    let summary = text(&c, "#summary").await;
    assert!(
        summary.contains("delivered 2") && summary.contains("not-connected 1"),
        "{summary}"
    );
    for t in sessions.iter_mut() {
        assert_eq!(t.line().await, json!({"type":"reload"}));
    }

    // An invalid network in a runner group: the API's error beside the field.
    c.goto(&hub.url("/ui/groups")).await.unwrap();
    c.find(Locator::Css("#group-name"))
        .await
        .unwrap()
        .send_keys("edge")
        .await
        .unwrap();
    c.find(Locator::Css("#group-networks"))
        .await
        .unwrap()
        .send_keys("10.1.2.3/16")
        .await
        .unwrap();
    click(&c, "#group-save").await;
    let message = text(&c, "#networks-error").await;
    assert!(message.contains("host bits"), "{message}");

    // Sign out: the console asks for a token again.
    click(&c, "#signout").await;
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#token"))
        .await
        .unwrap();
    c.goto(&hub.url("/ui/tagents")).await.unwrap();
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#token"))
        .await
        .unwrap();

    // A read token sees no action.
    sign_in(&c, &hub, READ_TOKEN).await;
    c.goto(&hub.url("/ui/tagents")).await.unwrap();
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#tagents"))
        .await
        .unwrap();
    assert!(!exists(&c, "#batch").await);
    c.goto(&hub.url(&format!("/ui/tagents/{}", ids[0])))
        .await
        .unwrap();
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#record"))
        .await
        .unwrap();
    assert!(!exists(&c, "#actions").await);
    c.goto(&hub.url("/ui/groups")).await.unwrap();
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#groups"))
        .await
        .unwrap();
    assert!(!exists(&c, "#group-form").await);
    c.close().await.unwrap();
}

const FORM: &str = "application/x-www-form-urlencoded";

/// A form body (reqwest's own needs a feature the crate leaves off).
fn form<K: serde::Serialize, V: serde::Serialize>(pairs: &[(K, V)]) -> String {
    serde_urlencoded::to_string(pairs).unwrap()
}

/// Sign in over plain HTTP: the session cookie (`name=value`).
async fn http_sign_in(http: &reqwest::Client, hub: &Server, token: &str) -> String {
    let resp = http
        .post(hub.url("/ui/signin"))
        .header("content-type", FORM)
        .body(form(&[("token", token)]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict")
            && !cookie.contains("Secure"),
        "{cookie} (Secure only when the port serves TLS)"
    );
    cookie.split(';').next().unwrap().to_owned()
}

fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    page[at..at + 64].to_owned()
}

#[tokio::test]
async fn changes_need_the_csrf_token_and_an_admin_sign_in() {
    let hub = Server::start_with(options());
    let (id, _) = hub.register_tagent("demo", "127.0.6.1", "cred").await;
    let http = common::http_builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // Unsigned: pages send to the sign-in, changes are refused.
    let resp = http.get(hub.url("/ui/tagents")).send().await.unwrap();
    assert_eq!(resp.status(), 303);
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.starts_with("default-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    let bad = http
        .post(hub.url("/ui/signin"))
        .header("content-type", FORM)
        .body(form(&[("token", "nope")]))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);

    let cookie = http_sign_in(&http, &hub, ADMIN_TOKEN).await;
    let page = http
        .get(hub.url(&format!("/ui/tagents/{id}")))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = csrf_of(&page);
    let action = hub.url(&format!("/ui/tagents/{id}/action/status-check"));
    let post = |fields: Vec<(&'static str, String)>| {
        http.post(&action)
            .header("cookie", &cookie)
            .header("content-type", FORM)
            .body(form(&fields))
            .send()
    };
    assert_eq!(post(vec![]).await.unwrap().status(), 403);
    assert_eq!(
        post(vec![("csrf", "0".repeat(64))]).await.unwrap().status(),
        403
    );
    let ok = post(vec![("csrf", csrf.clone())]).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert!(
        ok.text()
            .await
            .unwrap()
            .contains("status-check: not-connected")
    );

    // A batch on a filter: a changed count asks again, then a CSV of the
    // results.
    let batch = |expect: &str| {
        http.post(hub.url("/ui/batch"))
            .header("cookie", &cookie)
            .header("content-type", FORM)
            .body(form(&[
                ("csrf", csrf.as_str()),
                ("command", "status-check"),
                ("target", "filter"),
                ("filter", "ip=127.0.6.0/24"),
                ("expect", expect),
            ]))
            .send()
    };
    let stale = batch("2").await.unwrap();
    assert_eq!(stale.status(), 409);
    assert!(stale.text().await.unwrap().contains("matches 1 now"));
    let done = batch("1").await.unwrap();
    assert_eq!(done.status(), 200);
    let done = done.text().await.unwrap();
    let at = done.find("/ui/batch/").expect("a CSV link");
    let link = &done[at..at + done[at..].find('"').unwrap()];
    let csv = http
        .get(hub.url(link))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        csv.lines().collect::<Vec<_>>(),
        [
            "id,command,result,message".to_owned(),
            format!("{id},status-check,not-connected,"),
        ],
        "{csv}"
    );

    // A read sign-in may look, not change, even with its own CSRF token.
    let reader = http_sign_in(&http, &hub, READ_TOKEN).await;
    let page = http
        .get(hub.url(&format!("/ui/tagents/{id}")))
        .header("cookie", &reader)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(!page.contains("/action/"));
    let refused = http
        .post(&action)
        .header("cookie", &reader)
        .header("content-type", FORM)
        .body(form(&[("csrf", csrf_of(&page))]))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);

    // Signed out, the old cookie is worth nothing.
    let out = http
        .post(hub.url("/ui/signout"))
        .header("cookie", &cookie)
        .header("content-type", FORM)
        .body(form(&[("csrf", csrf.as_str())]))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    let after = http
        .get(hub.url("/ui/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 303);
}

/// Screenshots of every page of a running hub (README, docs/console.png):
/// `CONSOLE_URL=http://127.0.0.1:18084 CONSOLE_TOKEN=... CONSOLE_SHOTS=/tmp/shots
/// cargo test --test console -- --ignored screenshots`.
#[tokio::test]
#[ignore = "needs a running hub: see the doc comment"]
async fn screenshots() {
    let (Ok(url), Ok(token), Ok(dir)) = (
        std::env::var("CONSOLE_URL"),
        std::env::var("CONSOLE_TOKEN"),
        std::env::var("CONSOLE_SHOTS"),
    ) else {
        panic!("set CONSOLE_URL, CONSOLE_TOKEN and CONSOLE_SHOTS");
    };
    let Some((_driver, c)) = browser().await else {
        return;
    };
    c.goto(&format!("{url}/ui/signin")).await.unwrap();
    std::fs::write(format!("{dir}/signin.png"), c.screenshot().await.unwrap()).unwrap();
    let field = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#token"))
        .await
        .unwrap();
    field.send_keys(&token).await.unwrap();
    click(&c, "#signin").await;
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#count-total"))
        .await
        .unwrap();
    let list: Value = common::client()
        .get(format!("{url}/api/v1/tagents?limit=1"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let first = list["items"][0]["id"].as_u64().unwrap_or(1);
    let pages = [
        ("overview", "/ui/".to_owned()),
        ("tagents", "/ui/tagents".to_owned()),
        (
            "tagents-filtered",
            "/ui/tagents?status=disconnected&sort=name".to_owned(),
        ),
        ("tagent", format!("/ui/tagents/{first}")),
        ("groups", "/ui/groups".to_owned()),
        ("group", "/ui/groups/1".to_owned()),
    ];
    for (name, path) in pages {
        c.goto(&format!("{url}{path}")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        std::fs::write(format!("{dir}/{name}.png"), c.screenshot().await.unwrap()).unwrap();
    }
    c.close().await.unwrap();
}
