#!/usr/bin/env python3
"""Instructions per request under callgrind (repeatable, unlike seconds on a shared machine).

For each server case: starts `cloakroom-bench serve CASE` under valgrind, warms it up with
one second of `cloakroom-bench load`, zeroes the counters, drives WORKLOAD for 4 s with 4
connections, dumps, and prints instructions / requests.

    CARGO_TARGET_DIR=target-bench cargo build --release -p cloakroom-bench
    CLOAKROOM_BENCH_BIN=target-bench/release/cloakroom-bench python3 bench/callgrind_requests.py read write new

Caveat: valgrind does not emulate SHA-NI, so SHA-256 runs in software here (thousands of
instructions a block) and weighs far more than on the hardware.
"""
import glob
import os
import re
import subprocess
import sys
import tempfile
import time
OUT = tempfile.mkdtemp(prefix="cloakroom-cg-")
BIN=os.environ.get("CLOAKROOM_BENCH_BIN", "target/release/cloakroom-bench")
def measure(case, wl, secs=4, conns=4):
    for f in glob.glob(f"{OUT}/{case}.{wl}.*"): os.remove(f)
    out=f"{OUT}/{case}.{wl}.out"
    p=subprocess.Popen(["valgrind","--tool=callgrind","--callgrind-out-file="+out,"--dump-instr=no",BIN,"serve",case],stdout=subprocess.PIPE,stderr=subprocess.DEVNULL,text=True)
    port=None
    while True:
        line=p.stdout.readline()
        if not line: break
        m=re.match(r"port=(\d+)",line.strip())
        if m: port=m.group(1); break
    addr=f"127.0.0.1:{port}"
    # warm-up run (creates sessions, JIT-free but warms allocator)
    subprocess.run([BIN,"load",addr,wl,"1",str(conns)],capture_output=True,text=True)
    subprocess.run(["callgrind_control","--zero",str(p.pid)],capture_output=True)
    r=subprocess.run([BIN,"load",addr,wl,str(secs),str(conns)],capture_output=True,text=True)
    subprocess.run(["callgrind_control","--dump=measured",str(p.pid)],capture_output=True)
    time.sleep(1)
    p.kill(); p.wait()
    txt=r.stdout+r.stderr
    m=re.search(r"(\d+) requests",txt) or re.search(r"requests[=: ]+(\d+)",txt)
    reqs=int(m.group(1)) if m else None
    dumps=sorted(glob.glob(out+"*"))
    ir=None
    for d in dumps:
        t=open(d).read()
        if "measured" in t:
            mm=re.search(r"^summary: (\d+)",t,re.M) or re.search(r"^totals: (\d+)",t,re.M)
            if mm: ir=int(mm.group(1))
    return reqs, ir, txt.strip().splitlines()[-1] if txt.strip() else ""
for wl in sys.argv[1:]:
    res={}
    for case in ["plain","cloakroom-memory","tower-sessions-memory"]:
        reqs, ir, last = measure(case, wl)
        res[case]=(reqs,ir)
        print(wl, case, reqs, ir, (ir/reqs if ir and reqs else None), "|", last, flush=True)
