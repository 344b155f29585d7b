#!/usr/bin/env python3
"""Every xattr under a directory tree, as the kernel returns them, in raw bytes.

    xattr_dump.py [--exclude /P]... ROOT

Prints one JSON object: {PATH_HEX: {NAME_HEX: VALUE_HEX, ...}, ...} for each
entry under ROOT (ROOT itself as "/") that has at least one xattr. PATH is the
'/'-rooted path inside ROOT; paths, names and values are hex of their bytes, so
nothing is decoded (names need not be UTF-8). Symlinks are not followed.
--exclude drops a path and everything below it (e.g. /lost+found).
"""

import argparse
import json
import os
import stat
import sys


def xattrs_of(path: bytes) -> dict:
    out = {}
    for name in os.listxattr(path, follow_symlinks=False):
        # listxattr decodes with surrogateescape: fsencode gives the kernel's bytes back.
        raw = os.fsencode(name)
        out[raw.hex()] = os.getxattr(path, raw, follow_symlinks=False).hex()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root")
    parser.add_argument("--exclude", action="append", default=[])
    args = parser.parse_args()
    root = os.fsencode(os.path.abspath(args.root))
    excluded = {os.fsencode(p) for p in args.exclude}
    result = {}
    stack = [b"/"]
    while stack:
        rel = stack.pop()
        if rel in excluded:
            continue
        host = root if rel == b"/" else root + rel
        x = xattrs_of(host)
        if x:
            result[rel.hex()] = x
        if stat.S_ISDIR(os.lstat(host).st_mode):
            for name in os.listdir(host):
                stack.append((b"" if rel == b"/" else rel) + b"/" + name)
    json.dump(result, sys.stdout, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
