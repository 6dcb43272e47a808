/**
 * bench:smoke — log in N clients over direct TLS, exchange M messages between pairs at an open-loop
 * rate, print messages/s, latency percentiles and server RSS per connection. The server runs in its
 * own process. Usage: npm run bench:smoke -- [--users 1000] [--messages 20000] [--rate 5000]
 */
import { fork } from "node:child_process";
import { connect, type TLSSocket } from "node:tls";
import { fileURLToPath } from "node:url";

const arg = (name: string, def: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? def : Number(process.argv[i + 1]);
};
const USERS = arg("users", 1000);
const MESSAGES = arg("messages", 20000);
const RATE = arg("rate", 5000);

const HEADER = "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

interface Client { socket: TLSSocket; user: number; buffer: string; received: number; latencies: number[] }

function waitText(c: Client, pattern: RegExp): Promise<void> {
  return new Promise((resolve, reject) => {
    const check = () => {
      if (pattern.test(c.buffer)) { c.socket.off("data", onData); c.buffer = ""; resolve(); }
    };
    const onData = (d: Buffer) => { c.buffer += d.toString(); check(); };
    c.socket.on("data", onData);
    c.socket.once("error", reject);
    check();
  });
}

async function login(port: number, user: number): Promise<{ client: Client; ms: number }> {
  const start = performance.now();
  const socket = connect({ port, host: "127.0.0.1", servername: "localhost", rejectUnauthorized: false });
  await new Promise<void>((r, j) => { socket.once("secureConnect", () => r()); socket.once("error", j); });
  const c: Client = { socket, user, buffer: "", received: 0, latencies: [] };
  socket.write(HEADER);
  await waitText(c, /<\/stream:features>/);
  socket.write(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${Buffer.from(`\0user${user}\0pw`).toString("base64")}</auth>`);
  await waitText(c, /<success/);
  socket.write(HEADER);
  await waitText(c, /<\/stream:features>/);
  socket.write("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>bench</resource></bind></iq><presence/>");
  await waitText(c, /id="b"/);
  return { client: c, ms: performance.now() - start };
}

const pct = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;

const server = fork(fileURLToPath(new URL("./server-process.ts", import.meta.url)), [], {
  execArgv: ["--import", "tsx", "--expose-gc", ...(process.env.BENCH_PROF ? ["--cpu-prof", "--cpu-prof-dir=/tmp/prof"] : [])], env: { ...process.env, BENCH_USERS: String(USERS) },
});
const fromServer = <T>(pred: (m: any) => boolean) => new Promise<T>((r) => { const h = (m: any) => { if (pred(m)) { server.off("message", h); r(m); } }; server.on("message", h); });
const ready = await fromServer<{ port: number; rss: number }>((m) => m.ready);
const baseline = ready.rss;

const loginStart = performance.now();
const clients: Client[] = [];
const loginTimes: number[] = [];
for (let i = 0; i < USERS; i += 50) {
  const batch = await Promise.all(Array.from({ length: Math.min(50, USERS - i) }, (_, k) => login(ready.port, i + k)));
  for (const b of batch) { clients.push(b.client); loginTimes.push(b.ms); }
}
const loginSeconds = (performance.now() - loginStart) / 1000;
await new Promise((r) => setTimeout(r, 1000));
server.send({ cmd: "snapshot" });
const afterLogin = await fromServer<{ snapshot: { rss: number; cpu: NodeJS.CpuUsage }; sessions: number }>((m) => m.snapshot);

for (const c of clients) {
  c.socket.on("data", (d: Buffer) => {
    const now = performance.now();
    const s = d.toString();
    let at = 0;
    while ((at = s.indexOf("<body>t", at)) !== -1) {
      const end = s.indexOf("</body>", at);
      c.latencies.push(now - Number(s.slice(at + 7, end)));
      c.received++;
      at = end;
    }
  });
}

// Open loop: messages are scheduled at fixed times whatever the server does (no coordinated omission).
const cpuBefore = afterLogin.snapshot.cpu;
const generatorCpuBefore = process.cpuUsage();
const sendStart = performance.now();
let sent = 0;
await new Promise<void>((resolve) => {
  const tick = () => {
    const due = Math.min(MESSAGES, Math.floor(((performance.now() - sendStart) / 1000) * RATE));
    for (; sent < due; sent++) {
      const from = clients[sent % USERS]!;
      const partner = from.user ^ 1;
      from.socket.write(`<message to='user${partner}@localhost/bench' type='chat'><body>t${performance.now()}</body></message>`);
    }
    // A 1 ms timer, not setImmediate: a busy loop here would steal the server's CPU.
    if (sent >= MESSAGES) resolve(); else setTimeout(tick, 1);
  };
  tick();
});
const deadline = performance.now() + 30_000;
const received = () => clients.reduce((n, c) => n + c.received, 0);
while (received() < MESSAGES && performance.now() < deadline) await new Promise((r) => setTimeout(r, 20));
const elapsed = (performance.now() - sendStart) / 1000;
server.send({ cmd: "snapshot" });
const end = await fromServer<{ snapshot: { rss: number; cpu: NodeJS.CpuUsage } }>((m) => m.snapshot);
const generatorCpu = process.cpuUsage(generatorCpuBefore);
const serverCpu = (end.snapshot.cpu.user + end.snapshot.cpu.system - cpuBefore.user - cpuBefore.system) / 1e6;

const lat = clients.flatMap((c) => c.latencies).sort((a, b) => a - b);
const lt = loginTimes.sort((a, b) => a - b);
const result = {
  users: USERS, sessions: afterLogin.sessions,
  loginSeconds: +loginSeconds.toFixed(2), loginsPerSecond: Math.round(USERS / loginSeconds),
  loginP50ms: +pct(lt, 50).toFixed(1), loginP99ms: +pct(lt, 99).toFixed(1),
  serverRssBaselineMB: +(baseline / 2 ** 20).toFixed(1), serverRssAfterLoginMB: +(afterLogin.snapshot.rss / 2 ** 20).toFixed(1),
  rssPerConnectionKB: +((afterLogin.snapshot.rss - baseline) / USERS / 1024).toFixed(1),
  messagesSent: sent, messagesReceived: received(), lost: sent - received(),
  offeredRate: RATE, deliveredPerSecond: Math.round(received() / elapsed),
  latencyP50ms: +pct(lat, 50).toFixed(2), latencyP99ms: +pct(lat, 99).toFixed(2), latencyMaxms: +(lat[lat.length - 1] ?? NaN).toFixed(2),
  serverCpuSecondsPer10kMessages: +((serverCpu / received()) * 10000).toFixed(3),
  // Share of one core the server and this generator used while messages flowed; a generator
  // near 1.0 means the numbers measure the generator, not the server.
  serverCoreShare: +(serverCpu / elapsed).toFixed(2),
  generatorCoreShare: +((generatorCpu.user + generatorCpu.system) / 1e6 / elapsed).toFixed(2),
};
console.log(JSON.stringify(result, null, 2));
for (const c of clients) c.socket.destroy();
server.send({ cmd: "stop" });
