import { describe, expect, it } from 'vitest';
import { CorruptError, FsError, withErrno, inFile, nameEngineErrors, NAMES_OWN_ERRORS } from '../src/errors.js';
import { devMajor, devMinor, makedev, fileTypeOf, S_IFCHR, S_IFDIR } from '../src/engine.js';

describe('errors', () => {
  it('FsError carries code, errno and a Node-like message', () => {
    const e = withErrno('ENOTEMPTY', "rmdir '/a'");
    expect(e).toBeInstanceOf(FsError);
    expect(e.code).toBe('ENOTEMPTY');
    expect(e.errno).toBe(39);
    expect(e.message).toBe("ENOTEMPTY: directory not empty, rmdir '/a'");
  });

  it('inFile names the image in a decoder error', async () => {
    await expect(
      inFile('x.sif', async () => {
        throw new CorruptError('bad magic');
      }),
    ).rejects.toMatchObject({ file: 'x.sif' });
    const err = await inFile('x.sif', async () => {
      throw new CorruptError('bad magic');
    }).catch((e: CorruptError) => e);
    expect((err as CorruptError).describe()).toBe('x.sif: bad magic');
  });
});

describe('nameEngineErrors', () => {
  function engine() {
    return {
      getattr: (): Promise<never> => Promise.reject(new CorruptError('bad inode')),
      readlink: (): never => {
        throw new CorruptError('bad link');
      },
    };
  }

  it('names the file on rejected and thrown engine errors', async () => {
    const e = nameEngineErrors(engine(), 'x.sif');
    await expect(e.getattr()).rejects.toMatchObject({ file: 'x.sif' });
    expect(() => e.readlink()).toThrow(expect.objectContaining({ file: 'x.sif' }) as Error);
  });

  it('leaves an engine that names its own errors for that file unwrapped, and wraps it for another', async () => {
    const own = Object.assign(engine(), { [NAMES_OWN_ERRORS]: 'x.sif' });
    const getattr = own.getattr;
    expect(nameEngineErrors(own, 'x.sif').getattr).toBe(getattr);
    const other = Object.assign(engine(), { [NAMES_OWN_ERRORS]: 'y.sif' });
    const wrapped = nameEngineErrors(other, 'x.sif');
    await expect(wrapped.getattr()).rejects.toMatchObject({ file: 'x.sif' });
  });
});

describe('device numbers', () => {
  it('round-trips glibc makedev encoding', () => {
    expect(makedev(0, 0)).toBe(0);
    expect(makedev(8, 1)).toBe(0x801);
    expect(makedev(259, 65536)).toBe(0x10010300);
    for (const [ma, mi] of [
      [1, 3],
      [4095, 0xfffff],
      [10, 229],
      [259, 1 << 19],
    ] as [number, number][]) {
      const d = makedev(ma, mi);
      expect([devMajor(d), devMinor(d)]).toEqual([ma, mi]);
    }
  });

  it('decodes file types from st_mode', () => {
    expect(fileTypeOf(S_IFDIR | 0o755)).toBe('d');
    expect(fileTypeOf(S_IFCHR)).toBe('c');
    expect(fileTypeOf(0o777)).toBeNull();
  });
});
