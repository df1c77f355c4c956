//! The Internet checksum (RFC 1071): the one's complement of the one's complement sum of
//! 16-bit words, its pseudo-headers, and its incremental update (RFC 1624).
//!
//! `data`, `combine` and the pseudo-header functions return the folded sum, not its
//! complement; a header's checksum field holds `!combine(..)`, and a header verifies when
//! the sum over it (field included) folds to 0xffff.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Folds a wide one's complement sum into 16 bits: four fixed steps, no loop (a loop's
/// branch was the costliest part of the per-frame checksum update). After the first the
/// sum is below 2^33, after the second below 0x30000, after the third at most 0x10001,
/// after the fourth at most 0xffff; each step keeps the value modulo 0xffff, and a non-zero
/// sum never folds to 0, so this is the loop's answer exactly.
#[inline(always)]
pub fn fold(sum: u64) -> u16 {
    let sum = (sum & 0xffff_ffff) + (sum >> 32);
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// The folded one's complement sum of `data` as big-endian 16-bit words, an odd last
/// octet padded with zero (RFC 1071 section 4.1). Adds 32-bit words into a 64-bit sum:
/// 2^16 is 1 modulo 2^16 - 1, so a 32-bit word counts as its two 16-bit halves, and the
/// fold at the end takes the carries back in (RFC 1071 section 2 (B), (C)); half the
/// additions of a 16-bit loop, on every IPv4 header a router receives.
#[inline]
pub fn data(data: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        sum += u32::from_be_bytes([w[0], w[1], w[2], w[3]]) as u64;
    }
    match *words.remainder() {
        [a, b, c] => sum += u16::from_be_bytes([a, b]) as u64 + ((c as u64) << 8),
        [a, b] => sum += u16::from_be_bytes([a, b]) as u64,
        [a] => sum += (a as u64) << 8,
        _ => {}
    }
    fold(sum)
}

/// The one's complement sum of partial sums.
#[inline]
pub fn combine(parts: &[u16]) -> u16 {
    fold(parts.iter().map(|&p| p as u64).sum())
}

/// The IPv4 pseudo-header sum (RFC 768, RFC 9293 section 3.1): source, destination,
/// protocol and upper-layer length.
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, length: u16) -> u16 {
    let mut b = [0u8; 12];
    b[0..4].copy_from_slice(&src.octets());
    b[4..8].copy_from_slice(&dst.octets());
    b[9] = protocol;
    b[10..12].copy_from_slice(&length.to_be_bytes());
    data(&b)
}

/// The IPv6 pseudo-header sum (RFC 8200 section 8.1): source, destination, 32-bit
/// upper-layer length and next header.
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, length: u32) -> u16 {
    let mut b = [0u8; 40];
    b[0..16].copy_from_slice(&src.octets());
    b[16..32].copy_from_slice(&dst.octets());
    b[32..36].copy_from_slice(&length.to_be_bytes());
    b[39] = next_header;
    data(&b)
}

/// The checksum field after one 16-bit word of the covered data changed from `old` to
/// `new`: RFC 1624 section 3, eqn. 3, `HC' = ~(~HC + ~m + m')`, which unlike eqn. 2 never
/// yields the +0 / -0 ambiguity of RFC 1141.
#[inline(always)]
pub fn update(checksum: u16, old: u16, new: u16) -> u16 {
    !fold(!checksum as u64 + !old as u64 + new as u64)
}

/// The checksum field after the TTL, the high octet of its 16-bit word, went down by one:
/// `update(checksum, m, m - 0x100)` for every `m` with a TTL above 0, in three operations
/// instead of a fold. The word's sum fell by 0x100, so the complement of the sum rises by
/// 0x100, with the carry out of bit 15 brought back in; a field that would read 0xffff (-0)
/// reads 0 (+0), which is what eqn. 3 gives too (the exhaustive test below compares them).
/// Linux's `ip_decrease_ttl` does the same.
#[inline(always)]
pub fn ttl_decremented(checksum: u16) -> u16 {
    let sum = checksum as u32 + 0x100;
    (sum + (sum >= 0xffff) as u32) as u16
}

