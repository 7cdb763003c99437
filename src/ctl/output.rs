//! How `ctl` prints: tables for people, JSON for scripts. Everything
//! printed is one of the API's own types, as the hub sent it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{ContentArrangement, Table};
use serde::Serialize;
use serde_json::Value;

use crate::http::commands::BatchReply;
use crate::http::enrollment::{PendingList, TokenView};
use crate::http::events::ResetJson;
use crate::http::groups::GroupView;
use crate::http::tagents::{TagentDetail, TagentView};
use crate::http::upgrades::RolloutDetail;
use crate::model::{Package, Rollout};
use crate::registry::events::EventJson;
use crate::registry::query::Counts;

/// `v` as a JSON value, through its text: numbers as the API wrote them
/// (an `f32` converted straight to a value would gain digits).
pub fn value(v: &impl Serialize) -> anyhow::Result<Value> {
    Ok(serde_json::from_str(&serde_json::to_string(v)?)?)
}

/// `v` as indented JSON (keys in order, as `--json` always printed them).
pub fn json(v: &impl Serialize) -> anyhow::Result<()> {
    let v = value(v)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string())
    );
    Ok(())
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

/// A field as text, as its JSON says it: strings bare, null empty.
fn s(v: &impl Serialize) -> String {
    match value(v).unwrap_or(Value::Null) {
        Value::Null => String::new(),
        Value::String(s) => s,
        v => v.to_string(),
    }
}

/// Unix milliseconds as an RFC 3339 time (seconds).
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

pub fn tokens(items: &[TokenView]) {
    let mut t = table(&[
        "id",
        "tenant",
        "state",
        "uses",
        "expires",
        "last used",
        "by",
        "note",
    ]);
    for x in items {
        t.add_row(vec![
            x.id.clone(),
            x.tenant.clone(),
            x.state.clone(),
            format!("{}/{}", x.uses, x.max_uses),
            rfc3339(x.expires_ms),
            ago(x.last_used_ms),
            x.created_by.clone(),
            x.note.clone(),
        ]);
    }
    println!("{t}");
}

pub fn pending(list: &PendingList) {
    let mut t = table(&[
        "id", "tenant", "ip:port", "kind", "tagent", "name", "version", "os", "source", "attempts",
        "last", "approved",
    ]);
    for p in &list.pending {
        t.add_row(vec![
            p.id.clone(),
            p.tenant.clone(),
            format!("{}:{}", p.ip, p.port),
            p.kind.clone(),
            p.tagent.map(|id| id.to_string()).unwrap_or_default(),
            p.name.clone(),
            p.version.clone(),
            p.os_type.clone(),
            p.source.to_string(),
            p.attempts.to_string(),
            ago(p.last_ms),
            p.approved_by.clone().unwrap_or_default(),
        ]);
    }
    println!("{t}");
    println!(
        "{} pending of at most {}; default policy {}",
        list.pending.len(),
        list.max_pending,
        list.default_policy
    );
}

pub fn packages(items: &[Package]) {
    let mut t = table(&["sha256", "version", "os", "arch", "bytes", "uploaded", "by"]);
    for p in items {
        t.add_row(vec![
            p.sha256[..16].to_owned(),
            p.version.clone(),
            p.os_type.clone(),
            p.arch.clone(),
            p.size.to_string(),
            ago(p.uploaded_ms),
            p.uploaded_by.clone(),
        ]);
    }
    println!("{t}");
}

pub fn rollouts(items: &[Rollout]) {
    let mut t = table(&[
        "id", "version", "state", "tagents", "upgraded", "failed", "skipped", "started", "by",
    ]);
    for r in items {
        t.add_row(vec![
            r.id.clone(),
            r.version.clone(),
            s(&r.state),
            r.targets.to_string(),
            r.upgraded.to_string(),
            r.failed.to_string(),
            r.skipped.to_string(),
            ago(r.created_ms),
            r.by.clone(),
        ]);
    }
    println!("{t}");
}

pub fn rollout(d: &RolloutDetail) {
    let r = &d.rollout;
    println!(
        "rollout {} of {}: {}; {} upgraded, {} failed, {} skipped of {} (concurrency {}, stop after {} failures, on {})",
        r.id,
        r.version,
        s(&r.state),
        r.upgraded,
        r.failed,
        r.skipped,
        r.targets,
        r.concurrency,
        r.max_failures,
        r.hub
    );
    let mut t = table(&[
        "tagent", "ip", "os/arch", "from", "state", "steps", "reason",
    ]);
    for x in &d.tagents {
        t.add_row(vec![
            x.tagent.to_string(),
            x.ip.clone(),
            format!("{}/{}", x.os_type, x.arch),
            x.from_version.clone(),
            s(&x.state),
            x.steps
                .iter()
                .map(|st| format!("{}:{}", st.step.as_str(), st.result))
                .collect::<Vec<_>>()
                .join(" "),
            x.reason.clone().unwrap_or_default(),
        ]);
    }
    println!("{t}");
}

