/**
 * The FUSE session's request handles (src/native/fuse.c, the in-flight
 * table): a handle is answered once, by whatever path; a stale or made-up
 * one is refused; a reply after unmount is dropped. An in-process session
 * with a scripted handler, driven by child processes (never a synchronous
 * call on the mount from this process).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { execa } from 'execa';
import { FuseSession, type FuseHandlers, type FuseRequest } from '../../src/native/fuse.js';
import { loadAddon } from '../../src/native/load.js';
import { fuseAvailable, isMounted } from './helpers.js';
import { plainStat } from '../tools/stat.js';

const S_IFDIR = 0o040000;
const ENODATA = 61;
const addon = loadAddon<{ replyErr(h: unknown, errno: number): number }>('sifuse_fuse');

function handleOf(r: FuseRequest): number {
  return (r as unknown as { handle: number }).handle;
}

let cleanups: (() => void)[] = [];
afterEach(() => {
  for (const f of cleanups.splice(0).reverse()) f();
});

/** Mounts `handlers` on a fresh directory; resolves once INIT is answered. */
async function mountScripted(handlers: Partial<FuseHandlers>): Promise<{ mnt: string; session: FuseSession; bugs: string[] }> {
  const dir = mkdtempSync(join(tmpdir(), 'sifuse-session-'));
  const mnt = join(dir, 'mnt');
  await execa('mkdir', [mnt]);
  const bugs: string[] = [];
  let ready!: () => void;
  const inited = new Promise<void>((resolve) => (ready = resolve));
  const all = {
    forget() {},
    forget_multi() {},
    exit() {},
    ...handlers,
    init: () => ready(),
  } as unknown as FuseHandlers;
  const session = FuseSession.mount(mnt, all, {
    args: ['-o', 'fsname=session-test,subtype=sifuse,default_permissions'],
    entryTimeout: 0,
    attrTimeout: 0,
    negativeTimeout: 0,
    maxWrite: 1 << 17,
    wantSet: 0,
    wantClear: 0,
    onBug: (m) => bugs.push(m),
  });
  cleanups.push(() => {
    session.unmount();
    if (isMounted(mnt)) void execa('fusermount3', ['-uz', mnt], { reject: false });
    rmSync(dir, { recursive: true, force: true });
  });
  // The kernel sends INIT once something touches the mount.
  const probe = execa('stat', [mnt], { reject: false, timeout: 20_000 });
  await inited;
  await probe;
  return { mnt, session, bugs };
}

const root = { ...plainStat(1, S_IFDIR | 0o755), nlink: 2 };

describe('FUSE request handles', () => {
  const why = fuseAvailable() ?? (process.getuid?.() === 0 ? null : 'not root (mounts directly)');
  if (why) console.log(`skipping the FUSE session tests: ${why}`);

  it('a handle is answered once: a second answer by any path, a stale or a made-up handle, throws', async () => {
    if (why) return;
    const seen: string[] = [];
    const { mnt, bugs } = await mountScripted({
      async getattr(r: FuseRequest) {
        r.attrWith(1, root);
      },
      async getxattr(r: FuseRequest) {
        const h = handleOf(r);
        r.err(ENODATA);
        for (const again of [
          () => r.err(ENODATA),
          () => addon.replyErr(h, ENODATA),
          () => addon.replyErr(h + 0.5, 0),
          () => addon.replyErr(-1, 0),
        ]) {
          try {
            again();
            seen.push('answered');
          } catch (err) {
            seen.push((err as Error).message);
          }
        }
        expect(() => addon.replyErr({}, 0)).toThrow(/not a FUSE request/);
      },
    });
    const got = await execa('getfattr', ['-n', 'user.x', mnt], { reject: false, timeout: 20_000 });
    expect(got.stderr).toMatch(/No such attribute/);
    expect(seen).toEqual([
      'FUSE getxattr request answered twice',
      'FUSE request answered twice',
      'FUSE request answered twice',
      'FUSE request answered twice',
    ]);
    expect(bugs).toEqual([]);
  });

  it('a reply after unmount is dropped: no throw, the request counts as answered', async () => {
    if (why) return;
    let held: FuseRequest | null = null;
    let arrived!: () => void;
    const heldNow = new Promise<void>((resolve) => (arrived = resolve));
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    const { mnt, session } = await mountScripted({
      async getattr(r: FuseRequest) {
        r.attrWith(1, root);
      },
      async getxattr(r: FuseRequest) {
        held = r;
        arrived();
        await released;
      },
    });
    const blocked = execa('getfattr', ['-n', 'user.x', mnt], { reject: false, timeout: 20_000 });
    await heldNow;
    session.unmount();
    const child = await blocked;
    expect(child.exitCode).not.toBe(0);
    expect(() => held!.err(ENODATA)).not.toThrow();
    expect(held!.answered).toBe(true);
    release();
  });
});
