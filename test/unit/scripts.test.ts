// The script loader (src/store/scripts.ts): every script is defined on a client before its first
// call, with the number of keys its KEYS list builds, so a call passes its keys first. A Cluster
// client's auto-pipelining routes a call by its first argument; when the count came first, calls
// of coupons on different shards were batched together and failed.
import { describe, expect, it } from 'vitest';
import { runScript, scriptKeys } from '../../src/store/scripts.ts';

function recordingClient() {
  const definitions = new Map<string, { numberOfKeys?: number }>();
  const calls: { name: string; args: unknown[] }[] = [];
  const client: Record<string, unknown> = {
    options: {},
    defineCommand(name: string, def: { numberOfKeys?: number }) {
      definitions.set(name, def);
      client[name] = (...args: unknown[]) => { calls.push({ name, args }); return Promise.resolve('OK'); };
    },
  };
  return { client: client as unknown as Parameters<typeof runScript>[0], definitions, calls };
}

describe('the script loader', () => {
  it('defines every script on the first call, each with the key count of its KEYS, and passes the keys first', async () => {
    const { client, definitions, calls } = recordingClient();
    const couponId = '6d7990e0-e27e-4565-80fd-d1c0e73733dc';
    await runScript(client, 'gateConfirm', couponId, ['user', 3, 1]);
    // All of them at once: an auto-pipeline created later knows every script.
    expect(definitions.size).toBeGreaterThan(10);
    for (const [name, def] of definitions) expect(def.numberOfKeys, name).toBeGreaterThan(0);
    expect(definitions.get('gateConfirm')!.numberOfKeys).toBe(scriptKeys('gateConfirm', couponId).length);
    expect(definitions.get('gateLoad')!.numberOfKeys).toBe(scriptKeys('gateLoad', { couponId, token: 't' }).length);
    expect(calls).toEqual([{ name: 'gateConfirm', args: [...scriptKeys('gateConfirm', couponId), 'user', 3, 1] }]);
    expect(String(calls[0]!.args[0])).toContain(`{${couponId}}`);
  });
});
