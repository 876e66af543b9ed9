//! How an operator's command reaches a controller with a role's credentials: in a lab, through
//! the controller's namespace and the lab's PKI; elsewhere, at an address with a directory of
//! credentials (`--controller`, `--creds`).
use crate::shell::enter_ns;
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::time::Duration;
use zsfc_controller::Role;
use zsfc_controller::client::{Client, Identity};
use zsfc_controller::token::{TokenKey, TokenRef};

/// Where a controller is and where the credentials to reach it are.
#[derive(Debug, Clone)]
pub struct Access {
    pub address: String,
    pub server_name: String,
    /// ca.pem and ROLE.pem with ROLE.key or ROLE.token.
    pub creds: PathBuf,
    /// The lab's controller namespace, which the calling thread joins.
    pub netns: Option<String>,
    /// A domain name the controller must have (outside labs: a wrong `--controller` is caught).
    pub domain: Option<String>,
}

impl Access {
    /// The operator's interface of the controller of lab `lab`, whose state is in `dir`.
    pub fn lab(dir: &Path, lab: &str) -> Self {
        Self {
            address: crate::MANAGEMENT_ADDRESS.to_owned(),
            server_name: "controller".to_owned(),
            creds: dir.join("pki"),
            netns: Some(format!("zsfc-{lab}-ctl")),
            domain: None,
        }
    }
}

/// Runs `f` with a client holding the operator's credentials of the lab whose state is in
/// `dir`, on a thread that joins the controller's namespace (the caller's thread stays where
/// it is).
pub fn with_operator<T: Send>(
    dir: &Path,
    lab: &str,
    f: impl FnOnce(&Client) -> anyhow::Result<T> + Send,
) -> anyhow::Result<T> {
    with_role_in_lab(dir, lab, Role::Operator, f)
}

/// [`with_operator`] with the credentials of `role`.
pub fn with_role_in_lab<T: Send>(
    dir: &Path,
    lab: &str,
    role: Role,
    f: impl FnOnce(&Client) -> anyhow::Result<T> + Send,
) -> anyhow::Result<T> {
    with_role(&Access::lab(dir, lab), role, f)
}

/// Runs `f` with a client holding the credentials of `role`: a key file, or a key on a hardware
/// token where `zsfc role-key` moved the role (`ROLE.token` says where; PIN in
/// `ZSFC_PKCS11_PIN`).
pub fn with_role<T: Send>(
    at: &Access,
    role: Role,
    f: impl FnOnce(&Client) -> anyhow::Result<T> + Send,
) -> anyhow::Result<T> {
    let read = |p: PathBuf| {
        let hint = if at.netns.is_some() { " (is the lab up?)" } else { "" };
        std::fs::read_to_string(&p).with_context(|| format!("reading {}{hint}", p.display()))
    };
    let name = role.name();
    let (ca, cert) = (read(at.creds.join("ca.pem"))?, read(at.creds.join(format!("{name}.pem")))?);
    let token_file = at.creds.join(format!("{name}.token"));
    let credential = if token_file.exists() {
        let r: TokenRef =
            toml::from_str(&read(token_file.clone())?).with_context(|| token_file.display().to_string())?;
        let pin = zsfc_controller::token::pin_from_env()?;
        Credential::Token(TokenKey::open(&r, &pin).with_context(|| format!("the {name} key"))?)
    } else {
        Credential::File(zeroize::Zeroizing::new(read(at.creds.join(format!("{name}.key")))?))
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            if let Some(ns) = &at.netns {
                enter_ns(ns)?;
            }
            let identity = match &credential {
                Credential::File(key) => Identity::Pem { cert: &cert, key },
                Credential::Token(key) => Identity::Token { cert: &cert, key },
            };
            let c = Client::with_identity(&at.address, &at.server_name, &ca, identity)?;
            if let Some(want) = &at.domain {
                let v = call(&c, "GET", "/restconf/data/zsfc:domain", None)?;
                let have = v["zsfc:domain"]["name"].as_str().unwrap_or_default();
                if have != want {
                    bail!("the controller at {} runs domain {have:?}, not {want:?}", at.address);
                }
            }
            f(&c)
        })
        .join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the operator thread panicked")))
    })
}

enum Credential {
    File(zeroize::Zeroizing<String>),
    Token(std::sync::Arc<TokenKey>),
}

/// One API call; anything but 200 is an error with the controller's message.
pub fn call(
    c: &Client,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let r = c.blocking(method, path, body.map(|b| b.to_string().into_bytes()), Duration::from_secs(60))?;
    if r.status != 200 {
        bail!("{method} {path}: {} {}", r.status, r.message());
    }
    Ok(serde_json::from_slice(&r.body).unwrap_or_default())
}

/// Waits until every node acknowledged the controller's latest state.
pub fn wait_converged(dir: &Path, lab: &str, patience: Duration) -> anyhow::Result<serde_json::Value> {
    wait_converged_after(dir, lab, 0, patience)
}

/// The controller's domain version now (read as the operator).
pub fn domain_version(dir: &Path, lab: &str) -> anyhow::Result<u64> {
    let v = with_operator(dir, lab, |c| call(c, "GET", "/restconf/data/zsfc:domain", None))?;
    Ok(v["zsfc:domain"]["version"].as_u64().unwrap_or_default())
}

/// Like [`wait_converged`], for a state beyond version `after` (a rollout asked for since).
pub fn wait_converged_after(
    dir: &Path,
    lab: &str,
    after: u64,
    patience: Duration,
) -> anyhow::Result<serde_json::Value> {
    with_operator(dir, lab, |c| {
        let t = std::time::Instant::now();
        loop {
            let v = call(c, "GET", "/restconf/data/zsfc:domain", None)?;
            let newer = v["zsfc:domain"]["version"].as_u64().is_some_and(|n| n > after);
            if newer && v["zsfc:domain"]["converged"] == serde_json::Value::Bool(true) {
                return Ok(v);
            }
            if t.elapsed() > patience {
                bail!("the controller's state did not reach every node within {patience:?}: {v}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    })
}
