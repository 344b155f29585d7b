#!/bin/sh
# Debian 12 packages sifuse's tests and benchmarks use. Run as root (or via sudo).
#   fuse3 libfuse3-dev pkg-config build-essential libdeflate-dev libzstd-dev
#                      fusermount3, and what node-gyp needs at `npm ci` to build
#                      the project's own N-API addons (src/native, binding.gyp;
#                      sifuse_block links libdeflate and libzstd)
#   libfuse2           fuse2fs (a benchmark peer) links it
#   squashfs-tools     mksquashfs/unsquashfs: test fixtures and `sifuse build`
#   siftool            the SIF reference tool the tests compare against
#   e2fsprogs fuse2fs  mkfs.ext3/e2fsck/debugfs/resize2fs oracles; fuse2fs is a benchmark peer
#   xfsprogs           xfs_io -x -c shutdown: leaves ext3 journals needing recovery
#   squashfuse fuse-overlayfs bubblewrap  peers and the container runtime
#   debootstrap        a real root filesystem for end-to-end tests
#   attr acl           setfattr/getfattr for fixtures with xattrs
#   podman runc        test/podman: podman with sifuse as its overlay mount_program
#   fio                the benchmark's rand-read workload (npm run bench)
set -eu
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends \
  fuse3 libfuse3-dev pkg-config build-essential libdeflate-dev libzstd-dev libfuse2 squashfs-tools siftool e2fsprogs fuse2fs xfsprogs \
  squashfuse fuse-overlayfs bubblewrap debootstrap attr acl podman runc xz-utils python3 fio ca-certificates
# Unprivileged mounts need /dev/fuse readable and writable by everyone (Debian's default is 0666).
[ -e /dev/fuse ] && $SUDO chmod 666 /dev/fuse || true
