//! `Pipeline::process` on one batch of 64 forged frames, half IPv4 and half IPv6, every
//! one forwarded (TTL decrement, checksum update, MAC rewrite, ECMP pick). The figure is
//! the batch time; divide by 64 for the cost per frame. Frames are restored between
//! iterations outside the measurement, so every iteration forwards the same batch.
//! `process_64_mixed_members` is the same with exchange members counted (the sender and
//! both next hops are members): the cost of the member lookup and the per-member counters,
//! against `process_64_mixed` in the same run. `process_64_mixed_edge` adds the edge
//! checks of the fast path on the sender's port: strict uRPF (the sources routed back out
//! of it, so the source lookups ride with the destinations') and the sender's source filter
//! (BCP 38, 256 prefixes holding its sources); every frame still forwarded;
//! `process_64_mixed_urpf` is strict uRPF alone, no members. Port security
//! runs in the XDP program, before the pipeline: the forwarding benchmark's corridor-1e
//! measures it.
//!
//! `full_tables/*` is the realistic case: the real IPv4 and IPv6 tables (../shared/data)
//! loaded, 256 distinct batches of 64 frames (all IPv4, all IPv6, or alternating) whose
//! destinations are drawn from announced prefixes, taken in turn, so the FIB lookups
//! reach all over the tables as real traffic does. Before each batch its frames are put
//! back as received (`restore`: the bytes `process` writes, not whole chunks, which would
//! flush the caches). `fib_only/*` times the FIB's batched
//! lookups of the same destinations alone (one call per family, as `process` does), so
//! `full_tables` minus `fib_only` is the pipeline's own work without the FIB lookup. The
//! summary at the end prints ns per frame for each, from the same run, `process` with
//! the fast path off (`Pipeline::set_fast_path`), the two taking turns pass by pass, and
//! `process` on the first batch alone, over and over, its table entries warm.

use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};

use corridor_benches::small_batch::{self, frame, frame_to, port, Dst, Variant, BATCH, CHUNK, HEADROOM, MAC_IN, MAC_OUT};
use corridor_benches::{announced, read_table, V4_TABLE, V6_TABLES};
use corridor_engine::fib::{Adjacency, Family, Fib, FibConfig, FibOp, FibReader, NextHop, Prefix, RouteTarget};
use corridor_engine::pipeline::{PacketBuf, Pipeline, PipelineConfig, UrpfMode, Verdict};
use corridor_engine::wire::ethernet::{self, ethertype};
use corridor_engine::wire::{ipv4, ipv6};
use criterion::{BatchSize, Criterion, Throughput};
use std::time::{Duration, Instant};

fn process(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(BATCH as u64));
    let variants = [
        ("process_64_mixed", Variant::Plain, false),
        ("process_64_mixed_members", Variant::Members, false),
        ("process_64_mixed_members_sflow", Variant::Members, true),
        ("process_64_mixed_urpf", Variant::Urpf, false),
        ("process_64_mixed_edge", Variant::Edge, false),
    ];
    for (name, variant, sampling) in variants {
        bench(&mut group, name, variant, sampling);
    }
    group.finish();
}

