//! Given / when / then specifications of the customer aggregate. No storage, no keys:
//! the sealed values are opaque bytes here.

use super::*;

fn sealed(byte: u8) -> Sealed {
    Sealed {
        key_id: KeyId(uuid::Uuid::from_u128(1)),
        ciphertext: privacy::Ciphertext(vec![byte; 48]),
    }
}

fn register() -> Command {
    Command::RegisterCustomer {
        customer_id: "alice".into(),
        name: sealed(1),
        email: sealed(2),
        address: sealed(3),
    }
}

fn registered() -> Event {
    Event::CustomerRegistered {
        customer_id: "alice".into(),
        name: sealed(1),
        email: sealed(2),
        address: sealed(3),
    }
}

fn erase() -> Command {
    Command::ErasePersonalData {
        customer_id: "alice".into(),
        reason: "asked by the customer, ticket 7".into(),
        erased_by: "operator-1".into(),
        key_ids: vec![KeyId(uuid::Uuid::from_u128(1))],
    }
}

fn check(given: Vec<Event>, when: Command, then: Result<Vec<Event>, Error>) {
    let state = given.iter().fold(Customer::default(), Customer::evolve);
    let decided = state.decide(&when);
    assert_eq!(decided, then, "given {given:#?}\nwhen {when:#?}");
}

#[test]
fn a_customer_is_registered_once() {
    check(vec![], register(), Ok(vec![registered()]));
    check(
        vec![registered()],
        register(),
        Err(Error::AlreadyRegistered {
            customer_id: "alice".into(),
        }),
    );
    let blank = Command::RegisterCustomer {
        customer_id: " ".into(),
        name: sealed(1),
        email: sealed(2),
        address: sealed(3),
    };
    check(vec![], blank, Err(Error::BlankCustomerId));
}

#[test]
fn an_erasure_is_recorded_once_and_the_id_is_not_reused() {
    let erased = Event::PersonalDataErased {
        customer_id: "alice".into(),
        reason: "asked by the customer, ticket 7".into(),
        erased_by: "operator-1".into(),
        key_ids: vec![KeyId(uuid::Uuid::from_u128(1))],
    };
    check(vec![registered()], erase(), Ok(vec![erased.clone()]));
    // Without a profile, a customer's personal data (an order's shipping address) is
    // erased all the same; without keys there is nothing to erase.
    check(vec![], erase(), Ok(vec![erased.clone()]));
    let nothing = Command::ErasePersonalData {
        customer_id: "alice".into(),
        reason: "asked".into(),
        erased_by: "operator-1".into(),
        key_ids: vec![],
    };
    check(vec![], nothing, Err(Error::UnknownCustomer));
    check(
        vec![registered(), erased.clone()],
        erase(),
        Err(Error::AlreadyErased),
    );
    check(
        vec![registered(), erased.clone()],
        register(),
        Err(Error::AlreadyRegistered {
            customer_id: "alice".into(),
        }),
    );
    let no_reason = Command::ErasePersonalData {
        customer_id: "alice".into(),
        reason: "".into(),
        erased_by: "operator-1".into(),
        key_ids: vec![],
    };
    check(vec![registered()], no_reason, Err(Error::BlankReason));
    let state = [registered(), erased]
        .iter()
        .fold(Customer::default(), Customer::evolve);
    assert_eq!(state.status(), CustomerStatus::Erased);
    assert!(state.profile().is_some(), "the sealed fields stay");
}

#[test]
fn every_personal_field_is_a_sealed_field_of_its_event() {
    let json = eventstore::event_json(&registered()).unwrap();
    for field in PERSONAL_FIELDS {
        assert_eq!(field.event_type, "CustomerRegistered");
        let value = &json[field.field];
        assert!(
            value.get("key_id").is_some() && value.get("ciphertext").is_some(),
            "{} is sealed: {value}",
            field.field
        );
    }
}
