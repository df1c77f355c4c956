//! One worker: a thread owning queue i of every port, one AF_XDP socket per port sharing
//! one UMEM, a `Pipeline` and a `FibReader`. Everything it needs is allocated before its
//! loop starts; the loop takes no lock, logs nothing and makes no system call but the ring
//! kicks and, in wake-up mode, a poll when idle.

use std::{
    os::fd::{AsRawFd, OwnedFd},
    sync::{
        atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering},
        mpsc, Arc, Mutex,
    },
    time::Instant,
};

use crate::{
    counters::{Counter, WorkerCounters},
    fib::FibReader,
    pipeline::{IcmpRateLimit, PacketBuf, Pipeline, Verdict, MAX_BATCH},
    xdp::Steering,
    xsk::{self, Frame, FrameAccounting, SocketConfig, SocketSet, UmemConfig, XskMode, BATCH},
};

use super::{sys, EngineError};

// One rx batch is one pipeline batch: the verdicts array and the bufs built for a receive
// are MAX_BATCH long and a receive takes up to BATCH frames.
const _: () = assert!(BATCH == MAX_BATCH, "xsk::BATCH and pipeline::MAX_BATCH must agree");

/// Longest sleep of an idle worker in wake-up mode: bounds how long `stop` waits.
const IDLE_POLL_MS: i32 = 10;
/// Passes between two publications of the frame accounting while busy.
const PUBLISH_EVERY: u64 = 256;

/// What a worker shares with the control thread: written only by the worker (or, for
/// `recover`, only by the supervisor, and for the ICMP limits by `Engine::set_icmp_limits`),
/// read by anyone without a lock.
#[derive(Debug)]
pub(crate) struct WorkerShared {
    pub counters: Arc<WorkerCounters>,
    pub accounting: PublishedAccounting,
    /// Forwarded frames dropped because the egress tx ring stayed full (a port down or
    /// slower than the ingress).
    pub tx_ring_full: Counter,
    /// Passes through the loop, for tests and liveness.
    pub passes: AtomicU64,
    /// Bumped by the supervisor when a port came back up: the worker re-kicks and refills.
    pub recover: AtomicU64,
    /// New ICMP limits (per port, per source, per worker: rate and burst packed by
    /// `pack_limit`), for the worker to take at its next pass once `icmp_generation` moves.
    pub icmp_limits: [AtomicU64; 3],
    pub icmp_generation: AtomicU64,
    /// Destinations of the worker's `glean` drops, for the agent to resolve.
    pub glean: Arc<crate::pipeline::GleanQueue>,
    /// The worker's sFlow samples and per-port sampling rates (see `pipeline::sample`).
    pub samples: Arc<crate::pipeline::SampleRing>,
}

impl WorkerShared {
    pub fn new(counters: Arc<WorkerCounters>, glean: Arc<crate::pipeline::GleanQueue>) -> Self {
        Self {
            samples: Arc::new(crate::pipeline::SampleRing::new(0)),
            glean,
            counters,
            accounting: PublishedAccounting::default(),
            tx_ring_full: Counter::default(),
            passes: AtomicU64::new(0),
            recover: AtomicU64::new(0),
            icmp_limits: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
            icmp_generation: AtomicU64::new(0),
        }
    }

    /// Hands the worker new ICMP limits; it takes them at its next pass.
    pub fn set_icmp_limits(&self, limits: [IcmpRateLimit; 3]) {
        for (slot, limit) in self.icmp_limits.iter().zip(limits) {
            // Relaxed: published by the Release increment below.
            slot.store(pack_limit(limit), Ordering::Relaxed);
        }
        // Release: a worker that sees the new generation (Acquire) sees the limits stored
        // before it. Two updates racing may leave it a mix for one pass; the second
        // increment makes it read all three again.
        self.icmp_generation.fetch_add(1, Ordering::Release);
    }

    fn icmp_limits(&self) -> [IcmpRateLimit; 3] {
        // Relaxed: ordered by the Acquire load of icmp_generation that preceded this call.
        self.icmp_limits.each_ref().map(|slot| unpack_limit(slot.load(Ordering::Relaxed)))
    }
}

