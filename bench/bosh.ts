/**
 * npm run bench:bosh [-- --users N --settle S --idle S --wait S --only tcp|bosh]: what an idle BOSH session costs
 * the server next to an idle TCP session, measured like bench S1 (bench/load/scenarios.ts): a
 * fresh Parley process per kind, N users log in (PLAIN, bind, roster, initial presence) and stay;
 * the server's RSS once it has been quiet, before and after, over N. Then the server's CPU over
 * an idle window. Each BOSH session holds one long-poll request on its own keep-alive TLS
 * connection, as a browser does, and polls again as soon as a response comes.
 *
 * The generator is pinned to CPU 1 and the server to CPU 0 where the machine has two cores.
 */
import { fork, type ChildProcess } from "node:child_process";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { canPin, pin, sampleProcess } from "./load/proc.js";
import { Connection, pool } from "./load/xmpp.js";
import { log, round, sleep, passwordOf, users } from "./load/common.js";

const args = process.argv.slice(2);
const arg = (name: string, fallback: number) => { const i = args.indexOf(`--${name}`); return i === -1 ? fallback : Number(args[i + 1]); };
const count = arg("users", 10_000);
const settleSeconds = arg("settle", 10);
const idleSeconds = arg("idle", 5);
const waitSeconds = arg("wait", 60);
const only = args.includes("--only") ? args[args.indexOf("--only") + 1] : undefined;

interface ServerProcess { child: ChildProcess; https: number; tcp: number; pid: number }

