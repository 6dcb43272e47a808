/**
 * npm run bench:transport [-- --messages N --rounds K]: what the transport layer alone costs per
 * stanza, WebSocket (RFC 7395 on `ws`) next to TCP, with no TLS, routing or storage. In this
 * process, a plain HTTP server hands upgrades to WebSocketTransport and a plain TCP server to
 * TcpTransport; each element that arrives is serialized and sent back on the same transport, as a
 * delivery is. A client process (bench/transport-path-client.ts) keeps 20 stanzas in flight.
 *
 * Per transport and round: this process's CPU per message (process.cpuUsage, so the client's
 * cost is not in it) and the bytes allocated per message, from V8's sampling heap profiler with
 * the objects that young- and old-generation GCs collected included. Allocation is what drives
 * scavenges, and unlike CPU time it does not move with the load of a shared machine. Rounds
 * alternate the transports; the figures are medians.
 */
import { createServer as createHttpServer } from "node:http";
import { createServer as createTcpServer, type AddressInfo, type Server } from "node:net";
import { fork } from "node:child_process";
import { once } from "node:events";
import { Session } from "node:inspector/promises";
import { fileURLToPath } from "node:url";
import { WebSocketServer } from "ws";
import { Heartbeat, WebSocketTransport } from "../src/xmpp/stream/websocket.js";
import { TcpTransport } from "../src/xmpp/stream/tcp.js";
import type { Transport } from "../src/xmpp/stream/transport.js";
import type { ParserLimits } from "../src/xmpp/parser.js";
import { NS } from "../src/xmpp/ns.js";
import { median, round } from "./load/common.js";

const args = process.argv.slice(2);
const arg = (name: string, fallback: number) => { const i = args.indexOf(`--${name}`); return i === -1 ? fallback : Number(args[i + 1]); };
const MESSAGES = arg("messages", 100_000);
const ROUNDS = arg("rounds", 3);
const LIMITS: ParserLimits = { maxStanzaBytes: 262_144, maxDepth: 32, maxElementsPerStanza: 10_000, maxAttributes: 100, maxNameLength: 256, maxLangLength: 64 };

type Kind = "websocket" | "tcp";

/** Every element back to its sender, serialized, as the router's delivery would write it. */
function echo(transport: Transport): void {
  transport.setReceiver({
    streamStart: () => transport.openStream({ ns: NS.CLIENT, id: "bench", version: "1.0" }),
    element: (element) => transport.send(element.toString()),
    streamEnd() {}, error: (e) => { throw e; }, ended() {}, drain() {},
  });
}

async function listen(server: Server): Promise<number> {
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return (server.address() as AddressInfo).port;
}

const heartbeat = new Heartbeat(60_000);
const wss = new WebSocketServer({ noServer: true, clientTracking: false, perMessageDeflate: false, maxPayload: LIMITS.maxStanzaBytes, handleProtocols: () => "xmpp" });
const http = createHttpServer();
http.on("upgrade", (req, socket, head) => wss.handleUpgrade(req, socket, head, (ws) =>
  echo(new WebSocketTransport(ws, socket, { address: "127.0.0.1", secure: false, tls: undefined }, LIMITS, heartbeat))));
const tcp = createTcpServer((socket) => { socket.setNoDelay(true); echo(new TcpTransport(socket, LIMITS, undefined)); });
const ports: Record<Kind, number> = { websocket: await listen(http), tcp: await listen(tcp) };

const inspector = new Session();
inspector.connect();

async function measure(kind: Kind): Promise<{ cpuMicros: number; allocatedBytes: number }> {
  const client = fork(fileURLToPath(new URL("./transport-path-client.ts", import.meta.url)), [kind, String(ports[kind]), String(MESSAGES)], { execArgv: ["--import", "tsx"] });
  await once(client, "message"); // connected and warmed up
  // Two passes of the same traffic: CPU without the heap profiler's cost, then allocation with it.
  const cpu = process.cpuUsage();
  client.send("run");
  await once(client, "message");
  const used = process.cpuUsage(cpu);
  await inspector.post("HeapProfiler.startSampling", { samplingInterval: 4096, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true } as never);
  client.send("run");
  await once(client, "message");
  const { profile } = (await inspector.post("HeapProfiler.stopSampling")) as { profile: { head: SamplingNode } };
  client.kill();
  return { cpuMicros: (used.user + used.system) / MESSAGES, allocatedBytes: totalSize(profile.head) / MESSAGES };
}

interface SamplingNode { selfSize: number; children: SamplingNode[] }
const totalSize = (node: SamplingNode): number => node.children.reduce((sum, child) => sum + totalSize(child), node.selfSize);

const results: Record<Kind, { cpuMicros: number; allocatedBytes: number }[]> = { websocket: [], tcp: [] };
for (let n = 1; n <= ROUNDS; n++) {
  for (const kind of ["tcp", "websocket"] as const) {
    const r = await measure(kind);
    results[kind].push(r);
    console.error(`round ${n} ${kind}: ${round(r.cpuMicros)} µs CPU, ${Math.round(r.allocatedBytes)} bytes allocated per message`);
  }
}
const summary = Object.fromEntries((["tcp", "websocket"] as const).map((kind) => [kind, {
  cpuMicrosPerMessage: round(median(results[kind].map((r) => r.cpuMicros))),
  allocatedBytesPerMessage: Math.round(median(results[kind].map((r) => r.allocatedBytes))),
}]));
console.log(JSON.stringify({ messages: MESSAGES, rounds: ROUNDS, ...summary }));
heartbeat.stop();
http.close();
tcp.close();
inspector.disconnect();
