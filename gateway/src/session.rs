//! Session logic without a socket: a connection's state plus one frame gives
//! the Bus calls to make and the reply to send.
//!
//! [`Session::plan`] is pure (login state, membership, size limits, direct
//! room naming) and unit tested here; [`Session::handle`] runs the plan
//! against a [`Bus`] and turns the outcome into reply bytes.

use std::{sync::Arc, time::Duration};

use tokio::time::Instant;

use bytes::Bytes;
use dialtone_proto::{
    ErrorCode, Name, Ref, RoomName,
    client::{self, Credentials, Request, RequestFrame, Target},
    codes::Failure,
    server,
};
use dialtone_store::bus::{Bus, ConnId, Deliver, LoggedIn, Member};
use serde::Serialize;

use regulator::{Regulator, Request as Ask};

use crate::{
    admission::{self, admit},
    telemetry::hot,
};

/// One connection's state.
pub struct Session {
    conn: ConnId,
    user: Option<Name>,
    /// Rooms joined, in join order; few per connection, so a Vec.
    rooms: Vec<RoomName>,
    max_body_bytes: usize,
    /// The last refused send's answer and when its `retry_after_ms` ends:
    /// sends before then get the same answer without asking the queue.
    send_refused: Option<SendRefused>,
}

/// A send refusal that still stands (README, "Overload, as a client sees
/// it"). The client was told to wait; a send before then would only be
/// refused again, so the queue is not asked: under overload, the frames a
/// client pipelines behind a refused send cost the node a parse and a reply
/// each, not a queue decision, and none of them overtakes the refused one.
#[derive(Clone, Copy)]
struct SendRefused {
    code: ErrorCode,
    until: Instant,
}

/// What a request needs done, decided from the session state alone.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    Pong,
    Register {
        user: Name,
        password: String,
    },
    LoginPassword {
        user: Name,
        password: String,
    },
    LoginToken(String),
    Join(RoomName),
    /// Leave; `joined` says whether there is anything to undo.
    Leave {
        room: RoomName,
        joined: bool,
    },
    Send {
        room: RoomName,
        body: String,
        cid: Option<Ref>,
        to: Option<Name>,
    },
    History {
        room: RoomName,
        after: u64,
        limit: u32,
    },
    Who(RoomName),
}

fn forbidden(room: &RoomName) -> Failure {
    Failure::new(
        ErrorCode::Forbidden,
        format!("not a member of `{room}`; join it first"),
    )
}

fn unauthorized() -> Failure {
    Failure::new(
        ErrorCode::Unauthorized,
        "log in first with `login` or `register`",
    )
}

impl Session {
    pub fn new(conn: ConnId, user: Option<Name>, max_body_bytes: usize) -> Self {
        Session {
            conn,
            user,
            rooms: Vec::new(),
            max_body_bytes,
            send_refused: None,
        }
    }

    pub fn conn(&self) -> ConnId {
        self.conn
    }

    pub fn user(&self) -> Option<&Name> {
        self.user.as_ref()
    }

    pub fn rooms(&self) -> &[RoomName] {
        &self.rooms
    }

    /// Remembers a refused send's wait (see [`SendRefused`]).
    fn send_refused(&mut self, f: &Failure) {
        if let (ErrorCode::Overloaded | ErrorCode::RateLimited, Some(ms)) =
            (f.code, f.retry_after_ms)
            && let Some(until) = Instant::now().checked_add(Duration::from_millis(ms))
        {
            self.send_refused = Some(SendRefused {
                code: f.code,
                until,
            });
        }
    }

    fn me(&self) -> Result<&Name, Failure> {
        self.user.as_ref().ok_or_else(unauthorized)
    }

    /// May this session read and write `room`?
    fn check_member(&self, room: &RoomName) -> Result<(), Failure> {
        let me = self.me()?;
        let ok = match room.parties() {
            Some(_) => room.is_party(me),
            None => self.rooms.contains(room),
        };
        if ok { Ok(()) } else { Err(forbidden(room)) }
    }

