/** Pieces every scenario shares: accounts, logging in many users, open-loop rate steps. */
import { execFile } from "node:child_process";
import { Histogram } from "./histogram.js";
import { coreShare, ownCpuSeconds, sampleProcess, sampleTreeProcesses, type ProcSample, type ProcessFigures } from "./proc.js";
import type { Target } from "./targets.js";
import { Connection, MARK, pool, type LoginOptions } from "./xmpp.js";

export const log = (...parts: unknown[]) => console.error(`[load ${new Date().toISOString().slice(11, 19)}]`, ...parts);
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
export const passwordOf = (user: string) => `pw-${user}`;
export const users = (prefix: string, count: number) => Array.from({ length: count }, (_, i) => `${prefix}${i}`);

/** A generator whose own core is this busy measured itself, not the server. */
export const GENERATOR_SATURATED = 0.9;

export interface Measured {
  serverCpuSeconds: number;
  serverCoreShare: number;
  /** A server of several processes (a cluster's primary and workers): each one's share, by pid. */
  serverCoreShareByProcess?: Record<string, number>;
  generatorCoreShare: number;
  seconds: number;
  /** The generator had spare capacity: the figures measure the server. */
  valid: boolean;
}

/** For log lines: what a reader must know about a measurement taken with a saturated generator. */
export const invalidNote = (m: Measured) => (m.valid ? "" : " (INVALID: generator saturated)");

/** CPU of the server and of this generator over a stretch of work. */
export class Meter {
  private readonly server: ProcSample | undefined;
  private readonly processes: ProcessFigures[];
  private readonly generator = ownCpuSeconds();
  private readonly start = performance.now();
  constructor(private readonly pid: number | undefined) {
    this.server = pid ? sampleProcess(pid) : undefined;
    this.processes = pid ? sampleTreeProcesses(pid) : [];
  }
  read(): Measured {
    const seconds = (performance.now() - this.start) / 1000;
    const after = this.pid ? sampleProcess(this.pid) : undefined;
    const generatorCoreShare = round((ownCpuSeconds() - this.generator) / seconds);
    const byProcess = this.processes.length > 1 ? this.shareByProcess(seconds) : undefined;
    return {
      serverCpuSeconds: this.server && after ? after.cpuSeconds - this.server.cpuSeconds : NaN,
      serverCoreShare: this.server && after ? round(coreShare(this.server, after)) : NaN,
      ...(byProcess ? { serverCoreShareByProcess: byProcess } : {}),
      generatorCoreShare,
      seconds: round(seconds),
      valid: generatorCoreShare < GENERATOR_SATURATED,
    };
  }
  /** Processes of the tree present at both samples (one that ended meanwhile counts in the sum only). */
  private shareByProcess(seconds: number): Record<string, number> {
    const now = new Map(sampleTreeProcesses(this.pid!).map((p) => [p.pid, p.cpuSeconds]));
    return Object.fromEntries(this.processes.filter((p) => now.has(p.pid)).map((p) => [String(p.pid), round((now.get(p.pid)! - p.cpuSeconds) / seconds)]));
  }
}

/** For log lines: the server's core share, with each process's where it has several. */
export const serverCores = (m: Measured) =>
  `${m.serverCoreShare}${m.serverCoreShareByProcess ? ` (${Object.values(m.serverCoreShareByProcess).join(" + ")})` : ""}`;

export const round = (v: number, digits = 2) => Math.round(v * 10 ** digits) / 10 ** digits;

/** The median of the finite values (NaN if none): a failed run's NaN does not count. */
export const median = (values: number[]) => {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return NaN;
  return v.length % 2 ? v[(v.length - 1) / 2]! : (v[v.length / 2 - 1]! + v[v.length / 2]!) / 2;
};

