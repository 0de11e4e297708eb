//! Customers: one customer's profile, kept in the stream `customer-<id>`.
//!
//! A profile is personal data: the customer's name, email and postal address. None of it
//! reaches this crate, or the log, in plaintext: the API seals each field under the
//! customer's own key ([`privacy::Sealed`]) before the command is decided, so the
//! aggregate holds and records ciphertext only. Which fields are personal is declared
//! once, in [`PERSONAL_FIELDS`] (and the orders crate's for `shipping_address`), and the
//! event schemas mark them (`x-annals-personal`).
//!
//! Erasing a customer's personal data records [`Event::PersonalDataErased`] (who, why,
//! which keys; no personal data) and destroys the customer's keys in the key store:
//! the sealed fields stay in the log, bit for bit, and can never be opened again. The
//! erasure is final: the profile cannot be registered again under the same id.
//!
//! Pure, like every aggregate: [`Customer::decide`](eventstore::Aggregate::decide) and
//! [`Customer::evolve`](eventstore::Aggregate::evolve). Stored with postcard: append
//! variants, never reorder them or their fields.

use eventstore::Aggregate;
use privacy::{KeyId, Sealed};
use serde::{Deserialize, Serialize};

pub use privacy::PersonalField;

/// The personal fields of the customer's events. Each holds a [`Sealed`] value under
/// the key of the customer the stream is about.
pub const PERSONAL_FIELDS: &[PersonalField] = &[
    PersonalField {
        event_type: "CustomerRegistered",
        field: "name",
    },
    PersonalField {
        event_type: "CustomerRegistered",
        field: "email",
    },
    PersonalField {
        event_type: "CustomerRegistered",
        field: "address",
    },
];

/// What can be asked of a customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Registers the customer's profile. Its stream must be `customer-<customer_id>`;
    /// the fields are sealed for the event `EventId::derived(command id, 0)`.
    RegisterCustomer {
        /// The customer, the same as in the stream id; not blank.
        customer_id: String,
        /// The customer's name, sealed.
        name: Sealed,
        /// The customer's email address, sealed.
        email: Sealed,
        /// The customer's postal address, sealed.
        address: Sealed,
    },
    /// Records that the customer's personal data was erased (its keys destroyed).
    ErasePersonalData {
        /// Why (a ticket, the customer's request); not blank; no personal data.
        reason: String,
        /// Who erased it: the authenticated subject, or `anonymous` on a server without
        /// authentication.
        erased_by: String,
        /// The keys destroyed.
        key_ids: Vec<KeyId>,
    },
}

/// What happened to a customer. Stored with postcard: append variants, never reorder
/// them or their fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Event {
    /// The customer's profile was registered. Every field but the id is personal data,
    /// sealed under the customer's key.
    CustomerRegistered {
        /// The customer.
        customer_id: String,
        /// The name, sealed.
        name: Sealed,
        /// The email address, sealed.
        email: Sealed,
        /// The postal address, sealed.
        address: Sealed,
    },
    /// The customer's personal data was erased: its keys were destroyed, and every
    /// sealed field under them, in any event, can no longer be read.
    PersonalDataErased {
        /// The customer.
        customer_id: String,
        /// Why.
        reason: String,
        /// Who erased it.
        erased_by: String,
        /// The keys destroyed.
        key_ids: Vec<KeyId>,
    },
}

/// Why a command on a customer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The customer was registered already (or erased: an erased id is not reused).
    /// Over HTTP a 409.
    #[error("customer {customer_id:?} is already registered")]
    AlreadyRegistered {
        /// The customer.
        customer_id: String,
    },
    /// The customer id was blank. Over HTTP a 422.
    #[error("the customer id must not be blank")]
    BlankCustomerId,
    /// The customer was never registered. Over HTTP a 404.
    #[error("the customer is not registered")]
    UnknownCustomer,
    /// The customer's personal data was erased already. The API answers with the first
    /// erasure instead.
    #[error("the customer's personal data was erased already")]
    AlreadyErased,
    /// The erasure's reason was blank. Over HTTP a 422.
    #[error("an erasure needs a reason")]
    BlankReason,
}

