/**
 * The test oracles themselves: tree_manifest.py on a small hand-made tree whose
 * manifest is known line by line (escaping, sort order, sparse hashing, xattrs,
 * subtrees and exclusions), and the manifest comparison helpers.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execa } from 'execa';
import { createHash } from 'node:crypto';
import {
  closeSync,
  mkdirSync,
  openSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
  writeSync,
  ftruncateSync,
  chmodSync,
} from 'node:fs';
import { join } from 'node:path';
import { makeTempDir, manifestDiff, removeTempDir, treeManifest, withoutSubtree } from './helpers.js';

let dir: string;
let root: string;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
/** base64 of a string read as one byte per character. */
const b64 = (latin1: string) => Buffer.from(latin1, 'latin1').toString('base64');
const T = 1_600_000_000;
const sparseContent = Buffer.concat([Buffer.from('head'), Buffer.alloc(3 * 1048576), Buffer.from('tail')]);

beforeAll(async () => {
  dir = makeTempDir('tools');
  root = join(dir, 'root');
  const p = (rel: string) => join(root, rel);
  mkdirSync(p('a/sub'), { recursive: true });
  mkdirSync(p('a-b'));
  writeFileSync(p('a/x'), 'hello');
  writeFileSync(Buffer.from(p('a/tab\there\\')), '');
  symlinkSync('target\nwith newline', p('a/link'));
  const fd = openSync(p('a-b/sparse'), 'w');
  writeSync(fd, Buffer.from('head'), 0, 4, 0);
  writeSync(fd, Buffer.from('tail'), 0, 4, 4 + 3 * 1048576);
  ftruncateSync(fd, sparseContent.length);
  closeSync(fd);
  await execa('setfattr', ['-n', 'user.b', '-v', '0x00ff', p('a/x')]);
  await execa('setfattr', ['-n', 'user.a', '-v', 'hi', p('a/x')]);
  // Xattr names are bytes: UTF-8, not UTF-8, and the three characters the manifest escapes.
  // setfattr decodes 3-digit octal escapes in names, so any byte can be passed.
  for (const [name, value] of [
    ['user.caf\\303\\251', 'caf\xc3\xa9'],
    ['user.\\377\\376', '\xff\xfe'],
    ['user.t\\011b\\134s\\012n', 't\tb\\s\nn'],
  ]) {
    await execa('setfattr', ['-n', name!, '-v', `0x${Buffer.from(value!, 'latin1').toString('hex')}`, p('a/sub')]);
  }
  for (const d of ['', 'a', 'a/sub', 'a-b']) chmodSync(p(d), 0o755);
  for (const f of ['a-b/sparse', 'a/tab\there\\']) chmodSync(p(f), 0o644);
  chmodSync(p('a/x'), 0o4755);
  for (const [rel, t] of [
    ['a/x', T],
    ['a/tab\there\\', T + 1],
    ['a-b/sparse', T + 2],
    ['a/sub', T + 3],
    ['a', T + 4],
    ['a-b', T + 5],
    ['', T + 6],
  ] as const) {
    utimesSync(p(rel), t, t);
  }
  await execa('touch', ['-h', '-d', `@${T + 7}`, p('a/link')]);
});

afterAll(async () => {
  await removeTempDir(dir);
});

