/**
 * `sifuse sif ...`: siftool-compatible commands (Debian's siftool 2.8.3):
 * same argument order (`info <id> <sif>`), same flags, and for list, header
 * and info the same bytes on stdout. Extensions: `--json` on list, info and
 * header; `add --datatype 10|11` (OCI root index / blob); `new
 * --deterministic` and `--launch-script`.
 */
import type { Command } from 'commander';
import { inFile, UsageError } from '../errors.js';
import { writeWithBackpressure } from '../io/write-stream.js';
import { SifImage, type AddInput } from '../sif/index.js';
import { descriptorJson, formatHeader, formatInfo, formatList, headerJson } from '../sif/report.js';
import { ARCHES, DATA_TYPE_BY_CLI_NUMBER, DataType, HashType, sbomFormatFromName } from '../sif/types.js';

/** Text is latin1: report.ts holds names as their exact bytes. */
function out(text: string | Buffer): Promise<void> {
  return writeWithBackpressure(process.stdout, typeof text === 'string' ? Buffer.from(text, 'latin1') : text);
}

function outJson(v: unknown): Promise<void> {
  return out(Buffer.from(JSON.stringify(v, null, 2) + '\n', 'utf8'));
}

/** An object ID argument: decimal uint32, as siftool's strconv.ParseUint(s, 10, 32). */
function parseId(s: string): number {
  if (!/^[0-9]+$/.test(s) || Number(s) > 0xffffffff) {
    throw new UsageError(`invalid object ID ${JSON.stringify(s)} (a decimal number)`);
  }
  return Number(s);
}

/** A flag value as pflag parses ints: decimal, or 0x / 0o / 0b prefixed, with a sign. */
function parseFlagInt(flag: string, s: string, min: number, max: number): number {
  const m = /^([+-]?)(0x[0-9a-f]+|0o?[0-7]+|0b[01]+|[0-9]+)$/i.exec(s);
  let v = NaN;
  if (m) {
    const body = m[2]!.toLowerCase();
    const n =
      body.startsWith('0x') || body.startsWith('0b') || body.startsWith('0o')
        ? Number(body)
        : body.length > 1 && body.startsWith('0')
          ? /^[0-7]+$/.test(body)
            ? parseInt(body, 8)
            : NaN
          : Number(body);
    v = m[1] === '-' ? -n : n;
  }
  if (!Number.isSafeInteger(v) || v < min || v > max) {
    throw new UsageError(`invalid value ${JSON.stringify(s)} for --${flag}`);
  }
  return v;
}

async function withImage<T>(path: string, writable: boolean, fn: (image: SifImage) => Promise<T>): Promise<T> {
  const image = await SifImage.open(path, { writable });
  try {
    return await fn(image);
  } finally {
    await image.close();
  }
}

interface AddFlags {
  datatype?: string;
  parttype?: string;
  partfs?: string;
  partarch?: string;
  signhash?: string;
  signentity?: string;
  sbomformat?: string;
  groupid?: string;
  link?: string;
  alignment?: string;
  filename?: string;
}

const INT32 = [-0x80000000, 0x7fffffff] as const;

