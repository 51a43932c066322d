#!/usr/bin/env python3
"""Differential test: dynokv against a real redis-server, reply byte for byte.

Usage:
    python3 compat/differential.py                      # one random seed, 2000 ops
    python3 compat/differential.py --seed 7 --ops 500   # replay one seed
    python3 compat/differential.py --seeds 1,2,3,4,5 --ops 1000   # compat/run.sh
    python3 compat/differential.py --seeds 1-200 --ops 5000       # long, on demand
        # (~7 min with DYNOKV_BIN=target/release/dynokv)
    python3 compat/differential.py --seeds 1-20 --partitions 0    # dynokv's default Q
    python3 compat/differential.py --dynokv-port 6380 --redis-port 6379 ...

Starts a dynokv node (DYNOKV_BIN or --dynokv-bin, default target/debug/dynokv,
built with `cargo build` if missing; `serve --port 0 --peer-port 0` in a
throwaway data directory, --partitions 64 unless told otherwise: KEYS and
SCAN walk every partition) and a redis-server (7.0.15 is the reference) on a
free loopback port with `--save '' --appendonly no`, unless --dynokv-port /
--redis-port name running servers. BOTH ARE FLUSHALLed before every seed.
Both servers we started are always stopped on exit, even on failure.

Each seed drives the same pseudo-random command sequence (random.Random(seed),
independent of the replies' timing) into both servers over raw sockets and
compares every reply byte for byte: RESP2, and RESP3 (HELLO 3 first) for every
seed with seed % 3 == 2. Commands hit a keyspace of 20 keys (binary, empty,
with spaces, CR LF and glob characters) so they collide. The mix: strings
(GET SET+options SETNX MSETNX GETSET GETDEL GETEX APPEND STRLEN SETRANGE
GETRANGE SUBSTR INCR DECR INCRBY DECRBY MGET MSET DEL UNLINK EXISTS TYPE
SETEX PSETEX), expiry (EXPIRE PEXPIRE EXPIREAT PEXPIREAT with NX XX GT LT,
TTL PTTL EXPIRETIME PEXPIRETIME PERSIST), keyspace (KEYS SCAN DBSIZE RANDOMKEY
RENAME RENAMENX COPY MOVE TOUCH SELECT, rarely FLUSHALL/FLUSHDB), transactions (MULTI EXEC
DISCARD, queued runtime and syntax errors, EXECABORT, WATCH/UNWATCH with a
second connection writing the watched keys), and wrong-arity, unknown-command
and bad-option variants of all of them.

Not byte for byte, by design:
  - TTL / PTTL: equal within 1 s / 1000 ms (the servers' clocks race).
  - EXPIRETIME / PEXPIRETIME: exact when the reply is a time this run gave
    absolutely (EXPIREAT, PEXPIREAT, EXAT, PXAT), else within 1 s / 1000 ms.
  - KEYS: the same keys in any order (order differs by design).
  - SCAN: iterated to completion on both; the same set of keys, cursors not
    compared. Not sent inside MULTI (its cursor would be compared).
  - RANDOMKEY: both nil, or each server's key exists on the other.
  - HELLO's reply (server name, version, client id) is not compared.

Left out on purpose (differences documented in README.md / docs/semantics.md,
or races between two clocks):
  - Relative expiries under 100 s, and absolute ones less than 200 s ahead:
    they could expire between the two servers' replies. Expiry in the past
    is tested where Redis deletes at once (EXPIRE* with a time <= now,
    GETEX EXAT/PXAT in the past), not with SET EXAT/PXAT in the past (Redis
    keeps the key until its expire cycle, so DBSIZE would race).
  - Other data types and commands dynokv does not have (strings only;
    INCRBYFLOAT, LCS, SETBIT... answer "unknown command" by design).
  - SWAPDB (not implemented). SELECT, MOVE and COPY ... DB use databases
    0-2 (and bad indexes); the second connection stays in database 0.
  - SCAN with a cursor neither 0 nor garbage (cursors are implementation
    detail), OBJECT, DEBUG, INFO, CLIENT, CONFIG: not part of this mix.
  - Isolation of MULTI/EXEC against other clients (docs/semantics.md): the
    second connection only writes between commands, never during EXEC.
  - FLUSHALL/FLUSHDB while keys are WATCHed (outside MULTI): a known
    difference. Redis fails the EXEC if a watched key existed at the flush
    or was written before it; dynokv judges a watched key by its version
    context, which the flush removes, so a key that was absent at WATCH,
    then written, then flushed does not fail the EXEC (seed 168 before
    this skip).

After the last command of a seed, KEYS * and every key's GET and PTTL are
compared too (the final state). --stats prints how often each command got
each kind of reply (to see what the mix really covers).

Output: `seed=N ...` when a seed starts, one summary line per seed, and a
final `N passed, M failed` line. On a mismatch: the seed, command index,
command, both replies, the last commands before it, and the line that
replays it. Exit status 0 only if every seed passed.
"""

import argparse
import collections
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPLY_TIMEOUT_S = 30
START_TIMEOUT_S = 30
SCAN_CALLS_MAX = 100_000
STATS = collections.Counter()  # (command, reply class) -> count, for --stats

# ---------------------------------------------------------------- RESP


class Incomplete(Exception):
    pass


class ServerGone(Exception):
    pass


