//! Sagas: long-running processes across aggregates, with no distributed transaction.
//!
//! - [`saga`]: what a saga is. Pure logic, `(state, input) -> (state, commands,
//!   deadlines)` ([`Saga::handle`]), and how recorded inputs fold back into an
//!   [`Instance`] (state, commands not answered yet, deadlines not passed yet).
//! - [`driver`]: the thin async [`Driver`]: follows the log from a checkpoint, routes
//!   events to instances, records every input in the saga's stream
//!   (`saga-<name>-<id>`) before handling it, issues commands with deterministic ids,
//!   and keeps deadlines durable (recorded, re-armed on start, fired once).
//! - [`clock`]: the injected [`Clock`]; tests use [`ManualClock`].
//! - [`fulfilment`]: the fulfilment saga (reserve, charge, confirm; or release, refund,
//!   cancel), and [`services`]: how its commands reach inventory, payments and orders,
//!   recorded as the saga's own principal on behalf of the customer who placed the order.
//! - [`trace`]: each step continues the trace of the event that caused it (its
//!   `traceparent`), and its commands' events carry that trace.
//!
//! ```
//! use sagas::{Saga, fulfilment::{Command, Fulfilment, Input}};
//! use orders::OrderLine;
//!
//! let step = Fulfilment::default().handle(&Input::Started {
//!     order_id: "o-1".into(),
//!     customer_id: "c-1".into(),
//!     lines: vec![OrderLine { sku: "apple".into(), quantity: 2 }],
//!     deadline: chrono::DateTime::UNIX_EPOCH,
//!     correlation_id: None,
//! });
//! assert_eq!(step.commands[0].command, Command::Reserve { sku: "apple".into(), quantity: 2 });
//! ```

pub mod clock;
pub mod driver;
pub mod fulfilment;
pub mod saga;
pub mod services;
pub mod trace;
pub mod view;

pub use clock::{Clock, ManualClock, SystemClock};
pub use driver::{
    Dispatcher, Driver, DriverConfig, DriverError, DriverStatus, DriverWorker, OnFinished,
};
pub use fulfilment::Fulfilment;
pub use saga::{Deadline, Instance, Issued, Saga, Step};
pub use services::{Faults, FulfilmentServices};
