/**
 * Error types shared by every engine.
 *
 * - FsError carries a POSIX errno name (ENOENT, ENOSPC, ...) and is what the
 *   FUSE adapter turns into -errno. Engines throw it for conditions a program
 *   is expected to handle.
 * - CorruptError: the on-disk bytes are inconsistent (a hostile or damaged
 *   image). At the FUSE edge this becomes EIO; on the CLI, one line naming the
 *   file.
 * - UnsupportedError: valid but not handled here (an unknown compressor, an
 *   ext4 feature). Nothing is written when it is thrown.
 * - UsageError: the user asked for something malformed (bad flag values).
 * - InternalError: an engine bug or misuse (a closed journal written to, an
 *   invariant broken). Never the image's fault, so fuzzers can tell the two
 *   apart; at the FUSE edge it becomes EIO plus a log line.
 *
 * All carry an optional `file` so the CLI can print "FILE: problem", and an
 * optional `path` inside that file ("FILE: PATH: problem") where the caller
 * knows which entry it was reading. Engines are opened through
 * `nameEngineErrors`, the one boundary that sets `file` for every method.
 */
import { constants as osConstants } from 'node:os';

export type ErrnoCode = keyof typeof osConstants.errno;

export function errnoNumber(code: ErrnoCode): number {
  return osConstants.errno[code];
}

const DESCRIPTIONS: Partial<Record<ErrnoCode, string>> = {
  ENOENT: 'no such file or directory',
  EEXIST: 'file exists',
  ENOTDIR: 'not a directory',
  EISDIR: 'is a directory',
  ENOTEMPTY: 'directory not empty',
  ENOSPC: 'no space left on device',
  EROFS: 'read-only file system',
  EINVAL: 'invalid argument',
  EIO: 'input/output error',
  ENAMETOOLONG: 'file name too long',
  EMLINK: 'too many links',
  ENODATA: 'no data available',
  ERANGE: 'numerical result out of range',
  E2BIG: 'argument list too long',
  EFBIG: 'file too large',
  EPERM: 'operation not permitted',
  EACCES: 'permission denied',
  EXDEV: 'invalid cross-device link',
  EBUSY: 'device or resource busy',
  ELOOP: 'too many levels of symbolic links',
  EOPNOTSUPP: 'operation not supported',
  ENOTSUP: 'operation not supported',
  EDQUOT: 'disk quota exceeded',
  EAGAIN: 'resource temporarily unavailable',
  EBADF: 'bad file descriptor',
};

/** A POSIX error, as a local filesystem would return it. */
export class FsError extends Error {
  readonly code: ErrnoCode;
  readonly errno: number;
  constructor(code: ErrnoCode, detail?: string) {
    const what = DESCRIPTIONS[code] ?? code.toLowerCase();
    super(detail ? `${code}: ${what}, ${detail}` : `${code}: ${what}`);
    this.name = 'FsError';
    this.code = code;
    this.errno = errnoNumber(code);
  }
}

/** One-line call sites: `throw withErrno('ENOTEMPTY', 'rmdir /a')`. */
export function withErrno(code: ErrnoCode, detail?: string): FsError {
  return new FsError(code, detail);
}

abstract class FileProblem extends Error {
  file: string | undefined;
  /** The entry inside `file` being read when the problem showed, where known. */
  path: string | undefined;
  constructor(message: string, file?: string) {
    super(message);
    this.file = file;
  }
  /** The one line the CLI prints: "FILE: PATH: message". */
  describe(): string {
    const where = this.path === undefined ? this.message : `${this.path}: ${this.message}`;
    return this.file ? `${this.file}: ${where}` : where;
  }
}

/** The image's bytes are inconsistent. Decoders throw this, never loop or over-allocate. */
export class CorruptError extends FileProblem {
  constructor(message: string, file?: string) {
    super(message, file);
    this.name = 'CorruptError';
  }
}

