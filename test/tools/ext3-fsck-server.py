#!/usr/bin/env python3
"""Runs `e2fsck -fn` for the ext3 property tests, one image per request.

    ext3-fsck-server.py

Reads one JSON request per line on stdin and answers one JSON line on stdout:

    {"image": PATH}  -> {"code": EXIT_CODE, "output": STDOUT_AND_STDERR}

EOF on stdin ends it. It exists because spawning a process from the large
test process costs far more (fork of its address space) than spawning it
from this small one, and the property tests check thousands of images.
"""

import json
import subprocess
import sys


def main() -> None:
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        r = subprocess.run(
            ["e2fsck", "-fn", req["image"]],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            check=False,
        )
        out = {"code": r.returncode, "output": r.stdout.decode("utf-8", "replace")}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
