//! loginbench: an open-loop password-login driver for a dialtone node, for
//! the overload curve of the `login` admission queue (issue 3, Benchmarks).
//!
//! ```text
//! cargo build --release --example loginbench
//! target/release/examples/loginbench --url ws://127.0.0.1:18500/ws \
//!     --conns 256 --rates 100,200,500,1000 --step-secs 15
//! ```
//!
//! Setup: `--conns` connections, each registers its own user (`register`,
//! a few at a time, retried after `retry_after_ms` when shed) and so is
//! logged in as that user.
//!
//! Each step then issues `--rate` password `login` frames per second for
//! `--step-secs` on a timetable fixed in advance (request `i` is due at
//! `t0 + i / rate`). A `login` for the connection's own user is a refresh:
//! another argon2 verify. Each request goes to a connection with nothing
//! outstanding (round robin), or, when every connection is busy, to the one
//! with the fewest outstanding requests (pipelined; the node handles one
//! frame per connection at a time). Replies are matched by `ref` (= `i`), and
//! latency is measured from the *scheduled* instant (no coordinated
//! omission); the latency from the instant the frame was handed to the
//! writer is reported too, to separate the driver's timer lateness.
//!
//! After the last scheduled request the step waits up to `--drain-secs` for
//! the remaining replies; whatever is still unanswered is reported as such.
//! Every loop is bounded: requests per step by `--max-requests`, every wait
//! by a timeout.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::{
    sync::mpsc,
    time::{sleep, sleep_until, timeout},
};
use tokio_tungstenite::{connect_async, tungstenite::Message};

// The contract tests' HTTP client (it also undoes chunked encoding).
#[path = "../tests/common/mod.rs"]
mod common;

#[derive(Parser, Debug, Clone)]
#[command(about = "Open-loop password-login overload driver for dialtone")]
struct Args {
    /// WebSocket endpoint of the node (loopback only).
    #[arg(long, default_value = "ws://127.0.0.1:18500/ws")]
    url: String,
    /// Connections, each logged in as its own user.
    #[arg(long, short = 'c', default_value_t = 256)]
    conns: usize,
    /// Registrations in flight at once during setup.
    #[arg(long, default_value_t = 4)]
    setup_concurrency: usize,
    /// Offered login rates (per second), one step each, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "100")]
    rates: Vec<f64>,
    /// Length of each step.
    #[arg(long, default_value_t = 15.0)]
    step_secs: f64,
    /// Longest wait for outstanding replies after a step's last request.
    #[arg(long, default_value_t = 5.0)]
    drain_secs: f64,
    /// Pause between steps (after the drain).
    #[arg(long, default_value_t = 2.0)]
    pause_secs: f64,
    /// Upper bound on requests in one step.
    #[arg(long, default_value_t = 200_000)]
    max_requests: u64,
    /// User name prefix (distinct per run on a node that keeps users).
    #[arg(long, default_value = "lb")]
    prefix: String,
    /// Password of every user.
    #[arg(long, default_value = "pw")]
    password: String,
    /// Label printed with each result line (e.g. `on` / `off`).
    #[arg(long, default_value = "")]
    label: String,
    /// Bound on the setup phase.
    #[arg(long, default_value_t = 120)]
    setup_timeout_secs: u64,
}

/// What a reply was, for the collector.
enum Kind {
    Ok,
    /// `overloaded`, with the regulator's reason from the message
    /// (`... refused the request (queue_full)`), or `?`.
    Overloaded(String),
    Other(String),
}

struct Reply {
    id: u64,
    kind: Kind,
    at: Instant,
}

/// One connection after setup: its writer's queue and its outstanding count.
struct Conn {
    user: String,
    tx: mpsc::UnboundedSender<String>,
    outstanding: Arc<AtomicUsize>,
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The regulator's reason in an `overloaded` message, e.g. `queue_full`.
fn reason_of(v: &Value) -> String {
    v["message"]
        .as_str()
        .and_then(|m| m.rsplit_once('('))
        .and_then(|(_, r)| r.strip_suffix(')'))
        .unwrap_or("?")
        .to_string()
}

/// The node's own refusal timings for `login` frames (frame in to refusal
/// written, `dialtone_refusal_seconds`), at the door and after a wait in the
/// queue: cumulative count per bucket bound, from `/metrics` on the
/// WebSocket listener's address.
async fn node_refusals(url: &str) -> Option<[Vec<(f64, u64)>; 2]> {
    let host = url.strip_prefix("ws://")?.split('/').next()?;
    let addr = tokio::net::lookup_host(host).await.ok()?.next()?;
    let (_, _, body) = common::http_get(addr, "/metrics", None).await;
    Some([false, true].map(|waited| buckets(&body, waited)))
}

fn buckets(metrics: &str, waited: bool) -> Vec<(f64, u64)> {
    let prefix = format!(r#"dialtone_refusal_seconds_bucket{{type="login",waited="{waited}",le=""#);
    metrics
        .lines()
        .filter_map(|l| {
            let (le, n) = l.strip_prefix(&prefix)?.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, n.trim().parse().ok()?))
        })
        .collect()
}

