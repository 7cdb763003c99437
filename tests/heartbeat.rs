//! The heartbeat port over real sockets: both protocols, status, replacement,
//! idle timeout, updategroup, commands, and hostile input (SPEC §3).

mod common;

use std::time::{Duration, Instant};

use common::{Options, Server, Tagent, WAIT};
use serde_json::{Value, json};
use tagent_hub::heartbeat::client::{ClientError, Event, Identity, NativeClient};
use tagent_hub::heartbeat::proto::{self, CommandKind, MAGIC};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn monitor(tid: u64, ip: &str, group: &str) -> Value {
    json!({"type":"monitor","tenant":"demo","agentId":tid,"port":3939,"ipString":ip,
           "proxyGroup":group,"proxyGroupId":"1","proxyIp":"127.0.0.1","proxyPort":8888,
           "pcpu":0.3,"mem":41,"status":"working","version":"1.5.4","mgmtIp":ip,
           "appsInfo":{"nginx":{"status":"running","n":[1,2,3]}}})
}

/// Poll the tagent until `f` holds (bounded).
async fn wait_until(hub: &Server, id: u64, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let t = common::tagent_json(hub, id).await;
        if f(&t) {
            return t;
        }
        assert!(Instant::now() < deadline, "tagent {id} never {what}: {t}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn post(hub: &Server, path: &str) -> (u16, Value) {
    let resp = common::client().post(hub.url(path)).send().await.unwrap();
    common::reply_json(resp).await
}

fn quick(extra: &str) -> Options {
    Options::default().config(&format!(
        "[heartbeat]\ncommand_quiet_ms = 200\nstatus_flush_ms = 10\n{extra}"
    ))
}

#[tokio::test]
async fn compat_heartbeat_connects_and_keeps_the_facts() {
    let hub = Server::start_with(quick(""));
    let (id, group) = hub.register_tagent("demo", "127.0.0.5", "cred").await;
    let t = common::tagent_json(&hub, id).await;
    assert_eq!(
        (t["status"].as_str(), t["disconnect_reason"].as_str()),
        (Some("disconnected"), Some("never-connected"))
    );

    let mut tagent = Tagent::connect_from(hub.heartbeat_addr(), "127.0.0.5").await;
    assert_eq!(
        tagent.send(&monitor(id, "127.0.0.5", &group)).await,
        json!({"Status":"OK"})
    );
    let t = common::tagent_json(&hub, id).await;
    assert_eq!(t["status"], "connected");
    assert_eq!(t["disconnect_reason"], Value::Null);
    assert_eq!(t["session"]["protocol"], "compat");
    assert_eq!(t["session"]["version"], "1.5.4");
    assert_eq!(t["session"]["ip_string"], "127.0.0.5");
    assert_eq!(t["session"]["mem"], 41.0);
    // The persisted status follows, batched.
    wait_until(&hub, id, "persisted connected", |t| t["runner"] == 1).await;

    // agentId and port as strings, CRLF line ending: the same session.
    let mut line = monitor(id, "127.0.0.5", &group);
    line["agentId"] = json!(id.to_string());
    line["port"] = json!("3939");
    tagent.send_raw(format!("{line}\r\n").as_bytes()).await;
    assert_eq!(tagent.line().await, json!({"Status":"OK"}));
    assert_eq!(
        common::tagent_json(&hub, id).await["session"]["heartbeats"],
        2
    );
    let m = hub.metrics().await;
    assert_eq!(
        m.value("tagent_hub_heartbeats_total{protocol=\"compat\"}"),
        2.0
    );
    assert_eq!(m.value("tagent_hub_sessions{protocol=\"compat\"}"), 1.0);
}

#[tokio::test]
async fn every_line_gets_exactly_one_reply() {
    let hub = Server::start_with(quick(""));
    let (id, group) = hub.register_tagent("demo", "127.0.0.6", "cred").await;
    let mut tagent = Tagent::connect_from(hub.heartbeat_addr(), "127.0.0.6").await;
    assert_eq!(
        tagent.send(&json!({"type":"hello"})).await,
        json!({"Status":"OK"})
    );
    tagent.send_raw(b"not json at all\n").await;
    assert_eq!(tagent.line().await, json!({"Status":"OK"}));
    assert_eq!(tagent.send(&json!([1, 2])).await, json!({"Status":"OK"}));
    let blank = tagent
        .send(&json!({"type":"monitor","tenant":"  ","agentId":id,"port":3939}))
        .await;
    assert_eq!(
        blank,
        json!({"Status":"ERROR:Tenant is blank in the file 'tagent.conf' "})
    );
    let bad = tagent
        .send(&json!({"type":"monitor","tenant":"demo","agentId":id,"port":"x"}))
        .await;
    assert!(
        bad["Status"].as_str().unwrap().starts_with("ERROR:"),
        "{bad}"
    );
    let no_port = tagent
        .send(&json!({"type":"monitor","tenant":"demo","agentId":id}))
        .await;
    assert!(
        no_port["Status"].as_str().unwrap().starts_with("ERROR:"),
        "{no_port}"
    );
    // Two lines in one write: two replies, in order.
    let hb = monitor(id, "127.0.0.6", &group);
    tagent
        .send_raw(format!("{hb}\n{{\"type\":\"x\"}}\n").as_bytes())
        .await;
    assert_eq!(tagent.line().await, json!({"Status":"OK"}));
    assert_eq!(tagent.line().await, json!({"Status":"OK"}));
    assert!(
        tagent
            .line_within(Duration::from_millis(300))
            .await
            .is_none(),
        "no extra line"
    );
    assert_eq!(
        hub.metrics().await.value("tagent_hub_ignored_lines_total"),
        4.0
    );
}

#[tokio::test]
async fn fin_and_rst_show_disconnected_with_their_reason() {
    let hub = Server::start_with(quick(""));
    let (a, group) = hub.register_tagent("demo", "127.0.0.7", "cred").await;
    let (b, _) = hub.register_tagent("demo", "127.0.0.8", "cred").await;

    let mut ta = Tagent::connect_from(hub.heartbeat_addr(), "127.0.0.7").await;
    ta.send(&monitor(a, "127.0.0.7", &group)).await;
    drop(ta); // FIN
    let t = wait_until(&hub, a, "disconnected", |t| t["status"] == "disconnected").await;
    assert_eq!(t["session"], Value::Null);
    wait_until(&hub, a, "persisted eof", |t| {
        t["disconnect_reason"] == "eof"
    })
    .await;

    let mut tb = Tagent::connect_from(hub.heartbeat_addr(), "127.0.0.8").await;
    tb.send(&monitor(b, "127.0.0.8", &group)).await;
    let stream = tb.reader.into_inner().reunite(tb.writer).unwrap();
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(stream); // RST
    wait_until(&hub, b, "persisted reset", |t| {
        t["disconnect_reason"] == "reset"
    })
    .await;
    let m = hub.metrics().await;
    assert_eq!(
        m.value("tagent_hub_sessions_closed_total{reason=\"eof\"}"),
        1.0
    );
    assert_eq!(
        m.value("tagent_hub_sessions_closed_total{reason=\"reset\"}"),
        1.0
    );
}

/// The reason a session closed shows the moment the tagent shows
/// disconnected, not once the status batch commits: with a 60 s flush,
/// nothing this test reads can have been committed.
#[tokio::test]
async fn the_disconnect_reason_shows_with_the_status_before_it_is_committed() {
    let hub =
        Server::start_with(Options::default().config("[heartbeat]\nstatus_flush_ms = 60000\n"));
    let (id, group) = hub.register_tagent("demo", "127.0.0.9", "cred").await;
    let mut tagent = Tagent::connect_from(hub.heartbeat_addr(), "127.0.0.9").await;
    assert_eq!(
        tagent.send(&monitor(id, "127.0.0.9", &group)).await,
        json!({"Status":"OK"})
    );
    let t = common::tagent_json(&hub, id).await;
    assert_eq!(t["status"], "connected");
    let registered = t["last_status_change_ms"].clone();
    drop(tagent); // FIN
    let t = wait_until(&hub, id, "disconnected", |t| t["status"] == "disconnected").await;
    assert_eq!(t["disconnect_reason"], "eof", "{t}");
    // The store still has the status of the registration: the reason came
    // from the hub, before any commit.
    assert_eq!(t["last_status_change_ms"], registered, "{t}");
    assert_eq!(t["runner"], Value::Null, "{t}");
}

#[tokio::test]
async fn updategroup_only_when_the_runner_list_differs() {
    let config = "[[runner_group]]\nid = 7\nname = \"dc\"\nnetworks = [\"127.0.0.0/8\"]\n\
                  [[runner_group.runner]]\nid = 2\nname = \"b\"\nheartbeat = \"10.0.0.22:8888\"\n\
                  [[runner_group.runner]]\nid = 1\nname = \"a\"\nheartbeat = \"10.0.0.21:8888\"\n\
                  [heartbeat]\nstatus_flush_ms = 10\n";
    let hub = Server::with_config(config);
    let (id, group) = hub.register_tagent("demo", "127.0.0.9", "cred").await;
    assert_eq!(group, "10.0.0.21:8888,10.0.0.22:8888");
    let mut tagent = Tagent::connect_from(hub.heartbeat_addr(), "127.0.0.9").await;
    assert_eq!(
        tagent.send(&monitor(id, "127.0.0.9", &group)).await,
        json!({"Status":"OK"})
    );
    let reply = tagent
        .send(&monitor(id, "127.0.0.9", "10.0.0.21:8888"))
        .await;
    assert_eq!(
        reply,
        json!({"type":"updategroup","isNew":"1","groupinfo":"10.0.0.21:8888,10.0.0.22:8888","Status":"OK"})
    );
}

#[tokio::test]
async fn unregistered_tagent_gets_ok_then_a_reload() {
    let hub = Server::start_with(quick(""));
    let (id, group) = hub.register_tagent("demo", "127.0.0.10", "cred").await;
    let mut tagent = Tagent::connect_from(hub.heartbeat_addr(), "127.0.0.10").await;
    // Wrong agentId (as after the hub's store was replaced): OK, not connected.
    assert_eq!(
        tagent.send(&monitor(id + 100, "127.0.0.10", &group)).await,
        json!({"Status":"OK"})
    );
    let t = common::tagent_json(&hub, id).await;
    assert_eq!(t["status"], "disconnected");
    // Once quiet, the hub asks it to restart and register again.
    let line = tagent.line_within(WAIT).await.expect("a reload");
    assert_eq!(
        serde_json::from_str::<Value>(&line).unwrap(),
        json!({"type":"reload"})
    );
    let m = hub.metrics().await;
    assert_eq!(m.value("tagent_hub_unregistered_sessions_total"), 1.0);
    assert_eq!(m.value("tagent_hub_reloads_sent_total"), 1.0);
    // Operators see it, and never as the registered tagent's status.
    let (status, body) = hub.get("/api/v1/sessions/unregistered").await;
    assert_eq!(status, 200);
    let list: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["count"], 1, "{list}");
    assert_eq!(list["sessions"][0]["tenant"], "demo");
    assert_eq!(list["sessions"][0]["ip"], "127.0.0.10");
    assert_eq!(list["sessions"][0]["registered"], false);
    // An unknown tenant is unregistered too.
    let mut other = Tagent::connect_from(hub.heartbeat_addr(), "127.0.0.11").await;
    let mut hb = monitor(1, "127.0.0.11", &group);
    hb["tenant"] = json!("nosuchtenant");
    assert_eq!(other.send(&hb).await, json!({"Status":"OK"}));
}

