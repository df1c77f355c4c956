//! The engine: ports, queues, workers and their lifecycle. `Engine::start` attaches the
//! steering program to every port, opens one AF_XDP socket per (port, queue) and starts one
//! worker per queue index; a supervisor thread watches the links and recovers a port that
//! went down and came back; `stop` (or drop) undoes all of it.
//!
//! Threads: the caller's thread only waits. The supervisor does the set-up and teardown and
//! owns the steering program; worker i owns queue i of every port. With `netns` set, every
//! one of them enters that namespace first, so the caller stays in its own.

mod sys;
mod worker;

use std::{
    fmt,
    net::IpAddr,
    os::fd::{AsFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::{
    counters::CounterSnapshot,
    fib::FibReader,
    pipeline::{IcmpLimits, IcmpRateLimit, Pipeline, PipelineConfig, PortConfig, SubInterfaceConfig, UrpfPolicy, UrpfTable},
    xdp::{AttachMode, EdgeCounters, EdgeFilter, RefusedMac, Steering, SteeringCounters, XdpError, XdpMode, MAX_PORTS, MAX_QUEUES},
    xsk::{self, BindMode, FrameAccounting, SocketConfig, UmemConfig, XskError, XskMode, XskStatistics, XDP_PACKET_HEADROOM},
};

use worker::{WorkerSetup, WorkerShared};

/// Smallest and largest IP MTU of a port. 1280 is the IPv6 minimum (RFC 8200 section 5),
/// which every port must carry; 9216 the usual jumbo ceiling of exchange switches.
pub const MTU_MIN: u16 = 1280;
pub const MTU_MAX: u16 = 9216;
/// How often the supervisor reads the ports' link state.
pub const LINK_CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// How long `start` waits for a worker to open its sockets.
const WORKER_START_TIMEOUT: Duration = Duration::from_secs(10);
/// Ethernet header with one 802.1Q tag.
const L2_TAGGED: u32 = 18;

/// One port of the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSpec {
    /// Interface name, in the engine's network namespace.
    pub name: String,
    /// Receive queues the engine serves; worker i serves queue i.
    pub queues: u32,
    /// IP MTU: the largest IP packet sent out of the port.
    pub mtu: u16,
    /// VLAN 0 (untagged) and 802.1Q VLANs, each with the router's optional IPv4 and IPv6
    /// address (the source of ICMP errors sent there; the kernel answers traffic to them).
    pub sub_interfaces: Vec<SubInterfaceConfig>,
    /// Forward directed broadcasts to this port's subnets (off: dropped, RFC 2644).
    pub directed_broadcast: bool,
    /// Edge filters the XDP program applies from the start, by VLAN (one of
    /// `sub_interfaces`'); `Engine::set_edge` changes them while it runs.
    pub edge: Vec<(u16, EdgeFilter)>,
}

impl PortSpec {
    /// An untagged port without router addresses: one queue, MTU 1500.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            queues: 1,
            mtu: 1500,
            sub_interfaces: vec![SubInterfaceConfig::new(0, None, None)],
            directed_broadcast: false,
            edge: Vec::new(),
        }
    }
}

/// Sources in each worker's ICMP table at most (48 octets each: 48 MiB per worker).
pub const MAX_ICMP_SOURCES: usize = 1 << 20;

/// Everything `Engine::start` needs besides the FIB readers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    pub ports: Vec<PortSpec>,
    /// Worker threads; None: one per online CPU, but no more than the fewest queues of any
    /// port (every worker needs its own queue on every port to transmit there).
    pub workers: Option<usize>,
    /// Pin worker i to the i-th CPU this process may run on.
    pub pin_cpus: bool,
    /// Spin when idle instead of sleeping in poll (lower latency, a core per worker).
    pub busy_poll: bool,
    /// Run the workers SCHED_FIFO at this priority (1 to 99); None: SCHED_OTHER. A
    /// real-time worker has its core whenever it has frames, ahead of the kernel thread
    /// that receives them for it (threaded NAPI, ksoftirqd), which then runs only while
    /// the worker sleeps: the kernel no longer spends the core taking in frames that the
    /// worker cannot take and it drops at the socket (receive livelock). Needs the
    /// wake-up mode (the worker sleeps when idle), so not with `busy_poll`.
    pub realtime_priority: Option<u8>,
    /// Copy or zero-copy sockets (Auto: zero-copy where the driver has it).
    pub bind_mode: BindMode,
    /// Native or generic XDP (Auto: native, falling back to generic).
    pub attach_mode: AttachMode,
    /// UMEM frames per worker; None: 4096 per port.
    pub frames_per_worker: Option<u32>,
    /// UMEM frame size: 2048 or 4096.
    pub frame_size: u32,
    /// ICMP errors per port.
    pub icmp_rate_limit: IcmpRateLimit,
    /// ICMP errors per source and per worker (each worker has its own buckets and table).
    pub icmp_limits: IcmpLimits,
    /// Network namespace (`ip netns` name) the ports live in; None: the caller's.
    pub netns: Option<String>,
    /// Mixed into the flow hash.
    pub hash_seed: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            ports: Vec::new(),
            workers: None,
            pin_cpus: false,
            busy_poll: false,
            realtime_priority: None,
            bind_mode: BindMode::Auto,
            attach_mode: AttachMode::Auto,
            frames_per_worker: None,
            frame_size: 2048,
            icmp_rate_limit: IcmpRateLimit::default(),
            icmp_limits: IcmpLimits::default(),
            netns: None,
            hash_seed: 0x636f_7272_6964_6f72,
        }
    }
}

