//! Runs the criterion bench's small batch (`small_batch`) through `Pipeline::process` a
//! given number of times, for callgrind to count the instructions of each variant: a
//! figure with no noise, which the timed bench on a shared machine cannot give.
//!
//! `pipeline_ir VARIANT BATCHES` with VARIANT one of plain, members, urpf, edge. Under
//! `valgrind --tool=callgrind --toggle-collect='corridor_engine::pipeline::Pipeline::process'`
//! the collected total divided by BATCHES x 64 is the instructions per frame; the frames
//! are restored between batches outside `process`, so outside the count.
//!
//! Further words after BATCHES: `v4` or `v6` for a batch of that family alone (the
//! same flows' destinations), `full` for the full path alone (`Pipeline::set_fast_path`).
//!
//! `pipeline_ir time ROUNDS BATCHES` times the four variants taking turns instead (round
//! after round, each variant BATCHES batches per turn, the frames restored outside the
//! timing), so that a shared machine's drift lands on all of them; it prints each one's
//! median ns per batch over the rounds and, against plain, the median of the per-round
//! ratios of throughput. Pin it (`taskset -c 1`).

use corridor_benches::small_batch::{self, Dst, Variant, BATCH, CHUNK, HEADROOM};
use corridor_engine::fib::{Fib, FibReader};
use corridor_engine::pipeline::{PacketBuf, Pipeline, Verdict};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

const VARIANTS: [(&str, Variant); 4] =
    [("plain", Variant::Plain), ("members", Variant::Members), ("urpf", Variant::Urpf), ("edge", Variant::Edge)];

/// One variant's FIB, pipeline and frames.
struct Case {
    /// The writer, kept for as long as its reader reads.
    _fib: Fib,
    reader: FibReader,
    pipeline: Pipeline,
    frames: Vec<Vec<u8>>,
    pristine: Vec<u8>,
    umem: Vec<u8>,
}

impl Case {
    fn new(variant: Variant) -> Case {
        Case::with(variant, small_batch::frame)
    }

    /// The batch of `family` ("v4", "v6") alone, or the mixed one.
    fn for_family(variant: Variant, family: Option<&str>) -> Case {
        match family {
            Some("v4") => Case::with(variant, |i| small_batch::frame_to(i, Dst::V4(Ipv4Addr::new(198, 19, (i % 8) as u8, i as u8)))),
            Some("v6") => Case::with(variant, |i| {
                small_batch::frame_to(i, Dst::V6(Ipv6Addr::new(0x2001, 0xdb8, (i % 8) as u16, 0, 0, 0, 0, i as u16)))
            }),
            _ => Case::new(variant),
        }
    }

    fn with(variant: Variant, frame: impl Fn(usize) -> Vec<u8>) -> Case {
        let fib = small_batch::fib(variant);
        let reader = fib.reader();
        let pipeline = Pipeline::new(&small_batch::config(variant)).expect("valid config");
        let frames: Vec<Vec<u8>> = (0..BATCH).map(frame).collect();
        let pristine = small_batch::pristine(&frames);
        let umem = pristine.clone();
        Case { _fib: fib, reader, pipeline, frames, pristine, umem }
    }

    /// Runs `batches` batches; the time spent in `process` alone.
    fn run(&mut self, batches: usize) -> Duration {
        let mut verdicts = [Verdict::Forward { port: 0, start: 0, len: 0 }; BATCH];
        let mut spent = Duration::ZERO;
        for _ in 0..batches {
            self.umem.copy_from_slice(&self.pristine);
            let mut chunks = self.umem.chunks_mut(CHUNK);
            let frames = &self.frames;
            let mut bufs: [PacketBuf; BATCH] = std::array::from_fn(|i| PacketBuf {
                chunk: chunks.next().expect("a chunk per frame"),
                start: HEADROOM,
                len: frames[i].len(),
                port: 0,
            });
            let t = Instant::now();
            self.pipeline.process(&self.reader, &mut bufs, &mut verdicts, 0);
            spent += t.elapsed();
            self.reader.quiescent();
            // Every frame forwarded, or the figure is of something else.
            assert!(verdicts.iter().all(|v| matches!(v, Verdict::Forward { port: 1, .. })), "{verdicts:?}");
        }
        spent
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: pipeline_ir plain|members|urpf|edge BATCHES [v4|v6] [full] | pipeline_ir time ROUNDS BATCHES [v4|v6] [full|paths]";
    let number = |i: usize| -> usize { args.get(i).and_then(|n| n.parse().ok()).expect(usage) };
    if args.get(1).map(String::as_str) == Some("time") {
        let (rounds, batches) = (number(2), number(3));
        let words: Vec<&str> = args.iter().skip(4).map(String::as_str).collect();
        let family = words.iter().find(|w| **w == "v4" || **w == "v6").copied();
        // `paths`: plain with the fast path, then plain with the full path alone, in turns;
        // otherwise the four variants, with the fast path unless `full`.
        let named: Vec<(String, Case)> = if words.contains(&"paths") {
            [("plain, fast path", true), ("plain, full path", false)]
                .into_iter()
                .map(|(name, fast)| {
                    let mut case = Case::for_family(Variant::Plain, family);
                    case.pipeline.set_fast_path(fast);
                    (name.to_string(), case)
                })
                .collect()
        } else {
            VARIANTS
                .iter()
                .map(|&(name, v)| {
                    let mut case = Case::for_family(v, family);
                    case.pipeline.set_fast_path(!words.contains(&"full"));
                    (name.to_string(), case)
                })
                .collect()
        };
        let (names, mut cases): (Vec<String>, Vec<Case>) = named.into_iter().unzip();
        // ns per batch, by variant, round after round.
        let mut ns: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
        for _ in 0..rounds {
            for (case, out) in cases.iter_mut().zip(ns.iter_mut()) {
                out.push(case.run(batches).as_nanos() as f64 / batches as f64);
            }
        }
        println!("{rounds} rounds of {batches} batches of {BATCH} per variant, taking turns");
        println!("| variant | ns per batch (median) | ns per frame | x plain (median of per-round ratios) |");
        println!("|---|---:|---:|---:|");
        for (name, times) in names.iter().zip(&ns) {
            let ratio = median(ns[0].iter().zip(times).map(|(p, t)| p / t).collect());
            let m = median(times.clone());
            println!("| {name} | {m:.0} | {:.1} | {ratio:.2}x |", m / BATCH as f64);
        }
        return;
    }
    let variant = VARIANTS.iter().find(|(name, _)| Some(*name) == args.get(1).map(String::as_str)).expect(usage).1;
    let batches = number(2);
    let words: Vec<&str> = args.iter().skip(3).map(String::as_str).collect();
    let family = words.iter().find(|w| **w == "v4" || **w == "v6").copied();
    let mut case = Case::for_family(variant, family);
    case.pipeline.set_fast_path(!words.contains(&"full"));
    case.run(batches);
    let s = case.pipeline.counters().snapshot();
    println!("{} batches of {BATCH}: member 0 rx {}, drops {}", batches, s.member(0).rx_packets, s.total_drops());
}
