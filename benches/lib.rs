//! Shared inputs for the benchmarks: the real tables from ../shared/data and lookup keys
//! drawn from them.

use corridor_engine::fib::{Family, Prefix};
use std::io::Read;
use std::path::PathBuf;

pub const V4_TABLE: &str = "ipv4-routeviews-2024-04-06.txt.gz";
pub const V6_TABLES: [&str; 2] = ["ipv6-ris-2022-05-27.txt.gz", "ipv6-tier1-router.txt.gz"];

pub fn data_dir() -> PathBuf {
    std::env::var_os("CORRIDOR_DATA").map(Into::into).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"))
}

/// The prefixes of one table file (`prefix [origin]` per line, gzip).
pub fn read_table(name: &str) -> Vec<Prefix> {
    let path = data_dir().join(name);
    let f = std::fs::File::open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; the tables live in ../shared/data (or set CORRIDOR_DATA)", path.display()));
    let mut s = String::new();
    flate2::read::GzDecoder::new(f).read_to_string(&mut s).expect("gzip text");
    s.lines().filter_map(|l| l.split_whitespace().next()).map(|t| t.parse().expect("table prefix")).collect()
}

/// xorshift64*: deterministic keys, the same in every run and for every contender.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// `n` addresses uniformly over the whole space (most of IPv6 has no route).
pub fn random_v4(n: usize, seed: u64) -> Vec<u32> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| r.next_u64() as u32).collect()
}

pub fn random_v6(n: usize, seed: u64) -> Vec<u128> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| ((r.next_u64() as u128) << 64) | r.next_u64() as u128).collect()
}

/// `n` addresses each inside a randomly chosen announced prefix: what real traffic hits.
pub fn announced(table: &[Prefix], n: usize, seed: u64) -> Vec<u128> {
    let mut r = Rng::new(seed);
    (0..n)
        .map(|_| {
            let p = table[(r.next_u64() % table.len() as u64) as usize];
            let bits = p.family().max_len() as u32;
            let host = bits - p.len() as u32;
            let noise = ((r.next_u64() as u128) << 64) | r.next_u64() as u128;
            let mask = if host == 0 {
                0
            } else if host >= 128 {
                u128::MAX
            } else {
                (1u128 << host) - 1
            };
            match p.family() {
                Family::V4 => (p.addr_v4() as u128) | (noise & mask),
                Family::V6 => p.addr_v6() | (noise & mask),
            }
        })
        .collect()
}

/// Resident memory of this process in bytes.
pub fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    pages * 4096
}

pub mod small_batch;
