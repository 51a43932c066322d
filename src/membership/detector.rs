//! Failure detection, pure: a phi accrual detector per peer (Hayashibara
//! et al., as in Cassandra and Akka) and SWIM's indirect probe as a state
//! machine. Time comes in as milliseconds; nothing here reads a clock,
//! sends a message or spawns a task. The caller feeds arrivals
//! ([`Detector::heartbeat`]), ticks it ([`Detector::tick`]) and carries out
//! what the events ask (probe a suspect through the named helpers).
//!
//! # Phi
//! Per peer, a bounded window of heartbeat inter-arrival intervals. The
//! suspicion level after `t` ms of silence is `phi = -log10(P(X > t))`
//! with X the next interval, modelled as a **normal** distribution of the
//! window's mean and standard deviation (the original paper's and Akka's
//! choice; Cassandra uses the exponential). Why not the exponential: its
//! phi is `t / (mean · ln 10)`, blind to the variance, so phi 8 is always
//! 18.4 mean intervals of silence, 18 s at one heartbeat a second, where
//! issue 20 asks for a dead peer marked down within 3 s while a 1 s pause
//! or 200 ms of jitter marks no one down. The normal distribution puts
//! phi 8 at about mean + 5.2 standard deviations: regular heartbeats are
//! judged tightly, jittery ones leniently, which is what we want of a
//! detector that adapts. The normal's tail is computed with the logistic
//! approximation Akka uses, in log space so it never overflows.
//!
//! Four guards keep the estimate sane (each a limit in `crate::limits`):
//! a floor on the mean (heartbeats never come more often than their
//! interval), a floor on the standard deviation (perfectly regular
//! arrivals would otherwise make 1 ms of lateness a death), a clamp on the
//! longest interval admitted (a long pause must not teach the window that
//! 30 s silences are normal), and a bootstrap estimate until the window
//! holds a few intervals.
//!
//! # Up, suspect, down
//! A peer whose phi crosses the threshold becomes [`Health::Suspect`] and
//! the tick names up to K other up peers as helpers (a
//! [`Event::Suspected`]): the caller asks each to probe the suspect. A
//! heartbeat or any helper's ack ([`Detector::probe_ack`]) brings it back
//! [`Health::Up`]; if neither comes within the probe deadline it is
//! [`Health::Down`], with the times of its detection kept for INFO. A
//! suspect is still up for routing: only down changes where requests go,
//! and no state here ever changes placement.

use crate::limits::{
    DETECTOR_BOOTSTRAP_STD_DEV_MS, DETECTOR_HEARTBEAT_INTERVAL_MS, DETECTOR_INDIRECT_PROBES,
    DETECTOR_INTERVAL_MAX_MS, DETECTOR_PHI_THRESHOLD_DEFAULT, DETECTOR_PROBE_DEADLINE_MS,
    DETECTOR_REPROBE_AFTER_MS, DETECTOR_SAMPLE_GAP_MIN_MS, DETECTOR_SAMPLES_MIN,
    DETECTOR_STD_DEV_MIN_MS, DETECTOR_WINDOW_SAMPLES,
};
use crate::random::SplitMix64;
use crate::version::NodeId;
use std::collections::{BTreeMap, VecDeque};
use thiserror::Error;

/// A detector setting out of range.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum DetectorError {
    /// A setting the detector cannot work with.
    #[error("failure detector setting {field} is {value}: {reason}")]
    InvalidSetting {
        /// Which setting.
        field: &'static str,
        /// Its value, as given.
        value: f64,
        /// What it must be.
        reason: &'static str,
    },
}

