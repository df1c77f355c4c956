//! The engine end to end: gen ── dut (the engine, in its own namespace) ── sink. IPv4 and
//! IPv6 forwarded with MACs rewritten, TTL / hop limit decremented and checksums valid;
//! ICMP Time Exceeded back to the sender; the kernel still answering ping on the same
//! port; counters matching; a million frames with the frame accounting balanced; a link
//! going down and up recovered without a restart. Run as root; a missing privilege or
//! tool fails with its name.

mod engine_lab;
mod xsk_support;

use std::time::{Duration, Instant};

use corridor_engine::{
    engine::Engine,
    pipeline::{DropReason, IcmpOutcome},
    xdp::XdpMode,
    xsk::XskMode,
};
use engine_lab::{checksums_valid, is_test_udp, udp4, udp6, Lab, SHORT, TRANSIT_V4, TRANSIT_V6};
use xsk_support::{ip, RawSocket};

/// How long a test waits for the engine to see a link change.
const LINK_WAIT: Duration = Duration::from_secs(10);

fn start(lab: &Lab, fib: &corridor_engine::fib::Fib) -> Engine {
    Engine::start(lab.engine_config(), vec![fib.reader()]).unwrap_or_else(|e| panic!("starting the engine: {e}"))
}

#[test]
fn forwards_both_families_and_answers_what_it_must() {
    let lab = Lab::new("fwd");
    let fib = lab.fib();
    let g0 = lab.mac(&lab.gen, "g0");
    let d0 = lab.mac(&lab.dut, "d0");
    let d1 = lab.mac(&lab.dut, "d1");
    let s0 = lab.mac(&lab.sink, "s0");
    let capture = RawSocket::open_in(&lab.sink, "s0");
    let sender = RawSocket::open_in(&lab.gen, "g0");
    let mut engine = start(&lab, &fib);

    let ports = engine.ports();
    assert_eq!(ports.len(), 2);
    assert_eq!((ports[0].name.as_str(), ports[0].mac, ports[0].mtu), ("d0", d0, 1500));
    assert_eq!(ports[1].mac, d1);
    assert!(ports.iter().all(|p| p.link_up && p.xdp_mode == XdpMode::Native && p.socket_mode == XskMode::Copy), "{ports:?}");
    assert!(lab.has_xdp("d0") && lab.has_xdp("d1"));

    let mut sent = Vec::new();
    for i in 0..8u32 {
        sent.push(udp4(d0, g0, TRANSIT_V4, 64, i, 100 + i as usize * 10));
        sent.push(udp6(d0, g0, TRANSIT_V6, 64, 100 + i, 200 + i as usize * 10));
    }
    for f in &sent {
        sender.send(f);
    }
    let got = capture.recv_matching(sent.len(), SHORT, is_test_udp);
    assert_eq!(got.len(), sent.len(), "frames forwarded to the sink");
    for (want, got) in sent.iter().zip(&got) {
        assert_eq!(&got[0..6], &s0, "dst MAC is the sink's");
        assert_eq!(&got[6..12], &d1, "src MAC is the egress port's");
        assert_eq!(got.len(), want.len());
        assert!(checksums_valid(got), "checksums of {got:02x?}");
        match &want[12..14] {
            [0x08, 0x00] => {
                assert_eq!(got[22], want[22] - 1, "TTL decremented");
                assert_eq!(&got[34..], &want[34..], "UDP header and payload intact");
            }
            _ => {
                assert_eq!(got[21], want[21] - 1, "hop limit decremented");
                assert_eq!(&got[54..], &want[54..], "UDP header and payload intact");
            }
        }
    }

    // TTL 1 and hop limit 1: Time Exceeded back to the sender, from the router's address.
    let gen_capture = RawSocket::open_in(&lab.gen, "g0");
    sender.send(&udp4(d0, g0, TRANSIT_V4, 1, 900, 64));
    sender.send(&udp6(d0, g0, TRANSIT_V6, 1, 901, 64));
    let errors = gen_capture.recv_matching(2, SHORT, |f| {
        (f[12..14] == [0x08, 0x00] && f[23] == 1 && f[34] == 11) || (f[12..14] == [0x86, 0xdd] && f[20] == 58 && f[54] == 3)
    });
    assert_eq!(errors.len(), 2, "ICMP and ICMPv6 Time Exceeded at gen");
    for e in &errors {
        assert_eq!(&e[0..6], &g0);
        assert_eq!(&e[6..12], &d0);
        if e[12..14] == [0x08, 0x00] {
            assert_eq!(&e[26..30], &engine_lab::DUT0_V4, "from the router's address");
        } else {
            assert_eq!(&e[22..38], &engine_lab::DUT0_V6);
        }
    }

    // The kernel still owns the router's addresses on the same port.
    let (ok, out) = lab.exec(&lab.gen, &["ping", "-c", "2", "-W", "1", "198.18.1.1"]);
    assert!(ok, "ping to the router while the engine runs: {out}");
    let (ok, out) = lab.exec(&lab.gen, &["ping", "-6", "-c", "2", "-W", "1", "2001:db8:1::1"]);
    assert!(ok, "IPv6 ping to the router while the engine runs: {out}");

    let c = engine.counters();
    assert_eq!(c.sub_interfaces, vec![(0, 0), (1, 0)]);
    let n = sent.len() as u64;
    assert_eq!(c.total.sub_interfaces[0].rx_packets, n + 2, "{c:?}");
    assert_eq!(c.total.sub_interfaces[1].tx_packets, n);
    let bytes: u64 = sent.iter().map(|f| f.len() as u64).sum();
    assert_eq!(c.total.sub_interfaces[1].tx_bytes, bytes);
    assert_eq!(c.total.drop_count(DropReason::TtlExpired), 2);
    assert_eq!(c.total.icmp_count(IcmpOutcome::Sent), 2);
    assert_eq!(c.total.sub_interfaces[0].tx_packets, 2, "the two ICMP errors");
    assert_eq!(c.total.total_drops(), 2, "{:?}", c.total.named().filter(|(_, v)| *v > 0).collect::<Vec<_>>());
    assert!(c.steering.steered >= n + 2 && c.steering.passed > 0, "{:?}", c.steering);
    assert_eq!(c.sockets.len(), 2);
    assert!(c.sockets.iter().all(|s| s.statistics.rx_dropped == 0 && s.statistics.tx_invalid_descs == 0), "{:?}", c.sockets);
    assert_eq!(c.workers.len(), 1);
    assert!(c.workers[0].accounting.balanced(), "{:?}", c.workers[0].accounting);

    engine.stop().unwrap();
    assert!(!engine.running());
    assert!(!lab.has_xdp("d0") && !lab.has_xdp("d1"), "program detached on stop");
    let acc = engine.counters().workers[0].accounting;
    assert!(acc.balanced() && acc.held == 0, "{acc:?}");
}

