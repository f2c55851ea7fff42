// The verdict: the stored state (PostgreSQL ledger, the run's Redis) against what every user and
// every order was told. Each violation is one token, "<invariant>:<who>:<what>", so the last line
// can list them.
import type { Knex } from 'knex';
import type { Redis } from 'ioredis';
import { couponKeys, parseRedemptionValue } from '../src/store/keys.ts';
import type { PaymentService } from './payments.ts';
import type { Buyers } from './users.ts';

interface LedgerRow { user_id: string; seq: number; order_id: string | null; redemption_version: number; redeemed_at: Date | null }

export interface CheckInput {
  db: Knex;
  redis: Redis;
  couponId: string;
  quantity: number;
  buyers: Buyers;
  payments: PaymentService;
}

export interface Verdict { violations: string[]; issued: number; issuedCount: number }

export async function check(o: CheckInput): Promise<Verdict> {
  const v: string[] = [];
  const k = couponKeys(o.couponId);
  const coupon = await o.db('coupons').where({ id: o.couponId }).first<{ total_quantity: number; issued_count: number } | undefined>('total_quantity', 'issued_count');
  if (!coupon) return { violations: [`CHECK:coupon-${o.couponId}-not-in-ledger`], issued: 0, issuedCount: 0 };
  const rows = await o.db('user_coupons').where({ coupon_id: o.couponId })
    .select<LedgerRow[]>('user_id', 'seq', 'order_id', 'redemption_version', 'redeemed_at');
  const cancellations = await o.db('redemption_cancellations').where({ coupon_id: o.couponId }).select<{ user_id: string; order_id: string }[]>('user_id', 'order_id');
  const byUser = new Map(rows.map((r) => [r.user_id, r]));
  const Q = o.quantity;

  // I1: never more than Q, and only seqs 1..Q.
  if (rows.length > Q) v.push(`I1:rows=${rows.length}>Q=${Q}`);
  if (coupon.issued_count > Q) v.push(`I1:issued_count=${coupon.issued_count}>Q=${Q}`);
  if (coupon.issued_count !== rows.length) v.push(`I1:issued_count=${coupon.issued_count}≠rows=${rows.length}`);
  for (const r of rows) if (r.seq < 1 || r.seq > Q) v.push(`I1:${r.user_id}:seq=${r.seq}-outside-1..${Q}`);

  // I1 as the callers saw it: no unit promised twice, and no more OKs than units.
  const told = new Map<number, string[]>();
  for (const w of o.buyers.winners()) for (const seq of w.toldSeqs) told.set(seq, [...(told.get(seq) ?? []), w.userId]);
  const toldOk = o.buyers.winners().length;
  if (toldOk > Q) v.push(`I1:users-told-OK=${toldOk}>Q=${Q}`);
  for (const [seq, users] of told) if (users.length > 1) v.push(`I1:seq=${seq}:told-to-${users.join('+')}`);

  // I2: one row per user, each seq once.
  const seqOwners = new Map<number, string[]>();
  for (const r of rows) seqOwners.set(r.seq, [...(seqOwners.get(r.seq) ?? []), r.user_id]);
  for (const [seq, users] of seqOwners) if (users.length > 1) v.push(`I2:seq=${seq}:rows-for-${users.join('+')}`);
  if (byUser.size !== rows.length) v.push(`I2:duplicate-user-rows=${rows.length - byUser.size}`);

  // I3: whoever heard OK holds a row, with the seq they were told (and were told only one).
  for (const w of o.buyers.winners()) {
    const row = byUser.get(w.userId);
    const heard = w.toldSeqs.join('+');
    if (!row) v.push(`I3:${w.userId}:told=${heard}@${w.toldAt[0]!.toFixed(0)}s:no-ledger-row`);
    else if (w.toldSeqs.length > 1 || w.toldSeqs[0] !== row.seq) v.push(`I3:${w.userId}:told=${heard}:ledger-seq=${row.seq}`);
  }

  // I4: demand exceeded Q, so every unit is issued.
  if (rows.length < Q) v.push(`I4:issued=${rows.length}<Q=${Q}`);
  const winnersInRedis = await o.redis.hgetall(k.winners);
  const gateArmed = (await o.redis.exists(k.meta)) === 1;
  if (gateArmed) {
    const stranded = Object.keys(winnersInRedis).filter((u) => !byUser.has(u));
    if (stranded.length > 0) v.push(`I4:redis-winners-without-ledger-row=${stranded.length}(${stranded.slice(0, 5).join('+')})`);
    for (const r of rows) {
      const seq = winnersInRedis[r.user_id];
      if (seq !== String(r.seq)) v.push(`I2:${r.user_id}:ledger-seq=${r.seq}:redis-gate-seq=${seq ?? 'none'}`);
    }
  } else {
    v.push('CHECK:gate-not-armed-in-redis-at-check-time');
  }

  // I5: the coupon is redeemed by the order that was told OK and never compensated, or by none.
  const kept = o.payments.keptOrders();
  const cancelledInLedger = new Set(cancellations.map((c) => `${c.user_id}|${c.order_id}`));
  for (const [userId, orders] of kept) {
    if (orders.length > 1) continue; // reported when the second OK was heard
    const row = byUser.get(userId);
    if (!row) v.push(`I5:${userId}:kept-order=${orders[0]}:no-ledger-row`);
    else if (row.order_id !== orders[0]) v.push(`I5:${userId}:kept-order=${orders[0]}:ledger-order=${row.order_id ?? 'none'}`);
  }
  for (const r of rows) {
    if (r.order_id === null || kept.has(r.user_id)) continue;
    const order = o.payments.orders.get(r.order_id);
    const story = order ? `redeem-${order.redeem}-compensated-by-${order.compensation ?? 'nothing'}` : 'unknown-order';
    v.push(`I5:${r.user_id}:ledger-order=${r.order_id}:${story}`);
  }
  for (const r of rows) {
    if (r.order_id !== null && cancelledInLedger.has(`${r.user_id}|${r.order_id}`)) v.push(`I5:${r.user_id}:${r.order_id}-redeemed-and-cancelled`);
  }
  for (const order of o.payments.acknowledgedCompensations()) {
    if (!cancelledInLedger.has(`${order.userId}|${order.orderId}`)) v.push(`I5:${order.userId}:${order.orderId}-compensated-by-${order.compensation}-not-in-ledger`);
  }
  v.push(...o.payments.violations);

  // I5: the ledger equals Redis (the state redemption decides on).
  const [redeem, cancelledInRedis, outbox, loaded] = await Promise.all([
    o.redis.hgetall(k.redeem), o.redis.smembers(k.cancelled), o.redis.zcard(k.outbox), o.redis.exists(k.redeemLoaded),
  ]);
  if (loaded !== 1) {
    v.push('CHECK:redemption-state-not-loaded-in-redis-at-check-time');
  } else {
    for (const r of rows) {
      const live = parseRedemptionValue(redeem[r.user_id]);
      const redisSide = `${live?.state === 'R' ? live.orderId : 'none'}/v${live?.version ?? 0}`;
      const ledgerSide = `${r.order_id ?? 'none'}/v${r.redemption_version}`;
      const redisAt = live?.state === 'R' ? live.atMs : null;
      if (redisSide !== ledgerSide) v.push(`I5:${r.user_id}:redis=${redisSide}:ledger=${ledgerSide}`);
      else if (redisAt !== (r.redeemed_at?.getTime() ?? null)) v.push(`I5:${r.user_id}:redeemed_at-redis=${redisAt}:ledger=${r.redeemed_at?.getTime() ?? 'none'}`);
    }
    // A blind cancel of a coupon never issued is an OK no-op that still remembers the order, so a
    // cancelled-state entry without a row is expected; a redeemed one is not.
    for (const [user, value] of Object.entries(redeem)) {
      if (!byUser.has(user) && parseRedemptionValue(value)?.state === 'R') v.push(`I5:${user}:redeemed-in-redis-without-ledger-row`);
    }
    const inRedis = new Set(cancelledInRedis);
    for (const pair of inRedis) if (!cancelledInLedger.has(pair)) v.push(`I5:${pair.replace('|', ':')}:cancelled-in-redis-only`);
    for (const pair of cancelledInLedger) if (!inRedis.has(pair)) v.push(`I5:${pair.replace('|', ':')}:cancelled-in-ledger-only`);
  }
  if (outbox > 0) v.push(`I5:unpublished-redemption-changes=${outbox}`);

  return { violations: v, issued: rows.length, issuedCount: coupon.issued_count };
}
