//! The HTTP shim: tagent registration (open, as real tagents expect), the
//! admin API under `/api/v1` (bearer tokens, OpenAPI at
//! `/api/v1/openapi.json`), Prometheus metrics and health (open).

pub mod audit;
pub mod auth;
mod client_ip;
pub mod commands;
pub mod config_set;
pub mod enrollment;
mod error;
pub mod events;
pub mod groups;
pub mod operations;
mod peer;
mod rate;
mod register;
mod router;
mod server;
mod state;
pub mod tagents;
pub mod tls;
pub mod upgrades;

pub use client_ip::client_ip;
pub use error::{ApiError, ErrorBody, api_error, error_reply};
pub use rate::RegisterRate;
pub use router::{REGISTER_PATH, openapi_json, router};
pub use server::{Limits, serve};
pub use state::HttpState;
