/** Federation test kit: a throwaway CA with server certificates (openssl), free ports, two Parleys. */
import { execFileSync } from "node:child_process";
import { startTestServer, type TestServer } from "./server.js";
import { mkdtempSync, writeFileSync, readFileSync } from "node:fs";
import { connect, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface Pki {
  caFile: string;
  /** Certificate and key files per domain, each naming the domain and *.domain unless told otherwise. */
  files: Record<string, { cert: string; key: string }>;
}

/** What a leaf presents instead of CN=domain and DNS:domain,DNS:*.domain: openssl subjectAltName syntax. */
export interface LeafIdentity { commonName: string; subjectAltName: string }

/** A CA and one leaf per domain (serverAuth + clientAuth, as s2s certificates need both). */
export function makePki(domains: readonly string[], identities: Readonly<Record<string, LeafIdentity>> = {}): Pki {
  const dir = mkdtempSync(join(tmpdir(), "parley-pki-"));
  const run = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  run("req", "-x509", ...ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=Parley s2s test CA",
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign");
  const files: Pki["files"] = {};
  for (const domain of domains) {
    const identity = identities[domain] ?? { commonName: domain, subjectAltName: `DNS:${domain},DNS:*.${domain}` };
    run("req", ...ec, "-keyout", `${domain}.key`, "-out", `${domain}.csr`, "-subj", `/CN=${identity.commonName}`);
    writeFileSync(join(dir, `${domain}.ext`), `subjectAltName=${identity.subjectAltName}\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n`);
    run("x509", "-req", "-in", `${domain}.csr`, "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", `${domain}.crt`, "-days", "2", "-extfile", `${domain}.ext`);
    files[domain] = { cert: join(dir, `${domain}.crt`), key: join(dir, `${domain}.key`) };
  }
  return { caFile: join(dir, "ca.crt"), files };
}

export const pem = (file: string) => readFileSync(file, "utf8");

/** A port nobody listens on right now (for configs that must name each other's port before start). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

export interface ParleyPair { a: TestServer; b: TestServer }

/**
 * a.test and b.test federated over static routes on loopback, each with its user ("alice@a.test",
 * "bob@b.test", password "pw"). With `pki` they present its certificates and trust its CA; without,
 * each has a self-signed certificate, which leaves dialback. `bDomains` are further domains served
 * by b.test (components) that a.test routes there; `a`/`b` are config overrides for either side.
 */
export async function startParleyPair(opts: { pki?: Pki; bDomains?: readonly string[]; a?: Record<string, unknown>; b?: Record<string, unknown> } = {}): Promise<ParleyPair> {
  const [portA, portB, noDns] = await Promise.all([freePort(), freePort(), freePort()]);
  const start = (host: string, port: number, routes: Record<string, string>, overrides: Record<string, unknown> = {}) => startTestServer({
    hosts: [host],
    ...(opts.pki ? { tls: { certificates: { [host]: opts.pki.files[host]! } } } : {}),
    ...overrides,
    // Any other domain is looked up at a port where no DNS server answers: it fails at once.
    s2s: { caFiles: opts.pki ? [opts.pki.caFile] : [], routes, dnsServer: `127.0.0.1:${noDns}`, ...(overrides.s2s as Record<string, unknown> | undefined) },
    listen: { address: "127.0.0.1", c2s: 0, c2sDirectTls: null, https: null, http: null, s2s: port, ...(overrides.listen as Record<string, unknown> | undefined) },
  });
  const toB = Object.fromEntries(["b.test", ...(opts.bDomains ?? [])].map((d) => [d, `127.0.0.1:${portB}`]));
  const [a, b] = await Promise.all([start("a.test", portA, toB, opts.a), start("b.test", portB, { "a.test": `127.0.0.1:${portA}` }, opts.b)]);
  await a.accounts.create("alice@a.test", "pw");
  await b.accounts.create("bob@b.test", "pw");
  return { a, b };
}

/**
 * A TCP relay between one server and another that a test can make lose data: while `swallowing`,
 * bytes in both directions are dropped (counted in `swallowed`), as on a path that died without
 * either end noticing; `cut()` then destroys every relayed connection and relays again.
 */
export class LossyRelay {
  swallowing = false;
  swallowed = 0;
  private readonly sockets = new Set<Socket>();
  private constructor(private readonly server: Server, readonly port: number) {}

  static async open(target: () => number): Promise<LossyRelay> {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const relay = new LossyRelay(server, (server.address() as { port: number }).port);
    server.on("connection", (client) => {
      const upstream = connect({ host: "127.0.0.1", port: target() });
      for (const [from, to] of [[client, upstream], [upstream, client]] as const) {
        relay.sockets.add(from);
        from.on("data", (data: Buffer) => {
          if (relay.swallowing) relay.swallowed += data.length;
          else to.write(data);
        });
        from.on("error", () => to.destroy());
        from.on("close", () => { relay.sockets.delete(from); to.destroy(); });
      }
    });
    return relay;
  }

  cut(): void {
    for (const socket of this.sockets) socket.destroy();
    this.swallowing = false;
  }

  close(): Promise<void> {
    this.cut();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
