//! The slice of PROTOCOL.md the simulated users speak: frames they send, the
//! fields they read from server frames, tokens, and how a send's scheduled
//! instant travels inside its `cid` and `ref`.
//!
//! Send `ref`s are `"s:<scheduled µs>"` and `cid`s are
//! `"<user>.<k>.<scheduled µs>"`, µs counted from the run's epoch (one process,
//! one clock), so whoever reads the ack or the delivery computes latency from
//! the schedule with no shared table.

use serde::Deserialize;
use serde_json::json;
use std::borrow::Cow;

/// A `ref` as the server echoes it: we always send strings, but accept numbers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Ref {
    /// A string ref (ours).
    Text(String),
    /// A numeric ref.
    Num(i64),
}

/// One message inside a `history` reply (only the fields the checker needs).
#[derive(Debug, Clone, Deserialize)]
pub struct HistoryMessage {
    /// Its room.
    #[serde(default)]
    pub room: String,
    /// Its seq.
    pub seq: u64,
    /// Its cid, if the sender gave one.
    #[serde(default)]
    pub cid: Option<String>,
}

/// The fields of any server frame that the load test reads; the rest (bodies,
/// ids, timestamps) are skipped without being allocated.
#[derive(Debug, Deserialize)]
pub struct ServerFrame<'a> {
    /// `ok`, `error`, `message`, `history`, `presence`, `pong`, `goaway`, ...
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    /// Echo of the request's ref.
    #[serde(rename = "ref", default)]
    pub reference: Option<Ref>,
    /// Room of a message, ok or history.
    #[serde(default, borrow, deserialize_with = "borrow_opt")]
    pub room: Option<Cow<'a, str>>,
    /// Seq of a message, or of a join/send ok.
    #[serde(default)]
    pub seq: Option<u64>,
    /// Client id of a message.
    #[serde(default, borrow, deserialize_with = "borrow_opt")]
    pub cid: Option<Cow<'a, str>>,
    /// Error code.
    #[serde(default, borrow, deserialize_with = "borrow_opt")]
    pub code: Option<Cow<'a, str>>,
    /// Error or goaway backoff hint.
    #[serde(default)]
    pub retry_after_ms: Option<u64>,
    /// Messages of a history reply.
    #[serde(default)]
    pub messages: Option<Vec<HistoryMessage>>,
}

/// `Option<Cow<str>>` that borrows when it can (serde's `borrow` alone does
/// not reach through `Option`).
fn borrow_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    #[derive(Deserialize)]
    struct W<'a>(#[serde(borrow)] Cow<'a, str>);
    Option::<W<'de>>::deserialize(d).map(|o| o.map(|w| w.0))
}

impl<'a> ServerFrame<'a> {
    /// Parses one text frame.
    ///
    /// # Errors
    /// When the text is not a JSON object with a string `type`.
    pub fn parse(text: &'a str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The ref as text (numbers formatted), if any.
    pub fn ref_text(&self) -> Option<Cow<'_, str>> {
        match &self.reference {
            Some(Ref::Text(s)) => Some(Cow::Borrowed(s.as_str())),
            Some(Ref::Num(n)) => Some(Cow::Owned(n.to_string())),
            None => None,
        }
    }
}

/// The `ref` of a send scheduled at `sched_us`.
pub fn send_ref(sched_us: u64) -> String {
    format!("s:{sched_us}")
}

/// The scheduled µs inside a send ref, `None` for other refs.
pub fn parse_send_ref(r: &str) -> Option<u64> {
    r.strip_prefix("s:")?.parse().ok()
}

/// The `cid` of send `k` of user `user` scheduled at `sched_us`.
pub fn send_cid(user: usize, k: u64, sched_us: u64) -> String {
    format!("{user}.{k}.{sched_us}")
}

/// The scheduled µs inside a cid of ours, `None` for foreign cids.
pub fn parse_cid(cid: &str) -> Option<u64> {
    let mut parts = cid.split('.');
    let (_user, _k, sched) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    sched.parse().ok()
}

/// A body of `len` bytes of filler (printable ASCII, so JSON needs no escapes).
pub fn body(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|i| char::from(ALPHABET[i % ALPHABET.len()]))
        .collect()
}

