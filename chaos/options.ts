// Command-line flags of `npm run chaos -- …`.
export interface ChaosOptions {
  seed: number;
  /** Seconds of faults and load. */
  duration: number;
  quantity: number;
  users: number;
  /** Keep the run's directory .stack/chaos-<pid>/ (process logs, the broker's data) instead of deleting it. */
  keepLogs: boolean;
  /** Count records dead-lettered after exhausting their retries as violations (docs/design.md#outages-versus-poison: an outage is retried, never dead-lettered). */
  strict: boolean;
  /** A control run: the same sale and checks with no faults, which must pass on any correct build. */
  noFaults: boolean;
}

export const USAGE = 'usage: npm run chaos -- [--seed <n>] [--duration <seconds>=180] [--quantity <n>=200] [--users <n>=600] [--keep-logs] [--strict] [--no-faults]';

export function parseOptions(argv: string[]): ChaosOptions {
  const opts: ChaosOptions = { seed: Math.floor(Math.random() * 1_000_000), duration: 180, quantity: 200, users: 600, keepLogs: false, strict: false, noFaults: false };
  const int = (flag: string, value: string | undefined, min: number, max: number) => {
    const n = Number(value);
    if (value === undefined || !Number.isInteger(n) || n < min || n > max) throw new Error(`${flag} needs an integer in ${min}..${max}, got ${value ?? 'nothing'}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    const [name, inline] = flag.includes('=') ? flag.split('=', 2) as [string, string] : [flag, undefined];
    const value = () => inline ?? argv[++i];
    switch (name) {
      case '--seed': opts.seed = int(name, value(), 0, 2 ** 31 - 1); break;
      case '--duration': opts.duration = int(name, value(), 5, 3_600); break;
      case '--quantity': opts.quantity = int(name, value(), 1, 100_000); break;
      case '--users': opts.users = int(name, value(), 1, 1_000_000); break;
      case '--keep-logs': opts.keepLogs = true; break;
      case '--strict': opts.strict = true; break;
      case '--no-faults': opts.noFaults = true; break;
      case '--help': case '-h': throw new Error(USAGE);
      default: throw new Error(`unknown flag ${flag}\n${USAGE}`);
    }
  }
  return opts;
}
