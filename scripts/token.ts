// `npm run -s token -- <role> [more roles…] [--sub <name>] [--ttl <seconds>]`: prints one line, a
// bearer token for the local stack signed with .stack/auth's key, valid for an hour by default.
//   grpcurl -plaintext -H "Authorization: Bearer $(npm run -s token -- operator)" 127.0.0.1:8080 list
import { parseArgs } from 'node:util';
import { localToken } from './local-auth.ts';

const ROLES = ['operator', 'storefront', 'payment'];
const { values, positionals } = parseArgs({ allowPositionals: true, options: { sub: { type: 'string' }, ttl: { type: 'string', default: '3600' } } });
const unknown = positionals.filter((r) => !ROLES.includes(r));
if (positionals.length === 0 || unknown.length > 0) {
  console.error(`token: name one or more roles (${ROLES.join(', ')})${unknown.length ? `; unknown: ${unknown.join(', ')}` : ''}`);
  process.exit(2);
}
const ttlSeconds = Number(values.ttl);
if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1) {
  console.error('token: --ttl must be a whole number of seconds');
  process.exit(2);
}
console.log(await localToken({ roles: positionals, sub: values.sub, ttlSeconds }));
