// "Drained": every consumer group has committed everything on its topic, and Redis holds no
// reservation or redemption change whose publish has not finished (the recovery loops republish
// those). Polled until it holds twice in a row, within a bound; what never drained is returned.
import type { Admin } from 'kafkajs';
import type { Redis } from 'ioredis';
import { couponKeys } from '../src/store/keys.ts';
import { sleep } from './journal.ts';

export interface Drainable { groupId: string; topic: string }

async function lag(admin: Admin, { groupId, topic }: Drainable): Promise<number> {
  const ends = await admin.fetchTopicOffsets(topic);
  const [committed] = await admin.fetchOffsets({ groupId, topics: [topic] });
  let total = 0;
  for (const end of ends) {
    const c = Number(committed?.partitions.find((p) => p.partition === end.partition)?.offset ?? -1);
    const from = c >= 0 ? c : Number(end.low);
    total += Math.max(0, Number(end.high) - from);
  }
  return total;
}

/** A lagging group with no members has a consumer that stopped inside a process still running. */
async function membership(admin: Admin, groupId: string): Promise<string> {
  try {
    const { groups } = await admin.describeGroups([groupId]);
    const g = groups[0];
    return g ? `group-${g.state}-with-${g.members.length}-members` : 'group-unknown';
  } catch (err) {
    return `group-not-described:${(err as Error).message.replaceAll(' ', '-')}`;
  }
}

export async function backlog(admin: Admin, redis: Redis, couponIds: readonly string[], consumers: Drainable[]): Promise<string[]> {
  const left: string[] = [];
  for (const c of consumers) {
    const n = await lag(admin, c);
    if (n > 0) left.push(`${c.groupId}-lag=${n}(${await membership(admin, c.groupId)})`);
  }
  for (const [i, couponId] of couponIds.entries()) {
    const k = couponKeys(couponId);
    const [pending, outbox] = await Promise.all([redis.zcard(k.pending), redis.zcard(k.outbox)]);
    const of = i === 0 ? '' : `(coupon-${couponId})`;
    if (pending > 0) left.push(`pending-reservations${of}=${pending}`);
    if (outbox > 0) left.push(`unpublished-redemption-changes${of}=${outbox}`);
  }
  return left;
}

/** Resolves with [] once drained (twice in a row, 1 s apart), or with what was left after `ms`. */
export async function settle(admin: Admin, redis: Redis, couponIds: readonly string[], consumers: Drainable[], ms: number): Promise<string[]> {
  const deadline = Date.now() + ms;
  let clean = 0;
  let left: string[] = ['not checked'];
  while (Date.now() < deadline) {
    try {
      left = await backlog(admin, redis, couponIds, consumers);
    } catch (err) {
      left = [`check-failed:${(err as Error).message.replaceAll(' ', '-')}`];
    }
    clean = left.length === 0 ? clean + 1 : 0;
    if (clean >= 2) return [];
    await sleep(1_000);
  }
  return left;
}
