/**
 * uid/gid mapping for --fakeroot: the caller's ids and 0 swap places between
 * what is stored and what is shown, so files the caller creates (as root
 * inside a root-mapped user namespace) are stored root-owned, and stored
 * root-owned files show as the caller's. The swap is its own inverse, so a
 * round trip through setattr/getattr never changes an id.
 */
export interface IdMap {
  uid: number;
  gid: number;
}

function swap(v: number, caller: number): number {
  if (v === 0) return caller;
  if (v === caller) return 0;
  return v;
}

export function showUid(map: IdMap | undefined, uid: number): number {
  return map ? swap(uid, map.uid) : uid;
}
export function showGid(map: IdMap | undefined, gid: number): number {
  return map ? swap(gid, map.gid) : gid;
}
/** Stored ids are the same swap (an involution). */
export const storeUid = showUid;
export const storeGid = showGid;
