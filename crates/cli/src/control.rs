//! `zsfc controller` (the process) and the operator's commands against a lab's controller:
//! `zsfc rekey`, `zsfc chain`, `zsfc policy`, `zsfc audit verify`.
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use zsfc_controller::Controller;
use zsfc_controller::client::Client;
use zsfc_controller::token::{TokenKey, TokenRef};
use zsfc_lab::access::{Access, call, with_role};

#[derive(Debug, clap::Args)]
pub(crate) struct ControllerArgs {
    /// The controller's SQLite database (created by `zsfc up`, or `Controller::init`).
    #[arg(long)]
    db: PathBuf,
    /// Where the HTTPS API listens (for nodes, and for the operator too unless
    /// `--management-listen` gives the operator an address of its own).
    #[arg(long)]
    listen: String,
    /// A separate address for the operator's commands (seed 004 REQ1): `--listen` then serves
    /// nodes only and this one administrative roles only; each refuses the other's callers.
    #[arg(long)]
    management_listen: Option<String>,
    /// The name in the controller's certificate (what nodes verify).
    #[arg(long, default_value = "controller")]
    server_name: String,
    /// Log lines as text or as JSON objects (time, level, target, message).
    #[arg(long, value_enum, default_value_t, env = "ZSFC_LOG_FORMAT")]
    pub(crate) log_format: crate::logging::LogFormat,
}

pub(crate) fn controller(a: &ControllerArgs) -> anyhow::Result<bool> {
    let ctl = Controller::open(&a.db).with_context(|| format!("opening {}", a.db.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        let bind = |addr: &str| {
            let addr = addr.to_owned();
            async move { tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("listening on {addr}")) }
        };
        let listener = bind(&a.listen).await?;
        let name = ctl.domain().name;
        tokio::spawn(ctl.clone().run_background());
        let Some(m) = &a.management_listen else {
            tracing::info!("zsfc controller: domain {name:?}, API on https://{} (TLS 1.3)", listener.local_addr()?);
            return Ok(zsfc_controller::serve(ctl, listener, &a.server_name).await?);
        };
        let management = bind(m).await?;
        tracing::info!(
            "zsfc controller: domain {name:?}, API for nodes on https://{}, for the operator on https://{} (TLS 1.3)",
            listener.local_addr()?,
            management.local_addr()?
        );
        use zsfc_controller::Plane;
        let (c, server_name) = (ctl.clone(), a.server_name.clone());
        let operator =
            tokio::spawn(
                async move { zsfc_controller::serve_plane(c, management, &server_name, Plane::Management).await },
            );
        let served: anyhow::Result<()> = tokio::select! {
            r = zsfc_controller::serve_plane(ctl, listener, &a.server_name, Plane::Nodes) => Ok(r?),
            r = operator => Ok(r??),
        };
        served
    })?;
    Ok(true)
}

#[derive(Debug, clap::Args)]
pub(crate) struct InitArgs {
    /// The domain topology (the format of `zsfc config compile`).
    #[arg(long)]
    topology: PathBuf,
    /// The domain's name.
    #[arg(long)]
    name: String,
    /// A node whose gateway takes the grants (repeat it for a second ingress gateway).
    #[arg(long = "gateway-node")]
    gateway_nodes: Vec<String>,
    /// Gateway grants as IDENTITY=SERVICE:CHAIN_ID (chain ids count the topology's chains from 1).
    #[arg(long = "grant")]
    grants: Vec<String>,
    /// Rekey the whole domain this often (0: at soft lifetime and on request only).
    #[arg(long, default_value_t = 0)]
    rekey_period_s: u64,
    /// How long each step of a rollout waits for a node's acknowledgement before it goes on
    /// without it (a node that is down must not hold the others' keys back).
    #[arg(long, default_value_t = zsfc_controller::RekeySettings::default().ack_timeout_ms)]
    ack_timeout_ms: u64,
    /// Lifetime of the nodes', the gateway's and the controller's certificates, in seconds
    /// (default: the topology's `certificates.node_s`, else 24 h); renewed at two thirds.
    #[arg(long)]
    node_certificate_lifetime_s: Option<u64>,
    /// Lifetime of client certificates, in seconds (default: the topology's
    /// `certificates.client_s`, else 30 days).
    #[arg(long)]
    client_certificate_lifetime_s: Option<u64>,
    /// The database to create.
    #[arg(long)]
    db: PathBuf,
    /// Where to write ca.pem, the operator's certificate and key, and one NODE.token per node.
    #[arg(long)]
    out: PathBuf,
}

