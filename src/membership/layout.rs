//! Membership as a versioned layout, pure: who the members are, how each
//! is placed, the operator's changes, the merge that makes every node
//! agree, the digest and bytes that gossip trades, and the placement the
//! ring is built from. No I/O, no clocks.
//!
//! # A member
//! Each member (by id) holds five registers, each merged on its own:
//!
//! | register | written by | merge |
//! |---|---|---|
//! | `endpoint` (incarnation, name, addresses) | the member itself, at each start | highest (incarnation, then the fields) |
//! | `target` (weight and zone, or out) | operator changes: join, weight, leave, remove | out beats any owner, with the larger counter; owners by (counter, origin, role) |
//! | `current` (the target as of the last settle) | a settle, once the data is in place | as `target`, with unassigned below everything |
//! | `removed` (the tombstone) | remove | or |
//! | `synced` (the target it holds all its data for) | the member itself | highest (counter, fingerprint) |
//!
//! Its state is derived: [`MemberState::Joining`] (a target, no current:
//! receives data, not read from), [`MemberState::Member`],
//! [`MemberState::Leaving`] (current but no target: read from, gives its
//! data away), [`MemberState::Removed`] (the tombstone, or out in both).
//!
//! # Why one register per concern
//! A single register per member ordered by (incarnation, state, counter)
//! loses one of two concurrent changes to different fields: a node that
//! restarts (incarnation + 1) while an operator reweights it would drop
//! the reweight. Separate registers keep both. Each register is a
//! join-semilattice (a total order, or "out" absorbing with the largest
//! counter), a member is their product, and a layout is the pointwise
//! union of members by id: so merge is commutative, associative and
//! idempotent (property-tested below), and any two nodes that have seen
//! the same changes, in any order, hold the same layout, byte for byte.
//!
//! # Reads, writes and the settle
//! Reads are placed by `current` (the members that have the data), writes
//! by `current` and `target` together (a [`Transition`]). A member that
//! has received every partition `target` gives it records that
//! ([`Change::Synced`], the target's fingerprint); once every target
//! member has, any node may [`Change::Settle`]: `current := target` for
//! all, and the old replicas stop being read. This is Garage's and
//! Cassandra CEP-21's rule (a partition's reads stay with its old owners
//! until the new owners have its data), here per layout rather than per
//! partition, and it covers join, leave, reweight and the remove of a dead
//! node alike. Two settles made at once copy the same target, or targets
//! one node saw in turn, so they merge to a target that was synced.
//!
//! # Epoch and digest
//! [`Layout::epoch`] is a number computed from the content (members plus
//! the change counters of their `target` and `current`, plus tombstones):
//! every operator change and every settle raises it (except a settle that
//! only swaps one of two concurrent changes of equal counter for the
//! other), a merge never lowers it, and equal layouts have equal epochs. Two concurrent changes at
//! different nodes may give both the same epoch until they meet; the
//! merge then picks one layout for everybody, and its epoch is at least
//! theirs. [`Layout::digest`] (xxh3 of the canonical bytes) tells any
//! difference at all, so gossip trades 16 bytes ([`Summary`]) and the
//! full layout only when the digests differ.
//!
//! # Bytes (format version 1)
//! ```text
//! layout     := version:u8 (=1) count:varint member*count   ids strictly ascending
//! member     := id:u64le endpoint target:assignment current:assignment
//!               removed:u8 (0|1) synced
//! endpoint   := incarnation:varint name:text peer_addr:text client_addr:text
//! assignment := 0                                         unassigned (current only)
//!             | 1 counter:varint origin:u64le weight:f64le zone:(0 | 1 text)
//!             | 2 counter:varint                          out
//! synced     := counter:varint fingerprint:u64le
//! text       := len:varint (<= LAYOUT_TEXT_BYTES_MAX) utf-8 bytes
//! ```
//! A removed member's target is out; weights are finite and positive.

