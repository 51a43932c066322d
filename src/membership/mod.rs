//! Who is in the cluster: the layout (docs/cluster.md, "The layout"), the
//! worker that fills it from the seeds and spreads it by gossip, and the
//! failure detection that tells which members answer.
//!
//! The view is a value others subscribe to (a `watch` channel): the
//! coordinator rebuilds its placement ([`layout::Transition`]) from it,
//! the transport keeps links to its members and refuses removed ones, the
//! handoff worker streams what the layout's change moves. Changes are
//! made on one node ([`Membership::apply`]: a join with `--join`, an
//! operator's leave, remove or weight, a member's sync, a settle) and
//! spread by gossip: every period each node trades summaries with one
//! member, and whole layouts only when the digests differ. The merge is
//! a least upper bound, so every node ends with the same layout.
//!
//! [`failure`] runs the [`detector`] (phi accrual and SWIM's indirect
//! probe) over the links' heartbeats and marks silent peers down on the
//! transport: routing skips them, the layout keeps them, no data moves.

pub mod detector;
pub mod failure;
pub mod layout;

use crate::limits::MEMBERSHIP_EXCHANGE_MS;
use crate::peer::message::{Gossip, MemberInfo, Request, Response};
use crate::peer::transport::Transport;
use crate::task::stopped;
use crate::task::{BoxFuture, WorkerStatus};
use crate::version::NodeId;
use bytes::Bytes;
use layout::{Change, Endpoint, Layout, LayoutError, MemberState, Role};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;

/// The layout, and what the rest of the node reads of it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct View {
    /// The layout, tombstones included.
    pub layout: Layout,
    /// Every member that is not removed, as it is reached (derived from
    /// the layout).
    pub members: BTreeMap<NodeId, MemberInfo>,
}

impl View {
    fn of(layout: Layout) -> Self {
        let members = layout
            .members()
            .filter(|m| m.state() != MemberState::Removed)
            .map(|m| {
                let info = MemberInfo {
                    id: m.id,
                    name: m.endpoint.name.clone(),
                    client_addr: m.endpoint.client_addr.clone(),
                    peer_addr: m.endpoint.peer_addr.clone(),
                    weight: m.weight().unwrap_or(1.0),
                    zone: m.zone().map(str::to_owned),
                };
                (m.id, info)
            })
            .collect();
        Self { layout, members }
    }

    /// The member with `id`, if it is not removed.
    pub fn get(&self, id: NodeId) -> Option<&MemberInfo> {
        self.members.get(&id)
    }
}

/// This node's layout, its subscribers, and what gossip learned of the
/// others'.
pub struct Membership {
    me: MemberInfo,
    incarnation: u64,
    view: watch::Sender<Arc<View>>,
    /// Where the layout is saved (the data directory's meta `layout`).
    save: SaveLayout,
    /// What each peer last gossiped (its target fingerprint and layout
    /// digest): a handoff starts once every live member has the target it
    /// streams for, and old copies go once every member has the settle.
    seen: Mutex<BTreeMap<NodeId, (u64, u64)>>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("me", &self.me.name)
            .field("incarnation", &self.incarnation)
            .finish_non_exhaustive()
    }
}

impl Membership {
    /// An empty layout: this node has not joined or founded anything yet.
    /// `incarnation` is this process's (raised at every start); `save`
    /// keeps the layout where a restart finds it.
    pub fn new(me: MemberInfo, incarnation: u64, save: SaveLayout) -> Arc<Self> {
        let (view, _) = watch::channel(Arc::new(View::default()));
        Arc::new(Self {
            me,
            incarnation,
            view,
            save,
            seen: Mutex::default(),
        })
    }

    /// Saves the layout as it is now.
    ///
    /// # Errors
    /// Why the store could not.
    pub async fn save(&self) -> Result<(), String> {
        (self.save)(self.view().layout.encode()).await
    }

    /// An operator's change (leave, remove, weight): made here, then saved
    /// before it is acknowledged, so that a crash right after cannot lose
    /// a change the operator was told is made. Gossip spreads it.
    ///
    /// # Errors
    /// Why the layout refused it, or why it could not be saved (it is
    /// then made in memory, and saved by the next membership round).
    pub async fn change(&self, change: &Change) -> Result<(), ChangeError> {
        self.apply(change)?;
        self.save().await.map_err(ChangeError::NotSaved)
    }

    /// This node.
    pub fn me(&self) -> &MemberInfo {
        &self.me
    }

    /// The current view.
    pub fn view(&self) -> Arc<View> {
        Arc::clone(&self.view.borrow())
    }

    /// A receiver that sees every new view.
    pub fn subscribe(&self) -> watch::Receiver<Arc<View>> {
        self.view.subscribe()
    }

    /// Every member that is not removed, this node included.
    pub fn members(&self) -> Vec<MemberInfo> {
        self.view().members.values().cloned().collect()
    }

