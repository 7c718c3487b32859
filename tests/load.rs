//! `cartflow load` through the binary: a run over a seeded directory completes every checkout
//! and reports its figures; existing data and remote hosts are refused.
#![cfg(feature = "http")]

use std::process::{Command, Output};

use serde_json::Value;

fn load(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cartflow"))
        .arg("load")
        .args(args)
        .output()
        .expect("the binary runs")
}

#[test]
fn a_load_run_over_a_new_directory_completes_every_checkout_and_reports_its_figures() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("load");
    let dir = dir.to_str().unwrap();
    let run = load(&[
        "--data",
        dir,
        "--checkouts",
        "20",
        "--concurrency",
        "3",
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(0), "{stderr}");
    let summary: Value = serde_json::from_slice(&run.stdout).expect("a JSON summary");
    assert_eq!(summary["requested"], 20, "{summary}");
    assert_eq!(summary["completed"], 20, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    assert!(
        summary["checkouts_per_s"].as_f64().unwrap() > 0.0,
        "{summary}"
    );
    assert!(summary["p99_ms"].as_f64().unwrap() > 0.0, "{summary}");
    assert_eq!(summary["checkout"]["count"], 20, "{summary}");
    // Every async step of the standard template was invoked once per checkout.
    for action in [
        "POST checkCartInventoryAction",
        "POST authorizePayment",
        "POST activateOrderAction",
    ] {
        assert_eq!(summary["calls"][action]["count"], 20, "{action}: {summary}");
    }

    // The directory now holds data: a second run is refused and writes nothing.
    let again = load(&["--data", dir, "--checkouts", "1"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("is not empty"));
}

#[test]
fn a_host_that_is_not_loopback_is_refused_unless_allowed() {
    let run = load(&["--url", "http://192.0.2.7:8080", "--token", "t"]);
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("--allow-remote"));
}
