/**
 * The scenarios of `npm run bench -- <scenario>`. Each returns its detail and a few headline
 * figures, which `bench:compare` puts side by side (medians over runs).
 */
import { spawn } from "node:child_process";
import { connect as tcpConnect } from "node:net";
import { fileURLToPath } from "node:url";
import { Histogram } from "./histogram.js";
import { canPin, pin, sampleProcess } from "./proc.js";
import { kitParleyCertificate, type Target } from "./targets.js";
import { clusterStatus, crossNodePairs, crossNodeShare, nodesOf, rssByNode, shuffled } from "./cluster-target.js";
import { Connection, MARK, newDevice, pool, type Device, type LoginMode } from "./xmpp.js";
import {
  bestRate, closeAll, commandAccounts, ensureAccounts, invalidNote, ladder, openLoop, log, loginEach, loginMany, Meter, passwordOf, rateSteps, round, sleep, users,
} from "./common.js";

export interface ScenarioOptions {
  users?: number;
  rates?: number[];
  durationSeconds?: number;
  settleSeconds?: number;
  register: boolean;
  /**
   * Creates one account instead of in-band registration: a shell command in which {user},
   * {domain} and {password} are replaced, e.g. "prosodyctl register {user} {domain} {password}".
   */
  accountsCommand?: string;
  /** Account names are `<prefix><n>`; different prefixes keep scenarios' accounts apart. */
  prefix: string;
  /** How S2's storm logs in (default classic: SASL, bind; see LoginMode). */
  login?: LoginMode;
  /** S7: logins one after another per login path. */
  logins?: number;
  /** S7: only these login paths (by name; default all). */
  paths?: string[];
  /** S7: false skips the two S2 storms (CPU per login only, which a shared machine does not spoil). */
  storms?: boolean;
  /** S2/S7 with SASL2 or FAST: each device resumes its TLS session (see LoginOptions.resumeTls). */
  resumeTls?: boolean;
  /** S3: the users enable XEP-0198, as phones do (Parley then keeps each message durable until it is acknowledged). */
  streamManagement?: boolean;
  /** S8: rounds of one TCP step and one WebSocket step. */
  rounds?: number;
  /**
   * S3 on a cluster: `random` pairs users at random, so (N-1)/N of messages cross nodes as when a
   * load balancer spreads users; `cross` pairs every user with one on another node.
   */
  pairs?: "random" | "cross";
}

export interface ScenarioResult {
  scenario: string;
  target: string;
  version: string;
  headline: Record<string, number>;
  detail: unknown;
}

export const P99_MESSAGE_MS = 50;
export const P99_LOGIN_MS = 1000;
/**
 * SASL2 and FAST storms log in as devices, several per account, so that a device logs in again
 * only after (accounts × this) logins: two logins of one device in flight at once would replace
 * each other's Bind 2 resource and could present their FAST counts out of order.
 */
const STORM_DEVICES_PER_ACCOUNT = 2;

export async function accounts(target: Target, o: ScenarioOptions, names: string[]) {
  if (!o.register) return undefined;
  const r = o.accountsCommand ? await commandAccounts(o.accountsCommand, target.endpoint.domain, names) : await ensureAccounts(target, names);
  log(`accounts: ${r.created} created, ${r.existed} reused in ${r.seconds} s`);
  return r;
}

/** Server RSS once it has been quiet for a while (no forced GC: the peers cannot be asked for one). */
async function settledRssKB(pid: number, settleSeconds: number): Promise<number> {
  await sleep(settleSeconds * 1000);
  return sampleProcess(pid).rssKB;
}