/// The configuration with every default resolved, after validation.
#[derive(Clone, Debug)]
struct Plan {
    workers: usize,
    umem: UmemConfig,
    sockets: SocketConfig,
}

fn config_err(field: impl Into<String>, message: impl Into<String>) -> EngineError {
    EngineError::Config { field: field.into(), message: message.into() }
}

impl EngineConfig {
    /// Checks every field; the error names the first bad one and what would be right.
    pub fn validate(&self) -> Result<(), EngineError> {
        self.plan().map(|_| ())
    }

    /// The number of workers `start` will run.
    pub fn worker_count(&self) -> Result<usize, EngineError> {
        self.plan().map(|p| p.workers)
    }

    fn plan(&self) -> Result<Plan, EngineError> {
        if self.ports.is_empty() {
            return Err(config_err("ports", "no ports: list at least one"));
        }
        if self.ports.len() > MAX_PORTS as usize {
            return Err(config_err("ports", format!("{} ports exceed the steering program's {MAX_PORTS}", self.ports.len())));
        }
        if self.frame_size != 2048 && self.frame_size != 4096 {
            return Err(config_err("frame_size", format!("{} is neither 2048 nor 4096", self.frame_size)));
        }
        match self.realtime_priority {
            Some(p) if !(1..=99).contains(&p) => {
                return Err(config_err("realtime_priority", format!("{p} is not a SCHED_FIFO priority (1 to 99)")));
            }
            Some(_) if self.busy_poll => {
                return Err(config_err(
                    "realtime_priority",
                    "a real-time worker must sleep when idle, and busy_poll spins: the kernel could no longer receive on its core",
                ));
            }
            _ => {}
        }
        if self.icmp_limits.sources == 0 || self.icmp_limits.sources > MAX_ICMP_SOURCES {
            return Err(config_err("icmp_sources", format!("{} is not between 1 and {MAX_ICMP_SOURCES}", self.icmp_limits.sources)));
        }
        let largest_mtu = self.frame_size - XDP_PACKET_HEADROOM - L2_TAGGED;
        for (i, port) in self.ports.iter().enumerate() {
            let f = |name: &str| format!("ports[{i}].{name}");
            if port.name.is_empty() || port.name.len() >= libc::IFNAMSIZ || port.name.contains(['/', ' ', '\0']) {
                return Err(config_err(
                    f("name"),
                    format!("{:?} is not an interface name (1 to 15 characters, no '/' or space)", port.name),
                ));
            }
            if let Some(j) = self.ports[..i].iter().position(|p| p.name == port.name) {
                return Err(config_err(f("name"), format!("{:?} is already ports[{j}]", port.name)));
            }
            if port.queues == 0 || port.queues > MAX_QUEUES {
                return Err(config_err(f("queues"), format!("{} is not between 1 and {MAX_QUEUES}", port.queues)));
            }
            if !(MTU_MIN..=MTU_MAX).contains(&port.mtu) {
                return Err(config_err(
                    f("mtu"),
                    format!("{} is not between {MTU_MIN} (the IPv6 minimum, RFC 8200 section 5) and {MTU_MAX}", port.mtu),
                ));
            }
            if u32::from(port.mtu) > largest_mtu {
                return Err(config_err(
                    f("mtu"),
                    format!(
                        "{} does not fit a {}-byte frame (at most {largest_mtu} after {XDP_PACKET_HEADROOM} bytes of headroom and a tagged Ethernet header); use frame_size 4096 or a smaller MTU",
                        port.mtu, self.frame_size
                    ),
                ));
            }
            if port.sub_interfaces.is_empty() {
                return Err(config_err(f("addresses"), "no sub-interface: list at least VLAN 0 (untagged) or one 802.1Q VLAN"));
            }
            for (k, (vlan, _)) in port.edge.iter().enumerate() {
                if !port.sub_interfaces.iter().any(|s| s.vlan == *vlan) {
                    return Err(config_err(f("edge"), format!("VLAN {vlan} is not one of this port's sub-interfaces")));
                }
                if port.edge[..k].iter().any(|(v, _)| v == vlan) {
                    return Err(config_err(f("edge"), format!("VLAN {vlan} is listed twice")));
                }
            }
            for (k, s) in port.sub_interfaces.iter().enumerate() {
                if s.vlan > 4094 {
                    return Err(config_err(f("addresses"), format!("VLAN {} is not between 0 (untagged) and 4094", s.vlan)));
                }
                if port.sub_interfaces[..k].iter().any(|o| o.vlan == s.vlan) {
                    return Err(config_err(f("addresses"), format!("VLAN {} is listed twice", s.vlan)));
                }
                let addrs = s.ipv4.map(IpAddr::V4).into_iter().chain(s.ipv6.map(IpAddr::V6));
                for a in addrs {
                    let bad = a.is_unspecified() || a.is_multicast() || a.is_loopback();
                    if bad || matches!(a, IpAddr::V4(v4) if v4.is_broadcast()) {
                        return Err(config_err(
                            f("addresses"),
                            format!("VLAN {}: {a} cannot be a router address (unspecified, loopback, multicast or broadcast)", s.vlan),
                        ));
                    }
                }
            }
        }
        let fewest_queues = self.ports.iter().map(|p| p.queues).min().unwrap_or(1) as usize;
        let workers = match self.workers {
            Some(0) => return Err(config_err("workers", "0: at least one worker is needed")),
            Some(n) if n > fewest_queues => {
                let (i, p) = self.ports.iter().enumerate().min_by_key(|(_, p)| p.queues).unwrap_or((0, &self.ports[0]));
                return Err(config_err(
                    "workers",
                    format!(
                        "{n} workers but ports[{i}] ({}) has {} queue(s): every worker transmits on its own queue of every port, so use at most {fewest_queues} workers or more queues",
                        p.name, p.queues
                    ),
                ));
            }
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()).min(fewest_queues),
        };
        let ports = self.ports.len() as u32;
        let frames = self.frames_per_worker.unwrap_or(4096 * ports);
        let needed = 256 * ports;
        if frames < needed || frames > 1 << 20 {
            return Err(config_err("frames_per_worker", format!("{frames} is not between {needed} (256 per port) and {}", 1 << 20)));
        }
        // Fill rings together take at most half the UMEM, leaving the rest for frames in
        // flight to tx; every ring between 64 and 2048 entries.
        let ring = (frames / (2 * ports)).clamp(64, 2048);
        let ring = if ring.is_power_of_two() { ring } else { ring.next_power_of_two() / 2 };
        if let Some(ns) = &self.netns {
            if ns.is_empty() || ns.contains(['/', '\0']) || ns == "." || ns == ".." {
                return Err(config_err("netns", format!("{ns:?} is not a namespace name (as in `ip netns add NAME`)")));
            }
        }
        Ok(Plan {
            workers,
            umem: UmemConfig { frame_count: frames, frame_size: self.frame_size, headroom: XDP_PACKET_HEADROOM },
            sockets: SocketConfig { rx_size: ring, tx_size: ring, fill_size: ring, completion_size: ring, mode: self.bind_mode },
        })
    }
}

