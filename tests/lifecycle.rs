//! PROTOCOL.md "Starting a node": the real binary, its config precedence,
//! its refusal of bad config, and the drain sequence on SIGTERM.

mod common;

use std::{
    io::{BufRead, BufReader, Write},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::*;
use serde_json::json;

struct Proc {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dialtone() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dialtone"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("NO_COLOR", "1");
    cmd
}

/// Starts the binary and waits for its `listening on <addr>` line.
fn spawn(args: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut cmd = dialtone();
    cmd.arg("serve")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    cmd.env("DIALTONE_GATEWAY__LISTEN", "127.0.0.1:0")
        .env("DIALTONE_AUTH__JWT_SECRET", SECRET);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("binary starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // Shown by the test harness only when a test fails.
            println!("node: {line}");
            if let Some(rest) = line.split("listening on ").nth(1) {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_owned());
            }
        }
    });
    let addr = rx
        .recv_timeout(WAIT)
        .expect("listening line")
        .parse()
        .expect("an address");
    Proc { child, addr }
}

fn sigterm(p: &Proc) {
    let ok = Command::new("kill")
        .args(["-TERM", &p.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

async fn wait_exit(p: &mut Proc, limit: Duration) -> i32 {
    let start = Instant::now();
    loop {
        if let Some(status) = p.child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        assert!(
            start.elapsed() < limit,
            "process did not exit within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn bad_config_exits_non_zero_with_a_one_line_reason() {
    let out = dialtone()
        .args(["serve"])
        .env("DIALTONE_GATEWAY__LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("bad config"), "{err}");

    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(b"[gateway]\nlisten = \"127.0.0.1:0\"\nno_such_key = 1\n")
        .unwrap();
    let out = dialtone()
        .args(["serve", "--config"])
        .arg(f.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_such_key"));

    let out = dialtone()
        .args(["serve", "--config", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn environment_overrides_the_config_file() {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(b"[limits]\nmax_body_bytes = 10\n[auth]\njwt_secret = \"file-secret\"\n")
        .unwrap();
    let path = f.path().to_str().unwrap().to_owned();
    // The env secret wins: a token signed with it is accepted.
    let p = spawn(
        &["--config", &path],
        &[("DIALTONE_LIMITS__MAX_BODY_BYTES", "20")],
    );
    let mut c = Client::as_user(p.addr, "cfg").await;
    c.ok(json!({"type":"join","room":"r"})).await;
    // 15 bytes: over the file's 10, under the environment's 20.
    c.ok(json!({"type":"send","room":"r","body":"123456789012345"}))
        .await;
    c.err(
        json!({"type":"send","room":"r","body":"x".repeat(21)}),
        "too_large",
    )
    .await;
}

#[tokio::test]
async fn sigterm_drains_goaway_then_1012_and_exits_zero() {
    let mut p = spawn(
        &[],
        &[
            ("DIALTONE_GATEWAY__DRAIN_GRACE_MS", "1500"),
            ("DIALTONE_GATEWAY__DRAIN_RETRY_AFTER_MS", "2000"),
        ],
    );
    let mut c = Client::as_user(p.addr, "stay").await;
    c.ok(json!({"type":"join","room":"r"})).await;
    assert_eq!(http_get(p.addr, "/readyz", None).await.0, 200);
    sigterm(&p);
    let g = c.next_push("goaway").await;
    assert_eq!(g["retry_after_ms"], 2000);
    assert!(g["reason"].as_str().is_some_and(|r| !r.is_empty()));
    // Draining: not ready, and new upgrades are refused with Retry-After.
    let (s, _, _) = http_get(p.addr, "/readyz", None).await;
    assert_eq!(s, 503);
    match tokio_tungstenite::connect_async(format!("{}?token={}", url(p.addr), token("late"))).await
    {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status().as_u16(), 503);
            assert_eq!(r.headers()["retry-after"], "2");
        }
        other => panic!("expected 503, got {:?}", other.map(|_| ())),
    }
    // Existing sessions still work during the grace period.
    c.ok(json!({"type":"send","room":"r","body":"last words"}))
        .await;
    let started = Instant::now();
    assert_eq!(c.closed().await, 1012);
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "closed only after the grace"
    );
    assert_eq!(wait_exit(&mut p, Duration::from_secs(15)).await, 0);
}

#[tokio::test]
async fn drain_ends_early_when_every_client_has_left() {
    let mut p = spawn(&[], &[("DIALTONE_GATEWAY__DRAIN_GRACE_MS", "60000")]);
    let mut c = Client::as_user(p.addr, "leaver").await;
    c.ok(json!({"type":"ping"})).await;
    sigterm(&p);
    c.next_push("goaway").await;
    drop(c);
    assert_eq!(wait_exit(&mut p, Duration::from_secs(15)).await, 0);
}
