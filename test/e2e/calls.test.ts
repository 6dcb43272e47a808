/**
 * Calls out of the box (issue 17): with the shipped config, XEP-0215 names a STUN server that
 * answers real Binding requests (coturn's turnutils_stunclient, and raw datagrams checked byte by
 * byte against RFC 8489); TURN through a real coturn with the REST shared secret Parley hands out
 * (turnutils_uclient allocates and relays with the credentials, and fails without them).
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { createSocket } from "node:dgram";
import { randomBytes } from "node:crypto";
import { crc32 } from "node:zlib";
import { parse as parseYaml } from "yaml";
import { parseConfig } from "../../src/config.js";
import { startServer, type Server } from "../../src/server.js";
import { silentLogger } from "../../src/log.js";
import { connect, xml, type Connected } from "../helpers/xmpp-client.js";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { eventually } from "../helpers/tls.js";

const NS = "urn:xmpp:extdisco:2";
const COOKIE = 0x2112a442;

function run(command: string, args: string[], timeoutMs = 30_000): Promise<{ status: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (d: Buffer) => { output += d.toString(); });
    child.stderr.on("data", (d: Buffer) => { output += d.toString(); });
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", reject);
    child.on("close", (status) => { clearTimeout(timer); resolve({ status, output }); });
  });
}

const missingTool = (command: string) =>
  (spawnSync("sh", ["-c", `command -v ${command}`]).status === 0 ? undefined : `${command} is not installed (Debian package coturn)`);

/** One datagram to the server and its answer (UDP: given up after `waitMs`). */
async function exchange(port: number, request: Buffer, waitMs = 5000): Promise<Buffer> {
  const socket = createSocket("udp4");
  let timer: NodeJS.Timeout | undefined;
  try {
    await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", resolve));
    const reply = new Promise<Buffer>((resolve, reject) => {
      socket.once("message", resolve);
      timer = setTimeout(() => reject(new Error("no STUN answer")), waitMs);
    });
    socket.send(request, port, "127.0.0.1");
    return await reply;
  } finally {
    clearTimeout(timer);
    socket.close();
  }
}

/** A Binding request built from RFC 8489 §5 by hand, with optional attributes. */
function bindingRequest(transaction: Buffer, attributes: Array<[number, Buffer]> = []): Buffer {
  const body = Buffer.concat(attributes.map(([type, value]) => {
    const head = Buffer.alloc(4);
    head.writeUInt16BE(type, 0);
    head.writeUInt16BE(value.length, 2);
    return Buffer.concat([head, value, Buffer.alloc((4 - (value.length % 4)) % 4)]);
  }));
  const header = Buffer.alloc(20);
  header.writeUInt16BE(0x0001, 0);
  header.writeUInt16BE(body.length, 2);
  header.writeUInt32BE(COOKIE, 4);
  transaction.copy(header, 8);
  return Buffer.concat([header, body]);
}

function attributesOf(message: Buffer): Map<number, Buffer> {
  const out = new Map<number, Buffer>();
  for (let at = 20; at < message.length;) {
    const type = message.readUInt16BE(at);
    const length = message.readUInt16BE(at + 2);
    out.set(type, message.subarray(at + 4, at + 4 + length));
    at += 4 + Math.ceil(length / 4) * 4;
  }
  return out;
}

