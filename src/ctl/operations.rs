//! The subcommands over a tagent's own listener: reachability, config
//! (read, keys set, written), logs (the admin API's operations), and the
//! audit log of them.

use std::path::Path;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use reqwest::Method;
use tokio::io::AsyncWriteExt;

use super::client::{Client, NO_QUERY};
use super::output;
use crate::http::ErrorBody;
use crate::http::audit::AuditPage;
use crate::http::config_set::{ConfigSetReply, ConfigSetRequest};
use crate::http::operations::{ConfigPut, ConfigView, LogList};
use crate::listener::{ConfigChange, Reachability};
use crate::model::{FilterParams, TagentId};

pub(super) async fn reachability(client: &Client, id: u64, json: bool) -> anyhow::Result<()> {
    let path = format!("/api/v1/tagents/{id}/reachability");
    let r: Reachability = client
        .call(Method::POST, &path, NO_QUERY, None::<&()>)
        .await?;
    if json {
        output::json(&r)?;
    } else if r.reachable {
        println!(
            "tagent {id}: reachable ({} {}, {})",
            r.ostype.as_deref().unwrap_or("?"),
            r.charset.as_deref().unwrap_or("?"),
            r.protocol.as_deref().unwrap_or("?")
        );
    } else {
        println!(
            "tagent {id}: not reachable: {} ({})",
            r.result,
            r.message.as_deref().unwrap_or("")
        );
    }
    if !r.reachable {
        bail!("tagent {id} is not reachable");
    }
    Ok(())
}

pub(super) async fn config(client: &Client, id: u64, json: bool) -> anyhow::Result<()> {
    let c: ConfigView = client
        .get(&format!("/api/v1/tagents/{id}/config"), NO_QUERY)
        .await?;
    if json {
        return output::json(&c);
    }
    for line in &c.lines {
        println!("{line}");
    }
    if !c.missing_keys.is_empty() {
        eprintln!("missing required keys: {}", c.missing_keys.join(", "));
    }
    Ok(())
}

pub(super) async fn logs(client: &Client, id: u64, json: bool) -> anyhow::Result<()> {
    let l: LogList = client
        .get(&format!("/api/v1/tagents/{id}/logs"), NO_QUERY)
        .await?;
    if json {
        return output::json(&l);
    }
    for name in &l.logs {
        println!("{name}");
    }
    Ok(())
}

/// One log file, streamed to `out` (or stdout) as it arrives.
pub(super) async fn log(
    client: &Client,
    id: u64,
    name: &str,
    out: Option<&Path>,
) -> anyhow::Result<()> {
    let url = format!("{}/api/v1/tagents/{id}/logs/{name}", client.base);
    let resp = client
        .http
        .get(&url)
        .bearer_auth(&client.token)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        match serde_json::from_str::<ErrorBody>(&text) {
            Ok(e) => bail!("{status}: {}", e.error),
            Err(_) => bail!("GET {url}: HTTP {status}: {text}"),
        }
    }
    let mut sink: Box<dyn tokio::io::AsyncWrite + Unpin> = match out {
        Some(path) => Box::new(
            tokio::fs::File::create(path)
                .await
                .with_context(|| format!("cannot create {}", path.display()))?,
        ),
        None => Box::new(tokio::io::stdout()),
    };
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.context("the download was cut short")?;
        sink.write_all(&chunk).await?;
    }
    sink.flush().await?;
    Ok(())
}

/// Who a batch names: ids, a filter, or every tagent.
pub(super) type BatchTargets = (Option<Vec<TagentId>>, Option<FilterParams>, bool);

/// Set `pairs` (`KEY=VALUE`) on the targets: `POST /api/v1/config`.
pub(super) async fn config_set(
    client: &Client,
    pairs: &[String],
    (ids, filter, all): BatchTargets,
    json: bool,
) -> anyhow::Result<()> {
    let mut set = std::collections::BTreeMap::new();
    for pair in pairs {
        let (k, v) = pair
            .split_once('=')
            .with_context(|| format!("'{pair}' is not KEY=VALUE"))?;
        set.insert(k.trim().to_owned(), v.to_owned());
    }
    let body = ConfigSetRequest {
        set,
        ids,
        filter,
        all,
    };
    let reply: ConfigSetReply = client
        .call(Method::POST, "/api/v1/config", NO_QUERY, Some(&body))
        .await?;
    if json {
        output::json(&reply)?;
    } else {
        for r in &reply.results {
            print_change(r);
        }
        let summary: Vec<String> = reply
            .summary
            .iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect();
        println!("{} matched; {}", reply.matched, summary.join(", "));
    }
    if reply.results.iter().any(|r| !r.ok()) {
        bail!("the keys were not set on every tagent");
    }
    Ok(())
}

/// Write `file` as tagent `id`'s config: `PUT /api/v1/tagents/{id}/config`.
pub(super) async fn config_put(
    client: &Client,
    id: u64,
    file: &Path,
    json: bool,
) -> anyhow::Result<()> {
    let text = tokio::fs::read_to_string(file)
        .await
        .with_context(|| format!("cannot read {}", file.display()))?;
    let body = ConfigPut {
        lines: text.lines().map(str::to_owned).collect(),
    };
    let path = format!("/api/v1/tagents/{id}/config");
    let change: ConfigChange = client
        .call(Method::PUT, &path, NO_QUERY, Some(&body))
        .await?;
    if json {
        output::json(&change)?;
    } else {
        print_change(&change);
    }
    if !change.ok() {
        bail!("the config of tagent {id} was not written");
    }
    Ok(())
}

fn print_change(c: &ConfigChange) {
    let steps: Vec<String> = c
        .steps
        .iter()
        .map(|s| format!("{:?} {}", s.step, s.result).to_lowercase())
        .collect();
    println!(
        "{:>8}  {:<9}  {}{}",
        c.id,
        c.result,
        steps.join(", "),
        c.message
            .as_deref()
            .map(|m| format!("  ({m})"))
            .unwrap_or_default()
    );
}

/// A page of the audit log.
pub(super) async fn audit(
    client: &Client,
    before: Option<u64>,
    limit: Option<usize>,
    json: bool,
) -> anyhow::Result<()> {
    let mut query = Vec::new();
    if let Some(b) = before {
        query.push(("before", b.to_string()));
    }
    if let Some(l) = limit {
        query.push(("limit", l.to_string()));
    }
    let page: AuditPage = client.get("/api/v1/audit", &query).await?;
    if json {
        return output::json(&page);
    }
    for e in &page.entries {
        println!(
            "{:>6}  {}  {}  {:<13}  tagent {:<6}  {}{}",
            e.seq,
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(e.at_ms)
            ),
            e.who,
            e.action,
            e.tagent,
            e.result,
            e.detail
                .as_deref()
                .map(|d| format!("  {d}"))
                .unwrap_or_default()
        );
    }
    if let Some(next) = page.next {
        eprintln!("more: --before {next}");
    }
    Ok(())
}
