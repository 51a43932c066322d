//! A real client library (the `redis` crate, async, multiplexed) against a
//! real `dynokv` process: RESP2 and RESP3, pipelines, MGET/MSET, the
//! sibling commands VGET/VSET, and MULTI/EXEC.

// `allow-expect-in-tests` covers `#[test]` bodies only, not the helpers
// here or `#[tokio::test]` bodies; in a test, a failed expect is the
// failure report we want.
#![expect(
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use common::{TestNode, client_info_field, connect};
use redis::aio::MultiplexedConnection;
use redis::{ErrorKind, ServerErrorKind, Value};
use std::future::Future;
use std::time::Duration;

/// Upper bound on any one test's client work.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `work`, failing the test if it takes longer than [`TEST_TIMEOUT`].
async fn within<T>(work: impl Future<Output = T>) -> T {
    match tokio::time::timeout(TEST_TIMEOUT, work).await {
        Ok(value) => value,
        Err(_) => panic!("client work did not finish within {TEST_TIMEOUT:?}"),
    }
}

/// Runs one command and returns the raw reply.
async fn raw(con: &mut MultiplexedConnection, args: &[&[u8]]) -> Value {
    let mut cmd = redis::cmd(std::str::from_utf8(args[0]).expect("command name is UTF-8"));
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async(con)
        .await
        .unwrap_or_else(|e| panic!("{:?} failed: {e}", String::from_utf8_lossy(args[0])))
}

fn bulk(bytes: &[u8]) -> Value {
    Value::BulkString(bytes.to_vec())
}

/// GET/SET/DEL/EXISTS/TYPE and nil replies, the same in either protocol.
async fn string_basics(con: &mut MultiplexedConnection) {
    // Nil before anything is written: typed and raw.
    let missing: Option<String> = redis::cmd("GET")
        .arg("k1")
        .query_async(con)
        .await
        .expect("GET");
    assert_eq!(missing, None);
    assert_eq!(raw(con, &[b"GET", b"k1"]).await, Value::Nil);
    assert_eq!(raw(con, &[b"EXISTS", b"k1"]).await, Value::Int(0));
    assert_eq!(
        raw(con, &[b"TYPE", b"k1"]).await,
        Value::SimpleString("none".into())
    );

    assert_eq!(raw(con, &[b"SET", b"k1", b"v1"]).await, Value::Okay);
    assert_eq!(raw(con, &[b"GET", b"k1"]).await, bulk(b"v1"));
    // Binary-safe values, including CR LF and NUL.
    let binary: &[u8] = b"a\r\nb\0c\xff";
    assert_eq!(raw(con, &[b"SET", b"k2", binary]).await, Value::Okay);
    assert_eq!(raw(con, &[b"GET", b"k2"]).await, bulk(binary));
    // The empty string is a value, not nil.
    assert_eq!(raw(con, &[b"SET", b"empty", b""]).await, Value::Okay);
    assert_eq!(raw(con, &[b"GET", b"empty"]).await, bulk(b""));
    // Overwrite.
    assert_eq!(raw(con, &[b"SET", b"k1", b"v1b"]).await, Value::Okay);
    assert_eq!(raw(con, &[b"GET", b"k1"]).await, bulk(b"v1b"));

    assert_eq!(
        raw(con, &[b"EXISTS", b"k1", b"k2", b"nope", b"k1"]).await,
        Value::Int(3)
    );
    assert_eq!(
        raw(con, &[b"TYPE", b"k1"]).await,
        Value::SimpleString("string".into())
    );
    assert_eq!(
        raw(con, &[b"DEL", b"k1", b"nope", b"k2"]).await,
        Value::Int(2)
    );
    assert_eq!(raw(con, &[b"DEL", b"k1"]).await, Value::Int(0));
    assert_eq!(raw(con, &[b"GET", b"k1"]).await, Value::Nil);
    assert_eq!(raw(con, &[b"EXISTS", b"k1", b"k2"]).await, Value::Int(0));
    assert_eq!(
        raw(con, &[b"TYPE", b"k2"]).await,
        Value::SimpleString("none".into())
    );
    // A deleted key can be written again.
    assert_eq!(raw(con, &[b"SET", b"k1", b"again"]).await, Value::Okay);
    assert_eq!(raw(con, &[b"GET", b"k1"]).await, bulk(b"again"));

    // Errors come back as server errors, and the connection stays usable.
    let err = redis::cmd("GET")
        .query_async::<Value>(con)
        .await
        .expect_err("GET without a key must fail");
    assert!(
        err.to_string()
            .contains("wrong number of arguments for 'get' command"),
        "{err}"
    );
    assert_eq!(
        raw(con, &[b"PING"]).await,
        Value::SimpleString("PONG".into())
    );
}

