//! Smoke tests of `annals bench`: debug builds, small workloads, and checks of what the
//! reports say that can be wrong (counts, rates, the store left behind), never of speed.

use crate::support::{annals, stderr, stdout};

/// A rate of a report: a finite number above zero.
fn rate(report: &serde_json::Value, field: &str) -> f64 {
    let value = report[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} missing from {report}"));
    assert!(
        value.is_finite() && value > 0.0,
        "{field} = {value} in {report}"
    );
    value
}

/// The events `annals verify` counts in `data`, which must verify.
fn verified_events(data: &std::path::Path, cwd: &std::path::Path) -> u64 {
    let output = annals(
        &["verify", "--json", "--data-dir", data.to_str().unwrap()],
        cwd,
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    report["events"].as_u64().expect("an event count")
}

fn bench_append(data: &std::path::Path, cwd: &std::path::Path) -> serde_json::Value {
    let output = annals(
        &[
            "bench",
            "append",
            "--writers",
            "4",
            "--events-per-commit",
            "3",
            "--events",
            "600",
            "--json",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        cwd,
    );
    assert!(output.status.success(), "{}", stderr(&output));
    serde_json::from_str(&stdout(&output)).unwrap()
}

#[test]
fn bench_append_reports_what_it_wrote() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let report = bench_append(&data, temp.path());
    assert_eq!(report["events"], 600, "{report}");
    assert_eq!(report["commits"], 200, "{report}");
    for field in [
        "events_per_second",
        "commits_per_second",
        "indexed_events_per_second",
    ] {
        rate(&report, field);
    }
    let p50 = rate(&report, "p50_commit_ms");
    let p99 = rate(&report, "p99_commit_ms");
    let max = rate(&report, "max_commit_ms");
    assert!(p50 <= p99 && p99 <= max, "{report}");
    // What the bench left behind is a sound log of exactly what it reported.
    assert_eq!(verified_events(&data, temp.path()), 600);

    // Again, on the directory it filled: it appends (and commits) what was asked again.
    let again = bench_append(&data, temp.path());
    assert_eq!(
        again["events"], 600,
        "only this run's events count: {again}"
    );
    assert_eq!(again["commits"], 200, "{again}");
    rate(&again, "events_per_second");
    assert_eq!(verified_events(&data, temp.path()), 1200);
}

#[test]
fn bench_replay_reads_every_event() {
    let temp = tempfile::tempdir().unwrap();
    let output = annals(
        &["bench", "replay", "--events", "5000", "--json"],
        temp.path(),
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(report["events"], 5000);
    rate(&report, "events_per_second");
}

#[test]
fn bench_contend_never_assigns_a_version_twice() {
    let temp = tempfile::tempdir().unwrap();
    let output = annals(
        &[
            "bench",
            "contend",
            "--writers",
            "8",
            "--duration",
            "0.5",
            "--json",
        ],
        temp.path(),
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(report["versions_unique_and_contiguous"], true);
    assert!(report["commits"].as_u64().unwrap() > 0);
}
