//! One field of `/proc/<pid>/status`, in KiB (`VmRSS:`, `VmHWM:`); 0 when
//! absent. Also included by path from examples/index_memory.rs.

pub fn kib(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
