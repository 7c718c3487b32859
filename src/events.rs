//! Events: every committed move, published in commit order.
//!
//! Each move a command commits is written to the store's history in the same transaction as
//! the records it moved (a transactional outbox: a move is published if and only if it was
//! committed). [`Engine::events`](crate::Engine::events) reads them from a cursor, and a
//! [`Subscription`] follows them as they come. A consumer keeps the [`EventPosition`] of the
//! last event it handled and reads on from there after a restart: nothing is lost, and an
//! event is read again only if the consumer did not record that it handled it.
//!
//! Webhooks (the `http` feature) deliver the same events to an HTTP endpoint; what they need
//! kept between runs, each hook's cursor and its delivery log, is kept by the store too
//! ([`Delivery`]).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Engine;
use crate::error::StoreError;
use crate::store::{HistoryEntry, Store};

/// Where an event sits in a store's log. Positions only grow in commit order, so reading
/// "after" the last one handled misses nothing and repeats nothing.
///
/// On PostgreSQL a position is the committing transaction's ID and the row's sequence
/// number: transactions draw sequence numbers before they commit, so a number alone is not
/// commit order, and events are only read from transactions older than every one still
/// running. On SQLite and the memory store, where one writer commits at a time, the
/// transaction part is 0. Written as `transaction-sequence` (`0-42`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventPosition {
    transaction: u64,
    sequence: u64,
}

impl EventPosition {
    /// The position of a store's `sequence`-th event, in a store with one writer.
    pub fn sequential(sequence: u64) -> EventPosition {
        EventPosition {
            transaction: 0,
            sequence,
        }
    }

    /// The position of the event numbered `sequence` of transaction `transaction`.
    pub fn new(transaction: u64, sequence: u64) -> EventPosition {
        EventPosition {
            transaction,
            sequence,
        }
    }

    /// The committing transaction's ID (0 in a store with one writer).
    pub fn transaction(&self) -> u64 {
        self.transaction
    }

    /// The event's sequence number in the store.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// In a store with one writer, whose every event has transaction part 0: the sequence
    /// number the events after `after` follow, or `None` when `after` is past them all.
    pub(crate) fn sequence_after(after: Option<&EventPosition>) -> Option<u64> {
        match after {
            None => Some(0),
            Some(p) if p.transaction == 0 => Some(p.sequence),
            Some(_) => None,
        }
    }
}

impl fmt::Display for EventPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.transaction, self.sequence)
    }
}

/// Why a text is not an [`EventPosition`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an event position (two numbers joined by '-', such as 0-42)")]
pub struct BadEventPosition(pub String);

impl FromStr for EventPosition {
    type Err = BadEventPosition;

    fn from_str(text: &str) -> Result<EventPosition, BadEventPosition> {
        let bad = || BadEventPosition(text.to_owned());
        let (transaction, sequence) = text.split_once('-').ok_or_else(bad)?;
        let number = |part: &str| {
            // u64's parser takes a leading '+', which a position never has.
            if part.starts_with('+') {
                return Err(bad());
            }
            part.parse::<u64>().map_err(|_| bad())
        };
        Ok(EventPosition::new(number(transaction)?, number(sequence)?))
    }
}

impl Serialize for EventPosition {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EventPosition {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// One committed move and where it sits in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PublishedEvent {
    /// Its position: the cursor to read on from.
    pub position: EventPosition,
    /// The move, as the history keeps it.
    #[serde(flatten)]
    pub entry: HistoryEntry,
}

/// How one attempt to deliver an event to a webhook ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "Outcome", rename_all = "PascalCase")]
#[non_exhaustive]
pub enum DeliveryOutcome {
    /// The endpoint answered a 2xx status: the event is delivered.
    Delivered {
        /// The status it answered.
        status: u16,
    },
    /// The endpoint answered another status, or could not be reached: the event is sent
    /// again later.
    Failed {
        /// The status it answered, if it answered.
        status: Option<u16>,
        /// What went wrong, for a person.
        reason: String,
    },
}

/// One attempt to deliver one event to one webhook, as the delivery log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Delivery {
    /// The webhook's name.
    pub hook: String,
    /// The event's position.
    pub position: EventPosition,
    /// Which attempt this was for the event (1 for the first).
    pub attempt: u32,
    /// When the attempt ended.
    pub at: DateTime<Utc>,
    /// How it ended.
    #[serde(flatten)]
    pub outcome: DeliveryOutcome,
}

