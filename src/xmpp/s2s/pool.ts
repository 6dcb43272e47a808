/**
 * Outgoing federation (RFC 6120 §8.1, §10.4): one queue and one stream per (local, remote) domain
 * pair. Stanzas wait while the stream is set up; when it cannot be, each one is bounced — RFC 6120
 * §8.3.3.15 remote-server-not-found ("a remote server or service specified as part or all of the
 * JID of the intended recipient does not exist or cannot be resolved") when the domain has no
 * address, §8.3.3.16 remote-server-timeout (it "was resolved but communications could not be
 * established within a reasonable amount of time") otherwise, once a stream could not be set up before the queue's deadline — until then
 * a failed attempt is retried with a growing delay, so a server that comes back gets what waited.
 * Nothing is dropped silently. An idle stream is closed.
 *
 * What is delivered where is not decided here: the router hands over stanzas for remote domains
 * and takes back the bounces.
 */
import type { X509Certificate } from "node:crypto";
import type { Element } from "../xml.js";
import { NS } from "../ns.js";
import { tryParseJid } from "../jid.js";
import { StanzaError, StreamError } from "../../errors.js";
import type { Logger } from "../../log.js";
import type { ParserLimits } from "../parser.js";
import type { TlsPolicy } from "../tls.js";
import { OutgoingStream, type AuthMethod } from "./outgoing.js";
import { resolveServer, type S2SDns, type Target } from "./resolve.js";

/** Delays between attempts to reach a remote server: 1 s, 2 s, 4 s, … up to 30 s. */
const RETRY_FIRST_MS = 1000;
const RETRY_MAX_MS = 30_000;

export interface S2SCounters {
  /** An outgoing stream authenticated, or failed before it did. */
  outgoing(outcome: AuthMethod | "failed"): void;
  /** A stanza left over s2s, or was bounced because it could not. */
  stanzaOut(outcome: "sent" | "bounced", kind: string): void;
}

export interface S2SPoolOptions {
  dns: S2SDns;
  routes: ReadonlyMap<string, Target>;
  trust: readonly X509Certificate[];
  tlsPolicy: TlsPolicy;
  limits: ParserLimits;
  connectTimeoutMs: number;
  /** The longest a stanza waits for a stream before it bounces. */
  queueTimeoutMs: number;
  idleMs: number;
  maxQueued: number;
  requireValidCertificate: boolean;
  /** Our certificate for a local domain (the client certificate of SASL EXTERNAL). */
  certificateFor: (domain: string) => { cert: string; key: string };
  dialbackKey: (receiving: string, originating: string, streamId: string) => string;
  /** Bounces go back through the router. */
  bounce: (stanza: Element, error: StanzaError) => void;
  log: Logger;
  counters?: S2SCounters;
}

/** What operators see of one outgoing stream. */
export interface OutgoingStatus {
  local: string;
  remote: string;
  state: "connecting" | "ready";
  method?: AuthMethod;
  queued: number;
  since: string;
}

interface Route {
  local: string;
  remote: string;
  stream: OutgoingStream | undefined;
  queue: Element[];
  /** Bounds the wait of the queue (while connecting) or the idle time (while ready). */
  timer: NodeJS.Timeout | undefined;
  /** The next attempt after a failed one. */
  retry: NodeJS.Timeout | undefined;
  lastFailure: string | undefined;
  since: number;
}

export class S2SPool {
  private readonly routes = new Map<string, Route>();
  private stopped = false;

  constructor(private readonly opts: S2SPoolOptions) {}

  /** A stanza from a local domain to a remote one. */
  send(stanza: Element): void {
    const from = tryParseJid(stanza.attrs.from);
    const to = tryParseJid(stanza.attrs.to);
    if (!from || !to) return;
    if (this.stopped) return this.bounce(stanza, "remote-server-timeout");
    const key = `${from.domain} ${to.domain}`;
    let route = this.routes.get(key);
    if (!route) {
      route = { local: from.domain, remote: to.domain, stream: undefined, queue: [], timer: undefined, retry: undefined, lastFailure: undefined, since: Date.now() };
      this.routes.set(key, route);
      route.timer = setTimeout(() => this.fail(route!, "remote-server-timeout", route!.lastFailure ?? "timed out"), this.opts.queueTimeoutMs);
      route.timer.unref();
      void this.connect(route, 0);
    }
    if (route.stream?.isReady) return this.write(route, stanza);
    if (route.queue.length >= this.opts.maxQueued) return this.bounce(stanza, "resource-constraint");
    route.queue.push(stanza);
  }

  /**
   * XEP-0220 §2.3: ask the authoritative server of `remote` whether `key` is what it gave for our
   * stream `streamId`, over a stream of its own.
   */
  verifyDialback(local: string, remote: string, streamId: string, key: string): Promise<boolean> {
    return new Promise((resolve) => {
      let answered = false;
      const answer = (valid: boolean) => { if (!answered) { answered = true; resolve(valid); } };
      void resolveServer(remote, this.opts.dns, this.opts.routes).then((resolution) => {
        if ("unavailable" in resolution) return answer(false);
        new OutgoingStream(this.streamOptions(local, remote, resolution.targets), {
          ready() {},
          closed: () => answer(false),
        }, { streamId, key, answer });
      });
    });
  }

