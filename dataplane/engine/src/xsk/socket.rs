//! AF_XDP sockets of one worker and the batch calls the worker loop makes on them.
//!
//! Opening: the first socket registers the UMEM (XDP_UMEM_REG) and binds with the chosen
//! mode; every later one binds with XDP_SHARED_UMEM to the first. Each socket has its own
//! fill and completion rings (required since 5.10 when sharing a UMEM across devices or
//! queues), so a frame received on one port can be sent on another by moving its
//! descriptor, without a copy.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    time::Duration,
};

use super::{
    ring::{CompRing, FillRing, RxRing, TxRing},
    umem::{Frame, Umem},
    BindMode, FrameAccounting, SocketConfig, UmemConfig, XskError, XskMode, BATCH,
};

/// Counters the kernel keeps per socket (XDP_STATISTICS).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XskStatistics {
    /// Frames dropped for reasons other than invalid descriptors (e.g. rx ring full).
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty_descs: u64,
    pub tx_ring_empty_descs: u64,
}

/// The kernel's counters (XDP_STATISTICS) of an AF_XDP socket, through any descriptor of
/// it: the engine reads them through a duplicate while the worker owns the socket.
pub fn statistics(fd: BorrowedFd<'_>) -> io::Result<XskStatistics> {
    let zero = libc::xdp_statistics {
        rx_dropped: 0,
        rx_invalid_descs: 0,
        tx_invalid_descs: 0,
        rx_ring_full: 0,
        rx_fill_ring_empty_descs: 0,
        tx_ring_empty_descs: 0,
    };
    let st = getsockopt(fd, libc::XDP_STATISTICS, zero)?;
    Ok(XskStatistics {
        rx_dropped: st.rx_dropped,
        rx_invalid_descs: st.rx_invalid_descs,
        tx_invalid_descs: st.tx_invalid_descs,
        rx_ring_full: st.rx_ring_full,
        rx_fill_ring_empty_descs: st.rx_fill_ring_empty_descs,
        tx_ring_empty_descs: st.tx_ring_empty_descs,
    })
}

