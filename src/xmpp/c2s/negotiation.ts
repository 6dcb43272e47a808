/**
 * Client-to-server stream negotiation (RFC 6120 §4–§7), on any transport: a state machine that
 * runs the steps (STARTTLS, SASL, resource binding or XEP-0198 resumption) and then hands the
 * stream to a session. It negotiates; it decides nothing about stanzas.
 *
 *   header ──▶ (plain TCP: pre-tls ──starttls──▶) pre-auth ──sasl──▶ authenticated ──bind──▶ C2SSession
 *                                                                             └──resume──▶ the hibernated C2SSession
 */
import { el, firstChildElement, type Element } from "../xml.js";
import { NS } from "../ns.js";
import { Jid } from "../jid.js";
import { StanzaError, StreamError, errorReply } from "../../errors.js";
import type { ParserLimits, StreamHeader } from "../parser.js";
import type { SessionTable } from "../sessions.js";
import type { Router } from "../router.js";
import type { HookBus } from "../../hooks.js";
import type { Logger } from "../../log.js";
import type { Storage } from "../../storage/index.js";
import type { Transport } from "../stream/transport.js";
import { XmlStream, checkHeader, type StreamEnding, type StreamOwner } from "../stream/xml-stream.js";
import { offerFeatures, type StreamFeatureContext, type StreamFeatureRegistry } from "../stream/features.js";
import type { AuthThrottle } from "./throttle.js";
import type { NonzaHandler, UnauthenticatedIqHandler } from "./extensions.js";
import { SaslStep } from "./sasl.js";
import { STARTTLS_FEATURE, preTlsAnswer } from "./starttls.js";
import { admitSession, chooseResource } from "./bind.js";
import { NS_SM, parseH, type SmLimits } from "./sm.js";
import { C2SSession, type C2SSessionDeps } from "./session.js";
import type { C2SRegistry } from "./registry.js";

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
  /** Characters held for one client (queued and buffered) before its stream is closed. */
  maxSendBufferBytes: number;
}

export interface C2SDeps {
  hosts: readonly string[];
  limits: C2SLimits;
  hooks: HookBus;
  router: Router;
  sessions: SessionTable;
  storage: Storage;
  log: Logger;
  throttle: AuthThrottle;
  saslSecret: Buffer;
  scramIterations: number;
  /** RFC 5929 tls-server-end-point data for the certificate served to `servername` (or the host's). */
  serverEndPoint(servername: string | undefined, host: string): Buffer | undefined;
  features: StreamFeatureRegistry;
  unauthenticatedIq: ReadonlyMap<string, UnauthenticatedIqHandler>;
  /** Nonza handlers by namespace. */
  nonzas: ReadonlyMap<string, NonzaHandler>;
  sm: SmLimits;
  registry: C2SRegistry;
}

type Phase = "pre-tls" | "pre-auth" | "authenticated" | "done";