#[tokio::test]
async fn a_reconnect_replaces_the_old_session_and_its_close_never_touches_the_new() {
    let hub = Server::start_with(quick(""));
    let (id, group) = hub.register_tagent("demo", "127.0.0.12", "cred").await;
    let mut old = Tagent::connect_from(hub.heartbeat_addr(), "127.0.0.12").await;
    old.send(&monitor(id, "127.0.0.12", &group)).await;
    for _ in 0..10 {
        let mut new = Tagent::connect_from(hub.heartbeat_addr(), "127.0.0.12").await;
        assert_eq!(
            new.send(&monitor(id, "127.0.0.12", &group)).await,
            json!({"Status":"OK"})
        );
        assert!(
            old.closed().await,
            "the replaced session is closed by the hub"
        );
        old = new;
    }
    let m = hub.metrics().await;
    assert_eq!(
        m.value("tagent_hub_sessions_closed_total{reason=\"replaced\"}"),
        10.0
    );
    // The replaced sessions' ends did not mark the tagent disconnected.
    hub.get("/healthz").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = common::tagent_json(&hub, id).await;
    assert_eq!(t["status"], "connected", "{t}");
    assert_eq!(m.value("tagent_hub_sessions{protocol=\"compat\"}"), 1.0);
    assert_eq!(
        old.send(&monitor(id, "127.0.0.12", &group)).await,
        json!({"Status":"OK"})
    );
}

