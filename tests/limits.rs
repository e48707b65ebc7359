//! PROTOCOL.md "Error codes" and "Close codes": bad input never crashes,
//! hangs or leaks; oversized frames get 1009; slow consumers get 1013.

mod common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn malformed_frames_get_bad_request_and_the_connection_stays_open() {
    let node = start(&[]).await;
    let mut c = Client::as_user(node.addr(), "m").await;
    for bad in [
        "not json",
        "[1,2,3]",
        "{}",
        r#"{"type":"nope","ref":1}"#,
        r#"{"type":42}"#,
        r#"{"type":"join"}"#,
        r#"{"type":"join","room":"has space"}"#,
        r#"{"type":"join","room":""}"#,
        r#"{"type":"send","room":"r"}"#,
        r#"{"type":"history","room":"r","after":-1}"#,
        r#"{"type":"register","user":"x"}"#,
    ] {
        c.send_text(bad).await;
        let v = c.recv().await;
        assert_eq!(
            (v["type"].as_str(), v["code"].as_str()),
            (Some("error"), Some("bad_request")),
            "{bad} -> {v}"
        );
    }
    // ref is echoed even when another field is malformed.
    let v = c.request(json!({"type":"join","room":5})).await;
    assert_eq!(v["code"], "bad_request");
    c.ok(json!({"type":"ping"})).await;
}

#[tokio::test]
async fn binary_frames_are_bad_requests() {
    let node = start(&[]).await;
    let mut c = Client::as_user(node.addr(), "b").await;
    c.ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    let v = c.recv().await;
    assert_eq!(v["code"], "bad_request");
    c.ok(json!({"type":"ping"})).await;
}

#[tokio::test]
async fn oversized_frame_gets_close_1009() {
    let node = start(&[
        ("DIALTONE_LIMITS__MAX_FRAME_BYTES", "1024"),
        ("DIALTONE_LIMITS__MAX_BODY_BYTES", "512"),
    ])
    .await;
    let mut c = Client::as_user(node.addr(), "big").await;
    c.ok(json!({"type":"join","room":"r"})).await;
    let body = "x".repeat(2000);
    c.send_text(json!({"type":"send","room":"r","body":body}).to_string())
        .await;
    assert_eq!(c.closed().await, 1009);
    // Nothing was stored, and the node still serves others.
    let mut d = Client::as_user(node.addr(), "other").await;
    d.ok(json!({"type":"join","room":"r"})).await;
    let h = d.ok(json!({"type":"history","room":"r"})).await;
    assert_eq!(h["messages"], json!([]));
}

#[tokio::test]
async fn slow_consumer_gets_1013_and_the_room_does_not_stall() {
    let node = start(&[
        ("DIALTONE_GATEWAY__OUTBOX_FRAMES", "64"),
        ("DIALTONE_GATEWAY__WRITE_TIMEOUT_MS", "10000"),
        // This test floods on purpose: lift the per-user send rate.
        (
            "DIALTONE_REGULATOR__QUEUES__SEND__KEY_RATE_PER_SEC",
            "1000000",
        ),
        ("DIALTONE_REGULATOR__QUEUES__SEND__KEY_BURST", "100000"),
    ])
    .await;
    let addr = node.addr();
    // The slow client joins and then stops reading.
    let mut slow = Client::as_user(addr, "slow").await;
    slow.ok(json!({"type":"join","room":"flood"})).await;
    let mut fast = Client::as_user(addr, "fast").await;
    fast.ok(json!({"type":"join","room":"flood"})).await;
    let mut sender = Client::as_user(addr, "sender").await;
    sender.ok(json!({"type":"join","room":"flood"})).await;
    // Enough bytes to fill the socket buffers, then the outbox.
    let body = "y".repeat(4000);
    let total = 3000u64;
    let reader = tokio::spawn(async move {
        let mut last = 0;
        while last < total {
            let m = fast.next_push("message").await;
            last = m["seq"].as_u64().unwrap();
        }
        last
    });
    for _ in 0..total {
        sender
            .ok(json!({"type":"send","room":"flood","body":body}))
            .await;
    }
    // The fast reader got everything: the slow one did not hold the room back.
    let last = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("fast reader keeps up")
        .unwrap();
    assert_eq!(last, total);
    // The slow client, reading at last, finds the close 1013 after what was buffered.
    assert_eq!(slow.closed().await, 1013);
}

#[tokio::test]
async fn a_connection_whose_task_is_late_is_not_a_slow_consumer() {
    let node = start(&[
        ("DIALTONE_GATEWAY__OUTBOX_FRAMES", "16"),
        // One history read per 2 s: the second waits in the queue, and its
        // connection's task with it.
        ("DIALTONE_REGULATOR__QUEUES__HISTORY__RATE_PER_SEC", "0.5"),
        ("DIALTONE_REGULATOR__QUEUES__HISTORY__BURST", "1"),
        ("DIALTONE_REGULATOR__QUEUES__HISTORY__MAX_WAIT_MS", "10000"),
    ])
    .await;
    let addr = node.addr();
    let mut reader = Client::as_user(addr, "reader").await;
    reader.ok(json!({"type":"join","room":"r"})).await;
    let mut sender = Client::as_user(addr, "sender").await;
    sender.ok(json!({"type":"join","room":"r"})).await;
    reader.ok(json!({"type":"history","room":"r"})).await;
    reader
        .send_text(json!({"type":"history","room":"r","ref":"late"}).to_string())
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // While the reader's task waits for its history, more than
    // `outbox_frames` messages queue for it. It reads everything it is
    // sent; its task is what is late.
    let total = 40;
    for i in 0..total {
        sender
            .ok(json!({"type":"send","room":"r","body":format!("m{i}")}))
            .await;
    }
    let h = reader.reply_to(json!("late"), "history").await;
    assert!(h["messages"].is_array());
    for seq in 1..=total {
        let m = reader.next_push("message").await;
        assert_eq!(m["seq"], seq, "{m}");
    }
    reader.ok(json!({"type":"ping"})).await;
}

#[tokio::test]
async fn a_peer_that_answers_no_ping_is_dropped_and_a_live_one_stays() {
    // Generous against scheduling stalls on busy CI machines: the live
    // client only has to say something once per 400 ms.
    let node = start(&[("DIALTONE_GATEWAY__PING_INTERVAL_MS", "400")]).await;
    let mut dead = Client::as_user(node.addr(), "dead").await;
    let mut live = Client::as_user(node.addr(), "live").await;
    // `live` keeps reading (its client answers pings); `dead` never reads.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(2000);
    while tokio::time::Instant::now() < deadline {
        live.ok(json!({"type":"ping"})).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    live.ok(json!({"type":"join","room":"r"})).await;
    // The dead peer was dropped: reading now finds the buffered pings, then
    // the end of the stream. A live connection would keep answering pings
    // and this loop would run into the timeout instead.
    let ended = loop {
        match tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut dead.ws)).await {
            Err(_) => break false,
            Ok(None | Some(Err(_))) => break true,
            Ok(Some(Ok(_))) => {}
        }
    };
    assert!(ended, "the silent peer was dropped");
}
