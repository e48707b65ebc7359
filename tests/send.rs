//! PROTOCOL.md "Frames" and "Guarantees" 1-4: send, seq, cid, direct messages.

mod common;

use std::collections::HashMap;

use common::*;
use serde_json::json;

#[tokio::test]
async fn send_is_acknowledged_and_delivered_to_every_member_including_the_sender() {
    let node = start(&[]).await;
    let mut a = Client::as_user(node.addr(), "amy").await;
    let mut b = Client::as_user(node.addr(), "bo").await;
    a.ok(json!({"type":"join","room":"r"})).await;
    b.ok(json!({"type":"join","room":"r"})).await;
    let ok = a
        .ok(json!({"type":"send","room":"r","body":"hello","cid":"k1"}))
        .await;
    assert_eq!(
        (ok["room"].as_str(), ok["seq"].as_u64()),
        (Some("r"), Some(1))
    );
    let id = ok["id"].as_str().unwrap().to_owned();
    for c in [&mut a, &mut b] {
        let m = c.next_push("message").await;
        assert_eq!(m["room"], "r");
        assert_eq!(m["seq"], 1);
        assert_eq!(m["id"], id.as_str());
        assert_eq!(m["from"], "amy");
        assert_eq!(m["body"], "hello");
        assert_eq!(m["cid"], "k1");
        assert!(m["ts"].as_u64().is_some());
        assert!(m.get("ref").is_none(), "pushed frames carry no ref: {m}");
    }
}

#[tokio::test]
async fn retry_with_same_cid_returns_original_seq_and_id() {
    let node = start(&[]).await;
    let mut a = Client::as_user(node.addr(), "ret").await;
    a.ok(json!({"type":"join","room":"r"})).await;
    let first = a
        .ok(json!({"type":"send","room":"r","body":"x","cid":"same"}))
        .await;
    a.ok(json!({"type":"send","room":"r","body":"y"})).await;
    // A retry from a new connection (after a reconnect) is still a retry.
    let mut again = Client::as_user(node.addr(), "ret").await;
    again.ok(json!({"type":"join","room":"r"})).await;
    let retry = again
        .ok(json!({"type":"send","room":"r","body":"x","cid":"same"}))
        .await;
    assert_eq!(
        (retry["seq"].clone(), retry["id"].clone()),
        (first["seq"].clone(), first["id"].clone())
    );
    let h = again.ok(json!({"type":"history","room":"r"})).await;
    assert_eq!(
        h["messages"].as_array().unwrap().len(),
        2,
        "stored once: {h}"
    );
    // Another user's identical cid is a different message.
    let mut other = Client::as_user(node.addr(), "other").await;
    other.ok(json!({"type":"join","room":"r"})).await;
    let o = other
        .ok(json!({"type":"send","room":"r","body":"x","cid":"same"}))
        .await;
    assert_eq!(o["seq"], 3);
}