def parse(buf, pos):
    """One reply at buf[pos:] -> (node, end). node = (type, payload, raw)."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise Incomplete
    t = buf[pos:pos + 1]
    line = bytes(buf[pos + 1:end])
    nxt = end + 2
    if t in (b"+", b"-", b",", b"#", b"(", b"_"):
        payload = line
    elif t == b":":
        payload = int(line)
    elif t in (b"$", b"=", b"!"):
        n = int(line)
        if n < 0:
            payload = None
        else:
            if len(buf) < nxt + n + 2:
                raise Incomplete
            payload = bytes(buf[nxt:nxt + n])
            nxt += n + 2
    elif t in (b"*", b"~", b">", b"%", b"|"):
        n = int(line)
        if n < 0:
            payload = None
        else:
            count = n * 2 if t in (b"%", b"|") else n
            payload = []
            for _ in range(count):
                item, nxt = parse(buf, nxt)
                payload.append(item)
    else:
        raise ValueError(f"bad RESP type byte {t!r} in {bytes(buf[pos:pos + 80])!r}")
    return (t.decode(), payload, bytes(buf[pos:nxt])), nxt


def encode(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Conn:
    def __init__(self, port, name):
        self.name = name
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(REPLY_TIMEOUT_S)
        self.buf = bytearray()

    def send(self, args):
        try:
            self.sock.sendall(encode(args))
        except OSError as e:
            raise ServerGone(f"{self.name}: send failed: {e}") from e

    def read(self):
        while True:
            if self.buf:
                try:
                    node, end = parse(self.buf, 0)
                    del self.buf[:end]
                    return node
                except Incomplete:
                    pass
            try:
                chunk = self.sock.recv(1 << 16)
            except socket.timeout as e:
                raise ServerGone(f"{self.name}: no reply within {REPLY_TIMEOUT_S} s") from e
            except OSError as e:
                raise ServerGone(f"{self.name}: {e}") from e
            if not chunk:
                raise ServerGone(f"{self.name}: connection closed")
            self.buf += chunk

    def call(self, args):
        self.send(args)
        return self.read()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def call_both(pair, args):
    """Sends to both first, then reads both: one round trip of latency."""
    redis, dyno = pair
    redis.send(args)
    dyno.send(args)
    return redis.read(), dyno.read()


# ---------------------------------------------------------------- servers


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ping(port, proc, what, deadline):
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"differential.py: {what} exited during start-up ({proc.returncode})")
        try:
            c = Conn(port, what)
            try:
                if c.call([b"PING"])[2] == b"+PONG\r\n":
                    return
            finally:
                c.close()
        except (OSError, ServerGone):
            pass
        time.sleep(0.05)
    raise SystemExit(f"differential.py: {what} on port {port} did not answer PING in time")


class Servers:
    """The servers we started; stop() always kills them."""

    def __init__(self):
        self.procs = []
        self.dirs = []

    def start_redis(self):
        work = tempfile.mkdtemp(prefix="dynokv-diff-redis.")
        self.dirs.append(work)
        exe = shutil.which("redis-server")
        if not exe:
            raise SystemExit("differential.py: redis-server is not installed")
        for _ in range(5):
            port = free_port()
            log = open(os.path.join(work, "redis.log"), "wb")
            proc = subprocess.Popen(
                [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", work, "--daemonize", "no",
                 "--protected-mode", "no", "--logfile", ""],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            log.close()
            self.procs.append(proc)
            time.sleep(0.05)
            if proc.poll() is None:
                wait_ping(port, proc, "redis-server", time.monotonic() + START_TIMEOUT_S)
                return port
        raise SystemExit("differential.py: could not start redis-server")

    def start_dynokv(self, binary, partitions):
        work = tempfile.mkdtemp(prefix="dynokv-diff-node.")
        self.dirs.append(work)
        errpath = os.path.join(work, "node.log")
        err = open(errpath, "wb")
        proc = subprocess.Popen(
            [binary, "serve", "--port", "0", "--peer-port", "0",
             "--data-dir", os.path.join(work, "data"), "--log-level", "info"]
            + (["--partitions", str(partitions)] if partitions else []),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        err.close()
        self.procs.append(proc)
        deadline = time.monotonic() + START_TIMEOUT_S
        ready = re.compile(rb"dynokv ready.*?addr=[^ ]*:(\d+)")
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                with open(errpath, "rb") as f:
                    sys.stderr.write(f.read().decode(errors="replace"))
                raise SystemExit(f"differential.py: dynokv exited during start-up ({proc.returncode})")
            with open(errpath, "rb") as f:
                text = re.sub(rb"\x1b\[[0-9;]*m", b"", f.read())
            m = ready.search(text)
            if m:
                port = int(m.group(1))
                wait_ping(port, proc, "dynokv", deadline)
                return port
            time.sleep(0.05)
        raise SystemExit("differential.py: dynokv printed no 'dynokv ready addr=...' line in time")

    def alive(self):
        return all(p.poll() is None for p in self.procs)

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + 5
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        self.procs = []
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)
        self.dirs = []


# ---------------------------------------------------------------- generator

KEYSPACE = [
    b"k0", b"k1", b"k2", b"k3", b"k4", b"k5", b"k6", b"k7",
    b"key:1", b"key:2", b"a b", b"", b"\x00bin\xff", b"new\r\nline",
    b"*", b"h?llo", b"[x]", b"\xc3\xa9t\xc3\xa9", b"K0", b"k\\1",
]

VALUES = [
    b"", b"v", b"hello world", b"0", b"1", b"-1", b"42", b"100", b"-100",
    b"9223372036854775807", b"-9223372036854775808", b"9223372036854775806",
    b"-9223372036854775807", b"9223372036854775808", b"1.5", b" 1", b"1 ", b"01",
    b"-0", b"+1", b"abc", b"\x00\x01\xff", b"x" * 40, b"12345678901234567890",
    b"a\r\nb", b"\xc3\xa9",
]

PATTERNS = [
    b"*", b"k*", b"k?", b"k[0-3]", b"k[^0-3]", b"k[3-0]", b"*:*", b"\\*", b"h\\?llo",
    b"h?llo", b"*o*", b"[", b"[x", b"[x]", b"\\[x]", b"\\", b"k\\", b"a b", b"",
    b"*\x00*", b"k[1-]", b"K*", b"*e*", b"??", b"?", b"k**", b"*[0-9]", b"[a-z]*",
    b"[!a]*", b"[^k]*", b"key:?", b"\xc3*", b"*\\\\*", b"k\\1", b"k\\\\1", b"[\\]x]",
    b"*[", b"k[0-", b"[]", b"[^]*",
]

UNKNOWN = [b"FOO", b"GETT", b"sett", b"xyzzy", b"", b"SET2", b"\x00bad", b"ge t",
           b"a" * 200, b"INCRBYY", b"new\r\nline"]

EXTRA = [b"NX", b"XX", b"GT", b"LT", b"GET", b"KEEPTTL", b"REPLACE", b"PERSIST",
         b"foo", b"", b"-1", b"abc", b"k1", b"EX", b"DB", b"MATCH", b"\x00"]


# The databases SELECT, MOVE and COPY ... DB name (mostly 0-2: keys meet),
# and indexes Redis refuses.
DATABASES_USED = [b"0", b"1", b"2"]
DB_ARGS = DATABASES_USED * 3 + [b"15", b"16", b"-1", b"abc", b"99999999999"]


def cased(rng, word):
    """An option in random letter case."""
    r = rng.random()
    if r < 0.6:
        return word
    if r < 0.8:
        return word.lower()
    return bytes(c ^ 0x20 if chr(c).isalpha() and rng.random() < 0.5 else c for c in word)


class Op:
    __slots__ = ("args", "kind", "conn")

    def __init__(self, args, kind="exact", conn="main"):
        self.args = args
        self.kind = kind
        self.conn = conn


class Gen:
    def __init__(self, rng, now_ms):
        self.rng = rng
        self.now_ms = now_ms
        self.now_s = now_ms // 1000
        # Times this run gave absolutely: EXPIRETIME/PEXPIRETIME of these is exact.
        self.exact_s = set()
        self.exact_ms = set()
        self.in_multi = False
        self.queued = []
        self.watching = False

    # -- pieces
    def key(self):
        return self.rng.choice(KEYSPACE)

    def keys(self, lo=1, hi=4):
        return [self.key() for _ in range(self.rng.randint(lo, hi))]

    def value(self):
        r = self.rng.random()
        if r < 0.55:
            return self.rng.choice(VALUES)
        if r < 0.85:
            return str(self.rng.randint(-1000, 1000)).encode()
        return bytes(self.rng.randrange(256) for _ in range(self.rng.randint(0, 12)))

    def int_arg(self, lo, hi):
        r = self.rng.random()
        if r < 0.9:
            return str(self.rng.randint(lo, hi)).encode()
        return self.rng.choice([b"abc", b"", b"1.5", b" 1", b"9223372036854775807",
                                b"-9223372036854775808", b"9223372036854775808", b"+1",
                                b"0x10", b"-0", b"01"])

    def rel_s(self, allow_past=False):
        """A relative expiry in seconds: >= 100 s, sometimes <= 0 or invalid."""
        r = self.rng.random()
        if allow_past and r < 0.1:
            return str(self.rng.choice([0, -1, -100, -9223372036854775])).encode()
        if r < 0.15:
            return self.rng.choice([b"0", b"-5", b"abc", b"1.5", b"9223372036854775807",
                                    b"9223372036854775", b"9223372036854776", b"",
                                    b"-9223372036854776"])
        return str(self.rng.randint(100, 10_000_000)).encode()

    def rel_ms(self, allow_past=False):
        r = self.rng.random()
        if allow_past and r < 0.1:
            return str(self.rng.choice([0, -1, -100000])).encode()
        if r < 0.15:
            return self.rng.choice([b"0", b"-5", b"abc", b"9223372036854775807",
                                    b"9223372036854775806", b"1.0"])
        return str(self.rng.randint(100_000, 10_000_000_000)).encode()

    def abs_s(self, allow_past=False):
        r = self.rng.random()
        if allow_past and r < 0.15:
            s = self.rng.choice([1, self.rng.randint(1, self.now_s - 1000), 0, -1])
            return str(s).encode()
        if r < 0.22:
            return self.rng.choice([b"abc", b"0", b"-1", b"9223372036854775807",
                                    b"9223372036854775"])
        s = self.now_s + self.rng.randint(200, 50_000_000)
        self.exact_s.add(s)
        self.exact_ms.add(s * 1000)
        return str(s).encode()

    def abs_ms(self, allow_past=False):
        r = self.rng.random()
        if allow_past and r < 0.15:
            ms = self.rng.choice([1, self.rng.randint(1, self.now_ms - 1_000_000), 0, -1])
            return str(ms).encode()
        if r < 0.22:
            return self.rng.choice([b"abc", b"0", b"-1", b"9223372036854775807"])
        ms = self.now_ms + self.rng.randint(200_000, 50_000_000_000)
        self.exact_ms.add(ms)
        self.exact_s.add((ms + 500) // 1000)
        return str(ms).encode()

    # -- strings
    def g_get(self):
        return Op([b"GET", self.key()])

    def set_expiry(self, persist=False, past=False):
        """One expiry option for SET (or GETEX with persist=True)."""
        choices = [b"EX", b"PX", b"EXAT", b"PXAT"]
        if persist:
            choices.append(b"PERSIST")
        else:
            choices.append(b"KEEPTTL")
        opt = self.rng.choice(choices)
        if opt == b"EX":
            return [cased(self.rng, opt), self.rel_s()]
        if opt == b"PX":
            return [cased(self.rng, opt), self.rel_ms()]
        if opt == b"EXAT":
            return [cased(self.rng, opt), self.abs_s(allow_past=past)]
        if opt == b"PXAT":
            return [cased(self.rng, opt), self.abs_ms(allow_past=past)]
        return [cased(self.rng, opt)]

    def g_set(self):
        args = [b"SET", self.key(), self.value()]
        opts = []
        r = self.rng.random()
        if r < 0.2:
            opts.append([cased(self.rng, b"NX")])
        elif r < 0.4:
            opts.append([cased(self.rng, b"XX")])
        elif r < 0.43:
            opts.append([b"NX"])
            opts.append([b"XX"])
        if self.rng.random() < 0.25:
            opts.append([cased(self.rng, b"GET")])
        if self.rng.random() < 0.4:
            opts.append(self.set_expiry())
            if self.rng.random() < 0.08:
                opts.append(self.set_expiry())
        if self.rng.random() < 0.03:
            opts.append([self.rng.choice([b"FOO", b"EX", b"PX", b"NXX", b"", b"GETT"])])
        self.rng.shuffle(opts)
        for o in opts:
            args += o
        return Op(args)

    def g_setnx(self):
        return Op([b"SETNX", self.key(), self.value()])

    def g_mset(self, name=b"MSET"):
        args = [name]
        for _ in range(self.rng.randint(1, 3)):
            args += [self.key(), self.value()]
        if self.rng.random() < 0.05:
            args.append(self.key())
        return Op(args)

    def g_msetnx(self):
        return self.g_mset(b"MSETNX")

    def g_getset(self):
        return Op([b"GETSET", self.key(), self.value()])

    def g_getdel(self):
        return Op([b"GETDEL", self.key()])

    def g_getex(self):
        args = [b"GETEX", self.key()]
        r = self.rng.random()
        if r < 0.7:
            args += self.set_expiry(persist=True, past=True)
        if self.rng.random() < 0.06:
            args += self.set_expiry(persist=True)
        if self.rng.random() < 0.03:
            args.append(self.rng.choice([b"NX", b"KEEPTTL", b"GET", b"FOO"]))
        return Op(args)

    def g_append(self):
        return Op([b"APPEND", self.key(), self.value()])

    def g_strlen(self):
        return Op([b"STRLEN", self.key()])

    def g_setrange(self):
        r = self.rng.random()
        if r < 0.85:
            off = str(self.rng.randint(0, 40)).encode()
        else:
            # Never 536870911 and below: Redis and dynokv would build a
            # 512 MB string (legal), far too slow for this test.
            off = self.rng.choice([b"-1", b"abc", b"536870912", b"536870913",
                                   b"9223372036854775807", b"", b"1.5"])
        return Op([b"SETRANGE", self.key(), off, self.value()])

    def g_getrange(self):
        name = self.rng.choice([b"GETRANGE", b"GETRANGE", b"SUBSTR"])
        return Op([name, self.key(), self.int_arg(-25, 25), self.int_arg(-25, 25)])

    def g_incr(self):
        r = self.rng.random()
        key = self.key()
        if r < 0.3:
            return Op([b"INCR", key])
        if r < 0.5:
            return Op([b"DECR", key])
        name = b"INCRBY" if r < 0.75 else b"DECRBY"
        amount = self.rng.choice([
            str(self.rng.randint(-100, 100)).encode(), b"9223372036854775807",
            b"-9223372036854775808", b"-9223372036854775807", b"1.5", b"abc", b"",
            b"0", b" 1", b"+5", b"9223372036854775808",
        ]) if self.rng.random() < 0.3 else str(self.rng.randint(-100, 100)).encode()
        return Op([name, key, amount])

    def g_mget(self):
        return Op([b"MGET"] + self.keys())

    def g_del(self):
        return Op([self.rng.choice([b"DEL", b"UNLINK"])] + self.keys(1, 3))

    def g_exists(self):
        return Op([b"EXISTS"] + self.keys())

    def g_type(self):
        return Op([b"TYPE", self.key()])

    def g_setex(self):
        if self.rng.random() < 0.5:
            return Op([b"SETEX", self.key(), self.rel_s(), self.value()])
        return Op([b"PSETEX", self.key(), self.rel_ms(), self.value()])

    # -- expiry
    def g_expire(self):
        name, t = self.rng.choice([
            (b"EXPIRE", lambda: self.rel_s(True)), (b"PEXPIRE", lambda: self.rel_ms(True)),
            (b"EXPIREAT", lambda: self.abs_s(True)), (b"PEXPIREAT", lambda: self.abs_ms(True)),
        ])
        args = [name, self.key(), t()]
        r = self.rng.random()
        if r < 0.5:
            n = 1 if self.rng.random() < 0.85 else 2
            for _ in range(n):
                args.append(cased(self.rng, self.rng.choice([b"NX", b"XX", b"GT", b"LT"])))
        elif r < 0.54:
            args.append(self.rng.choice([b"FOO", b"", b"\x00x", b"NXX", b"ab\x00cd"]))
        return Op(args)

    def g_ttl(self):
        name = self.rng.choice([b"TTL", b"PTTL", b"EXPIRETIME", b"PEXPIRETIME"])
        kind = {b"TTL": "ttl", b"PTTL": "pttl", b"EXPIRETIME": "etime",
                b"PEXPIRETIME": "petime"}[name]
        return Op([name, self.key()], kind)

    def g_persist(self):
        return Op([b"PERSIST", self.key()])

    # -- keyspace
    def g_keys(self):
        return Op([b"KEYS", self.rng.choice(PATTERNS)], "keys")

    def g_scan(self):
        args = [b"SCAN", b"0"]
        r = self.rng.random()
        if r < 0.05:
            args[1] = self.rng.choice([b"abc", b"1.5", b" 0", b"0x", b"-", b"+"])
        elif r < 0.1:
            args[1] = self.rng.choice([b"", b"+0", b"-0", b"00"])  # strtoul reads 0
        opts = []
        if self.rng.random() < 0.5:
            opts.append([cased(self.rng, b"MATCH"), self.rng.choice(PATTERNS)])
        if self.rng.random() < 0.4:
            opts.append([cased(self.rng, b"COUNT"), self.rng.choice(
                [b"1", b"2", b"5", b"100", b"1000"])])
        if self.rng.random() < 0.2:
            opts.append([cased(self.rng, b"TYPE"), self.rng.choice(
                [b"string", b"STRING", b"hash", b"list", b"nosuchtype"])])
        if self.rng.random() < 0.05:
            opts.append(list(self.rng.choice([[b"COUNT", b"0"], [b"COUNT", b"-1"],
                                              [b"COUNT", b"abc"], [b"MATCH"], [b"FOO", b"1"],
                                              [b"COUNT"]])))
        self.rng.shuffle(opts)
        for o in opts:
            args += o
        bad = args[1] not in (b"0", b"", b"+0", b"-0", b"00") or any(
            o[0].upper() not in (b"MATCH", b"COUNT", b"TYPE") or len(o) < 2
            or (o[0].upper() == b"COUNT" and o[1] in (b"0", b"-1", b"abc")) for o in opts)
        if self.in_multi and not bad:
            return None
        return Op(args, "exact" if bad else "scan")

    def g_dbsize(self):
        return Op([b"DBSIZE"])

    def g_randomkey(self):
        return Op([b"RANDOMKEY"], "randomkey")

    def g_rename(self):
        return Op([self.rng.choice([b"RENAME", b"RENAMENX"]), self.key(), self.key()])

    def g_copy(self):
        args = [b"COPY", self.key(), self.key()]
        r = self.rng.random()
        if r < 0.4:
            args.append(cased(self.rng, b"REPLACE"))
        elif r < 0.5:
            args += [cased(self.rng, b"DB"), self.rng.choice(DB_ARGS)]
        elif r < 0.53:
            args += [self.rng.choice([b"DB", b"FOO", b"REPLACE"])]
        if self.rng.random() < 0.1:
            args.append(cased(self.rng, b"REPLACE"))
        return Op(args)

    def g_move(self):
        return Op([b"MOVE", self.key(), self.rng.choice(DB_ARGS)])

    def g_select(self):
        return Op([b"SELECT", self.rng.choice(DB_ARGS)])

    def g_touch(self):
        return Op([b"TOUCH"] + self.keys())

    def g_flush(self):
        r = self.rng.random()
        name = self.rng.choice([b"FLUSHALL", b"FLUSHDB"])
        if r < 0.5:
            return Op([name])
        if r < 0.85:
            return Op([name, cased(self.rng, self.rng.choice([b"SYNC", b"ASYNC"]))])
        return Op([name, self.rng.choice([b"FOO", b"SYNC", b""])] +
                  ([b"ASYNC"] if self.rng.random() < 0.5 else []))

    def g_flush_unless_watching(self):
        # Known difference: a key WATCHed while absent, written, then
        # FLUSHALLed: Redis fails the EXEC, dynokv cannot tell (the flush
        # removed the record). Inside MULTI the flush runs after the check.
        if self.watching and not self.in_multi:
            return None
        return self.g_flush()

    # -- errors
    def g_unknown(self):
        args = [self.rng.choice(UNKNOWN)]
        for _ in range(self.rng.randint(0, 4)):
            args.append(self.rng.choice([self.key(), self.value(), b"x" * 100]))
        return Op(args)

    # -- second connection
    def g_other(self):
        key = self.key()
        r = self.rng.random()
        if r < 0.4:
            args = [b"SET", key, self.value()]
        elif r < 0.55:
            args = [b"DEL", key]
        elif r < 0.65:
            args = [b"EXPIRE", key, str(self.rng.randint(100, 100000)).encode()]
        elif r < 0.75:
            args = [b"GET", key]
        elif r < 0.85:
            args = [b"APPEND", key, b"x"]
        elif r < 0.9:
            args = [b"PERSIST", key]
        elif r < 0.95:
            args = [b"SETRANGE", key, b"0", b""]
        else:
            args = [b"SET", key, self.value(), b"NX"]
        return Op(args, conn="other")

    # -- mix
    DATA = [
        (6, "g_get"), (8, "g_set"), (2, "g_setnx"), (2, "g_mset"), (1.5, "g_msetnx"),
        (1.5, "g_getset"), (1.5, "g_getdel"), (3, "g_getex"), (2.5, "g_append"),
        (1.5, "g_strlen"), (2.5, "g_setrange"), (2.5, "g_getrange"), (5, "g_incr"),
        (2, "g_mget"), (3, "g_del"), (2, "g_exists"), (1, "g_type"), (1.5, "g_setex"),
        (7, "g_expire"), (6, "g_ttl"), (1.5, "g_persist"),
        (1.5, "g_keys"), (1.5, "g_scan"), (1, "g_dbsize"), (1, "g_randomkey"),
        (3, "g_rename"), (2, "g_copy"), (1, "g_touch"), (0.15, "g_flush_unless_watching"),
        (1, "g_move"), (1, "g_select"),
        (1, "g_unknown"),
    ]

    def data_op(self):
        while True:
            names = [n for _, n in self.DATA]
            weights = [w for w, _ in self.DATA]
            op = getattr(self, self.rng.choices(names, weights)[0])()
            if op is not None:
                break
        if op.args[0] != b"SCAN" and self.rng.random() < 0.05:
            op = self.mutate(op)
        return op

    def mutate(self, op):
        """Wrong arity (or a stray argument) for an otherwise valid command."""
        args = list(op.args)
        if self.rng.random() < 0.5 and len(args) > 1:
            args = args[:self.rng.randint(1, len(args) - 1)]
        else:
            for _ in range(self.rng.randint(1, 2)):
                args.append(self.rng.choice(EXTRA))
        return Op(args, op.kind if op.kind in ("keys",) else "exact")

    def next_op(self):
        rng = self.rng
        other_w = 0.15 if (self.in_multi or self.watching) else 0.02
        if rng.random() < other_w:
            return self.g_other()
        if self.in_multi:
            p_exec = 0.08 + 0.03 * len(self.queued)
            r = rng.random()
            if r < p_exec:
                if rng.random() < 0.04:
                    return Op([b"EXEC", b"x"])
                return Op([cased(rng, b"EXEC")])
            r -= p_exec
            if r < 0.025:
                return Op([b"DISCARD"] + ([b"x"] if rng.random() < 0.2 else []))
            r -= 0.025
            if r < 0.01:
                return Op([b"MULTI"])
            r -= 0.01
            if r < 0.01:
                return Op([b"WATCH"] + self.keys(1, 2))
            r -= 0.01
            if r < 0.01:
                return Op([b"UNWATCH"])
            return self.data_op()
        r = rng.random()
        if r < 0.045:
            return Op([cased(rng, b"MULTI")] + ([b"x"] if rng.random() < 0.03 else []))
        if r < 0.065:
            return Op([b"WATCH"] + (self.keys(1, 3) if rng.random() < 0.95 else []))
        if r < 0.07:
            return Op([b"UNWATCH"] + ([b"x"] if rng.random() < 0.1 else []))
        if r < 0.074:
            return Op([rng.choice([b"EXEC", b"DISCARD"])])
        return self.data_op()

    def observe(self, op, reply):
        """Tracks MULTI/WATCH state from Redis's reply (the reference)."""
        if op.conn != "main":
            return
        name = op.args[0].upper()
        raw = reply[2]
        if name == b"MULTI" and raw == b"+OK\r\n":
            self.in_multi = True
            self.queued = []
        elif name == b"EXEC" and self.in_multi:
            self.in_multi = False
            self.watching = False
        elif name == b"EXEC" and raw.startswith(b"*"):
            self.watching = False
        elif name == b"DISCARD" and raw == b"+OK\r\n":
            self.in_multi = False
            self.watching = False
        elif self.in_multi and raw == b"+QUEUED\r\n":
            self.queued.append(op)
        elif name == b"WATCH" and raw == b"+OK\r\n":
            self.watching = True
        elif name == b"UNWATCH" and raw == b"+OK\r\n":
            self.watching = False


