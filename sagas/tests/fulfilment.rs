//! Given/when/then on the pure fulfilment saga: every path, including compensation
//! after partial success and a deadline passing while the charge is pending.

use chrono::{DateTime, Utc};
use orders::OrderLine;
use sagas::fulfilment::{Command, Fulfilment, Input, Outcome, Phase};
use sagas::saga::Answers;
use sagas::{Instance, Saga, Step};

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::UNIX_EPOCH + chrono::Duration::seconds(seconds)
}

fn started(lines: &[(&str, u64)]) -> Input {
    Input::Started {
        order_id: "o-1".into(),
        customer_id: "c-1".into(),
        lines: lines
            .iter()
            .map(|(sku, quantity)| OrderLine {
                sku: (*sku).into(),
                quantity: *quantity,
            })
            .collect(),
        deadline: at(30),
        correlation_id: None,
    }
}

fn reserved(sku: &str, quantity: u64, unit_price: u64) -> Input {
    Input::Answered {
        key: format!("reserve:{sku}"),
        outcome: Outcome::Reserved {
            quantity,
            unit_price,
        },
    }
}

fn done(key: &str) -> Input {
    Input::Answered {
        key: key.into(),
        outcome: Outcome::Done,
    }
}

fn refused(key: &str, reason: &str) -> Input {
    Input::Answered {
        key: key.into(),
        outcome: Outcome::Rejected {
            reason: reason.into(),
        },
    }
}

fn deadline() -> Input {
    Input::DeadlinePassed {
        key: "fulfilment".into(),
    }
}

fn cancel(reason: &str) -> Input {
    Input::CancelRequested {
        reason: reason.into(),
    }
}

/// The state after `inputs`.
fn given(inputs: &[Input]) -> Fulfilment {
    inputs.iter().fold(Fulfilment::default(), |state, input| {
        state.handle(input).state
    })
}

fn commands(step: &Step<Fulfilment>) -> Vec<Command> {
    step.commands.iter().map(|c| c.command.clone()).collect()
}

fn release(sku: &str) -> Command {
    Command::Release { sku: sku.into() }
}

fn cancel_order(reason: &str) -> Command {
    Command::CancelOrder {
        reason: reason.into(),
    }
}

#[test]
fn an_order_placed_reserves_every_line_and_arms_the_deadline() {
    let step = Fulfilment::default().handle(&started(&[("apple", 2), ("pear", 1)]));
    assert_eq!(
        commands(&step),
        vec![
            Command::Reserve {
                sku: "apple".into(),
                quantity: 2
            },
            Command::Reserve {
                sku: "pear".into(),
                quantity: 1
            },
        ]
    );
    assert_eq!(step.deadlines.len(), 1);
    assert_eq!(step.deadlines[0].at, at(30));
    assert_eq!(step.state.phase, Phase::Reserving);
}

#[test]
fn the_happy_path_charges_the_total_of_the_reservations_and_confirms() {
    let state = given(&[
        started(&[("apple", 2), ("pear", 1)]),
        reserved("apple", 2, 120),
    ]);
    assert_eq!(state.phase, Phase::Reserving, "one line is still pending");

    let step = state.handle(&reserved("pear", 1, 75));
    assert_eq!(commands(&step), vec![Command::Charge { amount: 315 }]);
    assert_eq!(step.state.phase, Phase::Charging);

    let step = step.state.handle(&done("charge"));
    assert_eq!(commands(&step), vec![Command::ConfirmOrder { total: 315 }]);
    assert_eq!(step.state.phase, Phase::Confirming);
    assert_eq!(step.state.deadline, None, "the deadline no longer applies");

    let step = step.state.handle(&done("confirm-order"));
    assert_eq!(
        commands(&step),
        vec![
            Command::ConfirmReservation {
                sku: "apple".into()
            },
            Command::ConfirmReservation { sku: "pear".into() },
        ]
    );
    assert_eq!(step.state.phase, Phase::Finalising);
    let state = step.state.handle(&done("confirm-reservation:apple")).state;
    assert!(!state.is_finished());
    let state = state.handle(&done("confirm-reservation:pear")).state;
    assert_eq!(state.phase, Phase::Confirmed);
    assert!(state.is_finished());
}

