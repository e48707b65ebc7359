//! Getting a user in: connecting (with retries on 503), control requests
//! with retries on `overloaded`, joining, password register + login, closing.
//! Every attempt is recorded as a goose custom request.

use super::{METHOD, fail};
use crate::conn::{self, ConnectError, Reply, Shared, Sink};
use crate::protocol;
use crate::state::RunState;
use futures_util::{SinkExt, StreamExt};
use goose::prelude::*;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Connects as `name` (token minted from the secret, or the given one),
/// retrying refusals after their `Retry-After`. Records `WS connect`.
pub(super) async fn connect_user(
    user: &mut GooseUser,
    run: &RunState,
    name: &str,
    token: Option<&str>,
) -> Result<conn::Ws, Box<TransactionError>> {
    let minted;
    let token = match (token, &run.opts.jwt_secret) {
        (Some(t), _) => Some(t),
        (None, Some(secret)) => {
            minted =
                protocol::mint_token(name, secret, 24 * 3600).map_err(|e| fail(e.to_string()))?;
            Some(minted.as_str())
        }
        (None, None) => None,
    };
    connect_url(user, run, &conn::url_with_token(&run.opts.host, token)).await
}

/// Records one `WS connect` attempt: `Ok(101)`, or `Err((status, why))`.
async fn record_connect(
    user: &mut GooseUser,
    started: Instant,
    outcome: Result<u16, (Option<u16>, &str)>,
) -> Result<(), Box<TransactionError>> {
    let (ok, status, why) = match outcome {
        Ok(status) => (true, Some(status), None),
        Err((status, why)) => (false, status, Some(why)),
    };
    user.record_custom_request_duration(METHOD, "connect", conn::elapsed(started), ok, status, why)
        .await?;
    Ok(())
}

pub(super) async fn connect_url(
    user: &mut GooseUser,
    run: &RunState,
    url: &str,
) -> Result<conn::Ws, Box<TransactionError>> {
    let first = Instant::now();
    for attempt in 0..run.opts.max_retries.max(1) {
        let started = Instant::now();
        match conn::connect_once(url, run.opts.request_timeout).await {
            Ok(ws) => {
                run.c.connects.fetch_add(1, Ordering::Relaxed);
                run.record_other("connect", conn::elapsed(first));
                record_connect(user, started, Ok(101)).await?;
                return Ok(ws);
            }
            Err(ConnectError::Refused(wait)) => {
                run.c.connect_rejected.fetch_add(1, Ordering::Relaxed);
                record_connect(user, started, Err((Some(503), "503 retry-after"))).await?;
                tokio::time::sleep(wait).await;
            }
            Err(ConnectError::Denied(why)) => {
                run.c.connect_failed.fetch_add(1, Ordering::Relaxed);
                record_connect(user, started, Err((None, &why))).await?;
                return Err(fail(format!("connect refused: {why}")));
            }
            Err(ConnectError::Failed(why)) => {
                run.c.connect_failed.fetch_add(1, Ordering::Relaxed);
                record_connect(user, started, Err((None, &why))).await?;
                // Refused or reset connections rarely heal within a run: give
                // up sooner than on a 503, which says when to come back.
                if attempt + 1 >= run.opts.max_retries.min(10) {
                    return Err(fail(format!("connect failed: {why}")));
                }
                let backoff = Duration::from_millis(100 * u64::from(attempt.min(20) + 1));
                tokio::time::sleep(backoff).await;
            }
        }
    }
    Err(fail("connect: out of retries"))
}

/// Sends a control request until it is answered with `ok`, waiting out
/// `overloaded`/`unavailable`/`rate_limited`. Records each attempt under `what`
/// and the whole wait (first attempt to success) in the run's `what` histogram.
pub(super) async fn request_ok(
    user: &mut GooseUser,
    run: &RunState,
    shared: &Shared,
    sink: &mut Sink,
    what: &'static str,
    frame: impl Fn(&str) -> String,
) -> Result<Reply, Box<TransactionError>> {
    let first = Instant::now();
    for _ in 0..run.opts.max_retries.max(1) {
        let started = Instant::now();
        let reply = shared.request(sink, &frame, run.opts.request_timeout).await;
        let took = conn::elapsed(started);
        match reply {
            Ok(ok @ Reply::Ok { .. }) => {
                user.record_custom_request_duration(METHOD, what, took, true, None, None)
                    .await?;
                run.record_other(what, conn::elapsed(first));
                return Ok(ok);
            }
            Ok(Reply::Error {
                code,
                retry_after_ms,
            }) => {
                user.record_custom_request_duration(METHOD, what, took, false, None, Some(&code))
                    .await?;
                let retriable =
                    matches!(code.as_str(), "overloaded" | "unavailable" | "rate_limited");
                if !retriable {
                    return Err(fail(format!("{what}: {code}")));
                }
                tokio::time::sleep(Duration::from_millis(retry_after_ms.unwrap_or(100).max(1)))
                    .await;
            }
            Err(e) => {
                let why = e.to_string();
                user.record_custom_request_duration(METHOD, what, took, false, None, Some(&why))
                    .await?;
                return Err(fail(format!("{what}: {why}")));
            }
        }
    }
    Err(fail(format!("{what}: out of retries")))
}

