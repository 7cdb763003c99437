//! Each subcommand: its calls and what it prints.

use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use reqwest::Method;
use serde::Serialize;
use serde_json::json;

use super::args::*;
use super::client::*;
use super::{enrollment, operations, output, upgrades};
use crate::dispatch::Command;
use crate::http::commands::{BatchReply, BatchRequest};
use crate::http::events::ResetJson;
use crate::http::groups::GroupView;
use crate::http::tagents::{TagentDetail, TagentPage, TagentView};
use crate::registry::events::EventJson;
use crate::registry::query::Counts;

/// Run one `ctl` command; the process exit status says whether it worked.
pub fn run(args: CtlArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_async(args))
}

pub(super) async fn run_async(args: CtlArgs) -> anyhow::Result<()> {
    let client = Client::new(&args)?;
    let json = args.json;
    match &args.command {
        CtlCommand::List { filter, max } => {
            let filter = filter.params()?;
            let max = max.unwrap_or(usize::MAX);
            let mut items: Vec<TagentView> = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let query = ListQuery {
                    filter: &filter,
                    limit: 1000,
                    cursor: cursor.as_deref(),
                };
                let page: TagentPage = client.get("/api/v1/tagents", &query).await?;
                items.extend(page.items);
                cursor = page.next_cursor;
                if cursor.is_none() || items.len() >= max {
                    break;
                }
            }
            items.truncate(max);
            if json {
                output::json(&items)?;
            } else {
                output::tagents(&items);
            }
        }
        CtlCommand::Show { id } => {
            let t: TagentDetail = client
                .get(&format!("/api/v1/tagents/{id}"), NO_QUERY)
                .await?;
            if json {
                output::json(&t)?;
            } else {
                output::tagent(&t);
            }
        }
        CtlCommand::Counts { filter } => {
            let counts: Counts = client
                .get("/api/v1/tagents/counts", &filter.params()?)
                .await?;
            if json {
                output::json(&counts)?;
            } else {
                let groups: Vec<GroupView> = client.get("/api/v1/runner-groups", NO_QUERY).await?;
                output::counts(&counts, &groups);
            }
        }
        CtlCommand::Delete { id } => {
            client.delete(&format!("/api/v1/tagents/{id}")).await?;
            if json {
                output::json(&json!({"deleted": id}))?;
            } else {
                println!("tagent {id} deleted");
            }
        }
        CtlCommand::Groups(cmd) => groups(&client, cmd, json).await?,
        CtlCommand::Reload(t) => command(&client, Command::Reload, t, json).await?,
        CtlCommand::Resetcred(t) => command(&client, Command::Resetcred, t, json).await?,
        CtlCommand::AllowReinstall { id, minutes } => {
            client
                .no_content(
                    Method::POST,
                    &format!("/api/v1/tagents/{id}/allow-reinstall"),
                    &[("minutes", minutes)],
                )
                .await?;
            if json {
                output::json(&json!({"allowed": id, "minutes": minutes}))?;
            } else {
                println!("tagent {id} may register a new credential in the next {minutes} minutes");
            }
        }
        CtlCommand::StatusCheck(t) => command(&client, Command::StatusCheck, t, json).await?,
        CtlCommand::Reachability { id } => operations::reachability(&client, *id, json).await?,
        CtlCommand::Config { id, set } if set.is_empty() => {
            operations::config(&client, *id, json).await?
        }
        CtlCommand::Config { id, set } => {
            let targets = (Some(vec![*id]), None, false);
            operations::config_set(&client, set, targets, json).await?
        }
        CtlCommand::ConfigSet(a) => {
            let filter = a.filter.params()?;
            let targets = match (a.ids.is_empty(), filter.is_empty()) {
                (false, false) => bail!("give tagent ids or filters, not both"),
                (false, true) => (Some(a.ids.clone()), None, false),
                (true, false) => (None, Some(filter), false),
                (true, true) if a.all => (None, None, true),
                (true, true) => {
                    bail!("name the tagents: --ids, filters (e.g. --ip 10.1.0.0/16), or --all")
                }
            };
            operations::config_set(&client, &a.pairs, targets, json).await?
        }
        CtlCommand::ConfigPut { id, file } => {
            operations::config_put(&client, *id, file, json).await?
        }
        CtlCommand::Audit { before, limit } => {
            operations::audit(&client, *before, *limit, json).await?
        }
        CtlCommand::Logs { id, name: None, .. } => operations::logs(&client, *id, json).await?,
        CtlCommand::Logs {
            id,
            name: Some(name),
            output,
        } => operations::log(&client, *id, name, output.as_deref()).await?,
        CtlCommand::Packages(cmd) => upgrades::packages(&client, cmd, json).await?,
        CtlCommand::Upgrade(cmd) => upgrades::upgrade(&client, cmd, json).await?,
        CtlCommand::Tokens(cmd) => enrollment::tokens(&client, cmd, json).await?,
        CtlCommand::Pending(cmd) => enrollment::pending(&client, cmd, json).await?,
        CtlCommand::Watch { after, count } => watch(&client, after.clone(), *count, json).await?,
    }
    Ok(())
}