use crate::limits::{LAYOUT_DECODE_MEMBERS_MAX, LAYOUT_MEMBERS_MAX, LAYOUT_TEXT_BYTES_MAX};
use crate::ring::{Placed, Ring};
use crate::version::NodeId;
use crate::wire::{DecodeError, Reader, put_varint};
use std::collections::{BTreeMap, BTreeSet};
use thiserror::Error;
use xxhash_rust::xxh3::xxh3_64;

/// The layout byte format this build writes and reads.
pub const LAYOUT_FORMAT_VERSION: u8 = 1;

/// A layout change refused, with what the operator needs to know.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum LayoutError {
    /// The id has a tombstone: it never comes back.
    #[error(
        "member {id:016x} was removed and cannot come back; start it with a new data directory"
    )]
    Removed {
        /// The removed id.
        id: NodeId,
    },
    /// No member has this id.
    #[error("no member {id:016x}")]
    UnknownMember {
        /// The id asked for.
        id: NodeId,
    },
    /// A join of an id that is already a member.
    #[error("member {id:016x} is already in the layout")]
    AlreadyMember {
        /// The id.
        id: NodeId,
    },
    /// A weight that is not a positive finite number.
    #[error("weight {weight} is not a positive number")]
    InvalidWeight {
        /// The weight given.
        weight: f64,
    },
    /// A change that needs an owner (weight, leave) on a member that is
    /// leaving or removed.
    #[error("member {id:016x} is {state:?}, not an owner")]
    NotOwner {
        /// The member.
        id: NodeId,
        /// Its state.
        state: MemberState,
    },
    /// A leave or remove that would leave no member to hold the data.
    #[error("member {id:016x} is the last owner of the data")]
    LastOwner {
        /// The member.
        id: NodeId,
    },
    /// An endpoint no newer than the one known.
    #[error("member {id:016x} announced incarnation {given}, but {known} is known")]
    StaleIncarnation {
        /// The member.
        id: NodeId,
        /// The incarnation known.
        known: u64,
        /// The incarnation announced.
        given: u64,
    },
    /// A settle before every target member holds its data.
    #[error("cannot settle: {} members have not synced the target", waiting.len())]
    NotSynced {
        /// The target members still receiving.
        waiting: Vec<NodeId>,
    },
    /// A join past the member limit.
    #[error("the layout holds {max} members (tombstones included)")]
    Full {
        /// [`LAYOUT_MEMBERS_MAX`].
        max: usize,
    },
    /// A name, address or zone longer than the format allows.
    #[error("{field} is {len} bytes, more than {max}")]
    TextTooLong {
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// [`LAYOUT_TEXT_BYTES_MAX`].
        max: usize,
    },
}

/// Where a member is reached; written only by the member itself.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    /// Raised at every start of the member: a newer process wins over an
    /// older one's gossip, whatever its address.
    pub incarnation: u64,
    /// Its human name (`--node-name`).
    pub name: String,
    /// Its peer address, `host:port`.
    pub peer_addr: String,
    /// Its client (RESP) address, `host:port`.
    pub client_addr: String,
}

/// How a member is placed.
#[derive(Debug, Clone, PartialEq)]
pub struct Role {
    /// Capacity weight (finite, > 0): its share of the data.
    pub weight: f64,
    /// Failure zone, if any.
    pub zone: Option<String>,
}

/// Who made a role change, and after how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp {
    /// One more than the counter of the role it replaced.
    pub counter: u64,
    /// The node where the change was made (breaks ties between
    /// concurrent changes).
    pub origin: NodeId,
}

/// A member's place, in `target` or `current`.
#[derive(Debug, Clone, PartialEq)]
pub enum Assignment {
    /// Not placed yet (a joining member's `current`).
    Unassigned,
    /// Placed with `role`.
    Owner {
        /// The change that set it.
        stamp: Stamp,
        /// The role.
        role: Role,
    },
    /// Placed no more (left or removed); absorbs every owner.
    Out {
        /// The largest counter seen.
        counter: u64,
    },
}

impl Assignment {
    fn counter(&self) -> u64 {
        match self {
            Self::Unassigned => 0,
            Self::Owner { stamp, .. } => stamp.counter,
            Self::Out { counter } => *counter,
        }
    }

