//! Given / when / then specifications of the stock aggregate, and the pinned format of
//! its events. No storage: every test folds events into a state and decides.

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

fn fold(events: &[Event]) -> Stock {
    fold_onto(Stock::default(), events)
}

fn fold_onto(state: Stock, events: &[Event]) -> Stock {
    events.iter().fold(state, Stock::evolve)
}

fn registered() -> Event {
    Event::SkuRegistered {
        sku: "apple".into(),
        name: "Apple".into(),
        unit_price: 120,
    }
}

fn restocked(quantity: u64) -> Event {
    Event::Restocked { quantity }
}

fn reserved(order_id: &str, quantity: u64) -> Event {
    Event::StockReserved {
        order_id: order_id.into(),
        quantity,
        unit_price: 120,
    }
}

fn released(order_id: &str, quantity: u64) -> Event {
    Event::StockReleased {
        order_id: order_id.into(),
        quantity,
    }
}

fn confirmed(order_id: &str, quantity: u64) -> Event {
    Event::ReservationConfirmed {
        order_id: order_id.into(),
        quantity,
    }
}

fn register(sku: &str, name: &str, unit_price: u64) -> Command {
    Command::RegisterSku {
        sku: sku.into(),
        name: name.into(),
        unit_price,
    }
}

fn reserve(order_id: &str, quantity: u64) -> Command {
    Command::Reserve {
        order_id: order_id.into(),
        quantity,
    }
}

fn release(order_id: &str) -> Command {
    Command::Release {
        order_id: order_id.into(),
    }
}

fn confirm(order_id: &str) -> Command {
    Command::ConfirmReservation {
        order_id: order_id.into(),
    }
}

// RegisterSku

#[test]
fn a_new_sku_is_registered() {
    check(
        vec![],
        register("apple", "Apple", 120),
        Ok(vec![registered()]),
    );
}

#[test]
fn a_sku_is_registered_only_once() {
    check(
        vec![registered()],
        register("apple", "Green apple", 90),
        Err(Error::AlreadyRegistered {
            sku: "apple".into(),
        }),
    );
}

#[test]
fn a_blank_sku_is_refused() {
    check(vec![], register(" ", "Apple", 120), Err(Error::BlankSku));
}

#[test]
fn a_blank_name_is_refused() {
    check(vec![], register("apple", "", 120), Err(Error::BlankName));
}

#[test]
fn a_zero_price_is_refused() {
    check(vec![], register("apple", "Apple", 0), Err(Error::ZeroPrice));
}

// Restock

#[test]
fn restocking_adds_to_the_stock_on_hand() {
    check(
        vec![registered(), restocked(5)],
        Command::Restock { quantity: 7 },
        Ok(vec![restocked(7)]),
    );
}

#[test]
fn restocking_an_unknown_sku_is_refused() {
    check(
        vec![],
        Command::Restock { quantity: 7 },
        Err(Error::UnknownSku),
    );
}

#[test]
fn restocking_zero_is_refused() {
    check(
        vec![registered()],
        Command::Restock { quantity: 0 },
        Err(Error::ZeroQuantity),
    );
}

#[test]
fn restocking_past_the_counter_is_refused() {
    check(
        vec![registered(), restocked(u64::MAX - 1)],
        Command::Restock { quantity: 2 },
        Err(Error::StockOverflow {
            quantity: 2,
            on_hand: u64::MAX - 1,
        }),
    );
}

// Reserve

#[test]
fn available_stock_is_reserved_at_the_current_price() {
    check(
        vec![registered(), restocked(10)],
        reserve("o-1", 4),
        Ok(vec![reserved("o-1", 4)]),
    );
}

#[test]
fn everything_available_can_be_reserved() {
    check(
        vec![registered(), restocked(10), reserved("o-1", 4)],
        reserve("o-2", 6),
        Ok(vec![reserved("o-2", 6)]),
    );
}

#[test]
fn reserving_an_unknown_sku_is_refused() {
    check(vec![], reserve("o-1", 1), Err(Error::UnknownSku));
}

