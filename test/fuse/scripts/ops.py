#!/usr/bin/env python3
"""File operations run inside a mount by test/fuse (in a child process, never
in the process serving the mount). Each subcommand exits non-zero with a
message on the first wrong result.

    ops.py mmap DIR             mmap writes then reads, msync, a second mapping sees them
    ops.py unlink-open DIR      read and write a file after unlinking its only name
    ops.py concurrent DIR N     N writer processes and N reader processes on shared files
    ops.py rename-storm DIR N   N processes renaming files over each other; the set of contents survives
    ops.py killpriv DIR         writes clear set-id bits (writer without CAP_FSETID) and security.capability (root)
    ops.py append DIR           O_APPEND from two descriptors, truncate then write, utime before close
"""
import hashlib
import mmap
import os
import stat
import sys
import time


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


# A valid VFS_CAP_REVISION_2 value: cap_net_raw (bit 13) permitted, effective.
CAP_NET_RAW = (0x02000001).to_bytes(4, "little") + (1 << 13).to_bytes(4, "little") + bytes(12)
CAP_FSETID = 4


def without_fsetid(fn):
    """Runs fn() in a child that has dropped CAP_FSETID from its effective set
    (capset(2) through ctypes), as an unprivileged writer; fails if it fails."""
    pid = os.fork()
    if pid == 0:
        try:
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
            data = (ctypes.c_uint32 * 6)()  # two of {effective, permitted, inheritable}
            if libc.capget(header, data) != 0:
                fail(f"capget: errno {ctypes.get_errno()}")
            data[0] &= ~(1 << CAP_FSETID)
            if libc.capset(header, data) != 0:
                fail(f"capset: errno {ctypes.get_errno()}")
            fn()
        except SystemExit as e:
            sys.stderr.write(f"{e}\n")
            os._exit(1)
        except BaseException as e:  # noqa: BLE001 - report anything the child hits
            sys.stderr.write(f"ops.py: without CAP_FSETID: {e!r}\n")
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        fail("a write without CAP_FSETID failed")


def made(d, name, mode):
    p = os.path.join(d, name)
    with open(p, "wb") as f:
        f.write(b"start\n")
    os.chmod(p, mode)
    return p


def perm(p):
    return os.stat(p).st_mode & 0o7777


def has_cap(p):
    try:
        os.getxattr(p, "security.capability")
        return True
    except OSError:
        return False


