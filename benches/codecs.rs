//! Encode and decode, per message, in both heartbeat protocols: what the hub
//! spends on bytes <-> messages for one heartbeat and its reply, and what
//! the native client (the load generator) spends on its side.
//!
//! - compat (JSON lines, SPEC §3.1): decode a real tagent's heartbeat line
//!   (`compat::decode_line`: parse and validate, the hub's first step on
//!   every line), encode the
//!   OK reply, and the updategroup reply;
//! - native (MessagePack frames, SPEC §3.3): decode a heartbeat frame
//!   (`proto::decode_client`), encode the ack frame; and the client's side:
//!   encode a heartbeat, decode an ack.
//!
//! Run: `cargo bench --bench codecs`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tagent_hub::heartbeat::compat;
use tagent_hub::heartbeat::proto::{self, ClientMsg, ServerMsg};

/// A heartbeat as the Perl tagent sends it (SPEC §3.1), with a small appsInfo.
const HEARTBEAT_LINE: &[u8] = br#"{"type":"monitor","tenant":"test","agentId":123,"port":3939,"ipString":"10.0.0.25,172.17.0.1","proxyGroup":"10.0.0.21:8888","proxyGroupId":"7","proxyIp":"10.0.0.21","proxyPort":8888,"pcpu":0.3,"mem":41,"status":"working","version":"1.5.4","mgmtIp":"10.0.0.25","appsInfo":{"mysql":{"status":"running"},"nginx":{"status":"running"}}}"#;

fn bench_compat(c: &mut Criterion) {
    let mut g = c.benchmark_group("compat");
    g.throughput(Throughput::Elements(1));
    // It decodes to a heartbeat, or the bench would time another path.
    assert!(matches!(
        compat::decode_line(HEARTBEAT_LINE),
        compat::Decoded::Heartbeat(_)
    ));
    g.bench_function("decode_heartbeat_line", |b| {
        b.iter(|| {
            black_box(matches!(
                compat::decode_line(black_box(HEARTBEAT_LINE)),
                compat::Decoded::Heartbeat(_)
            ))
        })
    });
    let mut out = Vec::with_capacity(256);
    g.bench_function("encode_ok_reply", |b| {
        b.iter(|| {
            out.clear();
            out.extend_from_slice(black_box(compat::OK));
            black_box(out.len())
        })
    });
    g.bench_function("encode_updategroup_reply", |b| {
        b.iter(|| {
            out.clear();
            compat::updategroup_line(&mut out, black_box("10.0.0.21:8888,10.0.0.22:8888"));
            black_box(out.len())
        })
    });
    g.finish();
}

fn bench_native(c: &mut Criterion) {
    let mut g = c.benchmark_group("native");
    g.throughput(Throughput::Elements(1));
    let heartbeat = ClientMsg::Heartbeat {
        seq: 123_456,
        pcpu: Some(0.3),
        mem: Some(41.0),
    };
    let ack = ServerMsg::Ack {
        seq: 123_456,
        update_group: None,
    };
    let mut frame = Vec::new();
    proto::encode_frame(&heartbeat, &mut frame);
    let payload = frame[4..].to_vec();
    assert_eq!(proto::decode_client(&payload).unwrap(), heartbeat);
    let mut ack_frame = Vec::new();
    proto::encode_frame(&ack, &mut ack_frame);
    let ack_payload = ack_frame[4..].to_vec();
    assert_eq!(
        rmp_serde::from_slice::<ServerMsg<'_>>(&ack_payload).unwrap(),
        ack
    );

    g.bench_function("decode_heartbeat_frame", |b| {
        b.iter(|| black_box(proto::decode_client(black_box(&payload)).is_ok()))
    });
    let mut out = Vec::with_capacity(64);
    g.bench_function("encode_ack_frame", |b| {
        b.iter(|| {
            out.clear();
            proto::encode_frame(black_box(&ack), &mut out);
            black_box(out.len())
        })
    });
    g.bench_function("client_encode_heartbeat_frame", |b| {
        b.iter(|| {
            out.clear();
            proto::encode_frame(black_box(&heartbeat), &mut out);
            black_box(out.len())
        })
    });
    g.bench_function("client_decode_ack_frame", |b| {
        b.iter(|| {
            black_box(rmp_serde::from_slice::<ServerMsg<'_>>(black_box(&ack_payload)).is_ok())
        })
    });
    g.finish();
}

criterion_group!(benches, bench_compat, bench_native);
criterion_main!(benches);
