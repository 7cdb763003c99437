//! The web console at `/ui/`: server-rendered pages (askama templates,
//! compiled into the binary) over the same registry and dispatch calls as
//! the admin API, signed in with an admin or read token; live updates from
//! the event stream through a few lines of EventSource.

mod assets;
mod audit;
mod batch;
mod enrollment;
mod events;
mod groups;
mod guard;
mod overview;
mod page;
mod router;
mod session;
mod signin;
mod state;
mod tagent;
mod tagents;
mod upgrades;

pub use router::router;
pub use session::{COOKIE, Sessions};
