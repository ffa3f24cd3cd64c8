//! Fan-out of one committed event to many connections, and frame encoding.
//!
//! `cargo bench -p herald-core --bench fanout`

use std::hint::black_box;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use herald_core::{
    ConnectRequest, Engine, EngineConfig, Event, EventId, Output, PublishRequest, Target, Topic,
    TopicPattern, frame,
};

fn engine_with(subscribers: usize) -> (Engine, Instant) {
    // Simulated time needs an origin; only differences from it matter.
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let config = EngineConfig {
        max_connections: subscribers + 1,
        ..EngineConfig::default()
    };
    let mut engine = Engine::new(config, None, Default::default(), now);
    let pattern = TopicPattern::parse("bench").unwrap();
    for _ in 0..subscribers {
        engine
            .handle_connect(ConnectRequest::new(vec![pattern.clone()]), now)
            .unwrap();
    }
    while engine.poll_output().is_some() {}
    (engine, now)
}

/// Publishes one event to `target`, commits it and drains every output: one fan-out.
fn publish_and_drain(engine: &mut Engine, target: &Target, wall: u64, now: Instant) -> u64 {
    let out = engine
        .handle_publish(PublishRequest::new(target.clone(), "{\"n\":1}"), wall, now)
        .unwrap();
    engine.handle_committed(out.id, now);
    let mut sent = 0u64;
    while let Some(o) = engine.poll_output() {
        if let Output::Send { frame, .. } = o {
            sent += frame.len() as u64;
        }
    }
    sent
}

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout");
    for subscribers in [10_000usize, 100_000] {
        let (mut engine, now) = engine_with(subscribers);
        let topic = Target {
            topics: vec![Topic::new("bench").unwrap()],
            ..Target::default()
        };
        let broadcast = Target {
            broadcast: true,
            ..Target::default()
        };
        let mut wall = 1_700_000_000_000u64;
        group.throughput(Throughput::Elements(subscribers as u64));
        for (name, target) in [("topic", &topic), ("broadcast", &broadcast)] {
            group.bench_with_input(BenchmarkId::new(name, subscribers), &subscribers, |b, _| {
                b.iter(|| {
                    wall += 1;
                    black_box(publish_and_drain(&mut engine, target, wall, now))
                })
            });
        }
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for (name, data) in [
        ("64B", "x".repeat(64)),
        ("1KiB-multiline", "line of text\n".repeat(79)),
    ] {
        let event = Event {
            id: EventId::new(1_700_000_000_000, 7),
            target: Target::default(),
            event_type: Some(herald_core::EventType::new("update").unwrap()),
            data,
        };
        group.throughput(Throughput::Bytes(event.data.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| black_box(frame::encode_event(black_box(&event))))
        });
    }
    group.finish();
}

criterion_group!(benches, fanout, encode);
criterion_main!(benches);
