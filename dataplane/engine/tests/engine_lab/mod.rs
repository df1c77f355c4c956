//! Shared set-up for the engine's integration tests: three network namespaces
//! `cor-et-<pid>-<tag>-{gen,dut,sink}` in a line, gen g0 ── d0 dut d1 ── s0 sink, removed
//! on drop even when the test fails. Addresses only from 198.18.0.0/15 and 2001:db8::/32;
//! transit destinations are 198.19.0.0/16 and 2001:db8:ff::/48, routed by the engine's
//! FIB toward the sink. Frames are built here with valid checksums and checked after.
#![allow(dead_code)]

use std::{process::Command, time::Duration};

use corridor_engine::{
    engine::{EngineConfig, PortSpec},
    fib::{Adjacency, Fib, FibConfig, FibOp, NextHop, RouteTarget},
    pipeline::SubInterfaceConfig,
};

use crate::xsk_support::{ip, require_root_and_tools};

pub const GEN_V4: [u8; 4] = [198, 18, 1, 2];
pub const DUT0_V4: [u8; 4] = [198, 18, 1, 1];
pub const DUT1_V4: [u8; 4] = [198, 18, 2, 1];
pub const TRANSIT_V4: [u8; 4] = [198, 19, 0, 10];
pub const GEN_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
pub const DUT0_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
pub const TRANSIT_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];

pub struct Lab {
    pub gen: String,
    pub dut: String,
    pub sink: String,
}

