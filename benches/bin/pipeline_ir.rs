//! Runs the criterion bench's small batch (`small_batch`) through `Pipeline::process` a
//! given number of times, for callgrind to count the instructions of each variant: a
//! figure with no noise, which the timed bench on a shared machine cannot give.
//!
//! `pipeline_ir VARIANT BATCHES` with VARIANT one of plain, members, urpf, edge. Under
//! `valgrind --tool=callgrind --toggle-collect='corridor_engine::pipeline::Pipeline::process'`
//! the collected total divided by BATCHES x 64 is the instructions per frame; the frames
//! are restored between batches outside `process`, so outside the count.

use corridor_benches::small_batch::{self, Variant, BATCH, CHUNK, HEADROOM};
use corridor_engine::pipeline::{PacketBuf, Pipeline, Verdict};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: pipeline_ir plain|members|urpf|edge BATCHES";
    let variant = match args.get(1).map(String::as_str) {
        Some("plain") => Variant::Plain,
        Some("members") => Variant::Members,
        Some("urpf") => Variant::Urpf,
        Some("edge") => Variant::Edge,
        _ => panic!("{usage}"),
    };
    let batches: usize = args.get(2).and_then(|n| n.parse().ok()).expect(usage);
    let fib = small_batch::fib(variant);
    let mut reader = fib.reader();
    let mut pipeline = Pipeline::new(&small_batch::config(variant)).expect("valid config");
    let frames: Vec<Vec<u8>> = (0..BATCH).map(small_batch::frame).collect();
    let pristine = small_batch::pristine(&frames);
    let mut umem = pristine.clone();
    let mut verdicts = [Verdict::Forward { port: 0, start: 0, len: 0 }; BATCH];
    for _ in 0..batches {
        umem.copy_from_slice(&pristine);
        let mut chunks = umem.chunks_mut(CHUNK);
        let mut bufs: [PacketBuf; BATCH] = std::array::from_fn(|i| PacketBuf {
            chunk: chunks.next().expect("a chunk per frame"),
            start: HEADROOM,
            len: frames[i].len(),
            port: 0,
        });
        pipeline.process(&reader, &mut bufs, &mut verdicts, 0);
        reader.quiescent();
        // Every frame forwarded, or the count is of something else.
        assert!(verdicts.iter().all(|v| matches!(v, Verdict::Forward { port: 1, .. })), "{verdicts:?}");
    }
    let s = pipeline.counters().snapshot();
    println!("{} batches of {BATCH}: member 0 rx {}, drops {}", batches, s.member(0).rx_packets, s.total_drops());
}
