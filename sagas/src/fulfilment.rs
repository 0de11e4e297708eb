//! The fulfilment saga: an order placed is reserved, charged and confirmed, or
//! compensated and cancelled.
//!
//! ```text
//! OrderPlaced ─► reserve every line ─► all reserved ─► charge the total ─► charged
//!                     │ rejected             ─► confirm the order ─► confirm each reservation
//!                     ▼                                         ─► Confirmed
//!       any rejection, a customer cancel, or the deadline (in Reserving or Charging)
//!                     ─► release every reservation made, refund a charge made,
//!                        cancel the order with the reason ─► Cancelled
//! ```
//!
//! The order total is the sum of quantity x unit price of the reservations (each records
//! the sku's price when it was made). Outcomes that arrive after compensation began are
//! compensated too: a reservation that succeeds late is released, a charge that succeeds
//! late (the deadline passed while it was pending) is refunded. Once the order's
//! confirmation is issued, the deadline no longer applies: the order aggregate decides,
//! and a confirmation refused because the customer cancelled first is compensated.
//!
//! Pure: no IO. [`crate::FulfilmentServices`] runs the commands.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use orders::OrderLine;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::saga::{Answers, Deadline, Issued, Saga, Step};

/// The key of the fulfilment deadline.
pub const DEADLINE: &str = "fulfilment";

/// The principal every command of the fulfilment saga is recorded under: the saga acts
/// as itself, a service, and names the customer it acts for in `on_behalf_of`.
pub const SERVICE_PRINCIPAL: &str = "annals-fulfilment";

/// The issuer of [`SERVICE_PRINCIPAL`]: Annals itself (the saga runs inside the server
/// and holds no token; no identity provider vouches for it).
pub const SERVICE_ISSUER: &str = "annals";

/// The state of one order's fulfilment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fulfilment {
    /// The order (the saga instance id).
    pub order_id: String,
    /// Who pays.
    pub customer_id: String,
    /// What was ordered.
    pub lines: Vec<OrderLine>,
    /// Where the saga is.
    pub phase: Phase,
    /// Reservations held, by sku.
    pub reserved: BTreeMap<String, Reservation>,
    /// The amount asked of the customer, once every line is reserved.
    pub amount: Option<u64>,
    /// The amount charged and not refunded.
    pub charged: Option<u64>,
    /// Why the order is cancelled (once compensation began).
    pub cancel_reason: Option<String>,
    /// The customer's own cancel, seen while the confirmation was pending.
    pub customer_cancel: Option<String>,
    /// When the saga gives up, while it reserves or charges.
    pub deadline: Option<DateTime<Utc>>,
    /// The correlation id of the order, carried by every command.
    pub correlation_id: Option<Uuid>,
    /// Keys of the commands issued and not answered yet.
    pub pending: BTreeSet<String>,
}

/// One sku's reservation for the order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// Units held.
    pub quantity: u64,
    /// The unit price when reserved, minor units.
    pub unit_price: u64,
}

/// Where a fulfilment is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Nothing recorded yet.
    #[default]
    NotStarted,
    /// Reserving the lines.
    Reserving,
    /// Every line reserved; charging the total.
    Charging,
    /// Charged; confirming the order.
    Confirming,
    /// The order is confirmed; the reservations are being taken out of stock.
    Finalising,
    /// Done: the order is confirmed and its stock shipped.
    Confirmed,
    /// Undoing what was done: releasing, refunding, cancelling.
    Compensating,
    /// Done: everything undone, the order cancelled.
    Cancelled,
}

impl Phase {
    /// Every phase, in order.
    pub const ALL: [Phase; 8] = [
        Phase::NotStarted,
        Phase::Reserving,
        Phase::Charging,
        Phase::Confirming,
        Phase::Finalising,
        Phase::Confirmed,
        Phase::Compensating,
        Phase::Cancelled,
    ];

    /// The phase's name, as its JSON says it (`not_started`, `reserving`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            Phase::NotStarted => "not_started",
            Phase::Reserving => "reserving",
            Phase::Charging => "charging",
            Phase::Confirming => "confirming",
            Phase::Finalising => "finalising",
            Phase::Confirmed => "confirmed",
            Phase::Compensating => "compensating",
            Phase::Cancelled => "cancelled",
        }
    }
}