/// Where a customer is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CustomerStatus {
    /// Not registered.
    #[default]
    None,
    /// Registered, its personal data readable.
    Registered,
    /// Its personal data erased.
    Erased,
}

/// One customer, folded from its stream: sealed fields only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    status: CustomerStatus,
    customer_id: String,
    profile: Option<Profile>,
    erased_keys: Vec<KeyId>,
}

/// A customer's profile as the log holds it: sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// The name, sealed.
    pub name: Sealed,
    /// The email address, sealed.
    pub email: Sealed,
    /// The postal address, sealed.
    pub address: Sealed,
}

impl Customer {
    /// Where the customer is in its life.
    pub fn status(&self) -> CustomerStatus {
        self.status
    }

    /// The customer id; empty until registered.
    pub fn customer_id(&self) -> &str {
        &self.customer_id
    }

    /// The sealed profile, once registered (still there, unreadable, once erased).
    pub fn profile(&self) -> Option<&Profile> {
        self.profile.as_ref()
    }

    /// The keys an erasure destroyed.
    pub fn erased_keys(&self) -> &[KeyId] {
        &self.erased_keys
    }
}

impl Aggregate for Customer {
    type Command = Command;
    type Event = Event;
    type Error = Error;

    const CATEGORY: &'static str = "customer";

    fn decide(&self, command: &Command) -> Result<Vec<Event>, Error> {
        match command {
            Command::RegisterCustomer {
                customer_id,
                name,
                email,
                address,
            } => {
                if self.status != CustomerStatus::None {
                    return Err(Error::AlreadyRegistered {
                        customer_id: self.customer_id.clone(),
                    });
                }
                if customer_id.trim().is_empty() {
                    return Err(Error::BlankCustomerId);
                }
                Ok(vec![Event::CustomerRegistered {
                    customer_id: customer_id.clone(),
                    name: name.clone(),
                    email: email.clone(),
                    address: address.clone(),
                }])
            }
            Command::ErasePersonalData {
                reason,
                erased_by,
                key_ids,
            } => {
                match self.status {
                    CustomerStatus::None => return Err(Error::UnknownCustomer),
                    CustomerStatus::Erased => return Err(Error::AlreadyErased),
                    CustomerStatus::Registered => {}
                }
                if reason.trim().is_empty() {
                    return Err(Error::BlankReason);
                }
                Ok(vec![Event::PersonalDataErased {
                    customer_id: self.customer_id.clone(),
                    reason: reason.clone(),
                    erased_by: erased_by.clone(),
                    key_ids: key_ids.clone(),
                }])
            }
        }
    }

    fn evolve(mut self, event: &Event) -> Self {
        match event {
            Event::CustomerRegistered {
                customer_id,
                name,
                email,
                address,
            } => {
                self.status = CustomerStatus::Registered;
                self.customer_id.clone_from(customer_id);
                self.profile = Some(Profile {
                    name: name.clone(),
                    email: email.clone(),
                    address: address.clone(),
                });
            }
            Event::PersonalDataErased { key_ids, .. } => {
                self.status = CustomerStatus::Erased;
                self.erased_keys.clone_from(key_ids);
            }
        }
        self
    }

    fn event_type(event: &Event) -> &'static str {
        match event {
            Event::CustomerRegistered { .. } => "CustomerRegistered",
            Event::PersonalDataErased { .. } => "PersonalDataErased",
        }
    }
}

/// Decodes a stored customer event into its JSON form (sealed fields as
/// `{"key_id", "ciphertext"}`), for display.
pub fn event_to_json(
    schema_version: u32,
    payload: &[u8],
) -> Result<serde_json::Value, eventstore::Error> {
    let event = Customer::decode_event(schema_version, payload)?;
    Ok(eventstore::event_json(&event)
        .expect("a customer event always converts to JSON: derived Serialize, no maps"))
}

#[cfg(test)]
mod tests;