fn bench(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>, name: &str, variant: Variant, sampling: bool) {
    let members = matches!(variant, Variant::Members | Variant::Edge);
    let fib = small_batch::fib(variant);
    let mut reader = fib.reader();
    let mut pipeline = Pipeline::new(&small_batch::config(variant)).unwrap();
    let ring = pipeline.sample_ring().clone();
    ring.set_rates(if sampling { &[SAMPLE_RATE, SAMPLE_RATE] } else { &[0, 0] });
    let mut drained = Vec::with_capacity(4096);
    let frames: Vec<Vec<u8>> = (0..BATCH).map(frame).collect();
    let pristine = small_batch::pristine(&frames);

    // Every frame must be forwarded, or the figure measures something else.
    let mut umem = pristine.clone();
    let mut verdicts = [Verdict::Forward { port: 0, start: 0, len: 0 }; BATCH];
    let mut chunks = umem.chunks_mut(CHUNK);
    let mut bufs: [PacketBuf; BATCH] =
        std::array::from_fn(|i| PacketBuf { chunk: chunks.next().unwrap(), start: HEADROOM, len: frames[i].len(), port: 0 });
    pipeline.process(&reader, &mut bufs, &mut verdicts, 0);
    assert!(verdicts.iter().all(|v| matches!(v, Verdict::Forward { port: 1, .. })), "{verdicts:?}");
    let counted = pipeline.counters().snapshot().member(0).rx_packets;
    assert_eq!(counted, if members { BATCH as u64 } else { 0 }, "members counted only when set");
    let urpf = pipeline.urpf().get(0);
    assert_eq!(urpf.mode == UrpfMode::Strict, matches!(variant, Variant::Urpf | Variant::Edge), "strict uRPF where asked");

    group.bench_function(name, |b| {
        b.iter_batched_ref(
            || {
                drained.clear();
                ring.drain(&mut drained, usize::MAX);
                pristine.clone()
            },
            |umem| {
                let mut chunks = umem.chunks_mut(CHUNK);
                let mut bufs: [PacketBuf; BATCH] =
                    std::array::from_fn(|i| PacketBuf { chunk: chunks.next().unwrap(), start: HEADROOM, len: frames[i].len(), port: 0 });
                pipeline.process(&reader, &mut bufs, &mut verdicts, 0);
                reader.quiescent();
                black_box(&verdicts);
            },
            // A few inputs per timed batch: 8 x 128 KiB of chunks, no timer read per iteration.
            BatchSize::NumIterations(8),
        )
    });
}

/// 1 in SAMPLE_RATE frames sampled, as the benchmark asks.
const SAMPLE_RATE: u32 = 1000;
const GROUPS: u32 = 16;

/// Whether frame `i` of the realistic batches is IPv4.
type Mix = fn(usize) -> bool;
const BATCHES: usize = 256;

/// The real tables, every route through one of 16 groups of two next hops on port 1.
fn full_fib() -> (Fib, Vec<Prefix>, Vec<Prefix>) {
    let mut fib = Fib::new(FibConfig::default()).unwrap();
    let mut ops = Vec::new();
    for g in 0..GROUPS {
        for a in [2 * g, 2 * g + 1] {
            ops.push(FibOp::SetAdjacency {
                id: a,
                adjacency: Adjacency { port: 1, vlan: 0, src_mac: MAC_OUT, dst_mac: [0x02, 0, 0, 0, 2, a as u8] },
            });
        }
        ops.push(FibOp::SetGroup {
            id: g,
            members: vec![NextHop { adjacency: 2 * g, weight: 1 }, NextHop { adjacency: 2 * g + 1, weight: 1 }],
        });
    }
    let v4 = read_table(V4_TABLE);
    let v6 = read_table(V6_TABLES[0]);
    ops.extend(
        v4.iter().chain(&v6).enumerate().map(|(i, p)| FibOp::AddRoute { prefix: *p, target: RouteTarget::Group(i as u32 % GROUPS) }),
    );
    fib.apply(&ops).expect("tables fit");
    (fib, v4, v6)
}

/// `BATCHES` batches of 64 frames to announced destinations: `mix` picks the family of
/// frame `i` (true: IPv4).
fn realistic(v4: &[Prefix], v6: &[Prefix], mix: impl Fn(usize) -> bool, seed: u64) -> Vec<Vec<u8>> {
    let n = BATCHES * BATCH;
    let d4 = announced(v4, n, seed);
    let d6 = announced(v6, n, seed + 1);
    (0..n)
        .map(|i| {
            let dst = if mix(i) { Dst::V4(Ipv4Addr::from(d4[i] as u32)) } else { Dst::V6(Ipv6Addr::from(d6[i])) };
            frame_to(i, dst)
        })
        .collect()
}

/// The bytes of a chunk that forwarding one of these frames may write: the link header
/// (at most 4 octets into the headroom, with a VLAN tag), the IP header, the padding to
/// 60 octets. Checked at start-up: everything outside it is still as it was.
const TOUCHED: std::ops::Range<usize> = HEADROOM - 64..HEADROOM + 192;

