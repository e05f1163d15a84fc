import { describe, expect, it } from 'vitest';
import { parseConfig, parseConfigText, parseSettings } from '../../src/config/load.js';
import { RedisStoreSettings } from '../../src/config/schema.js';
import { dropInAdmin, dropInDocument, flagsIgnored } from '../../src/cli/drop-in.js';
import { docBlock } from '../helpers/doc-blocks.js';

// docs/drop-in.md shows the drop-in's config-file equivalent: it must stay the same gateway.
describe('docs/drop-in.md: the config file equivalent of the drop-in flags', () => {
  const text = docBlock('docs/drop-in.md', 'drop-in-config');
  const file = parseConfig(parseConfigText(text, 'docs/drop-in.md').raw, 'docs/drop-in.md');

  it('is the routing the flags build (--range-start exclusive)', () => {
    const flags = dropInDocument({
      stable: 'http://127.0.0.1:8080',
      candidate: 'http://127.0.0.1:9090',
      tokenHeader: 'TOKEN',
      tokenKey: 'TOKEN_{token}',
      rangeKey: 'Grayscale_Range',
      rangeStart: 'exclusive',
    });
    expect(file.routing).toEqual(flags);
    expect(flagsIgnored(file.routing!, flags)).toEqual([]);
  });

  it('has the settings the flags give (--listen, --redis with the drop-in\'s poll, --admin with a token in the environment)', () => {
    expect(file.settings.listen).toEqual(parseSettings({ listen: '127.0.0.1:1111' }).listen);
    expect(file.settings.store).toEqual(RedisStoreSettings.parse({ pollMs: 500, kind: 'redis', url: 'redis://127.0.0.1:6379' }));
    expect(file.settings.admin).toEqual(parseSettings({ admin: dropInAdmin('127.0.0.1:9901', undefined, { GRAYGATE_ADMIN_TOKEN: 'x'.repeat(20) }) }).admin);
  });
});

describe('dropInAdmin', () => {
  it('adds the token only when its variable is set; a variable named by the flag must be set', () => {
    expect(dropInAdmin('127.0.0.1:9901', undefined, {}).tokens).toEqual([]);
    expect(dropInAdmin('127.0.0.1:9901', 'MY_TOKEN', { MY_TOKEN: 'y'.repeat(20) }).tokens).toEqual([{ name: 'admin', tokenEnv: 'MY_TOKEN' }]);
    expect(() => dropInAdmin('127.0.0.1:9901', 'MY_TOKEN', {})).toThrow(/--admin-token-env: environment variable MY_TOKEN is not set/);
  });
});
