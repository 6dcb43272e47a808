/**
 * S6 — Parley over WebSocket (RFC 7395) next to TCP/TLS, each on a fresh server, in one run:
 * 1:1 messages/s at p99 < 50 ms (S3; target: WebSocket ≥ 80 % of TCP), server memory per idle
 * session (S1; target: WebSocket ≤ 1.5× TCP) and logins/s (S2, WebSocket and TCP).
 */
import type { Target, TargetOptions } from "./targets.js";
import { accounts, P99_MESSAGE_MS, type ScenarioOptions, type ScenarioResult } from "./scenarios.js";
import { closeAll, log, loginMany, median, rateSteps, round, sleep, users, type StepResult } from "./common.js";
import type { Connection } from "./xmpp.js";

type Run = (scenario: "s1" | "s2" | "s3", target: TargetOptions, options: ScenarioOptions) => Promise<ScenarioResult>;

export async function s6(target: TargetOptions, o: ScenarioOptions, run: Run): Promise<ScenarioResult> {
  if (target.target !== "parley") throw new Error("S6 measures Parley's own WebSocket endpoint: --target parley");
  const over = (transport: "tcp" | "websocket") => ({ ...target, transport });
  const results: Record<string, ScenarioResult> = {};
  // Messaging and logins use the scenario's user count; idle memory needs more sessions to rise above the noise.
  for (const [name, scenario, options] of [
    ["s3-tcp", "s3", { ...o, prefix: `${o.prefix}m` }],
    ["s3-websocket", "s3", { ...o, prefix: `${o.prefix}m` }],
    ["s1-tcp", "s1", { ...o, users: o.users ?? 5000, prefix: `${o.prefix}i` }],
    ["s1-websocket", "s1", { ...o, users: o.users ?? 5000, prefix: `${o.prefix}i` }],
    ["s2-tcp", "s2", { ...o, prefix: `${o.prefix}l` }],
    ["s2-websocket", "s2", { ...o, prefix: `${o.prefix}l` }],
  ] as const) {
    results[name] = await run(scenario, over(name.endsWith("websocket") ? "websocket" : "tcp"), options);
  }
  const h = (name: string, key: string) => results[name]!.headline[key] ?? NaN;
  const headline = {
    tcpMaxMessagesPerSecond: h("s3-tcp", "maxMessagesPerSecond"),
    websocketMaxMessagesPerSecond: h("s3-websocket", "maxMessagesPerSecond"),
    websocketToTcpMessages: round(h("s3-websocket", "maxMessagesPerSecond") / h("s3-tcp", "maxMessagesPerSecond")),
    tcpIdleKBPerSession: h("s1-tcp", "idleKBPerSession"),
    websocketIdleKBPerSession: h("s1-websocket", "idleKBPerSession"),
    websocketToTcpMemory: round(h("s1-websocket", "idleKBPerSession") / h("s1-tcp", "idleKBPerSession")),
    tcpMaxLoginsPerSecond: h("s2-tcp", "maxLoginsPerSecond"),
    websocketMaxLoginsPerSecond: h("s2-websocket", "maxLoginsPerSecond"),
  };
  log(`S6: messages/s WebSocket ${headline.websocketMaxMessagesPerSecond} vs TCP ${headline.tcpMaxMessagesPerSecond} (${headline.websocketToTcpMessages}×); idle KB/session ${headline.websocketIdleKBPerSession} vs ${headline.tcpIdleKBPerSession} (${headline.websocketToTcpMemory}×); logins/s ${headline.websocketMaxLoginsPerSecond} vs ${headline.tcpMaxLoginsPerSecond}`);
  return { scenario: "s6", target: "parley", version: results["s3-tcp"]!.version, headline, detail: results };
}

/**
 * S8 — the CPU a 1:1 message costs over WebSocket next to TCP/TLS on one server, in one run: half
 * the users log in over direct TLS, half over WebSocket, and S3 steps at one rate alternate between
 * the two sets (TCP, WebSocket, TCP, …), so the two transports see the same machine. On a shared
 * machine the server's CPU-seconds per 10,000 messages, step by step, are steadier than a ceiling:
 * the headline is the median over rounds of each round's WebSocket/TCP ratio.
 */
