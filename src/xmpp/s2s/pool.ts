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
 * Nothing is lost either (issue 15, "Nothing lost across servers"). The stanzas ./outbox.ts keeps
 * durable are appended to the storage outbox, and the router's promise for them — what a local
 * sender's XEP-0198 'h' waits for (../c2s/sm.ts, HARDENING §1.3 P1) — resolves once that append
 * committed. A row goes only when the remote server has the stanza, or when it bounced; at start
 * the rows left are queued again, their deadline still counted from when they were first queued.
 * Written stanzas stay "unconfirmed" until the peer confirms them:
 * - with XEP-0198 (1.6.3) on the stream, by its <a h/> (./outgoing.ts);
 * - without, by a round trip: an XEP-0199 ping of the remote server, written after them. Its answer
 *   (a result, or an error reply: either way the peer processed it) proves the peer processed what
 *   came before, because RFC 6120 §10.1 says a server "MUST ensure in-order processing of the
 *   stanzas ... it receives over a given input stream". A clean stream close would prove nothing
 *   of the kind (§4.4 only lets the peer finish sending), and comes once per idle period, so it is
 *   not used. One ping is out at a time; its answer covers everything written before it.
 * When a stream ends with stanzas unconfirmed, they are written again on a new stream: XEP-0198 §5
 * resumption is not needed for that between servers, and a peer may see a stanza twice — a
 * duplicate, never a loss.
 *
 * XEP-0288 1.0.1 (./bidi.ts): an incoming stream that asked to be used both ways is handed here
 * (`attachReverse`) once the peer authenticated a domain on it, and serves the route from our domain
 * to that one instead of a stream of our own — a route being set up gives up its attempt for it.
 * On such a reverse stream XEP-0198 is the peer's: it enabled it to have its stanzas acknowledged,
 * and our counter of what we write is not negotiated (a peer need not answer an <r/> of ours on its
 * stream), so the durable stanzas written there are confirmed by the ping round trip above.
 * Idle, the route lets go of the reverse stream without closing it (the peer's direction is its
 * own); when the stream ends, what it had unconfirmed goes out on a new stream, as above.
 *
 * What is delivered where is not decided here: the router hands over stanzas for remote domains
 * and takes back the bounces.
 */
import { randomBytes, type X509Certificate } from "node:crypto";
import { el, type Element } from "../xml.js";
import { parseElement } from "../xml-parse.js";
import { NS } from "../ns.js";
import { tryParseJid } from "../jid.js";
import { StanzaError, StreamError } from "../../errors.js";
import type { Logger } from "../../log.js";
import type { ParserLimits } from "../parser.js";
import type { TlsPolicy } from "../tls.js";
import type { OutboxEntry, S2SOutboxStore } from "../../storage/index.js";
import { OutgoingStream, type AuthMethod, type Confirmation } from "./outgoing.js";
import { keptDurable } from "./outbox.js";
import { resolveServer, type S2SDns, type Target } from "./resolve.js";
import type { InboundOptions } from "./inbound.js";
import type { ReverseStream } from "./bidi.js";

/** Delays between attempts to reach a remote server: 1 s, 2 s, 4 s, … up to 30 s. */
const RETRY_FIRST_MS = 1000;
const RETRY_MAX_MS = 30_000;

export interface S2SCounters {
  /** An outgoing stream authenticated, or failed before it did. */
  outgoing(outcome: AuthMethod | "failed"): void;
  /** A stanza left over s2s, left again on a new stream (unconfirmed on the one that ended), or was bounced because it could not. */
  stanzaOut(outcome: "sent" | "resent" | "bounced", kind: string): void;
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
  /** Enable XEP-0198 on outgoing streams whose peer offers it. */
  streamManagement: boolean;
  /** XEP-0288 on outgoing streams whose peer offers it: where the stanzas it sends back go; undefined: s2s.bidi is off. */
  bidi: InboundOptions | undefined;
  /** Our certificate for a local domain (the client certificate of SASL EXTERNAL). */
  certificateFor: (domain: string) => { cert: string; key: string };
  dialbackKey: (receiving: string, originating: string, streamId: string) => string;
  /** Bounces go back through the router. */
  bounce: (stanza: Element, error: StanzaError) => void;
  /** The durable part of the queues. */
  outbox: S2SOutboxStore;
  /** Whose outbox rows this pool sends: the cluster node id, "" off a cluster (docs/CLUSTER.md). */
  outboxOwner: string;
  /** An IQ from the server, answered or rejected (the router's `request`): the round trip of peers without XEP-0198. */
  request: (iq: Element) => Promise<Element>;
  log: Logger;
  counters?: S2SCounters;
}

