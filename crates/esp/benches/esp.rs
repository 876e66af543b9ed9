//! ESP seal and open in place at 64/512/1400/9000-byte IP packets, beside the raw AEAD call of
//! AWS-LC on the same payload (the floor zsfc's overhead is measured against).
#![expect(
    clippy::unwrap_used,
    reason = "helpers of tests and benchmarks: a failure should stop them loudly, with its place"
)]
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use zsfc_esp::{Algorithm, InboundSa, Instant, OutboundSa, SaConfig, SaKey};
use zsfc_wire::{PacketBuf, ipv4};

const SIZES: [usize; 4] = [64, 512, 1400, 9000];

/// An IPv4/UDP packet of `size` bytes in total.
fn packet(size: usize) -> Vec<u8> {
    let mut b = vec![0x5a; size];
    let r = ipv4::Repr::new([10, 0, 0, 1], [10, 0, 0, 2], 17, (size - 20) as u16);
    r.emit(&mut b).unwrap();
    b
}

fn bench(c: &mut Criterion) {
    let keymat = [0x42u8; 36];
    let cfg = SaConfig::new(0x1000, SaKey::new(Algorithm::Aes256Gcm, &keymat).unwrap());
    let raw = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &keymat[..32]).unwrap());
    let mut g = c.benchmark_group("esp");
    for size in SIZES {
        let pkt = packet(size);
        g.throughput(Throughput::Bytes(size as u64));

        let mut tx = OutboundSa::new(&cfg, Instant::ZERO).unwrap();
        g.bench_with_input(BenchmarkId::new("seal", size), &pkt, |b, p| {
            b.iter_batched_ref(
                || PacketBuf::from_slice(p),
                |buf| tx.seal(Instant::ZERO, buf).unwrap(),
                BatchSize::SmallInput,
            )
        });

        let mut tx = OutboundSa::new(&cfg, Instant::ZERO).unwrap();
        let mut rx = InboundSa::new(&cfg, Instant::ZERO).unwrap();
        g.bench_with_input(BenchmarkId::new("open", size), &pkt, |b, p| {
            b.iter_batched_ref(
                || {
                    let mut buf = PacketBuf::from_slice(p);
                    tx.seal(Instant::ZERO, &mut buf).unwrap();
                    buf
                },
                |buf| rx.open(Instant::ZERO, buf).unwrap(),
                BatchSize::SmallInput,
            )
        });

        // The link-protected transport: GMAC over a whole labelled packet (RFC 4543).
        let gmac = SaConfig::new(0x2000, SaKey::new(Algorithm::Aes128Gmac, &keymat[..20]).unwrap());
        let mut tx = OutboundSa::new(&gmac, Instant::ZERO).unwrap();
        g.bench_with_input(BenchmarkId::new("link_seal_gmac", size), &pkt, |b, p| {
            b.iter_batched_ref(
                || PacketBuf::from_slice(p),
                |buf| tx.seal_link(Instant::ZERO, buf, 137).unwrap(),
                BatchSize::SmallInput,
            )
        });

        // The AEAD alone over the same bytes ESP encrypts (payload + 2-byte trailer).
        let body = vec![0x5au8; size - 20 + 2];
        let aad = [0u8; 12];
        let mut n = 0u64;
        g.bench_with_input(BenchmarkId::new("raw_aead_seal", size), &body, |b, body| {
            b.iter_batched_ref(
                || body.clone(),
                |buf| {
                    n += 1;
                    let mut nonce = [0u8; 12];
                    nonce[4..].copy_from_slice(&n.to_be_bytes());
                    raw.seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(&aad), buf).unwrap()
                },
                BatchSize::SmallInput,
            )
        });
        g.bench_with_input(BenchmarkId::new("raw_aead_open", size), &body, |b, body| {
            b.iter_batched_ref(
                || {
                    let mut v = body.clone();
                    let tag = raw
                        .seal_in_place_separate_tag(Nonce::assume_unique_for_key([1; 12]), Aad::from(&aad), &mut v)
                        .unwrap();
                    v.extend_from_slice(tag.as_ref());
                    v
                },
                |buf| raw.open_in_place(Nonce::assume_unique_for_key([1; 12]), Aad::from(&aad), buf).unwrap().len(),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
