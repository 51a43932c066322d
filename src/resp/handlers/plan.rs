//! Commands that are one coordinator call: GET, SET, MGET and MSET each
//! read or write their keys (with default options) and make their reply
//! from those keys' outcomes alone. Such a command is a [`Plan`], built
//! by its handler in `strings`: what it asks of the coordinator and how
//! its reply is made.
//!
//! There is one way to run plans, [`Batch::run`]: one coordinator call
//! for all of them (through [`super::read_namespaced`] and
//! [`super::write_namespaced_each`], as every handler's reads and writes:
//! WATCH, EXEC's guarded writes), then each plan's reply from its share
//! of the outcomes. A plan holds its keys namespaced (`Session::key`):
//! the session's database is the plan's. A command run on its own is a batch of
//! one; a pipeline's run of plans that merge (`command::execute_next`) is
//! a batch of many. So GET means the same batched or not, and the only
//! code batching adds is the grouping.

use super::{Ctx, check_keys, coordinator_error, read_namespaced, write_namespaced_each};
use crate::coordinator::{KeyWritten, ReadOptions, WriteOptions};
use crate::model::ops::WriteOp;
use crate::model::record::Record;
use crate::replica::Written;
use crate::resp::reply::Reply;
use bytes::Bytes;
use smallvec::SmallVec;

/// A plan's keys: most commands have one, held without an allocation.
pub type Keys = SmallVec<[Bytes; 1]>;

/// A plan's writes: most commands have one.
pub type Writes = SmallVec<[(Bytes, WriteOp); 1]>;

