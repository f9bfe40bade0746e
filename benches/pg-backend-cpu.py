#!/usr/bin/env python3
"""CPU time of the local PostgreSQL backends connected to one database.

    pg-backend-cpu.py DBNAME MARK STOP

Samples /proc every 100 ms until the file STOP exists, then prints the CPU
seconds of the backends of DBNAME, leaving out those already connected
when the file MARK appeared (`benches/webhooks.sh` touches MARK when
`wh-load` has seeded the outbox and starts the server, so what is left
is the server's backends). A backend's last sample before it exits
counts. Linux only, and only for a PostgreSQL on this machine.
"""
import glob
import os
import sys
import time

db, mark, stop = sys.argv[1:4]
needle = f"postgres: postgres {db} ".encode()
tick = os.sysconf("SC_CLK_TCK")
last = {}
excluded = None


def backends():
    found = {}
    for p in glob.glob("/proc/[0-9]*"):
        try:
            with open(p + "/cmdline", "rb") as f:
                if needle not in f.read().replace(b"\0", b" "):
                    continue
            with open(p + "/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            found[int(p[6:])] = (int(fields[11]) + int(fields[12])) / tick
        except (OSError, ValueError, IndexError):
            pass
    return found


while not os.path.exists(stop):
    now = backends()
    last.update(now)
    if excluded is None and os.path.exists(mark):
        excluded = set(now)
    time.sleep(0.1)
total = sum(v for k, v in last.items() if k not in (excluded or set()))
print(f"{total:.1f}")
