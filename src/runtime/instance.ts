/**
 * `sifuse instance start|list|stop` and `exec instance://NAME`: a named,
 * long-running container. An instance is a `sifuse mount` daemon (its
 * writable overlay stays locked for the instance's life) plus, when the
 * image has `/.singularity.d/startscript`, that script running in bwrap in
 * the background. `exec|run|shell instance://NAME` enter the same merged
 * tree. State lives in one JSON file per instance under the user's runtime
 * directory; an instance whose daemon died is found by list and stop (its
 * pid is gone or its mount no longer answers) and cleaned up.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { execa } from 'execa';
import { UsageError } from '../errors.js';
import { pidFile } from '../commands/mount.js';
import { runtimeDir } from './runtime-dir.js';
import { bwrapArgs } from './bwrap.js';
import { type ContainerOptions, mountFlags, planFor, requireBwrap, SIFUSE_BIN } from './container.js';

export interface InstanceState {
  name: string;
  image: string;
  mountpoint: string;
  /** The mount daemon's pid. */
  daemon: number;
  /** The startscript's bwrap pid, if the image has one. */
  startscript: number | null;
  options: ContainerOptions;
  started: number;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

function stateFile(name: string): string {
  return path.join(runtimeDir('instances'), `${name}.json`);
}

function alive(pid: number | null): boolean {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** True while the daemon runs and its mount answers. */
function healthy(s: InstanceState): boolean {
  if (!alive(s.daemon)) return false;
  try {
    fs.statfsSync(s.mountpoint);
    return fs
      .readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .some((l) => l.split(' ')[4] === s.mountpoint);
  } catch {
    return false;
  }
}

function readState(name: string): InstanceState | null {
  try {
    return JSON.parse(fs.readFileSync(stateFile(name), 'utf8')) as InstanceState;
  } catch {
    return null;
  }
}

/** Ends what is left of an instance: the startscript, the mount, the state file. */
async function cleanUp(s: InstanceState, graceful: boolean): Promise<void> {
  if (s.startscript && alive(s.startscript)) {
    try {
      process.kill(-s.startscript, 'SIGTERM');
    } catch {
      // Already gone.
    }
    const deadline = Date.now() + 5000;
    while (alive(s.startscript) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    if (alive(s.startscript)) {
      try {
        process.kill(-s.startscript, 'SIGKILL');
      } catch {
        // Gone meanwhile.
      }
    }
  }
  if (graceful && alive(s.daemon)) {
    const u = await execa(SIFUSE_BIN, ['umount', s.mountpoint], { reject: false });
    if (u.exitCode !== 0) throw new UsageError(u.stderr.trim().replace(/^sifuse: /, '') || 'unmount failed', s.mountpoint);
  } else {
    // A dead daemon leaves a mount that answers ENOTCONN: detach it.
    await execa('fusermount3', ['-u', '-z', s.mountpoint], { reject: false });
  }
  try {
    fs.rmdirSync(s.mountpoint);
  } catch {
    // Not empty or gone: leave it.
  }
  fs.rmSync(stateFile(s.name), { force: true });
}

/** Every instance's state; crashed ones are cleaned up and left out. */
export async function listInstances(): Promise<InstanceState[]> {
  const out: InstanceState[] = [];
  for (const f of fs
    .readdirSync(runtimeDir('instances'))
    .filter((n) => n.endsWith('.json'))
    .sort()) {
    const s = readState(f.slice(0, -5));
    if (!s) continue;
    if (healthy(s)) out.push(s);
    else {
      process.stderr.write(`sifuse: instance ${s.name}: its daemon is gone; cleaned up\n`);
      await cleanUp(s, false);
    }
  }
  return out;
}

export async function startInstance(image: string, name: string, args: string[], o: ContainerOptions): Promise<InstanceState> {
  if (!NAME.test(name)) throw new UsageError('an instance name is letters, digits, _ . - (at most 128)', name);
  const existing = readState(name);
  if (existing && healthy(existing)) throw new UsageError(`instance ${name} already exists`, image);
  if (existing) await cleanUp(existing, false);
  await requireBwrap();
  const mnt = fs.mkdtempSync(path.join(runtimeDir('instances'), `${name}-root-`));
  const m = await execa(SIFUSE_BIN, ['mount', ...mountFlags(o), image, mnt], { reject: false, stdin: 'ignore' });
  if (m.exitCode !== 0) {
    fs.rmdirSync(mnt);
    throw new UsageError(m.stderr.trim().replace(/^sifuse: /, ''));
  }
  const daemon = Number(fs.readFileSync(pidFile(mnt), 'utf8').trim());
  const state: InstanceState = {
    name,
    image: path.resolve(image),
    mountpoint: mnt,
    daemon,
    startscript: null,
    options: o,
    started: Math.floor(Date.now() / 1000),
  };
  try {
    if (fs.existsSync(path.join(mnt, '.singularity.d', 'startscript'))) {
      const plan = planFor(mnt, { kind: 'exec', argv: ['/.singularity.d/startscript', ...args] }, o, image);
      const log = fs.openSync(path.join(runtimeDir('instances'), `${name}.log`), 'a');
      const child = spawn(
        'bwrap',
        bwrapArgs(plan).filter((a) => a !== '--die-with-parent'),
        { detached: true, stdio: ['ignore', log, log] },
      );
      fs.closeSync(log);
      child.unref();
      state.startscript = child.pid ?? null;
    }
    fs.writeFileSync(stateFile(name), JSON.stringify(state, null, 2));
  } catch (err) {
    await cleanUp(state, true);
    throw err;
  }
  return state;
}

export async function stopInstance(name: string): Promise<void> {
  const s = readState(name);
  if (!s) throw new UsageError(`no instance named ${name}`);
  await cleanUp(s, healthy(s));
}

/** The mountpoint of a running instance, for `exec instance://NAME`. */
export function instanceMountpoint(name: string): string {
  const s = readState(name);
  if (!s || !healthy(s)) throw new UsageError(`no running instance named ${name}`, `instance://${name}`);
  return s.mountpoint;
}