pub(super) async fn join(
    user: &mut GooseUser,
    run: &RunState,
    shared: &Shared,
    sink: &mut Sink,
) -> Result<u64, Box<TransactionError>> {
    let room = shared.room.clone();
    match request_ok(user, run, shared, sink, "join", |r| {
        protocol::join_frame(&room, r)
    })
    .await?
    {
        Reply::Ok { seq, .. } => Ok(seq.unwrap_or(0)),
        Reply::Error { code, .. } => Err(fail(format!("join: {code}"))),
    }
}

/// login-storm: register on one connection, then log in with the password on a
/// fresh one (two argon2 hashes per user). Returns the login's token.
pub(super) async fn password_login(
    user: &mut GooseUser,
    run: &Arc<RunState>,
    shared: &Arc<Shared>,
    name: &str,
) -> Result<String, Box<TransactionError>> {
    let password = run.opts.password.clone();
    let ws = connect_url(user, run, &run.opts.host).await?;
    let (mut sink, stream) = ws.split();
    let reader = conn::spawn_reader(shared.clone(), stream);
    let registered = shared
        .request(
            &mut sink,
            |r| protocol::credentials_frame("register", name, &password, r),
            run.opts.request_timeout,
        )
        .await;
    // Registration is retried below only when shed; `user_exists` (a rerun
    // with the same prefix) is fine, the login that follows proves the password.
    let mut outcome = registered;
    let first = Instant::now();
    for _ in 0..run.opts.max_retries {
        match &outcome {
            Ok(Reply::Error {
                code,
                retry_after_ms,
            }) if matches!(code.as_str(), "overloaded" | "unavailable" | "rate_limited") => {
                user.record_custom_request_duration(
                    METHOD,
                    "register",
                    conn::elapsed(first),
                    false,
                    None,
                    Some(code),
                )
                .await?;
                tokio::time::sleep(Duration::from_millis(retry_after_ms.unwrap_or(100).max(1)))
                    .await;
                outcome = shared
                    .request(
                        &mut sink,
                        |r| protocol::credentials_frame("register", name, &password, r),
                        run.opts.request_timeout,
                    )
                    .await;
            }
            _ => break,
        }
    }
    match &outcome {
        Ok(Reply::Ok { .. }) => {
            run.record_other("register", conn::elapsed(first));
            user.record_custom_request_duration(
                METHOD,
                "register",
                conn::elapsed(first),
                true,
                None,
                None,
            )
            .await?;
        }
        Ok(Reply::Error { code, .. }) if code == "user_exists" => {}
        Ok(Reply::Error { code, .. }) => return Err(fail(format!("register: {code}"))),
        Err(e) => return Err(fail(format!("register: {e}"))),
    }
    close(&mut sink, reader).await;

    let ws = connect_url(user, run, &run.opts.host).await?;
    let (mut sink, stream) = ws.split();
    let reader = conn::spawn_reader(shared.clone(), stream);
    let reply = request_ok(user, run, shared, &mut sink, "login", |r| {
        protocol::credentials_frame("login", name, &password, r)
    })
    .await?;
    close(&mut sink, reader).await;
    match reply {
        Reply::Ok { token: Some(t), .. } => Ok(t),
        _ => Err(fail("login: ok without token")),
    }
}

/// Closes politely (1000) and stops the reader.
pub(super) async fn close(sink: &mut Sink, reader: JoinHandle<()>) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "load test done".into(),
    };
    // The peer may be gone already; closing is best effort.
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        sink.send(Message::Close(Some(frame))),
    )
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(2), sink.close()).await;
    reader.abort();
}
