//! Opening and closing the whole AF_XDP stack repeatedly leaves nothing behind: no XDP
//! program on the ports, no descriptor of this process. Alone in its binary so that no
//! other test opens descriptors while it counts them.

mod xsk_support;

use corridor_engine::{
    xdp::{self, AttachMode, Steering},
    xsk::{BindMode, SocketConfig, SocketSet, UmemConfig},
};
use xsk_support::{open_fds, InNetns, Lab};

fn open_everything(r0: u32, r1: u32) -> (Steering, SocketSet) {
    let mut steering = Steering::load().expect("loading");
    steering.attach("r0", AttachMode::Auto).expect("attach r0");
    steering.attach("r1", AttachMode::Auto).expect("attach r1");
    steering.add_router_address("198.18.1.1".parse().unwrap()).unwrap();
    let config = SocketConfig { rx_size: 256, tx_size: 256, fill_size: 256, completion_size: 256, mode: BindMode::Auto };
    let mut set = SocketSet::new(UmemConfig { frame_count: 1024, ..Default::default() }, config).expect("UMEM");
    for (ifindex, queue) in [(r0, 0), (r0, 1), (r1, 0), (r1, 1)] {
        let s = set.open(ifindex, queue).expect("socket");
        steering.insert_socket(ifindex, queue, set.fd(s)).expect("XSKMAP");
        set.refill(s);
    }
    assert!(set.accounting().balanced());
    (steering, set)
}

#[test]
fn open_and_close_twenty_times_leaks_nothing() {
    let lab = Lab::new("life", 2);
    let _inside = InNetns::enter(&lab.r);
    let r0 = xdp::ifindex("r0").unwrap();
    let r1 = xdp::ifindex("r1").unwrap();

    // Warm up once: libraries may cache a descriptor on first use (none should, but the
    // count must measure our objects, not lazily initialised globals).
    drop(open_everything(r0, r1));
    let before = open_fds();
    for round in 0..20 {
        let (steering, set) = open_everything(r0, r1);
        assert!(lab.has_xdp(&lab.r, "r0"), "round {round}: attached");
        // Sockets first, as a worker stops before the engine detaches.
        drop(set);
        drop(steering);
        assert!(!lab.has_xdp(&lab.r, "r0") && !lab.has_xdp(&lab.r, "r1"), "round {round}: xdp left attached");
    }
    assert_eq!(open_fds(), before, "descriptors leaked over 20 rounds");

    // The other order too: the program goes first, the sockets after.
    let (steering, set) = open_everything(r0, r1);
    drop(steering);
    drop(set);
    assert!(!lab.has_xdp(&lab.r, "r0"));
    assert_eq!(open_fds(), before);
}
