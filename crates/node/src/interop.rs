//! Hooks for interop tests against independent ESP implementations (issue 19 point 8: scapy
//! and Python's `cryptography` read what a running domain sends and build packets it must
//! accept). Both are off unless the node's environment turns them on, and the node says so
//! in its log when they are — the way strongSwan's `save-keys` plugin writes Wireshark's ESP
//! SA table, or TLS stacks honour `SSLKEYLOGFILE`. Never set them in service:
//!
//! - `ZSFC_INTEROP_KEYLOG=FILE`: every SA the node installs is appended to FILE (created with
//!   mode 0600) with its key material — the keys leave the process.
//! - `ZSFC_INTEROP_FIRST_SEQ=N`: every SA starts after sequence number N instead of 0 (both
//!   ends must have it: lab nodes inherit it from `zsfc up`), so that a test crosses the ESN
//!   boundary at 2^32 (RFC 4303 §2.2.1, RFC 4543 §3.3) without sending four billion packets.
use std::io::Write;
use std::sync::OnceLock;
use zsfc_config::SaParams;

pub const KEYLOG_VAR: &str = "ZSFC_INTEROP_KEYLOG";
pub const FIRST_SEQ_VAR: &str = "ZSFC_INTEROP_FIRST_SEQ";

struct Hooks {
    keylog: Option<std::path::PathBuf>,
    first_seq: Option<u64>,
}

fn hooks() -> &'static Hooks {
    static HOOKS: OnceLock<Hooks> = OnceLock::new();
    HOOKS.get_or_init(|| Hooks {
        keylog: std::env::var_os(KEYLOG_VAR).filter(|v| !v.is_empty()).map(Into::into),
        first_seq: std::env::var(FIRST_SEQ_VAR).ok().and_then(|v| v.trim().parse().ok()),
    })
}

/// The warning a node prints at start when a hook is on, or `None`.
pub fn warning() -> Option<String> {
    let h = hooks();
    let mut on = Vec::new();
    if let Some(k) = &h.keylog {
        on.push(format!("{KEYLOG_VAR}: SA keys are written to {}", k.display()));
    }
    if let Some(n) = h.first_seq {
        on.push(format!("{FIRST_SEQ_VAR}: SAs start after sequence number {n}"));
    }
    (!on.is_empty()).then(|| format!("WARNING: interop test hooks on ({}); never in service", on.join("; ")))
}

/// `cfg` (the SA `p` on lane `lane`) as the hooks want it: its first sequence number, and a
/// keylog line written. `direction` is `out` or `in`.
pub fn on_install(cfg: &mut zsfc_esp::SaConfig, p: &SaParams, lane: u32, direction: &str) {
    let h = hooks();
    if let Some(n) = h.first_seq {
        cfg.first_seq = n;
    }
    let Some(path) = &h.keylog else { return };
    let Ok(keymat) = zsfc_esp::SaKey::lane_keymat(&p.keymat.0, lane) else { return };
    let alg = match p.algorithm {
        zsfc_config::Algorithm::Aes128Gcm => "aes-128-gcm",
        zsfc_config::Algorithm::Aes256Gcm => "aes-256-gcm",
        zsfc_config::Algorithm::Aes128Gmac => "aes-128-gmac",
        zsfc_config::Algorithm::Aes256Gmac => "aes-256-gmac",
    };
    let line = format!(
        "{direction} spi=0x{:08x} alg={alg} esn={} first_seq={} keymat={}\n",
        cfg.spi,
        u8::from(cfg.esn),
        cfg.first_seq,
        hex::encode(keymat.as_slice())
    );
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path);
    if let Ok(mut f) = file {
        let _ = f.write_all(line.as_bytes());
    }
}
