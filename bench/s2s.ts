/**
 * bench:s2s — federation between two Parleys on loopback (issue 15, "Performance, measured"):
 *   1. set-up time: the first message to a new domain until it is delivered there, with SASL
 *      EXTERNAL (certificates from a throwaway CA) and with dialback (self-signed certificates);
 *   2. messages/s at fixed offered rates, p50/p99 latency, over s2s and Parley-local 1:1 in the same run;
 *   0. memory per incoming s2s stream (streams opened by a child process, each authenticated with
 *      SASL EXTERNAL as another subdomain of a wildcard certificate).
 * Both servers and the clients share this machine: the figures compare, they do not promise.
 * Usage: npm run bench:s2s -- [--repeats 3] [--seconds 3] [--streams 200]
 */
import { fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import { connect as tcpConnect } from "node:net";
import { connect as tlsConnect } from "node:tls";
import { readFileSync } from "node:fs";
import { startTestServer, type TestServer } from "../test/helpers/server.js";
import { connect, xml, type Connected } from "../test/helpers/xmpp-client.js";
import { freePort, makePki, type Pki } from "../test/helpers/s2s.js";
import { median, percentile } from "./stats.js";

const arg = (name: string, def: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? def : Number(process.argv[i + 1]);
};

// ── child: open N authenticated s2s streams and hold them ─────────────────────────────────────
if (process.argv[2] === "--hold-streams") {
  const [port, cert, key, n] = [Number(process.argv[3]), process.argv[4]!, process.argv[5]!, Number(process.argv[6])];
  const header = (from: string) => `<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' to='b.test' from='${from}' version='1.0'>`;
  const open = (k: number) => new Promise<void>((resolve, reject) => {
    const from = `d${k}.bench.test`;
    const plain = tcpConnect({ port, host: "127.0.0.1" });
    plain.once("error", reject);
    let text = "";
    plain.on("data", (d) => {
      text += d;
      if (text.includes("<proceed")) {
        plain.removeAllListeners("data");
        const tls = tlsConnect({ socket: plain, servername: "b.test", cert: readFileSync(cert), key: readFileSync(key), rejectUnauthorized: false });
        let secure = "";
        tls.on("data", (d2) => {
          secure += d2;
          if (secure.includes("EXTERNAL") && !secure.includes("<success")) tls.write("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>");
          if (secure.includes("<success")) { secure = ""; tls.removeAllListeners("data"); tls.write(header(from)); tls.once("data", () => resolve()); }
        });
        tls.write(header(from));
      }
    });
    plain.write(header(from));
    plain.write("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
  });
  for (let k = 0; k < n; k += 20) await Promise.all(Array.from({ length: Math.min(20, n - k) }, (_, j) => open(k + j)));
  process.send!("ready");
  await new Promise(() => {});
}

const REPEATS = arg("repeats", 3);
const SECONDS = arg("seconds", 3);
const STREAMS = arg("streams", 200);
const RATES = (process.env.BENCH_RATES ?? "250,500,1000,2000").split(",").map(Number);

interface Pair { a: TestServer; b: TestServer }

async function startPair(pki: Pki | undefined): Promise<Pair> {
  const [portA, portB] = await Promise.all([freePort(), freePort()]);
  const start = (host: string, port: number, peer: string, peerPort: number) => startTestServer({
    hosts: [host],
    listen: { address: "127.0.0.1", c2s: 0, c2sDirectTls: null, https: null, http: null, s2s: port },
    ...(pki ? { tls: { certificates: { [host]: pki.files[host]! } } } : {}),
    // The path is measured, not the flood limit; the memory step opens all its streams from one address.
    s2s: { caFiles: pki ? [pki.caFile] : [], routes: { [peer]: `127.0.0.1:${peerPort}` }, maxStanzasPerSecond: 1_000_000, maxConnectionsPerAddress: STREAMS + 10 },
    metrics: { enabled: false },
  });
  const [a, b] = await Promise.all([start("a.test", portA, "b.test", portB), start("b.test", portB, "a.test", portA)]);
  await a.accounts.create("alice@a.test", "pw");
  await a.accounts.create("carol@a.test", "pw");
  await b.accounts.create("bob@b.test", "pw");
  return { a, b };
}

const login = async (server: TestServer, user: string, domain: string) => {
  const c = await connect({ port: server.ports.c2s!, domain, username: user, password: "pw", resource: "r" });
  await c.xmpp.send(xml("presence"));
  return c;
};

async function setupTimes(pki: Pki | undefined): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < REPEATS; i++) {
    const pair = await startPair(pki);
    const alice = await login(pair.a, "alice", "a.test");
    const bob = await login(pair.b, "bob", "b.test");
    const start = performance.now();
    await alice.xmpp.send(xml("message", { to: "bob@b.test", type: "chat", id: "first" }, xml("body", {}, "hi")));
    await bob.waitFor((s) => s.attrs.id === "first", 20_000);
    times.push(performance.now() - start);
    await alice.stop(); await bob.stop();
    await pair.a.cleanup(); await pair.b.cleanup();
  }
  return times;
}

