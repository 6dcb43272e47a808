/**
 * bench:s2s — federation between two Parleys on loopback (issue 15, "Performance, measured"):
 *   1. set-up time: the first message to a new domain until it is delivered there, with SASL
 *      EXTERNAL (certificates from a throwaway CA) and with dialback (self-signed certificates);
 *   2. messages/s at fixed offered rates, p50/p99 latency, over s2s and Parley-local 1:1 in the same run;
 *   0. memory per incoming s2s stream (streams opened by a child process, each authenticated with
 *      SASL EXTERNAL as another subdomain of a wildcard certificate).
 * With --peer ejabberd (or prosody): instead, one Parley for parley.test federating with that
 * server of the peers kit (../shared/peers), and step 2 from N Parley users to N users of the peer
 * over s2s, against Parley-local 1:1 between N other pairs, in the same run.
 * Both servers and the clients share this machine: the figures compare, they do not promise.
 * Usage: npm run bench:s2s -- [--repeats 3] [--seconds 3] [--streams 200] [--peer ejabberd|prosody] [--users 10]
 */
import { fileURLToPath } from "node:url";
import { connect as tcpConnect } from "node:net";
import { connect as tlsConnect } from "node:tls";
import { execFileSync, fork, spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { loadavg } from "node:os";
import { resolve } from "node:path";
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
const USERS = arg("users", 10);
const PEER = process.argv.includes("--peer") ? process.argv[process.argv.indexOf("--peer") + 1]! : undefined;
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

/** One sender and the receiver its messages go to. */
interface Route { from: Connected; to: Connected; toJid: string }

/**
 * Offered load `rate` msg/s in total for SECONDS, spread round-robin over `routes`; latencies of
 * what arrived (ms).
 */
async function step(routes: Route[], rate: number, tag: string) {
  const latencies: number[] = [];
  const total = rate * SECONDS;
  let received = 0;
  const receivers = [...new Set(routes.map((r) => r.to.xmpp as unknown as NodeJS.EventEmitter))];
  const done = new Promise<void>((resolve) => {
    const stop = () => { for (const events of receivers) events.off("stanza", onStanza); resolve(); };
    const onStanza = (s: { attrs: Record<string, string>; getChildText(n: string): string | null }) => {
      if (!s.attrs.id?.startsWith(`${tag}-`)) return;
      latencies.push(performance.now() - Number(s.getChildText("body")));
      if (++received === total) stop();
    };
    for (const events of receivers) events.on("stanza", onStanza);
    setTimeout(stop, SECONDS * 1000 + 10_000).unref();
  });
  const cpuBefore = process.cpuUsage();
  const started = performance.now();
  for (let sent = 0; sent < total;) {
    const due = Math.min(total, Math.floor(((performance.now() - started) / 1000) * rate) + 1);
    while (sent < due) {
      const { from, toJid } = routes[sent % routes.length]!;
      void from.xmpp.send(xml("message", { to: toJid, type: "chat", id: `${tag}-${sent}` }, xml("body", {}, String(performance.now()))));
      sent++;
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  await done;
  // The Parleys and the clients run in this process (a peer of the kit does not): CPU time per message is the steadier figure on a shared machine.
  const cpu = process.cpuUsage(cpuBefore);
  return { rate, delivered: received / total, p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99), cpuUsPerMessage: (cpu.user + cpu.system) / Math.max(1, received) };
}

const DRAIN_SECONDS = 60;

/** Whether a probe sent on `route` now arrives within DRAIN_SECONDS, behind whatever is still queued on the way. */
async function drained(route: Route, tag: string): Promise<boolean> {
  const id = `${tag}-probe`;
  await route.from.xmpp.send(xml("message", { to: route.toJid, type: "chat", id }, xml("body", {}, "0")));
  return route.to.waitFor((s) => s.attrs.id === id, DRAIN_SECONDS * 1000).then(() => true, () => false);
}

/** Every rate of RATES on each path in turn, interleaved so that the paths see the same machine load; one table row per step. */
async function rateSteps(paths: Array<[name: string, routes: Route[]]>, tagSuffix = "", peerCpu?: { name: string; microseconds: () => number }) {
  console.log(`\n## 1:1 messages at offered rates, ${SECONDS} s per step (latency in ms, client to client)`);
  console.log(`| path | offered msg/s | delivered | p50 | p99 | CPU µs/msg (this process) |${peerCpu ? ` CPU µs/msg (${peerCpu.name}) |` : ""}\n|---|---|---|---|---|---|${peerCpu ? "---|" : ""}`);
  const best: Record<string, number> = Object.fromEntries(paths.map(([name]) => [name, 0]));
  const backlogged = new Set<string>();
  for (const rate of RATES) {
    for (const [name, routes] of paths) {
      if (backlogged.has(name)) continue;
      // A step starts when what earlier steps sent has arrived: a backlog would be measured as this step's latency.
      if (!(await drained(routes[0]!, `${name}${rate}${tagSuffix}`))) {
        backlogged.add(name);
        console.log(`| ${name} | ${rate} | not measured: earlier steps' messages were still arriving ${DRAIN_SECONDS} s later, no higher rate on this path |  |  |  |${peerCpu ? "  |" : ""}`);
        continue;
      }
      const peerBefore = peerCpu?.microseconds() ?? 0;
      const r = await step(routes, rate, `${name}${rate}${tagSuffix}`);
      const peerPerMessage = peerCpu ? ` ${((peerCpu.microseconds() - peerBefore) / Math.max(1, r.delivered * rate * SECONDS)).toFixed(0)} |` : "";
      if (r.delivered === 1 && r.p99 < 50) best[name] = Math.max(best[name]!, rate);
      console.log(`| ${name} | ${rate} | ${(r.delivered * 100).toFixed(1)}% | ${r.p50.toFixed(1)} | ${r.p99.toFixed(1)} | ${r.cpuUsPerMessage.toFixed(0)} |${peerPerMessage}`);
    }
  }
  console.log(`\nHighest offered rate with all delivered and p99 < 50 ms: ${paths.map(([name]) => `${name} ${best[name]} msg/s`).join(", ")}.`);
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


// ── --peer: a Parley for parley.test and a server of the peers kit ────────────────────────────
const KIT = resolve(process.env.PEERS_KIT_DIR ?? "../shared/peers", "peers");

function kitEnv(): Record<string, string> {
  const out = execFileSync(KIT, ["env"], { encoding: "utf8" });
  return Object.fromEntries([...out.matchAll(/^export (\w+)=(.*)$/gm)].map((m) => [m[1]!, m[2]!.replace(/^'|'$/g, "")]));
}

/** Whether something accepts TCP connections on 127.0.0.1:`port`. */
const listening = (port: number) => new Promise<boolean>((resolve) => {
  const socket = tcpConnect({ port, host: "127.0.0.1" });
  socket.once("connect", () => { socket.destroy(); resolve(true); });
  socket.once("error", () => resolve(false));
});

/**
 * Starts `peer` with Parley's s2s port in the kit's DNS zone; the reason when it cannot. The kit
 * has one SRV record for parley.test and `peers start` rewrites it even when the server is up:
 * when a Parley listens on the port it names now, another run (an interop test, say) owns the
 * kit and this one must not take the record over.
 */
async function startPeer(peer: string, parleyPort: number): Promise<{ skipped?: string; startedHere: boolean }> {
  if (!existsSync(KIT)) return { skipped: `the peers kit is not at ${KIT}`, startedHere: false };
  if (process.getuid?.() !== 0) return { skipped: "starting the peers needs root", startedHere: false };
  const binary = peer === "ejabberd" ? "ejabberdctl" : "prosody";
  if (spawnSync("sh", ["-c", `command -v ${binary}`]).status !== 0) return { skipped: `${peer} is not installed (../shared/peers/peers install)`, startedHere: false };
  const status = spawnSync(KIT, ["status"], { encoding: "utf8" }).stdout;
  const record = /_xmpp-server\._tcp\.parley\.test -> [\d.]+:(\d+)/.exec(status)?.[1];
  if (/^\w+\s+up/m.test(status) && record && await listening(Number(record))) {
    return { skipped: `the kit's DNS record for parley.test names port ${record}, where another Parley listens: another run uses the kit now, retry later`, startedHere: false };
  }
  const upAlready = new RegExp(`^${peer}\\s+up`, "m").test(status);
  const started = spawnSync(KIT, ["start", peer], { env: { ...process.env, PARLEY_S2S_PORT: String(parleyPort) }, encoding: "utf8", timeout: 120_000 });
  if (started.status !== 0) return { skipped: `peers start ${peer} failed: ${(started.stderr || started.stdout).trim().split("\n").pop()}`, startedHere: false };
  return { startedHere: !upAlready };
}

async function peerBench(peer: string) {
  const port = await freePort();
  const { skipped, startedHere } = await startPeer(peer, port);
  if (skipped) { console.log(`SKIPPED bench:s2s --peer ${peer}: ${skipped}`); return; }
  try {
    const env = kitEnv();
    const domain = env[`PEERS_${peer.toUpperCase()}_DOMAIN`]!;
    const server = await startTestServer({
      hosts: ["parley.test"],
      listen: { address: "127.0.0.1", c2s: 0, c2sDirectTls: null, https: null, http: null, s2s: port },
      tls: { certificates: { "parley.test": { cert: env.PEERS_PARLEY_FULLCHAIN!, key: env.PEERS_PARLEY_KEY! } } },
      s2s: { caFiles: [env.PEERS_CA_FILE!], dnsServer: `127.0.0.1:${env.PEERS_DNS_PORT}`, queueTimeoutSeconds: 20, maxStanzasPerSecond: 1_000_000 },
      metrics: { enabled: false },
    });
    // Accounts of this run only: messages an earlier run left in the peer's offline store would flood these users at login.
    const run = Date.now().toString(36);
    const remoteUser = (i: number) => `bench${run}-${i}`;
    const users = Array.from({ length: USERS }, (_, i) => i);
    for (const i of users) {
      await server.accounts.create(`sender${i}@parley.test`, "pw");
      await server.accounts.create(`local${i}@parley.test`, "pw");
      execFileSync(KIT, ["adduser", peer, remoteUser(i), "bench-pw"], { stdio: "ignore" });
    }
    const senders = await Promise.all(users.map((i) => login(server, `sender${i}`, "parley.test")));
    const locals = await Promise.all(users.map((i) => login(server, `local${i}`, "parley.test")));
    const remotes = await Promise.all(users.map(async (i) => {
      const c = await connect({ port: Number(env[`PEERS_${peer.toUpperCase()}_C2S_PORT`]), domain, username: remoteUser(i), password: "bench-pw", resource: "r" });
      await c.xmpp.send(xml("presence"));
      return c;
    }));
    console.log(`\n${USERS} Parley users send to ${USERS} users of ${peer} (${domain}, c2s port ${env[`PEERS_${peer.toUpperCase()}_C2S_PORT`]}) over s2s, and to ${USERS} other Parley users locally; no rosters: both servers deliver chat from strangers.`);
    const warmStart = performance.now();
    await senders[0]!.xmpp.send(xml("message", { to: `${remoteUser(0)}@${domain}`, type: "chat", id: `warm-${run}` }, xml("body", {}, "0")));
    await remotes[0]!.waitFor((s) => s.attrs.id === `warm-${run}`, 20_000);
    const out = server.s2s().outgoing.find((o) => o.remote === domain);
    console.log(`First message to ${domain} until delivered (s2s set-up, ${out?.method}): ${(performance.now() - warmStart).toFixed(1)} ms.`);
    const pid = env[`PEERS_${peer.toUpperCase()}_PID`];
    // utime + stime of the peer's process (fields 14 and 15 of /proc/PID/stat), in clock ticks of 10 ms.
    const peerCpu = pid && existsSync(`/proc/${pid}/stat`) ? {
      name: peer,
      microseconds: () => readFileSync(`/proc/${pid}/stat`, "utf8").replace(/^.*\) /s, "").split(" ").slice(11, 13).reduce((sum, ticks) => sum + Number(ticks) * 10_000, 0),
    } : undefined;
    // Whole sweeps again, not steps again: each table then shows the paths side by side under one load.
    for (let round = 1; round <= REPEATS; round++) {
      console.log(`\n**Round ${round} of ${REPEATS}**`);
      await rateSteps([
        [`s2s→${peer}`, users.map((i) => ({ from: senders[i]!, to: remotes[i]!, toJid: `${remoteUser(i)}@${domain}` }))],
        ["local", users.map((i) => ({ from: senders[i]!, to: locals[i]!, toJid: `local${i}@parley.test` }))],
      ], `.${run}.${round}`, peerCpu);
    }
    for (const c of [...senders, ...locals]) await c.stop();
    // The peer's users are left to the exit: the peer may still deliver a backlog, and xmpp.js throws on data after stop().
    await server.cleanup();
  } finally {
    // Also when a step throws: a peer left running keeps the record for parley.test.
    if (startedHere) spawnSync(KIT, ["stop", peer], { timeout: 60_000 });
  }
}

console.log(`# bench:s2s${PEER ? ` --peer ${PEER}` : ""} — ${new Date().toISOString()}, node ${process.version}, load ${loadavg().map((l) => l.toFixed(2)).join(" ")}`);
if (PEER) await peerBench(PEER);
else {
  const pki = makePki(["a.test", "b.test", "bench.test"]);

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
  await rateSteps([["s2s", [{ from: alice, to: bob, toJid: "bob@b.test" }]], ["local", [{ from: alice, to: carol, toJid: "carol@a.test" }]]]);
  await alice.stop(); await carol.stop(); await bob.stop();
  await pair.a.cleanup(); await pair.b.cleanup();
}

process.exit(0);
