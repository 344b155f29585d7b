/**
 * Fixtures for the SquashFS unit tests: small source trees built in a temp
 * dir and packed by the reference tool (mksquashfs), plus helpers to open
 * images and read whole files through the engine.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, linkSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileRegion } from '../../src/io/file-region.js';
import { MemoryRegion } from '../../src/io/memory-region.js';
import { openSquashfs, type SquashfsFs } from '../../src/squashfs/index.js';
import { resolvePath } from '../../src/inspect/path.js';

export const isRoot = process.getuid?.() === 0;

export function tempDir(tag: string): string {
  return mkdtempSync(join(tmpdir(), `sifuse-sq-${tag}-`));
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/** A deterministic pseudo-random buffer (xorshift32), so failures reproduce. */
export function pseudoRandom(length: number, seed: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

/** Text that compresses well but is not trivial. */
export function textData(length: number): Buffer {
  const parts: string[] = [];
  let n = 0;
  for (let i = 0; n < length; i++) {
    const line = `line ${i} ${'abcdefghij'.repeat((i % 7) + 1)}\n`;
    parts.push(line);
    n += line.length;
  }
  return Buffer.from(parts.join('')).subarray(0, length);
}

export function mksquashfs(src: string, out: string, args: string[] = []): string {
  execFileSync('mksquashfs', [src, out, '-noappend', '-quiet', '-no-progress', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  return out;
}

/** Sets an xattr with setfattr; a Buffer name may hold any bytes (passed as octal escapes, which setfattr decodes). */
export function setXattr(path: string, name: string | Buffer, value: Buffer): void {
  const arg = typeof name === 'string' ? name : [...name].map((b) => `\\${b.toString(8).padStart(3, '0')}`).join('');
  execFileSync('setfattr', ['-h', '-n', arg, '-v', `0x${value.toString('hex')}`, path]);
}

/**
 * A tree with one of everything the reader must handle. Device nodes need
 * root; without it they are left out (the caller learns from `devices`).
 */
export function buildTree(root: string): { devices: boolean } {
  mkdirSync(join(root, 'dir/sub'), { recursive: true });
  writeFileSync(join(root, 'empty'), '');
  writeFileSync(join(root, 'small.txt'), 'hello, squashfs\n');
  writeFileSync(join(root, 'text'), textData(300_000));
  writeFileSync(join(root, 'random'), pseudoRandom(200_000, 7));
  writeFileSync(join(root, 'exact-block'), pseudoRandom(128 * 1024, 9));
  // Sparse: a hole, 5 bytes of data in the middle of block 8, a hole to the end.
  const sparse = join(root, 'sparse');
  writeFileSync(sparse, '');
  execFileSync('truncate', ['-s', String(3 * 1024 * 1024), sparse]);
  execFileSync('dd', ['of=' + sparse, 'bs=1', 'seek=1100000', 'conv=notrunc', 'status=none'], { input: 'data!' });
  writeFileSync(join(root, 'dir/nested.txt'), 'nested\n');
  linkSync(join(root, 'small.txt'), join(root, 'dir/hardlink'));
  symlinkSync('dir/nested.txt', join(root, 'link'));
  symlinkSync('/absolute/target/that/is/long'.repeat(3), join(root, 'abslink'));
  execFileSync('mkfifo', [join(root, 'fifo')]);
  execFileSync('python3', ['-c', `import socket; socket.socket(socket.AF_UNIX).bind(${JSON.stringify(join(root, 'sock'))})`]);
  writeFileSync(join(root, 'odd\tna\\me\n'), 'odd');
  writeFileSync(Buffer.concat([Buffer.from(root + '/'), Buffer.from([0xff, 0xfe, 0x41])]), 'latin');
  chmodSync(join(root, 'dir'), 0o2755);
  chmodSync(join(root, 'dir/sub'), 0o1777);
  chmodSync(join(root, 'small.txt'), 0o4755);
  setXattr(join(root, 'small.txt'), 'user.greeting', Buffer.from('hi'));
  setXattr(join(root, 'random'), 'user.big', Buffer.alloc(3000, 0x71));
  // security.* needs CAP_SETFCAP: root only.
  if (isRoot)
    setXattr(join(root, 'random'), 'security.capability', Buffer.from('0100000200200000000000000000000000000000', 'hex'));
  setXattr(join(root, 'text'), 'user.big', Buffer.alloc(3000, 0x71)); // same value: stored once, out of line
  // Names are bytes: UTF-8 beyond ASCII, bytes that are not UTF-8, and the manifest's escaped characters.
  setXattr(join(root, 'small.txt'), Buffer.from('user.café'), Buffer.from('utf-8 name'));
  setXattr(join(root, 'small.txt'), Buffer.from('user.\xff\xfe', 'latin1'), Buffer.from('not utf-8'));
  setXattr(join(root, 'dir'), Buffer.from('user.tab\there back\\slash new\nline=,', 'latin1'), Buffer.from('escaped'));
  if (isRoot) setXattr(join(root, 'dir'), Buffer.from('trusted.\x80\xe9', 'latin1'), Buffer.from('root only'));
  let devices = false;
  if (isRoot) {
    execFileSync('mknod', [join(root, 'chardev'), 'c', '4', '65']);
    execFileSync('mknod', [join(root, 'blockdev'), 'b', '259', '300000']);
    devices = true;
  }
  return { devices };
}

export async function openFile(path: string): Promise<SquashfsFs> {
  return openSquashfs(await FileRegion.open(path));
}

export async function openBytes(bytes: Buffer, name = 'image.sqfs'): Promise<SquashfsFs> {
  return openSquashfs(new MemoryRegion(bytes, { name, writable: false }));
}

export async function readAll(fs: SquashfsFs, path: string): Promise<Buffer> {
  const id = await resolvePath(fs, path);
  const st = await fs.getattr(id);
  const parts: Buffer[] = [];
  for (let pos = 0; pos < st.size;) {
    const chunk = await fs.read(id, pos, 256 * 1024);
    if (chunk.length === 0) break;
    parts.push(Buffer.from(chunk));
    pos += chunk.length;
  }
  return Buffer.concat(parts);
}

export function readSource(root: string, rel: string): Buffer {
  return readFileSync(join(root, rel));
}