/** What operators see of one outgoing stream. */
export interface OutgoingStatus {
  local: string;
  remote: string;
  state: "connecting" | "ready";
  /**
   * The connection it uses: a stream of its own ("outgoing"), one of its own the peer sends on too
   * ("outgoing-bidi"), or the peer's incoming stream (XEP-0288, "incoming-bidi").
   */
  via?: "outgoing" | "outgoing-bidi" | "incoming-bidi";
  method?: AuthMethod;
  /** How the ready stream confirms what was written (XEP-0198 acks, or a round trip). */
  confirmation?: Confirmation;
  queued: number;
  /** Written on the current stream; the peer has not confirmed them yet. */
  unconfirmed: number;
  since: string;
}

interface Entry {
  stanza: Element;
  /** When it was first queued (before a restart, for a restored one): its deadline counts from here. */
  queuedAt: number;
  /** Its outbox row, a promise while the append commits; undefined when it is not kept durable. */
  row: Promise<number | undefined> | undefined;
  written: boolean;
  /** Confirmed by the peer or bounced: nothing more to do, its row is removed. */
  done: boolean;
}

/** An XEP-0199 ping out to the peer, and the durable stanzas written before it. */
interface Probe {
  id: string;
  covered: Entry[];
  /** It bounced here (no stream): its error reply is ours, not the peer's. */
  bouncedHere: boolean;
}

/** What a route writes on: a stream of its own, or the peer's (XEP-0288). */
type RouteStream = OutgoingStream | ReverseStream;

interface Route {
  local: string;
  remote: string;
  stream: RouteStream | undefined;
  /** How the ready stream confirms what was written. */
  confirmation: Confirmation | undefined;
  /** Waiting for a ready stream, oldest first. */
  queue: Entry[];
  /** Written on the current stream, in order, not yet confirmed (only the durable ones without XEP-0198). */
  unconfirmed: Entry[];
  probe: Probe | undefined;
  probeScheduled: boolean;
  /** Bounds the wait of the queue (while connecting) or the idle time (while ready). */
  timer: NodeJS.Timeout | undefined;
  /** The next attempt after a failed one. */
  retry: NodeJS.Timeout | undefined;
  /** Ready streams that ended since the peer last confirmed anything: the reconnection backs off. */
  lostStreams: number;
  lastFailure: string | undefined;
  since: number;
}

export class S2SPool {
  private readonly routes = new Map<string, Route>();
  /** XEP-0288: incoming streams we may send on, by route key. */
  private readonly reverse = new Map<string, ReverseStream>();
  private stopped = false;

  constructor(private readonly opts: S2SPoolOptions) {}

  /**
   * A stanza from a local domain to a remote one, in its route's queue (in order) on return. The
   * promise (for a stanza kept durable) resolves once it is in the outbox.
   */
  send(stanza: Element): void | Promise<void> {
    const from = tryParseJid(stanza.attrs.from);
    const to = tryParseJid(stanza.attrs.to);
    if (!from || !to) return;
    if (this.stopped) return this.bounce(undefined, stanza, "remote-server-timeout");
    const route = this.routeFor(from.domain, to.domain);
    if (route.queue.length >= this.opts.maxQueued) return this.bounce(route, stanza, "resource-constraint");
    const entry: Entry = { stanza, queuedAt: Date.now(), row: undefined, written: false, done: false };
    if (keptDurable(stanza)) {
      entry.row = this.opts.outbox.append(this.opts.outboxOwner, route.local, route.remote, stanza.toString(), entry.queuedAt).catch((err: unknown) => {
        // Still queued in memory: it goes out unless the server stops first.
        this.opts.log.error({ err, stage: "s2s-out", tag: stanza.name, domain: route.remote }, "s2s outbox append failed");
        return undefined;
      });
    }
    this.enqueue(route, entry);
    return entry.row?.then(() => undefined);
  }

