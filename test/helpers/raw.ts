/** A raw XMPP socket for tests that must send exact bytes (bad input, custom SASL exchanges). */
import { connect as tcpConnect, type Socket } from "node:net";
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from "node:tls";
import { createHash, randomBytes } from "node:crypto";
import { H, HMAC, saltedPassword, xor } from "../../src/auth/scram.js";
import type { ScramHash } from "../../src/storage/index.js";
import { StringDecoder } from "node:string_decoder";
import { xml, type Element } from "@xmpp/xml";

export const header = (to = "localhost", extra = "") =>
  `<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='${to}' version='1.0'${extra}>`;

export const NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas";
export const NS_STREAMS = "http://etherx.jabber.org/streams";

/** A <stream:error/> carrying `condition` (RFC 6120 §4.9.3). */
export const streamError = (condition: string) => (e: Element): boolean =>
  e.is("error", NS_STREAMS) && !!e.getChild(condition, "urn:ietf:params:xml:ns:xmpp-streams");

/** The element and every element nested in it, depth first. */
export function descendants(e: Element): Element[] {
  return [e, ...e.getChildElements().flatMap(descendants)];
}

export type Tree = { name: string; attrs: Record<string, string>; children: Array<Tree | string> };

/**
 * An element as plain data (name, attributes, children in order), to compare a whole stanza with
 * `assert.deepEqual(tree(got), tree(xml(...)))`: exact, but blind to attribute order and quoting.
 */
export function tree(e: Element): Tree {
  return { name: e.name, attrs: { ...e.attrs }, children: e.children.map((c) => (typeof c === "string" ? c : tree(c as Element))) };
}

/** An IQ result answering `id`. */
export const iqResult = (id: string) => (e: Element): boolean => e.is("iq") && e.attrs.type === "result" && e.attrs.id === id;

/** A stanza error answering `id` whose <error/> carries `condition` (RFC 6120 §8.3; other namespaces for application conditions). */
export const errorReply = (id: string, condition: string, ns = NS_STANZAS) => (e: Element): boolean =>
  e.attrs.id === id && e.attrs.type === "error" && !!e.getChild("error")?.getChild(condition, ns);

export class RawClient {
  text = "";
  /** Top-level elements received, parsed by xmpp.js's parser (independent of the server's). */
  readonly elements: Element[] = [];
  readonly closed: Promise<void>;
  private listeners: Array<() => void> = [];
  private decoder = new StringDecoder("utf8");
  private parser = this.newParser();
  private constructor(public socket: Socket | TLSSocket) {
    this.closed = new Promise((resolve) => socket.once("close", () => resolve()));
    this.attach(socket);
  }

  private attach(socket: Socket): void {
    socket.on("data", (d: Buffer) => {
      const chunk = this.decoder.write(d);
      this.text += chunk;
      this.parser.write(chunk);
      for (const l of [...this.listeners]) l();
    });
    socket.on("error", () => {});
  }

  private newParser(): InstanceType<typeof xml.Parser> {
    const parser = new xml.Parser();
    parser.on("element", (e: Element) => this.elements.push(e));
    parser.on("error", () => {});
    return parser;
  }

  /** The server starts a new stream (after STARTTLS or SASL success): parse it from a clean state. */
  restartParser(): void {
    this.parser = this.newParser();
  }

  /** Waits for a top-level element (from index `from` on) that matches. */
  waitForElement(pred: (e: Element) => boolean, timeoutMs = 5000, from = 0): Promise<Element> {
    return new Promise((resolve, reject) => {
      const find = () => this.elements.slice(from).find(pred);
      const done = () => { clearTimeout(timer); this.listeners = this.listeners.filter((l) => l !== listener); };
      const listener = () => { const e = find(); if (e) { done(); resolve(e); } };
      const timer = setTimeout(() => { done(); reject(new Error(`timed out waiting for an element; got: ${this.text.slice(-500)}`)); }, timeoutMs);
      const e = find();
      if (e) { done(); resolve(e); } else this.listeners.push(listener);
    });
  }

  /** Whether a received element, or an element nested in one, matches: for "this never arrived" checks. */
  anyElement(pred: (e: Element) => boolean, from = 0): boolean {
    return this.elements.slice(from).some((e) => descendants(e).some(pred));
  }

  /** `localAddress`: another loopback address (127.0.0.2, …) to look like another client machine. */
  static async open(port: number, directTls: boolean, localAddress?: string): Promise<RawClient> {
    const socket = directTls
      ? tlsConnect({ port, host: "127.0.0.1", servername: "localhost", rejectUnauthorized: false, ALPNProtocols: ["xmpp-client"], ...(localAddress ? { localAddress } : {}) })
      : tcpConnect({ port, host: "127.0.0.1", ...(localAddress ? { localAddress } : {}) });
    await new Promise<void>((resolve, reject) => {
      socket.once(directTls ? "secureConnect" : "connect", () => resolve());
      socket.once("error", reject);
    });
    return new RawClient(socket);
  }

  /** The server end of a connection a test accepted (a raw remote server that Parley calls). */
  static accept(socket: Socket | TLSSocket): RawClient {
    return new RawClient(socket);
  }

  send(data: string | Buffer): void { this.socket.write(data); }

