//! A paced UDP stream with numbered packets from one namespace to a receiver in another, counted
//! at the receiver: sent, received, lost, duplicated. `zsfc traffic` and `zsfc bench rekey`.
use anyhow::Context;
use serde::Serialize;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub(crate) struct Counted {
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicated: u64,
}

/// One flow (one source port) of a stream with several.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub(crate) struct FlowCounted {
    pub source_port: u16,
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    /// The longest time between two packets of the flow at the receiver (or from the last one
    /// to the end of sending), seconds.
    pub longest_gap_s: f64,
}

#[derive(Debug, clap::Args)]
pub(crate) struct TrafficArgs {
    /// Namespace of the sender (a client's).
    #[arg(long)]
    from_ns: String,
    /// Namespace of the receiver (the service's node).
    #[arg(long)]
    to_ns: String,
    /// Where the receiver listens (an address of `to_ns`).
    #[arg(long)]
    to: SocketAddr,
    /// Packets per second, over all flows.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Flows: the packets go round-robin from this many source ports (1..=1024); with more
    /// than one, the report has a `flows` list with each one's counts and longest gap.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    flows: u16,
}

pub(crate) fn run(a: &TrafficArgs) -> anyhow::Result<bool> {
    let s = Stream::start_flows(&a.from_ns, &a.to_ns, a.to, a.rate, Duration::from_secs(a.seconds), a.flows)?;
    let (c, flows) = s.finish_flows()?;
    let mut v = serde_json::to_value(c)?;
    if a.flows > 1 {
        v["flows"] = serde_json::to_value(flows)?;
    }
    println!("{v}");
    Ok(true)
}

/// One flow's counts in one phase of a stream (a packet belongs to the phase it was due to
/// be sent in; a gap to the phase its first packet arrived in).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub(crate) struct PhaseCounted {
    pub sent: u64,
    pub lost: u64,
    pub longest_gap_s: f64,
}

/// What the receiver saw of one flow.
#[derive(Debug, Clone, Default)]
struct Seen {
    received: u64,
    last: Option<Instant>,
    longest_gap: Duration,
    /// The longest gap that began in each phase.
    phase_gaps: Vec<Duration>,
}

impl Seen {
    /// A gap from the flow's last packet to `now` (from when sending began: `start`).
    fn gap_until(&mut self, now: Instant, start: Option<Instant>, phases: &[Duration]) {
        let Some(last) = self.last else { return };
        let gap = now.saturating_duration_since(last);
        self.longest_gap = self.longest_gap.max(gap);
        let at = start.map_or(Duration::ZERO, |s| last.saturating_duration_since(s));
        let phase = phases.iter().filter(|&&b| at >= b).count();
        if let Some(g) = self.phase_gaps.get_mut(phase) {
            *g = (*g).max(gap);
        }
    }
}

/// Received, duplicated, each flow's view, and which sequence numbers arrived.
type Received = (u64, u64, Vec<Seen>, Vec<bool>);

/// A stream running on two threads.
pub(crate) struct Stream {
    sender: std::thread::JoinHandle<anyhow::Result<Vec<(u16, u64)>>>,
    receiver: std::thread::JoinHandle<anyhow::Result<Received>>,
    sending_done: Arc<AtomicBool>,
    rate: u64,
    phases: Vec<Duration>,
}

const PAYLOAD: usize = 64;
const RECEIVE_BUFFER: usize = 16 << 20;

impl Stream {
    pub(crate) fn start(
        from_ns: &str,
        to_ns: &str,
        to: SocketAddr,
        rate: u64,
        length: Duration,
    ) -> anyhow::Result<Self> {
        Self::start_flows(from_ns, to_ns, to, rate, length, 1)
    }

    /// A stream of `flows` flows: packet `n` leaves from the `n % flows`th source port and
    /// carries its number and its flow's.
    pub(crate) fn start_flows(
        from_ns: &str,
        to_ns: &str,
        to: SocketAddr,
        rate: u64,
        length: Duration,
        flows: u16,
    ) -> anyhow::Result<Self> {
        Self::start_phased(from_ns, to_ns, to, rate, length, flows, Vec::new())
    }

