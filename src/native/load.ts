/**
 * Loads one of the project's own N-API addons, built by node-gyp at `npm ci`
 * (binding.gyp at the package root) into build/Release. The path is the same
 * from src/native (tests) and dist/native (the CLI): two levels up.
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { UnsupportedError } from '../errors.js';

const require = createRequire(import.meta.url);
const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

export function loadAddon<T>(name: 'sifuse_sys' | 'sifuse_fuse' | 'sifuse_block'): T {
  const path = join(root, 'build', 'Release', `${name}.node`);
  try {
    return require(path) as T;
  } catch (err) {
    const why = err instanceof Error ? err.message.split('\n')[0] : String(err);
    throw new UnsupportedError(
      `the native addon ${name} is not built (${why}); run \`npm ci\` (needs build-essential, pkg-config, libfuse3-dev and zlib1g-dev)`,
      path,
    );
  }
}
