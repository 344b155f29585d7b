/**
 * What a crash must have preserved, from the writer's log
 * (test/ext3/crash-workload.mjs), and the check of a recovered image
 * against it: every path whose last logged event is a completed, fsynced
 * operation holds exactly that content (or is gone), nothing appears that
 * the writer never made, and directories are the workload's own.
 */
import { createHash } from 'node:crypto';
import type { InodeId, WritableFs } from '../../src/engine.js';

export interface Promises {
  /** Path -> sha256 of its content, or null: it must not exist. */
  stable: Map<string, string | null>;
  /** Every path the writer ever touched. */
  known: Set<string>;
  /** The writer finished its setup (the directories exist for good). */
  ready: boolean;
  /** Completed fsynced operations (W, RD, UD lines). */
  acked: number;
}

export function promisesOf(lines: readonly string[]): Promises {
  const p: Promises = { stable: new Map(), known: new Set(), ready: false, acked: 0 };
  for (const line of lines) {
    const [op, a, b, c] = line.split(' ');
    if (op === 'READY') p.ready = true;
    else if (op === 'B') {
      for (const x of [a, b]) {
        if (x === undefined) continue;
        p.known.add(x);
        p.stable.delete(x);
      }
    } else if (op === 'W') {
      p.stable.set(a!, b!);
      p.acked++;
    } else if (op === 'RD') {
      p.stable.set(a!, null);
      p.stable.set(b!, c!);
      p.acked++;
    } else if (op === 'UD') {
      p.stable.set(a!, null);
      p.acked++;
    } else if (op !== '' && op !== undefined) {
      throw new Error(`bad crash log line ${JSON.stringify(line)}`);
    }
  }
  return p;
}

const WORKLOAD_DIRS = ['/d0', '/d1', '/d2'];

/** Problems found (empty: the image keeps every promise). */
export async function checkPromises(fs: WritableFs, p: Promises): Promise<string[]> {
  const problems: string[] = [];
  const files = new Map<string, string>();
  const dirs: string[] = [];
  const walk = async (id: InodeId, path: string): Promise<void> => {
    for (const e of await fs.readdir(id)) {
      const child = `${path}/${e.name.toString('latin1')}`;
      if (child === '/lost+found') continue;
      if (e.type === 'd') {
        dirs.push(child);
        await walk(e.id, child);
      } else if (e.type === 'f') {
        const st = await fs.getattr(e.id);
        files.set(
          child,
          createHash('sha256')
            .update(await fs.read(e.id, 0, st.size))
            .digest('hex'),
        );
      } else {
        problems.push(`${child}: unexpected type ${e.type}`);
      }
    }
  };
  await walk(fs.rootId, '');
  for (const d of dirs) if (!WORKLOAD_DIRS.includes(d)) problems.push(`${d}: a directory the writer never made`);
  if (p.ready) for (const d of WORKLOAD_DIRS) if (!dirs.includes(d)) problems.push(`${d}: directory lost`);
  for (const path of files.keys()) if (!p.known.has(path)) problems.push(`${path}: a file the writer never made`);
  for (const [path, want] of p.stable) {
    const got = files.get(path);
    if (want === null && got !== undefined) problems.push(`${path}: unlinked or renamed away (fsynced), still there`);
    if (want !== null && got === undefined) problems.push(`${path}: fsynced, missing`);
    if (want !== null && got !== undefined && got !== want) problems.push(`${path}: fsynced content differs`);
  }
  return problems;
}