/** Offered load `rate` msg/s for SECONDS from `from` to `to`; latencies of what arrived (ms). */
async function step(from: Connected, to: Connected, toJid: string, rate: number, tag: string) {
  const latencies: number[] = [];
  const total = rate * SECONDS;
  let received = 0;
  const events = to.xmpp as unknown as NodeJS.EventEmitter;
  const done = new Promise<void>((resolve) => {
    const onStanza = (s: { attrs: Record<string, string>; getChildText(n: string): string | null }) => {
      if (!s.attrs.id?.startsWith(`${tag}-`)) return;
      latencies.push(performance.now() - Number(s.getChildText("body")));
      if (++received === total) { events.off("stanza", onStanza); resolve(); }
    };
    events.on("stanza", onStanza);
    setTimeout(() => { events.off("stanza", onStanza); resolve(); }, SECONDS * 1000 + 10_000).unref();
  });
  const cpuBefore = process.cpuUsage();
  const started = performance.now();
  for (let sent = 0; sent < total;) {
    const due = Math.min(total, Math.floor(((performance.now() - started) / 1000) * rate) + 1);
    while (sent < due) {
      void from.xmpp.send(xml("message", { to: toJid, type: "chat", id: `${tag}-${sent}` }, xml("body", {}, String(performance.now()))));
      sent++;
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  await done;
  // Both servers and the clients run in this process: CPU time per message is the steadier figure on a shared machine.
  const cpu = process.cpuUsage(cpuBefore);
  return { rate, delivered: received / total, p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99), cpuUsPerMessage: (cpu.user + cpu.system) / Math.max(1, received) };
}

async function memoryPerStream(pki: Pki): Promise<{ rssKiB: number; heapKiB: number; streams: number }> {
  const pair = await startPair(pki);
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.(); gc?.();
  const before = process.memoryUsage();
  const child = fork(fileURLToPath(import.meta.url), ["--hold-streams", String(pair.b.ports.s2s), pki.files["bench.test"]!.cert, pki.files["bench.test"]!.key, String(STREAMS)], { execArgv: ["--import", "tsx"] });
  await new Promise<void>((resolve, reject) => { child.once("message", () => resolve()); child.once("exit", (code) => reject(new Error(`stream holder exited ${code}`))); });
  await new Promise((r) => setTimeout(r, 500));
  gc?.(); gc?.();
  const after = process.memoryUsage();
  const streams = pair.b.s2s().incoming.filter((i) => i.domains.length > 0).length;
  child.kill();
  await pair.a.cleanup(); await pair.b.cleanup();
  const per = (bytes: number) => bytes / 1024 / Math.max(1, streams);
  return { rssKiB: per(after.rss - before.rss), heapKiB: per(after.heapUsed + after.external - before.heapUsed - before.external), streams };
}

const pki = makePki(["a.test", "b.test", "bench.test"]);
console.log(`# bench:s2s — ${new Date().toISOString()}, node ${process.version}, load ${(await import("node:os")).loadavg().map((l) => l.toFixed(2)).join(" ")}`);

// First, while the process is fresh, so that RSS measures the streams and not what earlier steps left.
const memory = await memoryPerStream(pki);
console.log(`\n## Memory: ${memory.streams} incoming s2s streams held open (TLS 1.3, SASL EXTERNAL), per stream: ${memory.rssKiB.toFixed(1)} KiB RSS, ${memory.heapKiB.toFixed(1)} KiB JS heap + external${(globalThis as { gc?: unknown }).gc ? "" : " (run with --expose-gc for steadier figures)"}`);

const external = await setupTimes(pki);
const dialback = await setupTimes(undefined);
console.log("\n## Set-up: first message to a new domain until delivered (ms)");
console.log(`| auth | runs | median | all |\n|---|---|---|---|`);
console.log(`| SASL EXTERNAL | ${external.length} | ${median(external).toFixed(1)} | ${external.map((t) => t.toFixed(1)).join(", ")} |`);
console.log(`| dialback | ${dialback.length} | ${median(dialback).toFixed(1)} | ${dialback.map((t) => t.toFixed(1)).join(", ")} |`);

const pair = await startPair(pki);
const alice = await login(pair.a, "alice", "a.test");
const carol = await login(pair.a, "carol", "a.test");
const bob = await login(pair.b, "bob", "b.test");
await alice.xmpp.send(xml("message", { to: "bob@b.test", id: "warm" }, xml("body", {}, "0")));
await bob.waitFor((s) => s.attrs.id === "warm", 20_000);
console.log(`\n## 1:1 messages at offered rates, ${SECONDS} s per step (latency in ms, client to client)`);
console.log("| path | offered msg/s | delivered | p50 | p99 | CPU µs/msg (whole process) |\n|---|---|---|---|---|---|");
const best: Record<string, number> = { s2s: 0, local: 0 };
for (const rate of RATES) {
  for (const [path, to, jid] of [["s2s", bob, "bob@b.test"], ["local", carol, "carol@a.test"]] as const) {
    const r = await step(alice, to, jid, rate, `${path}${rate}`);
    if (r.delivered === 1 && r.p99 < 50) best[path] = Math.max(best[path]!, rate);
    console.log(`| ${path} | ${rate} | ${(r.delivered * 100).toFixed(1)}% | ${r.p50.toFixed(1)} | ${r.p99.toFixed(1)} | ${r.cpuUsPerMessage.toFixed(0)} |`);
  }
}
console.log(`\nHighest offered rate with all delivered and p99 < 50 ms: s2s ${best.s2s} msg/s, local ${best.local} msg/s.`);
await alice.stop(); await carol.stop(); await bob.stop();
await pair.a.cleanup(); await pair.b.cleanup();

process.exit(0);
