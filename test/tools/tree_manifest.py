#!/usr/bin/env python3
"""Manifest of a host directory tree, computed independently of sifuse.

    tree_manifest.py [--path /SUB] [--exclude /P]... [--exclude-xattr PREFIX]... [-o FILE] ROOT

Prints one line per entry under ROOT/SUB (SUB itself included), sorted by the raw
bytes of the full path, in the format of `sifuse manifest` (issue 3):

    PATH TYPE MODE UID GID SIZE MTIME DATA XATTRS        (fields separated by one tab)

  PATH   starts with '/', the root is '/'; '\\', TAB and NEWLINE in names are written
         as '\\\\', '\\t', '\\n'; every other byte is written raw (names need not be UTF-8)
  TYPE   f d l c b p s
  MODE   the 07777 bits as 4 octal digits
  SIZE   bytes for f and l, else '-'
  MTIME  integer seconds (st_mtime rounded down)
  DATA   sha256 hex of the content for f, the target for l (escaped like PATH),
         MAJOR:MINOR for c and b, else '-'
  XATTRS '-' or name=BASE64(value) sorted by the name's raw bytes, joined by ','; names
         are escaped like PATH and otherwise written raw (they need not be UTF-8)

ROOT may be any directory, including a kernel mount point. --path names a
subdirectory (as an absolute path inside ROOT; printed paths stay absolute
paths of the tree, like `sifuse manifest IMAGE PATH`). --exclude drops that
path and everything below it (repeatable). --exclude-xattr drops xattrs whose
name starts with PREFIX (e.g. 'system.posix_acl_' on a host where ACLs exist).

Only the standard library is used. Sparse files are hashed without reading
their holes: SEEK_DATA/SEEK_HOLE find the data, holes are fed as zeros.
"""

import argparse
import base64
import errno
import hashlib
import os
import stat
import sys

ZEROS = memoryview(bytes(1 << 20))
CHUNK = 1 << 20


def escape(name: bytes) -> bytes:
    return name.replace(b"\\", b"\\\\").replace(b"\t", b"\\t").replace(b"\n", b"\\n")


def feed_zeros(h, n: int) -> None:
    while n > 0:
        k = min(n, len(ZEROS))
        h.update(ZEROS[:k])
        n -= k


def feed_data(h, fd: int, start: int, end: int) -> None:
    pos = start
    while pos < end:
        chunk = os.pread(fd, min(CHUNK, end - pos), pos)
        if not chunk:
            raise OSError(errno.EIO, "file shrank while hashing")
        h.update(chunk)
        pos += len(chunk)


def sha256_of(path: bytes, size: int) -> str:
    """sha256 of a regular file of `size` bytes, skipping holes."""
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        pos = 0
        while pos < size:
            try:
                data = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:  # only a hole remains
                    data = size
                elif e.errno == errno.EINVAL:  # the filesystem has no SEEK_DATA
                    feed_data(h, fd, pos, size)
                    break
                else:
                    raise
            data = min(data, size)
            feed_zeros(h, data - pos)
            if data >= size:
                break
            hole = min(os.lseek(fd, data, os.SEEK_HOLE), size)
            feed_data(h, fd, data, hole)
            pos = hole
    finally:
        os.close(fd)
    return h.hexdigest()


def type_letter(mode: int) -> str:
    for test, letter in (
        (stat.S_ISREG, "f"),
        (stat.S_ISDIR, "d"),
        (stat.S_ISLNK, "l"),
        (stat.S_ISCHR, "c"),
        (stat.S_ISBLK, "b"),
        (stat.S_ISFIFO, "p"),
        (stat.S_ISSOCK, "s"),
    ):
        if test(mode):
            return letter
    raise ValueError(f"unknown file type in mode {mode:o}")


def xattr_field(path: bytes, exclude_prefixes) -> bytes:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return b"-"
        raise
    pairs = []
    for name in names:
        # listxattr decodes names with the filesystem encoding and surrogateescape:
        # fsencode gives back exactly the bytes the kernel returned.
        raw = os.fsencode(name)
        if any(raw.startswith(p) for p in exclude_prefixes):
            continue
        value = os.getxattr(path, raw, follow_symlinks=False)
        pairs.append((raw, escape(raw) + b"=" + base64.b64encode(value)))
    if not pairs:
        return b"-"
    pairs.sort(key=lambda p: p[0])
    return b",".join(p[1] for p in pairs)


def line_for(host_path: bytes, shown: bytes, exclude_xattrs) -> bytes:
    st = os.lstat(host_path)
    t = type_letter(st.st_mode)
    size = b"-"
    data = b"-"
    if t == "f":
        size = str(st.st_size).encode()
        data = sha256_of(host_path, st.st_size).encode()
    elif t == "l":
        target = os.readlink(host_path)
        size = str(len(target)).encode()
        data = escape(target)
    elif t in ("c", "b"):
        data = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}".encode()
    fields = [
        escape(shown),
        t.encode(),
        f"{stat.S_IMODE(st.st_mode):04o}".encode(),
        str(st.st_uid).encode(),
        str(st.st_gid).encode(),
        size,
        str(st.st_mtime_ns // 1_000_000_000).encode(),
        data,
        xattr_field(host_path, exclude_xattrs),
    ]
    return b"\t".join(fields)


def walk(root: bytes, start: bytes, excluded: set):
    """(host path, shown path) for start and every entry below it, in no particular order.

    Directories are listed with scandir and never followed through symlinks, so a
    tree with symlink loops terminates; each directory is entered once per name.
    """
    stack = [start]
    while stack:
        shown = stack.pop()
        if shown in excluded:
            continue
        host = root + (b"" if shown == b"/" else shown)
        yield host, shown
        if stat.S_ISDIR(os.lstat(host).st_mode):
            with os.scandir(host) as it:
                for entry in it:
                    child = (b"" if shown == b"/" else shown) + b"/" + entry.name
                    stack.append(child)


def normalise(path: str) -> bytes:
    raw = os.fsencode(path)
    if not raw.startswith(b"/"):
        raw = b"/" + raw
    while len(raw) > 1 and raw.endswith(b"/"):
        raw = raw[:-1]
    return raw


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="directory whose tree is described (may be a mount point)")
    parser.add_argument("--path", default="/", help="subdirectory inside ROOT to start from (default /)")
    parser.add_argument("--exclude", action="append", default=[], help="drop this path and all below it")
    parser.add_argument("--exclude-xattr", action="append", default=[], help="drop xattrs with this name prefix")
    parser.add_argument("-o", "--output", help="write here instead of stdout")
    args = parser.parse_args()

    root = os.fsencode(os.path.abspath(args.root))
    if root == b"/":
        root = b""
    start = normalise(args.path)
    excluded = {normalise(p) for p in args.exclude}
    exclude_xattrs = [os.fsencode(p) for p in args.exclude_xattr]
    entries = sorted(walk(root, start, excluded), key=lambda e: e[1])
    out = open(args.output, "wb") if args.output else sys.stdout.buffer
    try:
        for host, shown in entries:
            out.write(line_for(host, shown, exclude_xattrs) + b"\n")
    finally:
        if args.output:
            out.close()
        else:
            out.flush()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except OSError as e:
        name = os.fsdecode(e.filename) if isinstance(e.filename, bytes) else e.filename
        print(f"tree_manifest.py: {name}: {e.strerror}", file=sys.stderr)
        sys.exit(1)
