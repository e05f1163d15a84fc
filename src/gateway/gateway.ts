import type { RoutingDocument, Settings } from '../config/schema.js';
import { parseRoutingDocument } from '../config/load.js';
import type { CreateDataPlane, DataPlane } from '../dataplane/runtime.js';
import type { Logger } from '../observe/log.js';
import { compileRouting } from '../rules/compile.js';
import { GraygateError } from '../errors.js';
import type { Store } from '../store/store.js';
import { createFileStore } from '../store/file/file-store.js';
import { ConfigSync } from './config-sync.js';

export interface GatewayOptions {
  readonly settings: Settings;
  /** The config file the settings came from; the file store reads routing from it by default. */
  readonly configPath: string;
  readonly logger: Logger;
  /** The data plane for the runtime that runs graygate (node:http + undici on Node). */
  readonly createDataPlane: CreateDataPlane;
  /** A store to use instead of the one `settings.store` describes (tests, the drop-in mode). */
  readonly store?: Store;
}

/** A running gateway: store → validated, compiled snapshot → data plane, kept in sync live. */
export interface Gateway {
  readonly address: { host: string; port: number };
  readonly store: Store;
  readonly sync: ConfigSync;
  readonly dataPlane: DataPlane;
  /** Graceful stop: drain the data plane within `graceMs`, then close the store. */
  close(graceMs?: number): Promise<void>;
}

/** Builds the store the settings describe. */
export function createStore(settings: Settings, configPath: string, logger: Logger): Store {
  const store = settings.store;
  switch (store.kind) {
    case 'file':
      return createFileStore(store, {
        // The store resolves a relative store.path against the config file's directory itself.
        configPath,
        validate: parseRoutingDocument,
        logger,
      });
    default:
      throw new GraygateError('GG_CONFIG_INVALID', `store.kind: unknown store ${JSON.stringify((store as { kind: string }).kind)}`);
  }
}

/**
 * Starts a gateway: reads the routing document (refusing to start on an invalid one, with the
 * issues), compiles it, starts listening, and from then on applies every newer valid version
 * live while keeping the last good one when a change is refused.
 */
export async function startGateway(options: GatewayOptions): Promise<Gateway> {
  const { settings, logger } = options;
  const store = options.store ?? createStore(settings, options.configPath, logger);
  const dataPlane = options.createDataPlane({ settings, logger });
  const sync = new ConfigSync({
    store,
    compile: (document: RoutingDocument, version: number) => compileRouting(document, version),
    apply: (snapshot) => dataPlane.setSnapshot(snapshot),
    logger,
    // A gateway restarted while its config file is broken serves the last recorded good version
    // (and says so) rather than not starting: fail static across restarts too.
    bootFromHistory: true,
  });
  try {
    await sync.start();
  } catch (error) {
    await store.close();
    throw error;
  }
  let address: { host: string; port: number };
  try {
    address = await dataPlane.listen();
  } catch (error) {
    sync.stop();
    await store.close();
    throw error;
  }
  let closing: Promise<void> | undefined;
  return {
    address,
    store,
    sync,
    dataPlane,
    close(graceMs = settings.proxy.shutdownGraceMs) {
      closing ??= (async () => {
        sync.stop();
        await dataPlane.drain(graceMs);
        await store.close();
      })();
      return closing;
    },
  };
}
