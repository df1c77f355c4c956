//! Writes the FIB benchmark's lookup keys and Corridor's answers for them, for the DPDK
//! harness (benches/dpdk/fib_harness.c) to time the same keys and cross-check its answers.
//!
//! `fib_keys OUTDIR [KEYS]` writes, for each contest of `benches/benches/fib.rs` (same
//! tables, same seeds, same key count by default), `NAME.keys` (IPv4: u32 little-endian
//! host-order values; IPv6: 16 bytes in network order) and `NAME.want` (u32 little-endian:
//! the group Corridor's FIB answers, `u32::MAX` for no route), and `manifest.txt` with one
//! `NAME FAMILY TABLE KEYS GROUPS` line per contest. Route `i` of a table goes to group
//! `i % GROUPS`, so an answer names the matched route modulo GROUPS.

use corridor_benches::{announced, data_dir, random_v4, random_v6, read_table, V4_TABLE, V6_TABLES};
use corridor_engine::fib::{Adjacency, Fib, FibConfig, FibOp, NextHop, Prefix, RouteTarget};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Distinct groups: as many as the default FIB config holds, short of its last id.
const GROUPS: u32 = 65_000;

fn load(table: &[Prefix]) -> Fib {
    let mut fib = Fib::new(FibConfig::default()).expect("default config");
    let mut ops: Vec<FibOp> = (0..GROUPS)
        .flat_map(|g| {
            [
                FibOp::SetAdjacency { id: g, adjacency: Adjacency { port: (g % 16) as u16, ..Default::default() } },
                FibOp::SetGroup { id: g, members: vec![NextHop { adjacency: g, weight: 1 }] },
            ]
        })
        .collect();
    ops.extend(table.iter().enumerate().map(|(i, p)| FibOp::AddRoute { prefix: *p, target: RouteTarget::Group(i as u32 % GROUPS) }));
    fib.apply(&ops).expect("table fits");
    fib
}

fn answer(t: Option<RouteTarget>) -> u32 {
    match t {
        Some(RouteTarget::Group(g)) => g,
        None => u32::MAX,
        Some(other) => panic!("unexpected target {other}"),
    }
}

fn write(path: PathBuf, bytes: &[u8]) {
    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: fib_keys OUTDIR [KEYS]";
    let out = Path::new(args.get(1).expect(usage));
    let n: usize = args.get(2).map(|s| s.parse().expect(usage)).unwrap_or(1 << 20);
    std::fs::create_dir_all(out).expect("OUTDIR");
    let mut manifest = String::new();

    let table = read_table(V4_TABLE);
    let fib = load(&table);
    let r = fib.reader();
    for (kind, keys) in [("random", random_v4(n, 1)), ("announced", announced(&table, n, 2).into_iter().map(|a| a as u32).collect())] {
        let name = format!("v4-{kind}");
        write(out.join(format!("{name}.keys")), &keys.iter().flat_map(|k| k.to_le_bytes()).collect::<Vec<u8>>());
        let want: Vec<u8> = keys.iter().flat_map(|&k| answer(r.lookup_v4(k)).to_le_bytes()).collect();
        write(out.join(format!("{name}.want")), &want);
        manifest += &format!("{name} 4 {} {n} {GROUPS}\n", data_dir().join(V4_TABLE).display());
    }
    drop(r);
    drop(fib);

    for t in V6_TABLES {
        let table = read_table(t);
        let fib = load(&table);
        let r = fib.reader();
        for (kind, keys) in [("random", random_v6(n, 3)), ("announced", announced(&table, n, 4))] {
            let name = format!("v6-{}-{kind}", t.split('-').nth(1).expect("table name"));
            write(out.join(format!("{name}.keys")), &keys.iter().flat_map(|k| k.to_be_bytes()).collect::<Vec<u8>>());
            let want: Vec<u8> = keys.iter().flat_map(|&k| answer(r.lookup_v6(k)).to_le_bytes()).collect();
            write(out.join(format!("{name}.want")), &want);
            manifest += &format!("{name} 6 {} {n} {GROUPS}\n", data_dir().join(t).display());
        }
    }
    let mut f = std::fs::File::create(out.join("manifest.txt")).expect("manifest");
    f.write_all(manifest.as_bytes()).expect("manifest");
    println!("fib_keys: {} contests of {n} keys in {}", manifest.lines().count(), out.display());
}
