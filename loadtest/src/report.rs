//! Files of a run's folder besides goose's own reports: `summary.json`,
//! `.hgrm` percentile files, `timeseries.csv`, and the SVG plots. (The
//! interval log `intervals.hlog` is written live by the collector.)

use crate::collector::{Collected, IntervalPoint};
use crate::hist::hgrm;
use crate::plot;
use crate::state::RunState;
use crate::summary::{Summary, mean};
use std::fmt::Write as _;
use std::path::Path;

/// Draws one plot into a path.
type Plotter<'a> = Box<dyn Fn(&Path) -> Result<(), String> + 'a>;

/// Writes every file and lists them (relative names) in `summary.files`,
/// then writes `summary.json`. Plot failures are reported, not fatal.
///
/// # Errors
/// When a file cannot be written.
pub fn write_all(
    dir: &Path,
    run: &RunState,
    col: &Collected,
    summary: &mut Summary,
) -> std::io::Result<()> {
    let mut files = Vec::new();
    let mut put = |name: &str, text: &str| -> std::io::Result<()> {
        std::fs::write(dir.join(name), text)?;
        files.push(name.to_string());
        Ok(())
    };
    put("delivery.hgrm", &hgrm(&col.delivery))?;
    put("send_ok.hgrm", &hgrm(&col.send_ok))?;
    for (name, h) in run.others() {
        put(&format!("{name}.hgrm"), &hgrm(&h))?;
    }
    put("timeseries.csv", &csv(&col.points))?;
    let plots: [(&str, Plotter<'_>); 3] = [
        (
            "latency_over_time.svg",
            Box::new(|p| plot::latency_over_time(&col.points, p)),
        ),
        ("rates.svg", Box::new(|p| plot::rates(&col.points, p))),
        (
            "latency_distribution.svg",
            Box::new(|p| {
                plot::distribution(
                    &[
                        ("send->delivery", &col.delivery),
                        ("send->ok", &col.send_ok),
                    ],
                    p,
                )
            }),
        ),
    ];
    for (name, draw) in plots {
        match draw(&dir.join(name)) {
            Ok(()) => files.push(name.to_string()),
            Err(e) => tracing::warn!(plot = name, error = %e, "plot not written"),
        }
    }
    files.push("intervals.hlog".into());
    for f in ["report.html", "report.md", "report.json"] {
        if dir.join(f).exists() {
            files.push(f.into());
        }
    }
    files.push("summary.json".into());
    files.sort();
    summary.files = files;
    let json = serde_json::to_string_pretty(summary).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("summary.json"), json)
}

/// The per-second series as CSV.
pub fn csv(points: &[IntervalPoint]) -> String {
    let mut out = String::from(
        "t_s,offered_per_s,sent_per_s,acked_per_s,errors_per_s,delivered_per_s,\
         delivery_count,delivery_p50_ms,delivery_p90_ms,delivery_p99_ms,delivery_p99_9_ms,delivery_max_ms,\
         send_ok_count,send_ok_p50_ms,send_ok_p99_ms,send_ok_max_ms,loadgen_cpu,node_cpu,node_rss_mib\n",
    );
    for p in points {
        let (d, a) = (&p.delivery, &p.send_ok);
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "{:.3},{:.1},{:.1},{:.1},{:.1},{:.1},{},{:.3},{:.3},{:.3},{:.3},{:.3},{},{:.3},{:.3},{:.3},{},{},{}",
            p.t_s,
            p.offered_per_s,
            p.sent_per_s,
            p.acked_per_s,
            p.errors_per_s,
            p.delivered_per_s,
            d.count,
            d.p50_ms,
            d.p90_ms,
            d.p99_ms,
            d.p99_9_ms,
            d.max_ms,
            a.count,
            a.p50_ms,
            a.p99_ms,
            a.max_ms,
            opt(p.loadgen_cpu),
            opt(p.node_cpu),
            opt(p.node_rss_mib)
        );
    }
    out
}

fn opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.3}")).unwrap_or_default()
}

