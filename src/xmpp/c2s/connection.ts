/**
 * One client-to-server connection (RFC 6120 §4–§7): a state machine that negotiates STARTTLS,
 * SASL and resource binding, then hands stanzas to the router. It does negotiation, not policy.
 *
 *   connected ──header──▶ (plain: pre-tls ──starttls──▶) pre-auth ──sasl──▶ authenticated ──bind──▶ bound
 */
import { randomBytes } from "node:crypto";
import { TLSSocket, type SecureContext } from "node:tls";
import type { Socket } from "node:net";
import { StreamParser, type ParserLimits, type StreamHeader } from "../parser.js";
import { Element, el, escapeXML, firstChildElement } from "../xml.js";
import { NS } from "../ns.js";
import { Jid, prepResource } from "../jid.js";
import { StanzaError, StreamError, errorReply } from "../../errors.js";
import { createMechanism, MECHANISMS, type ChannelBindingType, type MechanismName, type SaslMechanism } from "../../auth/sasl.js";
import { serverEndPoint, TLS_MIN_VERSION, type HostTls } from "../tls.js";
import type { Session, SessionTable } from "../sessions.js";
import type { Router } from "../router.js";
import type { HookBus } from "../../hooks.js";
import type { Logger } from "../../log.js";
import type { Storage } from "../../storage/index.js";
import type { AuthThrottle } from "./throttle.js";
import type { StreamFeatureProvider } from "../../module.js";
import { AckError, NS_SM, StreamManagement, parseH, type SmLimits, type Unacked } from "./sm.js";
import { NS as XNS } from "../ns.js";

export interface C2SLimits {
  preAuth: ParserLimits;
  postAuth: ParserLimits;
  /** Wall-clock time from accept to a bound resource; traffic does not extend it. */
  negotiationTimeoutMs: number;
  /** Silence after which the server pings a bound client. */
  idleMs: number;
  /** Time a ping may go unanswered before the connection counts as dead. */
  pingTimeoutMs: number;
  maxResourcesPerUser: number;
  maxAuthFailuresPerStream: number;
  maxSendBufferBytes: number;
}

export type UnauthenticatedIqHandler = (iq: Element, conn: { host: string; remoteAddress: string }) => Promise<Element | undefined>;
/** A top-level element other than a stanza (a "nonza", e.g. XEP-0352 <active/>) from a bound session. */
export type NonzaHandler = (element: Element, session: Session) => void;

export interface C2SDeps {
  hosts: readonly string[];
  tls: Map<string, HostTls>;
  defaultTls: SecureContext;
  /** PEM of the default host, for the direct-TLS server (tls.createServer takes no ready context). */
  defaultCert: { cert: string; key: string };
  sniCallback: (servername: string, cb: (err: Error | null, ctx?: SecureContext) => void) => void;
  limits: C2SLimits;
  hooks: HookBus;
  router: Router;
  sessions: SessionTable;
  storage: Storage;
  log: Logger;
  throttle: AuthThrottle;
  saslSecret: Buffer;
  scramIterations: number;
  features: { preAuth: StreamFeatureProvider[]; postAuth: StreamFeatureProvider[] };
  unauthenticatedIq: Map<string, UnauthenticatedIqHandler>;
  /** Nonza handlers by namespace. */
  nonzas: Map<string, NonzaHandler>;
  /** Connections still open (and hibernated sessions), so shutdown can reach every one of them. */
  connections: Set<C2SConnection>;
  sm: SmLimits;
  /** Resumable sessions by stream-management id (XEP-0198 §5). */
  resumable: Map<string, C2SConnection>;
  /** Re-routing of unacknowledged stanzas still in progress; shutdown waits for it. */
  pendingWork: Set<Promise<unknown>>;
}

type Phase = "pre-tls" | "pre-auth" | "authenticated" | "bound" | "closed";

const STREAM_CLOSE = "</stream:stream>";
/** Failures of any kind on one stream before it is closed. */
const MAX_SASL_FAILURES = 10;

export class C2SConnection implements Session {
  readonly id = randomBytes(12).toString("base64url");
  readonly remoteAddress: string;
  readonly directedPresence = new Set<string>();
  presence: Element | undefined;
  priority = 0;
  interested = false;

  private socket: Socket;
  private secure: boolean;
  private phase: Phase;
  private parser: StreamParser;
  private headerSent = false;
  private host: string | undefined;
  private lang = "en";
  private user: string | undefined;
  private boundJid: Jid | undefined;
  private sasl: SaslMechanism | undefined;
  private authFailures = 0;
  private saslFailures = 0;
  private corked = false;
  private negotiationTimer: NodeJS.Timeout | undefined;
  private idleTimer: NodeJS.Timeout | undefined;
  private lastInbound = Date.now();
  private pinging = false;
  private sm: StreamManagement | undefined;
  /** The socket is gone but the session waits to be resumed (XEP-0198 §5). */
  private asleep = false;
  /** Session.hibernating. */
  get hibernating(): boolean {
    return this.asleep;
  }
  private resumeTimer: NodeJS.Timeout | undefined;
  private ackRequestTimer: NodeJS.Timeout | undefined;
  /** The end of the chain of this client's stanzas still being routed (see onBoundStanza). */
  private routingTail: Promise<void> | undefined;
  /** The client sent </stream:stream>. */
  private peerClosedStream = false;

