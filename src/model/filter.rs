//! The tagent filter as operators write it: the admin API's query
//! parameters and a batch's JSON `filter`, and what `ctl` sends. The
//! registry evaluates it as `registry::query::Filter`.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// The filters shared by listing, counting and batch commands. Every field
/// narrows; none set matches every tagent.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FilterParams {
    /// Exact tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// `connected` or `disconnected`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Why the last session ended, e.g. `eof`, `idle-timeout`, `restart`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// An ip or a CIDR network: matches the primary or any contained ip.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Runner group id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<u32>,
    /// Names starting with this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name_prefix: Option<String>,
    /// Exact tagent version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Last status change at or after this Unix time in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed_since: Option<u64>,
}

impl FilterParams {
    /// No field set: it names every tagent.
    pub fn is_empty(&self) -> bool {
        *self == FilterParams::default()
    }
}