#[tokio::test]
async fn silent_sessions_are_closed_after_the_idle_timeout() {
    let hub = Server::start_with(quick("idle_timeout_secs = 1\n"));
    let (id, group) = hub.register_tagent("demo", "127.0.0.13", "cred").await;
    let mut tagent = Tagent::connect_from(hub.heartbeat_addr(), "127.0.0.13").await;
    tagent.send(&monitor(id, "127.0.0.13", &group)).await;
    assert!(tagent.closed().await, "closed for idleness");
    wait_until(&hub, id, "idle-timeout", |t| {
        t["disconnect_reason"] == "idle-timeout"
    })
    .await;
}

#[tokio::test]
async fn commands_wait_for_a_quiet_session_and_never_answer_a_heartbeat() {
    let hub = Server::start_with(quick(""));
    let (id, group) = hub.register_tagent("demo", "127.0.0.14", "cred").await;
    let mut tagent = Tagent::connect_from(hub.heartbeat_addr(), "127.0.0.14").await;
    tagent.send(&monitor(id, "127.0.0.14", &group)).await;

    // A heartbeat is in flight (half a line received) when the command comes.
    let line = format!("{}\n", monitor(id, "127.0.0.14", &group));
    let (head, tail) = line.split_at(line.len() / 2);
    tagent.send_raw(head.as_bytes()).await;
    let url = hub.url(&format!("/api/v1/tagents/{id}/reload"));
    let command = tokio::spawn(async move {
        let resp = common::client().post(url).send().await.unwrap();
        common::reply_json(resp).await
    });
    assert!(
        tagent
            .line_within(Duration::from_millis(700))
            .await
            .is_none(),
        "nothing may be written while a heartbeat is in flight"
    );
    tagent.send_raw(tail.as_bytes()).await;
    assert_eq!(
        tagent.line().await,
        json!({"Status":"OK"}),
        "the heartbeat's reply comes first"
    );
    assert_eq!(
        tagent.line().await,
        json!({"type":"reload"}),
        "then, alone, the command"
    );
    let (status, result) = command.await.unwrap();
    assert_eq!(
        (status, result["result"].as_str()),
        (200, Some("delivered")),
        "{result}"
    );

    let (status, result) = post(&hub, &format!("/api/v1/tagents/{id}/resetcred")).await;
    assert_eq!(
        (status, result["result"].as_str()),
        (200, Some("delivered"))
    );
    assert_eq!(tagent.line().await, json!({"type":"resetcred"}));

    let (status, check) = post(&hub, &format!("/api/v1/tagents/{id}/status-check")).await;
    assert_eq!((status, check["result"].as_str()), (200, Some("connected")));

    drop(tagent);
    wait_until(&hub, id, "disconnected", |t| t["status"] == "disconnected").await;
    let (status, result) = post(&hub, &format!("/api/v1/tagents/{id}/reload")).await;
    assert_eq!(
        (status, result["result"].as_str()),
        (409, Some("not-connected"))
    );
    let (status, _) = post(&hub, "/api/v1/tagents/999999/reload").await;
    assert_eq!(status, 404);
    let m = hub.metrics().await;
    assert_eq!(
        m.value("tagent_hub_commands_total{command=\"reload\",result=\"delivered\"}"),
        1.0
    );
}

