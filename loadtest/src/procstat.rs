//! CPU and memory of the load generator and (with `--node-pid`) of the node,
//! read from Linux `/proc` once a second. The generator and the node often
//! share a machine; their CPU side by side tells whose latency is whose.
//! Elsewhere than Linux every reading is `None`.

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// User + system CPU time so far, seconds.
    pub cpu_s: f64,
    /// Resident memory, MiB.
    pub rss_mib: f64,
}

/// Reads `/proc/<pid>` (`self` for this process).
pub fn read(pid: &str) -> Option<Reading> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse(&stat, &status)
}

/// Parses the text of `/proc/<pid>/stat` and `/proc/<pid>/status`.
pub fn parse(stat: &str, status: &str) -> Option<Reading> {
    // The command name (field 2) may hold spaces: count fields after its ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Field 3 (state) is index 0, so utime (14) and stime (15) are 11 and 12.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let rss_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(Reading {
        cpu_s: (utime + stime) / TICKS_PER_SEC,
        rss_mib: rss_kib / 1024.0,
    })
}

/// CPU and memory of the generator and the node (`--node-pid`), from `/proc`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Resources {
    /// Mean cores used by the load generator while sending.
    pub loadgen_cpu_cores_mean: Option<f64>,
    /// Mean cores used by the node while sending.
    pub node_cpu_cores_mean: Option<f64>,
    /// Node resident memory at the first sample, MiB.
    pub node_rss_mib_start: Option<f64>,
    /// Node resident memory at the last sample, MiB.
    pub node_rss_mib_end: Option<f64>,
    /// Largest node resident memory, MiB.
    pub node_rss_mib_max: Option<f64>,
}

impl Resources {
    /// Means and extremes of the per-second samples between `from_s` and `to_s`.
    pub fn of(points: &[crate::collector::IntervalPoint], from_s: f64, to_s: f64) -> Self {
        let mean = |f: fn(&crate::collector::IntervalPoint) -> Option<f64>| {
            let v: Vec<f64> = points
                .iter()
                .filter(|p| p.t_s > from_s && p.t_s <= to_s + 1.0)
                .filter_map(f)
                .collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        };
        let rss: Vec<f64> = points.iter().filter_map(|p| p.node_rss_mib).collect();
        Self {
            loadgen_cpu_cores_mean: mean(|p| p.loadgen_cpu),
            node_cpu_cores_mean: mean(|p| p.node_cpu),
            node_rss_mib_start: rss.first().copied(),
            node_rss_mib_end: rss.last().copied(),
            node_rss_mib_max: rss.iter().copied().reduce(f64::max),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_rss() {
        let stat = "5255 (dialtone serve) S 1 5255 5255 0 -1 4194560 100 0 0 0 4200 300 0 0 20 0 4 0 1 2 3";
        let status = "Name:\tdialtone\nVmRSS:\t  1048576 kB\nThreads:\t4\n";
        let r = parse(stat, status).expect("reading");
        assert!((r.cpu_s - 45.0).abs() < 1e-9);
        assert!((r.rss_mib - 1024.0).abs() < 1e-9);
    }

    #[test]
    fn this_process_can_be_read_on_linux() {
        if cfg!(target_os = "linux") {
            let r = read("self").expect("self");
            assert!(r.rss_mib > 0.0);
        }
    }
}
