//! Given / when / then specifications of the account aggregate, and the pinned format
//! of its events. No storage: every test folds events into a state and decides.

use super::*;

/// Given these past events, when this command is decided, then exactly this happens.
/// Accepted events are folded in too, so `evolve` runs over every event `decide` makes.
fn check(given: Vec<Event>, when: Command, then: Result<Vec<Event>, Error>) {
    let state = fold(&given);
    let decided = state.decide(&when);
    assert_eq!(decided, then, "given {given:#?}\nwhen {when:#?}");
    if let Ok(events) = decided {
        fold_onto(state, &events);
    }
}

fn fold(events: &[Event]) -> Account {
    fold_onto(Account::default(), events)
}

fn fold_onto(state: Account, events: &[Event]) -> Account {
    events.iter().fold(state, Account::evolve)
}

fn opened() -> Event {
    Event::AccountOpened {
        customer_id: "alice".into(),
    }
}

fn deposited(amount: u64) -> Event {
    Event::Deposited { amount }
}

fn charged(order_id: &str, amount: u64) -> Event {
    Event::Charged {
        order_id: order_id.into(),
        amount,
    }
}

fn refunded(order_id: &str, amount: u64) -> Event {
    Event::Refunded {
        order_id: order_id.into(),
        amount,
    }
}

fn open(customer_id: &str) -> Command {
    Command::OpenAccount {
        customer_id: customer_id.into(),
    }
}

fn charge(order_id: &str, amount: u64) -> Command {
    Command::Charge {
        order_id: order_id.into(),
        amount,
    }
}

fn refund(order_id: &str, amount: u64) -> Command {
    Command::Refund {
        order_id: order_id.into(),
        amount,
    }
}

// OpenAccount

#[test]
fn an_account_is_opened() {
    check(vec![], open("alice"), Ok(vec![opened()]));
}

#[test]
fn an_account_is_opened_only_once() {
    check(
        vec![opened()],
        open("alice"),
        Err(Error::AlreadyOpen {
            customer_id: "alice".into(),
        }),
    );
}

#[test]
fn a_blank_customer_is_refused() {
    check(vec![], open(" \t"), Err(Error::BlankCustomerId));
}

// Deposit

#[test]
fn a_deposit_adds_to_the_balance() {
    check(
        vec![opened(), deposited(100)],
        Command::Deposit { amount: 250 },
        Ok(vec![deposited(250)]),
    );
}

#[test]
fn depositing_without_an_account_is_refused() {
    check(
        vec![],
        Command::Deposit { amount: 250 },
        Err(Error::NoAccount),
    );
}

#[test]
fn depositing_zero_is_refused() {
    check(
        vec![opened()],
        Command::Deposit { amount: 0 },
        Err(Error::ZeroAmount),
    );
}

#[test]
fn depositing_past_the_counter_is_refused() {
    check(
        vec![opened(), deposited(u64::MAX)],
        Command::Deposit { amount: 1 },
        Err(Error::BalanceOverflow {
            amount: 1,
            balance: u64::MAX,
        }),
    );
}

// Charge

#[test]
fn an_order_is_charged_from_the_balance() {
    check(
        vec![opened(), deposited(500)],
        charge("o-1", 120),
        Ok(vec![charged("o-1", 120)]),
    );
}

#[test]
fn the_whole_balance_can_be_charged() {
    check(
        vec![opened(), deposited(500), charged("o-1", 120)],
        charge("o-2", 380),
        Ok(vec![charged("o-2", 380)]),
    );
}

#[test]
fn charging_without_an_account_is_refused() {
    check(vec![], charge("o-1", 120), Err(Error::NoAccount));
}

#[test]
fn charging_for_a_blank_order_is_refused() {
    check(
        vec![opened(), deposited(500)],
        charge("", 120),
        Err(Error::BlankOrderId),
    );
}

#[test]
fn charging_zero_is_refused() {
    check(
        vec![opened(), deposited(500)],
        charge("o-1", 0),
        Err(Error::ZeroAmount),
    );
}

#[test]
fn charging_more_than_the_balance_is_refused() {
    check(
        vec![opened(), deposited(500), charged("o-1", 120)],
        charge("o-2", 381),
        Err(Error::InsufficientFunds {
            requested: 381,
            balance: 380,
        }),
    );
}

/// A charge happens once per order: the store records it under an id derived from
/// the account and the order (tested with a real store in the `repositories` crate).
#[test]
fn charges_and_refunds_are_once_per_order() {
    assert_eq!(
        Account::once_key(&charge("o-1", 120)).as_deref(),
        Some("charge:o-1")
    );
    assert_eq!(
        Account::once_key(&refund("o-1", 120)).as_deref(),
        Some("refund:o-1")
    );
    assert_eq!(Account::once_key(&open("alice")), None);
    assert_eq!(Account::once_key(&Command::Deposit { amount: 1 }), None);
}

