/**
 * SIF enumerations (sylabs/sif pkg/sif/sif.go, arch.go) and the labels
 * siftool prints for them. Values not listed here are kept as numbers and
 * printed as "Unknown", exactly as siftool does.
 */

/** Data object types (int32 at descriptor offset 0x00). */
export const DataType = {
  Deffile: 0x4001,
  EnvVar: 0x4002,
  Labels: 0x4003,
  Partition: 0x4004,
  Signature: 0x4005,
  GenericJSON: 0x4006,
  Generic: 0x4007,
  CryptoMessage: 0x4008,
  SBOM: 0x4009,
  OCIRootIndex: 0x400a,
  OCIBlob: 0x400b,
} as const;

const DATA_TYPE_LABELS: Record<number, string> = {
  [DataType.Deffile]: 'Def.FILE',
  [DataType.EnvVar]: 'Env.Vars',
  [DataType.Labels]: 'JSON.Labels',
  [DataType.Partition]: 'FS',
  [DataType.Signature]: 'Signature',
  [DataType.GenericJSON]: 'JSON.Generic',
  [DataType.Generic]: 'Generic/Raw',
  [DataType.CryptoMessage]: 'Cryptographic Message',
  [DataType.SBOM]: 'SBOM',
  [DataType.OCIRootIndex]: 'OCI.RootIndex',
  [DataType.OCIBlob]: 'OCI.Blob',
};

/** Data types 0x4001.. in the order siftool's `--datatype 1..11` numbers them. */
export const DATA_TYPE_BY_CLI_NUMBER: readonly number[] = Object.values(DataType);

export function isKnownDataType(t: number): boolean {
  return DATA_TYPE_LABELS[t] !== undefined;
}

export function dataTypeLabel(t: number): string {
  return DATA_TYPE_LABELS[t] ?? 'Unknown';
}

/** Partition filesystem types (partition extra, offset 0x00). 6 is apptainer/sif only. */
export const FsType = {
  Squash: 1,
  Ext3: 2,
  ImmuObj: 3,
  Raw: 4,
  EncryptedSquashfs: 5,
  GocryptfsSquashfs: 6,
} as const;

const FS_TYPE_LABELS: Record<number, string> = {
  1: 'Squashfs',
  2: 'Ext3',
  3: 'Archive',
  4: 'Raw',
  5: 'Encrypted squashfs',
  6: 'Gocryptfs squashfs',
};

export function fsTypeLabel(t: number): string {
  return FS_TYPE_LABELS[t] ?? 'Unknown';
}

/** Partition types (partition extra, offset 0x04). */
export const PartType = { System: 1, PrimSys: 2, Data: 3, Overlay: 4 } as const;

const PART_TYPE_LABELS: Record<number, string> = { 1: 'System', 2: '*System', 3: 'Data', 4: 'Overlay' };

export function partTypeLabel(t: number): string {
  return PART_TYPE_LABELS[t] ?? 'Unknown';
}

/** Signature hash types (signature extra, offset 0x00), labelled as Go's crypto.Hash.String(). */
export const HashType = { SHA256: 1, SHA384: 2, SHA512: 3, BLAKE2s_256: 4, BLAKE2b_256: 5 } as const;

const HASH_TYPE_LABELS: Record<number, string> = {
  1: 'SHA-256',
  2: 'SHA-384',
  3: 'SHA-512',
  4: 'BLAKE2s-256',
  5: 'BLAKE2b-256',
};

export function hashTypeLabel(t: number): string | undefined {
  return HASH_TYPE_LABELS[t];
}

/** Crypto message format (extra offset 0x00) and message type (offset 0x04). */
export const FormatType = { OpenPGP: 1, PEM: 2 } as const;
export const MessageType = { ClearSignature: 0x100, RSAOAEP: 0x200 } as const;

export function formatTypeLabel(t: number): string {
  return t === 1 ? 'OpenPGP' : t === 2 ? 'PEM' : 'Unknown';
}

export function messageTypeLabel(t: number): string {
  return t === 0x100 ? 'Clear Signature' : t === 0x200 ? 'RSA-OAEP' : 'Unknown';
}

/** SBOM formats 1..8 (sbom extra, offset 0x00); siftool prints "unknown" (lower case) for others. */
export const SBOM_FORMATS: readonly string[] = [
  'cyclonedx-json',
  'cyclonedx-xml',
  'github-json',
  'spdx-json',
  'spdx-rdf',
  'spdx-tag-value',
  'spdx-yaml',
  'syft-json',
];

export function sbomFormatLabel(f: number): string {
  return SBOM_FORMATS[f - 1] ?? 'unknown';
}

/** siftool's --sbomformat also accepts "github" for github-json. */
export function sbomFormatFromName(name: string): number | undefined {
  const i = SBOM_FORMATS.indexOf(name === 'github' ? 'github-json' : name);
  return i < 0 ? undefined : i + 1;
}

/**
 * Architecture codes: two ASCII digits + NUL, in the header (offset 0x2D) and
 * partition extras (offset 0x08). The index in this list is the code
 * ("00" unknown ... "13" loong64), which is also siftool's `--partarch N`.
 */
export const ARCHES: readonly string[] = [
  'unknown',
  '386',
  'amd64',
  'arm',
  'arm64',
  'ppc64',
  'ppc64le',
  'mips',
  'mipsle',
  'mips64',
  'mips64le',
  's390x',
  'riscv64',
  'loong64',
];

/** The 3 on-disk bytes for a Go arch name; "00\0" for anything unknown. */
export function archBytes(goArch: string): Buffer {
  const code = Math.max(0, ARCHES.indexOf(goArch));
  return Buffer.from(`${String(code).padStart(2, '0')}\0`, 'latin1');
}

/** Go's GOARCH name for Node's process.arch (what a SIF built on this host records), 'unknown' if none. */
export function hostGoArch(nodeArch: string = process.arch): string {
  const map: Record<string, string> = {
    x64: 'amd64',
    ia32: '386',
    arm: 'arm',
    arm64: 'arm64',
    ppc64: 'ppc64le',
    s390x: 's390x',
    riscv64: 'riscv64',
    loong64: 'loong64',
    mips: 'mips',
    mipsel: 'mipsle',
  };
  return map[nodeArch] ?? 'unknown';
}

/** The Go arch name for 3 on-disk bytes; "unknown" unless they are exactly a known code. */
export function archFromBytes(bytes: Uint8Array): string {
  if (bytes.length !== 3 || bytes[2] !== 0) return 'unknown';
  const s = String.fromCharCode(bytes[0]!, bytes[1]!);
  if (!/^[0-9]{2}$/.test(s)) return 'unknown';
  const code = Number(s);
  return code >= 1 && code < ARCHES.length ? ARCHES[code]! : 'unknown';
}

/** Go's zero time.Time as Unix seconds: how deterministic images store "no time". */
export const ZERO_TIME = -62135596800;

/** Group bit in GroupID / LinkedID (descrGroupMask). */
export const GROUP_MASK = 0xf0000000;
