//! Publishing: events become records of per-partition record batches, which a background
//! task sends to the sidecar.
//!
//! ```text
//!  publish(&event) ──▶ wait for buffer space (back-pressure: max_in_flight_bytes)
//!        │             encode: key, prost value, headers id/type/source/traceparent
//!        ▼
//!   Accumulator (one mutex): partitioner ─▶ PartitionQueue (open batch ─▶ sealed batches)
//!        │ wake                                   ▲ outcomes
//!        ▼                                        │
//!   sender task: poll_transmit ─▶ one Publish request per batch, each on its own stream
//! ```
//!
//! The publishing caller does the encoding itself, straight into the partition's open
//! [`BatchBuilder`](sidestream_log::batch::BatchBuilder) under a short lock: no task, channel
//! message or heap allocation per event (the header values are formatted on the stack). The
//! background sender seals batches by the rules (full, partition idle, linger, flush),
//! numbers them for the idempotent producer, sends them, retries, and completes the receipts.

mod accumulator;
mod partition_queue;
mod producer;
mod receipt;
mod sender;
mod standard_headers;

#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use sidestream_proto::v1;

use crate::Headers;

pub(crate) use accumulator::BatchConfig;
pub(crate) use producer::Producer;
pub use receipt::{PendingReceipt, PendingReceipts, Receipt};
pub(crate) use sender::{body_name as sender_body_name, run as run_sender};

/// When the sidecar acknowledges a publish, and so when its [`Receipt`] resolves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Acks {
    /// Once the batch is validated and handed to the partition: no offset in the receipt, and
    /// the event can be lost if the sidecar fails right after.
    None,
    /// Once the partition's leader appended the batch to its own log. The event can be lost if
    /// the leader fails before the replica set commits it.
    Leader,
    /// Once a majority of the replica set holds the batch (it is committed). The default.
    #[default]
    All,
}

impl Acks {
    pub(crate) fn wire(self) -> v1::Acks {
        match self {
            Self::None => v1::Acks::None,
            Self::Leader => v1::Acks::Leader,
            Self::All => v1::Acks::All,
        }
    }
}

impl fmt::Display for Acks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Leader => "leader",
            Self::All => "all",
        })
    }
}

impl FromStr for Acks {
    type Err = ParseAcksError;

    /// `none`, `leader` or `all`, as the CLI's `--acks` takes them.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "none" => Ok(Self::None),
            "leader" => Ok(Self::Leader),
            "all" => Ok(Self::All),
            _ => Err(ParseAcksError {
                text: text.to_owned(),
            }),
        }
    }
}

/// A string that is not `none`, `leader` or `all`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("acks {text:?} is not one of none, leader, all")]
pub struct ParseAcksError {
    text: String,
}

/// An event as bytes, for tools that do not know its type (the CLI's `produce` and
/// `consume`).
///
/// Published with [`Client::publish_raw`](crate::Client::publish_raw): the SDK adds the `id`,
/// `source` and `traceparent` headers unless `headers` has them already, and never a `type`
/// of its own (see [`headers`](crate::headers) for their forms). Its timestamp is the publish
/// time, or the original one for a delivered event published again. Received with [`Client::subscribe_raw`](crate::Client::subscribe_raw):
/// every header the record has, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawEvent {
    /// The partitioning key; `None` spreads events over the partitions (sticky round-robin).
    pub key: Option<Bytes>,
    /// The value (empty for a record without one, such as a tombstone).
    pub value: Bytes,
    /// Headers, in order.
    pub headers: Headers,
}

impl RawEvent {
    /// An event of this value, without key or headers.
    pub fn new(value: impl Into<Bytes>) -> Self {
        Self {
            key: None,
            value: value.into(),
            headers: Headers::new(),
        }
    }

    /// The same event with `key`.
    #[must_use]
    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// The same event with one more header.
    #[must_use]
    pub fn with_header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers.push(name, value);
        self
    }

    /// The value of the first header named `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.get(name)
    }
}