impl DeliveryOutcome {
    /// `Delivered` or `Failed`.
    pub fn label(&self) -> &'static str {
        match self {
            DeliveryOutcome::Delivered { .. } => "Delivered",
            DeliveryOutcome::Failed { .. } => "Failed",
        }
    }

    /// What a person reads of it: the status delivered with, or why it failed.
    pub fn detail(&self) -> String {
        match self {
            DeliveryOutcome::Delivered { status } => format!("HTTP {status}"),
            DeliveryOutcome::Failed { reason, .. } => reason.clone(),
        }
    }
}

impl Delivery {
    /// Whether the attempt delivered the event.
    pub fn delivered(&self) -> bool {
        matches!(self.outcome, DeliveryOutcome::Delivered { .. })
    }
}

/// The longest batch one read of the log returns.
pub const MAX_EVENTS_PER_READ: usize = 1_000;

/// Follows a store's events from a cursor: each [`Subscription::next_batch`] answers the
/// events committed since the last one it answered, waiting for some when there are none.
pub struct Subscription {
    store: Arc<dyn Store>,
    after: Option<EventPosition>,
    poll: Duration,
    batch: usize,
}

impl Subscription {
    /// A subscription to `store`'s events after `after` (from the first when `None`).
    pub fn new(store: Arc<dyn Store>, after: Option<EventPosition>) -> Subscription {
        Subscription {
            store,
            after,
            poll: Duration::from_millis(50),
            batch: 100,
        }
    }

    /// Reads at most `batch` events at a time (1 to [`MAX_EVENTS_PER_READ`]).
    pub fn batch(mut self, batch: usize) -> Subscription {
        self.batch = batch.clamp(1, MAX_EVENTS_PER_READ);
        self
    }

    /// Looks for new events every `poll` while waiting.
    pub fn poll_every(mut self, poll: Duration) -> Subscription {
        self.poll = poll.max(Duration::from_millis(1));
        self
    }

    /// The position of the last event answered: where the subscription reads on from.
    pub fn position(&self) -> Option<EventPosition> {
        self.after
    }

    /// The next events, waiting up to `wait` for one; empty when none came in that time.
    pub fn next_batch(&mut self, wait: Duration) -> Result<Vec<PublishedEvent>, StoreError> {
        let deadline = Instant::now() + wait;
        loop {
            let events = self.store.events_after(self.after.as_ref(), self.batch)?;
            if let Some(last) = events.last() {
                self.after = Some(last.position);
                return Ok(events);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(events);
            }
            std::thread::sleep(self.poll.min(deadline - now));
        }
    }
}

impl Engine {
    /// Up to `limit` (at most [`MAX_EVENTS_PER_READ`]) committed moves after `after` (from
    /// the first when `None`), in commit order.
    pub fn events(
        &self,
        after: Option<&EventPosition>,
        limit: usize,
    ) -> Result<Vec<PublishedEvent>, StoreError> {
        self.store()
            .events_after(after, limit.min(MAX_EVENTS_PER_READ))
    }

    /// The position of the last committed move, or `None` when there is none: subscribe
    /// from it to follow only what comes next.
    pub fn last_event(&self) -> Result<Option<EventPosition>, StoreError> {
        self.store().last_event()
    }

    /// Follows the committed moves after `after` (from the first when `None`).
    pub fn subscribe(&self, after: Option<EventPosition>) -> Subscription {
        Subscription::new(Arc::clone(self.store()), after)
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("after", &self.after)
            .field("poll", &self.poll)
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_reads_back_as_written_and_orders_by_transaction_first() {
        let position = EventPosition::new(7, 42);
        assert_eq!(position.to_string(), "7-42");
        assert_eq!("7-42".parse::<EventPosition>(), Ok(position));
        assert!(EventPosition::new(7, 42) < EventPosition::new(8, 1));
        assert!(EventPosition::sequential(2) > EventPosition::sequential(1));
        for bad in ["", "7", "7-", "-1", "7-x", "+7-1", "7-+1", "1-2-3"] {
            assert!(bad.parse::<EventPosition>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_position_is_serialized_as_its_text() {
        let json = serde_json::to_string(&EventPosition::new(3, 9)).unwrap();
        assert_eq!(json, "\"3-9\"");
        assert_eq!(
            serde_json::from_str::<EventPosition>(&json).unwrap(),
            EventPosition::new(3, 9)
        );
        assert!(serde_json::from_str::<EventPosition>("\"3\"").is_err());
    }
}
