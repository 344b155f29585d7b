#!/bin/sh
# A Debian bookworm root filesystem for end-to-end tests and benchmarks, cached.
#
#   scripts/make-rootfs.sh [--python] DEST_DIR
#
# Runs `debootstrap --variant=minbase bookworm` (plus python3 and python3-numpy with
# --python) once and keeps the result as a tarball under
# ${SIFUSE_CACHE:-/var/tmp/sifuse-cache}; later runs just unpack the tarball into DEST_DIR.
# Needs root (debootstrap makes device nodes and chroots) and, the first time, the Debian
# mirror (${SIFUSE_DEBIAN_MIRROR:-http://deb.debian.org/debian}). Exit status 3 means
# "the mirror could not be reached": callers skip rather than fail.
set -eu

usage() { echo "usage: $0 [--python] DEST_DIR" >&2; exit 2; }
variant=minbase
if [ "${1:-}" = "--python" ]; then variant=python; shift; fi
[ $# -eq 1 ] || usage
dest=$1
cache=${SIFUSE_CACHE:-/var/tmp/sifuse-cache}
mirror=${SIFUSE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
tarball="$cache/bookworm-$variant.tar"

if [ "$(id -u)" -ne 0 ]; then
  echo "$0: debootstrap needs root" >&2
  exit 4
fi
mkdir -p "$cache" "$dest"

if [ ! -s "$tarball" ]; then
  work=$(mktemp -d "$cache/debootstrap.XXXXXX")
  trap 'rm -rf "$work"' EXIT INT TERM
  include=""
  [ "$variant" = python ] && include="--include=python3,python3-numpy"
  # shellcheck disable=SC2086 # $include is one optional word
  # Bounded: a mirror that stalls is as unreachable as one that refuses (the caller's
  # test hook allows 10 minutes; a normal run takes under 2).
  status=0
  timeout "${SIFUSE_DEBOOTSTRAP_TIMEOUT:-420}" debootstrap --variant=minbase $include bookworm "$work/root" "$mirror" >"$work/log" 2>&1 || status=$?
  if [ "$status" -eq 124 ]; then
    echo "$0: debootstrap did not finish within ${SIFUSE_DEBOOTSTRAP_TIMEOUT:-420} s: the Debian mirror $mirror is too slow or stalled" >&2
    exit 3
  fi
  if [ "$status" -ne 0 ]; then
    tail -n 5 "$work/log" >&2
    if grep -qiE 'Failed getting release file|Temporary failure|Could not resolve|Connection refused|unable to fetch|Network is unreachable|timed out' "$work/log"; then
      echo "$0: cannot reach the Debian mirror $mirror" >&2
      exit 3
    fi
    echo "$0: debootstrap failed (log above)" >&2
    exit 1
  fi
  # Keep numeric owners, xattrs (capabilities) and hard links; --sort makes the tarball stable.
  tar --numeric-owner --xattrs --xattrs-include='*' --sort=name -C "$work/root" -cf "$tarball.part" .
  mv "$tarball.part" "$tarball"
fi
tar --numeric-owner --xattrs --xattrs-include='*' -C "$dest" -xf "$tarball"
