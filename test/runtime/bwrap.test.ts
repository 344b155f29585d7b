/**
 * The bubblewrap command line (src/runtime/bwrap.ts) run for real over a
 * plain directory holding a root filesystem assembled from the host's
 * programs: the same tree `sifuse exec` enters once it is mounted. As root
 * the fakeroot case is the same as the plain one, so it is also run as an
 * unprivileged user when one can be made.
 */
import { execa } from 'execa';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bwrapArgs, parseBind, type BwrapPlan } from '../../src/runtime/bwrap.js';
import { assembleHostRootfs } from '../../src/runtime/host-rootfs.js';

let dir: string;
let root: string;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sifuse-bwrap-'));
  fs.chmodSync(dir, 0o755);
  root = path.join(dir, 'root');
  fs.mkdirSync(root);
  await assembleHostRootfs(root, {
    files: {
      '/.singularity.d/env/90-environment.sh': { content: 'export FROM_IMAGE=image\nexport OVERRIDDEN=image\n' },
      '/.singularity.d/env/10-first.sh': { content: 'export ORDER=first\n' },
      '/.singularity.d/env/20-second.sh': { content: 'export ORDER="$ORDER,second"\n' },
      '/.singularity.d/runscript': { content: '#!/bin/sh\necho "runscript $*"\n', mode: 0o755 },
    },
  });
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function plan(over: Partial<BwrapPlan>): BwrapPlan {
  return {
    root,
    defaultBinds: [],
    binds: [],
    contain: true,
    fakeroot: false,
    cwd: '/',
    env: [],
    shell: '/bin/sh',
    argv: ['true'],
    image: '/images/test.sif',
    ...over,
  };
}

const bwrap = (p: BwrapPlan) => execa('bwrap', bwrapArgs(p), { reject: false });

describe('bwrap command line', () => {
  it('parses --bind like Apptainer', () => {
    expect(parseBind('/data')).toEqual({ src: '/data', dst: '/data', readonly: false });
    expect(parseBind('/data:/mnt:ro')).toEqual({ src: '/data', dst: '/mnt', readonly: true });
    expect(parseBind('/data::rw')).toEqual({ src: '/data', dst: '/data', readonly: false });
    expect(() => parseBind('/data:/mnt:bogus')).toThrow(/expected SRC/);
    expect(() => parseBind('/data:relative')).toThrow(/absolute/);
  });

  it("sources the image's environment in name order, then --env wins", async () => {
    const r = await bwrap(
      plan({
        env: ['OVERRIDDEN=flag', 'WITH_SPACE=a b'],
        argv: ['sh', '-c', 'echo "$FROM_IMAGE|$OVERRIDDEN|$ORDER|$WITH_SPACE|$APPTAINER_CONTAINER|$SINGULARITY_NAME"'],
      }),
    );
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('image|flag|first,second|a b|/images/test.sif|test.sif');
  });

  it('passes the exit status and arguments through unquoted', async () => {
    expect((await bwrap(plan({ argv: ['sh', '-c', 'exit 42'] }))).exitCode).toBe(42);
    const r = await bwrap(plan({ argv: ['/.singularity.d/runscript', 'a b', '$HOME', '*'] }));
    expect(r.stdout).toBe('runscript a b $HOME *');
  });

  it('binds host paths, read-only when asked, and starts in the working directory', async () => {
    const host = path.join(dir, 'hostdata');
    fs.mkdirSync(host, { recursive: true });
    fs.writeFileSync(path.join(host, 'in.txt'), 'from host');
    const r = await bwrap(
      plan({
        binds: [{ src: host, dst: '/home', readonly: true }],
        cwd: '/home',
        argv: ['sh', '-c', 'cat in.txt; echo; touch /home/new 2>/dev/null && echo writable || echo read-only'],
      }),
    );
    expect(r.stdout).toBe('from host\nread-only');
    const w = await bwrap(
      plan({ binds: [{ src: host, dst: '/home', readonly: false }], argv: ['sh', '-c', 'echo hi > /home/out.txt'] }),
    );
    expect(w.exitCode).toBe(0);
    expect(fs.readFileSync(path.join(host, 'out.txt'), 'utf8')).toBe('hi\n');
  });

  it('is uid 0 inside with --fakeroot, and the caller outside it without', async () => {
    const me = process.getuid?.() ?? 0;
    expect((await bwrap(plan({ fakeroot: true, argv: ['id', '-u'] }))).stdout).toBe('0');
    expect((await bwrap(plan({ argv: ['id', '-u'] }))).stdout).toBe(String(me));
  });

  it('binds a tree without /dev, /proc or /tmp entry by entry onto an empty root (underlay)', async () => {
    const bare = path.join(dir, 'bare');
    fs.mkdirSync(bare);
    for (const name of fs.readdirSync(root)) {
      if (!['dev', 'proc', 'sys', 'tmp'].includes(name))
        fs.cpSync(path.join(root, name), path.join(bare, name), { recursive: true, verbatimSymlinks: true });
    }
    fs.chmodSync(bare, 0o555);
    const underlay = fs.readdirSync(bare).map((name) => {
      const st = fs.lstatSync(path.join(bare, name));
      return st.isSymbolicLink()
        ? { name, kind: 'link' as const, target: fs.readlinkSync(path.join(bare, name)) }
        : { name, kind: st.isDirectory() ? ('dir' as const) : ('file' as const) };
    });
    const r = await bwrap(
      plan({
        root: bare,
        underlay,
        contain: false,
        defaultBinds: ['/tmp'],
        argv: ['sh', '-c', 'ls /proc/self/ >/dev/null && test -d /tmp && cat /etc/passwd | head -1 && ls /dev/null'],
      }),
    );
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('root:x:0:0:root:/root:/bin/sh\n/dev/null');
    expect(fs.existsSync(path.join(bare, 'dev'))).toBe(false);
  });

  it('works without a shell in the image: --env through bwrap itself', async () => {
    const r = await bwrap(plan({ shell: null, env: ['ONLY=flag'], argv: ['/bin/sh', '-c', 'echo "$ONLY|$FROM_IMAGE"'] }));
    expect(r.stdout).toBe('flag|');
  });
});