/// Waits up to `timeout_ms` for any of `fds` to be readable; returns how many are.
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<usize> {
    // SAFETY: `fds` is a live, writable array of the length passed.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

struct Socket {
    // Field order is drop order: unmap the rings, then close the socket.
    rx: RxRing,
    tx: TxRing,
    fill: FillRing,
    comp: CompRing,
    fd: OwnedFd,
    ifindex: u32,
    queue: u32,
    name: String,
    mode: XskMode,
    kicks: u64,
}

fn setsockopt<T>(fd: BorrowedFd<'_>, opt: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live, initialised T and we pass its exact size.
    let rc = unsafe {
        libc::setsockopt(fd.as_raw_fd(), libc::SOL_XDP, opt, (value as *const T).cast(), std::mem::size_of::<T>() as libc::socklen_t)
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn getsockopt<T: Copy>(fd: BorrowedFd<'_>, opt: libc::c_int, mut value: T) -> io::Result<T> {
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `value` is writable for `len` bytes; the kernel writes at most that.
    let rc = unsafe { libc::getsockopt(fd.as_raw_fd(), libc::SOL_XDP, opt, (&mut value as *mut T).cast(), &mut len) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(value)
    }
}

impl Socket {
    /// Creates, configures, maps and binds one socket. `shared` is the socket that
    /// registered the UMEM, or None when this one must register it.
    fn open(
        umem: &Umem,
        shared: Option<BorrowedFd<'_>>,
        ifindex: u32,
        queue: u32,
        config: &SocketConfig,
        bind_flags: u16,
    ) -> Result<Self, XskError> {
        let name = format!("ifindex {ifindex} queue {queue}");
        let err = |what: &'static str| {
            let e = io::Error::last_os_error();
            let name = name.clone();
            move |_| XskError::sys(what, name, e)
        };
        let sys = |what: &'static str| {
            let name = name.clone();
            move |e: io::Error| XskError::sys(what, name, e)
        };

        // SAFETY: plain socket(2); checked before being owned.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(err("socket(AF_XDP)")(()));
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let b = fd.as_fd();

        if shared.is_none() {
            setsockopt(b, libc::XDP_UMEM_REG, &umem.registration()).map_err(sys("XDP_UMEM_REG"))?;
        }
        setsockopt(b, libc::XDP_UMEM_FILL_RING, &config.fill_size).map_err(sys("XDP_UMEM_FILL_RING"))?;
        setsockopt(b, libc::XDP_UMEM_COMPLETION_RING, &config.completion_size).map_err(sys("XDP_UMEM_COMPLETION_RING"))?;
        setsockopt(b, libc::XDP_RX_RING, &config.rx_size).map_err(sys("XDP_RX_RING"))?;
        setsockopt(b, libc::XDP_TX_RING, &config.tx_size).map_err(sys("XDP_TX_RING"))?;

        let zero = libc::xdp_ring_offset { producer: 0, consumer: 0, desc: 0, flags: 0 };
        let off = getsockopt(b, libc::XDP_MMAP_OFFSETS, libc::xdp_mmap_offsets { rx: zero, tx: zero, fr: zero, cr: zero })
            .map_err(sys("XDP_MMAP_OFFSETS"))?;
        // Rings must be mapped before bind: binding hands fill/completion to the pool.
        let rx = RxRing::map(b, &off.rx, config.rx_size, libc::XDP_PGOFF_RX_RING).map_err(sys("mmap rx ring"))?;
        let tx = TxRing::map(b, &off.tx, config.tx_size, libc::XDP_PGOFF_TX_RING).map_err(sys("mmap tx ring"))?;
        let fill =
            FillRing::map(b, &off.fr, config.fill_size, libc::XDP_UMEM_PGOFF_FILL_RING as libc::off_t).map_err(sys("mmap fill ring"))?;
        let comp = CompRing::map(b, &off.cr, config.completion_size, libc::XDP_UMEM_PGOFF_COMPLETION_RING as libc::off_t)
            .map_err(sys("mmap completion ring"))?;

        let addr = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            // A socket sharing a UMEM may not name a mode: it inherits the first socket's.
            sxdp_flags: match shared {
                Some(_) => libc::XDP_SHARED_UMEM,
                None => bind_flags | libc::XDP_USE_NEED_WAKEUP,
            },
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: shared.map_or(0, |s| s.as_raw_fd() as u32),
        };
        // SAFETY: `addr` is a valid sockaddr_xdp of the size passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_xdp).cast(),
                std::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(err("bind")(()));
        }
        let options = getsockopt(b, libc::XDP_OPTIONS, libc::xdp_options { flags: 0 }).map_err(sys("XDP_OPTIONS"))?;
        let mode = if options.flags & libc::XDP_OPTIONS_ZEROCOPY != 0 { XskMode::ZeroCopy } else { XskMode::Copy };
        Ok(Self { rx, tx, fill, comp, fd, ifindex, queue, name, mode, kicks: 0 })
    }

    /// Asks the kernel to send what the tx ring holds. Transient refusals (the kernel
    /// is busy, the ring drains later) are not errors: the next pass kicks again.
    fn kick_tx(&mut self) {
        self.kicks += 1;
        // SAFETY: a zero-length sendto on our own socket; no buffers are passed.
        let rc = unsafe { libc::sendto(self.fd.as_raw_fd(), std::ptr::null(), 0, libc::MSG_DONTWAIT, std::ptr::null(), 0) };
        debug_assert!(
            rc >= 0
                || matches!(io::Error::last_os_error().raw_os_error(), Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::ENETDOWN)),
            "unexpected sendto error on {}: {}",
            self.name,
            io::Error::last_os_error()
        );
    }

    /// Tells the kernel the fill ring has buffers again (need_wakeup on the fill ring).
    fn wake_rx(&mut self) {
        // SAFETY: a zero-length, non-blocking recvfrom on our own socket.
        unsafe {
            libc::recvfrom(self.fd.as_raw_fd(), std::ptr::null_mut(), 0, libc::MSG_DONTWAIT, std::ptr::null_mut(), std::ptr::null_mut())
        };
    }
}

/// The AF_XDP sockets of one worker, their shared UMEM and its free frames.
///
/// A socket is named by its index in the set (the order of [`SocketSet::open`] calls).
/// Every call is non-blocking; the only syscalls are the kicks the rings ask for.
pub struct SocketSet {
    // Field order is drop order: sockets (and their rings) before the UMEM they use.
    sockets: Vec<Socket>,
    free: Vec<u64>,
    held: u32,
    config: SocketConfig,
    umem: Umem,
}

