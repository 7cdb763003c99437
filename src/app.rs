//! Wiring: open the store, rebuild the registry, bind the listeners, serve
//! until shutdown, then drain.

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::{Config, Engine};
use crate::heartbeat::{self, Hub, Settings};
use crate::http::{self, HttpState};
use crate::model::host_port;
use crate::registry::{Mine, Registry};
use crate::shutdown::Shutdown;
use crate::store::{CredentialCipher, HubInfo, PgOptions, PgStore, RedbStore, RegistryStore};

/// Run the hub until `shutdown` fires.
pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    let metrics = crate::metrics::install();
    let data_dir = config.data_dir.clone();
    crate::data_dir::prepare(&data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let tokens = http::auth::AdminTokens::load(&config.admin_tokens, &data_dir)
        .context("cannot set up the admin API's tokens")?;
    let cipher = match &config.credential_key {
        Some(k) => CredentialCipher::from_hex(k)?,
        None => CredentialCipher::from_key_file(&data_dir)?,
    };
    let store: Arc<dyn RegistryStore> = match config.store.engine {
        Engine::Redb => {
            let cache = config.store_cache_bytes;
            Arc::new(
                tokio::task::spawn_blocking(move || RedbStore::open(&data_dir, cipher, cache))
                    .await?
                    .context("cannot open the store")?,
            )
        }
        Engine::Postgres => {
            let opts = PgOptions {
                url: config.store.url.clone().context(
                    "store engine postgres needs a url (store.url, --database-url or \
                     TAGENT_HUB_DATABASE_URL)",
                )?,
                schema: config.store.schema.clone(),
                pool_size: config.store.pool_size,
                tls_ca: config.store.tls_ca.clone(),
            };
            let store = tokio::task::spawn_blocking(move || {
                let store = PgStore::open(&opts, cipher)?;
                let encrypted = store.encrypted()?;
                Ok::<_, crate::store::StoreError>((store, encrypted))
            })
            .await?
            .context("cannot open the PostgreSQL store")?;
            tracing::info!(encrypted = store.1, "connected to PostgreSQL");
            Arc::new(store.0)
        }
    };
    crate::data_dir::restrict_files(&config.data_dir).with_context(|| {
        format!(
            "cannot make the files of {} private",
            config.data_dir.display()
        )
    })?;
    tracing::info!(engine = store.engine().as_str(), "store open");

    let heartbeat = heartbeat::listener::bind(config.heartbeat_addr)
        .with_context(|| format!("cannot listen for heartbeats on {}", config.heartbeat_addr))?;
    let heartbeat_addr = heartbeat.local_addr()?;
    let advertised = config.advertised(heartbeat_addr);
    let seed = config.build_groups(advertised.clone())?;
    let groups = {
        let (store, advertised) = (store.clone(), advertised.clone());
        tokio::task::spawn_blocking(move || Registry::load_groups(&*store, seed, &advertised))
            .await?
            .context("cannot read the runner groups from the store")?
    };
    if store.shared()
        && groups
            .groups
            .iter()
            .flat_map(|g| &g.runners)
            .any(|r| r.this_hub)
    {
        anyhow::bail!(
            "hubs sharing a store must each be a runner with its own heartbeat address: \
             configure [[runner_group]] with one [[runner_group.runner]] per hub \
             (README: Run a runner group)"
        );
    }
    if store.shared() && Mine::at(&groups, &advertised) == Mine::Runners(Vec::new()) {
        tracing::warn!(
            "this hub's advertised heartbeat address names no runner of any group: \
             its sessions cannot be told apart from other hubs'"
        );
    }
    let registry = {
        let (store, advertised) = (store.clone(), advertised.clone());
        tokio::task::spawn_blocking(move || Registry::open_as(store, groups, advertised))
            .await?
            .context("cannot rebuild the registry from the store")?
    };
    tracing::info!(tagents = registry.index().len(), "registry loaded");
    registry.set_policy(crate::registry::PolicyConfig {
        policies: config.registration.policies(),
        max_pending: config.registration.max_pending,
    });
    tracing::info!(
        policy = %config.registration.policy,
        tenants_with_their_own = config.registration.tenants.len(),
        "registration policy"
    );

    let http_listener = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", config.http_addr))?;
    let http_addr = http_listener.local_addr()?;
    tracing::info!(
        http = %http_addr,
        heartbeat = %heartbeat_addr,
        advertise = %format!("{}:{}", advertised.0, advertised.1),
        "listening"
    );

    let settings = Settings::from_config(&config.heartbeat, config.http.max_connections);
    tracing::info!(
        max_sessions = settings.max_sessions,
        "heartbeat sessions bounded"
    );
    let hub = Hub::start(
        registry.clone(),
        settings,
        advertised.clone(),
        shutdown.clone(),
    )
    .context("cannot start the heartbeat server")?;
    let listener = tokio::spawn(heartbeat::listener::run(hub.clone(), heartbeat));
    if store.shared() {
        let me = HubInfo {
            heartbeat: host_port(&advertised.0, advertised.1),
            // Other hubs forward commands here.
            http: host_port(&advertised.0, http_addr.port()),
        };
        let lease = std::time::Duration::from_secs(config.store.lease_secs);
        tokio::spawn(crate::group::run(
            registry.clone(),
            hub.clone(),
            me,
            lease,
            shutdown.clone(),
        ));
    }

    let operations = crate::listener::Operations::new(
        registry.clone(),
        crate::listener::Limits::from_config(&config.listener),
    );
    let packages =
        crate::upgrade::Packages::open(&config.data_dir, config.upgrade.max_package_bytes)
            .context("cannot open the packages directory")?;
    let upgrades = crate::upgrade::Rollouts::start(
        registry.clone(),
        operations.clone(),
        Arc::new(packages),
        host_port(&advertised.0, advertised.1),
    )
    .await;
    let state = HttpState {
        registry: registry.clone(),
        hub: hub.clone(),
        operations,
        upgrades,
        metrics,
        trusted_proxies: config.trusted_proxies.clone().into(),
        register_rate: http::RegisterRate::from_config(&config.http),
        peers: crate::dispatch::Verifier::default(),
    };
    {
        let (rate, shutdown) = (state.register_rate.clone(), shutdown.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(10));
            loop {
                tokio::select! {
                    _ = shutdown.wait() => break,
                    _ = every.tick() => rate.tidy(),
                }
            }
        });
    }
    let router = http::router(
        state,
        config.max_body_bytes,
        tokens,
        config.http.tls_cert.is_some(),
    );
    let limits = http::Limits::from_config(&config.http);
    let tls = match (&config.http.tls_cert, &config.http.tls_key) {
        (Some(cert), Some(key)) => {
            let acceptor = http::tls::acceptor(cert, key).context("cannot set up TLS")?;
            tracing::info!(cert = %cert.display(), "HTTP port serves TLS only");
            Some(acceptor)
        }
        _ => None,
    };
    let http = tokio::spawn(http::serve(
        http_listener,
        router,
        limits,
        tls,
        shutdown.clone(),
    ));

    shutdown.wait().await;
    // Within 5 s of the signal: stop accepting, close every session, flush
    // status, let the writer finish.
    let _ = listener.await;
    hub.drain(std::time::Duration::from_secs(3)).await;
    let served = match tokio::time::timeout(std::time::Duration::from_secs(1), http).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(std::io::Error::other(e)),
        Err(_) => Ok(()),
    };
    registry.shutdown().await;
    tracing::info!("stopped");
    served.context("the HTTP server failed")
}
