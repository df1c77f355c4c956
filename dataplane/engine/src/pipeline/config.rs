//! What a worker's pipeline is told about the ports: MACs, MTUs, sub-interfaces with
//! the router's addresses and their subnets, directed broadcasts, ICMP rate limits, and the
//! checks `Pipeline::new` relies on.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::urpf::UrpfPolicy;
use crate::wire::{ethernet, ipv6};

/// Marks a VLAN with no sub-interface in a port's VLAN table; also bounds their number.
pub(super) const NO_SUB: u16 = u16::MAX;

/// Token-bucket limit of ICMP errors (per port, per source or per worker).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpRateLimit {
    /// Sustained errors per second.
    pub per_second: u32,
    /// Errors that may go out at once after a quiet spell.
    pub burst: u32,
}

impl IcmpRateLimit {
    /// Per port: the default.
    pub const PER_PORT: IcmpRateLimit = IcmpRateLimit { per_second: 1000, burst: 100 };
    /// Per source of the offending packet: Linux's `icmp_ratelimit` (one per 1000 ms) with
    /// its burst of 6 (`XRLIM_BURST_FACTOR`).
    pub const PER_SOURCE: IcmpRateLimit = IcmpRateLimit { per_second: 1, burst: 6 };
    /// Per worker, all ports: Linux's `icmp_msgs_per_sec` and `icmp_msgs_burst`.
    pub const PER_WORKER: IcmpRateLimit = IcmpRateLimit { per_second: 1000, burst: 50 };
}

impl Default for IcmpRateLimit {
    fn default() -> Self {
        IcmpRateLimit::PER_PORT
    }
}

/// The ICMP limits beside the per-port ones (which are in `PortConfig`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpLimits {
    /// Per source address of the offending packet. Packet Too Big / Fragmentation Needed
    /// are exempt (path MTU discovery of a busy source must not break), as in Linux's
    /// ICMPv6 rate mask.
    pub per_source: IcmpRateLimit,
    /// Sources tracked at most (a bounded table per worker, least recently used evicted).
    pub sources: usize,
    /// All errors of one worker.
    pub per_worker: IcmpRateLimit,
}

impl Default for IcmpLimits {
    fn default() -> Self {
        IcmpLimits { per_source: IcmpRateLimit::PER_SOURCE, sources: 4096, per_worker: IcmpRateLimit::PER_WORKER }
    }
}

/// A sub-interface of a port: untagged (VLAN 0) or an 802.1Q VLAN, with the router's
/// addresses on it (sources of ICMP errors sent out of it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubInterfaceConfig {
    pub vlan: u16,
    pub ipv4: Option<Ipv4Addr>,
    /// The prefix length of `ipv4`'s subnet (its directed broadcast is the all-ones host);
    /// 31 and 32 have none (RFC 3021).
    pub ipv4_prefix_len: u8,
    pub ipv6: Option<Ipv6Addr>,
    /// The reverse-path check of what it receives, as the pipeline starts (changed while it
    /// runs through `Pipeline::urpf`).
    pub urpf: UrpfPolicy,
}

impl SubInterfaceConfig {
    /// A sub-interface with host addresses (no subnet, so no directed broadcast), uRPF off.
    pub fn new(vlan: u16, ipv4: Option<Ipv4Addr>, ipv6: Option<Ipv6Addr>) -> SubInterfaceConfig {
        SubInterfaceConfig { vlan, ipv4, ipv4_prefix_len: 32, ipv6, urpf: UrpfPolicy::OFF }
    }

    /// The directed broadcast address of the IPv4 subnet, if it has one.
    pub fn directed_broadcast(&self) -> Option<Ipv4Addr> {
        let len = self.ipv4_prefix_len;
        let a = self.ipv4?.to_bits();
        (len < 31).then(|| Ipv4Addr::from_bits(a | (u32::MAX >> len)))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortConfig {
    /// The port's MAC: unicast frames for other MACs are dropped; ICMP errors come from it.
    pub mac: [u8; 6],
    /// IP MTU (largest IP packet sent out of the port), 1280 or more.
    pub mtu: u16,
    /// Frames on a VLAN (or untagged, VLAN 0) not listed here are dropped.
    pub sub_interfaces: Vec<SubInterfaceConfig>,
    pub icmp_rate_limit: IcmpRateLimit,
    /// Forward directed broadcasts to the subnets of this port's sub-interfaces (as a
    /// link broadcast); off by default (RFC 2644), when they are dropped and counted.
    pub directed_broadcast: bool,
}

/// Everything a worker's pipeline needs to know about the ports, built once by the engine.
/// Port `i` is the one frames name with `PacketBuf::port == i`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PipelineConfig {
    pub ports: Vec<PortConfig>,
    /// Mixed into the flow hash, so routers in a chain do not all split flows alike.
    pub hash_seed: u64,
    pub icmp_limits: IcmpLimits,
}

impl PipelineConfig {
    /// Every sub-interface with its dense index (the counters' index): ports in order,
    /// each port's sub-interfaces in the order listed. Yields `(index, port, sub_interface)`.
    pub fn sub_interfaces(&self) -> impl Iterator<Item = (usize, u16, &SubInterfaceConfig)> + '_ {
        self.ports
            .iter()
            .enumerate()
            .flat_map(|(p, port)| port.sub_interfaces.iter().map(move |s| (p as u16, s)))
            .enumerate()
            .map(|(i, (p, s))| (i, p, s))
    }

    /// The dense index of sub-interface (port, vlan).
    pub fn sub_interface_index(&self, port: u16, vlan: u16) -> Option<usize> {
        self.sub_interfaces().find(|(_, p, s)| *p == port && s.vlan == vlan).map(|(i, _, _)| i)
    }