    /// A login or register for a user other than the one logged in.
    fn check_same_user(&self, user: &Name) -> Result<(), Failure> {
        match &self.user {
            Some(me) if me != user => Err(Failure::new(
                ErrorCode::Forbidden,
                format!("this connection is logged in as `{me}`"),
            )),
            _ => Ok(()),
        }
    }

    /// Decides what a request needs, from the session state alone.
    ///
    /// # Errors
    /// The protocol failure to answer with, when the request cannot proceed.
    pub fn plan(&self, req: Request) -> Result<Plan, Failure> {
        Ok(match req {
            Request::Ping => Plan::Pong,
            Request::Register { user, password } => {
                self.check_same_user(&user)?;
                Plan::Register { user, password }
            }
            Request::Login(Credentials::Password { user, password }) => {
                self.check_same_user(&user)?;
                Plan::LoginPassword { user, password }
            }
            // The token's user is known only once verified; checked after.
            Request::Login(Credentials::Token(t)) => Plan::LoginToken(t),
            Request::Join { room } => {
                let me = self.me()?;
                if room.parties().is_some() && !room.is_party(me) {
                    return Err(forbidden(&room));
                }
                Plan::Join(room)
            }
            Request::Leave { room } => {
                self.me()?;
                let joined = self.rooms.contains(&room);
                Plan::Leave { room, joined }
            }
            Request::Send { target, body, cid } => {
                let me = self.me()?;
                if body.len() > self.max_body_bytes {
                    return Err(Failure::new(
                        ErrorCode::TooLarge,
                        format!(
                            "`body` is {} bytes; the limit is {}",
                            body.len(),
                            self.max_body_bytes
                        ),
                    ));
                }
                match target {
                    Target::Room(room) => {
                        self.check_member(&room)?;
                        Plan::Send {
                            room,
                            body,
                            cid,
                            to: None,
                        }
                    }
                    Target::User(to) => Plan::Send {
                        room: RoomName::direct(me.clone(), to.clone()),
                        body,
                        cid,
                        to: Some(to),
                    },
                }
            }
            Request::History { room, after, limit } => {
                self.check_member(&room)?;
                Plan::History { room, after, limit }
            }
            Request::Who { room } => {
                self.check_member(&room)?;
                Plan::Who(room)
            }
        })
    }

    fn member(&self, user: Name, outbox: &Arc<dyn Deliver>) -> Member {
        Member {
            conn: self.conn,
            user,
            outbox: outbox.clone(),
        }
    }

    /// Logs in a connection that brought a valid token to the upgrade.
    ///
    /// # Errors
    /// When the user cannot be recorded (store down).
    pub async fn adopt(
        &mut self,
        user: Name,
        bus: &dyn Bus,
        outbox: &Arc<dyn Deliver>,
    ) -> Result<(), Failure> {
        bus.attach(self.member(user.clone(), outbox)).await?;
        self.user = Some(user);
        Ok(())
    }

    async fn logged_in(
        &mut self,
        bus: &dyn Bus,
        outbox: &Arc<dyn Deliver>,
        li: &LoggedIn,
    ) -> Result<(), Failure> {
        match &self.user {
            Some(me) if *me == li.user => Ok(()),
            Some(me) => Err(Failure::new(
                ErrorCode::Forbidden,
                format!("this connection is logged in as `{me}`"),
            )),
            None => self.adopt(li.user.clone(), bus, outbox).await,
        }
    }

