/**
 * The client of bench/message-path.ts: PAIRS senders and PAIRS recipients logged in as the load
 * generator logs in (roster, presence, stream management); on each "run" it sends N messages,
 * 100 in flight (or RATE a second, when given), and answers once all have been delivered.
 */
import { Connection, type Endpoint } from "./load/xmpp.js";

const [transport, port, count, pairs, sm, rate] = process.argv.slice(2);
const N = Number(count);
const RATE = Number(rate ?? 0);
const IN_FLIGHT = 100;
const endpoint: Endpoint = { host: "127.0.0.1", port: Number(port), domain: "parley.test", tls: "direct", sasl: "scram-sha-256", transport: transport as "tcp" | "websocket" };
const connections: Connection[] = [];
try {
  for (let i = 0; i < Number(pairs) * 2; i++) {
    const c = new Connection(endpoint);
    await c.login(`path${i}`, `pw-path${i}`, { streamManagement: sm === "sm", traffic: true });
    connections.push(c);
  }
} catch (e) {
  process.send!(`error: ${(e as Error).message}`);
  process.exit(1);
}
let delivered = 0;
let waiting: (() => void) | undefined;
let wanted = 0;
for (const c of connections) c.onMark = () => { delivered++; if (waiting && delivered >= wanted) waiting(); };

const send = (n: number) => {
  const senders = connections.length / 2;
  const from = n % senders;
  connections[from]!.send(`<message to='path${from + senders}@parley.test' type='chat' id='p${n}'><body>~lt~${performance.now()}</body></message>`);
};
const deliveredAll = (count: number) => {
  wanted = delivered + count;
  return new Promise<void>((resolve) => { waiting = resolve; });
};

async function inFlight(total: number): Promise<void> {
  for (let sent = 0; sent < total; sent += IN_FLIGHT) {
    const back = deliveredAll(IN_FLIGHT);
    for (let k = 0; k < IN_FLIGHT; k++) send(sent + k);
    await back;
    if (sm === "sm" && sent % 2000 === 0) for (const c of connections) c.requestAck();
  }
}

/** RATE messages a second, sent on 5 ms ticks: what stays alive is what a steady load keeps, not 100 waiting messages. */
async function paced(total: number): Promise<void> {
  const back = deliveredAll(total);
  const start = performance.now();
  let sent = 0;
  await new Promise<void>((resolve) => {
    const tick = setInterval(() => {
      const due = Math.min(total, Math.floor(((performance.now() - start) * RATE) / 1000));
      for (; sent < due; sent++) {
        send(sent);
        if (sm === "sm" && sent % 2000 === 1999) for (const c of connections) c.requestAck();
      }
      if (sent === total) { clearInterval(tick); resolve(); }
    }, 5);
  });
  await back;
}

const exchange = RATE > 0 ? paced : inFlight;

await exchange(10_000); // warm-up: the server's code is optimized before anything is measured
process.send!("ready");
process.on("message", async () => {
  await exchange(N);
  process.send!("done");
});
