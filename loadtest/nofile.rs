//! The open-file limit: the operation benches hold one listener per fake
//! tagent, so they raise their soft limit to the hard one at start.

use anyhow::{Context, bail};

/// Raise the soft RLIMIT_NOFILE (to the hard limit) and check that `need`
/// descriptors fit in it; returns the new soft limit.
pub fn raise_for(need: u64) -> anyhow::Result<u64> {
    let soft = rlimit::increase_nofile_limit(u64::MAX).context("cannot raise RLIMIT_NOFILE")?;
    if need > soft {
        bail!("{need} open files are needed but the limit is {soft} (the hard limit; ulimit -Hn)");
    }
    Ok(soft)
}
