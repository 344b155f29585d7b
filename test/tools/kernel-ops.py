#!/usr/bin/env python3
"""Runs the ext3 property harness's path operations with real syscalls (as root).

    kernel-ops.py MOUNTPOINT

chroots into MOUNTPOINT (so absolute symlink targets resolve inside it, as they
do in the model), sets umask 0, then reads one JSON request per line on stdin
and answers one JSON line on stdout:

    {"cmd": "op", "op": {...}}   -> {"outcome": "ok" | "ENOENT" | ... | "SKIPPED"}
    {"cmd": "links"}             -> {"links": [[PATH_BASE64, INO, NLINK], ...]}
    {"cmd": "sync"}              -> {"ok": true}
    {"cmd": "quit"}              -> exits

The op format is test/conformance/ops.ts's Op. Write data arrives as base64 in
"data" (the TypeScript side expands the op's seed). "SKIPPED" marks what the
harness does not do on a real kernel (opening device nodes, fifos and sockets
for writing; chmod of a symlink, which Linux cannot do).
"""

import base64
import ctypes
import errno
import json
import os
import stat
import sys

LIBC = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
RENAME_FLAGS = {"noreplace": 1, "exchange": 2, "whiteout": 4}


def renameat2(old: str, new: str, flag: str) -> None:
    r = LIBC.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), RENAME_FLAGS[flag])
    if r != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


class Stale(Exception):
    """A broken lifetime rule: the outcome "STALE (...)", which the model never gives."""


def race(p: str, data: bytes) -> None:
    """The 'race' op done in order: open, unlink, re-create with data, read the old handle, close."""
    if special(p):
        raise OSError(0, "SKIPPED")
    fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        before = os.pread(fd, st.st_size + 1, 0)
        os.unlink(p)
        new = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            if os.pwrite(new, data, 0) != len(data):
                raise RuntimeError("short write")
        finally:
            os.close(new)
        if os.pread(fd, len(before) + len(data) + 1, 0) != before or os.fstat(fd).st_nlink != st.st_nlink - 1:
            raise Stale("an open unlinked file changed")
    finally:
        os.close(fd)


def special(path: str) -> bool:
    m = os.lstat(path).st_mode
    return not (stat.S_ISREG(m) or stat.S_ISDIR(m) or stat.S_ISLNK(m))


TYPE_BITS = {"f": stat.S_IFREG, "c": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO, "s": stat.S_IFSOCK}


def run(op: dict, data: bytes) -> None:
    kind = op["op"]
    p = op.get("path")
    if kind == "mknod":
        dev = os.makedev(op["major"], op["minor"]) if op["kind"] in ("c", "b") else 0
        os.mknod(p, TYPE_BITS[op["kind"]] | op["mode"], dev)
    elif kind == "mkdir":
        os.mkdir(p, op["mode"])
    elif kind == "symlink":
        os.symlink(op["target"], p)
    elif kind == "link":
        os.link(op["from"], p, follow_symlinks=False)
    elif kind == "unlink":
        os.unlink(p)
    elif kind == "rmdir":
        os.rmdir(p)
    elif kind == "rename":
        if op.get("flags"):
            renameat2(op["from"], p, op["flags"])
        else:
            os.rename(op["from"], p)
    elif kind == "race":
        race(p, data)
    elif kind in ("write", "truncate", "unlinkopen"):
        if special(p):
            raise OSError(0, "SKIPPED")
        fd = os.open(p, os.O_WRONLY | os.O_NOFOLLOW)
        try:
            if kind == "write":
                n = os.pwrite(fd, data, op["offset"])
                if n != len(data):
                    raise RuntimeError(f"short write {n} of {len(data)}")
            elif kind == "truncate":
                os.ftruncate(fd, op["size"])
            else:
                os.unlink(p)
                n = os.pwrite(fd, data, op["offset"])
                if n != len(data):
                    raise RuntimeError(f"short write {n} of {len(data)}")
        finally:
            os.close(fd)
    elif kind == "chmod":
        if stat.S_ISLNK(os.lstat(p).st_mode):
            raise OSError(0, "SKIPPED")
        os.chmod(p, op["mode"])
    elif kind == "chown":
        os.chown(p, op["uid"], op["gid"], follow_symlinks=False)
    elif kind == "utimes":
        os.utime(p, ns=(op["atime"] * 10**9, op["mtime"] * 10**9 + op["mtimeNsec"]), follow_symlinks=False)
    elif kind == "setxattr":
        flags = {0: 0, "create": os.XATTR_CREATE, "replace": os.XATTR_REPLACE}[op["flags"]]
        os.setxattr(p, op["name"], bytes.fromhex(op["value"]), flags, follow_symlinks=False)
    elif kind == "removexattr":
        os.removexattr(p, op["name"], follow_symlinks=False)
    else:
        raise ValueError(f"unknown op {kind}")


def links() -> list:
    out = []
    stack = [b"/"]
    while stack:
        path = stack.pop()
        st = os.lstat(path)
        out.append([base64.b64encode(path).decode(), st.st_ino, st.st_nlink])
        if stat.S_ISDIR(st.st_mode):
            for name in os.listdir(path):
                stack.append((b"" if path == b"/" else path) + b"/" + name)
    return out


def main() -> int:
    os.chroot(sys.argv[1])
    os.chdir("/")
    os.umask(0)
    for line in sys.stdin:
        req = json.loads(line)
        cmd = req["cmd"]
        if cmd == "quit":
            break
        if cmd == "op":
            op = req["op"]
            data = base64.b64decode(req.get("data", ""))
            try:
                run(op, data)
                reply = {"outcome": "ok"}
            except Stale as e:
                reply = {"outcome": f"STALE ({e})"}
            except OSError as e:
                if e.errno == 0:
                    reply = {"outcome": "SKIPPED"}
                else:
                    reply = {"outcome": errno.errorcode.get(e.errno, str(e.errno))}
        elif cmd == "links":
            reply = {"links": links()}
        elif cmd == "sync":
            os.sync()
            reply = {"ok": True}
        else:
            reply = {"error": f"unknown command {cmd}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
