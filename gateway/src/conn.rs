//! The connection task: one per WebSocket, owning its socket, session and
//! outbox, ending with a close code from PROTOCOL.md.
//!
//! One task does both reading and writing: a second task per connection
//! would double the idle memory that is the gateway's main cost.
//!
//! For the same reason the task's future is kept small. An `async fn` is as
//! big as its largest await point, and an idle connection waits in `run`'s
//! `select!`; everything awaited only while busy (request handling, sends,
//! batched writes, login, close) is boxed, so it costs heap only while it
//! runs. docs/BENCHMARKS.md has the measurements.

use std::{
    future::poll_fn,
    panic::AssertUnwindSafe,
    pin::{Pin, pin},
    sync::Arc,
    time::Duration,
};

use tokio_tungstenite::tungstenite::{
    Message, Utf8Bytes,
    error::{CapacityError, Error as WsError},
    protocol::{
        CloseFrame,
        frame::{
            Frame,
            coding::{Data as OpData, OpCode},
        },
    },
};

use crate::coalesce::Coalesce;

/// The socket a connection task owns: tungstenite over the coalescing writer
/// over the upgraded HTTP connection.
pub type WebSocket =
    tokio_tungstenite::WebSocketStream<Coalesce<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>>;
use bytes::Bytes;
use dialtone_proto::{
    CloseCode, Name,
    client::{self},
    codes::Failure,
    server,
};
use dialtone_store::bus::Deliver;
use futures_util::{FutureExt, SinkExt, StreamExt, future::BoxFuture};
use tokio::time::{Instant, Sleep, sleep, timeout};

use crate::{
    drain::{ConnGuard, Phase},
    http::Gateway,
    lag::DeliveryLag,
    outbox::{Outbox, Pending},
    quiet::Quiet,
    session::{Reply, Session, error_reply},
    telemetry::{self, hot},
};

/// What the connection's one timer is for.
enum Timer {
    /// Not logged in yet: close with 1008 when it fires.
    Login,
    /// Held unread after `overloaded` to a send: read again when it fires.
    Hold,
}

/// How a connection ends.
enum End {
    /// Send this close code, then drop.
    Close(u16, &'static str),
    /// The peer closed or the socket failed: nothing more to send.
    Gone,
}

/// A text message of `frame`, which is JSON from serde_json, hence UTF-8.
/// Sent as a raw frame: `Message::Text` would check the UTF-8 of every copy,
/// once per member a message goes to (2.4 % of a starved node's time at 10x
/// its send capacity, docs/OVERLOAD.md); the bytes on the wire are the same.
fn text(frame: Bytes) -> Message {
    Message::Frame(Frame::message(frame, OpCode::Data(OpData::Text), true))
}

/// tungstenite reports an oversized message as a capacity error and never
/// sends 1009 itself (CRATES.md): the gateway does.
fn is_too_big(e: &WsError) -> bool {
    matches!(e, WsError::Capacity(CapacityError::MessageTooLong { .. }))
}

/// Runs one upgraded connection to its end. `user` is set when a valid
/// token came with the upgrade.
///
/// Not an `async fn`: that keeps its arguments twice in the future (as
/// captured and as locals, 368 bytes for the socket alone); the block below
/// uses the captures, and `run` is awaited without an intermediate binding
/// (a bound future is stored twice as well).
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn's future is 400 bytes bigger"
)]
pub fn serve(
    mut ws: WebSocket,
    mut quiet: Quiet,
    gw: Arc<Gateway>,
    user: Option<Name>,
    guard: ConnGuard,
) -> impl Future<Output = ()> + Send {
    async move {
        let outbox = Arc::new(Outbox::new(gw.cfg.outbox_frames));
        let deliver: Arc<dyn Deliver> = outbox.clone();
        let mut session = Session::new(gw.next_conn_id(), None, gw.cfg.max_body_bytes);
        if let Some(user) = user
            && let Err(f) = Box::pin(session.adopt(user, gw.bus.as_ref(), &deliver)).await
        {
            let _ = within(gw.cfg.write_timeout, ws.send(text(error_reply(None, &f)))).await;
            finish(
                &mut ws,
                CloseCode::INTERNAL,
                "login failed",
                gw.cfg.write_timeout,
            )
            .await;
            return;
        }
        let end = run(&mut ws, &mut quiet, &mut session, &gw, &outbox, &deliver).await;
        if let Some(user) = session.user() {
            gw.bus
                .detach(session.conn(), user, session.rooms().to_vec());
        }
        if let End::Close(code, reason) = end {
            // A connection closed while held (a drain, a slow consumer)
            // must hear the peer's close echo, which is a few bytes.
            let _ = quiet.release();
            finish(&mut ws, code, reason, gw.cfg.write_timeout).await;
        }
        drop(guard);
    }
}