/// From two scrapes: refusals in between, the share answered within 1 ms,
/// and the bucket bound (ms) that holds the 99th percentile.
fn refusal_summary(before: &[(f64, u64)], after: &[(f64, u64)]) -> (u64, f64, f64) {
    let delta: Vec<(f64, u64)> = after
        .iter()
        .map(|&(le, n)| {
            let b = before.iter().find(|(l, _)| *l == le).map_or(0, |(_, b)| *b);
            (le, n.saturating_sub(b))
        })
        .collect();
    let total = delta.last().map_or(0, |(_, n)| *n);
    if total == 0 {
        return (0, f64::NAN, f64::NAN);
    }
    let within_1ms = delta
        .iter()
        .find(|(le, _)| (*le - 0.001).abs() < 1e-9)
        .map_or(0, |(_, n)| *n);
    let p99 = delta
        .iter()
        .find(|(_, n)| *n as f64 >= 0.99 * total as f64)
        .map_or(f64::INFINITY, |(le, _)| le * 1e3);
    (total, 100.0 * within_1ms as f64 / total as f64, p99)
}

fn ref_of(v: &Value) -> Option<u64> {
    v.get("ref").and_then(Value::as_u64)
}

/// Registers `user` on a fresh connection, retrying when shed.
async fn register(url: &str, user: &str, password: &str) -> Result<Conn, String> {
    let (ws, _) = connect_async(url).await.map_err(|e| e.to_string())?;
    let (mut sink, mut stream) = ws.split();
    let mut attempts = 0;
    loop {
        attempts += 1;
        if attempts > 200 {
            return Err(format!("{user}: register shed 200 times"));
        }
        let f = json!({"type":"register","user":user,"password":password,"ref":0});
        sink.send(Message::text(f.to_string()))
            .await
            .map_err(|e| e.to_string())?;
        let reply = loop {
            let msg = timeout(Duration::from_secs(30), stream.next())
                .await
                .map_err(|_| format!("{user}: register timed out"))?
                .ok_or_else(|| format!("{user}: closed"))?
                .map_err(|e| e.to_string())?;
            if let Message::Text(t) = msg {
                let v: Value = serde_json::from_str(t.as_str()).map_err(|e| e.to_string())?;
                if ref_of(&v) == Some(0) {
                    break v;
                }
            }
        };
        match (reply["type"].as_str(), reply["code"].as_str()) {
            (Some("ok"), _) => break,
            (_, Some("overloaded")) => {
                let ms = reply["retry_after_ms"].as_u64().unwrap_or(100).min(5000);
                sleep(Duration::from_millis(ms)).await;
            }
            _ => return Err(format!("{user}: register answered {reply}")),
        }
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Some(f) = rx.recv().await {
            if sink.send(Message::text(f)).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let outstanding = Arc::new(AtomicUsize::new(0));
    let out = Arc::clone(&outstanding);
    let replies = REPLIES.get().expect("set before setup").clone();
    tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            let Message::Text(t) = msg else { continue };
            let at = Instant::now();
            let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
                continue;
            };
            let Some(id) = ref_of(&v) else { continue };
            out.fetch_sub(1, Ordering::Relaxed);
            let kind = match (v["type"].as_str(), v["code"].as_str()) {
                (Some("ok"), _) => Kind::Ok,
                (_, Some("overloaded")) => Kind::Overloaded(reason_of(&v)),
                (_, Some(code)) => Kind::Other(code.to_string()),
                _ => Kind::Other("unexpected".into()),
            };
            if replies.send(Reply { id, kind, at }).is_err() {
                break;
            }
        }
    });
    Ok(Conn {
        user: user.to_string(),
        tx,
        outstanding,
    })
}

static REPLIES: std::sync::OnceLock<mpsc::UnboundedSender<Reply>> = std::sync::OnceLock::new();

