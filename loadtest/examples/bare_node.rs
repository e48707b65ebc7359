//! A bare chat server for calibrating the load generator: join, send with a
//! gap-free seq per room and fan-out, history, register/login, and nothing
//! else (no auth, no regulation, no supervision). Whatever latency `loadtest`
//! measures against it is the load generator's own floor on this machine.
//!
//! `cargo run --release -p loadtest --example bare_node -- 127.0.0.1:9090`

#[path = "support/bare_server.rs"]
mod bare_server;

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9090".into());
    let url = bare_server::start(&addr, 0).await;
    println!("listening on {url}");
    std::future::pending::<()>().await;
}
