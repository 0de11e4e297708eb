//! The deployment files of `deploy/`: Prometheus's rules for the service level objectives
//! pass `promtool check rules` and their unit tests (`promtool test rules`), and the
//! Grafana dashboard shows every metric family the server exports and no other.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's `deploy/` directory.
fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// The promtool binary: `PROMTOOL_BIN`, else `promtool` on PATH. Absent, the test fails
/// (never skips) and says how to install it.
fn promtool() -> PathBuf {
    if let Some(path) = std::env::var_os("PROMTOOL_BIN") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "PROMTOOL_BIN={} is not a file; point it at a promtool binary",
            path.display()
        );
        return path;
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("promtool"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "promtool was not found: set PROMTOOL_BIN or put it on PATH \
                 (Debian: apt-get install prometheus, which .ci/run does)"
            )
        })
}

/// Runs promtool with `args` in `deploy/prometheus` and returns what it printed; fails the
/// test with that output when promtool fails.
fn run_promtool(args: &[&str]) -> String {
    let output = test_support::output(
        Command::new(promtool())
            .args(args)
            .current_dir(deploy_dir().join("prometheus")),
    )
    .expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn the_prometheus_rules_check_and_pass_their_unit_tests() {
    let checked = run_promtool(&["check", "rules", "annals-rules.yml"]);
    assert!(checked.contains("SUCCESS: 16 rules found"), "{checked}");
    let tested = run_promtool(&["test", "rules", "tests/annals-rules.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// The metric families the server exports (docs/OPERATIONS.md, "Metrics"), by name.
const FAMILIES: &[&str] = &[
    "annals_http_requests_total",
    "annals_http_request_duration_seconds",
    "annals_append_duration_seconds",
    "annals_fsync_duration_seconds",
    "annals_append_batch_events",
    "annals_log_next_position",
    "annals_index_lag_events",
    "annals_projection_lag_events",
    "annals_projection_state",
    "annals_relay_backlog_events",
    "annals_relay_published_total",
    "annals_relay_breaker_state",
    "annals_saga_instances",
    "annals_saga_duration_seconds",
    "annals_slo_error_budget_remaining_ratio",
    "annals_slo_burn_rate",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "process_open_fds",
];

/// The metric names in a PromQL expression: `annals_...`, `process_...` and recording
/// rules `annals:...`.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(start) = ["annals_", "annals:", "process_"]
        .iter()
        .filter_map(|prefix| rest.find(prefix))
        .min()
    {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

#[test]
fn the_dashboard_uses_only_exported_families_and_recorded_rules() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(deploy_dir().join("grafana/dashboards/annals.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let rules = std::fs::read_to_string(deploy_dir().join("prometheus/annals-rules.yml")).unwrap();
    let recorded: Vec<&str> = rules
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- record: "))
        .collect();
    assert_eq!(recorded.len(), 10, "{recorded:?}");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    let mut used = Vec::new();
    for panel in panels {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("an expr");
            for name in metric_names(expr) {
                let family = ["_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .unwrap_or(&name);
                assert!(
                    FAMILIES.contains(&family) || recorded.contains(&name.as_str()),
                    "panel {:?} uses {name}, which the server does not export",
                    panel["title"]
                );
                used.push(family.to_owned());
            }
        }
    }
    // Every family is on the dashboard.
    for family in FAMILIES {
        assert!(
            used.iter().any(|name| name == family),
            "no panel shows {family}"
        );
    }
}