// S0 — the machine's own limits, through a bare Node TLS relay.
export async function s0(o: ScenarioOptions): Promise<ScenarioResult> {
  const kit = kitParleyCertificate();
  const certArgs = kit ? [kit.cert, kit.key] : [];
  const startRelay = async () => {
    const child = spawn(process.execPath, ["--import", "tsx", fileURLToPath(new URL("./echo-server.ts", import.meta.url)), ...certArgs], { stdio: ["ignore", "pipe", "inherit"] });
    if (canPin()) pin(child.pid!, 0);
    const ports = await new Promise<{ tls: number; tcp: number }>((resolve) => child.stdout!.once("data", (d) => resolve(JSON.parse(String(d)))));
    return { child, ports, pid: child.pid! };
  };
  const endpoint = (port: number) => ({ host: "127.0.0.1", port, domain: "parley.test", tls: "direct" as const, sasl: "plain" as const });
  const target = (pid: number): Target => ({ name: "node-tls-relay", version: process.version, endpoint: endpoint(0), mucDomain: "", pid, async stop() {} });

  // Throughput and latency floor: 1,000 connections in pairs, the same frames as S3.
  const relay = await startRelay();
  const connections: Connection[] = [];
  for (let i = 0; i < 1000; i++) {
    const c = new Connection(endpoint(relay.ports.tls));
    await c.openRaw();
    connections.push(c);
  }
  const steps = await rateSteps({
    target: target(relay.pid), rates: o.rates ?? [1000, 2000, 5000, 10000, 20000, 30000, 40000], durationSeconds: o.durationSeconds ?? 5,
    copiesPerMessage: 1, receivers: connections, p99LimitMs: P99_MESSAGE_MS,
    send: (n, body) => connections[n % connections.length]!.send(`<message to='lt${(n % connections.length) ^ 1}@parley.test/load' type='chat' id='m${n}'>${body}</message>`),
  });
  for (const c of connections) c.destroy();
  relay.child.kill();

  // Idle memory per socket, each kind in a fresh relay process.
  const idle = async (kind: "tls" | "tcp", count: number) => {
    const r = await startRelay();
    const before = await settledRssKB(r.pid, 1);
    const sockets: { destroy(): void }[] = [];
    for (let i = 0; i < count; i += 100) {
      await Promise.all(Array.from({ length: Math.min(100, count - i) }, async () => {
        if (kind === "tls") { const c = new Connection(endpoint(r.ports.tls)); await c.openRaw(); sockets.push(c); }
        else await new Promise<void>((resolve, reject) => { const s = tcpConnect({ port: r.ports.tcp, host: "127.0.0.1" }, () => resolve()); s.on("error", reject); sockets.push(s); });
      }));
    }
    const after = await settledRssKB(r.pid, o.settleSeconds ?? 5);
    for (const s of sockets) s.destroy();
    r.child.kill();
    return round((after - before) / count, 1);
  };
  const count = o.users ?? 10_000;
  const tlsKB = await idle("tls", count);
  const tcpKB = await idle("tcp", count);
  log(`S0: idle memory per TLS socket ${tlsKB} KB, per TCP socket ${tcpKB} KB`);
  const lowest = steps[0];
  return {
    scenario: "s0", target: "node-tls-relay", version: process.version,
    headline: {
      relayMaxRate: bestRate(steps), relayMaxDelivered: bestRate(steps, (s) => s.deliveredPerSecond),
      floorP50ms: lowest?.latency.p50ms ?? NaN, floorP99ms: lowest?.latency.p99ms ?? NaN, idleTlsKB: tlsKB, idleTcpKB: tcpKB,
    },
    detail: { steps, idleSockets: count },
  };
}

// S1 — idle authenticated sessions with presence: memory per connection.
export async function s1(target: Target, o: ScenarioOptions): Promise<ScenarioResult> {
  const count = o.users ?? 10_000;
  const names = users(o.prefix, count);
  const registered = await accounts(target, o, names);
  const pid = target.pid;
  if (pid === undefined) throw new Error("S1 measures the server's memory: give its process with --server-pid");
  const before = await settledRssKB(pid, 2);
  const nodesBefore = target.cluster ? rssByNode(target.cluster, pid) : undefined;
  const meter = new Meter(pid);
  const logged = await loginMany(target, names, 50, { traffic: true });
  const loginMeasured = meter.read();
  if (logged.failures) log(`S1: ${logged.failures} logins failed, first: ${logged.firstError}`);
  const after = await settledRssKB(pid, o.settleSeconds ?? 10);
  const perSession = round((after - before) / logged.connections.length, 1);
  log(`S1: ${logged.connections.length} sessions, server RSS ${Math.round(before / 1024)} → ${Math.round(after / 1024)} MB, ${perSession} KB per session`);
  const perNode = target.cluster && nodesBefore ? await memoryPerNode(target, nodesBefore, logged.connections.length) : undefined;
  await closeAll(logged.connections);
  return {
    scenario: "s1", target: target.name, version: target.version,
    headline: {
      sessions: logged.connections.length, idleKBPerSession: perSession, loginFailures: logged.failures,
      ...(perNode ? nodeHeadline(perNode) : {}),
    },
    detail: { registered, rssBeforeKB: before, rssAfterKB: after, perNode, login: { times: logged.loginTimes.summary(), ...loginMeasured } },
  };
}

