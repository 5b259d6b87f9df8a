//! What a publish returns: a [`Receipt`] once the sidecar acknowledged the event, through a
//! [`PendingReceipt`] future while it is on its way.
//!
//! All events of one record batch share one [`BatchCompletion`]: the sender completes it once
//! with the batch's outcome, and each event's receipt reads its own offset from it
//! (`base_offset + index`). So publishing costs one small allocation per batch, not per event.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use crate::Error;

/// Where a published event went, after the acknowledgement the publish asked for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Receipt {
    /// The topic.
    pub topic: Arc<str>,
    /// The partition.
    pub partition: u32,
    /// The event's offset in the partition; `None` with [`Acks::None`](crate::Acks::None),
    /// where the sidecar answers before the offset is known.
    pub offset: Option<u64>,
}

/// A publish on its way: resolves to the [`Receipt`] once the event's batch is acknowledged,
/// or to the error that failed the batch.
///
/// Returned by [`Client::publish_nowait`](crate::Client::publish_nowait) and
/// [`Client::publish_raw_nowait`](crate::Client::publish_raw_nowait). The event is already in
/// the client's buffer: dropping this future does not cancel the publish.
#[must_use = "a pending receipt tells whether the event was stored; await it or drop it knowingly"]
pub struct PendingReceipt {
    completion: Arc<BatchCompletion>,
    index: u32,
    slot: Option<usize>,
}

impl PendingReceipt {
    pub(crate) fn new(completion: Arc<BatchCompletion>, index: u32) -> Self {
        Self {
            completion,
            index,
            slot: None,
        }
    }

    /// The topic the event goes to.
    pub fn topic(&self) -> &str {
        &self.completion.topic
    }

    /// The partition the event goes to (known as soon as it is buffered).
    pub fn partition(&self) -> u32 {
        self.completion.partition
    }
}

impl Future for PendingReceipt {
    type Output = Result<Receipt, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.completion
            .poll_done(cx, &mut this.slot)
            .map(|outcome| {
                outcome.map(|base_offset| Receipt {
                    topic: Arc::clone(&this.completion.topic),
                    partition: this.completion.partition,
                    offset: base_offset.and_then(|base| base.checked_add(u64::from(this.index))),
                })
            })
    }
}

impl fmt::Debug for PendingReceipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingReceipt")
            .field("topic", &self.completion.topic)
            .field("partition", &self.completion.partition)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

/// The outcome of one record batch, shared by the receipts of its events.
pub(crate) struct BatchCompletion {
    topic: Arc<str>,
    partition: u32,
    state: Mutex<State>,
}

enum State {
    /// Not acknowledged yet; the wakers of the receipts that wait.
    Pending(Vec<Waker>),
    /// The batch's base offset (`None` without offsets), or why it failed.
    Done(Result<Option<u64>, Error>),
}

impl BatchCompletion {
    pub(crate) fn new(topic: Arc<str>, partition: u32) -> Self {
        Self {
            topic,
            partition,
            state: Mutex::new(State::Pending(Vec::new())),
        }
    }

    /// Records the batch's outcome and wakes every receipt waiting on it. Only the first call
    /// counts.
    pub(crate) fn complete(&self, outcome: Result<Option<u64>, Error>) {
        let wakers = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            match &mut *state {
                State::Pending(wakers) => {
                    let wakers = std::mem::take(wakers);
                    *state = State::Done(outcome);
                    wakers
                }
                State::Done(_) => return,
            }
        };
        for waker in wakers {
            waker.wake();
        }
    }

    /// Whether the outcome is known.
    #[cfg(test)]
    pub(crate) fn is_done(&self) -> bool {
        matches!(
            *self.state.lock().unwrap_or_else(PoisonError::into_inner),
            State::Done(_)
        )
    }

    /// A future that resolves when the batch is done, to `Ok` or the batch's error.
    pub(crate) fn wait(self: Arc<Self>) -> BatchDone {
        BatchDone {
            completion: self,
            slot: None,
        }
    }

    /// Polls for the outcome; `slot` remembers where this waiter's waker is kept, so that
    /// polling again replaces it instead of adding another.
    fn poll_done(
        &self,
        cx: &mut Context<'_>,
        slot: &mut Option<usize>,
    ) -> Poll<Result<Option<u64>, Error>> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match &mut *state {
            State::Done(outcome) => Poll::Ready(outcome.clone()),
            State::Pending(wakers) => {
                if let Some(waker) = slot.and_then(|i| wakers.get_mut(i)) {
                    if !waker.will_wake(cx.waker()) {
                        waker.clone_from(cx.waker());
                    }
                } else {
                    *slot = Some(wakers.len());
                    wakers.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

/// Resolves when a batch is done (used by `flush`).
pub(crate) struct BatchDone {
    completion: Arc<BatchCompletion>,
    slot: Option<usize>,
}

impl Future for BatchDone {
    type Output = Result<(), Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.completion
            .poll_done(cx, &mut this.slot)
            .map(|outcome| outcome.map(|_| ()))
    }
}

#[cfg(test)]
mod tests {
    use std::task::Wake;

    use super::*;

    struct CountingWaker(Mutex<u32>);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            *self.0.lock().unwrap() += 1;
        }
    }

    fn poll<F: Future + Unpin>(future: &mut F, waker: &Waker) -> Poll<F::Output> {
        Pin::new(future).poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn receipts_read_their_offset_from_the_batch() {
        let completion = Arc::new(BatchCompletion::new("orders".into(), 3));
        let counter = Arc::new(CountingWaker(Mutex::new(0)));
        let waker = Waker::from(Arc::clone(&counter));
        let mut first = PendingReceipt::new(Arc::clone(&completion), 0);
        let mut third = PendingReceipt::new(Arc::clone(&completion), 2);
        assert_eq!(first.partition(), 3);
        assert!(poll(&mut first, &waker).is_pending());
        assert!(
            poll(&mut first, &waker).is_pending(),
            "polling again keeps one waker"
        );
        assert!(poll(&mut third, &waker).is_pending());

        completion.complete(Ok(Some(100)));
        assert_eq!(
            *counter.0.lock().unwrap(),
            2,
            "each waiting receipt woken once"
        );
        let Poll::Ready(Ok(receipt)) = poll(&mut third, &waker) else {
            panic!("done");
        };
        assert_eq!(
            receipt,
            Receipt {
                topic: "orders".into(),
                partition: 3,
                offset: Some(102)
            }
        );
        assert!(matches!(
            poll(&mut first, &waker),
            Poll::Ready(Ok(Receipt {
                offset: Some(100),
                ..
            }))
        ));
        completion.complete(Err(Error::Closed));
        assert!(completion.is_done());
        assert!(
            matches!(poll(&mut first, &waker), Poll::Ready(Ok(_))),
            "the first outcome stays"
        );
    }

    #[test]
    fn failures_and_acks_none_reach_every_receipt() {
        let completion = Arc::new(BatchCompletion::new("t".into(), 0));
        completion.complete(Ok(None));
        let waker = Waker::noop();
        let mut receipt = PendingReceipt::new(Arc::clone(&completion), 5);
        assert!(matches!(
            poll(&mut receipt, waker),
            Poll::Ready(Ok(Receipt { offset: None, .. }))
        ));

        let failed = Arc::new(BatchCompletion::new("t".into(), 0));
        let mut done = Arc::clone(&failed).wait();
        assert!(poll(&mut done, waker).is_pending());
        failed.complete(Err(Error::Closed));
        assert!(matches!(
            poll(&mut done, waker),
            Poll::Ready(Err(Error::Closed))
        ));
    }
}
