/**
 * MemLayer through the conformance suite: random sequences against the model
 * with concurrent batches, renameat2 flags and open/unlink/create races; after
 * each sequence the layer's own bookkeeping is verified (bytes counted against
 * the cap, link counts, nothing leaked); small layers (1 MiB caps) are filled
 * to ENOSPC. The `--writable-tmpfs` upper as the Overlay opens it runs too,
 * with the ops seeing its upper/ as '/'.
 */
import { MemLayer, openMemUpperLayer } from '../../src/layers/mem.js';
import { FULL_CAPABILITIES, conformanceSuite, type ConformanceTarget } from '../conformance/index.js';

const mem: ConformanceTarget = {
  name: 'MemLayer',
  capabilities: FULL_CAPABILITIES,
  async open({ small }) {
    const fs = new MemLayer({ capBytes: small ? 1 << 20 : 64 << 20 });
    // verify() before the harness's close: close drops everything.
    const close = fs.close.bind(fs);
    fs.close = async () => {
      fs.verify();
      await close();
    };
    return { fs, close: async () => undefined };
  },
};

conformanceSuite(mem, { sequences: 400, ops: 60, seedBase: 12_000_000, fill: 40, timeoutMs: 30_000 });

const upper: ConformanceTarget = {
  name: 'MemLayer upper/ (openMemUpperLayer)',
  capabilities: FULL_CAPABILITIES,
  async open({ small }) {
    const layer = await openMemUpperLayer({ capBytes: small ? 1 << 20 : 64 << 20 });
    const close = layer.fs.close.bind(layer.fs);
    layer.fs.close = async () => {
      layer.fs.verify();
      await close();
    };
    return { fs: layer.fs, root: layer.root, close: async () => undefined };
  },
};

conformanceSuite(upper, { sequences: 100, ops: 60, seedBase: 12_100_000, fill: 10, timeoutMs: 30_000 });