# ---------------------------------------------------------------- comparison


def same(kind, a, b, gen):
    """Whether Redis's reply a and dynokv's reply b agree for this kind."""
    if a[2] == b[2]:
        return True
    if kind == "exact" or a[0] == "-" or b[0] == "-":
        return False
    if kind in ("ttl", "pttl", "etime", "petime"):
        if a[0] != ":" or b[0] != ":":
            return False
        x, y = a[1], b[1]
        if x < 0 or y < 0:
            return False
        if kind == "etime" and x in gen.exact_s:
            return False
        if kind == "petime" and x in gen.exact_ms:
            return False
        tolerance = 1 if kind in ("ttl", "etime") else 1000
        return abs(x - y) <= tolerance
    if kind == "keys":
        if a[0] != b[0] or a[1] is None or b[1] is None:
            return False
        return sorted(n[2] for n in a[1]) == sorted(n[2] for n in b[1])
    if kind == "randomkey":
        # Both a key; outside MULTI the caller then checks each exists on the other.
        return a[0] == b[0] == "$" and a[1] is not None and b[1] is not None
    if kind == "exec":
        return False  # handled by the caller with the queued kinds
    return False


def same_exec(queued, a, b, gen):
    if a[2] == b[2]:
        return True
    if a[0] != "*" or b[0] != "*" or a[1] is None or b[1] is None:
        return False
    if len(a[1]) != len(b[1]) or len(a[1]) != len(queued):
        return False
    return all(same(op.kind, x, y, gen) for op, x, y in zip(queued, a[1], b[1]))


