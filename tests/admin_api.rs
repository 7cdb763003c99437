//! The admin API over real HTTP: tokens, tagents (list, filters, counts,
//! show, delete), runner groups, batch commands, the event stream, OpenAPI.

mod common;

use std::time::{Duration, Instant};

use common::{ADMIN_TOKEN, Options, Server, Tagent, WAIT};
use serde_json::{Value, json};

fn monitor(tenant: &str, tid: u64, ip: &str, group: &str) -> Value {
    json!({"type":"monitor","tenant":tenant,"agentId":tid,"port":3939,"ipString":ip,
           "proxyGroup":group,"pcpu":0.5,"mem":12,"status":"working","version":"1.5.4",
           "mgmtIp":ip})
}

/// A request with an explicit token (`None`: no Authorization header).
async fn call(
    hub: &Server,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> (u16, Value) {
    let client = common::http_builder().no_proxy().build().unwrap();
    let mut req = client.request(method.clone(), hub.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let json = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"))
    };
    (status, json)
}

async fn get(hub: &Server, path: &str) -> (u16, Value) {
    call(hub, reqwest::Method::GET, path, None, Some(ADMIN_TOKEN)).await
}

async fn send(hub: &Server, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
    call(hub, method, path, Some(body), Some(ADMIN_TOKEN)).await
}

async fn delete(hub: &Server, path: &str) -> (u16, Value) {
    call(hub, reqwest::Method::DELETE, path, None, Some(ADMIN_TOKEN)).await
}

/// Register with every field chosen; returns the id.
async fn register(
    hub: &Server,
    tenant: &str,
    ip: &str,
    ips: &str,
    port: u16,
    name: &str,
    version: &str,
) -> u64 {
    let (status, reply) = hub
        .register(
            &json!({"tagentId":"","port":port.to_string(),"ipString":ips,"mgmtIp":ip,
                    "name":name,"version":version,"credential":"secret-cred"}),
            Some(tenant),
        )
        .await;
    common::ok_id(status, &reply)
}

fn ids(page: &Value) -> Vec<u64> {
    page["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {page}"))
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect()
}

async fn list(hub: &Server, query: &str) -> Vec<u64> {
    let (status, page) = get(hub, &format!("/api/v1/tagents?{query}")).await;
    assert_eq!(status, 200, "{query}: {page}");
    ids(&page)
}