/// Puts batch `b`'s frames back as received: the window of every chunk that `process`
/// writes, as a NIC or the kernel's copy writes the frame and no more. Restoring whole
/// 2 KiB chunks instead streams 128 KiB per batch (32 MiB per pass) through the caches,
/// and the figure then measures a cold FIB and cold frames, not the pipeline.
fn restore(umem: &mut [u8], pristine: &[u8], b: usize) {
    for i in b * BATCH..(b + 1) * BATCH {
        let at = i * CHUNK;
        umem[at + TOUCHED.start..at + TOUCHED.end].copy_from_slice(&pristine[at + TOUCHED.start..at + TOUCHED.end]);
    }
}

/// Median ns per frame over `reps` passes of all batches; `pass` returns its timed part.
fn ns_per_frame(reps: usize, mut pass: impl FnMut() -> Duration) -> f64 {
    let mut t: Vec<f64> = (0..reps).map(|_| pass().as_secs_f64()).collect();
    t.sort_by(|a, b| a.total_cmp(b));
    t[reps / 2] * 1e9 / (BATCHES * BATCH) as f64
}

fn full_tables(c: &mut Criterion) {
    let (fib, v4, v6) = full_fib();
    let mut reader = fib.reader();
    let config = PipelineConfig { ports: vec![port(MAC_IN), port(MAC_OUT)], hash_seed: 0x5eed, ..PipelineConfig::default() };
    let mut pipeline = Pipeline::new(&config).unwrap();
    let mut summary = vec![];
    let mixes: [(&str, Mix); 3] = [("ipv4", |_| true), ("ipv6", |_| false), ("mixed", |i| i.is_multiple_of(2))];
    for (name, mix) in mixes {
        let frames = realistic(&v4, &v6, mix, 7);
        let mut pristine = vec![0u8; frames.len() * CHUNK];
        for (chunk, f) in pristine.chunks_mut(CHUNK).zip(&frames) {
            chunk[HEADROOM..HEADROOM + f.len()].copy_from_slice(f);
        }
        // The destinations of each batch, split by family as `process` splits them.
        let keys: Vec<(Vec<u32>, Vec<u128>)> = frames
            .chunks(BATCH)
            .map(|b| {
                let (mut k4, mut k6) = (vec![], vec![]);
                for f in b {
                    let e = ethernet::Frame::new_unchecked(&f[..]);
                    match e.ethertype() {
                        ethertype::IPV4 => k4.push(u32::from(ipv4::Packet::new_unchecked(e.payload()).dst_addr())),
                        _ => k6.push(u128::from(ipv6::Packet::new_unchecked(e.payload()).dst_addr())),
                    }
                }
                (k4, k6)
            })
            .collect();
        let mut umem = pristine.clone();
        let mut verdicts = [Verdict::Forward { port: 0, start: 0, len: 0 }; BATCH];
        assert!(frames.iter().all(|f| f.len() <= TOUCHED.end - HEADROOM - 64), "frames fit the restored window");
        // Batch `b` through `process`; the time `process` took. The frames' descriptors
        // are made before the clock starts: making them is the caller's work (the worker's
        // from its rx ring), not the pipeline's.
        let run = |umem: &mut [u8], b: usize, pipeline: &mut Pipeline, reader: &FibReader, verdicts: &mut [Verdict; BATCH]| {
            let mut chunks = umem[b * BATCH * CHUNK..(b + 1) * BATCH * CHUNK].chunks_mut(CHUNK);
            let mut bufs: [PacketBuf; BATCH] = std::array::from_fn(|i| PacketBuf {
                chunk: chunks.next().unwrap(),
                start: HEADROOM,
                len: frames[b * BATCH + i].len(),
                port: 0,
            });
            let t = Instant::now();
            pipeline.process(reader, &mut bufs, verdicts, 0);
            t.elapsed()
        };
        // Every frame must be forwarded, or the figure measures something else; and
        // `process` must write nothing outside the window that `restore` puts back.
        for b in 0..BATCHES {
            run(&mut umem, b, &mut pipeline, &reader, &mut verdicts);
            assert!(verdicts.iter().all(|v| matches!(v, Verdict::Forward { port: 1, .. })), "{name} batch {b}: {verdicts:?}");
            restore(&mut umem, &pristine, b);
            let batch = b * BATCH * CHUNK..(b + 1) * BATCH * CHUNK;
            assert!(umem[batch.clone()] == pristine[batch], "{name} batch {b}: process wrote outside the restored window");
        }

        let mut group = c.benchmark_group("full_tables");
        group.throughput(Throughput::Elements(BATCH as u64));
        let mut b = 0;
        // Timed per batch with the restore of its frames outside the timing (one clock
        // read per 64 frames).
        group.bench_function(format!("process_64_{name}"), |bench| {
            bench.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    b = (b + 1) % BATCHES;
                    restore(&mut umem, &pristine, b);
                    total += run(&mut umem, b, &mut pipeline, &reader, &mut verdicts);
                    reader.quiescent();
                    black_box(&verdicts);
                }
                total
            })
        });
        group.finish();
        let mut group = c.benchmark_group("fib_only");
        group.throughput(Throughput::Elements(BATCH as u64));
        let mut out4 = [0u32; BATCH];
        let mut out6 = [0u32; BATCH];
        group.bench_function(format!("lookup_64_{name}"), |bench| {
            bench.iter(|| {
                b = (b + 1) % BATCHES;
                let (k4, k6) = &keys[b];
                reader.lookup_v4_batch(k4, &mut out4[..k4.len()]);
                reader.lookup_v6_batch(k6, &mut out6[..k6.len()]);
                black_box((&out4, &out6));
            })
        });
        group.finish();

        // The summary's figures, in the same run for all: over all batches, each batch's
        // frames restored just before it (outside the timing, so they are in cache as the
        // criterion case has them), the median of 11 passes; the fast path on and off
        // (`Pipeline::set_fast_path`) taking turns pass by pass.
        let mut passes = [Vec::new(), Vec::new()];
        for _ in 0..11 {
            for (fast, out) in [true, false].into_iter().zip(passes.iter_mut()) {
                pipeline.set_fast_path(fast);
                let mut total = Duration::ZERO;
                for b in 0..BATCHES {
                    restore(&mut umem, &pristine, b);
                    total += run(&mut umem, b, &mut pipeline, &reader, &mut verdicts);
                    black_box(&verdicts);
                }
                reader.quiescent();
                out.push(total);
            }
        }
        pipeline.set_fast_path(true);
        // One batch over and over: its 64 destinations' table entries (and their address
        // translations) stay warm, which the 256 batches' 16 384 do not.
        let warm = ns_per_frame(11, || {
            let mut total = Duration::ZERO;
            for _ in 0..BATCHES {
                restore(&mut umem, &pristine, 0);
                total += run(&mut umem, 0, &mut pipeline, &reader, &mut verdicts);
                black_box(&verdicts);
            }
            reader.quiescent();
            total
        });
        let [fast, full] = passes.map(|p| {
            let mut p = p.into_iter();
            ns_per_frame(11, || p.next().unwrap_or_default())
        });
        let lookup = ns_per_frame(11, || {
            let t = Instant::now();
            for (k4, k6) in &keys {
                reader.lookup_v4_batch(k4, &mut out4[..k4.len()]);
                reader.lookup_v6_batch(k6, &mut out6[..k6.len()]);
                black_box((&out4, &out6));
            }
            t.elapsed()
        });
        summary.push((name, fast, full, lookup, warm));
    }
    println!("\n## Pipeline::process, full tables ({} IPv4 + {} IPv6 routes), batches of 64, ns per frame\n", v4.len(), v6.len());
    println!(
        "| frames | process | FIB lookups alone | process without the lookups | process, full path alone | process, one batch repeated |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, process, full, lookup, warm) in summary {
        println!("| {name} | {process:.1} | {lookup:.1} | {:.1} | {full:.1} | {warm:.1} |", process - lookup);
    }
    let _ = Family::V4;
}

fn main() {
    let mut c =
        Criterion::default().configure_from_args().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    process(&mut c);
    full_tables(&mut c);
    c.final_summary();
}