/// Why the engine did not start (or stop cleanly). `Config` names the field.
#[derive(Debug)]
pub enum EngineError {
    /// A configuration field is wrong: `field: message`.
    Config { field: String, message: String },
    /// The network namespace could not be entered.
    Netns { name: String, error: String },
    /// Loading or attaching the steering program, or updating its maps.
    Steering(XdpError),
    /// Opening or binding an AF_XDP socket.
    Socket(XskError),
    /// A thread could not be started, died, or did not answer.
    Thread(String),
    /// What went wrong inside worker `index`.
    Worker { index: usize, error: Box<EngineError> },
}

impl EngineError {
    fn in_worker(self, index: usize) -> Self {
        Self::Worker { index, error: Box::new(self) }
    }

    /// True for a configuration error (the caller's input), false for a system failure.
    pub fn is_config(&self) -> bool {
        match self {
            Self::Config { .. } => true,
            Self::Worker { error, .. } => error.is_config(),
            _ => false,
        }
    }
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config { field, message } => write!(f, "{field}: {message}"),
            Self::Netns { name, error } => write!(f, "network namespace {name}: {error}"),
            Self::Steering(e) => write!(f, "{e}"),
            Self::Socket(e) => write!(f, "{e}"),
            Self::Thread(e) => write!(f, "engine thread: {e}"),
            Self::Worker { index, error } => write!(f, "worker {index}: {error}"),
        }
    }
}

impl std::error::Error for EngineError {}

/// A port as the engine runs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortStatus {
    pub name: String,
    pub ifindex: u32,
    pub mac: [u8; 6],
    pub queues: u32,
    /// Copy or zero-copy, as the kernel reports for worker 0's socket on this port.
    pub socket_mode: XskMode,
    pub xdp_mode: XdpMode,
    pub mtu: u16,
    /// Administratively up with carrier, as of the supervisor's last check.
    pub link_up: bool,
    /// Times the port came back up and was recovered.
    pub recoveries: u64,
}

/// The kernel's counters of one AF_XDP socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketCounters {
    pub worker: usize,
    pub port: usize,
    pub queue: u32,
    pub mode: XskMode,
    pub statistics: XskStatistics,
}

/// One worker's counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerSnapshot {
    pub forwarding: CounterSnapshot,
    /// Forwarded frames dropped because the egress tx ring stayed full.
    pub tx_ring_full: u64,
    /// Where every frame of the worker's UMEM was at the last publication.
    pub accounting: FrameAccounting,
    /// Passes through the worker loop.
    pub passes: u64,
}

