/**
 * What `siftool header|list|info` print, byte for byte (sylabs/sif v2.8.3
 * internal/app/siftool/info.go), plus JSON forms for scripts.
 *
 * Text is built as latin1 strings so names are written back as their exact
 * bytes (Go prints them raw); callers write Buffer.from(text, 'latin1').
 *
 * The text forms name only what siftool 2.8.3 knows: data types up to SBOM,
 * filesystem types up to "Encrypted squashfs", architectures up to riscv64;
 * anything newer prints as its "Unknown"/"unknown", as siftool shows it. The
 * JSON forms name everything the library knows (OCI types, digests, loong64).
 */
import { Descriptor } from './descriptor.js';
import { headerArch, launchScriptString, trimNul, versionString, type SifHeader } from './header.js';
import type { SifImage } from './image.js';
import {
  dataTypeLabel,
  DataType,
  formatTypeLabel,
  FsType,
  fsTypeLabel,
  hashTypeLabel,
  messageTypeLabel,
  partTypeLabel,
  sbomFormatLabel,
  ZERO_TIME,
} from './types.js';

/** Go's uuid.UUID.String(). */
export function uuidString(id: Buffer): string {
  const h = id.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

/** Civil date from days since 1970-01-01 (proleptic Gregorian, any sign). */
function civilFromDays(z: number): [number, number, number] {
  z += 719468;
  const era = Math.floor(z / 146097);
  const doe = z - era * 146097;
  const yoe = Math.floor((doe - Math.floor(doe / 1460) + Math.floor(doe / 36524) - Math.floor(doe / 146096)) / 365);
  const doy = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100));
  const mp = Math.floor((5 * doy + 2) / 153);
  const d = doy - Math.floor((153 * mp + 2) / 5) + 1;
  const m = mp < 10 ? mp + 3 : mp - 9;
  return [yoe + era * 400 + (m <= 2 ? 1 : 0), m, d];
}

const pad2 = (n: number) => String(n).padStart(2, '0');

/** Go's time.Time.String() for time.Unix(secs, 0).UTC(): "2006-01-02 15:04:05 +0000 UTC". */
export function goTimeString(secs: number): string {
  const days = Math.floor(secs / 86400);
  const rem = secs - days * 86400;
  const [y, m, d] = civilFromDays(days);
  const year = y < 0 ? `-${String(-y).padStart(4, '0')}` : String(y).padStart(4, '0');
  const hms = `${pad2(Math.floor(rem / 3600))}:${pad2(Math.floor((rem % 3600) / 60))}:${pad2(rem % 60)}`;
  return `${year}-${pad2(m)}-${pad2(d)} ${hms} +0000 UTC`;
}

/** siftool's readableSize: "%d B" below 1024, else rounded to the unit ("27 KiB"). */
export function readableSize(size: number): string {
  if (-1024 < size && size < 1024) return `${size} B`;
  const units = 'KMGTPE';
  let div = 1024;
  let exp = 0;
  for (let n = Math.trunc(size / 1024); n <= -1024 || n >= 1024; n = Math.trunc(n / 1024)) {
    div *= 1024;
    exp++;
  }
  return `${goRound(size / div)} ${units[exp]}iB`;
}

/** math.Round (half away from zero), printed as %.0f. */
function goRound(x: number): string {
  const r = Math.sign(x) * Math.round(Math.abs(x));
  return (Object.is(r, -0) ? 0 : r).toFixed(0);
}

/**
 * Go's utf8.RuneCount over a latin1-held byte string: a valid UTF-8 sequence
 * counts 1, every byte of an invalid one counts 1.
 */
function runeWidth(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; n++) {
    const c = s.charCodeAt(i);
    const size = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    let ok = size > 0 && i + size <= s.length;
    for (let k = 1; ok && k < size; k++) {
      const b = s.charCodeAt(i + k);
      let lo = 0x80;
      let hi = 0xbf;
      if (k === 1) {
        if (c === 0xe0) lo = 0xa0;
        else if (c === 0xed) hi = 0x9f;
        else if (c === 0xf0) lo = 0x90;
        else if (c === 0xf4) hi = 0x8f;
      }
      ok = b >= lo && b <= hi;
    }
    i += ok ? size : 1;
  }
  return n;
}