def cmd_killpriv(d):
    if os.getuid() != 0:
        fail("killpriv needs root (it drops CAP_FSETID for some writes)")
    # Written by a process without CAP_FSETID: S_ISUID goes, S_ISGID with group execute goes.
    a = made(d, "a", 0o6755)
    fd = os.open(a, os.O_WRONLY | os.O_APPEND)

    def write_a():
        os.write(fd, b"more\n")
        if os.fstat(fd).st_mode & 0o7777 != 0o755:
            fail(f"a: fstat right after the write shows {os.fstat(fd).st_mode & 0o7777:o}")
    without_fsetid(write_a)
    os.close(fd)
    if perm(a) != 0o755:
        fail(f"a: written without CAP_FSETID, mode is {perm(a):o}, not 755")
    # S_ISGID without group execute is mandatory locking, not set-gid: it stays.
    g = made(d, "g", 0o2744)
    fd = os.open(g, os.O_WRONLY | os.O_APPEND)
    without_fsetid(lambda: os.write(fd, b"x"))
    os.close(fd)
    if perm(g) != 0o2744:
        fail(f"g: mode is {perm(g):o}, not 2744")
    # Root (CAP_FSETID) keeps the bits.
    r = made(d, "r", 0o4755)
    with open(r, "ab") as f:
        f.write(b"root\n")
    if perm(r) != 0o4755:
        fail(f"r: written by root, mode is {perm(r):o}, not 4755")
    # The bit set on an already open write-only descriptor, then a write.
    c = made(d, "c", 0o755)
    fd = os.open(c, os.O_WRONLY)

    def write_c():
        os.fchmod(fd, 0o4755)
        os.pwrite(fd, b"late", 2)
        if os.fstat(fd).st_mode & 0o7777 != 0o755:
            fail(f"c: fstat right after the write shows {os.fstat(fd).st_mode & 0o7777:o}")
    without_fsetid(write_c)
    os.close(fd)
    if perm(c) != 0o755:
        fail(f"c: set-uid after open, then written without CAP_FSETID: mode is {perm(c):o}")
    # chown clears S_ISUID even for root, S_ISGID only with group execute.
    h = made(d, "h", 0o6755)
    os.chown(h, 0, 0)
    if perm(h) != 0o755:
        fail(f"h: chown of a 6755 file left {perm(h):o}")
    h2 = made(d, "h2", 0o2744)
    os.chown(h2, 0, 0)
    if perm(h2) != 0o2744:
        fail(f"h2: chown of a 2744 file left {perm(h2):o}")
    # truncate: the bits go without CAP_FSETID, stay with it; also for open(O_TRUNC).
    t = made(d, "t", 0o4755)
    fd = os.open(t, os.O_WRONLY)
    without_fsetid(lambda: os.ftruncate(fd, 2))
    os.close(fd)
    if perm(t) != 0o755:
        fail(f"t: truncated without CAP_FSETID, mode is {perm(t):o}")
    t2 = made(d, "t2", 0o4755)
    os.truncate(t2, 2)
    if perm(t2) != 0o4755:
        fail(f"t2: truncated by root, mode is {perm(t2):o}")
    o = made(d, "o", 0o4755)

    def open_trunc():
        os.close(os.open(o, os.O_WRONLY | os.O_TRUNC))
        if perm(o) != 0o755:
            fail(f"o: open(O_TRUNC) without CAP_FSETID, stat right after shows {perm(o):o}")
    without_fsetid(open_trunc)
    if os.stat(o).st_size != 0:
        fail("o: open(O_TRUNC) did not truncate")
    # A file made set-uid where a plain file was just removed (its inode number may be reused).
    for i in range(3):
        q = os.path.join(d, f"q{i}")
        fd = os.open(q, os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, b"plain")
        os.close(fd)
        os.unlink(q)
        fd = os.open(q, os.O_WRONLY | os.O_CREAT, 0o4755)
        without_fsetid(lambda: os.write(fd, b"x"))
        os.close(fd)
        if perm(q) != 0o755:
            fail(f"{q}: created 4755 after a plain file went, written without CAP_FSETID: mode is {perm(q):o}")
    # security.capability goes on any write, root's too.
    k = made(d, "k", 0o755)
    os.setxattr(k, "security.capability", CAP_NET_RAW)
    if not has_cap(k):
        fail("k: security.capability was not stored")
    with open(k, "ab") as f:
        f.write(b"x")
    if has_cap(k):
        fail("k: security.capability survived a write")
    # ... also when it appears on an already open write-only descriptor.
    e = made(d, "e", 0o755)
    fd = os.open(e, os.O_WRONLY)
    os.setxattr(e, "security.capability", CAP_NET_RAW)
    os.write(fd, b"y")
    os.close(fd)
    if has_cap(e):
        fail("e: security.capability survived a write through a descriptor opened before it was set")
    with open(e, "rb") as f:
        if f.read() != b"ytart\n":
            fail("e: wrong content")
    # A capability set after a chmod (the file stays without set-id bits) is seen, and a chown drops it.
    s = made(d, "s", 0o644)
    os.chmod(s, 0o755)
    if has_cap(s):
        fail("s: a capability before any was set")
    os.setxattr(s, "security.capability", CAP_NET_RAW)
    if not has_cap(s):
        fail("s: security.capability set after a chmod is not seen")
    os.chown(s, 0, 0)
    if has_cap(s):
        fail("s: security.capability survived a chown")


def cmd_append(d):
    p = os.path.join(d, "ap")
    a = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    b = os.open(p, os.O_WRONLY | os.O_APPEND)
    want = b""
    for i in range(200):
        chunk = (b"a%d," % i) if i % 3 else (b"B%d;" % i) * 700
        os.write(a if i % 2 else b, chunk)
        want += chunk
    os.close(a)
    os.close(b)
    with open(p, "rb") as f:
        if f.read() != want:
            fail("two O_APPEND descriptors: the file is not the writes in order")
    if os.stat(p).st_size != len(want):
        fail("two O_APPEND descriptors: wrong size")
    # Truncate, then write past the end through the same write-only descriptor.
    t = os.path.join(d, "tw")
    fd = os.open(t, os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, bytes(range(256)) * 40)
    os.ftruncate(fd, 3000)
    if os.stat(t).st_size != 3000 or os.fstat(fd).st_size != 3000:
        fail(f"after ftruncate: size {os.stat(t).st_size}")
    os.pwrite(fd, b"xyz", 5000)
    if os.stat(t).st_size != 5003:
        fail(f"after a write past the end: size {os.stat(t).st_size}")
    if os.lseek(fd, 0, os.SEEK_END) != 5003:
        fail("SEEK_END does not see the new size")
    os.close(fd)
    with open(t, "rb") as f:
        if f.read() != (bytes(range(256)) * 40)[:3000] + bytes(2000) + b"xyz":
            fail("truncate then write: wrong content")
    # A time set between the writes and close stays.
    u = os.path.join(d, "ut")
    fd = os.open(u, os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"data" * 5000)
    os.utime(fd, ns=(1_000_000_123, 2_000_000_456))
    os.close(fd)
    st = os.stat(u)
    if (st.st_atime_ns, st.st_mtime_ns, st.st_size) != (1_000_000_123, 2_000_000_456, 20000):
        fail(f"utime before close: {st.st_atime_ns} {st.st_mtime_ns} {st.st_size}")


