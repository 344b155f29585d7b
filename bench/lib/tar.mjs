/** A tarball's entries, for the benches that replay `tar xf` (ext3-untar.mjs, adapter-untar.mjs). */

function field(buf, off, len) {
  const s = buf.subarray(off, off + len);
  const z = s.indexOf(0);
  return z >= 0 ? s.subarray(0, z) : s;
}

function octal(buf, off, len) {
  const s = field(buf, off, len).toString('latin1').trim();
  return s === '' ? 0 : parseInt(s, 8);
}

/** ustar/GNU entries: { type, path (Buffer parts), mode, uid, gid, mtime, data, link }. */
export function parseTar(tar) {
  const out = [];
  let off = 0;
  let longName = null;
  let longLink = null;
  while (off + 512 <= tar.length) {
    const h = tar.subarray(off, off + 512);
    if (h.every((b) => b === 0)) break;
    const size = octal(h, 124, 12);
    const type = String.fromCharCode(h[156] || 0x30);
    const data = tar.subarray(off + 512, off + 512 + size);
    off += 512 + Math.ceil(size / 512) * 512;
    if (type === 'L') {
      longName = field(data, 0, data.length);
      continue;
    }
    if (type === 'K') {
      longLink = field(data, 0, data.length);
      continue;
    }
    let name = longName ?? field(h, 0, 100);
    if (!longName && h.subarray(257, 262).toString('latin1') === 'ustar') {
      const prefix = field(h, 345, 155);
      if (prefix.length > 0) name = Buffer.concat([prefix, Buffer.from('/'), name]);
    }
    const link = longLink ?? field(h, 157, 100);
    longName = null;
    longLink = null;
    const parts = name
      .toString('latin1')
      .split('/')
      .filter((p) => p !== '' && p !== '.')
      .map((p) => Buffer.from(p, 'latin1'));
    if (parts.length === 0) continue;
    out.push({
      type,
      parts,
      mode: octal(h, 100, 8) & 0o7777,
      uid: octal(h, 108, 8),
      gid: octal(h, 116, 8),
      mtime: octal(h, 136, 12),
      data,
      link: Buffer.from(link),
    });
  }
  return out;
}