/// Counters of the whole engine, read without stopping or locking a worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineCounters {
    /// The workers' forwarding counters summed.
    pub total: CounterSnapshot,
    pub tx_ring_full: u64,
    pub workers: Vec<WorkerSnapshot>,
    /// `(port index, VLAN)` of each sub-interface, in counter order.
    pub sub_interfaces: Vec<(usize, u16)>,
    pub sockets: Vec<SocketCounters>,
    pub steering: SteeringCounters,
    /// The XDP program's edge drops, by port index.
    pub edge: Vec<EdgeCounters>,
}

/// A socket as the control side knows it: a duplicate descriptor.
struct SocketEntry {
    worker: usize,
    port: usize,
    mode: XskMode,
    fd: OwnedFd,
}

/// Link state of one port, written by the supervisor.
#[derive(Debug, Default)]
struct PortLive {
    link_up: AtomicBool,
    recoveries: AtomicU64,
}

/// What the supervisor hands back once everything runs.
struct Started {
    ports: Vec<PortStatus>,
    workers: Vec<Arc<WorkerShared>>,
}

/// State shared by the engine handle and its supervisor.
struct Shared {
    config: EngineConfig,
    stop: Arc<AtomicBool>,
    steering: Arc<Mutex<Option<Steering>>>,
    sockets: Mutex<Vec<SocketEntry>>,
    live: Vec<PortLive>,
    /// Every sub-interface's uRPF policy, read by all workers, set by `Engine::set_urpf`.
    urpf: Arc<UrpfTable>,
}

/// A running engine. Dropping it stops it.
pub struct Engine {
    shared: Arc<Shared>,
    ports: Vec<PortStatus>,
    workers: Vec<Arc<WorkerShared>>,
    sub_interfaces: Vec<(usize, u16)>,
    supervisor: Option<JoinHandle<Result<(), EngineError>>>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine").field("ports", &self.ports).field("workers", &self.workers.len()).finish_non_exhaustive()
    }
}

impl Engine {
    /// Attaches, opens and starts everything; returns once every worker forwards. `readers`
    /// holds one FIB reader per worker (`config.worker_count()`). On error nothing is left
    /// behind: threads joined, sockets closed, program detached.
    pub fn start(config: EngineConfig, readers: Vec<FibReader>) -> Result<Engine, EngineError> {
        let plan = config.plan()?;
        if readers.len() != plan.workers {
            return Err(config_err(
                "workers",
                format!("{} FIB readers for {} workers: one reader per worker", readers.len(), plan.workers),
            ));
        }
        // Dense sub-interface order, as the pipeline's: ports in order, each port's listed.
        let urpf = Arc::new(UrpfTable::new(config.ports.iter().flat_map(|p| p.sub_interfaces.iter().map(|s| s.urpf))));
        let shared = Arc::new(Shared {
            urpf,
            live: config.ports.iter().map(|_| PortLive::default()).collect(),
            config,
            stop: Arc::new(AtomicBool::new(false)),
            steering: Arc::new(Mutex::new(None)),
            sockets: Mutex::new(Vec::new()),
        });
        let (tx, rx) = mpsc::channel();
        let s = shared.clone();
        let supervisor = std::thread::Builder::new()
            .name("corridor-supervisor".into())
            .spawn(move || supervise(s, plan, readers, tx))
            .map_err(|e| EngineError::Thread(format!("spawning the supervisor: {e}")))?;
        let started = match rx.recv() {
            Ok(Ok(started)) => started,
            Ok(Err(e)) => {
                let _ = supervisor.join();
                return Err(e);
            }
            Err(_) => {
                let outcome = supervisor.join();
                return Err(EngineError::Thread(match outcome {
                    Ok(Err(e)) => e.to_string(),
                    _ => "the supervisor died during start".into(),
                }));
            }
        };
        let sub_interfaces =
            shared.config.ports.iter().enumerate().flat_map(|(p, port)| port.sub_interfaces.iter().map(move |s| (p, s.vlan))).collect();
        Ok(Engine { shared, ports: started.ports, workers: started.workers, sub_interfaces, supervisor: Some(supervisor) })
    }

    /// The configuration the engine runs with.
    pub fn config(&self) -> &EngineConfig {
        &self.shared.config
    }

    /// True until `stop`.
    pub fn running(&self) -> bool {
        self.supervisor.is_some()
    }

    /// Stops the workers (within a few milliseconds: an idle worker sleeps at most 10 ms),
    /// joins every thread, closes the sockets, frees the UMEMs and detaches the program.
    /// Calling it again does nothing.
    pub fn stop(&mut self) -> Result<(), EngineError> {
        let Some(supervisor) = self.supervisor.take() else { return Ok(()) };
        // Relaxed: the joins below order everything that matters.
        self.shared.stop.store(true, Ordering::Relaxed);
        supervisor.join().map_err(|_| EngineError::Thread("the supervisor panicked".into()))?
    }

    /// New ICMP error limits for every worker, taken at its next pass (within one idle
    /// poll, 10 ms): per ingress port, per source, per worker. The per-source table's size
    /// stays as started. Each bucket keeps its tokens up to its new burst.
    pub fn set_icmp_limits(&self, per_port: IcmpRateLimit, per_source: IcmpRateLimit, per_worker: IcmpRateLimit) {
        for w in &self.workers {
            w.set_icmp_limits([per_port, per_source, per_worker]);
        }
    }