    fn role(&self) -> Option<&Role> {
        match self {
            Self::Owner { role, .. } => Some(role),
            _ => None,
        }
    }

    /// The least upper bound: out absorbs (keeping the largest counter),
    /// unassigned is the bottom, owners compare by stamp then role.
    fn join(&self, other: &Self) -> Self {
        match (self, other) {
            (Self::Out { .. }, _) | (_, Self::Out { .. }) => Self::Out {
                counter: self.counter().max(other.counter()),
            },
            (Self::Unassigned, x) | (x, Self::Unassigned) => x.clone(),
            (Self::Owner { stamp: a, role: ra }, Self::Owner { stamp: b, role: rb }) => {
                // Weights are positive, so their bits order as the numbers;
                // any total order would do, this one is the same everywhere.
                let ka = (a, ra.weight.to_bits(), &ra.zone);
                let kb = (b, rb.weight.to_bits(), &rb.zone);
                if ka >= kb {
                    self.clone()
                } else {
                    other.clone()
                }
            }
        }
    }
}

/// The target placement a member holds all its data for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Synced {
    /// Raised by the member at each sync.
    pub counter: u64,
    /// [`Layout::target_fingerprint`] of the target it synced.
    pub fingerprint: u64,
}

/// A member's state, derived from its registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// Placed by the target, not yet by current: writes go to it, reads
    /// do not.
    Joining,
    /// Placed (its weight may be changing: reads follow the old one until
    /// the settle).
    Member,
    /// Placed by current only: still read from, its data moving away.
    Leaving,
    /// A tombstone: never placed again, its id refused for good.
    Removed,
}

/// One member of the layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// Its id (random per data directory).
    pub id: NodeId,
    /// Where it is reached.
    pub endpoint: Endpoint,
    /// Its place once the data has moved; never unassigned.
    pub target: Assignment,
    /// Its place now, for reads.
    pub current: Assignment,
    /// The tombstone: removed by an operator (implies target out).
    pub removed: bool,
    /// What it holds all its data for.
    pub synced: Synced,
}

impl Member {
    /// Its state.
    pub fn state(&self) -> MemberState {
        let target_out = matches!(self.target, Assignment::Out { .. });
        if self.removed
            || (target_out
                && matches!(
                    self.current,
                    Assignment::Out { .. } | Assignment::Unassigned
                ))
        {
            MemberState::Removed
        } else if target_out {
            MemberState::Leaving
        } else if self.current == Assignment::Unassigned {
            MemberState::Joining
        } else {
            MemberState::Member
        }
    }

    /// Its weight: the target's if it has one, else the current one's.
    pub fn weight(&self) -> Option<f64> {
        self.target
            .role()
            .or_else(|| self.current.role())
            .map(|r| r.weight)
    }

    /// Its zone: the target's if it has a role, else the current one's.
    pub fn zone(&self) -> Option<&str> {
        self.target
            .role()
            .or_else(|| self.current.role())
            .and_then(|r| r.zone.as_deref())
    }

    /// Whether reads place it as the target does.
    pub fn is_settled(&self) -> bool {
        self.current == self.target
    }

    fn join(&self, other: &Self) -> Self {
        debug_assert_eq!(self.id, other.id);
        Self {
            id: self.id,
            endpoint: self.endpoint.clone().max(other.endpoint.clone()),
            target: self.target.join(&other.target),
            current: self.current.join(&other.current),
            removed: self.removed || other.removed,
            synced: self.synced.max(other.synced),
        }
    }

    fn owns_target(&self) -> bool {
        !self.removed && matches!(self.target, Assignment::Owner { .. })
    }
}

