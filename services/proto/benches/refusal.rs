//! The CPU part of refusing a `send` under overload, without the sockets:
//! parse the frame (as the loadtest sends it: a 64-byte body, string `ref`
//! and `cid`) and encode the `overloaded` reply. docs/OVERLOAD.md compares it
//! with what a refusal costs a saturated node in all (about 6.7 µs), to show
//! how much of that is the frame work and how much the I/O around it.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use dialtone_proto::{ErrorCode, client, codes::Failure, server};

const FRAME: &str = r#"{"type":"send","room":"lt-room-0007","body":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx","cid":"u123:k4567:s89012345","ref":"s:89012345"}"#;

fn refusal(c: &mut Criterion) {
    let overloaded = Failure::retry(ErrorCode::Overloaded, "send queue overloaded", 1000);
    c.bench_function("parse a send frame", |b| {
        b.iter(|| client::parse(black_box(FRAME)));
    });
    c.bench_function("parse + encode the overloaded reply", |b| {
        b.iter(|| {
            let frame = client::parse(black_box(FRAME));
            server::error(frame.r#ref.as_ref(), &overloaded)
        });
    });
}

criterion_group!(benches, refusal);
criterion_main!(benches);
