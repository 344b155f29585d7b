#!/usr/bin/env python3
"""Generates a deterministic directory tree holding every kind of entry a filesystem
reader must get right (issue 3's fixture).

    make-tree.py [--seed N] [--big-size BYTES] [--many N] [--depth N] [--small] DEST

DEST must not exist or be empty. Prints one JSON object on stdout:
    {"root": DEST, "isRoot": bool, "omitted": [reasons...], "entries": N,
     "big": "/big/sparse" or null}

Contents (paths relative to DEST):
  /files      regular files of sizes around 4 KiB / 128 KiB / 1 MiB block edges, random
              (incompressible) and repetitive (compressible) data, duplicates, all-zero
  /sparse     sparse files: leading, middle and trailing holes, all-hole, 4 KiB holes
  /big        one multi-GiB sparse file (--big-size, default 0 = none): data at the
              start, after 1 GiB, across the 4 GiB boundary and at the end
  /hardlinks  hard-link groups of 2 and 3 names (across directories; also a symlink,
              a fifo, a socket and, as root, a device with several names)
  /symlinks   short, long (> 60 bytes), absolute, dangling, to a directory, odd bytes
  /special    fifos, unix sockets and, as root, char and block devices (incl. 0:0 and
              large major/minor numbers)
  /xattrs     user.* xattrs (empty, binary, large, many, values shared between files),
              names that are UTF-8 beyond ASCII, not UTF-8, or hold '\\', tab, newline,
              and as root security.capability and trusted.* (also on a symlink/device,
              and a trusted.* name that is not UTF-8)
  /names      spaces, tabs, newlines, backslashes, unicode, bytes that are not UTF-8,
              255-byte names, names that sort differently per path than per component
  /many       a directory of --many entries (default 20000)
  /deep       a --depth (default 50) level deep path
  /modes      suid, sgid, sticky, 0000, 7777 on files and directories
  /owners     varied uid/gid, up to 4294967294 (as root; otherwise the caller's ids)

--small keeps every file at most ~140 KB (sparse files 1/16 of their size): the same
kinds of entries in a tree of ~1 MB, for fuzzing base images.

Every mtime is fixed (integer seconds, including 0 and 4294967295); ownership,
modes, xattrs and times are applied in a last pass, deepest paths first, so that
creating children does not disturb a parent's mtime and non-root runs can still
write into directories that end up read-only. As non-root, devices, foreign
owners, security.capability and trusted.* are left out and listed in "omitted".
Everything comes from random.Random(seed): the same arguments give the same tree.
"""

import argparse
import json
import os
import random
import socket
import stat
import sys

IS_ROOT = os.geteuid() == 0
OWNERS = [0, 1, 2, 1000, 1001, 65534, 65535, 100000, 2**31, 4294967294]
# VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE, then permitted/inheritable low and high words:
# cap_net_bind_service (10) and cap_sys_ptrace (19) permitted.
CAPABILITY = (0x02000001).to_bytes(4, "little") + ((1 << 10) | (1 << 19)).to_bytes(4, "little") + bytes(12)


