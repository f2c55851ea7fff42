// Redis: the gate's live state and the issued/redeemed state read by redemption.
import { Redis } from 'ioredis';

export type { Redis };

export function createRedis(url: string): Redis {
  return new Redis(url, {
    // Commands fail fast while Redis is down, so callers answer UNAVAILABLE instead of hanging.
    maxRetriesPerRequest: 1,
    enableOfflineQueue: false,
    connectTimeout: 2_000,
    lazyConnect: false,
    // Under a flash sale thousands of scripts are in flight; auto-pipelining sends those issued in
    // the same tick as one write, instead of one syscall per command.
    enableAutoPipelining: true,
  });
}
