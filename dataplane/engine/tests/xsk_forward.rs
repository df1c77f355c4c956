//! AF_XDP end to end over veth pairs in private namespaces: frames steered to the right
//! socket and forwarded without a copy to another port, the kernel still answering ARP,
//! ND and ping, a stale program replaced, and frame accounting under load.
//! Run as root; a missing privilege or tool fails with its name.

mod xsk_support;

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use corridor_engine::{
    xdp::{self, AttachMode, AttachedVia, Steering, XdpMode},
    xsk::{BindMode, Frame, SocketConfig, SocketSet, UmemConfig, XskMode},
};
use xsk_support::{is_test_udp4, udp4_frame, InNetns, Lab, RawSocket};

const ROUTER_ADDRS: [&str; 4] = ["198.18.1.1", "198.18.2.1", "2001:db8:1::1", "2001:db8:2::1"];

/// The router side of a lab: steering on r0 and r1, one socket per port on queue 0.
struct Router {
    set: SocketSet,
    steering: Steering,
    from: usize,
    to: usize,
}

fn router(umem: UmemConfig) -> Router {
    let mut steering = Steering::load().expect("loading the steering program");
    for port in ["r0", "r1"] {
        let a = steering.attach(port, AttachMode::Auto).expect("attaching");
        eprintln!("{port}: XDP {:?} via {:?} (native refused: {:?})", a.mode, a.via, a.native_error);
        assert_eq!(a.mode, XdpMode::Native, "veth supports native XDP");
        assert_eq!(a.via, AttachedVia::Link, "this kernel has bpf_link for XDP");
    }
    for addr in ROUTER_ADDRS {
        steering.add_router_address(addr.parse().unwrap()).unwrap();
    }
    let mut set = SocketSet::new(umem, SocketConfig::default()).expect("mapping the UMEM");
    let r0 = xdp::ifindex("r0").unwrap();
    let r1 = xdp::ifindex("r1").unwrap();
    let from = set.open(r0, 0).expect("AF_XDP socket on r0/0");
    let to = set.open(r1, 0).expect("AF_XDP socket on r1/0 sharing the UMEM");
    eprintln!("socket modes: r0 {:?}, r1 {:?}", set.mode(from), set.mode(to));
    steering.insert_socket(r0, 0, set.fd(from)).unwrap();
    steering.insert_socket(r1, 0, set.fd(to)).unwrap();
    set.refill(from);
    set.refill(to);
    assert!(set.accounting().balanced(), "{:?}", set.accounting());
    Router { set, steering, from, to }
}

