/**
 * CPU and memory of another process, read from /proc, so a server the generator did not start
 * (Prosody, ejabberd) is measured exactly like the Parley process it did start.
 */
import { readFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { cpus } from "node:os";

const TICKS_PER_SECOND = 100; // USER_HZ on Linux

export interface ProcSample { cpuSeconds: number; rssKB: number; at: number }

export function sampleProcess(pid: number): ProcSample {
  // Fields after the command name (which may hold spaces) start at "state"; utime and stime are
  // fields 14 and 15 of the line, i.e. 11 and 12 after it. They include every thread (BEAM, libuv).
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const cpuSeconds = (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND;
  const rss = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return { cpuSeconds, rssKB: Number(rss?.[1] ?? NaN), at: performance.now() };
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

/** Pins every thread of a process to one CPU (`taskset -a`): the server to 0, the generator to 1. */
export function pin(pid: number, cpu: number): void {
  execFileSync("taskset", ["-a", "-cp", String(cpu), String(pid)], { stdio: "ignore" });
}

/** Seconds of CPU this process used, for the generator-saturation check. */
export function ownCpuSeconds(): number {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1e6;
}