export async function s8(target: Target, o: ScenarioOptions): Promise<ScenarioResult> {
  if (target.websocketPort === undefined || target.endpoint.transport === "websocket") throw new Error("S8 needs a Parley target over TCP (it opens the WebSocket side itself)");
  const overWebSocket: Target = { ...target, endpoint: { ...target.endpoint, port: target.websocketPort, transport: "websocket" } };
  const half = Math.floor((o.users ?? 1000) / 2 / 2) * 2;
  const rate = o.rates?.[0] ?? 2000;
  const rounds = o.rounds ?? 3;
  const sides = { tcp: { target, prefix: `${o.prefix}t` }, websocket: { target: overWebSocket, prefix: `${o.prefix}w` } };
  const connections: Record<string, Connection[]> = {};
  for (const [name, side] of Object.entries(sides)) {
    const names = users(side.prefix, half);
    await accounts(target, o, names);
    const logged = await loginMany(side.target, names, 50, { traffic: true });
    if (logged.failures) throw new Error(`S8: ${logged.failures} ${name} logins failed: ${logged.firstError}`);
    connections[name] = logged.connections;
  }
  await sleep(1000);
  if ((o.rates?.length ?? 0) > 1) return s8Ladder(target, o, connections, half * 2);
  const steps: Record<string, StepResult[]> = { tcp: [], websocket: [] };
  const ratios: number[] = [];
  for (let n = 1; n <= rounds; n++) {
    const cpu: Record<string, number> = {};
    for (const name of ["tcp", "websocket"]) {
      const c = connections[name]!;
      log(`round ${n}/${rounds}, ${name}`);
      const attempts = await rateSteps({
        target, rates: [rate], durationSeconds: o.durationSeconds ?? 5, copiesPerMessage: 1, receivers: c, p99LimitMs: P99_MESSAGE_MS,
        send: (n, body) => c[n % c.length]!.send(`<message to='${c[(n % c.length) ^ 1]!.jid}' type='chat' id='m${n}'>${body}</message>`),
      });
      steps[name]!.push(...attempts);
      cpu[name] = median(attempts.map((s) => s.serverCpuSecondsPer10k));
    }
    ratios.push(cpu.websocket! / cpu.tcp!);
    log(`round ${n}: server CPU-s per 10k messages, TCP ${cpu.tcp}, WebSocket ${cpu.websocket} (${round(ratios.at(-1)!)}×)`);
  }
  await closeAll([...connections.tcp!, ...connections.websocket!]);
  const per10k = (name: string) => median(steps[name]!.map((s) => s.serverCpuSecondsPer10k));
  const headline = {
    rate, tcpCpuSecondsPer10k: per10k("tcp"), websocketCpuSecondsPer10k: per10k("websocket"), websocketToTcpCpu: round(median(ratios)),
    tcpP99ms: median(steps.tcp!.map((s) => s.latency.p99ms)), websocketP99ms: median(steps.websocket!.map((s) => s.latency.p99ms)),
  };
  log(`S8 at ${rate}/s: server CPU-s per 10k messages TCP ${headline.tcpCpuSecondsPer10k}, WebSocket ${headline.websocketCpuSecondsPer10k}; WebSocket/TCP ${headline.websocketToTcpCpu}× (median of ${rounds} rounds)`);
  return { scenario: "s8", target: target.name, version: target.version, headline, detail: { users: half * 2, rate, ratios, steps } };
}

/**
 * S8 with several `--rates`: the ceiling of each transport on the same server, step by step. At
 * each rate a TCP step and a WebSocket step run back to back (each tried twice, as in every
 * ladder), the order swapped from one rate to the next, until neither passes. The headline is each
 * transport's highest passing rate (p99 < 50 ms, nothing lost) and their ratio: unlike two ladders
 * on two fresh servers (S6), a GC-heavy or noisy minute lands on both.
 */
async function s8Ladder(target: Target, o: ScenarioOptions, connections: Record<string, Connection[]>, users: number): Promise<ScenarioResult> {
  const steps: Record<string, StepResult[]> = { tcp: [], websocket: [] };
  const best: Record<string, number> = { tcp: 0, websocket: 0 };
  for (const [i, rate] of o.rates!.entries()) {
    const order = i % 2 === 0 ? ["tcp", "websocket"] : ["websocket", "tcp"];
    let anyPassed = false;
    for (const name of order) {
      const c = connections[name]!;
      log(`rate ${rate}/s, ${name}`);
      const attempts = await rateSteps({
        target, rates: [rate], durationSeconds: o.durationSeconds ?? 5, copiesPerMessage: 1, receivers: c, p99LimitMs: P99_MESSAGE_MS,
        send: (n, body) => c[n % c.length]!.send(`<message to='${c[(n % c.length) ^ 1]!.jid}' type='chat' id='m${n}'>${body}</message>`),
      });
      steps[name]!.push(...attempts);
      if (attempts.some((a) => a.passed)) {
        best[name] = rate;
        anyPassed = true;
      }
    }
    if (!anyPassed) break;
  }
  await closeAll([...connections.tcp!, ...connections.websocket!]);
  const headline = { tcpMaxMessagesPerSecond: best.tcp!, websocketMaxMessagesPerSecond: best.websocket!, websocketToTcpMessages: round(best.websocket! / best.tcp!) };
  log(`S8 ladder: messages/s at p99 < ${P99_MESSAGE_MS} ms, WebSocket ${best.websocket} vs TCP ${best.tcp} (${headline.websocketToTcpMessages}×) on one server, steps alternated`);
  return { scenario: "s8", target: target.name, version: target.version, headline, detail: { users, rates: o.rates, steps } };
}