/** The workers' figures (the primary holds no sessions): the most a node grew per session it holds. */
const nodeHeadline = (perNode: Array<{ node: string; kbPerLocalSession: number; kbPerClusterSession: number }>) => {
  const workers = perNode.filter((n) => n.node !== "primary");
  return {
    nodes: workers.length,
    maxNodeKBPerLocalSession: Math.max(...workers.map((n) => n.kbPerLocalSession)),
    nodesKBPerSession: round(workers.reduce((sum, n) => sum + n.kbPerClusterSession, 0), 1),
  };
};

/**
 * S1 on a cluster: each node's RSS growth, over the sessions it holds and over all sessions.
 * A node holds its own sessions and a directory replica entry for every session of the cluster,
 * so growth = local × (session) + all × (replica entry): comparing 1 and N nodes separates them.
 */
async function memoryPerNode(target: Target, before: Record<string, number>, sessions: number) {
  const after = rssByNode(target.cluster!, target.pid!);
  const status = new Map((await clusterStatus(target.cluster!)).map((n) => [n.node, n.sessions]));
  const perNode = Object.keys(after).map((node) => {
    const local = node === "primary" ? 0 : status.get(node) ?? 0;
    const growthKB = after[node]! - (before[node] ?? NaN);
    return { node, sessions: local, rssBeforeKB: before[node] ?? NaN, rssAfterKB: after[node]!, kbPerLocalSession: local ? round(growthKB / local, 1) : NaN, kbPerClusterSession: round(growthKB / sessions, 1) };
  });
  for (const n of perNode) log(`S1: ${n.node}: ${n.sessions} sessions, RSS ${Math.round(n.rssBeforeKB / 1024)} → ${Math.round(n.rssAfterKB / 1024)} MB, ${n.kbPerLocalSession} KB per own session, ${n.kbPerClusterSession} KB per session of the cluster`);
  return perNode;
}