#[derive(Default)]
struct StepResult {
    ok_sched: Vec<f64>,
    rej_sched: Vec<f64>,
    rej_sent: Vec<f64>,
    ok_sent: Vec<f64>,
    ok_in_window: u64,
    ok_within_1s: u64,
    rej_by_reason: BTreeMap<String, Vec<f64>>,
    other: BTreeMap<String, u64>,
    answered: u64,
    late_dispatch_ms: f64,
}

#[allow(
    clippy::too_many_lines,
    reason = "one step, read top to bottom: dispatch, collect, drain"
)]
async fn step(
    args: &Args,
    conns: &[Conn],
    rx: &mut mpsc::UnboundedReceiver<Reply>,
    base: u64,
    rate: f64,
) -> (u64, StepResult) {
    let n = ((rate * args.step_secs).round() as u64).min(args.max_requests);
    let interval = Duration::from_secs_f64(1.0 / rate);
    let t0 = Instant::now() + Duration::from_millis(50);
    let due = |i: u64| t0 + interval.mul_f64(i as f64);
    // Offsets (µs after t0) at which each request was handed to a writer.
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let mut r = StepResult::default();
    let window_end = t0 + Duration::from_secs_f64(args.step_secs);
    let record = |reply: Reply, r: &mut StepResult| {
        if reply.id < base || reply.id >= base + n {
            return;
        }
        let i = reply.id - base;
        r.answered += 1;
        let sched = reply.at.saturating_duration_since(due(i)).as_secs_f64() * 1e3;
        let sent = t0 + Duration::from_micros(sent_at[i as usize].load(Ordering::Relaxed));
        let from_sent = reply.at.saturating_duration_since(sent).as_secs_f64() * 1e3;
        match reply.kind {
            Kind::Ok => {
                r.ok_sched.push(sched);
                r.ok_sent.push(from_sent);
                if reply.at <= window_end {
                    r.ok_in_window += 1;
                }
                if sched <= 1000.0 {
                    r.ok_within_1s += 1;
                }
            }
            Kind::Overloaded(reason) => {
                r.rej_sched.push(sched);
                r.rej_sent.push(from_sent);
                r.rej_by_reason.entry(reason).or_default().push(sched);
            }
            Kind::Other(code) => *r.other.entry(code).or_default() += 1,
        }
    };
    let mut next = 0u64;
    let mut cursor = 0usize;
    let mut late_max = Duration::ZERO;
    while next < n {
        let d = due(next);
        tokio::select! {
            biased;
            Some(reply) = rx.recv() => record(reply, &mut r),
            () = sleep_until(d.into()) => {
                let now = Instant::now();
                while next < n && due(next) <= now {
                    late_max = late_max.max(now - due(next));
                    // An idle connection if there is one, else the least busy.
                    let mut pick = None;
                    let mut best = (usize::MAX, 0);
                    for k in 0..conns.len() {
                        let c = (cursor + k) % conns.len();
                        let o = conns[c].outstanding.load(Ordering::Relaxed);
                        if o == 0 {
                            pick = Some(c);
                            break;
                        }
                        if o < best.0 {
                            best = (o, c);
                        }
                    }
                    let c = pick.unwrap_or(best.1);
                    cursor = (c + 1) % conns.len();
                    let conn = &conns[c];
                    let id = base + next;
                    let f = json!({"type":"login","user":conn.user,"password":args.password,"ref":id});
                    sent_at[next as usize].store(
                        u64::try_from(Instant::now().saturating_duration_since(t0).as_micros()).unwrap_or(0),
                        Ordering::Relaxed,
                    );
                    conn.outstanding.fetch_add(1, Ordering::Relaxed);
                    let _ = conn.tx.send(f.to_string());
                    next += 1;
                }
            }
        }
    }
    r.late_dispatch_ms = late_max.as_secs_f64() * 1e3;
    let drain_end = Instant::now() + Duration::from_secs_f64(args.drain_secs);
    while r.answered < n {
        match timeout(
            drain_end.saturating_duration_since(Instant::now()),
            rx.recv(),
        )
        .await
        {
            Ok(Some(reply)) => record(reply, &mut r),
            _ => break,
        }
    }
    (n, r)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if !(args.url.starts_with("ws://127.") || args.url.starts_with("ws://localhost")) {
        return Err("loopback only: --url ws://127.0.0.1:PORT/ws".into());
    }
    let (reply_tx, mut reply_rx) = mpsc::unbounded_channel();
    REPLIES.set(reply_tx).map_err(|_| "twice")?;

    let setup = Instant::now();
    let mut conns = Vec::with_capacity(args.conns);
    let names: Vec<String> = (0..args.conns)
        .map(|i| format!("{}u{i}", args.prefix))
        .collect();
    let setup_all = async {
        for chunk in names.chunks(args.setup_concurrency.max(1)) {
            let done = futures_util::future::join_all(
                chunk.iter().map(|u| register(&args.url, u, &args.password)),
            )
            .await;
            for c in done {
                conns.push(c?);
            }
        }
        Ok::<(), String>(())
    };
    timeout(Duration::from_secs(args.setup_timeout_secs), setup_all)
        .await
        .map_err(|_| "setup timed out")??;
    eprintln!(
        "setup: {} users registered over {} connections in {:.1} s (loadavg {})",
        conns.len(),
        conns.len(),
        setup.elapsed().as_secs_f64(),
        loadavg()
    );

    println!(
        "label\toffered/s\tsent\tok\tgoodput/s\tok<=1s/s\tok_p50_ms\tok_p99_ms\tok_max_ms\trejected\trej_p50_ms\trej_p99_ms\trej_p99_from_send_ms\tother_errors\tunanswered\tdispatch_late_max_ms\tloadavg_start\tloadavg_end\trejections_by_reason(count:p50/p99_ms)\tnode_refusals\tnode_refusals_le_1ms_pct\tnode_refusal_p99_bucket_ms\tnode_refusals_after_wait\tnode_refusal_after_wait_p99_bucket_ms"
    );
    let mut base = 0u64;
    for (k, &rate) in args.rates.iter().enumerate() {
        if !(rate > 0.0 && rate.is_finite()) {
            return Err(format!("bad rate {rate}").into());
        }
        if k > 0 {
            sleep(Duration::from_secs_f64(args.pause_secs)).await;
        }
        // Late replies of the previous step are dropped by the ref filter.
        let la0 = loadavg();
        let [door0, waited0] = node_refusals(&args.url).await.unwrap_or_default();
        let (n, mut r) = step(&args, &conns, &mut reply_rx, base, rate).await;
        let [door1, waited1] = node_refusals(&args.url).await.unwrap_or_default();
        let (node_refused, node_le_1ms, node_p99) = refusal_summary(&door0, &door1);
        let (node_waited, _, node_waited_p99) = refusal_summary(&waited0, &waited1);
        base += n;
        let la1 = loadavg();
        for v in [
            &mut r.ok_sched,
            &mut r.rej_sched,
            &mut r.rej_sent,
            &mut r.ok_sent,
        ] {
            v.sort_by(f64::total_cmp);
        }
        let by_reason: Vec<String> = r
            .rej_by_reason
            .iter_mut()
            .map(|(reason, v)| {
                v.sort_by(f64::total_cmp);
                format!(
                    "{reason}:{}:{:.3}/{:.3}",
                    v.len(),
                    pct(v, 0.50),
                    pct(v, 0.99)
                )
            })
            .collect();
        let other: Vec<String> = r.other.iter().map(|(c, n)| format!("{c}:{n}")).collect();
        println!(
            "{}\t{:.0}\t{}\t{}\t{:.1}\t{:.1}\t{:.1}\t{:.1}\t{:.1}\t{}\t{:.3}\t{:.3}\t{:.3}\t{}\t{}\t{:.2}\t{}\t{}\t{}\t{}\t{:.2}\t{}\t{}\t{}",
            args.label,
            rate,
            n,
            r.ok_sched.len(),
            r.ok_in_window as f64 / args.step_secs,
            r.ok_within_1s as f64 / args.step_secs,
            pct(&r.ok_sched, 0.50),
            pct(&r.ok_sched, 0.99),
            r.ok_sched.last().copied().unwrap_or(f64::NAN),
            r.rej_sched.len(),
            pct(&r.rej_sched, 0.50),
            pct(&r.rej_sched, 0.99),
            pct(&r.rej_sent, 0.99),
            if other.is_empty() {
                "0".to_string()
            } else {
                other.join(",")
            },
            n - r.answered,
            r.late_dispatch_ms,
            la0,
            la1,
            by_reason.join(" "),
            node_refused,
            node_le_1ms,
            node_p99,
            node_waited,
            node_waited_p99,
        );
    }
    Ok(())
}
