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

/// What the receiver saw of one flow.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    received: u64,
    last: Option<Instant>,
    longest_gap: Duration,
}

type Received = (u64, u64, Vec<Seen>);

/// A stream running on two threads.
pub(crate) struct Stream {
    sender: std::thread::JoinHandle<anyhow::Result<Vec<(u16, u64)>>>,
    receiver: std::thread::JoinHandle<anyhow::Result<Received>>,
    sending_done: Arc<AtomicBool>,
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
            let mut per_flow = vec![Seen::default(); usize::from(flows)];
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
                                    if let Some(last) = f.last {
                                        f.longest_gap = f.longest_gap.max(now - last);
                                    }
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
                                    if let Some(last) = f.last {
                                        f.longest_gap = f.longest_gap.max(t.saturating_duration_since(last));
                                    }
                                }
                                return Ok((received, duplicated, per_flow));
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
            let start = Instant::now();
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
        Ok(Self { sender, receiver, sending_done })
    }

    pub(crate) fn finish(self) -> anyhow::Result<Counted> {
        Ok(self.finish_flows()?.0)
    }

    /// The totals and each flow's counts.
    pub(crate) fn finish_flows(self) -> anyhow::Result<(Counted, Vec<FlowCounted>)> {
        let sent_per_flow = self.sender.join().map_err(|_| anyhow::anyhow!("the sender panicked"));
        self.sending_done.store(true, Ordering::Relaxed);
        let sent_per_flow = sent_per_flow??;
        let (received, duplicated, per_flow) =
            self.receiver.join().map_err(|_| anyhow::anyhow!("the receiver panicked"))??;
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
        Ok((Counted { sent, received, lost: sent.saturating_sub(received), duplicated }, flows))
    }
}