/// Runs one socket operation (a send, a feed, a flush), failed after
/// `limit`: the peer may have stopped reading. Boxed: see the module docs.
fn within<'a>(
    limit: Duration,
    op: impl Future<Output = Result<(), WsError>> + Send + 'a,
) -> BoxFuture<'a, Result<(), ()>> {
    Box::pin(async move {
        match timeout(limit, op).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        }
    })
}

/// Queues one frame for the next write, failed after `limit` if it has to
/// wait for the socket. Almost every feed only copies into the buffer: that
/// one is not timed, as a timer per reply was a tenth of what a refusal cost.
async fn feed(ws: &mut WebSocket, msg: Message, limit: Duration) -> Result<(), ()> {
    let ready = match poll_fn(|cx| ws.poll_ready_unpin(cx)).now_or_never() {
        Some(ready) => ready.map_err(drop),
        None => within(limit, poll_fn(|cx| ws.poll_ready_unpin(cx))).await,
    };
    ready.and_then(|()| ws.start_send_unpin(msg).map_err(drop))
}

/// Most frames one wake-up answers before it writes: enough to batch a
/// pipelined burst, few enough that deliveries, keepalive and drain never
/// wait behind a client that sends without pause.
const READ_BATCH: usize = 32;

/// Refusals fed to the socket but not yet written, with the instant their
/// frame arrived and whether they queued first: "frame in to refusal
/// written" at the door is the node's share of the "rejections answered at
/// once" promise (docs/OVERLOAD.md); after a wait it is bounded by `max_wait`.
#[derive(Default)]
struct Refusals(Vec<(&'static str, bool, Instant)>);

impl Refusals {
    fn push(&mut self, kind: &'static str, waited: bool, received: Instant) {
        self.0.push((kind, waited, received));
    }

    /// Some refusal is fed and not yet written.
    fn pending(&self) -> bool {
        !self.0.is_empty()
    }

    /// Everything fed is written: time the refusals among it.
    fn written(&mut self) {
        let now = Instant::now();
        for (kind, waited, received) in self.0.drain(..) {
            hot().refused(kind, waited, now.saturating_duration_since(received));
        }
    }
}

/// How long to wait for the peer to answer our close frame; a client that
/// stopped reading must not hold a drain or a task for long.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Sends the close frame (bounded by `limit`: the socket may be full) and
/// waits briefly for the peer's echo. Boxed (see the module docs).
fn finish<'a>(
    ws: &'a mut WebSocket,
    code: u16,
    reason: &'static str,
    limit: Duration,
) -> BoxFuture<'a, ()> {
    Box::pin(finish_inner(ws, code, reason, limit))
}