export class C2SNegotiation implements StreamOwner {
  private readonly stream: XmlStream;
  private phase: Phase;
  private host: string | undefined;
  private lang = "en";
  private user: string | undefined;
  private sasl: SaslStep | undefined;
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly transport: Transport, private readonly deps: C2SDeps) {
    this.stream = new XmlStream(transport, NS.CLIENT, deps.log, this);
    this.phase = transport.secure || !transport.startTls ? "pre-auth" : "pre-tls";
    deps.registry.open.add(this);
    this.timer = setTimeout(() => this.stream.error(new StreamError("connection-timeout", "Negotiation took too long"), this.host), deps.limits.negotiationTimeoutMs);
    this.timer.unref();
  }

  close(error?: StreamError): void {
    if (error) this.stream.error(error, this.host);
    else this.stream.close();
  }

  // ── the stream ─────────────────────────────────────────────────────────────────────────────

  header(header: StreamHeader): void {
    const to = header.attrs.to?.toLowerCase().replace(/\.$/, "");
    const previousHost = this.host;
    // Known before the checks, so that an error's header already names our domain.
    if (to && this.deps.hosts.includes(to) && !previousHost) this.host = to;
    const invalid = checkHeader(header, { contentNs: NS.CLIENT, requireVersion: true });
    if (invalid) return this.stream.error(invalid, this.host);
    if (!to) return this.stream.error(new StreamError("improper-addressing", "Missing 'to' on the stream header"), this.host);
    if (!this.deps.hosts.includes(to)) return this.stream.error(new StreamError("host-unknown", "This server does not serve that domain"), this.host);
    if (previousHost && previousHost !== to) return this.stream.error(new StreamError("not-authorized", "The stream's 'to' changed on restart"), this.host);
    if (header.attrs["xml:lang"]) this.lang = header.attrs["xml:lang"];
    this.stream.open(this.host, this.lang);
    this.stream.features(this.features());
  }

  element(element: Element): void {
    const ns = element.attrs.xmlns as string | undefined;
    const name = element.name;
    switch (this.phase) {
      case "pre-tls": {
        const answer = preTlsAnswer(element);
        if (answer === "starttls") return this.startTls();
        if (answer === "encryption-required") return this.stream.send(`<failure xmlns='${NS.SASL}'><encryption-required/></failure>`);
        return this.stream.error(new StreamError("policy-violation", "Use of STARTTLS required"));
      }
      case "pre-auth":
        if (ns === NS.SASL && (name === "auth" || name === "response" || name === "abort")) return this.guard(this.onSasl(element));
        if (name === "iq" && ns === NS.CLIENT) return this.guard(this.onUnauthenticatedIq(element));
        if (isStanza(name, ns)) return this.stream.error(new StreamError("not-authorized", "Authenticate first"));
        return this.stream.error(new StreamError("unsupported-stanza-type"));
      case "authenticated":
        if (name === "iq" && ns === NS.CLIENT) return this.guard(this.onPreBindIq(element));
        if (ns === NS_SM && name === "resume") return this.onResume(element);
        // XEP-0198 §3: enabling before a resource is bound is an unexpected request.
        if (ns === NS_SM && name === "enable") return this.stream.send(`<failed xmlns='${NS_SM}'><unexpected-request xmlns='${NS.STANZA_ERRORS}'/></failed>`);
        // ejabberd process_bind: a stanza after auth but before bind gets a stanza error.
        if (isStanza(name, ns)) return this.replyError(element, new StanzaError("not-authorized", "Bind a resource first"));
        return this.stream.error(new StreamError("unsupported-stanza-type"));
      case "done":
        return;
    }
  }

  ended(_ending: StreamEnding): void {
    this.finish();
  }

  drain(): void {}

  private finish(): void {
    this.phase = "done";
    clearTimeout(this.timer);
    this.deps.registry.open.delete(this);
  }

  private features(): string {
    const info: StreamFeatureContext = { secure: this.transport.secure, remoteAddress: this.transport.remoteAddress, transport: this.transport.kind };
    const { limits, features } = this.deps;
    switch (this.phase) {
      case "pre-tls":
        return STARTTLS_FEATURE;
      case "pre-auth":
        return this.saslStep().features() + limitsFeature(limits.preAuth.maxStanzaBytes, limits.idleMs) + offerFeatures(features.preAuth, info);
      default:
        return `<bind xmlns='${NS.BIND}'/><session xmlns='${NS.SESSION}'><optional/></session><sm xmlns='${NS_SM}'/>`
          + limitsFeature(limits.postAuth.maxStanzaBytes, limits.idleMs) + offerFeatures(features.postAuth, info);
    }
  }

  /** A failure inside negotiation (storage down, a bug) closes this stream, never the process. */
  private guard(work: Promise<void>): void {
    work.catch((err) => {
      this.deps.log.error({ err, stage: "negotiation" }, "negotiation step failed");
      this.stream.error(new StreamError("internal-server-error"), this.host);
    });
  }

  private replyError(stanza: Element, error: StanzaError): void {
    if (stanza.attrs.type === "error" || (stanza.name === "iq" && stanza.attrs.type === "result")) return;
    const reply = errorReply(stanza, error);
    delete reply.attrs.to;
    delete reply.attrs.from;
    this.stream.send(reply.toString());
  }

  // ── STARTTLS (RFC 6120 §5) ─────────────────────────────────────────────────────────────────

  private startTls(): void {
    this.stream.send(`<proceed xmlns='${NS.TLS}'/>`);
    this.transport.startTls!();
    this.phase = "pre-auth";
    this.stream.restart(this.deps.limits.preAuth);
  }

  // ── SASL (RFC 6120 §6) ─────────────────────────────────────────────────────────────────────

  private saslStep(): SaslStep {
    const { deps, transport } = this;
    this.sasl ??= new SaslStep({
      host: this.host!,
      remoteAddress: transport.remoteAddress,
      secure: transport.secure,
      tls: transport.tls,
      serverEndPoint: (servername) => deps.serverEndPoint(servername, this.host!),
      lookup: (jid) => deps.storage.accounts.get(jid),
      secret: deps.saslSecret,
      iterations: deps.scramIterations,
      throttle: deps.throttle,
      maxAuthFailures: deps.limits.maxAuthFailuresPerStream,
      log: deps.log,
    }, {
      send: (xml) => this.stream.send(xml),
      streamError: (error) => this.stream.error(error, this.host),
      stillNegotiating: () => this.phase === "pre-auth" && !this.stream.isOver,
    });
    return this.sasl;
  }

  private async onSasl(element: Element): Promise<void> {
    const user = await this.saslStep().handle(element);
    if (user === undefined) return;
    this.user = user;
    this.phase = "authenticated";
    // RFC 6120 §6.4.6: after <success/> both sides restart the stream with a fresh parser.
    this.stream.restart(this.deps.limits.postAuth);
  }

  private async onUnauthenticatedIq(iq: Element): Promise<void> {
    const payload = firstChildElement(iq);
    const handler = payload && this.deps.unauthenticatedIq.get(payload.getNS() ?? "");
    if (!handler) return this.stream.error(new StreamError("not-authorized", "Authenticate first"), this.host);
    try {
      const result = await handler(iq, { host: this.host!, remoteAddress: this.transport.remoteAddress });
      this.stream.send(el("iq", { type: "result", id: iq.attrs.id }, result).toString());
    } catch (err) {
      this.replyError(iq, err instanceof StanzaError ? err : new StanzaError("internal-server-error"));
      if (!(err instanceof StanzaError)) this.deps.log.error({ err, stage: "pre-auth-iq" }, "handler failed");
    }
  }

  // ── resource binding (RFC 6120 §7) ─────────────────────────────────────────────────────────

  private async onPreBindIq(iq: Element): Promise<void> {
    const payload = firstChildElement(iq);
    if (iq.attrs.type !== "set" || !payload || payload.name !== "bind" || payload.attrs.xmlns !== NS.BIND) {
      return this.replyError(iq, new StanzaError("not-authorized", "Bind a resource first"));
    }
    const [local, domain] = this.user!.split("@") as [string, string];
    let jid: Jid;
    let evicted;
    try {
      jid = new Jid(local, domain, chooseResource(payload.getChildText("resource") ?? undefined));
      evicted = admitSession(this.deps.sessions.ofUser(jid.bare), jid.full, this.deps.limits.maxResourcesPerUser);
    } catch (err) {
      if (!(err instanceof StanzaError)) throw err;
      if (err.condition === "resource-constraint") this.deps.log.info({ stage: "bind", user: this.user }, "bind refused: too many resources");
      return this.replyError(iq, err);
    }
    const { sessions, log, hooks } = this.deps;
    for (const old of evicted) {
      log.info({ stage: "bind", jid: old.jid.full }, "hibernated session ended to make room for a new one");
      old.close(new StreamError("conflict", "Replaced by a new session"));
    }
    this.finish();
    const session = new C2SSession(jid, this.stream, this.sessionDeps());
    const replaced = sessions.add(session);
    // Conflict policy (RFC 6120 §7.7.2.2, Prosody kick_old / ejabberd acceptnew): the new session wins.
    if (replaced) replaced.close(new StreamError("conflict", "Replaced by new connection"));
    session.send(el("iq", { type: "result", id: iq.attrs.id }, el("bind", { xmlns: NS.BIND }, el("jid", {}, jid.full))));
    log.info({ stage: "bind", jid: jid.full, transport: this.transport.kind }, "resource bound");
    await hooks.emit("session/bound", { session });
  }

  private sessionDeps(): C2SSessionDeps {
    const { router, hooks, sessions, log, limits, sm, nonzas, registry } = this.deps;
    return { router, hooks, sessions, log, sm, nonzas, registry,
      limits: { idleMs: limits.idleMs, pingTimeoutMs: limits.pingTimeoutMs, maxSendBufferBytes: limits.maxSendBufferBytes } };
  }

  /** XEP-0198 §5: <resume/> instead of binding: this stream joins the session it names. */
  private onResume(element: Element): void {
    const previd = element.attrs.previd as string | undefined;
    const h = parseH(element.attrs.h);
    if (h === undefined) return this.stream.error(new StreamError("undefined-condition", "Invalid 'h'"), this.host);
    const old = previd === undefined ? undefined : this.deps.registry.resumable.get(previd);
    // An unknown, expired or foreign session → <failed><item-not-found/></failed>.
    if (!old || !old.resumableBy(this.user!)) {
      return this.stream.send(`<failed xmlns='${NS_SM}'><item-not-found xmlns='${NS.STANZA_ERRORS}'/></failed>`);
    }
    this.finish();
    old.resumeOn(this.stream, h);
  }
}

/** XEP-0478 stream limits. */
function limitsFeature(maxBytes: number, idleMs: number): string {
  return `<limits xmlns='${NS.STREAM_LIMITS}'><max-bytes>${maxBytes}</max-bytes><idle-seconds>${Math.round(idleMs / 1000)}</idle-seconds></limits>`;
}

function isStanza(name: string, ns: string | undefined): boolean {
  return ns === NS.CLIENT && (name === "message" || name === "presence" || name === "iq");
}