#[test]
fn a_million_frames_keep_the_accounting_balanced() {
    const TARGET: u64 = 1_000_000;
    const LIMIT: Duration = Duration::from_secs(60);
    let lab = Lab::new("mil");
    let fib = lab.fib();
    let g0 = lab.mac(&lab.gen, "g0");
    let d0 = lab.mac(&lab.dut, "d0");
    let sender = RawSocket::open_in(&lab.gen, "g0");
    let mut engine = start(&lab, &fib);
    let frames: Vec<Vec<u8>> = (0..64).map(|i| udp4(d0, g0, [198, 19, (i / 8) as u8, i as u8], 64, i, 18)).collect();

    let begin = Instant::now();
    let (mut sent, mut forwarded) = (0u64, 0u64);
    let mut checks = 0;
    while forwarded < TARGET && begin.elapsed() < LIMIT {
        for f in &frames {
            sender.send(f);
        }
        sent += frames.len() as u64;
        if sent % 8192 == 0 {
            let c = engine.counters();
            forwarded = c.total.sub_interfaces[1].tx_packets;
            let acc = c.workers[0].accounting;
            assert!(acc.balanced(), "while running: {acc:?}");
            checks += 1;
        }
    }
    let elapsed = begin.elapsed();
    std::thread::sleep(Duration::from_millis(100));
    let c = engine.counters();
    forwarded = c.total.sub_interfaces[1].tx_packets;
    eprintln!(
        "rough: {sent} sent, {forwarded} forwarded in {elapsed:.2?} ({:.0} frames/s through AF_PACKET → veth → engine → veth; {checks} live accounting checks; steering {:?}; xsk {:?})",
        forwarded as f64 / elapsed.as_secs_f64(),
        c.steering,
        c.sockets
    );
    assert!(forwarded >= TARGET, "only {forwarded} of {TARGET} frames forwarded within {LIMIT:?}");
    engine.stop().unwrap();
    let acc = engine.counters().workers[0].accounting;
    assert!(acc.balanced(), "after stop: {acc:?}");
    assert_eq!((acc.held, acc.tx, acc.completion), (0, 0, 0), "{acc:?}");
}

