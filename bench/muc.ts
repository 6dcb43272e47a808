/**
 * bench:muc — a 256-occupant room (--occupants): time for all to join, then room messages at
 * fixed open-loop rates (--rates 20,50,100,200 messages/s for --seconds 5 each): deliveries/s, loss,
 * and latency to the last occupant per message (p50/p99). Server in its own process (memory storage).
 */
import { fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import { rawSession, type RawClient } from "../test/helpers/raw.js";
import { percentile } from "./stats.js";
import { onNumberedBodies } from "./room-arrivals.js";

const arg = (name: string, def: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? def : process.argv[i + 1]!;
};
const OCCUPANTS = Number(arg("occupants", "256"));
const RATES = arg("rates", "20,50,100,200").split(",").map(Number);
const SECONDS = Number(arg("seconds", "5"));
const ROOM = "bench@conference.localhost";

const server = fork(fileURLToPath(new URL("./server-process.ts", import.meta.url)), [], {
  execArgv: ["--import", "tsx"], env: { ...process.env, BENCH_USERS: String(OCCUPANTS) },
});
const ready = await new Promise<{ port: number }>((r) => server.on("message", (m: any) => { if (m.ready) r(m); }));

const clients: RawClient[] = [];
for (let i = 0; i < OCCUPANTS; i += 32) {
  clients.push(...await Promise.all(Array.from({ length: Math.min(32, OCCUPANTS - i) }, (_, k) => rawSession(ready.port, `user${i + k}`, "pw", "bench"))));
}
const owner = clients[0]!;
owner.send(`<presence to='${ROOM}/o'><x xmlns='http://jabber.org/protocol/muc'/></presence>`);
await owner.waitFor(/status code="201"/);
owner.send(`<iq type='set' id='cfg' to='${ROOM}'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'/></query></iq>`);
await owner.waitFor(/id="cfg"/);
const joinStart = performance.now();
await Promise.all(clients.slice(1).map(async (c, i) => {
  c.send(`<presence to='${ROOM}/n${i + 1}'><x xmlns='http://jabber.org/protocol/muc'><history maxstanzas='0'/></x></presence>`);
  await c.waitFor(/status code="110"/, 60_000);
}));
const joinMs = performance.now() - joinStart;
console.log(`# bench:muc — ${OCCUPANTS} occupants joined (all at once) in ${joinMs.toFixed(0)} ms`);

// Each client counts messages and records arrival times by message number.
const arrivals = new Map<number, number[]>();
for (const c of clients) {
  onNumberedBodies(c, (n, now) => {
    let list = arrivals.get(n);
    if (!list) arrivals.set(n, (list = []));
    list.push(now);
  });
}

console.log("\n| room msgs/s | deliveries/s offered | delivered/s | lost | p50 to last occupant ms | p99 ms |");
console.log("|---|---|---|---|---|---|");
let seq = 0;
for (const rate of RATES) {
  arrivals.clear();
  const sent = new Map<number, number>();
  const total = rate * SECONDS;
  const start = performance.now();
  for (let k = 0; k < total; k++) {
    const due = start + (k * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    const n = seq++;
    sent.set(n, due); // open loop: latency from when it should have been sent
    owner.send(`<message to='${ROOM}' type='groupchat'><body>t${n}:x</body></message>`);
  }
  await new Promise((r) => setTimeout(r, 2000));
  const elapsed = (performance.now() - start) / 1000;
  let delivered = 0;
  const lastLatency: number[] = [];
  for (const [n, t0] of sent) {
    const got = arrivals.get(n) ?? [];
    delivered += got.length;
    if (got.length === OCCUPANTS) lastLatency.push(Math.max(...got) - t0);
  }
  const offered = total * OCCUPANTS;
  console.log(`| ${rate} | ${rate * OCCUPANTS} | ${Math.round(delivered / (elapsed - 2))} | ${offered - delivered} | ${percentile(lastLatency, 0.5).toFixed(1)} | ${percentile(lastLatency, 0.99).toFixed(1)} |`);
}
for (const c of clients) c.close();
server.send({ cmd: "stop" });