fn parse_grants(grants: &[String]) -> anyhow::Result<Vec<zsfc_config::GatewayGrant>> {
    grants
        .iter()
        .map(|g| {
            let parsed = g.split_once('=').and_then(|(id, rest)| {
                let (svc, chain) = rest.split_once(':')?;
                Some(zsfc_config::GatewayGrant {
                    identity: id.to_owned(),
                    service: svc.to_owned(),
                    chain: chain.parse().ok()?,
                    path: None,
                })
            });
            parsed.with_context(|| format!("--grant {g:?}: expected IDENTITY=SERVICE:CHAIN_ID"))
        })
        .collect()
}

/// `zsfc controller-init`: a new domain's database, CA, operator credentials and one-time
/// bootstrap tokens (files 0600; give each node only its own token).
pub(crate) fn init(a: &InitArgs) -> anyhow::Result<bool> {
    let text = std::fs::read_to_string(&a.topology).with_context(|| format!("reading {}", a.topology.display()))?;
    let mut topology = zsfc_config::Topology::from_toml(&text).with_context(|| a.topology.display().to_string())?;
    let lifetimes = &mut topology.certificates;
    lifetimes.node_s = a.node_certificate_lifetime_s.unwrap_or(lifetimes.node_s);
    lifetimes.client_s = a.client_certificate_lifetime_s.unwrap_or(lifetimes.client_s);
    lifetimes.check().map_err(|e| anyhow::anyhow!("{e} (--node/--client-certificate-lifetime-s)"))?;
    let spec = zsfc_controller::DomainSpec {
        name: a.name.clone(),
        topology,
        gateway_nodes: a.gateway_nodes.clone(),
        grants: parse_grants(&a.grants)?,
        rekey: zsfc_controller::RekeySettings {
            period_s: a.rekey_period_s,
            ack_timeout_ms: a.ack_timeout_ms,
            ..Default::default()
        },
        api: Default::default(),
        revoked: Vec::new(),
    };
    let (init, ca) = Controller::init(&a.db, &spec).with_context(|| format!("creating {}", a.db.display()))?;
    std::fs::create_dir_all(&a.out)?;
    std::fs::write(a.out.join("ca.pem"), ca.pem())?;
    zsfc_controller::pki::issue_roles(&ca, &a.name, &a.out)?;
    for (node, token) in &init.tokens {
        zsfc_controller::pki::write_private(&a.out.join(format!("{node}.token")), token.as_bytes())?;
    }
    println!(
        "domain {:?}: {} created; CA, credentials of every administrative role (operator, operator-keys, \
         operator-policy, operator-chains, auditor) and {} bootstrap tokens in {}",
        a.name,
        a.db.display(),
        init.tokens.len(),
        a.out.display()
    );
    Ok(true)
}

#[derive(Debug, clap::Args)]
pub(crate) struct RecoverArgs {
    /// The controller's database (on the controller's host).
    #[arg(long)]
    db: PathBuf,
    /// The role to recover.
    #[arg(value_name = "ROLE", value_parser = role)]
    target: zsfc_controller::Role,
    /// Where to write ROLE.pem and ROLE.key (a ROLE.token there is removed).
    #[arg(long)]
    out: PathBuf,
}