  constructor(socket: Socket, directTls: boolean, private readonly deps: C2SDeps) {
    this.socket = socket;
    this.secure = directTls;
    this.phase = directTls ? "pre-auth" : "pre-tls";
    this.remoteAddress = normalizeAddress(socket.remoteAddress);
    this.parser = this.newParser(deps.limits.preAuth);
    deps.connections.add(this);
    this.attach(socket);
    this.negotiationTimer = setTimeout(() => {
      if (this.phase !== "bound") this.streamError(new StreamError("connection-timeout", "Negotiation took too long"));
    }, deps.limits.negotiationTimeoutMs);
    this.negotiationTimer.unref();
  }

  get jid(): Jid {
    if (!this.boundJid) throw new Error("session not bound");
    return this.boundJid;
  }

  get isBound(): boolean {
    return this.phase === "bound";
  }

  // ── socket plumbing ────────────────────────────────────────────────────────────────────────

  private attach(socket: Socket): void {
    socket.on("data", this.onData);
    socket.on("end", this.onEnd);
    socket.on("error", this.onSocketError);
    socket.on("close", this.onClose);
  }

  private detach(socket: Socket): void {
    socket.off("data", this.onData);
    socket.off("end", this.onEnd);
    socket.off("error", this.onSocketError);
    socket.off("close", this.onClose);
  }

  private readonly onData = (chunk: Buffer): void => {
    this.lastInbound = Date.now();
    this.parser.write(chunk);
  };

  private readonly onEnd = (): void => {
    this.parser.end();
    this.terminate("peer closed the connection");
  };

  private readonly onSocketError = (err: Error): void => {
    this.deps.log.debug({ stage: "c2s", err: err.message, conn: this.id }, "socket error");
  };

  private readonly onClose = (): void => {
    this.terminate("socket closed");
  };