#[tokio::test]
async fn hostile_connections_are_closed_and_counted() {
    let hub = Server::start_with(quick(
        "first_message_timeout_secs = 1\nmax_line_bytes = 1024\nmax_frame_bytes = 1024\n",
    ));
    let addr = hub.heartbeat_addr();
    // Silent: closed at the first-message deadline.
    let mut silent = Tagent::connect(addr).await;
    assert!(silent.closed().await);
    // One byte a while: still the same deadline.
    let mut slow = Tagent::connect(addr).await;
    slow.send_raw(b"{").await;
    assert!(slow.closed().await);
    // A line past the limit.
    let mut long = Tagent::connect(addr).await;
    long.send_raw(&vec![b'{'; 2048]).await;
    assert!(long.closed().await);
    // Unknown first bytes.
    let mut junk = Tagent::connect(addr).await;
    junk.send_raw(b"GET / HTTP/1.1\r\n\r\n").await;
    assert!(junk.closed().await);
    // A native frame header announcing 4 GiB: refused before any payload.
    let mut big = Tagent::connect(addr).await;
    big.send_raw(&MAGIC).await;
    big.send_raw(&[0xff, 0xff, 0xff, 0xff]).await;
    assert!(big.closed().await);
    // Invalid UTF-8 in a line: answered, not processed.
    let mut bad = Tagent::connect(addr).await;
    bad.send_raw(b"{\"type\":\"monitor\xff\xfe\"}\n").await;
    assert!(bad.line_within(WAIT).await.is_some());
    let m = hub.metrics().await;
    assert!(
        m.value("tagent_hub_connection_errors_total{kind=\"first_message_timeout\"}") >= 2.0,
        "{}",
        m.text
    );
    assert!(
        m.value("tagent_hub_connection_errors_total{kind=\"too_long\"}") >= 2.0,
        "{}",
        m.text
    );
    assert_eq!(
        m.value("tagent_hub_connection_errors_total{kind=\"unknown_protocol\"}"),
        1.0
    );
}