/// `zsfc controller-recover`: break glass for a role whose hardware token is lost.
pub(crate) fn recover(a: &RecoverArgs) -> anyhow::Result<bool> {
    if !a.db.exists() {
        bail!("{}: no such database", a.db.display());
    }
    let name = a.target.name();
    let (cert, key) = Controller::recover_role(&a.db, a.target).with_context(|| a.db.display().to_string())?;
    std::fs::create_dir_all(&a.out)?;
    std::fs::write(a.out.join(format!("{name}.pem")), cert)?;
    zsfc_controller::pki::write_private(&a.out.join(format!("{name}.key")), key.as_bytes())?;
    let token = a.out.join(format!("{name}.token"));
    if token.exists() {
        std::fs::remove_file(&token)?;
    }
    println!(
        "{name}: no longer bound to a hardware token; new credentials in {} (audited). Move it onto a token again with \
         `zsfc role-key`.",
        a.out.display()
    );
    Ok(true)
}

/// The controller as the operator reaches it: a lab's (by its name), or any controller with
/// `--controller ADDRESS --creds DIR` (what `controller-init --out` wrote).
#[derive(Debug, clap::Args)]
pub(crate) struct LabArgs {
    /// The lab's name (with `--controller`: the domain's name, checked against the controller's).
    name: String,
    #[arg(long, default_value = "/run/zsfc")]
    state_dir: PathBuf,
    /// The administrative role whose credentials to use: operator (everything), operator-keys,
    /// operator-policy, operator-chains or auditor (each limited to its part) [default:
    /// operator; auditor for `zsfc domain`, which only reads].
    #[arg(long = "as", value_parser = role)]
    role: Option<zsfc_controller::Role>,
    /// A controller outside any lab: its API address (HOST:PORT).
    #[arg(long, requires = "creds")]
    controller: Option<String>,
    /// With `--controller`: the directory with ca.pem and the role's credentials.
    #[arg(long, requires = "controller")]
    creds: Option<PathBuf>,
    /// With `--controller`: the name in the controller's certificate.
    #[arg(long, default_value = "controller")]
    server_name: String,
}

fn role(s: &str) -> Result<zsfc_controller::Role, String> {
    zsfc_controller::Role::of(s).ok_or_else(|| {
        let all: Vec<_> = zsfc_controller::Role::ALL.iter().map(|r| r.name()).collect();
        format!("{s:?} is not one of {}", all.join(", "))
    })
}

impl LabArgs {
    fn access(&self) -> Access {
        match (&self.controller, &self.creds) {
            (Some(address), Some(creds)) => Access {
                address: address.clone(),
                server_name: self.server_name.clone(),
                creds: creds.clone(),
                netns: None,
                domain: Some(self.name.clone()),
            },
            _ => Access::lab(&self.state_dir.join(&self.name), &self.name),
        }
    }