#[test]
fn insufficient_stock_after_a_partial_reservation_releases_it_and_cancels() {
    let state = given(&[
        started(&[("apple", 2), ("pear", 9)]),
        reserved("apple", 2, 120),
    ]);
    let step = state.handle(&refused(
        "reserve:pear",
        "insufficient stock: 9 requested, 3 available",
    ));
    let reason = "sku pear: insufficient stock: 9 requested, 3 available";
    assert_eq!(
        commands(&step),
        vec![release("apple"), cancel_order(reason)]
    );
    assert_eq!(step.state.phase, Phase::Compensating);
    assert_eq!(step.state.cancel_reason.as_deref(), Some(reason));
    let state = step.state.handle(&done("release:apple")).state;
    assert_eq!(state.phase, Phase::Compensating);
    let state = state.handle(&done("cancel-order")).state;
    assert_eq!(state.phase, Phase::Cancelled);
    assert!(state.reserved.is_empty());
}

#[test]
fn an_unknown_sku_cancels_and_a_late_reservation_is_released() {
    let state = given(&[started(&[("ghost", 1), ("apple", 1)])]);
    let step = state.handle(&refused("reserve:ghost", "the sku is not registered"));
    assert_eq!(
        commands(&step),
        vec![cancel_order("sku ghost: the sku is not registered")]
    );
    // The other line's reservation succeeds after the decision: it is given back.
    let step = step.state.handle(&reserved("apple", 1, 120));
    assert_eq!(commands(&step), vec![release("apple")]);
    let state = given(&[])
        .handle(&started(&[("ghost", 1), ("apple", 1)]))
        .state;
    let state = [
        refused("reserve:ghost", "the sku is not registered"),
        reserved("apple", 1, 120),
        done("cancel-order"),
        done("release:apple"),
    ]
    .iter()
    .fold(state, |state, input| state.handle(input).state);
    assert_eq!(state.phase, Phase::Cancelled);
}

#[test]
fn insufficient_funds_releases_everything_and_cancels() {
    let state = given(&[
        started(&[("apple", 2), ("pear", 1)]),
        reserved("apple", 2, 120),
        reserved("pear", 1, 75),
    ]);
    let step = state.handle(&refused(
        "charge",
        "insufficient funds: 315 requested, 100 available",
    ));
    let reason = "payment refused: insufficient funds: 315 requested, 100 available";
    assert_eq!(
        commands(&step),
        vec![release("apple"), release("pear"), cancel_order(reason)]
    );
    assert_eq!(step.state.charged, None, "nothing to refund");
}

#[test]
fn no_account_is_a_payment_refusal() {
    let state = given(&[started(&[("apple", 1)]), reserved("apple", 1, 120)]);
    let step = state.handle(&refused("charge", "the account is not open"));
    assert_eq!(
        commands(&step),
        vec![
            release("apple"),
            cancel_order("payment refused: the account is not open")
        ]
    );
}

#[test]
fn a_customer_cancel_while_reserving_releases_without_cancelling_again() {
    let state = given(&[
        started(&[("apple", 2), ("pear", 1)]),
        reserved("apple", 2, 120),
    ]);
    let step = state.handle(&cancel("changed my mind"));
    assert_eq!(commands(&step), vec![release("apple")]);
    assert_eq!(
        step.state.cancel_reason.as_deref(),
        Some("cancelled by the customer: changed my mind")
    );
    // The pear reservation was in flight: it succeeds, and is released too.
    let step = step.state.handle(&reserved("pear", 1, 75));
    assert_eq!(commands(&step), vec![release("pear")]);
    let state = [done("release:apple"), done("release:pear")]
        .iter()
        .fold(step.state, |state, input| state.handle(input).state);
    assert_eq!(state.phase, Phase::Cancelled);
}

