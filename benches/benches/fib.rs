//! FIB benchmark: lookups per second per core on the real tables (random keys and keys
//! drawn from announced prefixes; one at a time and in batches of 64), load and delete
//! rates, and memory, against the `prefix-trie` crate's table on the same keys in the
//! same run. Criterion measures each case; a summary with ratios closes the run.

use corridor_benches::{announced, random_v4, random_v6, read_table, rss_bytes, V4_TABLE, V6_TABLES};
use corridor_engine::fib::{Adjacency, Family, Fib, FibConfig, FibOp, NextHop, Prefix, RouteTarget};
use criterion::{BenchmarkId, Criterion, Throughput};
use ipnet::{Ipv4Net, Ipv6Net};
use prefix_trie::PrefixMap;
use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

const KEYS: usize = 1 << 20;
const BATCH: usize = 64;
const GROUPS: u32 = 16;

fn group_of(p: &Prefix) -> u32 {
    ((p.addr_v6() ^ p.addr_v4() as u128 ^ p.len() as u128).wrapping_mul(0x9E37_79B9) >> 9) as u32 % GROUPS
}

fn setup_ops() -> Vec<FibOp> {
    (0..GROUPS)
        .flat_map(|g| {
            [
                FibOp::SetAdjacency { id: g, adjacency: Adjacency { port: g as u16, ..Default::default() } },
                FibOp::SetGroup { id: g, members: vec![NextHop { adjacency: g, weight: 1 }] },
            ]
        })
        .collect()
}

struct Loaded {
    fib: Fib,
    load_s: f64,
    rss: usize,
}

fn load(table: &[Prefix]) -> Loaded {
    let before = rss_bytes();
    let mut fib = Fib::new(FibConfig::default()).expect("default config");
    fib.apply(&setup_ops()).expect("setup");
    let ops: Vec<FibOp> = table.iter().map(|p| FibOp::AddRoute { prefix: *p, target: RouteTarget::Group(group_of(p)) }).collect();
    let t = Instant::now();
    fib.apply(&ops).expect("table fits");
    let load_s = t.elapsed().as_secs_f64();
    drop(ops);
    Loaded { rss: rss_bytes().saturating_sub(before), fib, load_s }
}

