#!/usr/bin/env python3
"""One line per entry under ROOT: path, mtime in ns, nlink and, for files, the
inode's position in its hard-link group (first path seen with that st_ino),
sorted by path. Two trees with equal output have equal nanosecond mtimes and
the same hard-link structure.

    times.py ROOT
"""
import os
import sys

root = os.fsencode(sys.argv[1])
entries = []
for d, dirs, files in os.walk(root):
    for n in dirs + files:
        p = os.path.join(d, n)
        entries.append((os.path.relpath(p, root), os.lstat(p)))
entries.sort()
first = {}
out = []
for rel, st in entries:
    linked = not os.path.stat.S_ISDIR(st.st_mode) and st.st_nlink > 1
    group = first.setdefault(st.st_ino, rel) if linked else b"-"
    out.append(b"%s %d %d %s" % (rel, st.st_mtime_ns, st.st_nlink if linked else 0, group))
sys.stdout.buffer.write(b"\n".join(out) + b"\n")
