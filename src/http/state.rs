//! What every handler gets: the registry, the heartbeat hub, the
//! listener operations, the metrics handle, the proxies trusted to name a
//! client, the registration rate limits and the hub-to-hub verifier.

use std::sync::Arc;

use ipnet::IpNet;
use metrics_exporter_prometheus::PrometheusHandle;

use super::rate::RegisterRate;
use crate::dispatch::{Dispatch, Verifier};
use crate::heartbeat::Hub;
use crate::listener::Operations;
use crate::registry::Registry;
use crate::upgrade::Rollouts;

#[derive(Clone)]
pub struct HttpState {
    pub registry: Registry,
    pub hub: Hub,
    /// Operations over tagents' own listeners (SPEC §5).
    pub operations: Operations,
    pub metrics: PrometheusHandle,
    pub trusted_proxies: Arc<[IpNet]>,
    pub register_rate: RegisterRate,
    /// Checks the signatures of requests other hubs forward.
    pub peers: Verifier,
    /// Installation packages and rollouts.
    pub upgrades: Rollouts,
}

impl HttpState {
    /// Where the handlers send commands for tagents, on behalf of `who`
    /// (the audit log's name of the admin token).
    pub fn dispatch<'a>(&'a self, who: &'a str) -> Dispatch<'a> {
        Dispatch {
            registry: &self.registry,
            hub: &self.hub,
            operations: &self.operations,
            who,
        }
    }
}
