// The issuer's Redis scripts (src/store/lua/issuer-*.lua), typed: claiming records before they are
// written to the ledger, and marking the written ones issued.
import { chunks, type CouponScripts } from '../store/scripts.ts';

/** The issuer's verdict on one record (issuer-claim.lua). */
export type ClaimVerdict = 'OK' | 'STALE' | 'LOST' | 'UNARMED' | 'OUT_OF_RANGE';

/** One verdict per record, in order (issuer-claim.lua). */
export async function issuerClaim(scripts: CouponScripts, couponId: string, records: { userId: string; seq: number }[]): Promise<ClaimVerdict[]> {
  const verdicts: ClaimVerdict[] = [];
  for (const part of chunks(records)) {
    const reply = (await scripts.run('issuerClaim', couponId, part.flatMap((r) => [r.userId, r.seq]))) as ClaimVerdict[];
    verdicts.push(...reply);
  }
  return verdicts;
}

/** Marks ledger rows issued in Redis (issuer-mark-issued.lua). */
export async function issuerMarkIssued(scripts: CouponScripts, couponId: string, rows: { userId: string; seq: number; issuedAtMs: number }[]): Promise<void> {
  for (const part of chunks(rows)) {
    await scripts.run('issuerMarkIssued', couponId, [Date.now(), ...part.flatMap((r) => [r.userId, r.seq, r.issuedAtMs])]);
  }
}
