//! Admission control for the API (seed 004 REQ3): every source address has a token bucket of
//! new connections and a cap on its open connections, and only so many connections may be open
//! at once from everyone. What is refused costs no TLS handshake, and is audited once per source
//! and interval with its count, so a flood fills neither memory nor the audit log, and one
//! source (slowloris without credentials) cannot take the room of the others.
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Limits of the controller's API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiLimits {
    /// New connections per second one source address may open (sustained).
    pub connections_per_s: u32,
    /// ... and at once after a quiet time.
    pub burst: u32,
    /// Connections open at the same time, from everyone.
    pub max_open: u32,
    /// Connections open at the same time from one source address (below `max_open`, so that
    /// one source cannot fill the room).
    pub max_open_per_source: u32,
}

impl Default for ApiLimits {
    fn default() -> Self {
        // A node makes about six connections per rollout (three polls, three acknowledgements).
        // A node holds one poll and an acknowledgement or two; an operator a few calls.
        Self { connections_per_s: 50, burst: 200, max_open: 1024, max_open_per_source: 32 }
    }
}

/// How often refusals of one source are written to the audit log.
const REPORT_EVERY: Duration = Duration::from_secs(10);
/// Sources remembered at most; beyond, the idle ones are forgotten first.
const MAX_SOURCES: usize = 10_000;

struct Bucket {
    tokens: f64,
    last: Instant,
    refused: u64,
    reported: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admit,
    /// Refused; `Some(n)`: time to audit `n` refusals of this source.
    Refuse(Option<u64>),
}

pub struct Limiter {
    limits: ApiLimits,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    open: Mutex<HashMap<IpAddr, OpenCount>>,
}

/// A source's open connections, and its refusals for having too many.
struct OpenCount {
    open: u32,
    refused: u64,
    reported: Option<Instant>,
}

/// One open connection of a source; dropping it (the connection ends) frees its place.
#[derive(Debug)]
pub struct OpenSlot {
    limiter: std::sync::Arc<Limiter>,
    ip: IpAddr,
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        let mut m = self.limiter.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = m.get_mut(&self.ip) {
            c.open = c.open.saturating_sub(1);
            if c.open == 0 && c.refused == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

impl core::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Limiter").field("limits", &self.limits).finish()
    }
}

impl Limiter {
    pub fn new(limits: ApiLimits) -> Self {
        Self { limits, buckets: Mutex::new(HashMap::new()), open: Mutex::new(HashMap::new()) }
    }

    pub fn limits(&self) -> ApiLimits {
        self.limits
    }

    /// A new connection from `ip` at `now`.
    pub fn admit(&self, ip: IpAddr, now: Instant) -> Admission {
        let mut b = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if b.len() >= MAX_SOURCES && !b.contains_key(&ip) {
            b.retain(|_, k| now.duration_since(k.last) < REPORT_EVERY);
            if b.len() >= MAX_SOURCES {
                return Admission::Refuse(None);
            }
        }
        let burst = f64::from(self.limits.burst.max(1));
        let k = b.entry(ip).or_insert(Bucket { tokens: burst, last: now, refused: 0, reported: None });
        k.tokens =
            (k.tokens + now.duration_since(k.last).as_secs_f64() * f64::from(self.limits.connections_per_s)).min(burst);
        k.last = now;
        if k.tokens >= 1.0 {
            k.tokens -= 1.0;
            return Admission::Admit;
        }
        k.refused += 1;
        if k.reported.is_none_or(|t| now.duration_since(t) >= REPORT_EVERY) {
            k.reported = Some(now);
            let n = std::mem::take(&mut k.refused);
            return Admission::Refuse(Some(n));
        }
        Admission::Refuse(None)
    }
}

impl Limiter {
    /// A place for one more open connection of `ip` at `now`, held until the slot is dropped;
    /// `Err(Some(n))` when the source has `max_open_per_source` open already and `n` refusals
    /// are due for the audit log (once per interval), `Err(None)` when refused silently.
    pub fn open(self: &std::sync::Arc<Self>, ip: IpAddr, now: Instant) -> Result<OpenSlot, Option<u64>> {
        let mut m = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if m.len() >= MAX_SOURCES && !m.contains_key(&ip) {
            return Err(None);
        }
        let c = m.entry(ip).or_insert(OpenCount { open: 0, refused: 0, reported: None });
        if c.open < self.limits.max_open_per_source.max(1) {
            c.open += 1;
            return Ok(OpenSlot { limiter: self.clone(), ip });
        }
        c.refused += 1;
        if c.reported.is_none_or(|t| now.duration_since(t) >= REPORT_EVERY) {
            c.reported = Some(now);
            return Err(Some(std::mem::take(&mut c.refused)));
        }
        Err(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_holds_at_most_its_share_of_open_connections() {
        let limits = ApiLimits { max_open_per_source: 3, ..ApiLimits::default() };
        let l = std::sync::Arc::new(Limiter::new(limits));
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let t = Instant::now();
        let held: Vec<OpenSlot> = (0..3).map(|_| l.open(a, t).ok().unwrap()).collect();
        assert_eq!(l.open(a, t).err(), Some(Some(1)), "the first refusal is reported");
        assert_eq!(l.open(a, t).err(), Some(None), "later ones are counted");
        assert!(l.open(b, t).is_ok(), "another source has its own share");
        drop(held);
        assert!(l.open(a, t).is_ok(), "closed connections free their places");
    }

    #[test]
    fn a_source_gets_its_burst_then_its_rate_and_is_reported_once_per_interval() {
        let l = Limiter::new(ApiLimits { connections_per_s: 10, burst: 5, max_open: 10, max_open_per_source: 10 });
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let t = Instant::now();
        assert!((0..5).all(|_| l.admit(a, t) == Admission::Admit));
        assert_eq!(l.admit(a, t), Admission::Refuse(Some(1)), "the first refusal is reported");
        assert_eq!(l.admit(a, t), Admission::Refuse(None), "later ones are counted, not reported");
        assert_eq!(l.admit(b, t), Admission::Admit, "another source has its own bucket");
        // 10 per second: after 100 ms one more.
        let t = t + Duration::from_millis(100);
        assert_eq!(l.admit(a, t), Admission::Admit);
        assert_eq!(l.admit(a, t), Admission::Refuse(None));
        // After the interval the refusals since the last report (two, and this one) are reported.
        let t = t + REPORT_EVERY;
        assert!((0..5).all(|_| l.admit(a, t) == Admission::Admit));
        assert_eq!(l.admit(a, t), Admission::Refuse(Some(3)));
    }
}