    fn with_role<T: Send>(&self, f: impl FnOnce(&Client) -> anyhow::Result<T> + Send) -> anyhow::Result<T> {
        with_role(&self.access(), self.role.unwrap_or(zsfc_controller::Role::Operator), f)
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct RoleKeyArgs {
    /// Whose credentials ask for the binding (`--as`, default operator: only it may).
    #[command(flatten)]
    lab: LabArgs,
    /// The role to move onto the token.
    #[arg(value_name = "ROLE", value_parser = role)]
    target: zsfc_controller::Role,
    /// The token's PKCS#11 module (a shared library; SoftHSM: /usr/lib/softhsm/libsofthsm2.so).
    #[arg(long)]
    pkcs11: PathBuf,
    /// The token's label.
    #[arg(long)]
    token: String,
    /// The new key's label on the token [default: zsfc-ROLE].
    #[arg(long)]
    key: Option<String>,
}

/// `zsfc role-key`: generates a key pair for a role on a PKCS#11 token (the private key cannot
/// leave it), has the controller bind the role to it and certify it, and replaces the role's
/// key file by a note of where the key is. From then on the controller accepts the role only
/// from that key, and every command `--as` the role signs on the token (PIN in
/// `ZSFC_PKCS11_PIN`).
pub(crate) fn role_key(a: &RoleKeyArgs) -> anyhow::Result<bool> {
    let name = a.target.name();
    let r = TokenRef {
        module: a.pkcs11.clone(),
        token: a.token.clone(),
        key: a.key.clone().unwrap_or_else(|| format!("zsfc-{name}")),
    };
    let key = TokenKey::generate(&r, &zsfc_controller::token::pin_from_env()?)?;
    let csr = key.csr(name)?;
    let body = serde_json::json!({"zsfc:input": {"role": name, "csr": csr}});
    let v = match a.lab.with_role(|c| call(c, "POST", "/restconf/operations/zsfc:bind-role", Some(body))) {
        Ok(v) => v,
        Err(e) => {
            // Not bound: the new key serves nothing; leave the token as it was.
            key.destroy();
            return Err(e);
        }
    };
    let cert = v["zsfc:output"]["certificate"].as_str().context("the controller answered without a certificate")?;
    let pki = a.lab.access().creds;
    std::fs::write(pki.join(format!("{name}.pem")), cert)?;
    std::fs::write(pki.join(format!("{name}.token")), toml::to_string(&r)?)?;
    let old = pki.join(format!("{name}.key"));
    if old.exists() {
        // Useless now (the controller refuses it for this role), and a key: gone.
        std::fs::remove_file(&old).with_context(|| format!("removing {}", old.display()))?;
    }
    println!(
        "{name}: bound to key {:?} on token {:?} (generated there; sensitive, never extractable); the controller \
         refuses the role's other keys, and `--as {name}` signs on the token",
        r.key, r.token
    );
    Ok(true)
}

/// `zsfc domain NAME`: the controller's view of the domain — version, rollouts, every node's
/// enrolment and acknowledged version, chains, grants, roles on hardware tokens (no key).
pub(crate) fn domain(a: &DomainArgs) -> anyhow::Result<bool> {
    let role = a.lab.role.unwrap_or(zsfc_controller::Role::Auditor);
    let v = with_role(&a.lab.access(), role, |c| call(c, "GET", "/restconf/data/zsfc:domain", None))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(true);
    }
    let d = &v["zsfc:domain"];
    println!("domain {} version {} rollouts {} ({})", d["name"], d["version"], d["rollouts"], convergence(d));
    println!("  {}", sa_ages(d));
    for n in d["nodes"].as_array().into_iter().flatten() {
        println!(
            "  node {:<12} enrolled {:<5} pushed {:>4} acknowledged {:>4} SAs {}{}",
            n["name"].as_str().unwrap_or("?"),
            n["enrolled"],
            n["pushed-version"],
            n["acked-version"],
            n["sad-entries"],
            if n["revoked"] == true { " REVOKED (cut off: no keys, not waited for)" } else { "" }
        );
    }
    for l in liveness_lines(d) {
        println!("  {l}");
    }
    for r in d["revoked"].as_array().into_iter().flatten() {
        println!(
            "  revoked {}/{}: certificates from before {} (unix s) refused",
            r["kind"].as_str().unwrap_or("?"),
            r["name"].as_str().unwrap_or("?"),
            r["before"]
        );
    }
    for c in d["chains"].as_array().into_iter().flatten() {
        let sfs: Vec<&str> = c["sfs"].as_array().into_iter().flatten().filter_map(|s| s.as_str()).collect();
        println!("  chain {} [{}]", c["name"].as_str().unwrap_or("?"), sfs.join(", "));
    }
    for g in d["grants"].as_array().into_iter().flatten() {
        println!(
            "  grant {} -> {} chain {}",
            g["identity"].as_str().unwrap_or("?"),
            g["service"].as_str().unwrap_or("?"),
            g["chain"]
        );
    }
    let tokens: Vec<&str> = d["roles-on-tokens"].as_array().into_iter().flatten().filter_map(|r| r.as_str()).collect();
    if !tokens.is_empty() {
        println!("  roles on hardware tokens: {}", tokens.join(" "));
    }
    Ok(true)
}

/// Liveness as the nodes report it to the controller: each node up or down as its peers'
/// probes see it and when a peer last saw it; each instance of a pooled SF up or down and in
/// or out of the plan.
pub(crate) fn liveness_lines(d: &serde_json::Value) -> Vec<String> {
    let now = zsfc_controller::audit::unix_ms();
    let ago = |ms: &serde_json::Value| ms.as_i64().map(|t| format!("{:.1} s ago", (now - t).max(0) as f64 / 1000.0));
    let names = |v: &serde_json::Value| -> String {
        v.as_array().into_iter().flatten().filter_map(|s| s.as_str()).collect::<Vec<_>>().join(",")
    };
    let mut out = Vec::new();
    for n in d["nodes"].as_array().into_iter().flatten() {
        let l = &n["liveness"];
        let state = match l["up"].as_bool() {
            Some(true) => format!("up (seen by {})", names(&l["up-by"])),
            Some(false) => format!("DOWN (seen down by {})", names(&l["down-by"])),
            None => "not reported by a peer".to_owned(),
        };
        let seen = ago(&l["last-seen-unix-ms"]).map(|a| format!(", last seen {a}")).unwrap_or_default();
        let contact = ago(&l["last-contact-unix-ms"]).unwrap_or_else(|| "never".to_owned());
        out.push(format!(
            "liveness {:<12} {state}{seen}; its agent last called {contact}",
            n["name"].as_str().unwrap_or("?")
        ));
    }
    // Pooled instances, and external SFs whose node reports their circuit.
    let shown = |i: &&serde_json::Value| i["pooled"] == true || !i["circuit"].is_null();
    for i in d["instances"].as_array().into_iter().flatten().filter(shown) {
        let circuit = match i["circuit"]["up"].as_bool() {
            Some(true) => ", circuit returns probes".to_owned(),
            Some(false) => format!(
                ", circuit returns NO probe (since {})",
                ago(&i["circuit"]["since-unix-ms"]).unwrap_or_else(|| "?".to_owned())
            ),
            None => String::new(),
        };
        out.push(format!(
            "instance {}@{} {}{circuit}, {}",
            i["sf"].as_str().unwrap_or("?"),
            i["node"].as_str().unwrap_or("?"),
            if i["up"] == false { "DOWN" } else { "up" },
            if i["in-plan"] == false { "OUT of the plan (no flow goes to it)" } else { "in the plan" }
        ));
    }
    out
}

/// Whether the domain runs the controller's latest state, in words; SAs past their soft
/// lifetime are a problem whatever the acknowledgements say.
pub(crate) fn convergence(d: &serde_json::Value) -> &'static str {
    match (d["converged"] == true, d["sas"]["past-soft-lifetime"] == true) {
        (_, true) => "NOT converged: SAs past their soft lifetime",
        (true, false) => "converged",
        (false, false) => "rolling out",
    }
}

