/**
 * A small root filesystem assembled from the host's own programs: each
 * program and the shared libraries `ldd` names for it (the dynamic loader
 * included) are copied to the same paths, with the host's top-level
 * symlinks (merged /usr: /bin -> usr/bin, /lib -> usr/lib, ...) recreated.
 * No network, no root, no debootstrap: what `sifuse demo` and the runtime
 * tests build their SIFs from.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { execa } from 'execa';
import { UsageError } from '../errors.js';

/** Programs a shell session needs, found on any Debian/Ubuntu host. */
export const DEMO_PROGRAMS = [
  'sh',
  'ls',
  'cat',
  'echo',
  'mkdir',
  'rm',
  'cp',
  'mv',
  'touch',
  'id',
  'stat',
  'sha256sum',
  'env',
  'sleep',
  'true',
  'false',
  'grep',
  'wc',
  'head',
  'tar',
  'dd',
  'ln',
  'chmod',
  'test',
];

async function which(program: string): Promise<string | null> {
  const r = await execa('sh', ['-c', 'command -v "$1"', 'sh', program], { reject: false });
  const p = r.stdout.trim();
  return r.exitCode === 0 && p.startsWith('/') ? p : null;
}

/** The absolute paths of the shared objects `file` loads, the loader included. */
async function sharedObjects(file: string): Promise<string[]> {
  const r = await execa('ldd', [file], { reject: false });
  if (r.exitCode !== 0) return []; // static, or not an ELF program
  const out: string[] = [];
  for (const line of r.stdout.split('\n')) {
    const m = /=>\s*(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m?.[1]) out.push(m[1]);
  }
  return out;
}

/** Copies `src` (following symlinks) to the same path under `root`, keeping its mode. */
function copyInto(root: string, src: string): void {
  const real = fs.realpathSync(src);
  const dst = path.join(root, real);
  if (!fs.existsSync(dst)) {
    fs.mkdirSync(path.dirname(dst), { recursive: true });
    fs.copyFileSync(real, dst);
    fs.chmodSync(dst, fs.statSync(real).mode & 0o7777);
  }
  // Reached through a symlinked directory (/bin/sh -> /usr/bin/dash): keep that name working too.
  if (real !== src) {
    const alias = path.join(root, src);
    const aliasDir = path.dirname(alias);
    fs.mkdirSync(aliasDir, { recursive: true });
    if (!fs.existsSync(alias)) fs.symlinkSync(path.relative(fs.realpathSync(aliasDir), dst), alias);
  }
}

export interface AssembleOptions {
  programs?: string[];
  /** Extra files written into the tree: path inside -> content and mode. */
  files?: Record<string, { content: string; mode?: number }>;
}

/**
 * Fills the empty directory `root`. Programs the host lacks are skipped,
 * except `sh`, without which nothing works.
 */
export async function assembleHostRootfs(root: string, opts: AssembleOptions = {}): Promise<string[]> {
  // The host's top-level symlinks first, so copies land behind the same names.
  for (const name of ['bin', 'sbin', 'lib', 'lib32', 'lib64', 'libx32']) {
    const host = path.join('/', name);
    try {
      if (fs.lstatSync(host).isSymbolicLink()) {
        const target = fs.readlinkSync(host);
        fs.mkdirSync(path.join(root, path.resolve('/', target)), { recursive: true });
        fs.symlinkSync(target, path.join(root, name));
      }
    } catch {
      // Not on this host.
    }
  }
  const copied: string[] = [];
  for (const p of opts.programs ?? DEMO_PROGRAMS) {
    const at = await which(p);
    if (!at) {
      if (p === 'sh') throw new UsageError('the host has no /bin/sh to build a root filesystem from', 'sh');
      continue;
    }
    if (!fs.statSync(at).isFile()) continue; // a shell builtin
    copyInto(root, at);
    for (const so of await sharedObjects(at)) copyInto(root, so);
    copied.push(p);
  }
  for (const d of ['etc', 'tmp', 'home', 'root', 'proc', 'dev', 'sys', 'var/tmp'])
    fs.mkdirSync(path.join(root, d), { recursive: true });
  fs.chmodSync(path.join(root, 'tmp'), 0o1777);
  fs.writeFileSync(path.join(root, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  fs.writeFileSync(path.join(root, 'etc', 'group'), 'root:x:0:\n');
  for (const [p, f] of Object.entries(opts.files ?? {})) {
    const dst = path.join(root, p);
    fs.mkdirSync(path.dirname(dst), { recursive: true });
    fs.writeFileSync(dst, f.content, { mode: f.mode ?? 0o644 });
    fs.chmodSync(dst, f.mode ?? 0o644);
  }
  return copied;
}
