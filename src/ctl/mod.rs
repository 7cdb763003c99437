//! `tagent-hub ctl`: the admin API from the command line. Tables for
//! people, `--json` for scripts; nothing here that the API cannot do.

mod output;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

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
    fn to_json(&self) -> anyhow::Result<Value> {
        let since = match self.since {
            None => None,
            Some(d) => {
                let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
                Some(now.saturating_sub(d.into()).as_millis() as u64)
            }
        };
        let v = json!({
            "tenant": self.tenant, "status": self.status, "reason": self.reason,
            "ip": self.ip, "port": self.port, "group": self.group,
            "name_prefix": self.name_prefix, "version": self.version,
            "changed_since": since,
        });
        // Only what was given.
        Ok(Value::Object(
            v.as_object()
                .into_iter()
                .flatten()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ))
    }

    fn to_query(&self) -> anyhow::Result<Vec<(String, String)>> {
        let v = self.to_json()?;
        Ok(v.as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| {
                let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                (k.clone(), v)
            })
            .collect())
    }
}

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

    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.token)
            .query(query);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = resp.status();
        let text = resp.text().await?;
        if status == StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        let value: Value = serde_json::from_str(&text)
            .with_context(|| format!("{method} {url}: HTTP {status}, not JSON: {text}"))?;
        if !status.is_success() && value.get("error").is_some() {
            bail!(
                "{}: {}",
                status,
                value["error"].as_str().unwrap_or_default()
            );
        }
        Ok(value)
    }

    async fn get(&self, path: &str, query: &[(String, String)]) -> anyhow::Result<Value> {
        self.call(Method::GET, path, query, None).await
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
            let mut query = filter.to_query()?;
            query.push(("limit".into(), "1000".into()));
            let max = max.unwrap_or(usize::MAX);
            let mut items: Vec<Value> = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let mut q = query.clone();
                if let Some(c) = &cursor {
                    q.push(("cursor".into(), c.clone()));
                }
                let page = client.get("/api/v1/tagents", &q).await?;
                items.extend(page["items"].as_array().into_iter().flatten().cloned());
                cursor = page["next_cursor"].as_str().map(str::to_owned);
                if cursor.is_none() || items.len() >= max {
                    break;
                }
            }
            items.truncate(max);
            if json {
                output::json(&Value::Array(items));
            } else {
                output::tagents(&items);
            }
        }
        CtlCommand::Show { id } => {
            let t = client.get(&format!("/api/v1/tagents/{id}"), &[]).await?;
            if json {
                output::json(&t);
            } else {
                output::tagent(&t);
            }
        }
        CtlCommand::Counts { filter } => {
            let counts = client
                .get("/api/v1/tagents/counts", &filter.to_query()?)
                .await?;
            if json {
                output::json(&counts);
            } else {
                let groups = client.get("/api/v1/runner-groups", &[]).await?;
                output::counts(&counts, &groups);
            }
        }
        CtlCommand::Delete { id } => {
            client
                .call(Method::DELETE, &format!("/api/v1/tagents/{id}"), &[], None)
                .await?;
            if json {
                output::json(&json!({"deleted": id}));
            } else {
                println!("tagent {id} deleted");
            }
        }
        CtlCommand::Groups(cmd) => groups(&client, cmd, json).await?,
        CtlCommand::Reload(t) => command(&client, "reload", t, json).await?,
        CtlCommand::Resetcred(t) => command(&client, "resetcred", t, json).await?,
        CtlCommand::StatusCheck(t) => command(&client, "status-check", t, json).await?,
        CtlCommand::Watch { after, count } => watch(&client, after.clone(), *count, json).await?,
    }
    Ok(())
}

async fn groups(client: &Client, cmd: &GroupCommand, json: bool) -> anyhow::Result<()> {
    let reply = match cmd {
        GroupCommand::List => client.get("/api/v1/runner-groups", &[]).await?,
        GroupCommand::Show { id } => {
            client
                .get(&format!("/api/v1/runner-groups/{id}"), &[])
                .await?
        }
        GroupCommand::Create(g) => {
            let body = g.to_json()?;
            client
                .call(Method::POST, "/api/v1/runner-groups", &[], Some(body))
                .await?
        }
        GroupCommand::Update { id, group } => {
            let body = group.to_json()?;
            let path = format!("/api/v1/runner-groups/{id}");
            client.call(Method::PUT, &path, &[], Some(body)).await?
        }
        GroupCommand::Delete { id } => {
            let path = format!("/api/v1/runner-groups/{id}");
            client.call(Method::DELETE, &path, &[], None).await?;
            json!({"deleted": id})
        }
    };
    if json {
        output::json(&reply);
    } else if let GroupCommand::Delete { id } = cmd {
        println!("runner group {id} deleted");
    } else if reply.is_array() {
        output::groups(reply.as_array().map(Vec::as_slice).unwrap_or_default());
    } else {
        output::groups(std::slice::from_ref(&reply));
    }
    Ok(())
}

impl GroupArgs {
    fn to_json(&self) -> anyhow::Result<Value> {
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
            runners.push(if addr == "this-hub" {
                json!({"id": id, "name": name, "this_hub": true})
            } else {
                json!({"id": id, "name": name, "heartbeat": addr})
            });
        }
        let mut body = json!({"name": self.name, "networks": self.networks, "runners": runners});
        if let Some(id) = self.id {
            body["id"] = json!(id);
        }
        Ok(body)
    }
}

async fn command(client: &Client, command: &str, t: &Targets, json: bool) -> anyhow::Result<()> {
    let filter = t.filter.to_json()?;
    let has_filter = filter.as_object().is_some_and(|o| !o.is_empty());
    let mut body = json!({"command": command});
    match (t.ids.is_empty(), has_filter) {
        (false, true) => bail!("give tagent ids or filters, not both"),
        (false, false) => body["ids"] = json!(t.ids),
        (true, true) => body["filter"] = filter,
        (true, false) if t.all => body["all"] = json!(true),
        (true, false) => bail!("name the tagents: ids, filters (e.g. --ip 10.1.0.0/16), or --all"),
    }
    let reply = client
        .call(Method::POST, "/api/v1/commands", &[], Some(body))
        .await?;
    if json {
        output::json(&reply);
    } else {
        output::command_results(&reply);
    }
    Ok(())
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
            let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
            if json {
                output::json_line(&json!({"id": event.id, "event": event.event, "data": data}));
            } else {
                output::event(&event.event, &data);
            }
            seen += 1;
            if count.is_some_and(|c| seen >= c) {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