# ---------------------------------------------------------------- one seed


def show(args):
    parts = []
    for a in args:
        text = repr(a)[1:]
        if re.fullmatch(rb"[A-Za-z0-9_:.\-+]+", a):
            text = a.decode()
        parts.append(text)
    return " ".join(parts)


def show_reply(node):
    raw = node[2]
    if len(raw) > 600:
        return repr(raw[:600]) + f"... ({len(raw)} bytes)"
    return repr(raw)


class Mismatch(Exception):
    def __init__(self, index, op, redis_reply, dyno_reply, note=""):
        super().__init__(note)
        self.index = index
        self.op = op
        self.redis_reply = redis_reply
        self.dyno_reply = dyno_reply
        self.note = note


def reply_class(node):
    """A reply in a few words, for --stats: '+OK', '-ERR syntax', ':', '*-1'..."""
    t, payload, raw = node
    if t in "+-":
        return t + " ".join(payload.decode(errors="replace").split()[:2])
    if payload is None:
        return t + "-1"
    return t


def scan_all(conn, args):
    """SCAN from cursor 0 to the end -> (set of keys, first error reply or None)."""
    keys = set()
    cursor = args[1]  # "0", or another spelling of 0
    for _ in range(SCAN_CALLS_MAX):
        reply = conn.call([args[0], cursor] + args[2:])
        if reply[0] != "*" or reply[1] is None or len(reply[1]) != 2:
            return keys, reply
        cursor_node, items = reply[1]
        if cursor_node[0] != "$" or items[0] != "*":
            return keys, reply
        keys.update(n[1] for n in items[1])
        cursor = cursor_node[1]
        if cursor == b"0":
            return keys, None
    raise ServerGone(f"{conn.name}: SCAN did not finish in {SCAN_CALLS_MAX} calls")