/** A valid image or request that sifuse does not handle. Nothing was written. */
export class UnsupportedError extends FileProblem {
  constructor(message: string, file?: string) {
    super(message, file);
    this.name = 'UnsupportedError';
  }
}

/** Malformed user input (flags, arguments). */
export class UsageError extends FileProblem {
  constructor(message: string, file?: string) {
    super(message, file);
    this.name = 'UsageError';
  }
}

/** An engine bug or misuse, not a property of the image. */
export class InternalError extends FileProblem {
  constructor(message: string, file?: string) {
    super(message, file);
    this.name = 'InternalError';
  }
}

/** Attach a file name to a CorruptError/UnsupportedError raised deep inside a decoder. */
export function inFile<T>(file: string, fn: () => Promise<T>): Promise<T> {
  return fn().catch((err: unknown) => {
    if (err instanceof FileProblem && err.file === undefined) err.file = file;
    throw err;
  });
}

/** Notes the entry being read on a CorruptError/UnsupportedError/InternalError that has none; returns `err`. */
export function atPath(err: unknown, path: string): unknown {
  if (err instanceof FileProblem && err.path === undefined) err.path = path;
  return err;
}

/** Every method of the engine contract (src/engine.ts), readable and writable. */
const ENGINE_METHODS = [
  'getattr',
  'lookup',
  'readdir',
  'read',
  'dataRanges',
  'readlink',
  'listxattr',
  'getxattr',
  'ref',
  'unref',
  'statfs',
  'close',
  'mknod',
  'mkdir',
  'symlink',
  'link',
  'unlink',
  'rmdir',
  'rename',
  'write',
  'truncate',
  'setattr',
  'setxattr',
  'removexattr',
  'fsync',
  'sync',
] as const;

const NAMED = Symbol('sifuse.namedErrors');

/**
 * An engine whose every method already sets `file` on its own errors (the
 * SquashFS engine wraps each async path in `inFile`) answers this with that
 * file name; nameEngineErrors then leaves it unwrapped for that same file,
 * saving a wrapper call and a derived promise on every engine call.
 */
export const NAMES_OWN_ERRORS: unique symbol = Symbol.for('sifuse.namesOwnErrors');

/**
 * The error-context boundary: every contract method of `engine` (patched on
 * the instance, once) rejects with `file` set on any CorruptError,
 * UnsupportedError or InternalError that lacks it. Only the rejection path
 * is wrapped: a call that resolves (a cache hit) costs one derived promise,
 * no extra async frame. Synchronous throws are named too.
 */
export function nameEngineErrors<T extends object>(engine: T, file: string): T {
  const target = engine as Record<string | symbol, unknown>;
  if (target[NAMED]) return engine;
  if (target[NAMES_OWN_ERRORS] === file) {
    Object.defineProperty(target, NAMED, { value: true });
    return engine;
  }
  const name = (err: unknown): never => {
    if (err instanceof FileProblem && err.file === undefined) err.file = file;
    throw err;
  };
  for (const m of ENGINE_METHODS) {
    const orig = target[m];
    if (typeof orig !== 'function') continue;
    const fn = orig as (...args: unknown[]) => unknown;
    // Fixed arity (rename has the most parameters): no rest-array per call.
    target[m] = (a?: unknown, b?: unknown, c?: unknown, d?: unknown, e?: unknown): unknown => {
      let result: unknown;
      try {
        result = fn.call(engine, a, b, c, d, e);
      } catch (err) {
        name(err);
      }
      return result instanceof Promise ? result.catch(name) : result;
    };
  }
  Object.defineProperty(target, NAMED, { value: true });
  return engine;
}

/** One line for any error, for logs: "FILE: PATH: message" where known. */
export function describeProblem(err: unknown): string {
  if (err instanceof FileProblem) return err.describe();
  if (err instanceof Error) return err.message;
  return String(err);
}

export function isFileProblem(err: unknown): err is CorruptError | UnsupportedError | UsageError | InternalError {
  return err instanceof FileProblem;
}
