//! The backend's producer, with delivery reports counted per batch.
//!
//! rdkafka's `FutureProducer` makes a one-shot channel and boxes its sender for every record,
//! and the record's delivery report completes it on the producer's polling thread: two
//! allocations per record, freed on another thread. Here every record of a batch carries a
//! clone of one [`Pending`] instead (a reference count, no allocation); its delivery report
//! counts down, keeps the first error, and wakes the batch's task when the last one is in.

use std::future::poll_fn;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures::task::AtomicWaker;
use parking_lot::Mutex;
use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

/// The producer every publish, retry and dead-letter copy of a [`crate::KafkaBus`] goes through.
pub(crate) type Producer = ThreadedProducer<Reports>;

/// The producer's context: hands each delivery report to the record's [`Pending`].
pub(crate) struct Reports;

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = Arc<Pending>;

    fn delivery(&self, result: &DeliveryResult<'_>, pending: Arc<Pending>) {
        pending.report(result.as_ref().err().map(|(e, _)| e.clone()));
    }
}

/// The delivery reports a group of records still waits for.
///
/// Starts with one hold, the sender's: the count cannot reach zero while records are still
/// being handed over, however fast their reports come back. [`Pending::wait`] gives the hold up.
pub(crate) struct Pending {
    left: AtomicUsize,
    error: Mutex<Option<RdError>>,
    waker: AtomicWaker,
}

impl Pending {
    pub(crate) fn new() -> Arc<Pending> {
        Arc::new(Pending { left: AtomicUsize::new(1), error: Mutex::new(None), waker: AtomicWaker::new() })
    }

    fn count(&self) {
        self.left.fetch_add(1, Ordering::AcqRel);
    }

    fn report(&self, error: Option<RdError>) {
        if let Some(e) = error {
            self.error.lock().get_or_insert(e);
        }
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.waker.wake();
        }
    }

    /// Hands `record` to librdkafka, counted in this group; waits while its queue is full.
    pub(crate) async fn send<'a>(
        self: &Arc<Self>,
        producer: &Producer,
        mut record: BaseRecord<'a, str, [u8], Arc<Pending>>,
    ) -> Result<(), RdError> {
        // Counted before the hand-over: the report may come back before `send` returns.
        self.count();
        loop {
            match producer.send(record) {
                Ok(()) => return Ok(()),
                Err((RdError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((e, _)) => {
                    // Never reported: uncount it (the sender's hold keeps the count above zero).
                    self.left.fetch_sub(1, Ordering::AcqRel);
                    return Err(e);
                }
            }
        }
    }

    /// Gives up the sender's hold and waits for every report; the first failure, if any.
    /// Call once, after the last [`Pending::send`].
    pub(crate) async fn wait(self: Arc<Self>) -> Result<(), RdError> {
        self.report(None);
        poll_fn(|cx| {
            if self.left.load(Ordering::Acquire) == 0 {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            if self.left.load(Ordering::Acquire) == 0 {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
        match self.error.lock().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::task::{Context, Poll};

    use futures::FutureExt;

    use super::*;

    #[tokio::test]
    async fn reports_that_come_back_before_the_wait_complete_it() {
        let p = Pending::new();
        p.count();
        p.count();
        p.report(None);
        p.report(None);
        assert!(p.wait().await.is_ok());
    }

    #[test]
    fn the_wait_ends_with_the_last_report_and_keeps_the_first_error() {
        let p = Pending::new();
        for _ in 0..3 {
            p.count();
        }
        let mut wait = Box::pin(p.clone().wait());
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        assert!(wait.poll_unpin(&mut cx).is_pending());
        p.report(Some(RdError::Canceled));
        p.report(Some(RdError::NoMessageReceived));
        assert!(wait.poll_unpin(&mut cx).is_pending(), "one report is still out");
        p.report(None);
        match wait.poll_unpin(&mut cx) {
            Poll::Ready(Err(RdError::Canceled)) => {}
            other => panic!("expected the first error, got {other:?}"),
        }
    }
}