/// How old the SAs are against their lifetime and renewal.
pub(crate) fn sa_ages(d: &serde_json::Value) -> String {
    let sas = &d["sas"];
    let age = sas["age-s"].as_u64().map_or("not made yet by this controller".to_owned(), |a| format!("made {a} s ago"));
    let renew =
        sas["renew-every-s"].as_f64().map_or("never renewed by time".to_owned(), |r| format!("renewed every {r:.1} s"));
    let soft = sas["soft-lifetime-s"].as_u64().map_or(String::new(), |s| format!(", soft lifetime {s} s"));
    let alarm = if sas["past-soft-lifetime"] == true { " — PAST THEIR SOFT LIFETIME (renewal failing?)" } else { "" };
    format!("SAs {age}, {renew}{soft}{alarm}")
}

#[derive(Debug, clap::Args)]
pub(crate) struct DomainArgs {
    #[command(flatten)]
    lab: LabArgs,
    /// Print the controller's JSON as it is.
    #[arg(long)]
    json: bool,
}

pub(crate) fn rekey(a: &LabArgs) -> anyhow::Result<bool> {
    let v = a.with_role(|c| call(c, "POST", "/restconf/operations/zsfc:rekey", None))?;
    let all = acknowledged(&v);
    if all {
        println!("rekeyed: every enrolled node runs new SAs (version {})", v["zsfc:output"]["version"]);
    } else {
        println!("rekeyed to version {}, but not every node runs the new SAs", v["zsfc:output"]["version"]);
    }
    Ok(all)
}

