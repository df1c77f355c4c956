//! The token bucket that limits the ICMP errors sent out of each port.

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
        let capacity = limit.burst as u64 * NANO;
        TokenBucket { nanotokens: capacity, capacity, per_second: limit.per_second as u64, last_ns: 0 }
    }

    /// Takes a token if there is one. Time going backwards refills nothing.
    #[inline]
    pub fn take(&mut self, now_ns: u64) -> bool {
        let elapsed = now_ns.saturating_sub(self.last_ns);
        self.last_ns = self.last_ns.max(now_ns);
        self.nanotokens = self.nanotokens.saturating_add(elapsed.saturating_mul(self.per_second)).min(self.capacity);
        if self.nanotokens >= NANO {
            self.nanotokens -= NANO;
            true
        } else {
            false
        }
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
}
