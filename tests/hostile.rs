//! Hostile clients over real sockets: each is checked for the server's
//! behaviour and its counter, then a legitimate tagent must still register
//! and heartbeat. What `tests/heartbeat.rs` already covers (silence, over-long
//! lines, unknown first bytes, 4 GiB frame headers, max_sessions, forged
//! proofs, oversized HTTP bodies) is not repeated here.
//!
//! Every loop is bounded in count and time; only loopback addresses are used.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::{Metrics, Options, Server, Tagent, WAIT, connect_from, identity};
use serde_json::{Value, json};
use tagent_hub::heartbeat::client::{ClientError, NativeClient};
use tagent_hub::heartbeat::proto::{self, MAGIC};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn quick(extra: &str) -> Options {
    Options::default().config(&format!(
        "[heartbeat]\ncommand_quiet_ms = 200\nstatus_flush_ms = 10\n{extra}"
    ))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn monitor(tenant: &str, tid: u64, ip: &str, group: &str) -> Value {
    json!({"type":"monitor","tenant":tenant,"agentId":tid,"port":3939,"ipString":ip,
           "proxyGroup":group,"pcpu":0.3,"mem":41,"status":"working","version":"1.5.4",
           "mgmtIp":ip,"appsInfo":{"nginx":{"status":"running"}}})
}

async fn status_of(hub: &Server, id: u64) -> String {
    common::tagent_json(hub, id).await["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The server still serves a legitimate tagent: it registers (at `at`), a
/// compat heartbeat is answered OK and connects it, and a native session
/// authenticates and gets its heartbeat acked.
async fn still_serves(hub: &Server, at: &str) {
    let (id, group) = hub.register_tagent("demo", at, "legit").await;
    let mut tagent = Tagent::connect_from(hub.heartbeat_addr(), at).await;
    assert_eq!(
        tagent.send(&monitor("demo", id, at, &group)).await,
        json!({"Status":"OK"})
    );
    assert_eq!(status_of(hub, id).await, "connected");
    let mut native = NativeClient::connect(
        hub.heartbeat_addr(),
        &identity("demo", id, Some(at)),
        "legit",
    )
    .await
    .expect("a legitimate native handshake");
    assert_eq!(native.heartbeat(None, None).await.unwrap().seq, 1);
    let t = common::tagent_json(hub, id).await;
    assert_eq!(
        (t["status"].as_str(), t["session"]["protocol"].as_str()),
        (Some("connected"), Some("native")),
        "{t}"
    );
}

/// Poll the metrics until `f` holds (bounded); returns the last sample.
async fn wait_metrics(hub: &Server, what: &str, f: impl Fn(&Metrics) -> bool) -> Metrics {
    let deadline = Instant::now() + WAIT;
    loop {
        let m = hub.metrics().await;
        if f(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "never {what}:\n{}", m.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------
// JSON lines

#[tokio::test]
async fn deeply_nested_json_lines_are_answered_without_harm() {
    let hub = Server::start_with(quick("max_line_bytes = 262144\n"));
    let (id, group) = hub.register_tagent("demo", "127.0.1.1", "c").await;
    let mut t = Tagent::connect_from(hub.heartbeat_addr(), "127.0.1.1").await;

    // Nested 100,000 deep, balanced, in a line that is not a monitor.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    t.send_raw(format!("{{\"type\":\"x\",\"deep\":{deep}}}\n").as_bytes())
        .await;
    assert_eq!(t.line().await, json!({"Status":"OK"}));
    // 100,000 open brackets (on a connection already speaking JSON lines):
    // not a heartbeat, answered OK and counted.
    let mut line = vec![b'['; 100_000];
    line.push(b'\n');
    t.send_raw(&line).await;
    assert_eq!(t.line().await, json!({"Status":"OK"}));
    // An unbalanced nest where the tenant belongs.
    t.send_raw(
        format!(
            "{{\"type\":\"monitor\",\"tenant\":{}\n",
            "{".repeat(100_000)
        )
        .as_bytes(),
    )
    .await;
    let reply = t.line().await;
    assert!(
        reply == json!({"Status":"OK"})
            || reply["Status"]
                .as_str()
                .is_some_and(|s| s.starts_with("ERROR:")),
        "{reply}"
    );
    // The session still works: a real heartbeat whose appsInfo (which the
    // hub skips) is nested 100,000 deep.
    let mut hb = monitor("demo", id, "127.0.1.1", &group);
    hb.as_object_mut().unwrap().remove("appsInfo");
    let mut hb = hb.to_string();
    hb.pop();
    hb.push_str(&format!(",\"appsInfo\":{deep}}}\n"));
    t.send_raw(hb.as_bytes()).await;
    assert_eq!(t.line().await, json!({"Status":"OK"}));
    assert_eq!(status_of(&hub, id).await, "connected");

    let m = hub.metrics().await;
    let ignored = m.value("tagent_hub_ignored_lines_total");
    assert!((2.0..=3.0).contains(&ignored), "{}", m.text);
    assert_eq!(
        m.value("tagent_hub_heartbeats_total{protocol=\"compat\"}"),
        1.0
    );
    assert!(
        !m.has("tagent_hub_connection_errors_total"),
        "no connection was refused: {}",
        m.text
    );
    // As a connection's first bytes, `[` is no protocol: closed and counted.
    let mut first = Tagent::connect(hub.heartbeat_addr()).await;
    first.send_raw(&line).await;
    assert!(first.closed().await);
    assert_eq!(
        hub.metrics()
            .await
            .value("tagent_hub_connection_errors_total{kind=\"unknown_protocol\"}"),
        1.0
    );
    still_serves(&hub, "127.0.1.2").await;
}

#[tokio::test]
async fn huge_lines_under_the_limit_are_heartbeats() {
    let hub = Server::start_with(quick(""));
    let (id, group) = hub.register_tagent("demo", "127.0.1.10", "c").await;
    let max = 65_536; // the default max_line_bytes

    // A heartbeat with an appsInfo that brings the line to exactly the limit.
    let line_of = |len: usize| {
        let mut hb = monitor("demo", id, "127.0.1.10", &group);
        hb["appsInfo"] = json!({"big": ""});
        let short = hb.to_string().len();
        let apps: serde_json::Map<String, Value> = (0..)
            .map(|i| {
                (
                    format!("app{i:05}"),
                    json!({"status":"running","n":[1,2,3]}),
                )
            })
            .take_while({
                let mut size = short;
                move |(k, v)| {
                    size += k.len() + v.to_string().len() + 4;
                    size < max - 200
                }
            })
            .collect();
        hb["appsInfo"] = Value::Object(apps);
        hb["appsInfo"]["big"] = json!("");
        let pad = len - hb.to_string().len();
        hb["appsInfo"]["big"] = json!("x".repeat(pad));
        let s = hb.to_string();
        assert_eq!(s.len(), len);
        s
    };
    let at_limit = line_of(max);
    let mut t = Tagent::connect_from(hub.heartbeat_addr(), "127.0.1.10").await;
    // Twenty of them in one write: twenty replies. The last ends in CRLF
    // (the hub counts the CR toward the limit, so that one is a byte shorter).
    let mut burst = String::new();
    for _ in 0..19 {
        burst.push_str(&at_limit);
        burst.push('\n');
    }
    burst.push_str(&line_of(max - 1));
    burst.push_str("\r\n");
    t.send_raw(burst.as_bytes()).await;
    for i in 0..20 {
        assert_eq!(t.line().await, json!({"Status":"OK"}), "reply {i}");
    }
    let tj = common::tagent_json(&hub, id).await;
    assert_eq!(tj["status"], "connected");
    assert_eq!(tj["session"]["heartbeats"], 20);

    // One byte more is refused, on a connection of its own.
    let mut over = Tagent::connect(hub.heartbeat_addr()).await;
    over.send_raw(format!("{}\n", line_of(max + 1)).as_bytes())
        .await;
    assert!(over.closed().await);
    let m = hub.metrics().await;
    assert_eq!(
        m.value("tagent_hub_heartbeats_total{protocol=\"compat\"}"),
        20.0
    );
    assert_eq!(
        m.value("tagent_hub_connection_errors_total{kind=\"too_long\"}"),
        1.0
    );
    // The first session is untouched by the other's refusal.
    assert_eq!(
        t.send(&monitor("demo", id, "127.0.1.10", &group)).await,
        json!({"Status":"OK"})
    );
    still_serves(&hub, "127.0.1.11").await;
}

// ---------------------------------------------------------------------------
// Native frames

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

fn msgpack(v: &Value) -> Vec<u8> {
    rmp_serde::to_vec_named(v).unwrap()
}

/// Send the magic and `frames`; the hub must answer with an `error` frame
/// and close. Returns the error's code.
async fn native_refusal(addr: SocketAddr, frames: &[Vec<u8>]) -> Option<String> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&MAGIC).await.unwrap();
    for f in frames {
        s.write_all(f).await.unwrap();
    }
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut rest))
        .await
        .expect("the hub closes the connection")
        .expect("a clean close");
    // Skip a challenge if one came before the error.
    let mut at = 0;
    let mut last = None;
    while at + 4 <= rest.len() {
        let n = u32::from_be_bytes(rest[at..at + 4].try_into().unwrap()) as usize;
        last = Some(&rest[at + 4..at + 4 + n]);
        at += 4 + n;
    }
    assert_eq!(at, rest.len(), "whole frames: {rest:02x?}");
    match rmp_serde::from_slice::<proto::ServerMsg<'_>>(last?).unwrap() {
        proto::ServerMsg::Error { code, .. } => Some(code.into_owned()),
        other => panic!("expected an error, got {other:?}"),
    }
}

fn hello(id: u64) -> Value {
    json!({"hello": {"v":1,"tenant":"demo","agent_id":id,"ip":"127.0.2.1","port":3939,"version":null}})
}

#[tokio::test]
async fn malformed_messagepack_in_valid_frames_is_refused_and_counted() {
    let hub = Server::start_with(quick(""));
    let addr = hub.heartbeat_addr();
    let (id, _) = hub.register_tagent("demo", "127.0.2.1", "right").await;

    let with = |path: &str, v: Value| {
        let mut h = hello(id);
        h["hello"][path] = v;
        frame(&msgpack(&h))
    };
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("a number for the tenant", with("tenant", json!(7))),
        ("a string for agent_id", with("agent_id", json!("1"))),
        ("a port past u16", with("port", json!(70_000))),
        ("a negative agent_id", with("agent_id", json!(-1))),
        ("v as a string", with("v", json!("1"))),
        ("a map for ip", with("ip", json!({"a": 1}))),
        ("an unknown message", frame(&msgpack(&json!({"nope": {}})))),
        ("a bare integer", frame(&[0x07])),
        ("an empty frame", frame(&[])),
        ("a reserved marker", frame(&[0xc1])),
    ];
    // A map claiming six entries with one present.
    let mut short_map = vec![0x81, 0xa5];
    short_map.extend_from_slice(b"hello");
    short_map.extend_from_slice(&[0x86, 0xa1, b'v', 0x01]);
    cases.push(("a map claiming more entries", frame(&short_map)));
    // A map32 claiming 4 billion entries.
    let mut huge_map = vec![0x81, 0xa5];
    huge_map.extend_from_slice(b"hello");
    huge_map.extend_from_slice(&[0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, b'v', 0x01]);
    cases.push(("a map32 claiming 2^32-1 entries", frame(&huge_map)));
    // An outer map claiming two messages.
    let mut two = msgpack(&hello(id));
    two[0] = 0x82;
    cases.push(("an outer map claiming two keys", frame(&two)));
    // A truncated bin: 32 bytes announced, 5 present.
    let mut short_bin = vec![0x81, 0xa4];
    short_bin.extend_from_slice(b"auth");
    short_bin.extend_from_slice(&[0x81, 0xa5]);
    short_bin.extend_from_slice(b"proof");
    short_bin.extend_from_slice(&[0xc4, 0x20, 1, 2, 3, 4, 5]);
    cases.push(("a truncated bin", frame(&short_bin)));
    // A bin32 announcing 4 GiB inside a 20-byte frame.
    let mut huge_bin = short_bin.clone();
    let at = huge_bin.len() - 7;
    huge_bin.truncate(at);
    huge_bin.extend_from_slice(&[0xc6, 0xff, 0xff, 0xff, 0xff, 1, 2, 3]);
    cases.push(("a bin32 claiming 4 GiB", frame(&huge_bin)));
    // A str32 tenant announcing 4 GiB.
    let mut huge_str = vec![0x81, 0xa5];
    huge_str.extend_from_slice(b"hello");
    huge_str.extend_from_slice(&[0x86, 0xa1, b'v', 0x01, 0xa6]);
    huge_str.extend_from_slice(b"tenant");
    huge_str.extend_from_slice(&[0xdb, 0xff, 0xff, 0xff, 0xff, b'd', b'e']);
    cases.push(("a str32 claiming 4 GiB", frame(&huge_str)));
    // An extra field nested 60,000 arrays deep (the frame stays under 64 KiB).
    let mut deep = msgpack(&hello(id));
    assert_eq!(deep[7], 0x86, "{deep:02x?}");
    deep[7] = 0x87;
    deep.extend_from_slice(&[0xa1, b'x']);
    deep.extend(std::iter::repeat_n(0x91, 60_000));
    deep.push(0xc0);
    cases.push(("a field nested 60,000 deep", frame(&deep)));

    for (what, f) in &cases {
        let code = native_refusal(addr, std::slice::from_ref(f)).await;
        assert_eq!(code.as_deref(), Some("bad-message"), "{what}");
    }
    let sent = cases.len() as f64;

    // A truncated proof after a real hello and challenge: refused as well,
    // and the tagent does not become connected.
    let code = native_refusal(addr, &[frame(&msgpack(&hello(id))), frame(&short_bin)]).await;
    assert_eq!(code.as_deref(), Some("bad-message"));
    assert_eq!(status_of(&hub, id).await, "disconnected");

    let m = hub.metrics().await;
    assert_eq!(
        m.value("tagent_hub_connection_errors_total{kind=\"bad_message\"}"),
        sent + 1.0,
        "{}",
        m.text
    );
    assert!(!m.has("tagent_hub_auth_failures_total"), "{}", m.text);
    assert_eq!(m.value("tagent_hub_sessions{protocol=\"native\"}"), 0.0);
    // The tagent can still authenticate with its credential.
    let mut c = NativeClient::connect(addr, &identity("demo", id, Some("127.0.2.1")), "right")
        .await
        .expect("handshake");
    assert_eq!(c.heartbeat(None, None).await.unwrap().seq, 1);
    still_serves(&hub, "127.0.2.2").await;
}