/// A few lines for the console.
pub fn console(s: &Summary) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "== loadtest {} against {} ({} users, rooms of {}) ==",
        s.profile_name(),
        s.host,
        s.users,
        s.room_size
    );
    let _ = writeln!(
        o,
        "sends/s offered {:.1}, achieved {:.1}; deliveries/s {:.1}; sent {}, acked {}, errors {}, timeouts {}",
        s.offered_sends_per_s,
        s.achieved_sends_per_s,
        s.deliveries_per_s,
        s.messages_sent,
        s.messages_acked,
        s.send_errors,
        s.send_timeouts
    );
    let _ = writeln!(
        o,
        "{} of {} users in after {:.2} s; sending for {:.1} s",
        s.users as u64 - s.failed_users,
        s.users,
        s.startup_s,
        s.sending_s
    );
    let to_ok = format!("{}->ok", s.request.name());
    for (name, l) in [(to_ok.as_str(), &s.send_ok), ("delivery", &s.delivery)] {
        let _ = writeln!(
            o,
            "{name:>9} ms: p50 {:.3} p90 {:.3} p99 {:.3} p99.9 {:.3} p99.99 {:.3} max {:.3} (n={})",
            l.p50_ms, l.p90_ms, l.p99_ms, l.p99_9_ms, l.p99_99_ms, l.max_ms, l.count
        );
    }
    let _ = writeln!(
        o,
        "deliveries expected {} received {}; gaps {} duplicates {} reorders {} recovered via history {}",
        s.deliveries_expected,
        s.deliveries_received,
        s.gaps,
        s.duplicates,
        s.reorders,
        s.recovered_via_history
    );
    if !s.errors_by_code.is_empty() {
        let _ = writeln!(
            o,
            "errors by code: {:?}; overloaded retry_after_ms p50 {:.0} max {:.0}",
            s.errors_by_code, s.overload.retry_after_ms.p50_ms, s.overload.retry_after_ms.max_ms
        );
    }
    for (k, l) in &s.latencies {
        let _ = writeln!(
            o,
            "{k:>9} ms: p50 {:.3} p99 {:.3} max {:.3} (n={})",
            l.p50_ms, l.p99_ms, l.max_ms, l.count
        );
    }
    for p in &s.phases {
        let _ = writeln!(
            o,
            "phase {:<14} rate/user {:>6.2} offered {:>8.1}/s achieved {:>8.1}/s p99 delivery {:>8.3} ms errors {:.2}%{}",
            p.name,
            p.rate_per_user,
            p.offered_per_s,
            p.achieved_per_s,
            p.delivery.p99_ms,
            p.error_rate * 100.0,
            match p.passed {
                Some(true) => " PASS",
                Some(false) => " FAIL",
                None => "",
            }
        );
    }
    for c in &s.curve {
        let _ = writeln!(
            o,
            "overload {:>8} offered {:>8.1}/s goodput {:>8.1}/s ({:>5.1} % of {}x's {:.1}/s) refused {:.1}% {to_ok} p50 {:.0} p99 {:.0} ms delivery p99 {:.0} ms",
            c.phase.name,
            c.phase.offered_per_s,
            c.phase.achieved_per_s,
            c.goodput_share * 100.0,
            s.curve[0].multiple,
            c.base_per_s,
            c.phase.error_rate * 100.0,
            c.phase.send_ok.p50_ms,
            c.phase.send_ok.p99_ms,
            c.phase.delivery.p99_ms,
        );
    }
    if let Some(first) = s.curve.first().map(|c| c.multiple) {
        for (multiple, shares) in s.shares_past(first).iter().filter(|(_, v)| v.len() > 1) {
            let pct: Vec<String> = shares.iter().map(|x| format!("{:.1}", x * 100.0)).collect();
            let _ = writeln!(
                o,
                "overload {multiple}x: mean {:.1} % of {first}x over {} steps ({} %)",
                mean(shares.iter().copied()) * 100.0,
                shares.len(),
                pct.join(" / "),
            );
        }
    }
    let r = &s.resources;
    if let Some(g) = r.loadgen_cpu_cores_mean {
        let _ = write!(o, "cpu while sending: load generator {g:.2} cores");
        if let Some(n) = r.node_cpu_cores_mean {
            let _ = write!(o, ", node {n:.2} cores");
        }
        if let (Some(a), Some(b), Some(m)) =
            (r.node_rss_mib_start, r.node_rss_mib_end, r.node_rss_mib_max)
        {
            let _ = write!(o, "; node RSS {a:.0} -> {b:.0} MiB (max {m:.0})");
        }
        let _ = writeln!(o);
    }
    if let Some(k) = &s.knee {
        let _ = writeln!(
            o,
            "knee: {} ({:.1} sends/s offered, p99 delivery {:.3} ms)",
            k.name, k.offered_per_s, k.delivery.p99_ms
        );
    }
    match (s.profile, s.recovery_s) {
        (_, Some(r)) => {
            let _ = writeln!(o, "latency recovered {r:.0} s after the spike");
        }
        (crate::options::Profile::Peak, None) => {
            let _ = writeln!(o, "latency did not recover within the run");
        }
        _ => {}
    }
    let _ = writeln!(o, "report folder: {}", s.run_dir);
    let _ = writeln!(
        o,
        "{}",
        if s.passed {
            "PASSED".to_string()
        } else {
            format!("FAILED: {}", s.failures.join("; "))
        }
    );
    o
}