// Refund

#[test]
fn a_refund_gives_the_charge_back() {
    check(
        vec![opened(), deposited(500), charged("o-1", 120)],
        refund("o-1", 120),
        Ok(vec![refunded("o-1", 120)]),
    );
}

#[test]
fn refunding_without_an_account_is_refused() {
    check(vec![], refund("o-1", 120), Err(Error::NoAccount));
}

#[test]
fn refunding_for_a_blank_order_is_refused() {
    check(vec![opened()], refund(" ", 120), Err(Error::BlankOrderId));
}

#[test]
fn refunding_nothing_is_refused() {
    check(vec![opened()], refund("o-1", 0), Err(Error::ZeroAmount));
}

#[test]
fn refunding_past_the_counter_is_refused() {
    check(
        vec![
            opened(),
            deposited(500),
            charged("o-1", 500),
            deposited(u64::MAX),
        ],
        refund("o-1", 500),
        Err(Error::BalanceOverflow {
            amount: 500,
            balance: u64::MAX,
        }),
    );
}

// State

#[test]
fn the_state_keeps_the_balance_and_the_view_every_charge() {
    let events = [
        opened(),
        deposited(500),
        charged("o-1", 120),
        charged("o-2", 80),
        refunded("o-1", 120),
    ];
    let account = fold(&events);
    assert!(account.is_open());
    assert_eq!(account.customer_id(), "alice");
    assert_eq!(account.balance(), 420);
    let charges = Charges::of(&events);
    assert_eq!(
        charges.0.get("o-1"),
        Some(&Charge {
            amount: 120,
            refunded: true
        })
    );
    assert_eq!(
        charges.0.get("o-2"),
        Some(&Charge {
            amount: 80,
            refunded: false
        })
    );
    assert_eq!(charges.0.get("o-3"), None);
    assert_eq!(charges.0.len(), 2);
}

/// The state is the same size however many orders were paid for: what a command loads
/// does not grow with the account's history.
#[test]
fn the_state_does_not_grow_with_the_orders_paid_for() {
    let mut events = vec![opened(), deposited(1_000_000)];
    let size_after = |events: &[Event]| postcard::to_allocvec(&fold(events)).unwrap().len();
    let before = size_after(&events);
    for order in 0..1_000 {
        events.push(charged(&format!("order-{order}"), 7));
        if order % 3 == 0 {
            events.push(refunded(&format!("order-{order}"), 7));
        }
    }
    assert_eq!(size_after(&events), before);
}

#[test]
fn an_unopened_account_is_empty() {
    let account = Account::default();
    assert!(!account.is_open());
    assert_eq!(account.balance(), 0);
}

// Stored format

fn one_of_each() -> Vec<Event> {
    vec![
        opened(),
        deposited(500),
        charged("o-1", 120),
        refunded("o-1", 120),
    ]
}

/// The postcard bytes of schema version 1. If this fails, the stored format changed:
/// old logs would no longer decode. Add a variant or a schema version instead.
#[test]
fn the_stored_format_is_pinned() {
    let golden: [&[u8]; 4] = [
        b"\x00\x05alice",
        b"\x01\xf4\x03",
        b"\x02\x03o-1\x78",
        b"\x03\x03o-1\x78",
    ];
    for (event, bytes) in one_of_each().iter().zip(golden) {
        assert_eq!(
            postcard::to_allocvec(event).unwrap(),
            bytes,
            "encoding {event:?}"
        );
        assert_eq!(&Account::decode_event(1, bytes).unwrap(), event);
    }
}

#[test]
fn events_and_state_round_trip() {
    for event in one_of_each() {
        let bytes = postcard::to_allocvec(&event).unwrap();
        assert_eq!(
            Account::decode_event(Account::EVENT_SCHEMA_VERSION, &bytes).unwrap(),
            event
        );
    }
    let account = fold(&one_of_each());
    let bytes = postcard::to_allocvec(&account).unwrap();
    assert_eq!(postcard::from_bytes::<Account>(&bytes).unwrap(), account);
}

#[test]
fn event_types_name_the_variants() {
    for event in one_of_each() {
        let json = serde_json::to_value(&event).unwrap();
        let tag = json.as_object().unwrap().keys().next().unwrap().clone();
        assert_eq!(Account::event_type(&event), tag);
    }
}

#[test]
fn stored_events_display_as_json() {
    let bytes = postcard::to_allocvec(&charged("o-1", 120)).unwrap();
    assert_eq!(
        event_to_json(1, &bytes).unwrap(),
        serde_json::json!({"order_id": "o-1", "amount": 120})
    );
    assert!(matches!(
        event_to_json(1, &[0x09]),
        Err(eventstore::Error::Codec { .. })
    ));
}
