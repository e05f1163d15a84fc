import type { Logger } from 'pino';
import type { TlsSettings } from '../config/schema.js';
import { ConfigError } from '../errors.js';
import { watchFile, type FileWatch } from '../store/file/watch-file.js';
import { expiryProblem, readCaBundle, readCertificatePair, TlsFileError, type CertificatePair } from './tls-files.js';

/** A `tls` section's certificate pairs and client CA as read from their files. */
export interface TlsFileSet {
  readonly pairs: CertificatePair[];
  readonly ca: string | undefined;
}

/**
 * The files of a `tls` section, for whatever serves them (graygate's own listener, or nginx on the
 * OpenResty data plane), so both read, check and reload them the same way: every file is read and
 * checked at start (a file that cannot be served is a ConfigError naming it), then watched; on a
 * change each file is read again, and one that does not load is refused, logged with its file,
 * while its previous version stays. The subclass applies a set that changed.
 */
export abstract class WatchedTlsFiles {
  protected pairs: CertificatePair[];
  protected ca: string | undefined;
  /** Reloads refused since start (a pair or the CA failed to load, or the server refused it). */
  refusedReloads = 0;
  /** Reloads that swapped in at least one changed file. */
  appliedReloads = 0;
  private watches: FileWatch[] = [];
  private reloadTimer: NodeJS.Timeout | undefined;

  /** Reads every file once; throws ConfigError naming each file that cannot be served. */
  constructor(
    protected readonly settings: TlsSettings,
    protected readonly logger: Logger,
  ) {
    const issues: string[] = [];
    const pairs: CertificatePair[] = [];
    settings.certificates.forEach((entry, index) => {
      try {
        const pair = readCertificatePair(entry, index);
        const problem = expiryProblem(pair, entry.cert, `tls.certificates[${index}].cert`);
        if (problem?.level === 'error') issues.push(problem.message);
        else if (problem) logger.warn({ event: 'tls-certificate-expiring', file: entry.cert, notAfter: pair.notAfter.toISOString() }, problem.message);
        pairs.push(pair);
      } catch (error) {
        if (!(error instanceof TlsFileError)) throw error;
        issues.push(error.message);
      }
    });
    let ca: string | undefined;
    if (settings.clientCertificates) {
      try {
        ca = readCaBundle(settings.clientCertificates.ca);
      } catch (error) {
        if (!(error instanceof TlsFileError)) throw error;
        issues.push(error.message);
      }
    }
    if (issues.length > 0) throw new ConfigError(issues);
    this.pairs = pairs;
    this.ca = ca;
  }

  /** Reads the files again and applies what changed and loads; resolves with whether anything was applied. */
  abstract reload(): boolean | Promise<boolean>;

  /** Watches every certificate, key and CA file; a change reloads once the burst of writes settles. */
  protected watchFiles(): void {
    const files = new Set(this.settings.certificates.flatMap((entry) => [entry.cert, entry.key]));
    if (this.settings.clientCertificates) files.add(this.settings.clientCertificates.ca);
    for (const file of files) {
      this.watches.push(
        watchFile({
          path: file,
          // A renewal writes the certificate, then the key: wait for both before reading.
          debounceMs: 200,
          pollMs: this.settings.watchMs,
          fsWatch: true,
          logger: this.logger,
          onChange: () => this.scheduleReload(),
        }),
      );
    }
  }

  private scheduleReload(): void {
    if (this.reloadTimer !== undefined) return;
    this.reloadTimer = setTimeout(() => {
      this.reloadTimer = undefined;
      void this.reload();
    }, 50);
    this.reloadTimer.unref();
  }

  /**
   * Reads every file again: the set to apply when a file changed (a file that does not load keeps
   * its previous version, and is refused with its file named), or undefined when nothing changed.
   */
  protected reread(): TlsFileSet | undefined {
    let changed = false;
    const pairs = [...this.pairs];
    this.settings.certificates.forEach((entry, index) => {
      let pair: CertificatePair;
      try {
        pair = readCertificatePair(entry, index);
        const problem = expiryProblem(pair, entry.cert, `tls.certificates[${index}].cert`);
        if (problem?.level === 'error') throw new TlsFileError(entry.cert, `tls.certificates[${index}].cert`, problem.message.replace(/^\S+ \S+: /, ''));
      } catch (error) {
        if (!(error instanceof TlsFileError)) throw error;
        this.refuse(error.file, error.message);
        return;
      }
      const previous = this.pairs[index]!;
      if (pair.certPem === previous.certPem && pair.keyPem === previous.keyPem && sameNames(pair.names, previous.names)) return;
      pairs[index] = pair;
      changed = true;
    });
    let ca = this.ca;
    if (this.settings.clientCertificates) {
      try {
        ca = readCaBundle(this.settings.clientCertificates.ca);
        if (ca !== this.ca) changed = true;
      } catch (error) {
        if (!(error instanceof TlsFileError)) throw error;
        this.refuse(error.file, error.message);
        ca = this.ca;
      }
    }
    return changed ? { pairs, ca } : undefined;
  }

  /** Logs an applied reload, naming each certificate file. */
  protected reloaded(message: string): void {
    this.appliedReloads++;
    this.logger.info(
      { event: 'tls-reloaded', certificates: this.pairs.map((pair, i) => ({ file: this.settings.certificates[i]!.cert, names: pair.names, notAfter: pair.notAfter.toISOString() })) },
      message,
    );
  }

  protected refuse(file: string, message: string): void {
    this.refusedReloads++;
    this.logger.error({ event: 'tls-reload-refused', file }, `TLS reload refused, the previous certificate stays: ${message}`);
  }

  close(): void {
    for (const watch of this.watches) watch.close();
    this.watches = [];
    clearTimeout(this.reloadTimer);
  }
}

function sameNames(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((name, i) => name === b[i]);
}