// S2 — login storm: open-loop logins at rising rates; the highest with p99 < 1 s and no failures.
// With --login sasl2 or fast the storm logs in that way (FAST: token, Bind 2, roster, presence).
export async function s2(target: Target, o: ScenarioOptions): Promise<ScenarioResult> {
  const mode = o.login ?? "classic";
  const pool_ = users(o.prefix, o.users ?? 1000);
  const registered = await accounts(target, o, pool_);
  const devices: { name: string; device: Device }[] = mode === "classic" ? [] : Array.from({ length: pool_.length * STORM_DEVICES_PER_ACCOUNT }, (_, i) => ({ name: pool_[i % pool_.length]!, device: newDevice() }));
  // Every account (or device) logs in once first, as returning users do: the generator then has
  // each SCRAM salted password cached (where the server keeps a fixed salt) and every FAST device
  // its token, and measures the server.
  const warmup = mode === "classic"
    ? await loginMany(target, pool_, 50, { resource: "warmup" })
    : await loginEach(target, devices, 50, (c, { name, device }) => c.loginWith(mode, name, passwordOf(name), device, { resource: "warmup", resumeTls: o.resumeTls }));
  await closeAll(warmup.connections);
  log(`S2 (${mode}): warm-up logins of ${mode === "classic" ? pool_.length : devices.length} ${mode === "classic" ? "accounts" : "devices"} in ${warmup.seconds} s (${warmup.failures} failed)`);
  let k = 0;
  const steps = await ladder(o.rates ?? [25, 50, 100, 200, 300, 400, 600, 800, 1000, 1500], 2, 2000, async (rate, attempt) => {
    const total = Math.round(rate * (o.durationSeconds ?? 5));
    const times = new Histogram();
    let failures = 0;
    let tlsResumed = 0;
    let firstError: string | undefined;
    const meter = new Meter(target.pid);
    const start = performance.now();
    const inFlight: Promise<void>[] = [];
    await openLoop(start, total, rate, (_, dueAt) => {
      const c = new Connection(target.endpoint);
      let login: Promise<unknown>;
      if (mode === "classic") {
        const name = pool_[k % pool_.length]!;
        login = c.login(name, passwordOf(name), { resource: `storm${k}` });
      } else {
        const { name, device } = devices[k % devices.length]!;
        login = c.loginWith(mode, name, passwordOf(name), device, { resource: "storm", resumeTls: o.resumeTls });
      }
      k++;
      inFlight.push(login
        .then(() => { times.recordMs(performance.now() - dueAt); if (c.tlsResumed) tlsResumed++; return c.close(); })
        .catch((e: Error) => { failures++; firstError ??= e.message; c.destroy(); }));
    });
    await Promise.all(inFlight);
    const measured = meter.read();
    const latency = times.summary();
    log(`  ${rate} ${mode} logins/s${attempt > 1 ? " (again)" : ""}: p50 ${latency.p50ms} ms, p99 ${latency.p99ms} ms, failures ${failures}${firstError ? ` (${firstError.slice(0, 120)})` : ""}, server core ${measured.serverCoreShare}, generator core ${measured.generatorCoreShare}${o.resumeTls ? `, TLS resumed ${tlsResumed}` : ""}${invalidNote(measured)}`);
    return {
      offeredRate: rate, attempt, logins: total, completed: times.count, tlsResumed, failures, firstError, latency, ...measured,
      loginsPerSecond: Math.round(times.count / measured.seconds),
      serverCpuMsPerLogin: round((measured.serverCpuSeconds / Math.max(1, times.count)) * 1000, 3),
      passed: measured.valid && failures === 0 && latency.p99ms < P99_LOGIN_MS,
    };
  });
  return {
    scenario: "s2", target: target.name, version: target.version,
    headline: { maxLoginsPerSecond: bestRate(steps) },
    detail: { registered, sasl: target.endpoint.sasl, certificate: target.certificate, login: mode, resumeTls: o.resumeTls === true, steps },
  };
}

// S3 — 1:1 messaging between online pairs at rising rates.
export async function s3(target: Target, o: ScenarioOptions): Promise<ScenarioResult> {
  const count = o.users ?? 1000;
  const names = users(o.prefix, count);
  const registered = await accounts(target, o, names);
  const logged = await loginMany(target, names, 50, { traffic: true, streamManagement: o.streamManagement });
  if (logged.failures) throw new Error(`S3: ${logged.failures} logins failed: ${logged.firstError}`);
  await sleep(1000);
  const c = target.cluster ? await pairedOnCluster(target, logged.connections, o.pairs ?? "random") : logged.connections;
  const crossing = target.cluster ? await crossNodeShare(target.cluster, c.map((conn) => conn.jid)) : undefined;
  if (crossing) log(`S3: ${round(crossing.share * 100, 1)} % of messages cross nodes (${target.cluster!.nodes} node${target.cluster!.nodes > 1 ? "s" : ""}${crossing.unknown ? `, ${crossing.unknown} sessions not in the directory` : ""})`);
  const steps = await rateSteps({
    target, rates: o.rates ?? [250, 500, 1000, 2000, 3000, 5000, 7500, 10000, 15000, 20000], durationSeconds: o.durationSeconds ?? 5,
    copiesPerMessage: 1, receivers: c, p99LimitMs: P99_MESSAGE_MS,
    send: (n, body) => c[n % c.length]!.send(`<message to='${c[(n % c.length) ^ 1]!.jid}' type='chat' id='m${n}'>${body}</message>`),
  });
  await closeAll(c);
  const best = steps.filter((s) => s.passed).at(-1);
  return {
    scenario: "s3", target: target.name, version: target.version,
    headline: {
      maxMessagesPerSecond: best?.offeredRate ?? 0, deliveredPerSecondAtMax: best?.deliveredPerSecond ?? 0,
      p99msAtMax: best?.latency.p99ms ?? NaN, serverCpuSecondsPer10kAtMax: best?.serverCpuSecondsPer10k ?? NaN,
      p99msAt1000: steps.find((s) => s.offeredRate === 1000)?.latency.p99ms ?? NaN,
      ...(crossing ? { nodes: target.cluster!.nodes, crossNodeShare: round(crossing.share, 3) } : {}),
    },
    detail: { registered, login: { seconds: logged.seconds, times: logged.loginTimes.summary() }, crossing, steps },
  };
}

