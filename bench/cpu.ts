// CPU shares from /proc: utime + stime of each process (fields 14 and 15 of /proc/<pid>/stat) at
// the start and end of a window, grouped (the api's primary and each worker, the issuer, redis,
// kafka, the registry, every postgres process, the load generator, the bench itself), and the
// machine's busy time from /proc/stat, so "other" is whatever else ran meanwhile.
import { readdirSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';

const TICKS = 100; // USER_HZ: 100 on Linux for every architecture this runs on
export const CORES = availableParallelism();

export interface Proc { pid: number; ppid: number; comm: string; args: string }

function readStat(pid: number): { ppid: number; comm: string; ticks: number; cticks: number } | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const close = text.lastIndexOf(')');
    const comm = text.slice(text.indexOf('(') + 1, close);
    const f = text.slice(close + 2).split(' ');
    // f[0] is field 3 (state): utime is field 14 → f[11], stime f[12], cutime f[13], cstime f[14]
    return { ppid: Number(f[1]), comm, ticks: Number(f[11]) + Number(f[12]), cticks: Number(f[13]) + Number(f[14]) };
  } catch {
    return undefined;
  }
}

export function listProcs(): Proc[] {
  const out: Proc[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    const st = readStat(pid);
    if (!st) continue;
    let args = '';
    try { args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ').trim(); } catch { /* gone */ }
    out.push({ pid, ppid: st.ppid, comm: st.comm, args });
  }
  return out;
}

const ticksOf = (pid: number) => readStat(pid)?.ticks;
/** CPU seconds of this process's children that have exited and been waited for. */
export const reapedChildrenSeconds = () => (readStat(process.pid)?.cticks ?? 0) / TICKS;

function machineBusy(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = line.slice(0, 8).reduce((a, b) => a + b, 0);
  const idle = (line[3] ?? 0) + (line[4] ?? 0);
  return { busy: total - idle, total };
}

/** The stack's processes, found by what they run (ports from the bench's config). */
export function stackGroups(o: { apiPid?: number; issuerPid: number; redisPort: number; extra?: Record<string, number[]> }): () => Record<string, number[]> {
  return () => {
    const procs = listProcs();
    const groups: Record<string, number[]> = {};
    const apiChildren = procs.filter((p) => p.ppid === o.apiPid).map((p) => p.pid).sort((a, b) => a - b);
    if (o.apiPid === undefined) {
      // no coupon-api in this window
    } else if (apiChildren.length > 0) {
      groups['api primary'] = [o.apiPid];
      apiChildren.forEach((pid, i) => { groups[`api worker ${i + 1}`] = [pid]; });
    } else {
      groups.api = [o.apiPid];
    }
    groups.issuer = [o.issuerPid];
    groups.redis = procs.filter((p) => p.comm.startsWith('redis-server') && p.args.includes(`:${o.redisPort}`)).map((p) => p.pid);
    groups.kafka = procs.filter((p) => p.comm === 'java' && /kafka\.Kafka\b/.test(p.args)).map((p) => p.pid);
    groups.registry = procs.filter((p) => p.comm === 'java' && /quarkus-run\.jar|apicurio/i.test(p.args)).map((p) => p.pid);
    groups.postgres = procs.filter((p) => p.comm === 'postgres' || p.args.startsWith('postgres:')).map((p) => p.pid);
    groups['bench (this process)'] = [process.pid];
    return { ...groups, ...o.extra };
  };
}

export interface CpuShare {
  /** CPU seconds over the window. */
  seconds: number;
  /** Cores' worth: seconds / window seconds (1 = one core busy throughout). */
  cores: number;
  /** Share of the whole machine: cores / CORES. */
  share: number;
  pids: number[];
}

export interface CpuReport { windowSeconds: number; cores: number; groups: Record<string, CpuShare>; machineBusyShare: number; otherShare: number }

/**
 * Starts a window: `groups` is asked for pids at the start and at the end (a postgres backend
 * that appeared meanwhile counts from zero). `end` takes extra CPU seconds per group for processes
 * measured another way (a load generator that has exited: reapedChildrenSeconds).
 */
export function cpuWindow(groups: () => Record<string, number[]>) {
  const t0 = performance.now();
  const m0 = machineBusy();
  const start = new Map<number, number>();
  const first = groups();
  for (const pids of Object.values(first)) for (const pid of pids) { const t = ticksOf(pid); if (t !== undefined) start.set(pid, t); }
  return {
    end(extraSeconds: Record<string, number> = {}): CpuReport {
      const windowSeconds = (performance.now() - t0) / 1000;
      const m1 = machineBusy();
      const last = groups();
      const out: Record<string, CpuShare> = {};
      let sum = 0;
      const names = new Set([...Object.keys(first), ...Object.keys(last), ...Object.keys(extraSeconds)]);
      for (const name of names) {
        const pids = [...new Set([...(first[name] ?? []), ...(last[name] ?? [])])];
        let ticks = 0;
        for (const pid of pids) {
          const now = ticksOf(pid);
          if (now !== undefined) ticks += now - (start.get(pid) ?? 0);
        }
        const seconds = ticks / TICKS + (extraSeconds[name] ?? 0);
        sum += seconds;
        out[name] = { seconds, cores: seconds / windowSeconds, share: seconds / windowSeconds / CORES, pids };
      }
      const machineBusyShare = m1.total > m0.total ? (m1.busy - m0.busy) / (m1.total - m0.total) : 0;
      return { windowSeconds, cores: CORES, groups: out, machineBusyShare, otherShare: Math.max(0, machineBusyShare - sum / windowSeconds / CORES) };
    },
  };
}