#[tokio::test]
async fn seq_stays_gap_free_and_ordered_with_many_concurrent_senders() {
    const SENDERS: usize = 8;
    const EACH: usize = 50;
    let node = start(&[]).await;
    let mut reader = Client::as_user(node.addr(), "reader").await;
    reader.ok(json!({"type":"join","room":"busy"})).await;
    let mut tasks = Vec::new();
    for s in 0..SENDERS {
        let addr = node.addr();
        tasks.push(tokio::spawn(async move {
            let mut c = Client::as_user(addr, &format!("s{s}")).await;
            c.ok(json!({"type":"join","room":"busy"})).await;
            let mut seqs = Vec::new();
            for i in 0..EACH {
                let ok = c
                    .ok(json!({"type":"send","room":"busy","body": format!("{s}-{i}")}))
                    .await;
                seqs.push(ok["seq"].as_u64().unwrap());
            }
            seqs
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        let seqs = t.await.unwrap();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "one sender's seqs rise"
        );
        acked.extend(seqs);
    }
    acked.sort_unstable();
    let total = (SENDERS * EACH) as u64;
    assert_eq!(
        acked,
        (1..=total).collect::<Vec<_>>(),
        "every seq acked once, no gaps"
    );
    // The reader sees every message, in seq order.
    let mut seen = Vec::new();
    while seen.len() < SENDERS * EACH {
        let m = reader.next_push("message").await;
        seen.push(m["seq"].as_u64().unwrap());
    }
    assert_eq!(seen, (1..=total).collect::<Vec<_>>());
}

#[tokio::test]
async fn direct_message_goes_to_dm_room_in_byte_order_and_both_users() {
    let node = start(&[]).await;
    let mut zed = Client::as_user(node.addr(), "zed").await;
    let mut amy = Client::as_user(node.addr(), "amy").await;
    let mut amy2 = Client::as_user(node.addr(), "amy").await;
    let ok = zed
        .ok(json!({"type":"send","to":"amy","body":"psst"}))
        .await;
    assert_eq!(ok["room"], "dm:amy:zed");
    assert_eq!(ok["seq"], 1);
    for c in [&mut amy, &mut amy2, &mut zed] {
        let m = c.next_push("message").await;
        assert_eq!(
            (m["room"].as_str(), m["from"].as_str(), m["body"].as_str()),
            (Some("dm:amy:zed"), Some("zed"), Some("psst"))
        );
    }
    // Both may read it without joining; a third user may not.
    let h = amy.ok(json!({"type":"history","room":"dm:amy:zed"})).await;
    assert_eq!(h["messages"][0]["body"], "psst");
    amy.ok(json!({"type":"send","room":"dm:amy:zed","body":"reply"}))
        .await;
    let mut eve = Client::as_user(node.addr(), "eve").await;
    eve.err(json!({"type":"history","room":"dm:amy:zed"}), "forbidden")
        .await;
    eve.err(
        json!({"type":"send","room":"dm:amy:zed","body":"x"}),
        "forbidden",
    )
    .await;
}

#[tokio::test]
async fn direct_message_to_an_unknown_user_is_not_found() {
    let node = start(&[]).await;
    let mut a = Client::as_user(node.addr(), "a").await;
    a.err(
        json!({"type":"send","to":"ghost","body":"boo"}),
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn body_over_the_limit_is_too_large_and_nothing_is_stored() {
    let node = start(&[("DIALTONE_LIMITS__MAX_BODY_BYTES", "10")]).await;
    let mut a = Client::as_user(node.addr(), "a").await;
    a.ok(json!({"type":"join","room":"r"})).await;
    a.err(
        json!({"type":"send","room":"r","body":"12345678901"}),
        "too_large",
    )
    .await;
    a.ok(json!({"type":"send","room":"r","body":"1234567890"}))
        .await;
    let h = a.ok(json!({"type":"history","room":"r"})).await;
    assert_eq!(h["messages"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn rooms_do_not_leak_messages_to_non_members() {
    let node = start(&[]).await;
    let mut a = Client::as_user(node.addr(), "a").await;
    let mut b = Client::as_user(node.addr(), "b").await;
    a.ok(json!({"type":"join","room":"one"})).await;
    b.ok(json!({"type":"join","room":"two"})).await;
    a.ok(json!({"type":"send","room":"one","body":"private"}))
        .await;
    b.ok(json!({"type":"send","room":"two","body":"mine"}))
        .await;
    let m = b.next_push("message").await;
    assert_eq!(m["body"], "mine");
    let mut counts: HashMap<String, usize> = HashMap::new();
    for v in &b.pushed {
        *counts
            .entry(v["room"].as_str().unwrap_or("").to_owned())
            .or_default() += 1;
    }
    assert!(!counts.contains_key("one"));
}

#[tokio::test]
async fn pipelined_requests_written_at_once_each_get_one_reply_in_order() {
    let node = start(&[]).await;
    let mut c = Client::as_user(node.addr(), "piper").await;
    c.ok(json!({"type":"join","room":"p"})).await;
    // 100 frames in one write: the node reads them in batches and answers
    // each batch in one write; none may be lost or reordered at the seams.
    let n = 100;
    c.write_at_once((0..n).map(|i| match i % 3 {
        0 => json!({"type":"send","room":"p","body": format!("m{i}"),"ref": i}),
        1 => json!({"type":"ping","ref": i}),
        _ => json!({"type":"join","room":"bad room","ref": i}),
    }))
    .await;
    let mut seq = 0;
    for i in 0..n {
        let v = c.next_reply().await;
        assert_eq!(v["ref"], i, "reply out of order: {v}");
        match i % 3 {
            0 => {
                seq += 1;
                assert_eq!((&v["type"], &v["seq"]), (&json!("ok"), &json!(seq)), "{v}");
            }
            1 => assert_eq!(v["type"], "pong", "{v}"),
            _ => assert_eq!(v["code"], "bad_request", "{v}"),
        }
    }
}
