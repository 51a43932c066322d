//! Failure detection wired to the links: the worker that feeds the
//! [`Detector`] what each peer's link heard, ticks it, asks helpers to
//! probe a suspect (SWIM's indirect probe) and marks peers down or up on
//! the transport, which then routes around a down peer at once
//! (docs/cluster.md, "Failure detection").
//!
//! Only routing follows a down mark: no data moves, and the view keeps
//! the peer. Time is the runtime's (`tokio::time`), so the simulation's
//! clock drives it too.

use super::Membership;
use super::detector::{Detection, Detector, DetectorConfig, DetectorError, Event, Health, Via};
use crate::limits::{DETECTOR_ACKS_QUEUE, DETECTOR_PROBE_DEADLINE_MS, DETECTOR_TICK_MS};
use crate::peer::message::{Request, Response};
use crate::peer::transport::{Heard, Transport};
use crate::task::{WorkerStatus, stopped};
use crate::version::NodeId;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The node's failure detector and what it concluded, shared by the
/// worker that runs it ([`run`]) and the reports (`DYNAMO MEMBERS`, INFO).
#[derive(Debug)]
pub struct FailureDetection {
    detector: Mutex<Detector>,
    /// The detector's time zero: its milliseconds count from here.
    start: Instant,
    /// Peers marked down since the node started.
    detections: AtomicU64,
    /// How long after its last arrival the latest down peer was marked
    /// down, in ms (0: none yet).
    last_detection_ms: AtomicU64,
}

/// One peer as the detector sees it, for `DYNAMO MEMBERS`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeerHealth {
    /// Up, suspect (still routed to) or down.
    pub health: Health,
    /// Its suspicion level now.
    pub phi: f64,
    /// Milliseconds since it was last heard from.
    pub silent_ms: u64,
    /// How long after its last arrival it was last marked down, in ms.
    pub last_detection_ms: Option<u64>,
}

/// Totals for INFO.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DetectionCounts {
    /// Peers watched and not down (suspects included).
    pub up: usize,
    /// Peers marked down now.
    pub down: usize,
    /// Down marks since the node started.
    pub detections: u64,
    /// The latest down mark's time after the peer's last arrival, in ms
    /// (0: none yet).
    pub last_detection_ms: u64,
}

impl FailureDetection {
    /// A detector with `config`, its helper picks seeded by `seed`.
    ///
    /// # Errors
    /// [`DetectorError`] for settings the detector cannot use.
    pub fn new(config: DetectorConfig, seed: u64) -> Result<Arc<Self>, DetectorError> {
        Ok(Arc::new(Self {
            detector: Mutex::new(Detector::new(config, seed)?),
            start: Instant::now(),
            detections: AtomicU64::new(0),
            last_detection_ms: AtomicU64::new(0),
        }))
    }

    fn detector(&self) -> std::sync::MutexGuard<'_, Detector> {
        self.detector.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `at` on the detector's clock, in ms.
    fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.start).as_millis() as u64
    }

    /// What the detector thinks of `peer` now (`None`: not watched, as
    /// this node itself).
    pub fn peer(&self, peer: NodeId) -> Option<PeerHealth> {
        let now = self.ms(Instant::now());
        let status = self.detector().status(peer, now)?;
        Some(PeerHealth {
            health: status.health,
            phi: status.phi,
            silent_ms: now.saturating_sub(status.last_heard_ms),
            last_detection_ms: status.last_detection.map(|d| d.after_ms()),
        })
    }

    /// Up and down peers, and the detections so far.
    pub fn counts(&self) -> DetectionCounts {
        let (up, down) = self.detector().counts();
        DetectionCounts {
            up,
            down,
            detections: self.detections.load(Ordering::Relaxed),
            last_detection_ms: self.last_detection_ms.load(Ordering::Relaxed),
        }
    }

    /// Watches exactly the members of the view other than `me`.
    fn watch_members(&self, members: &BTreeSet<NodeId>, now: u64) {
        let mut detector = self.detector();
        let gone: Vec<NodeId> = detector
            .watched()
            .filter(|id| !members.contains(id))
            .collect();
        for id in gone {
            detector.unwatch(id);
        }
        for &id in members {
            detector.watch(id, now);
        }
    }

    fn down(&self, detection: &Detection) {
        self.detections.fetch_add(1, Ordering::Relaxed);
        self.last_detection_ms
            .store(detection.after_ms(), Ordering::Relaxed);
    }
}