async fn finish_inner(ws: &mut WebSocket, code: u16, reason: &'static str, limit: Duration) {
    telemetry::close(code);
    let frame = CloseFrame {
        code: code.into(),
        reason: Utf8Bytes::from_static(reason),
    };
    if let Ok(Ok(())) = timeout(limit, ws.send(Message::Close(Some(frame)))).await {
        let _ = timeout(CLOSE_LINGER, async {
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
    }
}

async fn run(
    ws: &mut WebSocket,
    quiet: &mut Quiet,
    session: &mut Session,
    gw: &Gateway,
    outbox: &Outbox,
    deliver: &Arc<dyn Deliver>,
) -> End {
    let mut phase = gw.drain.subscribe();
    let mut ping = gw.keepalive.subscribe();
    // Anything heard from the peer since the last keepalive tick.
    let mut heard = true;
    // The login deadline, or the end of a hold. One timer, boxed: an idle
    // logged-in connection (the common case) pays for none, and each
    // select! branch makes every connection's task bigger.
    let mut timer: Option<(Timer, Pin<Box<Sleep>>)> = session
        .user()
        .is_none()
        .then(|| (Timer::Login, Box::pin(sleep(gw.cfg.login_timeout))));
    if *phase.borrow_and_update() != Phase::Running {
        return End::Close(CloseCode::RESTART, "node draining");
    }
    // Refusals fed but not yet written: timed once they are.
    let mut refusals = Refusals::default();
    // Batches cut at READ_BATCH since the last hold (see CATCH_UP).
    let mut catch_up = 0;
    loop {
        if outbox.overflowed() {
            return End::Close(
                CloseCode::TRY_AGAIN_LATER,
                "slow consumer: catch up with history",
            );
        }
        if !outbox.is_empty() {
            if let Err(end) = flush(ws, outbox, &gw.delivery_lag, gw.cfg.write_timeout).await {
                return end;
            }
            refusals.written();
            continue;
        }
        if session.user().is_some() && matches!(timer, Some((Timer::Login, _))) {
            timer = None;
        }
        let held = matches!(timer, Some((Timer::Hold, _)));
        tokio::select! {
            biased;
            changed = phase.changed() => {
                let now = *phase.borrow_and_update();
                if changed.is_err() || now == Phase::Close {
                    return End::Close(CloseCode::RESTART, "node restarting");
                }
                if now == Phase::GoAway {
                    let retry = u64::try_from(gw.cfg.drain_retry_after.as_millis()).unwrap_or(u64::MAX);
                    hot().frame_out("goaway");
                    if within(gw.cfg.write_timeout, ws.send(text(server::goaway("node draining", retry)))).await.is_err() {
                        return End::Gone;
                    }
                }
            }
            () = outbox.wait() => {}
            Ok(()) = ping.changed() => {
                // A held connection is not read, so silence proves nothing.
                if !heard && !held {
                    return End::Gone;
                }
                heard = false;
                if within(gw.cfg.write_timeout, ws.send(Message::Ping(Bytes::new()))).await.is_err() {
                    return End::Gone;
                }
            }
            () = async { timer.as_mut().expect("guarded").1.as_mut().await }, if timer.is_some() => {
                match timer.take() {
                    Some((Timer::Login, _)) => return End::Close(CloseCode::POLICY, "login timeout"),
                    Some((Timer::Hold, _)) => {
                        if let Err(e) = quiet.release() {
                            // Its frames might never wake the task again.
                            tracing::warn!(conn = session.conn(), error = %e, "a held socket could not be released; dropped");
                            return End::Gone;
                        }
                    }
                    None => {}
                }
            }
            msg = ws.next(), if !held => {
                heard = true;
                match answer(ws, session, gw, deliver, outbox, &mut refusals, msg).await {
                    Ok(Answered { hold_for, cut }) => {
                        catch_up = if cut { catch_up + 1 } else { 0 };
                        let catching_up = cut && catch_up < CATCH_UP;
                        timer = hold(gw, if catching_up { Duration::ZERO } else { hold_for });
                        if timer.is_some() {
                            catch_up = 0;
                            quiet.hold();
                        }
                    }
                    Err(end) => return end,
                }
            }
        }
    }
}

/// The hold that follows a batch whose `overloaded` sends advised waiting
/// `hold_for` (none if that is zero or holds are off).
fn hold(gw: &Gateway, hold_for: Duration) -> Option<(Timer, Pin<Box<Sleep>>)> {
    (!hold_for.is_zero() && !gw.cfg.max_hold.is_zero())
        .then(|| (Timer::Hold, Box::pin(sleep(hold_for.min(gw.cfg.max_hold)))))
}

/// A frame as the socket yields it.
type Incoming = Option<Result<Message, WsError>>;

/// What a batch of answers leaves the connection to do.
struct Answered {
    /// How long to leave the connection unread after an `overloaded` send.
    hold_for: Duration,
    /// Cut at [`READ_BATCH`]: more frames may be waiting.
    cut: bool,
}

/// Batches read one after another, each cut at [`READ_BATCH`], before a
/// hold starts anyway. A batch cut short leaves frames the client sent
/// before it heard of the hold; holding at once made them wait a whole
/// hold more (and those past the next 32 another). 256 frames is more than
/// the longest hold gathers from a client at 10 frames/s (5 s, 50 frames),
/// and a client that floods is still held.
const CATCH_UP: usize = 8;

/// Answers `first` and the frames already received after it (up to
/// [`READ_BATCH`]), and writes the replies unless they can wait for the
/// deliveries queued (the top of `run`'s loop writes both). Boxed (see the
/// module docs).
fn answer<'a>(
    ws: &'a mut WebSocket,
    session: &'a mut Session,
    gw: &'a Gateway,
    deliver: &'a Arc<dyn Deliver>,
    outbox: &'a Outbox,
    refusals: &'a mut Refusals,
    first: Incoming,
) -> BoxFuture<'a, Result<Answered, End>> {
    Box::pin(async move {
        let mut msg = first;
        let mut answered = 0;
        let mut hold_for = Duration::ZERO;
        // When the frames in hand were read: one clock read per batch, and
        // again after a frame that waited.
        let mut received = Instant::now();
        loop {
            let read_at = received;
            let mut waited = false;
            let reply = match msg {
                None => return Err(End::Gone),
                Some(Err(e)) if is_too_big(&e) => {
                    return Err(End::Close(CloseCode::TOO_BIG, "message too big"));
                }
                Some(Err(_)) => return Err(End::Gone),
                Some(Ok(Message::Text(t))) => {
                    // Not boxed: this future lives in `answer`'s box, so a
                    // refused frame costs no allocation of its own here.
                    let mut handling = pin!(on_text(session, t.as_str(), read_at, gw, deliver));
                    match handling.as_mut().now_or_never() {
                        Some(reply) => Some(reply),
                        None => {
                            // This one waits (a queue, a hash, the store):
                            // the replies before it go first.
                            if answered > 0 {
                                within(gw.cfg.write_timeout, ws.flush())
                                    .await
                                    .map_err(|()| End::Gone)?;
                                refusals.written();
                            }
                            waited = true;
                            let reply = handling.await;
                            received = Instant::now();
                            Some(reply)
                        }
                    }
                }
                Some(Ok(Message::Binary(_))) => Some(Reply::from(error_reply(
                    None,
                    &Failure::bad_request("frames are JSON text messages, not binary"),
                ))),
                Some(Ok(Message::Close(_))) => return Err(End::Gone),
                // tungstenite answers pings itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => None,
            };
            if let Some(reply) = reply {
                feed(ws, text(reply.frame), gw.cfg.write_timeout)
                    .await
                    .map_err(|()| End::Gone)?;
                if let Some(kind) = reply.refused {
                    refusals.push(kind, waited, read_at);
                }
                hold_for = hold_for.max(reply.hold.unwrap_or_default());
            }
            answered += 1;
            if answered == READ_BATCH {
                break;
            }
            // Frames the client pipelined are already read: answer them in
            // the same write. Under overload a write per reply was most of
            // what a refusal cost.
            match ws.next().now_or_never() {
                Some(next) => msg = next,
                None => break,
            }
        }
        // Other replies leave with the deliveries waiting, in one write.
        // Refusals leave now: behind a batch of deliveries they missed their
        // 1 ms whenever the node lost the CPU before the batch was out
        // (docs/OVERLOAD.md). Asked first: it takes no lock.
        if refusals.pending() || outbox.is_empty() {
            within(gw.cfg.write_timeout, ws.flush())
                .await
                .map_err(|()| End::Gone)?;
            refusals.written();
        }
        Ok(Answered {
            hold_for,
            cut: answered == READ_BATCH,
        })
    })
}

