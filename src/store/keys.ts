// Redis key layout. Every key of one coupon carries the hash tag {<coupon id>}, so each script
// touches one slot and runs unchanged on Redis Cluster.
//
//   coupon:{id}:meta      hash   total, opens_ms, closes_ms (0 = never), valid_until_ms (0 = never)
//   coupon:{id}:winners   hash   user → seq, every user who passed the gate (HLEN = accepted count)
//   coupon:{id}:next      string the highest fresh seq handed out
//   coupon:{id}:free      list   seqs released after a failed publish, handed out again first
//   coupon:{id}:pending   zset   user → reserve time (ms): reserved, publish not yet acknowledged
//   coupon:{id}:released  hash   user → seq last released (the issuer drops that stale record)
//   coupon:{id}:claimed   hash   user → seq the issuer has taken (a release is refused after this)
//   coupon:{id}:issued    hash   user → issued_at (ms), once the ledger row is committed
//   coupon:{id}:redeem    hash   user → "<state>|<order id>|<version>|<at ms>" redemption state
//   coupon:{id}:cancelled set    "<user>|<order id>" pairs whose redemption was cancelled
//   gate:coupons          set    coupon ids with gate state (the recovery loop walks it)

export const couponKeys = (couponId: string) => {
  const p = `coupon:{${couponId}}`;
  return {
    meta: `${p}:meta`,
    winners: `${p}:winners`,
    next: `${p}:next`,
    free: `${p}:free`,
    pending: `${p}:pending`,
    released: `${p}:released`,
    claimed: `${p}:claimed`,
    issued: `${p}:issued`,
    redeem: `${p}:redeem`,
    cancelled: `${p}:cancelled`,
  };
};

export const GATE_COUPONS = 'gate:coupons';