/// The detector's settings; [`Default`] takes them from `crate::limits`.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorConfig {
    /// Phi at which a peer is suspected [default: 8].
    pub threshold: f64,
    /// Heartbeat interval the caller keeps, in ms: the floor of the
    /// learned mean and the bootstrap mean [default: 1000].
    pub heartbeat_interval_ms: u64,
    /// Intervals remembered per peer [default: 100].
    pub window_samples: usize,
    /// Intervals needed before the window's own statistics are used
    /// [default: 4].
    pub samples_min: usize,
    /// Standard deviation assumed before that, in ms [default: 250].
    pub bootstrap_std_dev_ms: u64,
    /// Floor of the learned standard deviation, in ms [default: 150].
    pub std_dev_min_ms: u64,
    /// Longest interval admitted to the window, in ms [default: 2000].
    pub interval_max_ms: u64,
    /// Arrivals closer than this to the last sample refresh only the
    /// last-heard time, in ms [default: 500].
    pub sample_gap_min_ms: u64,
    /// Helpers asked to probe a suspect (K) [default: 2].
    pub indirect_probes: usize,
    /// Time a suspect has to be heard from, directly or through a helper,
    /// in ms [default: 800].
    pub probe_deadline_ms: u64,
    /// Time a peer vouched for by a helper stays up before it is suspected
    /// again, in ms [default: 1000].
    pub reprobe_after_ms: u64,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            threshold: DETECTOR_PHI_THRESHOLD_DEFAULT,
            heartbeat_interval_ms: DETECTOR_HEARTBEAT_INTERVAL_MS,
            window_samples: DETECTOR_WINDOW_SAMPLES,
            samples_min: DETECTOR_SAMPLES_MIN,
            bootstrap_std_dev_ms: DETECTOR_BOOTSTRAP_STD_DEV_MS,
            std_dev_min_ms: DETECTOR_STD_DEV_MIN_MS,
            interval_max_ms: DETECTOR_INTERVAL_MAX_MS,
            sample_gap_min_ms: DETECTOR_SAMPLE_GAP_MIN_MS,
            indirect_probes: DETECTOR_INDIRECT_PROBES,
            probe_deadline_ms: DETECTOR_PROBE_DEADLINE_MS,
            reprobe_after_ms: DETECTOR_REPROBE_AFTER_MS,
        }
    }
}

impl DetectorConfig {
    /// Checks that every setting is usable.
    ///
    /// # Errors
    /// [`DetectorError::InvalidSetting`] naming the first bad setting.
    pub fn validate(&self) -> Result<(), DetectorError> {
        let bad = |field, value: f64, reason| {
            Err(DetectorError::InvalidSetting {
                field,
                value,
                reason,
            })
        };
        if !(self.threshold.is_finite() && self.threshold > 0.0) {
            return bad("threshold", self.threshold, "a positive number");
        }
        if self.heartbeat_interval_ms == 0 {
            return bad("heartbeat_interval_ms", 0.0, "at least 1");
        }
        if self.window_samples == 0 {
            return bad("window_samples", 0.0, "at least 1");
        }
        if self.samples_min > self.window_samples {
            return bad(
                "samples_min",
                self.samples_min as f64,
                "at most window_samples",
            );
        }
        if self.std_dev_min_ms == 0 || self.bootstrap_std_dev_ms == 0 {
            return bad("std_dev_min_ms", 0.0, "at least 1");
        }
        if self.interval_max_ms < self.heartbeat_interval_ms {
            return bad(
                "interval_max_ms",
                self.interval_max_ms as f64,
                "at least heartbeat_interval_ms",
            );
        }
        Ok(())
    }
}

/// What the detector thinks of a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Heard from recently enough (or vouched for by a helper).
    Up,
    /// Phi crossed the threshold; helpers are probing it. Still routed to.
    Suspect,
    /// Neither heard from nor vouched for within the probe deadline.
    Down,
}

/// How a peer came back up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Its own heartbeat (or any frame) arrived.
    Heartbeat,
    /// A helper reached it (the direct path may still be broken).
    IndirectProbe,
}

/// When and how a peer was marked down, for INFO and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detection {
    /// Its last arrival before the silence, in ms.
    pub last_heard_ms: u64,
    /// When phi crossed the threshold, in ms.
    pub suspected_at_ms: u64,
    /// When it was marked down, in ms.
    pub down_at_ms: u64,
}

impl Detection {
    /// How long after its last arrival the peer was marked down, in ms.
    pub fn after_ms(&self) -> u64 {
        self.down_at_ms.saturating_sub(self.last_heard_ms)
    }
}

