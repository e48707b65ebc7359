//! connbench: opens N idle, authenticated, joined WebSocket connections to a
//! dialtone node and reports the upgrade rate, connect latency and (given
//! the server's pid) its RSS per connection.
//!
//! ```text
//! cargo build --release --example connbench
//! target/release/examples/connbench --conns 10000 --concurrency 256 \
//!     --room-size 50 --secret secret --server-pid "$(pgrep -n dialtone)"
//! ```
//!
//! Phases, each bounded by `--timeout-secs`:
//! 1. upgrade burst: N connections with at most C in flight (TCP connect +
//!    HTTP upgrade with `?token=`); rate = N / wall time of the burst;
//! 2. join: every connection sends `join` for room `<prefix>r<i / room-size>`
//!    and waits for its `ok` (again C in flight);
//! 3. settle (presence frames drain), read the server's VmRSS, hold.
//!
//! Each connection then gets a reader task that discards what arrives
//! (presence), so the server never sees a stalled peer.

use std::{
    fs,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use clap::Parser;
use futures_util::{SinkExt, StreamExt, stream::SplitSink};
use serde_json::{Value, json};
use tokio::{
    net::{TcpSocket, TcpStream},
    sync::Mutex,
};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, client_async_with_config, connect_async_with_config,
    tungstenite::{Message, protocol::WebSocketConfig},
};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

static FAILS: AtomicUsize = AtomicUsize::new(0);

#[derive(Parser, Debug, Clone)]
#[command(about = "Idle-connection memory and upgrade-rate benchmark for dialtone")]
struct Args {
    /// WebSocket endpoint of the node.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// HS256 secret the node verifies tokens with (auth.jwt_secret).
    #[arg(long, default_value = "secret")]
    secret: String,
    /// Number of connections to open (each a distinct user).
    #[arg(long, short = 'n', default_value_t = 1000)]
    conns: usize,
    /// Upgrades (and joins) in flight at once.
    #[arg(long, short = 'c', default_value_t = 256)]
    concurrency: usize,
    /// Users per room; rooms are `<prefix>r0`, `<prefix>r1`, ...
    #[arg(long, default_value_t = 50)]
    room_size: usize,
    /// Prefix of user and room names (distinct per run avoids reusing rooms).
    #[arg(long, default_value = "b")]
    prefix: String,
    /// Server pid: read its VmRSS before connecting and after all joined.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Seconds to wait after the last join before reading RSS.
    #[arg(long, default_value_t = 3)]
    settle_secs: u64,
    /// Seconds to keep all connections open after measuring.
    #[arg(long, default_value_t = 0)]
    hold_secs: u64,
    /// Bound on each phase (upgrade, join).
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,
    /// Upgrade only: skip the join phase (isolates the cost of joining).
    #[arg(long)]
    skip_join: bool,
    /// Spread client sockets over this many source addresses 127.0.0.2...
    /// (0: let the kernel pick). Past ~15k connections from one address the
    /// kernel's ephemeral-port search dominates the client's CPU (240 us per
    /// connect at 19.5k instead of 35), and the bench measures itself.
    #[arg(long, default_value_t = 8)]
    source_ips: u8,
    /// Client-side tungstenite read buffer (the client's memory, not the server's).
    #[arg(long, default_value_t = 4096)]
    client_read_buffer: usize,
}

fn token(user: &str, secret: &[u8]) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 3600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": user, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("HS256 encoding cannot fail")
}

/// A `/proc/<pid>/status` field in bytes (the file gives kB).
fn proc_status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// CPU seconds (user + system) a process has used, from /proc/<pid>/stat
/// (clock ticks, 100 per second on Linux).
fn cpu_secs(pid: &str) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    #[allow(clippy::cast_precision_loss)]
    Some(ticks as f64 / 100.0)
}

/// `TcpExt: ListenOverflows` and `ListenDrops` from /proc/net/netstat.
fn listen_counters() -> Option<(u64, u64)> {
    let text = fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines();
    while let (Some(head), Some(vals)) = (lines.next(), lines.next()) {
        if !head.starts_with("TcpExt:") {
            continue;
        }
        let names: Vec<&str> = head.split_whitespace().collect();
        let nums: Vec<&str> = vals.split_whitespace().collect();
        let get = |n: &str| {
            names
                .iter()
                .position(|x| *x == n)
                .and_then(|i| nums.get(i)?.parse().ok())
        };
        return Some((get("ListenOverflows")?, get("ListenDrops")?));
    }
    None
}

