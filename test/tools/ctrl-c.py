#!/usr/bin/env python3
"""Ctrl-C in an interactive shell, through a pseudo-terminal.

    ctrl-c.py CMD [ARGS...]

Runs CMD (an interactive shell, e.g. `sifuse shell IMG`) on a new pty,
starts `sleep 30` in it, types Ctrl-C, then asks the shell for a marker it
can only print if it survived, then `exit 4`. Prints one JSON line:
{"alive": bool, "status": exit status of CMD, "output": what the pty showed}.
The markers are computed by the shell ($((...))), so the terminal's echo of
the typed line never matches them.
"""
import json
import os
import pty
import select
import sys
import time

pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])

out = b''


def read_until(token: bytes, timeout: float = 60) -> bool:
    global out
    end = time.time() + timeout
    while token not in out and time.time() < end:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    return token in out


os.write(fd, b'echo READY$((1+1))\n')
started = read_until(b'READY2')
os.write(fd, b'echo SLEEPING$((2+2)); sleep 30\n')
read_until(b'SLEEPING4')
time.sleep(0.5)
os.write(fd, b'\x03')
os.write(fd, b'echo ALIVE$((100+1))\n')
alive = started and read_until(b'ALIVE101')
os.write(fd, b'exit 4\n')
read_until(b'\0', 10)
_, status = os.waitpid(pid, 0)
print(json.dumps({'alive': alive, 'status': os.waitstatus_to_exitcode(status), 'output': out.decode('utf8', 'replace')}))
