//! Given / when / then specifications of the order aggregate, and the pinned format of
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

fn fold(events: &[Event]) -> Order {
    fold_onto(Order::default(), events)
}

fn fold_onto(state: Order, events: &[Event]) -> Order {
    events.iter().fold(state, Order::evolve)
}

fn line(sku: &str, quantity: u64) -> OrderLine {
    OrderLine {
        sku: sku.into(),
        quantity,
    }
}

fn two_lines() -> Vec<OrderLine> {
    vec![line("apple", 2), line("pear", 1)]
}

fn placed() -> Event {
    Event::OrderPlaced {
        order_id: "o-1".into(),
        customer_id: "alice".into(),
        lines: two_lines()
            .iter()
            .map(PlacedLine::in_default_currency)
            .collect(),
        shipping_address: None,
    }
}

/// A sealed shipping address. Made up bytes: the aggregate never opens it, it only
/// carries it from the command into the event.
fn sealed_address() -> privacy::Sealed {
    privacy::Sealed {
        key_id: privacy::KeyId(uuid::Uuid::from_u128(0xa11ce)),
        ciphertext: privacy::Ciphertext(vec![0xc1; 4]),
    }
}

/// [`placed`] with a shipping address.
fn placed_shipping(address: privacy::Sealed) -> Event {
    match placed() {
        Event::OrderPlaced {
            order_id,
            customer_id,
            lines,
            ..
        } => Event::OrderPlaced {
            order_id,
            customer_id,
            lines,
            shipping_address: Some(address),
        },
        _ => unreachable!(),
    }
}

/// [`placed`] as schema version 2 recorded it: no shipping address.
fn placed_v2() -> v2::Event {
    v2::Event::OrderPlaced {
        order_id: "o-1".into(),
        customer_id: "alice".into(),
        lines: two_lines()
            .iter()
            .map(PlacedLine::in_default_currency)
            .collect(),
    }
}

/// [`placed`] as schema version 1 recorded it: lines without a currency.
fn placed_v1() -> v1::Event {
    v1::Event::OrderPlaced {
        order_id: "o-1".into(),
        customer_id: "alice".into(),
        lines: two_lines(),
    }
}

fn confirmed(total: u64) -> Event {
    Event::OrderConfirmed { total }
}

fn cancelled(reason: &str) -> Event {
    Event::OrderCancelled {
        reason: reason.into(),
    }
}

fn place(order_id: &str, customer_id: &str, lines: Vec<OrderLine>) -> Command {
    Command::PlaceOrder {
        order_id: order_id.into(),
        customer_id: customer_id.into(),
        lines,
        shipping_address: None,
    }
}

fn place_shipping(address: privacy::Sealed) -> Command {
    Command::PlaceOrder {
        order_id: "o-1".into(),
        customer_id: "alice".into(),
        lines: two_lines(),
        shipping_address: Some(address),
    }
}

fn confirm(total: u64) -> Command {
    Command::ConfirmOrder { total }
}

fn cancel(reason: &str) -> Command {
    Command::CancelOrder {
        reason: reason.into(),
    }
}

// PlaceOrder

#[test]
fn an_order_is_placed() {
    check(
        vec![],
        place("o-1", "alice", two_lines()),
        Ok(vec![placed()]),
    );
}

#[test]
fn an_order_is_placed_with_its_sealed_shipping_address_as_given() {
    check(
        vec![],
        place_shipping(sealed_address()),
        Ok(vec![placed_shipping(sealed_address())]),
    );
}

#[test]
fn the_order_keeps_its_sealed_shipping_address_and_nothing_else_changes() {
    let with_address = fold(&[placed_shipping(sealed_address())]);
    assert_eq!(with_address.shipping_address(), Some(&sealed_address()));
    let without = fold(&[placed()]);
    assert_eq!(without.shipping_address(), None);
    assert_eq!(with_address.status(), without.status());
    assert_eq!(with_address.lines(), without.lines());
    assert_eq!(with_address.customer_id(), without.customer_id());
}

