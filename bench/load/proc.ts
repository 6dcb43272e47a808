/**
 * CPU and memory of another process, read from /proc, so a server the generator did not start
 * (Prosody, ejabberd) is measured exactly like the Parley process it did start. A server is its
 * whole process tree: `parley start --nodes N` is a primary (which accepts every connection and
 * hands it to a worker) and N node:cluster workers, and all of them are the server's cost.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { cpus } from "node:os";

const TICKS_PER_SECOND = 100; // USER_HZ on Linux

export interface ProcSample { cpuSeconds: number; rssKB: number; at: number }

/** One process of a tree: its own CPU (every thread, cpuSecondsOf) and resident memory. */
export interface ProcessFigures { pid: number; cpuSeconds: number; rssKB: number }

interface Stat { ppid: number; reapedChildTicks: number }

function readStat(pid: number): Stat | undefined {
  let stat: string;
  try { stat = readFileSync(`/proc/${pid}/stat`, "utf8"); } catch { return undefined; }
  // Fields after the command name (which may hold spaces) start at "state" (field 3): ppid is
  // field 4, cutime/cstime (children waited for) 16/17 of the line.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return { ppid: Number(fields[1]), reapedChildTicks: Number(fields[13]) + Number(fields[14]) };
}

function rssKBOf(pid: number): number {
  try {
    const rss = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return Number(rss?.[1] ?? NaN);
  } catch { return NaN; }
}

/** `root` and every live descendant, root first (one pass over /proc for the parent links). */
export function processTree(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = readStat(Number(entry));
    if (!stat) continue; // ended while we looked
    const siblings = children.get(stat.ppid) ?? [];
    siblings.push(Number(entry));
    children.set(stat.ppid, siblings);
  }
  const tree = [root];
  for (let i = 0; i < tree.length; i++) tree.push(...(children.get(tree[i]!) ?? []));
  return tree;
}

/** Each process of the tree under `root` on its own, for figures per node. */
export function sampleTreeProcesses(root: number): ProcessFigures[] {
  return processTree(root).flatMap((pid) => {
    const stat = readStat(pid);
    if (!stat) return [];
    try {
      return [{ pid, cpuSeconds: cpuSecondsOf(pid), rssKB: rssKBOf(pid) }];
    } catch {
      return []; // ended while we looked
    }
  });
}

/**
 * The tree under `pid` as one: CPU of every live process plus what the root's ended children
 * used (a worker restarted during a step still counts), RSS summed (pages shared between the
 * processes count once per process, which cancels out of before/after differences).
 */
export function sampleProcess(pid: number): ProcSample {
  const rootStat = readStat(pid);
  const processes = sampleTreeProcesses(pid);
  const cpuSeconds = processes.reduce((sum, p) => sum + p.cpuSeconds, 0) + (rootStat?.reapedChildTicks ?? 0) / TICKS_PER_SECOND;
  return { cpuSeconds, rssKB: processes.reduce((sum, p) => sum + p.rssKB, 0), at: performance.now() };
}

const HAS_SCHEDSTAT = existsSync("/proc/self/schedstat");

/**
 * CPU seconds a process has used, every thread (BEAM schedulers, libuv's pool, V8's GC helpers).
 * Each thread's /proc/<pid>/task/<tid>/schedstat starts with its run time in nanoseconds, where
 * utime+stime in /proc/<pid>/stat count whole clock ticks (10 ms): too coarse for one login of a
 * few ms, and not unbiased over many (a short burst is charged a whole tick or nothing). Falls
 * back to /proc/<pid>/stat where the kernel keeps no schedstat (CONFIG_SCHED_INFO off).
 */
export function cpuSecondsOf(pid: number): number {
  if (!HAS_SCHEDSTAT) {
    const { user, system } = userSystemSecondsOf(pid);
    return user + system;
  }
  let nanoseconds = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      nanoseconds += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ", 1)[0]);
    } catch (e) {
      // A thread that ended between the listing and the read.
      if ((e as NodeJS.ErrnoException).code !== "ENOENT" && (e as NodeJS.ErrnoException).code !== "ESRCH") throw e;
    }
  }
  return nanoseconds / 1e9;
}

/** User and kernel CPU seconds of a process (/proc/<pid>/stat, whole ticks): over many operations, how much of its time is system calls and the network stack. */
export function userSystemSecondsOf(pid: number): { user: number; system: number } {
  // Fields after the command name (which may hold spaces) start at "state"; utime and stime are
  // fields 14 and 15 of the line, i.e. 11 and 12 after it.
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return { user: Number(fields[11]) / TICKS_PER_SECOND, system: Number(fields[12]) / TICKS_PER_SECOND };
}

/** CPU seconds per wall second between two samples: 1.0 is one core fully used. */
export function coreShare(before: ProcSample, after: ProcSample): number {
  return (after.cpuSeconds - before.cpuSeconds) / ((after.at - before.at) / 1000);
}

let pinnable: boolean | undefined;

/** Two CPUs and taskset: asked once, the answer does not change while the generator runs. */
export function canPin(): boolean {
  if (pinnable === undefined) {
    try { execFileSync("taskset", ["-V"], { stdio: "ignore" }); pinnable = cpus().length >= 2; } catch { pinnable = false; }
  }
  return pinnable;
}

/** Pins every thread of a process to a CPU list (`taskset -a`, e.g. "0" or "0,1"): the server to 0, the generator to 1. */
export function pin(pid: number, cpu: number | string): void {
  execFileSync("taskset", ["-a", "-cp", String(cpu), String(pid)], { stdio: "ignore" });
}

/** Seconds of CPU this process used, for the generator-saturation check. */
export function ownCpuSeconds(): number {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1e6;
}
