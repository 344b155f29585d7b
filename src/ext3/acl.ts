/**
 * POSIX ACLs. Users (getxattr/setxattr of system.posix_acl_access and
 * system.posix_acl_default) see the kernel's posix_acl_xattr format:
 *   header u32 a_version = 2, then entries { u16 e_tag, u16 e_perm, u32 e_id }.
 * ext2/3 stores a compact form (fs/ext4/acl.h):
 *   header u32 a_version = 1, then per entry { u16 e_tag, u16 e_perm } and,
 *   for ACL_USER and ACL_GROUP only, u32 e_id.
 * Converting checks tags, order-free sizes and counts, so a hostile value can
 * neither over-read nor be stored in a form the kernel rejects.
 */
import { CorruptError, withErrno } from '../errors.js';

const POSIX_ACL_XATTR_VERSION = 2;
const EXT_ACL_VERSION = 1;
export const ACL_USER_OBJ = 0x01;
export const ACL_USER = 0x02;
export const ACL_GROUP_OBJ = 0x04;
export const ACL_GROUP = 0x08;
export const ACL_MASK = 0x10;
export const ACL_OTHER = 0x20;
const ACL_UNDEFINED_ID = 0xffffffff;

interface AclEntry {
  tag: number;
  perm: number;
  id: number;
}

function validTag(tag: number): boolean {
  return (
    tag === ACL_USER_OBJ ||
    tag === ACL_USER ||
    tag === ACL_GROUP_OBJ ||
    tag === ACL_GROUP ||
    tag === ACL_MASK ||
    tag === ACL_OTHER
  );
}

/** Stored (ext3) form -> user (xattr) form. Throws CorruptError on bad bytes. */
export function aclDiskToXattr(disk: Buffer): Buffer {
  if (disk.length < 4 || disk.readUInt32LE(0) !== EXT_ACL_VERSION) throw new CorruptError('bad stored POSIX ACL header');
  const entries: AclEntry[] = [];
  let off = 4;
  while (off < disk.length) {
    if (off + 4 > disk.length) throw new CorruptError('stored POSIX ACL entry truncated');
    const tag = disk.readUInt16LE(off);
    const perm = disk.readUInt16LE(off + 2);
    if (!validTag(tag)) throw new CorruptError(`stored POSIX ACL entry with tag 0x${tag.toString(16)}`);
    if (tag === ACL_USER || tag === ACL_GROUP) {
      if (off + 8 > disk.length) throw new CorruptError('stored POSIX ACL entry truncated');
      entries.push({ tag, perm, id: disk.readUInt32LE(off + 4) });
      off += 8;
    } else {
      entries.push({ tag, perm, id: ACL_UNDEFINED_ID });
      off += 4;
    }
  }
  const out = Buffer.alloc(4 + 8 * entries.length);
  out.writeUInt32LE(POSIX_ACL_XATTR_VERSION, 0);
  entries.forEach((e, i) => {
    out.writeUInt16LE(e.tag, 4 + 8 * i);
    out.writeUInt16LE(e.perm, 6 + 8 * i);
    out.writeUInt32LE(e.id, 8 + 8 * i);
  });
  return out;
}

/** User (xattr) form -> stored form. EINVAL for malformed input (as the kernel). */
export function aclXattrToDisk(value: Buffer): Buffer {
  if (value.length < 4 || (value.length - 4) % 8 !== 0 || value.readUInt32LE(0) !== POSIX_ACL_XATTR_VERSION) {
    throw withErrno('EINVAL', 'malformed POSIX ACL');
  }
  const n = (value.length - 4) / 8;
  const parts: Buffer[] = [];
  const header = Buffer.alloc(4);
  header.writeUInt32LE(EXT_ACL_VERSION, 0);
  parts.push(header);
  for (let i = 0; i < n; i++) {
    const tag = value.readUInt16LE(4 + 8 * i);
    const perm = value.readUInt16LE(6 + 8 * i);
    const id = value.readUInt32LE(8 + 8 * i);
    if (!validTag(tag) || perm > 7) throw withErrno('EINVAL', 'malformed POSIX ACL entry');
    if (tag === ACL_USER || tag === ACL_GROUP) {
      const e = Buffer.alloc(8);
      e.writeUInt16LE(tag, 0);
      e.writeUInt16LE(perm, 2);
      e.writeUInt32LE(id, 4);
      parts.push(e);
    } else {
      const e = Buffer.alloc(4);
      e.writeUInt16LE(tag, 0);
      e.writeUInt16LE(perm, 2);
      parts.push(e);
    }
  }
  return Buffer.concat(parts);
}

/**
 * What an access ACL (user form, already validated) means for st_mode, as the
 * kernel's posix_acl_update_mode: owner bits from ACL_USER_OBJ, group bits
 * from ACL_MASK when present (else ACL_GROUP_OBJ), other bits from
 * ACL_OTHER; `equivalent` when the ACL says nothing the mode does not (then
 * no xattr is stored at all).
 */
export function aclModeOf(value: Buffer): { perm: number; equivalent: boolean } {
  let owner = 0;
  let group = 0;
  let mask = -1;
  let other = 0;
  let extended = false;
  for (let off = 4; off + 8 <= value.length; off += 8) {
    const tag = value.readUInt16LE(off);
    const perm = value.readUInt16LE(off + 2) & 7;
    if (tag === ACL_USER_OBJ) owner = perm;
    else if (tag === ACL_GROUP_OBJ) group = perm;
    else if (tag === ACL_OTHER) other = perm;
    else if (tag === ACL_MASK) mask = perm;
    else extended = true;
  }
  const g = mask >= 0 ? mask : group;
  return { perm: (owner << 6) | (g << 3) | other, equivalent: !extended && mask < 0 };
}

/**
 * posix_acl_chmod on the stored (ext3) form: ACL_USER_OBJ, ACL_MASK (or
 * ACL_GROUP_OBJ without a mask) and ACL_OTHER take the new mode's bits.
 */
export function aclChmodDisk(disk: Buffer, mode: number): Buffer {
  const out = Buffer.from(disk);
  let maskAt = -1;
  let groupAt = -1;
  for (let off = 4; off + 4 <= out.length;) {
    const tag = out.readUInt16LE(off);
    if (tag === ACL_USER_OBJ) out.writeUInt16LE((mode >> 6) & 7, off + 2);
    else if (tag === ACL_OTHER) out.writeUInt16LE(mode & 7, off + 2);
    else if (tag === ACL_MASK) maskAt = off;
    else if (tag === ACL_GROUP_OBJ) groupAt = off;
    off += tag === ACL_USER || tag === ACL_GROUP ? 8 : 4;
  }
  const at = maskAt >= 0 ? maskAt : groupAt;
  if (at >= 0) out.writeUInt16LE((mode >> 3) & 7, at + 2);
  return out;
}
