/**
 * DirLayer never leaves its root, even while another process keeps swapping
 * the directories it works in for symlinks (to a canary tree outside the
 * root, and to /) and renaming them around. The canary holds the same names
 * the operations use, so any operation that followed a swapped symlink would
 * change it: its full manifest, ctime included (every create, unlink, chmod,
 * chown, xattr or data change moves a ctime), must be byte-identical after.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { DirLayer } from '../../src/layers/dir.js';
import { S_IFDIR, S_IFIFO, S_IFREG, type InodeId } from '../../src/engine.js';
import { sys } from '../../src/native/sys.js';

const me = { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
const b = (s: string): Buffer => Buffer.from(s);
/** Names nothing on this machine has, so a (buggy) escape to / can be seen and harms nothing. */
const tag = `sifuse-escape-${randomBytes(4).toString('hex')}`;
let base: string;
let root: string;
let canary: string;

/** Every entry under `dir`: type, mode, owner, size, mtime and ctime to the ns, content hash, target, xattrs. */
function manifest(dir: string): string[] {
  const out: string[] = [];
  const walk = (path: string, rel: string): void => {
    const st = lstatSync(path, { bigint: true });
    let extra = '';
    if (st.isFile()) extra = createHash('sha256').update(readFileSync(path)).digest('hex');
    else if (st.isSymbolicLink()) extra = readlinkSync(path);
    let xattrs = '';
    try {
      xattrs = sys()
        .listxattrat(sys().constants.AT_FDCWD, path, sys().constants.AT_SYMLINK_NOFOLLOW)
        .map(String)
        .sort()
        .join(',');
    } catch {
      xattrs = '?';
    }
    out.push(`${rel} ${st.mode.toString(8)} ${st.uid}:${st.gid} ${st.size} ${st.mtimeNs} ${st.ctimeNs} ${extra} ${xattrs}`);
    if (st.isDirectory()) for (const name of readdirSync(path).sort()) walk(join(path, name), `${rel}/${name}`);
  };
  walk(dir, '.');
  return out;
}

/** The swapper: a Python loop (a separate process, truly concurrent) until stdin closes. */
const SWAPPER = String.raw`
import os, sys, threading, time
root, canary = sys.argv[1], sys.argv[2]
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
print('ready', flush=True)
swaps = 0
targets = [canary, '/', canary + '/d']
def attempt(f, *a):
    try:
        f(*a)
        return True
    except OSError:
        return False
i = 0
while not stop.is_set():
    t = targets[i % len(targets)]
    i += 1
    for rel in ('d', 'd/sub'):
        p = os.path.join(root, rel)
        aside = p + '.aside'
        if attempt(os.rename, p, aside):
            if attempt(os.symlink, t, p):
                swaps += 1
                time.sleep(0.0003)
                attempt(os.unlink, p)
            attempt(os.rename, aside, p)
    # renames racing too: move the subtree elsewhere in the root and back
    attempt(os.rename, os.path.join(root, 'd', 'sub'), os.path.join(root, 'moved'))
    attempt(os.rename, os.path.join(root, 'moved'), os.path.join(root, 'd', 'sub'))
print(swaps, flush=True)
`;

let swapper: ChildProcess;
let swapperOut = '';

beforeAll(() => {
  base = mkdtempSync(join(tmpdir(), 'sifuse-escape-'));
  root = join(base, 'layer');
  canary = join(base, 'canary');
  // The canary mirrors the layer's names so a followed symlink would hit them.
  for (const top of [root, canary]) {
    mkdirSync(join(top, 'd', 'sub'), { recursive: true });
    writeFileSync(join(top, 'd', 'f'), 'original');
    writeFileSync(join(top, 'd', 'sub', 'f'), 'original');
    mkdirSync(join(top, 'd', 'd', 'sub'), { recursive: true });
    writeFileSync(join(top, 'd', 'd', 'f'), 'original');
  }
});

afterAll(() => {
  swapper?.kill('SIGKILL');
  rmSync(base, { recursive: true, force: true });
});