fn pack_limit(limit: IcmpRateLimit) -> u64 {
    (limit.per_second as u64) << 32 | limit.burst as u64
}

fn unpack_limit(packed: u64) -> IcmpRateLimit {
    IcmpRateLimit { per_second: (packed >> 32) as u32, burst: packed as u32 }
}

/// A `FrameAccounting` published by one writer and read whole by others: a sequence lock.
/// The writer makes the sequence odd, stores the fields, makes it even; a reader retries
/// until it read the same even sequence before and after the fields.
#[derive(Debug, Default)]
pub(crate) struct PublishedAccounting {
    seq: AtomicU32,
    fields: [AtomicU32; 7],
}

impl PublishedAccounting {
    fn publish(&self, a: &FrameAccounting) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        // Release fence: a reader that sees any field below also sees the odd sequence.
        fence(Ordering::Release);
        for (f, v) in self.fields.iter().zip([a.total, a.free, a.fill, a.rx, a.tx, a.completion, a.held]) {
            f.store(v, Ordering::Relaxed);
        }
        // Release: a reader that sees the new even sequence sees every field stored above.
        self.seq.store(s.wrapping_add(2), Ordering::Release);
    }

    pub fn read(&self) -> FrameAccounting {
        loop {
            let before = self.seq.load(Ordering::Acquire);
            let v: [u32; 7] = std::array::from_fn(|i| self.fields[i].load(Ordering::Relaxed));
            // Acquire fence: the field loads above happen before the second sequence load.
            fence(Ordering::Acquire);
            if before.is_multiple_of(2) && self.seq.load(Ordering::Relaxed) == before {
                return FrameAccounting { total: v[0], free: v[1], fill: v[2], rx: v[3], tx: v[4], completion: v[5], held: v[6] };
            }
            std::hint::spin_loop();
        }
    }
}

/// Everything a worker thread is started with.
pub(crate) struct WorkerSetup {
    pub index: usize,
    pub netns: Option<String>,
    pub cpu: Option<usize>,
    pub busy_poll: bool,
    pub realtime_priority: Option<u8>,
    pub umem: UmemConfig,
    pub sockets: SocketConfig,
    /// Ifindex of every port, in port order; this worker opens queue `index` on each.
    pub ifindexes: Vec<u32>,
    pub pipeline: Pipeline,
    pub fib: FibReader,
    pub shared: Arc<WorkerShared>,
    pub steering: Arc<Mutex<Option<Steering>>>,
    pub stop: Arc<AtomicBool>,
}

/// What a worker reports once its sockets are open and steered to.
pub(crate) struct WorkerReady {
    pub index: usize,
    /// Per port: a duplicate of the socket's descriptor (for statistics and re-insertion
    /// into the XSKMAP) and the mode the kernel chose.
    pub sockets: Vec<(OwnedFd, XskMode)>,
}

/// Runs on the worker's thread: sets up, reports through `ready`, forwards until `stop`.
pub(crate) fn run(setup: WorkerSetup, ready: mpsc::Sender<Result<WorkerReady, EngineError>>) {
    let index = setup.index;
    let mut worker = match Worker::open(setup) {
        Ok((worker, report)) => {
            if ready.send(Ok(report)).is_err() {
                return;
            }
            worker
        }
        Err(e) => {
            let _ = ready.send(Err(e.in_worker(index)));
            return;
        }
    };
    drop(ready);
    worker.forward();
    worker.finish();
}

/// Per-worker state in one place, owned by its thread.
struct Worker {
    // Field order is drop order: the sockets and UMEM go last.
    pipeline: Pipeline,
    fib: FibReader,
    shared: Arc<WorkerShared>,
    stop: Arc<AtomicBool>,
    busy_poll: bool,
    /// Socket index of each port in `set`.
    sockets: Box<[usize]>,
    pollfds: Box<[libc::pollfd]>,
    rx: Vec<Frame>,
    /// Frames waiting for each egress port's tx ring; never more than 2 * BATCH.
    tx: Box<[Vec<Frame>]>,
    verdicts: [Verdict; MAX_BATCH],
    recover_seen: u64,
    icmp_seen: u64,
    clock: Instant,
    set: SocketSet,
}

