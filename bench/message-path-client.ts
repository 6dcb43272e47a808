/**
 * The client of bench/message-path.ts: PAIRS senders and PAIRS recipients logged in as the load
 * generator logs in (roster, presence, stream management); on each "run" it sends N messages,
 * 100 in flight, and answers once all have been delivered.
 */
import { Connection, type Endpoint } from "./load/xmpp.js";

const [transport, port, count, pairs, sm] = process.argv.slice(2);
const N = Number(count);
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

async function exchange(total: number): Promise<void> {
  const senders = connections.length / 2;
  for (let sent = 0; sent < total; sent += IN_FLIGHT) {
    wanted = delivered + IN_FLIGHT;
    const back = new Promise<void>((resolve) => { waiting = resolve; });
    for (let k = 0; k < IN_FLIGHT; k++) {
      const n = sent + k;
      const from = n % senders;
      connections[from]!.send(`<message to='path${from + senders}@parley.test' type='chat' id='p${n}'><body>~lt~${performance.now()}</body></message>`);
    }
    await back;
    if (sent % 2000 === 0) for (const c of connections) c.requestAck();
  }
}

await exchange(10_000); // warm-up: the server's code is optimized before anything is measured
process.send!("ready");
process.on("message", async () => {
  await exchange(N);
  process.send!("done");
});
