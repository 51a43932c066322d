//! What a client write means, as data, and how it is planned against a
//! key's current record. Pure: the caller supplies the record and the time.
//!
//! Conditions (NX/XX) are judged against the coordinator's view of the
//! key; in a cluster that view is the merge of the replicas it read, so two
//! racing `SET NX` through different coordinators may both succeed and
//! leave two siblings (docs/semantics.md).

use crate::storage::record::{Record, Sibling, is_live, lww_order};
use crate::version::VersionVector;
use bytes::Bytes;

/// Which versions a write supersedes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// Every version the coordinator knows (plain SET and DEL).
    Known,
    /// Exactly the versions in a client's context (VSET, VDEL).
    Context(VersionVector),
}

/// When a write happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Always.
    Always,
    /// Only if the key holds no value (NX).
    IfAbsent,
    /// Only if the key holds a value (XX; DEL, which need not write a
    /// tombstone for a key that has none).
    IfPresent,
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

impl WriteOp {
    /// Plain `SET key value`.
    pub fn set(value: Bytes) -> Self {
        Self {
            base: Base::Known,
            condition: Condition::Always,
            change: Change::Put {
                value,
                expiry: Expiry::Never,
            },
        }
    }

    /// Plain `DEL key`.
    pub fn delete() -> Self {
        Self {
            base: Base::Known,
            condition: Condition::IfPresent,
            change: Change::Delete,
        }
    }

    /// Decides the write against `current` at `now_ms`: the context it
    /// supersedes and the sibling it adds, or `None` if it does not apply.
    pub fn plan(&self, current: Option<&Record>, now_ms: u64) -> Option<(VersionVector, Sibling)> {
        let live = current.is_some_and(|r| is_live(r, now_ms));
        let applies = match self.condition {
            Condition::Always => true,
            Condition::IfAbsent => !live,
            Condition::IfPresent => live,
        };
        if !applies {
            return None;
        }
        let context = match &self.base {
            Base::Known => current.map(|r| r.context().clone()).unwrap_or_default(),
            Base::Context(context) => context.clone(),
        };
        let sibling = match &self.change {
            Change::Put { value, expiry } => Sibling {
                expire_at_ms: match expiry {
                    Expiry::Never => None,
                    Expiry::At(at) => Some(*at),
                    Expiry::Keep => current
                        .and_then(|r| r.winner(lww_order))
                        .filter(|(_, s)| s.live_value(now_ms).is_some())
                        .and_then(|(_, s)| s.expire_at_ms),
                },
                ..Sibling::value(value.clone(), now_ms)
            },
            Change::Delete => Sibling::tombstone(now_ms),
        };
        Some((context, sibling))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_set_supersedes_every_known_version() {
        let mut record = Record::new();
        let empty = VersionVector::new();
        record.update(&empty, 1, Sibling::value(Bytes::from_static(b"a"), 1));
        record.update(&empty, 2, Sibling::value(Bytes::from_static(b"b"), 2));
        let (context, sibling) = WriteOp::set(Bytes::from_static(b"c"))
            .plan(Some(&record), 3)
            .expect("applies");
        record.update(&context, 1, sibling);
        assert_eq!(record.siblings().len(), 1);
    }

    #[test]
    fn conditions_follow_liveness() {
        let nx = WriteOp {
            condition: Condition::IfAbsent,
            ..WriteOp::set(Bytes::from_static(b"v"))
        };
        assert!(nx.plan(None, 0).is_some());
        assert!(WriteOp::delete().plan(None, 0).is_none());
        let mut record = Record::new();
        record.update(&VersionVector::new(), 1, Sibling::tombstone(1));
        assert!(nx.plan(Some(&record), 2).is_some());
        assert!(WriteOp::delete().plan(Some(&record), 2).is_none());
    }
}