    /// Handles one parsed frame and returns the reply to send.
    pub async fn handle(
        &mut self,
        frame: RequestFrame,
        bus: &dyn Bus,
        regulator: &Regulator,
        outbox: &Arc<dyn Deliver>,
    ) -> Reply {
        let kind = frame.request.as_ref().map_or("invalid", Request::kind);
        hot().frame_in(kind);
        let r#ref = frame.r#ref;
        let result = match frame.request.and_then(|req| self.plan(req)) {
            Ok(plan) => {
                self.execute(plan, bus, regulator, outbox, r#ref.as_ref())
                    .await
            }
            Err(f) => Err(f),
        };
        match result {
            Ok((reply_kind, bytes)) => {
                hot().frame_out(reply_kind);
                Reply::from(bytes)
            }
            Err(f) => Reply::failed(kind, r#ref.as_ref(), &f),
        }
    }

    /// Answers a `send` at once while an earlier send's refusal stands,
    /// from the frame's `type` and `ref` alone; `None` for anything else,
    /// which [`Session::handle`] then answers. Call it before parsing: it
    /// is the one place the standing refusal is applied (a frame it cannot
    /// read as a send is no valid send for `handle` either). Under overload nearly every
    /// frame a node reads is such a send; not building the whole request
    /// only to refuse it carried 8 % more sends at 10x (docs/OVERLOAD.md).
    /// `read_at` is when the frame was read: one clock read serves a batch.
    /// A wait that has passed is checked before the frame is looked at.
    pub fn refuse_standing(&mut self, text: &str, read_at: Instant) -> Option<Reply> {
        let SendRefused { code, until } = self.send_refused?;
        let left = until.saturating_duration_since(read_at);
        if left.is_zero() {
            self.send_refused = None;
            return None;
        }
        let head = client::head(text)?;
        if head.ty.as_deref() != Some("send") {
            return None;
        }
        hot().standing_refusals.increment(1);
        hot().frame_in("send");
        let f = Failure::retry(
            code,
            "an earlier send was refused; wait `retry_after_ms` before sending again",
            admission::retry_ms(left),
        );
        Some(Reply::failed("send", head.r#ref.as_ref(), &f))
    }

    async fn execute(
        &mut self,
        plan: Plan,
        bus: &dyn Bus,
        regulator: &Regulator,
        outbox: &Arc<dyn Deliver>,
        r#ref: Option<&Ref>,
    ) -> Result<(&'static str, Bytes), Failure> {
        let ok = |bytes: Bytes| ("ok", bytes);
        Ok(match plan {
            Plan::Pong => ("pong", server::pong(r#ref)),
            Plan::Register { user, password } => {
                let _slot = admit(regulator, admission::REGISTER, Ask::new()).await?;
                let li = bus.register(user, password).await?;
                self.logged_in(bus, outbox, &li).await?;
                ok(server::ok(r#ref, LoginOk::from(&li)))
            }
            Plan::LoginPassword { user, password } => {
                let _slot = admit(regulator, admission::LOGIN, Ask::new()).await?;
                let li = bus.login_password(user, password).await?;
                self.logged_in(bus, outbox, &li).await?;
                ok(server::ok(r#ref, LoginOk::from(&li)))
            }
            Plan::LoginToken(token) => {
                let li = bus.login_token(token).await?;
                self.logged_in(bus, outbox, &li).await?;
                ok(server::ok(r#ref, LoginOk::from(&li)))
            }
            Plan::Join(room) => {
                let user = self.me()?.clone();
                let seq = bus.join(room.clone(), self.member(user, outbox)).await?;
                if !self.rooms.contains(&room) {
                    self.rooms.push(room.clone());
                }
                ok(server::ok(
                    r#ref,
                    RoomSeq {
                        room: room.as_str(),
                        seq,
                    },
                ))
            }
            Plan::Leave { room, joined } => {
                if joined {
                    bus.leave(room.clone(), self.conn).await?;
                    self.rooms.retain(|r| *r != room);
                }
                ok(server::ok(
                    r#ref,
                    RoomOnly {
                        room: room.as_str(),
                    },
                ))
            }
            Plan::Send {
                room,
                body,
                cid,
                to,
            } => {
                if let Some(to) = &to
                    && !bus.user_known(to).await?
                {
                    return Err(Failure::new(ErrorCode::NotFound, format!("no user `{to}`")));
                }
                let from = self.me()?.clone();
                let _slot = admit(
                    regulator,
                    admission::SEND,
                    Ask::new().str_key(from.as_str()),
                )
                .await
                .inspect_err(|f| self.send_refused(f))?;
                let started = std::time::Instant::now();
                let sent = bus.send(room, from, body, cid).await?;
                hot().send_stored.record(started.elapsed().as_secs_f64());
                ok(server::ok(
                    r#ref,
                    SendOk {
                        room: sent.room.as_str(),
                        seq: sent.seq,
                        id: &sent.id,
                    },
                ))
            }
            Plan::History { room, after, limit } => {
                let _slot = admit(regulator, admission::HISTORY, Ask::new()).await?;
                let frames = bus.history(room.clone(), after, limit).await?;
                ("history", server::history(r#ref, room.as_str(), &frames))
            }
            Plan::Who(room) => {
                let users = bus.who(room.clone()).await?;
                let users: Vec<&str> = users.iter().map(Name::as_str).collect();
                ok(server::ok(
                    r#ref,
                    WhoOk {
                        room: room.as_str(),
                        users,
                    },
                ))
            }
        })
    }
}

/// The answer to one frame.
#[derive(Debug)]
pub struct Reply {
    pub frame: Bytes,
    /// The frame's type when it was refused for load (`overloaded` or
    /// `rate_limited`): the connection times how long the refusal took.
    pub refused: Option<&'static str>,
    /// After `overloaded` to a `send`: how long the connection reads nothing
    /// more (README, additions to PROTOCOL.md). The client was told to wait that long, and a
    /// refusal per frame would cost the node a third of the send it saves;
    /// frames that arrive meanwhile are read and answered in one batch.
    pub hold: Option<Duration>,
}

impl Reply {
    /// The `error` reply to a `kind` request that failed with `f`.
    fn failed(kind: &'static str, r#ref: Option<&Ref>, f: &Failure) -> Self {
        Reply {
            refused: matches!(f.code, ErrorCode::Overloaded | ErrorCode::RateLimited)
                .then_some(kind),
            hold: match (f.code, kind, f.retry_after_ms) {
                (ErrorCode::Overloaded, "send", Some(ms)) => Some(Duration::from_millis(ms)),
                _ => None,
            },
            frame: error_reply(r#ref, f),
        }
    }
}

impl From<Bytes> for Reply {
    fn from(frame: Bytes) -> Self {
        Reply {
            frame,
            refused: None,
            hold: None,
        }
    }
}

/// Encodes an `error` reply and counts it.
pub fn error_reply(r#ref: Option<&Ref>, f: &Failure) -> Bytes {
    hot().error(f.code);
    hot().frame_out("error");
    server::error(r#ref, f)
}

#[derive(Serialize)]
struct LoginOk<'a> {
    user: &'a str,
    token: &'a str,
    expires_at: u64,
}

impl<'a> From<&'a LoggedIn> for LoginOk<'a> {
    fn from(li: &'a LoggedIn) -> Self {
        LoginOk {
            user: li.user.as_str(),
            token: &li.token,
            expires_at: li.expires_at,
        }
    }
}

#[derive(Serialize)]
struct RoomSeq<'a> {
    room: &'a str,
    seq: u64,
}

#[derive(Serialize)]
struct RoomOnly<'a> {
    room: &'a str,
}

#[derive(Serialize)]
struct SendOk<'a> {
    room: &'a str,
    seq: u64,
    id: &'a str,
}

#[derive(Serialize)]
struct WhoOk<'a> {
    room: &'a str,
    users: Vec<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use dialtone_proto::client;

    fn n(s: &str) -> Name {
        Name::parse(s).unwrap()
    }
    fn r(s: &str) -> RoomName {
        RoomName::parse(s).unwrap()
    }
    fn req(text: &str) -> Request {
        client::parse(text).request.unwrap()
    }
    /// Every frame in `texts` is refused with `code`.
    fn refuses(s: &Session, texts: &[&str], code: ErrorCode) {
        for text in texts {
            assert_eq!(s.plan(req(text)).unwrap_err().code, code, "{text}");
        }
    }

    fn logged_in(user: &str) -> Session {
        Session::new(1, Some(n(user)), 10)
    }

    #[test]
    fn everything_but_ping_and_login_needs_a_login() {
        let s = Session::new(1, None, 10);
        assert_eq!(s.plan(req(r#"{"type":"ping"}"#)), Ok(Plan::Pong));
        refuses(
            &s,
            &[
                r#"{"type":"join","room":"r"}"#,
                r#"{"type":"leave","room":"r"}"#,
                r#"{"type":"send","room":"r","body":"x"}"#,
                r#"{"type":"send","to":"bob","body":"x"}"#,
                r#"{"type":"history","room":"r"}"#,
                r#"{"type":"who","room":"r"}"#,
            ],
            ErrorCode::Unauthorized,
        );
        assert!(
            s.plan(req(r#"{"type":"login","user":"a","password":"p"}"#))
                .is_ok()
        );
    }

    #[test]
    fn sending_or_reading_a_room_not_joined_is_forbidden() {
        let mut s = logged_in("alice");
        refuses(
            &s,
            &[
                r#"{"type":"send","room":"r","body":"x"}"#,
                r#"{"type":"history","room":"r"}"#,
                r#"{"type":"who","room":"r"}"#,
            ],
            ErrorCode::Forbidden,
        );
        s.rooms.push(r("r"));
        assert!(
            s.plan(req(r#"{"type":"send","room":"r","body":"x"}"#))
                .is_ok()
        );
    }

    #[test]
    fn body_over_the_limit_is_too_large() {
        let mut s = logged_in("alice");
        s.rooms.push(r("r"));
        let e = s
            .plan(req(r#"{"type":"send","room":"r","body":"12345678901"}"#))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::TooLarge);
        assert!(
            s.plan(req(r#"{"type":"send","room":"r","body":"1234567890"}"#))
                .is_ok()
        );
    }

    #[test]
    fn direct_message_goes_to_the_byte_ordered_dm_room() {
        let s = logged_in("zed");
        let plan = s
            .plan(req(r#"{"type":"send","to":"amy","body":"hi"}"#))
            .unwrap();
        assert!(
            matches!(plan, Plan::Send { room, to: Some(_), .. } if room.as_str() == "dm:amy:zed")
        );
    }

    #[test]
    fn only_the_two_parties_read_a_direct_room() {
        let amy = logged_in("amy");
        assert!(
            amy.plan(req(r#"{"type":"history","room":"dm:amy:zed"}"#))
                .is_ok()
        );
        let eve = logged_in("eve");
        refuses(
            &eve,
            &[
                r#"{"type":"history","room":"dm:amy:zed"}"#,
                r#"{"type":"join","room":"dm:amy:zed"}"#,
                r#"{"type":"send","room":"dm:amy:zed","body":"x"}"#,
            ],
            ErrorCode::Forbidden,
        );
    }

    #[test]
    fn login_as_another_user_is_forbidden_but_a_refresh_is_not() {
        let s = logged_in("alice");
        let e = s
            .plan(req(r#"{"type":"login","user":"bob","password":"p"}"#))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::Forbidden);
        let e = s
            .plan(req(r#"{"type":"register","user":"bob","password":"p"}"#))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::Forbidden);
        assert!(
            s.plan(req(r#"{"type":"login","user":"alice","password":"p"}"#))
                .is_ok()
        );
    }

    #[test]
    fn leave_of_a_room_not_joined_is_a_no_op() {
        let s = logged_in("alice");
        assert_eq!(
            s.plan(req(r#"{"type":"leave","room":"r"}"#)),
            Ok(Plan::Leave {
                room: r("r"),
                joined: false
            })
        );
    }
}