impl std::fmt::Debug for SocketSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketSet")
            .field("umem", &self.umem)
            .field("sockets", &self.sockets.iter().map(|s| (&s.name, s.mode)).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl SocketSet {
    /// Maps a UMEM for a worker; sockets are added with [`SocketSet::open`].
    pub fn new(umem: UmemConfig, sockets: SocketConfig) -> Result<Self, XskError> {
        sockets.validate()?;
        let umem = Umem::new(&umem)?;
        // Popped from the end: hand out low addresses first (easier to read in a dump).
        let free = umem.chunk_addrs().rev().collect();
        Ok(Self { sockets: Vec::new(), free, held: 0, config: sockets, umem })
    }

    /// Opens a socket on (`ifindex`, `queue`) and returns its index in the set. The first
    /// socket chooses copy or zero-copy (per `SocketConfig::mode`, falling back from
    /// zero-copy to copy under `Auto`); the others share the UMEM and its mode.
    pub fn open(&mut self, ifindex: u32, queue: u32) -> Result<usize, XskError> {
        let socket = match self.sockets.first() {
            Some(first) => Socket::open(&self.umem, Some(first.fd.as_fd()), ifindex, queue, &self.config, 0)?,
            None => match self.config.mode {
                BindMode::Copy => Socket::open(&self.umem, None, ifindex, queue, &self.config, libc::XDP_COPY)?,
                BindMode::ZeroCopy => Socket::open(&self.umem, None, ifindex, queue, &self.config, libc::XDP_ZEROCOPY)?,
                // A failed bind leaves the socket unusable (its rings went to a destroyed
                // pool), so the fallback starts over with a fresh socket.
                BindMode::Auto => Socket::open(&self.umem, None, ifindex, queue, &self.config, libc::XDP_ZEROCOPY)
                    .or_else(|_| Socket::open(&self.umem, None, ifindex, queue, &self.config, libc::XDP_COPY))?,
            },
        };
        self.sockets.push(socket);
        Ok(self.sockets.len() - 1)
    }

    /// Number of sockets.
    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    /// True before the first `open`.
    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// The socket's descriptor, for the XSKMAP (`xdp::Steering::insert_socket`).
    pub fn fd(&self, socket: usize) -> BorrowedFd<'_> {
        self.sockets[socket].fd.as_fd()
    }

    /// The port and queue a socket is bound to.
    pub fn binding(&self, socket: usize) -> (u32, u32) {
        (self.sockets[socket].ifindex, self.sockets[socket].queue)
    }

    /// Copy or zero-copy, as the kernel reports it for this socket.
    pub fn mode(&self, socket: usize) -> XskMode {
        self.sockets[socket].mode
    }

    /// The shared UMEM, to reach frame bytes through [`Umem::data_mut`].
    pub fn umem(&self) -> &Umem {
        &self.umem
    }

    /// Takes a free frame (to build a packet from scratch), with its data window at the
    /// UMEM's headroom and zero length.
    pub fn alloc(&mut self) -> Option<Frame> {
        let chunk = self.free.pop()?;
        self.held += 1;
        Some(self.umem.frame(chunk + u64::from(self.umem.headroom()), 0))
    }

    /// Gives a frame back to the free list (a drop).
    pub fn free(&mut self, frame: Frame) {
        debug_assert!(self.held > 0);
        self.held -= 1;
        self.free.push(self.umem.chunk_of(frame.addr()));
    }

    /// Frees every frame of `frames`.
    pub fn free_all(&mut self, frames: &mut Vec<Frame>) {
        for frame in frames.drain(..) {
            self.free(frame);
        }
    }

    /// Moves free frames into the socket's fill ring, as many as fit; returns how many.
    /// Wakes the kernel if the fill ring asks for it.
    pub fn refill(&mut self, socket: usize) -> u32 {
        let s = &mut self.sockets[socket];
        let want = (self.free.len() as u32).min(s.fill.size());
        let mut reserved = s.fill.reserve(want);
        let n = reserved.capacity() as usize;
        let start = self.free.len() - n;
        reserved.fill(self.free[start..].iter().copied());
        let submitted = reserved.submit();
        self.free.truncate(start);
        if s.fill.needs_wakeup() {
            s.wake_rx();
        }
        submitted
    }

    /// Takes up to `max` (at most [`BATCH`]) received frames from the socket's rx ring and
    /// appends them to `out`; returns how many. `out` should have the capacity already.
    pub fn recv(&mut self, socket: usize, max: usize, out: &mut Vec<Frame>) -> usize {
        let s = &mut self.sockets[socket];
        let peeked = s.rx.peek(max.min(BATCH) as u32);
        let n = peeked.len();
        for i in 0..n {
            let desc = peeked.read(i);
            out.push(self.umem.frame(desc.addr, desc.len));
        }
        peeked.release();
        self.held += n;
        n as usize
    }

    /// Queues frames from the front of `frames` (at most [`BATCH`]) on the socket's tx
    /// ring and removes them from `frames`; returns how many. Frames that did not fit stay
    /// in `frames`, still held. Kicks the kernel if the tx ring asks for it.
    pub fn send(&mut self, socket: usize, frames: &mut Vec<Frame>) -> usize {
        let s = &mut self.sockets[socket];
        let mut reserved = s.tx.reserve(frames.len().min(BATCH) as u32);
        let n = reserved.capacity() as usize;
        reserved.fill(frames[..n].iter().map(|f| libc::xdp_desc { addr: f.addr(), len: f.len() as u32, options: 0 }));
        reserved.submit();
        frames.drain(..n);
        self.held -= n as u32;
        if n > 0 && s.tx.needs_wakeup() {
            s.kick_tx();
        }
        n
    }

    /// Returns transmitted frames from the socket's completion ring to the free list (at
    /// most `BATCH` per call); returns how many. Also kicks tx again if frames are still
    /// waiting and the kernel wants a kick, so nothing stalls on a missed wakeup.
    pub fn complete(&mut self, socket: usize) -> usize {
        let s = &mut self.sockets[socket];
        let peeked = s.comp.peek(BATCH as u32);
        let n = peeked.len();
        for i in 0..n {
            self.free.push(self.umem.chunk_of(peeked.read(i)));
        }
        peeked.release();
        if s.tx.pending() > 0 && s.tx.needs_wakeup() {
            s.kick_tx();
        }
        n as usize
    }

    /// Kicks tx unconditionally (for a caller that knows better than the flag).
    pub fn kick(&mut self, socket: usize) {
        self.sockets[socket].kick_tx();
    }

    /// How many times tx was kicked (syscalls made) on this socket.
    pub fn kicks(&self, socket: usize) -> u64 {
        self.sockets[socket].kicks
    }

    /// Waits up to `timeout` for any socket to have frames to read (for an idle worker
    /// or a test); returns whether one has.
    pub fn wait_rx(&self, timeout: Duration) -> io::Result<bool> {
        let mut fds: Vec<libc::pollfd> =
            self.sockets.iter().map(|s| libc::pollfd { fd: s.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        Ok(poll(&mut fds, ms)? > 0)
    }

    /// The kernel's counters for a socket.
    pub fn statistics(&self, socket: usize) -> Result<XskStatistics, XskError> {
        let s = &self.sockets[socket];
        statistics(s.fd.as_fd()).map_err(|e| XskError::sys("XDP_STATISTICS", s.name.clone(), e))
    }

    /// Where every frame is right now. Ring contents are read fresh from the kernel's
    /// indices, so the split between fill/rx and tx/completion is a snapshot; the sum
    /// always equals the total while the engine returns every frame it takes.
    pub fn accounting(&self) -> FrameAccounting {
        let mut a = FrameAccounting { total: self.umem.frame_count(), free: self.free.len() as u32, held: self.held, ..Default::default() };
        for s in &self.sockets {
            // Read the kernel's producer first: then `rx_ready <= handed out to rx`.
            let rx_ready = s.rx.ready();
            let rx_total = s.fill.published().wrapping_sub(s.rx.released());
            a.rx += rx_ready;
            a.fill += rx_total.wrapping_sub(rx_ready);
            let comp_ready = s.comp.ready();
            let tx_total = s.tx.published().wrapping_sub(s.comp.released());
            a.completion += comp_ready;
            a.tx += tx_total.wrapping_sub(comp_ready);
        }
        a
    }
}