interface Cell {
  text: string;
  width: number;
}

const ESCAPE = '\xff';

/**
 * Go's text/tabwriter (minwidth 0, tabwidth 0, pad char ' ', no flags) over a
 * whole text. Cells end at '\t' or '\v'; lines at '\n' or '\f' ('\f' is
 * written as '\n'); text between two 0xFF bytes is literal and its width
 * excludes them. A column block is a run of lines that have a terminated
 * cell in that column; each such cell is padded to the block's widest cell
 * plus `padding`; a line's last cell is never padded. A line ending in '\f',
 * or holding a single cell, flushes: later lines start new blocks.
 */
export function tabwrite(text: string, padding: number): string {
  const out: string[] = [];
  let lines: Cell[][] = [];
  let line: Cell[] = [];
  let cell = '';
  let escapes = 0;
  let inEscape = false;
  const endCell = () => {
    line.push({ text: cell, width: runeWidth(cell) - 2 * escapes });
    cell = '';
    escapes = 0;
    return line.length;
  };
  const flush = (final: boolean) => {
    formatLines(lines, padding, out, final);
    lines = [];
  };
  for (const ch of text) {
    if (inEscape) {
      cell += ch;
      if (ch === ESCAPE) {
        inEscape = false;
        escapes++;
      }
      continue;
    }
    if (ch === '\t' || ch === '\v') {
      endCell();
    } else if (ch === '\n' || ch === '\f') {
      const n = endCell();
      lines.push(line);
      line = [];
      if (ch === '\f' || n === 1) flush(false);
    } else {
      if (ch === ESCAPE) inEscape = true;
      cell += ch;
    }
  }
  // Flush: an open escape is closed, the last (unterminated) line is formatted too.
  if (inEscape) escapes++;
  if (cell.length > 0) endCell();
  lines.push(line);
  flush(true);
  return out.join('');
}

/** Formats buffered lines (Go's Writer.format + writeLines); every line but a final one ends in '\n'. */
function formatLines(lines: Cell[][], padding: number, out: string[], final: boolean): void {
  const widths: number[] = [];
  const writeLines = (from: number, to: number) => {
    for (let i = from; i < to; i++) {
      const cells = lines[i]!;
      let s = '';
      cells.forEach((c, j) => {
        s += c.text;
        if (j < widths.length) s += ' '.repeat(Math.max(0, widths[j]! - c.width));
      });
      out.push(final && i === lines.length - 1 ? s : s + '\n');
    }
  };
  const format = (line0: number, line1: number) => {
    const column = widths.length;
    for (let i = line0; i < line1; i++) {
      if (column >= lines[i]!.length - 1) continue;
      writeLines(line0, i);
      line0 = i;
      let width = 0;
      for (; i < line1 && column < lines[i]!.length - 1; i++) {
        width = Math.max(width, lines[i]![column]!.width + padding);
      }
      widths.push(width);
      format(line0, i);
      widths.pop();
      line0 = i;
      i--;
    }
    writeLines(line0, line1);
  };
  format(0, lines.length);
}

const timeSet = (t: number) => t !== ZERO_TIME;

/** Labels as siftool 2.8.3 prints them (see the note at the top). */
function textDataType(t: number): string {
  return t >= DataType.Deffile && t <= DataType.SBOM ? dataTypeLabel(t) : 'Unknown';
}

function textFsType(t: number): string {
  return t >= FsType.Squash && t <= FsType.EncryptedSquashfs ? fsTypeLabel(t) : 'Unknown';
}

function textArch(arch: string): string {
  return arch === 'loong64' ? 'unknown' : arch;
}