#[tokio::test]
async fn connections_beyond_max_sessions_are_closed_at_once() {
    let hub = Server::start_with(quick("max_sessions = 3\n"));
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(Tagent::connect(hub.heartbeat_addr()).await);
    }
    // Let the hub accept them.
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Closed at once: with a reset, which may even beat the connect call.
    if let Ok(stream) = TcpStream::connect(hub.heartbeat_addr()).await {
        let mut extra = Tagent::new(stream);
        assert!(extra.closed().await);
    }
    let m = hub.metrics().await;
    assert_eq!(
        m.value("tagent_hub_connection_errors_total{kind=\"max_sessions\"}"),
        1.0
    );
}

#[tokio::test]
async fn compat_can_be_restricted_by_network() {
    let hub = Server::start_with(quick("compat_networks = [\"10.0.0.0/8\"]\n"));
    let mut tagent = Tagent::connect(hub.heartbeat_addr()).await;
    tagent.send_raw(b"{\"type\":\"monitor\"}\n").await;
    assert!(tagent.closed().await);
    assert_eq!(
        hub.metrics()
            .await
            .value("tagent_hub_connection_errors_total{kind=\"compat_refused\"}"),
        1.0
    );
}

fn identity(id: u64, ip: &str) -> Identity {
    common::identity("demo", id, Some(ip))
}

#[tokio::test]
async fn native_session_authenticates_heartbeats_and_takes_commands() {
    let hub = Server::start_with(quick(""));
    let (id, group) = hub.register_tagent("demo", "127.0.0.20", "s3cret").await;
    let mut client =
        NativeClient::connect(hub.heartbeat_addr(), &identity(id, "127.0.0.20"), "s3cret")
            .await
            .expect("handshake");
    assert_eq!(client.tagent_id, id);
    assert_eq!(client.proxy_group, group);
    for i in 1..=3 {
        let ack = client.heartbeat(Some(1.5), Some(20.0)).await.unwrap();
        assert_eq!(ack.seq, i);
    }
    let t = common::tagent_json(&hub, id).await;
    assert_eq!(
        (t["status"].as_str(), t["session"]["protocol"].as_str()),
        (Some("connected"), Some("native"))
    );
    assert_eq!(t["session"]["pcpu"], 1.5);

    let url = hub.url(&format!("/api/v1/tagents/{id}/resetcred"));
    let command = tokio::spawn(async move {
        let resp = common::client().post(url).send().await.unwrap();
        common::reply_json(resp).await
    });
    match client.next_event().await.unwrap() {
        Event::Command { id: cid, kind } => {
            assert_eq!(kind, CommandKind::Resetcred);
            client.command_result(cid, true, None).await.unwrap();
        }
        other => panic!("expected a command, got {other:?}"),
    }
    let (status, result) = command.await.unwrap();
    assert_eq!(
        (status, result["result"].as_str()),
        (200, Some("delivered"))
    );
    assert_eq!(
        hub.metrics()
            .await
            .value("tagent_hub_heartbeats_total{protocol=\"native\"}"),
        3.0
    );
    client.bye().await.unwrap();
    wait_until(&hub, id, "disconnected", |t| t["status"] == "disconnected").await;
}

