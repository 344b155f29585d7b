import { execa } from 'execa';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const SIFUSE = path.resolve('bin/sifuse');
let dir: string;
let tree: string;

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sifuse-build-'));
  tree = path.join(dir, 'tree');
  fs.mkdirSync(path.join(tree, 'etc'), { recursive: true });
  fs.mkdirSync(path.join(tree, 'usr', 'bin'), { recursive: true });
  fs.writeFileSync(path.join(tree, 'etc', 'os-release'), 'NAME=test\n');
  fs.writeFileSync(path.join(tree, 'usr', 'bin', 'tool'), '#!/bin/sh\necho tool\n', { mode: 0o755 });
  fs.symlinkSync('usr/bin', path.join(tree, 'bin'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const sifuse = (args: string[], env?: Record<string, string>) =>
  execa(SIFUSE, args, { reject: false, env, extendEnv: env === undefined });

function leftovers(): string[] {
  return fs.readdirSync(dir).filter((n) => n.startsWith('.'));
}

describe('sifuse build', () => {
  it('builds a SIF from a directory: launch script, Deffile, Labels, SquashFS primary partition owned by root', async () => {
    const def = path.join(dir, 'image.def');
    fs.writeFileSync(def, 'Bootstrap: scratch\n');
    const out = path.join(dir, 'dir.sif');
    const r = await sifuse(['build', '--deffile', def, '--label', 'org.test.who=me', out, tree]);
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    expect(fs.readFileSync(out).subarray(0, 31).toString()).toBe('#!/usr/bin/env run-singularity\n');
    const rows = (await execa('siftool', ['list', out])).stdout.split('\n').slice(3);
    expect(rows.map((l) => l.split('|').map((c) => c.trim())).map((c) => [c[0], c[1], c[4]])).toEqual([
      ['1', '1', 'Def.FILE'],
      ['2', '1', 'JSON.Labels'],
      ['3', '1', 'FS (Squashfs/*System/amd64)'],
    ]);
    expect((await execa('siftool', ['dump', '1', out])).stdout).toBe('Bootstrap: scratch');
    expect(JSON.parse((await execa('siftool', ['dump', '2', out])).stdout)).toEqual({ 'org.test.who': 'me' });
    const m = (await sifuse(['manifest', out])).stdout.split('\n').map((l) => l.split('\t'));
    expect(m.map((c) => c[0])).toEqual(['/', '/bin', '/etc', '/etc/os-release', '/usr', '/usr/bin', '/usr/bin/tool']);
    for (const c of m) expect([c[3], c[4]]).toEqual(['0', '0']);
    expect(m.find((c) => c[0] === '/bin')![7]).toBe('usr/bin');
    expect(m.find((c) => c[0] === '/usr/bin/tool')![2]).toBe('0755');
    expect((await sifuse(['cat', out, '/etc/os-release'])).stdout).toBe('NAME=test');
    expect(leftovers()).toEqual([]);
  });

  it('builds the same tree from a tarball', async () => {
    const tgz = path.join(dir, 'tree.tar.gz');
    await execa('tar', ['-C', tree, '-czf', tgz, '.']);
    const a = path.join(dir, 'a.sif');
    const b = path.join(dir, 'b.sif');
    expect((await sifuse(['build', a, tree])).exitCode).toBe(0);
    expect((await sifuse(['build', b, tgz])).exitCode).toBe(0);
    const strip = (s: string) =>
      s
        .split('\n')
        .map((l) =>
          l
            .split('\t')
            .filter((_, i) => i !== 6)
            .join('\t'),
        )
        .slice(1);
    expect(strip((await sifuse(['manifest', b])).stdout)).toEqual(strip((await sifuse(['manifest', a])).stdout));
  });

  it('refuses clearly and leaves nothing behind', async () => {
    const out = path.join(dir, 'keep.sif');
    fs.writeFileSync(out, 'precious');
    let r = await sifuse(['build', out, tree]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toBe(`sifuse: ${out}: already exists (use --force to replace it)`);
    expect(fs.readFileSync(out, 'utf8')).toBe('precious');

    r = await sifuse(['build', path.join(dir, 'x.sif'), path.join(dir, 'missing')]);
    expect(r.stderr).toBe(`sifuse: ${path.join(dir, 'missing')}: no such file or directory`);

    const bad = path.join(dir, 'bad.tar');
    fs.writeFileSync(bad, 'not a tarball at all');
    r = await sifuse(['build', path.join(dir, 'y.sif'), bad]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain(`sifuse: ${bad}: cannot unpack the tarball`);

    // A PATH with node, tar and what the launcher uses, but no mksquashfs.
    const only = path.join(dir, 'path-without-mksquashfs');
    fs.mkdirSync(only);
    for (const tool of ['node', 'tar', 'sh', 'readlink', 'dirname', 'env']) {
      const found = tool === 'node' ? process.execPath : (await execa('sh', ['-c', `command -v ${tool}`])).stdout;
      fs.symlinkSync(found, path.join(only, tool));
    }
    r = await sifuse(['build', path.join(dir, 'z.sif'), tree], { PATH: only });
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toBe(
      `sifuse: ${path.join(dir, 'z.sif')}: mksquashfs is not installed (Debian/Ubuntu: apt-get install squashfs-tools)`,
    );
    expect(
      fs.existsSync(path.join(dir, 'x.sif')) || fs.existsSync(path.join(dir, 'y.sif')) || fs.existsSync(path.join(dir, 'z.sif')),
    ).toBe(false);
    expect(leftovers()).toEqual([]);
  });
});