/// A layout change, made on one node and spread by gossip.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A new member adds itself (`--join`). Into an empty layout it is
    /// the founding member, placed at once.
    Join {
        /// Its id.
        id: NodeId,
        /// Where it is reached.
        endpoint: Endpoint,
        /// Its weight and zone.
        role: Role,
    },
    /// A member announces a new endpoint (it restarted): a higher
    /// incarnation, perhaps new addresses.
    Announce {
        /// Its id.
        id: NodeId,
        /// The new endpoint.
        endpoint: Endpoint,
    },
    /// `DYNAMO WEIGHT id w`.
    Weight {
        /// The member.
        id: NodeId,
        /// Its new weight.
        weight: f64,
    },
    /// `DYNAMO LEAVE`, on the node that leaves.
    Leave {
        /// The member leaving.
        id: NodeId,
    },
    /// `DYNAMO REMOVE id`, for a dead member: its tombstone.
    Remove {
        /// The member removed.
        id: NodeId,
    },
    /// Member `id` holds every partition the current target gives it.
    Synced {
        /// The member.
        id: NodeId,
    },
    /// Every target member synced: reads move to the target.
    Settle,
}

/// What gossip trades first: equal summaries mean equal layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// [`Layout::epoch`].
    pub epoch: u64,
    /// [`Layout::digest`].
    pub digest: u64,
}

/// The cluster's membership: members and tombstones by id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Layout {
    members: BTreeMap<NodeId, Member>,
}

/// Checks a weight.
fn check_weight(weight: f64) -> Result<(), LayoutError> {
    if weight.is_finite() && weight > 0.0 {
        Ok(())
    } else {
        Err(LayoutError::InvalidWeight { weight })
    }
}

/// Checks a text field's length against the format's bound.
fn check_text(field: &'static str, text: &str) -> Result<(), LayoutError> {
    if text.len() > LAYOUT_TEXT_BYTES_MAX {
        return Err(LayoutError::TextTooLong {
            field,
            len: text.len(),
            max: LAYOUT_TEXT_BYTES_MAX,
        });
    }
    Ok(())
}

fn check_endpoint(endpoint: &Endpoint) -> Result<(), LayoutError> {
    check_text("name", &endpoint.name)?;
    check_text("peer address", &endpoint.peer_addr)?;
    check_text("client address", &endpoint.client_addr)
}

impl Layout {
    /// An empty layout (a node that has not joined anything yet).
    pub fn new() -> Self {
        Self::default()
    }

    /// A settled layout of `members`, each placed with its role as if it
    /// had founded the cluster (stamp: counter 1, its own id): what a data
    /// directory from before layouts (a saved member list) becomes. Every
    /// node converting the same list gets the same layout.
    pub fn settled(members: impl IntoIterator<Item = (NodeId, Endpoint, Role)>) -> Self {
        let members = members
            .into_iter()
            .filter(|(_, _, role)| check_weight(role.weight).is_ok())
            .map(|(id, endpoint, role)| {
                let placed = Assignment::Owner {
                    stamp: Stamp {
                        counter: 1,
                        origin: id,
                    },
                    role,
                };
                let member = Member {
                    id,
                    endpoint,
                    target: placed.clone(),
                    current: placed,
                    removed: false,
                    synced: Synced::default(),
                };
                (id, member)
            })
            .collect();
        Self { members }
    }

    /// The member with `id`, tombstones included.
    pub fn get(&self, id: NodeId) -> Option<&Member> {
        self.members.get(&id)
    }

