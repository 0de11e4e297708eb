//! Tests of the experiment format and the fault schedule.

use super::*;

const MINIMAL: &str = r#"
name = "nats-outage"
hypothesis = "the relay degrades, the server stays ready"
duration_secs = 20
heal_timeout_secs = 15

[steady_state]
ready = true
relay_healthy = true

[[faults]]
at_secs = 3
point = "relay.publish"
effect = "error"
duration_secs = 5
"#;

fn with(extra: &str) -> String {
    format!("{MINIMAL}\n{extra}")
}

#[test]
fn a_minimal_experiment_parses_with_its_defaults() {
    let experiment = Experiment::parse(MINIMAL).unwrap();
    assert_eq!(experiment.name, "nats-outage");
    assert!(!experiment.expect_restart);
    assert_eq!(experiment.budget, Budget::default());
    assert_eq!(experiment.load, Load::default());
    assert!(experiment.steady_state.ready && experiment.steady_state.relay_healthy);
    assert!(experiment.during.is_empty());
    let fault = &experiment.faults[0];
    assert_eq!(fault.probability, 1.0);
    assert_eq!(
        fault.spec(),
        FaultSpec {
            point: "relay.publish".into(),
            effect: EffectKind::Error,
            delay_ms: None,
            probability: 1.0,
            count: None,
            duration_secs: Some(5.0),
        }
    );
    assert_eq!(fault.describe(), "relay.publish error for 5 s");
}

#[test]
fn every_shipped_experiment_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "toml") {
            let experiment = Experiment::read(&path).unwrap();
            assert!(
                experiment.duration_secs + experiment.heal_timeout_secs <= 60.0,
                "{} runs too long for CI",
                path.display()
            );
            names.push(experiment.name);
        }
    }
    names.sort();
    assert_eq!(names.len(), 5, "{names:?}");
}

#[test]
fn an_unknown_key_is_named() {
    let error = Experiment::parse(&with("colour = \"red\"")).unwrap_err();
    assert!(error.contains("colour"), "{error}");
    let error = Experiment::parse(&MINIMAL.replace("ready = true", "readyy = true")).unwrap_err();
    assert!(error.contains("readyy"), "{error}");
    let error =
        Experiment::parse(&MINIMAL.replace("duration_secs = 5", "duration_secs = 5\nsecs = 1"))
            .unwrap_err();
    assert!(error.contains("secs"), "{error}");
}

#[test]
fn impossible_faults_are_refused_naming_what_is_wrong() {
    let cases = [
        (
            "point = \"relay.publish\"",
            "point = \"relay.pub\"",
            "no fault point \"relay.pub\"",
        ),
        (
            "effect = \"error\"",
            "effect = \"status_500\"",
            "relay.publish has no status_500 effect",
        ),
        (
            "duration_secs = 5\n",
            "count = 0\n",
            "count must be at least 1",
        ),
        (
            "duration_secs = 5\n",
            "probability = 0.5\n",
            "must end by itself",
        ),
        ("at_secs = 3", "at_secs = 25", "before duration_secs"),
        (
            "effect = \"error\"",
            "effect = \"delay\"",
            "a delay needs delay_ms",
        ),
        (
            "effect = \"error\"",
            "effect = \"error\"\ndelay_ms = 5",
            "only for the delay effect",
        ),
        (
            "effect = \"error\"",
            "effect = \"error\"\nprobability = 1.5",
            "probability must be",
        ),
    ];
    for (from, to, expected) in cases {
        let text = MINIMAL.replacen(from, to, 1);
        assert_ne!(text, MINIMAL, "{from} is in the minimal experiment");
        let error = Experiment::parse(&text).unwrap_err();
        assert!(error.contains(expected), "{to}: {error}");
        assert!(error.starts_with("faults[0]"), "{to}: {error}");
    }
}