    /// Sets the uRPF policy of sub-interface (`port` index, `vlan`); every worker checks by
    /// it from its next frame on. The error names a sub-interface the engine does not have.
    pub fn set_urpf(&self, port: usize, vlan: u16, policy: UrpfPolicy) -> Result<(), EngineError> {
        let index =
            self.sub_interfaces.iter().position(|&(p, v)| p == port && v == vlan).ok_or_else(|| {
                config_err(format!("ports[{port}]"), format!("no sub-interface with VLAN {vlan} (0 is the untagged one)"))
            })?;
        self.shared.urpf.set(index, policy);
        Ok(())
    }

    /// Sets the XDP program's edge filter of sub-interface (`port` index, `vlan`): in force
    /// for the next frame. The error names a sub-interface the engine does not have, or a
    /// full map (the old filter stays).
    pub fn set_edge(&self, port: usize, vlan: u16, filter: EdgeFilter) -> Result<(), EngineError> {
        if !self.sub_interfaces.contains(&(port, vlan)) {
            return Err(config_err(format!("ports[{port}]"), format!("no sub-interface with VLAN {vlan} (0 is the untagged one)")));
        }
        let ifindex = self.ports.get(port).map(|p| p.ifindex).unwrap_or_default();
        let mut steering = self.shared.steering.lock().unwrap_or_else(|p| p.into_inner());
        let steering = steering.as_mut().ok_or_else(|| EngineError::Thread("the steering program is not loaded".into()))?;
        steering.set_edge(ifindex, vlan, filter).map_err(EngineError::Steering)
    }

    /// The edge filters in force: (port index, VLAN, filter).
    pub fn edge(&self) -> Vec<(usize, u16, EdgeFilter)> {
        let steering = self.shared.steering.lock().unwrap_or_else(|p| p.into_inner());
        let Some(s) = steering.as_ref() else { return Vec::new() };
        let mut out: Vec<_> = s
            .edge_filters()
            .iter()
            .filter_map(|((ifindex, vlan), f)| self.ports.iter().position(|p| p.ifindex == *ifindex).map(|i| (i, *vlan, f.clone())))
            .collect();
        out.sort_by_key(|(p, v, _)| (*p, *v));
        out
    }

    /// The source MACs the edge filters refused lately, with their port index, most
    /// recent first (the program keeps the last 256).
    pub fn refused_macs(&self) -> Vec<(usize, RefusedMac)> {
        let steering = self.shared.steering.lock().unwrap_or_else(|p| p.into_inner());
        let Some(s) = steering.as_ref() else { return Vec::new() };
        s.refused_macs().into_iter().filter_map(|r| self.ports.iter().position(|p| p.ifindex == r.ifindex).map(|i| (i, r))).collect()
    }

    /// Every sub-interface's uRPF policy in force: (port index, VLAN, policy).
    pub fn urpf(&self) -> Vec<(usize, u16, UrpfPolicy)> {
        self.sub_interfaces.iter().enumerate().map(|(i, &(p, v))| (p, v, self.shared.urpf.get(i))).collect()
    }

    /// Frames dropped by the blackhole route of counter slot `slot` (`Fib::blackhole_slot`),
    /// summed over the workers.
    pub fn blackhole_dropped(&self, slot: u32) -> u64 {
        self.workers.iter().map(|w| w.counters.blackhole(slot)).sum()
    }

    /// The ports with their current link state.
    pub fn ports(&self) -> Vec<PortStatus> {
        self.ports
            .iter()
            .zip(&self.shared.live)
            .map(|(p, live)| PortStatus {
                // Acquire: pairs with the link watch's Release, so `recoveries` is at
                // least as new as `link_up`.
                link_up: live.link_up.load(Ordering::Acquire),
                recoveries: live.recoveries.load(Ordering::Relaxed),
                ..p.clone()
            })
            .collect()
    }

