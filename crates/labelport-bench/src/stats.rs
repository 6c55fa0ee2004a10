//! Figures the benchmarks print: percentiles and this process's memory.

use std::time::Duration;

/// The `p` quantile (0.0–1.0, nearest rank) of sorted durations, in
/// milliseconds. `sorted` must not be empty.
pub fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1000.0
}

/// Peak resident memory of this process so far (`VmHWM` of
/// `/proc/self/status`), in MB; NaN where `/proc` is not there.
pub fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}
