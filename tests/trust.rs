//! Trust on the heartbeat port, tried as an attacker would over real
//! sockets (issue 13, SPEC §6): impostor compat lines, displacing a session
//! that proved its credential, trusted NAT ranges, and reply amplification.
//! Each attack asserts its refusal and counter, and that nothing of the real
//! tagent changed: its session, its record, its credential.
//!
//! Every loop is bounded in count and time; only loopback addresses are used.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Options, Server, Tagent, WAIT, connect_from};
use serde_json::{Value, json};
use tagent_hub::heartbeat::client::{Identity, NativeClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn quick(extra: &str) -> Options {
    Options::default().config(&format!(
        "[heartbeat]\ncommand_quiet_ms = 200\nstatus_flush_ms = 10\n{extra}"
    ))
}

fn monitor(tid: u64, mgmt_ip: &str, ips: &str, group: &str) -> Value {
    json!({"type":"monitor","tenant":"demo","agentId":tid,"port":3939,"ipString":ips,
           "proxyGroup":group,"pcpu":0.3,"mem":41,"status":"working","version":"1.5.4",
           "mgmtIp":mgmt_ip})
}

fn identity(id: u64, ip: &str) -> Identity {
    common::identity("demo", id, Some(ip))
}

/// The tagent's record once its connected status is persisted (through
/// this hub's runner), without what a heartbeat moves (its session's
/// counters and times).
async fn record(hub: &Server, id: u64) -> Value {
    let deadline = Instant::now() + WAIT;
    while common::tagent_json(hub, id).await["runner"] != 1 {
        assert!(
            Instant::now() < deadline,
            "tagent {id} never persisted connected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut t = common::tagent_json(hub, id).await;
    let session = t.as_object_mut().unwrap().remove("session");
    let session = session.unwrap_or(Value::Null);
    json!({"record": t, "protocol": session["protocol"], "peer": session["peer"]})
}

/// Send `line` and expect the refusal: an `ERROR:` reply, then the close.
async fn refused(t: &mut Tagent, line: &Value) -> String {
    let reply = t.send(line).await;
    let status = reply["Status"].as_str().unwrap_or_default().to_owned();
    assert!(status.starts_with("ERROR:"), "not refused: {reply}");
    assert!(t.closed().await, "the refused connection stays open");
    status
}

#[tokio::test]
async fn an_impostor_naming_another_tagents_ip_is_refused_and_the_real_session_stays() {
    let hub = Server::start_with(quick(""));
    let (a, group) = hub.register_tagent("demo", "127.0.20.1", "cred-a").await;
    let addr = hub.heartbeat_addr();
    let mut real = Tagent::connect_from(addr, "127.0.20.1").await;
    let line = monitor(a, "127.0.20.1", "127.0.20.1", &group);
    assert_eq!(real.send(&line).await, json!({"Status":"OK"}));
    let before = record(&hub, a).await;
    assert_eq!(before["record"]["status"], "connected");
    assert_eq!(before["protocol"], "compat");

    // From another loopback address: with the right agentId, without one,
    // and listing its own address in ipString (a known tagent's ips are the
    // registered ones, not what a line says).
    let mut forged = vec![line.clone(), monitor(0, "127.0.20.1", "127.0.20.1", &group)];
    forged.push(monitor(a, "127.0.20.1", "127.0.20.1,127.0.20.2", &group));
    for attack in &forged {
        let mut impostor = Tagent::connect_from(addr, "127.0.20.2").await;
        let status = refused(&mut impostor, attack).await;
        assert!(status.contains("compat_trusted_networks"), "{status}");
    }

    // The real session is untouched and still answered.
    assert_eq!(real.send(&line).await, json!({"Status":"OK"}));
    let after = record(&hub, a).await;
    assert_eq!(after, before);
    let t = common::tagent_json(&hub, a).await;
    assert_eq!(t["session"]["heartbeats"], 2, "{t}");
    let m = hub.metrics().await;
    assert_eq!(
        m.value("tagent_hub_identity_refused_total{reason=\"impostor\"}"),
        3.0
    );
    assert_eq!(m.value("tagent_hub_unregistered_sessions_total"), 0.0);
    // Its credential is the one it registered with.
    let native = NativeClient::connect(addr, &identity(a, "127.0.20.1"), "cred-a").await;
    assert_eq!(
        native.expect("the real credential still proves").tagent_id,
        a
    );
}

#[tokio::test]
async fn a_compat_line_never_displaces_a_session_that_proved_its_credential() {
    let hub = Server::start_with(quick(""));
    let (b, group) = hub.register_tagent("demo", "127.0.21.1", "cred-b").await;
    let addr = hub.heartbeat_addr();
    let stream = connect_from(addr, "127.0.21.1".parse().unwrap())
        .await
        .unwrap();
    let mut native = NativeClient::handshake(stream, &identity(b, "127.0.21.1"), "cred-b")
        .await
        .expect("welcome");
    let before = record(&hub, b).await;
    assert_eq!(before["protocol"], "native");

    // Even from the tagent's own address, named or unnamed.
    for line in [
        monitor(b, "127.0.21.1", "127.0.21.1", &group),
        monitor(0, "127.0.21.1", "127.0.21.1", &group),
    ] {
        let mut t = Tagent::connect_from(addr, "127.0.21.1").await;
        let status = refused(&mut t, &line).await;
        assert!(status.contains("proved its credential"), "{status}");
    }
    // The native session was not told goodbye and still gets its acks.
    for _ in 0..3 {
        native.heartbeat(Some(0.1), Some(1.0)).await.expect("acked");
    }
    assert_eq!(record(&hub, b).await, before);
    let m = hub.metrics().await;
    assert_eq!(
        m.value("tagent_hub_identity_refused_total{reason=\"proved_session\"}"),
        2.0
    );
    assert_eq!(
        m.value("tagent_hub_sessions_closed_total{reason=\"replaced\"}"),
        0.0
    );
    // Another native session that proves the credential does replace it.
    let stream = connect_from(addr, "127.0.21.1".parse().unwrap())
        .await
        .unwrap();
    NativeClient::handshake(stream, &identity(b, "127.0.21.1"), "cred-b")
        .await
        .expect("a second proof is welcome");
}

#[tokio::test]
async fn a_tagent_may_connect_from_any_of_its_ips_and_a_trusted_range_from_anywhere() {
    let hub = Server::start_with(quick("compat_trusted_networks = [\"127.0.22.0/24\"]\n"));
    let addr = hub.heartbeat_addr();
    // Registered with two NICs; its heartbeats leave from the second.
    let (status, reply) = hub
        .register(
            &json!({"tagentId":"","port":"3939","ipString":"127.0.23.1,127.0.23.2",
                    "mgmtIp":"127.0.23.1","name":"h","credential":"c"}),
            Some("demo"),
        )
        .await;
    let c = common::ok_id(status, &reply);
    let line = monitor(c, "127.0.23.1", "127.0.23.1,127.0.23.2", "");
    let mut nic2 = Tagent::connect_from(addr, "127.0.23.2").await;
    assert_eq!(nic2.send(&line).await["Status"], "OK");
    let t = common::tagent_json(&hub, c).await;
    assert_eq!(t["status"], "connected");
    assert!(
        t["session"]["peer"]
            .as_str()
            .unwrap()
            .starts_with("127.0.23.2:")
    );
    drop(nic2);

    // Through the NAT range: any identity may be claimed.
    let mut proxy = Tagent::connect_from(addr, "127.0.22.9").await;
    assert_eq!(proxy.send(&line).await["Status"], "OK");
    let deadline = Instant::now() + WAIT;
    loop {
        let t = common::tagent_json(&hub, c).await;
        if t["session"]["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.22.9:"))
        {
            assert_eq!(t["status"], "connected");
            break;
        }
        assert!(Instant::now() < deadline, "the proxy never holds it: {t}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Outside it, not.
    let mut outside = Tagent::connect_from(addr, "127.0.24.9").await;
    refused(&mut outside, &line).await;
    let m = hub.metrics().await;
    assert_eq!(
        m.value("tagent_hub_identity_refused_total{reason=\"impostor\"}"),
        1.0
    );
}

/// Write `chunk` until the hub closes the connection or `limit` bytes are
/// sent, never reading; the bytes written.
async fn flood(stream: &mut tokio::net::TcpStream, chunk: &[u8], limit: usize) -> usize {
    let started = Instant::now();
    let mut sent = 0;
    while sent < limit && started.elapsed() < Duration::from_secs(20) {
        match tokio::time::timeout(Duration::from_secs(2), stream.write_all(chunk)).await {
            Ok(Ok(())) => sent += chunk.len(),
            // Closed by the hub, or no longer read at all: either way done.
            Ok(Err(_)) | Err(_) => break,
        }
    }
    sent
}

/// Read what the hub had queued for `stream` until it closes (bounded).
async fn drain(stream: &mut tokio::net::TcpStream) -> Option<usize> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
            Ok(Ok(n)) => got += n,
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn pipelined_lines_never_read_cannot_make_the_hub_queue_replies() {
    const BOUND: usize = 16 * 1024;
    let hub = Server::start_with(quick(&format!("compat_max_unsent_bytes = {BOUND}\n")));
    let addr = hub.heartbeat_addr();
    let (id, group) = hub.register_tagent("demo", "127.0.26.1", "c").await;
    let mut legit = Tagent::connect_from(addr, "127.0.26.1").await;
    let line = monitor(id, "127.0.26.1", "127.0.26.1", &group);
    assert_eq!(legit.send(&line).await["Status"], "OK");

    // Each empty line would be answered with 16 bytes: 64 KiB of them
    // asks for 1 MiB of replies. Three attackers, 4 MiB each at most.
    let mut attackers = Vec::new();
    for src in ["127.0.26.101", "127.0.26.102", "127.0.26.103"] {
        let addr: SocketAddr = addr;
        attackers.push(tokio::spawn(async move {
            let mut s = connect_from(addr, src.parse().unwrap()).await.unwrap();
            let sent = flood(&mut s, &[b'\n'; 64 * 1024], 4 << 20).await;
            (sent, drain(&mut s).await)
        }));
        // The real tagent is answered while they flood.
        assert_eq!(legit.send(&line).await["Status"], "OK");
    }
    for a in attackers {
        let (sent, received) = a.await.unwrap();
        let received = received.expect("the hub closes a connection that reads no replies");
        // What reached the attacker is at most what the hub ever queued for
        // it: the bound and the kernel send buffer sized to it (doubled by
        // Linux), not 16 bytes per line sent.
        assert!(
            received <= 3 * BOUND + 64,
            "{received} reply bytes queued for {sent} sent"
        );
        assert!(sent > received, "sent {sent}, received {received}");
        eprintln!("amplification: {sent} bytes of empty lines sent, {received} reply bytes got");
    }
    let m = hub.metrics().await;
    assert_eq!(
        m.value("tagent_hub_connection_errors_total{kind=\"unread_replies\"}"),
        3.0
    );
    assert_eq!(legit.send(&line).await["Status"], "OK");
    assert_eq!(
        common::tagent_json(&hub, id).await["session"]["heartbeats"],
        5
    );

    // A tagent that reads its replies may send a few lines back to back.
    let mut burst = Tagent::connect_from(addr, "127.0.26.1").await;
    burst.send_raw(b"\n\n\n\n\n\n\n\n").await;
    for _ in 0..8 {
        assert_eq!(burst.line().await, json!({"Status":"OK"}));
    }
}

#[tokio::test]
async fn unregistered_sessions_keep_a_few_hundred_bytes_and_list_in_pages() {
    let hub = Server::start_with(quick(""));
    let addr = hub.heartbeat_addr();
    // Five sessions no tagent answers for, each claiming its own address
    // with an 8 KB version and a 200-ip ipString.
    let ips: Vec<String> = (0..200)
        .map(|i| format!("10.1.{}.{}", i / 250, i % 250))
        .collect();
    let mut held = Vec::new();
    for n in 1..=5 {
        let me = format!("127.0.27.{n}");
        let mut hb = monitor(0, &me, &format!("{me},{}", ips.join(",")), "");
        hb["version"] = json!("v".repeat(8192));
        let mut t = Tagent::connect_from(addr, &me).await;
        assert_eq!(t.send(&hb).await["Status"], "OK");
        held.push(t);
    }
    let page = |query: String| {
        let hub = &hub;
        async move {
            let (status, body) = hub
                .get(&format!("/api/v1/sessions/unregistered{query}"))
                .await;
            (status, serde_json::from_str::<Value>(&body).unwrap())
        }
    };
    let mut peers = Vec::new();
    let mut cursor = String::new();
    for _ in 0..5 {
        let (status, list) = page(format!("?limit=2&cursor={cursor}")).await;
        assert_eq!(status, 200, "{list}");
        assert_eq!(list["count"], 5, "{list}");
        let sessions = list["sessions"].as_array().unwrap();
        assert!(sessions.len() <= 2);
        for s in sessions {
            assert!(s["version"].as_str().unwrap().len() <= 64, "{s}");
            let kept = s["ip_string"].as_str().unwrap();
            assert!(kept.len() <= 192 && kept.starts_with("127.0.27."), "{s}");
            assert_eq!(s["registered"], false);
            peers.push(s["peer"].as_str().unwrap().to_owned());
        }
        match list["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    let expected: Vec<String> = (1..=5).map(|n| format!("127.0.27.{n}:")).collect();
    assert_eq!(peers.len(), 5, "{peers:?}");
    for (peer, prefix) in peers.iter().zip(&expected) {
        assert!(peer.starts_with(prefix), "{peers:?} not in address order");
    }
    for bad in ["?cursor=nope", "?limit=0", "?limit=1001"] {
        assert_eq!(page(bad.into()).await.0, 400, "{bad}");
    }
}
