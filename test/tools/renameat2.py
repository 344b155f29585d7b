#!/usr/bin/env python3
"""renameat2(2) for tests (Debian 12's mv has no --exchange): one call per
line of stdin, `OLD\\tNEW\\tFLAGS` (paths relative to the cwd; FLAGS a sum of
RENAME_NOREPLACE=1, RENAME_EXCHANGE=2, RENAME_WHITEOUT=4), one result per
line on stdout: `ok` or the errno name. x86_64 syscall number 316."""
import ctypes
import errno
import os
import sys

SYS_RENAMEAT2 = {'x86_64': 316, 'aarch64': 276}[os.uname().machine]
AT_FDCWD = -100
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

for line in sys.stdin:
    old, new, flags = line.rstrip('\n').split('\t')
    r = libc.syscall(SYS_RENAMEAT2, AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), int(flags))
    print('ok' if r == 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno())), flush=True)