#[test]
fn impossible_experiments_are_refused() {
    let cases = [
        (
            MINIMAL.replace("duration_secs = 20", "duration_secs = 0"),
            "duration_secs must be above 0",
        ),
        (
            MINIMAL.replace("ready = true\nrelay_healthy = true", ""),
            "steady_state sets no check",
        ),
        (
            MINIMAL.split("[[faults]]").next().unwrap().to_owned(),
            "no [[faults]]",
        ),
        (with("[budget]\nmin_remaining = 2"), "budget.min_remaining"),
        (
            with("[load]\nrate = 5\nconcurrency = 0"),
            "load.concurrency",
        ),
        (
            with("[during]\norders_settled_within_secs = 3"),
            "belongs in steady_state",
        ),
        (
            MINIMAL.replace(
                "relay_healthy = true",
                "max_burn_rate = [{ objective = \"command-latency\", window = \"2m\", max = 1.0 }]",
            ),
            "there is no window \"2m\"",
        ),
    ];
    for (text, expected) in cases {
        let error = Experiment::parse(&text).unwrap_err();
        assert!(error.contains(expected), "{expected}: {error}");
    }
}

fn schedule_of(faults: &str) -> Schedule {
    let text = format!(
        "name = \"s\"\nhypothesis = \"h\"\nduration_secs = 30\nheal_timeout_secs = 5\n\
         [steady_state]\nready = true\n{faults}"
    );
    Schedule::new(&Experiment::parse(&text).unwrap())
}

#[test]
fn faults_are_injected_on_time_and_cleared_after_their_duration() {
    let mut schedule = schedule_of(
        "[[faults]]\nat_secs = 2\npoint = \"relay.publish\"\neffect = \"error\"\nduration_secs = 5\n\
         [[faults]]\nat_secs = 4\npoint = \"projection.apply\"\neffect = \"panic\"\ncount = 2\n",
    );
    assert_eq!(schedule.due(0.0), Due::default());
    assert_eq!(schedule.due(2.0).inject, vec![0]);
    schedule.injected(0, 7, 2.0);
    assert_eq!(schedule.due(3.0), Due::default());
    assert_eq!(schedule.due(4.5).inject, vec![1]);
    schedule.injected(1, 8, 4.5);
    assert_eq!(schedule.active(), vec![(0, 7), (1, 8)]);
    // The first is cleared 5 s after its injection, not after its at_secs.
    assert_eq!(schedule.due(6.9), Due::default());
    assert_eq!(schedule.due(7.0).clear, vec![(0, 7)]);
    schedule.cleared(0, 7.2);
    assert_eq!(schedule.state(0), FaultState::Cleared { at: 7.2 });
    // A counted fault is never cleared by time: it ends by itself.
    assert_eq!(schedule.due(29.0), Due::default());
    assert!(!schedule.done());
    schedule.cleared(1, 9.0);
    assert!(schedule.done());
    // Clearing a cleared fault again keeps the first time.
    schedule.cleared(1, 12.0);
    assert_eq!(schedule.state(1), FaultState::Cleared { at: 9.0 });
}

#[test]
fn a_fault_that_failed_to_inject_is_done() {
    let mut schedule = schedule_of(
        "[[faults]]\nat_secs = 0\npoint = \"relay.publish\"\neffect = \"error\"\ncount = 1\n",
    );
    assert_eq!(schedule.due(0.0).inject, vec![0]);
    schedule.failed(0);
    assert!(schedule.done());
    assert_eq!(schedule.due(1.0), Due::default());
    // A fault that never ran cannot be cleared.
    schedule.cleared(0, 2.0);
    assert_eq!(schedule.state(0), FaultState::Failed);
}

#[test]
fn a_stopped_run_skips_the_faults_still_waiting() {
    let mut schedule = schedule_of(
        "[[faults]]\nat_secs = 1\npoint = \"relay.publish\"\neffect = \"error\"\ncount = 1\n\
         [[faults]]\nat_secs = 9\npoint = \"relay.publish\"\neffect = \"error\"\ncount = 1\n",
    );
    schedule.injected(0, 1, 1.0);
    schedule.skip_waiting();
    assert_eq!(schedule.state(1), FaultState::Skipped);
    assert_eq!(schedule.due(10.0), Due::default());
    assert!(!schedule.done());
    schedule.cleared(0, 2.0);
    assert!(schedule.done());
}

#[test]
fn budgets_consider_all_objectives_or_the_named_ones() {
    let all = Budget::default();
    assert!(all.considers("command-latency"));
    let some = Budget {
        min_remaining: 0.5,
        objectives: vec!["command-availability".into()],
    };
    assert!(some.considers("command-availability"));
    assert!(!some.considers("command-latency"));
}