/// The failure-detection worker: every [`DETECTOR_TICK_MS`], takes what
/// the links heard since the last tick, ticks the detector, and acts on
/// what changed. A step is a tick.
pub async fn run(
    detection: Arc<FailureDetection>,
    membership: Arc<Membership>,
    transport: Arc<Transport>,
    status: Arc<WorkerStatus>,
    mut shutdown: watch::Receiver<bool>,
) {
    let me = membership.me().id;
    let mut tick = tokio::time::interval(Duration::from_millis(DETECTOR_TICK_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Each link's last arrivals already fed, so each counts once.
    let mut fed: HashMap<NodeId, Heard> = HashMap::new();
    // Probes in flight report acks here; they end with the worker. A full
    // queue drops an ack: the suspect then goes down only if no other ack
    // and no heartbeat comes before its deadline.
    let (acks, mut acked) = mpsc::channel::<NodeId>(DETECTOR_ACKS_QUEUE);
    let mut probes = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = stopped(&mut shutdown) => break,
            Some(peer) = acked.recv() => {
                let now = detection.ms(Instant::now());
                let event = detection.detector().probe_ack(peer, now);
                act(&detection, &membership, &transport, event, &mut probes, &acks);
                continue;
            }
            _ = tick.tick() => {}
        }
        while probes.try_join_next().is_some() {}
        let now = detection.ms(Instant::now());
        let members: BTreeSet<NodeId> = membership
            .view()
            .members
            .keys()
            .copied()
            .filter(|&id| id != me)
            .collect();
        detection.watch_members(&members, now);
        fed.retain(|id, _| members.contains(id));
        let mut events = Vec::new();
        {
            let mut detector = detection.detector();
            for heard in transport.heard() {
                let last = fed.insert(heard.node, heard);
                if let Some(beat) = heard.beat
                    && last.and_then(|l| l.beat) != Some(beat)
                {
                    events.extend(detector.heartbeat(heard.node, detection.ms(beat)));
                }
                if last.map(|l| l.any) != Some(heard.any) {
                    events.extend(detector.heard(heard.node, detection.ms(heard.any)));
                }
            }
            events.extend(detector.tick(now));
        }
        for event in events {
            act(
                &detection,
                &membership,
                &transport,
                Some(event),
                &mut probes,
                &acks,
            );
        }
        status.stepped();
    }
    probes.shutdown().await;
}

/// Acts on one change of a peer's health.
fn act(
    detection: &FailureDetection,
    membership: &Membership,
    transport: &Arc<Transport>,
    event: Option<Event>,
    probes: &mut JoinSet<()>,
    acks: &mpsc::Sender<NodeId>,
) {
    let name = |id: NodeId| {
        membership
            .view()
            .get(id)
            .map_or_else(|| format!("{id:016x}"), |m| m.name.clone())
    };
    match event {
        None => {}
        Some(Event::Suspected { peer, phi, helpers }) => {
            tracing::debug!(
                peer = %name(peer),
                phi = format_args!("{phi:.1}"),
                helpers = helpers.len(),
                "peer suspected: asking other members to probe it"
            );
            for helper in helpers {
                let (transport, acks) = (Arc::clone(transport), acks.clone());
                probes.spawn(async move {
                    let asked = transport.request_up_to(
                        helper,
                        Request::Probe { target: peer },
                        Duration::from_millis(DETECTOR_PROBE_DEADLINE_MS),
                    );
                    if let Ok(Response::Probed { alive: true }) = asked.await {
                        let _ = acks.try_send(peer);
                    }
                });
            }
        }
        Some(Event::Down { peer, detection: d }) => {
            detection.down(&d);
            transport.mark_down(peer, true);
            tracing::warn!(
                peer = %name(peer),
                silent_ms = d.after_ms(),
                "peer marked down: not heard from, directly or through other members; \
                 requests skip it until it is heard again"
            );
        }
        Some(Event::Up { peer, was, via }) => {
            transport.mark_down(peer, false);
            if was == Health::Down {
                let via = match via {
                    Via::Heartbeat => "its heartbeat",
                    Via::IndirectProbe => "another member's probe",
                };
                tracing::info!(peer = %name(peer), "peer up again: heard through {via}");
            }
        }
    }
}
