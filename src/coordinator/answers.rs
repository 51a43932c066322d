//! Replicas' answers to one batch of requests, awaited in place by the
//! task that sent them.
//!
//! A task per answer (a `JoinSet`) costs a spawn, a schedule and a wake-up
//! per answer, for a future that only waits on a oneshot. Here the
//! coordinating task polls its few answers itself (one per other replica
//! per batch of keys, `batches.rs`): each wake-up polls every answer still
//! open, which for so few is cheaper than the tasks it replaces.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// An answer that is a task's own future, boxed to sit beside others.
pub(super) type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Open answers, each tagged with what it answers (a key's index): any
/// future that can be polled in place (a boxed one, or a peer request's
/// `Pending` itself).
pub(super) struct Answers<F> {
    open: Vec<(usize, F)>,
}

impl<F> Default for Answers<F> {
    fn default() -> Self {
        Self { open: Vec::new() }
    }
}

impl<F: Future + Unpin> Answers<F> {
    /// Adds an answer to wait for, tagged `tag`.
    pub(super) fn push(&mut self, tag: usize, answer: F) {
        self.open.push((tag, answer));
    }

    /// Whether every answer has been taken.
    pub(super) fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// The answers still open, with their tags, no longer waited for here.
    pub(super) fn into_open(self) -> Vec<(usize, F)> {
        self.open
    }

    /// The next answer to come in, or `None` when none is open.
    pub(super) async fn next(&mut self) -> Option<(usize, F::Output)> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// The answers already in, without waiting for the others.
    pub(super) fn ready(&mut self) -> Vec<(usize, F::Output)> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut out = Vec::new();
        while let Poll::Ready(Some(answer)) = self.poll_next(&mut cx) {
            out.push(answer);
        }
        out
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<(usize, F::Output)>> {
        if self.open.is_empty() {
            return Poll::Ready(None);
        }
        for i in 0..self.open.len() {
            if let Poll::Ready(out) = Pin::new(&mut self.open[i].1).poll(cx) {
                let (tag, _) = self.open.swap_remove(i);
                return Poll::Ready(Some((tag, out)));
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    // Proves answers come out as they finish, tagged, `ready` takes only
    // those already in, and the end is `None`: three oneshots answered
    // out of order.
    #[tokio::test]
    async fn yields_answers_as_they_finish() {
        let mut answers: Answers<Boxed<u32>> = Answers::default();
        let mut senders = Vec::new();
        for tag in 0..3 {
            let (tx, rx) = oneshot::channel::<u32>();
            senders.push(tx);
            answers.push(tag, Box::pin(async move { rx.await.unwrap_or(0) }));
        }
        assert!(answers.ready().is_empty());
        let mut senders = senders.into_iter();
        let (first, second, third) = (senders.next(), senders.next(), senders.next());
        if let Some(tx) = second {
            let _ = tx.send(20);
        }
        assert_eq!(answers.next().await, Some((1, 20)));
        if let Some(tx) = third {
            let _ = tx.send(30);
        }
        assert_eq!(answers.ready(), vec![(2, 30)]);
        drop(first);
        assert_eq!(answers.next().await, Some((0, 0)));
        assert!(answers.is_empty());
        assert_eq!(answers.next().await, None);
    }
}
