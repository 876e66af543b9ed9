//! The benchmark commands run end to end (briefly) and write what they promise. Throughput is not
//! asserted — it depends on the machine — only that every run measured something and the JSON has
//! its documented shape. Needs root, iproute2, iperf3, iptables, curl (./test.sh installs them).
#![expect(
    clippy::unwrap_used,
    reason = "helpers of tests and benchmarks: a failure should stop them loudly, with its place"
)]
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_zsfc");

/// The name of this test's benchmark labs (`--name`): its namespaces are `zsfc-NAME-*`, so the
/// test checks what it made and nothing another run makes at the same time.
fn lab_name() -> String {
    format!("tb{}", std::process::id())
}

fn bench(args: &[&str], json: &std::path::Path, state: &std::path::Path) -> serde_json::Value {
    let out = Command::new(BIN)
        .arg("bench")
        .args(args)
        .args(["--name", &lab_name()])
        .arg("--json")
        .arg(json)
        .arg("--state-dir")
        .arg(state)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "zsfc bench {}:\n{text}", args.join(" "));
    serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap()
}

#[test]
fn chain_pageload_and_proxy_benchmarks_measure_and_write_json() {
    let dir = std::env::temp_dir().join(format!("zsfc-bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state");

    let args = "chain --sfs 1 --modes kernel,intrusive,secure --mtu 1500 --seconds 1 --rounds 2";
    let chain = bench(&args.split(' ').collect::<Vec<_>>(), &dir.join("chain.json"), &state);
    let rows = chain["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{chain}");
    for (row, mode) in rows.iter().zip(["kernel", "intrusive", "secure"]) {
        assert_eq!((row["sfs"].as_u64(), row["mode"].as_str(), row["mtu"].as_u64()), (Some(1), Some(mode), Some(1500)));
        assert!(row["goodput_mbps"].as_f64().unwrap() > 0.0, "{row}");
    }
    assert!(rows[1]["peak_rss_kib"].as_u64().unwrap() > 0);
    // Two rounds: each cell keeps both runs and reports their median; secure is costed.
    for row in rows {
        let runs: Vec<f64> = row["rounds_mbps"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(runs.len(), 2, "{row}");
        assert!((row["goodput_mbps"].as_f64().unwrap() - (runs[0] + runs[1]) / 2.0).abs() < 1e-6, "{row}");
    }
    let cost = &chain["secure_cost"][0];
    let (i, s) = (rows[1]["goodput_mbps"].as_f64().unwrap(), rows[2]["goodput_mbps"].as_f64().unwrap());
    assert!((cost["goodput_cost_percent"].as_f64().unwrap() - 100.0 * (1.0 - s / i)).abs() < 1e-6, "{chain}");
    let nodes = rows[1]["nodes_peak_rss_kib"].as_object().unwrap();
    assert_eq!(nodes.keys().map(String::as_str).collect::<Vec<_>>(), ["egress", "ingress", "sf1"], "{chain}");

    let page = bench(&["pageload", "--runs", "1"], &dir.join("page.json"), &state);
    let (c, n) = (page["chain_s"].as_f64().unwrap(), page["nochain_s"].as_f64().unwrap());
    assert!(c > 0.0 && n > 0.0 && (page["ratio"].as_f64().unwrap() - c / n).abs() < 1e-9, "{page}");

    let proxy =
        bench(&["proxy", "--labels", "3", "--cache-sizes", "1000", "--seconds", "1"], &dir.join("proxy.json"), &state);
    let depth = &proxy["labels"][0];
    assert_eq!(depth["labels"].as_u64(), Some(3));
    assert!(depth["goodput_mbps"].as_f64().unwrap() > 0.0);
    // An SF that forwards everything returns every packet it got, and the proxy knows each:
    // it restores it, or counts it as not cached because its entry was evicted while the SF
    // held more than the cache (4096 packets in flight: seen on a loaded machine).
    let n = |k: &str| depth["proxy"][k].as_u64().unwrap();
    assert_eq!(n("rx_success"), n("tx_success") + n("tx_not_cached"), "{proxy}");
    assert!(n("tx_not_cached") <= n("evicted") && n("tx_success") > 0, "{proxy}");
    assert_eq!(n("sf_dropped") + n("tx_ignored"), 0, "{proxy}");
    assert!(proxy["loss_1pct"]["proxy"]["rx_success"].as_u64().unwrap() > 0);
    assert_eq!(proxy["delay"][0]["cache"].as_u64(), Some(1000));
    assert!(proxy["delay"][0]["proxy"]["peak_in_flight"].as_u64().unwrap() <= 1000);
    assert_eq!(proxy["two_chains"]["goodput_mbps"].as_array().map(Vec::len), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
    let left = String::from_utf8(Command::new("ip").args(["netns", "list"]).output().unwrap().stdout).unwrap();
    let ours = format!("zsfc-{}-", lab_name());
    assert!(!left.lines().any(|l| l.starts_with(&ours)), "the benchmarks left namespaces behind:\n{left}");
}

#[test]
fn keying_benchmark_measures_installs_memory_pushes_and_controller_cpu() {
    let json = std::env::temp_dir().join(format!("zsfc-keying-test-{}.json", std::process::id()));
    let out = Command::new(BIN)
        .args(["bench", "keying", "--chains", "100", "--rollouts", "3", "--sas", "5000", "--json"])
        .arg(&json)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "zsfc bench keying:\n{text}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    for k in ["sa_install_per_s", "push_p50_ms", "push_p99_ms", "bytes_per_sa"] {
        assert!(v[k].as_f64().is_some_and(|x| x > 0.0), "{k} in {v}");
    }
    assert!(v["cpu_s_per_1000_rekeys"].as_f64().is_some_and(|x| x >= 0.0), "{v}");
    assert!(v["push_p99_ms"].as_f64() >= v["push_p50_ms"].as_f64(), "{v}");
    // Three rollouts, three acknowledged pushes each.
    assert!(text.contains("(9 pushes)"), "{text}");
}

/// `zsfc bench failover`, short: it kills sf2's node under load, restarts it, and writes the
/// documented fields (issue 20 point 8). Times are not asserted (the resilience tests do that
/// on their own); what pinning guarantees whatever the load is: no existing flow moves back
/// when the instance returns, and both instances carried flows. The phase after the restart
/// is 6 s: the ingress sees the restarted node up 0.4-3.5 s after it starts (the rollout that
/// gives it SAs is slower under CI's load), and a flow that stood idle while sf2 was dead (the
/// iperf3 control connection, which speaks again at the end) moves off it when it next sends,
/// which the counter cannot tell from a move back if sf2 is not up again by then.
#[test]
fn the_failover_benchmark_kills_and_restarts_an_instance_and_writes_json() {
    let dir = std::env::temp_dir().join(format!("zsfc-bench-fo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let args = ["failover", "--flows", "64", "--before", "2", "--down", "3", "--after", "6", "--streams", "1"];
    let v = bench(&args, &dir.join("failover.json"), &dir.join("state"));
    let _ = std::fs::remove_dir_all(&dir);
    for k in ["affected_max_gap_s", "affected_lost", "unaffected_lost", "unaffected_moved", "return_moved"] {
        assert!(v[k].is_number(), "{k} in {v}");
    }
    assert!(v["detection_s"].as_f64().is_some_and(|d| d > 0.0), "sf2's death was detected: {v}");
    for phase in ["before", "during", "after"] {
        assert!(v["goodput_mbps"][phase].as_f64().is_some_and(|g| g > 0.0), "TCP goodput {phase}: {v}");
    }
    let (affected, unaffected) = (v["affected_flows"].as_u64().unwrap(), v["unaffected_flows"].as_u64().unwrap());
    assert!(affected > 0 && unaffected > 0 && affected + unaffected == 64, "the hash spread the flows: {v}");
    assert_eq!(v["return_moved"], 0, "a flow moved back to the returned instance: {v}");
    let left = String::from_utf8(Command::new("ip").args(["netns", "list"]).output().unwrap().stdout).unwrap();
    let ours = format!("zsfc-{}-", lab_name());
    assert!(!left.lines().any(|l| l.starts_with(&ours)), "the benchmark left namespaces behind:\n{left}");
}
