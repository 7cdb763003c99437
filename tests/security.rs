//! The HTTP side's bounds against an attacker with no credentials (issue 13,
//! findings 4, 5 and 9): registration rates per source and overall, the
//! HTTP connection caps and the descriptors they leave to heartbeat
//! sessions. Each hostile client is bounded in count and time; only loopback
//! addresses are used, and loopback is taken out of `unlimited_networks` so
//! the limits apply to it.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::{Metrics, Options, Server, Tagent, WAIT, client_from, connect_from};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn limited(http: &str) -> Options {
    Options::default().config(&format!(
        "[heartbeat]\nstatus_flush_ms = 10\n[http]\nunlimited_networks = []\n{http}"
    ))
}

fn body(ip: &str) -> Value {
    json!({"tagentId":"","port":"3939","ipString":ip,"mgmtIp":ip,"name":"h","credential":"c"})
}

/// `POST /register?tenant=t` from `from`: status, `Retry-After`, JSON body.
async fn register_from(hub: &Server, from: &str, mgmt_ip: &str) -> (u16, Option<String>, Value) {
    let resp = client_from(Some(ip(from)))
        .post(hub.url("/register?tenant=t"))
        .header("content-type", "application/json")
        .body(body(mgmt_ip).to_string())
        .send()
        .await
        .expect("POST /register");
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = resp.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, retry, json)
}

