/**
 * bench:push — (1) pushes/s the APNs client sustains to a local HTTP/2 endpoint over one reused
 * connection (--pushes, default 5000, --concurrency 100), with the number of connections it
 * opened; (2) message latency to a CSI-inactive recipient whose server pushes for every message,
 * against the same recipient with no push registration (--messages 300, medians of --rounds 3),
 * the server in a process of its own so the measuring clients do not share its event loop.
 */
import { createSecureServer } from "node:http2";
import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { AddressInfo } from "node:net";
import { loadHostTls } from "../src/xmpp/tls.js";
import { ApnsClient } from "../src/push/apns.js";
import { fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import { rawSession, type RawClient } from "../test/helpers/raw.js";
import { median, percentile } from "./stats.js";

const arg = (name: string, def: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? def : Number(process.argv[i + 1]);
};
const PUSHES = arg("pushes", 5000);
const CONCURRENCY = arg("concurrency", 100);
const MESSAGES = arg("messages", 300);
const ROUNDS = arg("rounds", 3);

const dir = mkdtempSync(join(tmpdir(), "parley-bench-push-"));
const tls = (await loadHostTls(["localhost"], {}, dir)).get("localhost")!;
let connections = 0;
let received = 0;
const apns = createSecureServer({ cert: tls.cert, key: tls.key, peerMaxConcurrentStreams: 1000 }, (req, res) => {
  req.resume();
  req.on("end", () => { received++; res.writeHead(200); res.end(); });
});
apns.on("session", () => { connections++; });
await new Promise<void>((r) => apns.listen(0, "127.0.0.1", r));
const endpoint = `https://127.0.0.1:${(apns.address() as AddressInfo).port}`;
const key = generateKeyPairSync("ec", { namedCurve: "prime256v1" }).privateKey.export({ type: "pkcs8", format: "pem" }) as string;

// (1) provider throughput
const rates: number[] = [];
for (let round = 0; round < ROUNDS; round++) {
  const client = new ApnsClient({ key, keyId: "K", teamId: "T", topic: "bench.app", production: endpoint, tls: { rejectUnauthorized: false } });
  const start = performance.now();
  let next = 0;
  let failed = 0;
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    while (next < PUSHES) {
      const i = next++;
      const r = await client.send({ deviceToken: `token${i % 1000}`, sandbox: false, pushType: "alert", priority: 10, payload: { aps: { alert: { body: "x" } } } });
      if (r.status !== "sent") failed++;
    }
  }));
  rates.push(PUSHES / ((performance.now() - start) / 1000));
  client.close();
  if (failed) throw new Error(`${failed} pushes failed`);
}
console.log(`# bench:push (medians of ${ROUNDS} rounds)\n`);
console.log(`APNs client → local HTTP/2 endpoint: ${Math.round(median(rates))} pushes/s (${PUSHES} pushes, ${CONCURRENCY} in flight; rounds: ${rates.map(Math.round).join(", ")}), `
  + `${connections} connection(s) opened in ${ROUNDS} rounds, ${received} pushes received`);

// (2) message latency with and without pushing, the server in its own process
apns.close();
rmSync(dir, { recursive: true, force: true });
const child = fork(fileURLToPath(new URL("./push-server.ts", import.meta.url)), [], { execArgv: ["--import", "tsx"] });
const fromChild = <T>(pred: (m: any) => boolean) => new Promise<T>((r) => {
  const h = (m: any) => { if (pred(m)) { child.off("message", h); r(m); } };
  child.on("message", h);
});
const { port } = await fromChild<{ port: number }>((m) => m.ready);

async function inactiveRecipient(user: string, withPush: boolean): Promise<RawClient> {
  const c = await rawSession(port, user, "pw", "phone");
  c.send("<presence/>");
  if (withPush) {
    c.send("<iq type='set' to='push.localhost' id='reg'><command xmlns='http://jabber.org/protocol/commands' node='register-push-apns' action='execute'>"
      + "<x xmlns='jabber:x:data' type='submit'><field var='token'><value>abc</value></field></x></command></iq>");
    const m = await c.waitFor(/<field var="node"[^>]*><value>([^<]+)<\/value><\/field><field var="secret"[^>]*><value>([^<]+)<\/value>/);
    c.send(`<iq type='set' id='en'><enable xmlns='urn:xmpp:push:0' jid='push.localhost' node='${m[1]}'><x xmlns='jabber:x:data' type='submit'>`
      + `<field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field><field var='secret'><value>${m[2]}</value></field></x></enable></iq>`);
    await c.waitFor(/id="en"/);
  }
  c.send("<inactive xmlns='urn:xmpp:csi:0'/>");
  return c;
}
const sender = await rawSession(port, "sender", "pw", "s");
async function latencies(recipient: RawClient, user: string): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < MESSAGES; i++) {
    const mark = recipient.text.length;
    const start = performance.now();
    sender.send(`<message to='${user}@localhost/phone' type='chat' id='m${i}'><body>hello ${i}</body></message>`);
    await recipient.waitFor(new RegExp(`id="m${i}"`), 5000, mark);
    out.push(performance.now() - start);
    // Pushes run after delivery; give each one its time so rounds do not overlap.
    await new Promise((r) => setTimeout(r, 2));
  }
  return out;
}
const pushed = await inactiveRecipient("pushed", true);
const plain = await inactiveRecipient("plain", false);
const withPush: number[][] = [];
const without: number[][] = [];
for (let r = 0; r < ROUNDS; r++) {
  without.push(await latencies(plain, "plain"));
  withPush.push(await latencies(pushed, "pushed"));
}
await new Promise((r) => setTimeout(r, 500));
child.send({ cmd: "received" });
const { received: pushesReceived } = await fromChild<{ received: number }>((m) => m.received !== undefined);
const p50 = (runs: number[][]) => median(runs.map((x) => percentile(x, 0.5)));
const p99 = (runs: number[][]) => median(runs.map((x) => percentile(x, 0.99)));
console.log(`\nmessage to a CSI-inactive phone (server in its own process), ${MESSAGES} messages × ${ROUNDS}: without push p50 ${p50(without).toFixed(2)} ms, p99 ${p99(without).toFixed(2)} ms; `
  + `with a push for every message p50 ${p50(withPush).toFixed(2)} ms, p99 ${p99(withPush).toFixed(2)} ms; pushes received ${pushesReceived}`);
for (const c of [sender, pushed, plain]) c.close();
await new Promise<void>((r) => { child.once("exit", () => r()); child.send({ cmd: "stop" }); });
