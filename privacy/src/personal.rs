//! Where personal data is: each domain crate declares the personal fields of its event
//! types next to them (`customers::PERSONAL_FIELDS`, `orders::PERSONAL_FIELDS`), and the
//! readers that must find every sealed value (the `personal_data` read model, the
//! access endpoint) read those declarations instead of guessing from the JSON.

/// A personal field of an event type: the named field of the event holds a
/// [`crate::Sealed`] value (or an `Option<Sealed>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PersonalField {
    /// The event type, e.g. `CustomerRegistered`.
    pub event_type: &'static str,
    /// The field holding a [`crate::Sealed`] value, e.g. `email`.
    pub field: &'static str,
}
