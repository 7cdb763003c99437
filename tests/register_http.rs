//! Registration over real HTTP (SPEC §2.1–2.2), against the real binary.

mod common;

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::{
    Options, REGISTER_PATH, Server, client, client_from, ok_id, register_with, reply_json,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A credential as a real tagent sends it. It must never reach the logs.
const SECRET: &str = "{ENCRYPTED}5be1c0ffee0ddba11deadbeef5ca1ab1e";

/// Ids must survive every JSON parser (SPEC §2.2).
const MAX_SAFE_ID: u64 = 1 << 53;

fn sorted_keys(v: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

/// Check the exact shape of an OK reply and return its tagent id.
fn assert_ok_shape(status: u16, reply: &Value) -> u64 {
    assert_eq!(status, 200, "{reply}");
    assert_eq!(sorted_keys(reply), ["Data", "Status"], "{reply}");
    assert_eq!(reply["Status"], "OK", "{reply}");
    let data = &reply["Data"];
    assert_eq!(
        sorted_keys(data),
        ["proxyGroupId", "proxyList", "tagentId"],
        "{reply}"
    );
    let id = data["tagentId"]
        .as_u64()
        .unwrap_or_else(|| panic!("tagentId is not a non-negative integer: {reply}"));
    assert!(id > 0 && id < MAX_SAFE_ID, "tagentId out of range: {reply}");
    assert!(data["proxyGroupId"].is_u64(), "proxyGroupId: {reply}");
    let list = data["proxyList"].as_array().expect("proxyList is an array");
    assert!(!list.is_empty(), "{reply}");
    for p in list {
        assert_eq!(sorted_keys(p), ["id", "ip", "port"], "{reply}");
        assert!(p["id"].is_u64(), "{reply}");
        assert!(p["ip"].as_str().is_some_and(|s| !s.is_empty()), "{reply}");
        let port = p["port"].as_str().expect("port is a string");
        assert!(port.parse::<u16>().is_ok_and(|p| p > 0), "{reply}");
    }
    id
}

/// Check the exact shape of an ERROR reply and return its message.
fn assert_error(status: u16, reply: &Value) -> String {
    assert!(status >= 400, "HTTP {status} for an error: {reply}");
    assert_eq!(sorted_keys(reply), ["Message", "Status"], "{reply}");
    assert_eq!(reply["Status"], "ERROR", "{reply}");
    let message = reply["Message"].as_str().expect("Message is a string");
    assert!(!message.is_empty(), "{reply}");
    message.to_owned()
}

/// The default group: id 1, its only runner (id 1) is this hub's heartbeat.
fn default_proxy_list(hub: &Server) -> Value {
    let hb = hub.heartbeat_addr();
    json!([{"id": 1, "ip": hb.ip().to_string(), "port": hb.port().to_string()}])
}

/// A body like a real tagent's, with `mgmtIp` set.
fn tagent(mgmt_ip: &str, port: &str) -> Value {
    json!({
        "tenant": "t",
        "tagentId": "",
        "port": port,
        "ipString": mgmt_ip,
        "mgmtIp": mgmt_ip,
        "name": "host",
        "user": "root",
        "version": "1.5.4",
        "osType": "linux",
        "osVersion": "Ubuntu 22.04_5.15.0",
        "osbit": "x86_64",
        "credential": SECRET,
    })
}

/// `POST path` with raw bytes and a content type; status and JSON reply.
async fn post_raw(
    hub: &Server,
    path: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (u16, Value) {
    let mut req = client().post(hub.url(path)).body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    reply_json(resp).await
}

/// `POST /register?tenant=t` with JSON and extra headers.
async fn post_with_headers(
    client: &reqwest::Client,
    hub: &Server,
    query: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> (u16, Value) {
    let mut req = client
        .post(hub.url(&format!("/register{query}")))
        .header("content-type", "application/json")
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    reply_json(req.send().await.expect("POST /register")).await
}

/// One HTTP/1.1 exchange on a fresh connection, as raw bytes: what a Perl
/// tagent's HTTP::Tiny sends (`Connection: close`). Returns the status line,
/// the header block and the body.
async fn raw_exchange(addr: SocketAddr, path: &str, body: &str) -> (String, String, String) {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         User-Agent: Mozilla/5.0\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await.expect("read");
        reply
    };
    let reply = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .expect("the hub answers and closes within 30 s");
    let reply = String::from_utf8(reply).expect("a UTF-8 reply");
    let (head, body) = reply.split_once("\r\n\r\n").expect("a header block");
    let (status_line, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (
        status_line.to_owned(),
        headers.to_lowercase(),
        body.to_owned(),
    )
}

/// A client whose connections come from `ip` (a 127.0.0.0/8 address).
fn client_at(ip: &str) -> reqwest::Client {
    client_from(Some(ip.parse::<IpAddr>().unwrap()))
}

const OUTCOME: &str = "tagent_hub_registrations_total";

fn outcome(m: &common::Metrics, outcome: &str) -> f64 {
    m.value(&format!("{OUTCOME}{{outcome=\"{outcome}\"}}"))
}

#[tokio::test]
async fn the_reply_has_the_exact_shape_on_both_paths() {
    let hub = Server::start();
    let paths = [
        format!("{REGISTER_PATH}?tenant=t"),
        "/register?tenant=t".into(),
    ];
    let mut ids = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        let mut body = tagent("10.0.0.25", &format!("{}", 3939 + i));
        body.as_object_mut().unwrap().remove("tenant");
        let resp = client()
            .post(hub.url(path))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(
            content_type.starts_with("application/json"),
            "{content_type}"
        );
        let (status, reply) = reply_json(resp).await;
        let id = assert_ok_shape(status, &reply);
        assert_eq!(reply["Data"]["proxyGroupId"], 1, "{reply}");
        assert_eq!(reply["Data"]["proxyList"], default_proxy_list(&hub));
        assert_eq!(
            hub.advertise(),
            hub.heartbeat_addr().to_string(),
            "the default runner is this hub's heartbeat address"
        );
        ids.push(id);
    }
    assert_ne!(
        ids[0], ids[1],
        "same ip, different port: a different tagent"
    );
}

#[tokio::test]
async fn a_body_exactly_as_a_perl_tagent_sends_it() {
    let hub = Server::start();
    let addr = hub.http_addr();
    let path = format!("{REGISTER_PATH}?tenant=test");
    let hb = hub.heartbeat_addr();

    // First start: `tagentId` empty, `ipString` empty, everything a string.
    let first = format!(
        r#"{{"osbit":"x86_64","tagentId":"","user":"root","port":"3939","version":"1.5.4","name":"db01","osType":"linux","ipString":"","credential":"{SECRET}","osVersion":"CentOS 7.9_3.10.0","tenant":"test"}}"#
    );
    let (status_line, headers, body) = raw_exchange(addr, &path, &first).await;
    assert_eq!(status_line, "HTTP/1.1 200 OK");
    assert!(
        headers.contains("content-type: application/json"),
        "{headers}"
    );
    let reply: Value = serde_json::from_str(&body).expect("JSON");
    let id = assert_ok_shape(200, &reply);
    assert_eq!(
        body,
        format!(
            r#"{{"Status":"OK","Data":{{"tagentId":{id},"proxyGroupId":1,"proxyList":[{{"id":1,"ip":"{}","port":"{}"}}]}}}}"#,
            hb.ip(),
            hb.port()
        ),
        "the raw reply bytes"
    );

    // Restarts: the stored id comes back as a string, keys in another order
    // (Perl hash order varies from run to run).
    let again = [
        format!(
            r#"{{"tenant":"test","port":"3939","tagentId":"{id}","ipString":"127.0.0.1","name":"db01","user":"root","version":"1.5.4","osType":"linux","osVersion":"CentOS 7.9_3.10.0","osbit":"x86_64","credential":"{SECRET}"}}"#
        ),
        format!(
            r#"{{"credential":"{SECRET}","osVersion":"CentOS 7.9_3.10.0","name":"db01","ipString":"","osbit":"x86_64","version":"1.5.4","osType":"linux","user":"root","tenant":"test","tagentId":"{id}","port":"3939"}}"#
        ),
    ];
    for body in &again {
        let (status_line, _, reply) = raw_exchange(addr, &path, body).await;
        assert_eq!(status_line, "HTTP/1.1 200 OK", "{reply}");
        let reply: Value = serde_json::from_str(&reply).expect("JSON");
        assert_eq!(assert_ok_shape(200, &reply), id, "{reply}");
    }

    // The short path behaves the same.
    let (status_line, _, reply) = raw_exchange(addr, "/register?tenant=test", &again[0]).await;
    assert_eq!(status_line, "HTTP/1.1 200 OK", "{reply}");
    let reply: Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(assert_ok_shape(200, &reply), id);
}

#[tokio::test]
async fn numbers_are_accepted_for_port_and_tagent_id() {
    let hub = Server::start();
    let mut body = tagent("10.0.0.30", "3939");
    body["port"] = json!(3939);
    let (s, r) = hub.register(&body, Some("t")).await;
    let id = assert_ok_shape(s, &r);

    body["tagentId"] = json!(id);
    let (s, r) = hub.register(&body, Some("t")).await;
    assert_eq!(assert_ok_shape(s, &r), id, "tagentId as a number");

    body["port"] = json!("3939");
    body["tagentId"] = json!(id.to_string());
    let (s, r) = hub.register(&body, Some("t")).await;
    assert_eq!(assert_ok_shape(s, &r), id, "the same tagent as strings");

    body["tagentId"] = Value::Null;
    let (s, r) = hub.register(&body, Some("t")).await;
    assert_eq!(
        assert_ok_shape(s, &r),
        id,
        "null tagentId: found by ip and port"
    );
}

#[tokio::test]
async fn the_tenant_comes_from_the_header_then_the_body_then_the_query() {
    let hub = Server::start();
    let c = client();
    let mut body = tagent("10.0.0.40", "3939");
    body.as_object_mut().unwrap().remove("tenant");

    // One tagent (same ip and port) in each of three tenants.
    let (s, r) = post_with_headers(&c, &hub, "", &[("Tenant", "h")], &body).await;
    let in_h = assert_ok_shape(s, &r);
    let mut with_b = body.clone();
    with_b["tenant"] = json!("b");
    let (s, r) = post_with_headers(&c, &hub, "", &[], &with_b).await;
    let in_b = assert_ok_shape(s, &r);
    let (s, r) = post_with_headers(&c, &hub, "?tenant=q", &[], &body).await;
    let in_q = assert_ok_shape(s, &r);
    assert_eq!(
        [in_h, in_b, in_q].into_iter().collect::<HashSet<_>>().len(),
        3,
        "identity is (tenant, ip, port)"
    );

    // Header beats body and query; body beats query.
    let (s, r) = post_with_headers(&c, &hub, "?tenant=q", &[("Tenant", "h")], &with_b).await;
    assert_eq!(assert_ok_shape(s, &r), in_h, "the header wins");
    let (s, r) = post_with_headers(&c, &hub, "?tenant=q", &[], &with_b).await;
    assert_eq!(assert_ok_shape(s, &r), in_b, "the body beats the query");
    let (s, r) = post_with_headers(&c, &hub, "?tenant=q", &[], &body).await;
    assert_eq!(assert_ok_shape(s, &r), in_q, "the query alone");

    // No tenant anywhere: an error, and nothing stored.
    let before = hub.metrics().await;
    let (s, r) = post_with_headers(&c, &hub, "", &[], &body).await;
    let message = assert_error(s, &r);
    assert!(message.contains("tenant"), "{message}");
    let (s, r) = post_with_headers(&c, &hub, "?other=x", &[], &body).await;
    assert_error(s, &r);
    let after = hub.metrics().await;
    assert_eq!(
        after.value("tagent_hub_tagents"),
        before.value("tagent_hub_tagents")
    );
    assert_eq!(after.value("tagent_hub_tagents"), 3.0);
}

#[tokio::test]
async fn every_failure_is_an_error_reply_and_stores_nothing() {
    let hub = Server::start();
    let base = tagent("10.1.1.1", "3939");
    let with = |key: &str, value: Value| {
        let mut b = base.clone();
        b[key] = value;
        b.to_string()
    };
    let without = |key: &str| {
        let mut b = base.clone();
        b.as_object_mut().unwrap().remove(key);
        b.to_string()
    };
    // Positional values for every field: an array must not pass for an object.
    let array = json!([
        "t", "", "3939", "10.1.1.2", "10.1.1.1", "host", "root", "1.5.4", "linux", "x", "x86_64",
        SECRET, null, null
    ])
    .to_string();
    let json = Some("application/json");
    // (what, content type, body, HTTP status, a word the message must contain)
    let cases: Vec<(&str, Option<&str>, String, u16, &str)> = vec![
        (
            "invalid JSON",
            json,
            r#"{"port":"3939","mgmtIp":"10.1.1.1""#.into(),
            400,
            "JSON",
        ),
        ("trailing garbage", json, format!("{base} x"), 400, "JSON"),
        ("empty body", json, String::new(), 400, "JSON"),
        ("an array", json, array, 400, "object"),
        ("an empty array", json, "[]".into(), 400, "object"),
        (
            "a string",
            json,
            r#""{\"port\":\"3939\"}""#.into(),
            400,
            "object",
        ),
        ("a number", json, "3939".into(), 400, "object"),
        ("null", json, "null".into(), 400, "object"),
        (
            "port is a bool",
            json,
            with("port", json!(true)),
            400,
            "port",
        ),
        (
            "port has letters",
            json,
            with("port", json!("39x9")),
            400,
            "port",
        ),
        (
            "port is negative",
            json,
            with("port", json!(-1)),
            400,
            "port",
        ),
        (
            "port is too big",
            json,
            with("port", json!(70000)),
            400,
            "port",
        ),
        ("port is zero", json, with("port", json!("0")), 400, "port"),
        (
            "port is a fraction",
            json,
            with("port", json!(3939.5)),
            400,
            "port",
        ),
        (
            "port is an object",
            json,
            with("port", json!({"n": 1})),
            400,
            "port",
        ),
        ("missing port", json, without("port"), 400, "port"),
        ("empty port", json, with("port", json!("")), 400, "port"),
        (
            "tagentId has letters",
            json,
            with("tagentId", json!("12a")),
            400,
            "tagentId",
        ),
        (
            "tagentId is a bool",
            json,
            with("tagentId", json!(true)),
            400,
            "tagentId",
        ),
        (
            "tagentId is negative",
            json,
            with("tagentId", json!(-5)),
            400,
            "tagentId",
        ),
        (
            "tenant is a number",
            json,
            with("tenant", json!(7)),
            400,
            "tenant",
        ),
        (
            "tenant has spaces",
            json,
            with("tenant", json!("a b")),
            400,
            "tenant",
        ),
        (
            "ipString is a list",
            json,
            with("ipString", json!(["10.1.1.2"])),
            400,
            "ipString",
        ),
        (
            "mgmtIp is a number",
            json,
            with("mgmtIp", json!(167837953)),
            400,
            "mgmtIp",
        ),
        (
            "name is a number",
            json,
            with("name", json!(5)),
            400,
            "name",
        ),
        (
            "credential is an object",
            json,
            with("credential", json!({})),
            400,
            "credential",
        ),
        (
            "pcpu is text",
            json,
            with("pcpu", json!("lots")),
            400,
            "pcpu",
        ),
        (
            "mgmtIp out of range",
            json,
            with("mgmtIp", json!("10.1.1.300")),
            400,
            "10.1.1.300",
        ),
        (
            "mgmtIp is a name",
            json,
            with("mgmtIp", json!("db01")),
            400,
            "db01",
        ),
        (
            "mgmtIp unspecified",
            json,
            with("mgmtIp", json!("0.0.0.0")),
            400,
            "0.0.0.0",
        ),
        (
            "ipString has junk",
            json,
            with("ipString", json!("10.1.1.2,bogus")),
            400,
            "bogus",
        ),
        (
            "ipString has a CIDR",
            json,
            with("ipString", json!("10.1.1.0/24")),
            400,
            "10.1.1.0/24",
        ),
        (
            "no content type",
            None,
            base.to_string(),
            415,
            "Content-Type",
        ),
        (
            "text/plain",
            Some("text/plain"),
            base.to_string(),
            415,
            "Content-Type",
        ),
        (
            "a form",
            Some("application/x-www-form-urlencoded"),
            base.to_string(),
            415,
            "Content-Type",
        ),
    ];
    for (what, content_type, body, want_status, word) in &cases {
        for path in ["/register?tenant=t", &format!("{REGISTER_PATH}?tenant=t")] {
            let (status, reply) = post_raw(&hub, path, *content_type, body.clone()).await;
            assert_eq!(reply["Status"], "ERROR", "{what}: {reply}");
            let message = assert_error(status, &reply);
            assert_eq!(status, *want_status, "{what}: {reply}");
            assert!(
                message.contains(word),
                "{what}: message {message:?} lacks {word:?}"
            );
        }
    }

    // Over the default 1 MiB limit: 413, still the ERROR JSON.
    let mut big = base.clone();
    big["name"] = json!("x".repeat(1024 * 1024 + 1));
    let (status, reply) = post_raw(&hub, "/register?tenant=t", json, big.to_string()).await;
    assert_error(status, &reply);
    assert_eq!(status, 413, "{reply}");

    // Nothing was stored: the tagents those bodies describe are all new.
    let m = hub.metrics().await;
    assert_eq!(m.value("tagent_hub_tagents"), 0.0);
    assert_eq!(outcome(&m, "created") + outcome(&m, "updated"), 0.0);
    let mut contained = tagent("10.1.1.2", "3939");
    contained["tagentId"] = json!("1");
    let (s, r) = hub.register(&contained, Some("t")).await;
    let a = assert_ok_shape(s, &r);
    let (s, r) = hub.register(&base, Some("t")).await;
    let b = assert_ok_shape(s, &r);
    assert_ne!(a, b);
    let m = hub.metrics().await;
    assert_eq!(outcome(&m, "created"), 2.0, "both were new tagents");
    assert_eq!(m.value("tagent_hub_tagents"), 2.0);

    // A JSON content type with parameters is still JSON.
    let mut c = tagent("10.1.1.3", "3939");
    c["tagentId"] = json!("");
    let (s, r) = post_raw(
        &hub,
        "/register?tenant=t",
        Some("Application/JSON; charset=utf-8"),
        c.to_string(),
    )
    .await;
    assert_ok_shape(s, &r);
}

#[tokio::test]
async fn a_refused_registration_leaves_no_trace_in_the_rules() {
    let hub = Server::start();
    let (s, r) = hub.register(&tagent("10.2.0.1", "3939"), Some("t")).await;
    let a = assert_ok_shape(s, &r);

    // B lists A's primary ip: refused, naming A (rule 5).
    let mut b = tagent("10.2.0.2", "3939");
    b["ipString"] = json!("10.2.0.2,10.2.0.1");
    let (s, r) = hub.register(&b, Some("t")).await;
    let message = assert_error(s, &r);
    assert!(message.contains("10.2.0.1"), "{message}");

    // Had B been stored, 10.2.0.1 would now be held by two tagents.
    let (s, r) = hub.register(&tagent("10.2.0.1", "3939"), Some("t")).await;
    assert_eq!(assert_ok_shape(s, &r), a);
    // And B registers as new.
    b["ipString"] = json!("10.2.0.2");
    let (s, r) = hub.register(&b, Some("t")).await;
    let b_id = assert_ok_shape(s, &r);
    assert_ne!(b_id, a);
    let m = hub.metrics().await;
    assert_eq!(outcome(&m, "created"), 2.0);
    assert_eq!(outcome(&m, "contains_other_primary"), 1.0);
}

#[tokio::test]
async fn unknown_fields_are_ignored() {
    let hub = Server::start();
    let mut body = tagent("10.0.0.50", "3939");
    let obj = body.as_object_mut().unwrap();
    obj.insert("agentId".into(), json!(99));
    obj.insert("Status".into(), json!("ERROR"));
    obj.insert("appsInfo".into(), json!({"nested": [1, 2, {"x": null}]}));
    obj.insert("listenAddr".into(), json!("0.0.0.0"));
    obj.insert("pcpu".into(), json!(0.3));
    obj.insert("mem".into(), json!("41"));
    let (s, r) = hub.register(&body, Some("t")).await;
    let id = assert_ok_shape(s, &r);
    body["tagentId"] = json!(id.to_string());
    let (s, r) = hub.register(&body, Some("t")).await;
    assert_eq!(assert_ok_shape(s, &r), id);
}

#[tokio::test]
async fn the_credential_never_appears_in_the_logs() {
    // Every level of every module, so nothing that logs the body can hide.
    let mut hub = Server::start_with(Options::default().env("RUST_LOG", "trace"));
    let plain_hex = SECRET.trim_start_matches("{ENCRYPTED}");
    let (s, r) = hub.register(&tagent("10.3.0.1", "3939"), Some("t")).await;
    let id = assert_ok_shape(s, &r);
    let mut again = tagent("10.3.0.1", "3939");
    again["tagentId"] = json!(id.to_string());
    let (s, r) = hub.register(&again, Some("t")).await;
    assert_ok_shape(s, &r);
    // Refusals carry the credential too.
    let mut bad_port = tagent("10.3.0.2", "3939");
    bad_port["port"] = json!("nope");
    let (s, r) = hub.register(&bad_port, Some("t")).await;
    assert_error(s, &r);
    let mut lists_a = tagent("10.3.0.3", "3939");
    lists_a["ipString"] = json!("10.3.0.1");
    let (s, r) = hub.register(&lists_a, Some("t")).await;
    assert_error(s, &r);
    let mut no_tenant = tagent("10.3.0.4", "3939");
    no_tenant.as_object_mut().unwrap().remove("tenant");
    let (s, r) = hub.register(&no_tenant, None).await;
    assert_error(s, &r);
    let broken = format!(r#"{{"credential":"{SECRET}","port":"3939","#);
    let (s, r) = post_raw(&hub, "/register?tenant=t", Some("application/json"), broken).await;
    assert_error(s, &r);
    let (s, r) = post_raw(
        &hub,
        "/register?tenant=t",
        Some("text/plain"),
        again.to_string(),
    )
    .await;
    assert_error(s, &r);
    let as_string = serde_json::to_string(SECRET).unwrap();
    let (s, r) = post_raw(
        &hub,
        "/register?tenant=t",
        Some("application/json"),
        as_string,
    )
    .await;
    assert_error(s, &r);
    assert!(hub.stop().success(), "a clean exit on SIGTERM");

    let logs = hub.logs();
    assert!(
        logs.contains("registration refused"),
        "refusals are logged:\n{logs}"
    );
    assert!(
        !logs.contains(plain_hex),
        "the credential is in the logs:\n{logs}"
    );
    assert!(
        !logs.contains("5be1c0ffee"),
        "part of the credential is in the logs"
    );
}

#[tokio::test]
async fn a_hub_that_cannot_start_is_reported_with_its_log() {
    let err = Server::try_start_with(Options::default().config("no_such_setting = 1"))
        .err()
        .expect("an unknown setting is refused");
    assert!(err.contains("no_such_setting"), "{err}");
}

const GROUPS: &str = r#"
[[runner_group]]
id = 7
name = "no-runners-yet"
networks = ["10.0.0.0/8"]

[[runner_group]]
id = 3
name = "dc-b"
networks = ["10.1.0.0/16", "192.168.5.0/24"]
[[runner_group.runner]]
id = 12
name = "r12"
heartbeat = "10.1.0.12:8888"
[[runner_group.runner]]
id = 2
name = "r2"
heartbeat = "10.1.0.2:8899"
[[runner_group.runner]]
id = 5
name = "r5"
heartbeat = "runner5.example:8888"

[[runner_group]]
id = 9
name = "dc-a"
networks = ["10.0.0.0/8", "127.0.0.0/8"]
[[runner_group.runner]]
id = 1
name = "hub-a"
heartbeat = "10.0.0.21:8888"
"#;

#[tokio::test]
async fn configured_runner_groups_decide_the_reply() {
    let hub = Server::with_config(GROUPS);
    let dc_b = json!([
        {"id": 2, "ip": "10.1.0.2", "port": "8899"},
        {"id": 5, "ip": "runner5.example", "port": "8888"},
        {"id": 12, "ip": "10.1.0.12", "port": "8888"},
    ]);
    let dc_a = json!([{"id": 1, "ip": "10.0.0.21", "port": "8888"}]);

    for (ip, group, list) in [
        ("10.1.2.3", 3, &dc_b),
        ("192.168.5.5", 3, &dc_b),
        // 10.0.0.0/8 first matches group 7, which has no runner: skipped.
        ("10.2.0.1", 9, &dc_a),
    ] {
        let (s, r) = hub.register(&tagent(ip, "3939"), Some("t")).await;
        assert_ok_shape(s, &r);
        assert_eq!(r["Data"]["proxyGroupId"], group, "{ip}: {r}");
        assert_eq!(&r["Data"]["proxyList"], list, "{ip}: ordered by runner id");
    }

    // Only the primary ip is matched, not ipString.
    let mut body = tagent("10.2.0.9", "3939");
    body["ipString"] = json!("10.1.2.99,10.2.0.9");
    let (s, r) = hub.register(&body, Some("t")).await;
    assert_ok_shape(s, &r);
    assert_eq!(r["Data"]["proxyGroupId"], 9, "{r}");

    // No mgmtIp: the peer (127.0.0.1) is the primary ip.
    let mut body = tagent("", "3939");
    body["ipString"] = json!("");
    let (s, r) = hub.register(&body, Some("t")).await;
    assert_ok_shape(s, &r);
    assert_eq!(r["Data"]["proxyGroupId"], 9, "{r}");

    // No network contains the ip: an error naming it, nothing stored.
    let before = hub.metrics().await.value("tagent_hub_tagents");
    for ip in ["172.16.0.1", "fd00::1"] {
        let (s, r) = hub.register(&tagent(ip, "3939"), Some("t")).await;
        let message = assert_error(s, &r);
        assert!(message.contains(ip), "{message}");
    }
    let m = hub.metrics().await;
    assert_eq!(m.value("tagent_hub_tagents"), before);
    assert_eq!(outcome(&m, "no_runner_group"), 2.0);
}

/// Group 1 holds 10.9.0.0/16, group 2 loopback: the group in the reply tells
/// which ip the hub took as the primary one.
const TWO_GROUPS: &str = r#"
[[runner_group]]
id = 1
name = "tagents"
networks = ["10.9.0.0/16"]
[[runner_group.runner]]
id = 1
name = "r1"
heartbeat = "10.9.0.254:8888"

[[runner_group]]
id = 2
name = "loopback"
networks = ["127.0.0.0/8"]
[[runner_group.runner]]
id = 2
name = "r2"
heartbeat = "127.0.0.1:8888"
"#;

fn bare(port: &str) -> Value {
    json!({"tenant": "t", "tagentId": "", "port": port, "ipString": "", "credential": SECRET})
}

#[tokio::test]
async fn the_primary_ip_is_mgmt_ip_else_the_peer_address() {
    let hub = Server::with_config(TWO_GROUPS);
    let from_5 = client_at("127.0.0.5");
    let from_6 = client_at("127.0.0.6");
    let http = hub.http_addr();

    let (s, r) = register_with(&from_5, http, &bare("3939"), None).await;
    let by_peer = assert_ok_shape(s, &r);
    assert_eq!(r["Data"]["proxyGroupId"], 2, "{r}");

    // Another peer naming 127.0.0.5 as mgmtIp is the same tagent.
    let mut named = bare("3939");
    named["mgmtIp"] = json!("127.0.0.5");
    let (s, r) = register_with(&from_6, http, &named, None).await;
    assert_eq!(assert_ok_shape(s, &r), by_peer);
    // An empty mgmtIp means "use the peer": 127.0.0.6 is new.
    named["mgmtIp"] = json!("");
    let (s, r) = register_with(&from_6, http, &named, None).await;
    let by_peer_6 = assert_ok_shape(s, &r);
    assert_ne!(by_peer_6, by_peer);

    // mgmtIp wins over the peer.
    named["mgmtIp"] = json!("10.9.0.5");
    let (s, r) = register_with(&from_5, http, &named, None).await;
    let by_mgmt = assert_ok_shape(s, &r);
    assert_eq!(r["Data"]["proxyGroupId"], 1, "{r}");
    assert_ne!(by_mgmt, by_peer);
}

#[tokio::test]
async fn forwarded_for_is_ignored_from_untrusted_peers() {
    let hub = Server::with_config(TWO_GROUPS);
    let c = client();
    let (s, r) = post_with_headers(&c, &hub, "", &[], &bare("3939")).await;
    let by_peer = assert_ok_shape(s, &r);
    for header in ["X-Forwarded-For", "X-Real-IP"] {
        let (s, r) = post_with_headers(&c, &hub, "", &[(header, "10.9.0.7")], &bare("3939")).await;
        assert_eq!(assert_ok_shape(s, &r), by_peer, "{header} was believed");
        assert_eq!(r["Data"]["proxyGroupId"], 2, "{header}: {r}");
    }
}

#[tokio::test]
async fn forwarded_for_is_honoured_from_a_trusted_proxy() {
    let hub = Server::with_config(&format!(
        "trusted_proxies = [\"127.0.0.1/32\"]\n{TWO_GROUPS}"
    ));
    let proxy = client_at("127.0.0.1");
    let (s, r) = post_with_headers(
        &proxy,
        &hub,
        "",
        &[("X-Forwarded-For", "10.9.0.7")],
        &bare("3939"),
    )
    .await;
    let forwarded = assert_ok_shape(s, &r);
    assert_eq!(r["Data"]["proxyGroupId"], 1, "{r}");
    let mut named = bare("3939");
    named["mgmtIp"] = json!("10.9.0.7");
    let (s, r) = register_with(&client_at("127.0.0.9"), hub.http_addr(), &named, None).await;
    assert_eq!(
        assert_ok_shape(s, &r),
        forwarded,
        "the forwarded ip was the primary ip"
    );

    // The same header from a peer outside trusted_proxies is ignored.
    let other = client_at("127.0.0.2");
    let (s, r) = post_with_headers(
        &other,
        &hub,
        "",
        &[("X-Forwarded-For", "10.9.0.8")],
        &bare("3939"),
    )
    .await;
    assert_ok_shape(s, &r);
    assert_eq!(r["Data"]["proxyGroupId"], 2, "{r}");
}

#[tokio::test]
async fn metrics_and_health() {
    let hub = Server::start();
    let (status, body) = hub.get("/healthz").await;
    assert_eq!((status, body.trim()), (200, "ok"));

    let (s, r) = hub.register(&tagent("10.4.0.1", "3939"), Some("t")).await;
    let id = assert_ok_shape(s, &r);
    let mut again = tagent("10.4.0.1", "3939");
    again["tagentId"] = json!(id.to_string());
    let (s, r) = hub.register(&again, Some("t")).await;
    assert_ok_shape(s, &r);
    let mut bad = tagent("10.4.0.2", "3939");
    bad["port"] = json!("x");
    let (s, r) = hub.register(&bad, Some("t")).await;
    assert_error(s, &r);

    let m = hub.metrics().await;
    assert_eq!(outcome(&m, "created"), 1.0, "{}", m.text);
    assert_eq!(outcome(&m, "updated"), 1.0, "{}", m.text);
    assert_eq!(outcome(&m, "invalid"), 1.0, "{}", m.text);
    assert!(
        m.text
            .contains("# TYPE tagent_hub_registration_duration_seconds histogram")
    );
    assert!(m.has("tagent_hub_registration_duration_seconds_bucket{le=\"+Inf\"}"));
    assert!(m.has("tagent_hub_registration_duration_seconds_sum"));
    assert!(m.value("tagent_hub_registration_duration_seconds_count") >= 3.0);
    assert!(m.text.contains("# TYPE tagent_hub_tagents gauge"));
    assert_eq!(m.value("tagent_hub_tagents"), 1.0);
}

/// Register `n` tagents one after another, each with its own ip; the last
/// reply is followed at once by `kill -9`.
#[tokio::test]
async fn acknowledged_registrations_survive_kill_9() {
    const N: usize = 40;
    let mut hub = Server::start();
    let mut acked: Vec<(String, u64)> = Vec::new();
    for i in 0..N {
        let ip = format!("10.20.{}.{}", i / 200, i % 200 + 1);
        let mut body = tagent(&ip, "3939");
        body["ipString"] = json!(format!("{ip},172.17.0.1"));
        let (s, r) = hub.register(&body, Some("t")).await;
        acked.push((ip, assert_ok_shape(s, &r)));
    }
    // The last acknowledged write is an update: a new contained ip.
    let (last_ip, last_id) = acked[N - 1].clone();
    let mut update = tagent(&last_ip, "3939");
    update["tagentId"] = json!(last_id.to_string());
    update["ipString"] = json!(format!("{last_ip},192.168.77.1"));
    let (s, r) = hub.register(&update, Some("t")).await;
    assert_eq!(assert_ok_shape(s, &r), last_id);
    hub.kill9();
    assert!(
        !hub.current_logs().contains("stopped"),
        "it was not a clean stop"
    );

    hub.restart();
    assert_eq!(hub.metrics().await.value("tagent_hub_tagents"), N as f64);
    let ids: HashSet<u64> = acked.iter().map(|(_, id)| *id).collect();
    assert_eq!(ids.len(), N, "distinct ids");

    // The update survived: its new contained ip finds that tagent.
    let mut via_contained = tagent("192.168.77.1", "3939");
    via_contained["ipString"] = json!(format!("{last_ip},192.168.77.1"));
    let (s, r) = hub.register(&via_contained, Some("t")).await;
    assert_eq!(assert_ok_shape(s, &r), last_id, "the last update was lost");

    for (ip, id) in &acked[..N - 1] {
        let mut body = tagent(ip, "3939");
        body["ipString"] = json!(format!("{ip},172.17.0.1"));
        body["tagentId"] = json!(id.to_string());
        let (s, r) = hub.register(&body, Some("t")).await;
        assert_eq!(assert_ok_shape(s, &r), *id, "{ip} by id");
        body["tagentId"] = json!("");
        let (s, r) = hub.register(&body, Some("t")).await;
        assert_eq!(assert_ok_shape(s, &r), *id, "{ip} by ip and port");
    }
    // A new tagent gets an id no acknowledged tagent holds.
    let (s, r) = hub.register(&tagent("10.21.0.1", "3939"), Some("t")).await;
    assert!(
        !ids.contains(&assert_ok_shape(s, &r)),
        "an id was handed out twice"
    );
    let m = hub.metrics().await;
    assert_eq!(outcome(&m, "created"), 1.0);
    assert_eq!(m.value("tagent_hub_tagents"), (N + 1) as f64);
}

/// 50 tagents register at once, each from its own loopback address (the peer
/// address is the primary ip); all get distinct ids and all survive kill -9.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_registrations_get_distinct_ids_and_survive_kill_9() {
    const N: usize = 50;
    let mut hub = Server::start();
    let http = hub.http_addr();
    let peers: Vec<String> = (0..N).map(|i| format!("127.0.1.{}", i + 1)).collect();
    let tasks: Vec<_> = peers
        .iter()
        .map(|peer| {
            let peer = peer.clone();
            tokio::spawn(async move {
                let c = client_at(&peer);
                let (s, r) = register_with(&c, http, &bare("3939"), Some("t")).await;
                (peer, ok_id(s, &r))
            })
        })
        .collect();
    let mut acked = Vec::new();
    for t in tasks {
        acked.push(t.await.expect("a registration task"));
    }
    hub.kill9();
    let ids: HashSet<u64> = acked.iter().map(|(_, id)| *id).collect();
    assert_eq!(ids.len(), N, "distinct ids: {acked:?}");

    hub.restart();
    let http = hub.http_addr();
    assert_eq!(hub.metrics().await.value("tagent_hub_tagents"), N as f64);
    let tasks: Vec<_> = acked
        .iter()
        .cloned()
        .map(|(peer, id)| {
            tokio::spawn(async move {
                let c = client_at(&peer);
                let (s, r) = register_with(&c, http, &bare("3939"), Some("t")).await;
                assert_eq!(ok_id(s, &r), id, "{peer} by ip and port");
                let mut by_id = bare("3939");
                by_id["tagentId"] = json!(id.to_string());
                let (s, r) = register_with(&c, http, &by_id, Some("t")).await;
                assert_eq!(ok_id(s, &r), id, "{peer} by id");
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("a re-registration task");
    }
    let m = hub.metrics().await;
    assert_eq!(outcome(&m, "created"), 0.0);
    assert_eq!(outcome(&m, "updated"), (2 * N) as f64);
}