/// The names of [`Phase::ALL`].
const PHASE_NAMES: [&str; 8] = {
    let mut names = [""; 8];
    let mut index = 0;
    while index < Phase::ALL.len() {
        names[index] = Phase::ALL[index].name();
        index += 1;
    }
    names
};

/// What the saga reacts to. Recorded in `saga-fulfilment-<order>` with postcard:
/// append variants, never reorder them or their fields.
///
/// Each variant is named, for serde, as its recorded event type ([`Saga::input_type`]):
/// the names are not part of the stored bytes (postcard stores the variant's index), and
/// so the type in the envelope names the variant of a JSON payload
/// ([`input_to_json`]) as it does for the aggregates' events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Input {
    /// An order was placed: start.
    #[serde(rename = "FulfilmentStarted")]
    Started {
        /// The order.
        order_id: String,
        /// Who ordered.
        customer_id: String,
        /// What was ordered.
        lines: Vec<OrderLine>,
        /// When to give up if the order is not charged by then.
        deadline: DateTime<Utc>,
        /// The order's correlation id.
        correlation_id: Option<Uuid>,
    },
    /// The customer cancelled the order.
    #[serde(rename = "FulfilmentCancelRequested")]
    CancelRequested {
        /// The customer's reason.
        reason: String,
    },
    /// A command of the saga was answered.
    #[serde(rename = "FulfilmentCommandAnswered")]
    Answered {
        /// The command's key.
        key: String,
        /// What it did.
        outcome: Outcome,
    },
    /// A deadline passed.
    #[serde(rename = "FulfilmentDeadlinePassed")]
    DeadlinePassed {
        /// The deadline's key.
        key: String,
    },
}

/// What a command of the saga did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Outcome {
    /// Stock reserved at this unit price.
    Reserved {
        /// Units held.
        quantity: u64,
        /// The unit price, minor units.
        unit_price: u64,
    },
    /// The command took effect (or had nothing left to do, e.g. a release of nothing).
    Done,
    /// The command was refused by a domain rule.
    Rejected {
        /// Why, as the aggregate said it.
        reason: String,
    },
}

/// What the saga asks of orders, inventory and payments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Hold `quantity` units of `sku` for the order.
    Reserve {
        /// The sku.
        sku: String,
        /// Units.
        quantity: u64,
    },
    /// Give the order's reservation of `sku` back.
    Release {
        /// The sku.
        sku: String,
    },
    /// Take the order's reservation of `sku` out of stock for good.
    ConfirmReservation {
        /// The sku.
        sku: String,
    },
    /// Charge the customer's account for the order.
    Charge {
        /// Minor units.
        amount: u64,
    },
    /// Refund the order's charge.
    Refund,
    /// Confirm the order.
    ConfirmOrder {
        /// The amount charged.
        total: u64,
    },
    /// Cancel the order.
    CancelOrder {
        /// Why.
        reason: String,
    },
}

impl Command {
    /// The action the command's events record: `fulfilment.` and the step, one per
    /// kind of command (the policy's vocabulary for what caused an event).
    pub fn action(&self) -> &'static str {
        match self {
            Command::Reserve { .. } => "fulfilment.reserve",
            Command::Release { .. } => "fulfilment.release",
            Command::ConfirmReservation { .. } => "fulfilment.confirm-reservation",
            Command::Charge { .. } => "fulfilment.charge",
            Command::Refund => "fulfilment.refund",
            Command::ConfirmOrder { .. } => "fulfilment.confirm-order",
            Command::CancelOrder { .. } => "fulfilment.cancel-order",
        }
    }

    /// The command's key within the saga: one command per key, ever.
    pub fn key(&self) -> String {
        match self {
            Command::Reserve { sku, .. } => format!("reserve:{sku}"),
            Command::Release { sku } => format!("release:{sku}"),
            Command::ConfirmReservation { sku } => format!("confirm-reservation:{sku}"),
            Command::Charge { .. } => "charge".to_owned(),
            Command::Refund => "refund".to_owned(),
            Command::ConfirmOrder { .. } => "confirm-order".to_owned(),
            Command::CancelOrder { .. } => "cancel-order".to_owned(),
        }
    }
}

