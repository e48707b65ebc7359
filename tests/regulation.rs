//! PROTOCOL.md admin endpoints and `overloaded`/`rate_limited`: admission
//! queues in front of every expensive path, retuned live.

mod common;

use std::{io::Write, time::Duration};

use common::*;
use dialtone::{Config, Node};
use serde_json::{Value, json};

async fn regulator_state(addr: std::net::SocketAddr) -> Value {
    let (s, _, body) = http_get(addr, "/admin/regulator", Some("adm")).await;
    assert_eq!(s, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The `retry_after_ms` of an `overloaded` send on a queue whose floor is
/// 2 s: the floor, or up to twice it with the shipped `retry_jitter`. The
/// wait the client is then held to is this one.
fn told_wait(e: &Value) -> u64 {
    let hint = e["retry_after_ms"].as_u64().unwrap_or(0);
    assert!((2000..=4000).contains(&hint), "{e}");
    hint
}

#[tokio::test]
async fn admin_regulator_lists_every_queue_with_limits_and_counters() {
    let node = start(&[("DIALTONE_ADMIN__TOKEN", "adm")]).await;
    let mut c = Client::as_user(node.addr(), "u").await;
    c.ok(json!({"type":"join","room":"r"})).await;
    c.ok(json!({"type":"send","room":"r","body":"x"})).await;
    let state = regulator_state(node.addr()).await;
    for q in ["connect", "login", "register", "send", "history"] {
        let queue = &state["queues"][q];
        assert!(queue["limits"].is_object(), "{q}: {queue}");
        assert!(queue["queue_length"].is_u64(), "{q}: {queue}");
        assert!(queue["in_flight"].is_u64(), "{q}: {queue}");
        assert!(queue["admitted"].is_u64(), "{q}: {queue}");
        assert!(queue["rejected"].is_object(), "{q}: {queue}");
    }
    assert!(state["queues"]["send"]["admitted"].as_u64() >= Some(1));
    assert!(state["queues"]["connect"]["admitted"].as_u64() >= Some(1));
}

#[tokio::test]
async fn overloaded_login_path_answers_overloaded_with_retry_after() {
    let node = start(&[
        ("DIALTONE_REGULATOR__QUEUES__LOGIN__MAX_CONCURRENCY", "1"),
        ("DIALTONE_REGULATOR__QUEUES__LOGIN__MAX_SIZE", "0"),
    ])
    .await;
    let replies = anon_burst(
        node.addr(),
        12,
        |i| json!({"type":"login","user": format!("nobody{i}"),"password":"pw"}),
    )
    .await;
    let mut overloaded = 0;
    for v in replies {
        match v["code"].as_str() {
            Some("overloaded") => {
                overloaded += 1;
                assert!(
                    v["retry_after_ms"].as_u64().is_some_and(|ms| ms >= 1),
                    "{v}"
                );
            }
            Some("bad_credentials") => {}
            other => panic!("unexpected {other:?}: {v}"),
        }
    }
    assert!(
        overloaded >= 1,
        "with one slot and no queue, a burst of 12 must shed"
    );
}

#[tokio::test]
async fn per_user_send_rate_answers_rate_limited() {
    let node = start(&[
        ("DIALTONE_REGULATOR__QUEUES__SEND__KEY_RATE_PER_SEC", "1"),
        ("DIALTONE_REGULATOR__QUEUES__SEND__KEY_BURST", "2"),
    ])
    .await;
    let mut c = Client::as_user(node.addr(), "chatty").await;
    c.ok(json!({"type":"join","room":"r"})).await;
    c.ok(json!({"type":"send","room":"r","body":"1"})).await;
    c.ok(json!({"type":"send","room":"r","body":"2"})).await;
    let e = c
        .err(json!({"type":"send","room":"r","body":"3"}), "rate_limited")
        .await;
    assert!(e["retry_after_ms"].as_u64().is_some_and(|ms| ms >= 1));
    // The refusal's answer time is on /metrics, with a bucket at 1 ms.
    let (_, _, metrics) = http_get(node.addr(), "/metrics", None).await;
    let count = sample(
        &metrics,
        r#"dialtone_refusal_seconds_count{type="send",waited="false"}"#,
    );
    assert!(count >= 1.0, "{metrics}");
    assert!(
        metrics
            .contains(r#"dialtone_refusal_seconds_bucket{type="send",waited="false",le="0.001"}"#),
        "{metrics}"
    );
    // Another user is not affected.
    let mut other = Client::as_user(node.addr(), "quiet").await;
    other.ok(json!({"type":"join","room":"r"})).await;
    other
        .ok(json!({"type":"send","room":"r","body":"fine"}))
        .await;
}

/// Sends until one is `overloaded` (a send queue of 1/s, no waiting, 2 s
/// hints), then pipelines two pings: returns how long after the refusal
/// their pongs came, and how long a bystander's ping took meanwhile.
async fn pings_after_an_overloaded_send(max_hold_ms: &str) -> (Duration, Duration) {
    let node = start(&[
        ("DIALTONE_REGULATOR__QUEUES__SEND__RATE_PER_SEC", "1"),
        ("DIALTONE_REGULATOR__QUEUES__SEND__BURST", "1"),
        ("DIALTONE_REGULATOR__QUEUES__SEND__MAX_SIZE", "0"),
        (
            "DIALTONE_REGULATOR__QUEUES__SEND__MIN_RETRY_AFTER_MS",
            "2000",
        ),
        ("DIALTONE_GATEWAY__MAX_HOLD_MS", max_hold_ms),
    ])
    .await;
    let mut held = Client::as_user(node.addr(), "eager").await;
    let mut other = Client::as_user(node.addr(), "bystander").await;
    held.ok(json!({"type":"join","room":"r"})).await;
    held.ok(json!({"type":"send","room":"r","body":"1"})).await;
    let e = held
        .err(json!({"type":"send","room":"r","body":"2"}), "overloaded")
        .await;
    let refused = std::time::Instant::now();
    told_wait(&e);
    held.send_text(json!({"type":"ping","ref":"a"}).to_string())
        .await;
    held.send_text(json!({"type":"ping","ref":"b"}).to_string())
        .await;
    other.ok(json!({"type":"ping"})).await;
    let bystander = refused.elapsed();
    // Nothing is lost, and the order holds.
    held.reply_to(json!("a"), "pong").await;
    held.reply_to(json!("b"), "pong").await;
    (refused.elapsed(), bystander)
}

#[tokio::test]
async fn overloaded_send_holds_the_connection_for_retry_after_and_loses_nothing() {
    // The client was told to wait 2 s: what it sends meanwhile is read
    // (and answered) only when the wait is over. Others are not held.
    let (held, bystander) = pings_after_an_overloaded_send("5000").await;
    assert!(
        held >= Duration::from_millis(1900),
        "answered after {held:?}, inside the hold"
    );
    // And read again soon after it.
    assert!(
        held < Duration::from_millis(3000),
        "answered after {held:?}, long past the hold"
    );
    assert!(
        bystander < Duration::from_millis(1500),
        "bystander waited {bystander:?}"
    );
}

/// Holds a client for 3 s (a send queue of 1/s, no waiting), pipelines `n`
/// sends into the hold, and returns when each reply came, after the first.
/// Every one is answered, in order, `ok` or `overloaded`.
async fn replies_to_sends_pipelined_into_a_hold(n: usize) -> Vec<Duration> {
    let node = start(&[
        ("DIALTONE_REGULATOR__QUEUES__SEND__RATE_PER_SEC", "1"),
        ("DIALTONE_REGULATOR__QUEUES__SEND__BURST", "1"),
        ("DIALTONE_REGULATOR__QUEUES__SEND__MAX_SIZE", "0"),
        (
            "DIALTONE_REGULATOR__QUEUES__SEND__MIN_RETRY_AFTER_MS",
            "3000",
        ),
        ("DIALTONE_GATEWAY__MAX_HOLD_MS", "5000"),
    ])
    .await;
    let mut c = Client::as_user(node.addr(), "eager").await;
    c.ok(json!({"type":"join","room":"r"})).await;
    c.ok(json!({"type":"send","room":"r","body":"0"})).await;
    c.err(json!({"type":"send","room":"r","body":"1"}), "overloaded")
        .await;
    c.write_at_once((0..n).map(|i| json!({"type":"send","room":"r","body":"x","ref":i})))
        .await;
    let mut after_first = Vec::with_capacity(n);
    let mut first = None;
    for i in 0..n {
        let v = c.next_reply().await;
        let first = *first.get_or_insert_with(std::time::Instant::now);
        after_first.push(first.elapsed());
        assert_eq!(v["ref"], json!(i), "in order: {v}");
        assert!(v["type"] == "ok" || v["code"] == "overloaded", "{v}");
    }
    after_first
}

#[tokio::test]
async fn frames_waiting_past_one_batch_are_answered_when_the_hold_ends_not_a_hold_later() {
    // More than one wake-up answers (32): those past the first batch used
    // to wait for another whole hold.
    let times = replies_to_sends_pipelined_into_a_hold(50).await;
    let last = times[times.len() - 1];
    assert!(
        last < Duration::from_millis(2000),
        "the last of 50 frames came {last:?} after the first: a second hold"
    );
}

#[tokio::test]
async fn a_client_that_floods_a_hold_is_held_again_after_256_frames() {
    let times = replies_to_sends_pipelined_into_a_hold(300).await;
    assert!(
        times[255] < Duration::from_millis(2000),
        "frame 256 came {:?} after the first",
        times[255]
    );
    assert!(
        times[256] >= Duration::from_millis(2000),
        "frame 257 came {:?} after the first: the flood was not held",
        times[256]
    );
}

#[tokio::test]
async fn max_hold_zero_answers_every_frame_as_it_comes() {
    let (held, _) = pings_after_an_overloaded_send("0").await;
    assert!(
        held < Duration::from_millis(1500),
        "held {held:?} with holds off"
    );
}

#[tokio::test]
async fn a_send_before_the_advised_wait_is_refused_without_asking_the_queue() {
    // 10 sends/s, so a token is back 100 ms after the burst; but a refused
    // client is told to wait 2-4 s, and holds are off, so every frame is
    // read as it comes.
    let node = start(&[
        ("DIALTONE_REGULATOR__QUEUES__SEND__RATE_PER_SEC", "10"),
        ("DIALTONE_REGULATOR__QUEUES__SEND__BURST", "1"),
        ("DIALTONE_REGULATOR__QUEUES__SEND__MAX_SIZE", "0"),
        (
            "DIALTONE_REGULATOR__QUEUES__SEND__MIN_RETRY_AFTER_MS",
            "2000",
        ),
        ("DIALTONE_GATEWAY__MAX_HOLD_MS", "0"),
        ("DIALTONE_ADMIN__TOKEN", "adm"),
    ])
    .await;
    let mut c = Client::as_user(node.addr(), "eager").await;
    let mut other = Client::as_user(node.addr(), "patient").await;
    c.ok(json!({"type":"join","room":"r"})).await;
    other.ok(json!({"type":"join","room":"r"})).await;
    c.ok(json!({"type":"send","room":"r","body":"1"})).await;
    let e = c
        .err(json!({"type":"send","room":"r","body":"2"}), "overloaded")
        .await;
    let refused = std::time::Instant::now();
    let hint = told_wait(&e);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The queue has a token again, but the wait this client was told of
    // has not ended: refused again, with what is left of it.
    let e = c
        .err(json!({"type":"send","room":"r","body":"3"}), "overloaded")
        .await;
    let left = e["retry_after_ms"].as_u64().unwrap_or(0);
    let told = hint.saturating_sub(u64::try_from(refused.elapsed().as_millis()).unwrap());
    assert!(
        (1..=told + 1).contains(&left),
        "retry_after_ms {left}, {told} ms of the wait left: {e}"
    );
    // Checked before the rest of the frame: a send that is wrong in other
    // ways is refused the same way while the wait stands...
    c.err(
        json!({"type":"send","room":"not joined","body":"x"}),
        "overloaded",
    )
    .await;
    // ...and other requests are answered as usual.
    c.ok(json!({"type":"ping"})).await;
    let rejected: u64 = regulator_state(node.addr()).await["queues"]["send"]["rejected"]
        .as_object()
        .expect("rejected by reason")
        .values()
        .filter_map(Value::as_u64)
        .sum();
    assert_eq!(rejected, 1, "the queue was asked again");
    // Counted by the gateway instead (the recorder is shared by the tests
    // of this process, so at least this one).
    let (_, _, metrics) = http_get(node.addr(), "/metrics", None).await;
    assert!(
        sample(&metrics, "dialtone_send_refusals_standing_total") >= 1.0,
        "{metrics}"
    );
    // Another client is not refused for this one's wait.
    other
        .ok(json!({"type":"send","room":"r","body":"fine"}))
        .await;
    // Once the wait is over, sends are asked for again; nothing refused was
    // stored.
    tokio::time::sleep(Duration::from_millis(hint + 100).saturating_sub(refused.elapsed())).await;
    c.ok(json!({"type":"send","room":"r","body":"4"})).await;
    let h = c.ok(json!({"type":"history","room":"r"})).await;
    let bodies: Vec<&str> = h["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["body"].as_str())
        .collect();
    assert_eq!(bodies, ["1", "fine", "4"]);
}

#[tokio::test]
async fn retune_by_admin_endpoint_takes_effect_without_dropping_connections() {
    let node = start(&[("DIALTONE_ADMIN__TOKEN", "adm")]).await;
    let addr = node.addr();
    let mut c = Client::as_user(addr, "tuned").await;
    c.ok(json!({"type":"join","room":"r"})).await;
    let body = json!({"key_rate_per_sec": 0.5, "key_burst": 1}).to_string();
    let (s, _, answer) = http(
        addr,
        "PUT",
        "/admin/regulator/queues/send",
        Some("adm"),
        Some(&body),
    )
    .await;
    assert_eq!(s, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["limits"]["key_rate_per_sec"], 0.5);
    // Same connection, new limits.
    c.ok(json!({"type":"send","room":"r","body":"one"})).await;
    c.err(
        json!({"type":"send","room":"r","body":"two"}),
        "rate_limited",
    )
    .await;
    let state = regulator_state(addr).await;
    assert_eq!(state["queues"]["send"]["limits"]["key_rate_per_sec"], 0.5);
    assert!(
        state["queues"]["send"]["rejected"]["key_rate"].as_u64() >= Some(1),
        "{}",
        state["queues"]["send"]
    );
}

#[tokio::test]
async fn invalid_retune_is_400_and_keeps_the_old_settings() {
    let node = start(&[("DIALTONE_ADMIN__TOKEN", "adm")]).await;
    let addr = node.addr();
    let before = regulator_state(addr).await["queues"]["login"]["limits"].clone();
    for bad in [r#"{"max_sizee": 3}"#, r#"{"max_size": "many"}"#, "not json"] {
        let (s, _, body) = http(
            addr,
            "PUT",
            "/admin/regulator/queues/login",
            Some("adm"),
            Some(bad),
        )
        .await;
        assert_eq!(s, 400, "{bad}: {body}");
        assert!(serde_json::from_str::<Value>(&body).unwrap()["error"].is_string());
    }
    assert_eq!(
        regulator_state(addr).await["queues"]["login"]["limits"],
        before
    );
}

#[tokio::test]
async fn retune_by_editing_the_config_file_takes_effect_and_bad_edits_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dialtone.toml");
    let write = |text: &str| {
        // Editors save by writing a new file and renaming it over the old one.
        let tmp = dir.path().join("dialtone.toml.tmp");
        std::fs::File::create(&tmp)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    };
    let base = "[gateway]\nlisten = \"127.0.0.1:0\"\n[auth]\njwt_secret = \"test-secret\"\n[admin]\ntoken = \"adm\"\n";
    write(&format!(
        "{base}[regulator.queues.history]\nmax_size = 11\n"
    ));
    let cfg = Config::load_from(Some(&path), Vec::new()).unwrap();
    let node = Node::start_watching(cfg, Some(path.clone())).await.unwrap();
    let addr = node.addr();
    let mut c = Client::as_user(addr, "watcher").await;
    c.ok(json!({"type":"join","room":"r"})).await;
    let max_size = |state: &Value| state["queues"]["history"]["limits"]["max_size"].clone();
    assert_eq!(max_size(&regulator_state(addr).await), 11);

    write(&format!(
        "{base}[regulator.queues.history]\nmax_size = 22\n"
    ));
    let mut seen = Value::Null;
    for _ in 0..200 {
        seen = max_size(&regulator_state(addr).await);
        if seen == 22 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(seen, 22, "the file edit was applied");
    // A broken edit keeps the running settings.
    write(&format!(
        "{base}[regulator.queues.history]\nmax_size = \"lots\"\n"
    ));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(max_size(&regulator_state(addr).await), 22);
    // The connection lived through both reloads.
    c.ok(json!({"type":"history","room":"r"})).await;
}

#[tokio::test]
async fn connect_queue_refuses_upgrades_with_503_and_retry_after() {
    let node = start(&[
        ("DIALTONE_REGULATOR__QUEUES__CONNECT__RATE_PER_SEC", "0.2"),
        ("DIALTONE_REGULATOR__QUEUES__CONNECT__BURST", "1"),
        ("DIALTONE_REGULATOR__QUEUES__CONNECT__MAX_SIZE", "0"),
    ])
    .await;
    let _first = Client::as_user(node.addr(), "first").await;
    match tokio_tungstenite::connect_async(format!(
        "{}?token={}",
        url(node.addr()),
        token("second")
    ))
    .await
    {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status().as_u16(), 503);
            let secs: u64 = r.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(secs >= 1);
        }
        other => panic!("expected 503, got {:?}", other.map(|_| ())),
    }
}

/// The status and `Retry-After` of an upgrade as `user`, from `source`.
async fn upgrade_from(
    source: &str,
    node: std::net::SocketAddr,
    user: &str,
) -> Result<(), (u16, Option<String>)> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let stream = socket.connect(node).await.unwrap();
    match tokio_tungstenite::client_async(format!("{}?token={}", url(node), token(user)), stream)
        .await
    {
        Ok(_) => Ok(()),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err((
            r.status().as_u16(),
            r.headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned()),
        )),
        Err(e) => panic!("upgrade failed: {e}"),
    }
}

