//! `tagent-hub ctl` against a real hub: an operator's questions answered from
//! the command line alone.

mod common;

use std::process::Output;

use common::{Server, Tagent};
use serde_json::{Value, json};

fn ctl(hub: &Server, args: &[&str]) -> Output {
    hub.ctl_command()
        .args(args)
        .output()
        .expect("run tagent-hub ctl")
}

/// Run, expect success, return stdout.
fn ok(hub: &Server, args: &[&str]) -> String {
    let out = ctl(hub, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "ctl {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn json_of(hub: &Server, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let text = ok(hub, &args);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("ctl {args:?}: {e}: {text}"))
}

fn monitor(tid: u64, ip: &str, group: &str) -> Value {
    json!({"type":"monitor","tenant":"demo","agentId":tid,"port":3939,"ipString":ip,
           "proxyGroup":group,"pcpu":0.5,"mem":12,"status":"working","version":"1.5.4","mgmtIp":ip})
}

#[tokio::test]
async fn an_operator_answers_from_the_cli_alone() {
    let hub = Server::with_config("[heartbeat]\ncommand_quiet_ms = 100\nstatus_flush_ms = 10\n");
    let (a, group) = hub.register_tagent("demo", "127.0.5.1", "cred").await;
    let (b, _) = hub.register_tagent("demo", "127.0.5.2", "cred").await;
    let (c, _) = hub.register_tagent("demo", "127.0.6.1", "cred").await;
    let mut ta = Tagent::connect_from(hub.heartbeat_addr(), "127.0.5.1").await;
    ta.send(&monitor(a, "127.0.5.1", &group)).await;
    let mut tb = Tagent::connect_from(hub.heartbeat_addr(), "127.0.5.2").await;
    tb.send(&monitor(b, "127.0.5.2", &group)).await;
    let mut tc = Tagent::connect_from(hub.heartbeat_addr(), "127.0.6.1").await;
    tc.send(&monitor(c, "127.0.6.1", &group)).await;
    drop(tc);
    // Wait until the stream has the three connects and c's disconnect.
    let watched = ok(&hub, &["watch", "--after", "0-0", "--count", "1"]);
    assert!(
        watched.contains("reset"),
        "an unknown id is reported: {watched}"
    );
    let deadline = std::time::Instant::now() + common::WAIT;
    loop {
        let counts = json_of(&hub, &["counts"]);
        if counts["connected"] == 2 && counts["by_reason"]["eof"] == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{counts}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // How many are connected per group?
    let table = ok(&hub, &["counts"]);
    assert!(
        table.contains("3 tagents: 2 connected, 1 disconnected"),
        "{table}"
    );
    assert!(table.contains("default"), "{table}");

    // Which went away in the last hour, and why?
    let gone = json_of(&hub, &["list", "--status", "disconnected", "--since", "1h"]);
    let gone = gone.as_array().unwrap();
    assert_eq!(gone.len(), 1, "{gone:?}");
    assert_eq!(
        (
            gone[0]["id"].as_u64(),
            gone[0]["disconnect_reason"].as_str()
        ),
        (Some(c), Some("eof"))
    );
    let table = ok(&hub, &["list", "--status", "disconnected", "--since", "1h"]);
    assert!(
        table.contains("eof") && table.contains("127.0.6.1"),
        "{table}"
    );

    // Reload every tagent of one subnet.
    let reply = json_of(&hub, &["reload", "--ip", "127.0.5.0/24"]);
    assert_eq!(reply["summary"], json!({"delivered": 2}), "{reply}");
    assert_eq!(ta.line().await, json!({"type":"reload"}));
    assert_eq!(tb.line().await, json!({"type":"reload"}));

    // Show, groups, and refusals with a clear message and a failing status.
    let shown = json_of(&hub, &["show", &a.to_string()]);
    assert_eq!(shown["session"]["protocol"], "compat");
    let out = ctl(&hub, &["delete", &a.to_string()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("connected"));
    ok(&hub, &["delete", &c.to_string()]);
    let created = json_of(
        &hub,
        &[
            "groups",
            "create",
            "--name",
            "lab",
            "--network",
            "10.8.0.0/16",
            "--runner",
            "5=r5@10.8.0.1:8888",
        ],
    );
    assert_eq!(created["runners"][0]["heartbeat"], "10.8.0.1:8888");
    let groups = ok(&hub, &["groups", "list"]);
    assert!(
        groups.contains("lab") && groups.contains("10.8.0.0/16"),
        "{groups}"
    );
    let out = ctl(
        &hub,
        &[
            "groups",
            "create",
            "--name",
            "bad",
            "--network",
            "10.8.0.1/16",
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("host bits"));
    let out = ctl(&hub, &["reload"]);
    assert!(!out.status.success(), "reload with no target is refused");
}
