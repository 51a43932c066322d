//! What a client write means, as data, and how it is planned against a
//! key's current record. Pure: the caller supplies the record and the time.
//!
//! Read-modify-write changes (APPEND, SETRANGE, INCRBY, EXPIRE, PERSIST,
//! and the NX/XX conditions) are judged against the coordinating
//! replica's record of the key, under its lock, and supersede exactly that
//! record: the value plain GET would return is computed from the same
//! state the write's context names. The cluster routes them to one
//! coordinator per key (its first live replica), so they serialize there;
//! two that still race through different coordinators (a partition, a
//! failover) leave two siblings — never a silent loss (docs/semantics.md).

use crate::limits::VALUE_BYTES_MAX;
use crate::model::record::{Content, Record, Sibling, is_live, lww_order};
use crate::version::{Supersedes, VersionVector};
use bytes::{Bytes, BytesMut};
use thiserror::Error;

/// Which versions a write supersedes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// Every version the coordinator knows (plain Redis commands).
    Known,
    /// Exactly the versions in a client's context (VSET, VDEL).
    Context(VersionVector),
}

/// When a write happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// Always.
    Always,
    /// Only if the key holds no value (NX).
    IfAbsent,
    /// Only if the key holds a value (XX; DEL, which need not write a
    /// tombstone for a key that has none).
    IfPresent,
    /// Only if the key's record is still as a WATCH saw it: the same
    /// causal context and liveness. Otherwise the write is refused with
    /// [`OpError::WatchedKeyChanged`] and the transaction aborts.
    Unchanged {
        /// The context WATCH read (boxed: most writes carry no context,
        /// and every request holding a write op would grow by one).
        context: Box<VersionVector>,
        /// Whether the key held a value then.
        live: bool,
    },
}

/// When a written value expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Never.
    Never,
    /// At this time, ms since the Unix epoch.
    At(u64),
    /// When the value it replaces would have (SET ... KEEPTTL).
    Keep,
}

/// EXPIRE's NX / XX / GT / LT flags, checked as Redis checks them (no
/// expiry counts as infinite for GT and LT).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExpireWhen {
    /// Only if the key has no expiry.
    pub nx: bool,
    /// Only if the key has an expiry.
    pub xx: bool,
    /// Only if the new expiry is later than the current one.
    pub gt: bool,
    /// Only if the new expiry is earlier than the current one.
    pub lt: bool,
}

impl ExpireWhen {
    /// Whether moving the expiry from `old` to `new` is allowed.
    fn allows(self, old: Option<u64>, new: Option<u64>) -> bool {
        let later = match (old, new) {
            (Some(old), Some(new)) => new > old,
            (None, _) => false,
            (Some(_), None) => true,
        };
        let earlier = match (old, new) {
            (Some(old), Some(new)) => new < old,
            (None, Some(_)) => true,
            (_, None) => false,
        };
        let refused = (self.nx && old.is_some())
            || (self.xx && old.is_none())
            || (self.gt && !later)
            || (self.lt && !earlier);
        !refused
    }
}

/// What the write stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A value.
    Put {
        /// The value.
        value: Bytes,
        /// When it expires.
        expiry: Expiry,
    },
    /// A tombstone.
    Delete,
    /// The current value with bytes appended (an absent key counts as
    /// empty); keeps the expiry.
    Append(Bytes),
    /// The current value overwritten at `offset`, zero-padded; keeps the
    /// expiry.
    SetRange {
        /// Byte offset.
        offset: usize,
        /// Bytes to write there.
        data: Bytes,
    },
    /// The current value as an integer, plus `by` (INCR family).
    IncrBy(i64),
    /// The current value with a new expiry (`None`: PERSIST). An expiry
    /// not after the write's time deletes the key, as in Redis.
    Expire {
        /// The new expire-at, ms since the epoch.
        at: Option<u64>,
        /// NX / XX / GT / LT.
        when: ExpireWhen,
    },
}