async fn wait_status(hub: &Server, id: u64, status: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let t = common::tagent_json(hub, id).await;
        if t["status"] == status {
            return;
        }
        assert!(Instant::now() < deadline, "tagent {id} never {status}: {t}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn quick() -> Options {
    Options::default().config("[heartbeat]\ncommand_quiet_ms = 100\nstatus_flush_ms = 10\n")
}

#[tokio::test]
async fn tokens_guard_the_admin_api_and_leave_the_rest_open() {
    let hub = Server::start_with(quick().config(
        "[[admin_token]]\ntoken = \"reader-token-0123456789\"\nscope = \"read\"\n\
         [heartbeat]\nstatus_flush_ms = 10\n",
    ));
    use reqwest::Method;
    let (s, body) = call(&hub, Method::GET, "/api/v1/tagents", None, None).await;
    assert_eq!(s, 401, "{body}");
    assert!(body["error"].as_str().unwrap().contains("Bearer"));
    let (s, _) = call(
        &hub,
        Method::GET,
        "/api/v1/tagents",
        None,
        Some("wrong-token-0123456789"),
    )
    .await;
    assert_eq!(s, 401);
    let (s, _) = call(
        &hub,
        Method::GET,
        "/api/v1/tagents",
        None,
        Some("reader-token-0123456789"),
    )
    .await;
    assert_eq!(s, 200, "a read token reads");
    let (s, body) = call(
        &hub,
        Method::POST,
        "/api/v1/commands",
        Some(json!({"command":"reload","all":true})),
        Some("reader-token-0123456789"),
    )
    .await;
    assert_eq!(s, 403, "a read token cannot act: {body}");
    let (s, _) = call(
        &hub,
        Method::DELETE,
        "/api/v1/tagents/1",
        None,
        Some("reader-token-0123456789"),
    )
    .await;
    assert_eq!(s, 403);
    // The environment's token is an admin token.
    let (s, _) = call(
        &hub,
        Method::DELETE,
        "/api/v1/tagents/1",
        None,
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(s, 404);
    // Registration, metrics, health and the API's description stay open.
    let (status, _) = hub
        .register(
            &json!({"tagentId":"","port":"3939","ipString":"127.0.0.1","name":"h"}),
            Some("t"),
        )
        .await;
    assert_eq!(status, 200);
    let (s, _) = hub.get("/healthz").await;
    assert_eq!(s, 200);
    let (s, doc) = call(&hub, Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(s, 200);
    for path in [
        "/api/v1/tagents",
        "/api/v1/tagents/counts",
        "/api/v1/tagents/{id}",
        "/api/v1/runner-groups",
        "/api/v1/runner-groups/{id}",
        "/api/v1/commands",
        "/api/v1/events",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is documented");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    let m = hub.metrics().await;
    assert_eq!(
        m.value("tagent_hub_admin_auth_failures_total{reason=\"missing\"}"),
        1.0
    );
    assert_eq!(
        m.value("tagent_hub_admin_auth_failures_total{reason=\"invalid\"}"),
        1.0
    );
    assert_eq!(
        m.value("tagent_hub_admin_auth_failures_total{reason=\"scope\"}"),
        2.0
    );
}

#[tokio::test]
async fn with_no_token_configured_one_is_generated_privately() {
    let mut options = quick();
    options.no_admin_token = true;
    let hub = Server::start_with(options);
    let path = hub.data_dir().join("admin-token");
    let token = std::fs::read_to_string(&path).expect("a generated token file");
    let token = token.trim();
    assert!(token.len() >= 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(!hub.logs().contains(token), "the token is never logged");
    let (s, _) = call(
        &hub,
        reqwest::Method::GET,
        "/api/v1/tagents",
        None,
        Some(token),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = call(
        &hub,
        reqwest::Method::GET,
        "/api/v1/tagents",
        None,
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(s, 401, "the test token is not configured here");
}

#[tokio::test]
async fn list_filters_paginates_and_counts() {
    let config = "[[runner_group]]\nid = 1\nname = \"east\"\nnetworks = [\"127.0.1.0/24\"]\n\
                  [[runner_group.runner]]\nid = 1\nname = \"r1\"\nheartbeat = \"10.0.0.1:8888\"\n\
                  [[runner_group]]\nid = 2\nname = \"west\"\nnetworks = [\"127.0.0.0/8\"]\n\
                  [[runner_group.runner]]\nid = 2\nname = \"r2\"\nheartbeat = \"10.0.0.2:8888\"\n\
                  [heartbeat]\nstatus_flush_ms = 10\n";
    let hub = Server::with_config(config);
    let a = register(
        &hub,
        "bank",
        "127.0.1.1",
        "127.0.1.1,10.9.0.1",
        3939,
        "db-01",
        "1.5.4",
    )
    .await;
    let b = register(
        &hub,
        "bank",
        "127.0.1.2",
        "127.0.1.2",
        3939,
        "db-02",
        "1.5.3",
    )
    .await;
    let c = register(
        &hub,
        "bank",
        "127.0.2.1",
        "127.0.2.1",
        4040,
        "web-01",
        "1.5.4",
    )
    .await;
    let d = register(
        &hub,
        "telco",
        "127.0.2.2",
        "127.0.2.2",
        3939,
        "web-02",
        "1.5.4",
    )
    .await;

    assert_eq!(list(&hub, "").await, [a, b, c, d]);
    assert_eq!(list(&hub, "tenant=bank").await, [a, b, c]);
    assert_eq!(list(&hub, "tenant=nobody").await, Vec::<u64>::new());
    assert_eq!(list(&hub, "group=1").await, [a, b]);
    assert_eq!(list(&hub, "port=4040").await, [c]);
    assert_eq!(list(&hub, "name_prefix=web-").await, [c, d]);
    assert_eq!(list(&hub, "version=1.5.3").await, [b]);
    assert_eq!(list(&hub, "ip=127.0.2.0/24").await, [c, d]);
    assert_eq!(
        list(&hub, "ip=10.9.0.1").await,
        [a],
        "a contained ip matches"
    );
    assert_eq!(list(&hub, "ip=10.9.0.0/16&tenant=bank").await, [a]);
    assert_eq!(
        list(&hub, "status=disconnected&reason=never-connected").await,
        [a, b, c, d]
    );
    assert_eq!(list(&hub, "status=connected").await, Vec::<u64>::new());

    // Pagination: a cursor from each page until there is none.
    let (s, page) = get(&hub, "/api/v1/tagents?limit=3").await;
    assert_eq!(s, 200);
    assert_eq!(ids(&page), [a, b, c]);
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let (_, page) = get(&hub, &format!("/api/v1/tagents?limit=3&cursor={cursor}")).await;
    assert_eq!(ids(&page), [d]);
    assert!(page["next_cursor"].is_null(), "{page}");

    for bad in [
        "status=sleeping",
        "reason=bored",
        "ip=10.0.0.300",
        "limit=0",
        "limit=5000",
        "cursor=x",
        "colour=red",
    ] {
        let (s, body) = get(&hub, &format!("/api/v1/tagents?{bad}")).await;
        assert_eq!(s, 400, "{bad}: {body}");
        assert!(body["error"].is_string(), "{bad}: {body}");
    }

    let (s, counts) = get(&hub, "/api/v1/tagents/counts").await;
    assert_eq!(s, 200);
    assert_eq!(
        (counts["total"].as_u64(), counts["connected"].as_u64()),
        (Some(4), Some(0))
    );
    assert_eq!(counts["by_reason"]["never-connected"], 4);
    assert_eq!(counts["by_group"]["1"]["total"], 2);
    assert_eq!(counts["by_group"]["2"]["total"], 2);
    let (_, counts) = get(&hub, "/api/v1/tagents/counts?tenant=telco").await;
    assert_eq!(counts["total"], 1);

    // A connected tagent counts as connected, and shows its session.
    let (_, group) = (0, "10.0.0.1:8888");
    let mut t = Tagent::connect_from(hub.heartbeat_addr(), "127.0.1.1").await;
    assert_eq!(
        t.send(&monitor("bank", a, "127.0.1.1", group)).await,
        json!({"Status":"OK"})
    );
    wait_status(&hub, a, "connected").await;
    assert_eq!(list(&hub, "status=connected").await, [a]);
    let (_, counts) = get(&hub, "/api/v1/tagents/counts").await;
    assert_eq!(counts["by_group"]["1"]["connected"], 1, "{counts}");
    let (_, shown) = get(&hub, &format!("/api/v1/tagents/{a}")).await;
    assert_eq!(shown["session"]["protocol"], "compat", "{shown}");
    assert_eq!(shown["session"]["pcpu"], 0.5);
    assert!(shown["session"]["last_heartbeat"].as_u64().unwrap() > 0);
    assert!(
        shown["session"]["peer"]
            .as_str()
            .unwrap()
            .starts_with("127.0.1.1:")
    );
    let accounts = shown["accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 2, "{shown}");
    assert_eq!(accounts[0]["name"], "127.0.1.1_3939_tagent");
    assert_eq!(accounts[0]["has_credential"], true);
    assert!(
        !shown.to_string().contains("secret-cred"),
        "never the credential"
    );
}

#[tokio::test]
async fn delete_is_refused_while_connected_and_removes_accounts() {
    let hub = Server::start_with(quick());
    let (id, group) = hub.register_tagent("demo", "127.0.0.5", "cred").await;
    let mut t = Tagent::connect_from(hub.heartbeat_addr(), "127.0.0.5").await;
    t.send(&monitor("demo", id, "127.0.0.5", &group)).await;
    wait_status(&hub, id, "connected").await;
    let (s, body) = delete(&hub, &format!("/api/v1/tagents/{id}")).await;
    assert_eq!(s, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("connected"));

    drop(t);
    wait_status(&hub, id, "disconnected").await;
    let (s, _) = delete(&hub, &format!("/api/v1/tagents/{id}")).await;
    assert_eq!(s, 204);
    let (s, _) = get(&hub, &format!("/api/v1/tagents/{id}")).await;
    assert_eq!(s, 404);
    let (s, _) = delete(&hub, &format!("/api/v1/tagents/{id}")).await;
    assert_eq!(s, 404);
    // Gone for good: it survives a restart, and registering again is a new tagent.
    let mut hub = hub;
    hub.restart();
    let (s, _) = get(&hub, &format!("/api/v1/tagents/{id}")).await;
    assert_eq!(s, 404);
    let (again, _) = hub.register_tagent("demo", "127.0.0.5", "cred").await;
    assert!(again > id, "ids are not reused");
}

#[tokio::test]
async fn runner_groups_are_managed_persisted_and_reach_live_tagents() {
    let config = "[[runner_group]]\nid = 7\nname = \"dc\"\nnetworks = [\"127.0.0.0/8\"]\n\
                  [[runner_group.runner]]\nid = 1\nname = \"a\"\nheartbeat = \"10.0.0.21:8888\"\n\
                  [heartbeat]\nstatus_flush_ms = 10\n";
    let mut hub = Server::with_config(config);
    let (s, groups) = get(&hub, "/api/v1/runner-groups").await;
    assert_eq!(s, 200);
    assert_eq!(groups[0]["id"], 7, "{groups}");
    assert_eq!(groups[0]["runners"][0]["heartbeat"], "10.0.0.21:8888");

    let (id, group) = hub.register_tagent("demo", "127.0.0.9", "cred").await;
    assert_eq!(group, "10.0.0.21:8888");
    let mut t = Tagent::connect_from(hub.heartbeat_addr(), "127.0.0.9").await;
    assert_eq!(
        t.send(&monitor("demo", id, "127.0.0.9", &group)).await,
        json!({"Status":"OK"})
    );

    // Refusals: bad networks, duplicates, a runner without an address.
    use reqwest::Method;
    let bad = [
        json!({"name":"x","networks":["10.0.0.0/33"]}),
        json!({"name":"x","networks":["10.0.0.1/24"]}),
        json!({"name":"x","networks":["10.0.0.1"]}),
        json!({"name":"x","networks":["10.0.0.0/24","10.0.0.0/24"]}),
        json!({"name":"x","runners":[{"id":3,"name":"r"}]}),
        json!({"name":"x","runners":[{"id":3,"name":"r","heartbeat":"nohost"}]}),
        json!({"name":"x","runners":[{"id":1,"name":"r","heartbeat":"10.9.9.9:1"}]}),
        json!({"id":7,"name":"again"}),
        json!({"name":""}),
        json!({"name":"x","colour":"red"}),
    ];
    for body in bad {
        let (s, reply) = send(&hub, Method::POST, "/api/v1/runner-groups", body.clone()).await;
        assert_eq!(s, 400, "{body}: {reply}");
    }

    // Create: v4 and v6 networks, order kept.
    let (s, created) = send(
        &hub,
        Method::POST,
        "/api/v1/runner-groups",
        json!({"name":"lab","networks":["192.168.0.0/16","fd00::/8"],
               "runners":[{"id":9,"name":"r9","heartbeat":"[fd00::9]:8888"}]}),
    )
    .await;
    assert_eq!(s, 201, "{created}");
    assert_eq!(created["id"], 8);
    assert_eq!(created["position"], 1);
    assert_eq!(created["networks"], json!(["192.168.0.0/16", "fd00::/8"]));

    // Update group 7's runners: the live tagent hears of it on its next heartbeat.
    let (s, updated) = send(
        &hub,
        Method::PUT,
        "/api/v1/runner-groups/7",
        json!({"name":"dc","networks":["127.0.0.0/8"],
               "runners":[{"id":2,"name":"b","heartbeat":"10.0.0.22:8888"},
                          {"id":1,"name":"a","heartbeat":"10.0.0.21:8888"}]}),
    )
    .await;
    assert_eq!(s, 200, "{updated}");
    assert_eq!(updated["tagents"], 1);
    assert_eq!(
        t.send(&monitor("demo", id, "127.0.0.9", &group)).await,
        json!({"type":"updategroup","isNew":"1","groupinfo":"10.0.0.21:8888,10.0.0.22:8888","Status":"OK"})
    );
    let (s, _) = send(
        &hub,
        Method::PUT,
        "/api/v1/runner-groups/99",
        json!({"name":"x"}),
    )
    .await;
    assert_eq!(s, 404);

    // A group with tagents cannot go; an empty one can.
    let (s, body) = delete(&hub, "/api/v1/runner-groups/7").await;
    assert_eq!(s, 409, "{body}");
    let (s, _) = delete(&hub, "/api/v1/runner-groups/8").await;
    assert_eq!(s, 204);
    let (s, _) = delete(&hub, "/api/v1/runner-groups/8").await;
    assert_eq!(s, 404);

    // Persisted: the store's groups win over the config after a restart.
    drop(t);
    hub.restart();
    let (_, groups) = get(&hub, "/api/v1/runner-groups").await;
    assert_eq!(groups.as_array().unwrap().len(), 1, "{groups}");
    assert_eq!(
        groups[0]["runners"].as_array().unwrap().len(),
        2,
        "{groups}"
    );
    let (_, group) = hub.register_tagent("demo", "127.0.0.10", "cred").await;
    assert_eq!(group, "10.0.0.21:8888,10.0.0.22:8888");
}

#[tokio::test]
async fn batch_commands_reach_a_subnet_with_a_result_each() {
    let hub = Server::start_with(quick());
    let mut sessions = Vec::new();
    let mut in_subnet = Vec::new();
    for (n, ip) in ["127.0.3.1", "127.0.3.2", "127.0.4.1"].iter().enumerate() {
        let (id, group) = hub.register_tagent("demo", ip, "cred").await;
        if n < 2 {
            in_subnet.push(id);
        }
        let mut t = Tagent::connect_from(hub.heartbeat_addr(), ip).await;
        t.send(&monitor("demo", id, ip, &group)).await;
        sessions.push((id, t));
    }
    let (offline, _) = hub.register_tagent("demo", "127.0.3.3", "cred").await;
    for (id, _) in &sessions {
        wait_status(&hub, *id, "connected").await;
    }
    use reqwest::Method;
    let (s, reply) = send(
        &hub,
        Method::POST,
        "/api/v1/commands",
        json!({"command":"reload","filter":{"ip":"127.0.3.0/24"}}),
    )
    .await;
    assert_eq!(s, 200, "{reply}");
    assert_eq!(reply["matched"], 3);
    assert_eq!(reply["summary"], json!({"delivered":2,"not-connected":1}));
    let results = reply["results"].as_array().unwrap();
    assert_eq!(results[2]["id"], offline);
    assert_eq!(results[2]["result"], "not-connected");
    for (id, t) in sessions.iter_mut() {
        if in_subnet.contains(id) {
            assert_eq!(t.line().await, json!({"type":"reload"}));
        }
    }
    assert!(
        sessions[2]
            .1
            .line_within(Duration::from_millis(300))
            .await
            .is_none()
    );

    let (s, reply) = send(
        &hub,
        Method::POST,
        "/api/v1/commands",
        json!({"command":"statusCheck","ids":[sessions[2].0, offline, 424242]}),
    )
    .await;
    assert_eq!(s, 200, "{reply}");
    assert_eq!(
        reply["summary"],
        json!({"connected":1,"not-connected":1,"not-found":1})
    );

    for body in [
        json!({"command":"reload"}),
        json!({"command":"reload","filter":{}}),
        json!({"command":"reload","ids":[1],"filter":{"port":1}}),
        json!({"command":"explode","all":true}),
        json!({"command":"reload","filter":{"status":"asleep"}}),
    ] {
        let (s, reply) = send(&hub, Method::POST, "/api/v1/commands", body.clone()).await;
        assert_eq!(s, 400, "{body}: {reply}");
    }
}

/// Read SSE events until `n` have arrived (bounded).
async fn read_events(resp: &mut reqwest::Response, n: usize) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    let mut buf = String::new();
    let deadline = Instant::now() + WAIT;
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, resp.chunk())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} events: {out:?}", out.len()))
            .unwrap()
            .expect("the stream stays open");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut id, mut event, mut data) = (String::new(), String::new(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().into();
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().into();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = v.trim().into();
                }
            }
            if !event.is_empty() {
                out.push((
                    id,
                    event,
                    serde_json::from_str(&data).unwrap_or(Value::Null),
                ));
            }
        }
    }
    out
}

async fn watch(hub: &Server, last_event_id: Option<&str>) -> reqwest::Response {
    let client = common::client();
    let mut req = client.get(hub.url("/api/v1/events"));
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    resp
}

#[tokio::test]
async fn the_event_stream_tells_registrations_and_status_and_resumes() {
    let hub = Server::start_with(quick());
    let mut stream = watch(&hub, None).await;
    let (id, group) = hub.register_tagent("demo", "127.0.0.7", "cred").await;
    let mut t = Tagent::connect_from(hub.heartbeat_addr(), "127.0.0.7").await;
    t.send(&monitor("demo", id, "127.0.0.7", &group)).await;
    drop(t);
    let events = read_events(&mut stream, 3).await;
    let kinds: Vec<&str> = events.iter().map(|(_, k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        ["registered", "connected", "disconnected"],
        "{events:?}"
    );
    assert_eq!(events[0].2["tagent_id"], id);
    assert_eq!(events[0].2["created"], true);
    assert_eq!(events[0].2["tenant"], "demo");
    assert_eq!(events[2].2["reason"], "eof");

    // Resume after the first: the other two again, then what follows.
    let mut resumed = watch(&hub, Some(&events[0].0)).await;
    let (s, _) = delete(&hub, &format!("/api/v1/tagents/{id}")).await;
    assert_eq!(s, 204);
    let again = read_events(&mut resumed, 3).await;
    let kinds: Vec<&str> = again.iter().map(|(_, k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["connected", "disconnected", "deleted"], "{again:?}");
    assert_eq!(again[0].0, events[1].0, "ids are stable");

    // An id from another run cannot be resumed: say so.
    let mut stale = watch(&hub, Some("1-5")).await;
    let first = read_events(&mut stale, 1).await;
    assert_eq!(first[0].1, "reset");
}
