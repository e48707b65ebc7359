//! Shared harness for the contract tests: a node on 127.0.0.1:0 and a real
//! WebSocket client (tokio-tungstenite) speaking PROTOCOL.md.
#![allow(dead_code)]

use std::{net::SocketAddr, time::Duration};

use dialtone::{Config, Node};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{
        Message,
        client::IntoClientRequest,
        protocol::{CloseFrame, frame::coding::CloseCode},
    },
};

pub const SECRET: &str = "test-secret";
/// Generous: these machines are small and shared; a healthy node answers in ms.
pub const WAIT: Duration = Duration::from_secs(10);

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Starts a node with test defaults plus `env` overrides (as `DIALTONE_*` pairs).
pub async fn start(env: &[(&str, &str)]) -> Node {
    let mut vars = vec![
        (
            "DIALTONE_GATEWAY__LISTEN".to_owned(),
            "127.0.0.1:0".to_owned(),
        ),
        ("DIALTONE_AUTH__JWT_SECRET".to_owned(), SECRET.to_owned()),
    ];
    vars.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let cfg = Config::load_from(None, vars).expect("test config");
    Node::start(cfg).await.expect("node starts")
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token for `user`, minted with the test secret.
pub fn token(user: &str) -> String {
    token_with(user, now() + 3600, SECRET)
}

pub fn token_with(user: &str, exp: u64, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": user, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

pub struct Client {
    pub ws: Ws,
    next_ref: u64,
    /// Pushed frames (message, presence, goaway) seen while waiting for replies.
    pub pushed: Vec<Value>,
}

pub fn url(addr: SocketAddr) -> String {
    format!("ws://{addr}/ws")
}

impl Client {
    /// Connects without a token.
    pub async fn anon(addr: SocketAddr) -> Client {
        let (ws, _) = connect_async(url(addr)).await.expect("upgrade");
        Client::wrap(ws)
    }

    /// Connects as `user` with a token in the query string.
    pub async fn as_user(addr: SocketAddr, user: &str) -> Client {
        let (ws, _) = connect_async(format!("{}?token={}", url(addr), token(user)))
            .await
            .expect("upgrade");
        Client::wrap(ws)
    }

    /// Connects with `Authorization: Bearer`.
    pub async fn with_header(addr: SocketAddr, token: &str) -> Result<Client, u16> {
        let mut req = url(addr).into_client_request().unwrap();
        req.headers_mut()
            .insert("Authorization", format!("Bearer {token}").parse().unwrap());
        match connect_async(req).await {
            Ok((ws, _)) => Ok(Client::wrap(ws)),
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
            Err(e) => panic!("unexpected connect error {e}"),
        }
    }

    pub fn wrap(ws: Ws) -> Client {
        Client {
            ws,
            next_ref: 1,
            pushed: Vec::new(),
        }
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws
            .send(Message::text(text.into()))
            .await
            .expect("send");
    }

    /// Next JSON frame from the server, or panics after [`WAIT`].
    pub async fn recv(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame within the wait")
                .expect("stream open")
                .expect("frame ok");
            match msg {
                Message::Text(t) => {
                    return serde_json::from_str(t.as_str()).expect("server frames are JSON");
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The next reply to a request (a frame with a `ref`); pushes (messages,
    /// presence) before it are kept in `pushed`.
    pub async fn next_reply(&mut self) -> Value {
        self.recv_until(|v| v.get("ref").is_some()).await
    }

    /// The next frame that `wanted` accepts; those before it are kept in `pushed`.
    async fn recv_until(&mut self, wanted: impl Fn(&Value) -> bool) -> Value {
        loop {
            let v = self.recv().await;
            if wanted(&v) {
                return v;
            }
            self.pushed.push(v);
        }
    }

    /// The next reply, asserted to be of type `ty` and to answer `r#ref`.
    pub async fn reply_to(&mut self, r#ref: Value, ty: &str) -> Value {
        let v = self.next_reply().await;
        assert_eq!((&v["type"], &v["ref"]), (&json!(ty), &r#ref), "{v}");
        v
    }

    /// Writes `frames` in one write (pipelined), without waiting for replies.
    pub async fn write_at_once(&mut self, frames: impl IntoIterator<Item = Value>) {
        for f in frames {
            self.ws
                .feed(Message::text(f.to_string()))
                .await
                .expect("feed");
        }
        self.ws.flush().await.expect("flush");
    }

    /// Sends `frame` with a fresh `ref` and returns the reply with that ref;
    /// frames without it are kept in `pushed`.
    pub async fn request(&mut self, mut frame: Value) -> Value {
        let r = self.next_ref;
        self.next_ref += 1;
        frame["ref"] = json!(r);
        self.send_text(frame.to_string()).await;
        self.recv_until(|v| v.get("ref") == Some(&json!(r))).await
    }

    /// Like [`Client::request`] but asserts an `ok` (or the given type).
    pub async fn ok(&mut self, frame: Value) -> Value {
        let v = self.request(frame.clone()).await;
        let mut shown = frame.to_string();
        shown.truncate(200);
        assert!(
            v["type"] == "ok" || v["type"] == "history" || v["type"] == "pong",
            "expected success for {shown}, got {v}"
        );
        v
    }

    /// Asserts an `error` with `code`.
    pub async fn err(&mut self, frame: Value, code: &str) -> Value {
        let v = self.request(frame.clone()).await;
        assert_eq!(
            v["type"], "error",
            "expected error {code} for {frame}, got {v}"
        );
        assert_eq!(v["code"], code, "for {frame}: {v}");
        assert!(
            v["message"].as_str().is_some_and(|m| !m.is_empty()),
            "error needs a message: {v}"
        );
        v
    }

    /// The next pushed frame of `ty` (already seen or arriving).
    pub async fn next_push(&mut self, ty: &str) -> Value {
        if let Some(i) = self.pushed.iter().position(|v| v["type"] == ty) {
            return self.pushed.remove(i);
        }
        self.recv_until(|v| v["type"] == ty).await
    }

    /// Reads until the server closes; returns the close code.
    pub async fn closed(&mut self) -> u16 {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("close within the wait");
            match msg {
                Some(Ok(Message::Close(Some(CloseFrame { code, .. })))) => return u16::from(code),
                Some(Ok(Message::Close(None))) => return 1005,
                Some(Ok(Message::Text(t))) => self
                    .pushed
                    .push(serde_json::from_str(t.as_str()).unwrap_or(Value::Null)),
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("connection failed before a close frame: {e}"),
                None => panic!("connection ended without a close frame"),
            }
        }
    }
}

pub fn close_code(c: CloseCode) -> u16 {
    u16::from(c)
}

/// One request each from `n` fresh anonymous connections, all at once; the
/// replies in request order.
pub async fn anon_burst(addr: SocketAddr, n: usize, frame: impl Fn(usize) -> Value) -> Vec<Value> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let f = frame(i);
            tokio::spawn(async move { Client::anon(addr).await.request(f).await })
        })
        .collect();
    let mut replies = Vec::with_capacity(n);
    for t in tasks {
        replies.push(t.await.unwrap());
    }
    replies
}

/// A plain HTTP GET on the node; returns status, headers and body.
pub async fn http_get(addr: SocketAddr, path: &str, auth: Option<&str>) -> (u16, String, String) {
    http(addr, "GET", path, auth, None).await
}

/// Minimal HTTP/1.1 client over a raw socket, so tests need no HTTP crate.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<&str>,
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(a) = auth {
        req.push_str(&format!("Authorization: Bearer {a}\r\n"));
    }
    let body = body.unwrap_or("");
    req.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("http answer")
        .unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_owned(), dechunk(head, body))
}

fn dechunk(head: &str, body: &str) -> String {
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return body.to_owned();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].strip_prefix("\r\n").unwrap_or(&tail[n..]);
    }
    out
}
