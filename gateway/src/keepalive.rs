//! Dead-peer detection with one shared ticker instead of a timer per
//! connection: every tick each connection pings its peer, and a connection
//! that heard nothing (no frame, no pong) since the previous tick is
//! dropped. A vanished client (no FIN, no RST) costs at most two intervals.

use std::time::Duration;

use tokio::sync::watch;

pub struct Keepalive {
    tick: watch::Sender<u64>,
}

impl Default for Keepalive {
    fn default() -> Self {
        Keepalive {
            tick: watch::Sender::new(0),
        }
    }
}

impl Keepalive {
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.tick.subscribe()
    }

    /// Ticks every `every` until `stop` resolves; a zero interval never ticks.
    pub async fn run(&self, every: Duration, stop: impl Future<Output = ()>) {
        if every.is_zero() {
            return stop.await;
        }
        let ticking = async {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick of an interval is immediate; skip it.
            interval.tick().await;
            loop {
                interval.tick().await;
                self.tick.send_modify(|n| *n += 1);
            }
        };
        tokio::select! {
            () = stop => {}
            () = ticking => {}
        }
    }
}
