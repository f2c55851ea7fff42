// Types for scripts/stack.mjs, which tests import to start and stop extra brokers.
export interface KafkaInstance { dir: string; port: number; controllerPort: number; heap: string }
export const defaultKafka: KafkaInstance;
export function kafkaUp(inst?: KafkaInstance): Promise<void>;
export function kafkaDown(inst?: KafkaInstance, signal?: NodeJS.Signals): Promise<void>;
export function up(): Promise<void>;
export function down(): Promise<void>;
