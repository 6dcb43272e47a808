/**
 * A raw XMPP-over-WebSocket client (RFC 7395) for tests that send exact messages. Each message the
 * server sends is parsed on its own by xmpp.js's parser — RFC 7395 §3.3.3 wants every message to
 * be a complete element that stands alone, so a message that needs context does not parse here.
 */
import { WebSocket, type ClientOptions } from "ws";
import { createHash, randomBytes } from "node:crypto";
import type { TLSSocket } from "node:tls";
import type { IncomingMessage } from "node:http";
import { xml, type Element } from "@xmpp/xml";
import { H, HMAC, saltedPassword, xor } from "../../src/auth/scram.js";
import type { ScramHash } from "../../src/storage/index.js";

export const NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing";
export const open = (to = "localhost") => `<open xmlns='${NS_FRAMING}' to='${to}' version='1.0'/>`;

export interface WsOptions {
  protocols?: string[];
  origin?: string;
  headers?: Record<string, string>;
  /** Answer the server's pings (ws does by default); false plays a peer that is gone. */
  autoPong?: boolean;
}

/** The HTTP answer to a refused handshake. */
export interface Refused {
  status: number;
  body: string;
}

export class WsClient {
  /** Every message, as text. */
  readonly messages: string[] = [];
  /** The elements of each message, parsed alone; a message that does not parse has none. */
  readonly perMessage: Element[][] = [];
  /** All elements received, in order. */
  readonly elements: Element[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  private listeners: Array<() => void> = [];

  private constructor(readonly ws: WebSocket) {
    this.closed = new Promise((resolve) => ws.once("close", (code, reason) => resolve({ code, reason: reason.toString() })));
    ws.on("message", (data, isBinary) => {
      const text = isBinary ? `[binary ${(data as Buffer).length}]` : data.toString();
      this.messages.push(text);
      const parsed = parseAlone(text);
      this.perMessage.push(parsed);
      this.elements.push(...parsed);
      for (const l of [...this.listeners]) l();
    });
    ws.on("error", () => {});
  }

  /** The WebSocket's TLS session, for channel binding computed on the client's side. */
  get tlsSocket(): TLSSocket {
    return (this.ws as unknown as { _socket: TLSSocket })._socket;
  }

  static connect(url: string, options: WsOptions = {}): Promise<WsClient> {
    return WsClient.attempt(url, options).then((r) => {
      if (r instanceof WsClient) return r;
      throw new Error(`handshake refused: ${r.status} ${r.body}`);
    });
  }

  /** Connects, or resolves with the HTTP status the server refused the handshake with. */
  static attempt(url: string, options: WsOptions = {}): Promise<WsClient | Refused> {
    const clientOptions: ClientOptions = { rejectUnauthorized: false, headers: options.headers ?? {}, autoPong: options.autoPong ?? true };
    if (options.origin !== undefined) clientOptions.origin = options.origin;
    const ws = new WebSocket(url, options.protocols ?? ["xmpp"], clientOptions);
    return new Promise((resolve, reject) => {
      ws.once("open", () => resolve(new WsClient(ws)));
      ws.once("unexpected-response", (_req, res: IncomingMessage) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (d: string) => { body += d; });
        res.on("end", () => { resolve({ status: res.statusCode ?? 0, body }); ws.terminate(); });
      });
      ws.once("error", reject);
    });
  }

  send(data: string | Buffer, binary = false): void {
    this.ws.send(data, { binary });
  }

  /** Waits for an element (from index `from` on) that matches. */
  waitForElement(pred: (e: Element) => boolean, timeoutMs = 5000, from = 0): Promise<Element> {
    return new Promise((resolve, reject) => {
      const find = () => this.elements.slice(from).find(pred);
      const done = () => { clearTimeout(timer); this.listeners = this.listeners.filter((l) => l !== listener); };
      const listener = () => { const e = find(); if (e) { done(); resolve(e); } };
      const timer = setTimeout(() => { done(); reject(new Error(`timed out waiting for an element; got: ${this.messages.slice(-5).join(" | ")}`)); }, timeoutMs);
      const e = find();
      if (e) { done(); resolve(e); } else this.listeners.push(listener);
    });
  }

  /** The stream error's condition, once one has arrived. */
  async streamError(timeoutMs = 5000): Promise<string> {
    const error = await this.waitForElement((e) => e.name === "stream:error" || (e.name === "error" && e.attrs.xmlns === "http://etherx.jabber.org/streams"), timeoutMs);
    return error.children.find((c): c is Element => typeof c !== "string" && c.attrs.xmlns === "urn:ietf:params:xml:ns:xmpp-streams" && c.name !== "text")!.name;
  }

  /** <open/> and the features that follow; returns the features. */
  async openStream(to = "localhost"): Promise<Element> {
    const from = this.elements.length;
    this.send(open(to));
    await this.waitForElement((e) => e.is("open", NS_FRAMING), 5000, from);
    return this.waitForElement((e) => e.name === "stream:features", 5000, from);
  }

  /** SASL PLAIN, the stream restart, and bind. */
  async session(user: string, password: string, resource = "ws"): Promise<string> {
    await this.openStream();
    await this.auth(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${Buffer.from(`\0${user}\0${password}`).toString("base64")}</auth>`);
    return this.bind(resource);
  }

  /** Sends an <auth/> and waits for success; throws on failure. */
  async auth(auth: string): Promise<void> {
    const from = this.elements.length;
    this.send(auth);
    const answer = await this.waitForElement((e) => e.attrs.xmlns === "urn:ietf:params:xml:ns:xmpp-sasl" && (e.name === "success" || e.name === "failure"), 5000, from);
    if (answer.name !== "success") throw new Error(`SASL failure: ${answer.toString()}`);
  }

  /** Restart after SASL, bind a resource; returns the full JID. */
  async bind(resource: string): Promise<string> {
    const features = await this.openStream();
    if (!features.getChild("bind", "urn:ietf:params:xml:ns:xmpp-bind")) throw new Error(`no bind feature: ${features.toString()}`);
    const from = this.elements.length;
    this.send(`<iq type='set' id='bind1' xmlns='jabber:client'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>${resource}</resource></bind></iq>`);
    const result = await this.waitForElement((e) => e.name === "iq" && e.attrs.id === "bind1", 5000, from);
    return result.getChild("bind")!.getChildText("jid")!;
  }

  close(): void {
    this.ws.terminate();
  }
}

function parseAlone(message: string): Element[] {
  const parser = new xml.Parser();
  const found: Element[] = [];
  let failed = false;
  parser.on("element", (e: Element) => found.push(e));
  parser.on("error", () => { failed = true; });
  try {
    parser.write(`<message-root>${message}</message-root>`);
  } catch {
    failed = true;
  }
  return failed ? [] : found;
}

export type CbType = "tls-exporter" | "tls-server-end-point";

/** SCRAM over the WebSocket, channel binding computed from the client's own view of its TLS session. */
export async function wsScramLogin(c: WsClient, mechanism: string, user: string, password: string, cbType?: CbType): Promise<"success" | string> {
  const hash: ScramHash = mechanism.includes("256") ? "SHA-256" : "SHA-1";
  const tls = c.tlsSocket;
  let cb: Buffer = Buffer.alloc(0);
  if (cbType === "tls-exporter") cb = (tls.exportKeyingMaterial as (n: number, l: string) => Buffer)(32, "EXPORTER-Channel-Binding");
  if (cbType === "tls-server-end-point") cb = createHash("sha256").update(tls.getPeerCertificate().raw).digest();
  const gs2 = cbType ? `p=${cbType},,` : "n,,";
  const cnonce = randomBytes(12).toString("base64");
  const sasl = (e: Element) => e.attrs.xmlns === "urn:ietf:params:xml:ns:xmpp-sasl";
  let from = c.elements.length;
  c.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='${mechanism}'>${Buffer.from(`${gs2}n=${user},r=${cnonce}`).toString("base64")}</auth>`);
  const challenge = await c.waitForElement((e) => sasl(e) && (e.name === "challenge" || e.name === "failure"), 5000, from);
  if (challenge.name === "failure") return challenge.children.map((x) => (typeof x === "string" ? x : x.name)).join(",");
  const serverFirst = Buffer.from(challenge.text(), "base64").toString();
  const attrs = Object.fromEntries(serverFirst.split(",").map((p) => [p[0], p.slice(2)]));
  const salted = await saltedPassword(hash, password, Buffer.from(attrs.s!, "base64"), Number(attrs.i));
  const withoutProof = `c=${Buffer.concat([Buffer.from(gs2), cb]).toString("base64")},r=${attrs.r}`;
  const authMessage = `n=${user},r=${cnonce},${serverFirst},${withoutProof}`;
  const clientKey = HMAC(hash, salted, "Client Key");
  const proof = xor(clientKey, HMAC(hash, H(hash, clientKey), authMessage));
  from = c.elements.length;
  c.send(`<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>${Buffer.from(`${withoutProof},p=${proof.toString("base64")}`).toString("base64")}</response>`);
  const outcome = await c.waitForElement((e) => sasl(e) && (e.name === "success" || e.name === "failure"), 5000, from);
  if (outcome.name === "failure") return outcome.children.map((x) => (typeof x === "string" ? x : x.name)).join(",");
  const expected = `v=${HMAC(hash, HMAC(hash, salted, "Server Key"), authMessage).toString("base64")}`;
  if (Buffer.from(outcome.text(), "base64").toString() !== expected) return "bad server signature";
  return "success";
}

/**
 * xmpp.js's WebSocket transport uses the global WebSocket, which Node 20 has only behind a flag;
 * `ws` provides the same browser API (the tests' certificates are self-signed: see xmpp-client.ts).
 */
export function installGlobalWebSocket(): void {
  (globalThis as { WebSocket?: unknown }).WebSocket ??= WebSocket;
}
