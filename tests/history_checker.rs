//! The history checker itself (`common::history::check`), fed hand-built
//! histories and final states: a planted lost write and a planted phantom
//! must both be reported, a clean history must report nothing, and each
//! rule (superseding, resurrection, failed writes, convergence) holds.

mod common;

use common::history::{Call, Final, KeyState, Op, Outcome, check};
use std::collections::BTreeMap;
use std::time::Duration;

/// A history under construction, one op per call, times increasing.
#[derive(Default)]
struct Builder {
    ops: Vec<Op>,
}

impl Builder {
    fn push(&mut self, node: usize, key: &str, call: Call, outcome: Outcome) {
        let t = Duration::from_millis(10 * self.ops.len() as u64);
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