/// The median of five timed passes over all keys, in lookups per second.
fn rate(keys: usize, mut pass: impl FnMut() -> u64) -> f64 {
    let mut t: Vec<f64> = (0..5)
        .map(|_| {
            let s = Instant::now();
            black_box(pass());
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    keys as f64 / t[2]
}

struct Row {
    table: String,
    keys: &'static str,
    single: f64,
    batch: f64,
    baseline: f64,
}

fn main() {
    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(10);
    let mut rows = vec![];
    let mut notes = vec![];

    // ---- IPv4 ----
    // The IPv4 and IPv6 contests are written out rather than shared through a generic
    // helper taking the lookups as closures: that helper was tried and halved the measured
    // rates (the lookups stopped being inlined into the timed loops).
    let table = read_table(V4_TABLE);
    let loaded = load(&table);
    let mut fib = loaded.fib;
    let r = fib.reader();
    let mut trie: PrefixMap<Ipv4Net, u32> = PrefixMap::new();
    let t = Instant::now();
    for p in &table {
        trie.insert(Ipv4Net::new(Ipv4Addr::from(p.addr_v4()), p.len()).expect("valid"), group_of(p));
    }
    let trie_load = t.elapsed().as_secs_f64();
    for (kind, keys) in [("random", random_v4(KEYS, 1)), ("announced", announced(&table, KEYS, 2).into_iter().map(|a| a as u32).collect())]
    {
        // Same answers from both before timing anything.
        for &k in keys.iter().take(100_000) {
            let want = trie.get_lpm(&Ipv4Net::new(Ipv4Addr::from(k), 32).expect("host")).map(|(_, g)| *g);
            let got = r.lookup_v4(k).map(|t| match t {
                RouteTarget::Group(g) => g,
                other => panic!("{other}"),
            });
            assert_eq!(got, want, "{}", Ipv4Addr::from(k));
        }
        let mut out = vec![0u32; BATCH];
        let single = rate(keys.len(), || keys.iter().map(|&k| r.lookup_v4(k).is_some() as u64).sum());
        let batch = rate(keys.len(), || {
            let mut n = 0u64;
            for chunk in keys.chunks(BATCH) {
                r.lookup_v4_batch(chunk, &mut out);
                n += out[0] as u64;
            }
            n
        });
        let baseline = rate(keys.len(), || {
            keys.iter().map(|&k| trie.get_lpm(&Ipv4Net::new(Ipv4Addr::from(k), 32).expect("host")).is_some() as u64).sum()
        });
        rows.push(Row { table: format!("IPv4 {} ({})", V4_TABLE, table.len()), keys: kind, single, batch, baseline });

        let mut g = c.benchmark_group(format!("ipv4_{kind}"));
        g.throughput(Throughput::Elements(BATCH as u64));
        let sample = &keys[..BATCH * 1024];
        let mut i = 0;
        g.bench_function(BenchmarkId::new("corridor_batch64", table.len()), |b| {
            b.iter(|| {
                i = (i + BATCH) % sample.len();
                r.lookup_v4_batch(&sample[i..i + BATCH], &mut out);
                out[0]
            })
        });
        g.bench_function(BenchmarkId::new("corridor_single", table.len()), |b| {
            b.iter(|| {
                i = (i + BATCH) % sample.len();
                sample[i..i + BATCH].iter().map(|&k| r.lookup_v4(k).is_some() as u32).sum::<u32>()
            })
        });
        g.bench_function(BenchmarkId::new("prefix_trie", table.len()), |b| {
            b.iter(|| {
                i = (i + BATCH) % sample.len();
                sample[i..i + BATCH]
                    .iter()
                    .map(|&k| trie.get_lpm(&Ipv4Net::new(Ipv4Addr::from(k), 32).expect("host")).is_some() as u32)
                    .sum::<u32>()
            })
        });
        g.finish();
    }
    drop(r);
    let stats = fib.stats();
    let dels: Vec<FibOp> = table.iter().map(|p| FibOp::DeleteRoute { prefix: *p }).collect();
    let t = Instant::now();
    fib.apply(&dels).expect("delete");
    let del_s = t.elapsed().as_secs_f64();
    notes.push(format!(
        "- IPv4 full table ({} routes): load {:.2} s ({:.2} M routes/s; prefix-trie {:.2} s), delete {:.2} s ({:.2} M routes/s); \
         memory {:.1} MiB resident ({:.0} B/prefix), of which entries {:.1} MiB ({} trie nodes)",
        table.len(),
        loaded.load_s,
        table.len() as f64 / loaded.load_s / 1e6,
        trie_load,
        del_s,
        table.len() as f64 / del_s / 1e6,
        loaded.rss as f64 / 1048576.0,
        loaded.rss as f64 / table.len() as f64,
        stats.v4.entry_bytes as f64 / 1048576.0,
        stats.v4.nodes_used,
    ));
    drop(fib);
    drop(trie);

    // ---- IPv6 ----
    for name in V6_TABLES {
        let table = read_table(name);
        let loaded = load(&table);
        let r = loaded.fib.reader();
        let mut trie: PrefixMap<Ipv6Net, u32> = PrefixMap::new();
        for p in &table {
            trie.insert(Ipv6Net::new(Ipv6Addr::from(p.addr_v6()), p.len()).expect("valid"), group_of(p));
        }
        for (kind, keys) in [("random", random_v6(KEYS, 3)), ("announced", announced(&table, KEYS, 4))] {
            for &k in keys.iter().take(100_000) {
                let want = trie.get_lpm(&Ipv6Net::new(Ipv6Addr::from(k), 128).expect("host")).map(|(_, g)| *g);
                let got = r.lookup_v6(k).map(|t| match t {
                    RouteTarget::Group(g) => g,
                    other => panic!("{other}"),
                });
                assert_eq!(got, want, "{}", Ipv6Addr::from(k));
            }
            let mut out = vec![0u32; BATCH];
            let single = rate(keys.len(), || keys.iter().map(|&k| r.lookup_v6(k).is_some() as u64).sum());
            let batch = rate(keys.len(), || {
                let mut n = 0u64;
                for chunk in keys.chunks(BATCH) {
                    r.lookup_v6_batch(chunk, &mut out);
                    n += out[0] as u64;
                }
                n
            });
            let baseline = rate(keys.len(), || {
                keys.iter().map(|&k| trie.get_lpm(&Ipv6Net::new(Ipv6Addr::from(k), 128).expect("host")).is_some() as u64).sum()
            });
            rows.push(Row { table: format!("IPv6 {name} ({})", table.len()), keys: kind, single, batch, baseline });

            let mut g = c.benchmark_group(format!("ipv6_{kind}_{}", &name[5..9]));
            g.throughput(Throughput::Elements(BATCH as u64));
            let sample = &keys[..BATCH * 1024];
            let mut i = 0;
            g.bench_function(BenchmarkId::new("corridor_batch64", table.len()), |b| {
                b.iter(|| {
                    i = (i + BATCH) % sample.len();
                    r.lookup_v6_batch(&sample[i..i + BATCH], &mut out);
                    out[0]
                })
            });
            g.bench_function(BenchmarkId::new("prefix_trie", table.len()), |b| {
                b.iter(|| {
                    i = (i + BATCH) % sample.len();
                    sample[i..i + BATCH]
                        .iter()
                        .map(|&k| trie.get_lpm(&Ipv6Net::new(Ipv6Addr::from(k), 128).expect("host")).is_some() as u32)
                        .sum::<u32>()
                })
            });
            g.finish();
        }
        let s = loaded.fib.stats();
        notes.push(format!(
            "- IPv6 {name} ({} routes): load {:.2} s ({:.2} M routes/s); memory {:.1} MiB resident ({:.0} B/prefix), entries {:.1} MiB ({} trie nodes)",
            table.len(),
            loaded.load_s,
            table.len() as f64 / loaded.load_s / 1e6,
            loaded.rss as f64 / 1048576.0,
            loaded.rss as f64 / table.len() as f64,
            s.v6.entry_bytes as f64 / 1048576.0,
            s.v6.nodes_used,
        ));
        let _ = Family::V6;
    }

    c.final_summary();
    println!("\n## FIB lookups, one core (M lookups/s; baseline: prefix-trie 0.10 on the same keys, same run)\n");
    println!("| table | keys | single | batch of 64 | prefix-trie | batch / baseline |");
    println!("|---|---|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1}x |",
            r.table,
            r.keys,
            r.single / 1e6,
            r.batch / 1e6,
            r.baseline / 1e6,
            r.batch / r.baseline
        );
    }
    println!();
    for n in notes {
        println!("{n}");
    }
}