#[test]
fn reserving_for_a_blank_order_is_refused() {
    check(
        vec![registered(), restocked(10)],
        reserve("", 1),
        Err(Error::BlankOrderId),
    );
}

#[test]
fn reserving_zero_is_refused() {
    check(
        vec![registered(), restocked(10)],
        reserve("o-1", 0),
        Err(Error::ZeroQuantity),
    );
}

#[test]
fn reserving_more_than_is_available_is_refused() {
    check(
        vec![registered(), restocked(10), reserved("o-1", 4)],
        reserve("o-2", 7),
        Err(Error::InsufficientStock {
            requested: 7,
            available: 6,
        }),
    );
}

#[test]
fn reserving_with_no_stock_is_refused() {
    check(
        vec![registered()],
        reserve("o-1", 1),
        Err(Error::InsufficientStock {
            requested: 1,
            available: 0,
        }),
    );
}

#[test]
fn reserving_twice_for_one_order_is_refused() {
    check(
        vec![registered(), restocked(10), reserved("o-1", 4)],
        reserve("o-1", 4),
        Err(Error::AlreadyReserved {
            order_id: "o-1".into(),
            quantity: 4,
        }),
    );
}

#[test]
fn an_order_may_reserve_again_after_its_reservation_was_released() {
    check(
        vec![
            registered(),
            restocked(10),
            reserved("o-1", 4),
            released("o-1", 4),
        ],
        reserve("o-1", 10),
        Ok(vec![reserved("o-1", 10)]),
    );
}

#[test]
fn a_reservation_carries_the_unit_price_of_the_sku() {
    let priced_at_99 = Event::SkuRegistered {
        sku: "apple".into(),
        name: "Apple".into(),
        unit_price: 99,
    };
    check(
        vec![priced_at_99, restocked(1)],
        reserve("o-1", 1),
        Ok(vec![Event::StockReserved {
            order_id: "o-1".into(),
            quantity: 1,
            unit_price: 99,
        }]),
    );
}

// Release

#[test]
fn releasing_gives_the_whole_reservation_back() {
    check(
        vec![registered(), restocked(10), reserved("o-1", 4)],
        release("o-1"),
        Ok(vec![released("o-1", 4)]),
    );
}

#[test]
fn releasing_on_an_unknown_sku_is_refused() {
    check(vec![], release("o-1"), Err(Error::UnknownSku));
}

#[test]
fn releasing_for_a_blank_order_is_refused() {
    check(vec![registered()], release(" "), Err(Error::BlankOrderId));
}

#[test]
fn releasing_an_unknown_reservation_is_refused() {
    check(
        vec![registered(), restocked(10), reserved("o-1", 4)],
        release("o-2"),
        Err(Error::NoReservation {
            order_id: "o-2".into(),
        }),
    );
}

#[test]
fn releasing_twice_is_refused() {
    check(
        vec![
            registered(),
            restocked(10),
            reserved("o-1", 4),
            released("o-1", 4),
        ],
        release("o-1"),
        Err(Error::NoReservation {
            order_id: "o-1".into(),
        }),
    );
}

#[test]
fn releasing_a_confirmed_reservation_is_refused() {
    check(
        vec![
            registered(),
            restocked(10),
            reserved("o-1", 4),
            confirmed("o-1", 4),
        ],
        release("o-1"),
        Err(Error::NoReservation {
            order_id: "o-1".into(),
        }),
    );
}

// ConfirmReservation

#[test]
fn confirming_takes_the_reservation_out_of_stock() {
    check(
        vec![registered(), restocked(10), reserved("o-1", 4)],
        confirm("o-1"),
        Ok(vec![confirmed("o-1", 4)]),
    );
}

#[test]
fn confirming_on_an_unknown_sku_is_refused() {
    check(vec![], confirm("o-1"), Err(Error::UnknownSku));
}

#[test]
fn confirming_for_a_blank_order_is_refused() {
    check(vec![registered()], confirm(""), Err(Error::BlankOrderId));
}

#[test]
fn confirming_an_unknown_reservation_is_refused() {
    check(
        vec![registered(), restocked(10)],
        confirm("o-1"),
        Err(Error::NoReservation {
            order_id: "o-1".into(),
        }),
    );
}