describe("calls with the shipped configuration", () => {
  let server: Server;
  let dataDir: string;
  let alice: Connected;
  let stun: { host: string; port: number };

  before(async () => {
    dataDir = mkdtempSync(join(tmpdir(), "parley-calls-"));
    const raw = parseYaml(readFileSync("config/parley.example.yaml", "utf8")) as Record<string, any>;
    raw.dataDir = dataDir;
    for (const key of ["c2s", "c2sDirectTls", "https", "http", "s2s"]) raw.listen[key] = 0;
    raw.modules.extdisco.stun.port = 0;
    server = await startServer(parseConfig(raw), { log: silentLogger() });
    await server.accounts.create("alice@localhost", "pw");
    alice = await connect({ port: server.ports.c2sDirectTls!, directTls: true, username: "alice", password: "pw" });
    const reply = await alice.iq(xml("iq", { type: "get", to: "localhost" }, xml("services", { xmlns: NS })));
    const services = reply.getChild("services", NS)!.getChildren("service");
    const s = services.find((x) => x.attrs.type === "stun")!;
    assert.ok(s, "a STUN service is advertised");
    assert.equal(s.attrs.transport, "udp");
    stun = { host: s.attrs.host as string, port: Number(s.attrs.port) };
  });
  after(async () => {
    await alice?.stop();
    await server?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("advertises STUN on the user's own domain, which answers coturn's STUN client", { skip: missingTool("turnutils_stunclient") ?? false }, async () => {
    assert.equal(stun.host, "localhost");
    for (const address of ["127.0.0.1", "::1"]) {
      const r = await run("turnutils_stunclient", ["-p", String(stun.port), address]);
      assert.equal(r.status, 0, r.output);
      const reflexive = /UDP reflexive addr: (.+):(\d+)/.exec(r.output);
      assert.ok(reflexive, r.output);
      assert.equal(reflexive[1], address);
    }
  });

  it("answers a Binding request with the sender's address in XOR-MAPPED-ADDRESS (RFC 8489 §14.2)", async () => {
    const socket = createSocket("udp4");
    await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", resolve));
    const clientPort = socket.address().port;
    const transaction = randomBytes(12);
    const reply = new Promise<Buffer>((resolve) => socket.once("message", resolve));
    socket.send(bindingRequest(transaction), stun.port, "127.0.0.1");
    const response = await reply;
    socket.close();
    assert.equal(response.readUInt16BE(0), 0x0101, "Binding success response");
    assert.equal(response.readUInt16BE(2), response.length - 20);
    assert.equal(response.readUInt32BE(4), COOKIE);
    assert.deepEqual(response.subarray(8, 20), transaction);
    const mapped = attributesOf(response).get(0x0020)!;
    assert.equal(mapped[1], 0x01, "IPv4");
    assert.equal(mapped.readUInt16BE(2) ^ (COOKIE >>> 16), clientPort);
    const ip = [...mapped.subarray(4, 8)].map((b, i) => b ^ ((COOKIE >>> (24 - 8 * i)) & 0xff)).join(".");
    assert.equal(ip, "127.0.0.1");
  });

  it("refuses unknown comprehension-required attributes with 420, and drops what is not a request", async () => {
    const transaction = randomBytes(12);
    // CHANGE-REQUEST (RFC 5780), which this server does not implement.
    const error = await exchange(stun.port, bindingRequest(transaction, [[0x0003, Buffer.from([0, 0, 0, 6])]]));
    assert.equal(error.readUInt16BE(0), 0x0111, "Binding error response");
    const attrs = attributesOf(error);
    const code = attrs.get(0x0009)!;
    assert.equal(code[2]! * 100 + code[3]!, 420);
    assert.equal(attrs.get(0x000a)!.readUInt16BE(0), 0x0003);
    // A response or a bad cookie gets no answer; the server still answers the next request.
    const socket = createSocket("udp4");
    await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", resolve));
    const got: Buffer[] = [];
    socket.on("message", (m) => got.push(m));
    const notRequest = bindingRequest(randomBytes(12));
    notRequest.writeUInt16BE(0x0101, 0);
    const badCookie = bindingRequest(randomBytes(12));
    badCookie.writeUInt32BE(0x12345678, 4);
    const good = randomBytes(12);
    for (const m of [notRequest, badCookie, Buffer.from("GET / HTTP/1.1\r\n\r\n"), bindingRequest(good)]) socket.send(m, stun.port, "127.0.0.1");
    await eventually("the valid request answered", () => (got.length ? true : undefined), 5000, 20);
    socket.close();
    assert.equal(got.length, 1);
    assert.deepEqual(got[0]!.subarray(8, 20), good);
  });

  it("carries FINGERPRINT back when the request has one (RFC 8489 §14.7)", async () => {
    // CRC-32 by zlib (independent of the server's own table), XOR 0x5354554e.
    const request = bindingRequest(randomBytes(12), [[0x8028, Buffer.alloc(4)]]);
    request.writeUInt32BE((crc32(request.subarray(0, request.length - 8)) ^ 0x5354554e) >>> 0, request.length - 4);
    const response = await exchange(stun.port, request);
    assert.equal(response.readUInt16BE(response.length - 8), 0x8028, "last attribute");
    assert.equal(response.readUInt32BE(response.length - 4), (crc32(response.subarray(0, response.length - 8)) ^ 0x5354554e) >>> 0);
    // A request whose FINGERPRINT is wrong is dropped (§6.3).
    request.writeUInt32BE((request.readUInt32BE(request.length - 4) ^ 1) >>> 0, request.length - 4);
    await assert.rejects(exchange(stun.port, request, 500), /no STUN answer/);
  });
});

describe("TURN through coturn with the REST shared secret", { skip: missingTool("turnserver") ?? missingTool("turnutils_uclient") ?? false }, () => {
  let coturn: ChildProcess;
  let server: TestServer;
  let alice: Connected;
  let turnPort: number;
  let coturnLog = "";
  const secret = randomBytes(16).toString("hex");

  before(async () => {
    // A free UDP port for coturn (it takes no port 0).
    const probe = createSocket("udp4");
    await new Promise<void>((resolve) => probe.bind(0, "127.0.0.1", resolve));
    turnPort = probe.address().port;
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    coturn = spawn("turnserver", [
      "-n", "--listening-ip", "127.0.0.1", "--listening-port", String(turnPort), "--relay-ip", "127.0.0.1",
      "--min-port", "49160", "--max-port", "49400", "--use-auth-secret", `--static-auth-secret=${secret}`, "--realm", "localhost",
      "--no-tls", "--no-dtls", "--no-cli", "--allow-loopback-peers", "--log-file", "stdout", "--simple-log",
    ], { stdio: ["ignore", "pipe", "pipe"] });
    coturn.stdout!.on("data", (d: Buffer) => { coturnLog += d.toString(); });
    coturn.stderr!.on("data", (d: Buffer) => { coturnLog += d.toString(); });
    // Ready once it answers a STUN Binding request.
    await eventually("coturn listening", () => exchange(turnPort, bindingRequest(randomBytes(12)), 300)
      .then((r) => r.readUInt16BE(0) === 0x0101 || undefined, () => undefined), 15_000, 50);
    server = await startTestServer({ modules: { extdisco: { stun: false, services: [
      { type: "stun", host: "127.0.0.1", port: turnPort, transport: "udp" },
      { type: "turn", host: "127.0.0.1", port: turnPort, transport: "udp", secret, ttlSeconds: 3600 },
    ] } } });
    await server.accounts.create("alice@localhost", "pw");
    alice = await connect({ port: server.ports.c2sDirectTls!, directTls: true, username: "alice", password: "pw" });
  });
  after(async () => {
    await alice?.stop();
    await server?.cleanup();
    if (coturn && coturn.exitCode === null) {
      const exited = new Promise((resolve) => coturn.once("exit", resolve));
      coturn.kill("SIGTERM");
      await exited;
    }
  });

  it("the credentials Parley hands out allocate a relay and carry traffic; altered ones are refused", async () => {
    const reply = await alice.iq(xml("iq", { type: "get", to: "localhost" }, xml("services", { xmlns: NS, type: "turn" })));
    const turn = reply.getChild("services", NS)!.getChild("service")!;
    const username = turn.attrs.username as string;
    const password = turn.attrs.password as string;
    // -y: two clients talk through their relayed addresses (TURN Allocate, CreatePermission, Send/Data).
    const ok = await run("turnutils_uclient", ["-y", "-n", "3", "-m", "1", "-u", username, "-w", password, "-p", turn.attrs.port as string, turn.attrs.host as string]);
    assert.equal(ok.status, 0, `${ok.output}\ncoturn: ${coturnLog}`);
    const sent = /tot_send_msgs=(\d+), tot_recv_msgs=(\d+)/.exec(ok.output.split("\n").filter((l) => l.includes("tot_send_msgs=")).pop() ?? "");
    assert.ok(sent && Number(sent[1]) > 0 && sent[1] === sent[2], ok.output);
    assert.match(ok.output, /Total lost packets 0 /);
    const bad = await run("turnutils_uclient", ["-y", "-n", "1", "-m", "1", "-u", username, "-w", `${password}x`, "-p", turn.attrs.port as string, turn.attrs.host as string], 20_000);
    assert.notEqual(bad.status, 0);
    assert.match(bad.output, /Cannot complete Allocation/);
  });
});
