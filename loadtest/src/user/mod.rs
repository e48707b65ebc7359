//! A simulated chat user as three goose transactions:
//! - `connect` (on_start): open the WebSocket (token, or register + login),
//!   spawn the reader, join the room;
//! - `send` (repeated): send whatever the open-loop timetable says is due,
//!   reconnect and catch up with `history` when the connection was dropped,
//!   and record the acks the reader collected as goose custom requests;
//! - `disconnect` (on_stop): stop sending, wait for acks and deliveries, run
//!   the final seq check, close.
//!
//! Custom requests appear in goose's reports as `WS connect`, `WS register`,
//! `WS login`, `WS join`, `WS send`, `WS history` and `WS reconnect`.

mod admit;

use crate::conn::{self, Ack, Reply, Shared, Sink};
use crate::hist::lock;
use crate::options::Request;
use crate::protocol;
use crate::schedule::{Schedule, phase_for};
use crate::seq::SeqChecker;
use crate::state::RunState;
use admit::{close, connect_user, join, password_login, request_ok};
use futures_util::{SinkExt, StreamExt};
use goose::prelude::*;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// The goose method label of every custom request.
const METHOD: &str = "WS";
/// The longest a `send` transaction sleeps, so goose's stop is seen quickly.
const MAX_TICK: Duration = Duration::from_millis(500);

/// One user's connection and timetable, held in goose session data.
struct Session {
    shared: Arc<Shared>,
    name: String,
    sink: Sink,
    reader: JoinHandle<()>,
    acks: mpsc::UnboundedReceiver<Ack>,
    schedule: Option<Schedule>,
    token: Option<String>,
    dropped: bool,
    sending: bool,
}

/// What goose stores per user (`Clone + Send + Sync` as goose requires).
#[derive(Clone)]
struct Handle(Arc<tokio::sync::Mutex<Session>>);

/// Builds the goose scenario of one run.
///
/// # Errors
/// When goose refuses the scenario.
pub fn scenario(run: &Arc<RunState>) -> Result<Scenario, GooseError> {
    let r = run.clone();
    let start: TransactionFunction = Arc::new(move |user| {
        let run = r.clone();
        Box::pin(async move { on_start(user, run).await })
    });
    let r = run.clone();
    let tick: TransactionFunction = Arc::new(move |user| {
        let run = r.clone();
        Box::pin(async move { on_tick(user, run).await })
    });
    let r = run.clone();
    let stop: TransactionFunction = Arc::new(move |user| {
        let run = r.clone();
        Box::pin(async move { on_stop(user, run).await })
    });
    Ok(scenario!("ChatUser")
        .register_transaction(Transaction::new(start).set_name("connect").set_on_start())
        .register_transaction(Transaction::new(tick).set_name("send"))
        .register_transaction(Transaction::new(stop).set_name("disconnect").set_on_stop()))
}

fn fail(msg: impl Into<String>) -> Box<TransactionError> {
    Box::new(TransactionError::Custom(msg.into()))
}

async fn on_start(user: &mut GooseUser, run: Arc<RunState>) -> TransactionResult {
    let idx = run.next_user();
    match start_session(user, &run, idx).await {
        Ok(session) => {
            user.set_session_data(Handle(Arc::new(tokio::sync::Mutex::new(session))));
            run.senders_active.fetch_add(1, Ordering::AcqRel);
            run.user_ready();
            Ok(())
        }
        Err(e) => {
            run.c.failed_users.fetch_add(1, Ordering::Relaxed);
            run.user_ready();
            Err(e)
        }
    }
}

async fn start_session(
    user: &mut GooseUser,
    run: &Arc<RunState>,
    idx: usize,
) -> Result<Session, Box<TransactionError>> {
    let name = format!("{}u{idx}", run.prefix);
    let room_idx = run.room_of(idx);
    let room = format!("{}r{room_idx}", run.prefix);
    let (shared, acks) = Shared::new(idx, room, run.room(room_idx), run.clone());
    let token = if run.plan.password_login {
        Some(password_login(user, run, &shared, &name).await?)
    } else {
        None
    };
    let ws = connect_user(user, run, &name, token.as_deref()).await?;
    let (mut sink, stream) = ws.split();
    let reader = conn::spawn_reader(shared.clone(), stream);
    let join_seq = join(user, run, &shared, &mut sink).await?;
    *lock(&shared.checker) = Some(SeqChecker::new(join_seq));
    Ok(Session {
        shared,
        name,
        sink,
        reader,
        acks,
        schedule: None,
        token,
        dropped: false,
        sending: true,
    })
}

