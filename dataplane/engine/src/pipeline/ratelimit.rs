//! The token buckets that limit the ICMP errors a worker sends: one per ingress port, one
//! for the whole worker, and one per source of the offending packet in a bounded table, so
//! that one source flooding TTL-1 packets uses up its own budget and not everyone's (Linux
//! keeps the same three: `icmp_ratelimit` per peer, `icmp_msgs_per_sec` globally).

use super::IcmpRateLimit;

/// A token bucket over caller-supplied time, so tests are deterministic. Tokens are kept in
/// billionths so refill is exact integer arithmetic.
#[derive(Clone, Copy, Debug)]
pub struct TokenBucket {
    nanotokens: u64,
    capacity: u64,
    per_second: u64,
    last_ns: u64,
}

const NANO: u64 = 1_000_000_000;

impl TokenBucket {
    /// Starts full.
    pub fn new(limit: IcmpRateLimit) -> TokenBucket {
        TokenBucket::starting_at(limit, 0)
    }

    /// Starts full, refilling from `now_ns`.
    pub fn starting_at(limit: IcmpRateLimit, now_ns: u64) -> TokenBucket {
        let capacity = limit.burst as u64 * NANO;
        TokenBucket { nanotokens: capacity, capacity, per_second: limit.per_second as u64, last_ns: now_ns }
    }

    /// Takes a new rate and burst from now on, keeping the tokens it holds up to the new
    /// burst (a reload must not hand out a fresh burst).
    pub fn set_limit(&mut self, limit: IcmpRateLimit) {
        self.capacity = limit.burst as u64 * NANO;
        self.per_second = limit.per_second as u64;
        self.nanotokens = self.nanotokens.min(self.capacity);
    }

    /// Takes a token if there is one. Time going backwards refills nothing.
    #[inline]
    pub fn take(&mut self, now_ns: u64) -> bool {
        let ready = self.ready(now_ns);
        if ready {
            self.spend();
        }
        ready
    }

    /// Refills up to `now_ns`; true when a token is there to `spend`.
    #[inline]
    pub fn ready(&mut self, now_ns: u64) -> bool {
        let elapsed = now_ns.saturating_sub(self.last_ns);
        self.last_ns = self.last_ns.max(now_ns);
        self.nanotokens = self.nanotokens.saturating_add(elapsed.saturating_mul(self.per_second)).min(self.capacity);
        self.nanotokens >= NANO
    }

    /// Takes the token `ready` found (none when there is none).
    #[inline]
    pub fn spend(&mut self) {
        self.nanotokens = self.nanotokens.saturating_sub(NANO);
    }

    /// The last time the bucket was looked at.
    #[inline]
    fn last_ns(&self) -> u64 {
        self.last_ns
    }
}

/// Entries per set of `SourceBuckets`: a new source evicts the least recently used of its set.
const WAYS: usize = 4;

#[derive(Clone, Copy)]
struct SourceEntry {
    /// The source address; IPv4 as an IPv4-mapped IPv6 address, so families never collide.
    key: u128,
    in_use: bool,
    bucket: TokenBucket,
}

/// One token bucket per source address in a fixed table of `sets * WAYS` entries, allocated
/// once: set-associative, indexed by a keyed hash (a sender cannot aim its addresses at one
/// set without the seed), least recently used evicted within the set. A source that was
/// evicted comes back with a full bucket, as it would after a quiet spell; the port and
/// worker buckets still bound what a sender spraying addresses can draw.
pub struct SourceBuckets {
    entries: Box<[SourceEntry]>,
    set_mask: usize,
    limit: IcmpRateLimit,
    seed: u64,
}

impl SourceBuckets {
    /// Room for at least `sources` sources (rounded up to a power of two sets of `WAYS`,
    /// at least one set).
    pub fn new(limit: IcmpRateLimit, sources: usize, seed: u64) -> SourceBuckets {
        let sets = sources.div_ceil(WAYS).max(1).next_power_of_two();
        let empty = SourceEntry { key: 0, in_use: false, bucket: TokenBucket::new(limit) };
        SourceBuckets { entries: vec![empty; sets * WAYS].into_boxed_slice(), set_mask: sets - 1, limit, seed }
    }

    /// A new limit for every source, those held and those to come; the table keeps its
    /// size (it is allocated once) and its entries.
    pub fn set_limit(&mut self, limit: IcmpRateLimit) {
        self.limit = limit;
        for e in self.entries.iter_mut() {
            e.bucket.set_limit(limit);
        }
    }