    /// [`start_flows`](Self::start_flows) whose counts are also kept per phase: `phases` are
    /// the times (from the start of sending, ascending) where one phase ends and the next
    /// begins.
    pub(crate) fn start_phased(
        from_ns: &str,
        to_ns: &str,
        to: SocketAddr,
        rate: u64,
        length: Duration,
        flows: u16,
        phases: Vec<Duration>,
    ) -> anyhow::Result<Self> {
        let started: Arc<std::sync::OnceLock<Instant>> = Arc::default();
        let (start_rx, bounds) = (started.clone(), phases.clone());
        let expected = (rate as f64 * length.as_secs_f64() * 1.2) as usize + 1024;
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let sending_done = Arc::new(AtomicBool::new(false));
        let done = sending_done.clone();
        let to_ns = to_ns.to_owned();
        let receiver = std::thread::spawn(move || -> anyhow::Result<Received> {
            zsfc_lab::shell::enter_ns(&to_ns)?;
            let sock = UdpSocket::bind(to).with_context(|| format!("binding {to} in {to_ns}"))?;
            sock.set_read_timeout(Some(Duration::from_millis(20)))?;
            // Room for 20 ms-scale scheduling gaps of this thread at any rate we send (root may
            // exceed rmem_max).
            use nix::sys::socket::{setsockopt, sockopt};
            if setsockopt(&sock, sockopt::RcvBufForce, &RECEIVE_BUFFER).is_err() {
                let _ = setsockopt(&sock, sockopt::RcvBuf, &RECEIVE_BUFFER);
            }
            let _ = bound_tx.send(());
            let mut seen = vec![false; expected];
            let fresh = Seen { phase_gaps: vec![Duration::ZERO; bounds.len() + 1], ..Seen::default() };
            let mut per_flow = vec![fresh; usize::from(flows)];
            let (mut received, mut duplicated) = (0u64, 0u64);
            let mut buf = [0u8; 2048];
            let mut done_at: Option<Instant> = None;
            loop {
                match sock.recv(&mut buf) {
                    Ok(n) if n >= 10 => {
                        let seq = u64::from_be_bytes(buf[..8].try_into().unwrap_or_default()) as usize;
                        let flow = usize::from(u16::from_be_bytes([buf[8], buf[9]]));
                        match seen.get_mut(seq) {
                            Some(s) if *s => duplicated += 1,
                            Some(s) => {
                                *s = true;
                                received += 1;
                                if let Some(f) = per_flow.get_mut(flow) {
                                    let now = Instant::now();
                                    f.gap_until(now, start_rx.get().copied(), &bounds);
                                    f.last = Some(now);
                                    f.received += 1;
                                }
                            }
                            None => {}
                        }
                    }
                    Ok(_) => {}
                    Err(_) => {
                        // Quiet for 1.5 s after the sender stopped: everything in flight is in.
                        if done.load(Ordering::Relaxed) {
                            let t = *done_at.get_or_insert_with(Instant::now);
                            if t.elapsed() > Duration::from_millis(1500) {
                                for f in &mut per_flow {
                                    f.gap_until(t, start_rx.get().copied(), &bounds);
                                }
                                return Ok((received, duplicated, per_flow, seen));
                            }
                        }
                    }
                }
            }
        });
        bound_rx.recv_timeout(Duration::from_secs(5)).context("the receiver did not start")?;
        let from_ns = from_ns.to_owned();
        let finished = sending_done.clone();
        let sender = std::thread::spawn(move || -> anyhow::Result<Vec<(u16, u64)>> {
            // However the sender ends, the receiver then waits for the last packets and stops.
            struct Finished(Arc<AtomicBool>);
            impl Drop for Finished {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::Relaxed);
                }
            }
            let _finished = Finished(finished);
            zsfc_lab::shell::enter_ns(&from_ns)?;
            let mut socks = Vec::new();
            for _ in 0..flows {
                let s = UdpSocket::bind("0.0.0.0:0")?;
                let port = s.local_addr()?.port();
                socks.push((s, port, 0u64));
            }
            let mut pkt = [0u8; PAYLOAD];
            let start = *started.get_or_init(Instant::now);
            let mut sent = 0u64;
            'send: while start.elapsed() < length {
                let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
                while sent < due {
                    let flow = (sent % u64::from(flows)) as usize;
                    pkt[..8].copy_from_slice(&sent.to_be_bytes());
                    pkt[8..10].copy_from_slice(&(flow as u16).to_be_bytes());
                    let Some((sock, _, n)) = socks.get_mut(flow) else { break 'send };
                    if sock.send_to(&pkt, to).is_err() {
                        // Local congestion (ENOBUFS): try this number again on the next tick.
                        break;
                    }
                    *n += 1;
                    sent += 1;
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            Ok(socks.into_iter().map(|(_, port, n)| (port, n)).collect())
        });
        Ok(Self { sender, receiver, sending_done, rate, phases })
    }

    pub(crate) fn finish(self) -> anyhow::Result<Counted> {
        Ok(self.finish_flows()?.0)
    }

    /// The totals and each flow's counts.
    pub(crate) fn finish_flows(self) -> anyhow::Result<(Counted, Vec<FlowCounted>)> {
        self.finish_phased().map(|(c, f, _)| (c, f))
    }

    /// The totals, each flow's counts, and each flow's counts per phase.
    pub(crate) fn finish_phased(self) -> anyhow::Result<(Counted, Vec<FlowCounted>, Vec<Vec<PhaseCounted>>)> {
        let sent_per_flow = self.sender.join().map_err(|_| anyhow::anyhow!("the sender panicked"));
        self.sending_done.store(true, Ordering::Relaxed);
        let sent_per_flow = sent_per_flow??;
        let (received, duplicated, per_flow, seen) =
            self.receiver.join().map_err(|_| anyhow::anyhow!("the receiver panicked"))??;
        // Packet n of the stream is flow n % flows's, due at n / rate.
        let n_flows = sent_per_flow.len().max(1);
        let mut phased: Vec<Vec<PhaseCounted>> = per_flow
            .iter()
            .map(|f| {
                f.phase_gaps
                    .iter()
                    .map(|g| PhaseCounted { longest_gap_s: g.as_secs_f64(), ..Default::default() })
                    .collect()
            })
            .collect();
        let total: u64 = sent_per_flow.iter().map(|f| f.1).sum();
        for n in 0..total {
            let due = Duration::from_secs_f64(n as f64 / self.rate.max(1) as f64);
            let phase = self.phases.iter().filter(|&&b| due >= b).count();
            let Some(c) = phased.get_mut(n as usize % n_flows).and_then(|f| f.get_mut(phase)) else { continue };
            c.sent += 1;
            c.lost += u64::from(!seen.get(n as usize).copied().unwrap_or(false));
        }
        let sent = sent_per_flow.iter().map(|f| f.1).sum::<u64>();
        let flows = sent_per_flow
            .iter()
            .zip(&per_flow)
            .map(|(&(source_port, sent), seen)| FlowCounted {
                source_port,
                sent,
                received: seen.received,
                lost: sent.saturating_sub(seen.received),
                longest_gap_s: seen.longest_gap.as_secs_f64(),
            })
            .collect();
        Ok((Counted { sent, received, lost: sent.saturating_sub(received), duplicated }, flows, phased))
    }
}