/// Makes a read's reply from the records of its keys, in their order,
/// judged at `now` (ms since the epoch, read once the records came).
pub type FromRecords = fn(&Ctx<'_>, &[Option<Record>], u64) -> Reply;

/// Makes a write's reply from the outcomes of its writes, in their order,
/// judged at `now` (ms since the epoch, read before the write).
pub type FromWritten = fn(&[Written], u64) -> Reply;

/// A command as one coordinator call and the reply made from its
/// outcome; built only through [`Plan::read`] and [`Plan::write`], which
/// check its keys.
pub struct Plan(Access);

/// What a plan asks for, of namespaced keys.
enum Access {
    /// Reads `keys` (in the reply's order; they may repeat).
    Read { keys: Keys, reply: FromRecords },
    /// Writes distinct keys with [`WriteOptions::default`].
    Write { writes: Writes, reply: FromWritten },
}

impl Plan {
    /// A read of the client keys `keys`, in the session's database.
    ///
    /// # Errors
    /// A key past `KEY_BYTES_MAX`: the command's reply.
    pub fn read(ctx: &Ctx<'_>, keys: &[Bytes], reply: FromRecords) -> Result<Self, Reply> {
        check_keys(keys)?;
        let keys = keys.iter().map(|k| ctx.session.key(k)).collect();
        Ok(Self(Access::Read { keys, reply }))
    }

    /// A write of distinct client keys (the writes of one call may run
    /// concurrently), in the session's database.
    ///
    /// # Errors
    /// A key past `KEY_BYTES_MAX`: the command's reply.
    pub fn write<'a>(
        ctx: &Ctx<'_>,
        writes: impl IntoIterator<Item = (&'a Bytes, WriteOp)>,
        reply: FromWritten,
    ) -> Result<Self, Reply> {
        let writes = writes
            .into_iter()
            .map(|(key, op)| {
                check_keys([key])?;
                Ok((ctx.session.key(key), op))
            })
            .collect::<Result<Writes, Reply>>()?;
        Ok(Self(Access::Write { writes, reply }))
    }
}

/// Plans run as one coordinator call: all reads or all writes, no key in
/// two of them. Writes of distinct keys may run in any order, and so may
/// reads; that is what lets commands sent one after another share a call
/// and mean what they mean one at a time.
pub struct Batch(Calls);

enum Calls {
    /// Every plan's keys in order, and each plan's key count and reply.
    Reads {
        keys: Vec<Bytes>,
        replies: Vec<(usize, FromRecords)>,
    },
    /// Every plan's writes in order, and each plan's write count and
    /// reply.
    Writes {
        writes: Vec<(Bytes, WriteOp)>,
        replies: Vec<(usize, FromWritten)>,
    },
}

impl Batch {
    /// A batch of `plan` alone.
    pub fn new(plan: Plan) -> Self {
        Self(match plan.0 {
            Access::Read { keys, reply } => Calls::Reads {
                replies: vec![(keys.len(), reply)],
                keys: keys.into_vec(),
            },
            Access::Write { writes, reply } => Calls::Writes {
                replies: vec![(writes.len(), reply)],
                writes: writes.into_vec(),
            },
        })
    }

    /// Adds `plan` if it merges: the batch's kind (read or write) and no
    /// key already in the batch. Whether it did.
    pub fn add(&mut self, plan: Plan) -> bool {
        match (&mut self.0, plan.0) {
            (Calls::Reads { keys, replies }, Access::Read { keys: more, reply })
                if !more.iter().any(|k| keys.contains(k)) =>
            {
                replies.push((more.len(), reply));
                keys.extend(more);
                true
            }
            (
                Calls::Writes { writes, replies },
                Access::Write {
                    writes: more,
                    reply,
                },
            ) if !more.iter().any(|(k, _)| writes.iter().any(|(w, _)| w == k)) => {
                replies.push((more.len(), reply));
                writes.extend(more);
                true
            }
            _ => false,
        }
    }

    /// How many plans it holds.
    fn len(&self) -> usize {
        match &self.0 {
            Calls::Reads { replies, .. } => replies.len(),
            Calls::Writes { replies, .. } => replies.len(),
        }
    }

    /// Runs the batch as one coordinator call and returns each plan's
    /// reply, in order. A failed call is every plan's error; a write
    /// plan whose own keys failed (a quorum) gets its error alone.
    pub async fn run(self, ctx: &Ctx<'_>) -> Vec<Reply> {
        let count = self.len();
        let clock = &ctx.shared.coordinator;
        // One clock read per batch: each command's time is the batch's.
        let replies = match self.0 {
            Calls::Reads { keys, replies } => read_namespaced(ctx, keys, ReadOptions::default())
                .await
                .map(|records| {
                    let now = clock.now_ms();
                    shares(&records, &replies, |reply, share| reply(ctx, share, now))
                }),
            Calls::Writes { writes, replies } => {
                let now = clock.now_ms();
                write_namespaced_each(ctx, writes, WriteOptions::default())
                    .await
                    .map(|each| {
                        // Each plan stands or fails on its own keys: one
                        // key short of its quorum fails its command only.
                        let mut each = each.into_iter();
                        replies
                            .iter()
                            .map(|&(len, reply)| {
                                let share: SmallVec<[KeyWritten; 1]> =
                                    each.by_ref().take(len).collect();
                                match share.into_iter().collect::<Result<SmallVec<[_; 1]>, _>>() {
                                    Ok(share) if share.len() == len => reply(&share, now),
                                    Ok(_) => {
                                        debug_assert!(false, "too few outcomes");
                                        no_outcome()
                                    }
                                    Err(e) => coordinator_error(&e),
                                }
                            })
                            .collect()
                    })
            }
        };
        match replies {
            Ok(replies) => replies,
            Err(e) => vec![coordinator_error(&e); count],
        }
    }
}

/// Each plan's reply from its share of `outcomes`, in order.
fn shares<T, F>(
    outcomes: &[T],
    plans: &[(usize, F)],
    reply: impl Fn(&F, &[T]) -> Reply,
) -> Vec<Reply> {
    let mut at = 0;
    plans
        .iter()
        .map(|(len, answer)| {
            let end = at + len;
            let share = outcomes.get(at..end);
            at = end;
            match share {
                Some(share) => reply(answer, share),
                None => {
                    debug_assert!(false, "the coordinator returned too few outcomes");
                    no_outcome()
                }
            }
        })
        .collect()
}

/// The reply when the coordinator returned no outcome for a key: a bug.
pub fn no_outcome() -> Reply {
    Reply::error("ERR write returned no outcome")
}
