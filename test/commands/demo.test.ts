/**
 * `sifuse demo` is the README's main-job command: it must run to the end
 * (every step checks what it shows) as root and as an unprivileged user.
 */
import { execa } from 'execa';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { isRoot, sifuseBin } from '../tools/helpers.js';
import { itIf } from '../tools/skip.js';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

function workDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'sifuse-demo-test-'));
  fs.chmodSync(d, 0o777);
  dirs.push(d);
  return path.join(d, 'demo');
}

describe('sifuse demo', () => {
  it('walks through persist, discard and embed, each step showing what it should', async () => {
    const r = await execa(sifuseBin, ['demo', '--dir', workDir()], { reject: false, timeout: 300_000 });
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain('All 12 steps showed what they should.');
    expect(r.stdout).toContain('   kept across runs');
    expect(r.stdout).toContain('   inside the SIF');
  });

  itIf(isRoot, 'needs root to make a test user and run as it')('runs the same as an unprivileged user', async () => {
    const user = 'sifusetest';
    if (spawnSync('id', [user]).status !== 0) expect(spawnSync('useradd', ['-m', user]).status).toBe(0);
    fs.chmodSync('/dev/fuse', 0o666);
    const r = await execa('runuser', ['-u', user, '--', sifuseBin, 'demo', '--dir', workDir()], {
      reject: false,
      timeout: 300_000,
      cwd: '/',
      env: { HOME: `/home/${user}`, PATH: process.env.PATH ?? '' },
    });
    expect(r.stderr).toBe('');
    expect(r.stdout).toContain('All 12 steps showed what they should.');
    expect(r.exitCode).toBe(0);
  });
});
