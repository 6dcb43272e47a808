/**
 * npm run bench:path [-- --transport tcp|websocket --messages N --storage sqlite|memory --no-sm --cpu-profile FILE --outliving-scavenges --pairs P --rate R]:
 * where the server's CPU and allocations go per 1:1 message, with the shipped defaults (SQLite,
 * archive on, stream management on). Parley runs in this process; a client process
 * (bench/message-path-client.ts) logs in 50 sender/recipient pairs (`--pairs`) over direct TLS or
 * WebSocket and keeps 100 messages in flight, or with `--rate` sends that many a second: 100 waiting
 * messages are alive at every scavenge, while a steady load keeps only what the server holds on to.
 *
 * Two passes of the same traffic after a warm-up: CPU per message (process.cpuUsage, so the
 * client's cost is not in it), then the bytes allocated per message and the allocation sites that
 * account for them, from V8's sampling heap profiler with the objects young- and old-generation GCs
 * collected included. Allocation drives scavenges (the p99 spikes) and, unlike CPU time, does not
 * move with the load of a shared machine, so a change to the hot path can be judged on a busy one.
 * `--cpu-profile FILE` writes a V8 CPU profile of the CPU pass (its CPU figure then includes the
 * profiler's cost). `--outliving-scavenges` counts only the objects that a young-generation GC did
 * not collect: what each scavenge has to copy (its pause grows with them) and what gets promoted.
 */
import { execFileSync, fork } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Session } from "node:inspector/promises";
import { fileURLToPath } from "node:url";
import { round } from "./load/common.js";

const args = process.argv.slice(2);
const option = (name: string, fallback: string) => { const i = args.indexOf(`--${name}`); return i === -1 ? fallback : args[i + 1]!; };
const transport = option("transport", "tcp");
const messages = Number(option("messages", "40000"));
const storage = option("storage", "sqlite");
const streamManagement = !args.includes("--no-sm");
const top = Number(option("top", "25"));
/** A V8 CPU profile of the CPU pass only (not the logins or the allocation pass), for devtools or a script. */
const cpuProfile = option("cpu-profile", "");
const outlivingScavenges = args.includes("--outliving-scavenges");
const PAIRS = Number(option("pairs", "50"));
const rate = Number(option("rate", "0"));

// The compiled server, as `npm run bench` runs it, so that the profile's lines are tsc's output.
const repo = fileURLToPath(new URL("..", import.meta.url));
execFileSync(process.execPath, [join(repo, "node_modules/typescript/bin/tsc"), "-p", join(repo, "tsconfig.build.json"), "--outDir", join(repo, ".bench-build")], { stdio: "inherit" });
const { parseConfig } = (await import(join(repo, ".bench-build/config.js"))) as typeof import("../src/config.js");
const { startServer } = (await import(join(repo, ".bench-build/server.js"))) as typeof import("../src/server.js");
const { silentLogger } = (await import(join(repo, ".bench-build/log.js"))) as typeof import("../src/log.js");
const { tuneHeapForServing } = (await import(join(repo, ".bench-build/heap.js"))) as typeof import("../src/heap.js");

// The heap as `parley start` sets it, so that what outlives a scavenge here is what does there.
tuneHeapForServing();
const dataDir = mkdtempSync(join(tmpdir(), "parley-path-"));
const server = await startServer(parseConfig({
  hosts: ["parley.test"], dataDir, log: { level: "warn" },
  listen: { address: "127.0.0.1", c2s: null, c2sDirectTls: 0, https: 0, http: null, s2s: null, component: null },
  chat: { enabled: false },
  storage: { driver: storage },
  limits: { maxConnectionsPerAddress: 10_000 },
  // As the load generator's targets: the senders are not in the recipients' rosters.
  modules: { offline: { maxFromStrangers: 1_000_000, maxPerStranger: 1_000_000 } },
}), { log: silentLogger() });
const names = Array.from({ length: PAIRS * 2 }, (_, i) => `path${i}`);
for (const name of names) await server.accounts.create(`${name}@parley.test`, `pw-${name}`);

const port = transport === "websocket" ? server.ports.https! : server.ports.c2sDirectTls!;
const client = fork(fileURLToPath(new URL("./message-path-client.ts", import.meta.url)),
  [transport, String(port), String(messages), String(PAIRS), streamManagement ? "sm" : "no-sm", String(rate)], { execArgv: ["--import", "tsx"] });
const next = async () => { const [m] = await once(client, "message"); if (typeof m === "string" && m.startsWith("error")) throw new Error(m); return m; };
await next(); // logged in and warmed up

const inspector = new Session();
inspector.connect();
if (cpuProfile) { await inspector.post("Profiler.enable"); await inspector.post("Profiler.start"); }
const cpuStart = process.cpuUsage();
client.send("run");
await next();
const cpu = process.cpuUsage(cpuStart);
if (cpuProfile) writeFileSync(cpuProfile, JSON.stringify((await inspector.post("Profiler.stop")).profile));

await inspector.post("HeapProfiler.startSampling", { samplingInterval: 1024, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: !outlivingScavenges } as never);
client.send("run");
await next();
const { profile } = (await inspector.post("HeapProfiler.stopSampling")) as unknown as { profile: { head: SamplingNode } };
inspector.disconnect();
client.kill();
await server.stop();
rmSync(dataDir, { recursive: true, force: true });

interface SamplingNode { selfSize: number; callFrame: { functionName: string; url: string; lineNumber: number }; children: SamplingNode[] }
/** Self bytes per allocation site, and per site of our own code that the allocation happened under. */
const sites = new Map<string, number>();
const ours = new Map<string, number>();
let total = 0;
const where = (f: SamplingNode["callFrame"]) => `${f.functionName || "(anonymous)"} ${f.url.replace(/^.*\/(\.bench-build|node_modules)\//, "$1/")}:${f.lineNumber + 1}`;
const walk = (node: SamplingNode, ownFrame: string | undefined) => {
  const frame = where(node.callFrame);
  const own = node.callFrame.url.includes("/.bench-build/") ? frame : ownFrame;
  if (node.selfSize) {
    total += node.selfSize;
    sites.set(frame, (sites.get(frame) ?? 0) + node.selfSize);
    if (own) ours.set(own, (ours.get(own) ?? 0) + node.selfSize);
  }
  for (const child of node.children) walk(child, own);
};
walk(profile.head, undefined);
const ranked = (m: Map<string, number>) => [...m].sort((a, b) => b[1] - a[1]).slice(0, top).map(([site, bytes]) => `${String(Math.round(bytes / messages)).padStart(6)} B  ${site}`);
const counted = outlivingScavenges ? "bytes per message that outlived a scavenge" : "bytes per message";
console.error(`allocation sites (${counted}):\n${ranked(sites).join("\n")}`);
console.error(`\nunder our own frames (innermost frame of Parley's own code, ${counted}):\n${ranked(ours).join("\n")}`);
console.log(JSON.stringify({ transport, storage, streamManagement, messages, pairs: PAIRS, rate,
  serverCpuMicrosPerMessage: round((cpu.user + cpu.system) / messages),
  [outlivingScavenges ? "bytesOutlivingScavengesPerMessage" : "allocatedBytesPerMessage"]: Math.round(total / messages) }));