/// Whether every enrolled node acknowledged the rollout a command caused; names those that did
/// not (on stderr) when not: the command then exits 1. Nodes never enrolled are named too, but
/// are not a failure (they get the current state when they enrol).
fn acknowledged(v: &serde_json::Value) -> bool {
    let names = |field: &str| -> Vec<String> {
        v["zsfc:output"][field].as_array().into_iter().flatten().filter_map(|n| n.as_str()).map(String::from).collect()
    };
    let (late, unenrolled) = (names("not-acknowledged"), names("not-enrolled"));
    if !unenrolled.is_empty() {
        eprintln!("not enrolled yet: {}; each gets the current state when it enrols", unenrolled.join(", "));
    }
    if !late.is_empty() {
        eprintln!(
            "NOT acknowledged by {}: down, unreachable or slow; each gets the current state when it polls \
             again (zsfc domain shows who is behind)",
            late.join(", ")
        );
    }
    late.is_empty()
}

#[derive(Debug, clap::Args)]
pub(crate) struct RevokeArgs {
    #[command(flatten)]
    lab: LabArgs,
    /// What the identity is: node, client or gateway.
    #[arg(value_parser = ["node", "client", "gateway"])]
    kind: String,
    /// Its name.
    #[arg(value_name = "NAME")]
    who: String,
}

/// `zsfc revoke NAME KIND WHO`: the controller refuses the identity's certificates at once, the
/// gateway refuses a revoked client's and closes its open connections, and a revoked node gets
/// no more keys (its SAs are rotated out).
pub(crate) fn revoke(a: &RevokeArgs) -> anyhow::Result<bool> {
    let body = serde_json::json!({"zsfc:input": {"kind": a.kind, "name": a.who}});
    let v = a.lab.with_role(|c| call(c, "POST", "/restconf/operations/zsfc:revoke", Some(body)))?;
    println!(
        "{}/{} revoked: its certificates until now are refused (rolled out as version {})",
        a.kind, a.who, v["zsfc:output"]["version"]
    );
    if !acknowledged(&v) {
        return Ok(false);
    }
    Ok(true)
}

#[derive(Debug, clap::Args)]
pub(crate) struct NodeTokenArgs {
    #[command(flatten)]
    lab: LabArgs,
    /// The node (a reinstalled host, or one whose certificate expired).
    node: String,
    /// Where to write the token (0600) [default: in a lab, the node's bootstrap file; with
    /// --controller, ./NODE.token].
    #[arg(long)]
    out: Option<PathBuf>,
}

/// `zsfc node-token NAME NODE`: a new single-use bootstrap token for NODE; its old
/// certificates are revoked in the same step.
pub(crate) fn node_token(a: &NodeTokenArgs) -> anyhow::Result<bool> {
    let body = serde_json::json!({"zsfc:input": {"node": a.node}});
    let v = a.lab.with_role(|c| call(c, "POST", "/restconf/operations/zsfc:node-token", Some(body)))?;
    let token = zeroize::Zeroizing::new(
        v["zsfc:output"]["token"].as_str().context("the controller's answer holds no token")?.to_owned(),
    );
    let out = a.out.clone().unwrap_or_else(|| match a.lab.controller {
        Some(_) => PathBuf::from(format!("{}.token", a.node)),
        None => a.lab.state_dir.join(&a.lab.name).join(format!("{}.token", a.node)),
    });
    zsfc_controller::pki::write_private(&out, token.as_bytes())?;
    println!(
        "node {}: new bootstrap token in {} (single use); its old certificates are revoked. Remove the node's \
         identity directory and start it: it enrols with the token.",
        a.node,
        out.display()
    );
    Ok(true)
}

#[derive(Debug, clap::Args)]
pub(crate) struct ClientCertArgs {
    #[command(flatten)]
    lab: LabArgs,
    /// The client's name (its identity: spiffe://DOMAIN/client/NAME).
    client: String,
    /// How long the certificate is valid, in seconds [default, and at most: the domain's
    /// `certificates.client_s`].
    #[arg(long)]
    lifetime_s: Option<u64>,
    /// Where to write NAME.pem and NAME.key (0600) [default: in a lab, its pki/clients; with
    /// --controller, the current directory].
    #[arg(long)]
    out: Option<PathBuf>,
}

