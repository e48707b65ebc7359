//! One user's WebSocket: connecting (with retries on 503), the reader task
//! that receives every frame, and request/reply for control frames.
//!
//! The socket is split: the reader task owns the stream and the user's
//! transactions own the sink. What the reader learns goes into [`Shared`]
//! (seq checker, in-flight sends, pending requests) and over a channel of
//! [`Ack`]s that the next goose transaction records.

use crate::hist::lock;
use crate::protocol::{self, ServerFrame};
use crate::seq::SeqChecker;
use crate::state::{RoomState, RunState};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The client WebSocket type.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
/// The write half.
pub type Sink = SplitSink<Ws, Message>;

/// The outcome of one send, passed from the reader to the goose transaction.
#[derive(Debug)]
pub struct Ack {
    /// From the scheduled instant to the reply.
    pub latency: Duration,
    /// `None` for `ok`, else the error code.
    pub error: Option<String>,
}

/// A reply to a control request.
#[derive(Debug)]
pub enum Reply {
    /// `ok` (or `history`): its seq, the history's highest seq and size, a token.
    Ok {
        /// `seq` of a join ok.
        seq: Option<u64>,
        /// Highest seq of a history reply.
        history_high: Option<u64>,
        /// Messages in a history reply.
        history_len: usize,
        /// `token` of a login/register ok.
        token: Option<String>,
    },
    /// `error`.
    Error {
        /// Its code.
        code: String,
        /// Its backoff hint.
        retry_after_ms: Option<u64>,
    },
}

/// Why a request got no usable reply.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// No reply within the request timeout.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The socket failed or closed.
    #[error("connection lost: {0}")]
    Closed(String),
}

/// What one user's reader shares with its transactions; lives as long as the user.
#[derive(Debug)]
pub struct Shared {
    /// The user's index.
    pub idx: usize,
    /// Its room's name.
    pub room: String,
    /// Its room's shared state.
    pub room_state: Arc<RoomState>,
    /// The run.
    pub run: Arc<RunState>,
    /// Seq check of the room, once joined.
    pub checker: Mutex<Option<SeqChecker>>,
    /// Sends without a reply yet: scheduled µs → send index.
    pub inflight: Mutex<BTreeMap<u64, u64>>,
    pending: Mutex<HashMap<String, oneshot::Sender<Reply>>>,
    next_ref: AtomicU64,
    acks: mpsc::UnboundedSender<Ack>,
    /// Set by the reader when the connection ended.
    pub closed: AtomicBool,
    /// With `--honor-retry-after`: no sends before this (µs of the run).
    pub paused_until_us: AtomicU64,
    /// With `--honor-retry-after`: after a refusal, one send probes and the
    /// rest wait for its answer (`PROBE_*`).
    pub probe: AtomicU8,
    /// Signalled when a probe is answered.
    pub probe_answered: tokio::sync::Notify,
}

/// Sending normally.
pub const PROBE_OFF: u8 = 0;
/// The next send is a probe.
pub const PROBE_NEXT: u8 = 1;
/// A probe is out; hold the rest.
pub const PROBE_OUT: u8 = 2;

impl Shared {
    /// Shared state for user `idx` in `room`; returns the ack receiver too.
    pub fn new(
        idx: usize,
        room: String,
        room_state: Arc<RoomState>,
        run: Arc<RunState>,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Ack>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let s = Self {
            idx,
            room,
            room_state,
            run,
            checker: Mutex::new(None),
            inflight: Mutex::new(BTreeMap::new()),
            pending: Mutex::new(HashMap::new()),
            next_ref: AtomicU64::new(1),
            acks: tx,
            closed: AtomicBool::new(false),
            paused_until_us: AtomicU64::new(0),
            probe: AtomicU8::new(PROBE_OFF),
            probe_answered: tokio::sync::Notify::new(),
        };
        (Arc::new(s), rx)
    }

    /// Handles one text frame (the reader's whole job).
    pub fn on_text(&self, text: &str) {
        let Ok(frame) = ServerFrame::parse(text) else {
            self.run.c.bad_frames.fetch_add(1, Ordering::Relaxed);
            return;
        };
        match frame.kind.as_ref() {
            "message" => self.on_message(&frame),
            "ok" => self.on_ok(&frame),
            "error" => self.on_error(&frame),
            "history" => self.on_history(&frame),
            "goaway" => {
                self.run.c.goaways.fetch_add(1, Ordering::Relaxed);
            }
            // presence, pong and frame types added later are ignored.
            _ => {}
        }
    }

