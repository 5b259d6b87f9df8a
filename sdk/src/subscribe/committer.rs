//! Committing a group subscription's offsets: every `commit_interval` in the background, on
//! demand ([`Subscription::commit`](super::Subscription::commit)), and once more when the
//! subscription closes or is dropped, before its stream ends (so the commit still carries a
//! generation the group knows).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use sidestream_proto::ErrorCode;
use sidestream_proto::v1::{CommitOffset, request, response};
use tokio::sync::watch;

use super::positions::Positions;
use super::reader::stopped;
use crate::Error;
use crate::client::{Link, RetryPolicy};
use crate::publish::sender_body_name;

pub(crate) struct Committer {
    pub(crate) link: Arc<Link>,
    pub(crate) topic: String,
    /// `None`: a subscription of its own, which commits nothing.
    pub(crate) group: Option<String>,
    pub(crate) positions: Arc<Mutex<Positions>>,
    pub(crate) request_timeout: Duration,
    /// Commits go one round at a time, so an older offset never overtakes a newer one.
    pub(crate) serial: tokio::sync::Mutex<()>,
}

impl Committer {
    /// Commits every partition whose committable offset moved.
    ///
    /// # Errors
    ///
    /// The first commit that failed (after retries); the others are still attempted. A commit
    /// refused with `STALE_GENERATION` (the partition moved to another member) is not an
    /// error: that member owns the offset now.
    pub(crate) async fn commit(&self) -> Result<(), Error> {
        let Some(group) = &self.group else {
            return Ok(());
        };
        let _serial = self.serial.lock().await;
        let due = self.positions().commits_due();
        let mut first_error = None;
        for commit in due {
            let body = request::Body::CommitOffset(CommitOffset {
                group: group.clone(),
                topic: self.topic.clone(),
                partition: commit.partition,
                offset: commit.offset,
                generation: Some(commit.generation),
            });
            let deadline = Instant::now() + self.request_timeout;
            let result = self
                .link
                .call_retrying(body, deadline, RetryPolicy::Idempotent)
                .await
                .map_err(|error| error.into_error(Some(&self.topic), Some(commit.partition)));
            match result {
                Ok(Some(response::Body::CommitOffset(_))) => {
                    tracing::trace!(topic = %self.topic, partition = commit.partition, offset = commit.offset, "committed");
                    self.positions().committed(&commit);
                }
                Err(error) if error.code() == Some(ErrorCode::StaleGeneration) => {
                    // Stays due: after a resubscribe the new assignment's generation is
                    // applied soon and the commit goes again with it; a partition that
                    // moved to another member leaves the due list with its assignment.
                    tracing::debug!(topic = %self.topic, partition = commit.partition, %error, "commit refused: older generation");
                }
                Ok(other) => {
                    first_error.get_or_insert(Error::Protocol {
                        message: format!(
                            "commit_offset answered with {}",
                            sender_body_name(other.as_ref())
                        ),
                    });
                }
                Err(error) => {
                    tracing::debug!(topic = %self.topic, partition = commit.partition, %error, "commit failed");
                    first_error.get_or_insert(error);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Commits every `interval` until `stop`, commits a last time, then stops the reader
    /// (ending the stream, and with it the group membership).
    pub(crate) async fn run(
        self: Arc<Self>,
        interval: Duration,
        mut stop: watch::Receiver<bool>,
        stop_reader: watch::Sender<bool>,
    ) -> Result<(), Error> {
        let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(1)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            tokio::select! {
                () = stopped(&mut stop) => break,
                _ = ticker.tick() => {
                    if let Err(error) = self.commit().await {
                        tracing::debug!(topic = %self.topic, %error, "background commit failed");
                    }
                }
            }
        }
        let last = self.commit().await;
        let _ = stop_reader.send(true);
        last
    }

    fn positions(&self) -> MutexGuard<'_, Positions> {
        self.positions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
