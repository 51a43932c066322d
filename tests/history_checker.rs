//! The history checker itself (`common::history::check`), fed hand-built
//! histories and final states: a planted lost write and a planted phantom
//! must both be reported, a clean history must report nothing, and each
//! rule (superseding, resurrection, failed writes, convergence, FLUSHALL)
//! holds.

mod common;

use common::history::{Call, ClearsSeen, Final, KeyState, Op, Outcome, Timing, check, check_with};
use std::collections::BTreeMap;
use std::time::Duration;

/// A history under construction, one op per call, times increasing: op
/// `i` runs from `10 i` ms to `10 i + 5` ms, plus the gaps inserted.
#[derive(Default)]
struct Builder {
    ops: Vec<Op>,
    /// The gaps inserted so far.
    offset: Duration,
}

impl Builder {
    /// Lets `d` pass before the next op.
    fn gap(&mut self, d: Duration) {
        self.offset += d;
    }

    fn push(&mut self, node: usize, key: &str, call: Call, outcome: Outcome) {
        let t = Duration::from_millis(10 * self.ops.len() as u64) + self.offset;
        self.ops.push(Op {
            client: node,
            node,
            key: key.to_owned(),
            call,
            outcome,
            invoked: t,
            completed: t + Duration::from_millis(5),
        });
    }

    fn get(&mut self, node: usize, key: &str, context: &str, values: &[&str]) {
        self.push(
            node,
            key,
            Call::Get { r: None },
            Outcome::Read {
                context: context.as_bytes().to_vec(),
                values: values.iter().map(|v| (*v).to_owned()).collect(),
            },
        );
    }

    fn set(&mut self, node: usize, key: &str, covers: &[&str], value: &str, outcome: Outcome) {
        self.push(
            node,
            key,
            Call::Set {
                context: covers.join(",").into_bytes(),
                covers: covers.iter().map(|v| (*v).to_owned()).collect(),
                value: value.to_owned(),
                w: None,
            },
            outcome,
        );
    }

    fn del(&mut self, node: usize, key: &str, covers: &[&str], outcome: Outcome) {
        self.push(
            node,
            key,
            Call::Del {
                context: covers.join(",").into_bytes(),
                covers: covers.iter().map(|v| (*v).to_owned()).collect(),
                w: None,
            },
            outcome,
        );
    }
}

fn ok() -> Outcome {
    Outcome::Written {
        context: b"ctx".to_vec(),
    }
}

fn noquorum() -> Outcome {
    Outcome::Failed {
        error: "NOQUORUM write needed 2 of 3 replicas, 1 succeeded".into(),
        sent: true,
    }
}

fn state(values: &[&str]) -> KeyState {
    let mut values: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
    values.sort();
    (b"final".to_vec(), values)
}

/// The same final state of every key on nodes 0..3.
fn final_everywhere(keys: &[(&str, &[&str])]) -> Final {
    let per_node: BTreeMap<String, KeyState> = keys
        .iter()
        .map(|(k, values)| ((*k).to_owned(), state(values)))
        .collect();
    Final {
        states: (0..3).map(|n| (n, per_node.clone())).collect(),
        converged: true,
        converge_ms: 42,
        divergence: None,
    }
}

// Proves a clean read-modify-write history (overwrite, delete, rewrite, siblings) reports nothing.
#[test]
fn clean_history_reports_nothing() {
    let mut h = Builder::default();
    h.set(0, "a", &[], "a1", ok());
    h.get(1, "a", "c1", &["a1"]);
    h.set(1, "a", &["a1"], "a2", ok());
    h.get(2, "a", "c2", &["a2"]);
    h.del(2, "a", &["a2"], ok());
    h.get(0, "a", "c3", &[]);
    h.set(0, "a", &[], "a3", ok());
    // Two writers from the same context: two siblings.
    h.set(0, "b", &[], "b1", ok());
    h.set(1, "b", &[], "b2", ok());
    h.get(2, "b", "c4", &["b1", "b2"]);
    let report = check(
        &h.ops,
        &final_everywhere(&[("a", &["a3"]), ("b", &["b1", "b2"])]),
    );
    eprintln!("{report}");
    assert_eq!(
        (report.lost, report.phantoms, report.resurrected),
        (0, 0, 0),
        "{report:#?}"
    );
    assert!(report.is_clean(), "{report:#?}");
    assert_eq!(report.ops, 10);
    assert_eq!(report.acknowledged, 10);
    assert_eq!(report.max_siblings, 2);
    assert_eq!(report.superseded, 2, "a1 and a2 were superseded");
}

