//! Who is in the cluster: the membership view, the worker that fills it
//! from the seeds and keeps all nodes' views the same, and the failure
//! detection that tells which members answer.
//!
//! The view is a value others subscribe to (a `watch` channel): the
//! coordinator rebuilds its ring from it, the transport keeps connections
//! to its members. Membership here is static — nodes are added by joining,
//! never removed — and spreads by pairwise exchange: a joining node trades
//! views with a seed, and every node trades with one random member per
//! period, so every view converges to the union.
//!
//! [`failure`] runs the [`detector`] (phi accrual and SWIM's indirect
//! probe) over the links' heartbeats and marks silent peers down on the
//! transport: routing skips them, the view keeps them, no data moves.
//! [`layout`] (the versioned layout, its merge, digest and bytes, and the
//! placement it gives the ring) is built and tested, not yet wired
//! (docs/cluster.md, "Membership changes and failure detection").

pub mod detector;
pub mod failure;
pub mod layout;

use crate::limits::MEMBERSHIP_EXCHANGE_MS;
use crate::peer::message::{MemberInfo, Request, Response};
use crate::peer::transport::Transport;
use crate::ring::Placed;
use crate::task::stopped;
use crate::task::{BoxFuture, WorkerStatus};
use crate::version::NodeId;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The members this node knows, by id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct View {
    /// Members by id (this node included).
    pub members: BTreeMap<NodeId, MemberInfo>,
}

impl View {
    /// What placement needs of each member.
    pub fn placed(&self) -> Vec<Placed> {
        self.members
            .values()
            .map(|m| Placed {
                id: m.id,
                weight: m.weight,
                zone: m.zone.clone(),
            })
            .collect()
    }

    /// The member with `id`.
    pub fn get(&self, id: NodeId) -> Option<&MemberInfo> {
        self.members.get(&id)
    }
}

/// The membership view and its subscribers.
#[derive(Debug)]
pub struct Membership {
    me: MemberInfo,
    view: watch::Sender<Arc<View>>,
}

impl Membership {
    /// A view holding only this node.
    pub fn new(me: MemberInfo) -> Arc<Self> {
        let mut view = View::default();
        view.members.insert(me.id, me.clone());
        let (view, _) = watch::channel(Arc::new(view));
        Arc::new(Self { me, view })
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

    /// Adds members not known yet (and updates changed details of known
    /// ones); returns whether the view changed.
    pub fn merge(&self, members: &[MemberInfo]) -> bool {
        self.view.send_if_modified(|view| {
            let mut changed = false;
            for member in members {
                // This node's own entry is its own to say.
                if member.id == self.me.id {
                    continue;
                }
                if !(member.weight.is_finite() && member.weight > 0.0) {
                    tracing::warn!(member = %member.name, weight = member.weight, "member with an invalid weight ignored");
                    continue;
                }
                if view.members.get(&member.id) != Some(member) {
                    let mut next = (**view).clone();
                    next.members.insert(member.id, member.clone());
                    *view = Arc::new(next);
                    tracing::info!(member = %member.name, addr = %member.peer_addr, "member joined the view");
                    changed = true;
                }
            }
            changed
        })
    }

    /// Resolves once the view holds another member than this node (a
    /// joining node must not serve alone), or at shutdown.
    pub async fn joined(&self, shutdown: &mut watch::Receiver<bool>) {
        let mut views = self.subscribe();
        tokio::select! {
            biased;
            () = stopped(shutdown) => {}
            () = async {
                let _ = views.wait_for(|v| v.members.len() > 1).await;
            } => {}
        }
    }

    /// Every member, this node included.
    pub fn members(&self) -> Vec<MemberInfo> {
        self.view().members.values().cloned().collect()
    }
}

/// Saves the member list where a restart finds it; the error says why
/// it could not.
pub type SaveMembers =
    Arc<dyn Fn(Vec<MemberInfo>) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Fills the view from `seeds`, then keeps it converging: every period,
/// trade views with one member; keep a connection to every member; save
/// every new view with `save`. A step on `status` is a view saved; a
/// failure, a save that failed (retried every round).
pub async fn run(
    membership: Arc<Membership>,
    transport: Arc<Transport>,
    seeds: Vec<String>,
    save: SaveMembers,
    status: Arc<WorkerStatus>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut views = membership.subscribe();
    let mut tick = tokio::time::interval(Duration::from_millis(MEMBERSHIP_EXCHANGE_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round: u64 = 0;
    // A node that knows members already (saved from an earlier run) needs
    // no seed to find its cluster.
    let mut seeded = seeds.is_empty() || membership.view().members.len() > 1;
    loop {
        let view = Arc::clone(&views.borrow_and_update());
        for member in view.members.values() {
            if member.id != membership.me().id {
                transport.maintain(member.clone());
            }
        }
        match save(view.members.values().cloned().collect()).await {
            Ok(()) => status.stepped(),
            Err(e) => status.failed(format_args!("cannot save the member list: {e}")),
        }
        tokio::select! {
            biased;
            () = stopped(&mut shutdown) => return,
            _ = views.changed() => continue,
            _ = tick.tick() => {}
        }
        round += 1;
        if !seeded {
            // Until one seed answered, ask the seeds; afterwards the view
            // itself has the members to trade with.
            for seed in &seeds {
                match transport.exchange(seed, membership.members()).await {
                    Ok(members) => {
                        membership.merge(&members);
                        seeded = true;
                    }
                    Err(e) => tracing::warn!(%seed, "cannot reach seed: {e}"),
                }
            }
            continue;
        }
        let others: Vec<NodeId> = membership
            .view()
            .members
            .keys()
            .copied()
            .filter(|&id| id != membership.me().id && transport.reachable(id))
            .collect();
        if others.is_empty() {
            continue;
        }
        let peer = others[(round as usize) % others.len()];
        let request = Request::Members {
            members: membership.members(),
        };
        if let Ok(Response::Members { members }) = transport.request(peer, request).await {
            membership.merge(&members);
        }
    }
}