#[test]
fn confirming_a_released_reservation_is_refused() {
    check(
        vec![
            registered(),
            restocked(10),
            reserved("o-1", 4),
            released("o-1", 4),
        ],
        confirm("o-1"),
        Err(Error::NoReservation {
            order_id: "o-1".into(),
        }),
    );
}

#[test]
fn confirming_twice_is_refused() {
    check(
        vec![
            registered(),
            restocked(10),
            reserved("o-1", 4),
            confirmed("o-1", 4),
        ],
        confirm("o-1"),
        Err(Error::NoReservation {
            order_id: "o-1".into(),
        }),
    );
}

// State

#[test]
fn the_state_counts_on_hand_reserved_and_available() {
    let stock = fold(&[
        registered(),
        restocked(10),
        reserved("o-1", 4),
        reserved("o-2", 3),
        reserved("o-3", 1),
        released("o-2", 3),
        confirmed("o-1", 4),
    ]);
    assert!(stock.is_registered());
    assert_eq!(stock.sku(), "apple");
    assert_eq!(stock.name(), "Apple");
    assert_eq!(stock.unit_price(), 120);
    assert_eq!(stock.on_hand(), 6);
    assert_eq!(stock.reserved(), 1);
    assert_eq!(stock.available(), 5);
    assert_eq!(
        stock.reservation("o-3"),
        Some(Reservation {
            quantity: 1,
            unit_price: 120
        })
    );
    assert_eq!(stock.reservation("o-1"), None);
    assert_eq!(stock.reservations().keys().collect::<Vec<_>>(), vec!["o-3"]);
}

#[test]
fn an_unregistered_sku_is_empty() {
    let stock = Stock::default();
    assert!(!stock.is_registered());
    assert_eq!(stock.available(), 0);
    assert!(stock.reservations().is_empty());
}

// Stored format

fn one_of_each() -> Vec<Event> {
    vec![
        registered(),
        restocked(300),
        reserved("o-1", 2),
        released("o-1", 2),
        confirmed("o-1", 2),
    ]
}

/// The postcard bytes of schema version 1. If this fails, the stored format changed:
/// old logs would no longer decode. Add a variant or a schema version instead.
#[test]
fn the_stored_format_is_pinned() {
    let golden: [&[u8]; 5] = [
        b"\x00\x05apple\x05Apple\x78",
        b"\x01\xac\x02",
        b"\x02\x03o-1\x02\x78",
        b"\x03\x03o-1\x02",
        b"\x04\x03o-1\x02",
    ];
    for (event, bytes) in one_of_each().iter().zip(golden) {
        assert_eq!(
            postcard::to_allocvec(event).unwrap(),
            bytes,
            "encoding {event:?}"
        );
        assert_eq!(&Stock::decode_event(1, bytes).unwrap(), event);
    }
}

#[test]
fn events_and_state_round_trip() {
    for event in one_of_each() {
        let bytes = postcard::to_allocvec(&event).unwrap();
        assert_eq!(
            Stock::decode_event(Stock::EVENT_SCHEMA_VERSION, &bytes).unwrap(),
            event
        );
    }
    let stock = fold(&[registered(), restocked(10), reserved("o-1", 4)]);
    let bytes = postcard::to_allocvec(&stock).unwrap();
    assert_eq!(postcard::from_bytes::<Stock>(&bytes).unwrap(), stock);
}

#[test]
fn event_types_name_the_variants() {
    for event in one_of_each() {
        let json = serde_json::to_value(&event).unwrap();
        let tag = json.as_object().unwrap().keys().next().unwrap().clone();
        assert_eq!(Stock::event_type(&event), tag);
    }
}

#[test]
fn stored_events_display_as_json() {
    let bytes = postcard::to_allocvec(&reserved("o-1", 2)).unwrap();
    assert_eq!(
        event_to_json(1, &bytes).unwrap(),
        serde_json::json!({"order_id": "o-1", "quantity": 2, "unit_price": 120})
    );
    assert!(matches!(
        event_to_json(1, &[0x09]),
        Err(eventstore::Error::Codec { .. })
    ));
}
