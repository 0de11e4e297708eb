//! The second way to pay: a customer's card on file, kept in the stream `card-<customer>`.
//!
//! A customer who registers a card pays for its orders by card, through the external
//! payment providers (the `psp` crate), when the server has any (`annals serve
//! --psp-url`); one without a card, or on a server without providers, pays from its
//! prepaid [`Account`](crate::Account). The card is the provider's token for it (Annals
//! never sees a card number); registering again replaces it. The captures themselves are
//! the provider's record, and the fulfilment saga records each charge's outcome in its
//! own stream.
//!
//! Pure, like the account: [`Card::decide`](eventstore::Aggregate::decide) and
//! [`Card::evolve`](eventstore::Aggregate::evolve). Stored with postcard: append
//! variants, never reorder them or their fields.
//!
//! ```
//! use eventstore::Aggregate;
//! use payments::card::{Card, Command, Error, Event};
//!
//! let card = Card::default().evolve(&Event::CardRegistered {
//!     customer_id: "alice".into(),
//!     card: "tok_alice".into(),
//! });
//! assert_eq!(card.token(), Some("tok_alice"));
//! let refused = card.decide(&Command::RegisterCard {
//!     customer_id: "alice".into(),
//!     card: "4111 1111 1111 1111".into(),
//! });
//! assert_eq!(refused, Err(Error::BadCardToken));
//! ```

use eventstore::Aggregate;
use serde::{Deserialize, Serialize};

/// The longest card token accepted.
pub const MAX_TOKEN_LEN: usize = 64;

/// What can be asked of a customer's card on file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Puts a card on file (replacing one registered before).
    RegisterCard {
        /// The customer, the same as in the stream id; not blank.
        customer_id: String,
        /// The provider's token of the card: 1 to 64 ASCII letters, digits and `_`.
        card: String,
    },
}

/// What happened to a card on file. Stored with postcard: append variants, never
/// reorder them or their fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Event {
    /// A card was put on file.
    CardRegistered {
        /// The customer.
        customer_id: String,
        /// The provider's token of the card.
        card: String,
    },
}

/// Why a command on a card was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The customer id was blank. A malformed command: over HTTP a 422.
    #[error("the customer id must not be blank")]
    BlankCustomerId,
    /// The token is not a provider's card token (it looks like a card number, or is
    /// too long). Over HTTP a 422: Annals never holds card numbers.
    #[error("a card token is 1 to {MAX_TOKEN_LEN} ASCII letters, digits and `_`")]
    BadCardToken,
}

/// A customer's card on file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Card {
    customer_id: String,
    token: Option<String>,
}

impl Card {
    /// The provider's token of the card on file, if one is registered.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The customer.
    pub fn customer_id(&self) -> &str {
        &self.customer_id
    }
}

fn is_token(card: &str) -> bool {
    (1..=MAX_TOKEN_LEN).contains(&card.len())
        && card.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !card.bytes().all(|b| b.is_ascii_digit())
}

impl Aggregate for Card {
    type Command = Command;
    type Event = Event;
    type Error = Error;

    const CATEGORY: &'static str = "card";

    fn decide(&self, command: &Command) -> Result<Vec<Event>, Error> {
        match command {
            Command::RegisterCard { customer_id, card } => {
                if customer_id.trim().is_empty() {
                    return Err(Error::BlankCustomerId);
                }
                if !is_token(card) {
                    return Err(Error::BadCardToken);
                }
                Ok(vec![Event::CardRegistered {
                    customer_id: customer_id.clone(),
                    card: card.clone(),
                }])
            }
        }
    }

    fn evolve(mut self, event: &Event) -> Self {
        match event {
            Event::CardRegistered { customer_id, card } => {
                self.customer_id.clone_from(customer_id);
                self.token = Some(card.clone());
            }
        }
        self
    }

    fn event_type(event: &Event) -> &'static str {
        match event {
            Event::CardRegistered { .. } => "CardRegistered",
        }
    }
}

/// Decodes a stored card event into JSON for display: the variant's fields, e.g.
/// `{"customer_id":"alice","card":"tok_alice"}` ([`eventstore::event_json`]).
pub fn event_to_json(
    schema_version: u32,
    payload: &[u8],
) -> Result<serde_json::Value, eventstore::Error> {
    let event = Card::decode_event(schema_version, payload)?;
    Ok(eventstore::event_json(&event).expect("a card event always converts to JSON"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(card: &str) -> Command {
        Command::RegisterCard {
            customer_id: "alice".into(),
            card: card.into(),
        }
    }

    #[test]
    fn a_card_token_is_registered_and_replaced() {
        let first = Card::default()
            .decide(&register("tok_1"))
            .unwrap()
            .iter()
            .fold(Card::default(), Card::evolve);
        assert_eq!(first.token(), Some("tok_1"));
        let second = first
            .decide(&register("tok_2"))
            .unwrap()
            .iter()
            .fold(first.clone(), Card::evolve);
        assert_eq!(second.token(), Some("tok_2"));
        assert_eq!(second.customer_id(), "alice");
    }

    #[test]
    fn card_numbers_and_odd_tokens_are_refused() {
        for bad in ["", "4111111111111111", "tok-1", "tok 1", &"t".repeat(65)] {
            assert_eq!(
                Card::default().decide(&register(bad)),
                Err(Error::BadCardToken),
                "{bad:?}"
            );
        }
        let blank = Command::RegisterCard {
            customer_id: " ".into(),
            card: "tok_1".into(),
        };
        assert_eq!(Card::default().decide(&blank), Err(Error::BlankCustomerId));
    }

    /// The stored format: these bytes must decode for as long as the log holds them.
    #[test]
    fn golden_bytes() {
        let event = Event::CardRegistered {
            customer_id: "a".into(),
            card: "t".into(),
        };
        let bytes = postcard::to_stdvec(&event).unwrap();
        assert_eq!(bytes, [0, 1, b'a', 1, b't']);
        assert_eq!(
            event_to_json(1, &bytes).unwrap(),
            serde_json::json!({"customer_id": "a", "card": "t"})
        );
    }
}