/// Whether `sum`, a non-zero wide sum of 16- or 32-bit words (native or big-endian: RFC
/// 1071 section 2 (B)), folds to 0xffff: a header with its checksum field included
/// verifies. The folded sum of a non-zero sum is 0xffff exactly when the sum is a multiple
/// of 0xffff (2^16 is 1 modulo 0xffff, so folding keeps the value modulo 0xffff, and a
/// non-zero sum never folds to 0): one remainder by a constant, which compiles to a
/// multiply, instead of the fold's four steps.
#[inline(always)]
pub fn sums_to_ffff(sum: u64) -> bool {
    debug_assert!(sum != 0);
    sum.is_multiple_of(0xffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_decremented_is_rfc1624_eqn3() {
        // Every checksum, and words with each TTL and a few protocols.
        for checksum in 0..=u16::MAX {
            for ttl in [1u16, 2, 64, 128, 255] {
                for protocol in [0u16, 1, 6, 17, 58, 255] {
                    let m = ttl << 8 | protocol;
                    assert_eq!(ttl_decremented(checksum), update(checksum, m, m - 0x100), "{checksum:#x} {m:#x}");
                }
            }
        }
    }

    #[test]
    fn sums_to_ffff_is_the_fold() {
        // A geometric spread of sums up to five 32-bit words' with their neighbours, every
        // 4096th multiple of 0xffff in that range and the sum after it, and every sum up to
        // 0x30000.
        let mut sum = 1u64;
        while sum < 5 << 32 {
            for s in [sum, sum + 0xfffe, sum + 0xffff, sum + 0x10000] {
                assert_eq!(sums_to_ffff(s), fold(s) == 0xffff, "{s:#x}");
            }
            sum = sum * 3 + 0x1234;
        }
        for k in 1..=(5u64 << 32) / 0xffff / 4096 {
            let s = k * 4096 * 0xffff;
            assert!(sums_to_ffff(s) && fold(s) == 0xffff, "{s:#x}");
            assert!(!sums_to_ffff(s + 1) && fold(s + 1) != 0xffff, "{s:#x}");
        }
        for s in 1..=0x3_0000u64 {
            assert_eq!(sums_to_ffff(s), fold(s) == 0xffff, "{s:#x}");
        }
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        assert_eq!(data(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), 0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(data(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
        assert_eq!(data(&[]), 0);
    }

    /// The 16-bit loop of RFC 1071 section 4.1, as the reference.
    fn by_halfwords(data: &[u8]) -> u16 {
        let mut sum: u64 = 0;
        for w in data.chunks(2) {
            sum += u16::from_be_bytes([w[0], w.get(1).copied().unwrap_or(0)]) as u64;
        }
        fold(sum)
    }

    /// The fold as a loop until no carry is left, as the reference.
    fn fold_by_loop(mut sum: u64) -> u16 {
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    #[test]
    fn fold_at_the_edges() {
        for sum in [0, 1, 0xffff, 0x1_0000, 0x1_fffe, 0x1_ffff, 0xffff_ffff, 0x1_0000_0000, u64::MAX, u64::MAX - 1, 1 << 63] {
            assert_eq!(fold(sum), fold_by_loop(sum), "{sum:#x}");
        }
    }

    proptest::proptest! {
        #[test]
        fn fold_in_steps_is_the_loop(sum in proptest::prelude::any::<u64>()) {
            proptest::prop_assert_eq!(fold(sum), fold_by_loop(sum));
        }

        #[test]
        fn words_of_32_bits_sum_as_their_halves(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            proptest::prop_assert_eq!(data(&bytes), by_halfwords(&bytes));
        }
    }

    #[test]
    fn carries_of_many_all_ones_words_fold_back() {
        for n in [1, 2, 3, 4, 5, 20, 60, 1500] {
            assert_eq!(data(&vec![0xff; n]), by_halfwords(&vec![0xff; n]), "{n} octets of 0xff");
        }
    }

    #[test]
    fn combine_folds_carries() {
        assert_eq!(combine(&[0xffff, 0x0001]), 0x0001);
        assert_eq!(combine(&[0x8000, 0x8000]), 0x0001);
    }

    #[test]
    fn update_matches_recomputation() {
        let mut words = [0x4500u16, 0x0073, 0x0000, 0x4000, 0x4011, 0x0000, 0xc0a8, 0x0001, 0xc0a8, 0x00c7];
        let bytes = |w: &[u16]| w.iter().flat_map(|x| x.to_be_bytes()).collect::<Vec<u8>>();
        words[5] = !data(&bytes(&words));
        assert_eq!(words[5], 0xb861); // the well-known example header
        let old = words[4];
        words[4] = old - 0x0100; // TTL 64 -> 63
        let incremental = update(0xb861, old, words[4]);
        words[5] = 0;
        assert_eq!(incremental, !data(&bytes(&words)));
    }
}
