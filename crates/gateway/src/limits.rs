//! Admission limits of the gateway: token buckets per source and per identity, and the strikes
//! that block a source or an identity refused too often. Both bounded in memory.
use crate::{Blocking, Rate};
use std::time::Duration;

/// Refusals counted per key (source or identity) in a window that starts with the first one,
/// and the blocks they led to; bounded like [`Buckets`]. When it is full of live entries a new
/// key's refusal is not tallied (blocking is on top of authentication and rate limits, which
/// still apply).
pub(crate) struct Strikes<K> {
    rule: Blocking,
    map: std::sync::Mutex<std::collections::HashMap<K, Strike>>,
}

#[derive(Debug, Clone, Copy)]
struct Strike {
    count: u32,
    since: std::time::Instant,
    blocked_until: Option<std::time::Instant>,
}

impl<K: std::hash::Hash + Eq> Strikes<K> {
    /// Keys remembered now (tests check the bound).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    pub(crate) fn new(rule: Blocking) -> Self {
        Self { rule, map: Default::default() }
    }

    pub(crate) fn blocked(&self, key: &K, now: std::time::Instant) -> bool {
        let m = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        m.get(key).and_then(|s| s.blocked_until).is_some_and(|until| now < until)
    }

    /// Tallies one refusal of `key`; the number of refusals when this one begins a block.
    pub(crate) fn strike(&self, key: K, now: std::time::Instant) -> Option<u32> {
        if self.rule.after == 0 {
            return None;
        }
        let mut m = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let fresh = Strike { count: 0, since: now, blocked_until: None };
        let live = |s: &Strike| match s.blocked_until {
            Some(until) => now < until,
            None => now.saturating_duration_since(s.since) < self.rule.within,
        };
        if m.len() >= MAX_BUCKETS && !m.contains_key(&key) {
            m.retain(|_, s| live(s));
            if m.len() >= MAX_BUCKETS {
                return None;
            }
        }
        let s = m.entry(key).or_insert(fresh);
        match s.blocked_until {
            Some(until) if now < until => return None,
            _ if !live(s) => *s = fresh,
            _ => {}
        }
        s.count += 1;
        if s.count < self.rule.after {
            return None;
        }
        // A duration past what the clock can count blocks for a century instead of panicking.
        let century = Duration::from_secs(100 * 365 * 86_400);
        s.blocked_until = Some(now.checked_add(self.rule.duration).or_else(|| now.checked_add(century))?);
        Some(s.count)
    }
}

/// Keys (sources or identities) remembered at most; beyond, the full buckets are forgotten.
pub(crate) const MAX_BUCKETS: usize = 10_000;

/// Token buckets by key, bounded in number: an attacker's many keys can fill it, but it never
/// grows past [`MAX_BUCKETS`], and a key that cannot get a bucket is refused (fail closed).
pub(crate) struct Buckets<K> {
    rate: Rate,
    map: std::sync::Mutex<std::collections::HashMap<K, (f64, std::time::Instant)>>,
}

impl<K: std::hash::Hash + Eq> Buckets<K> {
    /// Keys remembered now (tests check the bound).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    pub(crate) fn new(rate: Rate) -> Self {
        Self { rate, map: Default::default() }
    }

    pub(crate) fn admit(&self, key: K, now: std::time::Instant) -> bool {
        let mut m = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let refill = |(t, last): (f64, std::time::Instant)| {
            (t + now.saturating_duration_since(last).as_secs_f64() * self.rate.per_s).min(self.rate.burst)
        };
        if m.len() >= MAX_BUCKETS && !m.contains_key(&key) {
            m.retain(|_, b| refill(*b) < self.rate.burst);
            if m.len() >= MAX_BUCKETS {
                return false;
            }
        }
        let b = m.entry(key).or_insert((self.rate.burst, now));
        let tokens = refill(*b);
        *b = (if tokens >= 1.0 { tokens - 1.0 } else { tokens }, now);
        tokens >= 1.0
    }
}