/** siftool's add flags to a library AddInput, checked in siftool's order. */
function addInput(objectPath: string, f: AddFlags): AddInput {
  const n = f.datatype === undefined ? 0 : parseFlagInt('datatype', f.datatype, ...INT32);
  const dataType = DATA_TYPE_BY_CLI_NUMBER[n - 1];
  if (dataType === undefined) {
    throw new UsageError(
      `--datatype must be one of 1..${DATA_TYPE_BY_CLI_NUMBER.length} (1 Deffile ... 9 SBOM, 10 OCI root index, 11 OCI blob)`,
    );
  }
  const groupId = f.groupid === undefined ? 0 : parseFlagInt('groupid', f.groupid, 0, 0xffffffff);
  const input: AddInput = { dataType, data: { path: objectPath }, groupId: groupId === 0 ? null : groupId };
  if (f.link !== undefined) {
    const link = parseFlagInt('link', f.link, 0, 0xffffffff);
    if (link === 0) throw new UsageError('invalid object ID 0 for --link');
    input.linkedId = link;
  }
  if (f.alignment !== undefined) input.alignment = parseFlagInt('alignment', f.alignment, 0, 2 ** 40);
  if (f.filename !== undefined) input.name = f.filename;
  switch (dataType) {
    case DataType.Partition: {
      const pt = f.parttype === undefined ? 0 : parseFlagInt('parttype', f.parttype, ...INT32);
      const fs = f.partfs === undefined ? 0 : parseFlagInt('partfs', f.partfs, ...INT32);
      const arch = f.partarch === undefined ? 0 : parseFlagInt('partarch', f.partarch, ...INT32);
      if (pt === 0 || fs === 0 || arch === 0) {
        throw new UsageError('with partition datatype, --partfs, --parttype and --partarch must be passed');
      }
      if (arch < 1 || arch >= ARCHES.length) throw new UsageError(`unknown architecture: --partarch ${arch}`);
      input.partition = { fsType: fs, partType: pt, arch: ARCHES[arch]! };
      break;
    }
    case DataType.Signature: {
      const hex = f.signentity ?? '';
      if (!/^([0-9a-fA-F]{2})*$/.test(hex)) throw new UsageError('failed to decode signing entity fingerprint: not hexadecimal');
      const entity = Buffer.from(hex, 'hex');
      const ht = f.signhash === undefined ? 0 : parseFlagInt('signhash', f.signhash, ...INT32);
      if (ht < HashType.SHA256 || ht > HashType.BLAKE2b_256) throw new UsageError(`invalid hash type: ${ht}`);
      if (entity.length !== 20) {
        throw new UsageError(`invalid signing entity fingerprint length: got ${entity.length}, want 20`);
      }
      input.signature = { hashType: ht, entity };
      break;
    }
    case DataType.SBOM: {
      if (!f.sbomformat) throw new UsageError('with SBOM datatype, --sbomformat must be passed');
      const format = sbomFormatFromName(f.sbomformat);
      if (format === undefined) throw new UsageError(`invalid SBOM format: ${f.sbomformat}`);
      input.sbom = { format };
      break;
    }
  }
  return input;
}