#[test]
fn the_shipping_address_is_the_declared_personal_field() {
    assert_eq!(
        PERSONAL_FIELDS,
        &[privacy::PersonalField {
            event_type: "OrderPlaced",
            field: "shipping_address",
        }]
    );
    // The declared field is in the event's JSON, as a sealed value.
    let json = serde_json::to_value(placed_shipping(sealed_address())).unwrap();
    let address = &json["OrderPlaced"]["shipping_address"];
    assert_eq!(
        privacy::sealed_key_id(address),
        Some(sealed_address().key_id)
    );
}

#[test]
fn an_order_is_placed_only_once() {
    check(
        vec![placed()],
        place("o-1", "alice", two_lines()),
        Err(Error::AlreadyPlaced {
            order_id: "o-1".into(),
        }),
    );
}

#[test]
fn a_settled_order_cannot_be_placed_again() {
    check(
        vec![placed(), cancelled("out of stock")],
        place("o-1", "alice", two_lines()),
        Err(Error::AlreadyPlaced {
            order_id: "o-1".into(),
        }),
    );
}

#[test]
fn a_blank_order_id_is_refused() {
    check(
        vec![],
        place(" ", "alice", two_lines()),
        Err(Error::BlankOrderId),
    );
}

#[test]
fn a_blank_customer_is_refused() {
    check(
        vec![],
        place("o-1", "", two_lines()),
        Err(Error::BlankCustomerId),
    );
}

#[test]
fn an_order_without_lines_is_refused() {
    check(vec![], place("o-1", "alice", vec![]), Err(Error::NoLines));
}

#[test]
fn a_line_with_a_blank_sku_is_refused() {
    check(
        vec![],
        place("o-1", "alice", vec![line("apple", 1), line("", 1)]),
        Err(Error::BlankSku { line: 1 }),
    );
}

#[test]
fn a_line_of_zero_units_is_refused() {
    check(
        vec![],
        place("o-1", "alice", vec![line("apple", 1), line("pear", 0)]),
        Err(Error::ZeroQuantity { sku: "pear".into() }),
    );
}

#[test]
fn two_lines_of_one_sku_are_refused() {
    check(
        vec![],
        place(
            "o-1",
            "alice",
            vec![line("apple", 1), line("pear", 1), line("apple", 2)],
        ),
        Err(Error::DuplicateSku {
            sku: "apple".into(),
        }),
    );
}

// ConfirmOrder

#[test]
fn a_pending_order_is_confirmed_with_its_total() {
    check(vec![placed()], confirm(360), Ok(vec![confirmed(360)]));
}

#[test]
fn confirming_an_order_never_placed_is_refused() {
    check(vec![], confirm(360), Err(Error::UnknownOrder));
}

#[test]
fn confirming_a_confirmed_order_is_refused() {
    check(
        vec![placed(), confirmed(360)],
        confirm(360),
        Err(Error::NotPending {
            status: OrderStatus::Confirmed,
        }),
    );
}

#[test]
fn confirming_a_cancelled_order_is_refused() {
    check(
        vec![placed(), cancelled("out of stock")],
        confirm(360),
        Err(Error::NotPending {
            status: OrderStatus::Cancelled,
        }),
    );
}

#[test]
fn confirming_a_total_of_zero_is_refused() {
    check(vec![placed()], confirm(0), Err(Error::ZeroTotal));
}

// CancelOrder

#[test]
fn a_pending_order_is_cancelled_with_a_reason() {
    check(
        vec![placed()],
        cancel("out of stock"),
        Ok(vec![cancelled("out of stock")]),
    );
}

#[test]
fn cancelling_an_order_never_placed_is_refused() {
    check(vec![], cancel("out of stock"), Err(Error::UnknownOrder));
}

#[test]
fn cancelling_a_confirmed_order_is_refused() {
    check(
        vec![placed(), confirmed(360)],
        cancel("changed my mind"),
        Err(Error::NotPending {
            status: OrderStatus::Confirmed,
        }),
    );
}

