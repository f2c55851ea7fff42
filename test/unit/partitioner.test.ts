// The publishing producer's remembered partitioner (src/events/kafka.ts) picks what kafkajs 2's
// default partitioner picks, for any key, partition count and explicit partition.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Kafka, Partitioners } from 'kafkajs';
import { createPublishingKafka } from '../../src/events/kafka.ts';

const log = { debug() {}, info() {}, warn() {}, error() {}, child() { return log; } } as never;

function captured(): () => (a: unknown) => number {
  const orig = Kafka.prototype.producer;
  let create: (() => (a: unknown) => number) | undefined;
  Kafka.prototype.producer = function (this: Kafka, cfg?: { createPartitioner?: () => (a: unknown) => number }) { create = cfg!.createPartitioner; return {} as never; };
  try { createPublishingKafka(['127.0.0.1:1'], 'partitioner-test', log, 1000).producer(); } finally { Kafka.prototype.producer = orig; }
  return create!;
}

describe('rememberedPartitions', () => {
  it('picks what kafkajs DefaultPartitioner picks for every keyed, unkeyed and explicit record', () => {
    const remembered = captured()();
    const reference = Partitioners.DefaultPartitioner();
    const meta = (n: number, down: number[]) => Array.from({ length: n }, (_, i) => ({ partitionId: i, leader: down.includes(i) ? -1 : 0, replicas: [0], isr: [0] }));
    const key = fc.oneof(fc.string(), fc.string({ unit: 'binary' }), fc.constantFrom('', '0', 'a\u0000b', '\ud800', '\udc00'), fc.uuid());
    fc.assert(fc.property(fc.constantFrom('t', 't2', 'x.y'), fc.integer({ min: 1, max: 64 }), key, fc.boolean(), fc.option(fc.integer({ min: 0, max: 63 })), fc.array(fc.integer({ min: 0, max: 63 }), { maxLength: 3 }), (topic, n, k, asBuffer, explicit, down) => {
      const message = { key: asBuffer ? Buffer.from(k) : k, value: 'v', partition: explicit ?? undefined };
      const args = { topic, partitionMetadata: meta(n, down), message };
      // twice each: the second answer is the remembered one
      for (let i = 0; i < 2; i++) expect(remembered(args), JSON.stringify({ topic, n, k })).toBe(reference(args as never));
    }), { numRuns: 30_000 });
    // a partition count that changes under one key
    const k = '3f2b6c1e-9a0d-4c5e-8f1a-2b3c4d5e6f70';
    for (const n of [3, 6, 3, 12, 1, 64]) expect(remembered({ topic: 't', partitionMetadata: meta(n, []), message: { key: k, value: 'v' } })).toBe(reference({ topic: 't', partitionMetadata: meta(n, []), message: { key: k, value: 'v' } } as never));
    // more than 10 000 keys (the memo is cleared) still agree
    for (let i = 0; i < 25_000; i++) {
      const a = { topic: 't', partitionMetadata: meta(7, []), message: { key: `k${i % 12_000}`, value: 'v' } };
      if (remembered(a) !== reference(a as never)) throw new Error(`key k${i}`);
    }
  });
});
