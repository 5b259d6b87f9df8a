//! What a publish returns: a [`Receipt`] once the sidecar acknowledged the event, through a
//! [`PendingReceipt`] future while it is on its way ([`PendingReceipts`] for the events of a
//! batch publish, which keeps one entry per run of events in the same record batch).
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

/// The receipts of the events of one batch publish
/// ([`Client::publish_batch_nowait`](crate::Client::publish_batch_nowait),
/// [`Client::publish_raw_batch_nowait`](crate::Client::publish_raw_batch_nowait)), in the
/// order the events were given: resolves to their [`Receipt`]s once every event's record
/// batch is acknowledged, or to the first error in that order.
///
/// The events are not published atomically: each record batch they went into succeeds or fails
/// on its own. [`into_receipts`](Self::into_receipts) gives each event's outcome. Dropping
/// this future does not cancel the publish.
#[must_use = "pending receipts tell whether the events were stored; await them or drop them knowingly"]
pub struct PendingReceipts {
    /// Runs of consecutive events that went into the same record batch, in event order.
    runs: Vec<Run>,
    /// How many events.
    len: usize,
    /// The base offset of each run before `runs[base_offsets.len()]` (they are awaited in
    /// order).
    base_offsets: Vec<Option<u64>>,
}

/// Events `first .. first + count` of one record batch.
struct Run {
    completion: Arc<BatchCompletion>,
    first: u32,
    count: u32,
    slot: Option<usize>,
}

impl PendingReceipts {
    pub(crate) fn new() -> Self {
        Self {
            runs: Vec::new(),
            len: 0,
            base_offsets: Vec::new(),
        }
    }

    /// Adds the receipt of the next event, record `index` of the batch of `completion`
    /// (taking a handle on the batch only when the event starts a new run).
    pub(crate) fn push(&mut self, completion: &Arc<BatchCompletion>, index: u32) {
        self.len += 1;
        if let Some(run) = self.runs.last_mut()
            && Arc::ptr_eq(&run.completion, completion)
            && run.first.checked_add(run.count) == Some(index)
        {
            run.count += 1;
            return;
        }
        self.runs.push(Run {
            completion: Arc::clone(completion),
            first: index,
            count: 1,
            slot: None,
        });
    }

    /// How many events.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no event was published.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Each event's own receipt, in the order the events were given.
    pub fn into_receipts(self) -> Vec<PendingReceipt> {
        let mut receipts = Vec::with_capacity(self.len);
        for run in self.runs {
            receipts.extend(
                (run.first..run.first + run.count)
                    .map(|index| PendingReceipt::new(Arc::clone(&run.completion), index)),
            );
        }
        receipts
    }

    /// Waits until every event's record batch is acknowledged, without building the
    /// receipts.
    ///
    /// # Errors
    ///
    /// The first error in event order.
    pub async fn acknowledged(mut self) -> Result<(), Error> {
        std::future::poll_fn(|cx| self.poll_runs(cx)).await
    }

    /// Polls the runs in order; ready once every run is done, or one failed.
    fn poll_runs(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        while let Some(run) = self.runs.get_mut(self.base_offsets.len()) {
            match run.completion.poll_done(cx, &mut run.slot) {
                Poll::Ready(Ok(base_offset)) => self.base_offsets.push(base_offset),
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl Future for PendingReceipts {
    type Output = Result<Vec<Receipt>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Err(error) = std::task::ready!(this.poll_runs(cx)) {
            return Poll::Ready(Err(error));
        }
        let mut receipts = Vec::with_capacity(this.len);
        for (run, base_offset) in this.runs.iter().zip(&this.base_offsets) {
            receipts.extend((run.first..run.first + run.count).map(|index| Receipt {
                topic: Arc::clone(&run.completion.topic),
                partition: run.completion.partition,
                offset: base_offset.and_then(|base| base.checked_add(u64::from(index))),
            }));
        }
        Poll::Ready(Ok(receipts))
    }
}

impl fmt::Debug for PendingReceipts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingReceipts")
            .field("events", &self.len)
            .field("record_batches", &self.runs.len())
            .field("acknowledged", &self.base_offsets.len())
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

    #[test]
    fn a_batchs_receipts_keep_event_order_across_record_batches_and_report_the_first_failure() {
        let (a, b) = (
            Arc::new(BatchCompletion::new("t".into(), 0)),
            Arc::new(BatchCompletion::new("t".into(), 1)),
        );
        // Events 0..3 in batch a at 4..7, event 3 in batch b at 0, events 4..6 in a at 7..9.
        let mut receipts = PendingReceipts::new();
        for (completion, index) in [(&a, 4), (&a, 5), (&a, 6), (&b, 0), (&a, 7), (&a, 8)] {
            receipts.push(completion, index);
        }
        assert_eq!((receipts.len(), receipts.runs.len()), (6, 3));
        let waker = Waker::noop();
        b.complete(Ok(Some(40)));
        assert!(
            poll(&mut receipts, waker).is_pending(),
            "batch a is not done"
        );
        a.complete(Ok(Some(100)));
        let Poll::Ready(Ok(done)) = poll(&mut receipts, waker) else {
            panic!("every batch is done");
        };
        let offsets: Vec<(u32, Option<u64>)> =
            done.iter().map(|r| (r.partition, r.offset)).collect();
        assert_eq!(
            offsets,
            [
                (0, Some(104)),
                (0, Some(105)),
                (0, Some(106)),
                (1, Some(40)),
                (0, Some(107)),
                (0, Some(108)),
            ]
        );

        let (ok, failed) = (
            Arc::new(BatchCompletion::new("t".into(), 0)),
            Arc::new(BatchCompletion::new("t".into(), 1)),
        );
        let mut receipts = PendingReceipts::new();
        receipts.push(&ok, 0);
        receipts.push(&failed, 0);
        failed.complete(Err(Error::Closed));
        ok.complete(Ok(Some(7)));
        let each: Vec<Result<Receipt, Error>> = receipts
            .into_receipts()
            .into_iter()
            .map(|mut receipt| match poll(&mut receipt, waker) {
                Poll::Ready(outcome) => outcome,
                Poll::Pending => panic!("both are done"),
            })
            .collect();
        assert!(matches!(
            each[0],
            Ok(Receipt {
                offset: Some(7),
                ..
            })
        ));
        assert!(matches!(each[1], Err(Error::Closed)));
        let mut receipts = PendingReceipts::new();
        receipts.push(&ok, 0);
        receipts.push(&failed, 0);
        assert!(matches!(
            poll(&mut receipts, waker),
            Poll::Ready(Err(Error::Closed))
        ));
    }
}