/**
 * S3's order of the users on a cluster (user 2i sends to 2i+1 and back). The primary hands
 * connections to the workers in turn, so in login order every pair of a 2-node cluster would
 * cross: shuffled, (N-1)/N of them do; `cross` pairs across nodes by the session directory.
 */
async function pairedOnCluster(target: Target, connections: Connection[], pairs: "random" | "cross"): Promise<Connection[]> {
  if (pairs === "random") return shuffled(connections);
  const nodes = await nodesOf(target.cluster!, connections.map((c) => c.jid));
  return crossNodePairs(connections, (c) => nodes.get(c.jid));
}

// S4 — store-and-forward: messages to offline users, acked (XEP-0198) once the server has them;
// then the recipients log in and the drain is timed.
export async function s4(target: Target, o: ScenarioOptions): Promise<ScenarioResult> {
  const senderCount = 50;
  const recipientCount = o.users ?? 500;
  const senderNames = users(`${o.prefix}s`, senderCount);
  const recipientNames = users(`${o.prefix}r`, recipientCount);
  const registered = await accounts(target, o, [...senderNames, ...recipientNames]);
  let acks = new Histogram();
  const senders = await loginMany(target, senderNames, 50, { presence: false, streamManagement: true, traffic: true });
  if (senders.failures) throw new Error(`S4: ${senders.failures} sender logins failed: ${senders.firstError}`);
  // Per sender, the due times of messages not yet acked; `h` counts only these messages, since
  // nothing else is sent after <enable/>.
  const unacked = senders.connections.map(() => [] as number[]);
  senders.connections.forEach((s, i) => {
    let handled = 0;
    s.onAck = (h) => {
      const now = performance.now();
      for (; handled < h && unacked[i]!.length; handled++) acks.recordMs(now - unacked[i]!.shift()!);
    };
  });
  const domain = target.endpoint.domain;
  // One attempt per rate: each step ends with 500 logins to drain, too slow to repeat.
  const steps = await ladder(o.rates ?? [250, 500, 1000, 2000, 5000, 10000, 20000], 1, 1000, async (rate) => {
    const total = Math.round(rate * (o.durationSeconds ?? 3));
    acks = new Histogram();
    const meter = new Meter(target.pid);
    const start = performance.now();
    const touched = new Set<number>();
    await openLoop(start, total, rate, (n, dueAt) => {
      const i = n % senderCount;
      senders.connections[i]!.send(`<message to='${recipientNames[n % recipientCount]}@${domain}' type='chat' id='o${n}'>${MARK}${dueAt}</body></message>`);
      unacked[i]!.push(dueAt);
      touched.add(i);
    }, () => {
      // One ack request per sender per tick, as a client flushing its queue would.
      for (const i of touched) senders.connections[i]!.requestAck();
      touched.clear();
    });
    const deadline = performance.now() + 30_000;
    while (acks.count < total && performance.now() < deadline) await sleep(10);
    const stored = meter.read();
    const ackLatency = acks.summary();

    // Drain: every recipient logs in (SM on, so the server may delete what it delivered).
    let drained = 0;
    let lastReceipt = 0;
    const drainStart = performance.now();
    const drainMeter = new Meter(target.pid);
    const recipients = await loginMany(target, recipientNames, 50, { traffic: true, streamManagement: true, resource: `drain${rate}` }, (c) => {
      c.onMark = (dueAt) => { if (dueAt >= start) { drained++; lastReceipt = performance.now(); } };
    });
    const drainDeadline = performance.now() + 60_000;
    while (drained < acks.count && performance.now() < drainDeadline) await sleep(20);
    const drainMeasured = drainMeter.read();
    const drainSeconds = round(((lastReceipt || performance.now()) - drainStart) / 1000);
    await sleep(500); // let the last <a/> reach the server before the streams close
    await closeAll(recipients.connections);
    log(`  ${rate} msg/s to offline users: acked ${acks.count}/${total}, ack p50 ${ackLatency.p50ms} ms, p99 ${ackLatency.p99ms} ms, server core ${stored.serverCoreShare}, generator core ${stored.generatorCoreShare}; drained ${drained} in ${drainSeconds} s${invalidNote(stored)}`);
    return {
      offeredRate: rate, sent: total, acked: acks.count, lost: total - acks.count, ackLatency, ...stored,
      storedPerSecond: Math.round(acks.count / stored.seconds),
      drain: { delivered: drained, missing: acks.count - drained, seconds: drainSeconds, perSecond: Math.round(drained / drainSeconds), serverCoreShare: drainMeasured.serverCoreShare },
      passed: stored.valid && acks.count === total && drained === total && ackLatency.p99ms < P99_MESSAGE_MS,
    };
  });
  await closeAll(senders.connections);
  const best = steps.filter((s) => s.passed).at(-1);
  return {
    scenario: "s4", target: target.name, version: target.version,
    headline: { maxStoredPerSecond: best?.offeredRate ?? 0, ackP99msAtMax: best?.ackLatency.p99ms ?? NaN, drainPerSecondAtMax: best?.drain.perSecond ?? 0 },
    detail: { registered, steps },
  };
}

