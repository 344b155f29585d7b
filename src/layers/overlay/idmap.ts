/**
 * uid/gid mapping for --fakeroot: files the caller creates (as root inside a
 * root-mapped user namespace) are stored root-owned, and stored root-owned
 * files show as the caller's. Ids stored as the caller's own also show as
 * the caller's: that is what an upper made by the caller without --fakeroot
 * holds (`overlay create`'s upper/ and work/), and all an unprivileged
 * directory upper can hold (the host refuses chown to 0), and inside the
 * namespace the caller is root, as with Apptainer's kernel overlay. So show
 * is not injective (0 and the caller both show as the caller); store maps
 * the caller to 0 and keeps every other id, and show(store(x)) = x for
 * every id a caller in the namespace can ask for (host 0 is unmapped there).
 */
export interface IdMap {
  uid: number;
  gid: number;
}

export function showUid(map: IdMap | undefined, uid: number): number {
  return map && uid === 0 ? map.uid : uid;
}
export function showGid(map: IdMap | undefined, gid: number): number {
  return map && gid === 0 ? map.gid : gid;
}
export function storeUid(map: IdMap | undefined, uid: number): number {
  return map && uid === map.uid ? 0 : uid;
}
export function storeGid(map: IdMap | undefined, gid: number): number {
  return map && gid === map.gid ? 0 : gid;
}