#[tokio::test]
async fn native_forged_or_replayed_proofs_are_refused() {
    let hub = Server::start_with(quick(""));
    let (id, _) = hub.register_tagent("demo", "127.0.0.21", "right").await;
    let id_ = identity(id, "127.0.0.21");
    match NativeClient::connect(hub.heartbeat_addr(), &id_, "wrong").await {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, "auth-failed"),
        Err(e) => panic!("expected auth-failed, got {e}"),
        Ok(_) => panic!("a wrong credential was accepted"),
    }
    // Unknown tagent.
    match NativeClient::connect(
        hub.heartbeat_addr(),
        &identity(id + 1, "127.0.0.21"),
        "right",
    )
    .await
    {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, "unknown-tagent"),
        other => panic!("expected unknown-tagent, got {:?}", other.err()),
    }
    // Replay: a valid proof for another connection's nonce.
    let mut s = TcpStream::connect(hub.heartbeat_addr()).await.unwrap();
    s.write_all(&MAGIC).await.unwrap();
    let mut out = Vec::new();
    proto::encode_frame(
        &proto::ClientMsg::Hello {
            v: 1,
            tenant: "demo".into(),
            agent_id: id,
            ip: Some("127.0.0.21".into()),
            port: 3939,
            version: None,
        },
        &mut out,
    );
    s.write_all(&out).await.unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.unwrap();
    let mut challenge = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut challenge).await.unwrap();
    let stale = proto::proof(b"right", &[7u8; 32], "demo", id, 3939);
    out.clear();
    proto::encode_frame(
        &proto::ClientMsg::Auth {
            proof: stale[..].into(),
        },
        &mut out,
    );
    s.write_all(&out).await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut rest))
        .await
        .expect("closed");
    let msg: proto::ServerMsg<'_> = rmp_serde::from_slice(&rest[4..]).unwrap();
    assert!(
        matches!(msg, proto::ServerMsg::Error { ref code, .. } if code == "auth-failed"),
        "{msg:?}"
    );
    let m = hub.metrics().await;
    assert_eq!(
        m.value("tagent_hub_auth_failures_total{reason=\"bad_proof\"}"),
        2.0
    );
    assert_eq!(
        m.value("tagent_hub_auth_failures_total{reason=\"unknown_tagent\"}"),
        1.0
    );
    // And the right credential still works.
    NativeClient::connect(hub.heartbeat_addr(), &id_, "right")
        .await
        .expect("handshake");
}

