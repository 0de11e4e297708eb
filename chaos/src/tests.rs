use std::time::Duration;

use super::*;

fn spec(point: &str, effect: EffectKind) -> FaultSpec {
    FaultSpec {
        point: point.into(),
        effect,
        delay_ms: None,
        probability: 1.0,
        count: Some(2),
        duration_secs: None,
    }
}

#[test]
fn an_inert_handle_never_injects_and_refuses_faults() {
    let chaos = Chaos::inert();
    assert!(!chaos.is_enabled());
    assert_eq!(
        chaos.inject(&spec("store.fsync", EffectKind::Error)),
        Err(InvalidFault::Disabled)
    );
    for point in Point::ALL {
        assert_eq!(chaos.check(point), None);
    }
    assert!(chaos.faults().is_empty());
    assert_eq!(chaos.clear(), 0);
}

#[test]
fn a_counted_fault_fires_its_count_at_its_point_only_then_ends() {
    let chaos = Chaos::enabled();
    let fault = chaos
        .inject(&spec("store.fsync", EffectKind::Error))
        .unwrap();
    assert_eq!(fault.point, Point::StoreFsync);
    assert_eq!(chaos.check(Point::StoreWrite), None, "another point");
    assert_eq!(chaos.check(Point::StoreFsync), Some(Effect::Error));
    assert_eq!(chaos.faults()[0].injected, 1);
    assert_eq!(chaos.check(Point::StoreFsync), Some(Effect::Error));
    assert_eq!(chaos.check(Point::StoreFsync), None, "the count is used up");
    assert!(chaos.faults().is_empty());
    let fsync = chaos
        .points()
        .into_iter()
        .find(|report| report.point == Point::StoreFsync)
        .unwrap();
    assert_eq!(fsync.injections, 2);
}

#[test]
fn a_timed_fault_ends_when_its_duration_is_over() {
    let chaos = Chaos::enabled();
    let mut timed = spec("http.handler", EffectKind::Delay);
    timed.delay_ms = Some(5);
    timed.count = None;
    timed.duration_secs = Some(0.05);
    let fault = chaos.inject(&timed).unwrap();
    assert!(fault.expires_at.is_some());
    assert_eq!(
        chaos.check(Point::HttpHandler),
        Some(Effect::Delay(Duration::from_millis(5)))
    );
    std::thread::sleep(Duration::from_millis(60));
    assert_eq!(chaos.check(Point::HttpHandler), None);
    assert!(chaos.faults().is_empty());
}

#[test]
fn a_probability_injects_about_that_share() {
    let chaos = Chaos::enabled();
    let mut half = spec("saga.command", EffectKind::Error);
    half.probability = 0.5;
    half.count = None;
    half.duration_secs = Some(60.0);
    chaos.inject(&half).unwrap();
    let fired = (0..4000)
        .filter(|_| chaos.check(Point::SagaCommand).is_some())
        .count();
    assert!((1700..2300).contains(&fired), "{fired} of 4000");
}

#[test]
fn faults_are_removed_one_by_one_or_all_at_once() {
    let chaos = Chaos::enabled();
    let first = chaos
        .inject(&spec("relay.publish", EffectKind::LostAck))
        .unwrap();
    chaos
        .inject(&spec("projection.apply", EffectKind::Panic))
        .unwrap();
    assert!(chaos.remove(first.id));
    assert!(!chaos.remove(first.id), "already gone");
    assert_eq!(chaos.check(Point::RelayPublish), None);
    assert_eq!(chaos.clear(), 1);
    assert_eq!(chaos.check(Point::ProjectionApply), None);
}

#[test]
fn bad_faults_are_refused_with_the_reason() {
    let chaos = Chaos::enabled();
    let refuse = |spec: FaultSpec| chaos.inject(&spec).unwrap_err();
    assert!(matches!(
        refuse(spec("store.nothing", EffectKind::Error)),
        InvalidFault::UnknownPoint { .. }
    ));
    assert_eq!(
        refuse(spec("store.write", EffectKind::Delay)),
        InvalidFault::EffectNotAtPoint {
            point: Point::StoreWrite,
            effect: EffectKind::Delay
        }
    );
    let mut never = spec("store.write", EffectKind::Error);
    never.probability = 0.0;
    assert_eq!(refuse(never), InvalidFault::Probability(0.0));
    let mut endless = spec("store.write", EffectKind::Error);
    endless.count = None;
    assert_eq!(refuse(endless), InvalidFault::Endless);
    let mut zero = spec("store.write", EffectKind::Error);
    zero.count = Some(0);
    assert_eq!(refuse(zero), InvalidFault::ZeroCount);
    assert!(matches!(
        refuse(spec("store.fsync", EffectKind::Delay)),
        InvalidFault::Delay(_)
    ));
    let mut long = spec("store.fsync", EffectKind::Delay);
    long.delay_ms = Some(61_000);
    assert!(matches!(refuse(long), InvalidFault::Delay(_)));
    let mut forever = spec("store.fsync", EffectKind::Error);
    forever.duration_secs = Some(f64::INFINITY);
    assert!(matches!(refuse(forever), InvalidFault::Duration(_)));
    assert!(chaos.faults().is_empty(), "nothing refused was armed");
}

#[test]
fn a_spec_reads_from_the_json_the_api_takes() {
    let spec: FaultSpec = serde_json::from_str(
        r#"{"point": "store.fsync", "effect": "delay", "delay_ms": 20, "duration_secs": 5}"#,
    )
    .unwrap();
    assert_eq!(spec.probability, 1.0);
    assert_eq!(spec.effect, EffectKind::Delay);
    let status: FaultSpec = serde_json::from_str(
        r#"{"point": "http.handler", "effect": "status_500", "count": 1, "probability": 0.5}"#,
    )
    .unwrap();
    assert_eq!(status.effect, EffectKind::Status500);
    assert!(serde_json::from_str::<FaultSpec>(r#"{"point": "x", "effect": "melt"}"#).is_err());
    let fault = Chaos::enabled().inject(&status).unwrap();
    let json = serde_json::to_value(&fault).unwrap();
    assert_eq!(json["point"], "http.handler");
    assert_eq!(json["effect"], "status_500");
}