  /**
   * Waits until the received text (from `from` on) matches; returns the match. Only for what is
   * about the bytes themselves (the closing </stream:stream>, framing); stanzas and nonzas are
   * checked on `elements` with waitForElement.
   */
  waitFor(pattern: RegExp, timeoutMs = 5000, from = 0): Promise<RegExpMatchArray> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const m = this.text.slice(from).match(pattern);
        if (m) { done(); resolve(m); return true; }
        return false;
      };
      const done = () => { clearTimeout(timer); this.listeners = this.listeners.filter((l) => l !== listener); };
      const listener = () => { check(); };
      const timer = setTimeout(() => { done(); reject(new Error(`timed out waiting for ${pattern}; got: ${this.text.slice(-500)}`)); }, timeoutMs);
      if (!check()) this.listeners.push(listener);
    });
  }

  /** STARTTLS on a plain connection: send, wait for <proceed/>, upgrade. */
  async startTls(options: ConnectionOptions = {}): Promise<void> {
    const mark = this.elements.length;
    this.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    await this.waitForElement((e) => e.is("proceed", "urn:ietf:params:xml:ns:xmpp-tls"), 5000, mark);
    this.restartParser();
    const tls = tlsConnect({ socket: this.socket, servername: "localhost", rejectUnauthorized: false, ...options });
    await new Promise<void>((resolve, reject) => { tls.once("secureConnect", () => resolve()); tls.once("error", reject); });
    this.socket = tls;
    this.attach(tls);
  }

  close(): void { this.socket.destroy(); }
}

export type CbType = "tls-exporter" | "tls-server-end-point";

const NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl";
const sasl = (...names: string[]) => (e: Element) => names.some((n) => e.is(n, NS_SASL));

/** The conditions of a SASL <failure/>: its child elements' names but <text/>. */
export const saslConditions = (failure: Element): string[] => failure.getChildElements().map((e) => e.name).filter((n) => n !== "text");

/**
 * SCRAM over the wire with channel binding computed from the client's own view of the TLS session.
 * Returns "success", "bad server signature", or the server's <failure/>.
 */
export async function scramLogin(c: RawClient, mechanism: string, user: string, password: string, cbType?: CbType): Promise<"success" | "bad server signature" | Element> {
  const hash: ScramHash = mechanism.includes("256") ? "SHA-256" : "SHA-1";
  const tls = c.socket as TLSSocket;
  let cb: Buffer = Buffer.alloc(0);
  if (cbType === "tls-exporter") cb = (tls.exportKeyingMaterial as (n: number, l: string) => Buffer)(32, "EXPORTER-Channel-Binding");
  if (cbType === "tls-server-end-point") cb = createHash("sha256").update(tls.getPeerCertificate().raw).digest();
  const gs2 = cbType ? `p=${cbType},,` : "n,,";
  const cnonce = randomBytes(12).toString("base64");
  const mark = c.elements.length;
  c.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='${mechanism}'>${Buffer.from(`${gs2}n=${user},r=${cnonce}`).toString("base64")}</auth>`);
  const m = await c.waitForElement(sasl("challenge", "failure"), 5000, mark);
  if (m.getName() === "failure") return m;
  const serverFirst = Buffer.from(m.getText(), "base64").toString();
  const attrs = Object.fromEntries(serverFirst.split(",").map((p) => [p[0], p.slice(2)]));
  const salted = await saltedPassword(hash, password, Buffer.from(attrs.s!, "base64"), Number(attrs.i));
  const withoutProof = `c=${Buffer.concat([Buffer.from(gs2), cb]).toString("base64")},r=${attrs.r}`;
  const authMessage = `n=${user},r=${cnonce},${serverFirst},${withoutProof}`;
  const clientKey = HMAC(hash, salted, "Client Key");
  const proof = xor(clientKey, HMAC(hash, H(hash, clientKey), authMessage));
  const mark2 = c.elements.length;
  c.send(`<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>${Buffer.from(`${withoutProof},p=${proof.toString("base64")}`).toString("base64")}</response>`);
  const r = await c.waitForElement(sasl("success", "failure"), 5000, mark2);
  if (r.getName() === "failure") return r;
  const expected = `v=${HMAC(hash, HMAC(hash, salted, "Server Key"), authMessage).toString("base64")}`;
  if (Buffer.from(r.getText(), "base64").toString() !== expected) return "bad server signature";
  return "success";
}

/** Opens a direct-TLS stream and returns once the pre-auth features have arrived. */
export async function openStream(port: number, directTls = true, localAddress?: string, domain = "localhost"): Promise<RawClient> {
  const c = await RawClient.open(port, directTls, localAddress);
  c.send(header(domain));
  await c.waitForElement((e) => e.is("features", NS_STREAMS));
  return c;
}

/** Authenticated with PLAIN and restarted, not bound: ready for a XEP-0198 <resume/> or a bind. */
export async function authenticatedStream(port: number, user: string, password: string): Promise<RawClient> {
  const c = await openStream(port);
  const mark = c.elements.length;
  c.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${Buffer.from(`\0${user}\0${password}`).toString("base64")}</auth>`);
  await c.waitForElement(sasl("success"), 10_000, mark);
  c.restartParser();
  c.send(header());
  await c.waitForElement((e) => e.is("features", NS_STREAMS), 10_000, mark);
  return c;
}

/** Authenticate with PLAIN, restart, bind; ready for stanzas. */
export async function rawSession(port: number, user: string, password: string, resource = "raw", domain = "localhost"): Promise<RawClient> {
  const c = await openStream(port, true, undefined, domain);
  const mark = c.elements.length;
  c.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${Buffer.from(`\0${user}\0${password}`).toString("base64")}</auth>`);
  await c.waitForElement(sasl("success"), 5000, mark);
  c.restartParser();
  c.send(header(domain));
  await c.waitForElement((e) => e.is("features", NS_STREAMS) && !!e.getChild("bind", "urn:ietf:params:xml:ns:xmpp-bind"), 5000, mark);
  c.send(`<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>${resource}</resource></bind></iq>`);
  await c.waitForElement(iqResult("bind1"), 5000, mark);
  return c;
}