    /// Makes `change` here; gossip spreads it.
    ///
    /// # Errors
    /// Why the layout refused it; the view is then unchanged.
    pub fn apply(&self, change: &Change) -> Result<(), LayoutError> {
        let mut result = Ok(());
        self.view.send_if_modified(|view| {
            let mut layout = view.layout.clone();
            match layout.apply(change, self.me.id) {
                Ok(delta) if !delta.is_empty() => {
                    *view = Arc::new(View::of(layout));
                    true
                }
                Ok(_) => false,
                Err(e) => {
                    result = Err(e);
                    false
                }
            }
        });
        result
    }

    /// Merges `layout` into the view; returns whether it changed.
    pub fn merge(&self, layout: &Layout) -> bool {
        self.view.send_if_modified(|view| {
            let mut merged = view.layout.clone();
            if !merged.merge(layout) {
                return false;
            }
            *view = Arc::new(View::of(merged));
            true
        })
    }

    /// Makes this node a member of the layout it holds: its first member
    /// (when the layout is empty), a joining one, or a known one with its
    /// new incarnation and addresses. Nothing if it is already known as
    /// this process.
    ///
    /// # Errors
    /// [`LayoutError::Removed`] when its id has a tombstone: the node must
    /// not serve (node.rs says why and stops).
    pub fn enter(&self) -> Result<(), LayoutError> {
        let endpoint = Endpoint {
            incarnation: self.incarnation,
            name: self.me.name.clone(),
            peer_addr: self.me.peer_addr.clone(),
            client_addr: self.me.client_addr.clone(),
        };
        let view = self.view();
        let change = match view.layout.get(self.me.id) {
            None => Change::Join {
                id: self.me.id,
                endpoint,
                role: Role {
                    weight: self.me.weight,
                    zone: self.me.zone.clone(),
                },
            },
            Some(m) if m.state() == MemberState::Removed => {
                return Err(LayoutError::Removed { id: self.me.id });
            }
            Some(m) if m.endpoint.incarnation >= self.incarnation => return Ok(()),
            Some(_) => Change::Announce {
                id: self.me.id,
                endpoint,
            },
        };
        self.apply(&change)
    }

    /// Whether this node is in the layout (founded, joined or restarted).
    pub fn entered(&self) -> bool {
        self.view().layout.get(self.me.id).is_some()
    }

    /// This node's state in the layout (`None` before it entered).
    pub fn state(&self) -> Option<MemberState> {
        self.view().layout.get(self.me.id).map(|m| m.state())
    }

    /// Whether this node is in the layout with another member: a node
    /// given seeds serves only then (alone, it would place every key on
    /// itself).
    pub fn has_joined(&self) -> bool {
        joined(&self.view(), self.me.id)
    }

    /// Resolves once [`Membership::has_joined`], or at shutdown.
    pub async fn joined(&self, shutdown: &mut watch::Receiver<bool>) {
        let mut views = self.subscribe();
        let me = self.me.id;
        tokio::select! {
            biased;
            () = stopped(shutdown) => {}
            () = async {
                let _ = views.wait_for(|v| joined(v, me)).await;
            } => {}
        }
    }