/// `zsfc client-cert NAME CLIENT`: a new key made here and a certificate for it signed by the
/// domain CA through the controller (the key never leaves this host).
pub(crate) fn client_cert(a: &ClientCertArgs) -> anyhow::Result<bool> {
    let (csr, key) = zsfc_controller::pki::new_csr(&a.client)?;
    let mut input = serde_json::json!({"name": a.client, "csr": csr});
    if let Some(s) = a.lifetime_s {
        input["lifetime-s"] = s.into();
    }
    let body = serde_json::json!({"zsfc:input": input});
    let v = a.lab.with_role(|c| call(c, "POST", "/restconf/operations/zsfc:client-certificate", Some(body)))?;
    let cert = v["zsfc:output"]["certificate"].as_str().context("the controller's answer holds no certificate")?;
    let dir = a.out.clone().unwrap_or_else(|| match a.lab.controller {
        Some(_) => PathBuf::from("."),
        None => a.lab.state_dir.join(&a.lab.name).join("pki/clients"),
    });
    std::fs::create_dir_all(&dir)?;
    zsfc_controller::pki::write_private(&dir.join(format!("{}.key", a.client)), key.as_bytes())?;
    std::fs::write(dir.join(format!("{}.pem", a.client)), cert)?;
    let until = zsfc_controller::pki::Validity::of_pem(cert)
        .and_then(|v| v.not_after.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    println!("client {}: certificate and key in {} (valid until {until}, unix s)", a.client, dir.display());
    Ok(true)
}

#[derive(Debug, clap::Args)]
pub(crate) struct ChainArgs {
    #[command(flatten)]
    lab: LabArgs,
    /// The chain's name.
    chain: String,
    /// Its SFs in path order (replaces the current list; empty: no SF).
    sfs: Vec<String>,
}

pub(crate) fn chain(a: &ChainArgs) -> anyhow::Result<bool> {
    let path = format!("/restconf/data/zsfc:domain/chain={}", a.chain);
    let body = serde_json::json!({"zsfc:chain": {"sfs": a.sfs}});
    let v = a.lab.with_role(|c| call(c, "PUT", &path, Some(body)))?;
    println!("chain {}: {:?} (version {}); new flows take it", a.chain, a.sfs, v["zsfc:output"]["version"]);
    if !acknowledged(&v) {
        return Ok(false);
    }
    Ok(true)
}

#[derive(Debug, clap::Args)]
pub(crate) struct PolicyArgs {
    #[command(flatten)]
    lab: LabArgs,
    /// Grants as IDENTITY=SERVICE:CHAIN_ID (replaces the whole policy).
    #[arg(long = "grant")]
    grants: Vec<String>,
}

pub(crate) fn policy(a: &PolicyArgs) -> anyhow::Result<bool> {
    let grants = parse_grants(&a.grants)?;
    let body = serde_json::json!({"zsfc:grants": grants});
    let v = a.lab.with_role(|c| call(c, "PUT", "/restconf/data/zsfc:domain/grants", Some(body)))?;
    println!("policy: {} grants (version {})", grants.len(), v["zsfc:output"]["version"]);
    if !acknowledged(&v) {
        return Ok(false);
    }
    Ok(true)
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum AuditCommand {
    /// Recompute the audit log's hash chain; names the first record that does not check.
    Verify {
        /// The controller's database.
        db: PathBuf,
    },
}

pub(crate) fn audit(c: &AuditCommand) -> anyhow::Result<bool> {
    let AuditCommand::Verify { db } = c;
    let conn = rusqlite_open(db)?;
    match zsfc_controller::audit::verify(&conn)? {
        zsfc_controller::audit::Verdict::Intact { records, head } => {
            println!("audit log intact: {records} records, last hash {head}");
            Ok(true)
        }
        zsfc_controller::audit::Verdict::Broken { seq, why } => {
            println!("audit log TAMPERED: record {seq}: {why}");
            Ok(false)
        }
    }
}

fn rusqlite_open(db: &Path) -> anyhow::Result<zsfc_controller::audit::Db> {
    if !db.exists() {
        bail!("{}: no such database", db.display());
    }
    Ok(zsfc_controller::audit::open_read_only(db)?)
}