def cmd_killpriv_reuse(d):
    """A plain file (created, so known to carry no set-id bit) is removed and
    its inode number reused by a set-uid file made with mknod(2): a write to
    that one by a writer without CAP_FSETID must still clear S_ISUID."""
    if os.getuid() != 0:
        fail("killpriv-reuse needs root (it drops CAP_FSETID for the write)")
    for attempt in range(40):
        p = os.path.join(d, "plain%d" % attempt)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, b"plain\n")
        os.close(fd)
        ino = os.stat(p).st_ino
        os.unlink(p)
        time.sleep(0.2)  # the kernel's FORGET frees the number
        q = os.path.join(d, "suid%d" % attempt)
        os.mknod(q, stat.S_IFREG | 0o4755)  # no chmod: a SETATTR of the mode would reset what the server knows
        if perm(q) != 0o4755:
            fail(f"{q}: mknod made mode {perm(q):o}, not 4755")
        if os.stat(q).st_ino != ino:
            os.unlink(q)
            continue
        fd = os.open(q, os.O_WRONLY)
        without_fsetid(lambda: os.write(fd, b"x"))
        os.close(fd)
        if perm(q) != 0o755:
            fail(f"{q}: reused inode {ino}, written without CAP_FSETID, mode is {perm(q):o}, not 755")
        return
    fail("the inode number of a removed file was never reused (40 tries)")


def cmd_direct_coherence(d):
    """Readers that cached a file (read(2) and a shared mapping, opened before)
    see what a write-only (direct_io) descriptor writes, and so do stat and a
    reader opened after."""
    p = os.path.join(d, "dc")
    with open(p, "wb") as f:
        f.write(b"A" * 8192)
    r = os.open(p, os.O_RDONLY)
    if os.pread(r, 8192, 0) != b"A" * 8192:
        fail("dc: first read")
    m = mmap.mmap(r, 8192, mmap.MAP_SHARED, mmap.PROT_READ)
    if m[:8192] != b"A" * 8192:
        fail("dc: first mapped read")
    mtime0 = os.fstat(r).st_mtime_ns
    time.sleep(0.02)
    w = os.open(p, os.O_WRONLY)
    os.pwrite(w, b"B" * 4096, 0)
    os.pwrite(w, b"C" * 4096, 8192)
    wa = os.open(p, os.O_WRONLY | os.O_APPEND)
    os.write(wa, b"D" * 100)
    os.close(wa)
    want = b"B" * 4096 + b"A" * 4096 + b"C" * 4096 + b"D" * 100
    got = os.pread(r, 20000, 0)
    if got != want:
        fail(f"dc: a reader opened before the write reads {got[:8]!r}..{got[-8:]!r} ({len(got)} bytes)")
    if m[:4096] != b"B" * 4096:
        fail("dc: a shared mapping made before the write still shows the old bytes")
    st = os.stat(p)
    if st.st_size != len(want) or st.st_mtime_ns == mtime0:
        fail(f"dc: stat after direct writes: size {st.st_size}, mtime changed {st.st_mtime_ns != mtime0}")
    os.close(w)
    with open(p, "rb") as f:
        if f.read() != want:
            fail("dc: a reader opened after the write")
    m.close()
    os.close(r)


def main():
    cmd, *args = sys.argv[1:]
    {"mmap": cmd_mmap, "unlink-open": cmd_unlink_open, "concurrent": cmd_concurrent,
     "rename-storm": cmd_rename_storm, "killpriv": cmd_killpriv, "killpriv-reuse": cmd_killpriv_reuse, "direct-coherence": cmd_direct_coherence, "append": cmd_append}[cmd](*args)


main()
