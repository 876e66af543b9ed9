//! Helpers of the namespace tests: a lab brought up under a unique name and always brought
//! down, tshark captures, counters from reports and metrics.
#![allow(dead_code)] // each test binary uses its own part
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "helpers of tests and benchmarks: a failure should stop them loudly, with its place"
)]
pub mod memory;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_zsfc");

/// The release build of zsfc (built now if it is not up to date), for tests that measure how
/// much traffic gets through: a debug build's packet rate says nothing about the product's.
pub fn release_bin() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    // Only the environment a shell would have: the variables cargo and nextest set for a test
    // would make cargo see a changed build environment and build the release again.
    let keep = ["PATH", "HOME", "CARGO_HOME", "RUSTUP_HOME", "RUSTUP_TOOLCHAIN", "CARGO_TARGET_DIR"];
    let out = Command::new(env!("CARGO"))
        .args(["build", "--release", "--locked", "-q", "-p", "zsfc-cli"])
        .current_dir(&root)
        .env_clear()
        .envs(keep.iter().filter_map(|k| std::env::var_os(k).map(|v| (k, v))))
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo build --release: {}", String::from_utf8_lossy(&out.stderr));
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or(root.join("target"), PathBuf::from);
    target.join("release/zsfc")
}

/// A lab from an example file, renamed so that tests (and a user's labs) never collide.
pub struct LabRun {
    pub name: String,
    pub file: PathBuf,
    pub state: PathBuf,
    pub up: bool,
    /// The zsfc that runs the lab (and so its nodes).
    pub bin: PathBuf,
}

impl LabRun {
    pub fn new(example: &str, tag: &str) -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(format!("{example}.toml"));
        let text = std::fs::read_to_string(&root).unwrap();
        let name = format!("t{}{tag}", std::process::id() % 100_000);
        let line = text.lines().find(|l| l.starts_with("name = ")).unwrap();
        let text = text.replacen(line, &format!("name = \"{name}\""), 1);
        let dir = std::env::temp_dir().join(format!("zsfc-labs-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("lab.toml");
        std::fs::write(&file, text).unwrap();
        Self { name, file, state: dir.join("state"), up: false, bin: PathBuf::from(BIN) }
    }

    pub fn zsfc(&self, args: &[&str]) -> Output {
        let state = self.state.to_str().unwrap();
        Command::new(&self.bin).args(args).args(["--state-dir", state]).stdin(Stdio::null()).output().unwrap()
    }

    pub fn run(&self) -> String {
        let out = self.zsfc(&["run", self.file.to_str().unwrap()]);
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "zsfc run {}:\n{text}", self.name);
        text
    }

    pub fn up(&mut self) {
        self.up_with_env(&[]);
    }

    /// `zsfc up` with `env` added to its environment (its nodes inherit it).
    pub fn up_with_env(&mut self, env: &[(&str, &str)]) {
        self.up = true;
        let state = self.state.to_str().unwrap();
        let out = Command::new(&self.bin)
            .args(["up", self.file.to_str().unwrap(), "--state-dir", state])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "zsfc up: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn check(&self) -> String {
        let out = self.zsfc(&["check", &self.name]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "zsfc check:\n{text}{}", String::from_utf8_lossy(&out.stderr));
        text
    }

    /// `zsfc down`; returns what it printed (the nodes' final reports).
    pub fn down(&mut self) -> String {
        self.up = false;
        let out = self.zsfc(&["down", &self.name]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "zsfc down:\n{text}{}", String::from_utf8_lossy(&out.stderr));
        text
    }

    /// Changes the lab file before `up` (a test's variant of an example).
    pub fn edit(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(&self.file).unwrap();
        assert!(text.contains(from), "{from:?} is not in the lab file");
        std::fs::write(&self.file, text.replacen(from, to, 1)).unwrap();
    }

    pub fn ns(&self, which: &str) -> String {
        format!("zsfc-{}-{which}", self.name)
    }

    pub fn state_file(&self, rel: &str) -> PathBuf {
        self.state.join(&self.name).join(rel)
    }

    pub fn namespaces_left(&self) -> Vec<String> {
        let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
        let prefix = format!("zsfc-{}-", self.name);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(&prefix))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for LabRun {
    fn drop(&mut self) {
        if self.up {
            let _ = self.zsfc(&["down", &self.name]);
        }
        let _ = std::fs::remove_dir_all(self.file.parent().unwrap());
    }
}

/// A tshark capture on `dev` in `ns`, stopped on drop.
pub struct Capture {
    child: Child,
    file: PathBuf,
}

impl Capture {
    pub fn start(ns: &str, dev: &str, file: PathBuf) -> Self {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "tshark", "-q", "-i", dev, "-w"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tshark (./test.sh installs it)");
        // tshark says "Capturing on 'DEV'" once packets are being captured.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("Capturing on") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("tshark did not start capturing on {dev} in {ns}"));
        Self { child, file }
    }

