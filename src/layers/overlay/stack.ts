/**
 * The Overlay's layer stack: index 0 is the upper when there is one, then the
 * lowers top first. `tag` is the layer's xino number (ino.ts): 0 for the
 * upper, lowers counted from the bottom (1 = lowest).
 */
import type { InodeId, ReadableFs } from '../../engine.js';

export interface StackLayer {
  readonly name: string;
  readonly fs: ReadableFs;
  readonly root: InodeId;
  readonly tag: number;
}

export type Stack = readonly StackLayer[];
