// Types of crash-workload.mjs (plain JavaScript so a child process can run it on dist/).
import type { WritableFs } from '../../src/engine.js';

export function prng(seed: number): () => number;
export function sha256(buf: Buffer): string;
export interface WorkloadFile {
  dir: string;
  name: Buffer;
  id: number;
  content: Buffer;
}
export function runWorkload(
  fs: WritableFs,
  options: { seed: number; ops: number; log: (line: string) => void },
): Promise<Map<string, WorkloadFile>>;