/// Handles a text frame; a panic in the session logic answers `internal`
/// for this request only, and the connection carries on.
async fn on_text(
    session: &mut Session,
    text: &str,
    read_at: Instant,
    gw: &Gateway,
    deliver: &Arc<dyn Deliver>,
) -> Reply {
    if let Some(refused) = session.refuse_standing(text, read_at) {
        return refused;
    }
    let frame = client::parse(text);
    let r#ref = frame.r#ref.clone();
    let handled = AssertUnwindSafe(async {
        if gw.cfg.fault_injection
            && let Some(user) = session.user()
        {
            gw.faults.check(&format!("session.{user}"));
        }
        session
            .handle(frame, gw.bus.as_ref(), &gw.regulator, deliver)
            .await
    })
    .catch_unwind()
    .await;
    handled.unwrap_or_else(|_| {
        tracing::error!(
            conn = session.conn(),
            "session logic panicked; answered internal"
        );
        Reply::from(error_reply(r#ref.as_ref(), &Failure::internal()))
    })
}

/// Writes everything queued in one batch. While the socket is blocked, an
/// overflow or a stall longer than `limit` ends the connection as a slow consumer.
/// Boxed (see the module docs); the batch is dropped at the end, so an idle
/// connection keeps no queue buffer.
fn flush<'a>(
    ws: &'a mut WebSocket,
    outbox: &'a Outbox,
    lag: &'a DeliveryLag,
    limit: Duration,
) -> BoxFuture<'a, Result<(), End>> {
    Box::pin(flush_inner(ws, outbox, lag, limit))
}

