//! The one wait for quorums: a batch of keys, each wanting R or W
//! answers of its N replicas, and the loop that feeds the answers in
//! until each key has its quorum, one key cannot get it (the batch fails
//! at once), or the deadline passes. Coordinated reads (and the reads
//! before a read-modify-write) and replicated writes both wait here.

use std::future::Future;
use tokio::time::Instant;

/// One key's quorum in flight: `required` successes wanted of the
/// `contacted` replicas, with `open` answers still to come.
#[derive(Debug)]
pub(super) struct Tally<T> {
    /// Replicas the key has (N), for the error.
    pub(super) contacted: usize,
    /// Successes wanted (R or W).
    pub(super) required: usize,
    /// Answers still to come.
    open: usize,
    /// The successes so far, up to `required`.
    pub(super) got: Vec<T>,
}

impl<T> Tally<T> {
    /// A key wanting `required` of `contacted`, nothing asked yet.
    pub(super) fn new(required: usize, contacted: usize) -> Self {
        Self {
            contacted,
            required,
            open: 0,
            got: Vec::with_capacity(required),
        }
    }

    /// A request that will answer for this key went out.
    pub(super) fn asked(&mut self) {
        self.open += 1;
    }

    /// Whether the quorum is reached.
    pub(super) fn reached(&self) -> bool {
        self.got.len() >= self.required
    }

    /// Whether the quorum can no longer be reached.
    pub(super) fn hopeless(&self) -> bool {
        self.got.len() + self.open < self.required
    }

    fn settled(&self) -> bool {
        self.reached() || self.hopeless()
    }

    /// Takes one answer (`None`: that replica failed). A success past the
    /// quorum comes back: a read repairs the replicas that answer late.
    fn answer(&mut self, answer: Option<T>) -> Option<T> {
        self.open = self.open.saturating_sub(1);
        match answer {
            Some(success) if !self.reached() => {
                self.got.push(success);
                None
            }
            late => late,
        }
    }
}

/// Where a batch's answers come from: each call yields the answers of
/// one reply, by key index (`None` for a replica that failed the key),
/// or `None` once no reply is open.
pub(super) trait Replies<T> {
    fn next(&mut self) -> impl Future<Output = Option<Vec<(usize, Option<T>)>>> + Send;
}

/// When a wait for a batch's quorums ends early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Until {
    /// At the first tally that cannot reach its quorum: the batch fails
    /// as a whole (a read's keys, a fan-out).
    AnyFails,
    /// Only when every tally is settled: each key stands or fails on its
    /// own (a batch of writes, each a command of its own).
    EachSettled,
}

/// Feeds `replies` to `tallies` until every tally is settled, one cannot
/// reach its quorum (with [`Until::AnyFails`]), no answer is open, or
/// `deadline`. Returns the successes that came after their key's quorum.
/// Answers not waited for are dropped: their requests went out, only the
/// answers are forgotten.
pub(super) async fn wait<T: Send>(
    tallies: &mut [Tally<T>],
    replies: &mut impl Replies<T>,
    deadline: Instant,
    until: Until,
) -> Vec<(usize, T)> {
    let fail_fast = until == Until::AnyFails;
    let mut late = Vec::new();
    let mut waiting = tallies.iter().filter(|t| !t.settled()).count();
    if fail_fast && tallies.iter().any(Tally::hopeless) {
        return late;
    }
    let _ = tokio::time::timeout_at(deadline, async {
        while waiting > 0 {
            let Some(batch) = replies.next().await else {
                return;
            };
            for (i, answer) in batch {
                let Some(tally) = tallies.get_mut(i) else {
                    continue;
                };
                let was_settled = tally.settled();
                if let Some(success) = tally.answer(answer) {
                    late.push((i, success));
                }
                if !was_settled && tally.settled() {
                    if fail_fast && tally.hopeless() {
                        return;
                    }
                    waiting -= 1;
                }
            }
        }
    })
    .await;
    late
}

