import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { configReference, errorsReference, generatedDocs } from '../../src/config/reference.js';
import { ErrorCodes } from '../../src/errors.js';
import { identitySources } from '../../src/identity/index.js';
import { strategies } from '../../src/rules/strategies/index.js';

describe('generated reference docs', () => {
  it('the committed docs are what the generator produces', () => {
    for (const [file, expected] of Object.entries(generatedDocs())) {
      const committed = readFileSync(new URL(`../../${file}`, import.meta.url), 'utf8');
      expect(committed === expected, `${file} is out of date: run \`npm run docs\` and commit the result`).toBe(true);
    }
  });

  it('documents every strategy, identity source and error code', () => {
    const config = configReference();
    for (const kind of Object.keys(strategies)) {
      expect(config).toContain(`### Strategy \`${kind}\``);
      expect(config).toContain(`| \`services[].release.rules[].${kind}\` | [${kind}](#strategy-${kind.toLowerCase()}) |`);
    }
    for (const kind of Object.keys(identitySources)) expect(config).toContain(`### Identity source \`${kind}\``);
    const errors = errorsReference();
    for (const [code, { status }] of Object.entries(ErrorCodes)) expect(errors).toContain(`| \`${code}\` | ${status} |`);
  });

  it('lists fields with their type, default and description', () => {
    const config = configReference();
    expect(config).toContain(
      '| `upstreams.<name>.timeouts.connectMs` | integer (≥ 0, ≤ 86400000) | `2000` | Time to open a connection to a server. |',
    );
    expect(config).toContain('| `services[].stable` | string | required | Upstream that serves the stable version. |');
    expect(config).toContain('| `uidRange.ranges[].from` | integer | required | First user id in the range (inclusive). |');
    // A pipe inside a cell would break the table.
    for (const line of config.split('\n').filter((l) => l.startsWith('| `'))) {
      expect(line.replace(/\\\|/g, '').split('|').length, line).toBe(6);
    }
  });
});
