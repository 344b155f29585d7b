/**
 * The SIF library's public surface. Other engines need only:
 *
 *   const sif = await SifImage.open(path);              // validated; CorruptError names the file
 *   const d = sif.primaryPartition();                    // Descriptor | undefined
 *   const region = await FileRegion.open(path, { offset: d.offset, length: d.size });
 */
export { SifImage, isPrimaryPartition, nextAligned, encodeEmptyImage } from './image.js';
export type { AddInput, CreateOptions, DeleteOptions, EditOptions, ObjectData, OpenOptions, SetPrimaryOptions } from './image.js';
export { Descriptor, DESCRIPTOR_SIZE, NAME_SIZE, decodeDescriptor, encodeDescriptor } from './descriptor.js';
export type { RawDescriptor } from './descriptor.js';
export { HEADER_SIZE, isSifHeader, decodeHeader, encodeHeader, headerArch, launchScriptString, versionString } from './header.js';
export type { SifHeader } from './header.js';
export type { CryptoMessageExtra, PartitionExtra, SbomExtra, SignatureExtra } from './extra.js';
export { MemoryStorage, HostFileStorage } from '../io/growable-file.js';
export type { SifStorage } from '../io/growable-file.js';
export {
  ARCHES,
  DataType,
  FsType,
  FormatType,
  HashType,
  MessageType,
  PartType,
  SBOM_FORMATS,
  ZERO_TIME,
  dataTypeLabel,
  fsTypeLabel,
  partTypeLabel,
} from './types.js';
