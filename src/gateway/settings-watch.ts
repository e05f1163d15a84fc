import { readFile } from 'node:fs/promises';
import { isDeepStrictEqual } from 'node:util';
import { parseConfigText, parseSettings } from '../config/load.js';
import { routingKeys, type Settings } from '../config/schema.js';
import type { Logger } from '../observe/log.js';
import { watchFile, type FileWatch } from '../store/file/watch-file.js';

/**
 * Settings (listen, proxy, store, admin, log…) are read once, at start; only the routing document
 * is live. An operator who edits a setting in the file and sees nothing happen deserves to be
 * told, once per distinct edit, which settings wait for a restart. Routing edits are not this
 * watch's business (the store applies them), and an edit that makes the settings invalid is
 * reported here too, since the next restart would refuse it.
 */
export function watchSettings(options: { configPath: string; startedWith: Settings; logger: Logger; pollMs?: number }): FileWatch {
  const { configPath, startedWith, logger } = options;
  let lastReported: string | undefined;
  const check = async (): Promise<void> => {
    let report: { key: string; level: 'warn' | 'info'; fields: object; message: string };
    try {
      const { raw } = parseConfigText(await readFile(configPath, 'utf8'), configPath);
      const settingsPart: Record<string, unknown> = {};
      if (raw !== null && typeof raw === 'object' && !Array.isArray(raw)) {
        for (const [key, value] of Object.entries(raw)) if (!(routingKeys as string[]).includes(key)) settingsPart[key] = value;
      }
      const now = parseSettings(settingsPart, configPath);
      const changed = (Object.keys(startedWith) as (keyof Settings)[]).filter((key) => !isDeepStrictEqual(now[key], startedWith[key]));
      if (changed.length === 0) {
        report = { key: '', level: 'info', fields: {}, message: '' };
      } else {
        report = {
          key: `changed:${changed.join(',')}:${JSON.stringify(changed.map((key) => now[key]))}`,
          level: 'warn',
          fields: { event: 'settings-changed', changed, path: configPath },
          message: `settings changed in ${configPath} (${changed.join(', ')}): they apply at the next restart; only routing changes apply live`,
        };
      }
    } catch (error) {
      const issues = (error as { issues?: string[] }).issues;
      report = {
        key: `invalid:${(error as Error).message}`,
        level: 'warn',
        fields: { event: 'settings-invalid', path: configPath, issues },
        message: `the settings in ${configPath} no longer validate; the running gateway is unaffected, but a restart would refuse them: ${(error as Error).message}`,
      };
    }
    if (report.key === lastReported) return;
    lastReported = report.key;
    if (report.key !== '') logger[report.level](report.fields, report.message);
  };
  return watchFile({ path: configPath, debounceMs: 100, pollMs: options.pollMs ?? 2_000, fsWatch: true, logger, onChange: () => void check() });
}