  private write(data: string): void {
    if (this.phase === "closed" || this.socket.destroyed) return;
    // Batch every write of one event-loop tick into as few TLS records as possible.
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(() => {
        this.corked = false;
        this.socket.uncork();
      });
    }
    this.socket.write(data);
    if (this.socket.writableLength > this.deps.limits.maxSendBufferBytes) {
      // CVE-2008-1728 class: a client that never reads must not grow our memory without bound.
      this.streamError(new StreamError("resource-constraint", "Send buffer full: the client is not reading"));
    }
  }

  /** Session.send: a stanza for this client. With stream management it stays queued until acknowledged. */
  send(stanza: Element, confirm?: (acknowledged: boolean) => void): void {
    if (this.sm && this.phase === "bound") {
      const waiting = this.sm.sentOutbound(stanza, confirm);
      if (waiting > this.deps.sm.maxUnacked) {
        // HARDENING §2.2: a full queue ends the stream; its contents are re-routed (P3).
        return this.streamError(new StreamError("resource-constraint", "Too many unacknowledged stanzas"));
      }
      if (this.asleep) return;
      this.write(stanza.toString());
      this.scheduleAckRequest(waiting);
      return;
    }
    this.write(stanza.toString());
  }

  get confirmsDelivery(): boolean {
    return this.sm !== undefined && this.phase === "bound";
  }

  sendConfirmed(stanza: Element): Promise<boolean> | undefined {
    if (!this.sm || this.phase !== "bound") {
      this.send(stanza);
      return undefined;
    }
    return new Promise((resolve) => this.send(stanza, resolve));
  }

  /** Ask for acks in batches: at once every 10 stanzas, else shortly after the last one. */
  private scheduleAckRequest(waiting: number): void {
    if (waiting % 10 === 0) {
      this.write(`<r xmlns='${NS_SM}'/>`);
      return;
    }
    if (this.ackRequestTimer) return;
    this.ackRequestTimer = setTimeout(() => {
      this.ackRequestTimer = undefined;
      if (this.sm && this.sm.unacked.length > 0 && !this.asleep && this.phase === "bound") this.write(`<r xmlns='${NS_SM}'/>`);
    }, 250);
    this.ackRequestTimer.unref();
  }

  // ── parser events ──────────────────────────────────────────────────────────────────────────

  private newParser(limits: ParserLimits): StreamParser {
    return new StreamParser(limits, this.sink());
  }

  private sink() {
    return {
      streamStart: (header: StreamHeader) => this.onStreamStart(header),
      element: (element: Element) => this.onElement(element),
      streamEnd: () => { this.peerClosedStream = true; this.close(); },
      error: (error: StreamError) => this.streamError(error),
    };
  }

  private onStreamStart(header: StreamHeader): void {
    if (header.uri !== NS.STREAMS) return this.streamError(new StreamError("invalid-namespace", "Not the streams namespace"));
    if (header.name !== "stream") return this.streamError(new StreamError("invalid-xml", "Expected <stream:stream>"));
    const to = header.attrs.to?.toLowerCase().replace(/\.$/, "");
    const previousHost = this.host;
    if (to && this.deps.hosts.includes(to) && !previousHost) this.host = to;
    if (header.defaultNs !== NS.CLIENT) return this.streamError(new StreamError("invalid-namespace", "Default namespace must be jabber:client"));
    // RFC 6120 §4.7.5: a missing version means pre-1.0 XMPP, which we do not speak.
    const version = /^(\d+)\.(\d+)$/.exec(header.attrs.version ?? "");
    if (!version || Number(version[1]) !== 1) return this.streamError(new StreamError("unsupported-version", "Only version 1.0 is supported"));
    if (!to) return this.streamError(new StreamError("improper-addressing", "Missing 'to' on the stream header"));
    if (!this.deps.hosts.includes(to)) return this.streamError(new StreamError("host-unknown", "This server does not serve that domain"));
    if (previousHost && previousHost !== to) return this.streamError(new StreamError("not-authorized", "The stream's 'to' changed on restart"));
    if (header.attrs["xml:lang"]) this.lang = header.attrs["xml:lang"];
    this.sendHeader();
    this.write(`<stream:features>${this.features()}</stream:features>`);
  }

  private sendHeader(): void {
    // RFC 6120 §4.7.1: our header carries a fresh stream id and our domain as 'from'.
    const from = this.host ? ` from='${escapeXML(this.host)}'` : "";
    this.write(`<?xml version='1.0'?><stream:stream xmlns='${NS.CLIENT}' xmlns:stream='${NS.STREAMS}' id='${randomBytes(12).toString("base64url")}'${from} version='1.0' xml:lang='${escapeXML(this.lang)}'>`);
    this.headerSent = true;
  }

  private features(): string {
    const info = { secure: this.secure, remoteAddress: this.remoteAddress };
    const extra = (providers: StreamFeatureProvider[]) => providers.map((p) => p(info)?.toString() ?? "").join("");
    switch (this.phase) {
      case "pre-tls":
        return `<starttls xmlns='${NS.TLS}'><required/></starttls>`;
      case "pre-auth": {
        const mechs = this.offeredMechanisms().map((m) => `<mechanism>${m}</mechanism>`).join("");
        const cb = this.channelBindingTypes().map((t) => `<channel-binding type='${t}'/>`).join("");
        return `<mechanisms xmlns='${NS.SASL}'>${mechs}</mechanisms>`
          + (cb ? `<sasl-channel-binding xmlns='${NS.SASL_CB}'>${cb}</sasl-channel-binding>` : "")
          + this.limitsFeature(this.deps.limits.preAuth.maxStanzaBytes) + extra(this.deps.features.preAuth);
      }
      default:
        return `<bind xmlns='${NS.BIND}'/><session xmlns='${NS.SESSION}'><optional/></session><sm xmlns='${NS_SM}'/>`
          + this.limitsFeature(this.deps.limits.postAuth.maxStanzaBytes) + extra(this.deps.features.postAuth);
    }
  }

  /** XEP-0478 stream limits. */
  private limitsFeature(maxBytes: number): string {
    return `<limits xmlns='${NS.STREAM_LIMITS}'><max-bytes>${maxBytes}</max-bytes><idle-seconds>${Math.round(this.deps.limits.idleMs / 1000)}</idle-seconds></limits>`;
  }

  private onElement(element: Element): void {
    const ns = element.attrs.xmlns as string | undefined;
    const name = element.name;
    switch (this.phase) {
      case "pre-tls":
        if (name === "starttls" && ns === NS.TLS) return this.startTls();
        if (name === "auth" && ns === NS.SASL) return this.write(`<failure xmlns='${NS.SASL}'><encryption-required/></failure>`);
        return this.streamError(new StreamError("policy-violation", "Use of STARTTLS required"));
      case "pre-auth":
        if (ns === NS.SASL && (name === "auth" || name === "response" || name === "abort")) return this.guard(this.onSasl(element));
        if (name === "iq" && ns === NS.CLIENT) return this.guard(this.onUnauthenticatedIq(element));
        if (isStanza(name, ns)) return this.streamError(new StreamError("not-authorized", "Authenticate first"));
        return this.streamError(new StreamError("unsupported-stanza-type"));
      case "authenticated":
        if (name === "iq" && ns === NS.CLIENT) return this.guard(this.onPreBindIq(element));
        if (ns === NS_SM && name === "resume") return this.onResume(element);
        // XEP-0198 §3: enabling before a resource is bound is an unexpected request.
        if (ns === NS_SM && name === "enable") return this.smFailed("unexpected-request");
        // ejabberd process_bind: a stanza after auth but before bind gets a stanza error.
        if (isStanza(name, ns)) return this.sendStanzaError(element, new StanzaError("not-authorized", "Bind a resource first"));
        return this.streamError(new StreamError("unsupported-stanza-type"));
      case "bound":
        if (isStanza(name, ns)) return this.onBoundStanza(element);
        if (ns === NS_SM) return this.onSmNonza(element);
        if (ns !== undefined && this.deps.nonzas.has(ns)) return this.deps.nonzas.get(ns)!(element, this);
        return this.streamError(new StreamError("unsupported-stanza-type"));
      case "closed":
        return;
    }
  }

  /** A failure inside negotiation (storage down, a bug) closes this stream, never the process. */
  private guard(work: Promise<void>): void {
    work.catch((err) => {
      this.deps.log.error({ err, stage: "negotiation", conn: this.id }, "negotiation step failed");
      this.streamError(new StreamError("internal-server-error"));
    });
  }

  // ── STARTTLS (RFC 6120 §5) ─────────────────────────────────────────────────────────────────

  private startTls(): void {
    // RFC 6120 §5.4.3.3: whatever the client pipelined after <starttls/> is discarded with the old parser.
    this.parser.stop();
    this.write(`<proceed xmlns='${NS.TLS}'/>`);
    const plain = this.socket;
    this.detach(plain);
    plain.uncork();
    this.corked = false;
    const secure = new TLSSocket(plain, {
      isServer: true,
      secureContext: this.deps.defaultTls,
      SNICallback: this.deps.sniCallback,
      minVersion: TLS_MIN_VERSION,
    } as ConstructorParameters<typeof TLSSocket>[1]);
    this.socket = secure;
    this.attach(secure);
    // Only decrypted application data reaches 'data' on the TLS socket, so the new stream can start
    // now; waiting for 'secure' would lose a header the client sends in the same flight as Finished.
    this.secure = true;
    this.phase = "pre-auth";
    this.headerSent = false;
    this.parser = this.newParser(this.deps.limits.preAuth);
  }

  private tlsVersion(): string | undefined {
    return this.socket instanceof TLSSocket ? this.socket.getProtocol() ?? undefined : undefined;
  }

  private channelBindingTypes(): ChannelBindingType[] {
    if (!(this.socket instanceof TLSSocket)) return [];
    // RFC 9266 §3: tls-exporter is defined for TLS 1.3 (TLS 1.2 only with extended master secret,
    // which we cannot verify from here), so it is offered on TLS 1.3 only.
    return this.tlsVersion() === "TLSv1.3" ? ["tls-exporter", "tls-server-end-point"] : ["tls-server-end-point"];
  }

  private channelBinding(type: ChannelBindingType): Buffer | undefined {
    const socket = this.socket;
    if (!(socket instanceof TLSSocket) || !this.channelBindingTypes().includes(type)) return undefined;
    // RFC 9266 §2: label "EXPORTER-Channel-Binding", no context value, 32 bytes.
    if (type === "tls-exporter") return (socket.exportKeyingMaterial as (length: number, label: string) => Buffer)(32, "EXPORTER-Channel-Binding");
    const servername = (socket as TLSSocket & { servername?: string | false }).servername;
    const tls = (servername && this.deps.tls.get(servername)) || this.deps.tls.get(this.host ?? "") || this.deps.tls.values().next().value;
    return tls ? serverEndPoint(tls.cert) : undefined;
  }

  private offeredMechanisms(): MechanismName[] {
    const plus = this.channelBindingTypes().length > 0;
    return MECHANISMS.filter((m) => plus || !m.endsWith("-PLUS"));
  }

  // ── SASL (RFC 6120 §6) ─────────────────────────────────────────────────────────────────────

  private saslBusy = false;

  private async onSasl(element: Element): Promise<void> {
    if (this.saslBusy) return this.streamError(new StreamError("policy-violation", "SASL messages must wait for the server's answer"));
    const failure = (condition: string, text?: string) =>
      this.write(`<failure xmlns='${NS.SASL}'><${condition}/>${text ? `<text>${escapeXML(text)}</text>` : ""}</failure>`);
    if (element.name === "abort") {
      this.sasl = undefined;
      return failure("aborted");
    }
    let mechanism = this.sasl;
    if (element.name === "auth") {
      const name = element.attrs.mechanism as MechanismName;
      if (!this.offeredMechanisms().includes(name)) return failure("invalid-mechanism");
      mechanism = this.sasl = createMechanism(name, {
        domain: this.host!,
        channelBinding: (t) => this.channelBinding(t),
        plusOffered: this.channelBindingTypes().length > 0,
        lookup: (jid) => this.deps.storage.accounts.get(jid),
        secret: this.deps.saslSecret,
        iterations: this.deps.scramIterations,
      });
    } else if (!mechanism) {
      return failure("not-authorized", "Out of order SASL element");
    }
    const text = element.getText().trim();
    let data: Buffer | undefined;
    if (text === "=") data = Buffer.alloc(0);
    else if (text !== "") {
      // RFC 6120 §6.4.2: base64 without whitespace; anything else is incorrect-encoding.
      if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) {
        this.sasl = undefined;
        return failure("incorrect-encoding");
      }
      data = Buffer.from(text, "base64");
    }
    this.saslBusy = true;
    let step;
    try {
      step = await mechanism.step(data);
    } finally {
      this.saslBusy = false;
    }
    if (this.phase !== "pre-auth") return;
    if (step.kind === "challenge") return this.write(`<challenge xmlns='${NS.SASL}'>${step.data.toString("base64") || "="}</challenge>`);
    this.sasl = undefined;
    if (step.kind === "failure") {
      const delay = step.condition === "not-authorized" ? this.deps.throttle.fail(this.remoteAddress, step.username) : 0;
      if (delay) await sleep(delay);
      if (this.phase !== "pre-auth") return;
      failure(step.condition, step.text);
      this.deps.log.info({ stage: "sasl", condition: step.condition, address: this.remoteAddress }, "authentication failed");
      // RFC 6120 §6.4.5: after a reasonable number of retries the server closes the stream.
      // Only wrong credentials count as retries: clients walk down their mechanism list and
      // may fail several times on channel binding first (slixmpp 1.8 tries tls-unique, which
      // TLS 1.3 does not have, then 'y'-flagged SCRAM, which we must refuse), before PLAIN.
      if (step.condition === "not-authorized") this.authFailures++;
      if (this.authFailures >= this.deps.limits.maxAuthFailuresPerStream || ++this.saslFailures >= MAX_SASL_FAILURES) {
        this.streamError(new StreamError("policy-violation", "Too many failed authentication attempts"));
      }
      return;
    }
    this.deps.throttle.succeed(this.remoteAddress, step.username);
    this.user = step.username;
    this.phase = "authenticated";
    // RFC 6120 §6.4.6: after <success/> both sides restart the stream with a fresh parser.
    this.parser.stop();
    this.parser = this.newParser(this.deps.limits.postAuth);
    this.headerSent = false;
    this.write(`<success xmlns='${NS.SASL}'>${step.data ? step.data.toString("base64") : ""}</success>`);
    this.deps.log.info({ stage: "sasl", user: this.user }, "authenticated");
  }

  private async onUnauthenticatedIq(iq: Element): Promise<void> {
    const payload = firstChildElement(iq);
    const handler = payload && this.deps.unauthenticatedIq.get(payload.getNS() ?? "");
    if (!handler) return this.streamError(new StreamError("not-authorized", "Authenticate first"));
    try {
      const result = await handler(iq, { host: this.host!, remoteAddress: this.remoteAddress });
      this.write(el("iq", { type: "result", id: iq.attrs.id }, result).toString());
    } catch (err) {
      this.sendStanzaError(iq, err instanceof StanzaError ? err : new StanzaError("internal-server-error"));
      if (!(err instanceof StanzaError)) this.deps.log.error({ err, stage: "pre-auth-iq" }, "handler failed");
    }
  }

  // ── resource binding (RFC 6120 §7) ─────────────────────────────────────────────────────────

  private async onPreBindIq(iq: Element): Promise<void> {
    const payload = firstChildElement(iq);
    if (iq.attrs.type !== "set" || !payload || payload.name !== "bind" || payload.attrs.xmlns !== NS.BIND) {
      return this.sendStanzaError(iq, new StanzaError("not-authorized", "Bind a resource first"));
    }
    const requested = payload.getChildText("resource");
    let resource: string;
    try {
      resource = requested ? prepResource(requested) : randomBytes(6).toString("base64url");
    } catch {
      // RFC 6120 §7.7.2.1: a resourcepart that violates the OpaqueString profile → bad-request.
      return this.sendStanzaError(iq, new StanzaError("bad-request", "Invalid resource"));
    }
    const [local, domain] = this.user!.split("@") as [string, string];
    const jid = new Jid(local, domain, resource);
    const existing = this.deps.sessions.ofUser(jid.bare);
    if (existing.length >= this.deps.limits.maxResourcesPerUser && !existing.some((s) => s.jid.full === jid.full)) {
      // RFC 6120 §7.6.2.1: "the account has reached a limit on the number of simultaneous connected resources".
      return this.sendStanzaError(iq, new StanzaError("resource-constraint", "Too many resources"));
    }
    this.boundJid = jid;
    this.phase = "bound";
    clearTimeout(this.negotiationTimer);
    const replaced = this.deps.sessions.add(this);
    // Conflict policy (RFC 6120 §7.7.2.2, Prosody kick_old / ejabberd acceptnew): the new session wins.
    if (replaced) replaced.close(new StreamError("conflict", "Replaced by new connection"));
    this.write(el("iq", { type: "result", id: iq.attrs.id }, el("bind", { xmlns: NS.BIND }, el("jid", {}, jid.full))).toString());
    this.scheduleIdleCheck();
    this.deps.log.info({ stage: "bind", jid: jid.full, conn: this.id }, "resource bound");
    await this.deps.hooks.emit("session/bound", { session: this });
  }

  private onBoundStanza(stanza: Element): void {
    const seq = this.sm?.receivedInbound();
    const done = () => { if (seq !== undefined) this.inboundHandled(seq); };
    if (stanza.name === "iq" && stanza.attrs.type === "set") {
      const payload = firstChildElement(stanza);
      // RFC 3921 §3 legacy session establishment: accepted as a no-op for old clients.
      if (payload?.name === "session" && payload.attrs.xmlns === NS.SESSION && !stanza.attrs.to) {
        this.send(el("iq", { type: "result", id: stanza.attrs.id }));
        return done();
      }
      if (payload?.name === "bind" && payload.attrs.xmlns === NS.BIND) {
        this.sendStanzaError(stanza, new StanzaError("unexpected-request", "A resource is already bound"));
        return done();
      }
    }
    const failed = (err: unknown) => this.deps.log.error({ err, stage: "route", tag: stanza.name }, "routing failed");
    const run = (): Promise<void> | undefined => {
      try {
        const r = this.deps.router.fromClient(this, stanza);
        // P1: the stanza counts as handled (for 'h') only once routing finished with it.
        if (r instanceof Promise) return r.catch(failed).finally(done);
        done();
      } catch (err) {
        failed(err);
        done();
      }
      return undefined;
    };
    // A client's stanzas are routed in the order it sent them: while one waits (on storage,
    // say), the next ones queue behind it instead of overtaking it.
    const tail = this.routingTail ? this.routingTail.then(run) : run();
    if (!tail) return;
    this.routingTail = tail;
    void tail.then(() => { if (this.routingTail === tail) this.routingTail = undefined; });
  }

  // ── stream management (XEP-0198) ───────────────────────────────────────────────────────────

  private smFailed(condition: string, h?: number): void {
    this.write(`<failed xmlns='${NS_SM}'${h === undefined ? "" : ` h='${h}'`}><${condition} xmlns='${XNS.STANZA_ERRORS}'/></failed>`);
  }

  private inboundHandled(seq: number): void {
    this.sm?.handledInbound(seq);
  }

  private onSmNonza(element: Element): void {
    const sm = this.sm;
    switch (element.name) {
      case "enable": {
        // XEP-0198 §3: a second enable is an unexpected request.
        if (sm) return this.smFailed("unexpected-request");
        const resume = element.attrs.resume === "true" || element.attrs.resume === "1";
        const asked = Number(element.attrs.max);
        const { resumeTimeoutMs, maxResumeTimeoutMs } = this.deps.sm;
        const timeout = Number.isFinite(asked) && asked > 0 ? Math.min(asked * 1000, maxResumeTimeoutMs) : resumeTimeoutMs;
        this.sm = new StreamManagement(resume, timeout);
        if (resume) this.deps.resumable.set(this.sm.id, this);
        this.write(resume
          ? `<enabled xmlns='${NS_SM}' id='${this.sm.id}' resume='true' max='${Math.round(timeout / 1000)}'/>`
          : `<enabled xmlns='${NS_SM}'/>`);
        return;
      }
      case "r":
        if (!sm) return this.smFailed("unexpected-request");
        // Answered once everything the client sent before this <r/> is in custody — not later
        // stanzas too: under steady traffic that moment might never come.
        if (!this.routingTail) this.write(`<a xmlns='${NS_SM}' h='${sm.inboundH}'/>`);
        else void this.routingTail.then(() => { if (!this.asleep) this.write(`<a xmlns='${NS_SM}' h='${sm.inboundH}'/>`); });
        return;
      case "a": {
        if (!sm) return this.smFailed("unexpected-request");
        const h = parseH(element.attrs.h);
        if (h === undefined) return this.streamError(new StreamError("undefined-condition", "Invalid 'h'"));
        this.applyAck(h);
        return;
      }
      case "resume":
        // XEP-0198 §5 / Prosody: "Cannot resume another session after a resource is bound".
        return this.smFailed("unexpected-request");
      default:
        return this.streamError(new StreamError("unsupported-stanza-type"));
    }
  }

  /** Applies an acknowledgement; false when it acknowledged more than was sent (the stream is then closed). */
  private applyAck(h: number): boolean {
    try {
      this.sm!.ack(h);
      return true;
    } catch (err) {
      if (!(err instanceof AckError)) throw err;
      // XEP-0198 §4: acknowledging more than was sent → undefined-condition + <handled-count-too-high/>.
      this.streamError(new StreamError("undefined-condition", "Client acknowledged more stanzas than sent by server",
        el("handled-count-too-high", { xmlns: NS_SM, h: err.h, "send-count": err.sendCount })));
      return false;
    }
  }

  /** The socket went away under a resumable session: keep the session, queue what arrives. */
  private hibernate(): void {
    this.asleep = true;
    this.parser.stop();
    this.detach(this.socket);
    this.socket.destroy();
    clearTimeout(this.idleTimer);
    clearTimeout(this.ackRequestTimer);
    this.ackRequestTimer = undefined;
    this.deps.log.info({ stage: "sm", jid: this.boundJid?.full, seconds: this.sm!.resumeTimeoutMs / 1000 }, "session hibernated");
    this.resumeTimer = setTimeout(() => {
      this.asleep = false;
      this.terminate("resumption timed out");
    }, this.sm!.resumeTimeoutMs);
    this.resumeTimer.unref();
  }

  /** <resume/> on a new connection (this one, authenticated, unbound). */
  private onResume(element: Element): void {
    const previd = element.attrs.previd as string | undefined;
    const h = parseH(element.attrs.h);
    const old = previd === undefined ? undefined : this.deps.resumable.get(previd);
    if (h === undefined) return this.streamError(new StreamError("undefined-condition", "Invalid 'h'"));
    // XEP-0198 §5: an unknown, expired or foreign session → <failed><item-not-found/></failed>.
    if (!old || old.boundJid?.bare !== this.user || old.phase !== "bound") return this.smFailed("item-not-found");
    old.takeOver(this, h);
  }

  /** Moves the new connection's socket and parser into this (old) session and resends what is unacknowledged. */
  private takeOver(fresh: C2SConnection, h: number): void {
    const sm = this.sm!;
    if (!this.asleep) {
      // The old socket is half-open: the client has already moved on.
      this.detach(this.socket);
      this.parser.stop();
      this.socket.destroy();
    }
    clearTimeout(this.resumeTimer);
    const { socket, parser } = fresh.handOver();
    this.socket = socket;
    this.parser = parser;
    this.corked = false;
    this.headerSent = true;
    this.asleep = false;
    parser.retarget(this.sink());
    this.attach(socket);
    this.lastInbound = Date.now();
    this.write(`<resumed xmlns='${NS_SM}' h='${sm.inboundH}' previd='${sm.id}'/>`);
    if (!this.applyAck(h)) return;
    // XEP-0198 §5: everything not acknowledged is sent again, in order.
    for (const { stanza } of sm.unacked) this.write(stanza.toString());
    if (sm.unacked.length) this.write(`<r xmlns='${NS_SM}'/>`);
    this.scheduleIdleCheck();
    this.deps.log.info({ stage: "sm", jid: this.jid.full, resent: sm.unacked.length }, "session resumed");
  }

  /** Gives up this connection's socket and parser to a resumed session; this object is done. */
  private handOver(): { socket: Socket; parser: StreamParser } {
    this.detach(this.socket);
    this.phase = "closed";
    clearTimeout(this.negotiationTimer);
    clearTimeout(this.idleTimer);
    this.deps.connections.delete(this);
    return { socket: this.socket, parser: this.parser };
  }

  /** P3: messages nobody acknowledged go to another resource or offline storage; IQs get an error; presence is state. */
  private rerouteUnacked(entries: Unacked[]): void {
    if (entries.length === 0) return;
    const { router, log } = this.deps;
    // All routed in this tick, in order, so they reach storage before anything that arrives later.
    const routed = entries.map(({ stanza, at, confirm }) => {
      // Whoever asked for confirmation still holds the stanza (e.g. an offline row) and keeps it.
      if (confirm) return confirm(false);
      try {
        if (stanza.name === "iq") {
          const type = stanza.attrs.type;
          return type === "get" || type === "set" ? router.bounce(stanza, new StanzaError("service-unavailable", "Recipient's session ended")) : undefined;
        }
        if (stanza.name !== "message") return undefined;
        const type = stanza.attrs.type ?? "normal";
        // Carbon copies and archive results are not re-sent (XEP-0280 forbids bouncing carbons; the
        // original is in custody elsewhere, and an archive query can simply be repeated).
        if ((type !== "chat" && type !== "normal") || stanza.getChild("sent", "urn:xmpp:carbons:2") || stanza.getChild("received", "urn:xmpp:carbons:2")
          || stanza.getChild("result", "urn:xmpp:mam:2")) return undefined;
        if (!stanza.getChild("delay", XNS.DELAY)) stanza.cnode(el("delay", { xmlns: XNS.DELAY, from: this.jid.domain, stamp: new Date(at).toISOString() }));
        stanza.attrs.to = this.jid.bare;
        return router.route(stanza);
      } catch (err) {
        log.error({ err, stage: "sm", tag: stanza.name }, "re-routing an unacknowledged stanza failed");
        return undefined;
      }
    });
    const work = Promise.all(routed.map((r) => r?.catch((err) => log.error({ err, stage: "sm" }, "re-routing an unacknowledged stanza failed"))));
    this.deps.pendingWork.add(work);
    void work.finally(() => this.deps.pendingWork.delete(work));
  }

  private sendStanzaError(stanza: Element, error: StanzaError): void {
    if (stanza.attrs.type === "error" || (stanza.name === "iq" && stanza.attrs.type === "result")) return;
    const reply = errorReply(stanza, error);
    delete reply.attrs.to;
    delete reply.attrs.from;
    this.write(reply.toString());
  }

  // ── liveness ───────────────────────────────────────────────────────────────────────────────

  private scheduleIdleCheck(): void {
    const { idleMs, pingTimeoutMs } = this.deps.limits;
    clearTimeout(this.idleTimer);
    const wait = Math.max(1000, this.lastInbound + idleMs - Date.now());
    this.idleTimer = setTimeout(() => {
      if (this.phase !== "bound") return;
      if (Date.now() - this.lastInbound < idleMs || this.pinging) return this.scheduleIdleCheck();
      // XEP-0199 §4.2: the server pings a silent client; no answer in time means a dead connection.
      this.pinging = true;
      const ping = el("iq", { type: "get", from: this.jid.domain, to: this.jid.full }, el("ping", { xmlns: NS.PING }));
      this.deps.router.request(ping, pingTimeoutMs).then(
        () => { this.pinging = false; this.scheduleIdleCheck(); },
        (err) => {
          this.pinging = false;
          if (err instanceof StanzaError && err.condition === "remote-server-timeout") {
            this.streamError(new StreamError("connection-timeout", "No answer to ping"));
          } else this.scheduleIdleCheck(); // an error reply is still a sign of life
        },
      );
    }, wait);
    this.idleTimer.unref();
  }

  // ── closing ────────────────────────────────────────────────────────────────────────────────

  /** Stream error (RFC 6120 §4.9): header first if we had not sent one, the error, the close tag. */
  streamError(error: StreamError): void {
    if (this.phase === "closed") return;
    this.parser.stop();
    if (!this.headerSent) this.sendHeader();
    this.deps.log.info({ stage: "stream", condition: error.condition, conn: this.id, address: this.remoteAddress }, "stream error");
    this.write(error.toElement().toString());
    this.close();
  }

  /** Session.close: with an error, a stream error; otherwise a clean close. */
  close(error?: StreamError): void {
    if (error) return this.streamError(error);
    if (this.phase === "closed") return;
    this.parser.stop();
    if (this.headerSent) this.write(STREAM_CLOSE);
    const socket = this.socket;
    this.terminate("closed by server");
    socket.end();
    // RFC 6120 §4.4: once both sides have sent their closing tag the connection is done; otherwise
    // wait a little for the peer's, then drop the connection.
    if (this.peerClosedStream) socket.once("finish", () => socket.destroy());
    else setTimeout(() => socket.destroy(), 2000).unref();
  }

  private terminate(reason: string): void {
    if (this.phase === "closed") return;
    // A dropped connection of a resumable session hibernates; everything else ends the session.
    const peerVanished = reason === "peer closed the connection" || reason === "socket closed";
    if (peerVanished && this.phase === "bound" && this.sm?.resumable && !this.asleep) return this.hibernate();
    const wasBound = this.phase === "bound";
    this.phase = "closed";
    this.asleep = false;
    this.parser.stop();
    clearTimeout(this.negotiationTimer);
    clearTimeout(this.idleTimer);
    clearTimeout(this.resumeTimer);
    clearTimeout(this.ackRequestTimer);
    this.deps.connections.delete(this);
    if (!this.socket.writableEnded) this.socket.end();
    if (!wasBound) return;
    const removed = this.deps.sessions.remove(this);
    // Tracked so that shutdown waits for it (unavailable broadcast, last activity) before storage closes.
    const closed = this.deps.hooks.emit("session/closed", { session: this, reason: removed ? reason : "replaced" });
    this.deps.pendingWork.add(closed);
    void closed.finally(() => this.deps.pendingWork.delete(closed));
    if (this.sm) {
      this.deps.resumable.delete(this.sm.id);
      this.rerouteUnacked(this.sm.drain());
    }
  }
}

function isStanza(name: string, ns: string | undefined): boolean {
  return ns === NS.CLIENT && (name === "message" || name === "presence" || name === "iq");
}

function normalizeAddress(address: string | undefined): string {
  if (!address) return "unknown";
  return address.startsWith("::ffff:") ? address.slice(7) : address;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