    /// How many sources the table holds at most.
    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    /// How many sources it holds now.
    pub fn len(&self) -> usize {
        self.entries.iter().filter(|e| e.in_use).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bucket of `source`, made (full) when the source is new, evicting the least
    /// recently used entry of its set when the set is full.
    #[inline]
    pub fn bucket(&mut self, source: u128, now_ns: u64) -> &mut TokenBucket {
        let set = (super::hash::flow_hash(self.seed, &[source as u64, (source >> 64) as u64]) as usize) & self.set_mask;
        let base = set * WAYS;
        let ways = &self.entries[base..base + WAYS];
        let mut victim = 0;
        let mut found = None;
        for (i, e) in ways.iter().enumerate() {
            if e.in_use && e.key == source {
                found = Some(i);
                break;
            }
            let v = &ways[victim];
            // Free entries first, then the one looked at longest ago.
            if v.in_use && (!e.in_use || e.bucket.last_ns() < v.bucket.last_ns()) {
                victim = i;
            }
        }
        let slot = match found {
            Some(i) => base + i,
            None => {
                let e = &mut self.entries[base + victim];
                *e = SourceEntry { key: source, in_use: true, bucket: TokenBucket::starting_at(self.limit, now_ns) };
                base + victim
            }
        };
        &mut self.entries[slot].bucket
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket() {
        let mut b = TokenBucket::new(IcmpRateLimit { per_second: 2, burst: 3 });
        assert!((0..3).all(|_| b.take(0)));
        assert!(!b.take(0));
        assert!(!b.take(499_999_999));
        assert!(b.take(500_000_000));
        assert!(!b.take(400_000_000), "time going back refills nothing");
        assert!(!b.take(500_000_000));
        assert_eq!((0..10).filter(|_| b.take(u64::MAX)).count(), 3, "a long quiet spell refills only the burst");
        let mut none = TokenBucket::new(IcmpRateLimit { per_second: 0, burst: 0 });
        assert!(!none.take(u64::MAX));
    }

    #[test]
    fn a_new_limit_keeps_the_tokens_up_to_its_burst() {
        let mut b = TokenBucket::new(IcmpRateLimit { per_second: 2, burst: 10 });
        assert!((0..4).all(|_| b.take(0)), "6 of 10 left");
        b.set_limit(IcmpRateLimit { per_second: 2, burst: 20 });
        assert_eq!((0..30).filter(|_| b.take(0)).count(), 6, "a larger burst is no fresh burst");
        b.set_limit(IcmpRateLimit { per_second: 4, burst: 3 });
        assert_eq!((0..30).filter(|_| b.take(1_000_000_000)).count(), 3, "4 refilled, capped at 3");
        let mut t = SourceBuckets::new(IcmpRateLimit { per_second: 1, burst: 6 }, 64, 7);
        let (a, c) = (v4([198, 18, 0, 2]), v4([198, 18, 0, 3]));
        assert!(t.bucket(a, 0).take(0));
        t.set_limit(IcmpRateLimit { per_second: 0, burst: 2 });
        assert_eq!((0..10).filter(|_| t.bucket(a, 0).take(0)).count(), 2, "a held source takes it");
        assert_eq!((0..10).filter(|_| t.bucket(c, 0).take(0)).count(), 2, "and a new one");
        assert_eq!(t.capacity(), 64);
    }

    fn v4(a: [u8; 4]) -> u128 {
        std::net::Ipv4Addr::from(a).to_ipv6_mapped().to_bits()
    }

    #[test]
    fn source_buckets_are_per_source() {
        let mut t = SourceBuckets::new(IcmpRateLimit { per_second: 1, burst: 6 }, 64, 7);
        let (a, b) = (v4([198, 18, 0, 2]), v4([198, 18, 0, 3]));
        assert_eq!((0..100).filter(|_| t.bucket(a, 0).take(0)).count(), 6, "a flooding source gets its burst");
        assert!(t.bucket(b, 0).take(0), "another source still gets its own");
        assert!(t.bucket(a, 1_000_000_000).take(1_000_000_000), "one per second after");
        assert!(!t.bucket(a, 1_000_000_000).take(1_000_000_000));
        assert_eq!(t.len(), 2);
        // IPv4 and IPv6 with the same low bits are different sources.
        let six = std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0xc612, 2).to_bits();
        assert!(t.bucket(six, 0).take(0));
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn source_table_is_bounded_and_evicts_the_least_recently_used() {
        let limit = IcmpRateLimit { per_second: 1, burst: 1 };
        let mut t = SourceBuckets::new(limit, 16, 1);
        assert_eq!(t.capacity(), 16);
        assert!(SourceBuckets::new(limit, 0, 1).capacity() >= 1, "never empty");
        assert_eq!(SourceBuckets::new(limit, 17, 1).capacity(), 32, "rounded up");
        // Far more sources than room: the table stays at its size.
        for i in 0..10_000u32 {
            assert!(t.bucket(v4((0xc612_0000 + i).to_be_bytes()), i as u64).take(i as u64));
        }
        assert_eq!(t.len(), 16);
        // A source used recently survives newcomers of its set; one idle longest goes first.
        let mut t = SourceBuckets::new(limit, WAYS, 1); // a single set
        let src = |i: u32| v4((0xc612_0100 + i).to_be_bytes());
        for i in 0..WAYS as u32 {
            assert!(t.bucket(src(i), 10 + i as u64).take(10 + i as u64));
        }
        assert!(!t.bucket(src(0), 100).take(100), "source 0 spent its burst and is now the most recent");
        assert!(t.bucket(src(99), 200).take(200), "a newcomer evicts source 1, the least recently used");
        assert!(!t.bucket(src(0), 300).take(300), "source 0 kept its (empty) bucket");
        assert!(t.bucket(src(1), 400).take(400), "source 1 was evicted and comes back full");
        assert_eq!(t.len(), WAYS);
    }
}
