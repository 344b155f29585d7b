#!/usr/bin/env python3
"""Writes files DIR/w<N> (content derived from N, 1-200 KiB) forever, fsyncing
each file and then the directory, and prints "N" on stdout after each fsync
returned. Stops at the first error (the mount went away, or the filesystem is
full). A short write (os.write returns what fit, as write(2) does when the
disk fills mid-way) is continued until the whole content is written or the
next write fails: N is printed only for a file written whole.

    fsync_writer.py DIR
"""
import os
import sys

d = sys.argv[1]
n = 0
try:
    while True:
        data = (b"%08d" % n) * (128 * (1 + n % 200))
        fd = os.open(os.path.join(d, "w%d" % n), os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        view = memoryview(data)
        while view:
            k = os.write(fd, view)
            if k == 0:
                raise OSError("write returned 0")
            view = view[k:]
        os.fsync(fd)
        os.close(fd)
        dfd = os.open(d, os.O_RDONLY)
        os.fsync(dfd)
        os.close(dfd)
        print(n, flush=True)
        n += 1
except OSError:
    pass
