import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startNginx, type Nginx } from '../helpers/nginx.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';

/**
 * resp.lua, the Redis client the OpenResty data plane carries (Debian has no lua-resty-redis),
 * inside a real nginx against a real redis-server with a password: each location runs one
 * scenario and answers what it saw as JSON.
 */

const PASSWORD = 'p@ss:w/rd';
let redis: RedisServer;
let nginx: Nginx;

const scenario = (name: string, body: string) => `
    location = /${name} {
      content_by_lua_block {
        local cjson = require "cjson"
        local resp = require "graygate.resp"
        local s = assert(resp.parse_url(ngx.unescape_uri(ngx.var.arg_url)))
        local out = {}
        ${body}
        ngx.say(cjson.encode(out))
      }
    }`;

beforeAll(async () => {
  redis = await startRedis({ password: PASSWORD });
  nginx = await startNginx({
    workers: 1,
    http: (ports) => `
  lua_socket_log_errors off;
  server {
    listen 127.0.0.1:${ports[0]};
    location = /ready { return 200; }
    ${scenario(
      'commands',
      `
        local red = assert(resp.connect(s))
        out.builtin = not resp.using_resty_redis
        out.set = red:set("resp:k", "a\\r\\nb c")
        out.get = red:get("resp:k")
        out.missing = red:get("resp:none") == ngx.null
        local ok, err = red:command("NOSUCHCOMMAND")
        out.error = { ok, err }
        out.del = red:del("resp:k", "resp:none")
        out.mget = red:mget("resp:k", "resp:x")
        out.mget[1] = out.mget[1] == ngx.null and "null" or out.mget[1]
        out.mget[2] = out.mget[2] == ngx.null and "null" or out.mget[2]
        out.fresh = red:get_reused_times()
        resp.release(red, s)
        local again = assert(resp.connect(s))
        -- From the pool: no AUTH or SELECT again, and still on the database the URL names.
        out.reused = again:get_reused_times()
        again:set("resp:db", "here")
        resp.release(again, s)
      `,
    )}
    ${scenario(
      'eval',
      `
        local red = assert(resp.connect(s))
        red:script("FLUSH")
        local script = "return {KEYS[1], ARGV[1], redis.call('INCR', KEYS[1])}"
        local sha = resp.sha1_hex(script)
        out.sha = sha
        out.first = resp.eval_cached(red, sha, script, 1, "resp:n", "x")
        out.second = red:evalsha(sha, 1, "resp:n", "y")
        resp.release(red, s)
      `,
    )}
    ${scenario(
      'pubsub',
      `
        local sub = assert(resp.connect(s))
        out.subscribed = sub:subscribe("resp:a", "resp:b")
        ngx.timer.at(0.05, function()
          local pub = assert(resp.connect(s))
          pub:publish("resp:b", "hello")
          resp.release(pub, s)
        end)
        out.message = sub:read_reply()
        sub:set_timeout(50)
        local none, err = sub:read_reply()
        out.quiet = { none == nil, err }
        -- A subscribed connection must not go back to the pool.
        out.pooled = { sub:set_keepalive(1000, 10) }
      `,
    )}
    ${scenario(
      'badauth',
      `
        s.password = "wrong"
        s.pool_name = nil
        local red, err = resp.connect(s)
        out.connected = red ~= nil
        out.err = err
      `,
    )}
    location = /uninitialized {
      content_by_lua_block {
        -- token.init never called in this nginx: no identity, not an error.
        local uid = require("graygate.token").resolve({ keyPrefix = "TOKEN_", keySuffix = "" }, "abc")
        ngx.say(uid == nil and "none" or uid)
      }
    }
    location = /urls {
      content_by_lua_block {
        local cjson = require "cjson"
        local resp = require "graygate.resp"
        local out = {}
        for _, url in ipairs({ "redis://127.0.0.1", "redis://:secret@10.0.0.9:6380/3", "redis://user:p%40ss@[::1]:7000", "rediss://x:1", "redis://h:1/x", "http://h" }) do
          local s, err = resp.parse_url(url)
          out[#out + 1] = s and { host = s.host, port = s.port, db = s.db, password = s.password or cjson.null, username = s.username or cjson.null } or { err = err }
        end
        ngx.say(cjson.encode(out))
      }
    }
  }`,
  });
});
afterAll(async () => {
  await nginx?.stop();
  await redis?.stop();
});

const url = () => `redis://:${encodeURIComponent(PASSWORD)}@127.0.0.1:${redis.port}/2`;
const run = async (name: string) => {
  const response = await fetch(`${nginx.url}/${name}?url=${encodeURIComponent(url())}`);
  const text = await response.text();
  expect(response.status, text + nginx.output()).toBe(200);
  return JSON.parse(text) as Record<string, unknown>;
};

describe('resp.lua', () => {
  it('GET/SET/DEL/MGET with binary-safe values, missing values as ngx.null, error replies as false + message, AUTH and SELECT once per pooled connection', async () => {
    const out = await run('commands');
    expect(out).toMatchObject({ builtin: true, set: 'OK', get: 'a\r\nb c', missing: true, del: 1, mget: ['null', 'null'], fresh: 0, reused: 1 });
    expect(out.error).toEqual([false, expect.stringMatching(/^ERR unknown command/)]);
    // SELECT 2 applied: the key is in database 2, not 0.
    expect(await redis.client.get('resp:db')).toBeNull();
    await redis.client.select(2);
    expect(await redis.client.get('resp:db')).toBe('here');
    await redis.client.select(0);
  });

  it('EVALSHA falls back to EVAL on NOSCRIPT, then the script is cached', async () => {
    const out = await run('eval');
    expect(out.sha).toMatch(/^[0-9a-f]{40}$/);
    expect(out.first).toEqual(['resp:n', 'x', 1]);
    expect(out.second).toEqual(['resp:n', 'y', 2]);
  });

  it('SUBSCRIBE to several channels, a message by read_reply, a timeout when quiet, never pooled', async () => {
    const out = await run('pubsub');
    expect(out.subscribed).toEqual(['subscribe', 'resp:a', 1]);
    expect(out.message).toEqual(['message', 'resp:b', 'hello']);
    expect(out.quiet).toEqual([true, 'timeout']);
    expect((out.pooled as unknown[])[0]).toBeNull();
  });

  it('a wrong password is an error naming AUTH, not a connection', async () => {
    const out = await run('badauth');
    expect(out.connected).toBe(false);
    expect(out.err).toMatch(/^redis auth: /);
  });

  it('token.resolve in an nginx whose init_worker never called token.init is no identity, not a 500', async () => {
    const response = await fetch(`${nginx.url}/uninitialized`);
    expect(response.status).toBe(200);
    expect((await response.text()).trim()).toBe('none');
    expect(nginx.output()).toContain('token.init was not called');
  });

  it('parses redis:// URLs and refuses what the Lua side cannot do, saying why', async () => {
    const out = (await (await fetch(`${nginx.url}/urls`)).json()) as Record<string, unknown>[];
    expect(out[0]).toEqual({ host: '127.0.0.1', port: 6379, db: 0, password: null, username: null });
    expect(out[1]).toEqual({ host: '10.0.0.9', port: 6380, db: 3, password: 'secret', username: null });
    expect(out[2]).toEqual({ host: '::1', port: 7000, db: 0, password: 'p@ss', username: 'user' });
    expect(out[3]!.err).toMatch(/only redis:\/\/.*rediss/);
    expect(out[4]!.err).toMatch(/database number/);
    expect(out[5]!.err).toMatch(/only redis:\/\//);
  });
});
