//! The subcommands over a tagent's own listener: reachability, config,
//! logs (the admin API's `/api/v1/tagents/{id}/...` operations).

use std::path::Path;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use reqwest::Method;
use tokio::io::AsyncWriteExt;

use super::client::{Client, NO_QUERY};
use super::output;
use crate::http::ErrorBody;
use crate::http::operations::{ConfigView, LogList};
use crate::listener::Reachability;

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
