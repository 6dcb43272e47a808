/**
 * Let's Encrypt's Pebble (Debian package `pebble`) on loopback: a real ACME server (RFC 8555) that
 * really validates challenges, with pebble-challtestsrv as its DNS server (every name resolves to
 * `ip`, changeable while running). Its directory is served over HTTPS with a certificate made here.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type AddressInfo } from "node:net";
import { createSocket } from "node:dgram";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { request as httpsRequest, Agent } from "node:https";
import { request as httpRequest } from "node:http";
import { generateSelfSigned } from "../../src/xmpp/tls.js";
import { eventually } from "./tls.js";

/** Why Pebble cannot run here, or undefined when it can. */
export function pebbleMissing(): string | undefined {
  for (const command of ["pebble", "pebble-challtestsrv"]) {
    const r = spawnSync(command, ["-h"], { encoding: "utf8" });
    if (r.error) return `${command} is not installed (Debian package pebble): ${r.error.message}`;
  }
  return undefined;
}

export async function freeTcpPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function freeUdpPort(): Promise<number> {
  const socket = createSocket("udp4");
  await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", resolve));
  const { port } = socket.address();
  await new Promise<void>((resolve) => socket.close(() => resolve()));
  return port;
}

export interface Pebble {
  directoryUrl: string;
  /** Trust for the directory's HTTPS (tls.acme.caFile). */
  caFile: string;
  /** Pebble's root CA (made anew at each start), to verify what it issued. */
  root(): Promise<string>;
  /** Points every name at another address (pebble-challtestsrv's default A record). */
  resolveTo(ip: string): Promise<void>;
  /** Pebble's own output, for failure messages. */
  output(): string;
  stop(): Promise<void>;
}

export async function startPebble(opts: { httpPort: number; tlsPort: number; ip?: string }): Promise<Pebble> {
  const dir = mkdtempSync(join(tmpdir(), "parley-pebble-"));
  const { cert, key } = await generateSelfSigned("localhost");
  writeFileSync(join(dir, "cert.pem"), cert);
  writeFileSync(join(dir, "key.pem"), key);
  const [acmePort, managementPort, dnsPort, dnsManagementPort] = [await freeTcpPort(), await freeTcpPort(), await freeUdpPort(), await freeTcpPort()];
  writeFileSync(join(dir, "pebble.json"), JSON.stringify({
    pebble: {
      listenAddress: `127.0.0.1:${acmePort}`, managementListenAddress: `127.0.0.1:${managementPort}`,
      certificate: join(dir, "cert.pem"), privateKey: join(dir, "key.pem"),
      httpPort: opts.httpPort, tlsPort: opts.tlsPort, ocspResponderURL: "", externalAccountBindingRequired: false,
    },
  }));
  let log = "";
  const keep = (child: ChildProcess) => {
    child.stdout!.on("data", (d: Buffer) => { log += d.toString(); });
    child.stderr!.on("data", (d: Buffer) => { log += d.toString(); });
  };
  const dns = spawn("pebble-challtestsrv", [
    "-dns01", `127.0.0.1:${dnsPort}`, "-http01", "", "-https01", "", "-tlsalpn01", "",
    "-management", `127.0.0.1:${dnsManagementPort}`, "-defaultIPv4", opts.ip ?? "127.0.0.1", "-defaultIPv6", "",
  ], { stdio: ["ignore", "pipe", "pipe"] });
  keep(dns);
  // No random sleeps before validation; validation itself is real (no PEBBLE_VA_ALWAYS_VALID).
  const pebble = spawn("pebble", ["-config", join(dir, "pebble.json"), "-dnsserver", `127.0.0.1:${dnsPort}`], {
    stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, PEBBLE_VA_NOSLEEP: "1" },
  });
  keep(pebble);
  const agent = new Agent({ ca: cert, rejectUnauthorized: true });
  const get = (url: string) => new Promise<{ status: number; text: string }>((resolve, reject) => {
    httpsRequest(url, { agent }, (res) => {
      let text = "";
      res.on("data", (d: Buffer) => { text += d.toString(); });
      res.on("end", () => resolve({ status: res.statusCode!, text }));
    }).on("error", reject).end();
  });
  const directoryUrl = `https://localhost:${acmePort}/dir`;
  await eventually(`pebble listening (${log})`, () => get(directoryUrl).then((r) => r.status === 200 || undefined, () => undefined), 15_000);
  const dnsCommand = (path: string, body: unknown) => new Promise<void>((resolve, reject) => {
    const req = httpRequest({ host: "127.0.0.1", port: dnsManagementPort, path, method: "POST" }, (res) => {
      res.resume();
      res.on("end", () => (res.statusCode === 200 ? resolve() : reject(new Error(`challtestsrv ${path}: ${res.statusCode}`))));
    });
    req.on("error", reject);
    req.end(JSON.stringify(body));
  });
  await eventually("challtestsrv listening", () => dnsCommand("/set-default-ipv4", { ip: opts.ip ?? "127.0.0.1" }).then(() => true, () => undefined), 15_000);
  return {
    directoryUrl,
    caFile: join(dir, "cert.pem"),
    root: async () => (await get(`https://localhost:${managementPort}/roots/0`)).text,
    resolveTo: (ip) => dnsCommand("/set-default-ipv4", { ip }),
    output: () => log,
    async stop() {
      for (const child of [pebble, dns]) {
        if (child.exitCode === null) {
          const exited = new Promise((resolve) => child.once("exit", resolve));
          child.kill("SIGTERM");
          await exited;
        }
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