async fn metrics_from(hub: &Server, from: &str) -> Metrics {
    let text = client_from(Some(ip(from)))
        .get(hub.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .unwrap();
    Metrics { text }
}

async fn tagent_count(hub: &Server, from: &str) -> u64 {
    let v: Value = client_from(Some(ip(from)))
        .get(hub.url("/api/v1/tagents/counts"))
        .send()
        .await
        .expect("GET count")
        .json()
        .await
        .unwrap();
    v["total"].as_u64().unwrap_or_else(|| panic!("{v}"))
}

#[tokio::test]
async fn a_source_past_its_registration_rate_gets_429_and_stores_nothing() {
    let hub = Server::start_with(limited(
        "register_rate_per_ip = 1\nregister_burst_per_ip = 5\n",
    ));
    for n in 0..5 {
        let (status, _, reply) = register_from(&hub, "127.0.9.1", &format!("10.9.0.{n}")).await;
        assert_eq!((status, &reply["Status"]), (200, &json!("OK")), "{reply}");
    }
    // A flood from the same source, far past its burst: refused, each one.
    let mut refused = 0;
    let started = Instant::now();
    for n in 0..50 {
        let (status, retry, reply) = register_from(&hub, "127.0.9.1", &format!("10.9.1.{n}")).await;
        if status == 429 {
            refused += 1;
            assert_eq!(retry.as_deref(), Some("1"));
            assert_eq!(reply["Status"], "ERROR");
            assert!(
                reply["Message"]
                    .as_str()
                    .unwrap()
                    .contains("too many registrations from 127.0.9.1"),
                "{reply}"
            );
        }
    }
    // At 1/s, only as many as seconds went by can have been let through.
    let allowed = 50 - refused;
    assert!(
        allowed <= started.elapsed().as_secs() + 1,
        "{allowed} of 50 let through in {:?}",
        started.elapsed()
    );
    // Another source is not held back by the first one's flood.
    let (status, _, reply) = register_from(&hub, "127.0.9.2", "10.9.2.1").await;
    assert_eq!(status, 200, "{reply}");
    let m = metrics_from(&hub, "127.0.9.3").await;
    assert_eq!(
        m.value("tagent_hub_registrations_total{outcome=\"rate_limited_source\"}"),
        refused as f64,
        "{}",
        m.text
    );
    // What was refused stored nothing: 5 + (50 - refused) + 1 tagents.
    assert_eq!(
        tagent_count(&hub, "127.0.9.3").await,
        5 + (50 - refused) + 1
    );
}

#[tokio::test]
async fn the_overall_registration_rate_bounds_many_sources_together() {
    let hub = Server::start_with(limited(
        "register_rate_per_ip = 0\nregister_rate = 1\nregister_burst = 3\n",
    ));
    let mut codes = Vec::new();
    let started = Instant::now();
    for n in 1..=20 {
        let (status, _, reply) =
            register_from(&hub, &format!("127.0.10.{n}"), &format!("10.10.0.{n}")).await;
        if status == 429 {
            assert_eq!(reply["Message"], "too many registrations; retry later");
        }
        codes.push(status);
    }
    let ok = codes.iter().filter(|&&c| c == 200).count();
    // The burst of 3, and one more for each second the loop took.
    let most = 3 + started.elapsed().as_secs() as usize + 1;
    assert!((3..=most).contains(&ok), "{codes:?}");
    let m = metrics_from(&hub, "127.0.10.100").await;
    assert_eq!(
        m.value("tagent_hub_registrations_total{outcome=\"rate_limited\"}"),
        (20 - ok) as f64
    );
    // Once the allowance refills, registration works again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, _, reply) = register_from(&hub, "127.0.10.50", "10.10.1.1").await;
    assert_eq!(status, 200, "{reply}");
}

#[tokio::test]
async fn loopback_is_unlimited_by_default() {
    let hub = Server::start_with(
        Options::default().config("[http]\nregister_rate_per_ip = 1\nregister_burst_per_ip = 1\n"),
    );
    for n in 0..20 {
        let (status, _, reply) = register_from(&hub, "127.0.11.1", &format!("10.11.0.{n}")).await;
        assert_eq!(status, 200, "{reply}");
    }
}

/// Whether the server closed `s` (EOF or reset) within `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(within, s.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// `GET /healthz` from `from` on a connection of its own, closed after
/// the reply (a pooled client would keep its connection and its place).
async fn healthz_from(hub: &Server, from: &str) -> Option<u16> {
    let exchange = async {
        let mut s = connect_from(hub.http_addr(), ip(from)).await.ok()?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).await.ok()?;
        let reply = String::from_utf8_lossy(&reply);
        reply.split(' ').nth(1)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}

#[tokio::test]
async fn idle_http_connections_are_capped_per_source_and_in_all() {
    let hub = Server::start_with(limited(
        "max_connections = 12\nmax_connections_per_ip = 4\nheader_timeout_secs = 60\n",
    ));
    // One source: 4 held, the 5th closed at once.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(
            connect_from(hub.http_addr(), ip("127.0.12.1"))
                .await
                .unwrap(),
        );
    }
    let mut fifth = connect_from(hub.http_addr(), ip("127.0.12.1"))
        .await
        .unwrap();
    assert!(closed_within(&mut fifth, WAIT).await, "the 5th was kept");
    // The held ones stay open (they are idle, not refused).
    assert!(!closed_within(&mut held[0], Duration::from_millis(300)).await);
    // Another source is still served.
    assert_eq!(healthz_from(&hub, "127.0.12.2").await, Some(200));
    // Fill the total from two more sources: 4 + 4 + 4 = 12.
    for src in ["127.0.12.3", "127.0.12.4"] {
        for _ in 0..4 {
            held.push(connect_from(hub.http_addr(), ip(src)).await.unwrap());
        }
    }
    let deadline = Instant::now() + WAIT;
    let mut extra = loop {
        // The healthz connection may still be closing: retry.
        let mut s = connect_from(hub.http_addr(), ip("127.0.12.5"))
            .await
            .unwrap();
        if closed_within(&mut s, Duration::from_secs(1)).await {
            break s;
        }
        assert!(Instant::now() < deadline, "the 13th connection was kept");
        drop(s);
    };
    let mut buf = [0u8; 1];
    assert!(matches!(extra.read(&mut buf).await, Ok(0) | Err(_)));
    drop(held);
    let deadline = Instant::now() + WAIT;
    while healthz_from(&hub, "127.0.12.6").await != Some(200) {
        assert!(Instant::now() < deadline, "not served after the flood left");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = metrics_from(&hub, "127.0.12.6").await;
    assert!(
        m.value("tagent_hub_http_rejected_total{reason=\"max_connections_per_ip\"}") >= 1.0,
        "{}",
        m.text
    );
    assert!(
        m.value("tagent_hub_http_rejected_total{reason=\"max_connections\"}") >= 1.0,
        "{}",
        m.text
    );
}