/// The tally that fails the batch: one that can no longer reach its
/// quorum, else one that did not reach it in time.
pub(super) fn failed<T>(tallies: &[Tally<T>]) -> Option<&Tally<T>> {
    tallies
        .iter()
        .find(|t| t.hopeless())
        .or_else(|| tallies.iter().find(|t| !t.reached()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::time::Duration;

    /// Scripted replies; once they run out, an open reply never comes.
    struct Script(VecDeque<Vec<(usize, Option<u8>)>>, bool);

    impl Replies<u8> for Script {
        async fn next(&mut self) -> Option<Vec<(usize, Option<u8>)>> {
            match self.0.pop_front() {
                Some(batch) => Some(batch),
                None if self.1 => std::future::pending().await,
                None => None,
            }
        }
    }

    fn tallies(n: usize, required: usize, asked: usize) -> Vec<Tally<u8>> {
        (0..n)
            .map(|_| {
                let mut tally = Tally::new(required, 3);
                (0..asked).for_each(|_| tally.asked());
                tally
            })
            .collect()
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_millis(50)
    }

    #[tokio::test]
    async fn every_key_reaches_its_quorum_and_late_answers_come_back() {
        let mut t = tallies(2, 2, 3);
        let mut script = Script(
            vec![
                vec![(0, Some(1)), (1, Some(1))],
                vec![(0, Some(2)), (1, None)],
                vec![(0, Some(3)), (1, Some(3))],
            ]
            .into(),
            true,
        );
        let late = wait(&mut t, &mut script, soon(), Until::AnyFails).await;
        assert!(t.iter().all(Tally::reached));
        assert_eq!(t[0].got, [1, 2]);
        assert_eq!(t[1].got, [1, 3]);
        assert_eq!(late, [(0, 3)]);
        assert!(failed(&t).is_none());
    }

    #[tokio::test]
    async fn a_key_that_cannot_reach_its_quorum_fails_the_batch_at_once() {
        let mut t = tallies(2, 2, 2);
        // Key 1 loses both replicas in the first reply: no need to wait
        // for key 0's second answer, which never comes.
        let mut script = Script(vec![vec![(0, Some(1)), (1, None), (1, None)]].into(), true);
        let started = Instant::now();
        wait(
            &mut t,
            &mut script,
            started + Duration::from_secs(5),
            Until::AnyFails,
        )
        .await;
        assert!(started.elapsed() < Duration::from_secs(1));
        let failed = failed(&t).map(|t| (t.required, t.got.len()));
        assert_eq!(failed, Some((2, 0)));
    }

    // Proves a batch of writes waits for every key: one key failing early
    // does not end the wait, and the others reach their quorum.
    #[tokio::test]
    async fn each_settled_waits_for_the_other_keys_after_one_fails() {
        let mut t = tallies(2, 2, 2);
        let mut script = Script(
            vec![vec![(0, Some(1)), (1, None), (1, None)], vec![(0, Some(2))]].into(),
            true,
        );
        wait(&mut t, &mut script, soon(), Until::EachSettled).await;
        assert!(t[0].reached(), "key 0 was not waited for");
        assert!(t[1].hopeless());
        // Hopeless before any answer, and still the others are waited for.
        let mut t = tallies(2, 2, 2);
        t[1] = Tally::new(2, 3);
        let mut script = Script(vec![vec![(0, Some(1)), (0, Some(2))]].into(), true);
        wait(&mut t, &mut script, soon(), Until::EachSettled).await;
        assert!(t[0].reached() && t[1].hopeless());
    }

    #[tokio::test]
    async fn a_key_short_at_the_deadline_fails_and_one_never_asked_fails_at_once() {
        let mut t = tallies(1, 2, 2);
        let mut script = Script(vec![vec![(0, Some(1))]].into(), true);
        wait(&mut t, &mut script, soon(), Until::AnyFails).await;
        assert!(!t[0].hopeless() && !t[0].reached());
        assert_eq!(failed(&t).map(|t| t.got.len()), Some(1));
        // Not enough replicas asked: hopeless before any answer.
        let mut t = tallies(1, 2, 1);
        let mut script = Script(VecDeque::new(), true);
        wait(
            &mut t,
            &mut script,
            Instant::now() + Duration::from_secs(5),
            Until::AnyFails,
        )
        .await;
        assert!(failed(&t).is_some());
    }

    #[tokio::test]
    async fn no_open_reply_ends_the_wait_and_an_unknown_key_is_ignored() {
        let mut t = tallies(1, 1, 1);
        let mut script = Script(vec![vec![(7, Some(1))]].into(), false);
        wait(
            &mut t,
            &mut script,
            Instant::now() + Duration::from_secs(5),
            Until::AnyFails,
        )
        .await;
        assert!(failed(&t).is_some());
    }
}