    fn on_message(&self, f: &ServerFrame<'_>) {
        let (Some(seq), Some(room)) = (f.seq, f.room.as_deref()) else {
            return;
        };
        if room != self.room {
            return;
        }
        self.run.c.received.fetch_add(1, Ordering::Relaxed);
        let fresh = lock(&self.checker).as_mut().is_some_and(|c| c.on_live(seq));
        if fresh && let Some(sched) = f.cid.as_deref().and_then(protocol::parse_cid) {
            let now = self.run.now_us();
            self.run
                .delivery
                .record(self.idx, now.saturating_sub(sched));
        }
    }

    fn on_ok(&self, f: &ServerFrame<'_>) {
        let Some(r) = f.ref_text() else { return };
        if let Some(sched) = protocol::parse_send_ref(&r) {
            if lock(&self.inflight).remove(&sched).is_none() {
                return; // an ok for a re-sent send that was already answered
            }
            let now = self.run.now_us();
            let lat = now.saturating_sub(sched);
            if self.probe.swap(PROBE_OFF, Ordering::Relaxed) != PROBE_OFF {
                self.probe_answered.notify_one();
            }
            self.run.send_ok.record(self.idx, lat);
            self.run.c.acked.fetch_add(1, Ordering::Relaxed);
            if let Some(seq) = f.seq {
                self.room_state.max_acked.fetch_max(seq, Ordering::AcqRel);
            }
            // The transaction may be gone at the very end; nothing to record then.
            let _ = self.acks.send(Ack {
                latency: Duration::from_micros(lat),
                error: None,
            });
            return;
        }
        self.complete(
            &r,
            Reply::Ok {
                seq: f.seq,
                history_high: None,
                history_len: 0,
                token: None,
            },
        );
    }

    fn on_error(&self, f: &ServerFrame<'_>) {
        let code = f.code.as_deref().unwrap_or("unknown").to_string();
        self.run.count_error(&code, f.retry_after_ms);
        let Some(r) = f.ref_text() else { return };
        if let Some(sched) = protocol::parse_send_ref(&r) {
            if lock(&self.inflight).remove(&sched).is_none() {
                return;
            }
            self.run.c.send_errors.fetch_add(1, Ordering::Relaxed);
            if self.run.opts.honor_retry_after {
                // Refused for load: pause, then probe. Any other error
                // answers a probe as well as an ok would.
                let next = match f.retry_after_ms {
                    Some(ms) => {
                        let until = self.run.now_us().saturating_add(ms.saturating_mul(1000));
                        self.paused_until_us.fetch_max(until, Ordering::Relaxed);
                        PROBE_NEXT
                    }
                    None => PROBE_OFF,
                };
                self.probe.store(next, Ordering::Relaxed);
                self.probe_answered.notify_one();
            }
            let lat = self.run.now_us().saturating_sub(sched);
            // How long a refusal took to arrive, from the send's schedule:
            // the "rejections answered at once" side of overload.
            self.run
                .record_other("send_refused", Duration::from_micros(lat));
            let _ = self.acks.send(Ack {
                latency: Duration::from_micros(lat),
                error: Some(code),
            });
            return;
        }
        self.complete(
            &r,
            Reply::Error {
                code,
                retry_after_ms: f.retry_after_ms,
            },
        );
    }

    fn on_history(&self, f: &ServerFrame<'_>) {
        let msgs = f.messages.as_deref().unwrap_or(&[]);
        let mut high = None;
        {
            let mut checker = lock(&self.checker);
            for m in msgs {
                if !m.room.is_empty() && m.room != self.room {
                    continue;
                }
                high = Some(high.map_or(m.seq, |h: u64| h.max(m.seq)));
                if let Some(c) = checker.as_mut() {
                    c.on_history(m.seq);
                }
            }
        }
        if let Some(r) = f.ref_text() {
            self.complete(
                &r,
                Reply::Ok {
                    seq: None,
                    history_high: high,
                    history_len: msgs.len(),
                    token: None,
                },
            );
        }
    }

    fn complete(&self, r: &str, reply: Reply) {
        if let Some(tx) = lock(&self.pending).remove(r) {
            // The requester may have timed out and left.
            let _ = tx.send(reply);
        }
    }