    /// Takes the destinations the workers queued for resolution since the last call (see
    /// `pipeline::glean`), each worker's oldest first, at most `max` in all. IPv4 comes back
    /// as `IpAddr::V4`. Never blocks on a worker.
    pub fn drain_glean(&self, max: usize) -> Vec<std::net::IpAddr> {
        let mut out = Vec::new();
        let mut buf = [0u128; crate::pipeline::glean::GLEAN_SLOTS];
        for w in &self.workers {
            let room = max.saturating_sub(out.len()).min(buf.len());
            let n = w.glean.drain(&mut buf[..room]);
            out.extend(buf[..n].iter().map(|&a| {
                let v6 = std::net::Ipv6Addr::from_bits(a);
                v6.to_ipv4_mapped().map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4)
            }));
        }
        out
    }

    /// What became of the destinations of `glean` drops, summed over the workers.
    pub fn glean_stats(&self) -> crate::pipeline::GleanStats {
        self.workers.iter().map(|w| w.glean.stats()).fold(crate::pipeline::GleanStats::default(), |a, s| crate::pipeline::GleanStats {
            queued: a.queued + s.queued,
            deduplicated: a.deduplicated + s.deduplicated,
            rate_limited: a.rate_limited + s.rate_limited,
            full: a.full + s.full,
        })
    }

    /// Sets each port's sFlow sampling rate (1 in N frames received on it; 0 off), in the
    /// order of the ports; the workers take it at their next batch. Each worker samples
    /// its own share of a port's frames at that rate. Refused whole when a rate is out of
    /// range or the count is not the ports'.
    pub fn set_sample_rates(&self, rates: &[u32]) -> Result<(), EngineError> {
        use crate::pipeline::sample::SAMPLE_RATE_MAX;
        if rates.len() != self.ports.len() {
            return Err(config_err("sample_rates", format!("{} rates for {} ports: give one per port", rates.len(), self.ports.len())));
        }
        if let Some((i, r)) = rates.iter().enumerate().find(|(_, &r)| r > SAMPLE_RATE_MAX) {
            return Err(config_err(
                "sample_rates",
                format!("ports[{i}] ({}): {r} is not between 0 (off) and {SAMPLE_RATE_MAX}", self.ports[i].name),
            ));
        }
        for w in &self.workers {
            w.samples.set_rates(rates);
        }
        Ok(())
    }

    /// Takes the sampled frames of every worker since the last call, each worker's oldest
    /// first, at most `max` in all. Never blocks on a worker.
    pub fn drain_samples(&self, max: usize) -> Vec<crate::pipeline::Sample> {
        let mut out = Vec::new();
        for w in &self.workers {
            let room = max.saturating_sub(out.len());
            w.samples.drain(&mut out, room);
        }
        out
    }

    /// Per port: the sampling rate, and pool, samples and lost samples summed over workers.
    pub fn sample_stats(&self) -> Vec<crate::pipeline::PortSampleStats> {
        let mut total = vec![crate::pipeline::PortSampleStats::default(); self.ports.len()];
        for w in &self.workers {
            for (t, s) in total.iter_mut().zip(w.samples.stats()) {
                t.rate = s.rate;
                t.pool += s.pool;
                t.sampled += s.sampled;
                t.dropped += s.dropped;
            }
        }
        total
    }

    /// Every counter, read while the workers run. After `stop`, the final values (socket
    /// and steering counters are gone with their objects and read as zero).
    pub fn counters(&self) -> EngineCounters {
        let workers: Vec<WorkerSnapshot> = self
            .workers
            .iter()
            .map(|w| WorkerSnapshot {
                forwarding: w.counters.snapshot(),
                // Relaxed: single-writer counters (see counters::Counter).
                tx_ring_full: w.tx_ring_full.get(),
                accounting: w.accounting.read(),
                passes: w.passes.load(Ordering::Relaxed),
            })
            .collect();
        let mut total = CounterSnapshot::zero(self.sub_interfaces.len());
        for w in &workers {
            total.add(&w.forwarding);
        }
        let sockets = self
            .shared
            .sockets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|s| SocketCounters {
                worker: s.worker,
                port: s.port,
                queue: s.worker as u32,
                mode: s.mode,
                statistics: xsk::statistics(s.fd.as_fd()).unwrap_or_default(),
            })
            .collect();
        let (steering, by_ifindex) = {
            let guard = self.shared.steering.lock().unwrap_or_else(|p| p.into_inner());
            let s = guard.as_ref();
            (s.and_then(|s| s.counters().ok()).unwrap_or_default(), s.and_then(|s| s.edge_counters().ok()).unwrap_or_default())
        };
        let edge =
            self.ports.iter().map(|p| by_ifindex.iter().find(|(i, _)| *i == p.ifindex).map(|(_, c)| *c).unwrap_or_default()).collect();
        EngineCounters {
            edge,
            total,
            tx_ring_full: workers.iter().map(|w| w.tx_ring_full).sum(),
            workers,
            sub_interfaces: self.sub_interfaces.clone(),
            sockets,
            steering,
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// The supervisor thread: set-up, then link watch until stop, then teardown.
fn supervise(
    shared: Arc<Shared>,
    plan: Plan,
    readers: Vec<FibReader>,
    started: mpsc::Sender<Result<Started, EngineError>>,
) -> Result<(), EngineError> {
    let mut handles = Vec::new();
    let result = set_up(&shared, &plan, readers, &mut handles);
    let ok = result.is_ok();
    let ifindexes: Vec<u32> = result.as_ref().map(|s| s.ports.iter().map(|p| p.ifindex).collect()).unwrap_or_default();
    let workers: Vec<Arc<WorkerShared>> = result.as_ref().map(|s| s.workers.clone()).unwrap_or_default();
    let reported = started.send(result).is_ok();
    drop(started);
    let mut outcome = Ok(());
    if ok && reported {
        outcome = watch_links(&shared, &ifindexes, &workers);
    }
    // Teardown, whatever happened: workers first (they close their sockets), then the
    // duplicate descriptors, then the program.
    shared.stop.store(true, Ordering::Relaxed);
    for (i, h) in handles.into_iter().enumerate() {
        if h.join().is_err() && outcome.is_ok() {
            outcome = Err(EngineError::Thread(format!("worker {i} panicked")));
        }
    }
    shared.sockets.lock().unwrap_or_else(|p| p.into_inner()).clear();
    let steering = shared.steering.lock().unwrap_or_else(|p| p.into_inner()).take();
    drop(steering);
    outcome
}

fn set_up(shared: &Arc<Shared>, plan: &Plan, readers: Vec<FibReader>, handles: &mut Vec<JoinHandle<()>>) -> Result<Started, EngineError> {
    let config = &shared.config;
    if let Some(ns) = &config.netns {
        sys::enter_netns(ns).map_err(|e| EngineError::Netns { name: ns.clone(), error: e.to_string() })?;
    }
    let mut steering = Steering::load().map_err(EngineError::Steering)?;
    let mut attachments = Vec::with_capacity(config.ports.len());
    for port in &config.ports {
        attachments.push(steering.attach(&port.name, config.attach_mode).map_err(EngineError::Steering)?);
    }
    for (port, attachment) in config.ports.iter().zip(&attachments) {
        for (vlan, filter) in &port.edge {
            steering.set_edge(attachment.ifindex, *vlan, filter.clone()).map_err(EngineError::Steering)?;
        }
    }
    for port in &config.ports {
        for s in &port.sub_interfaces {
            for a in s.ipv4.map(IpAddr::V4).into_iter().chain(s.ipv6.map(IpAddr::V6)) {
                steering.add_router_address(a).map_err(EngineError::Steering)?;
            }
        }
    }
    *shared.steering.lock().unwrap_or_else(|p| p.into_inner()) = Some(steering);

    let pipeline_config = PipelineConfig {
        ports: config
            .ports
            .iter()
            .zip(&attachments)
            .map(|(p, a)| PortConfig {
                mac: a.mac,
                mtu: p.mtu,
                sub_interfaces: p.sub_interfaces.clone(),
                icmp_rate_limit: config.icmp_rate_limit,
                directed_broadcast: p.directed_broadcast,
            })
            .collect(),
        hash_seed: config.hash_seed,
        icmp_limits: config.icmp_limits,
    };
    let ifindexes: Vec<u32> = attachments.iter().map(|a| a.ifindex).collect();
    let cpus = if config.pin_cpus { sys::allowed_cpus() } else { Vec::new() };
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut workers = Vec::with_capacity(plan.workers);
    for (index, fib) in readers.into_iter().enumerate() {
        let mut pipeline = Pipeline::new(&pipeline_config).map_err(|e| config_err("ports", e.to_string()))?;
        if !pipeline.share_urpf(shared.urpf.clone()) {
            return Err(config_err("ports", "the uRPF table does not match the sub-interfaces"));
        }
        let ws = Arc::new(WorkerShared {
            samples: pipeline.sample_ring().clone(),
            ..WorkerShared::new(pipeline.counters().clone(), pipeline.glean_queue().clone())
        });
        workers.push(ws.clone());
        let setup = WorkerSetup {
            index,
            netns: config.netns.clone(),
            cpu: (!cpus.is_empty()).then(|| cpus[index % cpus.len()]),
            busy_poll: config.busy_poll,
            realtime_priority: config.realtime_priority,
            umem: plan.umem,
            sockets: plan.sockets,
            ifindexes: ifindexes.clone(),
            pipeline,
            fib,
            shared: ws,
            steering: shared.steering.clone(),
            stop: shared.stop.clone(),
        };
        let tx = ready_tx.clone();
        let h = std::thread::Builder::new()
            .name(format!("corridor-w{index}"))
            .spawn(move || worker::run(setup, tx))
            .map_err(|e| EngineError::Thread(format!("spawning worker {index}: {e}")))?;
        handles.push(h);
    }
    drop(ready_tx);
    // Each worker reports once, in whatever order.
    let mut socket_modes: Vec<Option<XskMode>> = vec![None; config.ports.len()];
    let deadline = Instant::now() + WORKER_START_TIMEOUT;
    for _ in 0..plan.workers {
        let left = deadline.saturating_duration_since(Instant::now());
        let report = ready_rx
            .recv_timeout(left)
            .map_err(|_| EngineError::Thread(format!("a worker did not open its sockets within {WORKER_START_TIMEOUT:?}")))??;
        let mut sockets = shared.sockets.lock().unwrap_or_else(|p| p.into_inner());
        for (port, (fd, mode)) in report.sockets.into_iter().enumerate() {
            if report.index == 0 {
                socket_modes[port] = Some(mode);
            }
            sockets.push(SocketEntry { worker: report.index, port, mode, fd });
        }
        sockets.sort_by_key(|s| (s.worker, s.port));
    }
    let ports = config
        .ports
        .iter()
        .zip(&attachments)
        .zip(socket_modes)
        .map(|((p, a), mode)| PortStatus {
            name: p.name.clone(),
            ifindex: a.ifindex,
            mac: a.mac,
            queues: p.queues,
            socket_mode: mode.unwrap_or(XskMode::Copy),
            xdp_mode: a.mode,
            mtu: p.mtu,
            link_up: false,
            recoveries: 0,
        })
        .collect();
    // Read the links once before returning, so `ports()` is right from the start.
    if let Ok(socket) = sys::ioctl_socket() {
        for (port, live) in config.ports.iter().zip(&shared.live) {
            live.link_up.store(sys::link_up(socket.as_fd(), &port.name).unwrap_or(false), Ordering::Relaxed);
        }
    }
    Ok(Started { ports, workers })
}

/// Reads every port's link state each `LINK_CHECK_INTERVAL` until stop. A port that comes
/// back up gets its sockets put in the XSKMAP again (a no-op when the kernel kept them)
/// and every worker is told to refill and kick its rings, in case a wake-up was lost
/// while the link was down.
fn watch_links(shared: &Arc<Shared>, ifindexes: &[u32], workers: &[Arc<WorkerShared>]) -> Result<(), EngineError> {
    let socket = sys::ioctl_socket().map_err(|e| EngineError::Thread(format!("socket for link checks: {e}")))?;
    let mut next = Instant::now();
    while !shared.stop.load(Ordering::Relaxed) {
        if Instant::now() < next {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        next += LINK_CHECK_INTERVAL;
        for (i, (port, live)) in shared.config.ports.iter().zip(&shared.live).enumerate() {
            let up = sys::link_up(socket.as_fd(), &port.name).unwrap_or(false);
            // Only this thread writes the flag after start, so a load is its edge detection.
            let was = live.link_up.load(Ordering::Relaxed);
            if up && !was {
                recover_port(shared, i, ifindexes[i]);
                live.recoveries.fetch_add(1, Ordering::Relaxed);
                for w in workers {
                    w.recover.fetch_add(1, Ordering::Relaxed);
                }
            }
            // Published after the recovery, with Release: a reader that sees the port up
            // (Acquire in `ports()`) sees its recovery counted, not a port up but not yet
            // recovered.
            live.link_up.store(up, Ordering::Release);
        }
    }
    Ok(())
}

fn recover_port(shared: &Shared, port: usize, ifindex: u32) {
    let sockets = shared.sockets.lock().unwrap_or_else(|p| p.into_inner());
    let mut steering = shared.steering.lock().unwrap_or_else(|p| p.into_inner());
    let Some(steering) = steering.as_mut() else { return };
    for s in sockets.iter().filter(|s| s.port == port) {
        // An error here leaves the port to the kernel until the next recovery; the link
        // watch has nowhere better to report it than the port's status.
        let _ = steering.insert_socket(ifindex, s.worker as u32, s.fd.as_fd());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_errors_name_the_field() {
        let check = |config: &EngineConfig, want: &str| {
            let e = config.validate().unwrap_err();
            assert!(e.is_config() && e.to_string().starts_with(want), "{e} should start with {want}");
        };
        let base = EngineConfig { ports: vec![PortSpec::new("p0"), PortSpec::new("p1")], ..Default::default() };
        assert!(base.validate().is_ok());
        check(&EngineConfig::default(), "ports: no ports");
        let mut c = base.clone();
        c.ports[0].mtu = 9000;
        check(&c, "ports[0].mtu: 9000 does not fit a 2048-byte frame");
        c.frame_size = 4096;
        check(&c, "ports[0].mtu: 9000 does not fit a 4096-byte frame");
        c.ports[0].mtu = 1000;
        check(&c, "ports[0].mtu: 1000 is not between 1280");
        let mut c = base.clone();
        c.ports[1].name = "p0".into();
        check(&c, "ports[1].name: \"p0\" is already ports[0]");
        let mut c = base.clone();
        c.ports[1].queues = 0;
        check(&c, "ports[1].queues: 0 is not between 1 and 256");
        let mut c = base.clone();
        c.workers = Some(2);
        check(&c, "workers: 2 workers but ports[0] (p0) has 1 queue(s)");
        let mut c = base.clone();
        let first = c.ports[0].sub_interfaces[0];
        c.ports[0].sub_interfaces.push(first);
        check(&c, "ports[0].addresses: VLAN 0 is listed twice");
        let mut c = base.clone();
        c.ports[0].sub_interfaces[0].vlan = 4095;
        check(&c, "ports[0].addresses: VLAN 4095");
        let mut c = base.clone();
        c.ports[0].sub_interfaces[0].ipv4 = Some("224.0.0.1".parse().unwrap());
        check(&c, "ports[0].addresses: VLAN 0: 224.0.0.1 cannot be a router address");
        let mut c = base.clone();
        c.frame_size = 3000;
        check(&c, "frame_size: 3000");
        let mut c = base.clone();
        c.netns = Some("../x".into());
        check(&c, "netns:");
        let mut c = base.clone();
        c.realtime_priority = Some(0);
        check(&c, "realtime_priority: 0 is not a SCHED_FIFO priority");
        c.realtime_priority = Some(100);
        check(&c, "realtime_priority: 100 is not a SCHED_FIFO priority");
        c.realtime_priority = Some(99);
        assert!(c.validate().is_ok());
        c.busy_poll = true;
        check(&c, "realtime_priority: a real-time worker must sleep when idle");
        let mut c = base;
        c.frames_per_worker = Some(100);
        check(&c, "frames_per_worker: 100");
    }
}