/// A change of a peer's health, for the caller to act on.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `peer` is suspected: ask each of `helpers` to probe it, and report
    /// an ack with [`Detector::probe_ack`]. `helpers` may be empty (no
    /// other peer is up); the deadline runs all the same.
    Suspected {
        /// The suspect.
        peer: NodeId,
        /// Its phi when suspected.
        phi: f64,
        /// Up peers to ask (at most K).
        helpers: Vec<NodeId>,
    },
    /// `peer` is down.
    Down {
        /// The peer.
        peer: NodeId,
        /// When and after how long.
        detection: Detection,
    },
    /// `peer` is up again.
    Up {
        /// The peer.
        peer: NodeId,
        /// What it was.
        was: Health,
        /// What brought it back.
        via: Via,
    },
}

/// One peer's view, for `DYNAMO MEMBERS` and INFO.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerStatus {
    /// Its health.
    pub health: Health,
    /// Its phi now.
    pub phi: f64,
    /// Its last arrival, in ms.
    pub last_heard_ms: u64,
    /// Its last time marked down, if ever.
    pub last_detection: Option<Detection>,
}

/// The state of one watched peer.
#[derive(Debug, Clone)]
struct Peer {
    /// The latest intervals, oldest first, each clamped.
    window: VecDeque<u64>,
    /// Mean and standard deviation of `window`, kept with it.
    mean_ms: f64,
    std_dev_ms: f64,
    /// The arrival that opened the interval being measured.
    last_sample_ms: u64,
    /// The latest arrival of any kind.
    last_heard_ms: u64,
    health: Health,
    /// When it became suspect, and when its probes run out.
    suspected_at_ms: u64,
    deadline_ms: u64,
    /// Not suspected again before this (a helper vouched for it).
    vouched_until_ms: u64,
    last_detection: Option<Detection>,
}

impl Peer {
    fn new(now_ms: u64) -> Self {
        Self {
            window: VecDeque::new(),
            mean_ms: 0.0,
            std_dev_ms: 0.0,
            last_sample_ms: now_ms,
            last_heard_ms: now_ms,
            health: Health::Up,
            suspected_at_ms: 0,
            deadline_ms: 0,
            vouched_until_ms: 0,
            last_detection: None,
        }
    }

    /// Takes an arrival: always evidence of life, a sample only when it
    /// closes an interval long enough to be a heartbeat's.
    fn arrive(&mut self, now_ms: u64, config: &DetectorConfig) {
        self.last_heard_ms = self.last_heard_ms.max(now_ms);
        let interval = now_ms.saturating_sub(self.last_sample_ms);
        if interval < config.sample_gap_min_ms {
            return;
        }
        self.last_sample_ms = now_ms;
        if self.window.len() == config.window_samples {
            self.window.pop_front();
        }
        self.window.push_back(interval.min(config.interval_max_ms));
        // O(window) per sample, at most one sample per half heartbeat: a
        // running sum of squares would drift and save nothing that shows.
        let n = self.window.len() as f64;
        self.mean_ms = self.window.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = self
            .window
            .iter()
            .map(|&x| (x as f64 - self.mean_ms).powi(2))
            .sum::<f64>()
            / n;
        self.std_dev_ms = var.sqrt();
    }

    fn phi(&self, now_ms: u64, config: &DetectorConfig) -> f64 {
        let floor_mean = config.heartbeat_interval_ms as f64;
        let (mean, std_dev) = if self.window.len() < config.samples_min {
            (floor_mean, config.bootstrap_std_dev_ms as f64)
        } else {
            (
                self.mean_ms.max(floor_mean),
                self.std_dev_ms.max(config.std_dev_min_ms as f64),
            )
        };
        let silence = now_ms.saturating_sub(self.last_heard_ms) as f64;
        phi_normal(silence, mean, std_dev)
    }
}