/// A `send` frame.
pub fn send_frame(room: &str, body: &str, cid: &str, reference: &str) -> String {
    json!({"type": "send", "room": room, "body": body, "cid": cid, "ref": reference}).to_string()
}

/// A `join` frame.
pub fn join_frame(room: &str, reference: &str) -> String {
    json!({"type": "join", "room": room, "ref": reference}).to_string()
}

/// A `history` frame.
pub fn history_frame(room: &str, after: u64, limit: u32, reference: &str) -> String {
    json!({"type": "history", "room": room, "after": after, "limit": limit, "ref": reference})
        .to_string()
}

/// A `register` or `login` frame with a password.
pub fn credentials_frame(kind: &str, user: &str, password: &str, reference: &str) -> String {
    json!({"type": kind, "user": user, "password": password, "ref": reference}).to_string()
}

#[derive(serde::Serialize)]
struct Claims<'a> {
    sub: &'a str,
    exp: u64,
}

/// An HS256 token for `user`, valid for `ttl_secs`, signed with `secret`.
///
/// # Errors
/// When signing fails (it does not for HS256 with any secret).
pub fn mint_token(
    user: &str,
    secret: &str,
    ttl_secs: u64,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &Claims {
            sub: user,
            exp: now + ttl_secs,
        },
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
}

/// Whether `name` is a valid user or room name (1-64 of `[A-Za-z0-9_.-]`).
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_ref_and_cid_round_trip_the_schedule() {
        assert_eq!(parse_send_ref(&send_ref(123_456)), Some(123_456));
        assert_eq!(parse_send_ref("j:1"), None);
        assert_eq!(parse_cid(&send_cid(7, 3, 99)), Some(99));
        assert_eq!(parse_cid("someone-elses-cid"), None);
        assert_eq!(parse_cid("1.2.3.4"), None);
    }

    #[test]
    fn parses_a_message_without_allocating_its_body() {
        let text = r#"{"type":"message","room":"r1","seq":7,"id":"x","from":"a","body":"hi","ts":1,"cid":"1.2.3"}"#;
        let f = ServerFrame::parse(text).expect("parse");
        assert_eq!(f.kind, "message");
        assert_eq!(f.seq, Some(7));
        assert_eq!(f.cid.as_deref(), Some("1.2.3"));
        assert!(matches!(f.room, Some(Cow::Borrowed("r1"))));
    }

    #[test]
    fn parses_errors_and_history() {
        let e = ServerFrame::parse(
            r#"{"type":"error","ref":"s:5","code":"overloaded","message":"m","retry_after_ms":250}"#,
        )
        .expect("parse");
        assert_eq!(e.code.as_deref(), Some("overloaded"));
        assert_eq!(e.retry_after_ms, Some(250));
        assert_eq!(e.ref_text().as_deref(), Some("s:5"));
        let h = ServerFrame::parse(
            r#"{"type":"history","ref":3,"room":"r","messages":[{"type":"message","room":"r","seq":1,"body":"b"}]}"#,
        )
        .expect("parse");
        assert_eq!(h.ref_text().as_deref(), Some("3"));
        assert_eq!(h.messages.map(|m| m.len()), Some(1));
    }

    #[test]
    fn frames_are_valid_json_with_our_fields() {
        let v: serde_json::Value =
            serde_json::from_str(&send_frame("r", &body(100), "c", "s:1")).expect("json");
        assert_eq!(v["type"], "send");
        assert_eq!(v["body"].as_str().map(str::len), Some(100));
        let v: serde_json::Value =
            serde_json::from_str(&history_frame("r", 4, 1000, "h")).expect("json");
        assert_eq!(v["after"], 4);
    }

    #[test]
    fn tokens_decode_with_the_same_secret() {
        let t = mint_token("alice", "secret", 60).expect("mint");
        let data = jsonwebtoken::decode::<serde_json::Value>(
            &t,
            &jsonwebtoken::DecodingKey::from_secret(b"secret"),
            &jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256),
        )
        .expect("decode");
        assert_eq!(data.claims["sub"], "alice");
    }

    #[test]
    fn names_follow_the_protocol_rule() {
        assert!(valid_name("lt-1a2b.u_3"));
        assert!(!valid_name(""));
        assert!(!valid_name("a b"));
        assert!(!valid_name(&"x".repeat(65)));
    }
}
