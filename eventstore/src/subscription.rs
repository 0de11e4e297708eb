//! Subscriptions: catch-up from any position, then live, with no gap or duplicate at the
//! switch. Each subscriber has its own task and bounded buffer, so a slow one slows only
//! itself; it reads only durable events.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::envelope::RecordedEvent;
use crate::error::Error;
use crate::ids::Position;
use crate::reads::read_events;
use crate::segment::LogCursor;
use crate::shared::Shared;
use crate::store::EventStore;

impl EventStore {
    /// Follows the log from `from`: first the events already stored, then new ones as
    /// they become durable, in position order, with no gap or duplicate at the switch.
    /// Each subscription has its own bounded buffer: a slow subscriber slows only itself.
    /// Must be called within a tokio runtime.
    pub fn subscribe(&self, from: Position) -> Subscription {
        let (sender, receiver) = mpsc::channel(self.shared.config.subscription_buffer);
        let shared = self.shared.clone();
        tokio::spawn(follow(shared, from.0, sender));
        Subscription { receiver }
    }
}

/// A live feed of the log from some position. Ends (returns `None`) when the store closes.
#[derive(Debug)]
pub struct Subscription {
    receiver: mpsc::Receiver<Result<RecordedEvent, Error>>,
}

impl Subscription {
    /// The next event, in position order; `None` when the store has closed.
    pub async fn next(&mut self) -> Option<Result<RecordedEvent, Error>> {
        self.receiver.recv().await
    }
}

/// Reads from the log as it grows and feeds one subscriber.
async fn follow(
    shared: Arc<Shared>,
    from: u64,
    sender: mpsc::Sender<Result<RecordedEvent, Error>>,
) {
    let mut durable_rx = shared.durable.subscribe();
    let mut cursor: Option<LogCursor> = None;
    let mut position = from;
    loop {
        let durable = *durable_rx.borrow_and_update();
        if position < durable.next_position {
            let reader_shared = shared.clone();
            let chunk = tokio::task::spawn_blocking(move || {
                let mut cursor = match cursor {
                    Some(cursor) => cursor,
                    None => reader_shared.cursor_at(position)?,
                };
                let events = read_events(&mut cursor, &durable, 512)?;
                Ok::<_, Error>((cursor, events))
            })
            .await;
            let (next_cursor, events) = match chunk {
                Ok(Ok(chunk)) => chunk,
                Ok(Err(error)) => {
                    let _ = sender.send(Err(error)).await;
                    return;
                }
                Err(_) => return,
            };
            cursor = Some(next_cursor);
            for event in events {
                position = event.position.0 + 1;
                tokio::select! {
                    sent = sender.send(Ok(event)) => if sent.is_err() {
                        return; // The subscriber went away.
                    },
                    () = shared.closed.cancelled() => return,
                }
            }
            continue;
        }
        tokio::select! {
            changed = durable_rx.changed() => if changed.is_err() { return },
            () = shared.closed.cancelled() => return,
            () = sender.closed() => return,
        }
    }
}