/// `-log10(P(X > t))` for X normal with `mean` and `std_dev` (> 0), by the
/// logistic approximation of the normal CDF (Akka's
/// `PhiAccrualFailureDetector`): `P(X > t) ≈ 1 / (1 + e^z)` with
/// `z = y (1.5976 + 0.070566 y²)`, `y = (t - mean) / std_dev`. So
/// `phi = log10(1 + e^z)`, computed as a softplus that neither overflows
/// for long silences nor loses precision for short ones.
fn phi_normal(t: f64, mean: f64, std_dev: f64) -> f64 {
    let y = (t - mean) / std_dev;
    let z = y * (1.5976 + 0.070566 * y * y);
    let softplus = z.max(0.0) + (-z.abs()).exp().ln_1p();
    softplus / std::f64::consts::LN_10
}

/// A failure detector for the peers of one node.
#[derive(Debug, Clone)]
pub struct Detector {
    config: DetectorConfig,
    peers: BTreeMap<NodeId, Peer>,
    /// Picks helpers; seeded, so a simulation replays.
    rng: SplitMix64,
}

impl Detector {
    /// A detector watching no one, with `seed` for its helper picks.
    ///
    /// # Errors
    /// [`DetectorError::InvalidSetting`] when `config` does not validate.
    pub fn new(config: DetectorConfig, seed: u64) -> Result<Self, DetectorError> {
        config.validate()?;
        Ok(Self {
            config,
            peers: BTreeMap::new(),
            rng: SplitMix64::new(seed),
        })
    }

    /// Its settings.
    pub fn config(&self) -> &DetectorConfig {
        &self.config
    }

    /// Starts watching `peer` as if it had been heard from at `now_ms`
    /// (a new member gets the bootstrap estimate's grace). Watching a
    /// watched peer changes nothing. The caller watches exactly the
    /// layout's members, which bounds what the detector holds.
    pub fn watch(&mut self, peer: NodeId, now_ms: u64) {
        self.peers.entry(peer).or_insert_with(|| Peer::new(now_ms));
    }

    /// Stops watching `peer` (it left the layout).
    pub fn unwatch(&mut self, peer: NodeId) {
        self.peers.remove(&peer);
    }

    /// The peers watched, in id order.
    pub fn watched(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.peers.keys().copied()
    }

    /// Takes a heartbeat from `peer` at `now_ms` (or any arrival, when
    /// the caller cannot tell heartbeats apart): evidence of life, and a
    /// sample of the rhythm the window learns. Returns the event when
    /// this brings it back up. An unwatched peer is ignored.
    pub fn heartbeat(&mut self, peer: NodeId, now_ms: u64) -> Option<Event> {
        let config = self.config.clone();
        self.arrival(peer, Via::Heartbeat, |state| {
            if state.health == Health::Up {
                state.arrive(now_ms, &config);
            } else {
                // The interval that ends a suspicion spans an outage (a
                // pause, a cut link), not the peer's rhythm: learning it
                // would slow every later detection.
                state.last_heard_ms = state.last_heard_ms.max(now_ms);
                state.last_sample_ms = now_ms;
            }
        })
    }

    /// Takes an arrival from `peer` at `now_ms` that is not a heartbeat
    /// (a request or a reply on its link): evidence of life only, so the
    /// window keeps the heartbeats' rhythm, not the traffic's. Returns the
    /// event when this brings it back up.
    pub fn heard(&mut self, peer: NodeId, now_ms: u64) -> Option<Event> {
        self.arrival(peer, Via::Heartbeat, |state| {
            state.last_heard_ms = state.last_heard_ms.max(now_ms);
        })
    }

    /// Signs of life from `peer` (`take` records them): up, with the
    /// event if it was not.
    fn arrival(&mut self, peer: NodeId, via: Via, take: impl FnOnce(&mut Peer)) -> Option<Event> {
        let state = self.peers.get_mut(&peer)?;
        take(state);
        let was = state.health;
        if was == Health::Up {
            return None;
        }
        state.health = Health::Up;
        Some(Event::Up { peer, was, via })
    }

