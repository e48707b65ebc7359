//! PROTOCOL.md "Frames": register, login (password and token), tokens at
//! upgrade, login timeout, and what needs a login.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn register_logs_the_connection_in_and_returns_a_working_token() {
    let node = start(&[]).await;
    let mut c = Client::anon(node.addr()).await;
    let ok = c
        .ok(json!({"type":"register","user":"alice","password":"pw1"}))
        .await;
    assert_eq!(ok["user"], "alice");
    assert!(ok["expires_at"].as_u64().unwrap() > now());
    c.ok(json!({"type":"join","room":"r"})).await;
    // The issued token works at upgrade.
    let t = ok["token"].as_str().unwrap();
    let mut again = Client::with_header(node.addr(), t)
        .await
        .expect("token accepted");
    again.ok(json!({"type":"join","room":"r"})).await;
}

#[tokio::test]
async fn password_login_and_its_failures() {
    let node = start(&[]).await;
    let mut c = Client::anon(node.addr()).await;
    c.ok(json!({"type":"register","user":"bob","password":"right"}))
        .await;
    let mut d = Client::anon(node.addr()).await;
    d.err(
        json!({"type":"login","user":"bob","password":"wrong"}),
        "bad_credentials",
    )
    .await;
    d.err(
        json!({"type":"login","user":"nobody","password":"x"}),
        "bad_credentials",
    )
    .await;
    d.err(
        json!({"type":"register","user":"bob","password":"x"}),
        "user_exists",
    )
    .await;
    let ok = d
        .ok(json!({"type":"login","user":"bob","password":"right"}))
        .await;
    assert_eq!(ok["user"], "bob");
}

#[tokio::test]
async fn token_login_by_frame_needs_no_registration_and_refreshes() {
    let node = start(&[]).await;
    let mut c = Client::anon(node.addr()).await;
    let ok = c.ok(json!({"type":"login","token": token("tina")})).await;
    assert_eq!(ok["user"], "tina");
    assert!(ok["token"].as_str().is_some());
    // Refresh for the same user is fine; another user is forbidden.
    c.ok(json!({"type":"login","token": token("tina")})).await;
    c.err(json!({"type":"login","token": token("other")}), "forbidden")
        .await;
    c.err(
        json!({"type":"register","user":"other2","password":"p"}),
        "forbidden",
    )
    .await;
    // A token user has no password.
    let mut d = Client::anon(node.addr()).await;
    d.err(
        json!({"type":"login","user":"tina","password":"x"}),
        "bad_credentials",
    )
    .await;
}

#[tokio::test]
async fn bad_tokens_are_unauthorized_by_frame_and_401_at_upgrade() {
    let node = start(&[]).await;
    let mut c = Client::anon(node.addr()).await;
    c.err(json!({"type":"login","token":"garbage"}), "unauthorized")
        .await;
    c.err(
        json!({"type":"login","token": token_with("a", now() - 10, SECRET)}),
        "unauthorized",
    )
    .await;
    c.err(
        json!({"type":"login","token": token_with("a", now() + 60, "wrong")}),
        "unauthorized",
    )
    .await;
    for bad in [
        "garbage",
        &token_with("a", now() - 10, SECRET),
        &token_with("a", now() + 60, "wrong"),
    ] {
        assert_eq!(Client::with_header(node.addr(), bad).await.err(), Some(401));
        let refused =
            tokio_tungstenite::connect_async(format!("{}?token={bad}", url(node.addr()))).await;
        match refused {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status().as_u16(), 401)
            }
            other => panic!("expected 401, got {:?}", other.map(|_| ())),
        }
    }
}

#[tokio::test]
async fn requests_before_login_are_unauthorized_but_ping_works() {
    let node = start(&[]).await;
    let mut c = Client::anon(node.addr()).await;
    let pong = c.request(json!({"type":"ping"})).await;
    assert_eq!(pong["type"], "pong");
    c.err(json!({"type":"join","room":"r"}), "unauthorized")
        .await;
    c.err(json!({"type":"send","room":"r","body":"x"}), "unauthorized")
        .await;
    c.err(json!({"type":"history","room":"r"}), "unauthorized")
        .await;
}

#[tokio::test]
async fn no_login_within_the_timeout_closes_with_1008() {
    let node = start(&[("DIALTONE_AUTH__LOGIN_TIMEOUT_MS", "300")]).await;
    let mut c = Client::anon(node.addr()).await;
    assert_eq!(c.closed().await, 1008);
    // A connection that logged in in time stays open past the timeout.
    let mut d = Client::anon(node.addr()).await;
    d.ok(json!({"type":"login","token": token("fast")})).await;
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    d.ok(json!({"type":"ping"})).await;
}

#[tokio::test]
async fn a_token_at_upgrade_logs_in_at_once() {
    let node = start(&[("DIALTONE_AUTH__LOGIN_TIMEOUT_MS", "300")]).await;
    let mut c = Client::as_user(node.addr(), "quick").await;
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let ok = c.ok(json!({"type":"join","room":"r"})).await;
    assert_eq!(ok["room"], "r");
}