impl Fulfilment {
    /// The total of the reservations: quantity x unit price.
    pub fn total(&self) -> u64 {
        self.reserved
            .values()
            .map(|r| r.quantity.saturating_mul(r.unit_price))
            .fold(0, u64::saturating_add)
    }

    fn issue(&mut self, commands: &mut Vec<Issued<Command>>, command: Command) {
        let key = command.key();
        self.pending.insert(key.clone());
        commands.push(Issued { key, command });
    }

    /// Starts undoing: release every reservation, refund a charge, cancel the order
    /// (unless it is cancelled already).
    fn compensate(&mut self, reason: String, cancel_order: bool) -> Vec<Issued<Command>> {
        let mut commands = Vec::new();
        self.phase = Phase::Compensating;
        self.deadline = None;
        for sku in self.reserved.keys().cloned().collect::<Vec<_>>() {
            self.issue(&mut commands, Command::Release { sku });
        }
        if self.charged.is_some() {
            self.issue(&mut commands, Command::Refund);
        }
        if cancel_order {
            self.issue(
                &mut commands,
                Command::CancelOrder {
                    reason: reason.clone(),
                },
            );
        }
        self.cancel_reason = Some(reason);
        commands
    }

    fn answered(mut self, key: &str, outcome: &Outcome) -> Step<Self> {
        if !self.pending.remove(key) {
            // Not a command of ours, or answered before: nothing to do.
            return Step::idle(self);
        }
        let mut commands = Vec::new();
        let (kind, sku) = key.split_once(':').unwrap_or((key, ""));
        match (kind, outcome) {
            (
                "reserve",
                Outcome::Reserved {
                    quantity,
                    unit_price,
                },
            ) => {
                self.reserved.insert(
                    sku.to_owned(),
                    Reservation {
                        quantity: *quantity,
                        unit_price: *unit_price,
                    },
                );
                match self.phase {
                    Phase::Reserving if self.reserved.len() == self.lines.len() => {
                        self.phase = Phase::Charging;
                        let amount = self.total();
                        self.amount = Some(amount);
                        self.issue(&mut commands, Command::Charge { amount });
                    }
                    Phase::Compensating => self.issue(
                        &mut commands,
                        Command::Release {
                            sku: sku.to_owned(),
                        },
                    ),
                    _ => {}
                }
            }
            ("reserve", rejected) if self.phase == Phase::Reserving => {
                let reason = format!("sku {sku}: {}", reason_of(rejected));
                commands = self.compensate(reason, true);
            }
            ("charge", Outcome::Done) => {
                self.charged = self.amount;
                match self.phase {
                    Phase::Charging => {
                        self.phase = Phase::Confirming;
                        self.deadline = None;
                        let total = self.amount.unwrap_or_default();
                        self.issue(&mut commands, Command::ConfirmOrder { total });
                    }
                    Phase::Compensating => self.issue(&mut commands, Command::Refund),
                    _ => {}
                }
            }
            ("charge", rejected) if self.phase == Phase::Charging => {
                let reason = format!("payment refused: {}", reason_of(rejected));
                commands = self.compensate(reason, true);
            }
            ("confirm-order", Outcome::Done) => {
                self.phase = Phase::Finalising;
                for sku in self.reserved.keys().cloned().collect::<Vec<_>>() {
                    self.issue(&mut commands, Command::ConfirmReservation { sku });
                }
            }
            ("confirm-order", rejected) => {
                // The order is no longer pending: the customer cancelled it first.
                let reason = match self.customer_cancel.take() {
                    Some(reason) => format!("cancelled by the customer: {reason}"),
                    None => format!("the order could not be confirmed: {}", reason_of(rejected)),
                };
                commands = self.compensate(reason, false);
            }
            ("release", _) => {
                self.reserved.remove(sku);
            }
            ("refund", _) => self.charged = None,
            // A rejection after compensation began, a confirmed reservation, the
            // order's cancellation: nothing more to do.
            _ => {}
        }
        self.settle();
        Step {
            state: self,
            commands,
            deadlines: Vec::new(),
        }
    }

    /// Ends the saga once nothing is pending in a final stretch.
    fn settle(&mut self) {
        if !self.pending.is_empty() {
            return;
        }
        match self.phase {
            Phase::Finalising => self.phase = Phase::Confirmed,
            Phase::Compensating => self.phase = Phase::Cancelled,
            _ => {}
        }
    }
}

