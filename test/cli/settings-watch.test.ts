import { readFileSync, writeFileSync } from 'node:fs';
import { parse, stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';

// Settings are read at start; routing is live. An edited setting must be announced (once), not
// silently ignored, and must not disturb routing.
describe('editing settings in the config file of a running gateway', () => {
  let backend: Backend;
  let gateway: GatewayProcess;

  const edit = (change: (config: Record<string, any>) => void) => {
    const config = parse(readFileSync(gateway.configPath, 'utf8')) as Record<string, any>;
    change(config);
    writeFileSync(gateway.configPath, stringify(config));
  };
  const settingsLines = () => gateway.logs().filter((line) => line.event === 'settings-changed' || line.event === 'settings-invalid');

  beforeAll(async () => {
    backend = await startBackend('stable');
    gateway = await startGatewayProcess({
      config: { upstreams: { stable: { servers: [backend.url] } }, services: [{ name: 'web', stable: 'stable' }] },
    });
  });
  afterAll(async () => {
    await gateway.stop();
    await backend.close();
  });

  it('a routing-only edit applies live and says nothing about settings', async () => {
    const since = gateway.logs().length;
    edit((config) => (config.upstreams.spare = { servers: [backend.url] }));
    await gateway.waitForLog((line) => typeof line.msg === 'string' && line.msg.startsWith('applied routing version 2'), { since });
    // The settings watch reads the same file on the same change: give it the same chance.
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(settingsLines()).toHaveLength(0);
  });

  it('a changed setting is announced once, naming it, and routing is untouched', async () => {
    edit((config) => (config.proxy = { keepAliveTimeoutMs: 1234 }));
    const line = await gateway.waitForLog((l) => l.event === 'settings-changed');
    expect(line.changed).toEqual(['proxy']);
    expect(line.msg).toMatch(/apply at the next restart/);
    // Touching the file again with the same content says nothing more.
    edit(() => {});
    await new Promise((resolve) => setTimeout(resolve, 700));
    expect(settingsLines()).toHaveLength(1);
    const reply = await fetch(gateway.url);
    expect(reply.status).toBe(200);
  });

  it('settings that no longer validate are reported, and the gateway keeps serving', async () => {
    edit((config) => (config.proxy = { keepAliveTimeoutMs: 'soon' }));
    const line = await gateway.waitForLog((l) => l.event === 'settings-invalid');
    expect(String(line.msg)).toMatch(/proxy\.keepAliveTimeoutMs/);
    await eventually(async () => expect((await fetch(gateway.url)).status).toBe(200));
  });
});
