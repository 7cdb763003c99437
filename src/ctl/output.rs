//! How `ctl` prints: tables for people, JSON for scripts.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{ContentArrangement, Table};
use serde_json::Value;

pub fn json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

pub fn json_line(v: &Value) {
    println!("{v}");
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.to_vec());
    t
}

/// A field as text: strings bare, null empty.
fn s(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// `3m ago` from Unix milliseconds.
fn ago(ms: &Value) -> String {
    let Some(ms) = ms.as_u64().filter(|m| *m > 0) else {
        return String::new();
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let secs = now.saturating_sub(ms) / 1000;
    let rounded = Duration::from_secs(match secs {
        0..60 => secs,
        60..3600 => secs / 60 * 60,
        3600..86400 => secs / 60 * 60,
        _ => secs / 3600 * 3600,
    });
    format!("{} ago", humantime::format_duration(rounded))
}

pub fn tagents(items: &[Value]) {
    let mut t = table(&[
        "ID", "TENANT", "IP", "PORT", "NAME", "STATUS", "REASON", "CHANGED", "GROUP", "VERSION",
    ]);
    for x in items {
        t.add_row(vec![
            s(&x["id"]),
            s(&x["tenant"]),
            s(&x["ip"]),
            s(&x["port"]),
            s(&x["name"]),
            s(&x["status"]),
            s(&x["disconnect_reason"]),
            ago(&x["last_status_change_ms"]),
            s(&x["runner_group"]),
            s(&x["version"]),
        ]);
    }
    println!("{t}");
    println!("{} tagents", items.len());
}

pub fn tagent(x: &Value) {
    let mut t = table(&["FIELD", "VALUE"]);
    let ips: Vec<String> = x["ips"].as_array().into_iter().flatten().map(s).collect();
    let rows = [
        ("id", s(&x["id"])),
        ("tenant", s(&x["tenant"])),
        ("name", s(&x["name"])),
        ("ip:port", format!("{}:{}", s(&x["ip"]), s(&x["port"]))),
        ("contained ips", ips.join(", ")),
        ("status", s(&x["status"])),
        ("disconnect reason", s(&x["disconnect_reason"])),
        ("status changed", ago(&x["last_status_change_ms"])),
        ("runner group", s(&x["runner_group"])),
        ("runner", s(&x["runner"])),
        ("version", s(&x["version"])),
        (
            "os",
            format!(
                "{} {} {}",
                s(&x["os_type"]),
                s(&x["os_version"]),
                s(&x["osbit"])
            ),
        ),
        ("user", s(&x["user"])),
        ("registered first", ago(&x["first_registered_ms"])),
        ("registered last", ago(&x["last_registered_ms"])),
    ];
    for (k, v) in rows {
        t.add_row(vec![k.to_owned(), v]);
    }
    for a in x["accounts"].as_array().into_iter().flatten() {
        let cred = if a["has_credential"] == true {
            "credential set"
        } else {
            "no credential"
        };
        t.add_row(vec![
            "account".into(),
            format!("{} ({cred})", s(&a["name"])),
        ]);
    }
    let sess = &x["session"];
    if sess.is_object() {
        let rows = [
            (
                "session",
                format!("{} from {}", s(&sess["protocol"]), s(&sess["peer"])),
            ),
            ("connected", ago(&sess["connected_at"])),
            ("last heartbeat", ago(&sess["last_heartbeat"])),
            ("heartbeats", s(&sess["heartbeats"])),
            (
                "pcpu / mem",
                format!("{} / {}", s(&sess["pcpu"]), s(&sess["mem"])),
            ),
        ];
        for (k, v) in rows {
            t.add_row(vec![k.to_owned(), v]);
        }
    }
    println!("{t}");
}

pub fn counts(c: &Value, groups: &Value) {
    println!(
        "{} tagents: {} connected, {} disconnected",
        s(&c["total"]),
        s(&c["connected"]),
        s(&c["disconnected"])
    );
    let name_of = |id: &str| {
        groups
            .as_array()
            .into_iter()
            .flatten()
            .find(|g| s(&g["id"]) == id)
            .map(|g| s(&g["name"]))
            .unwrap_or_default()
    };
    let mut t = table(&["GROUP", "NAME", "TOTAL", "CONNECTED", "DISCONNECTED"]);
    for (id, g) in c["by_group"].as_object().into_iter().flatten() {
        t.add_row(vec![
            id.clone(),
            name_of(id),
            s(&g["total"]),
            s(&g["connected"]),
            s(&g["disconnected"]),
        ]);
    }
    println!("{t}");
    let reasons = c["by_reason"].as_object();
    if reasons.is_some_and(|r| !r.is_empty()) {
        let mut t = table(&["DISCONNECT REASON", "TAGENTS"]);
        for (reason, n) in reasons.into_iter().flatten() {
            t.add_row(vec![reason.clone(), s(n)]);
        }
        println!("{t}");
    }
}

pub fn groups(items: &[Value]) {
    let mut t = table(&["ID", "NAME", "NETWORKS (in order)", "RUNNERS", "TAGENTS"]);
    for g in items {
        let nets: Vec<String> = g["networks"]
            .as_array()
            .into_iter()
            .flatten()
            .map(s)
            .collect();
        let runners: Vec<String> = g["runners"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let this = if r["this_hub"] == true {
                    " (this hub)"
                } else {
                    ""
                };
                format!(
                    "{}={}@{}{this}",
                    s(&r["id"]),
                    s(&r["name"]),
                    s(&r["heartbeat"])
                )
            })
            .collect();
        t.add_row(vec![
            s(&g["id"]),
            s(&g["name"]),
            nets.join("\n"),
            runners.join("\n"),
            s(&g["tagents"]),
        ]);
    }
    println!("{t}");
}

pub fn command_results(reply: &Value) {
    let mut t = table(&["ID", "RESULT", "MESSAGE"]);
    for r in reply["results"].as_array().into_iter().flatten() {
        t.add_row(vec![s(&r["id"]), s(&r["result"]), s(&r["message"])]);
    }
    println!("{t}");
    let summary: Vec<String> = reply["summary"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}: {}", s(v)))
        .collect();
    println!(
        "{} {} tagents; {}",
        s(&reply["command"]),
        s(&reply["matched"]),
        summary.join(", ")
    );
}

pub fn event(kind: &str, d: &Value) {
    let when = d["at"]
        .as_u64()
        .map(|ms| humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)))
        .map(|t| t.to_string())
        .unwrap_or_default();
    if kind == "reset" {
        println!("{when} reset: {} (reload your view)", s(&d["reason"]));
        return;
    }
    let mut line = format!(
        "{when} {kind:<12} tagent {} {} {}:{} group {}",
        s(&d["tagent_id"]),
        s(&d["tenant"]),
        s(&d["ip"]),
        s(&d["port"]),
        s(&d["runner_group"])
    );
    if !d["reason"].is_null() {
        line.push_str(&format!(" ({})", s(&d["reason"])));
    }
    println!("{line}");
}