#[test]
fn cancelling_twice_is_refused() {
    check(
        vec![placed(), cancelled("out of stock")],
        cancel("out of stock"),
        Err(Error::NotPending {
            status: OrderStatus::Cancelled,
        }),
    );
}

#[test]
fn cancelling_without_a_reason_is_refused() {
    check(vec![placed()], cancel("  "), Err(Error::BlankReason));
}

// State

#[test]
fn the_state_follows_the_order_through_its_life() {
    let order = Order::default();
    assert_eq!(order.status(), OrderStatus::None);
    assert_eq!(order.order_id(), "");

    let order = fold_onto(order, &[placed()]);
    assert_eq!(order.status(), OrderStatus::Pending);
    assert_eq!(order.order_id(), "o-1");
    assert_eq!(order.customer_id(), "alice");
    assert_eq!(order.lines(), two_lines().as_slice());
    assert_eq!(order.total(), None);
    assert_eq!(order.cancel_reason(), None);

    let confirmed = fold_onto(order.clone(), &[confirmed(360)]);
    assert_eq!(confirmed.status(), OrderStatus::Confirmed);
    assert_eq!(confirmed.total(), Some(360));

    let cancelled = fold_onto(order, &[cancelled("out of stock")]);
    assert_eq!(cancelled.status(), OrderStatus::Cancelled);
    assert_eq!(cancelled.cancel_reason(), Some("out of stock"));
    assert_eq!(cancelled.total(), None);
}

#[test]
fn refusals_read_as_sentences() {
    assert_eq!(
        Error::NotPending {
            status: OrderStatus::Cancelled
        }
        .to_string(),
        "the order is cancelled, not pending"
    );
}

// Stored format

fn one_of_each() -> Vec<Event> {
    vec![placed(), confirmed(360), cancelled("out of stock")]
}

/// The postcard bytes of schema version 1, as logs written before version 2 hold them:
/// they decode, upcast twice, to the current events. If this fails, old logs would no
/// longer decode.
#[test]
fn the_stored_format_of_version_1_is_pinned_and_upcast() {
    let golden: [&[u8]; 3] = [
        b"\x00\x03o-1\x05alice\x02\x05apple\x02\x04pear\x01",
        b"\x01\xe8\x02",
        b"\x02\x0cout of stock",
    ];
    let version_1 = [
        placed_v1(),
        v1::Event::OrderConfirmed { total: 360 },
        v1::Event::OrderCancelled {
            reason: "out of stock".into(),
        },
    ];
    for ((old, event), bytes) in version_1.iter().zip(one_of_each()).zip(golden) {
        assert_eq!(
            postcard::to_allocvec(old).unwrap(),
            bytes,
            "encoding {old:?}"
        );
        assert_eq!(Order::decode_event(1, bytes).unwrap(), event);
    }
}

/// The postcard bytes of schema version 2: each line's currency follows its quantity.
/// They decode, upcast, to the current events without a shipping address.
#[test]
fn the_stored_format_of_version_2_is_pinned_and_upcast() {
    let golden: [&[u8]; 3] = [
        b"\x00\x03o-1\x05alice\x02\x05apple\x02\x03EUR\x04pear\x01\x03EUR",
        b"\x01\xe8\x02",
        b"\x02\x0cout of stock",
    ];
    let version_2 = [
        placed_v2(),
        v2::Event::OrderConfirmed { total: 360 },
        v2::Event::OrderCancelled {
            reason: "out of stock".into(),
        },
    ];
    for ((old, event), bytes) in version_2.iter().zip(one_of_each()).zip(golden) {
        assert_eq!(
            postcard::to_allocvec(old).unwrap(),
            bytes,
            "encoding {old:?}"
        );
        assert_eq!(Order::decode_event(2, bytes).unwrap(), event);
    }
}

