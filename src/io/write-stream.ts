import type { Writable } from 'node:stream';

/**
 * Writes `data` to a stream and resolves once the stream will take more:
 * at once while it is below its high-water mark, else on 'drain'. Output
 * of any size (a manifest, `cat` of a large file) is written without
 * buffering it all in memory.
 */
export function writeWithBackpressure(out: Writable, data: Uint8Array): Promise<void> {
  if (out.write(data)) return Promise.resolve();
  return new Promise<void>((resolve) => out.once('drain', resolve));
}
