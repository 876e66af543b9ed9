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
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    #[arg(long, default_value_t = 5)]
    seconds: u64,
}

pub(crate) fn run(a: &TrafficArgs) -> anyhow::Result<bool> {
    let s = Stream::start(&a.from_ns, &a.to_ns, a.to, a.rate, Duration::from_secs(a.seconds))?;
    let c = s.finish()?;
    println!("{}", serde_json::to_string(&c)?);
    Ok(true)
}

/// A stream running on two threads.
pub(crate) struct Stream {
    sender: std::thread::JoinHandle<anyhow::Result<u64>>,
    receiver: std::thread::JoinHandle<anyhow::Result<(u64, u64, Vec<bool>)>>,
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
        let expected = (rate as f64 * length.as_secs_f64() * 1.2) as usize + 1024;
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let sending_done = Arc::new(AtomicBool::new(false));
        let done = sending_done.clone();
        let to_ns = to_ns.to_owned();
        let receiver = std::thread::spawn(move || -> anyhow::Result<(u64, u64, Vec<bool>)> {
            zsfc_lab::shell::enter_ns(&to_ns)?;
            let sock = UdpSocket::bind(to).with_context(|| format!("binding {to} in {to_ns}"))?;
            sock.set_read_timeout(Some(Duration::from_millis(100)))?;
            // Room for 20 ms-scale scheduling gaps of this thread at any rate we send (root may
            // exceed rmem_max).
            use nix::sys::socket::{setsockopt, sockopt};
            if setsockopt(&sock, sockopt::RcvBufForce, &RECEIVE_BUFFER).is_err() {
                let _ = setsockopt(&sock, sockopt::RcvBuf, &RECEIVE_BUFFER);
            }
            let _ = bound_tx.send(());
            let mut seen = vec![false; expected];
            let (mut received, mut duplicated) = (0u64, 0u64);
            let mut buf = [0u8; 2048];
            let mut idle_since: Option<Instant> = None;
            loop {
                match sock.recv(&mut buf) {
                    Ok(n) if n >= 8 => {
                        idle_since = None;
                        let seq = u64::from_be_bytes(buf[..8].try_into().unwrap_or_default()) as usize;
                        match seen.get_mut(seq) {
                            Some(s) if *s => duplicated += 1,
                            Some(s) => {
                                *s = true;
                                received += 1;
                            }
                            None => {}
                        }
                    }
                    Ok(_) => {}
                    Err(_) => {
                        // Quiet for 1.5 s after the sender stopped: everything in flight is in.
                        if done.load(Ordering::Relaxed) {
                            let t = *idle_since.get_or_insert_with(Instant::now);
                            if t.elapsed() > Duration::from_millis(1500) {
                                return Ok((received, duplicated, seen));
                            }
                        }
                    }
                }
            }
        });
        bound_rx.recv_timeout(Duration::from_secs(5)).context("the receiver did not start")?;
        let from_ns = from_ns.to_owned();
        let sender = std::thread::spawn(move || -> anyhow::Result<u64> {
            zsfc_lab::shell::enter_ns(&from_ns)?;
            let sock = UdpSocket::bind("0.0.0.0:0")?;
            let mut pkt = [0u8; PAYLOAD];
            let start = Instant::now();
            let mut sent = 0u64;
            while start.elapsed() < length {
                let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
                while sent < due {
                    pkt[..8].copy_from_slice(&sent.to_be_bytes());
                    if sock.send_to(&pkt, to).is_err() {
                        // Local congestion (ENOBUFS): try this number again on the next tick.
                        break;
                    }
                    sent += 1;
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            Ok(sent)
        });
        Ok(Self { sender, receiver, sending_done })
    }

    pub(crate) fn finish(self) -> anyhow::Result<Counted> {
        let sent = self.sender.join().map_err(|_| anyhow::anyhow!("the sender panicked"))??;
        self.sending_done.store(true, Ordering::Relaxed);
        let (received, duplicated, _) =
            self.receiver.join().map_err(|_| anyhow::anyhow!("the receiver panicked"))??;
        Ok(Counted { sent, received, lost: sent.saturating_sub(received), duplicated })
    }
}
