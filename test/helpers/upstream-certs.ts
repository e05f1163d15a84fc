import { readFileSync } from 'node:fs';
import { certFactory, type CertFiles as FactoryFiles } from './tls.js';

/** A certificate and its key, as files in the test's temp dir (and their PEM text). */
export interface CertFiles {
  readonly cert: string;
  readonly key: string;
  readonly certPem: string;
  readonly keyPem: string;
}

/**
 * The certificates the upstream TLS tests need, made by `openssl` (test/helpers/tls.ts) in a
 * fresh temp dir when a test starts (no private key is ever committed).
 */
export interface TestPki {
  readonly dir: string;
  /** The CA that signs the servers' and the client's certificates. */
  readonly ca: CertFiles;
  /** A CA that signed nothing here: trusting only it must refuse the servers. */
  readonly otherCa: CertFiles;
  /** A server certificate for `localhost` and IP 127.0.0.1. */
  readonly server: CertFiles;
  /** A server certificate for the DNS name `api.internal.test` only (no IP entry). */
  readonly namedServer: CertFiles;
  /** A client certificate (CN graygate-client) for mTLS. */
  readonly client: CertFiles;
  /** Removes the temp dir. */
  remove(): void;
}

function withKey(files: FactoryFiles): CertFiles {
  return { cert: files.cert, key: files.key, certPem: files.pem, keyPem: readFileSync(files.key, 'utf8') };
}

/** Makes the test PKI (a few hundred ms). */
export function makeTestPki(): TestPki {
  const factory = certFactory();
  const ca = factory.ca('upstream-ca');
  const otherCa = factory.ca('unrelated-ca');
  return {
    dir: factory.dir,
    ca: withKey(ca),
    otherCa: withKey(otherCa),
    server: withKey(factory.cert('server', { names: ['localhost', '127.0.0.1'], ca })),
    namedServer: withKey(factory.cert('named-server', { names: ['api.internal.test'], ca })),
    client: withKey(factory.cert('client', { names: ['graygate-client'], ca, clientAuth: true })),
    remove: () => factory.remove(),
  };
}