/// Why a planned write is refused; nothing is written.
#[derive(Debug, Clone, Copy, Error, PartialEq, Eq)]
pub enum OpError {
    /// The value is not a 64-bit integer (INCR on "abc").
    #[error("value is not an integer or out of range")]
    NotAnInteger,
    /// INCRBY past i64.
    #[error("increment or decrement would overflow")]
    Overflow,
    /// The result would exceed the string size limit (Redis's text).
    #[error("string exceeds maximum allowed size (proto-max-bulk-len)")]
    TooLarge,
    /// A WATCHed key changed before the transaction wrote it: EXEC
    /// aborts (its reply is the null array, never this text).
    #[error("a watched key changed")]
    WatchedKeyChanged,
}

/// One client write to one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOp {
    /// What it supersedes.
    pub base: Base,
    /// When it applies.
    pub condition: Condition,
    /// What it stores.
    pub change: Change,
}

impl Change {
    /// Whether the new value is computed from the winning sibling's.
    fn reads_winner(&self) -> bool {
        match self {
            Self::Put { expiry, .. } => *expiry == Expiry::Keep,
            Self::Delete => false,
            Self::Append(_) | Self::SetRange { .. } | Self::IncrBy(_) | Self::Expire { .. } => true,
        }
    }
}

/// What a write computed from the winning sibling supersedes: the whole
/// record when no other sibling holds a live value; else the winner and
/// the dead siblings only, so that a live sibling the computation did not
/// use (a concurrent write from across a partition) stays a sibling
/// instead of vanishing under an INCR that never counted it.
fn from_winner(current: Option<&Record>, now_ms: u64) -> Supersedes {
    let Some(record) = current else {
        return Supersedes::Context(VersionVector::new());
    };
    let winner = record.winner(lww_order).map(|(dot, _)| *dot);
    let dead = |sibling: &Sibling| sibling.live_value(now_ms).is_none();
    let other_live = record
        .siblings()
        .iter()
        .any(|(dot, sibling)| Some(*dot) != winner && !dead(sibling));
    if !other_live {
        return Supersedes::Context(record.context().clone());
    }
    Supersedes::Dots(
        record
            .siblings()
            .iter()
            .filter(|(dot, sibling)| Some(*dot) == winner || dead(sibling))
            .map(|(dot, _)| *dot)
            .collect(),
    )
}

/// The live winning sibling of a record: what plain GET sees.
fn winner(current: Option<&Record>, now_ms: u64) -> Option<(&Bytes, Option<u64>)> {
    let (_, sibling) = current?.winner(lww_order)?;
    Some((sibling.live_value(now_ms)?, sibling.expire_at_ms))
}

impl WriteOp {
    /// A plain Redis write of `change` (supersedes what the coordinator knows).
    pub fn known(change: Change) -> Self {
        Self {
            base: Base::Known,
            condition: Condition::Always,
            change,
        }
    }

    /// Plain `SET key value`.
    pub fn set(value: Bytes) -> Self {
        Self::known(Change::Put {
            value,
            expiry: Expiry::Never,
        })
    }

    /// Plain `DEL key`: a tombstone if the key holds a value.
    pub fn delete() -> Self {
        Self {
            condition: Condition::IfPresent,
            ..Self::known(Change::Delete)
        }
    }

    /// Whether it is the first write of a WATCHed key in an EXEC.
    fn is_watched(&self) -> bool {
        matches!(self.condition, Condition::Unchanged { .. })
    }

    /// Whether the outcome depends on the key's current value (conditions,
    /// read-modify-write changes, KEEPTTL): the coordinator then reads a
    /// quorum first, so a replica that missed writes does not decide
    /// from its stale copy.
    pub fn reads_current(&self) -> bool {
        self.condition != Condition::Always
            || !matches!(
                self.change,
                Change::Put {
                    expiry: Expiry::Never | Expiry::At(_),
                    ..
                } | Change::Delete
            )
    }