impl Lab {
    pub fn new(tag: &str) -> Self {
        require_root_and_tools();
        let base = format!("cor-et-{}-{tag}", std::process::id());
        let lab = Self { gen: format!("{base}-gen"), dut: format!("{base}-dut"), sink: format!("{base}-sink") };
        for ns in [&lab.gen, &lab.dut, &lab.sink] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            ip(&["netns", "add", ns]);
        }
        ip(&["-n", &lab.dut, "link", "add", "d0", "type", "veth", "peer", "name", "g0", "netns", &lab.gen]);
        ip(&["-n", &lab.dut, "link", "add", "d1", "type", "veth", "peer", "name", "s0", "netns", &lab.sink]);
        let cfg = |ns: &str, dev: &str, v4: &str, v6: &str| {
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "addr", "add", v4, "dev", dev]);
            ip(&["-n", ns, "-6", "addr", "add", v6, "dev", dev, "nodad"]);
        };
        ip(&["-n", &lab.dut, "link", "set", "lo", "up"]);
        cfg(&lab.gen, "g0", "198.18.1.2/24", "2001:db8:1::2/64");
        cfg(&lab.dut, "d0", "198.18.1.1/24", "2001:db8:1::1/64");
        cfg(&lab.dut, "d1", "198.18.2.1/24", "2001:db8:2::1/64");
        cfg(&lab.sink, "s0", "198.18.2.2/24", "2001:db8:2::2/64");
        lab
    }

    pub fn mac(&self, ns: &str, dev: &str) -> [u8; 6] {
        let out = ip(&["-n", ns, "-o", "link", "show", dev]);
        let text = out.split("link/ether ").nth(1).expect("link/ether in ip output");
        let mut mac = [0u8; 6];
        for (i, byte) in text.split_whitespace().next().unwrap().split(':').enumerate() {
            mac[i] = u8::from_str_radix(byte, 16).unwrap();
        }
        mac
    }

    pub fn has_xdp(&self, dev: &str) -> bool {
        ip(&["-n", &self.dut, "link", "show", dev]).contains("xdp")
    }

    pub fn exec(&self, ns: &str, cmd: &[&str]) -> (bool, String) {
        let out = Command::new("ip").args(["netns", "exec", ns]).args(cmd).output().expect("ip netns exec");
        (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }

    /// The engine's configuration for the dut: d0 (port 0) and d1 (port 1), one worker.
    pub fn engine_config(&self) -> EngineConfig {
        let port = |name: &str, v4: [u8; 4], v6: &str| PortSpec {
            name: name.into(),
            queues: 1,
            mtu: 1500,
            sub_interfaces: vec![SubInterfaceConfig::new(0, Some(v4.into()), Some(v6.parse().unwrap()))],
            directed_broadcast: false,
            edge: Vec::new(),
        };
        EngineConfig {
            ports: vec![port("d0", DUT0_V4, "2001:db8:1::1"), port("d1", DUT1_V4, "2001:db8:2::1")],
            workers: Some(1),
            netns: Some(self.dut.clone()),
            ..Default::default()
        }
    }

    /// A small FIB routing the transit prefixes out of port 1 to the sink's MAC.
    pub fn fib(&self) -> Fib {
        let config = FibConfig { v4_routes: 1024, v6_routes: 1024, v4_nodes: 64, v6_nodes: 64, groups: 16, adjacencies: 16 };
        let mut fib = Fib::new(config).expect("FIB");
        let adjacency = Adjacency { port: 1, vlan: 0, src_mac: self.mac(&self.dut, "d1"), dst_mac: self.mac(&self.sink, "s0") };
        fib.apply(&[
            FibOp::SetAdjacency { id: 1, adjacency },
            FibOp::SetGroup { id: 1, members: vec![NextHop { adjacency: 1, weight: 1 }] },
            FibOp::AddRoute { prefix: "198.19.0.0/16".parse().unwrap(), target: RouteTarget::Group(1) },
            FibOp::AddRoute { prefix: "2001:db8:ff::/48".parse().unwrap(), target: RouteTarget::Group(1) },
        ])
        .expect("routes");
        fib
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.gen, &self.dut, &self.sink] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Sums 16-bit words (one's complement, folded).
pub fn csum(parts: &[&[u8]]) -> u16 {
    let mut sum = 0u32;
    for part in parts {
        for c in part.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

fn payload(seq: u32, len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    p[..4].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in p.iter_mut().enumerate().skip(4) {
        *b = (i * 7 + seq as usize) as u8;
    }
    p
}

const SPORT: u16 = 5000;

fn udp(src: &[u8], dst: &[u8], seq: u32, len: usize, v6: bool) -> Vec<u8> {
    let body = payload(seq, len);
    let ulen = (8 + body.len()) as u16;
    let mut u = Vec::new();
    u.extend_from_slice(&SPORT.to_be_bytes());
    u.extend_from_slice(&5001u16.to_be_bytes());
    u.extend_from_slice(&ulen.to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(&body);
    let pseudo_len = if v6 { (u32::from(ulen)).to_be_bytes().to_vec() } else { ulen.to_be_bytes().to_vec() };
    let proto: &[u8] = if v6 { &[0, 0, 0, 17] } else { &[0, 17] };
    let c = !csum(&[src, dst, proto, &pseudo_len, &u]);
    u[6..8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
    u
}

/// Ethernet + IPv4 + UDP with valid checksums; `seq` in the payload.
pub fn udp4(dst_mac: [u8; 6], src_mac: [u8; 6], dst: [u8; 4], ttl: u8, seq: u32, len: usize) -> Vec<u8> {
    let u = udp(&GEN_V4, &dst, seq, len, false);
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut h = [0u8; 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&((20 + u.len()) as u16).to_be_bytes());
    h[6] = 0x40; // DF
    h[8] = ttl;
    h[9] = 17;
    h[12..16].copy_from_slice(&GEN_V4);
    h[16..20].copy_from_slice(&dst);
    let c = !csum(&[&h]);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&h);
    f.extend_from_slice(&u);
    f
}

/// Ethernet + IPv6 + UDP with a valid checksum; `seq` in the payload.
pub fn udp6(dst_mac: [u8; 6], src_mac: [u8; 6], dst: [u8; 16], hop_limit: u8, seq: u32, len: usize) -> Vec<u8> {
    let u = udp(&GEN_V6, &dst, seq, len, true);
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x86, 0xdd]);
    let mut h = [0u8; 40];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&(u.len() as u16).to_be_bytes());
    h[6] = 17;
    h[7] = hop_limit;
    h[8..24].copy_from_slice(&GEN_V6);
    h[24..40].copy_from_slice(&dst);
    f.extend_from_slice(&h);
    f.extend_from_slice(&u);
    f
}

/// True for a UDP test frame of either family (by the source port).
pub fn is_test_udp(f: &[u8]) -> bool {
    match f.get(12..14) {
        Some([0x08, 0x00]) => f.len() >= 42 && f[23] == 17 && f[34..36] == SPORT.to_be_bytes(),
        Some([0x86, 0xdd]) => f.len() >= 62 && f[20] == 17 && f[54..56] == SPORT.to_be_bytes(),
        _ => false,
    }
}

/// Checks a received test frame's checksums: IPv4 header and UDP (both families).
pub fn checksums_valid(f: &[u8]) -> bool {
    match &f[12..14] {
        [0x08, 0x00] => {
            let ihl = usize::from(f[14] & 0xf) * 4;
            let ip = &f[14..14 + ihl];
            let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
            let u = &f[14 + ihl..14 + total];
            csum(&[ip]) == 0xffff && csum(&[&ip[12..16], &ip[16..20], &[0, 17], &(u.len() as u16).to_be_bytes(), u]) == 0xffff
        }
        [0x86, 0xdd] => {
            let plen = usize::from(u16::from_be_bytes([f[18], f[19]]));
            let u = &f[54..54 + plen];
            csum(&[&f[22..38], &f[38..54], &[0, 0, 0, 17], &(plen as u32).to_be_bytes(), u]) == 0xffff
        }
        _ => false,
    }
}

pub const SHORT: Duration = Duration::from_secs(3);
