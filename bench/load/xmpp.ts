/**
 * The load generator's XMPP client: raw sockets, no XML library, so one generator core can drive
 * tens of thousands of stanzas per second against any server. It speaks just enough RFC 6120/6121
 * to log in like a mobile client (STARTTLS or direct TLS, SCRAM-SHA-1 or PLAIN, bind, roster,
 * presence), register in band (XEP-0077) and ask for acks (XEP-0198).
 *
 * Two modes: while logging in, incoming text is buffered and matched against what is expected next;
 * once `startTraffic()` is called, incoming text is only scanned for message markers, acks and pings
 * (answered, so servers that ping idle clients keep them).
 */
import { once } from "node:events";
import { connect as tcpConnect, type Socket } from "node:net";
import { connect as tlsConnect, createSecureContext, type SecureContext, type TLSSocket } from "node:tls";
import { createHash, createHmac, pbkdf2, randomBytes } from "node:crypto";
import { WebSocket, type ClientOptions } from "ws";

export interface Endpoint {
  host: string;
  port: number;
  domain: string;
  tls: "direct" | "starttls";
  /** CA to verify the server against; without one, certificates are not checked. */
  ca?: Buffer;
  sasl: "scram-sha-1" | "plain";
  /** TCP (RFC 6120) or XMPP over WebSocket (RFC 7395) at wss://host:port/xmpp-websocket. */
  transport?: "tcp" | "websocket";
}

const FRAMING = "urn:ietf:params:xml:ns:xmpp-framing";

/** Bodies that carry this prefix are the generator's own messages: `<body>` + MARK + send time. */
export const MARK = "<body>~lt~";
const MARK_END = "</body>";

const saltedPasswords = new Map<string, Promise<Buffer>>();
const secureContexts = new WeakMap<Endpoint, SecureContext>();

/** One TLS context per endpoint: building one (and parsing the CA) per connection costs the generator. */
function tlsOptionsFor(endpoint: Endpoint) {
  let secureContext = secureContexts.get(endpoint);
  if (!secureContext) secureContexts.set(endpoint, (secureContext = createSecureContext({ ca: endpoint.ca })));
  return { servername: endpoint.domain, secureContext, rejectUnauthorized: endpoint.ca !== undefined };
}

export class XmppError extends Error {}

export interface LoginOptions {
  resource?: string;
  /** Roster fetch and initial presence, as a real client logs in (default true). */
  presence?: boolean;
  streamManagement?: boolean;
  /** Switch to scanning mode before initial presence, so offline messages are counted. */
  traffic?: boolean;
}

export class Connection {
  socket!: Socket | TLSSocket;
  /** The WebSocket, in WebSocket mode: one element per message, the same text as over TCP. */
  private ws: WebSocket | undefined;
  jid = "";
  private buffer = "";
  private waiter: { pattern: RegExp; resolve: (m: RegExpExecArray) => void; reject: (e: Error) => void } | undefined;
  private tail = "";
  private traffic = false;
  closed = false;
  /** Called once per generator message received, with the send time (ms, performance clock). */
  onMark: (sentAt: number) => void = () => {};
  /** XEP-0198: the last `h` the server acknowledged. */
  onAck: (h: number) => void = () => {};
  /** Stanzas received since SM was enabled, for answering the server's `<r/>`. */
  private inbound = 0;
  private smEnabled = false;

  constructor(readonly endpoint: Endpoint) {}

  private readonly onData = (text: string) => {
    if (this.traffic) return this.scan(text);
    this.buffer += text;
    if (this.buffer.length > 1 << 20) this.buffer = this.buffer.slice(-(1 << 18));
    this.check();
  };

  private check(): void {
    if (!this.waiter) return;
    const failure = /<(?:stream:error|failure)[\s>][\s\S]*?<\/(?:stream:error|failure)>/.exec(this.buffer);
    const match = this.waiter.pattern.exec(this.buffer);
    if (failure && (!match || failure.index < match.index)) {
      const w = this.waiter;
      this.waiter = undefined;
      w.reject(new XmppError(failure[0].slice(0, 300)));
      return;
    }
    if (!match) return;
    const w = this.waiter;
    this.waiter = undefined;
    this.buffer = this.buffer.slice(match.index + match[0].length);
    w.resolve(match);
  }