// Proves a planted lost write and a planted phantom value are both reported (and named).
#[test]
fn planted_lost_write_and_phantom_are_reported() {
    let mut h = Builder::default();
    h.set(0, "k", &[], "k1", ok());
    h.set(1, "k", &[], "k2", ok());
    // A read during the run returns a value nobody wrote.
    h.get(2, "k", "c1", &["k1", "ghost"]);
    // k1 was acknowledged and nothing superseded it, yet only node 0 has it.
    let mut fin = final_everywhere(&[("k", &["k2"])]);
    fin.states
        .entry(0)
        .or_default()
        .insert("k".into(), state(&["k1", "k2"]));
    fin.converged = false;
    fin.divergence = Some("k: nodes disagree".into());
    let report = check(&h.ops, &fin);
    eprintln!("{report}");
    assert_eq!(report.lost, 1, "{report:#?}");
    assert_eq!(report.phantoms, 1, "{report:#?}");
    assert!(!report.converged);
    assert!(!report.is_clean());
    let text = report.problems.join("\n");
    assert!(text.contains("lost: k = \"k1\""), "{text}");
    assert!(text.contains("missing on nodes [1, 2]"), "{text}");
    assert!(text.contains("phantom: k read \"ghost\""), "{text}");
}

// Proves a final-state phantom and a value of another key count as phantoms too.
#[test]
fn phantoms_at_the_end_and_crossed_keys_are_reported() {
    let mut h = Builder::default();
    h.set(0, "x", &[], "x1", ok());
    h.set(0, "y", &[], "y1", ok());
    let report = check(
        &h.ops,
        &final_everywhere(&[("x", &["x1", "y1"]), ("y", &["y1", "never"])]),
    );
    assert_eq!(report.phantoms, 2, "{report:#?}");
    assert_eq!(report.lost, 0, "{report:#?}");
}

// Proves a failed write that was observed supersedes; one never observed does not (loss).
#[test]
fn failed_writes_supersede_only_when_applied() {
    let mut h = Builder::default();
    h.set(0, "k", &[], "k1", ok());
    h.get(0, "k", "c1", &["k1"]);
    // NOQUORUM, but the coordinator kept it: seen by a read later.
    h.set(0, "k", &["k1"], "k2", noquorum());
    h.get(1, "k", "c2", &["k2"]);
    h.set(0, "j", &[], "j1", ok());
    h.get(0, "j", "c3", &["j1"]);
    // NOQUORUM and never seen anywhere: it was not applied, so it cannot
    // explain why j1 is gone.
    h.set(0, "j", &["j1"], "j2", noquorum());
    let report = check(&h.ops, &final_everywhere(&[("k", &["k2"]), ("j", &[])]));
    assert_eq!(report.lost, 1, "{report:#?}");
    assert!(
        report.problems.iter().any(|p| p.contains("j1")),
        "{report:#?}"
    );
    assert_eq!(report.superseded, 1, "{report:#?}");
}

// Proves an acknowledged delete's values coming back are reported, and an unacked delete excuses.
#[test]
fn resurrection_after_an_acknowledged_delete_is_reported() {
    let mut h = Builder::default();
    h.set(0, "d", &[], "d1", ok());
    h.get(0, "d", "c1", &["d1"]);
    h.del(0, "d", &["d1"], ok());
    h.set(0, "e", &[], "e1", ok());
    h.get(0, "e", "c2", &["e1"]);
    h.del(1, "e", &["e1"], Outcome::Unknown("timed out".into()));
    let report = check(&h.ops, &final_everywhere(&[("d", &["d1"]), ("e", &[])]));
    assert_eq!(report.resurrected, 3, "d1 on each of 3 nodes: {report:#?}");
    assert_eq!(report.lost, 0, "{report:#?}");
    assert_eq!(report.excused_by_unacked_del, 1, "{report:#?}");
    assert!(!report.is_clean());
}

