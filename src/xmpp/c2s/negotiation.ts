/**
 * Client-to-server stream negotiation (RFC 6120 §4–§7), on any transport: a state machine that
 * runs the steps (STARTTLS, SASL, resource binding or XEP-0198 resumption) and then hands the
 * stream to a session. It negotiates; it decides nothing about stanzas.
 *
 *   header ──▶ (plain TCP: pre-tls ──starttls──▶) pre-auth ──sasl──▶ authenticated ──bind──▶ C2SSession
 *                                                                             └──resume──▶ the hibernated C2SSession
 */
import { el, escapeXML, firstChildElement, type Element } from "../xml.js";
import { NS } from "../ns.js";
import { Jid, parseJid, prepLocal } from "../jid.js";
import { StanzaError, StreamError, errorReply } from "../../errors.js";
import type { ParserLimits, StreamHeader } from "../parser.js";
import type { SessionTable } from "../sessions.js";
import type { Router } from "../router.js";
import type { HookBus } from "../../hooks.js";
import type { Logger } from "../../log.js";
import type { Device, Storage } from "../../storage/index.js";
import type { Transport } from "../stream/transport.js";
import { XmlStream, checkHeader, type StreamEnding, type StreamOwner } from "../stream/xml-stream.js";
import { offerFeatures, type StreamFeatureContext, type StreamFeatureRegistry } from "../stream/features.js";
import type { AuthThrottle } from "./throttle.js";
import type { BindFeatureHandler, NonzaHandler, UnauthenticatedIqHandler } from "./extensions.js";
import { SaslStep, decodeSaslData, type SaslOutcome } from "./sasl.js";
import {
  NS_BIND2, NS_SASL2, authenticationFeature, bind2Resource, challenge as sasl2Challenge, failure as sasl2Failure, fastToken,
  parseAuthenticate, success as sasl2Success, continueWith, scramUpgradeSalt, type Sasl2Offer, type Sasl2Request,
} from "./sasl2.js";
import { NS_SCRAM_UPGRADE, UPGRADE_TASKS, neededUpgrades, upgradeChallenge, upgradedCredential, type UpgradeChallenge } from "../../auth/upgrade.js";
import { HT_MECHANISMS, htChannelBinding, isHtMechanism, parseHtInitial, type HtMechanism } from "../../auth/ht.js";
import type { FastTokens } from "../../auth/fast.js";
import { STARTTLS_FEATURE, preTlsAnswer } from "./starttls.js";
import { admitSession, chooseResource } from "./bind.js";
import { NS_SM, parseH, type SmLimits } from "./sm.js";
import { C2SSession, type C2SSessionDeps } from "./session.js";
import type { C2SRegistry } from "./registry.js";
import type { ResumptionElsewhere, SessionState } from "./handover.js";

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
  features: StreamFeatureRegistry;
  unauthenticatedIq: ReadonlyMap<string, UnauthenticatedIqHandler>;
  /** Nonza handlers by namespace. */
  nonzas: ReadonlyMap<string, NonzaHandler>;
  /** XEP-0386 inline features by namespace. */
  bindFeatures: ReadonlyMap<string, BindFeatureHandler>;
  /** XEP-0484 tokens and the devices they belong to. */
  fast: FastTokens;
  sm: SmLimits;
  registry: C2SRegistry;
  /** On a cluster: resumption of a session hibernated on another node (docs/CLUSTER.md). */
  resumption?: ResumptionElsewhere;
}

type Phase = "pre-tls" | "pre-auth" | "authenticated" | "done";

