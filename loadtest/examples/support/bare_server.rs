//! A bare chat server speaking just enough of PROTOCOL.md (join, send with
//! a gap-free seq per room and fan-out, history, register/login), shared by
//! the `bare_node` example (the load generator's calibration target) and the
//! crate's own tests (`tests/mock_node.rs`, which can make it lose messages).

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

#[derive(Default)]
struct Room {
    log: Vec<Value>,
    members: HashMap<u64, mpsc::UnboundedSender<String>>,
}

#[derive(Default)]
struct Mock {
    rooms: Mutex<HashMap<String, Room>>,
    next_conn: AtomicU64,
    /// Deliver only messages whose seq is not a multiple of this (0 = all).
    drop_every: u64,
}

/// Starts the mock on 127.0.0.1:0 and returns its ws URL.
pub async fn start(addr: &str, drop_every: u64) -> String {
    let listener = TcpListener::bind(addr).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mock = Arc::new(Mock {
        drop_every,
        ..Mock::default()
    });
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let mock = mock.clone();
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                    serve(mock, ws).await;
                }
            });
        }
    });
    format!("ws://{addr}/ws")
}

async fn serve(mock: Arc<Mock>, ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>) {
    let id = mock.next_conn.fetch_add(1, Ordering::Relaxed);
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let writer = tokio::spawn(async move {
        while let Some(text) = rx.recv().await {
            if sink.send(Message::Text(text.into())).await.is_err() {
                break;
            }
        }
    });
    let mut joined: Vec<String> = Vec::new();
    while let Some(Ok(msg)) = stream.next().await {
        let Message::Text(text) = msg else { continue };
        let Ok(f) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let r = f["ref"].clone();
        let room = f["room"].as_str().unwrap_or("").to_string();
        let reply = match f["type"].as_str().unwrap_or("") {
            "register" | "login" => {
                json!({"type":"ok","ref":r,"user":f["user"],"token":"t","expires_at":0})
            }
            "join" => {
                let mut rooms = mock.rooms.lock().expect("lock");
                let room_state = rooms.entry(room.clone()).or_default();
                room_state.members.insert(id, tx.clone());
                joined.push(room.clone());
                json!({"type":"ok","ref":r,"room":room,"seq":room_state.log.len()})
            }
            "send" => {
                let mut rooms = mock.rooms.lock().expect("lock");
                let room_state = rooms.entry(room.clone()).or_default();
                let seq = room_state.log.len() as u64 + 1;
                let m = json!({"type":"message","room":room,"seq":seq,"id":format!("m{seq}"),
                    "from":"x","body":f["body"],"ts":0,"cid":f["cid"]});
                room_state.log.push(m.clone());
                let text = m.to_string();
                if mock.drop_every == 0 || !seq.is_multiple_of(mock.drop_every) {
                    for member in room_state.members.values() {
                        let _ = member.send(text.clone());
                    }
                }
                json!({"type":"ok","ref":r,"room":room,"seq":seq,"id":format!("m{seq}")})
            }
            "history" => {
                let rooms = mock.rooms.lock().expect("lock");
                let after = f["after"].as_u64().unwrap_or(0) as usize;
                let limit = f["limit"].as_u64().unwrap_or(100) as usize;
                let msgs: Vec<Value> = rooms
                    .get(&room)
                    .map(|r| r.log.iter().skip(after).take(limit).cloned().collect())
                    .unwrap_or_default();
                json!({"type":"history","ref":r,"room":room,"messages":msgs})
            }
            _ => json!({"type":"error","ref":r,"code":"bad_request","message":"?"}),
        };
        if tx.send(reply.to_string()).is_err() {
            break;
        }
    }
    let mut rooms = mock.rooms.lock().expect("lock");
    for room in joined {
        if let Some(r) = rooms.get_mut(&room) {
            r.members.remove(&id);
        }
    }
    drop(rooms);
    writer.abort();
}
