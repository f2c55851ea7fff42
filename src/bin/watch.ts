// `npm run watch -- <coupon id>`: a live view of one sale, redrawn every second, until the coupon
// is COMPLETE or EXPIRED, or Ctrl-C. Without an id, it lists the open coupons (ListCoupons) and asks
// which one to watch; when stdin is not a terminal, it prints the list and exits
// (docs/operations.md#watching-a-sale). Reads GetCoupon (as an operator: a token for the local
// stack's key, or WATCH_TOKEN) and the /metrics of coupon-api and coupon-issuer, at the addresses
// the same settings as `npm start` give them.
import { createInterface } from 'node:readline/promises';
import * as grpc from '@grpc/grpc-js';
import { CouponService } from '../../gen/coupon/v1/coupon_service_pb.js';
import { CouponStatus } from '../../gen/coupon/v1/coupon_pb.js';
import { CouponCallError, createGrpcClient, type GrpcClient } from '../client/grpc.ts';
import { topicNames } from '../events/topics.ts';
import { renderCouponList, renderFrame, type Reading } from '../metrics/watch.ts';
import { scrape } from '../metrics/text-format.ts';
import { localToken } from '../../scripts/local-auth.ts';
import { configOrExit } from './lifecycle.ts';
import { canonicalCouponId } from '../domain/ids.ts';

/** Open coupons offered for picking: the newest this many. */
const PICK_LIST = 50;

const arg = process.argv[2];
const given = arg === undefined ? undefined : canonicalCouponId(arg);
if (arg !== undefined && given === undefined) {
  console.error(arg && !arg.startsWith('-') ? `not a coupon id (a UUID): ${arg}` : 'usage: npm run watch [-- <coupon id>]');
  process.exit(2);
}
const config = configOrExit('watch');
// A wildcard bind address is reached on loopback; an IPv6 literal needs brackets in a URL.
const host = ['0.0.0.0', '::'].includes(config.API_HOST) ? '127.0.0.1' : config.API_HOST.includes(':') ? `[${config.API_HOST}]` : config.API_HOST;
const token = process.env.WATCH_TOKEN || await localToken({ roles: ['operator'], sub: 'watch' });
const coupons = createGrpcClient(CouponService, `${host}:${config.API_PORT}`, { token: () => token });

/** The open coupons, and the one the operator picks; exits when there is nothing to pick. */
async function pick(client: GrpcClient<typeof CouponService>): Promise<string> {
  const done = (code: number): never => { client.close(); process.exit(code); };
  const listed = await client.listCoupons({ status: CouponStatus.OPEN, pageSize: PICK_LIST }, { timeoutMs: 5_000 }).catch((err: unknown) => {
    console.error(`ListCoupons failed: ${err instanceof CouponCallError ? `${grpc.status[err.code]} ${err.reason} ${err.message}` : String(err)}`);
    return done(1);
  });
  const open = listed.coupons;
  console.log(renderCouponList(open, listed.nextPageToken !== ''));
  if (open.length === 0) return done(0);
  if (!process.stdin.isTTY) {
    console.log('\nstdin is not a terminal, so nothing to pick from: npm run watch -- <coupon id> watches one');
    return done(0);
  }
  const rl = createInterface({ input: process.stdin, output: process.stdout });
  for (;;) {
    // Ctrl-D (end of input) or Ctrl-C at the prompt quits, like Enter.
    const answer = (await rl.question(`\nwatch which one? 1-${open.length} (Enter to quit): `).catch(() => '')).trim();
    if (answer === '') { rl.close(); return done(0); }
    const chosen = /^\d+$/.test(answer) ? open[Number(answer) - 1] : undefined;
    if (chosen) { rl.close(); return chosen.id; }
    console.log(`not a number from 1 to ${open.length}: ${answer}`);
  }
}

const couponId = given ?? await pick(coupons);
const topics = topicNames(config.KAFKA_TOPIC_PREFIX);
const names = { issueTopic: topics.issue, issuerGroup: config.KAFKA_ISSUER_GROUP, dltTopics: [topics.issueDlt, topics.redemptionDlt, topics.paymentResultDlt] };
const asError = (err: unknown) => (err instanceof Error ? err : new Error(String(err)));
const read = (url: string) => scrape(url).catch(asError);

const tty = process.stdout.isTTY;
const stop = (code: number) => {
  coupons.close();
  if (tty) process.stdout.write('\x1b[?25h');
  process.exit(code);
};
process.on('SIGINT', () => stop(0));
if (tty) process.stdout.write('\x1b[?25l');

let before: Reading | undefined;
for (;;) {
  const started = Date.now();
  const [coupon, api, issuer] = await Promise.all([
    coupons.getCoupon({ couponId }, { timeoutMs: 2_000 }).then((r) => r.coupon, asError),
    read(`http://${host}:${config.API_METRICS_PORT}/metrics`),
    read(`http://${host}:${config.ISSUER_METRICS_PORT}/metrics`),
  ]);
  const now: Reading = { atMs: started, api, issuer };
  const frame = coupon instanceof Error || !coupon
    ? `coupon ${couponId}: GetCoupon failed (${coupon?.message ?? 'no coupon in the answer'})`
    : renderFrame(coupon, now, before, names);
  // Nothing more happens to a coupon once it is COMPLETE or EXPIRED.
  const complete = coupon !== undefined && !(coupon instanceof Error) && (coupon.status === CouponStatus.COMPLETE || coupon.status === CouponStatus.EXPIRED);
  process.stdout.write(tty ? `\x1b[H\x1b[2J${frame}\n${complete ? '' : '  Ctrl-C to stop\n'}` : `${frame}\n\n`);
  before = now;
  if (complete) stop(0);
  // An outage is waited out; an unknown coupon or a refused token is not going to change.
  if (coupon instanceof CouponCallError && coupon.code !== grpc.status.UNAVAILABLE && coupon.code !== grpc.status.DEADLINE_EXCEEDED) stop(1);
  await new Promise((r) => setTimeout(r, Math.max(0, 1_000 - (Date.now() - started))));
}