/// Takes `dev` (port `index` of the engine) down while traffic flows, then up again, and
/// checks forwarding resumes without restarting the engine.
fn link_flap_recovers(tag: &str, dev: &str, index: usize) {
    let lab = Lab::new(tag);
    let fib = lab.fib();
    let g0 = lab.mac(&lab.gen, "g0");
    let d0 = lab.mac(&lab.dut, "d0");
    let capture = RawSocket::open_in(&lab.sink, "s0");
    let sender = RawSocket::open_in(&lab.gen, "g0");
    let engine = start(&lab, &fib);
    let burst = |base: u32| {
        for i in 0..10 {
            sender.send(&udp4(d0, g0, TRANSIT_V4, 64, base + i, 100));
        }
        capture.recv_matching(10, SHORT, is_test_udp).len()
    };
    assert_eq!(burst(0), 10, "forwarding before the link flap");

    ip(&["-n", &lab.dut, "link", "set", dev, "down"]);
    // Link events reach the engine through netlink and a recovery pass: on a busy host that
    // can take seconds, so the waits are long (they end as soon as the state is seen).
    let deadline = Instant::now() + LINK_WAIT;
    while engine.ports()[index].link_up && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!engine.ports()[index].link_up, "link down seen");
    // Frames routed to a down egress port are lost, but must not stall the worker. (With
    // the ingress down, g0's carrier is gone and the sender itself gets ENOBUFS.)
    if index == 1 {
        for i in 0..300 {
            sender.send(&udp4(d0, g0, TRANSIT_V4, 64, 100 + i, 100));
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    ip(&["-n", &lab.dut, "link", "set", dev, "up"]);
    let deadline = Instant::now() + LINK_WAIT;
    while !engine.ports()[index].link_up && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let port = &engine.ports()[index];
    assert!(port.link_up && port.recoveries >= 1, "{port:?}");
    // veth needs a moment for its peer's carrier; retry a few bursts, bounded.
    let late = capture.recv_matching(usize::MAX, Duration::from_millis(300), is_test_udp).len();
    let mut after = 0;
    for round in 0..5 {
        after = burst(1000 + round * 10);
        if after == 10 {
            break;
        }
    }
    assert_eq!(after, 10, "forwarding after the link came back: {:?}", engine.counters());
    let c = engine.counters();
    eprintln!("{dev} flap: {late} frames arrived late, tx_ring_full {}, xsk {:?}", c.tx_ring_full, c.sockets);
    assert!(c.workers[0].accounting.balanced(), "{:?}", c.workers[0].accounting);
}

#[test]
fn egress_link_down_and_up_is_recovered_without_restart() {
    link_flap_recovers("lnk1", "d1", 1);
}

#[test]
fn ingress_link_down_and_up_is_recovered_without_restart() {
    link_flap_recovers("lnk0", "d0", 0);
}

#[test]
fn start_failures_leave_nothing_and_say_why() {
    let lab = Lab::new("fail");
    let fib = lab.fib();
    let mut config = lab.engine_config();
    config.ports[1].name = "nosuch0".into();
    let e = Engine::start(config, vec![fib.reader()]).unwrap_err().to_string();
    assert!(e.contains("nosuch0"), "{e}");
    assert!(!lab.has_xdp("d0"), "d0 detached after d1 failed");

    let mut config = lab.engine_config();
    config.netns = Some(format!("{}-absent", lab.dut));
    let e = Engine::start(config, vec![fib.reader()]).unwrap_err().to_string();
    assert!(e.contains("absent"), "{e}");

    // Queue 1 does not exist on a single-queue veth: the bind fails, named.
    let mut config = lab.engine_config();
    for p in &mut config.ports {
        p.queues = 2;
    }
    config.workers = Some(2);
    let e = Engine::start(config, vec![fib.reader(), fib.reader()]).unwrap_err().to_string();
    assert!(e.contains("worker 1") && e.contains("bind"), "{e}");
    assert!(!lab.has_xdp("d0") && !lab.has_xdp("d1"));
}