/// The postcard bytes of schema version 3: the shipping address follows the lines, an
/// option (0 for none; 1, then the key id's 16 bytes and the ciphertext's length and
/// bytes).
#[test]
fn the_stored_format_of_version_3_is_pinned() {
    let with_address: &[u8] = b"\x00\x03o-1\x05alice\x02\x05apple\x02\x03EUR\x04pear\x01\x03EUR\x01\x10\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x0a\x11\xce\x04\xc1\xc1\xc1\xc1";
    let golden: [&[u8]; 4] = [
        b"\x00\x03o-1\x05alice\x02\x05apple\x02\x03EUR\x04pear\x01\x03EUR\x00",
        b"\x01\xe8\x02",
        b"\x02\x0cout of stock",
        with_address,
    ];
    let mut events = one_of_each();
    events.push(placed_shipping(sealed_address()));
    for (event, bytes) in events.iter().zip(golden) {
        assert_eq!(
            postcard::to_allocvec(event).unwrap(),
            bytes,
            "encoding {event:?}"
        );
        assert_eq!(&Order::decode_event(3, bytes).unwrap(), event);
    }
    assert!(matches!(
        Order::decode_event(4, golden[1]),
        Err(eventstore::Error::UnknownSchemaVersion {
            schema_version: 4,
            ..
        })
    ));
}

/// Older histories fold to the same order as the same history in version 3.
#[test]
fn older_histories_fold_as_their_upcast() {
    let old = [placed_v1(), v1::Event::OrderConfirmed { total: 360 }];
    let upcast: Vec<Event> = old
        .iter()
        .cloned()
        .map(|event| event.upcast().upcast())
        .collect();
    assert_eq!(upcast, vec![placed(), confirmed(360)]);
    assert_eq!(fold(&upcast), fold(&[placed(), confirmed(360)]));
    let old = [placed_v2(), v2::Event::OrderConfirmed { total: 360 }];
    let upcast: Vec<Event> = old.iter().cloned().map(v2::Event::upcast).collect();
    assert_eq!(upcast, vec![placed(), confirmed(360)]);
}

#[test]
fn events_and_state_round_trip() {
    for event in one_of_each() {
        let bytes = postcard::to_allocvec(&event).unwrap();
        assert_eq!(
            Order::decode_event(Order::EVENT_SCHEMA_VERSION, &bytes).unwrap(),
            event
        );
    }
    for order in [
        fold(&[placed()]),
        fold(&[placed(), confirmed(360)]),
        fold(&[placed(), cancelled("out of stock")]),
    ] {
        let bytes = postcard::to_allocvec(&order).unwrap();
        assert_eq!(postcard::from_bytes::<Order>(&bytes).unwrap(), order);
    }
}

#[test]
fn event_types_name_the_variants() {
    for event in one_of_each() {
        let json = serde_json::to_value(&event).unwrap();
        let tag = json.as_object().unwrap().keys().next().unwrap().clone();
        assert_eq!(Order::event_type(&event), tag);
    }
}

#[test]
fn stored_events_display_as_json() {
    let expected = serde_json::json!({
        "order_id": "o-1",
        "customer_id": "alice",
        "lines": [
            {"sku": "apple", "quantity": 2, "currency": "EUR"},
            {"sku": "pear", "quantity": 1, "currency": "EUR"},
        ],
        "shipping_address": null,
    });
    let bytes = postcard::to_allocvec(&placed()).unwrap();
    assert_eq!(event_to_json(3, &bytes).unwrap(), expected);
    // Versions 1 and 2 show as their upcast.
    let bytes = postcard::to_allocvec(&placed_v2()).unwrap();
    assert_eq!(event_to_json(2, &bytes).unwrap(), expected);
    let bytes = postcard::to_allocvec(&placed_v1()).unwrap();
    assert_eq!(event_to_json(1, &bytes).unwrap(), expected);
    // A sealed address shows as its key id and base64 ciphertext, never opened.
    let bytes = postcard::to_allocvec(&placed_shipping(sealed_address())).unwrap();
    let json = event_to_json(3, &bytes).unwrap();
    assert_eq!(
        json["shipping_address"],
        serde_json::json!({
            "key_id": "00000000-0000-0000-0000-0000000a11ce",
            "ciphertext": "wcHBwQ==",
        })
    );
    assert!(matches!(
        event_to_json(1, &[0x09]),
        Err(eventstore::Error::Codec { .. })
    ));
}