// Proves a write refused before it was sent (no connection) supersedes nothing.
#[test]
fn unsent_writes_supersede_nothing() {
    let mut h = Builder::default();
    h.set(0, "k", &[], "k1", ok());
    h.get(0, "k", "c1", &["k1"]);
    h.del(
        0,
        "k",
        &["k1"],
        Outcome::Failed {
            error: "connect: refused".into(),
            sent: false,
        },
    );
    let report = check(&h.ops, &final_everywhere(&[("k", &[])]));
    assert_eq!(report.lost, 1, "{report:#?}");
    assert_eq!((report.failed, report.acknowledged), (1, 2));
}

impl Builder {
    fn incr(&mut self, node: usize, key: &str, by: i64, outcome: Outcome) {
        self.push(node, key, Call::Incr { by }, outcome);
    }

    fn exec(&mut self, node: usize, key: &str, by: i64, read: i64, outcome: Outcome) {
        let read = Some(read);
        self.push(node, key, Call::Exec { by, read }, outcome);
    }
}

// Proves counters judged by their bits: increments on two siblings (a partition's two sides), a
// failed one counted or not, and a transaction that read and added are clean.
#[test]
fn clean_counter_history_reports_nothing() {
    let mut h = Builder::default();
    h.incr(0, "c", 1, Outcome::Counted(1));
    h.exec(1, "c", 4, 1, Outcome::Counted(5));
    // Two sides of a partition, each from 5: two siblings.
    h.incr(0, "c", 16, Outcome::Counted(21));
    h.incr(3, "c", 64, Outcome::Counted(69));
    // Refused, or applied without an answer: either is fine.
    h.incr(3, "c", 256, noquorum());
    h.exec(2, "c", 1024, 69, Outcome::Aborted);
    let report = check(&h.ops, &final_everywhere(&[("c", &["21", "325"])]));
    eprintln!("{report}");
    assert!(report.is_clean(), "{report:#?}");
    assert_eq!((report.incrs, report.incrs_acked), (6, 4));
    assert_eq!(
        (report.execs, report.execs_acked, report.execs_aborted),
        (2, 1, 1)
    );
    assert_eq!(report.counter_siblings, 2);
    assert_eq!(report.phantoms, 0, "counter values are not VSET phantoms");
}

// Proves a planted lost increment, a double count and an aborted transaction's bit are reported.
#[test]
fn planted_lost_increment_and_counter_phantoms_are_reported() {
    let mut h = Builder::default();
    h.incr(0, "c", 1, Outcome::Counted(1));
    h.incr(1, "c", 4, Outcome::Counted(5));
    // A transaction read 1 (missing 4), wrote 17 over 5: 4 is lost.
    h.exec(2, "c", 16, 1, Outcome::Counted(17));
    h.exec(2, "c", 64, 17, Outcome::Aborted);
    h.incr(0, "d", 1, Outcome::Counted(1));
    // Counted twice: 1 + 1 = 2, a bit no one sent.
    h.incr(0, "d", 4, Outcome::Counted(6));
    let report = check(&h.ops, &final_everywhere(&[("c", &["81"]), ("d", &["6"])]));
    eprintln!("{report}");
    assert!(!report.is_clean());
    assert_eq!(report.incr_lost, 2, "c's 4 and d's 1: {report:#?}");
    // c = 81 holds the aborted 64; d = 6 holds the unsent 2 (once in the
    // reply, once at the end: one value).
    assert_eq!(report.incr_phantoms, 2, "{report:#?}");
    let text = report.problems.join("\n");
    assert!(
        text.contains("lost increment: Incr { by: 4 } of c"),
        "{text}"
    );
    assert!(text.contains("c = \"81\""), "{text}");
}

