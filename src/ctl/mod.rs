//! `tagent-hub ctl`: the admin API from the command line. Tables for
//! people, `--json` for scripts; nothing here that the API cannot do.

mod output;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::dispatch::Command;
use crate::http::ErrorBody;
use crate::http::commands::{BatchReply, BatchRequest};
use crate::http::events::ResetJson;
use crate::http::groups::{GroupBody, GroupView, RunnerBody};
use crate::http::tagents::{TagentDetail, TagentPage, TagentView};
use crate::model::FilterParams;
use crate::registry::events::EventJson;
use crate::registry::query::Counts;

#[derive(Args)]
pub struct CtlArgs {
    /// The hub's HTTP address.
    #[arg(long, env = "TAGENT_HUB_URL", default_value = "http://127.0.0.1:8084")]
    url: String,
    /// An admin API token. Default: the hub's generated one, read from
    /// `<data-dir>/admin-token`.
    #[arg(long, env = "TAGENT_HUB_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Where to find a generated token.
    #[arg(long, env = "TAGENT_HUB_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Subcommand)]
enum CtlCommand {
    /// List tagents (all pages), filtered.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// Stop after this many.
        #[arg(long)]
        max: Option<usize>,
    },
    /// One tagent: record, accounts, live session.
    Show { id: u64 },
    /// Counts by status, by runner group and by disconnect reason.
    Counts {
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Delete a tagent (refused while it is connected).
    Delete { id: u64 },
    /// Runner groups.
    #[command(subcommand)]
    Groups(GroupCommand),
    /// Tell tagents to restart and register again.
    Reload(Targets),
    /// Tell tagents to pick a new credential and register again.
    Resetcred(Targets),
    /// Whether tagents hold a live session.
    StatusCheck(Targets),
    /// Follow registrations and status changes as they happen.
    Watch {
        /// Resume after this event id.
        #[arg(long)]
        after: Option<String>,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<usize>,
    },
}

#[derive(Subcommand)]
enum GroupCommand {
    /// Every runner group, in scan order (the first network that matches wins).
    List,
    Show {
        id: u32,
    },
    /// Create a group; it is scanned after the existing ones.
    Create(GroupArgs),
    /// Replace a group's name, networks and runners.
    Update {
        id: u32,
        #[command(flatten)]
        group: GroupArgs,
    },
    /// Delete a group that no tagent belongs to.
    Delete {
        id: u32,
    },
}

#[derive(Args)]
struct GroupArgs {
    /// For create: the id (default: one above the highest).
    #[arg(long)]
    id: Option<u32>,
    #[arg(long)]
    name: String,
    /// A CIDR network; repeat, in scan order.
    #[arg(long = "network")]
    networks: Vec<String>,
    /// A runner as ID=NAME@HOST:PORT (or ID=NAME@this-hub); repeat.
    #[arg(long = "runner")]
    runners: Vec<String>,
}

#[derive(Args, Default)]
struct FilterArgs {
    #[arg(long)]
    tenant: Option<String>,
    /// connected or disconnected.
    #[arg(long)]
    status: Option<String>,
    /// Why the last session ended: eof, reset, idle-timeout, restart, ...
    #[arg(long)]
    reason: Option<String>,
    /// An ip or a CIDR network (primary or contained ips).
    #[arg(long)]
    ip: Option<String>,
    #[arg(long)]
    port: Option<u16>,
    /// Runner group id.
    #[arg(long)]
    group: Option<u32>,
    #[arg(long)]
    name_prefix: Option<String>,
    #[arg(long)]
    version: Option<String>,
    /// Status changed within this long, e.g. 1h, 30m, 2d.
    #[arg(long)]
    since: Option<humantime::Duration>,
}

#[derive(Args)]
struct Targets {
    /// Tagent ids; or use filters.
    ids: Vec<u64>,
    #[command(flatten)]
    filter: FilterArgs,
    /// With no ids and no filter: every tagent.
    #[arg(long)]
    all: bool,
}

impl FilterArgs {
    /// The filter as the API takes it: the one place ctl's flags become it.
    fn params(&self) -> anyhow::Result<FilterParams> {
        let changed_since = match self.since {
            None => None,
            Some(d) => {
                let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
                Some(now.saturating_sub(d.into()).as_millis() as u64)
            }
        };
        Ok(FilterParams {
            tenant: self.tenant.clone(),
            status: self.status.clone(),
            reason: self.reason.clone(),
            ip: self.ip.clone(),
            port: self.port,
            group: self.group,
            name_prefix: self.name_prefix.clone(),
            version: self.version.clone(),
            changed_since,
        })
    }
}

/// The query of one page of a listing.
#[derive(Serialize)]
struct ListQuery<'a> {
    #[serde(flatten)]
    filter: &'a FilterParams,
    limit: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    cursor: Option<&'a str>,
}