#[test]
fn a_customer_cancel_with_nothing_in_flight_ends_the_saga_at_once() {
    let state = given(&[
        started(&[("apple", 1)]),
        refused(
            "reserve:apple",
            "insufficient stock: 1 requested, 0 available",
        ),
    ]);
    // Compensating already: the customer's cancel changes nothing.
    let step = state.clone().handle(&cancel("too slow"));
    assert!(step.commands.is_empty());
    assert_eq!(step.state, state);
}

#[test]
fn the_deadline_during_a_pending_charge_compensates_and_refunds_a_late_charge() {
    let state = given(&[started(&[("apple", 2)]), reserved("apple", 2, 120)]);
    assert_eq!(state.phase, Phase::Charging);
    let step = state.handle(&deadline());
    let reason = "the order was not fulfilled before its deadline";
    assert_eq!(
        commands(&step),
        vec![release("apple"), cancel_order(reason)]
    );
    assert_eq!(step.state.phase, Phase::Compensating);
    // The charge was in flight and went through: it is refunded.
    let step = step.state.handle(&done("charge"));
    assert_eq!(commands(&step), vec![Command::Refund]);
    assert_eq!(step.state.charged, Some(240));
    let state = [done("release:apple"), done("cancel-order"), done("refund")]
        .iter()
        .fold(step.state, |state, input| state.handle(input).state);
    assert_eq!(state.phase, Phase::Cancelled);
    assert_eq!(state.charged, None);
}

#[test]
fn the_deadline_during_a_pending_charge_that_is_refused_needs_no_refund() {
    let state = given(&[
        started(&[("apple", 2)]),
        reserved("apple", 2, 120),
        deadline(),
    ]);
    let step = state.handle(&refused("charge", "insufficient funds"));
    assert!(step.commands.is_empty());
    assert_eq!(step.state.charged, None);
}

#[test]
fn the_deadline_after_the_charge_is_ignored() {
    let state = given(&[
        started(&[("apple", 2)]),
        reserved("apple", 2, 120),
        done("charge"),
    ]);
    assert_eq!(state.phase, Phase::Confirming);
    let step = state.clone().handle(&deadline());
    assert!(step.commands.is_empty());
    assert_eq!(step.state, state);
}

#[test]
fn a_confirmation_refused_after_a_customer_cancel_refunds_and_releases() {
    let state = given(&[
        started(&[("apple", 2)]),
        reserved("apple", 2, 120),
        done("charge"),
        cancel("found it cheaper"),
    ]);
    assert_eq!(state.phase, Phase::Confirming, "the order decides");
    let step = state.handle(&refused(
        "confirm-order",
        "the order is cancelled, not pending",
    ));
    assert_eq!(commands(&step), vec![release("apple"), Command::Refund]);
    assert_eq!(
        step.state.cancel_reason.as_deref(),
        Some("cancelled by the customer: found it cheaper")
    );
}

#[test]
fn an_answer_given_twice_is_taken_once() {
    let state = given(&[
        started(&[("apple", 2), ("pear", 1)]),
        reserved("apple", 2, 120),
    ]);
    let step = state.clone().handle(&reserved("apple", 2, 120));
    assert!(step.commands.is_empty());
    assert_eq!(step.state, state);
}

