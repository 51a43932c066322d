#!/usr/bin/env python3
"""Prints a base port B such that B..B+K-1 (client ports) and
B+10000..B+10000+K-1 (their default peer ports) are all free on 127.0.0.1.
Used by compat/run.sh and benches/compare.sh to start `dynokv dev --nodes K`.

    python3 compat/free_ports.py K
"""
import socket
import sys

k = int(sys.argv[1])
# Below 32768, Linux's ephemeral range, so no outgoing connection takes one.
for base in range(21000, 22768 - k, 7):
    socks = []
    try:
        for p in [base + i for i in range(k)] + [base + 10000 + i for i in range(k)]:
            s = socket.socket()
            s.bind(("127.0.0.1", p))
            socks.append(s)
        print(base)
        break
    except OSError:
        pass
    finally:
        for s in socks:
            s.close()
else:
    sys.exit("no free run of ports")
