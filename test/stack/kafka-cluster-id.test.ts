// The local stack formats Kafka's storage with a fresh cluster id (`kafka-storage format -t <id>`).
// An id starting with '-' is read as an option and the format fails: once in 64 fresh stacks, a
// fresh clone's `npm start` or `npm test` (or a chaos run's own broker) could not start Kafka.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { newKafkaClusterId, stackDir } from '../../scripts/stack.ts';

describe('a new Kafka cluster id', () => {
  it('is 22 base64url characters and never starts with "-" (10,000 draws)', () => {
    const ids = Array.from({ length: 10_000 }, () => newKafkaClusterId());
    for (const id of ids) expect(id).toMatch(/^[A-Za-z0-9_][A-Za-z0-9_-]{21}$/);
    expect(new Set(ids).size).toBe(10_000);
  });

  it("is accepted by Kafka's own storage tool", () => {
    const dir = mkdtempSync(join(tmpdir(), 'kafka-format-'));
    try {
      const props = join(dir, 'server.properties');
      writeFileSync(props, [
        'process.roles=broker,controller', 'node.id=1', `log.dirs=${join(dir, 'data')}`,
        'controller.quorum.voters=1@127.0.0.1:1', 'listeners=PLAINTEXT://127.0.0.1:2,CONTROLLER://127.0.0.1:1',
        'controller.listener.names=CONTROLLER',
      ].join('\n'));
      const id = newKafkaClusterId();
      execFileSync('java', ['-Xmx64m', '-cp', `${join(stackDir, 'kafka', 'libs')}/*`, 'kafka.tools.StorageTool', 'format', '-t', id, '-c', props], { stdio: 'pipe' });
      expect(readFileSync(join(dir, 'data', 'meta.properties'), 'utf8')).toContain(`cluster.id=${id}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