    /// Sends a control frame built by `frame(ref)` and waits for its reply.
    ///
    /// # Errors
    /// On timeout or a broken socket.
    pub async fn request(
        &self,
        sink: &mut Sink,
        frame: impl FnOnce(&str) -> String,
        timeout: Duration,
    ) -> Result<Reply, RequestError> {
        let r = format!("q:{}", self.next_ref.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(r.clone(), tx);
        let text = frame(&r);
        if let Err(e) = sink.send(Message::Text(text.into())).await {
            lock(&self.pending).remove(&r);
            return Err(RequestError::Closed(e.to_string()));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(RequestError::Closed("reader ended".into())),
            Err(_) => {
                lock(&self.pending).remove(&r);
                Err(RequestError::Timeout(timeout))
            }
        }
    }

    /// Fails every pending request (the connection is gone).
    pub fn fail_pending(&self) {
        lock(&self.pending).clear();
    }
}

/// Login tokens from `login`/`register` oks are parsed separately: they are
/// rare, so the hot `ServerFrame` stays small.
pub fn token_of(text: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct T {
        token: Option<String>,
    }
    serde_json::from_str::<T>(text).ok()?.token
}

/// Spawns the reader of `stream`; it ends when the connection does.
pub fn spawn_reader(shared: Arc<Shared>, mut stream: SplitStream<Ws>) -> JoinHandle<()> {
    shared.closed.store(false, Ordering::Release);
    tokio::spawn(async move {
        while let Some(msg) = stream.next().await {
            match msg {
                Ok(Message::Text(t)) => {
                    if t.contains("\"token\"") {
                        // A login/register reply: complete it with its token.
                        handle_token_reply(&shared, t.as_str());
                    } else {
                        shared.on_text(t.as_str());
                    }
                }
                Ok(Message::Close(frame)) => {
                    if let Some(f) = frame {
                        shared.run.count_close(u16::from(f.code));
                    }
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        shared.closed.store(true, Ordering::Release);
        shared.fail_pending();
    })
}

fn handle_token_reply(shared: &Shared, text: &str) {
    let Ok(frame) = ServerFrame::parse(text) else {
        shared.on_text(text);
        return;
    };
    if frame.kind == "ok"
        && let Some(r) = frame.ref_text()
        && protocol::parse_send_ref(&r).is_none()
    {
        shared.complete(
            &r,
            Reply::Ok {
                seq: frame.seq,
                history_high: None,
                history_len: 0,
                token: token_of(text),
            },
        );
        return;
    }
    shared.on_text(text);
}

/// The outcome of one connection attempt.
#[derive(Debug)]
pub enum ConnectError {
    /// HTTP 503 with the advised wait.
    Refused(Duration),
    /// HTTP 401 or another refusal that retrying will not fix.
    Denied(String),
    /// Anything else (connection refused, reset, timeout...).
    Failed(String),
}

/// One connection attempt to `url`, with Nagle off (small frames, low latency).
///
/// # Errors
/// See [`ConnectError`].
pub async fn connect_once(url: &str, timeout: Duration) -> Result<Ws, ConnectError> {
    // tungstenite's default 128 KiB read buffer per socket is 256 MiB for 2,000
    // users; chat frames are small.
    let config = WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(16 * 1024);
    let attempt = tokio_tungstenite::connect_async_with_config(url, Some(config), true);
    match tokio::time::timeout(timeout, attempt).await {
        Err(_) => Err(ConnectError::Failed(format!(
            "no upgrade within {timeout:?}"
        ))),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tungstenite::Error::Http(resp))) => {
            let status = resp.status().as_u16();
            if status == 503 {
                let secs = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .unwrap_or(1.0);
                Err(ConnectError::Refused(Duration::from_secs_f64(
                    secs.max(0.05),
                )))
            } else {
                Err(ConnectError::Denied(format!("HTTP {status}")))
            }
        }
        Ok(Err(e)) => Err(ConnectError::Failed(e.to_string())),
    }
}

/// `host` with `?token=` (or `&token=`) appended when a token is given.
pub fn url_with_token(host: &str, token: Option<&str>) -> String {
    match token {
        None => host.to_string(),
        Some(t) if host.contains('?') => format!("{host}&token={t}"),
        Some(t) => format!("{host}?token={t}"),
    }
}

/// When `since` is later than now, zero.
pub fn elapsed(since: Instant) -> Duration {
    Instant::now().saturating_duration_since(since)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::{Options, Profile};
    use crate::plan::ProfilePlan;

    fn shared() -> (Arc<Shared>, mpsc::UnboundedReceiver<Ack>) {
        shared_with(Options::new(Profile::Load))
    }

    fn shared_with(opts: Options) -> (Arc<Shared>, mpsc::UnboundedReceiver<Ack>) {
        let plan = ProfilePlan::of(&opts);
        let run = Arc::new(RunState::new(opts, plan, "t".into()));
        let room = run.room(0);
        Shared::new(0, "r0".into(), room, run)
    }

    #[test]
    fn acks_record_latency_and_room_high() {
        let (s, mut rx) = shared();
        lock(&s.inflight).insert(0, 0);
        s.on_text(r#"{"type":"ok","ref":"s:0","room":"r0","seq":9,"id":"x"}"#);
        let ack = rx.try_recv().expect("ack");
        assert!(ack.error.is_none());
        assert_eq!(s.room_state.max_acked.load(Ordering::Relaxed), 9);
        assert_eq!(s.run.c.acked.load(Ordering::Relaxed), 1);
        // A second ok for the same send (a re-send answered twice) is ignored.
        s.on_text(r#"{"type":"ok","ref":"s:0","room":"r0","seq":9,"id":"x"}"#);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn overloaded_send_is_counted_with_its_hint() {
        let (s, mut rx) = shared();
        lock(&s.inflight).insert(5, 0);
        s.on_text(
            r#"{"type":"error","ref":"s:5","code":"overloaded","message":"m","retry_after_ms":40}"#,
        );
        assert_eq!(
            rx.try_recv().expect("ack").error.as_deref(),
            Some("overloaded")
        );
        assert_eq!(lock(&s.run.errors_by_code).get("overloaded"), Some(&1));
        assert_eq!(s.run.others()["retry_after"].len(), 1);
        assert_eq!(s.run.others()["send_refused"].len(), 1);
    }

    #[test]
    fn a_refused_send_pauses_sending_only_when_hints_are_honoured() {
        const REFUSED: &str =
            r#"{"type":"error","ref":"s:5","code":"overloaded","message":"m","retry_after_ms":40}"#;
        let (open_loop, _rx) = shared();
        lock(&open_loop.inflight).insert(5, 0);
        open_loop.on_text(REFUSED);
        assert_eq!(open_loop.paused_until_us.load(Ordering::Relaxed), 0);

        let mut opts = Options::new(Profile::Load);
        opts.honor_retry_after = true;
        let (polite, _rx) = shared_with(opts);
        lock(&polite.inflight).insert(5, 0);
        let before = polite.run.now_us();
        polite.on_text(REFUSED);
        let until = polite.paused_until_us.load(Ordering::Relaxed);
        assert!(until >= before + 40_000, "{until} vs {before}");
        assert!(until <= polite.run.now_us() + 40_000);
        // After the pause one send probes; its ok lets the rest go.
        assert_eq!(polite.probe.load(Ordering::Relaxed), PROBE_NEXT);
        polite.probe.store(PROBE_OUT, Ordering::Relaxed);
        lock(&polite.inflight).insert(6, 1);
        polite.on_text(r#"{"type":"ok","ref":"s:6","room":"r0","seq":1,"id":"x"}"#);
        assert_eq!(polite.probe.load(Ordering::Relaxed), PROBE_OFF);
        assert_eq!(open_loop.probe.load(Ordering::Relaxed), PROBE_OFF);
    }

    #[test]
    fn messages_feed_the_checker_and_delivery_histogram() {
        let (s, _rx) = shared();
        *lock(&s.checker) = Some(SeqChecker::new(0));
        s.on_text(r#"{"type":"message","room":"r0","seq":1,"id":"a","from":"u","body":"b","ts":1,"cid":"1.0.0"}"#);
        s.on_text(r#"{"type":"message","room":"r0","seq":1,"id":"a","from":"u","body":"b","ts":1,"cid":"1.0.0"}"#);
        s.on_text(r#"{"type":"presence","room":"r0","user":"u","event":"join"}"#);
        s.on_text(r#"{"type":"message","room":"other","seq":7}"#);
        let counts = lock(&s.checker)
            .as_ref()
            .map(|c| c.counts())
            .expect("checker");
        assert_eq!(counts.delivered, 1);
        assert_eq!(counts.duplicates, 1);
        let mut h = crate::hist::new_hist();
        s.run.delivery.drain_into(&mut h);
        assert_eq!(h.len(), 1, "duplicates are not timed twice");
    }

    #[test]
    fn token_urls() {
        assert_eq!(url_with_token("ws://h/ws", Some("t")), "ws://h/ws?token=t");
        assert_eq!(
            url_with_token("ws://h/ws?x=1", Some("t")),
            "ws://h/ws?x=1&token=t"
        );
        assert_eq!(url_with_token("ws://h/ws", None), "ws://h/ws");
    }
}
