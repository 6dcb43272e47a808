/**
 * The router: RFC 6120 §8 and §10, RFC 6121 §8. It validates a stanza, stamps 'from', classifies
 * 'to' (host / bare / full / remote), runs the "stanza/in" filter and then the chain for that kind
 * of stanza. When no handler takes a stanza, the RFC default applies here — the rules are written
 * out row by row in docs/routing.md.
 */
import { randomBytes } from "node:crypto";
import { Element, el, firstChildElement } from "./xml.js";
import { Jid, tryParseJid } from "./jid.js";
import { StanzaError, errorReply } from "../errors.js";
import { HookBus, HANDLED, type Chains, type Routed } from "../hooks.js";
import type { Session, SessionView } from "./sessions.js";
import type { AccountStore } from "../storage/index.js";
import type { Logger } from "../log.js";
import type { RoutingMetrics } from "../metrics/index.js";

export type IqTarget = "host" | "account";
/**
 * Who an IQ get/set is addressed to: the server ("host"), an account ("account"), or an entity a
 * module declared with `addIqEntity` (a MUC service or room, the upload service, …).
 */
export type IqEntity = IqTarget | (string & {});
export type IqType = "get" | "set";

export interface IqRequest extends Routed {
  payload: Element;
  /** The request is addressed to the sender's own account (no 'to', or its own bare JID). */
  self: boolean;
}

/** How the answers to requests of other cluster nodes find their way back (Router.attachReplyForwarding). */
export interface ReplyForwarding {
  /** A fresh id for a request of this node, naming it. */
  requestId(): string;
  /** An IQ result or error that answers no request of this node: true when it went to the node that asked. */
  forward(reply: Element): boolean;
}

/** Returns the result payload (or nothing for an empty result); throws StanzaError for an error reply. */
export type IqHandler = (request: IqRequest) => Element | undefined | void | Promise<Element | undefined | void>;

const MESSAGE_TYPES = new Set(["chat", "error", "groupchat", "headline", "normal"]);
const PRESENCE_TYPES = new Set(["unavailable", "subscribe", "subscribed", "unsubscribe", "unsubscribed", "probe", "error"]);
const IQ_TYPES = new Set(["get", "set", "result", "error"]);
const IQ_TIMEOUT_MS = 60_000;