/// `3m ago` from Unix milliseconds.
fn ago(ms: u64) -> String {
    if ms == 0 {
        return String::new();
    }
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

pub fn tagents(items: &[TagentView]) {
    let mut t = table(&[
        "ID", "TENANT", "IP", "PORT", "NAME", "STATUS", "REASON", "CHANGED", "GROUP", "VERSION",
    ]);
    for x in items {
        t.add_row(vec![
            s(&x.id),
            s(&x.tenant),
            s(&x.ip),
            s(&x.port),
            s(&x.name),
            s(&x.status),
            s(&x.disconnect_reason),
            ago(x.last_status_change_ms),
            s(&x.runner_group),
            s(&x.host.version),
        ]);
    }
    println!("{t}");
    println!("{} tagents", items.len());
}

pub fn tagent(d: &TagentDetail) {
    let x = &d.tagent;
    let h = &x.host;
    let mut t = table(&["FIELD", "VALUE"]);
    let rows = [
        ("id", s(&x.id)),
        ("tenant", s(&x.tenant)),
        ("name", s(&x.name)),
        ("ip:port", format!("{}:{}", s(&x.ip), s(&x.port))),
        ("contained ips", x.ips.join(", ")),
        ("status", s(&x.status)),
        ("disconnect reason", s(&x.disconnect_reason)),
        ("status changed", ago(x.last_status_change_ms)),
        ("runner group", s(&x.runner_group)),
        ("runner", s(&x.runner)),
        ("version", s(&h.version)),
        (
            "os",
            format!("{} {} {}", s(&h.os_type), s(&h.os_version), s(&h.osbit)),
        ),
        ("user", s(&h.user)),
        ("registered first", ago(x.first_registered_ms)),
        ("registered last", ago(x.last_registered_ms)),
    ];
    for (k, v) in rows {
        t.add_row(vec![k.to_owned(), v]);
    }
    for a in &d.accounts {
        let cred = if a.has_credential {
            "credential set"
        } else {
            "no credential"
        };
        t.add_row(vec!["account".into(), format!("{} ({cred})", a.name)]);
    }
    if let Some(r) = &d.reachability {
        let result = match &r.message {
            Some(m) => format!("{} ({m})", r.result),
            None => format!("{} ({})", r.result, r.protocol.as_deref().unwrap_or("-")),
        };
        t.add_row(vec![
            "listener".into(),
            format!("{result}, checked {}", ago(r.checked_ms)),
        ]);
    }
    if let Some(sess) = &d.session {
        let rows = [
            (
                "session",
                format!("{} from {}", s(&sess.protocol), s(&sess.peer)),
            ),
            ("connected", ago(sess.connected_at)),
            ("last heartbeat", ago(sess.last_heartbeat)),
            ("heartbeats", s(&sess.heartbeats)),
            (
                "pcpu / mem",
                format!("{} / {}", s(&sess.pcpu), s(&sess.mem)),
            ),
        ];
        for (k, v) in rows {
            t.add_row(vec![k.to_owned(), v]);
        }
    }
    println!("{t}");
}

pub fn counts(c: &Counts, groups: &[GroupView]) {
    println!(
        "{} tagents: {} connected, {} disconnected",
        c.all.total, c.all.connected, c.all.disconnected
    );
    let name_of = |id: u32| {
        groups
            .iter()
            .find(|g| g.id == id)
            .map(|g| g.name.clone())
            .unwrap_or_default()
    };
    let mut t = table(&["GROUP", "NAME", "TOTAL", "CONNECTED", "DISCONNECTED"]);
    // By id as text, the order ctl has always listed them in.
    let mut by_group: Vec<_> = c
        .by_group
        .iter()
        .map(|(id, g)| (id.to_string(), *id, g))
        .collect();
    by_group.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    for (text, id, g) in by_group {
        t.add_row(vec![
            text,
            name_of(id),
            s(&g.total),
            s(&g.connected),
            s(&g.disconnected),
        ]);
    }
    println!("{t}");
    if !c.by_reason.is_empty() {
        let mut t = table(&["DISCONNECT REASON", "TAGENTS"]);
        for (reason, n) in &c.by_reason {
            t.add_row(vec![reason.clone(), s(n)]);
        }
        println!("{t}");
    }
}

pub fn groups(items: &[GroupView]) {
    let mut t = table(&["ID", "NAME", "NETWORKS (in order)", "RUNNERS", "TAGENTS"]);
    for g in items {
        let runners: Vec<String> = g
            .runners
            .iter()
            .map(|r| {
                let this = if r.this_hub { " (this hub)" } else { "" };
                format!("{}={}@{}{this}", r.id, r.name, s(&r.heartbeat))
            })
            .collect();
        t.add_row(vec![
            s(&g.id),
            s(&g.name),
            g.networks.join("\n"),
            runners.join("\n"),
            s(&g.tagents),
        ]);
    }
    println!("{t}");
}

pub fn command_results(reply: &BatchReply) {
    let mut t = table(&["ID", "RESULT", "MESSAGE"]);
    for r in &reply.results {
        t.add_row(vec![s(&r.id), s(&r.result), s(&r.message)]);
    }
    println!("{t}");
    let summary: Vec<String> = reply
        .summary
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    println!(
        "{} {} tagents; {}",
        s(&reply.command),
        reply.matched,
        summary.join(", ")
    );
}

fn when(at: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(at)).to_string()
}

pub fn reset(r: &ResetJson) {
    // A reset carries no time.
    println!(" reset: {} (reload your view)", r.reason);
}

pub fn event(kind: &str, d: &EventJson) {
    let mut line = format!(
        "{} {kind:<12} tagent {} {} {}:{} group {}",
        when(d.at),
        d.tagent_id,
        d.tenant,
        d.ip,
        d.port,
        d.runner_group
    );
    if let Some(reason) = d.reason {
        line.push_str(&format!(" ({reason})"));
    }
    println!("{line}");
}