export class C2SNegotiation implements StreamOwner {
  private readonly stream: XmlStream;
  private phase: Phase;
  private host: string | undefined;
  private lang = "en";
  private user: string | undefined;
  private sasl: SaslStep | undefined;
  /** A XEP-0480 upgrade after a successful exchange: the tasks left (the first is under way). */
  private upgrade: { user: string; tasks: string[]; challenge: UpgradeChallenge | undefined } | undefined;
  /** The XEP-0388 request of the exchange under way. */
  private sasl2: Sasl2Request | undefined;
  /** A FAST login's device row (already noted as seen) and whether its token is due for rotation. */
  private fastLogin: { device: Device; rotate: boolean } | undefined;
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
        if (answer === "encryption-required") {
          return this.stream.send(ns === NS_SASL2 ? sasl2Failure("encryption-required") : `<failure xmlns='${NS.SASL}'><encryption-required/></failure>`);
        }
        return this.stream.error(new StreamError("policy-violation", "Use of STARTTLS required"));
      }
      case "pre-auth":
        if (ns === NS.SASL && (name === "auth" || name === "response" || name === "abort")) return this.guard(this.onSasl(element));
        if (ns === NS_SASL2 && (name === "authenticate" || name === "response" || name === "abort")) return this.guard(this.onSasl2(element));
        if (ns === NS_SASL2 && (name === "next" || name === "task-data")) return this.guard(this.onUpgradeTask(element));
        if (name === "iq" && ns === NS.CLIENT) return this.guard(this.onUnauthenticatedIq(element));
        if (isStanza(name, ns)) return this.stream.error(new StreamError("not-authorized", "Authenticate first"));
        return this.stream.error(new StreamError("unsupported-stanza-type"));
      case "authenticated":
        if (name === "iq" && ns === NS.CLIENT) return this.guard(this.onPreBindIq(element));
        if (ns === NS_SM && name === "resume") return this.guard(this.onResume(element));
        // XEP-0388 §4.6: "once <success/> or <continue/> has been sent by the server, any further
        // <authenticate/> element MUST result in a stream error".
        if (ns === NS_SASL2 || ns === NS.SASL) return this.stream.error(new StreamError("policy-violation", "Already authenticated"), this.host);
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
        return this.saslStep().features() + authenticationFeature(this.sasl2Offer())
          + limitsFeature(limits.preAuth.maxStanzaBytes, limits.idleMs) + offerFeatures(features.preAuth, info);
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
      lookup: (jid) => deps.storage.accounts.get(jid),
      storeCredentials: async (jid, credentials) => { await deps.storage.accounts.setCredentials(jid, credentials); },
      secret: deps.saslSecret,
      iterations: deps.scramIterations,
      throttle: deps.throttle,
      maxAuthFailures: deps.limits.maxAuthFailuresPerStream,
      log: deps.log,
    });
    return this.sasl;
  }

  /** Whether the stream still waits for authentication (it may have ended during a storage read). */
  private stillNegotiating(): boolean {
    return this.phase === "pre-auth" && !this.stream.isOver;
  }

  /** RFC 6120 §6.4: <auth/>, <response/>, <abort/> and their answers. */
  private async onSasl(element: Element): Promise<void> {
    const sasl = this.saslStep();
    let outcome: SaslOutcome;
    const data = decodeSaslData(element.getText(), true);
    if (element.name === "abort") outcome = sasl.abort();
    else if (data === "invalid") outcome = sasl.abort("incorrect-encoding");
    else if (element.name === "auth") outcome = await sasl.start(element.attrs.mechanism as string, data, sasl.offeredMechanisms());
    else outcome = await sasl.respond(data);
    if (!this.stillNegotiating()) return;
    switch (outcome.kind) {
      case "challenge":
        return this.stream.send(`<challenge xmlns='${NS.SASL}'>${outcome.data.toString("base64") || "="}</challenge>`);
      case "failure":
        this.stream.send(`<failure xmlns='${NS.SASL}'><${outcome.condition}/>${outcome.text ? `<text>${escapeXML(outcome.text)}</text>` : ""}</failure>`);
        if (outcome.thenClose) this.stream.error(outcome.thenClose, this.host);
        return;
      case "stream-error":
        return this.stream.error(outcome.error, this.host);
      case "success":
        this.stream.send(`<success xmlns='${NS.SASL}'>${outcome.additionalData ? outcome.additionalData.toString("base64") : ""}</success>`);
        this.user = outcome.username;
        this.phase = "authenticated";
        // RFC 6120 §6.4.6: after <success/> both sides restart the stream with a fresh parser.
        this.stream.restart(this.deps.limits.postAuth);
    }
  }

  // ── SASL2 (XEP-0388) with Bind 2, inline resumption and FAST ───────────────────────────────

  private sasl2Offer(): Sasl2Offer {
    const sasl = this.saslStep();
    const cb = sasl.channelBindingTypes();
    const fastMechanisms = HT_MECHANISMS.filter((m) => {
      const needs = htChannelBinding(m);
      return needs === undefined || (cb as string[]).includes(needs);
    });
    return { mechanisms: sasl.offeredMechanisms(), bindFeatures: [NS_SM, ...this.deps.bindFeatures.keys()], fastMechanisms, upgrades: UPGRADE_TASKS };
  }

  private async onSasl2(element: Element): Promise<void> {
    if (this.upgrade) {
      // XEP-0388 §2.6.3: the client may abort while a task runs; nothing else is expected then.
      this.upgrade = undefined;
      return this.stream.send(element.name === "abort" ? sasl2Failure("aborted") : sasl2Failure("malformed-request", "An upgrade task is under way"));
    }
    const sasl = this.saslStep();
    let outcome: SaslOutcome;
    if (element.name === "abort") outcome = sasl.abort();
    else if (element.name === "response") {
      const data = decodeSaslData(element.getText(), false);
      outcome = data === "invalid" ? sasl.abort("incorrect-encoding") : await sasl.respond(data);
    } else {
      const parsed = parseAuthenticate(element);
      if (!parsed.ok) outcome = { kind: "failure", condition: parsed.condition, text: parsed.text };
      else {
        this.sasl2 = parsed.request;
        const { mechanism } = parsed.request;
        outcome = isHtMechanism(mechanism)
          ? await sasl.settle(this.fastAuthenticate(parsed.request, mechanism), mechanism)
          : await sasl.start(mechanism, parsed.request.initialResponse, sasl.offeredMechanisms());
      }
    }
    if (!this.stillNegotiating()) return;
    switch (outcome.kind) {
      case "challenge":
        return this.stream.send(sasl2Challenge(outcome.data));
      case "failure":
        this.stream.send(sasl2Failure(outcome.condition, outcome.text));
        if (outcome.thenClose) this.stream.error(outcome.thenClose, this.host);
        return;
      case "stream-error":
        return this.stream.error(outcome.error, this.host);
      case "success": {
        // Only a client that offers tasks costs the account lookup.
        const account = this.sasl2!.upgrades.length > 0 ? await this.deps.storage.accounts.get(outcome.username) : undefined;
        const tasks = account ? neededUpgrades(this.sasl2!.upgrades, account.credentials) : [];
        if (tasks.length === 0) return this.sasl2Success(this.sasl2!, outcome.username, outcome.additionalData);
        // XEP-0480 §2.2: "before the final <success/> would be sent, the server sends a <continue/>
        // element, which MUST contain a single task".
        this.upgrade = { user: outcome.username, tasks, challenge: undefined };
        return this.stream.send(continueWith(tasks[0]!, outcome.additionalData));
      }
    }
  }

  /** XEP-0480: the client starts the task it was given (<next/>), then answers it (<task-data/>). */
  private async onUpgradeTask(element: Element): Promise<void> {
    const upgrade = this.upgrade;
    const refuse = (text: string) => {
      this.upgrade = undefined;
      this.stream.send(sasl2Failure("malformed-request", text));
    };
    if (!upgrade) return refuse("No task is under way");
    const task = upgrade.tasks[0]!;
    if (element.name === "next") {
      if (upgrade.challenge || element.attrs.task !== task) return refuse(`The task to start is ${task}`);
      upgrade.challenge = upgradeChallenge(task, this.deps.scramIterations);
      return this.stream.send(scramUpgradeSalt(upgrade.challenge.salt, upgrade.challenge.iterations));
    }
    const hash = element.getChild("hash", NS_SCRAM_UPGRADE);
    if (!upgrade.challenge || !hash) return refuse("Expected the SaltedPassword of the task");
    const salted = decodeSaslData(hash.getText(), false);
    const credential = salted instanceof Buffer ? upgradedCredential(upgrade.challenge, salted) : undefined;
    if (!credential) return refuse("Not a SaltedPassword of this hash");
    const account = await this.deps.storage.accounts.get(upgrade.user);
    if (!this.stillNegotiating()) return;
    if (!account) return refuse("The account is gone");
    await this.deps.storage.accounts.setCredentials(upgrade.user, { ...account.credentials, [upgrade.challenge.hash]: credential });
    this.deps.log.info({ stage: "sasl", user: upgrade.user, task }, "SCRAM keys added by an upgrade task (XEP-0480)");
    upgrade.tasks.shift();
    upgrade.challenge = undefined;
    if (upgrade.tasks.length > 0) return this.stream.send(continueWith(upgrade.tasks[0]!, undefined));
    this.upgrade = undefined;
    return this.sasl2Success(this.sasl2!, upgrade.user, undefined);
  }

  /** XEP-0484 §4.4: one round trip with a token instead of a password. */
  private async fastAuthenticate(request: Sasl2Request, mechanism: HtMechanism): Promise<SaslOutcome> {
    const failed = (condition: string, text?: string): SaslOutcome => ({ kind: "failure", condition, ...(text ? { text } : {}) });
    // The client "MUST include a <fast/> element" and "MUST also provide a SASL2 <user-agent> element with an 'id'".
    if (!request.fast || !this.sasl2Offer().fastMechanisms.includes(mechanism)) return failed("invalid-mechanism");
    if (!request.userAgent) return failed("malformed-request", "FAST needs a user-agent id");
    const initial = parseHtInitial(request.initialResponse);
    if (!initial) return failed("malformed-request");
    let bare: string;
    try {
      bare = `${prepLocal(initial.authcid)}@${this.host}`;
    } catch {
      return failed("not-authorized");
    }
    const cbType = htChannelBinding(mechanism);
    const cb = cbType === undefined ? Buffer.alloc(0) : this.saslStep().channelBinding(cbType);
    if (!cb) return failed("not-authorized");
    const result = await this.deps.fast.authenticate(bare, request.userAgent, mechanism, initial.proof, cb, request.fast.count);
    // A wrong token counts against the account tried, like a wrong password.
    if (!result.ok) return { kind: "failure", condition: result.condition, username: bare };
    this.fastLogin = { device: result.device, rotate: result.rotate };
    return { kind: "success", username: bare, additionalData: result.responder };
  }

  /**
   * XEP-0388 §2.6.1 after a successful exchange: devices and tokens (XEP-0484), then inline
   * resumption (XEP-0198) or else a Bind 2 request (XEP-0386), all answered inside <success/>;
   * no stream restart.
   */
  private async sasl2Success(request: Sasl2Request, user: string, additionalData: Buffer | undefined): Promise<void> {
    const { fast, limits } = this.deps;
    this.user = user;
    this.phase = "authenticated";
    this.transport.setLimits(limits.postAuth);
    const inline: string[] = [];
    const agent = request.userAgent;
    if (agent) {
      let device = this.fastLogin?.device ?? await fast.seen(user, agent);
      if (request.fast?.invalidate) device = await fast.invalidate(device);
      const asked = request.requestToken;
      const mechanism = asked !== undefined && isHtMechanism(asked) && this.sasl2Offer().fastMechanisms.includes(asked) ? asked
        : this.fastLogin?.rotate && !request.fast?.invalidate && isHtMechanism(request.mechanism) ? request.mechanism : undefined;
      if (mechanism) {
        const issued = await fast.issue(device, mechanism);
        inline.push(fastToken(issued.token, issued.expiresAt));
      }
    }
    if (this.stream.isOver) return;
    if (request.resume) {
      const old = await this.resumable(request.resume.previd);
      if (this.stream.isOver) return;
      if (old?.resumableBy(user)) {
        this.finish();
        old.resumeOn(this.stream, request.resume.h, (resumed) => {
          this.stream.send(sasl2Success(old.jid.full, additionalData, [...inline, resumed]));
          this.stream.features("");
        });
        return;
      }
      // XEP-0198 inline: the failure is reported, and the bind request (if any) is processed.
      inline.push(`<failed xmlns='${NS_SM}'><item-not-found xmlns='${NS.STANZA_ERRORS}'/></failed>`);
    }
    if (!request.bind) {
      this.stream.send(sasl2Success(user, additionalData, inline));
      this.stream.features(this.features());
      return;
    }
    const [local, domain] = user.split("@") as [string, string];
    const resource = bind2Resource(request.bind.tag, user, agent?.id, this.deps.saslSecret, () => chooseResource(undefined));
    let session: C2SSession;
    try {
      session = this.bindSession(new Jid(local, domain, resource));
    } catch (err) {
      if (!(err instanceof StanzaError)) throw err;
      // Authentication succeeded but no session can be had: the attempt fails as a whole.
      this.phase = "pre-auth";
      this.user = undefined;
      this.transport.setLimits(limits.preAuth);
      return this.stream.send(sasl2Failure("aborted", err.text));
    }
    session.userAgentId = agent?.id;
    const answers: string[] = [];
    for (const feature of request.bind.features) {
      const ns = feature.getNS() ?? "";
      // XEP-0386: features the client asks for that we did not offer are not enabled.
      if (ns === NS_SM && feature.name === "enable") answers.push(session.enableSm(feature));
      else answers.push(this.deps.bindFeatures.get(ns)?.(feature, session) ?? "");
    }
    // Written before anything the session sends, and past its queue: <success/> is not a stanza.
    this.stream.send(sasl2Success(session.jid.full, additionalData, [...inline, `<bound xmlns='${NS_BIND2}'>${answers.join("")}</bound>`]));
    this.stream.features("");
    this.bound(session);
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
    let session: C2SSession;
    try {
      session = this.bindSession(new Jid(local, domain, chooseResource(payload.getChildText("resource") ?? undefined)));
    } catch (err) {
      if (!(err instanceof StanzaError)) throw err;
      return this.replyError(iq, err);
    }
    session.send(el("iq", { type: "result", id: iq.attrs.id }, el("bind", { xmlns: NS.BIND }, el("jid", {}, session.jid.full))));
    this.bound(session);
  }

  /** A session for `jid` takes over this stream; throws StanzaError when the account may not have it. */
  private bindSession(jid: Jid): C2SSession {
    const { sessions, log, limits } = this.deps;
    let evicted;
    try {
      evicted = admitSession(sessions.ofUser(jid.bare), jid.full, limits.maxResourcesPerUser);
    } catch (err) {
      if (err instanceof StanzaError && err.condition === "resource-constraint") log.info({ stage: "bind", user: jid.bare }, "bind refused: too many resources");
      throw err;
    }
    for (const old of evicted) {
      log.info({ stage: "bind", jid: old.jid.full }, "hibernated session ended to make room for a new one");
      old.close(new StreamError("conflict", "Replaced by a new session"));
    }
    this.finish();
    const session = new C2SSession(jid, this.stream, this.sessionDeps());
    const replaced = sessions.add(session);
    // Conflict policy (RFC 6120 §7.7.2.2, Prosody kick_old / ejabberd acceptnew): the new session wins.
    if (replaced) replaced.close(new StreamError("conflict", "Replaced by new connection"));
    return session;
  }

  private bound(session: C2SSession): void {
    this.deps.log.info({ stage: "bind", jid: session.jid.full, transport: this.transport.kind }, "resource bound");
    this.deps.registry.track(this.deps.hooks.emit("session/bound", { session }));
  }

  private sessionDeps(): C2SSessionDeps {
    const { router, hooks, sessions, log, limits, sm, nonzas, registry } = this.deps;
    return { router, hooks, sessions, log, sm, nonzas, registry,
      limits: { idleMs: limits.idleMs, pingTimeoutMs: limits.pingTimeoutMs, maxSendBufferBytes: limits.maxSendBufferBytes } };
  }

  /** XEP-0198 §5: <resume/> instead of binding: this stream joins the session it names. */
  private async onResume(element: Element): Promise<void> {
    const previd = element.attrs.previd as string | undefined;
    const h = parseH(element.attrs.h);
    if (h === undefined) return this.stream.error(new StreamError("undefined-condition", "Invalid 'h'"), this.host);
    const old = previd === undefined ? undefined : await this.resumable(previd);
    if (this.stream.isOver) return;
    // An unknown, expired or foreign session → <failed><item-not-found/></failed>.
    if (!old || !old.resumableBy(this.user!)) {
      return this.stream.send(`<failed xmlns='${NS_SM}'><item-not-found xmlns='${NS.STANZA_ERRORS}'/></failed>`);
    }
    this.finish();
    old.resumeOn(this.stream, h);
  }

  /**
   * The hibernated session `previd` the authenticated user may resume: this node's, or on a
   * cluster the one another node holds, which is then restored here (whether or not this stream
   * is still there to resume it: the state must not be lost in between).
   */
  private resumable(previd: string): Promise<C2SSession | undefined> {
    const user = this.user!;
    const here = this.deps.registry.resumable.get(previd);
    const elsewhere = this.deps.resumption;
    if (here || !elsewhere) return Promise.resolve(here?.resumableBy(user) ? here : undefined);
    return new Promise((resolve) => elsewhere.take(user, previd, (state) => resolve(state && this.restore(state))));
  }

  /**
   * A session handed over by another node becomes this node's, bound under its full JID and
   * session id (that node checked it is the authenticated user's: resumableBy).
   */
  private restore(state: SessionState): C2SSession {
    const session = C2SSession.restored(state, parseJid(state.jid), this.sessionDeps(), this.transport.remoteAddress);
    const replaced = this.deps.sessions.add(session);
    if (replaced) replaced.close(new StreamError("conflict", "Replaced by a resumed session"));
    this.deps.log.info({ stage: "sm", jid: session.jid.full, held: session.unacknowledged }, "session taken over from another node");
    this.deps.registry.track(this.deps.hooks.emit("session/bound", { session }));
    return session;
  }
}

/** XEP-0478 stream limits. */
function limitsFeature(maxBytes: number, idleMs: number): string {
  return `<limits xmlns='${NS.STREAM_LIMITS}'><max-bytes>${maxBytes}</max-bytes><idle-seconds>${Math.round(idleMs / 1000)}</idle-seconds></limits>`;
}

function isStanza(name: string, ns: string | undefined): boolean {
  return ns === NS.CLIENT && (name === "message" || name === "presence" || name === "iq");
}
