// Reading every version of a topic's schema, through the real registry and broker. The three
// versions of a test event live in test/fixtures/versions/v{1,2,3}; their "generated types" are
// descriptors that buf compiles from those files at test time.
import { execFile, execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { create, createFileRegistry, fromBinary, type DescMessage } from '@bufbuild/protobuf';
import { FileDescriptorSetSchema } from '@bufbuild/protobuf/wkt';
import { Partitioners } from 'kafkajs';
import { afterAll, describe, expect, it } from 'vitest';
import { EventRegistry, SchemaIncompatibleError } from '../../src/events/registry.ts';
import { config, kafka, readTopic, registrySubjects } from '../support/stack.ts';

const BUF = fileURLToPath(new URL('../../node_modules/.bin/buf', import.meta.url));
const VERSIONS = fileURLToPath(new URL('../fixtures/versions/', import.meta.url));
const REGISTRY_URL = config.SCHEMA_REGISTRY_URL;

/** One version of fixture.v1.ParcelShipped: its .proto directory and its compiled type. */
function version(name: 'v1' | 'v2' | 'v3'): { protoRoot: string; schema: DescMessage } {
  const protoRoot = `${VERSIONS}${name}`;
  const set = fromBinary(FileDescriptorSetSchema, execFileSync(BUF, ['build', protoRoot, '-o', '-#format=binpb']));
  const schema = createFileRegistry(set).getMessage('fixture.v1.ParcelShipped');
  if (schema === undefined) throw new Error(`${protoRoot} does not declare fixture.v1.ParcelShipped`);
  return { protoRoot, schema };
}
const v1 = version('v1');
const v2 = version('v2');
const v3 = version('v3');

const k = kafka();
const kafkaTopics: string[] = [];
const registrySubjectsOfFile = registrySubjects(REGISTRY_URL);
const uniqueTopic = () => registrySubjectsOfFile.uniqueTopic('test.events.parcel');

afterAll(async () => {
  await registrySubjectsOfFile.cleanup();
  if (kafkaTopics.length === 0) return;
  const admin = k.admin();
  await admin.connect();
  await admin.deleteTopics({ topics: kafkaTopics }).finally(() => admin.disconnect());
});

async function createTopic(): Promise<string> {
  const topic = uniqueTopic();
  kafkaTopics.push(topic);
  const admin = k.admin();
  await admin.connect();
  try {
    expect(await admin.createTopics({ topics: [{ topic, numPartitions: 1, replicationFactor: config.KAFKA_REPLICATION_FACTOR }], waitForLeaders: true })).toBe(true);
  } finally {
    await admin.disconnect();
  }
  return topic;
}

async function produce(topic: string, values: Buffer[]): Promise<void> {
  const producer = k.producer({ createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  try {
    await producer.send({ topic, messages: values.map((value, i) => ({ key: `parcel-${i}`, value })) });
  } finally {
    await producer.disconnect();
  }
}

async function subjectVersions(subject: string): Promise<unknown> {
  return (await fetch(`${REGISTRY_URL}/subjects/${subject}/versions`)).json();
}

describe('a topic whose schema gains versions', () => {
  it('is read in full by consumers built with the newest and with the oldest types', async () => {
    const topic = await createTopic();

    const producerV1 = await new EventRegistry({ url: REGISTRY_URL, compatibility: 'BACKWARD_TRANSITIVE', protoRoot: v1.protoRoot }).forTopic(topic, v1.schema);
    await produce(topic, [
      producerV1.encode(create(v1.schema, { parcelId: 'p-1', weightGrams: 1200 })),
      producerV1.encode(create(v1.schema, { parcelId: 'p-2', weightGrams: 800 })),
    ]);
    const producerV2 = await new EventRegistry({ url: REGISTRY_URL, compatibility: 'BACKWARD_TRANSITIVE', protoRoot: v2.protoRoot }).forTopic(topic, v2.schema);
    await produce(topic, [
      producerV2.encode(create(v2.schema, { parcelId: 'p-3', weightGrams: 500, carrier: 'DHL' })),
      producerV2.encode(create(v2.schema, { parcelId: 'p-4', weightGrams: 90, carrier: 'UPS' })),
    ]);

    expect(producerV2.schemaId).not.toBe(producerV1.schemaId);
    expect(await subjectVersions(producerV1.subject)).toEqual([1, 2]);
    const records = await readTopic(k, topic);
    expect(records.map((r) => r.value.readUInt32BE(1))).toEqual([producerV1.schemaId, producerV1.schemaId, producerV2.schemaId, producerV2.schemaId]);

    // Consumers register nothing: a fresh registry client with the reader's types only.
    const withV2Types = new EventRegistry({ url: REGISTRY_URL, compatibility: 'BACKWARD_TRANSITIVE' }).decoderFor(v2.schema);
    const readByV2 = await Promise.all(records.map((r) => withV2Types.decode(r.value)));
    expect(readByV2).toEqual([
      expect.objectContaining({ parcelId: 'p-1', weightGrams: 1200, carrier: '' }),
      expect.objectContaining({ parcelId: 'p-2', weightGrams: 800, carrier: '' }),
      expect.objectContaining({ parcelId: 'p-3', weightGrams: 500, carrier: 'DHL' }),
      expect.objectContaining({ parcelId: 'p-4', weightGrams: 90, carrier: 'UPS' }),
    ]);

    const withV1Types = new EventRegistry({ url: REGISTRY_URL, compatibility: 'BACKWARD_TRANSITIVE' }).decoderFor(v1.schema);
    const readByV1 = await Promise.all(records.map((r) => withV1Types.decode(r.value)));
    expect(readByV1.map((m) => [m.$typeName, m])).toEqual([
      ['fixture.v1.ParcelShipped', expect.objectContaining({ parcelId: 'p-1', weightGrams: 1200 })],
      ['fixture.v1.ParcelShipped', expect.objectContaining({ parcelId: 'p-2', weightGrams: 800 })],
      ['fixture.v1.ParcelShipped', expect.objectContaining({ parcelId: 'p-3', weightGrams: 500 })],
      ['fixture.v1.ParcelShipped', expect.objectContaining({ parcelId: 'p-4', weightGrams: 90 })],
    ]);
    // The field v1 does not know is skipped, not misread (it is kept as an unknown field).
    for (const message of readByV1) expect(message).not.toHaveProperty('carrier');
    expect(readByV1[2]?.$unknown?.map((f) => f.no)).toEqual([3]);
  });

  it('refuses an incompatible version in the registry, so its producer does not start', async () => {
    const topic = uniqueTopic();
    const subject = `${topic}-value`;
    const at = (protoRoot: string) => new EventRegistry({ url: REGISTRY_URL, compatibility: 'BACKWARD', protoRoot });
    await at(v1.protoRoot).forTopic(topic, v1.schema);
    await at(v2.protoRoot).forTopic(topic, v2.schema);

    const refused: unknown = await at(v3.protoRoot).forTopic(topic, v3.schema).catch((e: unknown) => e);

    expect(refused).toBeInstanceOf(SchemaIncompatibleError);
    expect(refused).toMatchObject({ subject, compatibility: 'BACKWARD' });
    expect((refused as Error).message).toMatch(/Field type changed/);
    expect(await subjectVersions(subject)).toEqual([1, 2]);
  });

  it('refuses the incompatible version in `buf breaking` too, and accepts the compatible one', async () => {
    const breaking = (current: string, previous: string) =>
      promisify(execFile)(BUF, ['breaking', current, '--against', previous]).then(
        () => ({ code: 0, output: '' }),
        (err: { code: number; stdout: string; stderr: string }) => ({ code: err.code, output: err.stdout + err.stderr }),
      );

    expect(await breaking(v2.protoRoot, v1.protoRoot)).toEqual({ code: 0, output: '' });
    const v3AgainstV2 = await breaking(v3.protoRoot, v2.protoRoot);
    expect(v3AgainstV2.code).not.toBe(0);
    expect(v3AgainstV2.output).toContain('"weight_grams" on message "ParcelShipped" changed type from "int32" to "string"');
  });
});
