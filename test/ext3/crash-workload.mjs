// The crash test's writer workload, plain JavaScript so that a child process
// can run it with plain node on dist/ (test/ext3/crash-writer.mjs) and vitest
// in-process on src/ (test/ext3/crash.test.ts), seeded so a failure reproduces.
//
// It logs what it does, one line per event, so a checker knows what must have
// survived a crash (test/ext3/crash-check.ts):
//   B <path> [<path2>]   an operation on these paths begins: from now on they may be anything
//   W <path> <sha256>    the path's content, fsync returned (no operation on it since)
//   RD <from> <to> <sha> rename from -> to done and fsynced: from is gone, to holds that content
//   UD <path>            unlink done and fsynced: the path is gone
// Every B is logged before the operation starts and every W/RD/UD after its
// fsync returns, so a line's promise holds for any crash after it was logged.
import { createHash } from 'node:crypto';

const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const DIRS = ['', '/d0', '/d1', '/d2'];

/** mulberry32, as test/ext3/journal-helpers.ts prng. */
export function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function sha256(buf) {
  return createHash('sha256').update(buf).digest('hex');
}

function bytes(rand, n) {
  const out = Buffer.alloc(n);
  for (let i = 0; i < n; i += 4) {
    const w = (rand() * 0x100000000) >>> 0;
    for (let k = 0; k < 4 && i + k < n; k++) out[i + k] = (w >>> (8 * k)) & 0xff;
  }
  return out;
}

/** A size: mostly small, sometimes past the 12 direct blocks of a 1 KiB-block file. */
function size(rand) {
  const r = rand();
  if (r < 0.15) return 0;
  if (r < 0.75) return Math.floor(rand() * 3000);
  return 12 * 1024 + Math.floor(rand() * 40000);
}

/** The content after writing `data` at `pos` (zeros fill a gap, as in a file). */
function applyWrite(content, pos, data) {
  const end = Math.max(content.length, pos + data.length);
  const out = Buffer.alloc(end);
  content.copy(out);
  data.copy(out, pos);
  return out;
}

function applyTruncate(content, n) {
  const out = Buffer.alloc(n);
  content.copy(out, 0, 0, Math.min(n, content.length));
  return out;
}

/**
 * Runs `ops` operations (Infinity: until killed) on an open writable engine.
 * `log(line)` must record the line before returning (a sync file append, or
 * an array push).
 */
export async function runWorkload(fs, { seed, ops, log }) {
  const rand = prng(seed);
  const pick = (arr) => arr[Math.floor(rand() * arr.length)];
  const dirIds = new Map([['', fs.rootId]]);
  for (const d of DIRS.slice(1)) {
    dirIds.set(d, await fs.mkdir(fs.rootId, Buffer.from(d.slice(1)), { mode: S_IFDIR | 0o755, uid: 0, gid: 0 }));
  }
  await fs.sync();
  log('READY');
  /** path -> { dir, name, id, content }: files whose last operation finished. */
  const files = new Map();
  let counter = 0;
  const split = (p) => {
    const at = p.lastIndexOf('/');
    return { dir: p.slice(0, at), name: Buffer.from(p.slice(at + 1)) };
  };
  const newPath = () => `${pick(DIRS)}/f${counter++}`;
  const maybeSync = async (f) => {
    // Mostly fsync each operation; sometimes leave it to a later commit.
    if (rand() < 0.8) {
      await fs.fsync(f.id, rand() < 0.3);
      return true;
    }
    return false;
  };

  for (let i = 0; i < ops; i++) {
    const r = rand();
    const existing = [...files.keys()];
    if (r < 0.35 || existing.length < 3) {
      // Create and write a new file, in one to three pieces (maybe with holes).
      const path = newPath();
      const { dir, name } = split(path);
      log(`B ${path}`);
      const id = await fs.mknod(dirIds.get(dir), name, { mode: S_IFREG | 0o644, uid: 0, gid: 0 });
      let content = Buffer.alloc(0);
      const pieces = 1 + Math.floor(rand() * 3);
      for (let k = 0; k < pieces; k++) {
        const pos = k === 0 ? 0 : content.length + (rand() < 0.3 ? Math.floor(rand() * 5000) : 0);
        const data = bytes(rand, size(rand));
        if (data.length === 0) continue;
        await fs.write(id, pos, data);
        content = applyWrite(content, pos, data);
      }
      const f = { dir, name, id, content };
      files.set(path, f);
      if (await maybeSync(f)) log(`W ${path} ${sha256(content)}`);
    } else if (r < 0.6) {
      // Change an existing file: append (right at EOF or past it), overwrite, truncate down or up.
      const path = pick(existing);
      const f = files.get(path);
      log(`B ${path}`);
      const how = rand();
      if (how < 0.55) {
        const pos = how < 0.2 ? Math.floor(rand() * (f.content.length + 1)) : f.content.length + (how < 0.4 ? 0 : Math.floor(rand() * 3000));
        const data = bytes(rand, 1 + Math.floor(rand() * 4000));
        await fs.write(f.id, pos, data);
        f.content = applyWrite(f.content, pos, data);
      } else {
        const n = how < 0.8 ? Math.floor(rand() * (f.content.length + 1)) : f.content.length + Math.floor(rand() * 20000);
        await fs.truncate(f.id, n);
        f.content = applyTruncate(f.content, n);
      }
      if (await maybeSync(f)) log(`W ${path} ${sha256(f.content)}`);
    } else if (r < 0.8) {
      // Rename, to a new name or over another file.
      const from = pick(existing);
      const to = rand() < 0.4 ? pick(existing.filter((p) => p !== from)) : newPath();
      const f = files.get(from);
      const t = split(to);
      log(`B ${from} ${to}`);
      await fs.rename(dirIds.get(f.dir), f.name, dirIds.get(t.dir), t.name);
      files.delete(from);
      files.set(to, { ...f, dir: t.dir, name: t.name });
      if (await maybeSync(f)) log(`RD ${from} ${to} ${sha256(f.content)}`);
    } else if (r < 0.92) {
      const path = pick(existing);
      const f = files.get(path);
      log(`B ${path}`);
      await fs.unlink(dirIds.get(f.dir), f.name);
      files.delete(path);
      if (rand() < 0.8) {
        await fs.sync();
        log(`UD ${path}`);
      }
    } else {
      // A commit with nothing of its own: everything before it becomes durable.
      await fs.sync();
    }
  }
  return files;
}