async function startServer(): Promise<ServerProcess> {
  const child = fork(fileURLToPath(new URL("./bosh-server.ts", import.meta.url)), [], {
    execArgv: ["--import", "tsx", "--expose-gc"], env: { ...process.env, BENCH_USERS: String(count), BENCH_BOSH_WAIT: String(waitSeconds) }, stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  if (canPin()) pin(child.pid!, 0);
  const [ready] = await once(child, "message") as [{ https: number; tcp: number }];
  return { child, https: ready.https, tcp: ready.tcp, pid: child.pid! };
}

async function snapshot(server: ServerProcess): Promise<{ rssKB: number; heapKB: number; externalKB: number; sessions: number }> {
  server.child.send({ cmd: "snapshot" });
  const [m] = await once(server.child, "message") as [{ snapshot: { rssKB: number; heapKB: number; externalKB: number; sessions: number } }];
  return m.snapshot;
}

async function stopServer(server: ServerProcess): Promise<void> {
  server.child.send({ cmd: "stop" });
  await once(server.child, "exit");
}

/** A BOSH client on one keep-alive TLS connection: one request at a time, HTTP/1.1 by hand. */
class BoshClient {
  private socket!: TLSSocket;
  private buffer: Buffer = Buffer.alloc(0);
  private waiting: { resolve: (body: string) => void; reject: (e: Error) => void } | undefined;
  private rid = Math.floor(Math.random() * 2 ** 40) + 1;
  private sid = "";
  repolls = 0;
  idle = false;

  constructor(private readonly port: number) {}

  async connect(): Promise<void> {
    this.socket = tlsConnect({ host: "127.0.0.1", port: this.port, servername: "localhost", rejectUnauthorized: false });
    this.socket.on("data", (d: Buffer) => this.onData(d));
    this.socket.on("error", () => {});
    // The server closed the connection (or it broke): whatever was asked gets no answer.
    this.socket.on("close", () => { const w = this.waiting; this.waiting = undefined; w?.reject(new Error("connection closed")); });
    await once(this.socket, "secureConnect");
  }

  request(inner = "", attrs = ""): Promise<string> {
    const body = `<body xmlns='http://jabber.org/protocol/httpbind' rid='${this.rid++}'${this.sid ? ` sid='${this.sid}'` : ""}${attrs}>${inner}</body>`;
    this.socket.write(`POST /http-bind HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/xml; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { this.waiting = undefined; reject(new Error("no response in 60 s")); }, this.idle ? 2 ** 31 - 1 : 60_000);
      timer.unref();
      this.waiting = { resolve: (body) => { clearTimeout(timer); resolve(body); }, reject: (e) => { clearTimeout(timer); reject(e); } };
    });
  }

  private onData(chunk: Buffer): void {
    this.buffer = this.buffer.length ? Buffer.concat([this.buffer, chunk]) : chunk;
    for (;;) {
      const end = this.buffer.indexOf("\r\n\r\n");
      if (end === -1) return;
      const length = Number(/content-length:\s*(\d+)/i.exec(this.buffer.subarray(0, end).toString("latin1"))?.[1] ?? 0);
      if (this.buffer.length < end + 4 + length) return;
      const body = this.buffer.subarray(end + 4, end + 4 + length).toString("utf8");
      this.buffer = this.buffer.subarray(end + 4 + length);
      const waiting = this.waiting;
      this.waiting = undefined;
      if (this.idle) {
        // A long poll came back (its 'wait' ran out, or the server had something): poll again.
        this.repolls++;
        this.request().catch(() => {});
      } else waiting?.resolve(body);
    }
  }

  async login(user: string, password: string): Promise<void> {
    await this.connect();
    const created = await this.request("", ` to='localhost' wait='${waitSeconds}' hold='1' ver='1.11' xml:lang='en' xmpp:version='1.0' xmlns:xmpp='urn:xmpp:xbosh'`);
    this.sid = /sid='([^']+)'/.exec(created)?.[1] ?? "";
    const auth = await this.request(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${Buffer.from(`\0${user}\0${password}`).toString("base64")}</auth>`);
    if (!auth.includes("<success")) throw new Error(`auth failed: ${auth.slice(0, 200)}`);
    await this.request("", " xmpp:restart='true' xmlns:xmpp='urn:xmpp:xbosh'");
    const bound = await this.request("<iq type='set' id='bind1' xmlns='jabber:client'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>load</resource></bind></iq>");
    if (!bound.includes("<jid>")) throw new Error(`bind failed: ${bound.slice(0, 200)}`);
    await this.request("<iq type='get' id='roster1' xmlns='jabber:client'><query xmlns='jabber:iq:roster'/></iq>");
    // Initial presence, then the long poll that stays open.
    await this.request("<presence xmlns='jabber:client'/>");
    this.idle = true;
    this.request().catch(() => {});
  }

  destroy(): void {
    this.socket.destroy();
  }
}

interface Measured {
  kind: "tcp" | "bosh";
  sessions: number;
  loginSeconds: number;
  failures: number;
  rssKBPerSession: number;
  heapKBPerSession: number;
  idleCpuMsPerSecond: number;
  repollsInIdleWindow?: number;
}

async function measure(kind: "tcp" | "bosh"): Promise<Measured> {
  const server = await startServer();
  await sleep(2000);
  const before = sampleProcess(server.pid).rssKB;
  const heapBefore = (await snapshot(server)).heapKB;
  const names = users("lt", count);
  const start = performance.now();
  const { results, errors } = await pool(names, 50, async (name) => {
    if (kind === "tcp") {
      const c = new Connection({ host: "127.0.0.1", port: server.tcp, domain: "localhost", tls: "direct", sasl: "plain" });
      try { await c.login(name, passwordOf(name), { traffic: true }); } catch (e) { c.destroy(); throw e; }
      return c;
    }
    const c = new BoshClient(server.https);
    try { await c.login(name, passwordOf(name)); } catch (e) { c.destroy(); throw e; }
    return c;
  });
  const loginSeconds = round((performance.now() - start) / 1000, 1);
  const clients = results.filter((c) => c !== undefined);
  if (errors.length) log(`${kind}: ${errors.length} logins failed, first: ${errors[0]!.message}`);
  await sleep(settleSeconds * 1000);
  const after = sampleProcess(server.pid).rssKB;
  const heapAfter = (await snapshot(server)).heapKB;
  // The idle window: nothing is sent; what the server spends now is what idle sessions cost.
  await sleep(1000);
  const repollsBefore = clients.reduce((n, c) => n + (c instanceof BoshClient ? c.repolls : 0), 0);
  const cpuBefore = sampleProcess(server.pid);
  await sleep(idleSeconds * 1000);
  const cpuAfter = sampleProcess(server.pid);
  const repolls = clients.reduce((n, c) => n + (c instanceof BoshClient ? c.repolls : 0), 0) - repollsBefore;
  const sessions = (await snapshot(server)).sessions;
  const result: Measured = {
    kind, sessions, loginSeconds, failures: errors.length,
    rssKBPerSession: round((after - before) / clients.length, 1),
    heapKBPerSession: round((heapAfter - heapBefore) / clients.length, 1),
    idleCpuMsPerSecond: round(((cpuAfter.cpuSeconds - cpuBefore.cpuSeconds) * 1000) / ((cpuAfter.at - cpuBefore.at) / 1000), 1),
    ...(kind === "bosh" ? { repollsInIdleWindow: repolls } : {}),
  };
  log(`${kind}: ${sessions} sessions (logins ${loginSeconds} s), RSS ${Math.round(before / 1024)} → ${Math.round(after / 1024)} MB = ${result.rssKBPerSession} KB/session, heap ${result.heapKBPerSession} KB/session, idle CPU ${result.idleCpuMsPerSecond} ms/s${kind === "bosh" ? `, ${repolls} long polls answered in the ${idleSeconds} s window` : ""}`);
  for (const c of clients) c.destroy();
  await stopServer(server);
  return result;
}

if (canPin()) pin(process.pid, 1);
else log("cannot pin (fewer than 2 CPUs or no taskset): server and generator share cores");
const tcp = only === "bosh" ? undefined : await measure("tcp");
const bosh = only === "tcp" ? undefined : await measure("bosh");
const ratio = tcp && bosh ? round(bosh.rssKBPerSession / tcp.rssKBPerSession, 2) : undefined;
if (ratio !== undefined) log(`BOSH/TCP memory per idle session: ${ratio}× (target ≤ 1.5×)`);
console.log(JSON.stringify({ users: count, settleSeconds, idleSeconds, waitSeconds, tcp, bosh, boshToTcpMemory: ratio }, null, 2));
