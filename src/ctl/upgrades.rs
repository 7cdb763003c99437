//! `ctl packages ...` and `ctl upgrade ...`: installation packages and
//! rollouts (SPEC §5.5).

use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::Method;

use super::args::{PackageCommand, UpgradeCommand};
use super::client::{Client, NO_QUERY};
use super::output;
use crate::http::ErrorBody;
use crate::http::upgrades::{RolloutDetail, UpgradeRequest};
use crate::model::{Package, Rollout, RolloutState};

pub(super) async fn packages(
    client: &Client,
    cmd: &PackageCommand,
    json: bool,
) -> anyhow::Result<()> {
    match cmd {
        PackageCommand::List => {
            let list: Vec<Package> = client.get("/api/v1/packages", NO_QUERY).await?;
            if json {
                return output::json(&list);
            }
            output::packages(&list);
        }
        PackageCommand::Upload {
            file,
            version,
            os_type,
            arch,
        } => {
            let f = tokio::fs::File::open(file)
                .await
                .with_context(|| format!("cannot open {}", file.display()))?;
            let len = f.metadata().await?.len();
            let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(f));
            let url = format!("{}/api/v1/packages", client.base);
            let resp = client
                .http
                .post(&url)
                .bearer_auth(&client.token)
                .query(&[("version", version), ("os_type", os_type), ("arch", arch)])
                .header("content-type", "application/x-tar")
                .header("content-length", len)
                .timeout(Duration::from_secs(3600))
                .body(body)
                .send()
                .await
                .with_context(|| format!("POST {url}"))?;
            let status = resp.status();
            let text = resp.text().await?;
            if !status.is_success() {
                match serde_json::from_str::<ErrorBody>(&text) {
                    Ok(e) => bail!("{status}: {}", e.error),
                    Err(_) => bail!("{status}: {text}"),
                }
            }
            let p: Package = serde_json::from_str(&text)?;
            if json {
                return output::json(&p);
            }
            println!(
                "package {} ({} {}/{}, {} bytes) kept",
                p.sha256, p.version, p.os_type, p.arch, p.size
            );
        }
        PackageCommand::Delete { sha256 } => {
            let p: Package = client
                .call(
                    Method::DELETE,
                    &format!("/api/v1/packages/{sha256}"),
                    NO_QUERY,
                    None::<&()>,
                )
                .await?;
            if json {
                return output::json(&p);
            }
            println!(
                "package {} ({} {}/{}) deleted",
                p.sha256, p.version, p.os_type, p.arch
            );
        }
    }
    Ok(())
}

pub(super) async fn upgrade(
    client: &Client,
    cmd: &UpgradeCommand,
    json: bool,
) -> anyhow::Result<()> {
    match cmd {
        UpgradeCommand::Start {
            to: version,
            ids,
            filter,
            all,
            concurrency,
            max_failures,
            register_timeout,
            wait,
        } => {
            let filter = filter.params()?;
            let (ids, filter) = match (ids.is_empty(), filter.is_empty()) {
                (false, false) => bail!("give tagent ids or filters, not both"),
                (false, true) => (Some(ids.clone()), None),
                (true, false) => (None, Some(filter)),
                (true, true) if *all => (None, None),
                (true, true) => {
                    bail!("name the tagents: --ids, filters (e.g. --ip 10.1.0.0/16), or --all")
                }
            };
            let req = UpgradeRequest {
                version: version.clone(),
                ids,
                filter,
                all: *all,
                concurrency: Some(*concurrency),
                max_failures: Some(*max_failures),
                register_timeout_secs: Some(*register_timeout),
            };
            let r: Rollout = client
                .call(Method::POST, "/api/v1/upgrades", NO_QUERY, Some(&req))
                .await?;
            if !wait {
                if json {
                    return output::json(&r);
                }
                println!(
                    "rollout {} of {} to {} tagents started: tagent-hub ctl upgrade show {}",
                    r.id, r.version, r.targets, r.id
                );
                return Ok(());
            }
            let mut last = (u32::MAX, u32::MAX, u32::MAX);
            loop {
                let d: RolloutDetail = client
                    .get(&format!("/api/v1/upgrades/{}", r.id), NO_QUERY)
                    .await?;
                let now = (d.rollout.upgraded, d.rollout.failed, d.rollout.skipped);
                if now != last && !json {
                    eprintln!(
                        "{}: {} upgraded, {} failed, {} skipped of {}",
                        r.id, now.0, now.1, now.2, d.rollout.targets
                    );
                    last = now;
                }
                if d.rollout.state != RolloutState::Running {
                    if json {
                        return output::json(&d);
                    }
                    output::rollout(&d);
                    if d.rollout.failed > 0 {
                        bail!("{} tagents failed", d.rollout.failed);
                    }
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        UpgradeCommand::List => {
            let list: Vec<Rollout> = client.get("/api/v1/upgrades", NO_QUERY).await?;
            if json {
                return output::json(&list);
            }
            output::rollouts(&list);
        }
        UpgradeCommand::Show { id } => {
            let d: RolloutDetail = client
                .get(&format!("/api/v1/upgrades/{id}"), NO_QUERY)
                .await?;
            if json {
                return output::json(&d);
            }
            output::rollout(&d);
        }
        UpgradeCommand::Abort { id } => {
            let r: Rollout = client
                .call(
                    Method::POST,
                    &format!("/api/v1/upgrades/{id}/abort"),
                    NO_QUERY,
                    None::<&()>,
                )
                .await?;
            if json {
                return output::json(&r);
            }
            println!(
                "rollout {} aborting: no tagent is started from now on",
                r.id
            );
        }
    }
    Ok(())
}