/// No query parameters.
const NO_QUERY: &[(&str, &str)] = &[];

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    fn new(args: &CtlArgs) -> anyhow::Result<Client> {
        let token = match &args.token {
            Some(t) => t.clone(),
            None => {
                let path = args.data_dir.join(crate::http::auth::TOKEN_FILE);
                std::fs::read_to_string(&path)
                    .with_context(|| {
                        format!(
                            "no --token or TAGENT_HUB_ADMIN_TOKEN, and cannot read {}",
                            path.display()
                        )
                    })?
                    .trim()
                    .to_owned()
            }
        };
        Ok(Client {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .build()?,
            base: args.url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// Send a request; an API error (`{"error": ...}`) is returned as one.
    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &(impl Serialize + ?Sized),
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> anyhow::Result<(StatusCode, String)> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.token)
            .query(query);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success()
            && let Ok(e) = serde_json::from_str::<ErrorBody>(&text)
        {
            bail!("{}: {}", status, e.error);
        }
        Ok((status, text))
    }

    /// A request whose reply is one of the API's types.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &(impl Serialize + ?Sized),
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> anyhow::Result<T> {
        let (status, text) = self.send(method.clone(), path, query, body).await?;
        serde_json::from_str(&text)
            .with_context(|| format!("{method} {path}: HTTP {status}, not the API's reply: {text}"))
    }

    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &(impl Serialize + ?Sized),
    ) -> anyhow::Result<T> {
        self.call(Method::GET, path, query, None::<&()>).await
    }

    /// A request answered with no body (`204 No Content`).
    async fn delete(&self, path: &str) -> anyhow::Result<()> {
        let (status, text) = self
            .send(Method::DELETE, path, NO_QUERY, None::<&()>)
            .await?;
        if status != StatusCode::NO_CONTENT {
            bail!("DELETE {path}: HTTP {status}: {text}");
        }
        Ok(())
    }
}

/// Run one `ctl` command; the process exit status says whether it worked.
pub fn run(args: CtlArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: CtlArgs) -> anyhow::Result<()> {
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
        CtlCommand::StatusCheck(t) => command(&client, Command::StatusCheck, t, json).await?,
        CtlCommand::Watch { after, count } => watch(&client, after.clone(), *count, json).await?,
    }
    Ok(())
}

async fn groups(client: &Client, cmd: &GroupCommand, json: bool) -> anyhow::Result<()> {
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

impl GroupArgs {
    /// The group as the API takes it.
    fn body(&self) -> anyhow::Result<GroupBody> {
        let mut runners = Vec::new();
        for r in &self.runners {
            let (id, rest) = r
                .split_once('=')
                .with_context(|| format!("runner '{r}' is not ID=NAME@HOST:PORT"))?;
            let (name, addr) = rest
                .split_once('@')
                .with_context(|| format!("runner '{r}' is not ID=NAME@HOST:PORT"))?;
            let id: u32 = id
                .parse()
                .with_context(|| format!("runner '{r}': '{id}' is not an id"))?;
            let this_hub = addr == "this-hub";
            runners.push(RunnerBody {
                id,
                name: name.to_owned(),
                heartbeat: (!this_hub).then(|| addr.to_owned()),
                this_hub,
            });
        }
        Ok(GroupBody {
            id: self.id,
            name: self.name.clone(),
            networks: self.networks.clone(),
            runners,
        })
    }
}

async fn command(client: &Client, command: Command, t: &Targets, json: bool) -> anyhow::Result<()> {
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
enum EventData {
    Reset(ResetJson),
    Change(EventJson),
}

async fn watch(
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