// ---------------------------------------------------------------------------
// Identity

#[tokio::test]
async fn a_heartbeat_in_another_tenant_never_connects_the_tagent() {
    let hub = Server::start_with(quick(""));
    let (a, group) = hub.register_tagent("alpha", "127.0.3.1", "c").await;
    // Tenant beta exists (one tagent elsewhere), so its name is known.
    let (_b, _) = hub.register_tagent("beta", "127.0.3.9", "c").await;

    for tenant in ["beta", "gamma-never-registered", "ALPHA"] {
        let mut t = Tagent::connect_from(hub.heartbeat_addr(), "127.0.3.1").await;
        assert_eq!(
            t.send(&monitor(tenant, a, "127.0.3.1", &group)).await,
            json!({"Status":"OK"}),
            "{tenant}"
        );
        assert_eq!(status_of(&hub, a).await, "disconnected", "{tenant}");
        // It is told to register instead.
        let reload = t.line_within(WAIT).await.expect("a reload");
        assert_eq!(
            serde_json::from_str::<Value>(&reload).unwrap(),
            json!({"type":"reload"})
        );
    }
    // Natively: the handshake is refused before any challenge.
    match NativeClient::connect(
        hub.heartbeat_addr(),
        &identity("beta", a, Some("127.0.3.1")),
        "c",
    )
    .await
    {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, "unknown-tagent"),
        other => panic!("expected unknown-tagent, got {:?}", other.err()),
    }
    assert_eq!(status_of(&hub, a).await, "disconnected");
    let m = hub.metrics().await;
    assert_eq!(m.value("tagent_hub_unregistered_sessions_total"), 3.0);
    assert_eq!(
        m.value("tagent_hub_auth_failures_total{reason=\"unknown_tagent\"}"),
        1.0
    );
    assert_eq!(
        m.value("tagent_hub_heartbeats_total{protocol=\"compat\"}"),
        3.0
    );
    // Its own tenant still connects it.
    let mut t = Tagent::connect_from(hub.heartbeat_addr(), "127.0.3.1").await;
    assert_eq!(
        t.send(&monitor("alpha", a, "127.0.3.1", &group)).await,
        json!({"Status":"OK"})
    );
    assert_eq!(status_of(&hub, a).await, "connected");
    still_serves(&hub, "127.0.3.2").await;
}