export function registerSifCommands(program: Command): void {
  const sif = program
    .command('sif')
    .description('Inspect and edit SIF images (siftool-compatible: header, list, info, dump, new, add, del, setprim)');

  sif
    .command('header')
    .description('Display the global header')
    .argument('<sif_path>')
    .option('--json', 'print JSON')
    .action(async (path: string, o: { json?: boolean }) => {
      await withImage(path, false, async (image) => {
        await (o.json ? outJson(headerJson(image)) : out(formatHeader(image.header)));
      });
    });

  sif
    .command('list')
    .description('List data objects')
    .argument('<sif_path>')
    .option('--json', 'print JSON')
    .action(async (path: string, o: { json?: boolean }) => {
      await withImage(path, false, async (image) => {
        const ds = image.descriptors();
        await (o.json ? outJson(ds.map(descriptorJson)) : out(formatList(ds)));
      });
    });

  sif
    .command('info')
    .description('Display data object info')
    .argument('<id>')
    .argument('<sif_path>')
    .option('--json', 'print JSON')
    .action(async (idArg: string, path: string, o: { json?: boolean }) => {
      const id = await inFile(path, async () => parseId(idArg));
      await withImage(path, false, async (image) => {
        const d = image.descriptor(id);
        if (!d) throw new UsageError(`object not found: no object with ID ${id}`, path);
        if (o.json) return outJson(descriptorJson(d));
        const { text, error } = formatInfo(d);
        if (error) throw new UsageError(`object ${id}: ${error}`, path);
        return out(text);
      });
    });

  sif
    .command('dump')
    .description('Write a data object to stdout')
    .argument('<id>')
    .argument('<sif_path>')
    .action(async (idArg: string, path: string) => {
      const id = await inFile(path, async () => parseId(idArg));
      await withImage(path, false, async (image) => {
        const d = image.descriptor(id);
        if (!d) throw new UsageError(`object not found: no object with ID ${id}`, path);
        const chunk = 8 << 20;
        for (let pos = 0; pos < d.size; pos += chunk) {
          await out(await image.readObjectAt(id, pos, Math.min(chunk, d.size - pos)));
        }
      });
    });

  sif
    .command('new')
    .description('Create a new, empty SIF image')
    .argument('<sif_path>')
    .option('--deterministic', 'zero ID and times, for byte-identical output')
    .option('--launch-script <text>', 'launch script (at most 31 bytes), e.g. "#!/usr/bin/env run-singularity\\n"')
    .action(async (path: string, o: { deterministic?: boolean; launchScript?: string }) => {
      const image = await SifImage.create(path, { deterministic: o.deterministic, launchScript: o.launchScript });
      await image.close();
    });

  sif
    .command('add')
    .description('Add a data object')
    .argument('<sif_path>')
    .argument('<object_path>')
    .option(
      '--datatype <int>',
      'the type of data to add: 1 Deffile, 2 EnvVar, 3 Labels, 4 Partition, 5 Signature, 6 GenericJSON, 7 Generic, 8 CryptoMessage, 9 SBOM, 10 OCI.RootIndex, 11 OCI.Blob',
    )
    .option('--parttype <int32>', 'partition type (datatype 4): 1 System, 2 PrimSys, 3 Data, 4 Overlay')
    .option('--partfs <int32>', 'partition filesystem (datatype 4): 1 Squash, 2 Ext3, 3 ImmuObj, 4 Raw, 5 Encrypted squashfs')
    .option(
      '--partarch <int32>',
      'partition architecture (datatype 4): 1 386, 2 amd64, 3 arm, 4 arm64, 5 ppc64, 6 ppc64le, 7 mips, 8 mipsle, 9 mips64, 10 mips64le, 11 s390x, 12 riscv64, 13 loong64',
    )
    .option('--signhash <int32>', 'signature hash (datatype 5): 1 SHA256, 2 SHA384, 3 SHA512, 4 BLAKE2s_256, 5 BLAKE2b_256')
    .option('--signentity <hex>', 'signing entity fingerprint, 40 hex digits (datatype 5)')
    .option(
      '--sbomformat <name>',
      'SBOM format (datatype 9): cyclonedx-json, cyclonedx-xml, github-json, spdx-json, spdx-rdf, spdx-tag-value, spdx-yaml, syft-json',
    )
    .option('--groupid <uint32>', 'object group [default: none]')
    .option('--link <uint32>', 'linked object ID [default: none]')
    .option('--alignment <int>', 'alignment [default: 4096 with datatype 4, 0 otherwise]')
    .option('--filename <name>', 'object name (at most 128 bytes) [default: none]')
    .action(async (path: string, objectPath: string, f: AddFlags) => {
      const input = await inFile(path, async () => addInput(objectPath, f));
      await withImage(path, true, async (image) => {
        await image.add(input);
      });
    });

  sif
    .command('del')
    .description('Delete a data object')
    .argument('<id>')
    .argument('<sif_path>')
    .action(async (idArg: string, path: string) => {
      const id = await inFile(path, async () => parseId(idArg));
      await withImage(path, true, (image) => image.delete(id));
    });

  sif
    .command('setprim')
    .description('Set the primary system partition')
    .argument('<id>')
    .argument('<sif_path>')
    .option(
      '--siftool-arch-quirk',
      "reproduce siftool 2.8.3, which overwrites the partition's architecture with the first 3 letters of its name",
    )
    .action(async (idArg: string, path: string, o: { siftoolArchQuirk?: boolean }) => {
      const id = await inFile(path, async () => parseId(idArg));
      await withImage(path, true, (image) => image.setPrimary(id, { siftoolArchQuirk: o.siftoolArchQuirk === true }));
    });
}
