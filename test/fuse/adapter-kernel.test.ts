/**
 * The kernel-version gate of direct-I/O writes (adapter.ts): before Linux 6.6
 * a direct write leaves other openers' cached pages stale, so write-only
 * opens stay buffered there.
 */
import { describe, expect, it } from 'vitest';
import { kernelAtLeast } from '../../src/fuse/adapter.js';

describe('kernelAtLeast', () => {
  it('compares major.minor of a uname release', () => {
    expect(kernelAtLeast('6.18.44-fc-v669', 6, 6)).toBe(true);
    expect(kernelAtLeast('6.6.0', 6, 6)).toBe(true);
    expect(kernelAtLeast('6.5.13-arch1', 6, 6)).toBe(false);
    expect(kernelAtLeast('5.14.0-427.el9.x86_64', 6, 6)).toBe(false);
    expect(kernelAtLeast('4.18.0-553.el8_10.x86_64', 6, 6)).toBe(false);
    expect(kernelAtLeast('10.1', 6, 6)).toBe(true);
    expect(kernelAtLeast('garbage', 6, 6)).toBe(false);
  });
});
