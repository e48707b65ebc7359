//! Test helpers: workers driven by commands, and events rendered as short
//! strings (`"a:started"`, `"a:exited(shutdown)"`) so tests read as a story.
#![allow(dead_code)] // each test file uses a different subset

use std::time::Duration;

use supervisor::call::{self, Mailbox, ServerRef};
use supervisor::{ChildSpec, Event, EventKind, ExitReason, Restart};
use tokio::sync::broadcast;

/// What a controlled worker does next.
#[derive(Debug)]
pub enum Cmd {
    Exit,
    Fail,
    Panic,
}

/// Remote control for a worker; commands queue across restarts.
pub type Remote = ServerRef<Cmd, ()>;

/// A worker that obeys commands and stops promptly when cancelled.
pub fn controlled(name: &str, restart: Restart) -> (ChildSpec, Remote) {
    let (remote, mailbox) = call::channel::<Cmd, ()>(16);
    (worker_on(name, restart, mailbox), remote)
}

fn worker_on(name: &str, restart: Restart, mailbox: Mailbox<Cmd, ()>) -> ChildSpec {
    ChildSpec::worker(name, restart, move |ctx| {
        let mailbox = mailbox.clone();
        Box::pin(async move {
            let mut inbox = mailbox.take().await;
            tokio::select! {
                () = ctx.cancelled() => Ok(()),
                req = inbox.recv() => match req.map(|r| r.request) {
                    Some(Cmd::Exit) | None => Ok(()),
                    Some(Cmd::Fail) => Err(supervisor::ChildError::new("told to fail")),
                    Some(Cmd::Panic) => panic!("told to panic"),
                },
            }
        })
    })
}

/// A worker that ignores cancellation entirely.
pub fn stubborn(name: &str) -> ChildSpec {
    ChildSpec::worker(name, Restart::Permanent, |_ctx| {
        Box::pin(async {
            std::future::pending::<()>().await;
            Ok(())
        })
    })
}

pub fn events() -> (broadcast::Sender<Event>, broadcast::Receiver<Event>) {
    broadcast::channel(4096)
}

pub fn render(e: &Event) -> String {
    let what = match &e.kind {
        EventKind::Started => "started".to_owned(),
        EventKind::Exited { reason } => match reason {
            ExitReason::Normal => "exited(normal)".to_owned(),
            ExitReason::Error(_) => "exited(error)".to_owned(),
            ExitReason::Shutdown => "exited(shutdown)".to_owned(),
            ExitReason::Killed => "exited(killed)".to_owned(),
        },
        EventKind::Panicked { .. } => "panicked".to_owned(),
        EventKind::Restarting { attempt, .. } => format!("restarting({attempt})"),
        EventKind::GaveUp { .. } => "gave_up".to_owned(),
    };
    format!("{}:{what}", e.child)
}

/// The next event. The paused clock auto-advances while everything is idle,
/// so a missing event fails after a long virtual minute instead of hanging.
pub async fn next(rx: &mut broadcast::Receiver<Event>) -> Event {
    tokio::time::timeout(Duration::from_secs(3600), rx.recv())
        .await
        .expect("no event within an hour of virtual time")
        .expect("event channel lagged or closed")
}

/// The next `n` events, rendered.
pub async fn take(rx: &mut broadcast::Receiver<Event>, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(render(&next(rx).await));
    }
    out
}

/// Events up to and including the first one rendered as `last`.
pub async fn until(rx: &mut broadcast::Receiver<Event>, last: &str) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let e = render(&next(rx).await);
        let done = e == last;
        out.push(e);
        if done {
            return out;
        }
    }
}

pub fn send(remote: &Remote, cmd: Cmd) {
    remote
        .cast(cmd)
        .expect("control mailbox accepts the command");
}