/// Bytes a server frame of `payload` bytes takes on the wire: the payload
/// and a 2, 4 or 10 byte header (server frames are not masked, RFC 6455 5.2).
fn framed_len(payload: usize) -> usize {
    payload
        + match payload {
            0..126 => 2,
            126..65_536 => 4,
            _ => 10,
        }
}

async fn flush_inner(
    ws: &mut WebSocket,
    outbox: &Outbox,
    lag: &DeliveryLag,
    limit: Duration,
) -> Result<(), End> {
    let Pending {
        frames: mut batch,
        since,
    } = outbox.take();
    ws.get_mut()
        .reserve(batch.iter().map(|f| framed_len(f.len())).sum());
    let write = async {
        while let Some(frame) = batch.pop_front() {
            ws.feed(text(frame)).await?;
        }
        ws.flush().await?;
        if let Some(since) = since {
            lag.record(since.elapsed());
        }
        Ok::<(), WsError>(())
    };
    // Frames piling up while this write is blocked: the client is not
    // reading. (Frames piling up while the task was late are not its
    // fault; the outbox's limit bounds those.)
    let overflow = async {
        loop {
            outbox.wait().await;
            if outbox.overflowed() || outbox.backed_up() {
                return;
            }
        }
    };
    let slow = End::Close(
        CloseCode::TRY_AGAIN_LATER,
        "slow consumer: catch up with history",
    );
    tokio::select! {
        r = write => r.map_err(|_| End::Gone),
        () = overflow => Err(slow),
        () = sleep(limit) => Err(slow),
    }
}

#[cfg(test)]
mod tests {
    use tokio_tungstenite::tungstenite::protocol::frame::{
        Frame,
        coding::{Data, OpCode},
    };

    use super::framed_len;

    #[test]
    fn framed_len_is_what_tungstenite_puts_on_the_wire() {
        for n in [0, 1, 125, 126, 200, 65_535, 65_536, 70_000] {
            let frame = Frame::message(vec![b'x'; n], OpCode::Data(Data::Text), true);
            assert_eq!(framed_len(n), frame.len(), "payload of {n} bytes");
        }
    }
}