#[tokio::test]
async fn an_http_flood_leaves_heartbeat_sessions_their_descriptors() {
    let hub = Server::start_with(limited(
        "max_connections = 20\nmax_connections_per_ip = 20\nheader_timeout_secs = 60\n",
    ));
    let (id, group) = hub.register_tagent("t", "127.0.13.1", "c").await;
    // The hub's descriptors now, plus room for what the HTTP cap allows,
    // a few heartbeat sessions and a little slack; not one more.
    hub.limit_open_files(20 + 8);
    // 200 idle HTTP connections from 10 sources: 20 are held, the rest closed.
    let mut flood = Vec::new();
    for n in 0..200 {
        let src = ip(&format!("127.0.13.{}", 100 + n % 10));
        if let Ok(s) = connect_from(hub.http_addr(), src).await {
            flood.push(s);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A tagent connects a heartbeat session meanwhile and is answered.
    let mut tagent = Tagent::connect_from(hub.heartbeat_addr(), "127.0.13.1").await;
    let line = json!({"type":"monitor","tenant":"t","agentId":id,"port":3939,
        "ipString":"127.0.13.1","proxyGroup":group,"mgmtIp":"127.0.13.1",
        "status":"working","version":"1.5.4"});
    for _ in 0..3 {
        assert_eq!(tagent.send(&line).await, json!({"Status":"OK"}));
    }
    drop(flood);
    let deadline = Instant::now() + WAIT;
    let m = loop {
        if healthz_from(&hub, "127.0.13.2").await == Some(200) {
            break metrics_from(&hub, "127.0.13.2").await;
        }
        assert!(
            Instant::now() < deadline,
            "HTTP not served after the flood left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        m.value("tagent_hub_http_rejected_total{reason=\"max_connections\"}") >= 150.0,
        "{}",
        m.text
    );
    assert_eq!(
        m.value("tagent_hub_accept_errors_total{listener=\"heartbeat\",kind=\"emfile\"}"),
        0.0,
        "{}",
        m.text
    );
    let v = common::tagent_json(&hub, id).await;
    assert_eq!(v["status"], "connected", "{v}");
}

#[tokio::test]
async fn the_data_dir_and_its_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let hub = Server::start();
    hub.register_tagent("t", "127.0.14.1", "c").await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = hub.data_dir();
    assert_eq!(mode(&dir), 0o700);
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            files += 1;
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }
    // registry.redb, credential.key (the admin token comes from the environment).
    assert!(files >= 2, "{files} files in {}", dir.display());
}

async fn register_as(hub: &Server, ip: &str, id: Option<u64>, credential: &str) -> (u16, Value) {
    let body = json!({"tagentId": id.map_or(String::new(), |i| i.to_string()), "port":"3939",
        "ipString": ip, "mgmtIp": ip, "name":"h", "credential": credential});
    hub.register(&body, Some("t")).await
}

async fn post_admin(hub: &Server, path: &str) -> u16 {
    common::client()
        .post(hub.url(path))
        .send()
        .await
        .expect("POST")
        .status()
        .as_u16()
}

async fn wait_status(hub: &Server, id: u64, want: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = common::tagent_json(hub, id).await;
        if v["status"] == want {
            return;
        }
        assert!(Instant::now() < deadline, "never {want}: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_registration_cannot_take_over_a_known_tagents_credential() {
    let hub = Server::start();
    let (id, _) = hub.register_tagent("t", "127.0.15.1", "real").await;
    // The tagent is disconnected (as every tagent is right after a hub
    // restart): an impostor registers its ip and port with its own
    // credential, with the tagent's id and without.
    for with_id in [None, Some(id)] {
        let (status, reply) = register_as(&hub, "127.0.15.1", with_id, "evil").await;
        assert_eq!(status, 403, "{reply}");
        assert_eq!(reply["Status"], "ERROR");
        assert!(
            reply["Message"].as_str().unwrap().contains(
                "registration of 127.0.15.1:3939 (a new credential for a known tagent) is pending approval"
            ),
            "{reply}"
        );
    }
    // The real tagent's restart still works: same id, same credential.
    let (status, reply) = register_as(&hub, "127.0.15.1", Some(id), "real").await;
    assert_eq!(common::ok_id(status, &reply), id);
    let m = hub.metrics().await;
    assert_eq!(
        m.value("tagent_hub_registrations_total{outcome=\"pending\"}"),
        2.0
    );
}

#[tokio::test]
async fn resetcred_and_an_approved_reinstall_let_one_new_credential_in() {
    let hub = Server::start_with(
        Options::default().config("[heartbeat]\ncommand_quiet_ms = 200\nstatus_flush_ms = 10\n"),
    );
    let (id, group) = hub.register_tagent("t", "127.0.16.1", "one").await;
    let mut tagent = Tagent::connect_from(hub.heartbeat_addr(), "127.0.16.1").await;
    let line = json!({"type":"monitor","tenant":"t","agentId":id,"port":3939,
        "ipString":"127.0.16.1","proxyGroup":group,"mgmtIp":"127.0.16.1",
        "status":"working","version":"1.5.4"});
    assert_eq!(tagent.send(&line).await, json!({"Status":"OK"}));
    wait_status(&hub, id, "connected").await;
    // The hub sends resetcred: the tagent picks a new credential, restarts
    // and registers with it.
    assert_eq!(
        post_admin(&hub, &format!("/api/v1/tagents/{id}/resetcred")).await,
        200
    );
    assert_eq!(tagent.line().await, json!({"type":"resetcred"}));
    drop(tagent);
    wait_status(&hub, id, "disconnected").await;
    let (status, reply) = register_as(&hub, "127.0.16.1", Some(id), "two").await;
    assert_eq!(common::ok_id(status, &reply), id);
    // That used the window up.
    let (status, reply) = register_as(&hub, "127.0.16.1", Some(id), "three").await;
    assert_eq!(status, 403, "{reply}");
    // A reinstall (no id, a new credential) once an operator allowed it.
    let path = format!("/api/v1/tagents/{id}/allow-reinstall?minutes=5");
    assert_eq!(post_admin(&hub, &path).await, 204);
    let (status, reply) = register_as(&hub, "127.0.16.1", None, "four").await;
    assert_eq!(common::ok_id(status, &reply), id);
    let (status, _) = register_as(&hub, "127.0.16.1", None, "five").await;
    assert_eq!(status, 403);
    // Out of range, and an unknown tagent.
    let bad = format!("/api/v1/tagents/{id}/allow-reinstall?minutes=0");
    assert_eq!(post_admin(&hub, &bad).await, 400);
    assert_eq!(
        post_admin(&hub, "/api/v1/tagents/999/allow-reinstall").await,
        404
    );
    // The approval survives a restart of the hub (it is in the store).
    assert_eq!(post_admin(&hub, &path).await, 204);
    let mut hub = hub;
    hub.restart();
    let (status, reply) = register_as(&hub, "127.0.16.1", None, "six").await;
    assert_eq!(common::ok_id(status, &reply), id);
}

#[tokio::test]
async fn a_hub_alone_has_no_hub_to_hub_route() {
    let hub = Server::start();
    let (id, _) = hub.register_tagent("t", "127.0.17.1", "c").await;
    let status = common::client()
        .post(hub.url(&format!("/internal/v1/tagents/{id}/reload")))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(status, 404);
}

/// A native handshake from `from` with `credential`: the refusal code, or
/// `None` when welcomed.
async fn native_from(hub: &Server, from: &str, id: u64, credential: &str) -> Option<String> {
    use tagent_hub::heartbeat::client::{ClientError, NativeClient};
    let stream = connect_from(hub.heartbeat_addr(), ip(from)).await.unwrap();
    let identity = common::identity("t", id, Some("127.0.18.1"));
    let attempt = NativeClient::handshake(stream, &identity, credential);
    match tokio::time::timeout(WAIT, attempt)
        .await
        .expect("an answer")
    {
        Ok(client) => {
            let _ = client.bye().await;
            None
        }
        Err(ClientError::Refused { code, .. }) => Some(code),
        Err(e) => Some(format!("error: {e}")),
    }
}

#[tokio::test]
async fn guessing_native_credentials_is_held_back_per_source() {
    let hub = Server::start();
    let (id, _) = hub.register_tagent("t", "127.0.18.1", "right").await;
    // 40 guesses from one source: the first ten are told auth-failed, then
    // the source is refused before any proof is checked.
    let mut codes = Vec::new();
    let started = Instant::now();
    for n in 0..40 {
        codes.push(native_from(&hub, "127.0.18.50", id, &format!("guess-{n}")).await);
    }
    let failed = codes
        .iter()
        .filter(|c| c.as_deref() == Some("auth-failed"))
        .count();
    let throttled = codes
        .iter()
        .filter(|c| c.as_deref() == Some("auth-throttled"))
        .count();
    assert_eq!(failed + throttled, 40, "{codes:?}");
    // The burst of 10, and one more per 3 s the loop took.
    let most = 10 + started.elapsed().as_secs() as usize / 3 + 1;
    assert!((10..=most).contains(&failed), "{codes:?}");
    // Even the right credential waits its turn from that source...
    assert_eq!(
        native_from(&hub, "127.0.18.50", id, "right")
            .await
            .as_deref(),
        Some("auth-throttled")
    );
    // ...while the real tagent, from its own address, is welcomed.
    assert_eq!(native_from(&hub, "127.0.18.1", id, "right").await, None);
    let m = hub.metrics().await;
    assert_eq!(
        m.value("tagent_hub_auth_failures_total{reason=\"throttled\"}"),
        (throttled + 1) as f64
    );
}

/// One request over TLS to `hub`, trusting `ca` (DER): the reply's status
/// and body, or `None` when the connection or handshake failed.
async fn tls_exchange(hub: &Server, ca: &[u8], request: String) -> Option<(u16, String)> {
    let reply = tls_reply(hub, ca, request).await?;
    let status = reply.split(' ').nth(1)?.parse().ok()?;
    let body = reply
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Some((status, body))
}

/// One request over TLS to `hub`, trusting `ca` (DER): the whole reply.
async fn tls_reply(hub: &Server, ca: &[u8], request: String) -> Option<String> {
    use std::sync::Arc;
    use tokio_rustls::TlsConnector;
    use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, pki_types::ServerName};
    let mut roots = RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(ca.to_vec()))
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = TlsConnector::from(Arc::new(config));
    let exchange = async {
        let tcp = TcpStream::connect(hub.http_addr()).await.ok()?;
        let name = ServerName::IpAddress(ip("127.0.0.1").into());
        let mut tls = connector.connect(name, tcp).await.ok()?;
        tls.write_all(request.as_bytes()).await.ok()?;
        let mut reply = Vec::new();
        let _ = tls.read_to_end(&mut reply).await;
        Some(String::from_utf8_lossy(&reply).into_owned())
    };
    tokio::time::timeout(WAIT, exchange).await.ok().flatten()
}