/// Forwards from `from` to `to`, rewriting MACs as the engine would, until `expect`
/// frames went through or `quiet` passed without traffic (bounded by `limit`).
/// Returns the number forwarded and the rx addresses seen (for the zero-copy check).
fn forward(r: &mut Router, dst: [u8; 6], src: [u8; 6], expect: usize, quiet: Duration, limit: Duration) -> (usize, Vec<u64>) {
    let start = Instant::now();
    let mut last = Instant::now();
    let mut forwarded = 0;
    let mut addrs = Vec::new();
    let mut batch: Vec<Frame> = Vec::with_capacity(64);
    while forwarded < expect && last.elapsed() < quiet && start.elapsed() < limit {
        r.set.complete(r.to);
        r.set.refill(r.from);
        if r.set.recv(r.from, 64, &mut batch) == 0 {
            let _ = r.set.wait_rx(Duration::from_millis(5));
            continue;
        }
        last = Instant::now();
        for frame in batch.iter_mut() {
            addrs.push(frame.addr());
            let data = r.set.umem().data_mut(frame);
            data[0..6].copy_from_slice(&dst);
            data[6..12].copy_from_slice(&src);
        }
        let n = batch.len();
        while !batch.is_empty() && start.elapsed() < limit {
            r.set.send(r.to, &mut batch);
            r.set.complete(r.to);
        }
        r.set.free_all(&mut batch);
        forwarded += n;
        assert!(r.set.accounting().balanced(), "{:?}", r.set.accounting());
    }
    // Let the kernel finish transmitting and hand every frame back.
    let drain = Instant::now();
    while r.set.accounting().tx + r.set.accounting().completion > 0 && drain.elapsed() < Duration::from_secs(2) {
        if r.set.complete(r.to) == 0 {
            r.set.kick(r.to);
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    (forwarded, addrs)
}

#[test]
fn transit_frames_are_steered_and_forwarded_without_copy() {
    let lab = Lab::new("fwd", 1);
    let a_mac = lab.mac(&lab.a, "a0");
    let b_mac = lab.mac(&lab.b, "b0");
    let r0_mac = lab.mac(&lab.r, "r0");
    let r1_mac = lab.mac(&lab.r, "r1");
    let capture = RawSocket::open_in(&lab.b, "b0");
    let sender = RawSocket::open_in(&lab.a, "a0");
    let _inside = InNetns::enter(&lab.r);
    let mut r = router(UmemConfig { frame_count: 4096, ..Default::default() });

    let sent: Vec<Vec<u8>> = (0..10).map(|i| udp4_frame(r0_mac, a_mac, [198, 19, 0, 10], i, 200 + i as usize)).collect();
    for f in &sent {
        sender.send(f);
    }
    let (forwarded, addrs) = forward(&mut r, b_mac, r1_mac, sent.len(), Duration::from_secs(3), Duration::from_secs(5));
    assert_eq!(forwarded, sent.len(), "steered frames received on r0's socket");
    // Every descriptor pointed into the shared UMEM at the configured headroom.
    assert!(addrs.iter().all(|a| a % 2048 == 256), "rx addresses {addrs:?}");

    let got = capture.recv_matching(sent.len(), Duration::from_secs(3), is_test_udp4);
    assert_eq!(got.len(), sent.len(), "frames arriving at b0");
    for (want, got) in sent.iter().zip(&got) {
        assert_eq!(&got[0..6], &b_mac);
        assert_eq!(&got[6..12], &r1_mac);
        assert_eq!(&got[12..], &want[12..], "bytes after the MACs intact");
    }
    let counters = r.steering.counters().unwrap();
    assert!(counters.steered >= sent.len() as u64, "{counters:?}");
    let stats = r.set.statistics(r.from).unwrap();
    assert_eq!((stats.rx_dropped, stats.rx_invalid_descs), (0, 0), "{stats:?}");
    assert_eq!(r.set.statistics(r.to).unwrap().tx_invalid_descs, 0);
    let acc = r.set.accounting();
    assert!(acc.balanced() && acc.held == 0 && acc.tx == 0 && acc.completion == 0, "{acc:?}");
}

#[test]
fn kernel_keeps_arp_nd_and_ping_while_steering() {
    let lab = Lab::new("ping", 1);
    let _inside = InNetns::enter(&lab.r);
    let mut r = router(UmemConfig { frame_count: 4096, ..Default::default() });
    let before = r.steering.counters().unwrap();

    let (ok, out) = lab.exec(&lab.a, &["ping", "-c", "3", "-W", "1", "198.18.1.1"]);
    assert!(ok, "IPv4 ping (after ARP) to the router through the kernel: {out}");
    let (ok, out) = lab.exec(&lab.a, &["ping", "-6", "-c", "3", "-W", "1", "2001:db8:1::1"]);
    assert!(ok, "IPv6 ping (after ND) to the router through the kernel: {out}");
    let neigh = xsk_support::ip(&["-n", &lab.a, "-6", "neigh", "show", "dev", "a0"]);
    assert!(neigh.contains("2001:db8:1::1"), "ND resolved the router: {neigh}");
    let after = r.steering.counters().unwrap();
    assert!(after.passed >= before.passed + 6, "{before:?} → {after:?}");
    assert_eq!(r.set.accounting().rx, 0, "nothing for the router reached the socket");

    // Without the address in the map the same ping is transit: steered, and unanswered.
    r.steering.remove_router_address("198.18.1.1".parse::<IpAddr>().unwrap()).unwrap();
    let (ok, _) = lab.exec(&lab.a, &["ping", "-c", "1", "-W", "1", "198.18.1.1"]);
    assert!(!ok, "ping must now be steered to the engine");
    assert!(r.steering.counters().unwrap().steered > after.steered);
    assert!(r.set.accounting().balanced());
}

#[test]
fn program_left_attached_by_another_process_is_replaced() {
    let lab = Lab::new("repl", 1);
    let object = std::env::temp_dir().join(format!("cor-xt-{}-steer.o", std::process::id()));
    std::fs::write(&object, xdp::STEER_OBJECT).unwrap();
    let object_path = object.to_str().unwrap();
    // What a killed earlier run that attached through netlink leaves behind.
    xsk_support::ip(&["-n", &lab.r, "link", "set", "dev", "r0", "xdpdrv", "obj", object_path, "sec", "xdp"]);
    xsk_support::ip(&["-n", &lab.r, "link", "set", "dev", "r1", "xdpgeneric", "obj", object_path, "sec", "xdp"]);
    let _ = std::fs::remove_file(&object);
    assert!(lab.has_xdp(&lab.r, "r0") && lab.has_xdp(&lab.r, "r1"));

    let _inside = InNetns::enter(&lab.r);
    let stale = xdp::query_link(xdp::ifindex("r0").unwrap()).unwrap();
    let mut steering = Steering::load().unwrap();
    let a0 = steering.attach("r0", AttachMode::Auto).expect("replacing the native leftover");
    let a1 = steering.attach("r1", AttachMode::Auto).expect("replacing the generic leftover");
    assert_eq!(a0.replaced, vec![stale.drv_prog_id.unwrap()]);
    assert_eq!(a1.replaced.len(), 1);
    assert_eq!(a1.mode, XdpMode::Native);
    let now = xdp::query_link(a0.ifindex).unwrap();
    assert!(now.drv_prog_id.is_some() && now.drv_prog_id != stale.drv_prog_id, "{now:?}");
    assert!(xdp::query_link(a1.ifindex).unwrap().skb_prog_id.is_none());
    drop(steering);
    assert!(!lab.has_xdp(&lab.r, "r0") && !lab.has_xdp(&lab.r, "r1"), "detached on drop");
}

#[test]
fn frame_accounting_balances_under_load() {
    const FRAMES: u32 = 3000;
    let lab = Lab::new("acct", 1);
    let a_mac = lab.mac(&lab.a, "a0");
    let b_mac = lab.mac(&lab.b, "b0");
    let r0_mac = lab.mac(&lab.r, "r0");
    let r1_mac = lab.mac(&lab.r, "r1");
    let capture = RawSocket::open_in(&lab.b, "b0");
    let sender = RawSocket::open_in(&lab.a, "a0");
    let _inside = InNetns::enter(&lab.r);
    // A small UMEM so frames cycle through every state many times.
    let mut r = router(UmemConfig { frame_count: 1024, ..Default::default() });
    let total = r.set.accounting().total;

    let send = std::thread::spawn(move || {
        for i in 0..FRAMES {
            sender.send(&udp4_frame(r0_mac, a_mac, [198, 19, 1, (i % 200) as u8], i, 100));
            if i % 100 == 99 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    });
    let (forwarded, _) = forward(&mut r, b_mac, r1_mac, FRAMES as usize, Duration::from_secs(2), Duration::from_secs(20));
    send.join().unwrap();

    let acc = r.set.accounting();
    eprintln!("forwarded {forwarded} of {FRAMES}; {acc:?}; rx stats {:?}", r.set.statistics(r.from).unwrap());
    assert!(acc.balanced(), "{acc:?}");
    assert_eq!((acc.held, acc.tx, acc.completion, acc.rx), (0, 0, 0, 0), "{acc:?}");
    assert_eq!(acc.free + acc.fill, total);
    let stats = r.set.statistics(r.from).unwrap();
    let steered = r.steering.counters().unwrap().steered;
    assert_eq!(steered, forwarded as u64 + stats.rx_dropped, "steered = received + dropped at the socket");
    assert!(forwarded as u32 > FRAMES * 9 / 10, "forwarded {forwarded} of {FRAMES}");
    let got = capture.recv_matching(forwarded, Duration::from_secs(3), is_test_udp4);
    assert_eq!(got.len(), forwarded, "every forwarded frame reached b0");
}

#[test]
fn bind_mode_can_be_forced() {
    let lab = Lab::new("mode", 1);
    let _inside = InNetns::enter(&lab.r);
    let r0 = xdp::ifindex("r0").unwrap();
    // veth has no zero-copy AF_XDP: forcing it fails at bind, naming the call.
    let mut set = SocketSet::new(UmemConfig::default(), SocketConfig { mode: BindMode::ZeroCopy, ..Default::default() }).unwrap();
    let err = set.open(r0, 0).expect_err("veth offers copy mode only").to_string();
    assert!(err.contains("bind") && err.contains("queue 0"), "{err}");
    assert!(set.is_empty());
    let mut set = SocketSet::new(UmemConfig::default(), SocketConfig { mode: BindMode::Copy, ..Default::default() }).unwrap();
    let s = set.open(r0, 0).unwrap();
    assert_eq!(set.mode(s), XskMode::Copy);
    // A second socket on another queue of the same port needs its own rings too; a
    // queue that does not exist is refused.
    assert!(set.open(r0, 5).is_err());
    assert!(set.accounting().balanced());
}

fn eth(dst: [u8; 6], src: [u8; 6], vlan: Option<u16>, ethertype: u16) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    if let Some(tag) = vlan {
        f.extend_from_slice(&0x8100u16.to_be_bytes());
        f.extend_from_slice(&tag.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

fn ipv6(dst: &str, next_header: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    h.extend_from_slice(&[next_header, 64]);
    h.extend_from_slice(&"2001:db8:1::2".parse::<std::net::Ipv6Addr>().unwrap().octets());
    h.extend_from_slice(&dst.parse::<std::net::Ipv6Addr>().unwrap().octets());
    h.extend_from_slice(payload);
    h
}

#[test]
fn steering_classifies_frames() {
    let lab = Lab::new("cls", 1);
    let a_mac = lab.mac(&lab.a, "a0");
    let r0_mac = lab.mac(&lab.r, "r0");
    let sender = RawSocket::open_in(&lab.a, "a0");
    let _inside = InNetns::enter(&lab.r);
    let mut r = router(UmemConfig { frame_count: 4096, ..Default::default() });
    let before = r.steering.counters().unwrap();

    let marker = |tag: u8| -> Vec<u8> { [0xc0, 0x44, 0xc0, 0x44, tag].repeat(10) };
    let v4 =
        |dst: [u8; 4], tag: u8| -> Vec<u8> { udp4_frame(r0_mac, a_mac, dst, 0, 60)[14..].iter().copied().chain(marker(tag)).collect() };
    let mut to_engine = Vec::new();
    let mut to_kernel = Vec::new();
    // Transit IPv6 unicast.
    to_engine.push([eth(r0_mac, a_mac, None, 0x86dd), ipv6("2001:db8:9::1", 17, &marker(1))].concat());
    // Transit IPv4 behind one 802.1Q tag.
    to_engine.push([eth(r0_mac, a_mac, Some(100), 0x0800), v4([198, 19, 0, 1], 2)].concat());
    // Odd but classifiable (TTL 1 is the engine's to answer): steered too.
    let mut ttl1 = [eth(r0_mac, a_mac, None, 0x0800), v4([198, 19, 0, 2], 3)].concat();
    ttl1[22] = 1;
    to_engine.push(ttl1);
    // Transit destinations whose bit in the router-address filter is a router address's:
    // the exact lookup finds them not the router's, so they are steered all the same.
    let v4_twin = (1..=u16::MAX)
        .map(|i| [198, 19, (i >> 8) as u8, i as u8])
        .find(|a| xdp::router_filter_bit(IpAddr::from(*a)) == xdp::router_filter_bit("198.18.1.1".parse().unwrap()))
        .expect("a transit address sharing 198.18.1.1's filter bit");
    to_engine.push([eth(r0_mac, a_mac, None, 0x0800), v4(v4_twin, 7)].concat());
    let v6_twin = (1..=u16::MAX)
        .map(|i| format!("2001:db8:9::{i:x}"))
        .find(|a| xdp::router_filter_bit(a.parse().unwrap()) == xdp::router_filter_bit("2001:db8:1::1".parse().unwrap()))
        .expect("a transit address sharing 2001:db8:1::1's filter bit");
    to_engine.push([eth(r0_mac, a_mac, None, 0x86dd), ipv6(&v6_twin, 17, &marker(8))].concat());
    // Another station's MAC, IPv6 multicast, the router's own address, a Neighbor
    // Solicitation to a transit address, a truncated IPv4 header, ARP.
    to_kernel.push([eth([0x02, 0, 0, 0, 0, 0x99], a_mac, None, 0x0800), v4([198, 19, 0, 3], 4)].concat());
    to_kernel.push([eth([0x33, 0x33, 0, 0, 0, 1], a_mac, None, 0x86dd), ipv6("ff02::1", 17, &marker(5))].concat());
    to_kernel.push([eth(r0_mac, a_mac, None, 0x0800), v4([198, 18, 1, 1], 6)].concat());
    to_kernel.push([eth(r0_mac, a_mac, None, 0x86dd), ipv6("2001:db8:9::2", 58, &[135, 0, 0, 0, 0, 0, 0, 0])].concat());
    to_kernel.push([eth(r0_mac, a_mac, None, 0x0800), vec![0x45, 0, 0, 20, 0, 0]].concat());
    to_kernel.push([eth([0xff; 6], a_mac, None, 0x0806), vec![0; 28]].concat());
    for f in to_engine.iter().chain(&to_kernel) {
        sender.send(f);
    }

    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut batch = Vec::with_capacity(64);
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        r.set.refill(r.from);
        if r.set.recv(r.from, 64, &mut batch) == 0 {
            let _ = r.set.wait_rx(Duration::from_millis(20));
            continue;
        }
        got.extend(batch.iter().map(|f| r.set.umem().data(f).to_vec()));
        r.set.free_all(&mut batch);
    }
    let ours: Vec<_> = got.iter().filter(|f| f.windows(4).any(|w| w == [0xc0, 0x44, 0xc0, 0x44])).collect();
    let mut want: Vec<_> = to_engine.iter().collect();
    let mut have = ours.clone();
    want.sort();
    have.sort();
    assert_eq!(have, want, "exactly the transit frames reach the socket, bytes intact");
    let after = r.steering.counters().unwrap();
    assert!(after.steered >= before.steered + 3, "{before:?} → {after:?}");
    assert!(after.passed >= before.passed + to_kernel.len() as u64, "{before:?} → {after:?}");
    assert!(r.set.accounting().balanced());
}
