//! `tagent-hub ctl`: the admin API from the command line. Tables for
//! people, `--json` for scripts; nothing here that the API cannot do.
//! `args.rs` the command line, `client.rs` the calls and paging, `run.rs`
//! each subcommand, `operations.rs` those over a tagent's own listener,
//! `enrollment.rs` tokens and pending registrations, `upgrades.rs`
//! packages and rollouts, `output.rs` tables or JSON.

mod args;
mod client;
mod enrollment;
mod operations;
mod output;
mod run;
mod upgrades;

pub use args::CtlArgs;
pub use run::run;