/** `siftool header` */
export function formatHeader(h: SifHeader): string {
  let s = '';
  const launch = launchScriptString(h);
  if (launch !== '') s += `Launch Script:\t${launch.endsWith('\n') ? launch.slice(0, -1) : launch}\n`;
  s += `Version:\t${versionString(h)}\n`;
  const arch = textArch(headerArch(h));
  if (arch !== 'unknown') s += `Primary Architecture:\t${arch}\n`;
  if (!h.id.every((b) => b === 0)) s += `ID:\t${uuidString(h.id)}\n`;
  if (timeSet(h.createdAt)) s += `Created At:\t${goTimeString(h.createdAt)}\n`;
  if (timeSet(h.modifiedAt)) s += `Modified At:\t${goTimeString(h.modifiedAt)}\n`;
  s += `Descriptors Free:\t${h.descriptorsFree}\n`;
  s += `Descriptors Total:\t${h.descriptorsTotal}\n`;
  s += `Descriptors Offset:\t${h.descriptorsOffset}\n`;
  s += `Descriptors Size:\t${readableSize(h.descriptorsSize)}\n`;
  s += `Data Offset:\t${h.dataOffset}\n`;
  s += `Data Size:\t${readableSize(h.dataSize)}\n`;
  return tabwrite(s, 1);
}

const RULE = '-'.repeat(78);

function goPad(s: string, width: number): string {
  return s + ' '.repeat(Math.max(0, width - runeWidth(s)));
}

/** The "(G)"-style link cell value, or undefined for no link. */
function typeColumn(d: Descriptor): string | undefined {
  const label = textDataType(d.dataType);
  switch (d.dataType) {
    case DataType.Partition: {
      const p = d.partition!;
      return `${label} (${textFsType(p.fsType)}/${partTypeLabel(p.partType)}/${textArch(p.arch)})`;
    }
    case DataType.Signature: {
      // siftool prints nothing (not even a newline) when the hash type is unknown.
      const ht = hashTypeLabel(d.signature!.hashType);
      return ht === undefined ? undefined : `${label} (${ht})`;
    }
    case DataType.CryptoMessage: {
      const c = d.cryptoMessage!;
      return `${label} (${formatTypeLabel(c.formatType)}/${messageTypeLabel(c.messageType)})`;
    }
    case DataType.SBOM:
      return `${label} (${sbomFormatLabel(d.sbom!.format)})`;
    default:
      return label;
  }
}

/** `siftool list` */
export function formatList(descriptors: Descriptor[]): string {
  let s = `${RULE}\n${goPad('ID', 4)} ${goPad('|GROUP', 8)} ${goPad('|LINK', 8)} ${goPad('|SIF POSITION (start-end)', 26)} |TYPE\n${RULE}\n`;
  for (const d of descriptors) {
    s += `${goPad(String(d.id), 4)} `;
    s += d.groupId === null ? '|NONE    ' : `|${goPad(String(d.groupId), 7)} `;
    if (d.linkedId === null) s += '|NONE    ';
    else if (d.linkedIsGroup) s += `|${goPad(String(d.linkedId), 3)} (G) `;
    else s += `|${goPad(String(d.linkedId), 7)} `;
    s += `${goPad(`|${d.offset}-${d.offset + d.size} `, 26)} `;
    const type = typeColumn(d);
    if (type !== undefined) s += `|${type}\n`;
  }
  return s;
}

/**
 * `siftool info`. Returns the text and, when siftool would stop with an
 * error after the common fields (a signature with an unknown hash type),
 * that error's message; siftool then prints nothing (tabwriter not flushed).
 */
