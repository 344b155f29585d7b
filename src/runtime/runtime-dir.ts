/**
 * The user's private directory for sifuse's run-time state (mount pid files,
 * container mount points, instances): `$XDG_RUNTIME_DIR/sifuse-UID`, or the
 * same under the temporary directory when there is no runtime directory.
 * Made on first use, mode 0700.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export function runtimeDir(...sub: string[]): string {
  const xdg = process.env.XDG_RUNTIME_DIR;
  const base = xdg && fs.existsSync(xdg) ? xdg : os.tmpdir();
  const dir = path.join(base, `sifuse-${process.getuid?.() ?? 0}`, ...sub);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  return dir;
}