impl Worker {
    fn open(setup: WorkerSetup) -> Result<(Self, WorkerReady), EngineError> {
        if let Some(ns) = &setup.netns {
            sys::enter_netns(ns).map_err(|e| EngineError::Netns { name: ns.clone(), error: e.to_string() })?;
        }
        if let Some(cpu) = setup.cpu {
            sys::pin_to_cpu(cpu).map_err(|e| EngineError::Thread(format!("pinning to cpu {cpu}: {e}")))?;
        }
        if let Some(priority) = setup.realtime_priority {
            sys::make_realtime(priority).map_err(|e| {
                EngineError::Thread(format!(
                    "SCHED_FIFO at priority {priority}: {e} (needs CAP_SYS_NICE or an RLIMIT_RTPRIO of {priority})"
                ))
            })?;
        }
        let queue = setup.index as u32;
        let mut set = SocketSet::new(setup.umem, setup.sockets).map_err(EngineError::Socket)?;
        let mut sockets = Vec::with_capacity(setup.ifindexes.len());
        for &ifindex in &setup.ifindexes {
            sockets.push(set.open(ifindex, queue).map_err(EngineError::Socket)?);
        }
        for &s in &sockets {
            set.refill(s);
        }
        let mut report = WorkerReady { index: setup.index, sockets: Vec::with_capacity(sockets.len()) };
        {
            let mut steering = setup.steering.lock().unwrap_or_else(|p| p.into_inner());
            let steering = steering.as_mut().ok_or_else(|| EngineError::Thread("steering program gone during start".into()))?;
            for (&ifindex, &s) in setup.ifindexes.iter().zip(&sockets) {
                steering.insert_socket(ifindex, queue, set.fd(s)).map_err(EngineError::Steering)?;
                let dup = set.fd(s).try_clone_to_owned().map_err(|e| EngineError::Thread(format!("dup of a socket descriptor: {e}")))?;
                report.sockets.push((dup, set.mode(s)));
            }
        }
        let pollfds = sockets.iter().map(|&s| libc::pollfd { fd: set.fd(s).as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
        let ports = sockets.len();
        let worker = Worker {
            pipeline: setup.pipeline,
            fib: setup.fib,
            recover_seen: setup.shared.recover.load(Ordering::Relaxed),
            icmp_seen: setup.shared.icmp_generation.load(Ordering::Relaxed),
            shared: setup.shared,
            stop: setup.stop,
            busy_poll: setup.busy_poll,
            sockets: sockets.into(),
            pollfds,
            rx: Vec::with_capacity(BATCH),
            tx: (0..ports).map(|_| Vec::with_capacity(2 * BATCH)).collect(),
            verdicts: [Verdict::Drop(crate::pipeline::DropReason::Truncated); MAX_BATCH],
            clock: Instant::now(),
            set,
        };
        worker.shared.accounting.publish(&worker.set.accounting());
        Ok((worker, report))
    }

    /// The loop. Each pass: for every port, refill, receive a batch, decide it, queue
    /// per egress and flush; then reap completions and announce a quiescent state.
    fn forward(&mut self) {
        let mut passes = 0u64;
        // Relaxed: the flag orders nothing; the join after it does.
        while !self.stop.load(Ordering::Relaxed) {
            let mut received = 0;
            for port in 0..self.sockets.len() {
                received += self.receive(port);
            }
            let mut in_flight = false;
            for port in 0..self.sockets.len() {
                let s = self.sockets[port];
                while self.set.complete(s) == BATCH {}
                in_flight |= !self.tx[port].is_empty();
                if !self.tx[port].is_empty() {
                    self.flush(port);
                }
            }
            self.fib.quiescent();
            passes += 1;
            // Relaxed: a counter with a single writer (see counters::Counter).
            self.shared.passes.store(passes, Ordering::Relaxed);
            let recover = self.shared.recover.load(Ordering::Relaxed);
            if recover != self.recover_seen {
                self.recover_seen = recover;
                self.recover();
            }
            // Acquire: pairs with the Release in set_icmp_limits (see there).
            let icmp = self.shared.icmp_generation.load(Ordering::Acquire);
            if icmp != self.icmp_seen {
                self.icmp_seen = icmp;
                let [per_port, per_source, per_worker] = self.shared.icmp_limits();
                let now_ns = self.clock.elapsed().as_nanos() as u64;
                self.pipeline.set_icmp_limits(per_port, per_source, per_worker, now_ns);
            }
            if received == 0 || passes.is_multiple_of(PUBLISH_EVERY) {
                self.shared.accounting.publish(&self.set.accounting());
            }
            if received == 0 {
                if self.busy_poll {
                    std::hint::spin_loop();
                } else {
                    let acc_in_flight = in_flight || self.set.accounting().tx > 0;
                    // An error (EINTR) counts as a wake-up: the loop looks at the rings anyway.
                    let _ = self.fib.offline_while(|| xsk::poll(&mut self.pollfds, if acc_in_flight { 1 } else { IDLE_POLL_MS }));
                }
            }
        }
    }

    /// One batch from `port`'s socket through the pipeline; returns how many frames.
    #[inline]
    fn receive(&mut self, port: usize) -> usize {
        let s = self.sockets[port];
        self.set.refill(s);
        let n = self.set.recv(s, BATCH, &mut self.rx);
        if n == 0 {
            return 0;
        }
        let now_ns = self.clock.elapsed().as_nanos() as u64;
        {
            let umem = self.set.umem();
            let mut bufs: [PacketBuf<'_>; MAX_BATCH] = std::array::from_fn(|_| PacketBuf { chunk: &mut [], start: 0, len: 0, port: 0 });
            for (buf, frame) in bufs.iter_mut().zip(self.rx.iter_mut()) {
                let len = frame.len();
                let (chunk, start) = umem.chunk_mut(frame);
                *buf = PacketBuf { chunk, start, len, port: port as u16 };
            }
            self.pipeline.process(&self.fib, &mut bufs[..n], &mut self.verdicts[..n], now_ns);
        }
        let ports = self.sockets.len();
        for (mut frame, verdict) in self.rx.drain(..).zip(self.verdicts.iter()) {
            match *verdict {
                Verdict::Forward { port: egress, start, len } if (egress as usize) < ports => {
                    if self.set.umem().set_bounds(&mut frame, start, len).is_ok() {
                        self.tx[egress as usize].push(frame);
                    } else {
                        self.set.free(frame);
                    }
                }
                _ => self.set.free(frame),
            }
        }
        for egress in 0..ports {
            if !self.tx[egress].is_empty() {
                self.flush(egress);
            }
        }
        n
    }

    /// Moves what waits for `port` into its tx ring. What does not fit waits for the next
    /// pass, up to one batch; beyond that the newest frames are dropped and counted
    /// (`tx_ring_full`), so a stalled port cannot hold the UMEM.
    #[inline]
    fn flush(&mut self, port: usize) {
        let s = self.sockets[port];
        let queue = &mut self.tx[port];
        while !queue.is_empty() && self.set.send(s, queue) > 0 {}
        if queue.len() > BATCH {
            let excess = queue.len() - BATCH;
            for frame in queue.drain(BATCH..) {
                self.set.free(frame);
            }
            self.shared.tx_ring_full.add(excess as u64);
        }
    }

    /// After a port came back up: kick every tx ring and refill every fill ring, in case a
    /// wake-up was lost while the port was down.
    fn recover(&mut self) {
        for &s in self.sockets.iter() {
            self.set.refill(s);
            self.set.kick(s);
        }
    }

    /// Gives back every frame the worker holds and publishes the final accounting.
    fn finish(mut self) {
        // This worker reads the FIB no more: unregister now, so the writer does not wait
        // for it through the drain below.
        drop(self.fib);
        for port in 0..self.tx.len() {
            let queue = &mut self.tx[port];
            self.set.free_all(queue);
        }
        self.set.free_all(&mut self.rx);
        // Let the kernel hand back what it is still transmitting, briefly.
        let deadline = Instant::now() + std::time::Duration::from_millis(100);
        while self.set.accounting().tx > 0 && Instant::now() < deadline {
            for &s in self.sockets.iter() {
                self.set.complete(s);
                self.set.kick(s);
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        for &s in self.sockets.iter() {
            while self.set.complete(s) > 0 {}
        }
        self.shared.accounting.publish(&self.set.accounting());
    }
}