#[tokio::test]
async fn shutdown_says_goodbye_and_restart_starts_everyone_disconnected() {
    let mut hub = Server::start_with(quick(""));
    let (a, group) = hub.register_tagent("demo", "127.0.0.30", "c").await;
    let (b, _) = hub.register_tagent("demo", "127.0.0.31", "c").await;
    let mut client = NativeClient::connect(hub.heartbeat_addr(), &identity(a, "127.0.0.30"), "c")
        .await
        .unwrap();
    client.heartbeat(None, None).await.unwrap();
    let mut tagent = Tagent::connect_from(hub.heartbeat_addr(), "127.0.0.31").await;
    tagent.send(&monitor(b, "127.0.0.31", &group)).await;
    wait_until(&hub, b, "persisted connected", |t| t["runner"] == 1).await;

    let stopping = std::thread::spawn(move || {
        let status = hub.stop();
        (hub, status)
    });
    assert_eq!(
        client.next_event().await.unwrap(),
        Event::Goodbye("shutdown".into())
    );
    assert!(tagent.closed().await);
    let (mut hub, status) = stopping.join().unwrap();
    assert!(status.success(), "clean exit: {status:?}");

    hub.restart();
    let t = common::tagent_json(&hub, b).await;
    assert_eq!(
        (t["status"].as_str(), t["disconnect_reason"].as_str()),
        (Some("disconnected"), Some("shutdown"))
    );

    // Killed while connected: after the restart the reason is `restart`.
    let mut tagent = Tagent::connect_from(hub.heartbeat_addr(), "127.0.0.31").await;
    tagent.send(&monitor(b, "127.0.0.31", &group)).await;
    wait_until(&hub, b, "persisted connected", |t| {
        t["status"] == "connected"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    hub.kill9();
    hub.restart();
    let t = common::tagent_json(&hub, b).await;
    assert_eq!(
        (t["status"].as_str(), t["disconnect_reason"].as_str()),
        (Some("disconnected"), Some("restart"))
    );
}

#[tokio::test]
async fn idle_sessions_park_and_wake_for_heartbeats_commands_and_close() {
    let hub = Server::start_with(quick(""));
    let (a, group) = hub.register_tagent("demo", "127.0.0.40", "c").await;
    let (b, _) = hub.register_tagent("demo", "127.0.0.41", "c").await;
    let mut ta = Tagent::connect_from(hub.heartbeat_addr(), "127.0.0.40").await;
    ta.send(&monitor(a, "127.0.0.40", &group)).await;
    let mut nb = NativeClient::connect(hub.heartbeat_addr(), &identity(b, "127.0.0.41"), "c")
        .await
        .unwrap();
    nb.heartbeat(None, None).await.unwrap();

    // Quiet for a while: both give up their tasks.
    let parked = |m: &common::Metrics| m.value("tagent_hub_parked_sessions");
    let deadline = Instant::now() + WAIT;
    while parked(&hub.metrics().await) < 2.0 {
        assert!(Instant::now() < deadline, "sessions never parked");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A heartbeat wakes a parked session.
    assert_eq!(
        ta.send(&monitor(a, "127.0.0.40", &group)).await,
        json!({"Status":"OK"})
    );
    assert_eq!(nb.heartbeat(None, None).await.unwrap().seq, 2);

    // A command wakes one too.
    while parked(&hub.metrics().await) < 2.0 {
        assert!(
            Instant::now() < deadline + WAIT,
            "sessions never parked again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, r) = post(&hub, &format!("/api/v1/tagents/{a}/reload")).await;
    assert_eq!((status, r["result"].as_str()), (200, Some("delivered")));
    assert_eq!(ta.line().await, json!({"type":"reload"}));
    let url = hub.url(&format!("/api/v1/tagents/{b}/reload"));
    let command = tokio::spawn(async move {
        let resp = common::client().post(url).send().await.unwrap();
        common::reply_json(resp).await
    });
    let Event::Command { id, .. } = nb.next_event().await.unwrap() else {
        panic!("expected a command")
    };
    nb.command_result(id, true, None).await.unwrap();
    assert_eq!(command.await.unwrap().1["result"], "delivered");

    // And the peer going away is seen while parked.
    while parked(&hub.metrics().await) < 1.0 {
        assert!(Instant::now() < deadline + WAIT + WAIT, "never parked");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(ta);
    drop(nb);
    wait_until(&hub, a, "disconnected", |t| t["status"] == "disconnected").await;
    wait_until(&hub, b, "disconnected", |t| t["status"] == "disconnected").await;
    assert_eq!(parked(&hub.metrics().await), 0.0);
}

#[tokio::test]
async fn native_can_be_switched_off_and_advertise_comes_from_the_environment() {
    let hub = Server::start_with(
        quick("native = false\n").env("TAGENT_HUB_ADVERTISE", "hub.example.internal:9888"),
    );
    let (id, group) = hub.register_tagent("demo", "127.0.0.50", "c").await;
    assert_eq!(group, "hub.example.internal:9888");
    match NativeClient::connect(hub.heartbeat_addr(), &identity(id, "127.0.0.50"), "c").await {
        Err(_) => {}
        Ok(_) => panic!("a native session was accepted with native = false"),
    }
    let m = hub.metrics().await;
    assert_eq!(
        m.value("tagent_hub_connection_errors_total{kind=\"native_refused\"}"),
        1.0
    );
    // The compat protocol still works.
    let mut tagent = Tagent::connect_from(hub.heartbeat_addr(), "127.0.0.50").await;
    assert_eq!(
        tagent.send(&monitor(id, "127.0.0.50", &group)).await,
        json!({"Status":"OK"})
    );
}
