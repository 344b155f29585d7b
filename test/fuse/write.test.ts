/**
 * The write path, through `sifuse mount --writable` of an ext3 image (the
 * engine served directly) and through the Overlay (`--overlay IMG` over a
 * SquashFS image, so the first writes copy up), every operation run by
 * programs in child processes: tar keeping nanosecond mtimes and hard links, touch -m/-a,
 * chmod through one hard link, st_ino across remount, a large file by
 * sha256, mmap, unlink of an open file, concurrent readers and writers,
 * rename storms. After each unmount `e2fsck -fn` is clean.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import {
  expectSameManifest,
  hasTool,
  makeTempDir,
  makeTree,
  mksquashfs,
  removeTempDir,
  runSifuse,
  treeManifest,
} from '../tools/helpers.js';
import { skipBecause } from '../tools/skip.js';
import { cleanup, fuseAvailable, isMounted, logTail, mount, sh, umount } from './helpers.js';

const scripts = join(import.meta.dirname, 'scripts');
const bigMiB = Number(process.env.SIFUSE_TEST_BIG_MIB ?? 256);
const baseWhy = fuseAvailable();

for (const kind of ['ext3', 'overlay'] as const) {
  describe(
    kind === 'ext3' ? 'sifuse mount --writable (ext3 served directly)' : 'sifuse mount --overlay IMG (the Overlay over SquashFS)',
    () => {
      let why = baseWhy;
      let dir: string;
      let image: string;
      let mnt: string;
      let log: string;
      let mountArgs: string[];

      async function run(script: string): Promise<string> {
        const r = await sh(script, { cwd: mnt });
        if (r.exitCode !== 0) throw new Error(`${script}: exit ${r.exitCode}: ${r.stderr}\n${logTail(log)}`);
        return r.stdout;
      }

      async function fsck(): Promise<void> {
        const r = await execa('e2fsck', ['-fn', image], { reject: false });
        expect(r.exitCode, r.stdout + r.stderr).toBe(0);
      }

      async function remount(): Promise<void> {
        const u = await umount(mnt);
        expect(u.exitCode, u.stderr).toBe(0);
        expect(isMounted(mnt)).toBe(false);
        await fsck();
        await mount(mountArgs, log);
      }

      beforeAll(async () => {
        dir = makeTempDir(`fuse-write-${kind}`);
        if (!why && !(await hasTool('mkfs.ext3'))) why = 'mkfs.ext3 is not installed';
        if (why) return;
        image = join(dir, 'rw.img');
        mnt = join(dir, 'mnt');
        log = join(dir, 'daemon.log');
        mkdirSync(mnt);
        if (kind === 'ext3') {
          await execa('truncate', ['-s', `${bigMiB + 400}M`, image]);
          await execa('mkfs.ext3', ['-q', '-F', '-b', '4096', '-I', '256', image]);
          mountArgs = ['--writable', image, mnt];
        } else {
          // A lower with content the tests overwrite, rename and link (copy-up).
          const lower = join(dir, 'lower');
          mkdirSync(join(lower, 'hl'), { recursive: true });
          await execa('sh', [
            '-c',
            `cd ${lower} && echo lower > hl/lowerfile && mkdir rs cc && echo old > rs/r0 && ln hl/lowerfile hl/lowerlink`,
          ]);
          await mksquashfs(lower, join(dir, 'lower.sqfs'));
          // At least 512 MiB, so the image has 4 KiB blocks (1 KiB blocks cap symlink targets at 1023 bytes).
          const made = await runSifuse(['overlay', 'create', '--size', String(Math.max(bigMiB + 400, 600)), image]);
          expect(made.exitCode, made.stderr).toBe(0);
          mountArgs = ['--overlay', image, join(dir, 'lower.sqfs'), mnt];
        }
        await mount(mountArgs, log);
      }, 120_000);

      afterAll(async () => {
        if (!why && isMounted(mnt)) {
          await umount(mnt);
          await fsck();
        }
        await cleanup();
        await removeTempDir(dir);
      }, 200_000);

      it('tar x keeps every mtime to the nanosecond, the hard links and the manifest; tar c round-trips', async (ctx) => {
        if (why) skipBecause(ctx, why);
        const src = (await makeTree(join(dir, 'src'), { many: 500, depth: 10, small: true })).root;
        // tar does not archive sockets.
        await execa('find', [src, '-type', 's', '-delete']);
        // The Overlay refuses char 0/0 (a whiteout) as the kernel's overlayfs does.
        if (kind === 'overlay') {
          await execa('find', [
            src,
            '-type',
            'c',
            '-exec',
            'sh',
            '-c',
            '[ "$(stat -c %t:%T "$1")" = 0:0 ] && rm "$1" || true',
            '_',
            '{}',
            ';',
          ]);
        }
        await execa('python3', [join(scripts, 'ns_times.py'), src, '7']);
        const tarOpts = '--format=posix --xattrs --xattrs-include=* --numeric-owner';
        // The reference is the same tar extracted on the host (tar itself keeps no hard links of devices and fifos).
        const ref = join(dir, 'ref');
        mkdirSync(ref);
        await execa('sh', ['-c', `tar -C ${src} -cf - ${tarOpts} . | tar -C ${ref} -xpf - ${tarOpts}`]);
        await run(`mkdir t && tar -C ${src} -cf - ${tarOpts} . | tar -C t -xpf - ${tarOpts}`);
        const times = async (root: string) => (await execa('python3', [join(scripts, 'times.py'), root])).stdout;
        const want = await times(ref);
        expect(await times(join(mnt, 't'))).toBe(want);
        expectSameManifest(await treeManifest(join(mnt, 't')), await treeManifest(ref), 'untarred into the mount');
        // And back out: tar c on the mount, x on the host.
        const back = join(dir, 'back');
        mkdirSync(back);
        await run(`tar -C t -cf - ${tarOpts} . | tar -C ${back} -xpf - ${tarOpts}`);
        expect(await times(back)).toBe(want);
        await remount();
        expect(await times(join(mnt, 't'))).toBe(want);
      }, 600_000);

      it('touch -m and touch -a set one time each, to the nanosecond', async (ctx) => {
        if (why) skipBecause(ctx, why);
        const out = await run(`
      echo x > touched
      touch -m -d '2011-02-03 04:05:06.123456789' touched
      touch -a -d '2012-03-04 05:06:07.987654321' touched
      stat -c '%y|%x' touched
      touch -a -d '2013-01-01 00:00:00.5' touched
      stat -c '%y|%x' touched`);
        expect(out.split('\n')).toEqual([
          '2011-02-03 04:05:06.123456789 +0000|2012-03-04 05:06:07.987654321 +0000',
          '2011-02-03 04:05:06.123456789 +0000|2013-01-01 00:00:00.500000000 +0000',
        ]);
      });

      it('hard links share one inode: chmod through one name shows through the other; st_ino survives remount', async (ctx) => {
        if (why) skipBecause(ctx, why);
        const before = await run(`
      mkdir -p hl/a hl/b
      echo data > hl/a/one
      ln hl/a/one hl/b/two
      stat -c '%a %h' hl/b/two
      chmod 600 hl/a/one
      stat -c '%a %h' hl/b/two
      stat -c '%i' hl/a/one hl/b/two`);
        const lines = before.split('\n');
        expect(lines.slice(0, 2)).toEqual(['644 2', '600 2']);
        expect(lines[2]).toBe(lines[3]);
        await remount();
        const after = await run(`stat -c '%i' hl/a/one hl/b/two; stat -c '%a %h' hl/b/two`);
        expect(after.split('\n')).toEqual([lines[2], lines[2], '600 2']);
      }, 120_000);

      it('a lower file copied up keeps its content, st_ino and its hard link to the other lower name', async (ctx) => {
        if (why) skipBecause(ctx, why);
        if (kind !== 'overlay') skipBecause(ctx, 'only the overlay mount has a lower layer');
        const before = await run(`stat -c '%i' hl/lowerfile hl/lowerlink`);
        const out = await run(`
      echo appended >> hl/lowerfile
      chmod 600 hl/lowerfile
      stat -c '%a %h' hl/lowerlink
      cat hl/lowerlink
      stat -c '%i' hl/lowerfile hl/lowerlink`);
        expect(out.split('\n')).toEqual(['600 2', 'lower', 'appended', ...before.split('\n')]);
        await remount();
        expect(await run(`stat -c '%i' hl/lowerfile hl/lowerlink; cat hl/lowerfile`)).toBe(`${before}\nlower\nappended`);
      }, 120_000);

      it(`a ${bigMiB} MiB file is written and read back by sha256`, async (ctx) => {
        if (why) skipBecause(ctx, why);
        const src = join(dir, 'big.src');
        await execa('sh', ['-c', `head -c ${bigMiB}M /dev/urandom > ${src}`]);
        const want = (await execa('sha256sum', [src])).stdout.split(' ')[0];
        await run(`dd if=${src} of=big bs=1M status=none conv=fsync`);
        await execa('rm', [src]);
        await remount();
        expect((await run('sha256sum big')).split(' ')[0]).toBe(want);
        await run('rm big');
      }, 600_000);

      it('mmap writes and reads agree with read/write', async (ctx) => {
        if (why) skipBecause(ctx, why);
        await run(`mkdir -p mm && python3 ${scripts}/ops.py mmap mm`);
      });

      it('an unlinked open file stays readable and writable', async (ctx) => {
        if (why) skipBecause(ctx, why);
        await run(`mkdir -p ul && python3 ${scripts}/ops.py unlink-open ul`);
      });

      it('a write clears set-id bits (writer without CAP_FSETID) and security.capability, as the kernel does', async (ctx) => {
        if (why) skipBecause(ctx, why);
        if (process.getuid?.() !== 0) skipBecause(ctx, 'setting set-id bits and security.capability needs root');
        await run(`mkdir -p kp && python3 ${scripts}/ops.py killpriv kp`);
      });

      it('a set-uid file on a reused inode number loses S_ISUID on a write without CAP_FSETID', async (ctx) => {
        if (why) skipBecause(ctx, why);
        if (process.getuid?.() !== 0) skipBecause(ctx, 'setting set-id bits and dropping CAP_FSETID needs root');
        if (kind !== 'ext3') skipBecause(ctx, 'only ext3 reuses inode numbers (Overlay ids are a counter)');
        await run(`mkdir -p kr && python3 ${scripts}/ops.py killpriv-reuse kr`);
      });

      it('readers that cached a file before see what a write-only (direct_io) descriptor writes', async (ctx) => {
        if (why) skipBecause(ctx, why);
        await run(`mkdir -p dc && python3 ${scripts}/ops.py direct-coherence dc`);
      });

      it('O_APPEND from two descriptors, truncate then write, and a time set before close', async (ctx) => {
        if (why) skipBecause(ctx, why);
        await run(`mkdir -p ap && python3 ${scripts}/ops.py append ap`);
        await remount();
        expect(await run('stat -c %s ap/ap ap/tw ap/ut')).toMatch(/^\d+\n5003\n20000\n?$/);
      });

      it('concurrent readers and writers each see whole files', async (ctx) => {
        if (why) skipBecause(ctx, why);
        await run(`mkdir -p cc && python3 ${scripts}/ops.py concurrent cc 4`);
      }, 120_000);

      it('a rename storm loses and duplicates nothing', async (ctx) => {
        if (why) skipBecause(ctx, why);
        await run(`mkdir -p rs && python3 ${scripts}/ops.py rename-storm rs 4`);
        await remount();
        await run(`python3 -c "
import os
c = sorted(open('rs/' + x, 'rb').read() for x in os.listdir('rs') if '.l' not in x)
assert c == sorted(b'%d' % i for i in range(8)), c"`);
      }, 120_000);

      it('renameat2 RENAME_EXCHANGE swaps, RENAME_NOREPLACE refuses an existing target', async (ctx) => {
        if (why) skipBecause(ctx, why);
        const out = await run(`
      mkdir -p rf && cd rf && echo a > ra && echo b > rb
      printf 'ra\\trb\\t2\\nra\\trb\\t1\\nra\\trc\\t1\\n' | python3 ${join(import.meta.dirname, '..', 'tools', 'renameat2.py')}
      cat rb rc`);
        expect(out.split('\n')).toEqual(['ok', 'EEXIST', 'ok', 'a', 'b']);
      });

      it('SEEK_DATA/SEEK_HOLE, rename over a file, xattrs, fifo, statfs answer like a local filesystem', async (ctx) => {
        if (why) skipBecause(ctx, why);
        const out = await run(`
      printf abc > sk
      python3 -c "
import os
fd = os.open('sk', os.O_RDONLY)
print(os.lseek(fd, 0, os.SEEK_DATA), os.lseek(fd, 0, os.SEEK_HOLE))
try:
    os.lseek(fd, 3, os.SEEK_DATA); print('no ENXIO')
except OSError as e: print(e.errno)
"
      echo a > ra; echo b > rb
      mv ra rb && cat rb && test ! -e ra && echo a > ra
      setfattr -n user.k -v v1 ra && getfattr --only-values -n user.k ra; echo
      setfattr -x user.k ra && (getfattr -n user.k ra 2>&1 | grep -c 'No such attribute')
      mkfifo ff && stat -c %F ff
      df -P . | tail -1 | awk '{print ($2 > 0)}'`);
        expect(out.split('\n')).toEqual(['0 3', '6', 'a', 'v1', '1', 'fifo', '1']);
      });
    },
  );
}
