#!/usr/bin/env node
/**
 * A FUSE server that does no work: sifuse's own transport (dist/native/fuse.js,
 * the addon and FuseSession, with serve.ts's session options) answering at
 * once, LOOKUP with ENOENT (not cached: negative timeout 0), GETATTR of the
 * root with fixed attributes (attr timeout 0), everything else ENOSYS. So a
 * request costs only the round trip: the kernel, /dev/fuse, libfuse, N-API
 * and one JS call. bench/fuse-floor.mjs times it. Prints "ready" once the
 * mount answers; unmounts on SIGTERM or when the mount goes.
 *
 *   node bench/lib/null-daemon.mjs MNT
 */
import { join, dirname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const { FuseSession, NEGATIVE_ENTRY, fuseCap } = await import(pathToFileURL(join(root, 'dist', 'native', 'fuse.js')).href);
const mnt = process.argv[2];
const ROOT = { ...NEGATIVE_ENTRY, nodeid: 1, ino: 1, mode: 0o40755, nlink: 2 };
const ENOENT = 2;
const ENOSYS = 38;
let session = null;
const handlers = new Proxy(
  {
    async lookup(r) {
      r.err(ENOENT);
    },
    async getattr(r) {
      r.attr(ROOT);
    },
    init() {},
    forget() {},
    forget_multi() {},
    exit() {
      session?.unmount();
      process.exit(0);
    },
  },
  {
    get(t, op) {
      return t[op] ?? (async (r) => r.err(ENOSYS));
    },
  },
);
session = FuseSession.mount(mnt, handlers, {
  args: ['-o', 'fsname=null,subtype=sifuse-null'],
  entryTimeout: 0,
  attrTimeout: 0,
  negativeTimeout: 0,
  maxWrite: 1 << 20,
  wantSet: fuseCap('ASYNC_READ') | fuseCap('PARALLEL_DIROPS'),
  wantClear: fuseCap('READDIRPLUS_AUTO') | fuseCap('WRITEBACK_CACHE'),
  onBug: (m) => process.stderr.write(`null-daemon: ${m}\n`),
});
process.on('SIGTERM', () => {
  session.unmount();
  process.exit(0);
});
process.stdout.write('ready\n');
