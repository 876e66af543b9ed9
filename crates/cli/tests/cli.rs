//! The `zsfc` command itself, without namespaces.
use std::process::{Command, Stdio};

/// Issue 18: a printing command whose reader closes early (`zsfc demo | head -1`) ends quietly,
/// never with a panic on the broken pipe.
#[test]
fn a_closed_stdout_ends_a_command_quietly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_zsfc"))
        .args(["demo", "--packets", "400"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before anything was read: every write meets a broken pipe.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
}

/// Issue 20: the shipped unit file (deploy/zsfc-node@.service) is one systemd accepts without a
/// warning, restarts a node that fails, and runs `zsfc node` with the instance's file.
#[test]
fn the_systemd_unit_verifies_and_restarts_on_failure() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let unit = std::fs::read_to_string(root.join("deploy/zsfc-node@.service")).unwrap();
    assert!(unit.contains("\nRestart=on-failure\n"), "{unit}");
    assert!(unit.contains("\nExecStart=/usr/local/bin/zsfc node --config /etc/zsfc/%i.toml\n"), "{unit}");
    // Verified with this build's binary where the unit expects the installed one.
    let dir = std::env::temp_dir().join(format!("zsfc-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let here = unit.replace("/usr/local/bin/zsfc", env!("CARGO_BIN_EXE_zsfc"));
    std::fs::write(dir.join("zsfc-node@.service"), here).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no", "./zsfc-node@ingress.service"])
        .current_dir(&dir)
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    let out = out.expect("systemd-analyze (scripts/setup.sh installs systemd)");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
}