export class Router {
  private readonly localDomains = new Set<string>();
  private readonly components = new Map<string, (stanza: Element) => void>();
  /** Federation (RFC 6120 server-to-server): takes stanzas for domains we do not serve. */
  private remote: ((stanza: Element) => void | Promise<void>) | undefined;
  private readonly iqHandlers = new Map<string, IqHandler>();
  private readonly iqEntities: Array<{ name: string; claims: (to: Jid) => boolean }> = [];
  private replies: ReplyForwarding | undefined;
  private readonly pendingIqs = new Map<string, { to: string; resolve: (e: Element) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();

  constructor(
    hosts: readonly string[],
    private readonly hooks: HookBus,
    private readonly sessions: SessionView,
    private readonly accounts: AccountStore,
    private readonly log: Logger,
    private readonly metrics?: RoutingMetrics,
  ) {
    for (const h of hosts) this.localDomains.add(h);
  }

  isLocalDomain(domain: string): boolean {
    return this.localDomains.has(domain);
  }

  /**
   * An external component (XEP-0114) takes its domain: every stanza for it is handed to `deliver`.
   * Returns undefined when that domain already has a component, else the function that detaches it.
   */
  attachComponent(domain: string, deliver: (stanza: Element) => void): (() => void) | undefined {
    if (this.components.has(domain) || this.localDomains.has(domain)) return undefined;
    this.components.set(domain, deliver);
    return () => { if (this.components.get(domain) === deliver) this.components.delete(domain); };
  }

  /**
   * Outgoing federation takes every stanza for a remote domain that no handler took, queued in
   * order when `send` returns; its promise resolves once the stanza is in its custody (a durable
   * outbox). Returns the detach function.
   */
  attachRemote(send: (stanza: Element) => void | Promise<void>): () => void {
    if (this.remote) throw new Error("a remote route is already attached");
    this.remote = send;
    return () => { if (this.remote === send) this.remote = undefined; };
  }

  /**
   * On a cluster (docs/CLUSTER.md): request ids say which node asked, so that an answer that
   * reaches another node (the client's session is there) goes back to the asking node.
   */
  attachReplyForwarding(replies: ReplyForwarding): () => void {
    if (this.replies) throw new Error("reply forwarding is already attached");
    this.replies = replies;
    return () => { if (this.replies === replies) this.replies = undefined; };
  }

  /** Component domains (conference., upload., …) register here. */
  addDomain(domain: string): () => void {
    this.localDomains.add(domain);
    return () => this.localDomains.delete(domain);
  }

  /**
   * Declares an entity that answers IQs for the addresses `claims` accepts (on a served domain),
   * ahead of the server and accounts. Its IQs get the same rules as theirs: the handler registered
   * for (entity, type, namespace) answers, anything else gets service-unavailable.
   */
  addIqEntity(name: string, claims: (to: Jid) => boolean): () => void {
    if (name === "host" || name === "account" || this.iqEntities.some((e) => e.name === name)) throw new Error(`IQ entity already declared: ${name}`);
    const entity = { name, claims };
    this.iqEntities.push(entity);
    return () => { this.iqEntities.splice(this.iqEntities.indexOf(entity), 1); };
  }

  registerIq(target: IqEntity, type: IqType, ns: string, handler: IqHandler): () => void {
    if (target !== "host" && target !== "account" && !this.iqEntities.some((e) => e.name === target)) throw new Error(`IQ entity not declared: ${target}`);
    const key = `${target} ${type} ${ns}`;
    if (this.iqHandlers.has(key)) throw new Error(`IQ handler already registered: ${key}`);
    this.iqHandlers.set(key, handler);
    return () => this.iqHandlers.delete(key);
  }

  /**
   * A stanza from a bound client session. The promise resolves once its routing finished, the
   * point after which the session's next stanza may be routed; `holdCustody` (Routed.custody), when
   * given, receives the durable writes the stanza's 'h' must wait for beyond that.
   */
  fromClient(session: Session, stanza: Element, holdCustody?: (written: Promise<unknown>) => void): void | Promise<void> {
    // RFC 6120 §8.1.2.1: the server stamps 'from' with the full JID of the session; we overwrite
    // whatever the client put there (Prosody's policy), so a spoofed 'from' never leaves the server.
    stanza.attrs.from = session.jid.full;
    const type = stanza.attrs.type as string | undefined;
    const invalid = this.validate(stanza, type);
    if (invalid) return this.bounce(stanza, invalid, session);
    let to: Jid;
    if (stanza.attrs.to === undefined) {
      // RFC 6120 §10.3: no 'to' means the sender's own account (presence: a broadcast).
      to = session.jid.toBare();
    } else {
      const parsed = tryParseJid(stanza.attrs.to);
      if (!parsed) return this.bounce(stanza, new StanzaError("jid-malformed", "The destination address is invalid"), session);
      to = parsed;
      stanza.attrs.to = parsed.full;
    }
    const routed: Routed = { stanza, from: session.jid, to, origin: session };
    if (holdCustody) routed.custody = (written) => holdCustody(written.catch((err: unknown) => this.handlerFailed(routed, err)));
    return this.dispatch(routed, stanza.attrs.to === undefined);
  }

  /**
   * A stanza from a remote server. Its stream has checked that 'from' is a domain the peer
   * authenticated and 'to' one of ours (RFC 6120 §13.x, no relaying); from here on it goes the way
   * of a local stanza, through the same filters and chains (blocking, privacy).
   */
  fromRemote(stanza: Element): void | Promise<void> {
    const from = tryParseJid(stanza.attrs.from);
    const to = tryParseJid(stanza.attrs.to);
    if (!from || !to || this.localDomains.has(from.domain) || !this.isServed(to.domain)) {
      this.log.warn({ stage: "route", tag: stanza.name }, "remote stanza with bad addresses dropped");
      return;
    }
    const invalid = this.validate(stanza, stanza.attrs.type as string | undefined);
    if (invalid) return this.bounce(stanza, invalid);
    stanza.attrs.from = from.full;
    stanza.attrs.to = to.full;
    return this.dispatch({ stanza, from, to }, false);
  }

  /** One of our domains, or an attached component's. */
  isServed(domain: string): boolean {
    return this.localDomains.has(domain) || this.components.has(domain);
  }

  /** A stanza generated inside the server (a module, an error reply); 'from' and 'to' are set. */
  route(stanza: Element): void | Promise<void> {
    const from = tryParseJid(stanza.attrs.from);
    const to = tryParseJid(stanza.attrs.to);
    if (!from || !to) {
      this.log.warn({ stage: "route", tag: stanza.name }, "internal stanza without valid from/to dropped");
      return;
    }
    return this.dispatch({ stanza, from, to }, false);
  }

  /** Answer a stanza with an error, unless it is itself an error or an IQ result (RFC 6120 §8.3.1). */
  bounce(stanza: Element, error: StanzaError, origin?: Session): void | Promise<void> {
    const type = stanza.attrs.type;
    if (type === "error" || (stanza.name === "iq" && type === "result")) return;
    this.metrics?.routed(error.condition === "internal-server-error" ? "error" : "bounced", stanza.name);
    const reply = errorReply(stanza, error);
    if (stanza.attrs.to === undefined && origin) reply.attrs.from = origin.jid.domain;
    if (origin && reply.attrs.to === origin.jid.full) return this.deliver(origin, reply);
    return this.route(reply);
  }

  /** Write a stanza to a local session, through the "stanza/out" filters. */
  deliver(session: Session, stanza: Element): void {
    const out = this.hooks.runFilter("stanza/out", { stanza, session });
    if (!out) return;
    this.metrics?.routed("delivered", stanza.name);
    session.send(out.stanza);
  }

  /** Like deliver, but reports the client's acknowledgement when the session has stream management. */
  deliverConfirmed(session: Session, stanza: Element): Promise<boolean> | undefined {
    const out = this.hooks.runFilter("stanza/out", { stanza, session });
    if (!out) return Promise.resolve(true);
    this.metrics?.routed("delivered", stanza.name);
    return session.sendConfirmed(out.stanza);
  }

  /** Send an IQ get/set from the server and wait for the result (matched on id, sender and type). */
  request(iq: Element, timeoutMs = IQ_TIMEOUT_MS): Promise<Element> {
    const id = iq.attrs.id ?? this.replies?.requestId() ?? `parley-${randomBytes(9).toString("base64url")}`;
    iq.attrs.id = id;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pendingIqs.delete(id);
        reject(new StanzaError("remote-server-timeout"));
      }, timeoutMs);
      timer.unref();
      this.pendingIqs.set(id, { to: iq.attrs.to, resolve, reject, timer });
      void this.route(iq);
    });
  }

  private validate(stanza: Element, type: string | undefined): StanzaError | undefined {
    switch (stanza.name) {
      case "message":
        // RFC 6121 §5.2.2: an unknown type is treated as 'normal', so it is not an error.
        if (type !== undefined && !MESSAGE_TYPES.has(type)) delete stanza.attrs.type;
        return undefined;
      case "presence":
        return type === undefined || PRESENCE_TYPES.has(type) ? undefined : new StanzaError("bad-request", "Invalid presence type");
      case "iq": {
        // RFC 6120 §8.2.3: "The 'id' attribute is REQUIRED for IQ stanzas" and an IQ get or set
        // "MUST contain exactly one child element".
        if (!type || !IQ_TYPES.has(type)) return new StanzaError("bad-request", "Invalid IQ type");
        if (!stanza.attrs.id) return new StanzaError("bad-request", "IQ without id");
        if (type === "get" || type === "set") {
          const n = stanza.children.filter((c) => typeof c !== "string").length;
          if (n !== 1) return new StanzaError("bad-request", "IQ get/set must have exactly one child element");
        }
        return undefined;
      }
      default:
        return new StanzaError("bad-request");
    }
  }

  private dispatch(routed: Routed, implicitTo: boolean): void | Promise<void> {
    // A handler that throws synchronously gets the same answer as one that rejects: the error
    // reply RFC 6120 §8.3.3.8 gives (internal-server-error), logged; never an exception that
    // escapes to the stream and leaves the sender without an answer (issue 14).
    try {
      return this.dispatchFiltered(routed, implicitTo);
    } catch (err) {
      return this.handlerFailed(routed, err);
    }
  }

  private dispatchFiltered(routed: Routed, implicitTo: boolean): void | Promise<void> {
    const filtered = this.hooks.runFilter("stanza/in", routed);
    if (!filtered) return;
    const { stanza, to } = filtered;
    const kind = stanza.name as "message" | "presence" | "iq";

    const component = this.components.get(to.domain);
    if (component) {
      this.metrics?.routed("delivered", kind);
      component(stanza);
      return;
    }
    if (!this.localDomains.has(to.domain)) {
      return this.hooks.runChain(`${kind}/remote`, filtered, {
        handled: () => undefined,
        unhandled: () => {
          // RFC 6120 §10.4: the server routes it to the remote domain (a stanza from a remote
          // server is never relayed on: fromRemote only takes stanzas for our domains). An attached
          // component's domain is ours too (XEP-0114): its answers to remote entities go out.
          if (this.remote && this.isServed(filtered.from.domain)) {
            const queued = this.remote(stanza);
            if (!queued || !filtered.custody) return queued;
            filtered.custody(queued); // in the route's queue, in order, already
            return;
          }
          // RFC 6120 §10.4.3 remote-server-not-found is what a server without a route answers.
          this.log.debug({ stage: "route", tag: kind, domain: to.domain }, "no route to remote domain");
          return this.bounce(stanza, new StanzaError("remote-server-not-found"), filtered.origin);
        },
        failed: (err) => this.handlerFailed(filtered, err),
      });
    }

    if (kind === "iq") {
      const type = stanza.attrs.type;
      if ((type === "result" || type === "error") && (this.settlePending(filtered) || this.replies?.forward(stanza))) return;
    }

    const scope = to.local === "" ? "host" : to.isBare ? "bare" : "full";
    const chain = `${kind}/${scope}` as keyof Chains;
    const effective = kind === "presence" && implicitTo ? "presence/broadcast" : chain;
    if (this.log.isLevelEnabled("debug")) this.log.debug({ stage: "route", tag: kind, type: stanza.attrs.type, chain: effective }, "routing");
    return this.hooks.runChain(effective, filtered, {
      handled: () => undefined,
      unhandled: () => this.fallback(filtered, kind, scope),
      failed: (err) => this.handlerFailed(filtered, err),
    });
  }

  private fallback(routed: Routed, kind: string, scope: "host" | "bare" | "full"): void | Promise<void> {
    const { stanza } = routed;
    const type = stanza.attrs.type;
    if (kind === "iq") {
      if (type === "get" || type === "set") return this.dispatchIq(routed);
      // RFC 6121 §8.5.3.1: a result or error for a connected resource is delivered to it (the
      // answer to another entity's request); §8.5.3.2.1: for no such resource, silently ignored.
      if (scope === "full") {
        const session = this.sessions.get(routed.to.full);
        if (session) this.deliver(session, stanza);
      }
      return;
    }
    if (kind === "message" && type !== "headline" && type !== "error") {
      // RFC 6121 §8.5.2.2.1 / §8.5.3.2.1: nobody can take this message.
      return this.bounce(stanza, new StanzaError("service-unavailable"), routed.origin);
    }
    // Presence nobody handles is dropped (RFC 6121 §8.5.2.2.2, §8.5.3.2.2).
  }

  /** The entity answering IQs for an address; undefined for a full JID of an account (its resource answers). */
  private iqEntityOf(to: Jid): IqEntity | undefined {
    for (const entity of this.iqEntities) if (entity.claims(to)) return entity.name;
    if (to.local === "") return "host";
    return to.isBare ? "account" : undefined;
  }

  /** The one IQ rule for every entity the server answers for (RFC 6120 §8.2.3, RFC 6121 §8.5). */
  private dispatchIq(routed: Routed): void | Promise<void> {
    const { stanza, from, to, origin } = routed;
    const entity = this.iqEntityOf(to);
    if (entity === undefined) {
      // RFC 6121 §8.5.3.2.1: an IQ for a resource that is not connected gets service-unavailable.
      const session = this.sessions.get(to.full);
      if (session) return this.deliver(session, stanza);
      return this.bounce(stanza, new StanzaError("service-unavailable"), origin);
    }
    const payload = firstChildElement(stanza)!;
    const ns = payload.getNS() ?? "";
    const handler = this.iqHandlers.get(`${entity} ${stanza.attrs.type} ${ns}`);
    const self = entity === "account" && from.bare === to.bare;
    // RFC 6120 §8.4: an entity that does not understand the payload returns service-unavailable.
    if (!handler) return this.bounce(stanza, new StanzaError("service-unavailable"), origin);
    const request: IqRequest = { ...routed, payload, self };
    const run = async () => {
      // RFC 6121 §8.5.1: an IQ for a user that does not exist gets service-unavailable.
      if (entity === "account" && !self && !(await this.accounts.exists(to.bare))) throw new StanzaError("service-unavailable");
      return handler(request);
    };
    return run().then(
      (result) => this.answer(stanza, result ?? undefined, origin),
      (err) => this.handlerFailed(routed, err),
    );
  }

  private answer(request: Element, payload: Element | undefined, origin?: Session): void | Promise<void> {
    const reply = el("iq", { type: "result", id: request.attrs.id, from: request.attrs.to ?? origin?.jid.bare, to: request.attrs.from }, payload);
    if (origin && reply.attrs.to === origin.jid.full) return this.deliver(origin, reply);
    return this.route(reply);
  }

  private handlerFailed(routed: Routed, err: unknown): void | Promise<void> {
    if (err instanceof StanzaError) return this.bounce(routed.stanza, err, routed.origin);
    // DESIGN: any other throw becomes internal-server-error, logged.
    this.log.error({ err, stage: "handler", tag: routed.stanza.name }, "stanza handler failed");
    return this.bounce(routed.stanza, new StanzaError("internal-server-error"), routed.origin);
  }

  private settlePending(routed: Routed): boolean {
    const id = routed.stanza.attrs.id;
    const pending = id === undefined ? undefined : this.pendingIqs.get(id);
    // CVE-2013-6483 class: a reply counts only if it comes from the entity we asked.
    if (!pending || (pending.to !== routed.from.full && pending.to !== routed.from.bare)) return false;
    this.pendingIqs.delete(id!);
    clearTimeout(pending.timer);
    if (routed.stanza.attrs.type === "result") pending.resolve(routed.stanza);
    else pending.reject(new StanzaError("undefined-condition", "IQ error reply"));
    return true;
  }
}

export { HANDLED };
