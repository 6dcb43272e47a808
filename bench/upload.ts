/**
 * bench:upload — XEP-0363 upload and download throughput of one --size MiB file (default 100) over
 * loopback HTTPS, against a bare Node HTTPS server doing the same streaming in the same run; and
 * the server's event-loop delay and XMPP ping round trips while --parallel uploads (default 10 ×
 * 20 MiB) run. Server in its own process; medians of --rounds (default 3).
 * Usage: npm run bench:upload -- [--size 100] [--parallel 10] [--parallel-size 20] [--rounds 3]
 */
import { fork, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { Readable } from "node:stream";
import { Agent, request } from "undici";
import { rawSession, type RawClient } from "../test/helpers/raw.js";

const arg = (name: string, def: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? def : Number(process.argv[i + 1]);
};
const MiB = 1024 * 1024;
const SIZE = arg("size", 100) * MiB;
const PARALLEL = arg("parallel", 10);
const PARALLEL_SIZE = arg("parallel-size", 20) * MiB;
const ROUNDS = arg("rounds", 3);
const dispatcher = new Agent({ connect: { rejectUnauthorized: false }, connections: 64 });
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

function body(size: number): Readable {
  const block = Buffer.alloc(256 * 1024, 0x5a);
  let sent = 0;
  return new Readable({
    read() {
      if (sent >= size) return void this.push(null);
      const n = Math.min(block.length, size - sent);
      sent += n;
      this.push(n === block.length ? block : block.subarray(0, n));
    },
  });
}

async function spawnServer(mode: "raw" | "parley") {
  const child = fork(fileURLToPath(new URL("./upload-server.ts", import.meta.url)), [], {
    execArgv: ["--import", "tsx"], env: { ...process.env, BENCH_MODE: mode },
  });
  const next = <T>(pred: (m: any) => boolean) => new Promise<T>((r) => {
    const h = (m: any) => { if (pred(m)) { child.off("message", h); r(m); } };
    child.on("message", h);
  });
  const ready = await next<{ ports: { https: number; c2sDirectTls?: number } }>((m) => m.ready);
  return { child, ports: ready.ports, next };
}
const stopServer = (child: ChildProcess) => new Promise<void>((r) => { child.once("exit", () => r()); child.send({ cmd: "stop" }); });

async function slot(c: RawClient, size: number, n: number): Promise<{ put: string; get: string }> {
  const mark = c.text.length;
  c.send(`<iq type='get' to='upload.localhost' id='s${n}'><request xmlns='urn:xmpp:http:upload:0' filename='bench${n}.bin' size='${size}' content-type='application/octet-stream'/></iq>`);
  const m = await c.waitFor(new RegExp(`id="s${n}"[^>]*>.*?<put url="([^"]+)"/><get url="([^"]+)"/>`), 5000, mark);
  const fix = (u: string) => u.replace(/&amp;/g, "&").replace("upload.localhost", "127.0.0.1");
  return { put: fix(m[1]!), get: fix(m[2]!) };
}

async function timedPut(url: string, size: number): Promise<number> {
  const start = performance.now();
  const r = await request(url, { method: "PUT", body: body(size), headers: { "content-length": String(size), "content-type": "application/octet-stream" }, dispatcher });
  await r.body.text();
  if (r.statusCode !== 201) throw new Error(`PUT ${r.statusCode}`);
  return performance.now() - start;
}
async function timedGet(url: string, size: number): Promise<number> {
  const start = performance.now();
  const r = await request(url, { dispatcher });
  let n = 0;
  for await (const chunk of r.body) n += (chunk as Buffer).length;
  if (n !== size) throw new Error(`GET returned ${n} bytes`);
  return performance.now() - start;
}
const mibps = (ms: number, size = SIZE) => (size / MiB) / (ms / 1000);

const results = { rawPut: [] as number[], rawGet: [] as number[], putMs: [] as number[], getMs: [] as number[], eldP99: [] as number[], eldMax: [] as number[], pingIdle: [] as number[], pingBusy: [] as number[] };
for (let round = 0; round < ROUNDS; round++) {
  const raw = await spawnServer("raw");
  const rawUrl = `https://127.0.0.1:${raw.ports.https}/f`;
  results.rawPut.push(mibps(await timedPut(rawUrl, SIZE)));
  results.rawGet.push(mibps(await timedGet(rawUrl, SIZE)));
  await stopServer(raw.child);

  const parley = await spawnServer("parley");
  const c = await rawSession(parley.ports.c2sDirectTls!, "user0", "pw", "bench");
  const s = await slot(c, SIZE, 0);
  results.putMs.push(mibps(await timedPut(s.put, SIZE)));
  results.getMs.push(mibps(await timedGet(s.get, SIZE)));

  const ping = async (id: string) => {
    const mark = c.text.length;
    const start = performance.now();
    c.send(`<iq type='get' to='localhost' id='${id}'><ping xmlns='urn:xmpp:ping'/></iq>`);
    await c.waitFor(new RegExp(`id="${id}"`), 10_000, mark);
    return performance.now() - start;
  };
  const idle: number[] = [];
  for (let i = 0; i < 20; i++) idle.push(await ping(`idle${i}`));
  const slots = await Promise.all(Array.from({ length: PARALLEL }, (_, i) => slot(c, PARALLEL_SIZE, i + 1)));
  parley.child.send({ cmd: "eld-reset" });
  await parley.next((m) => m.reset);
  let busy = true;
  const busyPings: number[] = [];
  const pinger = (async () => { for (let i = 0; busy; i++) { busyPings.push(await ping(`busy${i}`)); await new Promise((r) => setTimeout(r, 20)); } })();
  await Promise.all(slots.map((x) => timedPut(x.put, PARALLEL_SIZE)));
  busy = false;
  await pinger;
  parley.child.send({ cmd: "eld" });
  const eld = (await parley.next<{ eld: { p99: number; max: number } }>((m) => m.eld)).eld;
  results.eldP99.push(eld.p99);
  results.eldMax.push(eld.max);
  results.pingIdle.push(median(idle));
  results.pingBusy.push(median(busyPings));
  c.close();
  await stopServer(parley.child);
}

console.log(`# bench:upload (medians of ${ROUNDS} rounds; ${SIZE / MiB} MiB over loopback HTTPS)\n`);
console.log("| | bare Node HTTPS | Parley (XEP-0363) | ratio |");
console.log("|---|---|---|---|");
console.log(`| upload MiB/s | ${median(results.rawPut).toFixed(0)} | ${median(results.putMs).toFixed(0)} | ${(median(results.putMs) / median(results.rawPut)).toFixed(2)} |`);
console.log(`| download MiB/s | ${median(results.rawGet).toFixed(0)} | ${median(results.getMs).toFixed(0)} | ${(median(results.getMs) / median(results.rawGet)).toFixed(2)} |`);
console.log(`\n${PARALLEL} parallel uploads of ${PARALLEL_SIZE / MiB} MiB: server event-loop delay p99 ${median(results.eldP99).toFixed(1)} ms, max ${median(results.eldMax).toFixed(1)} ms; `
  + `XMPP ping round trip median ${median(results.pingIdle).toFixed(2)} ms idle → ${median(results.pingBusy).toFixed(2)} ms during the uploads`);
await dispatcher.close();