    /// Checks what `Pipeline::new` relies on; the error names the bad entry.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.ports.len() > u16::MAX as usize {
            return Err(ConfigError::TooManyPorts { ports: self.ports.len() });
        }
        let total: usize = self.ports.iter().map(|p| p.sub_interfaces.len()).sum();
        if total >= NO_SUB as usize {
            return Err(ConfigError::TooManySubInterfaces { sub_interfaces: total });
        }
        for (port, config) in self.ports.iter().enumerate() {
            if (config.mtu as usize) < ipv6::MIN_MTU {
                return Err(ConfigError::MtuTooSmall { port, mtu: config.mtu });
            }
            if ethernet::is_multicast(&config.mac) {
                return Err(ConfigError::GroupMac { port, mac: config.mac });
            }
            let mut seen = [false; 4096];
            for s in &config.sub_interfaces {
                if s.vlan > ethernet::VLAN_MAX {
                    return Err(ConfigError::VlanOutOfRange { port, vlan: s.vlan });
                }
                if std::mem::replace(&mut seen[s.vlan as usize], true) {
                    return Err(ConfigError::DuplicateVlan { port, vlan: s.vlan });
                }
                if s.ipv4_prefix_len > 32 {
                    return Err(ConfigError::PrefixLenOutOfRange { port, vlan: s.vlan, len: s.ipv4_prefix_len });
                }
            }
        }
        Ok(())
    }
}

/// A `PipelineConfig` the pipeline cannot run with; the message names the bad entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    TooManyPorts {
        ports: usize,
    },
    TooManySubInterfaces {
        sub_interfaces: usize,
    },
    /// Below the IPv6 minimum MTU.
    MtuTooSmall {
        port: usize,
        mtu: u16,
    },
    /// A group (multicast) MAC where a port needs a unicast one.
    GroupMac {
        port: usize,
        mac: [u8; 6],
    },
    VlanOutOfRange {
        port: usize,
        vlan: u16,
    },
    DuplicateVlan {
        port: usize,
        vlan: u16,
    },
    PrefixLenOutOfRange {
        port: usize,
        vlan: u16,
        len: u8,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ConfigError::TooManyPorts { ports } => write!(f, "{ports} ports exceed the limit of {}", u16::MAX),
            ConfigError::TooManySubInterfaces { sub_interfaces } => {
                write!(f, "{sub_interfaces} sub-interfaces exceed the limit of {}", NO_SUB - 1)
            }
            ConfigError::MtuTooSmall { port, mtu } => {
                write!(f, "port {port}: mtu {mtu} is below {}, the IPv6 minimum (RFC 8200 section 5)", ipv6::MIN_MTU)
            }
            ConfigError::GroupMac { port, mac } => write!(f, "port {port}: mac {mac:02x?} is a group address; a port needs a unicast MAC"),
            ConfigError::VlanOutOfRange { port, vlan } => {
                write!(f, "port {port}: vlan {vlan} out of range (0 for untagged, 1 to {})", ethernet::VLAN_MAX)
            }
            ConfigError::DuplicateVlan { port, vlan } => write!(f, "port {port}: vlan {vlan} listed twice"),
            ConfigError::PrefixLenOutOfRange { port, vlan, len } => {
                write!(f, "port {port}: vlan {vlan}: IPv4 prefix length {len} exceeds 32")
            }
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::testing::*;
    use crate::pipeline::Pipeline;

    #[test]
    fn config_is_checked() {
        let mut c = config(IcmpRateLimit::default());
        assert!(Pipeline::new(&c).is_ok());
        assert_eq!(c.sub_interface_index(1, 300), Some(4));
        assert_eq!(c.sub_interface_index(1, 100), None);
        assert_eq!(c.sub_interfaces().count(), 6);
        c.ports[1].sub_interfaces.push(sub(300, None, None));
        assert_eq!(Pipeline::new(&c).err().unwrap().to_string(), "port 1: vlan 300 listed twice");
        let mut c = config(IcmpRateLimit::default());
        c.ports[0].sub_interfaces.push(sub(4095, None, None));
        assert!(Pipeline::new(&c).err().unwrap().to_string().contains("vlan 4095 out of range"));
        let mut c = config(IcmpRateLimit::default());
        c.ports[2].mtu = 1000;
        assert!(Pipeline::new(&c).err().unwrap().to_string().contains("mtu 1000 is below 1280"));
        let mut c = config(IcmpRateLimit::default());
        c.ports[2].mac = ethernet::BROADCAST;
        assert_eq!(Pipeline::new(&c).err(), Some(ConfigError::GroupMac { port: 2, mac: ethernet::BROADCAST }));
        let mut c = config(IcmpRateLimit::default());
        c.ports[0].sub_interfaces[0].ipv4_prefix_len = 33;
        assert_eq!(Pipeline::new(&c).err().unwrap().to_string(), "port 0: vlan 0: IPv4 prefix length 33 exceeds 32");
    }

    #[test]
    fn directed_broadcast_address() {
        let at = |len| SubInterfaceConfig { ipv4_prefix_len: len, ..SubInterfaceConfig::new(0, Some(Ipv4Addr::new(198, 18, 5, 1)), None) };
        assert_eq!(at(24).directed_broadcast(), Some(Ipv4Addr::new(198, 18, 5, 255)));
        assert_eq!(at(30).directed_broadcast(), Some(Ipv4Addr::new(198, 18, 5, 3)));
        assert_eq!(at(0).directed_broadcast(), Some(Ipv4Addr::BROADCAST));
        assert_eq!(at(31).directed_broadcast(), None, "RFC 3021");
        assert_eq!(at(32).directed_broadcast(), None);
        assert_eq!(SubInterfaceConfig::new(0, None, None).directed_broadcast(), None);
    }
}