#[tokio::test]
async fn another_tagents_agent_id_from_the_wrong_ip_never_connects_it() {
    let hub = Server::start_with(quick(""));
    let (a, group) = hub.register_tagent("demo", "127.0.4.1", "c").await;
    let addr = hub.heartbeat_addr();

    // From another source address, no mgmtIp: the peer address counts.
    let mut t = Tagent::connect_from(addr, "127.0.4.2").await;
    let mut hb = monitor("demo", a, "127.0.4.1", &group);
    hb.as_object_mut().unwrap().remove("mgmtIp");
    assert_eq!(t.send(&hb).await, json!({"Status":"OK"}));
    assert_eq!(status_of(&hub, a).await, "disconnected");
    // From A's own address but naming another mgmtIp that its ipString
    // does not list: refused and closed (see tests/trust.rs).
    let mut t2 = Tagent::connect_from(addr, "127.0.4.1").await;
    let refused = t2.send(&monitor("demo", a, "127.0.4.3", &group)).await;
    assert!(
        refused["Status"].as_str().unwrap().starts_with("ERROR:"),
        "{refused}"
    );
    assert!(t2.closed().await);
    assert_eq!(status_of(&hub, a).await, "disconnected");
    // Natively, without an ip (the peer counts) and with a wrong one.
    // (NativeClient connects from 127.0.0.1.)
    for claimed in [None, Some("127.0.4.3")] {
        match NativeClient::connect(addr, &identity("demo", a, claimed), "c").await {
            Err(ClientError::Refused { code, .. }) => assert_eq!(code, "unknown-tagent"),
            other => panic!("expected unknown-tagent, got {:?}", other.err()),
        }
    }
    assert_eq!(status_of(&hub, a).await, "disconnected");
    let m = hub.metrics().await;
    assert_eq!(m.value("tagent_hub_unregistered_sessions_total"), 1.0);
    assert_eq!(
        m.value("tagent_hub_identity_refused_total{reason=\"impostor\"}"),
        1.0
    );
    assert_eq!(
        m.value("tagent_hub_auth_failures_total{reason=\"unknown_tagent\"}"),
        2.0
    );
    // The impostor's session is an unregistered one, listed as such.
    let (_, body) = hub.get("/api/v1/sessions/unregistered").await;
    let list: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["count"], 1, "{list}");
    // The real tagent, from its own address, connects; the impostor's
    // session is not replaced by it nor it by that one.
    let mut real = Tagent::connect_from(addr, "127.0.4.1").await;
    hb["mgmtIp"] = json!("127.0.4.1");
    assert_eq!(real.send(&hb).await, json!({"Status":"OK"}));
    assert_eq!(status_of(&hub, a).await, "connected");
    // The unregistered session may have been sent its (rate-limited)
    // reload meanwhile: the reply is the first line that is not a command.
    let mut reply = t.send(&monitor("demo", a, "127.0.4.2", &group)).await;
    while reply["type"] == "reload" {
        reply = t.line().await;
    }
    assert_eq!(reply["Status"], "OK", "{reply}");
    assert_eq!(status_of(&hub, a).await, "connected");
    still_serves(&hub, "127.0.4.9").await;
}

