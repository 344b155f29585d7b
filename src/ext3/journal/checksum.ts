/**
 * JBD2 checksums (CSUM_V2/CSUM_V3): crc32c (Castagnoli, reflected polynomial
 * 0x82F63B78) in the kernel's "raw" form — no pre- or post-inversion; the
 * journal seeds it with crc32c(~0, s_uuid) (jbd2 j_csum_seed).
 *
 *   descriptor/revoke block: tail (last 4 bytes) = crc32c(seed, block with tail zeroed)
 *   commit block:            h_chksum[0] (0x10)  = crc32c(seed, block with h_chksum[0] zeroed)
 *   data block image:        tag t_checksum      = crc32c(crc32c(seed, be32 sequence), image)
 *                            (CSUM_V2 stores the low 16 bits)
 */
const TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
})();

/** crc32c continuing from `crc` over `data` (kernel crc32c(), no inversion). */
export function crc32cRaw(crc: number, data: Uint8Array): number {
  let c = crc >>> 0;
  for (let i = 0; i < data.length; i++) c = TABLE[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return c >>> 0;
}

export function journalChecksumSeed(uuid: Buffer): number {
  return crc32cRaw(0xffffffff, uuid.subarray(0, 16));
}

/** Checksum of a descriptor or revoke block (its last 4 bytes hold the result). */
export function blockTailChecksum(seed: number, block: Buffer): number {
  const copy = Buffer.from(block);
  copy.writeUInt32BE(0, copy.length - 4);
  return crc32cRaw(seed, copy);
}

export function commitBlockChecksum(seed: number, block: Buffer): number {
  const copy = Buffer.from(block);
  copy.writeUInt32BE(0, 0x10);
  return crc32cRaw(seed, copy);
}

export function dataBlockChecksum(seed: number, sequence: number, image: Buffer): number {
  const seq = Buffer.alloc(4);
  seq.writeUInt32BE(sequence >>> 0, 0);
  return crc32cRaw(crc32cRaw(seed, seq), image);
}
