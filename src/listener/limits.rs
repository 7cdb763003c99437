//! How long the hub waits on a tagent's listener and how much it takes
//! from it (SPEC §5.5: bound every wait, every download, every count).

use std::time::Duration;

use crate::config::ListenerConfig;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// A connection must be accepted within this (SPEC: 3 s).
    pub connect: Duration,
    /// Each read (and each write) must complete within this (SPEC: 30 s).
    pub read: Duration,
    /// A whole operation (every connection it opens) within this.
    pub operation: Duration,
    /// The most bytes one download may bring.
    pub max_download_bytes: u64,
    /// The most bytes of a command's output kept.
    pub max_output_bytes: usize,
    /// Operations running at once on this hub (one per tagent at most).
    pub max_operations: usize,
}

impl Limits {
    pub fn from_config(c: &ListenerConfig) -> Limits {
        Limits {
            connect: Duration::from_millis(c.connect_timeout_ms),
            read: Duration::from_millis(c.read_timeout_ms),
            operation: Duration::from_secs(c.operation_timeout_secs),
            max_download_bytes: c.max_download_bytes,
            max_output_bytes: c.max_output_bytes,
            max_operations: c.max_operations,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::from_config(&ListenerConfig::default())
    }
}
