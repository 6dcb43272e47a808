/**
 * The load generator's XMPP client: raw sockets, no XML library, so one generator core can drive
 * tens of thousands of stanzas per second against any server. It speaks just enough RFC 6120/6121
 * to log in like a mobile client, register in band (XEP-0077) and ask for acks (XEP-0198). Three
 * ways of logging in (`LoginMode`):
 *   classic  STARTTLS or direct TLS, SASL (SCRAM-SHA-1/-256 or PLAIN), restart, bind, roster, presence;
 *   sasl2    direct TLS, XEP-0388 SASL2 with XEP-0386 Bind 2 (stream management enabled inline);
 *   fast     the same with a XEP-0484 FAST token (HT-SHA-256-NONE) from an earlier login, resuming the
 *            device's session inline (XEP-0198) where one waits, else binding a new one.
 * Every write that waits for the server's answer is counted in `roundTrips`.
 *
 * Two modes: while logging in, incoming text is buffered and matched against what is expected next;
 * once `startTraffic()` is called, incoming text is only scanned for message markers, acks and pings
 * (answered, so servers that ping idle clients keep them).
 */
import { once } from "node:events";
import { connect as tcpConnect, type Socket } from "node:net";
import { connect as tlsConnect, createSecureContext, type SecureContext, type TLSSocket } from "node:tls";
import { createHash, createHmac, pbkdf2, randomBytes, randomUUID } from "node:crypto";
import { WebSocket, type ClientOptions } from "ws";

export interface Endpoint {
  host: string;
  port: number;
  domain: string;
  tls: "direct" | "starttls";
  /** CA to verify the server against; without one, certificates are not checked. */
  ca?: Buffer;
  sasl: SaslMechanism;
  /** TCP (RFC 6120) or XMPP over WebSocket (RFC 7395) at wss://host:port/xmpp-websocket. */
  transport?: "tcp" | "websocket";
}

export type SaslMechanism = "scram-sha-1" | "scram-sha-256" | "plain";
export type LoginMode = "classic" | "sasl2" | "fast";
export const LOGIN_MODES: readonly LoginMode[] = ["classic", "sasl2", "fast"];

const FRAMING = "urn:ietf:params:xml:ns:xmpp-framing";
const NS_SASL2 = "urn:xmpp:sasl:2";
const NS_BIND2 = "urn:xmpp:bind:0";
const NS_FAST = "urn:xmpp:fast:0";
const NS_SM = "urn:xmpp:sm:3";
/** The FAST mechanism without channel binding: every server that offers FAST offers it. */
const FAST_MECHANISM = "HT-SHA-256-NONE";

/**
 * What a phone keeps between logins: its XEP-0388 user-agent id, its FAST token with the last
 * count it used (XEP-0484 §4.4), and the session it may resume (XEP-0198 id and the stanzas it
 * has received on it, its `h`).
 */
export interface Device {
  userAgentId: string;
  token?: string;
  count: number;
  session?: { id: string; h: number };
  /** The last TLS session ticket the server gave this device, with LoginOptions.resumeTls. */
  tlsSession?: Buffer;
}

export const newDevice = (): Device => ({ userAgentId: randomUUID(), count: 0 });

