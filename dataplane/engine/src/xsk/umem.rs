//! The UMEM: one anonymous mapping cut into equal chunks (frames), registered with the
//! kernel once and shared by every socket of a worker. A frame in user space is a
//! [`Frame`]: a token that is not `Clone`, created only when the kernel hands a chunk back
//! (rx, completion) or the allocator gives one out, and consumed when the chunk goes back
//! (fill, tx, free). Holding the token is holding the chunk, which is what makes
//! [`Umem::data_mut`] safe.

use std::{
    io,
    ptr::NonNull,
    sync::atomic::{AtomicU32, Ordering},
};

use super::{UmemConfig, XskError};

/// The headroom the kernel reserves in front of every received frame (XDP_PACKET_HEADROOM,
/// include/uapi/linux/bpf.h): data land at chunk + registered headroom + 256.
pub const XDP_PACKET_HEADROOM: u32 = 256;

static NEXT_UMEM_ID: AtomicU32 = AtomicU32::new(1);

/// One chunk of the UMEM, owned by whoever holds this value.
///
/// `addr` is the offset of the first byte of the frame's data from the start of the UMEM
/// (what rx and tx descriptors carry); the chunk is `addr & !(frame_size - 1)`.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    addr: u64,
    len: u32,
    umem: u32,
}

impl Frame {
    pub(crate) fn new(addr: u64, len: u32, umem: u32) -> Self {
        Self { addr, len, umem }
    }

    /// Offset of the data from the start of the UMEM (the descriptor's address).
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// Length of the data in bytes.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.len as usize
    }
}

/// The mapped, registered memory of one worker.
pub struct Umem {
    area: NonNull<u8>,
    len: usize,
    frame_size: u32,
    frame_count: u32,
    headroom: u32,
    id: u32,
}

// SAFETY: the mapping is owned by this value; moving it to another thread moves the only
// way to reach it. It is not Sync: frames are reached through `&self`, guarded by tokens
// that live on the owning thread.
unsafe impl Send for Umem {}

impl std::fmt::Debug for Umem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Umem")
            .field("frame_size", &self.frame_size)
            .field("frame_count", &self.frame_count)
            .field("headroom", &self.headroom)
            .finish_non_exhaustive()
    }
}

