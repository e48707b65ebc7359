//! Client frames: one JSON object with a string `type`, an optional `ref`
//! (number or string) echoed in the reply, and the fields of its row in
//! PROTOCOL.md. Parsing never panics and always keeps the `ref` it could read,
//! so that even a malformed request gets an `error` the client can match.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::{
    codes::Failure,
    names::{Name, RoomName},
};

/// A client's correlation value: a JSON number or string, echoed verbatim.
/// Also the type of `cid`, which is echoed the same way in `message` frames.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum Ref {
    Num(serde_json::Number),
    Str(String),
}

/// By hand, not `#[serde(untagged)]`: that buffers the value and, for a
/// string, first fails as a number, formatting an error it throws away. Two
/// refs per `send` made it 7 % of an overloaded node's refusal path.
impl<'de> Deserialize<'de> for Ref {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Ref;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number or a string")
            }
            fn visit_u64<E>(self, v: u64) -> Result<Ref, E> {
                Ok(Ref::Num(v.into()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Ref, E> {
                Ok(Ref::Num(v.into()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Ref, E> {
                serde_json::Number::from_f64(v)
                    .map(Ref::Num)
                    .ok_or_else(|| E::custom("a finite number"))
            }
            fn visit_str<E>(self, v: &str) -> Result<Ref, E> {
                Ok(Ref::Str(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Ref, E> {
                Ok(Ref::Str(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl Ref {
    /// A key that tells `1` and `"1"` apart, for cid dedupe.
    pub fn dedupe_key(&self) -> String {
        match self {
            Ref::Num(n) => format!("n{n}"),
            Ref::Str(s) => format!("s{s}"),
        }
    }
}

/// Longest `cid` accepted; it is stored with every message.
pub const MAX_CID_LEN: usize = 128;
/// Longest password accepted; argon2 cost does not depend on it, but memory does.
pub const MAX_PASSWORD_LEN: usize = 1024;
pub const DEFAULT_HISTORY_LIMIT: u32 = 100;
pub const MAX_HISTORY_LIMIT: u32 = 1000;

/// How a `login` proves who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    Password { user: Name, password: String },
    Token(String),
}

/// Where a `send` goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Room(RoomName),
    /// A direct message; goes to `dm:<a>:<b>`.
    User(Name),
}

/// A well-formed client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Register {
        user: Name,
        password: String,
    },
    Login(Credentials),
    Join {
        room: RoomName,
    },
    Leave {
        room: RoomName,
    },
    Send {
        target: Target,
        body: String,
        cid: Option<Ref>,
    },
    History {
        room: RoomName,
        after: u64,
        limit: u32,
    },
    Who {
        room: RoomName,
    },
    Ping,
}

impl Request {
    /// The frame type, for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Register { .. } => "register",
            Request::Login(_) => "login",
            Request::Join { .. } => "join",
            Request::Leave { .. } => "leave",
            Request::Send { .. } => "send",
            Request::History { .. } => "history",
            Request::Who { .. } => "who",
            Request::Ping => "ping",
        }
    }
}

/// A parsed frame: the `ref` (when readable) and the request or why it is bad.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFrame {
    pub r#ref: Option<Ref>,
    pub request: Result<Request, Failure>,
}

/// Every field any request may carry; unknown fields are ignored so that
/// clients may add their own. Fields that are only checked, not kept, borrow
/// from the frame when they can (no escapes): a refused send under overload
/// costs a parse, so each allocation saved counts.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    ty: Option<Cow<'a, str>>,
    #[serde(rename = "ref")]
    r#ref: Option<Ref>,
    #[serde(borrow)]
    user: Option<Cow<'a, str>>,
    password: Option<String>,
    token: Option<String>,
    #[serde(borrow)]
    room: Option<Cow<'a, str>>,
    #[serde(borrow)]
    to: Option<Cow<'a, str>>,
    body: Option<String>,
    cid: Option<Ref>,
    after: Option<u64>,
    limit: Option<u64>,
}

/// A frame's `type` and `ref` alone: what a refusal needs.
#[derive(Deserialize)]
pub struct Head<'a> {
    #[serde(rename = "type", borrow)]
    pub ty: Option<Cow<'a, str>>,
    #[serde(rename = "ref")]
    pub r#ref: Option<Ref>,
}

/// Reads only `type` and `ref` (the other fields are skipped, not built);
/// `None` when the frame is not a JSON object with them well-typed.
pub fn head(text: &str) -> Option<Head<'_>> {
    serde_json::from_str(text).ok()
}

/// Parses one text message into a [`RequestFrame`].
pub fn parse(text: &str) -> RequestFrame {
    match serde_json::from_str::<Envelope>(text) {
        Ok(mut env) => {
            let r#ref = env.r#ref.take();
            RequestFrame {
                r#ref,
                request: env.into_request(),
            }
        }
        Err(e) => RequestFrame {
            r#ref: salvage_ref(text),
            request: Err(Failure::bad_request(describe(&e))),
        },
    }
}

/// When a field has the wrong JSON type the typed parse fails as a whole;
/// read the `ref` alone so the error still correlates.
fn salvage_ref(text: &str) -> Option<Ref> {
    #[derive(Deserialize)]
    struct OnlyRef {
        #[serde(rename = "ref")]
        r#ref: Option<Ref>,
    }
    serde_json::from_str::<OnlyRef>(text).ok()?.r#ref
}

fn describe(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => "frame is not valid JSON".into(),
        Category::Data => format!("malformed field: {e}"),
    }
}

fn need<T>(v: Option<T>, field: &str) -> Result<T, Failure> {
    v.ok_or_else(|| Failure::bad_request(format!("missing field `{field}`")))
}

fn name(v: Option<Cow<'_, str>>, field: &str) -> Result<Name, Failure> {
    Name::parse(&need(v, field)?).map_err(|why| Failure::bad_request(format!("`{field}`: {why}")))
}

fn room(v: Option<Cow<'_, str>>) -> Result<RoomName, Failure> {
    RoomName::parse(&need(v, "room")?).map_err(|why| Failure::bad_request(format!("`room`: {why}")))
}

fn password(v: Option<String>) -> Result<String, Failure> {
    let p = need(v, "password")?;
    if p.is_empty() || p.len() > MAX_PASSWORD_LEN {
        return Err(Failure::bad_request("`password` must be 1 to 1024 bytes"));
    }
    Ok(p)
}

impl Envelope<'_> {
    fn into_request(self) -> Result<Request, Failure> {
        let ty = need(self.ty, "type")?;
        Ok(match &*ty {
            "register" => Request::Register {
                user: name(self.user, "user")?,
                password: password(self.password)?,
            },
            "login" => match (self.token, self.user) {
                (Some(token), None) => Request::Login(Credentials::Token(token)),
                (None, user) => Request::Login(Credentials::Password {
                    user: name(user, "user")?,
                    password: password(self.password)?,
                }),
                (Some(_), Some(_)) => {
                    return Err(Failure::bad_request(
                        "`login` takes `user` + `password`, or `token`, not both",
                    ));
                }
            },
            "join" => Request::Join {
                room: room(self.room)?,
            },
            "leave" => Request::Leave {
                room: room(self.room)?,
            },
            "send" => {
                let target = match (self.room, self.to) {
                    (Some(r), None) => Target::Room(room(Some(r))?),
                    (None, Some(to)) => Target::User(name(Some(to), "to")?),
                    (None, None) => {
                        return Err(Failure::bad_request("`send` needs `room` or `to`"));
                    }
                    (Some(_), Some(_)) => {
                        return Err(Failure::bad_request(
                            "`send` takes `room` or `to`, not both",
                        ));
                    }
                };
                if let Some(Ref::Str(s)) = &self.cid
                    && (s.is_empty() || s.len() > MAX_CID_LEN)
                {
                    return Err(Failure::bad_request("`cid` must be 1 to 128 bytes"));
                }
                Request::Send {
                    target,
                    body: need(self.body, "body")?,
                    cid: self.cid,
                }
            }
            "history" => Request::History {
                room: room(self.room)?,
                after: self.after.unwrap_or(0),
                limit: self.limit.map_or(DEFAULT_HISTORY_LIMIT, |l| {
                    u32::try_from(l.min(u64::from(MAX_HISTORY_LIMIT))).unwrap_or(MAX_HISTORY_LIMIT)
                }),
            },
            "who" => Request::Who {
                room: room(self.room)?,
            },
            "ping" => Request::Ping,
            other => {
                let shown: String = other.chars().take(32).collect();
                return Err(Failure::bad_request(format!(
                    "unknown frame type `{shown}`"
                )));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::ErrorCode;

    fn ok(text: &str) -> Request {
        parse(text).request.expect("valid request")
    }

    fn bad(text: &str) -> (Option<Ref>, String) {
        let f = parse(text);
        let e = f.request.expect_err("must be rejected");
        assert_eq!(e.code, ErrorCode::BadRequest);
        (f.r#ref, e.message.into_owned())
    }

    #[test]
    fn parses_every_frame_type() {
        assert!(matches!(
            ok(r#"{"type":"register","user":"a","password":"p"}"#),
            Request::Register { .. }
        ));
        assert!(matches!(
            ok(r#"{"type":"login","token":"t"}"#),
            Request::Login(Credentials::Token(_))
        ));
        assert!(matches!(
            ok(r#"{"type":"login","user":"a","password":"p"}"#),
            Request::Login(Credentials::Password { .. })
        ));
        assert!(matches!(
            ok(r#"{"type":"join","room":"r"}"#),
            Request::Join { .. }
        ));
        assert!(matches!(
            ok(r#"{"type":"leave","room":"r"}"#),
            Request::Leave { .. }
        ));
        assert!(matches!(
            ok(r#"{"type":"send","to":"bob","body":"hi"}"#),
            Request::Send {
                target: Target::User(_),
                ..
            }
        ));
        assert_eq!(
            ok(r#"{"type":"history","room":"r"}"#),
            Request::History {
                room: RoomName::parse("r").unwrap(),
                after: 0,
                limit: 100
            }
        );
        assert!(matches!(
            ok(r#"{"type":"who","room":"r"}"#),
            Request::Who { .. }
        ));
        assert_eq!(ok(r#"{"type":"ping","extra":[1,2]}"#), Request::Ping);
    }

    #[test]
    fn keeps_ref_of_numbers_and_strings() {
        assert_eq!(
            parse(r#"{"type":"ping","ref":7}"#).r#ref,
            Some(Ref::Num(7.into()))
        );
        assert_eq!(
            parse(r#"{"type":"ping","ref":-7}"#).r#ref,
            Some(Ref::Num((-7).into()))
        );
        assert_eq!(
            parse(r#"{"type":"ping","ref":"x"}"#).r#ref,
            Some(Ref::Str("x".into()))
        );
        assert_eq!(
            parse(r#"{"type":"ping","ref":"a\"b"}"#).r#ref,
            Some(Ref::Str("a\"b".into()))
        );
        // Echoed as it came: a fraction stays a number, the same number.
        let r = parse(r#"{"type":"ping","ref":1.5}"#).r#ref.unwrap();
        assert_eq!(serde_json::to_string(&r).unwrap(), "1.5");
    }

    #[test]
    fn a_ref_that_is_neither_number_nor_string_is_a_bad_request() {
        for bad_ref in ["true", "[1]", r#"{"a":1}"#] {
            let f = parse(&format!(r#"{{"type":"ping","ref":{bad_ref}}}"#));
            assert_eq!(f.r#ref, None, "{bad_ref}");
            let err = f.request.unwrap_err();
            assert!(
                err.message.contains("a number or a string"),
                "{bad_ref}: {err:?}"
            );
        }
    }

    #[test]
    fn a_null_ref_is_no_ref() {
        let f = parse(r#"{"type":"ping","ref":null}"#);
        assert_eq!((f.r#ref, f.request), (None, Ok(Request::Ping)));
    }

    #[test]
    fn salvages_ref_when_another_field_has_the_wrong_type() {
        let (r, msg) = bad(r#"{"type":"join","room":5,"ref":"k"}"#);
        assert_eq!(r, Some(Ref::Str("k".into())));
        assert!(msg.contains("malformed"), "{msg}");
    }

    #[test]
    fn rejects_non_json_missing_type_and_unknown_type() {
        assert_eq!(bad("not json").1, "frame is not valid JSON");
        assert!(bad(r#"{"ref":1}"#).1.contains("`type`"));
        assert!(
            bad(r#"{"type":"dance","ref":1}"#)
                .1
                .contains("unknown frame type")
        );
        assert!(bad(r#"[1,2]"#).1.contains("malformed"));
    }

    #[test]
    fn history_limit_is_capped_at_1000() {
        assert!(matches!(
            ok(r#"{"type":"history","room":"r","after":5,"limit":5000}"#),
            Request::History {
                after: 5,
                limit: 1000,
                ..
            }
        ));
    }

    #[test]
    fn send_needs_exactly_one_target_and_a_body() {
        bad(r#"{"type":"send","body":"x"}"#);
        bad(r#"{"type":"send","room":"r","to":"u","body":"x"}"#);
        bad(r#"{"type":"send","room":"r"}"#);
        bad(r#"{"type":"send","room":"bad room","body":"x"}"#);
        bad(r#"{"type":"send","room":"r","body":"x","cid":""}"#);
    }

    #[test]
    fn head_reads_type_and_ref_and_skips_the_rest() {
        let h = head(r#"{"body":{"any":[1,"x"]},"type":"send","ref":"a","room":"bad room"}"#)
            .expect("a JSON object");
        assert_eq!(h.ty.as_deref(), Some("send"));
        assert_eq!(h.r#ref, Some(Ref::Str("a".into())));
        assert!(head(r#"{"type":"ping"}"#).is_some_and(|h| h.r#ref.is_none()));
        assert!(head("not json").is_none());
        assert!(
            head(r#"{"type":5}"#).is_none(),
            "a type that is not a string"
        );
    }

    #[test]
    fn escaped_fields_mean_the_same_as_plain_ones() {
        // Escapes cannot be borrowed from the frame: the envelope owns those.
        assert_eq!(
            parse(r#"{"type":"s\u0065nd","room":"r\u0031","body":"x","ref":"a"}"#),
            parse(r#"{"type":"send","room":"r1","body":"x","ref":"a"}"#),
        );
        assert_eq!(
            parse(r#"{"type":"send","to":"b\u006fb","body":"x"}"#).request,
            Ok(Request::Send {
                target: Target::User(Name::parse("bob").unwrap()),
                body: "x".into(),
                cid: None,
            })
        );
    }

    #[test]
    fn register_validates_user_and_password() {
        bad(r#"{"type":"register","user":"a b","password":"p"}"#);
        bad(r#"{"type":"register","user":"a","password":""}"#);
        bad(r#"{"type":"register","user":"a"}"#);
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,200}") {
            let _ = parse(&s);
        }

        #[test]
        fn parse_never_panics_on_json_shaped_input(
            ty in "(register|login|join|leave|send|history|who|ping|x)",
            room in ".{0,70}", body in ".{0,20}", after in proptest::num::i64::ANY,
        ) {
            let text = serde_json::json!({"type": ty, "room": room, "body": body, "after": after, "user": room, "password": body}).to_string();
            let _ = parse(&text);
        }
    }
}
