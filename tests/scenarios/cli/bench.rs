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

#[test]
fn bench_scale_measures_a_seeded_log_in_a_fresh_process() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let output = annals(
        &[
            "bench",
            "scale",
            "--events",
            "3000",
            "--events-per-stream",
            "50",
            "--w1-events",
            "640",
            "--json",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        temp.path(),
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    // The child opened exactly the seeded log.
    assert_eq!(report["events"], 3000, "{report}");
    assert_eq!(report["seeded_streams"], 60, "{report}");
    for field in [
        "w1_events_per_second",
        "empty_w1_events_per_second",
        "w1_ratio",
        "rss_after_open_mib",
        "peak_rss_after_open_mib",
        "rss_after_w1_mib",
        "empty_rss_after_open_mib",
        "seed_seconds",
    ] {
        rate(&report, field);
    }
    for field in ["open_seconds", "empty_open_seconds"] {
        let seconds = report[field].as_f64().expect("a number");
        assert!(seconds.is_finite() && seconds >= 0.0, "{field} in {report}");
    }
    let rss = rate(&report, "rss_after_open_mib");
    let peak = rate(&report, "peak_rss_after_open_mib");
    assert!(rss <= peak, "resident memory is at most its peak: {report}");
    assert!(
        peak < 1024.0,
        "a child that opened 3,000 events holds less than 1 GiB: {report}"
    );
    let ratio = rate(&report, "w1_ratio");
    let expected =
        rate(&report, "w1_events_per_second") / rate(&report, "empty_w1_events_per_second");
    assert!((ratio - expected).abs() < 1e-9, "{report}");
    // The W1 load ran on the seeded log, in the child.
    assert_eq!(verified_events(&data, temp.path()), 3640);
}

#[test]
fn bench_policy_decides_on_one_and_two_threads() {
    let temp = tempfile::tempdir().unwrap();
    let output = annals(
        &["bench", "policy", "--decisions", "500", "--json"],
        temp.path(),
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert!(report["revision"].as_str().unwrap().starts_with("blake3:"));
    let runs = report["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2);
    for run in runs {
        assert_eq!(run["decisions"], 500);
        rate(run, "decisions_per_second");
        rate(run, "p99_micros");
    }
}

#[test]
fn bench_overload_measures_orders_alone_and_under_a_bulk_flood() {
    let temp = tempfile::tempdir().unwrap();
    let output = annals(
        &[
            "bench",
            "overload",
            "--duration",
            "1",
            "--connections",
            "2",
            "--bulk",
            "6",
            "--entities",
            "5",
            "--seed-events",
            "120",
            "--json",
        ],
        temp.path(),
    );
    let report = json_report(&output);
    assert_eq!(report["bench"], "overload", "{report}");
    assert_eq!(report["server"], "own", "{report}");
    for phase in ["alone", "flood"] {
        let figures = &report[phase];
        assert_eq!(figures["connections"], 2, "{report}");
        assert!(
            figures["commands"].as_u64().unwrap() > 0,
            "{phase}: {report}"
        );
        assert!(figures["errors"].is_u64(), "{phase}: {report}");
        rate(figures, "commands_per_second");
        let p50 = rate(figures, "p50_ms");
        let p99 = rate(figures, "p99_ms");
        let p999 = rate(figures, "p999_ms");
        let max = rate(figures, "max_ms");
        assert!(
            p50 <= p99 && p99 <= p999 && p999 <= max,
            "{phase}: {report}"
        );
    }
    assert_eq!(
        report["flood_kinds"],
        serde_json::json!(["rebuild", "export", "log"]),
        "{report}"
    );
    let bulk = &report["bulk"];
    let count = |field: &str| {
        bulk[field]
            .as_u64()
            .unwrap_or_else(|| panic!("bulk.{field} missing from {report}"))
    };
    assert_eq!(count("clients"), 6, "{report}");
    assert!(count("requests") > 0, "{report}");
    assert_eq!(
        count("requests"),
        count("answered") + count("shed") + count("errors"),
        "{report}"
    );
    assert_eq!(
        count("answered"),
        count("rebuilds") + count("export_pages") + count("log_pages"),
        "{report}"
    );
    // Bulk requests were answered and none failed. (Not necessarily every kind: a
    // rebuild keeps its bulk slot until it is done, and a client shed meanwhile waits
    // out its `Retry-After`, as it does by default, which may outlast the phase.)
    assert!(count("answered") > 0, "{report}");
    assert_eq!(count("errors"), 0, "{report}");
    assert_eq!(report["bulk_honours_retry_after"], true, "{report}");
    let ratio = rate(&report, "p99_ratio");
    let expected = rate(&report["flood"], "p99_ms") / rate(&report["alone"], "p99_ms");
    assert!((ratio - expected).abs() < 1e-9, "{report}");
    let met = ratio <= 2.0 && report["flood"]["errors"] == 0;
    assert_eq!(report["target_met"], met, "{report}");
    // The server's temporary data directory is gone with the bench.
    let left: Vec<_> = std::fs::read_dir(temp.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// The streams of the cluster at `url` whose name starts with `prefix`.
fn streams_named(url: &str, prefix: &str) -> Vec<String> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use futures_util::TryStreamExt;
        let client = async_nats::connect(url).await.unwrap();
        let names: Vec<String> = async_nats::jetstream::new(client)
            .stream_names()
            .try_collect()
            .await
            .unwrap();
        names
            .into_iter()
            .filter(|name| name.starts_with(prefix))
            .collect()
    })
}

#[test]
fn bench_append_on_jetstream_reports_and_removes_its_streams() {
    let cluster = test_support::NatsCluster::start();
    let temp = tempfile::tempdir().unwrap();
    let store = cluster.urls();
    let load = [
        "bench",
        "append",
        "--store",
        store.as_str(),
        "--writers",
        "4",
        "--events-per-commit",
        "3",
        "--events",
        "61",
        "--json",
    ];
    let output = annals(&load, temp.path());
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(report["store"], "jetstream", "{report}");
    assert_eq!(report["replicas"], 3, "{report}");
    assert_eq!(report["events"], 61, "{report}");
    assert_eq!(report["commits"], 21, "{report}");
    for field in ["events_per_second", "p50_commit_ms", "max_commit_ms"] {
        rate(&report, field);
    }

    // The comparison: one round of each side, each on a stream of its own.
    let mut compare = load.to_vec();
    compare.extend(["--compare-plain-jetstream", "--rounds", "1"]);
    let output = annals(&compare, temp.path());
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    for side in ["backend", "plain", "pipelined"] {
        assert_eq!(
            report[side]["events_per_second"].as_array().map(Vec::len),
            Some(1),
            "{report}"
        );
        rate(&report[side], "median_events_per_second");
    }
    rate(&report, "backend_vs_plain");
    rate(&report, "backend_vs_pipelined");

    // Every stream the runs made is gone, and so is every copy of the log.
    assert_eq!(
        streams_named(&cluster.url(0), "ANNALS_BENCH_"),
        Vec::<String>::new()
    );
    assert_eq!(std::fs::read_dir(temp.path()).unwrap().count(), 0);
}

#[test]
fn bench_saga_on_two_nodes_over_jetstream_confirms_every_order() {
    let cluster = test_support::NatsCluster::start();
    let temp = tempfile::tempdir().unwrap();
    let store = cluster.urls();
    let output = annals(
        &[
            "bench",
            "saga",
            "--store",
            store.as_str(),
            "--nodes",
            "2",
            "--orders",
            "200",
            "--skus",
            "20",
            "--customers",
            "50",
            "--json",
        ],
        temp.path(),
    );
    let report = json_report(&output);
    assert_eq!(report["bench"], "saga", "{report}");
    assert_eq!(report["store"], "jetstream", "{report}");
    assert_eq!(report["nodes"], 2, "{report}");
    assert_eq!(report["replicas"], 3, "{report}");
    assert_eq!(report["orders"], 200, "{report}");
    assert_eq!(report["confirmed"], 200, "every order confirmed: {report}");
    assert_eq!(report["cancelled"], 0, "{report}");
    // Each order is at least placed, reserved, charged and confirmed, with saga steps.
    assert!(report["events"].as_u64().unwrap() > 4 * 200, "{report}");
    for field in ["orders_per_second", "events_per_second", "seconds"] {
        rate(&report, field);
    }
    let p50 = rate(&report, "p50_ms");
    let p99 = rate(&report, "p99_ms");
    let max = rate(&report, "max_ms");
    assert!(p50 <= p99 && p99 <= max, "{report}");
    let load = report["load_average"].as_array().expect("the load average");
    assert_eq!(load.len(), 2, "before and after: {report}");
    assert!(
        load.iter()
            .all(|value| value.as_f64().is_some_and(|v| v >= 0.0))
    );

    // The run's stream is gone, and so are both nodes' copies.
    assert_eq!(
        streams_named(&cluster.url(0), "ANNALS_BENCH_"),
        Vec::<String>::new()
    );
    assert_eq!(std::fs::read_dir(temp.path()).unwrap().count(), 0);
}

/// The one JSON object a successful `bench ... --json` printed.
fn json_report(output: &std::process::Output) -> serde_json::Value {
    assert!(output.status.success(), "{}", stderr(output));
    let printed = stdout(output);
    assert_eq!(printed.lines().count(), 1, "one JSON object: {printed}");
    serde_json::from_str(&printed).unwrap()
}
