//! IP prefixes as the FIB and its users name them: `198.18.0.0/15`, `2001:db8::/32`.
//! Parsing checks only syntax, so that a batch can carry a prefix whose length is out of
//! range and the FIB's whole-batch validation can name it in its error.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const fn max_len(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// An address and a length. `len` may exceed the family's maximum until `check` says so.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    family: Family,
    /// IPv4 addresses sit in the low 32 bits.
    addr: u128,
    len: u8,
}

impl Prefix {
    pub const fn v4(addr: u32, len: u8) -> Prefix {
        Prefix { family: Family::V4, addr: addr as u128, len }
    }

    pub const fn v6(addr: u128, len: u8) -> Prefix {
        Prefix { family: Family::V6, addr, len }
    }

    pub fn from_ip(addr: IpAddr, len: u8) -> Prefix {
        match addr {
            IpAddr::V4(a) => Prefix::v4(a.into(), len),
            IpAddr::V6(a) => Prefix::v6(a.into(), len),
        }
    }

    pub const fn family(&self) -> Family {
        self.family
    }

    pub const fn len(&self) -> u8 {
        self.len
    }

    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub const fn addr_v4(&self) -> u32 {
        self.addr as u32
    }

    pub const fn addr_v6(&self) -> u128 {
        self.addr
    }

    pub fn ip(&self) -> IpAddr {
        match self.family {
            Family::V4 => IpAddr::V4(Ipv4Addr::from(self.addr as u32)),
            Family::V6 => IpAddr::V6(Ipv6Addr::from(self.addr)),
        }
    }

    /// The same address with every bit past `len` cleared.
    pub fn network(&self) -> Prefix {
        let max = self.family.max_len() as u32;
        let len = (self.len as u32).min(max);
        let keep = if len == 0 { 0 } else { u128::MAX << (max - len) };
        let width = if max == 32 { u32::MAX as u128 } else { u128::MAX };
        Prefix { addr: self.addr & keep & width, ..*self }
    }

    /// Checks what parsing does not: the length fits the family and no host bit is set.
    pub fn check(&self) -> Result<(), String> {
        let max = self.family.max_len();
        if self.len > max {
            return Err(format!("{self}: prefix length {} exceeds {max}", self.len));
        }
        let net = self.network();
        if net.addr != self.addr {
            return Err(format!("{self}: host bits set (the network is {net})"));
        }
        Ok(())
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip(), self.len)
    }
}

impl FromStr for Prefix {
    type Err = String;

    fn from_str(s: &str) -> Result<Prefix, String> {
        let (addr, len) = s.split_once('/').ok_or_else(|| format!("{s:?}: not a prefix (expected address/length, e.g. 198.18.0.0/15)"))?;
        let ip: IpAddr = addr.parse().map_err(|_| format!("{s:?}: {addr:?} is not an IPv4 or IPv6 address"))?;
        let len: u8 = len.parse().map_err(|_| format!("{s:?}: prefix length {len:?} is not a number from 0 to {}", max_of(ip)))?;
        Ok(Prefix::from_ip(ip, len))
    }
}

fn max_of(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_check() {
        let p: Prefix = "198.18.0.0/15".parse().unwrap();
        assert_eq!(p.family(), Family::V4);
        assert_eq!(p.len(), 15);
        assert_eq!(p.addr_v4(), 0xC612_0000);
        assert!(p.check().is_ok());
        assert_eq!(p.to_string(), "198.18.0.0/15");

        let p: Prefix = "2001:db8::/32".parse().unwrap();
        assert_eq!(p.family(), Family::V6);
        assert!(p.check().is_ok());

        let bad: Prefix = "198.18.0.0/33".parse().unwrap();
        assert_eq!(bad.check().unwrap_err(), "198.18.0.0/33: prefix length 33 exceeds 32");
        let bad: Prefix = "2001:db8::/129".parse().unwrap();
        assert_eq!(bad.check().unwrap_err(), "2001:db8::/129: prefix length 129 exceeds 128");
        let bad: Prefix = "198.18.0.1/15".parse().unwrap();
        assert_eq!(bad.check().unwrap_err(), "198.18.0.1/15: host bits set (the network is 198.18.0.0/15)");
        assert!("0.0.0.0/0".parse::<Prefix>().unwrap().check().is_ok());
        assert!("::/0".parse::<Prefix>().unwrap().check().is_ok());
        assert!("255.255.255.255/32".parse::<Prefix>().unwrap().check().is_ok());
    }

    #[test]
    fn malformed_text_is_refused_with_the_reason() {
        assert!("198.18.0.0".parse::<Prefix>().unwrap_err().contains("not a prefix"));
        assert!("198.18.x.0/15".parse::<Prefix>().unwrap_err().contains("not an IPv4 or IPv6"));
        assert!("198.18.0.0/abc".parse::<Prefix>().unwrap_err().contains("0 to 32"));
        assert!("198.18.0.0/-1".parse::<Prefix>().unwrap_err().contains("0 to 32"));
        assert!("::/300".parse::<Prefix>().unwrap_err().contains("0 to 128"));
        assert!("".parse::<Prefix>().is_err());
    }
}
