import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { translateRegex } from '../../src/openresty/regex.js';
import { startNginx, type Nginx } from '../helpers/nginx.js';

/**
 * Regex tests of header, cookie and query rules: the JavaScript pattern graygate validates, and
 * the PCRE pattern normalize translates it to, run by ngx.re inside a real nginx, must match the
 * same values. Patterns PCRE cannot match the same way are refused, with the reason.
 */

let nginx: Nginx;
beforeAll(async () => {
  nginx = await startNginx({
    http: ([port]) => `
  client_max_body_size 64m; client_body_buffer_size 64m;
  server { listen 127.0.0.1:${port};
    location = /regex { content_by_lua_block { require("gg_test_harness").regex() } } }`,
  });
});
afterAll(() => nginx?.stop());

async function luaMatches(cases: { pattern: string; values: string[] }[]): Promise<boolean[][]> {
  const body = JSON.stringify(cases.map((c) => ({ pattern: c.pattern, values: c.values.map((v) => Buffer.from(v, 'utf8').toString('base64')) })));
  const response = await fetch(`${nginx.url}/regex`, { method: 'POST', body });
  const text = await response.text();
  if (response.status !== 200) throw new Error(`${response.status}: ${text}\n${nginx.output().slice(-2000)}`);
  return JSON.parse(text) as boolean[][];
}

const translatable = [
  '^beta$', 'bet', '^[0-9]+$', '^\\d{2,}$', '^.$', '^..$', '.', 'a\\sb', '\\S+\\s*$', '^\\s*$', '^[^a-z]*$', '(?:on|true)$', '^(?<n>[a-z]+)-\\d',
  'é', '^\\u00e9', '\\x41|\\x61', '^$', '[\\w-]+$', 'a{2}', 'x{,3}', 'x{2,}y', '{', 'a}', '^[\\]a]+$', 'beta(?=$)', '(?!on)^..', '[.]', '\\bon\\b',
  '\\Bn', '\\v|\\t', '[\\s]x', '[^\\s]', '\\W+', '\\D$', '[a-c-e]', '[-a]', '[a-]', '[!--]', '[[]', '[\\^x]', '^\\cJ', '\\0', '[\\b]', '\\/',
  'a*?b', 'a+?$', '(a|ab)(c|bcd)(d*)', '^(?:a|)$', '\\$', '\\.$', '\\\\', '[\\u00e0-\\u00ff]+', '\\n$', '^\\r?\\n', 'a$', '#x',
];
const refused: [string, RegExp][] = [
  ['(a)\\1', /backreference/],
  ['(?<x>a)\\k<x>', /named backreference/],
  ['(?<=a)b', /lookbehind/],
  ['(?<!a)b', /lookbehind/],
  ['\\p{L}', /\\p/],
  ['\\a', /\\a/],
  ['\\e', /\\e/],
  ['[]', /empty class/],
  ['[^]', /any character/],
  ['^[^]a]', /any character/],
  ['[\\d-z]', /range next to a class escape/],
  ['[a-\\d]', /range next to a class escape/],
  ['😀', /above U\+FFFF/],
  ['\\ud83d', /surrogate/],
  ['\\01', /octal/],
  ['[\\S]', /\\S inside a character class/],
];

const alphabet = ['a', 'b', 'c', 'd', 'e', 'n', 'o', 't', 'r', 'u', 'x', 'y', 'A', 'Z', '0', '1', '9', '_', '-', '.', ' ', '\t', '\n', '\r', '\v', '\f', '\u00a0', '\u2028', '\ufeff', '\u3000', 'é', 'à', 'ÿ', 'ß', '$', '^', '{', '}', ']', '[', '/', '\\', '#', '\0', '\b'];
const valueArb = fc.oneof(
  fc.string({ unit: fc.constantFrom(...alphabet), maxLength: 8 }),
  fc.constantFrom('beta', 'on', 'true', 'a b', 'ab-1', 'é', 'ée', '', '\n', 'x\n', 'on\n', 'aa', 'xxx', 'xy', 'abcd', 'abc'),
);

describe('regex translation', () => {
  it('matches exactly what JavaScript matches, on generated values (characters up to U+FFFF)', async () => {
    const cases = translatable.map((source) => {
      const translated = translateRegex(source);
      if ('issue' in translated) throw new Error(`${source}: ${translated.issue}`);
      return { source, pattern: translated.pattern, values: fc.sample(valueArb, { numRuns: 200 }) };
    });
    const lua = await luaMatches(cases);
    cases.forEach((c, i) => {
      const js = new RegExp(c.source);
      c.values.forEach((value, j) => expect(lua[i]![j], `${c.source} (PCRE ${c.pattern}) on ${JSON.stringify(value)}`).toBe(js.test(value)));
    });
  });

  it.each(refused)('refuses %j, saying why', (source, why) => {
    expect(() => new RegExp(source)).not.toThrow();
    const translated = translateRegex(source);
    expect('issue' in translated && translated.issue).toMatch(why);
  });

  // A known difference, listed in docs/openresty.md: a character above U+FFFF (possible only in a
  // decoded query value) is two UTF-16 code units to JavaScript and one character to PCRE.
  it('pins the one difference: characters above U+FFFF count once in PCRE, twice in JavaScript', async () => {
    const translated = translateRegex('^.$');
    if ('issue' in translated) throw new Error(translated.issue);
    const [[lua]] = (await luaMatches([{ pattern: translated.pattern, values: ['😀'] }])) as [[boolean]];
    expect(new RegExp('^.$').test('😀')).toBe(false);
    expect(lua).toBe(true);
  });
});
