//! DESIGN.md "Supervision" through a running node: a crash touches one
//! request, tells its user `internal`, and everyone else carries on.

mod common;

use std::time::Duration;

use common::*;
use dialtone_proto::RoomName;
use serde_json::{Value, json};

const SHARDS: u64 = 4;

fn shard_of(room: &str) -> u64 {
    RoomName::parse(room).unwrap().shard_hash() % SHARDS
}

/// Two rooms that live on different shards.
fn rooms_on_two_shards() -> (String, String) {
    let a = "crashy".to_owned();
    let b = (0..100)
        .map(|i| format!("calm{i}"))
        .find(|r| shard_of(r) != shard_of(&a))
        .unwrap();
    (a, b)
}

async fn node(extra: &[(&str, &str)]) -> dialtone::Node {
    let mut env = vec![
        ("DIALTONE_ADMIN__TOKEN", "adm"),
        ("DIALTONE_ADMIN__FAULT_INJECTION", "true"),
        ("DIALTONE_MESSAGING__SHARDS", "4"),
    ];
    env.extend_from_slice(extra);
    start(&env).await
}

async fn arm(addr: std::net::SocketAddr, body: Value) {
    let (s, _, b) = http(
        addr,
        "POST",
        "/admin/fault",
        Some("adm"),
        Some(&body.to_string()),
    )
    .await;
    assert_eq!(s, 200, "{b}");
}

async fn tree(addr: std::net::SocketAddr) -> Value {
    let (s, _, body) = http_get(addr, "/admin/tree", Some("adm")).await;
    assert_eq!(s, 200);
    serde_json::from_str(&body).unwrap()
}

fn child<'a>(node: &'a Value, name: &str) -> &'a Value {
    node["children"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()
}

#[tokio::test]
async fn shard_panic_fails_one_request_and_loses_no_acknowledged_message() {
    const SENDERS: usize = 4;
    const EACH: usize = 40;
    let node = node(&[]).await;
    let addr = node.addr();
    let (crashy, calm) = rooms_on_two_shards();
    let mut tasks = Vec::new();
    for s in 0..SENDERS * 2 {
        let room = if s < SENDERS {
            crashy.clone()
        } else {
            calm.clone()
        };
        tasks.push(tokio::spawn(async move {
            let mut c = Client::as_user(addr, &format!("u{s}")).await;
            c.ok(json!({"type":"join","room": room})).await;
            let mut acked = Vec::new();
            let mut internal = 0;
            for i in 0..EACH {
                let v = c
                    .request(json!({"type":"send","room": room, "body": format!("{s}:{i}")}))
                    .await;
                match (v["type"].as_str(), v["code"].as_str()) {
                    (Some("ok"), _) => acked.push(v["seq"].as_u64().unwrap()),
                    (Some("error"), Some("internal")) => internal += 1,
                    _ => panic!("unexpected reply {v}"),
                }
                if i == EACH / 4 && s == 0 {
                    arm(addr, json!({"room": room})).await;
                }
            }
            (room, acked, internal)
        }));
    }
    let mut acked_crashy = Vec::new();
    let mut internals = 0;
    for t in tasks {
        let (room, acked, internal) = t.await.unwrap();
        if room == calm {
            assert_eq!(internal, 0, "clients on other shards see no error");
            assert_eq!(acked.len(), EACH);
        } else {
            acked_crashy.extend(acked);
            internals += internal;
        }
    }
    assert_eq!(internals, 1, "exactly the request in flight got `internal`");
    // Every acknowledged message is in history, and seq is gap-free.
    let mut reader = Client::as_user(addr, "reader").await;
    reader.ok(json!({"type":"join","room": crashy})).await;
    let h = reader
        .ok(json!({"type":"history","room": crashy, "limit": 1000}))
        .await;
    let seqs: Vec<u64> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "gap-free"
    );
    acked_crashy.sort_unstable();
    assert_eq!(
        acked_crashy, seqs,
        "exactly the acknowledged messages are stored"
    );
    // The restart is visible in the tree.
    let t = tree(addr).await;
    let shard = child(
        child(&t, "messaging"),
        &format!("shard_{}", shard_of(&crashy)),
    );
    assert_eq!(
        (shard["restarts"].as_u64(), shard["state"].as_str()),
        (Some(1), Some("running"))
    );
}