it('operations racing symlink swaps and renames never touch anything outside the root', async () => {
  const before = manifest(canary);
  const rootBefore = new Set(readdirSync('/'));
  swapper = spawn('python3', ['-c', SWAPPER, root, canary], { stdio: ['pipe', 'pipe', 'inherit'] });
  swapper.stdout!.on('data', (d: Buffer) => (swapperOut += d.toString()));
  const exited = new Promise<void>((resolve) => swapper.on('exit', () => resolve()));
  // The operations start once the swapper runs (Python starts slower than this loop takes on an idle machine).
  for (let t = 0; t < 1000 && !swapperOut.startsWith('ready\n'); t++) await new Promise((r) => setTimeout(r, 10));
  expect(swapperOut.startsWith('ready\n'), 'the swapper started').toBe(true);

  const fs = DirLayer.open(root, { writable: true, openCap: 8 });
  const outcomes = new Map<string, number>();
  const note = (what: string): void => void outcomes.set(what, (outcomes.get(what) ?? 0) + 1);
  const attempt = async (what: string, p: Promise<unknown>): Promise<void> => {
    try {
      await p;
      note(`${what} ok`);
    } catch (err) {
      note(`${what} ${(err as { code?: string }).code ?? String(err)}`);
    }
  };
  const ids: InodeId[] = [];
  const pick = (i: number): InodeId => ids[(i * 7919) % ids.length] ?? fs.rootId;
  let ops = 0;
  // At least 6,000 rounds, and on until an operation has met a swapped symlink (at most 60,000).
  for (let i = 0; i < 6000 || ((outcomes.get('saw d as a symlink') ?? 0) === 0 && i < 60000); i++) {
    const name = b(`${tag}-${i % 5}`);
    const d = await fs.lookup(fs.rootId, b('d')).catch(() => null);
    if (d !== null) ids.push(d);
    if (
      d !== null &&
      (await fs.getattr(d).then(
        (st) => (st.mode & 0o170000) === 0o120000,
        () => false,
      ))
    )
      note('saw d as a symlink');
    const sub = d === null ? null : await fs.lookup(d, b('sub')).catch(() => null);
    if (sub !== null) ids.push(sub);
    const f = d === null ? null : await fs.lookup(d, b('f')).catch(() => null);
    if (f !== null) ids.push(f);
    if (ids.length > 64) ids.splice(0, ids.length - 64);
    const dir = i % 3 === 0 ? pick(i) : (sub ?? d ?? fs.rootId);
    const node = { mode: S_IFREG | 0o644, ...me };
    switch (i % 14) {
      case 0:
        await attempt('mknod', fs.mknod(dir, name, node));
        break;
      case 1:
        await attempt('mkdir', fs.mkdir(dir, name, { mode: S_IFDIR | 0o755, ...me }));
        break;
      case 2:
        await attempt('symlink', fs.symlink(dir, name, b('/etc/passwd'), me));
        break;
      case 3:
        await attempt('fifo', fs.mknod(dir, name, { mode: S_IFIFO | 0o644, ...me }));
        break;
      case 4:
        await attempt('unlink', fs.unlink(dir, name));
        await attempt('unlink f', fs.unlink(dir, b('f')));
        break;
      case 5:
        await attempt('rmdir', fs.rmdir(dir, name));
        break;
      case 6:
        await attempt('rename', fs.rename(dir, b('f'), dir, name, { noreplace: true }));
        await attempt('rename back', fs.rename(dir, name, dir, b('f')));
        break;
      case 7:
        await attempt('write', fs.write(pick(i), 0, b('escaped!')));
        break;
      case 8:
        await attempt('truncate', fs.truncate(pick(i), 1));
        break;
      case 9:
        await attempt('setattr', fs.setattr(pick(i), { mtime: { sec: 12345, nsec: 6 } }));
        break;
      case 10:
        await attempt('setxattr', fs.setxattr(pick(i), b('user.escaped'), b('1')));
        break;
      case 11:
        await attempt('link', fs.link(pick(i), dir, name));
        break;
      case 12:
        await attempt('readdir', fs.readdir(dir));
        await attempt('read', fs.read(pick(i), 0, 16));
        break;
      case 13:
        await attempt('mode', fs.setattr(pick(i), { mode: 0o755 }));
        await attempt('exchange', fs.rename(fs.rootId, b('d'), dir, b('sub'), { exchange: true }));
        break;
    }
    ops++;
    if (i % 20 === 0) await new Promise((r) => setImmediate(r));
  }
  await fs.close();
  swapper.stdin!.end();
  await exited;
  const swaps = Number(swapperOut.slice('ready\n'.length).trim());
  console.log(`escape race: ${ops} rounds, ${swaps} symlink swaps; outcomes`, Object.fromEntries([...outcomes].sort()));

  expect(swaps).toBeGreaterThan(0); // the race really ran
  expect(manifest(canary)).toEqual(before);
  expect([...readdirSync('/')].filter((n) => n.startsWith(tag))).toEqual([]);
  expect(new Set([...readdirSync('/')].filter((n) => !rootBefore.has(n) && n.includes('sifuse')))).toEqual(new Set());
  expect(outcomes.get('saw d as a symlink') ?? 0).toBeGreaterThan(0); // and hit the operations
  // Work happened inside the root: some operations succeeded there.
  expect(outcomes.get('mknod ok') ?? 0).toBeGreaterThan(0);
});