    /// Every member, tombstones included, in id order.
    pub fn members(&self) -> impl Iterator<Item = &Member> + '_ {
        self.members.values()
    }

    /// Members, tombstones included.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the layout holds no one.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Whether `id` has a tombstone: a node with this id must not serve.
    pub fn is_removed(&self, id: NodeId) -> bool {
        self.get(id)
            .is_some_and(|m| m.state() == MemberState::Removed)
    }

    /// Merges `other` into this layout (the least upper bound); returns
    /// whether anything changed.
    pub fn merge(&mut self, other: &Layout) -> bool {
        let mut changed = false;
        for (id, theirs) in &other.members {
            match self.members.get_mut(id) {
                Some(ours) => {
                    let joined = ours.join(theirs);
                    if joined != *ours {
                        *ours = joined;
                        changed = true;
                    }
                }
                None => {
                    self.members.insert(*id, theirs.clone());
                    changed = true;
                }
            }
        }
        changed
    }

    /// Makes `change` at node `origin`, and returns the delta: a layout
    /// holding the members it changed, which merged into any layout that
    /// had seen this one's state has the same effect (what gossip would
    /// carry if it sent deltas). An empty delta means nothing changed.
    ///
    /// # Errors
    /// A [`LayoutError`] saying why the change is refused; the layout is
    /// then unchanged.
    pub fn apply(&mut self, change: &Change, origin: NodeId) -> Result<Layout, LayoutError> {
        let changed: Vec<Member> = match change {
            Change::Join { id, endpoint, role } => {
                vec![self.join_member(*id, endpoint, role, origin)?]
            }
            Change::Announce { id, endpoint } => {
                check_endpoint(endpoint)?;
                let mut m = self.live(*id)?.clone();
                if endpoint.incarnation <= m.endpoint.incarnation {
                    return Err(LayoutError::StaleIncarnation {
                        id: *id,
                        known: m.endpoint.incarnation,
                        given: endpoint.incarnation,
                    });
                }
                m.endpoint = endpoint.clone();
                vec![m]
            }
            Change::Weight { id, weight } => {
                check_weight(*weight)?;
                let mut m = self.owner(*id)?.clone();
                let zone = m.target.role().and_then(|r| r.zone.clone());
                m.target = Assignment::Owner {
                    stamp: Stamp {
                        counter: m.target.counter() + 1,
                        origin,
                    },
                    role: Role {
                        weight: *weight,
                        zone,
                    },
                };
                vec![m]
            }
            Change::Leave { id } => {
                let mut m = self.owner(*id)?.clone();
                self.not_last_owner(*id)?;
                m.target = Assignment::Out {
                    counter: m.target.counter() + 1,
                };
                vec![m]
            }
            Change::Remove { id } => {
                let m = self
                    .get(*id)
                    .ok_or(LayoutError::UnknownMember { id: *id })?;
                if m.removed {
                    return Ok(Layout::new());
                }
                let mut m = m.clone();
                if m.owns_target() {
                    self.not_last_owner(*id)?;
                }
                m.removed = true;
                if !matches!(m.target, Assignment::Out { .. }) {
                    m.target = Assignment::Out {
                        counter: m.target.counter() + 1,
                    };
                }
                vec![m]
            }
            Change::Synced { id } => {
                let fingerprint = self.target_fingerprint();
                let mut m = self.live(*id)?.clone();
                if m.synced.fingerprint == fingerprint {
                    return Ok(Layout::new());
                }
                m.synced = Synced {
                    counter: m.synced.counter + 1,
                    fingerprint,
                };
                vec![m]
            }
            Change::Settle => {
                let waiting = self.waiting_to_settle();
                if !waiting.is_empty() {
                    return Err(LayoutError::NotSynced { waiting });
                }
                self.members
                    .values()
                    .filter(|m| !m.is_settled())
                    .map(|m| Member {
                        current: m.current.join(&m.target),
                        ..m.clone()
                    })
                    .collect()
            }
        };
        let delta = Layout {
            members: changed.into_iter().map(|m| (m.id, m)).collect(),
        };
        self.merge(&delta);
        Ok(delta)
    }

    fn join_member(
        &self,
        id: NodeId,
        endpoint: &Endpoint,
        role: &Role,
        origin: NodeId,
    ) -> Result<Member, LayoutError> {
        if let Some(m) = self.get(id) {
            return Err(if m.state() == MemberState::Removed {
                LayoutError::Removed { id }
            } else {
                LayoutError::AlreadyMember { id }
            });
        }
        if self.len() >= LAYOUT_MEMBERS_MAX {
            return Err(LayoutError::Full {
                max: LAYOUT_MEMBERS_MAX,
            });
        }
        check_weight(role.weight)?;
        check_endpoint(endpoint)?;
        if let Some(zone) = &role.zone {
            check_text("zone", zone)?;
        }
        let target = Assignment::Owner {
            stamp: Stamp { counter: 1, origin },
            role: role.clone(),
        };
        // The first member holds every partition from the start: there is
        // no one to take the data from, and a cluster must be readable.
        let founding = !self.members.values().any(|m| m.current.role().is_some());
        Ok(Member {
            id,
            endpoint: endpoint.clone(),
            current: if founding {
                target.clone()
            } else {
                Assignment::Unassigned
            },
            target,
            removed: false,
            synced: Synced::default(),
        })
    }

    /// The member `id`, which must not be a tombstone.
    fn live(&self, id: NodeId) -> Result<&Member, LayoutError> {
        let m = self.get(id).ok_or(LayoutError::UnknownMember { id })?;
        if m.state() == MemberState::Removed {
            return Err(LayoutError::Removed { id });
        }
        Ok(m)
    }

    /// The member `id`, which must own a place in the target.
    fn owner(&self, id: NodeId) -> Result<&Member, LayoutError> {
        let m = self.live(id)?;
        if !m.owns_target() {
            return Err(LayoutError::NotOwner {
                id,
                state: m.state(),
            });
        }
        Ok(m)
    }

    fn not_last_owner(&self, id: NodeId) -> Result<(), LayoutError> {
        if self.members.values().any(|m| m.id != id && m.owns_target()) {
            Ok(())
        } else {
            Err(LayoutError::LastOwner { id })
        }
    }

    /// A number every change raises and no merge lowers; equal layouts
    /// have equal epochs (see the module docs).
    pub fn epoch(&self) -> u64 {
        self.members
            .values()
            .map(|m| 1 + m.target.counter() + m.current.counter() + u64::from(m.removed))
            .fold(0u64, u64::saturating_add)
    }

    /// A 64-bit hash of the canonical bytes: equal for equal layouts, and
    /// different, but for a 2^-64 chance, for different ones.
    pub fn digest(&self) -> u64 {
        xxh3_64(&self.encode())
    }

    /// Epoch and digest, what gossip trades first.
    pub fn summary(&self) -> Summary {
        Summary {
            epoch: self.epoch(),
            digest: self.digest(),
        }
    }

    /// The members placed for reads (`current`), with their weights: the
    /// members that hold the data. A removed member whose data has not
    /// moved yet stays here: it is down, so quorums count it as failed,
    /// and its partitions are read from their other old replicas rather
    /// than from new ones that do not have the data yet.
    pub fn current_placement(&self) -> Vec<Placed> {
        self.placed(|m| m.current.role())
    }

    /// The members placed by the target: where the data goes. Writes go
    /// to both placements' replicas.
    pub fn target_placement(&self) -> Vec<Placed> {
        self.placed(|m| if m.removed { None } else { m.target.role() })
    }

    fn placed(&self, role: impl Fn(&Member) -> Option<&Role>) -> Vec<Placed> {
        self.members
            .values()
            .filter_map(|m| {
                role(m).map(|r| Placed {
                    id: m.id,
                    weight: r.weight,
                    zone: r.zone.clone(),
                })
            })
            .collect()
    }

    /// A hash of the target placement: what a member's sync refers to.
    pub fn target_fingerprint(&self) -> u64 {
        let mut out = Vec::new();
        for p in self.target_placement() {
            out.extend_from_slice(&p.id.to_le_bytes());
            out.extend_from_slice(&p.weight.to_bits().to_le_bytes());
            put_option_text(&mut out, p.zone.as_deref());
        }
        xxh3_64(&out)
    }

    /// Target members that have not synced the current target: a settle
    /// waits for them. Empty when the layout can settle (or is settled).
    pub fn waiting_to_settle(&self) -> Vec<NodeId> {
        let fingerprint = self.target_fingerprint();
        self.members
            .values()
            .filter(|m| m.owns_target() && m.synced.fingerprint != fingerprint)
            .map(|m| m.id)
            .collect()
    }

    /// Whether every member's reads follow its target: nothing is moving.
    pub fn is_settled(&self) -> bool {
        self.members.values().all(Member::is_settled)
    }

    /// The canonical bytes (format version 1, module docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 64 * self.members.len());
        out.push(LAYOUT_FORMAT_VERSION);
        put_varint(&mut out, self.members.len() as u64);
        for m in self.members.values() {
            out.extend_from_slice(&m.id.to_le_bytes());
            put_varint(&mut out, m.endpoint.incarnation);
            put_text(&mut out, &m.endpoint.name);
            put_text(&mut out, &m.endpoint.peer_addr);
            put_text(&mut out, &m.endpoint.client_addr);
            put_assignment(&mut out, &m.target);
            put_assignment(&mut out, &m.current);
            out.push(u8::from(m.removed));
            put_varint(&mut out, m.synced.counter);
            out.extend_from_slice(&m.synced.fingerprint.to_le_bytes());
        }
        out
    }

    /// Reads a layout from its bytes. Never panics, whatever the input.
    ///
    /// # Errors
    /// A [`DecodeError`]: truncated input, an unknown version or tag, a
    /// count or text past its bound, ids out of order, a weight that is
    /// not positive, a member without a target or removed but placed,
    /// trailing bytes.
    pub fn decode(input: &[u8]) -> Result<Layout, DecodeError> {
        let mut r = Reader::new(input);
        let version = r.u8()?;
        if version != LAYOUT_FORMAT_VERSION {
            return Err(DecodeError::UnknownVersion { found: version });
        }
        let count = r.count("layout member", LAYOUT_DECODE_MEMBERS_MAX)?;
        let mut members = BTreeMap::new();
        let mut last: Option<NodeId> = None;
        for _ in 0..count {
            let id = read_u64(&mut r)?;
            if last.is_some_and(|l| l >= id) {
                return Err(DecodeError::Malformed {
                    what: "layout member order",
                });
            }
            last = Some(id);
            let endpoint = Endpoint {
                incarnation: r.varint()?,
                name: read_text(&mut r)?,
                peer_addr: read_text(&mut r)?,
                client_addr: read_text(&mut r)?,
            };
            let target = read_assignment(&mut r)?;
            let current = read_assignment(&mut r)?;
            let removed = match r.u8()? {
                0 => false,
                1 => true,
                _ => {
                    return Err(DecodeError::Malformed {
                        what: "layout tombstone flag",
                    });
                }
            };
            let synced = Synced {
                counter: r.varint()?,
                fingerprint: read_u64(&mut r)?,
            };
            if target == Assignment::Unassigned
                || (removed && !matches!(target, Assignment::Out { .. }))
            {
                return Err(DecodeError::Malformed {
                    what: "layout member target",
                });
            }
            members.insert(
                id,
                Member {
                    id,
                    endpoint,
                    target,
                    current,
                    removed,
                    synced,
                },
            );
        }
        r.finish()?;
        Ok(Layout { members })
    }
}