// ---------------------------------------------------------------------------
// Connection storms and descriptors

#[tokio::test]
async fn thousands_of_connections_opened_and_dropped_leak_nothing() {
    let hub = Server::start_with(quick(""));
    let (id, group) = hub.register_tagent("demo", "127.0.5.1", "c").await;
    let mut legit = Tagent::connect_from(hub.heartbeat_addr(), "127.0.5.1").await;
    assert_eq!(
        legit.send(&monitor("demo", id, "127.0.5.1", &group)).await,
        json!({"Status":"OK"})
    );
    hub.metrics().await;
    let baseline = hub.open_fds();

    const PER_SOURCE: usize = 750;
    let sources = ["127.0.5.101", "127.0.5.102", "127.0.5.103", "127.0.5.104"];
    let addr = hub.heartbeat_addr();
    let started = Instant::now();
    let workers: Vec<_> = sources
        .iter()
        .enumerate()
        .map(|(w, src)| {
            let src = ip(src);
            tokio::spawn(async move {
                let mut identified = 0u32;
                for i in 0..PER_SOURCE {
                    assert!(
                        started.elapsed() < Duration::from_secs(30),
                        "storm too slow"
                    );
                    let stream = connect_from(addr, src).await.expect("connect");
                    match i % 3 {
                        // Connect and leave at once.
                        0 => drop(stream),
                        // An unregistered heartbeat, its reply, then FIN.
                        1 => {
                            let mut t = Tagent::new(stream);
                            let port = 10_000 + w * PER_SOURCE + i;
                            let hb = json!({"type":"monitor","tenant":"demo","agentId":0,
                                            "port":port,"mgmtIp":src.to_string()});
                            assert_eq!(t.send(&hb).await, json!({"Status":"OK"}));
                            identified += 1;
                        }
                        // Half a line, then RST.
                        _ => {
                            let mut stream = stream;
                            stream.write_all(b"{\"type\":\"moni").await.unwrap();
                            socket2::SockRef::from(&stream)
                                .set_linger(Some(Duration::ZERO))
                                .unwrap();
                            drop(stream);
                        }
                    }
                }
                identified
            })
        })
        .collect();
    let mut identified = 0;
    for w in workers {
        identified += w.await.unwrap();
    }
    assert_eq!(identified, 1000);

    // The held session was served throughout.
    assert_eq!(
        legit.send(&monitor("demo", id, "127.0.5.1", &group)).await,
        json!({"Status":"OK"})
    );
    let m = wait_metrics(&hub, "back to the one held session", |m| {
        m.value("tagent_hub_sessions{protocol=\"compat\"}") == 1.0
    })
    .await;
    assert_eq!(m.value("tagent_hub_unregistered_sessions_total"), 1000.0);
    assert!(
        !m.has("tagent_hub_connection_errors_total") && !m.has("tagent_hub_accept_errors_total"),
        "nothing refused: {}",
        m.text
    );
    drop(legit);
    wait_metrics(&hub, "no session left", |m| {
        m.value("tagent_hub_sessions{protocol=\"compat\"}") == 0.0
    })
    .await;
    // Every descriptor comes back (the held session's too).
    let deadline = Instant::now() + WAIT;
    loop {
        let now = hub.open_fds();
        if now <= baseline {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "fd leak: {now} open, {baseline} before the storm"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status_of(&hub, id).await, "disconnected");
    still_serves(&hub, "127.0.5.2").await;
}

/// `GET /metrics` over `client` (its pooled connection survives an fd
/// shortage that stops the server from accepting new ones).
async fn metrics_via(client: &reqwest::Client, hub: &Server) -> Metrics {
    let resp = client.get(hub.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    Metrics {
        text: resp.text().await.unwrap(),
    }
}

#[tokio::test]
async fn out_of_descriptors_the_hub_keeps_its_sessions_and_recovers() {
    let hub = Server::start_with(quick(
        "max_sessions = 1000\nfirst_message_timeout_secs = 30\n",
    ));
    let (id, group) = hub.register_tagent("demo", "127.0.6.1", "c").await;
    let mut held = Tagent::connect_from(hub.heartbeat_addr(), "127.0.6.1").await;
    assert_eq!(
        held.send(&monitor("demo", id, "127.0.6.1", &group)).await,
        json!({"Status":"OK"})
    );
    let http = common::client();
    metrics_via(&http, &hub).await;
    // Leave the server room for 40 more descriptors.
    let limit = hub.limit_open_files(40);

    // 200 connections: 40 or so are accepted, the rest wait in the backlog
    // while accept fails with EMFILE.
    let mut flood = Vec::new();
    for _ in 0..200 {
        flood.push(
            connect_from(hub.heartbeat_addr(), ip("127.0.6.100"))
                .await
                .unwrap(),
        );
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let m = metrics_via(&http, &hub).await;
        if m.value("tagent_hub_accept_errors_total{listener=\"heartbeat\",kind=\"emfile\"}") >= 1.0
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "accept never hit EMFILE:\n{}",
            m.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The established session keeps getting replies meanwhile.
    for _ in 0..3 {
        assert_eq!(
            held.send(&monitor("demo", id, "127.0.6.1", &group)).await,
            json!({"Status":"OK"})
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = metrics_via(&http, &hub)
        .await
        .value("tagent_hub_accept_errors_total{listener=\"heartbeat\",kind=\"emfile\"}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let m = metrics_via(&http, &hub).await;
    assert!(
        m.value("tagent_hub_accept_errors_total{listener=\"heartbeat\",kind=\"emfile\"}") > first,
        "accept keeps retrying (with backoff) while short of descriptors:\n{}",
        m.text
    );
    assert!(
        !m.has("tagent_hub_accept_errors_total{listener=\"heartbeat\",kind=\"other\"}"),
        "{}",
        m.text
    );
    assert_eq!(status_of_via(&http, &hub, id).await, "connected");
    assert!(hub.wait_for_log("out of file descriptors", WAIT));
    // A new HTTP connection meets the same shortage: the HTTP accept loop
    // backs off too, and serves it once descriptors come back.
    let late = tokio::spawn({
        let url = hub.url("/healthz");
        async move { common::client().get(url).send().await.map(|r| r.status()) }
    });
    let deadline = Instant::now() + WAIT;
    while metrics_via(&http, &hub)
        .await
        .value("tagent_hub_accept_errors_total{listener=\"http\",kind=\"emfile\"}")
        < 1.0
    {
        assert!(
            Instant::now() < deadline,
            "the HTTP accept never hit EMFILE"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The flood leaves: new sessions are accepted again.
    drop(flood);
    let deadline = Instant::now() + WAIT;
    let _fresh = loop {
        if let Ok(s) = tokio::time::timeout(
            Duration::from_secs(2),
            connect_from(hub.heartbeat_addr(), ip("127.0.6.2")),
        )
        .await
        {
            let mut t = Tagent::new(s.unwrap());
            t.send_raw(format!("{}\n", monitor("demo", 0, "127.0.6.2", "")).as_bytes())
                .await;
            if let Some(line) = t.line_within(Duration::from_secs(2)).await {
                assert_eq!(
                    serde_json::from_str::<Value>(&line).unwrap(),
                    json!({"Status":"OK"})
                );
                break t;
            }
        }
        assert!(Instant::now() < deadline, "no new session accepted");
    };
    assert_eq!(
        held.send(&monitor("demo", id, "127.0.6.1", &group)).await,
        json!({"Status":"OK"})
    );
    let late = tokio::time::timeout(WAIT, late)
        .await
        .expect("the waiting HTTP request is served")
        .unwrap();
    assert_eq!(late.unwrap(), 200);
    // Give the descriptors back before the regular check over new connections.
    let deadline = Instant::now() + WAIT;
    while hub.open_fds() as u64 + 20 > limit {
        assert!(
            Instant::now() < deadline,
            "the flood's descriptors stay open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    still_serves(&hub, "127.0.6.3").await;
}

async fn status_of_via(client: &reqwest::Client, hub: &Server, id: u64) -> String {
    let resp = client
        .get(hub.url(&format!("/api/v1/tagents/{id}")))
        .send()
        .await
        .unwrap();
    let t: Value = resp.json().await.unwrap();
    t["status"].as_str().unwrap().to_owned()
}

// ---------------------------------------------------------------------------
// The HTTP shim

/// Send raw bytes to the HTTP port and read what comes back until the server
/// closes or `within` passes: `(status, whole reply)`, status `None` when no
/// response came.
async fn http_raw(hub: &Server, request: &[u8], within: Duration) -> (Option<u16>, String) {
    let mut s = TcpStream::connect(hub.http_addr()).await.unwrap();
    // The server may answer and close before it has read everything.
    let _ = s.write_all(request).await;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => reply.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&reply).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok());
    (status, text)
}

fn json_body(reply: &str) -> Value {
    let body = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {reply}"))
}

const REGISTER_HEAD: &str = "POST /register?tenant=demo HTTP/1.1\r\nHost: hub\r\n\
                             Content-Type: application/json\r\n";

#[tokio::test]
async fn malformed_chunked_bodies_are_refused() {
    let hub = Server::start();
    let body = r#"{"tagentId":"","port":"3939","ipString":"127.0.7.1","name":"h"}"#;
    let cases = [
        // A chunk size that is not hex.
        format!("Transfer-Encoding: chunked\r\n\r\nzz\r\n{body}\r\n0\r\n\r\n"),
        // A chunk size past u64.
        format!("Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n{body}\r\n0\r\n\r\n"),
        // A chunk longer than it says, then garbage where the CRLF belongs.
        format!("Transfer-Encoding: chunked\r\n\r\n4\r\n{body}\r\n0\r\n\r\n"),
        // A chunk that never finishes: the client closes its side.
        format!("Transfer-Encoding: chunked\r\n\r\n400\r\n{body}"),
    ];
    for case in &cases {
        let request = format!("{REGISTER_HEAD}{case}");
        let half_close = case.ends_with(body);
        let (status, reply) = if half_close {
            let mut s = TcpStream::connect(hub.http_addr()).await.unwrap();
            s.write_all(request.as_bytes()).await.unwrap();
            s.shutdown().await.unwrap();
            let mut reply = Vec::new();
            let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut reply)).await;
            let text = String::from_utf8_lossy(&reply).into_owned();
            let status = text.get(9..12).and_then(|c| c.parse().ok());
            (status, text)
        } else {
            http_raw(&hub, request.as_bytes(), WAIT).await
        };
        assert_eq!(status, Some(400), "{case:?}: {reply}");
        assert_eq!(json_body(&reply)["Status"], "ERROR", "{reply}");
    }
    let m = hub.metrics().await;
    assert!(
        !m.has("tagent_hub_registrations_total{outcome=\"created\"}"),
        "nothing registered: {}",
        m.text
    );
    assert_eq!(
        m.value("tagent_hub_registrations_total{outcome=\"bad_body\"}"),
        cases.len() as f64,
        "{}",
        m.text
    );
    let (status, _) = hub.get("/api/v1/tagents/1").await;
    assert_eq!(status, 404);
    still_serves(&hub, "127.0.7.2").await;
}

#[tokio::test]
async fn a_trickling_body_holds_up_no_one_else() {
    let hub = Server::start();
    let body = r#"{"tagentId":"","port":"3939","ipString":"127.0.8.1","name":"h"}"#;
    let head = format!("{REGISTER_HEAD}Content-Length: {}\r\n\r\n", body.len());
    // Twenty clients send their headers and 10 bytes, then stall.
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(hub.http_addr()).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&body.as_bytes()[..10]).await.unwrap();
        slow.push(s);
    }
    // Meanwhile everyone else is served (a server that waited behind the
    // slow bodies would not answer until their 30 s deadline: the client's
    // bounded waits would fail first).
    for i in 0..5 {
        let (id, group) = hub
            .register_tagent("demo", &format!("127.0.8.{}", 10 + i), "c")
            .await;
        let mut t =
            Tagent::connect_from(hub.heartbeat_addr(), &format!("127.0.8.{}", 10 + i)).await;
        assert_eq!(
            t.send(&monitor("demo", id, &format!("127.0.8.{}", 10 + i), &group))
                .await,
            json!({"Status":"OK"})
        );
        hub.metrics().await;
    }
    // ... while the slow bodies still stall, unanswered.
    for s in &slow {
        let mut buf = [0u8; 64];
        match s.try_read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("a stalled body was answered or closed early: {other:?}"),
        }
    }
    // Then close them without the rest.
    drop(slow);
    let m = wait_metrics(&hub, "counted the cut bodies", |m| {
        m.value("tagent_hub_registrations_total{outcome=\"bad_body\"}") == 20.0
    })
    .await;
    assert_eq!(
        m.value("tagent_hub_registrations_total{outcome=\"created\"}"),
        5.0,
        "no partial body registered"
    );
    still_serves(&hub, "127.0.8.2").await;
}

/// A registration request with `headers` (each a full line) before its body.
fn register_with(headers: &str, body: &str) -> String {
    format!(
        "{REGISTER_HEAD}{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn header_floods_oversized_and_malformed_heads_are_refused() {
    let hub = Server::start();
    let body = r#"{"tagentId":"","port":"3939","ipString":"127.0.9.1","name":"h"}"#;
    // Hundreds of small headers (the limit is 64).
    let many: String = (0..500).map(|i| format!("X-Flood-{i}: {i}\r\n")).collect();
    // One 100 KB header (the head limit is 16 KiB).
    let big = format!("X-Big: {}\r\n", "a".repeat(100 * 1024));
    // Many headers of 1 KB: each small, 32 KB in all.
    let wide: String = (0..32)
        .map(|i| format!("X-Wide-{i}: {}\r\n", "b".repeat(1024)))
        .collect();
    for headers in [&many, &big, &wide] {
        let (status, reply) = http_raw(&hub, register_with(headers, body).as_bytes(), WAIT).await;
        assert_eq!(status, Some(431), "{}", &reply[..reply.len().min(300)]);
    }
    // A header line past a megabyte that never ends: refused and closed
    // before it ends.
    let endless = format!("{REGISTER_HEAD}X-Endless: {}", "a".repeat(1024 * 1024));
    let (status, _) = http_raw(&hub, endless.as_bytes(), WAIT).await;
    assert_eq!(status, Some(431));

    // A request line that is not HTTP, and a header line without a colon.
    for garbage in [
        &b"\x16\x03\x01\x02\x00 binary\r\n\r\n"[..],
        b"POST /register HTTP/1.1\r\nno colon here\r\n\r\n",
    ] {
        let (status, reply) = http_raw(&hub, garbage, WAIT).await;
        assert_eq!(status, Some(400), "{reply}");
    }

    let m = hub.metrics().await;
    assert_eq!(
        m.value("tagent_hub_http_rejected_total{reason=\"malformed\"}"),
        2.0,
        "{}",
        m.text
    );
    assert_eq!(
        m.value("tagent_hub_http_rejected_total{reason=\"header_too_large\"}"),
        4.0,
        "{}",
        m.text
    );
    assert!(
        !m.has("tagent_hub_registrations_total"),
        "no head too large reached the handler: {}",
        m.text
    );
    // A head just under the limits is served.
    let fine: String = (0..40).map(|i| format!("X-Fine-{i}: {i}\r\n")).collect();
    let (status, reply) = http_raw(&hub, register_with(&fine, body).as_bytes(), WAIT).await;
    assert_eq!(status, Some(200), "{reply}");
    assert_eq!(json_body(&reply)["Status"], "OK", "{reply}");
    still_serves(&hub, "127.0.9.2").await;
}

/// Read from `s` until the server closes it (`true`) or `within` passes.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn slow_and_silent_heads_are_cut_off() {
    let hub = Server::start_with(Options::default().config("[http]\nheader_timeout_secs = 1\n"));
    // Silent connections, and heads sent a byte at a time (slowloris).
    let mut silent = Vec::new();
    for _ in 0..10 {
        silent.push(TcpStream::connect(hub.http_addr()).await.unwrap());
    }
    let head = register_with("", "{}");
    let mut trickling = Vec::new();
    for _ in 0..10 {
        let mut s = TcpStream::connect(hub.http_addr()).await.unwrap();
        s.write_all(&head.as_bytes()[..5]).await.unwrap();
        trickling.push(s);
    }
    // Keep trickling a byte every 100 ms, for at most 20 s (200 bytes, more
    // than the head has): every connection must be closed on the way.
    let mut sent = 5;
    let started = Instant::now();
    while !trickling.is_empty() && sent < head.len() && started.elapsed() < 2 * WAIT {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let byte = &head.as_bytes()[sent..sent + 1];
        let mut open = Vec::new();
        for mut s in trickling {
            if s.write_all(byte).await.is_ok() && !closed_within(&mut s, Duration::ZERO).await {
                open.push(s);
            }
        }
        trickling = open;
        sent += 1;
    }
    assert!(
        trickling.is_empty(),
        "{} trickling heads still open after {sent} of {} bytes",
        trickling.len(),
        head.len()
    );
    for s in &mut silent {
        assert!(
            closed_within(s, WAIT).await,
            "a silent connection stays open"
        );
    }
    let m = hub.metrics().await;
    assert_eq!(
        m.value("tagent_hub_http_rejected_total{reason=\"header_timeout\"}"),
        20.0,
        "{}",
        m.text
    );
    assert!(!m.has("tagent_hub_registrations_total"), "{}", m.text);
    still_serves(&hub, "127.0.9.3").await;
}

#[tokio::test]
async fn a_slow_body_is_refused_when_its_time_is_up() {
    let hub = Server::start_with(Options::default().config("[http]\nbody_timeout_secs = 1\n"));
    let body =
        r#"{"tagentId":"","port":"3939","ipString":"127.0.9.4","mgmtIp":"127.0.9.4","name":"h"}"#;
    let request = register_with("", body);
    let head_len = request.len() - body.len();
    let mut slow = Vec::new();
    for _ in 0..5 {
        let mut s = TcpStream::connect(hub.http_addr()).await.unwrap();
        s.write_all(&request.as_bytes()[..head_len + 1])
            .await
            .unwrap();
        slow.push(s);
    }
    // A byte of body every 100 ms: the whole would take longer than allowed.
    let mut replies = Vec::new();
    for (k, mut s) in slow.into_iter().enumerate() {
        let mut reply = Vec::new();
        let mut buf = [0u8; 4096];
        let mut sent = head_len + 1;
        let started = Instant::now();
        loop {
            assert!(
                started.elapsed() < 2 * WAIT,
                "slow body {k}: no reply after {sent} bytes"
            );
            match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => reply.extend_from_slice(&buf[..n]),
                Err(_) if sent < request.len() - 1 => {
                    // Never the last byte: the body stays incomplete.
                    let _ = s.write_all(&request.as_bytes()[sent..sent + 1]).await;
                    sent += 1;
                }
                Err(_) => {}
            }
            if reply.windows(4).any(|w| w == b"\r\n\r\n") && reply.ends_with(b"}") {
                break;
            }
        }
        replies.push(String::from_utf8_lossy(&reply).into_owned());
    }
    for reply in &replies {
        assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
        let reply = json_body(reply);
        assert_eq!(reply["Status"], "ERROR", "{reply}");
        assert!(
            reply["Message"]
                .as_str()
                .unwrap()
                .contains("did not arrive within"),
            "{reply}"
        );
    }
    let m = hub.metrics().await;
    assert_eq!(
        m.value("tagent_hub_http_rejected_total{reason=\"slow_body\"}"),
        5.0,
        "{}",
        m.text
    );
    assert!(
        !m.has("tagent_hub_registrations_total{outcome=\"created\"}"),
        "no partial body registered: {}",
        m.text
    );
    // The same body sent at once is fine.
    let (status, reply) = http_raw(&hub, request.as_bytes(), WAIT).await;
    assert_eq!(status, Some(200), "{reply}");
    still_serves(&hub, "127.0.9.5").await;
}

#[tokio::test]
async fn json_bodies_nested_100000_deep_are_refused() {
    let hub = Server::start();
    let open = "[".repeat(100_000);
    let close = "]".repeat(100_000);
    let bodies = [
        // Unbalanced, at the top.
        open.clone(),
        // Balanced, at the top.
        format!("{open}{close}"),
        // Objects, in a field the hub reads.
        format!(
            "{{\"port\":\"3939\",\"ipString\":\"127.0.10.1\",\"name\":{}",
            "{\"a\":".repeat(100_000)
        ),
        // Balanced, in a field the hub reads.
        format!("{{\"port\":\"3939\",\"ipString\":\"127.0.10.1\",\"name\":{open}{close}}}"),
    ];
    for body in &bodies {
        let resp = common::client()
            .post(hub.url("/register?tenant=demo"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let (status, reply) = common::reply_json(resp).await;
        assert_eq!(status, 400, "{reply}");
        assert_eq!(reply["Status"], "ERROR", "{reply}");
        assert!(reply["Message"].is_string(), "{reply}");
    }
    let m = hub.metrics().await;
    assert_eq!(
        m.value("tagent_hub_registrations_total{outcome=\"invalid\"}"),
        bodies.len() as f64
    );
    assert_eq!(m.value("tagent_hub_tagents"), 0.0);
    let (status, _) = hub.get("/api/v1/tagents/1").await;
    assert_eq!(status, 404, "nothing stored");
    still_serves(&hub, "127.0.10.2").await;
}