    /// Resolves once this node is removed from the layout (a remove, or
    /// its leave is done); never otherwise.
    pub async fn removed(&self) {
        let mut views = self.subscribe();
        let me = self.me.id;
        if views.wait_for(|v| v.layout.is_removed(me)).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// What this node gossips: its summary, and its layout if `whole`.
    pub fn gossip(&self, whole: bool) -> Gossip {
        let layout = &self.view().layout;
        let summary = layout.summary();
        Gossip {
            epoch: summary.epoch,
            digest: summary.digest,
            target: layout.target_fingerprint(),
            layout: whole.then(|| Bytes::from(layout.encode())),
        }
    }

    /// Takes another node's gossip: merges its layout, if it carries one,
    /// and notes its target (`from`: the peer, when it is linked). Returns
    /// whether our layout now differs from the sender's: it needs ours.
    pub fn receive(&self, from: Option<NodeId>, gossip: &Gossip) -> bool {
        if let Some(bytes) = &gossip.layout {
            match Layout::decode(bytes) {
                Ok(layout) => {
                    self.merge(&layout);
                }
                Err(e) => tracing::warn!(?from, "gossiped layout unreadable, ignored: {e}"),
            }
        }
        if let Some(peer) = from {
            self.seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(peer, (gossip.target, gossip.digest));
        }
        self.view().layout.digest() != gossip.digest
    }

    /// The answer to a peer's gossip: ours, with our layout when the
    /// digests differ after taking theirs.
    pub fn answer(&self, from: NodeId, gossip: &Gossip) -> Gossip {
        let differs = self.receive(Some(from), gossip);
        self.gossip(differs)
    }

    /// Whether every member that is not removed and `reachable` last
    /// gossiped `target` (this node counts as having seen it).
    pub fn seen_by_all(&self, target: u64, reachable: impl Fn(NodeId) -> bool) -> bool {
        self.all_gossiped(reachable, |(t, _)| t == target)
    }

    /// Whether every member that is not removed and `reachable` last
    /// gossiped a layout with `digest`: the same layout as this node's.
    pub fn digest_seen_by_all(&self, digest: u64, reachable: impl Fn(NodeId) -> bool) -> bool {
        self.all_gossiped(reachable, |(_, d)| d == digest)
    }

    fn all_gossiped(
        &self,
        reachable: impl Fn(NodeId) -> bool,
        had: impl Fn((u64, u64)) -> bool,
    ) -> bool {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        self.view()
            .members
            .keys()
            .filter(|&&id| id != self.me.id && reachable(id))
            .all(|id| seen.get(id).is_some_and(|&s| had(s)))
    }
}

fn joined(view: &View, me: NodeId) -> bool {
    view.members.len() > 1 && view.layout.get(me).is_some()
}

/// Rounds between two warnings that no seed has a cluster yet (10 s at
/// the exchange period): said, not repeated every round.
const SEEDLESS_WARN_ROUNDS: u64 = 20;

/// Why an operator's layout change failed.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The layout refused it.
    #[error(transparent)]
    Refused(#[from] LayoutError),
    /// It was made here, but the layout could not be saved.
    #[error("the change is made on this node but could not be saved: {0}")]
    NotSaved(String),
}

/// Saves the layout's bytes where a restart finds them; the error says
/// why it could not.
pub type SaveLayout = Arc<dyn Fn(Vec<u8>) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Fills the layout from `seeds`, then keeps it converging: every period,
/// gossip with one member; keep a link to every member and refuse removed
/// ones; save every new layout with `save`. A step on `status` is a
/// layout saved; a failure, a save that failed (retried every round).
pub async fn run(
    membership: Arc<Membership>,
    transport: Arc<Transport>,
    seeds: Vec<String>,
    status: Arc<WorkerStatus>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut views = membership.subscribe();
    let mut tick = tokio::time::interval(Duration::from_millis(MEMBERSHIP_EXCHANGE_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round: u64 = 0;
    let me = membership.me().id;
    loop {
        let view = Arc::clone(&views.borrow_and_update());
        for m in view.layout.members().filter(|m| m.id != me) {
            if m.state() == MemberState::Removed {
                transport.expel(m.id);
            } else if let Some(member) = view.get(m.id) {
                transport.maintain(member.clone());
            }
        }
        match (membership.save)(view.layout.encode()).await {
            Ok(()) => status.stepped(),
            Err(e) => status.failed(format_args!("cannot save the layout: {e}")),
        }
        tokio::select! {
            biased;
            () = stopped(&mut shutdown) => return,
            _ = views.changed() => continue,
            _ = tick.tick() => {}
        }
        round += 1;
        if !membership.entered() {
            // Until a seed answered with a cluster, this node has none to
            // join.
            let mut answered = Vec::new();
            for seed in &seeds {
                match transport.exchange(seed, membership.gossip(true)).await {
                    Ok((peer, gossip)) => {
                        membership.receive(None, &gossip);
                        answered.push(peer);
                    }
                    Err(e) => tracing::warn!(%seed, "cannot reach seed: {e}"),
                }
            }
            let founds = answered.len() == seeds.len() && answered.iter().all(|&id| me < id);
            if !membership.view().layout.is_empty() || founds {
                // Seeds that all answered without a cluster wait for one
                // another (each node lists the others): the smallest id
                // founds it, and the others join it the next round.
                if founds && membership.view().layout.is_empty() {
                    tracing::info!(
                        "founding the cluster: no seed has one yet, and this node has the \
                         smallest id among them"
                    );
                }
                if let Err(e) = membership.enter() {
                    tracing::error!("cannot join the cluster: {e}");
                }
            } else if round % SEEDLESS_WARN_ROUNDS == 1 {
                tracing::warn!(
                    ?seeds,
                    "no seed has a cluster yet: waiting for every seed to answer (the smallest \
                     id then founds one), or start one node without --join"
                );
            }
            continue;
        }
        let view = membership.view();
        let others: Vec<NodeId> = view
            .members
            .keys()
            .copied()
            .filter(|&id| id != me && transport.reachable(id))
            .collect();
        if others.is_empty() {
            // No link: a node removed while it was down is refused by
            // every member, and learns it through a one-shot exchange.
            let peers: Vec<&MemberInfo> = view.members.values().filter(|m| m.id != me).collect();
            if let Some(peer) = peers.get(round as usize % peers.len().max(1))
                && let Ok((_, gossip)) = transport
                    .exchange(&peer.peer_addr, membership.gossip(true))
                    .await
            {
                membership.receive(None, &gossip);
            }
            continue;
        }
        let peer = others[(round as usize) % others.len()];
        gossip_with(&membership, &transport, peer).await;
    }
}

/// One gossip round with `peer`: summaries first; the peer's layout comes
/// back if its digest differs, and ours goes to it if it still differs.
async fn gossip_with(membership: &Membership, transport: &Arc<Transport>, peer: NodeId) {
    let mut whole = false;
    for _ in 0..2 {
        let request = Request::Gossip(membership.gossip(whole));
        match transport.request(peer, request).await {
            Ok(Response::Gossip(gossip)) => {
                if !membership.receive(Some(peer), &gossip) {
                    return;
                }
                whole = true;
            }
            _ => return,
        }
    }
}