fn session(user: &GooseUser) -> Option<Handle> {
    user.get_session_data::<Handle>().cloned()
}

async fn on_tick(user: &mut GooseUser, run: Arc<RunState>) -> TransactionResult {
    let Some(handle) = session(user) else {
        // This user never got in; idle until goose stops it.
        tokio::time::sleep(MAX_TICK).await;
        return Ok(());
    };
    let mut s = handle.0.lock().await;
    let Some(t0) = run.wait_started(MAX_TICK).await else {
        return Ok(());
    };
    if s.schedule.is_none() {
        let phase = phase_for(s.shared.idx, run.opts.seed);
        s.schedule = Some(Schedule::new(run.rates.clone(), t0, phase));
    }
    if let Some(drop_at) = run.plan.drop_at
        && !s.dropped
        && Instant::now() >= t0 + drop_at
    {
        s.dropped = true;
        reconnect(user, &run, &mut s).await?;
    }
    recover_if_closed(user, &run, &mut s).await?;
    let paused =
        run.epoch + Duration::from_micros(s.shared.paused_until_us.load(Ordering::Relaxed));
    let next = s
        .schedule
        .as_ref()
        .and_then(Schedule::next_due)
        .map(|due| due.max(paused));
    if s.shared.probe.load(Ordering::Relaxed) == conn::PROBE_OUT {
        // A probe is out: the rest wait for its answer, not for the clock.
        let _ = tokio::time::timeout(MAX_TICK, s.shared.probe_answered.notified()).await;
    } else {
        match next {
            Some(due) => tokio::time::sleep_until(due.min(Instant::now() + MAX_TICK)).await,
            None => tokio::time::sleep(MAX_TICK).await,
        }
    }
    send_due(&run, &mut s).await;
    record_acks(user, &mut s, run.opts.request).await
}