    /// Decides the write against `current` at `now_ms`: what it
    /// supersedes and the sibling it adds, `None` if it does not apply.
    /// A change computed from the winning sibling (APPEND, SETRANGE, the
    /// INCR family, EXPIRE, KEEPTTL) supersedes the state it was computed
    /// from: see [`from_winner`].
    ///
    /// # Errors
    /// [`OpError`] when the change cannot be made to the current value.
    pub fn plan(
        &self,
        current: Option<&Record>,
        now_ms: u64,
    ) -> Result<Option<(Supersedes, Sibling)>, OpError> {
        let live = current.is_some_and(|r| is_live(r, now_ms));
        let applies = match &self.condition {
            Condition::Always => true,
            Condition::IfAbsent => !live,
            Condition::IfPresent => live,
            Condition::Unchanged { context, live: was } => {
                let now = current.map(|r| r.context().clone()).unwrap_or_default();
                if now != **context || live != *was {
                    return Err(OpError::WatchedKeyChanged);
                }
                true
            }
        };
        if !applies {
            return Ok(None);
        }
        let Some(content) = self.new_content(current, now_ms)? else {
            return Ok(None);
        };
        let supersedes = match &self.base {
            Base::Context(context) => Supersedes::Context(context.clone()),
            // A WATCHed write is computed from what the transaction read,
            // and GET reads the winner: it supersedes what an INCR would.
            // Superseding the record would drop a concurrent sibling the
            // client never saw, with every increment it counted.
            Base::Known if self.change.reads_winner() || self.is_watched() => {
                from_winner(current, now_ms)
            }
            Base::Known => {
                Supersedes::Context(current.map(|r| r.context().clone()).unwrap_or_default())
            }
        };
        let (content, expire_at_ms) = content;
        Ok(Some((
            supersedes,
            Sibling {
                content,
                timestamp_ms: now_ms,
                expire_at_ms,
            },
        )))
    }