  expect(pattern: RegExp, timeoutMs = 30_000): Promise<RegExpExecArray> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { this.waiter = undefined; reject(new XmppError(`timeout waiting for ${pattern}`)); }, timeoutMs);
      this.waiter = {
        pattern,
        resolve: (m) => { clearTimeout(timer); resolve(m); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      };
      this.check();
    });
  }

  send(text: string): void {
    if (this.closed) return;
    if (this.ws) this.ws.send(text);
    else this.socket.write(text);
  }

  private header(): string {
    if (this.ws) return `<open xmlns='${FRAMING}' to='${this.endpoint.domain}' version='1.0'/>`;
    return `<?xml version='1.0'?><stream:stream to='${this.endpoint.domain}' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>`;
  }

  private attach(socket: Socket | TLSSocket): void {
    this.socket = socket;
    socket.setNoDelay(true);
    socket.setEncoding("utf8"); // a decoder that keeps characters split across chunks whole
    socket.on("data", this.onData);
    socket.on("error", (e) => this.fail(e));
    socket.on("close", () => { this.closed = true; this.fail(new XmppError("connection closed")); });
  }

  private fail(e: Error): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.reject(e);
  }

  /** TCP + TLS (direct, or STARTTLS after the first features) + the stream header; resolves on features. */
  async open(): Promise<string> {
    if (this.endpoint.transport === "websocket") {
      await this.connectWebSocket();
    } else if (this.endpoint.tls === "direct") {
      await this.connectTls(["xmpp-client"]);
    } else {
      const plain = tcpConnect({ host: this.endpoint.host, port: this.endpoint.port });
      this.attach(plain);
      await once(plain, "connect");
      this.send(this.header());
      await this.expect(/<\/stream:features>/);
      this.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
      await this.expect(/<proceed[^>]*\/>/);
      plain.removeListener("data", this.onData);
      const secure = tlsConnect({ socket: plain, ...tlsOptionsFor(this.endpoint) });
      await once(secure, "secureConnect");
      this.attach(secure);
      this.buffer = "";
    }
    this.send(this.header());
    return (await this.expect(/<stream:features[\s\S]*?<\/stream:features>/))[0];
  }

  /** XEP-0077: creates the account; an existing one (`<conflict/>`) is fine, it is reused. */
  async register(user: string, password: string): Promise<"created" | "existed"> {
    await this.open();
    this.send(`<iq type='set' id='reg1'><query xmlns='jabber:iq:register'><username>${user}</username><password>${password}</password></query></iq>`);
    const reply = await this.expect(/<iq[^>]*(?:id=['"]reg1['"])[^>]*?(?:\/>|>[\s\S]*?<\/iq>)/);
    if (/type=['"]result/.test(reply[0])) return "created";
    if (/<conflict/.test(reply[0])) return "existed";
    throw new XmppError(`registration of ${user} refused: ${reply[0].slice(0, 300)}`);
  }

  async authenticate(user: string, password: string): Promise<void> {
    if (this.endpoint.sasl === "plain") {
      this.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${Buffer.from(`\0${user}\0${password}`).toString("base64")}</auth>`);
      await this.expect(/<success[^>]*(?:\/>|>[^<]*<\/success>)/);
      return;
    }
    // RFC 5802 SCRAM-SHA-1, no channel binding; the salted password is cached per salt, as clients do.
    const clientFirstBare = `n=${user},r=${randomBytes(18).toString("base64")}`;
    this.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>${Buffer.from(`n,,${clientFirstBare}`).toString("base64")}</auth>`);
    const challenge = await this.expect(/<challenge[^>]*>([^<]*)<\/challenge>/);
    const serverFirst = Buffer.from(challenge[1]!, "base64").toString();
    const attrs = Object.fromEntries(serverFirst.split(",").map((p) => [p[0], p.slice(2)]));
    const key = `${password}\0${attrs.s}\0${attrs.i}`;
    let salted = saltedPasswords.get(key);
    if (!salted) {
      salted = new Promise<Buffer>((resolve, reject) =>
        pbkdf2(password, Buffer.from(attrs.s!, "base64"), Number(attrs.i), 20, "sha1", (e, k) => (e ? reject(e) : resolve(k))));
      if (saltedPasswords.size > 100_000) saltedPasswords.clear();
      saltedPasswords.set(key, salted);
    }
    const saltedPassword = await salted;
    const withoutProof = `c=biws,r=${attrs.r}`;
    const authMessage = `${clientFirstBare},${serverFirst},${withoutProof}`;
    const clientKey = createHmac("sha1", saltedPassword).update("Client Key").digest();
    const signature = createHmac("sha1", createHash("sha1").update(clientKey).digest()).update(authMessage).digest();
    const proof = Buffer.from(clientKey.map((b, i) => b ^ signature[i]!)).toString("base64");
    this.send(`<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>${Buffer.from(`${withoutProof},p=${proof}`).toString("base64")}</response>`);
    const success = await this.expect(/<success[^>]*(?:\/>|>([^<]*)<\/success>)/);
    const serverSignature = createHmac("sha1", createHmac("sha1", saltedPassword).update("Server Key").digest()).update(authMessage).digest("base64");
    const verifier = Buffer.from(success[1] ?? "", "base64").toString();
    if (verifier !== `v=${serverSignature}`) throw new XmppError(`server signature mismatch (${verifier})`);
  }

  /**
   * What a mobile client does on every login (RFC 6120 §6–7, RFC 6121 §2.2 and §4.2): authenticate,
   * restart the stream, bind, fetch the roster and send initial presence. Resolves when the roster
   * has arrived.
   */
  async login(user: string, password: string, options: LoginOptions = {}): Promise<void> {
    await this.open();
    await this.authenticate(user, password);
    this.send(this.header());
    await this.expect(/<stream:features[\s\S]*?<\/stream:features>/);
    this.send(`<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>${options.resource ?? "load"}</resource></bind></iq>`);
    this.jid = (await this.expect(/<jid>([^<]+)<\/jid>/))[1]!;
    const presence = options.presence !== false;
    if (presence) {
      this.send("<iq type='get' id='roster1'><query xmlns='jabber:iq:roster'/></iq>");
      await this.expect(/<iq[^>]*id=['"]roster1['"]/);
    }
    // Scanning starts before presence: servers flush offline messages right after initial presence.
    if (options.traffic) this.startTraffic();
    if (options.streamManagement) {
      this.send("<enable xmlns='urn:xmpp:sm:3'/>");
      this.smEnabled = true;
      if (!options.traffic) await this.expect(/<enabled[^>]*>/);
    }
    if (presence) this.send("<presence/>");
  }

  /** Raw TLS and nothing else: the S0 baseline speaks to a relay, not to an XMPP server. */
  async openRaw(): Promise<void> {
    await this.connectTls();
    this.startTraffic();
  }

  /** RFC 7395: wss with the 'xmpp' subprotocol; each message's text goes to the same matcher/scanner as TCP's. */
  private async connectWebSocket(): Promise<void> {
    const { host, port, domain, ca } = this.endpoint;
    // ws hands these to tls.connect: SNI and verification for the domain, as the TCP connections do.
    const options = { servername: domain, ca, rejectUnauthorized: ca !== undefined, perMessageDeflate: false } as ClientOptions;
    const ws = new WebSocket(`wss://${host}:${port}/xmpp-websocket`, ["xmpp"], options);
    this.ws = ws;
    ws.on("message", (data) => this.onData(data.toString()));
    ws.on("error", (e) => this.fail(e));
    ws.on("close", () => { this.closed = true; this.fail(new XmppError("connection closed")); });
    await once(ws, "open");
    (ws as unknown as { _socket: Socket })._socket.setNoDelay(true);
  }

  private async connectTls(ALPNProtocols?: string[]): Promise<void> {
    const socket = tlsConnect({ host: this.endpoint.host, port: this.endpoint.port, ...tlsOptionsFor(this.endpoint), ALPNProtocols });
    this.attach(socket);
    await once(socket, "secureConnect");
  }

  /** From now on incoming text is scanned, not buffered: markers, acks, pings. */
  startTraffic(): void {
    this.traffic = true;
    const rest = this.buffer;
    this.buffer = "";
    if (rest) this.scan(rest);
  }

  private scan(chunk: string): void {
    const text = this.tail + chunk;
    let at = 0;
    let cut = -1;
    while ((at = text.indexOf(MARK, at)) !== -1) {
      const end = text.indexOf(MARK_END, at);
      if (end === -1) { cut = at; break; }
      this.onMark(Number(text.slice(at + MARK.length, end)));
      at = end + MARK_END.length;
    }
    if (cut === -1) cut = incompleteFrom(text);
    // An IQ is answered only once it is whole: its payload says whether it is a ping.
    const lastIq = text.lastIndexOf("<iq", cut);
    if (lastIq !== -1 && !/^<iq\b[^>]*?(?:\/>|>[\s\S]*?<\/iq>)/.test(text.slice(lastIq, cut))) cut = lastIq;
    // Only whole tags are looked at; the rest waits for the next chunk, so nothing is seen twice.
    const complete = text.slice(0, cut);
    if (complete.includes("<iq")) this.answerIqs(complete);
    if (this.smEnabled) this.streamManagement(complete);
    this.tail = text.slice(cut);
  }

  private answerIqs(text: string): void {
    for (const m of text.matchAll(/<iq\b([^>]*?)(?:\/>|>([\s\S]*?)<\/iq>)/g)) {
      const attrs = m[1]!;
      if (!/type=['"](?:get|set)['"]/.test(attrs)) continue;
      const id = /\bid=['"]([^'"]*)['"]/.exec(attrs)?.[1] ?? "";
      const from = /\bfrom=['"]([^'"]*)['"]/.exec(attrs)?.[1];
      const to = from ? ` to='${from}'` : "";
      this.send((m[2] ?? "").includes("urn:xmpp:ping")
        ? `<iq type='result' id='${id}'${to}/>`
        : `<iq type='error' id='${id}'${to}><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>`);
    }
  }

  private streamManagement(text: string): void {
    for (const m of text.matchAll(/<a [^>]*h=['"](\d+)['"]/g)) this.onAck(Number(m[1]));
    // Every top-level stanza start; the generator enables nothing (carbons, MAM) that nests them.
    this.inbound += (text.match(/<(?:message|presence|iq)[\s>]/g)?.length ?? 0);
    if (/<r[\s/]/.test(text)) this.send(`<a xmlns='urn:xmpp:sm:3' h='${this.inbound}'/>`);
  }

  requestAck(): void {
    this.send("<r xmlns='urn:xmpp:sm:3'/>");
  }

  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    const ws = this.ws;
    if (ws) {
      return new Promise((resolve) => {
        const timer = setTimeout(() => { ws.terminate(); resolve(); }, 2000);
        ws.once("close", () => { clearTimeout(timer); resolve(); });
        ws.send(`<close xmlns='${FRAMING}'/>`);
        ws.close(1000);
      });
    }
    return new Promise((resolve) => {
      const timer = setTimeout(() => { this.socket.destroy(); resolve(); }, 2000);
      this.socket.once("close", () => { clearTimeout(timer); resolve(); });
      this.socket.end("</stream:stream>");
    });
  }

  destroy(): void {
    this.closed = true;
    this.ws?.terminate();
    this.socket?.destroy();
  }
}

/** Where the unfinished end of `text` starts: a tag without its `>`, or the start of a marker. */
function incompleteFrom(text: string): number {
  const lt = text.lastIndexOf("<");
  let cut = lt !== -1 && text.indexOf(">", lt) === -1 ? lt : text.length;
  for (let k = Math.min(MARK.length - 1, text.length); k > 0; k--) {
    if (text.endsWith(MARK.slice(0, k))) { cut = Math.min(cut, text.length - k); break; }
  }
  return cut;
}


/** Runs `task` over `items` with at most `concurrency` in flight; collects failures instead of throwing. */
export async function pool<T, R>(items: readonly T[], concurrency: number, task: (item: T, index: number) => Promise<R>): Promise<{ results: (R | undefined)[]; errors: Error[] }> {
  const results: (R | undefined)[] = new Array(items.length);
  const errors: Error[] = [];
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      try { results[i] = await task(items[i]!, i); } catch (e) { errors.push(e as Error); }
    }
  }));
  return { results, errors };
}
