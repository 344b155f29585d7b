import { InternalError } from '../errors.js';
import { checkRange, type ByteStore } from './byte-source.js';

/** A region held in memory: fixtures, fuzzing, and the tmpfs-like upper. Same bounds rules as FileRegion. */
export class MemoryRegion implements ByteStore {
  readonly name: string;
  readonly writable: boolean;
  readonly bytes: Buffer;

  constructor(bytes: Buffer, options: { name?: string; writable?: boolean } = {}) {
    this.bytes = bytes;
    this.name = options.name ?? '<memory>';
    this.writable = options.writable ?? true;
  }

  get size(): number {
    return this.bytes.length;
  }

  private check(position: number, length: number, what: string): void {
    checkRange(this.name, this.bytes.length, position, length, what);
  }

  async read(position: number, length: number): Promise<Buffer> {
    this.check(position, length, 'read');
    return Buffer.from(this.bytes.subarray(position, position + length));
  }

  async readInto(into: Buffer, position: number, length: number): Promise<void> {
    this.check(position, length, 'read');
    if (into.length < length) throw new RangeError(`readInto: a ${into.length}-byte buffer cannot hold ${length} bytes`);
    this.bytes.copy(into, 0, position, position + length);
  }

  async write(position: number, data: Uint8Array): Promise<void> {
    if (!this.writable) throw new InternalError('region is read-only', this.name);
    this.check(position, data.length, 'write');
    this.bytes.set(data, position);
  }

  async sync(): Promise<void> {}

  async close(): Promise<void> {}
}
