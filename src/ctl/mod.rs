//! `tagent-hub ctl`: the admin API from the command line. Tables for
//! people, `--json` for scripts; nothing here that the API cannot do.

mod args;
mod client;
mod output;
mod run;

pub use args::CtlArgs;
pub use run::run;
