//! Server frames, encoded once into [`Bytes`] so that a message fanned out to
//! thousands of connections is serialised a single time and shared.

use bytes::Bytes;
use serde::Serialize;

use crate::{client::Ref, codes::Failure};

fn encode<T: Serialize>(frame: &T) -> Bytes {
    // Room for a typical reply (an `error` with its message is ~190 bytes):
    // growing from empty reallocated five times per refusal.
    let mut out = Vec::with_capacity(256);
    // Serialising these plain structs cannot fail: no maps with non-string
    // keys, no custom Serialize impls that error.
    match serde_json::to_writer(&mut out, frame) {
        Ok(()) => Bytes::from(out),
        Err(_) => Bytes::new(),
    }
}

#[derive(Serialize)]
struct Reply<'a, T> {
    #[serde(rename = "type")]
    ty: &'static str,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    r#ref: Option<&'a Ref>,
    #[serde(flatten)]
    fields: T,
}

/// `ok` echoing `ref` with the fields of the request's row.
pub fn ok<T: Serialize>(r#ref: Option<&Ref>, fields: T) -> Bytes {
    encode(&Reply {
        ty: "ok",
        r#ref,
        fields,
    })
}

#[derive(Serialize)]
struct ErrorFields<'a> {
    code: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
}

/// `error` echoing `ref` (when the request had one).
pub fn error(r#ref: Option<&Ref>, failure: &Failure) -> Bytes {
    encode(&Reply {
        ty: "error",
        r#ref,
        fields: ErrorFields {
            code: failure.code.as_str(),
            message: &failure.message,
            retry_after_ms: failure.retry_after_ms,
        },
    })
}

#[derive(Serialize)]
struct Empty {}

pub fn pong(r#ref: Option<&Ref>) -> Bytes {
    encode(&Reply {
        ty: "pong",
        r#ref,
        fields: Empty {},
    })
}

#[derive(Serialize)]
struct GoAway<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    reason: &'a str,
    retry_after_ms: u64,
}

pub fn goaway(reason: &str, retry_after_ms: u64) -> Bytes {
    encode(&GoAway {
        ty: "goaway",
        reason,
        retry_after_ms,
    })
}

#[derive(Serialize)]
struct Presence<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    room: &'a str,
    user: &'a str,
    event: &'static str,
}

/// A presence event: `join` when a user's first connection joins a room,
/// `leave` when their last one leaves.
pub fn presence(room: &str, user: &str, joined: bool) -> Bytes {
    encode(&Presence {
        ty: "presence",
        room,
        user,
        event: if joined { "join" } else { "leave" },
    })
}

/// A stored chat message as it goes on the wire.
#[derive(Serialize, Debug, Clone)]
pub struct Message<'a> {
    pub room: &'a str,
    pub seq: u64,
    pub id: &'a str,
    pub from: &'a str,
    pub body: &'a str,
    /// Server time, unix milliseconds.
    pub ts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cid: Option<&'a Ref>,
}

#[derive(Serialize)]
struct Tagged<'a, T> {
    #[serde(rename = "type")]
    ty: &'static str,
    #[serde(flatten)]
    inner: &'a T,
}

/// The `message` frame. The same bytes are a `message` object inside a
/// `history` reply, so they are stored once and reused for both.
pub fn message(m: &Message<'_>) -> Bytes {
    encode(&Tagged {
        ty: "message",
        inner: m,
    })
}

/// A `history` reply built from stored `message` frames without re-encoding them.
pub fn history<'a>(
    r#ref: Option<&Ref>,
    room: &str,
    messages: impl IntoIterator<Item = &'a Bytes>,
) -> Bytes {
    let head = encode(&Reply {
        ty: "history",
        r#ref,
        fields: HistoryHead { room },
    });
    // `head` is `{...,"room":"r"}`; reopen it to append the array.
    let mut out = Vec::with_capacity(head.len() + 256);
    out.extend_from_slice(&head[..head.len() - 1]);
    out.extend_from_slice(b",\"messages\":[");
    for (i, m) in messages.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(m);
    }
    out.extend_from_slice(b"]}");
    Bytes::from(out)
}

#[derive(Serialize)]
struct HistoryHead<'a> {
    room: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::ErrorCode;
    use serde_json::{Value, json};

    fn val(b: &Bytes) -> Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn ok_echoes_ref_and_flattens_fields() {
        let r = Ref::Num(3.into());
        #[derive(Serialize)]
        struct F {
            room: &'static str,
            seq: u64,
        }
        let b = ok(Some(&r), F { room: "r", seq: 9 });
        assert_eq!(val(&b), json!({"type":"ok","ref":3,"room":"r","seq":9}));
    }

    #[test]
    fn error_has_retry_after_only_when_given() {
        let e = error(None, &Failure::bad_request("x"));
        assert_eq!(
            val(&e),
            json!({"type":"error","code":"bad_request","message":"x"})
        );
        let e = error(
            Some(&Ref::Str("a".into())),
            &Failure::retry(ErrorCode::Overloaded, "busy", 250),
        );
        assert_eq!(
            val(&e),
            json!({"type":"error","ref":"a","code":"overloaded","message":"busy","retry_after_ms":250})
        );
    }

    #[test]
    fn history_embeds_stored_message_frames() {
        let cid = Ref::Str("c".into());
        let m1 = message(&Message {
            room: "r",
            seq: 1,
            id: "i1",
            from: "a",
            body: "hi \"there\"",
            ts: 5,
            cid: Some(&cid),
        });
        let m2 = message(&Message {
            room: "r",
            seq: 2,
            id: "i2",
            from: "b",
            body: "yo",
            ts: 6,
            cid: None,
        });
        let h = history(Some(&Ref::Num(1.into())), "r", [&m1, &m2]);
        let v = val(&h);
        assert_eq!(v["type"], "history");
        assert_eq!(v["ref"], 1);
        assert_eq!(v["room"], "r");
        assert_eq!(v["messages"][0]["body"], "hi \"there\"");
        assert_eq!(v["messages"][0]["cid"], "c");
        assert_eq!(v["messages"][1]["seq"], 2);
        assert!(v["messages"][1].get("cid").is_none());
        let empty = history(None, "r", []);
        assert_eq!(
            val(&empty),
            json!({"type":"history","room":"r","messages":[]})
        );
    }

    #[test]
    fn presence_and_goaway_frames() {
        assert_eq!(
            val(&presence("r", "u", false)),
            json!({"type":"presence","room":"r","user":"u","event":"leave"})
        );
        assert_eq!(
            val(&goaway("draining", 1000)),
            json!({"type":"goaway","reason":"draining","retry_after_ms":1000})
        );
        assert_eq!(val(&pong(None)), json!({"type":"pong"}));
    }
}
