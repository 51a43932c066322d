#!/usr/bin/env python3
"""redis-py against a running dynokv node.

Usage: python3 compat/redis_py_check.py --port PORT [--host HOST]

Uses redis-py (8.x) with its defaults, which negotiate RESP3 with HELLO 3,
and then a protocol=2 client. Every check is a plain `assert` with a message
saying what was expected; each group prints PASS or FAIL, and the script
exits non-zero if any group failed. Keys are prefixed with a random run id,
so the script can run against a node that already holds data.
"""

import argparse
import time
import sys
import traceback
import uuid

import redis

if not __debug__:
    sys.exit("redis_py_check.py: run without -O; the checks are asserts")


def vget(r, key):
    """VGET -> (context, sorted sibling values)."""
    reply = r.execute_command("VGET", key)
    assert isinstance(reply, list) and len(reply) == 2, (
        f"VGET {key!r}: expected a two-element array, got {reply!r}"
    )
    context, values = reply
    assert isinstance(context, bytes), f"VGET {key!r}: context should be a bulk string, got {context!r}"
    assert isinstance(values, list), f"VGET {key!r}: values should be an array, got {values!r}"
    return context, sorted(values)


def describe_failure(exc):
    """One or two lines: where in this file it failed, and why."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == __file__]
    where = f"line {frames[-1].lineno} in {frames[-1].name}: " if frames else ""
    return f"    {where}{type(exc).__name__}: {exc}"


def check_connection(r, pfx, protocol):
    assert r.ping() is True, "PING should return True"
    info = r.client_info()
    assert info.get("resp") == str(protocol), (
        f"CLIENT INFO should report resp={protocol} for this client, got {info.get('resp')!r}"
    )
    assert r.echo(b"hi\x00there") == b"hi\x00there", "ECHO should return its argument byte for byte"
    dbsize = r.dbsize()
    assert isinstance(dbsize, int) and dbsize >= 0, f"DBSIZE should be a non-negative int, got {dbsize!r}"
    server = r.info("server")
    assert "redis_version" in server, f"INFO server should have redis_version, got keys {list(server)}"
    t = r.time()
    assert isinstance(t, tuple) and len(t) == 2 and t[0] > 1_600_000_000, f"TIME looks wrong: {t!r}"


def check_strings(r, pfx, protocol):
    k, missing = pfx + "k", pfx + "missing"
    assert r.set(k, "v1") is True, "SET should return True"
    assert r.get(k) == b"v1", f"GET after SET: expected b'v1', got {r.get(k)!r}"
    assert r.get(missing) is None, f"GET of a missing key should be None, got {r.get(missing)!r}"
    assert r.set(k, "nope", nx=True) is None, "SET NX on an existing key should return None (nil)"
    assert r.get(k) == b"v1", "SET NX on an existing key must not change it"
    assert r.set(missing, "nope", xx=True) is None, "SET XX on a missing key should return None (nil)"
    assert r.get(missing) is None, "SET XX on a missing key must not create it"
    old = r.set(k, "v2", xx=True, get=True)
    assert old == b"v1", f"SET XX GET should return the old value b'v1', got {old!r}"
    assert r.get(k) == b"v2", f"GET after SET XX GET: expected b'v2', got {r.get(k)!r}"
    assert r.set(pfx + "ex", "v", ex=100) is True, "SET EX should return True"
    assert r.get(pfx + "ex") == b"v", "GET of a key SET with EX 100 should return its value"
    binary = bytes(range(256)) * 4
    assert r.set(pfx + "bin", binary) is True, "SET of a binary value should return True"
    assert r.get(pfx + "bin") == binary, "a binary value (all 256 byte values) must round-trip"
    assert r.set(pfx + "empty", b"") is True, "SET of an empty value should return True"
    assert r.get(pfx + "empty") == b"", f"an empty value must come back as b'', got {r.get(pfx + 'empty')!r}"
    ukey = pfx + "ключ-🔑"
    assert r.set(ukey, "ünïcödé") is True, "SET with a UTF-8 key should return True"
    assert r.get(ukey) == "ünïcödé".encode(), "a UTF-8 key and value must round-trip"
    big = b"x" * (1 << 20)
    assert r.set(pfx + "big", big) is True, "SET of a 1 MiB value should return True"
    assert r.get(pfx + "big") == big, "a 1 MiB value must round-trip"
    assert r.type(k) == b"string", f"TYPE of a string key should be b'string', got {r.type(k)!r}"
    assert r.type(missing) == b"none", f"TYPE of a missing key should be b'none', got {r.type(missing)!r}"


def check_multikey(r, pfx, protocol):
    a, b, c, missing = pfx + "a", pfx + "b", pfx + "c", pfx + "missing"
    assert r.mset({a: 1, b: 2, c: "three"}) is True, "MSET should return True"
    got = r.mget([a, b, missing, c])
    assert got == [b"1", b"2", None, b"three"], f"MGET: expected [b'1', b'2', None, b'three'], got {got!r}"
    assert r.exists(a, b, missing) == 2, f"EXISTS a b missing should be 2, got {r.exists(a, b, missing)}"
    assert r.exists(a, a) == 2, "EXISTS counts a key once per mention (EXISTS a a == 2)"
    assert r.delete(a, missing) == 1, "DEL of one present and one missing key should return 1"
    assert r.exists(a) == 0, "a deleted key must not exist"
    assert r.get(a) is None, "GET of a deleted key should be None"
    assert r.unlink(b, c) == 2, "UNLINK of two present keys should return 2"
    assert r.mget([a, b, c]) == [None, None, None], "MGET after DEL/UNLINK should be all None"
    try:
        r.execute_command("GET")
    except redis.ResponseError as e:
        assert "wrong number of arguments for 'get' command" in str(e), f"unexpected error text: {e}"
    else:
        raise AssertionError("GET without a key should raise ResponseError")


def check_pipeline_transaction(r, pfx, protocol):
    k, m1, m2, missing = pfx + "tk", pfx + "tm1", pfx + "tm2", pfx + "missing"
    pipe = r.pipeline()  # transaction=True: MULTI ... EXEC
    pipe.set(k, "a")
    pipe.get(k)
    pipe.mset({m1: "x", m2: "y"})
    pipe.mget([m1, missing, m2])
    pipe.exists(k, m1, missing)
    pipe.delete(m1)
    pipe.get(m1)
    pipe.type(k)
    pipe.set(k, "b", get=True)
    got = pipe.execute()
    want = [True, b"a", True, [b"x", None, b"y"], 2, 1, None, b"string", b"a"]
    assert got == want, f"MULTI/EXEC pipeline results in order: expected {want!r}, got {got!r}"
    assert r.get(k) == b"b", "the last SET inside the transaction must be visible afterwards"

    # A runtime error (syntax error at execution) fails only its own command.
    pipe = r.pipeline()
    pipe.set(k, "c")
    pipe.execute_command("SET", k, "d", "BADOPTION")
    pipe.get(k)
    got = pipe.execute(raise_on_error=False)
    assert len(got) == 3 and got[0] is True and got[2] == b"c", f"EXEC with a failing command: got {got!r}"
    assert isinstance(got[1], redis.ResponseError) and "syntax error" in str(got[1]), (
        f"the SET with a bad option should fail with 'syntax error' inside EXEC, got {got[1]!r}"
    )

    # An arity error while queueing aborts the whole transaction (EXECABORT).
    pipe = r.pipeline()
    pipe.set(k, "never")
    pipe.execute_command("GET")
    try:
        pipe.execute()
    except redis.ResponseError as e:
        assert "wrong number of arguments" in str(e), f"unexpected error for a queued arity error: {e}"
    else:
        raise AssertionError("a transaction with a queued arity error should raise")
    assert r.get(k) == b"c", "an aborted transaction must not apply any of its commands"


def check_pipeline_plain(r, pfx, protocol):
    k, missing = pfx + "pk", pfx + "missing"
    pipe = r.pipeline(transaction=False)
    pipe.set(k, "1")
    pipe.get(k)
    pipe.get(missing)
    pipe.exists(k)
    pipe.delete(k)
    pipe.exists(k)
    pipe.ping()
    got = pipe.execute()
    want = [True, b"1", None, 1, 1, 0, True]
    assert got == want, f"non-transactional pipeline: expected {want!r}, got {got!r}"

    n = 1000
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.set(f"{pfx}bulk:{i}", f"value-{i}")
    assert pipe.execute() == [True] * n, f"{n} pipelined SETs should all return True"
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.get(f"{pfx}bulk:{i}")
    got = pipe.execute()
    want = [f"value-{i}".encode() for i in range(n)]
    assert got == want, f"{n} pipelined GETs should return the values in order"


def check_siblings(r, pfx, protocol):
    k = pfx + "sib"
    ctx, vals = vget(r, k)
    assert vals == [], f"VGET of a fresh key should have no values, got {vals!r}"

    c0 = r.execute_command("VSET", k, b"", b"v0")
    assert isinstance(c0, bytes) and c0, f"VSET should reply with a non-empty context, got {c0!r}"
    ctx, vals = vget(r, k)
    assert vals == [b"v0"], f"after one VSET, VGET should show [b'v0'], got {vals!r}"
    assert r.get(k) == b"v0", "GET should see a value written by VSET"

    # Two writers with the same old context: two siblings.
    r.execute_command("VSET", k, ctx, b"a")
    r.execute_command("VSET", k, ctx, b"b")
    ctx2, vals = vget(r, k)
    assert vals == [b"a", b"b"], f"two VSETs with the same old context should leave two siblings, got {vals!r}"
    got = r.get(k)
    assert got == b"b", f"GET of a key with siblings returns the last written (b'b'), got {got!r}"
    assert r.exists(k) == 1, "a key with siblings exists"
    assert r.type(k) == b"string", "a key with siblings is a string"

    # VSET with the merged context resolves them: one value.
    c3 = r.execute_command("VSET", k, ctx2, b"merged")
    ctx3, vals = vget(r, k)
    assert vals == [b"merged"], f"VSET with the merged context should leave one value, got {vals!r}"
    assert ctx3 == c3, "VGET's context should equal the context the last VSET replied with"
    assert r.get(k) == b"merged", "GET after the merge should return the merged value"

    # A writer with a stale context (ctx2 is older than ctx3) adds a sibling.
    r.execute_command("VSET", k, ctx2, b"stale")
    ctx4, vals = vget(r, k)
    assert vals == [b"merged", b"stale"], f"VSET with a stale context should add a sibling, got {vals!r}"

    # VDEL with the current context deletes every value.
    cdel = r.execute_command("VDEL", k, ctx4)
    assert isinstance(cdel, bytes), f"VDEL should reply with a context, got {cdel!r}"
    _, vals = vget(r, k)
    assert vals == [], f"after VDEL with the current context, VGET should have no values, got {vals!r}"
    assert r.get(k) is None, "GET after VDEL should be None"
    assert r.exists(k) == 0, "a VDELeted key must not exist"

    # Empty context = none known: another sibling; plain SET supersedes them all.
    k2 = pfx + "sib2"
    r.execute_command("VSET", k2, b"", b"x")
    r.execute_command("VSET", k2, b"", b"y")
    _, vals = vget(r, k2)
    assert vals == [b"x", b"y"], f"two VSETs with an empty context should leave two siblings, got {vals!r}"
    assert r.set(k2, "z") is True, "SET over siblings should return True"
    _, vals = vget(r, k2)
    assert vals == [b"z"], f"plain SET should supersede every sibling, got {vals!r}"

    # Quorum options and bad input.
    c = r.execute_command("VSET", k2, ctx, b"w1", "W", 1)
    assert isinstance(c, bytes), f"VSET ... W 1 should reply with a context, got {c!r}"
    reply = r.execute_command("VGET", k2, "R", 1)
    assert isinstance(reply, list) and len(reply) == 2, f"VGET ... R 1 should work, got {reply!r}"
    try:
        r.execute_command("VSET", k2, b"!!not a context!!", b"v")
    except redis.ResponseError as e:
        assert "context" in str(e), f"a malformed context should be reported as such, got {e}"
    else:
        raise AssertionError("VSET with a malformed context should raise ResponseError")


def check_dynamo(r, pfx, protocol):
    status = r.execute_command("DYNAMO", "STATUS")
    if protocol == 3:
        assert isinstance(status, dict), f"DYNAMO STATUS should be a map under RESP3, got {type(status)}"
        fields = status
    else:
        assert isinstance(status, list) and len(status) % 2 == 0, "DYNAMO STATUS should be a flat array under RESP2"
        fields = dict(zip(status[::2], status[1::2]))
    assert b"members" in fields, f"DYNAMO STATUS should report members, got {sorted(fields)}"


def check_decoded(port, host, protocol):
    r = redis.Redis(host=host, port=port, protocol=protocol, decode_responses=True)
    try:
        pfx = f"pycheck:{uuid.uuid4().hex[:8]}:"
        assert r.set(pfx + "d", "héllo") is True, "SET with decode_responses should return True"
        assert r.get(pfx + "d") == "héllo", "decode_responses should give back str"
        assert r.mget([pfx + "d", pfx + "nope"]) == ["héllo", None], "MGET with decode_responses"
        assert r.delete(pfx + "d") == 1, "DEL with decode_responses"
    finally:
        r.close()


def check_expiry_and_scan(r, pfx, protocol):
    k = f"{pfx}:exp"
    assert r.set(k, "v", ex=100, nx=True) is True, "set(ex=, nx=True) on a new key"
    assert r.set(k, "w", ex=100, nx=True) is None, "set(nx=True) on an existing key"
    assert 95 <= r.ttl(k) <= 100, f"ttl after ex=100: {r.ttl(k)}"
    assert r.getex(k, px=50000) in (b"v", "v"), "getex returns the value"
    assert 45000 <= r.pttl(k) <= 50000, f"pttl after getex(px=50000): {r.pttl(k)}"
    assert r.expire(k, 200) is True, "expire on an existing key"
    assert r.expire(f"{pfx}:missing", 200) is False, "expire on a missing key"
    assert r.persist(k) is True and r.ttl(k) == -1, "persist"
    r.set(f"{pfx}:gone", "x", px=1)
    time.sleep(0.05)
    assert r.get(f"{pfx}:gone") is None and r.exists(f"{pfx}:gone") == 0, "an expired key reads as absent"
    wanted = {f"{pfx}:scan:{i}" for i in range(250)}
    r.mset({key: "1" for key in wanted})
    found = {x.decode() if isinstance(x, bytes) else x for x in r.scan_iter(match=f"{pfx}:scan:*", count=50)}
    assert found == wanted, f"scan_iter found {len(found)} of {len(wanted)} keys"


GROUPS = [
    ("connection", check_connection),
    ("strings", check_strings),
    ("multikey", check_multikey),
    ("pipeline (MULTI/EXEC)", check_pipeline_transaction),
    ("pipeline (transaction=False)", check_pipeline_plain),
    ("VSET/VGET siblings", check_siblings),
    ("DYNAMO", check_dynamo),
    ("expiry and scan_iter", check_expiry_and_scan),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()

    print(f"redis-py {redis.__version__}")
    failed = 0
    clients = [
        ("defaults (RESP3)", 3, lambda: redis.Redis(host=args.host, port=args.port)),
        ("protocol=2", 2, lambda: redis.Redis(host=args.host, port=args.port, protocol=2)),
    ]
    for label, protocol, make in clients:
        r = make()
        try:
            for name, fn in GROUPS:
                pfx = f"pycheck:{uuid.uuid4().hex[:8]}:"
                try:
                    fn(r, pfx, protocol)
                    print(f"PASS redis-py {label}: {name}")
                except Exception as e:  # noqa: BLE001 - report every kind of failure
                    failed += 1
                    print(f"FAIL redis-py {label}: {name}")
                    print(describe_failure(e))
        finally:
            r.close()
        try:
            check_decoded(args.port, args.host, protocol)
            print(f"PASS redis-py {label}: decode_responses=True")
        except Exception as e:  # noqa: BLE001
            failed += 1
            print(f"FAIL redis-py {label}: decode_responses=True")
            print(describe_failure(e))

    if failed:
        print(f"redis-py: {failed} group(s) failed")
        sys.exit(1)
    print("redis-py: all groups passed")


if __name__ == "__main__":
    main()