def final_state_check(main, index, gen):
    """After the last command: the same keys, values and TTLs on both, in
    every database the mix uses."""
    if gen.in_multi:
        call_both(main, [b"DISCARD"])
    for db in DATABASES_USED:
        call_both(main, [b"SELECT", db])
        for args in ([b"KEYS", b"*"], [b"DBSIZE"]):
            a, b = call_both(main, args)
            if not same("keys" if args[0] == b"KEYS" else "exact", a, b, gen):
                raise Mismatch(index, Op(args), a, b, f"final state of database {db}: different keys")
        a, _ = call_both(main, [b"KEYS", b"*"])
        for node in a[1]:
            key = node[1]
            for args, kind in (([b"GET", key], "exact"), ([b"PTTL", key], "pttl")):
                ra, rb = call_both(main, args)
                if not same(kind, ra, rb, gen):
                    raise Mismatch(index, Op(args), ra, rb, f"final state of database {db} differs")


def run_seed(seed, ops, ports, verbose):
    rng = random.Random(seed)
    resp3 = seed % 3 == 2
    gen = Gen(rng, int(time.time() * 1000))
    conns = {}
    try:
        main = (Conn(ports[0], "redis"), Conn(ports[1], "dynokv"))
        other = (Conn(ports[0], "redis/2"), Conn(ports[1], "dynokv/2"))
        conns = {"main": main, "other": other}
        for pair in (main, other):
            for c in pair:
                r = c.call([b"FLUSHALL"])
                if r[2] != b"+OK\r\n":
                    raise ServerGone(f"{c.name}: FLUSHALL answered {r[2]!r}")
        if resp3:
            a, b = call_both(main, [b"HELLO", b"3"])
            if a[0] != "%" or b[0] != "%":
                raise Mismatch(-1, Op([b"HELLO", b"3"]), a, b, "HELLO 3 should answer a map")
        history = []
        for index in range(ops):
            op = gen.next_op()
            pair = conns[op.conn]
            history.append(op)
            if verbose:
                print(f"  [{index}] {op.conn}: {show(op.args)}")
            queued = list(gen.queued) if (op.conn == "main" and gen.in_multi) else None
            name = op.args[0].upper()
            if op.kind == "scan":
                ka, ea = scan_all(pair[0], op.args)
                kb, eb = scan_all(pair[1], op.args)
                if ea is not None or eb is not None:
                    if ea is None or eb is None or ea[2] != eb[2]:
                        raise Mismatch(index, op, ea or ("*", None, b"(complete)"),
                                       eb or ("*", None, b"(complete)"), "SCAN errors differ")
                elif ka != kb:
                    raise Mismatch(index, op, ("~", None, repr(sorted(ka)).encode()),
                                   ("~", None, repr(sorted(kb)).encode()),
                                   "SCAN to completion returned different key sets "
                                   f"(only redis: {sorted(ka - kb)!r}, only dynokv: {sorted(kb - ka)!r})")
                continue
            a, b = call_both(pair, op.args)
            if name == b"EXEC" and queued is not None and op.conn == "main" and len(op.args) == 1:
                ok = same_exec(queued, a, b, gen)
            else:
                ok = same(op.kind, a, b, gen)
            if ok and op.kind == "randomkey" and a[0] == "$" and a[1] is not None and queued is None:
                # Each server's random key must exist on the other.
                ea = pair[0].call([b"EXISTS", b[1]])
                eb = pair[1].call([b"EXISTS", a[1]])
                ok = ea[2] == b":1\r\n" and eb[2] == b":1\r\n"
                if not ok:
                    raise Mismatch(index, op, a, b, "a RANDOMKEY answer does not exist on the other server")
            if not ok:
                raise Mismatch(index, op, a, b)
            gen.observe(op, a)
            STATS[(name, reply_class(a))] += 1
        final_state_check(main, ops, gen)
        return None, resp3, history
    except Mismatch as m:
        return m, resp3, history
    finally:
        for pair in conns.values():
            for c in pair:
                c.close()