  status(): OutgoingStatus[] {
    return [...this.routes.values()].map((r) => ({
      local: r.local, remote: r.remote, state: r.stream?.isReady ? "ready" : "connecting",
      ...(r.stream?.authMethod ? { method: r.stream.authMethod } : {}), queued: r.queue.length, since: new Date(r.since).toISOString(),
    }));
  }

  /** Server shutdown: streams close, queued stanzas bounce. */
  stop(): void {
    this.stopped = true;
    for (const route of [...this.routes.values()]) {
      route.stream?.close(new StreamError("system-shutdown"));
      this.fail(route, "remote-server-timeout", "shutting down");
    }
  }

  private streamOptions(local: string, remote: string, targets: readonly Target[]) {
    const o = this.opts;
    return {
      local, remote, targets, limits: o.limits, connectTimeoutMs: o.connectTimeoutMs, trust: o.trust, tlsPolicy: o.tlsPolicy,
      clientCertificate: o.certificateFor(local), requireValidCertificate: o.requireValidCertificate, dialbackKey: o.dialbackKey, log: o.log,
    };
  }

  private async connect(route: Route, attempt: number): Promise<void> {
    const resolution = await resolveServer(route.remote, this.opts.dns, this.opts.routes);
    if (!this.current(route)) return;
    if ("unavailable" in resolution) return this.fail(route, "remote-server-not-found", resolution.unavailable);
    route.stream = new OutgoingStream(this.streamOptions(route.local, route.remote, resolution.targets), {
      ready: (method) => {
        this.opts.counters?.outgoing(method);
        const queued = route.queue;
        route.queue = [];
        this.idle(route);
        for (const stanza of queued) this.write(route, stanza);
      },
      closed: (failure) => {
        if (failure !== undefined) {
          this.opts.counters?.outgoing("failed");
          if (!this.current(route)) return;
          route.stream = undefined;
          route.lastFailure = failure;
          const delay = Math.min(RETRY_FIRST_MS * 2 ** attempt, RETRY_MAX_MS);
          this.opts.log.info({ stage: "s2s-out", domain: route.remote, reason: failure, retryInMs: delay, queued: route.queue.length }, "s2s outgoing stream failed");
          route.retry = setTimeout(() => void this.connect(route, attempt + 1), delay);
          route.retry.unref();
          return;
        }
        this.forget(route);
        this.opts.log.info({ stage: "s2s-out", domain: route.remote, local: route.local }, "s2s outgoing stream closed");
      },
    });
  }

  private write(route: Route, stanza: Element): void {
    // RFC 6120 §4.8.3: stanzas on a server stream are in jabber:server.
    const ns = stanza.attrs.xmlns;
    stanza.attrs.xmlns = NS.SERVER;
    const xml = stanza.toString();
    if (ns === undefined) delete stanza.attrs.xmlns;
    else stanza.attrs.xmlns = ns;
    route.stream!.send(xml);
    this.opts.counters?.stanzaOut("sent", stanza.name);
    if (this.opts.log.isLevelEnabled("debug")) this.opts.log.debug({ stage: "s2s-out", tag: stanza.name, domain: route.remote }, "stanza sent");
    this.idle(route);
  }

  /** (Re)starts the idle timer of a ready stream. */
  private idle(route: Route): void {
    clearTimeout(route.timer);
    route.timer = setTimeout(() => {
      this.opts.log.info({ stage: "s2s-out", domain: route.remote, local: route.local }, "s2s outgoing stream idle");
      route.stream?.close();
    }, this.opts.idleMs);
    route.timer.unref();
  }

  private fail(route: Route, condition: "remote-server-not-found" | "remote-server-timeout", reason: string): void {
    if (!this.forget(route)) return;
    if (route.queue.length) this.opts.log.info({ stage: "s2s-out", domain: route.remote, condition, reason, bounced: route.queue.length }, "s2s route failed; bouncing");
    route.stream?.close();
    const queued = route.queue;
    route.queue = [];
    for (const stanza of queued) this.bounce(stanza, condition);
  }

  private current(route: Route): boolean {
    return this.routes.get(`${route.local} ${route.remote}`) === route;
  }

  /** Removes the route; false when it was already gone. */
  private forget(route: Route): boolean {
    clearTimeout(route.timer);
    clearTimeout(route.retry);
    if (!this.current(route)) return false;
    this.routes.delete(`${route.local} ${route.remote}`);
    return true;
  }

  private bounce(stanza: Element, condition: "remote-server-not-found" | "remote-server-timeout" | "resource-constraint"): void {
    this.opts.counters?.stanzaOut("bounced", stanza.name);
    this.opts.bounce(stanza, new StanzaError(condition));
  }
}