impl Umem {
    /// Maps `config.frame_count * config.frame_size` bytes. Registration happens when the
    /// first socket opens (XDP_UMEM_REG needs a socket).
    pub(crate) fn new(config: &UmemConfig) -> Result<Self, XskError> {
        config.validate()?;
        let len = config.frame_count as usize * config.frame_size as usize;
        // SAFETY: a fresh private anonymous mapping; the result is checked and owned.
        let area = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if area == libc::MAP_FAILED {
            return Err(XskError::sys("mmap UMEM", "-", io::Error::last_os_error()));
        }
        Ok(Self {
            // SAFETY: not MAP_FAILED, so a valid non-null address.
            area: unsafe { NonNull::new_unchecked(area.cast()) },
            len,
            frame_size: config.frame_size,
            frame_count: config.frame_count,
            headroom: config.headroom,
            // Relaxed: only uniqueness matters, not ordering with anything else.
            id: NEXT_UMEM_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// The XDP_UMEM_REG request for this memory.
    pub(crate) fn registration(&self) -> libc::xdp_umem_reg {
        libc::xdp_umem_reg {
            addr: self.area.as_ptr() as u64,
            len: self.len as u64,
            chunk_size: self.frame_size,
            headroom: self.headroom - XDP_PACKET_HEADROOM,
            flags: 0,
            tx_metadata_len: 0,
        }
    }

    /// Chunk size in bytes.
    pub fn frame_size(&self) -> u32 {
        self.frame_size
    }

    /// Number of chunks.
    pub fn frame_count(&self) -> u32 {
        self.frame_count
    }

    /// Bytes in front of a received frame's data inside its chunk.
    pub fn headroom(&self) -> u32 {
        self.headroom
    }

    /// The chunk base of every frame, in order.
    pub(crate) fn chunk_addrs(&self) -> impl DoubleEndedIterator<Item = u64> + '_ {
        (0..u64::from(self.frame_count)).map(|i| i * u64::from(self.frame_size))
    }

    /// The chunk an address lies in.
    pub(crate) fn chunk_of(&self, addr: u64) -> u64 {
        addr & !(u64::from(self.frame_size) - 1)
    }

    /// True if a descriptor (addr, len) lies inside one chunk of this UMEM.
    pub(crate) fn valid(&self, addr: u64, len: u32) -> bool {
        let offset = addr - self.chunk_of(addr);
        addr < self.len as u64 && offset + u64::from(len) <= u64::from(self.frame_size)
    }

    /// A frame token for a chunk the kernel or the allocator just gave up.
    pub(crate) fn frame(&self, addr: u64, len: u32) -> Frame {
        debug_assert!(self.valid(addr, len));
        Frame::new(addr, len, self.id)
    }

    /// The range of `frame` inside the mapping, or None for a token of another UMEM or
    /// one out of bounds (a bug upstream; it never happens with tokens made here).
    fn range(&self, frame: &Frame) -> Option<(usize, usize)> {
        let ok = frame.umem == self.id && self.valid(frame.addr, frame.len);
        debug_assert!(ok, "frame {frame:?} does not belong to this UMEM");
        ok.then_some((frame.addr as usize, frame.len as usize))
    }

    /// The frame's data.
    pub fn data<'a>(&'a self, frame: &'a Frame) -> &'a [u8] {
        let Some((start, len)) = self.range(frame) else { return &[] };
        // SAFETY: inside the mapping (checked by `range`); the chunk belongs to the holder
        // of `frame` and the kernel does not write it while user space owns it.
        unsafe { std::slice::from_raw_parts(self.area.as_ptr().add(start), len) }
    }

    /// The frame's data, writable.
    pub fn data_mut<'a>(&'a self, frame: &'a mut Frame) -> &'a mut [u8] {
        let Some((start, len)) = self.range(frame) else { return &mut [] };
        // SAFETY: inside the mapping (checked by `range`). A frame token is unique (not
        // Clone, made only for a chunk leaving the kernel or the free list), tokens of
        // other UMEMs are refused, and the range stays inside the token's chunk, so no
        // other live slice covers these bytes; the kernel does not touch a chunk while
        // user space holds it.
        unsafe { std::slice::from_raw_parts_mut(self.area.as_ptr().add(start), len) }
    }

    /// The frame's whole chunk, writable, and the offset of the data inside it: room to
    /// push a VLAN tag or build an ICMP error in front of the received bytes.
    pub fn chunk_mut<'a>(&'a self, frame: &'a mut Frame) -> (&'a mut [u8], usize) {
        if self.range(frame).is_none() {
            return (&mut [], 0);
        }
        let base = self.chunk_of(frame.addr);
        let offset = (frame.addr - base) as usize;
        // SAFETY: the chunk lies inside the mapping and belongs to the holder of `frame`
        // (see `data_mut`); one chunk per token, so no two live slices overlap.
        let chunk = unsafe { std::slice::from_raw_parts_mut(self.area.as_ptr().add(base as usize), self.frame_size as usize) };
        (chunk, offset)
    }

    /// Moves the frame's data window inside its chunk: the data start at `offset` bytes
    /// from the chunk's base and are `len` bytes long. Refused if it leaves the chunk.
    pub fn set_bounds(&self, frame: &mut Frame, offset: usize, len: usize) -> Result<(), XskError> {
        if offset + len > self.frame_size as usize || frame.umem != self.id {
            return Err(XskError::Config(format!("frame window {offset}+{len} exceeds the {}-byte chunk", self.frame_size)));
        }
        frame.addr = self.chunk_of(frame.addr) + offset as u64;
        frame.len = len as u32;
        Ok(())
    }
}

impl Drop for Umem {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping made in `new`; the sockets that registered it are
        // closed before (SocketSet drops them first) and no slice outlives `&self`.
        unsafe { libc::munmap(self.area.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn umem() -> Umem {
        Umem::new(&UmemConfig { frame_count: 8, frame_size: 2048, headroom: 256 }).unwrap()
    }

    #[test]
    fn frames_are_windows_of_their_chunk() {
        let umem = umem();
        let mut f = umem.frame(2048 + 256, 60);
        umem.data_mut(&mut f).fill(0xab);
        assert_eq!(umem.data(&f), &[0xab; 60][..]);
        let (chunk, off) = umem.chunk_mut(&mut f);
        assert_eq!((chunk.len(), off), (2048, 256));
        assert_eq!(chunk[255], 0);
        // Push a 4-byte tag in front.
        umem.set_bounds(&mut f, 252, 64).unwrap();
        assert_eq!((f.addr(), f.len()), (2048 + 252, 64));
        assert!(umem.set_bounds(&mut f, 2000, 100).is_err());
    }
}
