import { describe, expect, it } from 'vitest';
import { RedisStoreSettings, StoreSettings } from '../../src/config/schema.js';
import { ConfigError } from '../../src/errors.js';
import { parseRedisUrl, redactRedisUrl } from '../../src/store/redis/url.js';

function refusal(text: string): ConfigError {
  try {
    parseRedisUrl(text);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error(`${text} was accepted`);
}

describe('redis connection strings', () => {
  it('redis:// and rediss:// go to ioredis as they are', () => {
    expect(parseRedisUrl('redis://127.0.0.1:6379')).toMatchObject({ topology: 'standalone', url: 'redis://127.0.0.1:6379' });
    expect(parseRedisUrl('rediss://:s3cret@cache.internal:6380/2')).toMatchObject({
      topology: 'standalone',
      display: 'rediss://:***@cache.internal:6380/2',
    });
  });

  it('redis+sentinel:// names the sentinels, the master, the db and the passwords', () => {
    expect(parseRedisUrl('redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2,[::1]:26380/mymaster/3?sentinelPassword=sp')).toEqual({
      topology: 'sentinel',
      sentinels: [
        { host: '10.0.0.1', port: 26379 },
        { host: '10.0.0.2', port: 26379 },
        { host: '::1', port: 26380 },
      ],
      masterName: 'mymaster',
      username: undefined,
      password: 'pw',
      sentinelPassword: 'sp',
      db: 3,
      display: 'redis+sentinel://:***@10.0.0.1:26379,10.0.0.2,[::1]:26380/mymaster/3?sentinelPassword=sp',
    });
  });

  it('redis+cluster:// lists seed nodes', () => {
    expect(parseRedisUrl('redis+cluster://app:pw@n1:7000,n2:7001')).toMatchObject({
      topology: 'cluster',
      nodes: [
        { host: 'n1', port: 7000 },
        { host: 'n2', port: 7001 },
      ],
      username: 'app',
      password: 'pw',
      display: 'redis+cluster://app:***@n1:7000,n2:7001',
    });
  });

  it('refuses malformed strings with store.url in the message and no password in it', () => {
    expect(refusal('http://127.0.0.1:6379').message).toMatch(/^store\.url: expected redis:\/\//);
    expect(refusal('redis+sentinel://:hunter2@h:26379').message).toMatch(/masterName/);
    expect(refusal('redis+sentinel://:hunter2@h:26379').message).not.toContain('hunter2');
    expect(refusal('redis+cluster://h:7000/1').message).toMatch(/no path/);
    expect(refusal('redis+cluster://h:99999').message).toMatch(/host:port/);
    expect(refusal('redis://h:6379/x').message).toMatch(/database number/);
  });

  it('redacts passwords for logs', () => {
    expect(redactRedisUrl('redis://user:pw@h:1')).toBe('redis://user:***@h:1');
    expect(redactRedisUrl('redis://h:1')).toBe('redis://h:1');
  });

  it('the settings schema takes a redis store with defaults and names a bad url field', () => {
    expect(StoreSettings.parse({ kind: 'redis', url: 'redis://127.0.0.1:6379' })).toEqual({
      kind: 'redis',
      url: 'redis://127.0.0.1:6379',
      namespace: 'graygate',
      pollMs: 2_000,
      historyLimit: 200,
      commandTimeoutMs: 2_000,
      pingMs: 1_000,
    });
    const bad = RedisStoreSettings.safeParse({ kind: 'redis', url: 'localhost:6379', namespace: '{x}' });
    expect(bad.success).toBe(false);
    const paths = bad.error!.issues.map((issue) => issue.path.join('.'));
    expect(paths).toEqual(expect.arrayContaining(['url', 'namespace']));
  });
});