// ---------------------------------------------------------------------
// FLUSHALL. Its rules, with a bound on late messages of LATE: what was
// written strictly after a FLUSHALL could last act is never excused; what
// was written before or during one may be gone; a value every copy of
// which had landed before an acknowledged FLUSHALL began must not be read
// after it returned.

/// The bound on late messages the FLUSHALL tests assume.
const LATE: Duration = Duration::from_millis(100);

fn timing() -> Timing {
    Timing {
        late: Some(LATE),
        clears: None,
    }
}

impl Builder {
    fn flush(&mut self, node: usize, outcome: Outcome) {
        self.push(node, "", Call::FlushAll, outcome);
    }

    /// The last op, to adjust its times.
    fn last(&mut self) -> &mut Op {
        let Some(op) = self.ops.last_mut() else {
            panic!("no op yet");
        };
        op
    }
}

// Proves a write acknowledged after an acknowledged FLUSHALL returned and missing at the end is
// reported lost (the issue 17 bug: writes after a flush gone after a restart), while one written
// before the flush may be gone; the same for increments.
#[test]
fn a_write_after_an_acknowledged_flushall_must_survive() {
    let mut h = Builder::default();
    h.set(0, "k", &[], "k1", ok());
    h.incr(0, "c", 1, Outcome::Counted(1));
    h.flush(1, Outcome::Done);
    h.set(2, "k", &[], "k2", ok());
    h.incr(2, "c", 4, Outcome::Counted(4));
    // A restart lost what came after the flush: k and c are empty.
    let report = check_with(
        &h.ops,
        &final_everywhere(&[("k", &[]), ("c", &[])]),
        &timing(),
    );
    eprintln!("{report}");
    assert_eq!((report.lost, report.flushed), (1, 1), "{report:#?}");
    assert_eq!(
        (report.incr_lost, report.incr_flushed),
        (1, 1),
        "{report:#?}"
    );
    assert_eq!((report.flushes, report.flushes_acked), (1, 1));
    assert!(!report.is_clean());
    let text = report.problems.join("\n");
    assert!(text.contains("lost: k = \"k2\""), "{text}");
    assert!(
        text.contains("lost increment: Incr { by: 4 } of c"),
        "{text}"
    );
    // The same history with the writes after the flush kept is clean.
    let report = check_with(
        &h.ops,
        &final_everywhere(&[("k", &["k2"]), ("c", &["4"])]),
        &timing(),
    );
    assert!(report.is_clean(), "{report:#?}");
    assert_eq!((report.flushed, report.incr_flushed), (1, 1), "{report:#?}");
}

// Proves a write that overlaps a FLUSHALL may be kept or gone: each node clears at its own moment
// while the FLUSHALL runs, so it may have cleared the write's replicas before or after the write.
#[test]
fn writes_concurrent_with_a_flushall_may_go_either_way() {
    let mut h = Builder::default();
    h.flush(0, Outcome::Done);
    h.last().completed += Duration::from_millis(30);
    // Both invoked while the flush ran: one kept, one cleared.
    h.set(1, "k", &[], "k1", ok());
    h.set(2, "j", &[], "j1", ok());
    let report = check_with(
        &h.ops,
        &final_everywhere(&[("k", &["k1"]), ("j", &[])]),
        &timing(),
    );
    eprintln!("{report}");
    assert!(report.is_clean(), "{report:#?}");
    assert_eq!((report.lost, report.flushed), (0, 1), "{report:#?}");
}