    /// Takes a helper's ack of an indirect probe of `peer`: it is alive,
    /// whatever the direct path says. It is up, and not suspected again
    /// for the reprobe period. Returns the event when this brings it back
    /// up.
    pub fn probe_ack(&mut self, peer: NodeId, now_ms: u64) -> Option<Event> {
        let until = now_ms.saturating_add(self.config.reprobe_after_ms);
        self.arrival(peer, Via::IndirectProbe, |state| {
            state.vouched_until_ms = state.vouched_until_ms.max(until);
        })
    }

    /// Phi of `peer` at `now_ms`; 0 for a peer not watched.
    pub fn phi(&self, peer: NodeId, now_ms: u64) -> f64 {
        self.peers
            .get(&peer)
            .map_or(0.0, |p| p.phi(now_ms, &self.config))
    }

    /// Peers whose phi is at or past the threshold at `now_ms`, whatever
    /// their health (a read-only look; [`Detector::tick`] acts on it).
    pub fn suspects(&self, now_ms: u64) -> Vec<NodeId> {
        self.peers
            .iter()
            .filter(|(_, p)| p.phi(now_ms, &self.config) >= self.config.threshold)
            .map(|(&id, _)| id)
            .collect()
    }

    /// The health of `peer`, if watched.
    pub fn health(&self, peer: NodeId) -> Option<Health> {
        self.peers.get(&peer).map(|p| p.health)
    }

    /// Everything known of `peer` at `now_ms`, if watched.
    pub fn status(&self, peer: NodeId, now_ms: u64) -> Option<PeerStatus> {
        let p = self.peers.get(&peer)?;
        Some(PeerStatus {
            health: p.health,
            phi: p.phi(now_ms, &self.config),
            last_heard_ms: p.last_heard_ms,
            last_detection: p.last_detection,
        })
    }

    /// Peers up (suspects included: they are still routed to) and down.
    pub fn counts(&self) -> (usize, usize) {
        let down = self
            .peers
            .values()
            .filter(|p| p.health == Health::Down)
            .count();
        (self.peers.len() - down, down)
    }

