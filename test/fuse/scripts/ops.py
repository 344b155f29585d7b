#!/usr/bin/env python3
"""File operations run inside a mount by test/fuse (in a child process, never
in the process serving the mount). Each subcommand exits non-zero with a
message on the first wrong result.

    ops.py mmap DIR             mmap writes then reads, msync, a second mapping sees them
    ops.py unlink-open DIR      read and write a file after unlinking its only name
    ops.py concurrent DIR N     N writer processes and N reader processes on shared files
    ops.py rename-storm DIR N   N processes renaming files over each other; the set of contents survives
"""
import hashlib
import mmap
import os
import sys


def fail(msg):
    sys.exit(f"ops.py: {msg}")


def cmd_mmap(d):
    p = os.path.join(d, "mapped")
    size = 3 * 1024 * 1024 + 123
    with open(p, "wb") as f:
        f.truncate(size)
    with open(p, "r+b") as f:
        m = mmap.mmap(f.fileno(), size)
        for i in range(0, size, 4096):
            m[i:i + 8] = i.to_bytes(8, "little")
        m.flush()
        m.close()
    with open(p, "rb") as f:
        m = mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ)
        for i in range(0, size, 4096):
            if m[i:i + 8] != i.to_bytes(8, "little"):
                fail(f"mmap read at {i}: {m[i:i + 8]!r}")
        m.close()
        f.seek(8192)
        if f.read(8) != (8192).to_bytes(8, "little"):
            fail("read() does not see the mmap write")
    # write() then mmap read
    with open(p, "r+b") as f:
        f.seek(4096 * 7 + 1)
        f.write(b"written")
        f.flush()
        m = mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ)
        if m[4096 * 7 + 1:4096 * 7 + 8] != b"written":
            fail("mmap does not see write()")
        m.close()


def cmd_unlink_open(d):
    p = os.path.join(d, "doomed")
    fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
    os.write(fd, b"before unlink\n")
    os.unlink(p)
    if os.path.exists(p):
        fail("name still there after unlink")
    os.write(fd, b"after unlink\n")
    os.lseek(fd, 0, 0)
    got = os.read(fd, 100)
    if got != b"before unlink\nafter unlink\n":
        fail(f"open unlinked file reads {got!r}")
    st = os.fstat(fd)
    if st.st_nlink != 0:
        fail(f"nlink {st.st_nlink} after unlink")
    os.close(fd)


def cmd_concurrent(d, n):
    n = int(n)
    size = 1 << 20
    pids = []
    for w in range(n):
        pid = os.fork()
        if pid == 0:
            data = bytes([w + 1]) * size
            p = os.path.join(d, f"c{w}")
            for rnd in range(5):
                with open(p + ".tmp", "wb") as f:
                    f.write(data)
                os.rename(p + ".tmp", p)
            os._exit(0)
        pids.append(pid)
    for r in range(n):
        pid = os.fork()
        if pid == 0:
            for rnd in range(20):
                for w in range(n):
                    try:
                        with open(os.path.join(d, f"c{w}"), "rb") as f:
                            b = f.read()
                    except FileNotFoundError:
                        continue
                    if len(b) != size or b.count(bytes([w + 1])) != size:
                        os._exit(3)
            os._exit(0)
        pids.append(pid)
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        if status != 0:
            fail(f"a concurrent worker failed (status {status})")
    for w in range(n):
        with open(os.path.join(d, f"c{w}"), "rb") as f:
            if f.read() != bytes([w + 1]) * size:
                fail(f"c{w} has the wrong content")


def cmd_rename_storm(d, n):
    n = int(n)
    names = [os.path.join(d, f"r{i}") for i in range(8)]
    for i, p in enumerate(names):
        with open(p, "wb") as f:
            f.write(b"%d" % i)
    pids = []
    for w in range(n):
        pid = os.fork()
        if pid == 0:
            import random
            rng = random.Random(w)
            for _ in range(300):
                a, b = rng.sample(names, 2)
                try:
                    os.link(a, b + f".l{w}")
                    os.rename(b + f".l{w}", a)  # same inode: a no-op rename
                except FileNotFoundError:
                    pass
                except FileExistsError:
                    pass
                try:
                    os.rename(a, os.path.join(d, f"tmp{w}"))
                    os.rename(os.path.join(d, f"tmp{w}"), a)
                except FileNotFoundError:
                    pass
            os._exit(0)
        pids.append(pid)
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        if status != 0:
            fail(f"a rename worker failed (status {status})")
    left = sorted(x for x in os.listdir(d) if x.startswith(("r", "tmp")))
    contents = sorted(open(os.path.join(d, x), "rb").read() for x in left if not ".l" in x)
    if contents != sorted(b"%d" % i for i in range(8)):
        fail(f"after the storm: {left} hold {contents}")


def main():
    cmd, *args = sys.argv[1:]
    {"mmap": cmd_mmap, "unlink-open": cmd_unlink_open, "concurrent": cmd_concurrent,
     "rename-storm": cmd_rename_storm}[cmd](*args)


main()