#[tokio::test]
async fn resp2_basics() {
    // Proves plain string commands and nil replies work for a RESP2 client: the redis crate's default connection against a fresh node.
    let node = TestNode::start(&[]);
    within(async {
        let mut con = connect(&node.url()).await;
        assert_eq!(client_info_field(&mut con, "resp").await, "2");
        string_basics(&mut con).await;
    })
    .await;
}

#[tokio::test]
async fn resp3_basics() {
    // Proves the same commands work after the client negotiates RESP3 (HELLO 3), with RESP3 nulls and maps.
    let node = TestNode::start(&[]);
    within(async {
        let mut con = connect(&node.url_resp3()).await;
        assert_eq!(client_info_field(&mut con, "resp").await, "3");
        string_basics(&mut con).await;
        // HELLO answers with a RESP3 map naming the protocol.
        let hello = raw(&mut con, &[b"HELLO", b"3"]).await;
        let Value::Map(fields) = hello else {
            panic!("HELLO 3 did not reply with a map: {hello:?}");
        };
        assert!(
            fields
                .iter()
                .any(|(k, v)| *k == bulk(b"proto") && *v == Value::Int(3)),
            "{fields:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn pipeline_of_1000_commands() {
    // Proves 1,000 pipelined commands (500 SET then 500 GET, one flush) come back complete and in order, in RESP2 and RESP3.
    let node = TestNode::start(&[]);
    within(async {
        for (url, tag) in [(node.url(), "r2"), (node.url_resp3(), "r3")] {
            let mut con = connect(&url).await;
            let mut pipe = redis::pipe();
            for i in 0..500 {
                pipe.cmd("SET")
                    .arg(format!("{tag}:key:{i}"))
                    .arg(format!("value-{i}"));
            }
            for i in 0..500 {
                pipe.cmd("GET").arg(format!("{tag}:key:{i}"));
            }
            let replies: Vec<Value> = pipe.query_async(&mut con).await.expect("pipeline");
            assert_eq!(replies.len(), 1000);
            for (i, reply) in replies[..500].iter().enumerate() {
                assert_eq!(*reply, Value::Okay, "SET #{i}");
            }
            for (i, reply) in replies[500..].iter().enumerate() {
                assert_eq!(
                    *reply,
                    bulk(format!("value-{i}").as_bytes()),
                    "GET #{i} ({tag})"
                );
            }
            // And a pipeline of reads of keys that do not exist: 1,000 nils.
            let mut pipe = redis::pipe();
            for i in 0..1000 {
                pipe.cmd("GET").arg(format!("{tag}:absent:{i}"));
            }
            let nils: Vec<Option<String>> = pipe.query_async(&mut con).await.expect("pipeline");
            assert_eq!(nils.len(), 1000);
            assert!(nils.iter().all(Option::is_none));
        }
    })
    .await;
}

#[tokio::test]
async fn mget_and_mset() {
    // Proves MSET writes every pair (a repeated key keeps its last value) and MGET answers in key order with nil for missing keys.
    let node = TestNode::start(&[]);
    within(async {
        let mut con = connect(&node.url()).await;
        assert_eq!(
            raw(
                &mut con,
                &[b"MSET", b"a", b"1", b"b", b"2", b"c", b"3", b"a", b"4"]
            )
            .await,
            Value::Okay
        );
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&["a", "missing", "b", "c", "a"])
            .query_async(&mut con)
            .await
            .expect("MGET");
        assert_eq!(
            values,
            vec![
                Some("4".to_owned()),
                None,
                Some("2".to_owned()),
                Some("3".to_owned()),
                Some("4".to_owned())
            ]
        );
        // An odd number of arguments is an arity error, and writes nothing.
        let err = redis::cmd("MSET")
            .arg(&["x", "1", "y"])
            .query_async::<Value>(&mut con)
            .await
            .expect_err("MSET with an odd argument count");
        assert!(
            err.to_string()
                .contains("wrong number of arguments for 'mset' command"),
            "{err}"
        );
        assert_eq!(raw(&mut con, &[b"EXISTS", b"x"]).await, Value::Int(0));
        // MGET through RESP3 too.
        let mut con3 = connect(&node.url_resp3()).await;
        assert_eq!(
            raw(&mut con3, &[b"MGET", b"b", b"zz"]).await,
            Value::Array(vec![bulk(b"2"), Value::Nil])
        );
    })
    .await;
}

/// What `pipelined_and_one_at_a_time_mean_the_same` runs both ways: runs
/// of GET, SET, MGET and MSET that share a coordinator call when
/// pipelined, and every way such a run ends: a key that repeats, a
/// command of the other kind or not a plan, a refused command (arity,
/// unknown, a key too large, a bad option), and commands that change the
/// session (SELECT, WATCH, MULTI/EXEC).
fn mixed_commands() -> Vec<Vec<Vec<u8>>> {
    let too_large = "k".repeat(60 * 1024 + 1);
    let list: Vec<Vec<&str>> = vec![
        vec!["SET", "a", "1"],
        vec!["SET", "b", "2"],
        vec!["SET", "c", "3", "EX", "100"],
        vec!["MSET", "d", "4", "e", "5", "d", "6"],
        vec!["SET", "a", "10"],
        vec!["GET", "a"],
        vec!["GET", "b"],
        vec!["GET", "nokey"],
        vec!["MGET", "a", "b", "c", "nokey", "a"],
        vec!["GET", "a"],
        vec!["GET", &too_large],
        vec!["GET", "b"],
        vec!["SET", "f", "1", "NX"],
        vec!["SET", "f", "2", "NX"],
        vec!["SET", "g", "1", "XX"],
        vec!["SET", "h", "1", "GET"],
        vec!["SET", "h", "2", "GET"],
        vec!["SET", "t", "v", "EXAT", "4102444800"],
        vec!["EXPIRETIME", "t"],
        vec!["SET", "x", "1", "EX", "0"],
        vec!["SET", "y", "1", "NOSUCHOPTION"],
        vec!["SET", &too_large, "1"],
        vec!["GET"],
        vec!["NOSUCH", "1"],
        vec!["MSET", "odd"],
        vec!["GET", "x"],
        vec!["INCR", "n"],
        vec!["GET", "n"],
        vec!["APPEND", "a", "z"],
        vec!["GET", "a"],
        vec!["SELECT", "3"],
        vec!["SET", "a", "three"],
        vec!["GET", "a"],
        vec!["MGET", "a", "b"],
        vec!["SELECT", "0"],
        vec!["GET", "a"],
        vec!["WATCH", "a"],
        vec!["GET", "a"],
        vec!["GET", "b"],
        vec!["MULTI"],
        vec!["GET", "a"],
        vec!["SET", "a", "11"],
        vec!["EXEC"],
        vec!["GET", "a"],
        vec!["WATCH", "b"],
        vec!["GET", "b"],
        vec!["SET", "b", "20"],
        vec!["MULTI"],
        vec!["SET", "c", "30"],
        vec!["EXEC"],
        vec!["GET", "c"],
        vec!["DEL", "a", "b"],
        vec!["MGET", "a", "b", "c"],
        vec!["EXISTS", "c", "d"],
        vec!["DBSIZE"],
        vec!["GETEX", "d"],
        vec!["GETDEL", "e"],
        vec!["GET", "e"],
        vec!["MSET", "a", "1", "b", "2"],
        vec!["MSET", "c", "3"],
        vec!["MGET", "a", "b", "c"],
    ];
    list.into_iter()
        .map(|args| args.into_iter().map(|a| a.as_bytes().to_vec()).collect())
        .collect()
}

/// INFO `section`'s `field:value` lines, without the time (`usec`,
/// `usec_per_call`) fields of commandstats.
async fn info_lines(con: &mut MultiplexedConnection, section: &str) -> Vec<String> {
    let info: String = redis::cmd("INFO")
        .arg(section)
        .query_async(con)
        .await
        .expect("INFO");
    info.lines()
        .filter(|line| line.contains(':'))
        .map(|line| {
            line.split(',')
                .filter(|field| !field.contains("usec"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

/// Runs `list` on a fresh connection after FLUSHALL and CONFIG RESETSTAT,
/// pipelined in one write or one command at a time, and returns the
/// replies and what INFO then shows: commandstats (calls, rejected and
/// failed calls), errorstats, keyspace hits and misses, and keyspace.
async fn run_mixed(
    node: &TestNode,
    list: &[Vec<Vec<u8>>],
    pipelined: bool,
) -> (Vec<Value>, Vec<String>) {
    let mut admin = connect(&node.url()).await;
    assert_eq!(raw(&mut admin, &[b"FLUSHALL"]).await, Value::Okay);
    let mut con = connect(&node.url()).await;
    assert_eq!(
        raw(&mut admin, &[b"CONFIG", b"RESETSTAT"]).await,
        Value::Okay
    );
    let command = |args: &Vec<Vec<u8>>| {
        let mut cmd = redis::cmd(std::str::from_utf8(&args[0]).expect("UTF-8 name"));
        for arg in &args[1..] {
            cmd.arg(arg);
        }
        cmd
    };
    let mut replies = Vec::new();
    if pipelined {
        let mut pipe = redis::pipe();
        for args in list {
            pipe.add_command(command(args));
        }
        replies = pipe
            .ignore_errors()
            .query_async(&mut con)
            .await
            .expect("pipeline");
    } else {
        for args in list {
            let one: Vec<Value> = redis::pipe()
                .add_command(command(args))
                .ignore_errors()
                .query_async(&mut con)
                .await
                .expect("command");
            replies.extend(one);
        }
    }
    let mut info = info_lines(&mut admin, "commandstats").await;
    info.extend(info_lines(&mut admin, "errorstats").await);
    info.extend(
        info_lines(&mut admin, "stats")
            .await
            .into_iter()
            .filter(|line| line.starts_with("keyspace_")),
    );
    info.extend(info_lines(&mut admin, "keyspace").await);
    (replies, info)
}

#[tokio::test]
async fn pipelined_and_one_at_a_time_mean_the_same() {
    // Proves a command list gets the same replies, INFO commandstats, errorstats, keyspace hits and misses, and keyspace whether a client pipelines it in one write (runs of GET/SET/MGET/MSET then share a coordinator call) or sends one command at a time; by running it both ways against one node.
    let node = TestNode::start(&[]);
    within(async {
        let list = mixed_commands();
        let (pipelined, pipelined_info) = run_mixed(&node, &list, true).await;
        let (alone, alone_info) = run_mixed(&node, &list, false).await;
        assert_eq!(pipelined.len(), list.len());
        for (i, (p, a)) in pipelined.iter().zip(&alone).enumerate() {
            assert_eq!(
                p,
                a,
                "reply {i} to {:?}",
                String::from_utf8_lossy(&list[i].concat())
            );
        }
        assert_eq!(pipelined_info, alone_info);
        // What the list means, so both ways cannot agree on nonsense.
        let at = |words: &[&str]| {
            list.iter()
                .position(|args| {
                    args.iter()
                        .map(|a| a.as_slice())
                        .eq(words.iter().map(|w| w.as_bytes()))
                })
                .expect("a command of the list")
        };
        assert_eq!(
            pipelined[at(&["MGET", "a", "b", "c", "nokey", "a"])],
            Value::Array(vec![
                bulk(b"10"),
                bulk(b"2"),
                bulk(b"3"),
                Value::Nil,
                bulk(b"10")
            ])
        );
        assert_eq!(pipelined[at(&["SET", "f", "2", "NX"])], Value::Nil);
        assert_eq!(pipelined[at(&["SET", "h", "2", "GET"])], bulk(b"1"));
        assert_eq!(
            pipelined[at(&["MGET", "a", "b"])],
            Value::Array(vec![bulk(b"three"), Value::Nil])
        );
        assert_eq!(
            pipelined[at(&["EXEC"])],
            Value::Array(vec![bulk(b"10z"), Value::Okay])
        );
        assert_eq!(
            *pipelined.last().expect("replies"),
            Value::Array(vec![bulk(b"1"), bulk(b"2"), bulk(b"3")])
        );
        assert!(matches!(pipelined[at(&["GET"])], Value::ServerError(_)));
        // The second EXEC: its session wrote the key it WATCHed.
        let last_exec = list
            .iter()
            .rposition(|args| args[0] == b"EXEC")
            .expect("EXEC");
        assert_eq!(pipelined[last_exec], Value::Nil);
        let hits = |info: &[String]| {
            info.iter()
                .find(|l| l.starts_with("keyspace_hits:"))
                .cloned()
        };
        assert_eq!(hits(&pipelined_info).as_deref(), Some("keyspace_hits:24"));
        assert!(
            pipelined_info
                .iter()
                .any(|l| l.starts_with("cmdstat_get:calls=")),
            "{pipelined_info:?}"
        );
    })
    .await;
}

/// VGET's reply: (context, sibling values sorted).
async fn vget(con: &mut MultiplexedConnection, key: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let reply = raw(con, &[b"VGET", key]).await;
    let Value::Array(parts) = reply else {
        panic!("VGET did not reply with an array: {reply:?}");
    };
    let [Value::BulkString(context), Value::Array(values)] = parts.as_slice() else {
        panic!("VGET reply is not [context, [values]]: {parts:?}");
    };
    let mut values: Vec<Vec<u8>> = values
        .iter()
        .map(|v| match v {
            Value::BulkString(bytes) => bytes.clone(),
            other => panic!("a sibling is not a bulk string: {other:?}"),
        })
        .collect();
    values.sort();
    (context.clone(), values)
}

/// VSET's reply: the new context.
async fn vset(
    con: &mut MultiplexedConnection,
    key: &[u8],
    context: &[u8],
    value: &[u8],
) -> Vec<u8> {
    match raw(con, &[b"VSET", key, context, value]).await {
        Value::BulkString(context) => context,
        other => panic!("VSET did not reply with a context: {other:?}"),
    }
}

async fn sibling_lifecycle(con: &mut MultiplexedConnection, key: &[u8]) {
    // A key never written: the empty context and no values.
    let (empty_context, values) = vget(con, key).await;
    assert!(values.is_empty(), "{values:?}");
    assert_eq!(
        empty_context, b"",
        "a key never written has the empty context"
    );

    // Two writers that both read "nothing" write concurrently.
    let first_context = vset(con, key, &empty_context, b"first").await;
    // Distinct millisecond timestamps, so the later write is the LWW winner.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let _second_context = vset(con, key, &empty_context, b"second").await;
    let (merged, values) = vget(con, key).await;
    assert_eq!(values, vec![b"first".to_vec(), b"second".to_vec()]);

    // Plain GET picks one sibling: the one with the greatest timestamp.
    let winner = raw(con, &[b"GET", key]).await;
    let Value::BulkString(winner) = winner else {
        panic!("GET with siblings did not return a value: {winner:?}");
    };
    assert!(values.contains(&winner), "GET returned a non-sibling");
    assert_eq!(winner, b"second", "GET must return the later write");
    // Reading did not resolve anything: both siblings are still there.
    assert_eq!(vget(con, key).await.1.len(), 2);
    assert_eq!(raw(con, &[b"EXISTS", key]).await, Value::Int(1));

    // A context that covers only the first write supersedes only it.
    let _ = vset(con, key, &first_context, b"third").await;
    let (merged_again, values) = vget(con, key).await;
    assert_eq!(values, vec![b"second".to_vec(), b"third".to_vec()]);
    // The stale merged context does not cover "third": it stays.
    let _ = merged;

    // Writing with the context that has seen every sibling resolves them.
    let resolved_context = vset(con, key, &merged_again, b"resolved").await;
    let (context, values) = vget(con, key).await;
    assert_eq!(values, vec![b"resolved".to_vec()]);
    assert_eq!(
        context, resolved_context,
        "VSET replies with the new context"
    );
    assert_eq!(raw(con, &[b"GET", key]).await, bulk(b"resolved"));

    // VDEL with the full context leaves no value, and GET sees nil.
    let reply = raw(con, &[b"VDEL", key, &context]).await;
    assert!(matches!(reply, Value::BulkString(_)), "{reply:?}");
    let (_, values) = vget(con, key).await;
    assert!(values.is_empty(), "{values:?}");
    assert_eq!(raw(con, &[b"GET", key]).await, Value::Nil);

    // A context that is not one of ours is refused, and nothing is written.
    let err = redis::cmd("VSET")
        .arg(key)
        .arg(b"\xffnot a context")
        .arg("x")
        .query_async::<Value>(con)
        .await
        .expect_err("VSET with a garbage context");
    assert!(err.to_string().contains("invalid causal context"), "{err}");
    assert!(vget(con, key).await.1.is_empty());

    // Per-request quorums are accepted (capped at the member count) ...
    let (context, _) = vget(con, key).await;
    let reply = raw(con, &[b"VSET", key, &context, b"quorum", b"W", b"3"]).await;
    assert!(matches!(reply, Value::BulkString(_)), "{reply:?}");
    let reply = raw(con, &[b"VGET", key, b"R", b"2"]).await;
    assert!(
        matches!(&reply, Value::Array(parts) if parts.get(1) == Some(&Value::Array(vec![bulk(b"quorum")]))),
        "{reply:?}"
    );
    // ... and malformed ones are not.
    let err = redis::cmd("VGET")
        .arg(key)
        .arg("R")
        .arg("0")
        .query_async::<Value>(con)
        .await
        .expect_err("R 0");
    assert!(
        err.to_string().contains("R must be a positive integer"),
        "{err}"
    );
}

#[tokio::test]
async fn vset_siblings_resp2() {
    // Proves two VSETs with the same old context make two siblings that GET resolves last-writer-wins, and the merged context collapses them, over RESP2.
    let node = TestNode::start(&[]);
    within(async {
        let mut con = connect(&node.url()).await;
        sibling_lifecycle(&mut con, b"vkey").await;
    })
    .await;
}

#[tokio::test]
async fn vset_siblings_resp3() {
    // Proves the same sibling lifecycle over RESP3, with the two writers on two separate connections.
    let node = TestNode::start(&[]);
    within(async {
        let mut a = connect(&node.url_resp3()).await;
        let mut b = connect(&node.url_resp3()).await;
        sibling_lifecycle(&mut a, b"vkey3").await;

        // Two clients on two connections, both starting from the same read.
        let (context, _) = vget(&mut a, b"shared").await;
        vset(&mut a, b"shared", &context, b"from-a").await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        vset(&mut b, b"shared", &context, b"from-b").await;
        let (merged, values) = vget(&mut b, b"shared").await;
        assert_eq!(values, vec![b"from-a".to_vec(), b"from-b".to_vec()]);
        assert_eq!(raw(&mut a, &[b"GET", b"shared"]).await, bulk(b"from-b"));
        vset(&mut a, b"shared", &merged, b"merged").await;
        assert_eq!(vget(&mut b, b"shared").await.1, vec![b"merged".to_vec()]);
        // A plain SET supersedes every sibling it knows, too.
        vset(&mut a, b"plain", b"", b"x").await;
        vset(&mut b, b"plain", b"", b"y").await;
        assert_eq!(vget(&mut a, b"plain").await.1.len(), 2);
        assert_eq!(raw(&mut a, &[b"SET", b"plain", b"z"]).await, Value::Okay);
        assert_eq!(vget(&mut b, b"plain").await.1, vec![b"z".to_vec()]);
    })
    .await;
}

#[tokio::test]
async fn vdel_concurrent_with_vset() {
    // Proves a delete concurrent with a write keeps the written value as a sibling (VGET lists it) while GET follows the later of the two, as docs/semantics.md says.
    let node = TestNode::start(&[]);
    within(async {
        let mut con = connect(&node.url()).await;
        for (key, delete_last) in [(&b"del-last"[..], true), (&b"set-last"[..], false)] {
            let base = vset(&mut con, key, b"", b"base").await;
            let reply = if delete_last {
                vset(&mut con, key, &base, b"kept").await;
                tokio::time::sleep(Duration::from_millis(5)).await;
                raw(&mut con, &[b"VDEL", key, &base]).await
            } else {
                let reply = raw(&mut con, &[b"VDEL", key, &base]).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
                vset(&mut con, key, &base, b"kept").await;
                reply
            };
            assert!(matches!(reply, Value::BulkString(_)), "{reply:?}");
            // The concurrent value is never lost to the delete.
            let (merged, values) = vget(&mut con, key).await;
            assert_eq!(values, vec![b"kept".to_vec()]);
            let expected = if delete_last {
                Value::Nil
            } else {
                bulk(b"kept")
            };
            assert_eq!(raw(&mut con, &[b"GET", key]).await, expected);
            // Still there after the read; a write with the merged context resolves it.
            assert_eq!(vget(&mut con, key).await.1, vec![b"kept".to_vec()]);
            vset(&mut con, key, &merged, b"final").await;
            assert_eq!(raw(&mut con, &[b"GET", key]).await, bulk(b"final"));
        }
    })
    .await;
}

#[tokio::test]
async fn multi_exec_through_atomic_pipeline() {
    // Proves MULTI/EXEC via redis::pipe().atomic(): queued commands run in order and reply as one array; a queue-time error aborts the whole transaction.
    let node = TestNode::start(&[]);
    within(async {
        for url in [node.url(), node.url_resp3()] {
            let mut con = connect(&url).await;
            let _: Value = redis::cmd("DEL")
                .arg(&["t1", "t2"])
                .query_async(&mut con)
                .await
                .expect("DEL");
            let (set, got, exists, deleted, gone): (String, String, i64, i64, Option<String>) =
                redis::pipe()
                    .atomic()
                    .cmd("SET")
                    .arg("t1")
                    .arg("one")
                    .cmd("GET")
                    .arg("t1")
                    .cmd("EXISTS")
                    .arg("t1")
                    .cmd("DEL")
                    .arg("t1")
                    .cmd("GET")
                    .arg("t1")
                    .query_async(&mut con)
                    .await
                    .expect("MULTI/EXEC");
            assert_eq!(
                (set.as_str(), got.as_str(), exists, deleted, gone),
                ("OK", "one", 1, 1, None)
            );

            // A transaction with an arity error at queue time: EXECABORT,
            // and the well-formed command queued before it did not run.
            let err = redis::pipe()
                .atomic()
                .cmd("SET")
                .arg("t2")
                .arg("never")
                .cmd("GET")
                .query_async::<Value>(&mut con)
                .await
                .expect_err("EXEC after a queueing error must fail");
            assert!(
                matches!(err.kind(), ErrorKind::Server(ServerErrorKind::ExecAbort))
                    || err.to_string().contains("EXECABORT"),
                "{err:?}"
            );
            assert_eq!(raw(&mut con, &[b"GET", b"t2"]).await, Value::Nil);
            // The connection is out of MULTI and usable.
            assert_eq!(raw(&mut con, &[b"SET", b"t2", b"now"]).await, Value::Okay);
            assert_eq!(raw(&mut con, &[b"GET", b"t2"]).await, bulk(b"now"));
        }
    })
    .await;
}

#[tokio::test]
async fn client_pause_holds_a_real_writer_for_the_pause() {
    // Proves CLIENT PAUSE WRITE through the redis crate: a reader on another connection is answered at once, a writer only after about the pause (at least 80% of it, under 5x), and the write then took effect.
    let node = TestNode::start(&[]);
    const PAUSE_MS: u64 = 800;
    within(async {
        let mut admin = connect(&node.url()).await;
        let mut writer = connect(&node.url()).await;
        let ok: String = redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(PAUSE_MS)
            .arg("WRITE")
            .query_async(&mut admin)
            .await
            .expect("CLIENT PAUSE");
        assert_eq!(ok, "OK");
        let started = std::time::Instant::now();
        assert_eq!(raw(&mut writer, &[b"GET", b"paused"]).await, Value::Nil);
        assert!(started.elapsed() < Duration::from_millis(PAUSE_MS / 2));
        assert_eq!(
            raw(&mut writer, &[b"SET", b"paused", b"v"]).await,
            Value::Okay
        );
        let held = started.elapsed();
        assert!(
            held >= Duration::from_millis(PAUSE_MS * 8 / 10)
                && held < Duration::from_millis(PAUSE_MS * 5),
            "SET held {held:?} for a {PAUSE_MS} ms pause"
        );
        assert_eq!(raw(&mut admin, &[b"GET", b"paused"]).await, bulk(b"v"));
    })
    .await;
}

#[test]
fn idle_timeout_closes_a_real_client() {
    // Proves --timeout 1 through the redis crate: a connection idle for 2.5 s (well past the 1 s timeout) is closed by the node, so the next command fails, while a new connection works.
    let node = TestNode::start(&["--timeout", "1"]);
    let mut con = common::connect_sync(node.addr());
    let pong: String = redis::cmd("PING").query(&mut con).expect("PING");
    assert_eq!(pong, "PONG");
    std::thread::sleep(Duration::from_millis(2500));
    let after: redis::RedisResult<String> = redis::cmd("PING").query(&mut con);
    assert!(after.is_err(), "idle connection still answered: {after:?}");
    let mut fresh = common::connect_sync(node.addr());
    let pong: String = redis::cmd("PING").query(&mut fresh).expect("PING");
    assert_eq!(pong, "PONG");
}