/// TCP connect (from source address `127.0.0.(2 + i % source_ips)` when
/// `source_ips` > 0) and the WebSocket upgrade.
async fn connect(
    url: &str,
    i: usize,
    source_ips: u8,
    cfg: WebSocketConfig,
) -> Result<Ws, Box<dyn std::error::Error + Send + Sync>> {
    if source_ips == 0 {
        return Ok(connect_async_with_config(url, Some(cfg), true).await?.0);
    }
    let host = url
        .strip_prefix("ws://")
        .and_then(|r| r.split('/').next())
        .ok_or("url must be ws://host:port/...")?;
    let addr: std::net::SocketAddr = host.parse()?;
    #[allow(clippy::cast_possible_truncation)]
    let last = 2 + (i % usize::from(source_ips)) as u8;
    let socket = TcpSocket::new_v4()?;
    socket.bind(std::net::SocketAddr::from(([127, 0, 0, last], 0)))?;
    let tcp = socket.connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (ws, _) = client_async_with_config(url, MaybeTlsStream::Plain(tcp), Some(cfg)).await?;
    Ok(ws)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn latency_line(what: &str, lat: &mut [Duration]) {
    lat.sort_unstable();
    println!(
        "{what} latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
        ms(percentile(lat, 0.50)),
        ms(percentile(lat, 0.90)),
        ms(percentile(lat, 0.99)),
        ms(percentile(lat, 1.0)),
    );
}

/// Runs `job(i)` for i in 0..n with at most `c` in flight; returns the
/// results in index order.
async fn bounded<T, F, Fut>(n: usize, c: usize, job: F) -> Vec<Option<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<T>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let job = Arc::new(job);
    let mut workers = Vec::new();
    for _ in 0..c.clamp(1, n.max(1)) {
        let (next, job) = (next.clone(), job.clone());
        workers.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return out;
                }
                out.push((i, job(i).await));
            }
        }));
    }
    let mut all: Vec<Option<T>> = (0..n).map(|_| None).collect();
    for w in workers {
        if let Ok(done) = w.await {
            for (i, r) in done {
                all[i] = r;
            }
        }
    }
    all
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let n = args.conns;
    let secret = args.secret.as_bytes().to_vec();
    let phase_limit = Duration::from_secs(args.timeout_secs);
    println!("connbench {args:?}");

    // Tokens up front: minting is client CPU, not part of the burst.
    let users: Vec<String> = (0..n).map(|i| format!("{}u{i}", args.prefix)).collect();
    let urls: Arc<Vec<String>> = Arc::new(
        users
            .iter()
            .map(|u| format!("{}?token={}", args.url, token(u, &secret)))
            .collect(),
    );

    let rss_before = args.server_pid.and_then(|p| proc_status_bytes(p, "VmRSS:"));
    let listen_before = listen_counters();
    let server_pid = args.server_pid.map(|p| p.to_string());
    let cpu = || (server_pid.as_deref().and_then(cpu_secs), cpu_secs("self"));
    let cpu_before = cpu();

    // Phase 1: the upgrade burst.
    let cfg = WebSocketConfig::default()
        .read_buffer_size(args.client_read_buffer)
        .write_buffer_size(0);
    let source_ips = args.source_ips;
    let t0 = Instant::now();
    let deadline = t0 + phase_limit;
    let upgraded = {
        let urls = urls.clone();
        bounded(n, args.concurrency, move |i| {
            let urls = urls.clone();
            async move {
                let start = Instant::now();
                let attempt = connect(&urls[i], i, source_ips, cfg);
                match tokio::time::timeout_at(deadline.into(), attempt).await {
                    Ok(Ok(ws)) => Some((ws, start.elapsed())),
                    Ok(Err(e)) => {
                        // Report the first few only: a refused run fails them all.
                        if FAILS.fetch_add(1, Ordering::Relaxed) < 5 {
                            eprintln!("conn {i}: {e}");
                        }
                        None
                    }
                    Err(_) => None,
                }
            }
        })
        .await
    };
    let burst = t0.elapsed();
    let cpu_after = cpu();
    let listen_after = listen_counters();
    let mut lat: Vec<Duration> = upgraded.iter().flatten().map(|(_, d)| *d).collect();
    let ok = lat.len();
    #[allow(clippy::cast_precision_loss)]
    let rate = ok as f64 / burst.as_secs_f64();
    println!(
        "upgrades: {ok}/{n} in {:.3} s = {rate:.0}/s (concurrency {}); failed {}",
        burst.as_secs_f64(),
        args.concurrency,
        FAILS.load(Ordering::Relaxed)
    );
    latency_line("upgrade", &mut lat);
    if let ((Some(sb), Some(cb)), (Some(sa), Some(ca))) = (cpu_before, cpu_after) {
        // CPU per upgrade bounds the rate the server alone could sustain.
        #[allow(clippy::cast_precision_loss)]
        let per = |secs: f64| secs * 1e6 / ok.max(1) as f64;
        println!(
            "CPU during the burst: server {:.2} s ({:.0} us/upgrade), client {:.2} s ({:.0} us/upgrade)",
            sa - sb,
            per(sa - sb),
            ca - cb,
            per(ca - cb)
        );
    }
    if let (Some(b), Some(a)) = (listen_before, listen_after) {
        println!(
            "TcpExtListenOverflows +{}  TcpExtListenDrops +{} (host-wide, during the burst)",
            a.0 - b.0,
            a.1 - b.1
        );
    }

    // Phase 2: join, one room per `room_size` users.
    type Sink = SplitSink<Ws, Message>;
    let slots: Arc<Vec<Mutex<Option<Ws>>>> = Arc::new(
        upgraded
            .into_iter()
            .map(|o| Mutex::new(o.map(|(ws, _)| ws)))
            .collect(),
    );
    let room_size = args.room_size.max(1);
    let prefix = args.prefix.clone();
    let skip_join = args.skip_join;
    let t1 = Instant::now();
    let deadline = t1 + phase_limit;
    let joined: Vec<Option<(Sink, Duration)>> = {
        let slots = slots.clone();
        bounded(n, args.concurrency, move |i| {
            let slots = slots.clone();
            let room = format!("{prefix}r{}", i / room_size);
            async move {
                if skip_join {
                    // Keep the socket open without joining (discard nothing: none arrives).
                    let ws = slots[i].lock().await.take()?;
                    let (tx, mut rx) = ws.split();
                    tokio::spawn(async move { while rx.next().await.is_some() {} });
                    return Some((tx, Duration::ZERO));
                }
                let ws = slots[i].lock().await.take()?;
                let start = Instant::now();
                let join = async move {
                    let (mut tx, mut rx) = ws.split();
                    let frame = json!({"type": "join", "room": room, "ref": 1}).to_string();
                    tx.send(Message::text(frame)).await.ok()?;
                    while let Some(Ok(msg)) = rx.next().await {
                        let Message::Text(t) = msg else { continue };
                        let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
                            continue;
                        };
                        if v["ref"] == 1 {
                            if v["type"] != "ok" {
                                eprintln!("conn {i}: join answered {v}");
                                return None;
                            }
                            // Drain pushes (presence) from now on.
                            tokio::spawn(async move { while rx.next().await.is_some() {} });
                            return Some(tx);
                        }
                    }
                    None
                };
                let tx = tokio::time::timeout_at(deadline.into(), join)
                    .await
                    .ok()??;
                Some((tx, start.elapsed()))
            }
        })
        .await
    };
    let join_wall = t1.elapsed();
    let cpu_joined = cpu();
    let mut jlat: Vec<Duration> = joined.iter().flatten().map(|(_, d)| *d).collect();
    let joined_ok = jlat.len();
    #[allow(clippy::cast_precision_loss)]
    let jrate = joined_ok as f64 / join_wall.as_secs_f64();
    println!(
        "joins: {joined_ok}/{n} in {:.3} s = {jrate:.0}/s",
        join_wall.as_secs_f64()
    );
    latency_line("join", &mut jlat);
    if let ((Some(sb), Some(cb)), (Some(sa), Some(ca))) = (cpu_after, cpu_joined) {
        // Joins carry the presence fan-out: (room_size - 1) / 2 frames each.
        println!(
            "CPU during the joins: server {:.2} s, client {:.2} s",
            sa - sb,
            ca - cb
        );
    }

    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    if let Some(pid) = args.server_pid {
        let after = proc_status_bytes(pid, "VmRSS:");
        let anon = proc_status_bytes(pid, "RssAnon:");
        if let (Some(b), Some(a)) = (rss_before, after) {
            #[allow(clippy::cast_precision_loss)]
            let per = (a.saturating_sub(b)) as f64 / joined_ok.max(1) as f64;
            println!(
                "server VmRSS before {:.1} MiB, after {:.1} MiB (RssAnon {:.1} MiB)",
                b as f64 / 1048576.0,
                a as f64 / 1048576.0,
                anon.unwrap_or(0) as f64 / 1048576.0
            );
            println!(
                "RESULT conns={joined_ok} bytes_per_conn={per:.0} ({:.2} KiB) upgrades_per_s={rate:.0} upgrade_p99_ms={:.2}",
                per / 1024.0,
                ms(percentile(&lat, 0.99))
            );
        }
    } else {
        println!(
            "RESULT conns={joined_ok} upgrades_per_s={rate:.0} upgrade_p99_ms={:.2}",
            ms(percentile(&lat, 0.99))
        );
    }
    if args.hold_secs > 0 {
        println!("holding {} connections for {} s", joined_ok, args.hold_secs);
        tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
    }
    // Exiting drops every socket; the server sees them all close.
    drop(joined);
}