#[test]
fn a_replayed_instance_knows_what_it_still_waits_for() {
    let inputs = [
        started(&[("apple", 2), ("pear", 1)]),
        reserved("apple", 2, 120),
    ];
    let instance = Instance::<Fulfilment>::replay(
        "o-1",
        inputs
            .iter()
            .enumerate()
            .map(|(i, input)| (eventstore::Version(i as u64), input)),
    );
    assert_eq!(
        instance.outstanding.keys().collect::<Vec<_>>(),
        vec!["reserve:pear"]
    );
    assert_eq!(
        instance
            .deadlines
            .values()
            .map(|d| d.at)
            .collect::<Vec<_>>(),
        vec![at(30)]
    );
    assert_eq!(instance.version, Some(eventstore::Version(1)));
    assert!(!instance.is_done());
}

#[test]
fn every_input_has_its_own_key_and_answers_what_it_should() {
    let inputs = [
        started(&[("apple", 1)]),
        cancel("x"),
        reserved("apple", 1, 1),
        done("charge"),
        deadline(),
    ];
    let keys: std::collections::BTreeSet<_> = inputs.iter().map(Fulfilment::input_key).collect();
    assert_eq!(keys.len(), inputs.len());
    assert_eq!(
        Fulfilment::answers(&reserved("apple", 1, 1)),
        Answers::Command("reserve:apple")
    );
    assert_eq!(
        Fulfilment::answers(&deadline()),
        Answers::Deadline("fulfilment")
    );
    assert_eq!(Fulfilment::answers(&cancel("x")), Answers::Nothing);
}

/// Every kind of command, compensations included, names its own action: what its
/// events record as the cause.
#[test]
fn every_command_names_its_action() {
    let commands = [
        (
            Command::Reserve {
                sku: "apple".into(),
                quantity: 1,
            },
            "fulfilment.reserve",
        ),
        (release("apple"), "fulfilment.release"),
        (
            Command::ConfirmReservation {
                sku: "apple".into(),
            },
            "fulfilment.confirm-reservation",
        ),
        (Command::Charge { amount: 1 }, "fulfilment.charge"),
        (Command::Refund, "fulfilment.refund"),
        (
            Command::ConfirmOrder { total: 1 },
            "fulfilment.confirm-order",
        ),
        (cancel_order("x"), "fulfilment.cancel-order"),
    ];
    for (command, action) in commands {
        assert_eq!(command.action(), action, "{command:?}");
    }
}

#[test]
fn the_recorded_input_format_is_stable() {
    // postcard is not self-describing: these bytes are the stored format.
    let bytes = postcard::to_allocvec(&reserved("apple", 2, 120)).unwrap();
    assert_eq!(
        bytes,
        [
            2, 13, b'r', b'e', b's', b'e', b'r', b'v', b'e', b':', b'a', b'p', b'p', b'l', b'e', 0,
            2, 120
        ]
    );
}

#[test]
fn the_deadline_is_disarmed_once_the_charge_went_through() {
    let inputs = [
        started(&[("apple", 2)]),
        reserved("apple", 2, 120),
        done("charge"),
    ];
    let instance = Instance::<Fulfilment>::replay(
        "o-1",
        inputs
            .iter()
            .enumerate()
            .map(|(i, input)| (eventstore::Version(i as u64), input)),
    );
    assert!(instance.deadlines.is_empty(), "{:?}", instance.deadlines);
    assert!(instance.is_stale_deadline(&deadline()));
    // While charging, it is armed.
    let instance = Instance::<Fulfilment>::replay(
        "o-1",
        inputs[..2]
            .iter()
            .enumerate()
            .map(|(i, input)| (eventstore::Version(i as u64), input)),
    );
    assert!(!instance.is_stale_deadline(&deadline()));
}

#[test]
fn phase_names_are_the_json_names_and_the_saga_lists_them_all() {
    for phase in Phase::ALL {
        assert_eq!(
            serde_json::to_value(phase).unwrap(),
            serde_json::Value::from(phase.name())
        );
    }
    let names: Vec<&str> = Phase::ALL.iter().map(|phase| phase.name()).collect();
    assert_eq!(Fulfilment::PHASES, names.as_slice());
    let state = Fulfilment::default();
    assert_eq!(state.phase(), "not_started");
}
