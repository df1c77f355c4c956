//! AF_XDP for one worker: a UMEM, one socket per (port, queue) sharing it, their rings,
//! and the frame allocator. Written against the kernel ABI with libc (linux/if_xdp.h), so
//! most of the engine's `unsafe` is here (the rest: the system calls of `engine::sys` and
//! `xdp::netlink`, the FIB's huge-page mapping, `qsbr`'s pointers, the pipeline's prefetch).
//!
//! Every frame is always in exactly one place, and [`SocketSet::accounting`] proves it:
//! free + fill + rx + tx + completion + held == total.
// unsafe: the rings and the UMEM are memory shared with the kernel through mmap, and the
// socket is set up with raw setsockopt/getsockopt/bind on kernel ABI structs.
#![allow(unsafe_code)]

mod ring;
mod socket;
mod umem;

use std::{fmt, io};

pub use socket::{poll, statistics, SocketSet, XskStatistics};
pub use umem::{Frame, Umem, XDP_PACKET_HEADROOM};

/// Most descriptors moved by one batch call; equal to `pipeline::MAX_BATCH`, which the
/// worker asserts at compile time.
pub const BATCH: usize = 64;

/// Shape of a worker's UMEM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UmemConfig {
    /// Number of frames (chunks).
    pub frame_count: u32,
    /// Bytes per frame: 2048 or 4096.
    pub frame_size: u32,
    /// Bytes in front of a received frame's data, at least the 256 the kernel always
    /// reserves (XDP_PACKET_HEADROOM); room to push a VLAN tag or an ICMP error header.
    pub headroom: u32,
}

impl Default for UmemConfig {
    fn default() -> Self {
        Self { frame_count: 8192, frame_size: 2048, headroom: XDP_PACKET_HEADROOM }
    }
}

impl UmemConfig {
    fn validate(&self) -> Result<(), XskError> {
        if self.frame_size != 2048 && self.frame_size != 4096 {
            return Err(XskError::Config(format!("frame size {}: must be 2048 or 4096", self.frame_size)));
        }
        if self.headroom < XDP_PACKET_HEADROOM {
            return Err(XskError::Config(format!(
                "headroom {}: the kernel reserves {XDP_PACKET_HEADROOM} bytes in front of every frame, so at least that",
                self.headroom
            )));
        }
        // Keep room for a full 1500-byte IP packet with an Ethernet header and a tag.
        if self.headroom + 1522 > self.frame_size {
            return Err(XskError::Config(format!(
                "headroom {} leaves {} bytes of a {}-byte frame: at least 1522 are needed for a tagged 1500-byte packet",
                self.headroom,
                self.frame_size.saturating_sub(self.headroom),
                self.frame_size
            )));
        }
        if self.frame_count == 0 || self.frame_count > (1 << 24) {
            return Err(XskError::Config(format!("frame count {}: must be between 1 and 16777216", self.frame_count)));
        }
        Ok(())
    }
}

/// Copy or zero-copy: what the driver gives, or what the caller insists on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BindMode {
    /// Zero-copy if the driver supports it, copy otherwise.
    #[default]
    Auto,
    /// Copy mode even where zero-copy would work.
    Copy,
    /// Zero-copy or fail.
    ZeroCopy,
}

/// Shape of each socket's rings. All sizes are powers of two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketConfig {
    pub rx_size: u32,
    pub tx_size: u32,
    pub fill_size: u32,
    pub completion_size: u32,
    /// Copy or zero-copy. The kernel lets only the first socket of a UMEM choose; the
    /// others share its mode.
    pub mode: BindMode,
}

impl Default for SocketConfig {
    fn default() -> Self {
        Self { rx_size: 2048, tx_size: 2048, fill_size: 2048, completion_size: 2048, mode: BindMode::Auto }
    }
}

impl SocketConfig {
    fn validate(&self) -> Result<(), XskError> {
        for (name, size) in [("rx", self.rx_size), ("tx", self.tx_size), ("fill", self.fill_size), ("completion", self.completion_size)] {
            if !size.is_power_of_two() || !(64..=65536).contains(&size) {
                return Err(XskError::Config(format!("{name} ring size {size}: must be a power of two from 64 to 65536")));
            }
        }
        Ok(())
    }
}

/// Errors of the AF_XDP layer; each says what was attempted, on which port, and why.
#[derive(Debug)]
pub enum XskError {
    /// A configuration the kernel would refuse, with what would be right.
    Config(String),
    /// A system call failed.
    Sys { what: &'static str, port: String, error: io::Error },
}

impl XskError {
    pub(crate) fn sys(what: &'static str, port: impl Into<String>, error: io::Error) -> Self {
        Self::Sys { what, port: port.into(), error }
    }
}

impl fmt::Display for XskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(e) => write!(f, "AF_XDP configuration: {e}"),
            Self::Sys { what, port, error } => write!(f, "AF_XDP {what} on {port}: {error}"),
        }
    }
}

impl std::error::Error for XskError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Sys { error, .. } => Some(error),
            Self::Config(_) => None,
        }
    }
}

/// Where every frame of the UMEM is, from user space's point of view.
///
/// `fill` counts frames handed to the kernel for reception that have not shown up in an
/// rx ring yet (including those a driver holds); `tx` those handed over for transmission
/// not yet in a completion ring; `held` those the engine has (read from rx or allocated)
/// and not yet given back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameAccounting {
    pub total: u32,
    pub free: u32,
    pub fill: u32,
    pub rx: u32,
    pub tx: u32,
    pub completion: u32,
    pub held: u32,
}

impl FrameAccounting {
    /// The invariant: every frame is in exactly one place.
    pub fn balanced(&self) -> bool {
        let sum = u64::from(self.free)
            + u64::from(self.fill)
            + u64::from(self.rx)
            + u64::from(self.tx)
            + u64::from(self.completion)
            + u64::from(self.held);
        sum == u64::from(self.total)
    }
}

/// The mode a socket runs in, as the kernel reports it (XDP_OPTIONS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XskMode {
    ZeroCopy,
    Copy,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_are_checked() {
        assert!(UmemConfig::default().validate().is_ok());
        assert!(UmemConfig { frame_size: 3000, ..Default::default() }.validate().is_err());
        assert!(UmemConfig { headroom: 128, ..Default::default() }.validate().is_err());
        assert!(UmemConfig { headroom: 600, ..Default::default() }.validate().is_err());
        assert!(UmemConfig { headroom: 600, frame_size: 4096, ..Default::default() }.validate().is_ok());
        assert!(SocketConfig::default().validate().is_ok());
        assert!(SocketConfig { rx_size: 1000, ..Default::default() }.validate().is_err());
    }

    #[test]
    fn accounting_balance() {
        let a = FrameAccounting { total: 10, free: 2, fill: 3, rx: 1, tx: 1, completion: 1, held: 2 };
        assert!(a.balanced());
        assert!(!FrameAccounting { held: 1, ..a }.balanced());
    }
}