    /// Stops the capture and returns `fields` of every packet (one line per packet).
    pub fn fields(mut self, fields: &[&str]) -> Vec<String> {
        std::thread::sleep(Duration::from_millis(300));
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
        let mut cmd = Command::new("tshark");
        cmd.arg("-r").arg(&self.file).args(["-T", "fields", "-E", "separator=;"]);
        for f in fields {
            cmd.args(["-e", f]);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "tshark -r: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn usable() {
    let root = Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false);
    assert!(root && Path::new("/dev/net/tun").exists(), "these tests need root and /dev/net/tun (CI has both)");
}

pub fn count(report: &str, prefix: &str) -> u64 {
    report
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// `zsfc traffic` from the client alice to the sink on the egress node; (sent, received, lost,
/// duplicated).
pub fn stream(lab: &LabRun, rate: u32, seconds: u32) -> (u64, u64, u64, u64) {
    let out = Command::new(BIN)
        .args(["traffic", "--from-ns", &lab.ns("c-alice"), "--to-ns", &lab.ns("egress"), "--to", "10.9.0.1:7100"])
        .args(["--rate", &rate.to_string(), "--seconds", &seconds.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "zsfc traffic: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let n = |k: &str| v[k].as_u64().unwrap();
    (n("sent"), n("received"), n("lost"), n("duplicated"))
}

/// One counter from a node's metrics: the sum of every series whose line has all of `labels`.
pub fn metric(lab: &LabRun, node: &str, name: &str, labels: &[&str]) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.ns(node), "curl", "-s", "--max-time", "3", "http://127.0.0.1:9464/metrics"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// An HTTPS fetch of `/index.html` from the lab's `web` service as `client` (with its
/// certificate); the HTTP status, 0 when refused.
pub fn fetch_as(lab: &LabRun, client: &str) -> u32 {
    fetch_from(lab, client, Some(client))
}

/// The same fetch from the namespace of client `from`, with the certificate of client `cert`
/// (`None`: without a certificate).
#[allow(dead_code)]
pub fn fetch_from(lab: &LabRun, from: &str, cert: Option<&str>) -> u32 {
    fetch_path(lab, from, cert, "/index.html")
}

/// [`fetch_from`] of `path`.
pub fn fetch_path(lab: &LabRun, from: &str, cert: Option<&str>, path: &str) -> u32 {
    let pki = |f: String| lab.state_file(&format!("pki/{f}")).display().to_string();
    let host = format!("web.{}", lab.name);
    let mut curl = Command::new("ip");
    curl.args(["netns", "exec", &lab.ns(&format!("c-{from}")), "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(["--max-time", "5", "--cacert", &pki("ca.pem".into())]);
    if let Some(c) = cert {
        curl.args(["--cert", &pki(format!("clients/{c}.pem")), "--key", &pki(format!("clients/{c}.key"))]);
    }
    let out =
        curl.args(["--resolve", &format!("{host}:443:172.16.0.1"), &format!("https://{host}{path}")]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

/// The pid a lab recorded for `who` (a node or the controller).
pub fn pid_of(lab: &LabRun, who: &str) -> i32 {
    std::fs::read_to_string(lab.state_file(&format!("{who}.pid"))).unwrap().trim().parse().unwrap()
}

/// Whether process `pid` exists.
pub fn alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// SIGKILL, as a crash would.
pub fn nix_kill(pid: i32) {
    assert!(Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap().success());
}

/// The controller's audit log, one `seq|kind|subject|detail` line per row.
pub fn audit_rows(db: &std::path::Path) -> String {
    let q = "import sqlite3,sys\nfor r in sqlite3.connect(sys.argv[1]).execute('SELECT seq,kind,subject,detail FROM audit ORDER BY seq'): print(*r, sep='|')";
    let out = Command::new("python3").args(["-c", q]).arg(db).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Starts node `node` of a running lab again (after it was killed), as the lab did, logging to
/// `logs/NODE-again.log`.
pub fn start_node_again(lab: &LabRun, node: &str) -> std::process::Child {
    let cfg = lab.state_file(&format!("{node}.toml"));
    let log = std::fs::File::create(lab.state_file(&format!("logs/{node}-again.log"))).unwrap();
    Command::new("ip")
        .args(["netns", "exec", &lab.ns(node), BIN, "node", "--config", cfg.to_str().unwrap()])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Waits (at most `patience`) until the controller audited a second push for `node`'s
/// restart: its first poll after starting again, and the rollout that followed.
pub fn wait_for_restart(lab: &LabRun, node: &str, patience: std::time::Duration) {
    let t = std::time::Instant::now();
    let want = format!("|push|{node}|node (re)started");
    loop {
        let rows = audit_rows(&lab.state_file("controller.db"));
        if rows.lines().filter(|l| l.contains(&want)).count() >= 2 {
            return;
        }
        assert!(t.elapsed() < patience, "the controller never saw {node} start again:\n{rows}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// The counters of the rules in an external SF's FORWARD chain, in order.
pub fn forward_counters(lab: &LabRun, sf_ns: &str) -> Vec<u64> {
    let Ok(out) = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.ns(sf_ns), "iptables", "-nvxL", "FORWARD"])
        .output()
    else {
        panic!("ip netns exec {sf_ns} iptables does not run");
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}