// Proves an unacknowledged FLUSHALL (which may have cleared any nodes, until LATE after it
// returned) excuses writes invoked before that bound and no later ones; one refused before it was
// sent excuses nothing; and with no bound on late messages it excuses everything after it.
#[test]
fn an_unacknowledged_flushall_excuses_writes_until_its_messages_are_in() {
    let mut h = Builder::default();
    h.flush(0, noquorum());
    h.set(1, "k", &[], "k1", ok()); // LATE has not passed: excused
    h.gap(LATE * 2);
    h.set(1, "j", &[], "j1", ok()); // past LATE: must survive
    h.flush(
        2,
        Outcome::Failed {
            error: "connect: refused".into(),
            sent: false,
        },
    );
    h.set(1, "m", &[], "m1", ok()); // after a flush never sent: must survive
    let fin = final_everywhere(&[("k", &[]), ("j", &[]), ("m", &[])]);
    let report = check_with(&h.ops, &fin, &timing());
    eprintln!("{report}");
    assert_eq!((report.lost, report.flushed), (2, 1), "{report:#?}");
    let text = report.problems.join("\n");
    assert!(text.contains("lost: j = \"j1\""), "{text}");
    assert!(text.contains("lost: m = \"m1\""), "{text}");
    assert_eq!((report.flushes, report.flushes_acked), (2, 0));
    // No bound: the failed FLUSHALL's requests may still be on their way,
    // so nothing after it is sure to survive.
    let report = check(&h.ops, &fin);
    assert_eq!((report.lost, report.flushed), (0, 3), "{report:#?}");
}

// Proves a value (and a counter's increment) written long before an acknowledged FLUSHALL and
// read after it returned, or present at the end, is reported stale: every copy had landed before
// the flush began, and every node cleared after that.
#[test]
fn a_value_from_before_an_acknowledged_flushall_is_stale_after_it() {
    let mut h = Builder::default();
    h.set(0, "k", &[], "k1", ok());
    h.incr(0, "c", 1, Outcome::Counted(1));
    h.gap(LATE * 2);
    h.flush(1, Outcome::Done);
    h.get(2, "k", "c1", &["k1"]);
    h.incr(2, "c", 4, Outcome::Counted(5));
    let fin = final_everywhere(&[("k", &["k1"]), ("c", &["5"])]);
    let report = check_with(&h.ops, &fin, &timing());
    eprintln!("{report}");
    assert_eq!(
        report.stale_after_flush, 2,
        "k1 and c = 5, once each: {report:#?}"
    );
    assert_eq!((report.lost, report.incr_lost, report.phantoms), (0, 0, 0));
    assert!(!report.is_clean());
    let text = report.problems.join("\n");
    assert!(
        text.contains("stale after FLUSHALL: k = \"k1\" in a read at"),
        "{text}"
    );
    assert!(
        text.contains("stale after FLUSHALL: c = 5 in a reply at"),
        "{text}"
    );
    // Cleared as promised: a fresh value after the flush, the old one gone.
    let mut h = Builder::default();
    h.set(0, "k", &[], "k1", ok());
    h.gap(LATE * 2);
    h.flush(1, Outcome::Done);
    h.get(2, "k", "c1", &[]);
    h.set(2, "k", &[], "k2", ok());
    let report = check_with(&h.ops, &final_everywhere(&[("k", &["k2"])]), &timing());
    assert!(report.is_clean(), "{report:#?}");
}

// Proves a value may come back after an acknowledged FLUSHALL when a copy of it may still have
// been on its way (an operation that carries it ended less than LATE before the flush began, or
// ran across it), and after an unacknowledged one always; with no bound on late messages, after
// any.
#[test]
fn a_value_in_flight_across_a_flushall_may_come_back() {
    let mut h = Builder::default();
    h.set(0, "j", &[], "j1", ok());
    h.set(0, "m", &[], "m1", ok());
    h.gap(LATE * 2);
    // j1 written long before, but a read that returned it (and may repair
    // with it) ended just before the flush.
    h.get(1, "j", "c1", &["j1"]);
    // m1 written long before, but a write of another value of m ran across
    // the flush (its coordinator's record may hold m1 as a sibling).
    h.set(1, "m", &[], "m2", ok());
    h.last().completed += Duration::from_millis(40);
    // k1 written just before the flush: the copy to its third replica may
    // land after that node cleared.
    h.set(0, "k", &[], "k1", ok());
    h.flush(1, Outcome::Done);
    h.get(2, "k", "c2", &["k1"]);
    let fin = final_everywhere(&[("k", &["k1"]), ("j", &["j1"]), ("m", &["m1", "m2"])]);
    let report = check_with(&h.ops, &fin, &timing());
    eprintln!("{report}");
    assert!(report.is_clean(), "{report:#?}");
    assert_eq!(report.stale_after_flush, 0);
    // After an unacknowledged FLUSHALL nothing is promised.
    let mut h = Builder::default();
    h.set(0, "k", &[], "k1", ok());
    h.gap(LATE * 2);
    h.flush(1, noquorum());
    h.get(2, "k", "c1", &["k1"]);
    let report = check_with(&h.ops, &final_everywhere(&[("k", &["k1"])]), &timing());
    assert!(report.is_clean(), "{report:#?}");
    // With no bound on late messages, a copy may always be on its way.
    let mut h = Builder::default();
    h.set(0, "k", &[], "k1", ok());
    h.gap(LATE * 2);
    h.flush(1, Outcome::Done);
    h.get(2, "k", "c1", &["k1"]);
    let report = check(&h.ops, &final_everywhere(&[("k", &["k1"])]));
    assert!(report.is_clean(), "{report:#?}");
}