class Tree:
    def __init__(self, dest: bytes, seed: int):
        self.dest = dest
        self.rng = random.Random(seed)
        # path (relative bytes, starting with '/') -> planned attributes; first name of an inode only
        self.plan = {}
        self.omitted = set()
        self.count = 0

    def host(self, rel: bytes) -> bytes:
        return self.dest + rel

    def mtime(self) -> int:
        r = self.rng.random()
        if r < 0.02:
            return 0
        if r < 0.04:
            return 4294967295
        if r < 0.06:
            return self.rng.randrange(2**31, 2**32)
        return self.rng.randrange(946684800, 1767225600)  # 2000 .. 2026

    def owner(self):
        if not IS_ROOT:
            return None
        if self.rng.random() < 0.7:
            return (0, 0)
        return (self.rng.choice(OWNERS), self.rng.choice(OWNERS))

    def note(self, rel: bytes, mode=None, owner=None, xattrs=None, mtime=None):
        """Records attributes to apply in the final pass (unset ones get defaults)."""
        self.count += 1
        self.plan[rel] = {
            "mode": mode,
            "owner": owner if owner is not None else self.owner(),
            "xattrs": xattrs or [],
            "mtime": mtime if mtime is not None else self.mtime(),
        }

    # -- creators --------------------------------------------------------------------

    def mkdir(self, rel: bytes, mode=0o755, **kw):
        os.mkdir(self.host(rel), 0o700)
        self.note(rel, mode=mode, **kw)

    def file(self, rel: bytes, data: bytes = b"", mode=0o644, **kw):
        with open(self.host(rel), "wb") as f:
            f.write(data)
        self.note(rel, mode=mode, **kw)

    def sparse(self, rel: bytes, size: int, extents, mode=0o644, **kw):
        """A file of `size` bytes with data only at (offset, bytes) extents."""
        fd = os.open(self.host(rel), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            for offset, data in extents:
                os.pwrite(fd, data, offset)
            os.ftruncate(fd, size)
        finally:
            os.close(fd)
        self.note(rel, mode=mode, **kw)

    def symlink(self, rel: bytes, target: bytes, **kw):
        os.symlink(target, self.host(rel))
        self.note(rel, **kw)

    def fifo(self, rel: bytes, mode=0o644, **kw):
        os.mkfifo(self.host(rel), 0o600)
        self.note(rel, mode=mode, **kw)

    def sock(self, rel: bytes, mode=0o755, **kw):
        # bind() paths are limited to 108 bytes: bind a short name from inside the directory.
        directory, name = os.path.split(self.host(rel))
        cwd = os.getcwd()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            os.chdir(directory)
            s.bind(name)
        finally:
            os.chdir(cwd)
            s.close()
        self.note(rel, mode=mode, **kw)

    def device(self, rel: bytes, kind: str, major: int, minor: int, mode=0o660, **kw):
        if not IS_ROOT:
            self.omitted.add("char and block devices (mknod needs root)")
            return False
        bits = stat.S_IFCHR if kind == "c" else stat.S_IFBLK
        os.mknod(self.host(rel), bits | 0o600, os.makedev(major, minor))
        self.note(rel, mode=mode, **kw)
        return True

    def link(self, existing: bytes, rel: bytes):
        """Another name for an existing inode; its attributes come from the first name."""
        os.link(self.host(existing), self.host(rel), follow_symlinks=False)
        self.count += 1

    def root_xattrs(self, pairs):
        """Privileged xattrs (security.*, trusted.*) only as root."""
        if IS_ROOT:
            return pairs
        self.omitted.add("security.capability and trusted.* xattrs (need root)")
        return []

    # -- final pass ------------------------------------------------------------------

    def apply(self):
        for rel in sorted(self.plan, key=lambda p: (-p.count(b"/"), p)):
            attrs = self.plan[rel]
            path = self.host(rel)
            st = os.lstat(path)
            is_link = stat.S_ISLNK(st.st_mode)
            if attrs["owner"] is not None:
                os.lchown(path, attrs["owner"][0], attrs["owner"][1])
            # After chown (which clears security.capability), before chmod (non-root
            # needs write permission to set user.* xattrs).
            for name, value in attrs["xattrs"]:
                os.setxattr(path, name, value, follow_symlinks=False)
            if attrs["mode"] is not None and not is_link:
                mode = attrs["mode"]
                if not IS_ROOT:
                    # Keep what the packing tools must read readable to their (non-root) caller.
                    mode |= 0o700 if stat.S_ISDIR(st.st_mode) else 0o400
                os.chmod(path, mode)
            os.utime(path, ns=(attrs["mtime"] * 10**9, attrs["mtime"] * 10**9), follow_symlinks=False)


def rand(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(n)


def text(rng: random.Random, n: int) -> bytes:
    words = [b"squash", b"overlay", b"sif", b"journal", b"inode", b"fragment", b"block", b"\n"]
    out = bytearray()
    while len(out) < n:
        out += rng.choice(words) + b" "
    return bytes(out[:n])


def build(t: Tree, big_size: int, many: int, depth: int, small: bool):
    rng = t.rng
    cap = 140000 if small else 1 << 62
    mb = 65536 if small else 1048576
    # The root's attributes too: a mode, an owner and a user xattr.
    t.note(b"", mode=0o755, owner=(0, 0) if IS_ROOT else None, xattrs=[("user.root-note", b"top")])

    # /files: sizes around the 4 KiB, 128 KiB and 1 MiB block edges.
    t.mkdir(b"/files")
    sizes = [0, 1, 2, 100, 4095, 4096, 4097, 8192, 65536, 131071, 131072, 131073,
             262149, 1048576, 1048577]
    for size in sizes:
        # Random data does not compress (stored-uncompressed blocks) but is slow for xz: one file
        # above 1 MiB is enough (an uncompressed 1 MiB block with -b 1M).
        if size > cap:
            continue
        if size != 1048576:
            t.file(b"/files/random-%d" % size, rand(rng, size))
        t.file(b"/files/text-%d" % size, text(rng, size))
    # Identical contents (mksquashfs stores duplicates once), all-zero files (sparse blocks).
    dup = rand(rng, min(300000, cap))
    t.file(b"/files/dup-a", dup)
    t.file(b"/files/dup-b", dup)
    t.file(b"/files/dup-small-a", dup[:777])
    t.file(b"/files/dup-small-b", dup[:777])
    t.file(b"/files/zeros-1M", bytes(mb))
    t.file(b"/files/zeros-then-byte", bytes(min(300000, cap)) + b"\x01")
    t.file(b"/files/prefix-of-dup", dup[:131072])

    # /sparse
    t.mkdir(b"/sparse")
    t.sparse(b"/sparse/all-hole", 10 * mb, [])
    t.sparse(b"/sparse/lead-hole", 2 * mb + 5, [(2 * mb, b"tail!")])
    t.sparse(b"/sparse/trail-hole", 3 * mb, [(0, rand(rng, 5000))])
    t.sparse(b"/sparse/middle-hole", 5 * mb + 3,
             [(0, rand(rng, min(200000, mb))), (5 * mb - 30000, rand(rng, 30003))])
    t.sparse(b"/sparse/small-holes", 64 * 4096,
             [(i * 4096, rand(rng, 4096)) for i in range(0, 64, 3)])
    t.sparse(b"/sparse/one-byte-at-end", 700000, [(699999, b"z")])

    # /big: the multi-GiB sparse file, only when asked (it costs seconds per pass).
    big = None
    if big_size > 0:
        t.mkdir(b"/big")
        marks = [(0, rand(rng, 70000)), (min(2**30 + 12345, big_size), rand(rng, 4096)),
                 (min(2**32 - 5000, big_size), rand(rng, 10000)), (big_size - 3, b"end")]
        t.sparse(b"/big/sparse", big_size, [(o, d[: max(0, big_size - o)]) for o, d in marks])
        big = "/big/sparse"

    # /symlinks
    t.mkdir(b"/symlinks")
    t.symlink(b"/symlinks/short", b"../files/text-100")
    t.symlink(b"/symlinks/long", b"../" * 10 + b"a-long-target-name-that-is-certainly-longer-than-sixty-bytes/" * 3)
    t.symlink(b"/symlinks/absolute", b"/etc/passwd")
    t.symlink(b"/symlinks/dangling", b"does/not/exist")
    t.symlink(b"/symlinks/to-dir", b"../files")
    t.symlink(b"/symlinks/self", b"self")
    t.symlink(b"/symlinks/odd-bytes", b"tab\there\\back\nline\xff\xfe")
    t.symlink(b"/symlinks/max-ish", b"x" * 4000)

    # /special
    t.mkdir(b"/special")
    t.fifo(b"/special/fifo")
    t.fifo(b"/special/fifo-0600", mode=0o600)
    t.sock(b"/special/socket")
    t.sock(b"/special/socket-0700", mode=0o700)
    for name, kind, major, minor in [
        (b"null", "c", 1, 3), (b"whiteout-like", "c", 0, 0), (b"tty-big-minor", "c", 136, 300000),
        (b"max", "c", 4095, 1048575), (b"sda", "b", 8, 0), (b"nvme", "b", 259, 65537),
        (b"loop-big", "b", 7, 1048575),
    ]:
        t.device(b"/special/" + name, kind, major, minor)

    # /hardlinks: groups of 2 and 3, within and across directories.
    t.mkdir(b"/hardlinks")
    t.mkdir(b"/hardlinks/sub")
    t.file(b"/hardlinks/pair-a", rand(rng, 5000))
    t.link(b"/hardlinks/pair-a", b"/hardlinks/pair-b")
    t.file(b"/hardlinks/trio-a", text(rng, min(200000, cap)), mode=0o755)
    t.link(b"/hardlinks/trio-a", b"/hardlinks/trio-b")
    t.link(b"/hardlinks/trio-a", b"/hardlinks/sub/trio-c")
    t.file(b"/hardlinks/empty-a", b"")
    t.link(b"/hardlinks/empty-a", b"/hardlinks/sub/empty-b")
    t.file(b"/hardlinks/xattr-a", b"linked with xattrs", xattrs=[("user.linked", b"yes")])
    t.link(b"/hardlinks/xattr-a", b"/hardlinks/xattr-b")
    t.symlink(b"/hardlinks/symlink-a", b"pair-a")
    t.link(b"/hardlinks/symlink-a", b"/hardlinks/symlink-b")
    t.fifo(b"/hardlinks/fifo-a")
    t.link(b"/hardlinks/fifo-a", b"/hardlinks/sub/fifo-b")
    t.sock(b"/hardlinks/sock-a")
    t.link(b"/hardlinks/sock-a", b"/hardlinks/sock-b")
    if t.device(b"/hardlinks/dev-a", "c", 10, 200):
        t.link(b"/hardlinks/dev-a", b"/hardlinks/dev-b")
        t.link(b"/hardlinks/dev-a", b"/hardlinks/sub/dev-c")

    # /xattrs
    shared = rand(rng, 900)
    t.mkdir(b"/xattrs", xattrs=[("user.dir", b"on a directory")])
    t.file(b"/xattrs/simple", b"x", xattrs=[("user.a", b"1")])
    t.file(b"/xattrs/empty-value", b"x", xattrs=[("user.empty", b"")])
    t.file(b"/xattrs/binary", b"x", xattrs=[("user.bin", bytes(range(256)))])
    t.file(b"/xattrs/large", b"x", xattrs=[("user.large", rand(rng, 3000))])
    t.file(b"/xattrs/many", b"x", xattrs=[(f"user.k{i:02d}", text(rng, 20 + i)) for i in range(30)])
    for n in range(4):
        t.file(b"/xattrs/shared-%d" % n, b"s%d" % n, xattrs=[("user.shared", shared), ("user.own", b"%d" % n)])
    t.file(b"/xattrs/capability", b"#!/bin/sh\n", mode=0o755,
           xattrs=[("user.also", b"cap")] + t.root_xattrs([("security.capability", CAPABILITY)]))
    t.file(b"/xattrs/trusted", b"t", xattrs=t.root_xattrs([("trusted.note", b"root only")]))
    t.symlink(b"/xattrs/symlink-with-xattr", b"simple", xattrs=t.root_xattrs([("trusted.on-link", b"l")]))
    t.fifo(b"/xattrs/fifo-with-xattr", xattrs=t.root_xattrs([("trusted.on-fifo", b"p")]))
    t.sock(b"/xattrs/sock-with-xattr", xattrs=t.root_xattrs([("trusted.on-sock", b"s")]))
    t.device(b"/xattrs/chr-with-xattr", "c", 5, 1, xattrs=t.root_xattrs([("trusted.on-chr", b"c")]))
    t.device(b"/xattrs/blk-with-xattr", "b", 7, 3, xattrs=t.root_xattrs([("trusted.on-blk", b"b")]))
    t.mkdir(b"/xattrs/empty-dir-with-xattr", xattrs=[("user.empty-dir", b"e")])
    # Xattr names are bytes: the same attribute must keep its bytes through every engine.
    t.file(b"/xattrs/odd-names", b"o", xattrs=[
        ("user.café", b"utf-8"), ("user.naïve", b"utf-8 again"), ("user.日本語-🙂", b"multibyte"),
        (b"user.\xff\xfe", b"not utf-8"), (b"user.caf\xe9", b"latin-1"), (b"user.\x80", b""),
        (b"user.tab\there", b"t"), (b"user.new\nline", b"n"), (b"user.back\\slash", b"b"),
        (b"user.eq=comma,", b"e"),
    ] + t.root_xattrs([(b"trusted.\xe9t\xe9-\xff", b"root, not utf-8")]))
    t.mkdir(b"/xattrs/odd-names-dir", xattrs=[(b"user.dir-\xc3", b"truncated utf-8")])

    # /names
    t.mkdir(b"/names")
    names = [
        b"with space", b" leading-space", b"trailing-space ", b"tab\there", b"new\nline",
        b"back\\slash", b"\\t-not-a-tab", "ünïcödé-日本語-🙂".encode(), b"high-\xff\xfe-bytes",
        b"\x80", b"\x01control", b"-dash", b".hidden", b"...", b"equals=comma,", b"percent%20",
        b"n" * 255, ("é" * 127).encode() + b"x",
    ]
    for i, name in enumerate(names):
        t.file(b"/names/" + name, b"name %d" % i)
    # '-' (0x2d) and '.' (0x2e) sort before '/' (0x2f): full-path order differs from tree order.
    for d in (b"a", b"a-b", b"a.b", b"a0"):
        t.mkdir(b"/names/" + d)
        t.file(b"/names/" + d + b"/x", d)
    t.mkdir(b"/names/" + b"d" * 255)
    t.file(b"/names/" + b"d" * 255 + b"/" + b"f" * 255, b"deep long names")

    # /many: one large directory (directory index, LDIR inode).
    t.mkdir(b"/many")
    for i in range(many):
        name = b"entry-%06d-" % i + b"x" * rng.randrange(0, 40)
        r = rng.random()
        if r < 0.01:
            t.mkdir(b"/many/" + name)
        elif r < 0.02:
            t.symlink(b"/many/" + name, b"entry-%06d" % rng.randrange(many))
        else:
            t.file(b"/many/" + name, text(rng, rng.randrange(1, 60)) if r < 0.1 else b"")

    # /deep
    path = b"/deep"
    t.mkdir(path)
    for level in range(1, depth + 1):
        path += b"/level-%02d" % level
        t.mkdir(path)
    t.file(path + b"/leaf", b"at the bottom\n")

    # /modes
    t.mkdir(b"/modes")
    for mode in (0o000, 0o400, 0o644, 0o755, 0o777, 0o4755, 0o2755, 0o6755, 0o1644, 0o7777, 0o4000, 0o2000):
        t.file(b"/modes/file-%04o" % mode, b"%o" % mode, mode=mode)
    for mode in (0o1777, 0o2775, 0o700, 0o555, 0o3777, 0o000, 0o7755):
        t.mkdir(b"/modes/dir-%04o" % mode, mode=mode)
        t.file(b"/modes/dir-%04o/inside" % mode, b"inside")

    # /owners
    t.mkdir(b"/owners")
    if IS_ROOT:
        for i, (uid, gid) in enumerate([(u, OWNERS[(j * 3) % len(OWNERS)]) for j, u in enumerate(OWNERS)]):
            t.file(b"/owners/file-%d-%d" % (uid, gid), b"%d" % i, owner=(uid, gid))
            t.symlink(b"/owners/link-%d-%d" % (uid, gid), b"file-%d-%d" % (uid, gid), owner=(gid, uid))
        t.mkdir(b"/owners/dir-4294967294", owner=(4294967294, 4294967294))
    else:
        t.omitted.add("foreign uid/gid (chown needs root)")
        t.file(b"/owners/mine", b"mine")

    t.mkdir(b"/empty-dir")
    return big


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dest")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--big-size", type=int, default=0, help="size of /big/sparse in bytes (0: no /big)")
    parser.add_argument("--many", type=int, default=20000, help="entries in /many")
    parser.add_argument("--depth", type=int, default=50, help="levels under /deep")
    parser.add_argument("--small", action="store_true", help="files of at most ~140 KB (fuzzing base images)")
    args = parser.parse_args()

    dest = os.fsencode(os.path.abspath(args.dest))
    os.makedirs(dest, exist_ok=True)
    if os.listdir(dest):
        print(f"make-tree.py: {args.dest}: not empty", file=sys.stderr)
        return 1
    os.umask(0o022)
    tree = Tree(dest, args.seed)
    big = build(tree, args.big_size, args.many, args.depth, args.small)
    tree.apply()
    json.dump({"root": os.fsdecode(dest), "isRoot": IS_ROOT, "omitted": sorted(tree.omitted),
               "entries": tree.count, "big": big}, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
