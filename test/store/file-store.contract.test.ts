import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { FileStoreSettings } from '../../src/config/schema.js';
import { createFileStore } from '../../src/store/file/file-store.js';
import { contractDocument, storeContract } from './contract.js';
import { parseRoutingDocument } from '../../src/config/load.js';

storeContract('file (YAML config file)', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'gg-file-store-'));
  const configPath = join(dir, 'graygate.yaml');
  await writeFile(configPath, `listen: 8080\n${stringify(contractDocument(0))}`);
  const store = createFileStore(FileStoreSettings.parse({ kind: 'file', pollMs: 200 }), { configPath, validate: parseRoutingDocument });
  return { store, cleanup: async () => { await store.close(); await rm(dir, { recursive: true, force: true }); } };
});

storeContract('file (separate JSON routing file)', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'gg-file-store-'));
  await writeFile(join(dir, 'routing.json'), JSON.stringify(contractDocument(0)));
  const store = createFileStore(FileStoreSettings.parse({ kind: 'file', path: 'routing.json', historyDir: 'hist', pollMs: 200 }), {
    configPath: join(dir, 'graygate.yaml'),
    validate: parseRoutingDocument,
  });
  return { store, cleanup: async () => { await store.close(); await rm(dir, { recursive: true, force: true }); } };
});
