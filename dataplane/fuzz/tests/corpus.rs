//! Every committed input through its target's checks, as a plain test: the seed corpus
//! (`corpus/<target>/`, what `make fuzz` starts from) and what fuzzing found
//! (`regressions/<target>/`, one file per crash, kept after the fix). Also the seeds of the
//! pipeline target, built here so that they stay valid frames as the engine changes.

use std::fs;
use std::path::{Path, PathBuf};

use corridor_fuzz::{frames_to, FrameIn, MAC};

/// A target's checks: the fuzzer's bytes in, a panic when a property fails.
type Check = fn(&[u8]);

const TARGETS: [(&str, Check); 6] = [
    ("wire", corridor_fuzz::wire),
    ("pipeline", corridor_fuzz::pipeline),
    ("fib_batch", corridor_fuzz::fib_batch),
    ("apply_request", corridor_fuzz::apply_request),
    ("fpm_scan", corridor_fuzz::fpm_scan),
    ("write_request", corridor_fuzz::write_request),
];

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.expect("a directory entry").path()).collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

#[test]
fn every_committed_input_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for (name, check) in TARGETS {
        let corpus = inputs(&root.join("corpus").join(name));
        assert!(!corpus.is_empty(), "corpus/{name} is empty");
        for file in corpus.iter().chain(&inputs(&root.join("regressions").join(name))) {
            let data = fs::read(file).expect("a readable input");
            check(&data);
            checked += 1;
        }
    }
    assert!(checked >= TARGETS.len());
}

/// Valid frames to the pipeline target's routes, untagged and tagged, IPv4 and IPv6.
pub fn pipeline_seeds() -> Vec<Vec<u8>> {
    fn ipv4(dst: [u8; 4], ttl: u8, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; 20 + len];
        b[0] = 0x45;
        b[2..4].copy_from_slice(&((20 + len) as u16).to_be_bytes());
        b[8] = ttl;
        b[9] = 17;
        b[12..16].copy_from_slice(&[198, 18, 0, 100]);
        b[16..20].copy_from_slice(&dst);
        let sum = corridor_engine::wire::checksum::data(&b[..20]);
        b[10..12].copy_from_slice(&(!sum).to_be_bytes());
        b
    }
    fn ipv6(net: u16, hops: u8, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; 40 + len];
        b[0] = 0x60;
        b[4..6].copy_from_slice(&(len as u16).to_be_bytes());
        b[6] = 17;
        b[7] = hops;
        b[8..24].copy_from_slice(&std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 100).octets());
        b[24..40].copy_from_slice(&std::net::Ipv6Addr::new(0x2001, 0xdb8, net, 0, 0, 0, 0, 5).octets());
        b
    }
    fn ether(port: u16, vlan: Option<u16>, ethertype: u16, ip: Vec<u8>) -> FrameIn {
        let mut f = MAC[usize::from(port)].to_vec();
        f.extend([2, 0, 0, 0, 0, 0xaa]);
        if let Some(v) = vlan {
            f.extend([0x81, 0x00]);
            f.extend(v.to_be_bytes());
        }
        f.extend(ethertype.to_be_bytes());
        f.extend(ip);
        FrameIn { port, headroom: 64, tailroom: 64, bytes: f }
    }
    let mut seeds = Vec::new();
    for g in [1u8, 2, 3, 4, 8, 9, 10, 66, 77, 88, 200] {
        let frames = vec![
            ether(0, None, 0x0800, ipv4([198, 19, g, 5], 64, 32)),
            ether(0, Some(100), 0x0800, ipv4([198, 19, g, 5], 1, 32)),
            ether(1, None, 0x86dd, ipv6(u16::from(g), 64, 32)),
            ether(0, Some(100), 0x86dd, ipv6(u16::from(g), 1, 1300)),
            ether(2, None, 0x0800, ipv4([198, 19, g, 5], 64, 1400)),
        ];
        seeds.push(frames_to(1_000, 2, &frames));
    }
    seeds.push(frames_to(0, 0, &[ether(0, None, 0x0800, ipv4([198, 18, 1, 255], 64, 8))]));
    seeds
}

#[test]
fn the_pipeline_seeds_pass_and_are_committed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/pipeline");
    for (i, seed) in pipeline_seeds().iter().enumerate() {
        corridor_fuzz::pipeline(seed);
        let file = dir.join(format!("seed-{i:02}"));
        if std::env::var_os("CORRIDOR_FUZZ_WRITE_SEEDS").is_some() {
            fs::create_dir_all(&dir).expect("the corpus directory");
            fs::write(&file, seed).expect("a seed written");
        }
        assert_eq!(fs::read(&file).ok().as_deref(), Some(&seed[..]), "{} is stale: run with CORRIDOR_FUZZ_WRITE_SEEDS=1", file.display());
    }
}
