#![deny(unsafe_code)]

/// jemalloc: idle sessions are small objects of a few sizes, which it packs
/// tightly; a connect storm's transient memory goes back to the system
/// within a second (background purging) instead of staying in the heap.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before `main` (the `malloc_conf` of its manual).
// Safety: jemalloc reads this symbol (its `malloc_conf`, prefixed by
// tikv-jemalloc-sys) as a NUL-terminated string; the bytes end in NUL and
// nothing else in the program defines the name.
#[allow(unsafe_code)]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8; 60] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tagent_hub::config::{AdminTokenConfig, Config, Scope};
use tagent_hub::shutdown::Shutdown;

/// tagent-hub: the heartbeat server and registry for NeatLogic tagents.
#[derive(Parser)]
#[command(version, about, args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub: registration and admin over HTTP, heartbeats over TCP.
    Serve(ServeArgs),
    /// Operate a running hub through its admin API.
    Ctl(tagent_hub::ctl::CtlArgs),
}

/// Flags override environment variables, which override the config file.
#[derive(clap::Args)]
struct ServeArgs {
    /// TOML configuration file (optional: the defaults need none).
    #[arg(long, env = "TAGENT_HUB_CONFIG")]
    config: Option<PathBuf>,
    /// HTTP listen address (registration, admin, metrics). Port 0 picks one.
    #[arg(long, env = "TAGENT_HUB_HTTP_ADDR")]
    http_addr: Option<SocketAddr>,
    /// Heartbeat listen address. Port 0 picks one.
    #[arg(long, env = "TAGENT_HUB_HEARTBEAT_ADDR")]
    heartbeat_addr: Option<SocketAddr>,
    /// Directory of the store and generated keys.
    #[arg(long, env = "TAGENT_HUB_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Heartbeat address told to tagents, HOST:PORT.
    #[arg(long, env = "TAGENT_HUB_ADVERTISE")]
    advertise: Option<String>,
    /// PostgreSQL URL of a registry shared by a runner group's hubs
    /// (selects the postgres engine).
    #[arg(long, env = "TAGENT_HUB_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Key that seals credentials at rest (64 hex digits).
    #[arg(long, env = "TAGENT_HUB_CREDENTIAL_KEY", hide_env_values = true)]
    credential_key: Option<String>,
    /// One more admin-scope bearer token for the admin API (beside the
    /// config's `[[admin_token]]`). Prefer the environment to the flag.
    #[arg(long, env = "TAGENT_HUB_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
}

impl ServeArgs {
    fn into_config(self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(a) = self.http_addr {
            config.http_addr = a;
        }
        if let Some(a) = self.heartbeat_addr {
            config.heartbeat_addr = a;
        }
        if let Some(d) = self.data_dir {
            config.data_dir = d;
        }
        if let Some(a) = self.advertise {
            config.advertise = Some(a);
        }
        if let Some(url) = self.database_url {
            config.store.url = Some(url);
            config.store.engine = tagent_hub::config::Engine::Postgres;
        }
        if let Some(k) = self.credential_key {
            config.credential_key = Some(k);
        }
        if let Some(token) = self.admin_token {
            config.admin_tokens.push(AdminTokenConfig {
                token,
                scope: Scope::Admin,
            });
        }
        config.validate()?;
        Ok(config)
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match cli.command {
        Command::Ctl(args) => tagent_hub::ctl::run(args),
        Command::Serve(args) => {
            // Each session holds a descriptor: use all the process may have.
            if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
                tracing::warn!(error = %e, "cannot raise the open-file limit");
            }
            let config = args.into_config()?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                // Blocking work (store reads during native handshakes) is
                // short: a few threads serve a handshake storm.
                .max_blocking_threads(8)
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(async {
                let shutdown = Shutdown::new();
                shutdown.on_signals();
                tagent_hub::app::run(config, shutdown).await
            })
        }
    }
}