/// Writes every send that is due. A send that cannot be written stays in flight
/// and is re-sent (same cid) after the reconnect.
async fn send_due(run: &RunState, s: &mut Session) {
    if !s.sending {
        return;
    }
    let now = Instant::now();
    if run.us_of(now) < s.shared.paused_until_us.load(Ordering::Relaxed) {
        return;
    }
    let probe = s.shared.probe.load(Ordering::Relaxed);
    if probe == conn::PROBE_OUT {
        return;
    }
    let Session {
        schedule,
        shared,
        sink,
        name,
        ..
    } = s;
    let Some(schedule) = schedule.as_mut() else {
        return;
    };
    while let Some((k, at)) = schedule.pop_due(now) {
        let sched = run.us_of(at);
        lock(&shared.inflight).insert(sched, k);
        run.c.sent.fetch_add(1, Ordering::Relaxed);
        let frame = scheduled_frame(run, shared, name, k, sched);
        // feed + one flush per batch: due sends of a late tick go out together.
        if sink.feed(Message::Text(frame.into())).await.is_err() {
            run.c.write_failures.fetch_add(1, Ordering::Relaxed);
        }
        if probe == conn::PROBE_NEXT {
            // After a refusal one send goes first; the rest follow its ok.
            shared.probe.store(conn::PROBE_OUT, Ordering::Relaxed);
            break;
        }
    }
    if sink.flush().await.is_err() {
        run.c.write_failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// Scheduled request `k` of a user, due at `sched` (µs of the run): its
/// `ref` carries the schedule, so the reply's latency counts from it, and a
/// send's `cid` makes a re-send after a reconnect safe.
fn scheduled_frame(run: &RunState, shared: &Shared, name: &str, k: u64, sched: u64) -> String {
    let reference = protocol::send_ref(sched);
    match run.opts.request {
        Request::Send => protocol::send_frame(
            &shared.room,
            &run.body,
            &protocol::send_cid(shared.idx, k, sched),
            &reference,
        ),
        Request::Login => {
            protocol::credentials_frame("login", name, &run.opts.password, &reference)
        }
    }
}

async fn record_acks(user: &mut GooseUser, s: &mut Session, request: Request) -> TransactionResult {
    while let Ok(ack) = s.acks.try_recv() {
        user.record_custom_request_duration(
            METHOD,
            request.goose_name(),
            ack.latency,
            ack.error.is_none(),
            None,
            ack.error.as_deref(),
        )
        .await?;
    }
    Ok(())
}

/// When the server has closed the connection (1013, 1012, a drop), counts
/// it and reconnects, catching up with `history` as a client would.
/// Returns whether it did.
async fn recover_if_closed(
    user: &mut GooseUser,
    run: &RunState,
    s: &mut Session,
) -> Result<bool, Box<TransactionError>> {
    if !s.shared.closed.load(Ordering::Acquire) {
        return Ok(false);
    }
    run.c.server_closes.fetch_add(1, Ordering::Relaxed);
    reconnect(user, run, s).await?;
    Ok(true)
}

/// Drops the connection (without a close frame), reconnects, re-joins, reads
/// what was missed with `history`, and re-sends unanswered sends with their
/// original cid. Records `WS reconnect` (drop to caught up) and `WS history`.
async fn reconnect(user: &mut GooseUser, run: &RunState, s: &mut Session) -> TransactionResult {
    let started = Instant::now();
    run.c.reconnects.fetch_add(1, Ordering::Relaxed);
    s.reader.abort();
    s.shared.fail_pending();
    let from = lock(&s.shared.checker)
        .as_ref()
        .map_or(0, SeqChecker::last_seen);

    let ws = connect_user(user, run, &s.name, s.token.as_deref()).await?;
    let (sink, stream) = ws.split();
    // The old sink is dropped here: an abrupt close, as a lost network would be.
    s.sink = sink;
    s.reader = conn::spawn_reader(s.shared.clone(), stream);
    let join_seq = join(user, run, &s.shared, &mut s.sink).await?;
    if let Some(c) = lock(&s.shared.checker).as_mut() {
        c.on_rejoin(join_seq);
    }
    let mut after = from;
    while after < join_seq {
        let room = s.shared.room.clone();
        let reply = request_ok(user, run, &s.shared, &mut s.sink, "history", |r| {
            protocol::history_frame(&room, after, 1000, r)
        })
        .await?;
        match reply {
            Reply::Ok {
                history_high: Some(high),
                history_len,
                ..
            } if history_len > 0 && high > after => after = high,
            _ => break,
        }
    }
    resend_inflight(run, s).await;
    let took = conn::elapsed(started);
    run.record_other("reconnect", took);
    user.record_custom_request_duration(METHOD, "reconnect", took, true, None, None)
        .await
}

async fn resend_inflight(run: &RunState, s: &mut Session) {
    let pending: Vec<(u64, u64)> = lock(&s.shared.inflight)
        .iter()
        .map(|(a, b)| (*a, *b))
        .collect();
    for (sched, k) in pending {
        run.c.resent.fetch_add(1, Ordering::Relaxed);
        let frame = scheduled_frame(run, &s.shared, &s.name, k, sched);
        if s.sink.feed(Message::Text(frame.into())).await.is_err() {
            run.c.write_failures.fetch_add(1, Ordering::Relaxed);
        }
    }
    // A failure shows up as a closed connection on the next tick.
    let _ = s.sink.flush().await;
}

async fn on_stop(user: &mut GooseUser, run: Arc<RunState>) -> TransactionResult {
    let Some(handle) = session(user) else {
        return Ok(());
    };
    let mut s = handle.0.lock().await;
    s.sending = false;
    let drain = run.opts.drain_timeout;
    let deadline = Instant::now() + drain;
    while !lock(&s.shared.inflight).is_empty() && Instant::now() < deadline {
        // Lost at the very end: reconnect so the sends are answered and checked.
        if recover_if_closed(user, &run, &mut s).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    record_acks(user, &mut s, run.opts.request).await?;
    let unanswered = lock(&s.shared.inflight).len() as u64;
    run.unanswered.fetch_add(unanswered, Ordering::Relaxed);
    run.senders_active.fetch_sub(1, Ordering::AcqRel);

    // Every sender of the run is done (or the drain time is up): now every
    // acknowledged message must reach this receiver.
    let deadline = Instant::now() + drain;
    while run.senders_active.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = Instant::now() + drain;
    loop {
        let high = s.shared.room_state.max_acked.load(Ordering::Acquire);
        let seen = lock(&s.shared.checker)
            .as_ref()
            .map_or(high, SeqChecker::last_seen);
        if seen >= high || Instant::now() >= deadline {
            break;
        }
        // Closed at the very end (e.g. 1013): catch up as a client would,
        // rather than count what the server still holds for it as lost.
        match recover_if_closed(user, &run, &mut s).await {
            Ok(true) => continue,
            Ok(false) => {}
            Err(_) => break,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let high = s.shared.room_state.max_acked.load(Ordering::Acquire);
    if let Some(c) = lock(&s.shared.checker).as_mut() {
        run.add_seq(c.finish(high));
    }
    let Session { sink, reader, .. } = &mut *s;
    let reader = std::mem::replace(reader, tokio::spawn(async {}));
    close(sink, reader).await;
    Ok(())
}