#[tokio::test]
async fn the_http_port_serves_tls_when_configured() {
    let tmp = tempfile::tempdir().unwrap();
    let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let (cert_path, key_path) = (tmp.path().join("hub.crt"), tmp.path().join("hub.key"));
    std::fs::write(&cert_path, key.cert.pem()).unwrap();
    std::fs::write(&key_path, key.signing_key.serialize_pem()).unwrap();
    let hub = Server::start_with(Options::default().config(&format!(
        "[http]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        cert_path.display(),
        key_path.display()
    )));
    let ca = key.cert.der().to_vec();
    let get = |path: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            common::ADMIN_TOKEN
        )
    };
    assert_eq!(
        tls_exchange(&hub, &ca, get("/healthz")).await,
        Some((200, "ok\n".to_owned()))
    );
    // A tagent whose HTTP client speaks https registers as usual.
    let body = r#"{"tagentId":"","port":"3939","ipString":"127.0.19.1","mgmtIp":"127.0.19.1","name":"h","credential":"c"}"#;
    let post = format!(
        "POST /register?tenant=t HTTP/1.1\r\nHost: hub\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, reply) = tls_exchange(&hub, &ca, post).await.expect("a reply");
    assert_eq!(status, 200, "{reply}");
    assert!(reply.contains(r#""Status":"OK""#), "{reply}");
    // The console's session cookie is marked Secure: it never leaves TLS.
    let signin = format!("token={}", common::ADMIN_TOKEN);
    let post = format!(
        "POST /ui/signin HTTP/1.1\r\nHost: hub\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{signin}",
        signin.len()
    );
    let reply = tls_reply(&hub, &ca, post).await.expect("a reply");
    let cookie = reply
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("a session cookie: {reply}"));
    assert!(
        cookie.contains("; Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    // Plain HTTP on the TLS port: no reply, the connection closed, counted.
    assert_eq!(healthz_from(&hub, "127.0.0.1").await, None);
    let (_, metrics) = tls_exchange(&hub, &ca, get("/metrics"))
        .await
        .expect("metrics");
    let m = Metrics { text: metrics };
    assert!(
        m.value("tagent_hub_http_rejected_total{reason=\"tls_handshake\"}") >= 1.0,
        "{}",
        m.text
    );
    // ctl speaks https, trusting the CA it is given, and only that.
    let https = format!("https://127.0.0.1:{}", hub.http_addr().port());
    let ctl = |ca: Option<&std::path::Path>| {
        let mut cmd = hub.ctl_command();
        cmd.env("TAGENT_HUB_URL", &https);
        if let Some(ca) = ca {
            cmd.arg("--ca").arg(ca);
        }
        cmd.args(["--json", "counts"]).output().expect("run ctl")
    };
    let out = ctl(Some(&cert_path));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let counts: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(counts["total"], 1, "{counts}");
    let out = ctl(None);
    assert!(!out.status.success(), "an unknown certificate is refused");
    // A client that does not trust the certificate gets nothing.
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    assert_eq!(
        tls_exchange(&hub, other.cert.der(), get("/healthz")).await,
        None
    );
}

#[tokio::test]
async fn heartbeat_connections_are_capped_per_source() {
    let hub = Server::start_with(Options::default().config(
        "[heartbeat]\nmax_sessions_per_ip = 3\nunlimited_networks = []\nfirst_message_timeout_secs = 30\n",
    ));
    let (id, group) = hub.register_tagent("t", "127.0.21.1", "c").await;
    // A flood from one source: 3 held, the rest closed at once.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(
            connect_from(hub.heartbeat_addr(), ip("127.0.21.99"))
                .await
                .unwrap(),
        );
    }
    for _ in 0..5 {
        // Refused with a reset, which may even arrive as the connect's error.
        if let Ok(mut s) = connect_from(hub.heartbeat_addr(), ip("127.0.21.99")).await {
            assert!(
                closed_within(&mut s, WAIT).await,
                "a 4th from one source was kept"
            );
        }
    }
    assert!(!closed_within(&mut held[0], Duration::from_millis(300)).await);
    // The tagent, from its own address, connects and is answered.
    let mut tagent = Tagent::connect_from(hub.heartbeat_addr(), "127.0.21.1").await;
    let line = json!({"type":"monitor","tenant":"t","agentId":id,"port":3939,
        "ipString":"127.0.21.1","proxyGroup":group,"mgmtIp":"127.0.21.1",
        "status":"working","version":"1.5.4"});
    assert_eq!(tagent.send(&line).await, json!({"Status":"OK"}));
    // Once the flood leaves, its source may connect again.
    drop(held);
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(mut s) = connect_from(hub.heartbeat_addr(), ip("127.0.21.99")).await
            && !closed_within(&mut s, Duration::from_millis(300)).await
        {
            break;
        }
        assert!(Instant::now() < deadline, "the source stays refused");
    }
    let m = hub.metrics().await;
    assert!(
        m.value("tagent_hub_connection_errors_total{kind=\"max_sessions_per_ip\"}") >= 5.0,
        "{}",
        m.text
    );
}