#[tokio::test]
async fn connect_queue_limits_each_client_address_on_its_own() {
    // One upgrade per 10 s per address: a second from the same address is
    // refused, one from another address is not.
    let node = start(&[
        (
            "DIALTONE_REGULATOR__QUEUES__CONNECT__KEY_RATE_PER_SEC",
            "0.1",
        ),
        ("DIALTONE_REGULATOR__QUEUES__CONNECT__KEY_BURST", "1"),
    ])
    .await;
    assert_eq!(upgrade_from("127.0.0.1", node.addr(), "a").await, Ok(()));
    match upgrade_from("127.0.0.1", node.addr(), "b").await {
        Err((503, Some(secs))) => assert!(secs.parse::<u64>().unwrap() >= 1, "{secs}"),
        other => panic!("expected 503 with Retry-After, got {other:?}"),
    }
    assert_eq!(
        upgrade_from("127.0.0.2", node.addr(), "c").await,
        Ok(()),
        "another address has its own rate"
    );
    let (_, _, metrics) = http_get(node.addr(), "/metrics", None).await;
    assert!(
        metrics.contains(r#"dialtone_upgrades_refused_total{reason="rate_limited"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_reply_is_not_held_back_by_a_pipelined_request_that_waits_in_a_queue() {
    let node = start(&[
        ("DIALTONE_REGULATOR__QUEUES__SEND__RATE_PER_SEC", "2"),
        ("DIALTONE_REGULATOR__QUEUES__SEND__BURST", "1"),
        (
            "DIALTONE_REGULATOR__QUEUES__SEND__SHED_PREDICTED_TIMEOUTS",
            "false",
        ),
        ("DIALTONE_REGULATOR__QUEUES__SEND__DISCIPLINE", "fifo"),
        ("DIALTONE_REGULATOR__QUEUES__SEND__MAX_WAIT_MS", "5000"),
    ])
    .await;
    let mut c = Client::as_user(node.addr(), "patient").await;
    c.ok(json!({"type":"join","room":"r"})).await;
    c.ok(json!({"type":"send","room":"r","body":"spends the burst"}))
        .await;
    // One write: a ping, then a send that waits ~500 ms for a token.
    c.write_at_once([
        json!({"type":"ping","ref":"p"}),
        json!({"type":"send","room":"r","body":"waits","ref":"s"}),
    ])
    .await;
    c.reply_to(json!("p"), "pong").await;
    let ponged = std::time::Instant::now();
    c.reply_to(json!("s"), "ok").await;
    assert!(
        ponged.elapsed() >= Duration::from_millis(200),
        "the pong waited for the queued send: only {:?} between them",
        ponged.elapsed()
    );
}

/// A sample of `series` (name with labels) on a `/metrics` page.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn refusals_after_a_queue_wait_are_timed_apart_from_refusals_at_the_door() {
    let node = start(&[
        ("DIALTONE_REGULATOR__QUEUES__SEND__RATE_PER_SEC", "1"),
        ("DIALTONE_REGULATOR__QUEUES__SEND__BURST", "1"),
        ("DIALTONE_REGULATOR__QUEUES__SEND__MAX_SIZE", "1"),
        (
            "DIALTONE_REGULATOR__QUEUES__SEND__SHED_PREDICTED_TIMEOUTS",
            "false",
        ),
        ("DIALTONE_REGULATOR__QUEUES__SEND__DISCIPLINE", "fifo"),
        ("DIALTONE_REGULATOR__QUEUES__SEND__MAX_WAIT_MS", "500"),
        ("DIALTONE_ADMIN__TOKEN", "adm"),
    ])
    .await;
    let waited = r#"dialtone_refusal_seconds_sum{type="send",waited="true"}"#;
    let door = r#"dialtone_refusal_seconds_count{type="send",waited="false"}"#;
    let (_, _, before) = http_get(node.addr(), "/metrics", None).await;
    let mut queued = Client::as_user(node.addr(), "queued").await;
    let mut turned = Client::as_user(node.addr(), "turned").await;
    queued.ok(json!({"type":"join","room":"r"})).await;
    turned.ok(json!({"type":"join","room":"r"})).await;
    queued
        .ok(json!({"type":"send","room":"r","body":"spends the burst"}))
        .await;
    queued
        .send_text(json!({"type":"send","room":"r","body":"waits","ref":"w"}).to_string())
        .await;
    let mut polls = 0;
    while regulator_state(node.addr()).await["queues"]["send"]["queue_length"] != 1 {
        polls += 1;
        assert!(polls < 400, "the second send never queued");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The queue's one place is taken: refused at the door.
    turned
        .err(
            json!({"type":"send","room":"r","body":"no room"}),
            "overloaded",
        )
        .await;
    // The waiter is refused when its `max_wait` is up.
    let e = queued.reply_to(json!("w"), "error").await;
    assert_eq!(e["code"], "overloaded", "{e}");
    let (_, _, after) = http_get(node.addr(), "/metrics", None).await;
    assert!(sample(&after, door) > sample(&before, door), "{after}");
    // Only this test's waiter waits before a refusal of a send: its 500 ms
    // land in the `waited` series, not in the door's.
    let waited_for = sample(&after, waited) - sample(&before, waited);
    assert!(waited_for >= 0.5, "waited {waited_for} s: {after}");
}