  /**
   * At start: this node's stanzas left in the outbox are queued again, with their original
   * deadlines. A cluster node also takes the rows of no node (queued before it joined a cluster).
   */
  async restore(): Promise<void> {
    const owner = this.opts.outboxOwner;
    if (owner !== "") await this.opts.outbox.claim("", owner);
    const rows = await this.requeue(await this.opts.outbox.list(owner));
    if (rows) this.opts.log.info({ stage: "s2s-out", restored: rows }, "s2s outbox restored");
  }

  /** A dead cluster node's rows become this node's, and are sent from here (its reaper calls this). */
  async adopt(node: string): Promise<number> {
    return this.requeue(await this.opts.outbox.claim(node, this.opts.outboxOwner));
  }

  private async requeue(rows: readonly OutboxEntry[]): Promise<number> {
    for (const row of rows) {
      let stanza: Element;
      try {
        stanza = parseElement(row.stanza);
      } catch (err) {
        this.opts.log.error({ err, stage: "s2s-out", domain: row.remote }, "s2s outbox row unreadable; removed");
        await this.opts.outbox.remove([row.id]);
        continue;
      }
      this.enqueue(this.routeFor(row.local, row.remote), { stanza, queuedAt: row.queuedAt, row: Promise.resolve(row.id), written: false, done: false });
    }
    return rows.length;
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
          acked() {},
          received() {},
          closed: () => answer(false),
        }, { streamId, key, answer });
      });
    });
  }

  /**
   * XEP-0288: `stream` (incoming, authenticated for `stream.remote`) may carry our stanzas from
   * `stream.local` to it. The function returned is for when that stream ended.
   */
  attachReverse(stream: ReverseStream): () => void {
    const key = routeKey(stream.local, stream.remote);
    if (this.stopped) return () => {};
    this.reverse.set(key, stream);
    const route = this.routes.get(key);
    // A route whose own stream is up keeps it; one still trying gives that up.
    if (route && !route.stream?.isReady) {
      clearTimeout(route.retry);
      const attempt = route.stream;
      this.useReverse(route, stream);
      attempt?.close();
    }
    return () => {
      if (this.reverse.get(key) === stream) this.reverse.delete(key);
      const current = this.routes.get(key);
      if (current?.stream === stream) this.streamEnded(current, stream);
    };
  }

  status(): OutgoingStatus[] {
    return [...this.routes.values()].map((r) => ({
      local: r.local, remote: r.remote, state: r.stream?.isReady ? "ready" : "connecting",
      ...(r.stream ? { via: r.stream instanceof OutgoingStream ? (r.stream.bidirectional ? "outgoing-bidi" as const : "outgoing" as const) : "incoming-bidi" as const } : {}),
      ...(r.stream?.authMethod ? { method: r.stream.authMethod } : {}), ...(r.confirmation ? { confirmation: r.confirmation } : {}), queued: r.queue.length, unconfirmed: r.unconfirmed.length, since: new Date(r.since).toISOString(),
    }));
  }

  /**
   * Server shutdown: streams close. Stanzas in the outbox stay there for the next start; the others
   * bounce.
   */
  stop(): void {
    this.stopped = true;
    for (const route of [...this.routes.values()]) {
      this.forget(route);
      route.stream?.close(new StreamError("system-shutdown"));
      const waiting = [...route.unconfirmed, ...route.queue].filter((e) => !e.done);
      const kept = waiting.filter((e) => e.row).length;
      if (kept) this.opts.log.info({ stage: "s2s-out", domain: route.remote, kept }, "s2s stanzas kept in the outbox for the next start");
      for (const entry of waiting) if (!entry.row) this.bounceEntry(route, entry, "remote-server-timeout");
    }
  }

  private routeFor(local: string, remote: string): Route {
    const key = routeKey(local, remote);
    let route = this.routes.get(key);
    if (!route) {
      route = { local, remote, stream: undefined, confirmation: undefined, queue: [], unconfirmed: [], probe: undefined, probeScheduled: false,
        timer: undefined, retry: undefined, lostStreams: 0, lastFailure: undefined, since: Date.now() };
      this.routes.set(key, route);
      void this.connect(route, 0);
    }
    return route;
  }

  private enqueue(route: Route, entry: Entry): void {
    // The probe covers what is written already, and opens the window for the rest: it goes first.
    const probe = isProbe(route, entry.stanza);
    if (route.stream?.isReady && (probe || (route.queue.length === 0 && this.windowOpen(route)))) return this.write(route, entry);
    route.queue.push(entry);
    if (route.queue.length === 1 && !route.stream?.isReady) this.armDeadline(route);
  }

  /**
   * At most s2s.maxQueuedStanzas written and not yet confirmed: a peer that takes without
   * confirming makes the queue fill (and new stanzas bounce), not our memory and outbox grow.
   */
  private windowOpen(route: Route): boolean {
    return route.unconfirmed.length < this.opts.maxQueued;
  }

  /** Writes what waits, in order, as far as the window allows. */
  private pump(route: Route): void {
    while (route.queue.length && route.stream?.isReady && this.windowOpen(route)) {
      const entry = route.queue.shift()!;
      if (!entry.done) this.write(route, entry);
    }
  }

  private streamOptions(local: string, remote: string, targets: readonly Target[]) {
    const o = this.opts;
    return {
      local, remote, targets, limits: o.limits, connectTimeoutMs: o.connectTimeoutMs, trust: o.trust, tlsPolicy: o.tlsPolicy,
      clientCertificate: o.certificateFor(local), requireValidCertificate: o.requireValidCertificate, streamManagement: o.streamManagement, dialbackKey: o.dialbackKey, bidi: o.bidi, log: o.log,
    };
  }

  private async connect(route: Route, attempt: number): Promise<void> {
    const reverse = this.reverse.get(routeKey(route.local, route.remote));
    if (reverse?.isReady) return this.useReverse(route, reverse);
    const resolution = await resolveServer(route.remote, this.opts.dns, this.opts.routes);
    if (!this.current(route) || route.stream?.isReady) return;
    if ("unavailable" in resolution) return this.fail(route, "remote-server-not-found", resolution.unavailable);
    const stream: OutgoingStream = new OutgoingStream(this.streamOptions(route.local, route.remote, resolution.targets), {
      ready: (method, confirmation) => {
        if (route.stream !== stream) return;
        this.opts.counters?.outgoing(method);
        this.streamReady(route, confirmation);
      },
      acked: (count) => {
        if (route.stream !== stream) return;
        this.confirmed(route, route.unconfirmed.splice(0, count));
      },
      // The peer's direction keeps the stream from being idle too.
      received: () => { if (route.stream === stream && stream.isReady) this.idle(route); },
      closed: (failure) => {
        if (route.stream !== stream || !this.current(route)) return;
        if (failure === undefined) return this.streamEnded(route, stream);
        route.stream = undefined;
        route.confirmation = undefined;
        this.opts.counters?.outgoing("failed");
        route.lastFailure = failure;
        this.retry(route, attempt, failure);
      },
    });
    route.stream = stream;
  }

  /** XEP-0288: the route writes on the peer's stream, confirmed by round trips (see the top). */
  private useReverse(route: Route, stream: ReverseStream): void {
    route.stream = stream;
    this.opts.log.info({ stage: "s2s-out", domain: route.remote, local: route.local, method: stream.authMethod }, "s2s route uses the incoming stream (XEP-0288)");
    this.streamReady(route, "round-trip");
  }

  private streamReady(route: Route, confirmation: Confirmation): void {
    route.confirmation = confirmation;
    this.idle(route);
    this.pump(route);
  }

  /** A ready stream ended: what the peer did not confirm goes out again, first, on a new stream. */
  private streamEnded(route: Route, stream: RouteStream): void {
    if (route.stream !== stream || !this.current(route)) return;
    route.stream = undefined;
    route.confirmation = undefined;
    this.opts.log.info({ stage: "s2s-out", domain: route.remote, local: route.local, unconfirmed: route.unconfirmed.length }, "s2s outgoing stream closed");
    route.queue = [...route.unconfirmed.filter((e) => !e.done), ...route.queue];
    route.unconfirmed = [];
    // An answer to the probe may still come (and confirm what it covers); the next stream probes anew.
    route.probe = undefined;
    if (route.queue.length === 0) return void this.forget(route);
    this.armDeadline(route);
    // The first time at once; a peer that keeps dropping streams without confirming anything, with a growing delay.
    if (route.lostStreams++ === 0) return void this.connect(route, 0);
    this.retry(route, route.lostStreams - 1, "stream lost before the peer confirmed");
  }

  /** A new attempt after a growing delay; the queue's deadline bounds them all. */
  private retry(route: Route, attempt: number, reason: string): void {
    const delay = Math.min(RETRY_FIRST_MS * 2 ** attempt, RETRY_MAX_MS);
    this.opts.log.info({ stage: "s2s-out", domain: route.remote, reason, retryInMs: delay, queued: route.queue.length }, "s2s outgoing stream failed");
    route.retry = setTimeout(() => void this.connect(route, attempt + 1), delay);
    route.retry.unref();
  }

  private write(route: Route, entry: Entry): void {
    const stanza = entry.stanza;
    // RFC 6120 §4.8.3: stanzas on a server stream are in jabber:server.
    const ns = stanza.attrs.xmlns;
    stanza.attrs.xmlns = NS.SERVER;
    const xml = stanza.toString();
    if (ns === undefined) delete stanza.attrs.xmlns;
    else stanza.attrs.xmlns = ns;
    route.stream!.send(xml);
    this.opts.counters?.stanzaOut(entry.written ? "resent" : "sent", stanza.name);
    entry.written = true;
    if (route.confirmation === "sm") route.unconfirmed.push(entry);
    else if (entry.row) {
      route.unconfirmed.push(entry);
      this.probeSoon(route);
    }

    if (this.opts.log.isLevelEnabled("debug")) this.opts.log.debug({ stage: "s2s-out", tag: stanza.name, domain: route.remote }, "stanza sent");
    this.idle(route);
  }

  /** The peer has these: their outbox rows go. */
  private confirmed(route: Route, entries: readonly Entry[]): void {
    if (entries.length === 0) return;
    route.lostStreams = 0;
    this.finish(entries);
    this.pump(route);
  }

  /** After the writes of this turn, one probe covers all of them. */
  private probeSoon(route: Route): void {
    if (route.probe || route.probeScheduled) return;
    route.probeScheduled = true;
    setImmediate(() => {
      route.probeScheduled = false;
      this.probe(route);
    });
  }

  private probe(route: Route): void {
    const stream = route.stream;
    if (!this.current(route) || route.probe || !stream?.isReady || route.confirmation !== "round-trip") return;
    const covered = route.unconfirmed.filter((e) => !e.done);
    if (covered.length === 0) return;
    const probe: Probe = { id: `s2s-${randomBytes(9).toString("base64url")}`, covered, bouncedHere: false };
    route.probe = probe;
    const iq = el("iq", { type: "get", id: probe.id, from: route.local, to: route.remote }, el("ping", { xmlns: NS.PING }));
    void this.opts.request(iq).then(() => true, (err: unknown) =>
      // An error reply is an answer too; no answer in time, or our own bounce, is not.
      !probe.bouncedHere && !(err instanceof StanzaError && err.condition === "remote-server-timeout"),
    ).then((answered) => {
      if (route.probe === probe) route.probe = undefined;
      if (answered) {
        const confirmed = new Set(covered);
        route.unconfirmed = route.unconfirmed.filter((e) => !confirmed.has(e));
        this.confirmed(route, covered);
      } else if (!probe.bouncedHere && route.stream === stream) {
        this.opts.log.info({ stage: "s2s-out", domain: route.remote }, "s2s peer did not answer the probe; stream closed");
        stream.close(new StreamError("connection-timeout"));
      }
      if (route.unconfirmed.length) this.probeSoon(route);
    });
  }

  /** (Re)starts the idle timer of a ready stream. */
  private idle(route: Route): void {
    clearTimeout(route.timer);
    route.timer = setTimeout(() => {
      this.opts.log.info({ stage: "s2s-out", domain: route.remote, local: route.local }, "s2s outgoing stream idle");
      // The peer's stream is not ours to close: the route lets go of it (it is used again when needed).
      if (route.stream instanceof OutgoingStream) route.stream.close();
      else if (route.stream) this.streamEnded(route, route.stream);
    }, this.opts.idleMs);
    route.timer.unref();
  }

  /** While no stream is ready: the queue's oldest stanza bounces at its deadline, the others at theirs. */
  private armDeadline(route: Route): void {
    clearTimeout(route.timer);
    const oldest = route.queue.reduce((min, e) => Math.min(min, e.queuedAt), Infinity);
    route.timer = setTimeout(() => this.expire(route), Math.max(0, oldest + this.opts.queueTimeoutMs - Date.now()));
    route.timer.unref();
  }

  private expire(route: Route): void {
    if (!this.current(route) || route.stream?.isReady) return;
    const now = Date.now();
    const isDue = (e: Entry) => e.queuedAt + this.opts.queueTimeoutMs <= now;
    const due = route.queue.filter(isDue);
    if (due.length === route.queue.length) return this.fail(route, "remote-server-timeout", route.lastFailure ?? "timed out");
    route.queue = route.queue.filter((e) => !isDue(e));
    this.opts.log.info({ stage: "s2s-out", domain: route.remote, reason: route.lastFailure, bounced: due.length }, "s2s stanzas past their deadline; bouncing");
    for (const entry of due) this.bounceEntry(route, entry, "remote-server-timeout");
    this.armDeadline(route);
  }

  private fail(route: Route, condition: "remote-server-not-found" | "remote-server-timeout", reason: string): void {
    if (!this.forget(route)) return;
    const waiting = [...route.unconfirmed, ...route.queue].filter((e) => !e.done);
    if (waiting.length) this.opts.log.info({ stage: "s2s-out", domain: route.remote, condition, reason, bounced: waiting.length }, "s2s route failed; bouncing");
    route.stream?.close();
    route.queue = [];
    route.unconfirmed = [];
    for (const entry of waiting) this.bounceEntry(route, entry, condition);
  }

  private current(route: Route): boolean {
    return this.routes.get(routeKey(route.local, route.remote)) === route;
  }

  /** Removes the route; false when it was already gone. */
  private forget(route: Route): boolean {
    clearTimeout(route.timer);
    clearTimeout(route.retry);
    if (!this.current(route)) return false;
    this.routes.delete(routeKey(route.local, route.remote));
    return true;
  }

  /** Done with these entries (confirmed by the peer, or bounced): their outbox rows go. */
  private finish(entries: readonly Entry[]): void {
    const rows: Array<Promise<number | undefined>> = [];
    for (const entry of entries) {
      if (entry.done) continue;
      entry.done = true;
      if (entry.row) rows.push(entry.row);
    }
    if (rows.length === 0) return;
    void Promise.all(rows)
      .then((ids) => this.opts.outbox.remove(ids.filter((id): id is number => id !== undefined)))
      // The rows stay: after a restart those stanzas go out again (a duplicate, not a loss).
      .catch((err: unknown) => this.opts.log.error({ err, stage: "s2s-out" }, "s2s outbox removal failed"));
  }

  private bounceEntry(route: Route, entry: Entry, condition: "remote-server-not-found" | "remote-server-timeout"): void {
    this.finish([entry]);
    this.bounce(route, entry.stanza, condition);
  }

  private bounce(route: Route | undefined, stanza: Element, condition: "remote-server-not-found" | "remote-server-timeout" | "resource-constraint"): void {
    if (route && isProbe(route, stanza)) route.probe!.bouncedHere = true;
    this.opts.counters?.stanzaOut("bounced", stanza.name);
    this.opts.bounce(stanza, new StanzaError(condition));
  }
}

function routeKey(local: string, remote: string): string {
  return `${local} ${remote}`;
}

/** The route's round-trip probe (its own ping, on its way out or bounced). */
function isProbe(route: Route, stanza: Element): boolean {
  return stanza.name === "iq" && route.probe !== undefined && stanza.attrs.id === route.probe.id;
}
