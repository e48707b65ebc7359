//! PROTOCOL.md "Frames": join, leave, who, presence, history.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn join_answers_the_latest_seq_and_leave_stops_delivery() {
    let node = start(&[]).await;
    let mut a = Client::as_user(node.addr(), "a").await;
    let j = a.ok(json!({"type":"join","room":"lobby"})).await;
    assert_eq!(
        (j["room"].as_str(), j["seq"].as_u64()),
        (Some("lobby"), Some(0))
    );
    a.ok(json!({"type":"send","room":"lobby","body":"one"}))
        .await;
    a.ok(json!({"type":"send","room":"lobby","body":"two"}))
        .await;
    let mut b = Client::as_user(node.addr(), "b").await;
    let j = b.ok(json!({"type":"join","room":"lobby"})).await;
    assert_eq!(j["seq"], 2);
    let l = b.ok(json!({"type":"leave","room":"lobby"})).await;
    assert_eq!(l["room"], "lobby");
    a.ok(json!({"type":"send","room":"lobby","body":"three"}))
        .await;
    b.err(
        json!({"type":"send","room":"lobby","body":"x"}),
        "forbidden",
    )
    .await;
    // b left: the next frame b gets is the reply to its ping, not "three".
    b.pushed.clear();
    b.ok(json!({"type":"ping"})).await;
    assert!(
        b.pushed.iter().all(|v| v["body"] != "three"),
        "{:?}",
        b.pushed
    );
}

#[tokio::test]
async fn who_lists_online_members() {
    let node = start(&[]).await;
    let mut a = Client::as_user(node.addr(), "ann").await;
    let mut b = Client::as_user(node.addr(), "ben").await;
    a.ok(json!({"type":"join","room":"r"})).await;
    b.ok(json!({"type":"join","room":"r"})).await;
    let who = a.ok(json!({"type":"who","room":"r"})).await;
    assert_eq!(who["users"], json!(["ann", "ben"]));
    drop(b);
    // ben's connection is gone: eventually only ann is listed.
    let mut users = json!(null);
    for _ in 0..100 {
        users = a.ok(json!({"type":"who","room":"r"})).await["users"].clone();
        if users == json!(["ann"]) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(users, json!(["ann"]));
}

#[tokio::test]
async fn presence_counts_users_not_connections() {
    let node = start(&[]).await;
    let mut watcher = Client::as_user(node.addr(), "watch").await;
    watcher.ok(json!({"type":"join","room":"p"})).await;
    // The joiner is told of its own arrival too.
    let own = watcher.next_push("presence").await;
    assert_eq!(own["user"], "watch");
    let mut u1 = Client::as_user(node.addr(), "sam").await;
    let mut u2 = Client::as_user(node.addr(), "sam").await;
    u1.ok(json!({"type":"join","room":"p"})).await;
    let p = watcher.next_push("presence").await;
    assert_eq!(
        p,
        json!({"type":"presence","room":"p","user":"sam","event":"join"})
    );
    u2.ok(json!({"type":"join","room":"p"})).await;
    // Second connection of the same user: no new presence. Leave one: none either.
    u1.ok(json!({"type":"leave","room":"p"})).await;
    watcher.ok(json!({"type":"ping"})).await;
    assert!(
        watcher.pushed.iter().all(|v| v["type"] != "presence"),
        "{:?}",
        watcher.pushed
    );
    // The last connection closing (not even leaving) is a leave.
    drop(u2);
    let p = watcher.next_push("presence").await;
    assert_eq!(
        p,
        json!({"type":"presence","room":"p","user":"sam","event":"leave"})
    );
}

#[tokio::test]
async fn history_pages_with_after_and_limit_in_ascending_seq() {
    let node = start(&[]).await;
    let mut a = Client::as_user(node.addr(), "h").await;
    a.ok(json!({"type":"join","room":"log"})).await;
    for i in 1..=12 {
        a.ok(json!({"type":"send","room":"log","body": format!("m{i}"), "cid": format!("c{i}")}))
            .await;
    }
    let h = a
        .ok(json!({"type":"history","room":"log","after":3,"limit":4}))
        .await;
    assert_eq!(h["type"], "history");
    assert_eq!(h["room"], "log");
    let msgs = h["messages"].as_array().unwrap();
    let seqs: Vec<u64> = msgs.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [4, 5, 6, 7]);
    assert_eq!(msgs[0]["body"], "m4");
    assert_eq!(msgs[0]["from"], "h");
    assert_eq!(msgs[0]["cid"], "c4");
    assert!(msgs[0]["ts"].as_u64().unwrap() > 1_700_000_000_000);
    assert!(msgs[0]["id"].as_str().is_some());
    let all = a.ok(json!({"type":"history","room":"log"})).await;
    assert_eq!(all["messages"].as_array().unwrap().len(), 12);
    let none = a
        .ok(json!({"type":"history","room":"log","after":12}))
        .await;
    assert_eq!(none["messages"], json!([]));
}

#[tokio::test]
async fn reading_a_room_not_joined_is_forbidden() {
    let node = start(&[]).await;
    let mut a = Client::as_user(node.addr(), "x").await;
    a.err(json!({"type":"history","room":"secret"}), "forbidden")
        .await;
    a.err(json!({"type":"who","room":"secret"}), "forbidden")
        .await;
    a.err(
        json!({"type":"send","room":"secret","body":"hi"}),
        "forbidden",
    )
    .await;
}