/** XEP-0077 from loopback, `concurrency` at a time; existing accounts are reused. */
export async function ensureAccounts(target: Target, names: readonly string[], concurrency = 32): Promise<{ created: number; existed: number; seconds: number }> {
  const start = performance.now();
  let created = 0;
  let existed = 0;
  const { errors } = await pool(names, concurrency, async (name) => {
    const c = new Connection(target.endpoint);
    try {
      if ((await c.register(name, passwordOf(name))) === "created") created++; else existed++;
    } finally { c.destroy(); }
  });
  if (errors.length) throw new Error(`${errors.length} registrations failed, first: ${errors[0]!.message}`);
  return { created, existed, seconds: round((performance.now() - start) / 1000) };
}

/** The CLI hook: runs `template` once per account, 8 at a time (see ScenarioOptions.accountsCommand). */
export async function commandAccounts(template: string, domain: string, names: readonly string[]): Promise<{ created: number; existed: number; seconds: number }> {
  const start = performance.now();
  const quote = (v: string) => `'${v.replace(/'/g, "'\\''")}'`;
  const { errors } = await pool(names, 8, (name) => new Promise<void>((resolve, reject) => {
    const command = template.replace(/\{user\}/g, quote(name)).replace(/\{domain\}/g, quote(domain)).replace(/\{password\}/g, quote(passwordOf(name)));
    execFile("sh", ["-c", command], (err, _out, stderr) => (err ? reject(new Error(`${command}: ${stderr || err.message}`)) : resolve()));
  }));
  if (errors.length) throw new Error(`${errors.length} account commands failed, first: ${errors[0]!.message}`);
  return { created: names.length, existed: 0, seconds: round((performance.now() - start) / 1000) };
}

export interface LoggedIn { connections: Connection[]; loginTimes: Histogram; seconds: number; failures: number; firstError?: string }

export function loginMany(target: Target, names: readonly string[], concurrency = 50, options: LoginOptions = {}, prepare: (c: Connection) => void = () => {}): Promise<LoggedIn> {
  return loginEach(target, names, concurrency, (c, name) => c.login(name, passwordOf(name), options), prepare);
}

/** A fresh connection per item, `login` on it, `concurrency` at a time; the connections stay open. */
export async function loginEach<T>(target: Target, items: readonly T[], concurrency: number, login: (c: Connection, item: T) => Promise<unknown>, prepare: (c: Connection) => void = () => {}): Promise<LoggedIn> {
  const loginTimes = new Histogram();
  const start = performance.now();
  const { results, errors } = await pool(items, concurrency, async (item) => {
    const c = new Connection(target.endpoint);
    prepare(c);
    const t = performance.now();
    try {
      await login(c, item);
    } catch (e) { c.destroy(); throw e; }
    loginTimes.recordMs(performance.now() - t);
    return c;
  });
  return {
    connections: results.filter((c): c is Connection => c !== undefined), loginTimes,
    seconds: round((performance.now() - start) / 1000), failures: errors.length, firstError: errors[0]?.message,
  };
}

export async function closeAll(connections: readonly Connection[]): Promise<void> {
  await pool(connections, 200, (c) => c.close());
}

/**
 * Open loop: calls `emit(n, dueAt)` for n = 0 … total−1, each as soon as its due time
 * `start + n/rate` has come, whatever the server does meanwhile; `afterTick` runs after each batch.
 * Resolves with the number emitted (= total).
 */
export function openLoop(start: number, total: number, rate: number, emit: (n: number, dueAt: number) => void, afterTick: () => void = () => {}): Promise<number> {
  let n = 0;
  return new Promise((resolve) => {
    const tick = () => {
      const due = Math.min(total, Math.floor(((performance.now() - start) / 1000) * rate) + 1);
      for (; n < due; n++) emit(n, start + (n * 1000) / rate);
      afterTick();
      // A 1 ms timer, not setImmediate: spinning would burn the generator's core for nothing.
      if (n >= total) resolve(n); else setTimeout(tick, 1);
    };
    tick();
  });
}

/**
 * Runs `step` for each rate in turn. A failed step is run again while it has attempts left (one
 * ~100 ms stall of a shared machine is enough to fail a 5 s step); the ladder stops at a rate that
 * failed every attempt, since a higher one would fail too. Every attempt is returned.
 */