#[tokio::test]
async fn hash_worker_panic_fails_one_login_and_others_succeed() {
    let node = node(&[
        ("DIALTONE_AUTH__HASH_WORKERS", "2"),
        // Shared CI cores can be slow: queued registrations must wait, not shed.
        ("DIALTONE_REGULATOR__QUEUES__REGISTER__MAX_WAIT_MS", "20000"),
    ])
    .await;
    let addr = node.addr();
    arm(addr, json!({"point": "auth.hash"})).await;
    let codes: Vec<String> = anon_burst(
        addr,
        6,
        |i| json!({"type":"register","user": format!("p{i}"),"password":"pw"}),
    )
    .await
    .iter()
    .map(|v| v["code"].as_str().unwrap_or("ok").to_owned())
    .collect();
    assert_eq!(
        codes.iter().filter(|c| *c == "internal").count(),
        1,
        "{codes:?}"
    );
    assert_eq!(codes.iter().filter(|c| *c == "ok").count(), 5, "{codes:?}");
    let t = tree(addr).await;
    let restarts: u64 = child(&t, "auth")["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["restarts"].as_u64().unwrap())
        .sum();
    assert_eq!(restarts, 1);
}

#[tokio::test]
async fn session_panic_answers_internal_with_the_ref_and_the_connection_lives() {
    let node = node(&[]).await;
    let mut c = Client::as_user(node.addr(), "fragile").await;
    arm(node.addr(), json!({"point": "session.fragile"})).await;
    let v = c.request(json!({"type":"ping","ref":"will-panic"})).await;
    assert_eq!(
        (v["type"].as_str(), v["code"].as_str()),
        (Some("error"), Some("internal"))
    );
    c.ok(json!({"type":"join","room":"r"})).await;
}

#[tokio::test]
async fn exceeding_shard_intensity_escalates_and_shows_in_tree_and_metrics() {
    let node = node(&[
        ("DIALTONE_MESSAGING__MAX_RESTARTS", "2"),
        ("DIALTONE_MESSAGING__RESTART_PERIOD_MS", "60000"),
    ])
    .await;
    let addr = node.addr();
    let mut c = Client::as_user(addr, "boom").await;
    c.ok(json!({"type":"join","room":"loop"})).await;
    arm(addr, json!({"room": "loop", "times": 3})).await;
    for _ in 0..3 {
        let v = c
            .request(json!({"type":"send","room":"loop","body":"x"}))
            .await;
        assert_eq!(v["code"], "internal", "{v}");
    }
    // The messaging supervisor gave up; the root restarted it (and what depends on it).
    let mut restarted = false;
    for _ in 0..100 {
        let t = tree(addr).await;
        if child(&t, "messaging")["restarts"].as_u64() >= Some(1)
            && child(&t, "messaging")["state"] == "running"
        {
            restarted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(restarted, "escalation visible in /admin/tree");
    let (_, _, metrics) = http_get(addr, "/metrics", None).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("supervisor_events_total")
                && l.contains("gave_up")
                && l.contains("messaging")),
        "gave_up counted:\n{metrics}"
    );
    // The client's connection and its room membership lived through it.
    c.ok(json!({"type":"send","room":"loop","body":"still here"}))
        .await;
    let m = c.next_push("message").await;
    assert_eq!(m["body"], "still here");
    // Service resumes for new requests.
    let mut again = Client::as_user(addr, "after").await;
    again.ok(json!({"type":"join","room":"loop"})).await;
    again
        .ok(json!({"type":"send","room":"loop","body":"back"}))
        .await;
}