// S5 — one room, 256 occupants: join time, then messages at rising rates to everyone.
export async function s5(target: Target, o: ScenarioOptions): Promise<ScenarioResult> {
  const count = o.users ?? 256;
  const names = users(`${o.prefix}m`, count);
  const registered = await accounts(target, o, names);
  const logged = await loginMany(target, names, 50);
  if (logged.failures) throw new Error(`S5: ${logged.failures} logins failed: ${logged.firstError}`);
  const c = logged.connections;
  const room = `load${Date.now().toString(36)}@${target.mucDomain}`;
  const joinTimes = new Histogram();
  const join = async (conn: Connection, i: number) => {
    const t = performance.now();
    conn.send(`<presence to='${room}/n${i}'><x xmlns='http://jabber.org/protocol/muc'><history maxstanzas='0'/></x></presence>`);
    const self = await conn.expect(/<presence[^>]*>(?:(?!<\/presence>)[\s\S])*?code=['"]110['"][\s\S]*?<\/presence>/);
    if (/code=['"]201['"]/.test(self[0])) {
      // XEP-0045 §10.1.2: accept the default configuration (an instant room).
      conn.send(`<iq type='set' id='instant' to='${room}'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'/></query></iq>`);
      await conn.expect(/<iq[^>]*id=['"]instant['"][^>]*>/);
    }
    joinTimes.recordMs(performance.now() - t);
  };
  const joinStart = performance.now();
  await join(c[0]!, 0);
  const { errors } = await pool(c.slice(1), 8, (conn, i) => join(conn, i + 1));
  if (errors.length) throw new Error(`S5: ${errors.length} joins failed: ${errors[0]!.message}`);
  const joinSeconds = round((performance.now() - joinStart) / 1000);
  log(`S5: ${count} occupants joined ${room} in ${joinSeconds} s (p99 ${joinTimes.summary().p99ms} ms per join)`);
  for (const conn of c) conn.startTraffic();
  await sleep(1000);
  const steps = await rateSteps({
    target, rates: o.rates ?? [2, 5, 10, 20, 40, 60, 80, 100, 150, 200, 300, 400], durationSeconds: o.durationSeconds ?? 5,
    copiesPerMessage: count, receivers: c, p99LimitMs: P99_MESSAGE_MS,
    send: (n, body) => c[n % count]!.send(`<message to='${room}' type='groupchat' id='g${n}'>${body}</message>`),
  });
  await closeAll(c);
  const best = steps.filter((s) => s.passed).at(-1);
  return {
    scenario: "s5", target: target.name, version: target.version,
    headline: {
      joinSeconds, maxRoomMessagesPerSecond: best?.offeredRate ?? 0, maxDeliveriesPerSecond: best?.deliveredPerSecond ?? 0,
      p99msAtMax: best?.latency.p99ms ?? NaN,
    },
    detail: { registered, occupants: count, join: joinTimes.summary(), steps },
  };
}
