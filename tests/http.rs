//! PROTOCOL.md "HTTP endpoints": health, readiness, metrics, admin auth.

mod common;

use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn healthz_and_readyz_answer_200_while_running() {
    let node = start(&[]).await;
    let (s, _, body) = http_get(node.addr(), "/healthz", None).await;
    assert_eq!((s, body.as_str()), (200, "ok"));
    assert_eq!(http_get(node.addr(), "/readyz", None).await.0, 200);
}

#[tokio::test]
async fn metrics_expose_connections_frames_errors_and_a_latency_histogram() {
    let node = start(&[]).await;
    let mut c = Client::as_user(node.addr(), "m").await;
    c.ok(json!({"type":"join","room":"r"})).await;
    c.ok(json!({"type":"send","room":"r","body":"x"})).await;
    c.err(json!({"type":"history","room":"nope"}), "forbidden")
        .await;
    let (status, head, body) = http_get(node.addr(), "/metrics", None).await;
    assert_eq!(status, 200);
    assert!(
        head.to_lowercase().contains("content-type: text/plain"),
        "{head}"
    );
    for needle in [
        "dialtone_connections_open",
        "dialtone_frames_in_total{type=\"send\"}",
        "dialtone_frames_out_total{type=\"ok\"}",
        "dialtone_frames_out_total{type=\"message\"}",
        "dialtone_errors_total{code=\"forbidden\"}",
        "dialtone_send_stored_seconds_bucket{le=",
        "dialtone_send_stored_seconds_count",
        "regulator_admitted_total{queue=\"send\"}",
        "regulator_in_flight{queue=\"login\"}",
        "regulator_wait_seconds_bucket{queue=\"send\",le=",
    ] {
        assert!(body.contains(needle), "missing {needle} in\n{body}");
    }
}

#[tokio::test]
async fn admin_is_404_without_a_configured_token() {
    let node = start(&[]).await;
    assert_eq!(
        http_get(node.addr(), "/admin/tree", Some("anything"))
            .await
            .0,
        404
    );
    assert_eq!(http_get(node.addr(), "/admin/regulator", None).await.0, 404);
}

#[tokio::test]
async fn admin_needs_the_bearer_token() {
    let node = start(&[("DIALTONE_ADMIN__TOKEN", "adm")]).await;
    for path in ["/admin/tree", "/admin/regulator"] {
        assert_eq!(http_get(node.addr(), path, None).await.0, 401, "{path}");
        assert_eq!(
            http_get(node.addr(), path, Some("wrong")).await.0,
            401,
            "{path}"
        );
        assert_eq!(
            http_get(node.addr(), path, Some("adm")).await.0,
            200,
            "{path}"
        );
    }
    let (s, _, _) = http(
        node.addr(),
        "PUT",
        "/admin/regulator/queues/login",
        None,
        Some("{}"),
    )
    .await;
    assert_eq!(s, 401);
}

/// The names of a tree node's children, in order.
fn child_names(node: &Value) -> Vec<&str> {
    node["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn admin_tree_shows_every_supervisor_and_worker() {
    let node = start(&[
        ("DIALTONE_ADMIN__TOKEN", "adm"),
        ("DIALTONE_MESSAGING__SHARDS", "4"),
    ])
    .await;
    let mut a = Client::as_user(node.addr(), "a").await;
    let mut b = Client::as_user(node.addr(), "b").await;
    a.ok(json!({"type":"ping"})).await;
    b.ok(json!({"type":"ping"})).await;
    let (s, _, body) = http_get(node.addr(), "/admin/tree", Some("adm")).await;
    assert_eq!(s, 200);
    let tree: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(tree["name"], "dialtone");
    assert_eq!(tree["kind"], "supervisor");
    assert_eq!(
        child_names(&tree),
        [
            "store",
            "auth",
            "messaging",
            "gateway",
            "samplers",
            "metrics"
        ]
    );
    let messaging = &tree["children"][2];
    assert_eq!(messaging["children"].as_array().unwrap().len(), 4);
    for child in messaging["children"].as_array().unwrap() {
        assert_eq!(
            (child["kind"].as_str(), child["state"].as_str()),
            (Some("worker"), Some("running"))
        );
        assert_eq!(child["restarts"], 0);
        assert_eq!(child["children"], json!([]));
    }
    // Every connection is a temporary child of the gateway's pool.
    let gateway = &tree["children"][3];
    assert_eq!(
        child_names(gateway),
        ["listener", "connections", "keepalive"]
    );
    let conns = gateway["children"][1]["children"].as_array().unwrap();
    assert_eq!(conns.len(), 2, "{conns:?}");
    assert!(
        conns
            .iter()
            .all(|c| c["name"] == "conn" && c["state"] == "running")
    );
}

#[tokio::test]
async fn fault_injection_is_refused_unless_switched_on() {
    let node = start(&[("DIALTONE_ADMIN__TOKEN", "adm")]).await;
    let (s, _, _) = http(
        node.addr(),
        "POST",
        "/admin/fault",
        Some("adm"),
        Some(r#"{"room":"r"}"#),
    )
    .await;
    assert_eq!(s, 403);
}