    /// Advances every peer to `now_ms`: up peers past the threshold (and
    /// not vouched for) become suspects, with helpers named; suspects past
    /// their deadline go down. Call it often (every 50-100 ms): a
    /// detection is late by up to one tick period.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Event> {
        let mut events = Vec::new();
        let ids: Vec<NodeId> = self.peers.keys().copied().collect();
        for id in ids {
            let config = &self.config;
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            match peer.health {
                Health::Up => {
                    if now_ms < peer.vouched_until_ms {
                        continue;
                    }
                    let phi = peer.phi(now_ms, config);
                    if phi < config.threshold {
                        continue;
                    }
                    peer.health = Health::Suspect;
                    peer.suspected_at_ms = now_ms;
                    peer.deadline_ms = now_ms.saturating_add(config.probe_deadline_ms);
                    let helpers = self.helpers(id);
                    events.push(Event::Suspected {
                        peer: id,
                        phi,
                        helpers,
                    });
                }
                Health::Suspect => {
                    if now_ms < peer.deadline_ms {
                        continue;
                    }
                    peer.health = Health::Down;
                    let detection = Detection {
                        last_heard_ms: peer.last_heard_ms,
                        suspected_at_ms: peer.suspected_at_ms,
                        down_at_ms: now_ms,
                    };
                    peer.last_detection = Some(detection);
                    events.push(Event::Down {
                        peer: id,
                        detection,
                    });
                }
                Health::Down => {}
            }
        }
        events
    }

    /// Up to K up peers other than `suspect`, picked at random so that
    /// probes spread over the cluster.
    fn helpers(&mut self, suspect: NodeId) -> Vec<NodeId> {
        let mut up: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|&(&id, p)| id != suspect && p.health == Health::Up)
            .map(|(&id, _)| id)
            .collect();
        let k = self.config.indirect_probes.min(up.len());
        // A partial Fisher-Yates shuffle: the first k are a uniform pick.
        for i in 0..k {
            let span = (up.len() - i) as u64;
            let j = i + (self.rng.next_u64() % span) as usize;
            up.swap(i, j);
        }
        up.truncate(k);
        up
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TICK_MS: u64 = 50;

    fn detector() -> Detector {
        Detector::new(DetectorConfig::default(), 7).unwrap()
    }

    /// Feeds `peer` heartbeats every `interval` ms for `beats` beats,
    /// ticking in between; returns the time of the last beat.
    fn steady(d: &mut Detector, peer: NodeId, start: u64, interval: u64, beats: u64) -> u64 {
        let mut now = start;
        for _ in 0..beats {
            let next = now + interval;
            while now + TICK_MS < next {
                now += TICK_MS;
                for e in d.tick(now) {
                    assert!(
                        !matches!(e, Event::Suspected { peer: p, .. } | Event::Down { peer: p, .. } if p == peer),
                        "steady peer suspected at {now}: {e:?}"
                    );
                }
            }
            now = next;
            d.heartbeat(peer, now);
        }
        now
    }

    /// Ticks from `from` until `peer` is suspected; returns when.
    fn time_to_suspect(d: &mut Detector, peer: NodeId, from: u64) -> u64 {
        let mut now = from;
        loop {
            now += TICK_MS;
            assert!(now < from + 120_000, "never suspected");
            if d.tick(now)
                .iter()
                .any(|e| matches!(e, Event::Suspected { peer: p, .. } if *p == peer))
            {
                return now;
            }
        }
    }

    // Proves the phi formula: 0-ish well before the mean, about 0.3 at the
    // mean (the logistic gives P = 1/2), rising without bound and never
    // infinite or NaN.
    #[test]
    fn phi_is_monotone_and_finite() {
        assert!(phi_normal(0.0, 1000.0, 100.0) < 1e-6);
        assert!((phi_normal(1000.0, 1000.0, 100.0) - 2f64.log10()).abs() < 1e-12);
        let mut last = 0.0;
        for t in (0..100_000).step_by(37) {
            let phi = phi_normal(f64::from(t), 1000.0, 150.0);
            assert!(phi.is_finite() && phi >= last, "t={t} phi={phi}");
            last = phi;
        }
        assert!(phi_normal(1e12, 1000.0, 1.0).is_finite());
    }

    // Proves steady 1 s heartbeats are never suspected over 10 minutes,
    // with phi well below the threshold just before each beat.
    #[test]
    fn steady_heartbeats_are_never_suspected() {
        let mut d = detector();
        d.watch(1, 0);
        let now = steady(&mut d, 1, 0, 1000, 600);
        assert_eq!(d.health(1), Some(Health::Up));
        assert!(d.phi(1, now + 999) < 1.0, "phi {}", d.phi(1, now + 999));
        assert!(d.suspects(now + 999).is_empty());
    }

    // Proves suspicion comes a predictable time after the last heartbeat:
    // mean + about 5.2 standard deviations (floored), for intervals below
    // the clamp, and that a dead peer with no helper to vouch goes down
    // one probe deadline later, within the 3 s issue 20 asks for.
    #[test]
    fn silence_is_suspected_after_a_predictable_time() {
        for interval in [1000, 1500, 2000] {
            let mut d = detector();
            d.watch(1, 0);
            let last = steady(&mut d, 1, 0, interval, 120);
            let at = time_to_suspect(&mut d, 1, last);
            let after = (at - last) as f64;
            let expect = interval as f64 + 5.23 * DETECTOR_STD_DEV_MIN_MS as f64;
            assert!(
                (after - expect).abs() <= TICK_MS as f64,
                "interval {interval}: suspected after {after} ms, expected {expect}"
            );
            // Nobody vouches: down at the deadline.
            let mut now = at;
            let detection = loop {
                now += TICK_MS;
                if let Some(Event::Down { detection, .. }) = d.tick(now).into_iter().next() {
                    break detection;
                }
            };
            assert_eq!(detection.last_heard_ms, last);
            assert_eq!(detection.suspected_at_ms, at);
            assert_eq!(detection.down_at_ms, at + DETECTOR_PROBE_DEADLINE_MS);
            if interval == 1000 {
                assert!(detection.after_ms() < 3000, "{detection:?}");
            }
            assert_eq!(d.health(1), Some(Health::Down));
            assert_eq!(d.counts(), (0, 1));
            assert_eq!(
                d.status(1, now).and_then(|s| s.last_detection),
                Some(detection)
            );
        }
    }

    // Proves a peer heard again comes back up at once, by heartbeat or by
    // a helper's ack, and that suspicion names other up peers as helpers.
    #[test]
    fn heartbeats_and_acks_bring_a_peer_back() {
        let mut d = detector();
        for p in 1..=4 {
            d.watch(p, 0);
        }
        let mut now = 0;
        let mut helpers = Vec::new();
        // Peers 2-4 keep beating, peer 1 falls silent.
        while helpers.is_empty() {
            now += TICK_MS;
            if now % 1000 == 0 {
                for p in 2..=4 {
                    d.heartbeat(p, now);
                }
            }
            for e in d.tick(now) {
                if let Event::Suspected {
                    peer: 1,
                    helpers: h,
                    ..
                } = e
                {
                    helpers = h;
                }
            }
        }
        assert_eq!(helpers.len(), DETECTOR_INDIRECT_PROBES);
        assert!(helpers.iter().all(|h| (2..=4).contains(h)));
        assert_eq!(d.health(1), Some(Health::Suspect));
        assert_eq!(
            d.probe_ack(1, now + 10),
            Some(Event::Up {
                peer: 1,
                was: Health::Suspect,
                via: Via::IndirectProbe
            })
        );
        // Down, then a heartbeat.
        let later = now + 60_000;
        for t in (now..later).step_by(TICK_MS as usize) {
            d.tick(t);
        }
        assert_eq!(d.health(1), Some(Health::Down));
        assert_eq!(
            d.heartbeat(1, later),
            Some(Event::Up {
                peer: 1,
                was: Health::Down,
                via: Via::Heartbeat
            })
        );
        assert_eq!(d.heartbeat(1, later + 1000), None);
        // An unwatched peer is nobody's business.
        assert_eq!(d.heartbeat(99, later), None);
        assert_eq!(d.phi(99, later), 0.0);
    }

    // Proves a one-way fault (every direct heartbeat lost, every indirect
    // probe answered within the deadline) never marks the peer down over
    // ten minutes, and re-probes once per reprobe period, not per tick.
    #[test]
    fn a_one_way_fault_is_never_a_death() {
        let mut d = detector();
        for p in 1..=3 {
            d.watch(p, 0);
        }
        let mut pending_ack: Option<u64> = None;
        let mut suspicions = 0;
        let end = 600_000;
        let mut now = 0;
        while now < end {
            now += TICK_MS;
            if now % 1000 == 0 {
                d.heartbeat(2, now);
                d.heartbeat(3, now);
            }
            if let Some(at) = pending_ack
                && now >= at
            {
                d.probe_ack(1, now);
                pending_ack = None;
            }
            for e in d.tick(now) {
                match e {
                    Event::Suspected {
                        peer: 1, helpers, ..
                    } => {
                        assert!(!helpers.is_empty());
                        suspicions += 1;
                        // A helper's probe and its ack take 300 ms.
                        pending_ack = Some(now + 300);
                    }
                    Event::Down { peer, .. } => panic!("peer {peer} marked down at {now}"),
                    _ => {}
                }
            }
        }
        // About one round of probes per (reprobe period + ack time).
        let rounds = end / (DETECTOR_REPROBE_AFTER_MS + 300);
        assert!(suspicions <= rounds + 2, "{suspicions} rounds of probes");
        assert_ne!(d.health(1), Some(Health::Down));
    }

    // Proves an outage is not learned: after a pause that was suspected
    // (a GC, a SIGSTOP of 2.5 s or 30 s) the window does not take the
    // silence as the peer's rhythm, so the peer's real death later is
    // detected as fast as before the pause.
    #[test]
    fn a_pause_does_not_slow_later_detection() {
        let baseline = {
            let mut d = detector();
            d.watch(1, 0);
            let last = steady(&mut d, 1, 0, 1000, 100);
            time_to_suspect(&mut d, 1, last) - last
        };
        for pause in [2_500, 30_000] {
            let mut d = detector();
            d.watch(1, 0);
            let last = steady(&mut d, 1, 0, 1000, 100);
            let resumed = last + pause;
            for t in (last..resumed).step_by(TICK_MS as usize) {
                d.tick(t);
            }
            assert_ne!(d.health(1), Some(Health::Up), "a {pause} ms pause");
            d.heartbeat(1, resumed);
            let last = steady(&mut d, 1, resumed, 1000, 5);
            let after = time_to_suspect(&mut d, 1, last) - last;
            assert!(
                after <= baseline + TICK_MS,
                "after a {pause} ms pause: {after} ms, before: {baseline} ms"
            );
        }
    }

    // Proves frames under load (every few ms) do not teach the window
    // that 1 ms intervals are normal: when the load stops, idle 1 s
    // heartbeats are not suspected.
    #[test]
    fn traffic_then_idle_is_not_suspected() {
        let mut d = detector();
        d.watch(1, 0);
        let mut now = 0;
        while now < 60_000 {
            now += 3;
            d.heartbeat(1, now);
            if now % TICK_MS == 0 {
                assert!(d.tick(now).is_empty());
            }
        }
        let last = steady(&mut d, 1, now, 1000, 30);
        assert!(d.phi(1, last + 1000) < 1.0);
    }

    #[test]
    fn bad_settings_are_refused() {
        let bad = DetectorConfig {
            threshold: f64::NAN,
            ..DetectorConfig::default()
        };
        assert!(matches!(
            Detector::new(bad, 1),
            Err(DetectorError::InvalidSetting {
                field: "threshold",
                ..
            })
        ));
        let bad = DetectorConfig {
            interval_max_ms: 10,
            ..DetectorConfig::default()
        };
        assert!(bad.validate().is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        // Proves heartbeats every 1 s with up to ±200 ms of jitter are
        // never suspected, whatever the jitter's pattern (5 minutes each).
        #[test]
        fn jittered_heartbeats_are_never_suspected(
            jitter in proptest::collection::vec(-200i64..=200, 300),
        ) {
            let mut d = detector();
            d.watch(1, 0);
            let arrivals: Vec<u64> = jitter
                .iter()
                .enumerate()
                .map(|(i, j)| (1000 * (i as i64 + 1) + j) as u64)
                .collect();
            let mut next = 0;
            let mut now = 0;
            while next < arrivals.len() {
                now += 10;
                while next < arrivals.len() && arrivals[next] <= now {
                    d.heartbeat(1, arrivals[next]);
                    next += 1;
                }
                let events = d.tick(now);
                prop_assert!(events.is_empty(), "at {}: {:?}", now, events);
            }
        }

        // Proves that with jitter and lost heartbeats (never two in a row)
        // a peer may be suspected but is never marked down, even with no
        // helper to vouch for it: its next heartbeat beats the deadline.
        #[test]
        fn single_losses_never_mark_down(
            beats in proptest::collection::vec((-200i64..=200, 0u8..100), 300),
        ) {
            let mut d = detector();
            d.watch(1, 0);
            let mut lost_last = false;
            let arrivals: Vec<u64> = beats
                .iter()
                .enumerate()
                .filter_map(|(i, &(j, loss))| {
                    // 5% loss, but never two in a row.
                    let lost = loss < 5 && !lost_last;
                    lost_last = lost;
                    (!lost).then_some((1000 * (i as i64 + 1) + j) as u64)
                })
                .collect();
            let mut next = 0;
            let mut now = 0;
            while next < arrivals.len() {
                now += 10;
                while next < arrivals.len() && arrivals[next] <= now {
                    d.heartbeat(1, arrivals[next]);
                    next += 1;
                }
                for e in d.tick(now) {
                    prop_assert!(!matches!(e, Event::Down { .. }), "at {}: {:?}", now, e);
                }
            }
        }
    }
}