/** What of the modern login a server's pre-authentication stream features offer. */
export function modernLoginOffer(features: string): { sasl2: boolean; fast: boolean } {
  return { sasl2: features.includes(NS_SASL2), fast: new RegExp(`<fast xmlns=['"]${NS_FAST}['"]>[\\s\\S]*?${FAST_MECHANISM}`).test(features) };
}

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
  /**
   * SASL2 logins: resume the device's last TLS session (RFC 8446 §2.2, a PSK from the server's
   * ticket) instead of a full handshake, as a phone's TLS stack does when it reconnects.
   */
  resumeTls?: boolean;
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
  /** An incomplete tag at the end of the last chunk, for counting `inbound` across chunks. */
  private inboundTail = "";
  /** Writes that waited for the server's answer (XEP-0198 acks and pings not included). */
  roundTrips = 0;
  /** Called when the server sends a TLS session ticket. */
  private onTicket: () => void = () => {};
  /** Whether the TLS handshake resumed an earlier session (LoginOptions.resumeTls) instead of a full one. */
  tlsResumed = false;
  /** The device a SASL2 login used: its session's `h` is kept up to date when the connection drops. */
  private device: Device | undefined;

  constructor(readonly endpoint: Endpoint) {}

  private readonly onData = (text: string) => {
    if (this.smEnabled) this.countInbound(text);
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

  /** A write that waits for its answer: one round trip. */
  private ask(text: string, answer: RegExp): Promise<RegExpExecArray> {
    this.roundTrips++;
    this.send(text);
    return this.expect(answer);
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
  async open(tlsSessionOf?: Device): Promise<string> {
    if (this.endpoint.transport === "websocket") {
      await this.connectWebSocket();
    } else if (this.endpoint.tls === "direct") {
      await this.connectTls(["xmpp-client"], tlsSessionOf);
    } else {
      const plain = tcpConnect({ host: this.endpoint.host, port: this.endpoint.port });
      this.attach(plain);
      await once(plain, "connect");
      await this.ask(this.header(), /<\/stream:features>/);
      await this.ask("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", /<proceed[^>]*\/>/);
      plain.removeListener("data", this.onData);
      const secure = tlsConnect({ socket: plain, ...tlsOptionsFor(this.endpoint) });
      await once(secure, "secureConnect");
      this.attach(secure);
      this.buffer = "";
    }
    return (await this.ask(this.header(), /<stream:features[\s\S]*?<\/stream:features>/))[0];
  }

  /** XEP-0077: creates the account; an existing one (`<conflict/>`) is fine, it is reused. */
  async register(user: string, password: string): Promise<"created" | "existed"> {
    await this.open();
    const reply = await this.ask(`<iq type='set' id='reg1'><query xmlns='jabber:iq:register'><username>${user}</username><password>${password}</password></query></iq>`, /<iq[^>]*(?:id=['"]reg1['"])[^>]*?(?:\/>|>[\s\S]*?<\/iq>)/);
    if (/type=['"]result/.test(reply[0])) return "created";
    if (/<conflict/.test(reply[0])) return "existed";
    throw new XmppError(`registration of ${user} refused: ${reply[0].slice(0, 300)}`);
  }

  /** RFC 6120 §6: SASL with the endpoint's mechanism. */
  async authenticate(user: string, password: string): Promise<void> {
    const mechanism = this.endpoint.sasl.toUpperCase();
    if (this.endpoint.sasl === "plain") {
      await this.ask(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${plainResponse(user, password)}</auth>`, /<success[^>]*(?:\/>|>[^<]*<\/success>)/);
      return;
    }
    const scram = new Scram(this.endpoint.sasl, user, password);
    const challenge = await this.ask(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='${mechanism}'>${scram.clientFirst()}</auth>`, /<challenge[^>]*>([^<]*)<\/challenge>/);
    const success = await this.ask(`<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>${await scram.clientFinal(challenge[1]!)}</response>`, /<success[^>]*(?:\/>|>([^<]*)<\/success>)/);
    scram.verify(success[1]);
  }

  /**
   * What a mobile client does on every login (RFC 6120 §6–7, RFC 6121 §2.2 and §4.2): authenticate,
   * restart the stream, bind, fetch the roster and send initial presence. Resolves when the roster
   * has arrived.
   */
  async login(user: string, password: string, options: LoginOptions = {}): Promise<void> {
    await this.open();
    await this.authenticate(user, password);
    await this.ask(this.header(), /<stream:features[\s\S]*?<\/stream:features>/);
    const bound = await this.ask(`<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>${options.resource ?? "load"}</resource></bind></iq>`, /<jid>([^<]+)<\/jid>/);
    this.jid = bound[1]!;
    const presence = options.presence !== false;
    if (presence) await this.fetchRoster();
    // Scanning starts before presence: servers flush offline messages right after initial presence.
    if (options.traffic) this.startTraffic();
    if (options.streamManagement) {
      if (options.traffic) {
        this.send(`<enable xmlns='${NS_SM}'/>`);
        this.smEnabled = true;
      } else {
        this.smEnabled = true;
        await this.ask(`<enable xmlns='${NS_SM}'/>`, /<enabled[^>]*>/);
      }
    }
    if (presence) this.send("<presence/>");
  }

  private async fetchRoster(): Promise<void> {
    await this.ask("<iq type='get' id='roster1'><query xmlns='jabber:iq:roster'/></iq>", /<iq[^>]*id=['"]roster1['"]/);
  }

  /**
   * XEP-0388 on direct TLS, one `<authenticate/>` carrying everything: the user-agent, a Bind 2
   * request enabling resumable stream management, and either the password (SCRAM adds one
   * challenge round trip; with `fast`, a FAST token is asked for) or, with `fast` and a token on
   * the device, the token's HT proof and an inline `<resume/>` of the device's session. Then, for a
   * new session, roster and initial presence as in `login`. Resolves with what the server did.
   */
  async loginSasl2(user: string, password: string, device: Device, fast: boolean, options: LoginOptions = {}): Promise<"resumed" | "bound"> {
    const offer = modernLoginOffer(await this.open(options.resumeTls ? device : undefined));
    if (!offer.sasl2) throw new XmppError("the server offers no SASL2 (XEP-0388)");
    if (fast && !offer.fast) throw new XmppError(`the server offers no FAST ${FAST_MECHANISM} (XEP-0484)`);
    this.device = device;
    const agent = `<user-agent id='${device.userAgentId}'><software>parley-load</software><device>load</device></user-agent>`;
    const bind = `<bind xmlns='${NS_BIND2}'><tag>${options.resource ?? "load"}</tag><enable xmlns='${NS_SM}' resume='true'/></bind>`;
    const authenticate = (mechanism: string, initial: string, inline: string) =>
      `<authenticate xmlns='${NS_SASL2}' mechanism='${mechanism}'><initial-response>${initial}</initial-response>${agent}${inline}${bind}</authenticate>`;
    const successPattern = new RegExp(`<success xmlns=['"]${NS_SASL2}['"]>([\\s\\S]*?)</success>`);
    let success: string;
    // What this login asks to resume: another login of the same device may change `device` meanwhile.
    const resuming = device.session;
    if (fast && device.token) {
      const resume = resuming ? `<resume xmlns='${NS_SM}' previd='${resuming.id}' h='${resuming.h}'/>` : "";
      success = (await this.ask(authenticate(FAST_MECHANISM, htInitialResponse(user, device.token), `<fast xmlns='${NS_FAST}' count='${++device.count}'/>${resume}`), successPattern))[1]!;
      const responder = /<additional-data>([^<]*)<\/additional-data>/.exec(success)?.[1];
      if (responder !== htResponder(device.token)) throw new XmppError("the server's FAST responder does not prove it knows the token");
    } else {
      const requestToken = fast ? `<request-token xmlns='${NS_FAST}' mechanism='${FAST_MECHANISM}'/>` : "";
      const mechanism = this.endpoint.sasl.toUpperCase();
      if (this.endpoint.sasl === "plain") {
        success = (await this.ask(authenticate(mechanism, plainResponse(user, password), requestToken), successPattern))[1]!;
      } else {
        const scram = new Scram(this.endpoint.sasl, user, password);
        const challenge = await this.ask(authenticate(mechanism, scram.clientFirst(), requestToken), new RegExp(`<challenge xmlns=['"]${NS_SASL2}['"]>([^<]*)</challenge>`));
        success = (await this.ask(`<response xmlns='${NS_SASL2}'>${await scram.clientFinal(challenge[1]!)}</response>`, successPattern))[1]!;
        scram.verify(/<additional-data>([^<]*)<\/additional-data>/.exec(success)?.[1]);
      }
    }
    const token = /<token [^>]*token=['"]([^'"]+)['"]/.exec(success)?.[1];
    if (token) device.token = token;
    this.jid = /<authorization-identifier>([^<]+)<\/authorization-identifier>/.exec(success)?.[1] ?? "";
    if (resuming && /<resumed\b/.test(success)) {
      device.session = resuming;
      this.countInboundFrom(resuming.h);
      // The stanzas missed while away follow the <success/>; nothing else is needed.
      this.startTraffic();
      return "resumed";
    }
    const enabled = /<enabled [^>]*id=['"]([^'"]+)['"]/.exec(success)?.[1];
    device.session = enabled ? { id: enabled, h: 0 } : undefined;
    if (enabled) this.countInboundFrom(0);
    const presence = options.presence !== false;
    if (presence) await this.fetchRoster();
    if (options.traffic) this.startTraffic();
    if (presence) this.send("<presence/>");
    return "bound";
  }

  /** Logs in the way `mode` says; `classic` uses the endpoint as it is (STARTTLS or direct TLS). */
  loginWith(mode: LoginMode, user: string, password: string, device: Device, options: LoginOptions = {}): Promise<"resumed" | "bound"> {
    if (mode === "classic") return this.login(user, password, options).then(() => "bound");
    return this.loginSasl2(user, password, device, mode === "fast", options);
  }

  /**
   * XEP-0198 `h` counts from here: the stanzas in what is buffered (what followed the element that
   * enabled or resumed the session), then every chunk as it arrives.
   */
  private countInboundFrom(h: number): void {
    this.inbound = h;
    this.inboundTail = "";
    this.smEnabled = true;
    this.countInbound(this.buffer);
  }

  private countInbound(chunk: string): void {
    const text = this.inboundTail + chunk;
    const lt = text.lastIndexOf("<");
    const cut = lt !== -1 && text.indexOf(">", lt) === -1 ? lt : text.length;
    // Every top-level stanza start; the generator enables nothing (carbons, MAM) that nests them.
    this.inbound += text.slice(0, cut).match(/<(?:message|presence|iq)[\s>]/g)?.length ?? 0;
    this.inboundTail = text.slice(cut);
  }

  /**
   * A direct TLS handshake (ALPN xmpp-client) and no stream: S7's TLS-only paths, which split a
   * login's server CPU into TLS and XMPP. Resumes the device's last TLS session when asked; a
   * device without one waits for the server's first ticket (RFC 8446 §4.6.1: it follows the
   * handshake), to have one next time.
   */
  async handshakeOnly(device: Device, resumeTls: boolean): Promise<void> {
    const ticket = device.tlsSession ? undefined : new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 1000);
      this.onTicket = () => { clearTimeout(timer); resolve(); };
    });
    await this.connectTls(["xmpp-client"], device, resumeTls);
    await ticket;
  }

  /** Ends a connection that carries no stream (`handshakeOnly`): TLS close_notify and FIN; resolves once the server has closed too. */
  endTls(): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => { this.socket.destroy(); resolve(); }, 2000);
      this.socket.once("close", () => { clearTimeout(timer); resolve(); });
      this.socket.end();
    });
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

  /** With `tlsSessionOf`, keeps the tickets the server sends there and offers the last one (unless `resume` is false). */
  private async connectTls(ALPNProtocols?: string[], tlsSessionOf?: Device, resume = true): Promise<void> {
    const socket = tlsConnect({ host: this.endpoint.host, port: this.endpoint.port, ...tlsOptionsFor(this.endpoint), ALPNProtocols, session: resume ? tlsSessionOf?.tlsSession : undefined });
    socket.on("session", (ticket: Buffer) => {
      if (tlsSessionOf) tlsSessionOf.tlsSession = ticket;
      this.onTicket();
    });
    this.attach(socket);
    await once(socket, "secureConnect");
    this.tlsResumed = socket.isSessionReused();
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
    if (/<r[\s/]/.test(text)) this.send(`<a xmlns='urn:xmpp:sm:3' h='${this.inbound}'/>`);
  }

  requestAck(): void {
    this.send("<r xmlns='urn:xmpp:sm:3'/>");
  }

  /** A clean `</stream:stream>`: the server ends the session, nothing is left to resume. */
  close(): Promise<void> {
    if (this.device) this.device.session = undefined;
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

  /**
   * The network goes away under a phone: no `</stream:stream>`, so the server keeps a resumable
   * session (XEP-0198 §5) for the device's next login; the device remembers how much it received.
   */
  drop(): void {
    if (this.device?.session) this.device.session.h = this.inbound;
    this.destroy();
  }

  destroy(): void {
    this.closed = true;
    this.ws?.terminate();
    this.socket?.destroy();
  }
}

const plainResponse = (user: string, password: string) => Buffer.from(`\0${user}\0${password}`).toString("base64");

/**
 * The HT-SHA-256 exchange without channel binding (draft-schmaus-kitten-sasl-ht §3), keyed with the
 * token itself: the client sends authcid NUL HMAC(token, "Initiator"), the server proves itself
 * with HMAC(token, "Responder").
 */
const htMac = (token: string, label: string) => createHmac("sha256", token).update(label).digest();
const htInitialResponse = (user: string, token: string) => Buffer.concat([Buffer.from(`${user}\0`), htMac(token, "Initiator")]).toString("base64");
const htResponder = (token: string) => htMac(token, "Responder").toString("base64");

/**
 * RFC 5802 / RFC 7677 SCRAM without channel binding, client side; base64 in and out, as both SASL
 * and SASL2 carry it. The salted password is cached per salt and iteration count, as clients do.
 */
class Scram {
  private readonly hash: "sha1" | "sha256";
  private readonly clientFirstBare: string;
  private saltedPassword: Buffer | undefined;
  private authMessage = "";

  constructor(mechanism: "scram-sha-1" | "scram-sha-256", user: string, private readonly password: string) {
    this.hash = mechanism === "scram-sha-1" ? "sha1" : "sha256";
    this.clientFirstBare = `n=${user},r=${randomBytes(18).toString("base64")}`;
  }

  clientFirst(): string {
    return Buffer.from(`n,,${this.clientFirstBare}`).toString("base64");
  }

  async clientFinal(challenge: string): Promise<string> {
    const serverFirst = Buffer.from(challenge, "base64").toString();
    const attrs = Object.fromEntries(serverFirst.split(",").map((p) => [p[0], p.slice(2)]));
    const key = `${this.hash}\0${this.password}\0${attrs.s}\0${attrs.i}`;
    let salted = saltedPasswords.get(key);
    if (!salted) {
      const length = this.hash === "sha1" ? 20 : 32;
      salted = new Promise<Buffer>((resolve, reject) =>
        pbkdf2(this.password, Buffer.from(attrs.s!, "base64"), Number(attrs.i), length, this.hash, (e, k) => (e ? reject(e) : resolve(k))));
      if (saltedPasswords.size > 100_000) saltedPasswords.clear();
      saltedPasswords.set(key, salted);
    }
    const saltedPassword = (this.saltedPassword = await salted);
    const withoutProof = `c=biws,r=${attrs.r}`;
    this.authMessage = `${this.clientFirstBare},${serverFirst},${withoutProof}`;
    const clientKey = createHmac(this.hash, saltedPassword).update("Client Key").digest();
    const signature = createHmac(this.hash, createHash(this.hash).update(clientKey).digest()).update(this.authMessage).digest();
    const proof = Buffer.from(clientKey.map((b, i) => b ^ signature[i]!)).toString("base64");
    return Buffer.from(`${withoutProof},p=${proof}`).toString("base64");
  }

  /** The server's final message (base64 of `v=…`) must carry its signature. */
  verify(serverFinal: string | undefined): void {
    const serverKey = createHmac(this.hash, this.saltedPassword!).update("Server Key").digest();
    const serverSignature = createHmac(this.hash, serverKey).update(this.authMessage).digest("base64");
    const verifier = Buffer.from(serverFinal ?? "", "base64").toString();
    if (verifier !== `v=${serverSignature}`) throw new XmppError(`server signature mismatch (${verifier})`);
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