def report_mismatch(seed, m, history, script_args):
    print(f"MISMATCH seed={seed} command #{m.index}" + (f": {m.note}" if m.note else ""))
    if len(history) > 1:
        print("  preceding commands:")
        for i, op in enumerate(history[-13:-1]):
            n = m.index - len(history[-13:-1]) + i
            print(f"    [{n}] {op.conn}: {show(op.args)}")
    print(f"  command [{m.index}] ({m.op.conn} connection): {show(m.op.args)}")
    print(f"  redis : {show_reply(m.redis_reply)}")
    print(f"  dynokv: {show_reply(m.dyno_reply)}")
    ops = m.index if m.note.startswith("final state") else m.index + 1
    print(f"  replay: python3 compat/differential.py --seed {seed} --ops {ops}{script_args}")


def parse_seeds(text):
    seeds = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part[1:]:
            lo, hi = part.split("-", 1)
            seeds.extend(range(int(lo), int(hi) + 1))
        else:
            seeds.append(int(part))
    return seeds


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, help="one seed (default: random)")
    ap.add_argument("--seeds", help="seeds: 1,2,3 or 1-200 or a mix")
    ap.add_argument("--ops", type=int, default=2000, help="commands per seed (default 2000)")
    ap.add_argument("--dynokv-port", type=int, help="use a running dynokv (it gets FLUSHALLed)")
    ap.add_argument("--redis-port", type=int, help="use a running redis-server (it gets FLUSHALLed)")
    ap.add_argument("--dynokv-bin", default=os.environ.get("DYNOKV_BIN"),
                    help="dynokv binary (default $DYNOKV_BIN or target/debug/dynokv)")
    ap.add_argument("--partitions", type=int, default=64,
                    help="partitions of the dynokv we start (default 64: KEYS and SCAN walk "
                         "every partition, slow in a debug build; 0 = dynokv's default)")
    ap.add_argument("--stats", action="store_true",
                    help="print how often each command got each kind of reply")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every command")
    opts = ap.parse_args()

    if opts.seeds:
        seeds = parse_seeds(opts.seeds)
    elif opts.seed is not None:
        seeds = [opts.seed]
    else:
        seeds = [random.SystemRandom().randrange(1, 1 << 31)]
    script_args = ""
    if opts.dynokv_bin:
        script_args += f" --dynokv-bin {opts.dynokv_bin}"
    if opts.partitions != 64 and not opts.dynokv_port:
        script_args += f" --partitions {opts.partitions}"

    servers = Servers()

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    passed = failed = 0
    try:
        redis_port = opts.redis_port or servers.start_redis()
        if opts.dynokv_port:
            dyno_port = opts.dynokv_port
        else:
            binary = opts.dynokv_bin or os.path.join(
                os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "debug", "dynokv")
            if not os.path.exists(binary):
                print(f"== {binary} missing: cargo build", flush=True)
                subprocess.run(["cargo", "build", "--quiet", "--manifest-path",
                                os.path.join(ROOT, "Cargo.toml")], check=True,
                               stdin=subprocess.DEVNULL, timeout=1800)
            dyno_port = servers.start_dynokv(binary, opts.partitions)
        print(f"== redis-server on 127.0.0.1:{redis_port}, dynokv on 127.0.0.1:{dyno_port}", flush=True)
        for seed in seeds:
            print(f"seed={seed}", flush=True)
            start = time.monotonic()
            try:
                mismatch, resp3, history = run_seed(seed, opts.ops, (redis_port, dyno_port), opts.verbose)
            except ServerGone as e:
                failed += 1
                print(f"seed={seed} ops={opts.ops} FAIL: {e}")
                print(f"  replay: python3 compat/differential.py --seed {seed} --ops {opts.ops}{script_args}")
                if not servers.alive():
                    print("a server died; stopping")
                    break
                continue
            took = time.monotonic() - start
            proto = "resp3" if resp3 else "resp2"
            if mismatch is None:
                passed += 1
                print(f"seed={seed} ops={opts.ops} {proto} PASS ({took:.1f}s)", flush=True)
            else:
                failed += 1
                report_mismatch(seed, mismatch, history, script_args)
                print(f"seed={seed} ops={opts.ops} {proto} FAIL at command #{mismatch.index} ({took:.1f}s)",
                      flush=True)
    except KeyboardInterrupt:
        print("interrupted")
        failed = len(seeds) - passed
    except SystemExit as e:  # start-up failure or SIGTERM/SIGHUP
        print(e.code if isinstance(e.code, str) else f"stopped (exit {e.code})")
        failed = len(seeds) - passed
    finally:
        servers.stop()
    if opts.stats:
        print()
        for (name, cls), n in sorted(STATS.items()):
            print(f"  {n:7d}  {name.decode(errors='replace')[:20]:20s} {cls}")
    print()
    print(f"{passed} passed, {failed} failed")
    sys.exit(0 if failed == 0 and passed == len(seeds) else 1)


if __name__ == "__main__":
    main()