    /// The new sibling's content and expiry, or `None` for no write.
    fn new_content(
        &self,
        current: Option<&Record>,
        now_ms: u64,
    ) -> Result<Option<(Content, Option<u64>)>, OpError> {
        let winner = winner(current, now_ms);
        let value_keeping_ttl = |value: Vec<u8>| {
            let expiry = winner.and_then(|(_, at)| at);
            Ok(Some((Content::Value(Bytes::from(value)), expiry)))
        };
        match &self.change {
            Change::Put { value, expiry } => {
                let at = match expiry {
                    Expiry::Never => None,
                    Expiry::At(at) => Some(*at),
                    Expiry::Keep => winner.and_then(|(_, at)| at),
                };
                Ok(Some((Content::Value(value.clone()), at)))
            }
            Change::Delete => Ok(Some((Content::Tombstone, None))),
            Change::Append(data) => {
                let old = winner.map_or(&[][..], |(v, _)| v);
                if old.len() + data.len() > VALUE_BYTES_MAX {
                    return Err(OpError::TooLarge);
                }
                let mut value = BytesMut::with_capacity(old.len() + data.len());
                value.extend_from_slice(old);
                value.extend_from_slice(data);
                value_keeping_ttl(value.to_vec())
            }
            Change::SetRange { offset, data } => {
                let old = winner.map_or(&[][..], |(v, _)| v);
                if data.is_empty() {
                    return Ok(None); // Redis: nothing to write, nothing created
                }
                let end = offset.checked_add(data.len()).ok_or(OpError::TooLarge)?;
                if end > VALUE_BYTES_MAX {
                    return Err(OpError::TooLarge);
                }
                let mut value = old.to_vec();
                if value.len() < end {
                    value.resize(end, 0);
                }
                value[*offset..end].copy_from_slice(data);
                value_keeping_ttl(value)
            }
            Change::IncrBy(by) => {
                let old = match winner {
                    Some((v, _)) => crate::wire::parse_i64(v).ok_or(OpError::NotAnInteger)?,
                    None => 0,
                };
                let new = old.checked_add(*by).ok_or(OpError::Overflow)?;
                value_keeping_ttl(new.to_string().into_bytes())
            }
            Change::Expire { at, when } => {
                let Some((value, old)) = winner else {
                    return Ok(None);
                };
                let allowed = when.allows(old, *at);
                match at {
                    _ if !allowed => Ok(None),
                    None if old.is_none() => Ok(None), // PERSIST without a TTL
                    Some(at) if *at <= now_ms => Ok(Some((Content::Tombstone, None))),
                    at => Ok(Some((Content::Value(value.clone()), *at))),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(value: &'static [u8], expire_at_ms: Option<u64>) -> Record {
        let mut record = Record::new();
        let sibling = Sibling {
            expire_at_ms,
            ..Sibling::value(Bytes::from_static(value), 1)
        };
        record.update(&VersionVector::new(), 1, sibling);
        record
    }

    /// The live sibling values of `record` at `now`, sorted.
    fn live_values(record: &Record, now: u64) -> Vec<&[u8]> {
        let mut values: Vec<&[u8]> = record
            .siblings()
            .iter()
            .filter_map(|(_, s)| s.live_value(now).map(|v| &v[..]))
            .collect();
        values.sort();
        values
    }

    fn value_of(planned: Option<(Supersedes, Sibling)>) -> Option<(Vec<u8>, Option<u64>)> {
        let (_, sibling) = planned?;
        match sibling.content {
            Content::Value(v) => Some((v.to_vec(), sibling.expire_at_ms)),
            Content::Tombstone => None,
        }
    }

    #[test]
    fn plain_set_supersedes_every_known_version() {
        let mut record = Record::new();
        let empty = VersionVector::new();
        record.update(&empty, 1, Sibling::value(Bytes::from_static(b"a"), 1));
        record.update(&empty, 2, Sibling::value(Bytes::from_static(b"b"), 2));
        let (context, sibling) = WriteOp::set(Bytes::from_static(b"c"))
            .plan(Some(&record), 3)
            .expect("plans")
            .expect("applies");
        record.supersede(&context, 1, sibling);
        assert_eq!(record.siblings().len(), 1);
    }

    // Proves a read-modify-write supersedes only the sibling it computed
    // from: INCR on two concurrent siblings (one from each side of a
    // partition) leaves the other, so neither side's increments vanish.
    #[test]
    fn an_incr_keeps_a_live_sibling_it_did_not_compute_from() {
        let mut record = Record::new();
        let empty = VersionVector::new();
        record.update(&empty, 1, Sibling::value(Bytes::from_static(b"5"), 1));
        record.update(&empty, 2, Sibling::value(Bytes::from_static(b"7"), 2));
        let incr = WriteOp::known(Change::IncrBy(1));
        for (now, expected) in [(3, [b"5", b"8"]), (4, [b"5", b"9"])] {
            let (supersedes, sibling) = incr
                .plan(Some(&record), now)
                .expect("plans")
                .expect("applies");
            record.supersede(&supersedes, 1, sibling);
            assert_eq!(live_values(&record, now), expected, "at {now}");
        }
        // Alone, a sibling is superseded with the whole record.
        let mut single = Record::new();
        single.update(&empty, 1, Sibling::value(Bytes::from_static(b"1"), 1));
        let (supersedes, _) = incr
            .plan(Some(&single), 2)
            .expect("plans")
            .expect("applies");
        assert_eq!(supersedes, Supersedes::Context(single.context().clone()));
    }

    // Proves a watched write applies only to the record WATCH saw: the
    // same context and liveness; any other write in between refuses it.
    #[test]
    fn an_unchanged_condition_refuses_a_record_written_since() {
        let mut record = Record::new();
        record.update(
            &VersionVector::new(),
            1,
            Sibling::value(Bytes::from_static(b"1"), 1),
        );
        let watched = |record: &Record, live| WriteOp {
            condition: Condition::Unchanged {
                context: Box::new(record.context().clone()),
                live,
            },
            ..WriteOp::set(Bytes::from_static(b"2"))
        };
        let op = watched(&record, true);
        assert!(op.plan(Some(&record), 2).expect("unchanged").is_some());
        assert_eq!(
            watched(&record, false).plan(Some(&record), 2),
            Err(OpError::WatchedKeyChanged),
            "liveness differs"
        );
        let context = record.context().clone();
        record.update(&context, 2, Sibling::value(Bytes::from_static(b"9"), 2));
        assert_eq!(op.plan(Some(&record), 3), Err(OpError::WatchedKeyChanged));
        let absent = WriteOp {
            condition: Condition::Unchanged {
                context: Box::default(),
                live: false,
            },
            ..WriteOp::set(Bytes::from_static(b"v"))
        };
        assert!(absent.plan(None, 0).expect("never written").is_some());
    }

    // Proves a watched SET (WATCH, GET, MULTI, SET read+k, EXEC) keeps a
    // live sibling it did not compute from, as INCR does: the simulation
    // (with RMWs of a key not routed to one coordinator, so that siblings
    // arise) lost the increments of such a sibling when the SET superseded
    // the whole record.
    #[test]
    fn a_watched_set_keeps_a_live_sibling_it_did_not_compute_from() {
        let mut record = Record::new();
        let empty = VersionVector::new();
        record.update(&empty, 1, Sibling::value(Bytes::from_static(b"1"), 1));
        record.update(&empty, 2, Sibling::value(Bytes::from_static(b"4"), 2));
        let op = WriteOp {
            condition: Condition::Unchanged {
                context: Box::new(record.context().clone()),
                live: true,
            },
            ..WriteOp::set(Bytes::from_static(b"20"))
        };
        let (supersedes, sibling) = op
            .plan(Some(&record), 3)
            .expect("unchanged")
            .expect("applies");
        record.supersede(&supersedes, 1, sibling);
        assert_eq!(
            live_values(&record, 3),
            [&b"1"[..], b"20"],
            "the winner 4 went, 1 stayed"
        );
    }

    #[test]
    fn conditions_follow_liveness() {
        let nx = WriteOp {
            condition: Condition::IfAbsent,
            ..WriteOp::set(Bytes::from_static(b"v"))
        };
        assert!(nx.plan(None, 0).expect("plans").is_some());
        assert!(WriteOp::delete().plan(None, 0).expect("plans").is_none());
        let expired = record(b"v", Some(10));
        assert!(nx.plan(Some(&expired), 10).expect("plans").is_some());
        assert!(
            WriteOp::delete()
                .plan(Some(&expired), 10)
                .expect("plans")
                .is_none()
        );
    }

    #[test]
    fn read_modify_write_changes() {
        let current = record(b"10", Some(500));
        let plan = |change| WriteOp::known(change).plan(Some(&current), 100);
        assert_eq!(
            value_of(plan(Change::Append(Bytes::from_static(b"x"))).expect("ok")),
            Some((b"10x".to_vec(), Some(500)))
        );
        assert_eq!(
            value_of(plan(Change::IncrBy(-11)).expect("ok")),
            Some((b"-1".to_vec(), Some(500)))
        );
        assert_eq!(plan(Change::IncrBy(i64::MAX)), Err(OpError::Overflow));
        assert_eq!(
            value_of(
                plan(Change::SetRange {
                    offset: 3,
                    data: Bytes::from_static(b"ab")
                })
                .expect("ok")
            ),
            Some((b"10\0ab".to_vec(), Some(500)))
        );
        let words = record(b"abc", None);
        assert_eq!(
            WriteOp::known(Change::IncrBy(1)).plan(Some(&words), 0),
            Err(OpError::NotAnInteger)
        );
    }

    #[test]
    fn expire_conditions_as_redis() {
        let with_ttl = record(b"v", Some(500));
        let without = record(b"v", None);
        let (nx, gt, lt) = (
            ExpireWhen {
                nx: true,
                ..ExpireWhen::default()
            },
            ExpireWhen {
                gt: true,
                ..ExpireWhen::default()
            },
            ExpireWhen {
                lt: true,
                ..ExpireWhen::default()
            },
        );
        let xx_lt = ExpireWhen {
            xx: true,
            lt: true,
            ..ExpireWhen::default()
        };
        let expire = |r: &Record, at, when| {
            value_of(
                WriteOp::known(Change::Expire { at, when })
                    .plan(Some(r), 100)
                    .expect("ok"),
            )
        };
        let always = ExpireWhen::default();
        let set_to = |at| Some((b"v".to_vec(), at));
        assert_eq!(expire(&without, Some(900), nx), set_to(Some(900)));
        assert_eq!(expire(&with_ttl, Some(900), nx), None);
        assert_eq!(expire(&with_ttl, Some(900), gt), set_to(Some(900)));
        assert_eq!(expire(&without, Some(900), gt), None);
        assert_eq!(expire(&without, Some(900), lt), set_to(Some(900)));
        assert_eq!(expire(&without, Some(900), xx_lt), None);
        assert_eq!(expire(&with_ttl, Some(400), xx_lt), set_to(Some(400)));
        assert_eq!(expire(&with_ttl, None, always), set_to(None));
        assert!(expire(&without, None, always).is_none());
        // an expiry in the past deletes: the planned sibling is a tombstone
        let past = WriteOp::known(Change::Expire {
            at: Some(50),
            when: always,
        })
        .plan(Some(&with_ttl), 100)
        .expect("ok")
        .expect("writes");
        assert_eq!(past.1.content, Content::Tombstone);
    }
}