fn reason_of(outcome: &Outcome) -> &str {
    match outcome {
        Outcome::Rejected { reason } => reason,
        _ => "unexpected answer",
    }
}

impl Saga for Fulfilment {
    const NAME: &'static str = "fulfilment";
    type Input = Input;
    type Command = Command;

    fn handle(mut self, input: &Input) -> Step<Self> {
        match input {
            Input::Started {
                order_id,
                customer_id,
                lines,
                deadline,
                correlation_id,
            } if self.phase == Phase::NotStarted => {
                self.order_id.clone_from(order_id);
                self.customer_id.clone_from(customer_id);
                self.lines.clone_from(lines);
                self.correlation_id = *correlation_id;
                self.phase = Phase::Reserving;
                self.deadline = Some(*deadline);
                let mut commands = Vec::new();
                for line in lines {
                    self.issue(
                        &mut commands,
                        Command::Reserve {
                            sku: line.sku.clone(),
                            quantity: line.quantity,
                        },
                    );
                }
                Step {
                    state: self,
                    commands,
                    deadlines: vec![Deadline {
                        key: DEADLINE.to_owned(),
                        at: *deadline,
                    }],
                }
            }
            Input::CancelRequested { reason } => match self.phase {
                Phase::Reserving | Phase::Charging => {
                    let commands =
                        self.compensate(format!("cancelled by the customer: {reason}"), false);
                    self.settle();
                    Step {
                        state: self,
                        commands,
                        deadlines: Vec::new(),
                    }
                }
                Phase::Confirming => {
                    self.customer_cancel = Some(reason.clone());
                    Step::idle(self)
                }
                _ => Step::idle(self),
            },
            Input::Answered { key, outcome } => self.answered(key, outcome),
            Input::DeadlinePassed { key }
                if key == DEADLINE
                    && self.deadline.is_some()
                    && matches!(self.phase, Phase::Reserving | Phase::Charging) =>
            {
                let commands = self.compensate(
                    "the order was not fulfilled before its deadline".to_owned(),
                    true,
                );
                self.settle();
                Step {
                    state: self,
                    commands,
                    deadlines: Vec::new(),
                }
            }
            _ => Step::idle(self),
        }
    }

    fn input_key(input: &Input) -> String {
        match input {
            Input::Started { .. } => "started".to_owned(),
            Input::CancelRequested { .. } => "cancel-requested".to_owned(),
            Input::Answered { key, .. } => format!("answered/{key}"),
            Input::DeadlinePassed { key } => format!("deadline/{key}"),
        }
    }

    fn input_type(input: &Input) -> &'static str {
        match input {
            Input::Started { .. } => "FulfilmentStarted",
            Input::CancelRequested { .. } => "FulfilmentCancelRequested",
            Input::Answered { .. } => "FulfilmentCommandAnswered",
            Input::DeadlinePassed { .. } => "FulfilmentDeadlinePassed",
        }
    }

    fn answers(input: &Input) -> Answers<'_> {
        match input {
            Input::Answered { key, .. } => Answers::Command(key),
            Input::DeadlinePassed { key } => Answers::Deadline(key),
            _ => Answers::Nothing,
        }
    }

    fn deadline_passed(deadline: &Deadline) -> Input {
        Input::DeadlinePassed {
            key: deadline.key.clone(),
        }
    }

    fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Confirmed | Phase::Cancelled)
    }

    fn awaits_deadline(&self, key: &str) -> bool {
        key == DEADLINE && self.deadline.is_some()
    }

    const PHASES: &'static [&'static str] = &PHASE_NAMES;

    fn phase(&self) -> &'static str {
        self.phase.name()
    }
}

/// A recorded input as JSON, for the log views (`GET /api/v1/log`, `annals inspect`): the
/// variant's fields ([`eventstore::event_json`]); the envelope's type names the variant.
pub fn input_to_json(payload: &[u8]) -> Result<serde_json::Value, eventstore::Error> {
    let input: Input =
        postcard::from_bytes(payload).map_err(|source| eventstore::Error::Codec {
            what: "fulfilment saga input",
            source,
        })?;
    Ok(eventstore::event_json(&input)
        .expect("a saga input always converts to JSON: derived Serialize, no maps"))
}