fn put_text(out: &mut Vec<u8>, text: &str) {
    debug_assert!(text.len() <= LAYOUT_TEXT_BYTES_MAX);
    put_varint(out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

fn put_option_text(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        None => out.push(0),
        Some(text) => {
            out.push(1);
            put_text(out, text);
        }
    }
}

fn put_assignment(out: &mut Vec<u8>, a: &Assignment) {
    match a {
        Assignment::Unassigned => out.push(0),
        Assignment::Owner { stamp, role } => {
            out.push(1);
            put_varint(out, stamp.counter);
            out.extend_from_slice(&stamp.origin.to_le_bytes());
            out.extend_from_slice(&role.weight.to_bits().to_le_bytes());
            put_option_text(out, role.zone.as_deref());
        }
        Assignment::Out { counter } => {
            out.push(2);
            put_varint(out, *counter);
        }
    }
}

fn read_u64(r: &mut Reader<'_>) -> Result<u64, DecodeError> {
    let bytes = r.bytes(8)?;
    let mut word = [0u8; 8];
    word.copy_from_slice(bytes);
    Ok(u64::from_le_bytes(word))
}

fn read_text(r: &mut Reader<'_>) -> Result<String, DecodeError> {
    let len = r.count("layout text byte", LAYOUT_TEXT_BYTES_MAX)?;
    let bytes = r.bytes(len)?;
    String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::Malformed {
        what: "layout text (not UTF-8)",
    })
}

