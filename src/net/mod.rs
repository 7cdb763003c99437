//! What both accept loops (heartbeat, HTTP) share: backing off when
//! `accept(2)` runs out of resources, and bounding how many connections are
//! open, in all and from one source.

mod backoff;
mod conn_limit;

pub use backoff::AcceptBackoff;
pub use conn_limit::{ConnLimit, ConnPermit, ConnRefused, source_key};