export async function ladder<T extends { passed: boolean }>(rates: readonly number[], attempts: number, pauseMs: number, step: (rate: number, attempt: number) => Promise<T>): Promise<T[]> {
  const results: T[] = [];
  for (const rate of rates) {
    for (let attempt = 1; attempt <= attempts; attempt++) {
      const result = await step(rate, attempt);
      results.push(result);
      if (!result.passed && attempt === attempts) return results;
      await sleep(pauseMs);
      if (result.passed) break;
    }
  }
  return results;
}

export interface StepResult extends Measured {
  offeredRate: number;
  attempt: number;
  sent: number;
  expected: number;
  received: number;
  lost: number;
  deliveredPerSecond: number;
  latency: ReturnType<Histogram["summary"]>;
  serverCpuSecondsPer10k: number;
  passed: boolean;
}

export interface StepPlan {
  target: Target;
  rates: readonly number[];
  durationSeconds: number;
  /** Copies of each message the receivers should see (1 for 1:1, the occupant count for a room). */
  copiesPerMessage: number;
  receivers: readonly Connection[];
  /** Writes message number `n`, whose `<body>` element (marker and due time) is given, on some sender's stream. */
  send(n: number, body: string): void;
  p99LimitMs: number;
  drainMs?: number;
}

/**
 * Open-loop steps: message n of a step is due at start + n/rate, whatever the server does, and
 * carries that due time, so a server that stalls is charged for the whole stall (no coordinated
 * omission). After the sending window, receivers get `drainMs` to catch up; what is missing then
 * is lost. A failed step is tried twice (see `ladder`).
 */
export async function rateSteps(plan: StepPlan): Promise<StepResult[]> {
  let stepStart = Infinity;
  let histogram = new Histogram();
  let received = 0;
  let lastReceipt = 0;
  for (const r of plan.receivers) {
    r.onMark = (dueAt) => {
      if (dueAt < stepStart) return; // a straggler of the previous step
      const now = performance.now();
      histogram.recordMs(now - dueAt);
      received++;
      lastReceipt = now;
    };
  }
  const results = await ladder(plan.rates, 2, 1000, async (rate, attempt) => {
    histogram = new Histogram();
    received = 0;
    const total = Math.round(rate * plan.durationSeconds);
    const expected = total * plan.copiesPerMessage;
    const meter = new Meter(plan.target.pid);
    const start = performance.now();
    stepStart = start;
    const sent = await openLoop(start, total, rate, (n, dueAt) => plan.send(n, `${MARK}${dueAt}</body>`));
    const drainDeadline = performance.now() + (plan.drainMs ?? 5000);
    while (received < expected && performance.now() < drainDeadline) await sleep(10);
    const measured = meter.read();
    const window = ((received ? lastReceipt : performance.now()) - start) / 1000;
    const latency = histogram.summary();
    const lost = expected - received;
    const result: StepResult = {
      offeredRate: rate, attempt, sent, expected, received, lost,
      deliveredPerSecond: Math.round(received / window), latency,
      ...measured,
      serverCpuSecondsPer10k: round((measured.serverCpuSeconds / Math.max(1, received)) * 10_000, 3),
      passed: measured.valid && lost === 0 && latency.p99ms < plan.p99LimitMs,
    };
    log(`  rate ${rate}/s${attempt > 1 ? " (again)" : ""}: delivered ${result.deliveredPerSecond}/s, lost ${lost}, p50 ${latency.p50ms} ms, p99 ${latency.p99ms} ms, server core ${serverCores(measured)}, generator core ${measured.generatorCoreShare}, server CPU-s per 10k ${result.serverCpuSecondsPer10k}${invalidNote(measured)}`);
    return result;
  });
  stepStart = Infinity;
  return results;
}

/** The highest passing step's rate (0 if none passed). */
export const bestRate = <T extends { passed: boolean; offeredRate: number }>(steps: readonly T[], pick: (s: T) => number = (s) => s.offeredRate) =>
  steps.filter((s) => s.passed).reduce((best, s) => Math.max(best, pick(s)), 0);