// Proves a value an acknowledged write superseded, present at the end, is excused only when a
// FLUSHALL may have cleared the superseding record while a copy of the value was on its way, and
// reported otherwise.
#[test]
fn resurrection_across_a_flushall_needs_a_copy_in_flight() {
    let mut h = Builder::default();
    h.set(0, "d", &[], "d1", ok());
    h.get(0, "d", "c1", &["d1"]);
    h.del(0, "d", &["d1"], ok());
    // A FLUSHALL right after: d1's tail may land after its node cleared,
    // with no tombstone left to cover it.
    h.flush(1, noquorum());
    let report = check_with(&h.ops, &final_everywhere(&[("d", &["d1"])]), &timing());
    eprintln!("{report}");
    assert_eq!(
        (report.resurrected, report.revived_across_flush),
        (0, 1),
        "{report:#?}"
    );
    // The same FLUSHALL long after every copy of d1 landed: resurrected.
    let mut h = Builder::default();
    h.set(0, "d", &[], "d1", ok());
    h.get(0, "d", "c1", &["d1"]);
    h.del(0, "d", &["d1"], ok());
    h.gap(LATE * 2);
    h.flush(1, noquorum());
    let report = check_with(&h.ops, &final_everywhere(&[("d", &["d1"])]), &timing());
    assert_eq!(
        (report.resurrected, report.revived_across_flush),
        (3, 0),
        "{report:#?}"
    );
}

// Proves the clears a recorder saw replace what unacknowledged FLUSHALLs might have done: a write
// after the last clear seen must survive even within LATE of a failed FLUSHALL; one before it may
// be gone only if at least W nodes (every node that held it at its acknowledgement, at least) were
// cleared after it began.
#[test]
fn clears_seen_bound_what_a_flushall_excuses() {
    let mut h = Builder::default();
    h.set(1, "j", &[], "j1", ok());
    h.flush(0, noquorum());
    h.set(1, "k", &[], "k1", ok());
    let cleared_at = h.ops[1].invoked + Duration::from_millis(2);
    let seen = |nodes: &[usize]| Timing {
        clears: Some(ClearsSeen {
            at: nodes.iter().map(|&node| (node, cleared_at)).collect(),
            write_quorum: 2,
        }),
        ..timing()
    };
    let fin = final_everywhere(&[("j", &[]), ("k", &[])]);
    // The failed FLUSHALL reached two nodes: j1 may have been on just them.
    let report = check_with(&h.ops, &fin, &seen(&[0, 1]));
    eprintln!("{report}");
    assert_eq!((report.lost, report.flushed), (1, 1), "{report:#?}");
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("lost: k = \"k1\"")),
        "{report:#?}"
    );
    // It reached one: j1 was on two nodes when acknowledged, one kept it.
    let report = check_with(&h.ops, &fin, &seen(&[0]));
    assert_eq!((report.lost, report.flushed), (2, 0), "{report:#?}");
    // Without them, the failed FLUSHALL may have cleared any node within
    // LATE of its end.
    let report = check_with(&h.ops, &fin, &timing());
    assert_eq!((report.lost, report.flushed), (0, 2), "{report:#?}");
}