export function formatInfo(d: Descriptor): { text: string; error?: string } {
  let s = `\tData Type:\t${textDataType(d.dataType)}\n\tID:\t${d.id}\n`;
  s += `\tGroup ID:\t${d.groupId === null ? 'NONE' : d.groupId}\n`;
  s += `\tLinked ID:\t${d.linkedId === null ? 'NONE' : d.linkedIsGroup ? `${d.linkedId} (G)` : d.linkedId}\n`;
  s += `\tOffset:\t${d.offset}\n\tSize:\t${d.size}\n`;
  if (timeSet(d.raw.createdAt)) s += `\tCreated At:\t${goTimeString(d.raw.createdAt)}\n`;
  if (timeSet(d.raw.modifiedAt)) s += `\tModified At:\t${goTimeString(d.raw.modifiedAt)}\n`;
  const name = d.nameBytes.toString('latin1');
  if (name !== '') s += `\tName:\t${name}\n`;
  switch (d.dataType) {
    case DataType.Partition: {
      const p = d.partition!;
      s += `\tFilesystem Type:\t${textFsType(p.fsType)}\n\tPartition Type:\t${partTypeLabel(p.partType)}\n\tArchitecture:\t${textArch(p.arch)}\n`;
      break;
    }
    case DataType.Signature: {
      const sig = d.signature!;
      const ht = hashTypeLabel(sig.hashType);
      if (ht === undefined) return { text: '', error: 'hash algorithm unsupported' };
      s += `\tHash Type:\t${ht}\n`;
      if (sig.entity) s += `\tEntity:\t${sig.entity.toString('hex').toUpperCase()}\n`;
      break;
    }
    case DataType.CryptoMessage: {
      const c = d.cryptoMessage!;
      s += `\tFormat Type:\t${formatTypeLabel(c.formatType)}\n\tMessage Type:\t${messageTypeLabel(c.messageType)}\n`;
      break;
    }
    case DataType.SBOM:
      s += `\tFormat:\t${sbomFormatLabel(d.sbom!.format)}\n`;
      break;
  }
  return { text: tabwrite(s, 2) };
}

// ---- JSON ------------------------------------------------------------------

function isoTime(t: number): string | null {
  return t === ZERO_TIME ? null : goTimeString(t).replace(' +0000 UTC', 'Z').replace(' ', 'T');
}

export function headerJson(image: SifImage): Record<string, unknown> {
  const h = image.header;
  return {
    launchScript: trimNul(h.launchScript).toString('utf8'),
    version: versionString(h),
    primaryArch: headerArch(h),
    id: h.id.every((b) => b === 0) ? null : uuidString(h.id),
    createdAt: isoTime(h.createdAt),
    modifiedAt: isoTime(h.modifiedAt),
    createdAtUnix: h.createdAt,
    modifiedAtUnix: h.modifiedAt,
    descriptorsFree: h.descriptorsFree,
    descriptorsTotal: h.descriptorsTotal,
    descriptorsOffset: h.descriptorsOffset,
    descriptorsSize: h.descriptorsSize,
    dataOffset: h.dataOffset,
    dataSize: h.dataSize,
  };
}

export function descriptorJson(d: Descriptor): Record<string, unknown> {
  const o: Record<string, unknown> = {
    id: d.id,
    dataType: dataTypeLabel(d.dataType),
    dataTypeCode: d.dataType,
    groupId: d.groupId,
    linkedId: d.linkedId,
    linkedIsGroup: d.linkedId !== null && d.linkedIsGroup,
    offset: d.offset,
    size: d.size,
    sizeWithPadding: d.sizeWithPadding,
    createdAt: isoTime(d.raw.createdAt),
    modifiedAt: isoTime(d.raw.modifiedAt),
    createdAtUnix: d.raw.createdAt,
    modifiedAtUnix: d.raw.modifiedAt,
    name: d.name,
  };
  const p = d.partition;
  if (p)
    o.partition = {
      fsType: fsTypeLabel(p.fsType),
      fsTypeCode: p.fsType,
      partType: partTypeLabel(p.partType),
      partTypeCode: p.partType,
      arch: p.arch,
    };
  const sig = d.signature;
  if (sig)
    o.signature = {
      hashType: hashTypeLabel(sig.hashType) ?? 'unknown',
      hashTypeCode: sig.hashType,
      entity: sig.entity ? sig.entity.toString('hex').toUpperCase() : null,
    };
  const c = d.cryptoMessage;
  if (c) o.cryptoMessage = { formatType: formatTypeLabel(c.formatType), messageType: messageTypeLabel(c.messageType) };
  const sb = d.sbom;
  if (sb) o.sbom = { format: sbomFormatLabel(sb.format) };
  if (d.ociDigest !== undefined) o.digest = d.ociDigest;
  return o;
}