pub(super) async fn groups(client: &Client, cmd: &GroupCommand, json: bool) -> anyhow::Result<()> {
    let groups: Vec<GroupView> = match cmd {
        GroupCommand::List => client.get("/api/v1/runner-groups", NO_QUERY).await?,
        GroupCommand::Show { id } => {
            let path = format!("/api/v1/runner-groups/{id}");
            vec![client.get(&path, NO_QUERY).await?]
        }
        GroupCommand::Create(g) => {
            let body = g.body()?;
            let path = "/api/v1/runner-groups";
            vec![
                client
                    .call(Method::POST, path, NO_QUERY, Some(&body))
                    .await?,
            ]
        }
        GroupCommand::Update { id, group } => {
            let body = group.body()?;
            let path = format!("/api/v1/runner-groups/{id}");
            vec![
                client
                    .call(Method::PUT, &path, NO_QUERY, Some(&body))
                    .await?,
            ]
        }
        GroupCommand::Delete { id } => {
            client
                .delete(&format!("/api/v1/runner-groups/{id}"))
                .await?;
            if json {
                output::json(&json!({"deleted": id}))?;
            } else {
                println!("runner group {id} deleted");
            }
            return Ok(());
        }
    };
    match (json, cmd) {
        (true, GroupCommand::List) => output::json(&groups)?,
        (true, _) => output::json(&groups[0])?,
        (false, _) => output::groups(&groups),
    }
    Ok(())
}

pub(super) async fn command(
    client: &Client,
    command: Command,
    t: &Targets,
    json: bool,
) -> anyhow::Result<()> {
    let filter = t.filter.params()?;
    let mut body = BatchRequest {
        command,
        ids: None,
        filter: None,
        all: false,
    };
    match (t.ids.is_empty(), filter.is_empty()) {
        (false, false) => bail!("give tagent ids or filters, not both"),
        (false, true) => body.ids = Some(t.ids.clone()),
        (true, false) => body.filter = Some(filter),
        (true, true) if t.all => body.all = true,
        (true, true) => bail!("name the tagents: ids, filters (e.g. --ip 10.1.0.0/16), or --all"),
    }
    let reply: BatchReply = client
        .call(Method::POST, "/api/v1/commands", NO_QUERY, Some(&body))
        .await?;
    if json {
        output::json(&reply)?;
    } else {
        output::command_results(&reply);
    }
    Ok(())
}

/// The data of one event of the stream, by its name.
#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum EventData {
    Reset(ResetJson),
    Change(EventJson),
}

pub(super) async fn watch(
    client: &Client,
    after: Option<String>,
    count: Option<usize>,
    json: bool,
) -> anyhow::Result<()> {
    use eventsource_stream::Eventsource;
    let mut last = after;
    let mut seen = 0usize;
    // Reconnect (resuming by id) when the hub restarts or the link drops.
    loop {
        let mut req = client
            .http
            .get(format!("{}/api/v1/events", client.base))
            .bearer_auth(&client.token);
        if let Some(id) = &last {
            req = req.header("last-event-id", id);
        }
        let resp = match req.send().await {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => bail!("GET /api/v1/events: HTTP {}", r.status()),
            Err(e) => {
                eprintln!("watch: {e}; retrying in 2 s");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        let mut events = resp.bytes_stream().eventsource();
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(e) => e,
                Err(e) => {
                    eprintln!("watch: {e}; reconnecting");
                    break;
                }
            };
            if !event.id.is_empty() {
                last = Some(event.id.clone());
            }
            let bad = || format!("event {} ({}): {}", event.id, event.event, event.data);
            let data = if event.event == "reset" {
                EventData::Reset(serde_json::from_str(&event.data).with_context(bad)?)
            } else {
                EventData::Change(serde_json::from_str(&event.data).with_context(bad)?)
            };
            if json {
                let data = output::value(&data)?;
                output::json_line(&json!({"id": event.id, "event": event.event, "data": data}));
            } else {
                match &data {
                    EventData::Reset(r) => output::reset(r),
                    EventData::Change(e) => output::event(&event.event, e),
                }
            }
            seen += 1;
            if count.is_some_and(|c| seen >= c) {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