describe('tree_manifest.py', () => {
  it('writes the issue 3 format: escaping, full-path byte order, sparse sha256, xattrs', async () => {
    const uid = process.getuid!();
    const gid = process.getgid!();
    const expected =
      [
        `/\td\t0755\t${uid}\t${gid}\t-\t${T + 6}\t-\t-`,
        `/a\td\t0755\t${uid}\t${gid}\t-\t${T + 4}\t-\t-`,
        // '-' (0x2d) sorts before '/' (0x2f): /a-b and its children come before /a/...
        `/a-b\td\t0755\t${uid}\t${gid}\t-\t${T + 5}\t-\t-`,
        `/a-b/sparse\tf\t0644\t${uid}\t${gid}\t${sparseContent.length}\t${T + 2}\t${sha(sparseContent)}\t-`,
        `/a/link\tl\t0777\t${uid}\t${gid}\t${Buffer.byteLength('target\nwith newline')}\t${T + 7}\ttarget\\nwith newline\t-`,
        // Sorted by raw name bytes (c < t < 0xff), escaped like paths, other bytes raw.
        Buffer.concat([
          Buffer.from(`/a/sub\td\t0755\t${uid}\t${gid}\t-\t${T + 3}\t-\t`),
          Buffer.from(
            `user.caf\xc3\xa9=${b64('caf\xc3\xa9')},user.t\\tb\\\\s\\nn=${b64('t\tb\\s\nn')},user.\xff\xfe=${b64('\xff\xfe')}`,
            'latin1',
          ),
        ]).toString('latin1'),
        `/a/tab\\there\\\\\tf\t0644\t${uid}\t${gid}\t0\t${T + 1}\t${sha(Buffer.alloc(0))}\t-`,
        `/a/x\tf\t4755\t${uid}\t${gid}\t5\t${T}\t${sha(Buffer.from('hello'))}\tuser.a=aGk=,user.b=AP8=`,
      ].join('\n') + '\n';
    const got = await treeManifest(root);
    expect(manifestDiff(got, Buffer.from(expected, 'latin1'))).toBeNull();
  });

  it('describes a subtree with absolute paths and drops excluded paths', async () => {
    const sub = (await treeManifest(root, { path: '/a', exclude: ['/a/sub'] })).toString('latin1');
    expect(
      sub
        .split('\n')
        .filter(Boolean)
        .map((l) => l.split('\t')[0]),
    ).toEqual(['/a', '/a/link', '/a/tab\\there\\\\', '/a/x']);
    const noX = (await treeManifest(root, { path: '/a/x', excludeXattr: ['user.b'] })).toString('latin1');
    expect(noX.trimEnd().split('\t')[8]).toBe('user.a=aGk=');
  });
});

describe('manifest comparison helpers', () => {
  const m = (...lines: string[]) => Buffer.from(lines.map((l) => l + '\n').join(''));
  const a = '/\td\t0755\t0\t0\t-\t1\t-\t-';
  const b = '/b\tf\t0644\t0\t0\t1\t1\tabc\t-';
  const c = '/c\tl\t0777\t0\t0\t1\t1\tb\t-';

  it('reports nothing for identical manifests', () => {
    expect(manifestDiff(m(a, b, c), m(a, b, c))).toBeNull();
  });

  it('names missing, extra and changed lines and the fields that differ', () => {
    const diff = manifestDiff(m(a, b.replace('0644', '0600')), m(a, b, c))!;
    expect(diff).toMatch(/^2 difference\(s\)/);
    expect(diff).toContain('missing: /c | l | 0777');
    expect(diff).toContain('changed (mode)');
    const extra = manifestDiff(m(a, b, c), m(a, b))!;
    expect(extra).toContain('extra:   /c');
  });

  it('reports order differences and shows non-printable bytes', () => {
    expect(manifestDiff(m(a, c, b), m(a, b, c))).toContain('order differs at line 2');
    const odd = Buffer.from('/\xff\tf\t0644\t0\t0\t0\t0\tx\t-\n', 'latin1');
    expect(manifestDiff(odd, m(a))).toContain('extra:   /\\xff | f');
  });

  it('withoutSubtree drops a path and what lies below it, not its siblings', () => {
    const big = '/big\td\t0755\t0\t0\t-\t1\t-\t-';
    const inBig = '/big/f\tf\t0644\t0\t0\t1\t1\tabc\t-';
    const bigger = '/bigger\td\t0755\t0\t0\t-\t1\t-\t-';
    expect(withoutSubtree(m(a, big, inBig, bigger), '/big').toString()).toBe(m(a, bigger).toString());
  });
});
