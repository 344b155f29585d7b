#!/usr/bin/env python3
"""Gives every entry under ROOT (ROOT included) an atime and mtime with random
nanoseconds, deepest paths first, without following symlinks.

    ns_times.py ROOT SEED
"""
import os
import random
import sys

root, seed = os.fsencode(sys.argv[1]), int(sys.argv[2])
rng = random.Random(seed)
paths = []
for d, dirs, files in os.walk(root):
    paths.extend(os.path.join(d, n) for n in dirs + files)
paths.sort(key=lambda p: -p.count(b"/"))
paths.append(root)
for p in paths:
    st = os.lstat(p)
    m = st.st_mtime_ns // 10**9 * 10**9 + rng.randrange(1, 10**9)
    a = st.st_atime_ns // 10**9 * 10**9 + rng.randrange(1, 10**9)
    os.utime(p, ns=(a, m), follow_symlinks=False)
