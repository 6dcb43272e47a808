/**
 * S6 — Parley over WebSocket (RFC 7395) next to TCP/TLS, each on a fresh server, in one run:
 * 1:1 messages/s at p99 < 50 ms (S3; target: WebSocket ≥ 80 % of TCP), server memory per idle
 * session (S1; target: WebSocket ≤ 1.5× TCP) and logins/s (S2, WebSocket and TCP).
 */
import type { TargetOptions } from "./targets.js";
import type { ScenarioOptions, ScenarioResult } from "./scenarios.js";
import { log, round } from "./common.js";

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
