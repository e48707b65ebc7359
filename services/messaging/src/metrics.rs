//! Metric handles used on the fan-out path, registered once.

use std::sync::OnceLock;

use metrics::{Counter, counter};

pub struct Hot {
    pub messages_out: Counter,
    pub presence_out: Counter,
}

/// Handles for the hot path; looking a counter up by name per delivery
/// would cost a hash and a lock each time.
pub fn hot() -> &'static Hot {
    static HOT: OnceLock<Hot> = OnceLock::new();
    HOT.get_or_init(|| Hot {
        messages_out: counter!("dialtone_frames_out_total", "type" => "message"),
        presence_out: counter!("dialtone_frames_out_total", "type" => "presence"),
    })
}