fn read_assignment(r: &mut Reader<'_>) -> Result<Assignment, DecodeError> {
    match r.u8()? {
        0 => Ok(Assignment::Unassigned),
        1 => {
            let counter = r.varint()?;
            let origin = read_u64(r)?;
            let weight = f64::from_bits(read_u64(r)?);
            if !(weight.is_finite() && weight > 0.0) {
                return Err(DecodeError::Malformed {
                    what: "layout weight",
                });
            }
            let zone = match r.u8()? {
                0 => None,
                1 => Some(read_text(r)?),
                found => {
                    return Err(DecodeError::UnknownTag {
                        what: "layout zone",
                        found,
                    });
                }
            };
            Ok(Assignment::Owner {
                stamp: Stamp { counter, origin },
                role: Role { weight, zone },
            })
        }
        2 => Ok(Assignment::Out {
            counter: r.varint()?,
        }),
        found => Err(DecodeError::UnknownTag {
            what: "layout assignment",
            found,
        }),
    }
}

/// One partition's move: who must receive it before the settle, and who
/// holds it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// The partition.
    pub partition: u16,
    /// Target replicas that are not current replicas: they receive it.
    pub to: Vec<NodeId>,
    /// Current replicas not removed: the sources to stream it from.
    pub from: Vec<NodeId>,
}

/// The two placements of a layout, as rings: reads by `current`, writes by
/// both. While they differ a write must reach W replicas in each set (a
/// write acked by the old set alone could be missed once reads move to
/// the new one), and a read asks R of the current replicas.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    current: Ring,
    target: Ring,
    removed: BTreeSet<NodeId>,
}

impl Transition {
    /// The rings of `layout` for Q = `partitions` and N = `replicas`.
    pub fn new(layout: &Layout, partitions: u32, replicas: usize) -> Self {
        Self {
            current: Ring::new(layout.current_placement(), partitions, replicas),
            target: Ring::new(layout.target_placement(), partitions, replicas),
            removed: layout
                .members()
                .filter(|m| m.removed)
                .map(|m| m.id)
                .collect(),
        }
    }

    /// The ring reads are placed by.
    pub fn current(&self) -> &Ring {
        &self.current
    }

    /// The ring the data is moving to.
    pub fn target(&self) -> &Ring {
        &self.target
    }

    /// The replicas a read of `partition` asks (a removed one among them
    /// is down, and counts as a failed replica).
    pub fn read_replicas(&self, partition: u16) -> &[NodeId] {
        self.current.replicas_of(partition)
    }

    /// The replicas a write of `partition` goes to: the current ones, then
    /// the target's new ones; never a removed member.
    pub fn write_replicas(&self, partition: u16) -> Vec<NodeId> {
        let mut out: Vec<NodeId> = Vec::new();
        let all = self
            .current
            .replicas_of(partition)
            .iter()
            .chain(self.target.replicas_of(partition));
        for &id in all {
            if !self.removed.contains(&id) && !out.contains(&id) {
                out.push(id);
            }
        }
        out
    }

    /// Every partition whose target replicas include a member that is not
    /// a current replica, with its sources.
    pub fn moves(&self) -> Vec<Move> {
        (0..self.current.partitions())
            .filter_map(|p| {
                let p = p as u16;
                let current = self.current.replicas_of(p);
                let to: Vec<NodeId> = self
                    .target
                    .replicas_of(p)
                    .iter()
                    .copied()
                    .filter(|id| !current.contains(id))
                    .collect();
                (!to.is_empty()).then(|| Move {
                    partition: p,
                    to,
                    from: current
                        .iter()
                        .copied()
                        .filter(|id| !self.removed.contains(id))
                        .collect(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
