/**
 * A bound client session (RFC 6120 §7 onward): its JID and presence state, stream management
 * (XEP-0198 1.6.3), the send path with backpressure, and liveness (XEP-0199 pings). It is separate
 * from the transport: when a resumable session's transport drops, the session hibernates, and a
 * resumption attaches another stream to it, over any transport (a phone that drops a WebSocket may
 * resume over TCP).
 *
 * Delivery policy is not decided here: when the session ends with stanzas its client never
 * acknowledged, it emits "session/unacknowledged" and the message module decides where they go.
 */
import { randomBytes } from "node:crypto";
import { el, firstChildElement, serialize, type Element } from "../xml.js";
import { parseElement } from "../xml-parse.js";
import { NS } from "../ns.js";
import type { Jid } from "../jid.js";
import { StanzaError, StreamError, errorReply } from "../../errors.js";
import type { Session, SessionTable } from "../sessions.js";
import type { Router } from "../router.js";
import type { HookBus } from "../../hooks.js";
import type { Logger } from "../../log.js";
import type { StreamEnding, StreamOwner, XmlStream } from "../stream/xml-stream.js";
import type { TransportKind } from "../stream/transport.js";
import { AckError, NS_SM, StreamManagement, parseH, type SmLimits } from "./sm.js";
import { OutboundQueue, type Outgoing } from "./outbound.js";
import type { NonzaHandler } from "./extensions.js";
import type { C2SRegistry } from "./registry.js";
import type { SessionState } from "./handover.js";

/**
 * Output beyond this many buffered bytes waits in the session's queue until the transport drains:
 * a client that reads slowly holds stanzas we can still re-route, not bytes in a socket.
 */
const HIGH_WATER_BYTES = 64 * 1024;
/** Ask for an acknowledgement after this many unacknowledged stanzas, or shortly after the last one. */
const ACK_REQUEST_EVERY = 10;
const ACK_REQUEST_DELAY_MS = 250;

export interface C2SSessionDeps {
  router: Router;
  hooks: HookBus;
  sessions: SessionTable;
  log: Logger;
  limits: { idleMs: number; pingTimeoutMs: number; maxSendBufferBytes: number };
  sm: SmLimits;
  nonzas: ReadonlyMap<string, NonzaHandler>;
  registry: C2SRegistry;
}

/** The owner of a stream that was taken away from a session (it is closing). */
/** A session without stream management reports no 'h', so its stanzas' durable writes hold nothing. */
const NO_HOLD = (): void => {};
const DETACHED: StreamOwner = { header() {}, element() {}, ended() {}, drain() {} };

/** The queue's entry for a stanza: serialized once, with what re-routing needs to know without parsing it. */
function outgoing(stanza: Element, confirm?: (acknowledged: boolean) => void): Outgoing {
  return { name: stanza.name, type: stanza.attrs.type, xml: serialize(stanza), at: Date.now(), confirm };
}

export class C2SSession implements Session, StreamOwner {
  readonly remoteAddress: string;
  readonly directedPresence = new Set<string>();
  readonly flags = new Set<string>();
  presence: Element | undefined;
  priority = 0;
  interested = false;
  /** The XEP-0388 user-agent id the client logged in with, if it gave one. */
  userAgentId: string | undefined;

  private stream: XmlStream | undefined;
  private sm: StreamManagement | undefined;
  private readonly out = new OutboundQueue();
  private over = false;
  private idleTimer: NodeJS.Timeout | undefined;
  private resumeTimer: NodeJS.Timeout | undefined;
  private ackRequestTimer: NodeJS.Timeout | undefined;
  private pinging = false;
  private writableWaiters: Array<() => void> = [];
  /** The end of the chain of this client's stanzas still being routed (see onStanza). */
  private routingTail: Promise<void> | undefined;

  transport: TransportKind;

  /** `stream` is undefined for a session restored from another node (see restored()). */
  constructor(readonly jid: Jid, stream: XmlStream | undefined, private readonly deps: C2SSessionDeps,
    readonly id: string = randomBytes(12).toString("base64url"), remoteAddress = stream?.transport.remoteAddress ?? "") {
    this.stream = stream;
    this.transport = stream?.transport.kind ?? "tcp";
    this.remoteAddress = remoteAddress;
    deps.registry.open.add(this);
    if (!stream) return;
    stream.handTo(this);
    this.scheduleIdleCheck();
  }

  /**
   * A session another node handed over (XEP-0198 §5 across a cluster): hibernated here with the
   * state it had there, resumable by the same id, until its client's stream joins it (resumeOn).
   */
  static restored(state: SessionState, jid: Jid, deps: C2SSessionDeps, remoteAddress: string): C2SSession {
    const session = new C2SSession(jid, undefined, deps, state.sid, remoteAddress);
    session.transport = state.transport;
    session.presence = state.presence === undefined ? undefined : parseElement(state.presence);
    session.priority = state.priority;
    session.interested = state.interested;
    session.userAgentId = state.userAgentId;
    for (const flag of state.flags) session.flags.add(flag);
    for (const to of state.directedPresence) session.directedPresence.add(to);
    session.sm = StreamManagement.restored(state.sm);
    session.out.retainWritten();
    session.out.restore(state.queue, state.written);
    deps.registry.resumable.set(session.sm.id, session);
    session.hibernate();
    return session;
  }

  /** The transport is gone and the session waits to be resumed (XEP-0198 §5). */
  get hibernating(): boolean {
    return this.stream === undefined && !this.over;
  }

  get unacknowledged(): number | undefined {
    return this.sm ? this.out.unacknowledged + this.out.unwritten : undefined;
  }

  /** The XEP-0198 id a client resumes this session with; undefined unless resumption was enabled. */
  get resumeId(): string | undefined {
    return this.sm?.resumable && !this.over ? this.sm.id : undefined;
  }

  // ── sending ────────────────────────────────────────────────────────────────────────────────

  send(stanza: Element): void {
    this.enqueue(outgoing(stanza));
  }

  get confirmsDelivery(): boolean {
    return this.sm !== undefined && !this.over;
  }

  sendConfirmed(stanza: Element): Promise<boolean> | undefined {
    if (!this.confirmsDelivery) {
      this.send(stanza);
      return undefined;
    }
    return new Promise((resolve) => this.enqueue(outgoing(stanza, resolve)));
  }

  writable(): Promise<void> | undefined {
    if (this.over || this.hasRoom()) return undefined;
    return new Promise((resolve) => this.writableWaiters.push(resolve));
  }

  /**
   * Room for more: nothing waits to be written, the transport is not backed up, and what the
   * client has not acknowledged is well below the bound (acks come only as fast as it reads).
   */
  private hasRoom(): boolean {
    const stream = this.stream;
    return stream !== undefined && this.out.unwritten === 0 && stream.transport.buffered < HIGH_WATER_BYTES
      && (!this.sm || this.out.heldChars <= this.deps.limits.maxSendBufferBytes / 2);
  }

  private enqueue(entry: Outgoing): void {
    if (this.over) {
      // A module still held this session: the stanza takes the path of everything else it held.
      entry.confirm?.(false);
      if (!entry.confirm) this.handOff([entry]);
      return;
    }
    const stream = this.stream;
    if (!this.sm && stream && this.out.unwritten === 0 && stream.transport.buffered < HIGH_WATER_BYTES) {
      stream.send(entry.xml);
      this.checkBound();
      return;
    }
    this.out.push(entry);
    if (this.sm && this.out.unacknowledged + this.out.unwritten > this.deps.sm.maxUnacked) {
      // HARDENING §2.2: a full queue ends the stream; its contents are re-routed (P3).
      return this.close(new StreamError("resource-constraint", "Too many unacknowledged stanzas"));
    }
    if (!this.checkBound()) return;
    this.pump();
  }

  /** Writes queued stanzas while the transport has room. */
  private pump(): void {
    const stream = this.stream;
    if (!stream || this.over) return;
    let fresh = 0;
    while (stream.transport.buffered < HIGH_WATER_BYTES) {
      const next = this.out.take();
      if (!next) break;
      stream.send(next.entry.xml);
      if (this.sm && next.first) {
        this.sm.wrote();
        fresh++;
      }
    }
    if (fresh > 0) this.requestAck(fresh);
    if (this.hasRoom()) this.wakeWriters();
  }

  /**
   * Everything held for one client is bounded in characters (CVE-2008-1728 class; issue 21 items 1
   * and 6). Over the bound the session ends once and what it held takes the normal path.
   */
  private checkBound(): boolean {
    const stream = this.stream;
    if (!stream) {
      if (this.out.heldChars <= this.deps.sm.maxHibernatedChars) return true;
      this.deps.log.info({ stage: "sm", jid: this.jid.full, held: this.out.heldChars }, "hibernated session holds too much; ended");
      this.end("hibernated queue full");
      return false;
    }
    // With stream management the queue holds what the transport buffered too; without, add it.
    const held = this.out.heldChars + (this.sm ? 0 : stream.transport.buffered);
    if (held <= this.deps.limits.maxSendBufferBytes) return true;
    stream.abort(new StreamError("resource-constraint", "Send buffer full: the client is not reading"));
    return false;
  }

  private wakeWriters(): void {
    const waiters = this.writableWaiters;
    if (waiters.length === 0) return;
    this.writableWaiters = [];
    for (const wake of waiters) wake();
  }

  /** XEP-0198 §4: ask for acks in batches: at once every ten stanzas, else shortly after the last one. */
  private requestAck(fresh: number): void {
    const sm = this.sm!;
    const before = sm.unacknowledged - fresh;
    // Large stanzas fill the bound long before ten of them are out: then ask at once.
    const heavy = this.out.heldChars > this.deps.limits.maxSendBufferBytes / 4;
    if (heavy || Math.floor(sm.unacknowledged / ACK_REQUEST_EVERY) > Math.floor(before / ACK_REQUEST_EVERY)) {
      this.stream?.send(`<r xmlns='${NS_SM}'/>`);
      return;
    }
    if (this.ackRequestTimer) return;
    this.ackRequestTimer = setTimeout(() => {
      this.ackRequestTimer = undefined;
      if (this.sm && this.sm.unacknowledged > 0 && this.stream) this.stream.send(`<r xmlns='${NS_SM}'/>`);
    }, ACK_REQUEST_DELAY_MS);
    this.ackRequestTimer.unref();
  }

  // ── what the client sends ──────────────────────────────────────────────────────────────────

  header(): void {
    // RFC 6120 §7: the stream was restarted for the last time before binding.
    this.stream?.error(new StreamError("invalid-xml", "No stream restart after binding"));
  }

  element(element: Element): void {
    const ns = element.attrs.xmlns as string | undefined;
    if (ns === NS.CLIENT && (element.name === "message" || element.name === "presence" || element.name === "iq")) return this.onStanza(element);
    if (ns === NS_SM) return this.onSmNonza(element);
    const nonza = ns === undefined ? undefined : this.deps.nonzas.get(ns);
    if (nonza) return nonza(element, this);
    this.stream?.error(new StreamError("unsupported-stanza-type"));
  }

  drain(): void {
    this.pump();
  }

  private onStanza(stanza: Element): void {
    const sm = this.sm;
    const seq = sm?.receivedInbound();
    const done = () => { if (seq !== undefined) sm!.handledInbound(seq); };
    if (stanza.name === "iq" && stanza.attrs.type === "set") {
      const payload = firstChildElement(stanza);
      // RFC 3921 §3 legacy session establishment: accepted as a no-op for old clients.
      if (payload?.name === "session" && payload.attrs.xmlns === NS.SESSION && !stanza.attrs.to) {
        this.send(el("iq", { type: "result", id: stanza.attrs.id }));
        return done();
      }
      if (payload?.name === "bind" && payload.attrs.xmlns === NS.BIND) {
        this.replyError(stanza, new StanzaError("unexpected-request", "A resource is already bound"));
        return done();
      }
    }
    const routingFailed = (err: unknown) => this.deps.log.error({ err, stage: "route", tag: stanza.name }, "routing failed");
    const run = (): Promise<void> | undefined => {
      // P1: the stanza counts as handled (for 'h') only once routing finished with it and every
      // durable write it handed over (Routed.custody) is done. Without stream management there is
      // no 'h' to hold back, but the writes still go apart from routing, as with it. The router
      // turns every failure into an error reply; a failure reaching here is a router bug, and the
      // stanza still counts as handled so that the <a/> answering a later <r/> is not held up
      // forever. Most stanzas hand over one write or none: no array, no allSettled on the hot path.
      let held: Promise<unknown> | undefined;
      const hold = seq === undefined ? NO_HOLD : (written: Promise<unknown>) => { held = held ? Promise.all([held, written]) : written; };
      const inCustody = () => {
        if (held) void held.then(done, done);
        else done();
      };
      let routed;
      try {
        routed = this.deps.router.fromClient(this, stanza, hold);
      } catch (err) {
        routingFailed(err);
        return void inCustody();
      }
      if (routed instanceof Promise) return routed.catch(routingFailed).then(inCustody);
      inCustody();
      return undefined;
    };
    // A client's stanzas are routed in the order it sent them: while one waits (on storage,
    // say), the next ones queue behind it instead of overtaking it.
    const tail = this.routingTail ? this.routingTail.then(run) : run();
    if (!tail) return;
    this.routingTail = tail;
    void tail.then(() => { if (this.routingTail === tail) this.routingTail = undefined; });
  }

  private replyError(stanza: Element, error: StanzaError): void {
    if (stanza.attrs.type === "error" || (stanza.name === "iq" && stanza.attrs.type === "result")) return;
    const reply = errorReply(stanza, error);
    delete reply.attrs.to;
    delete reply.attrs.from;
    this.send(reply);
  }

  // ── stream management (XEP-0198) ───────────────────────────────────────────────────────────

  private smFailed(condition: string): void {
    this.stream?.send(`<failed xmlns='${NS_SM}'><${condition} xmlns='${NS.STANZA_ERRORS}'/></failed>`);
  }

  private onSmNonza(element: Element): void {
    const sm = this.sm;
    switch (element.name) {
      case "enable":
        this.stream?.send(this.enableSm(element));
        return;
      case "r": {
        if (!sm) return this.smFailed("unexpected-request");
        // Answered once everything the client sent before this <r/> is in custody.
        sm.whenReceivedHandled(() => this.stream?.send(`<a xmlns='${NS_SM}' h='${sm.inboundH}'/>`));
        return;
      }
      case "a": {
        if (!sm) return this.smFailed("unexpected-request");
        const h = parseH(element.attrs.h);
        if (h === undefined) return this.stream?.error(new StreamError("undefined-condition", "Invalid 'h'"));
        this.applyAck(h);
        return;
      }
      case "resume":
        // XEP-0198 §5 / Prosody: "Cannot resume another session after a resource is bound".
        return this.smFailed("unexpected-request");
      default:
        this.stream?.error(new StreamError("unsupported-stanza-type"));
    }
  }

  /**
   * XEP-0198 §3 <enable/>, as a nonza or inline in a XEP-0386 bind: returns the <enabled/> (or
   * <failed/>) answer for the caller to send.
   */
  enableSm(element: Element): string {
    // A second enable is an unexpected request.
    if (this.sm) return `<failed xmlns='${NS_SM}'><unexpected-request xmlns='${NS.STANZA_ERRORS}'/></failed>`;
    const resume = element.attrs.resume === "true" || element.attrs.resume === "1";
    const asked = Number(element.attrs.max);
    const { resumeTimeoutMs, maxResumeTimeoutMs } = this.deps.sm;
    const timeout = Number.isFinite(asked) && asked > 0 ? Math.min(asked * 1000, maxResumeTimeoutMs) : resumeTimeoutMs;
    this.sm = new StreamManagement(resume, timeout);
    this.out.retainWritten();
    if (resume) {
      this.deps.registry.resumable.set(this.sm.id, this);
      // On a cluster the directory records the id, so that another node finds where to ask for it.
      void this.deps.hooks.emit("session/changed", { session: this });
    }
    return resume
      ? `<enabled xmlns='${NS_SM}' id='${this.sm.id}' resume='true' max='${Math.round(timeout / 1000)}'/>`
      : `<enabled xmlns='${NS_SM}'/>`;
  }

  /** Applies an acknowledgement; false when it acknowledged more than was sent (the stream is then closed). */
  private applyAck(h: number): boolean {
    let newly: number;
    try {
      newly = this.sm!.ack(h);
    } catch (err) {
      if (!(err instanceof AckError)) throw err;
      this.close(err.streamError("Client acknowledged more stanzas than sent by server"));
      return false;
    }
    for (const done of this.out.acknowledge(newly)) done.confirm?.(true);
    if (this.hasRoom()) this.wakeWriters();
    return true;
  }

  /** Whether a client authenticated as `user` may resume this session (XEP-0198 §5). */
  resumableBy(user: string): boolean {
    return !this.over && this.sm?.resumable === true && this.jid.bare === user;
  }

  /**
   * XEP-0198 §5: another stream takes this session over; everything unacknowledged is sent again,
   * in order. `announce` writes the <resumed/> element (alone, or inside a XEP-0388 <success/>).
   */
  resumeOn(fresh: XmlStream, h: number, announce: (resumed: string) => void = (resumed) => fresh.send(resumed)): void {
    const old = this.stream;
    if (old) {
      // The old transport is half-open: the client has already moved on.
      old.handTo(DETACHED);
      old.error(new StreamError("conflict", "The session was resumed on another connection"));
    }
    clearTimeout(this.resumeTimer);
    this.stream = fresh;
    const moved = this.transport !== fresh.transport.kind;
    this.transport = fresh.transport.kind;
    fresh.handTo(this);
    // A phone that dropped a WebSocket and came back over TCP: the cluster directory records it.
    if (moved) void this.deps.hooks.emit("session/changed", { session: this });
    const sm = this.sm!;
    announce(`<resumed xmlns='${NS_SM}' h='${sm.inboundH}' previd='${sm.id}'/>`);
    if (!this.applyAck(h)) return;
    const resent = this.out.unacknowledged;
    this.out.rewind();
    this.pump();
    if (resent > 0) fresh.send(`<r xmlns='${NS_SM}'/>`);
    this.scheduleIdleCheck();
    this.deps.log.info({ stage: "sm", jid: this.jid.full, resent, transport: fresh.transport.kind }, "session resumed");
  }

  /**
   * XEP-0198 §5 on another node: this node's copy ends, and what it held goes with it instead of
   * being re-routed; contacts are not told anything (the session goes on). A stream still attached
   * (half-open: the client has moved on) is closed. Waits until every stanza its client sent is
   * in custody, so the 'h' that leaves covers them. Undefined when the session ended meanwhile.
   */
  async handOver(): Promise<SessionState | undefined> {
    const sm = this.sm;
    if (this.over || !sm?.resumable) return undefined;
    const old = this.stream;
    if (old) {
      old.handTo(DETACHED);
      old.error(new StreamError("conflict", "The session was resumed on another node"));
      this.stream = undefined;
    }
    clearTimeout(this.idleTimer);
    clearTimeout(this.ackRequestTimer);
    this.ackRequestTimer = undefined;
    // The stream is detached: nothing more arrives, so this waits for a fixed set of stanzas.
    await new Promise<void>((resolve) => sm.whenReceivedHandled(resolve));
    // Ended meanwhile, or its client resumed it here after all: nothing leaves.
    if (this.over || this.stream) return undefined;
    this.over = true;
    clearTimeout(this.resumeTimer);
    const { registry, sessions } = this.deps;
    registry.open.delete(this);
    registry.resumable.delete(sm.id);
    sessions.remove(this);
    const written = this.out.unacknowledged;
    const queue = this.out.drain();
    this.wakeWriters();
    return {
      jid: this.jid.full, sid: this.id, sm: sm.snapshot(), queue, written,
      presence: this.presence?.toString(), priority: this.priority, interested: this.interested,
      flags: [...this.flags], directedPresence: [...this.directedPresence], userAgentId: this.userAgentId, transport: this.transport,
    };
  }

  /** The transport dropped under a resumable session: keep the session, queue what arrives. */
  private hibernate(): void {
    this.stream = undefined;
    clearTimeout(this.idleTimer);
    clearTimeout(this.ackRequestTimer);
    this.ackRequestTimer = undefined;
    const sm = this.sm!;
    this.deps.log.info({ stage: "sm", jid: this.jid.full, seconds: sm.resumeTimeoutMs / 1000, held: this.out.unacknowledged + this.out.unwritten }, "session hibernated");
    this.resumeTimer = setTimeout(() => {
      this.deps.log.info({ stage: "sm", jid: this.jid.full }, "resumption timed out");
      this.end("resumption timed out");
    }, sm.resumeTimeoutMs);
    this.resumeTimer.unref();
    this.checkBound();
  }

  // ── liveness (XEP-0199 §4.2) ───────────────────────────────────────────────────────────────

  private scheduleIdleCheck(): void {
    const { idleMs, pingTimeoutMs } = this.deps.limits;
    clearTimeout(this.idleTimer);
    const stream = this.stream;
    if (!stream) return;
    const wait = Math.max(1000, stream.transport.lastInbound + idleMs - Date.now());
    this.idleTimer = setTimeout(() => {
      if (this.stream !== stream || this.over) return;
      if (Date.now() - stream.transport.lastInbound < idleMs || this.pinging) return this.scheduleIdleCheck();
      // The server pings a silent client; no answer in time means a dead connection.
      this.pinging = true;
      const ping = el("iq", { type: "get", from: this.jid.domain, to: this.jid.full }, el("ping", { xmlns: NS.PING }));
      this.deps.router.request(ping, pingTimeoutMs).then(
        () => { this.pinging = false; this.scheduleIdleCheck(); },
        (err) => {
          this.pinging = false;
          if (err instanceof StanzaError && err.condition === "remote-server-timeout") {
            if (this.stream === stream) stream.error(new StreamError("connection-timeout", "No answer to ping"));
          } else this.scheduleIdleCheck(); // an error reply is still a sign of life
        },
      );
    }, wait);
    this.idleTimer.unref();
  }

  // ── ending ─────────────────────────────────────────────────────────────────────────────────

  /** Session.close: with an error, a stream error; otherwise a clean close. A hibernated session just ends. */
  close(error?: StreamError): void {
    if (this.over) return;
    const stream = this.stream;
    if (!stream) return this.end(error ? error.condition : "closed by server");
    if (error) stream.error(error);
    else stream.close();
  }

  ended(ending: StreamEnding): void {
    if (ending.kind === "lost" && this.sm?.resumable) return this.hibernate();
    const reason = ending.kind === "lost" ? "connection lost"
      : ending.kind === "peer-closed" ? "closed by client"
        : ending.error ? ending.error.condition : "closed by server";
    this.end(reason);
  }

  private end(reason: string): void {
    if (this.over) return;
    this.over = true;
    this.stream = undefined;
    clearTimeout(this.idleTimer);
    clearTimeout(this.resumeTimer);
    clearTimeout(this.ackRequestTimer);
    const { registry, sessions, hooks, log } = this.deps;
    registry.open.delete(this);
    if (this.sm) registry.resumable.delete(this.sm.id);
    const removed = sessions.remove(this);
    // Tracked so that shutdown waits for it (unavailable broadcast, last activity) before storage closes.
    registry.track(hooks.emit("session/closed", { session: this, reason: removed ? reason : "replaced" }));
    const held = this.out.drain();
    const unconfirmed: Outgoing[] = [];
    for (const entry of held) {
      // Whoever asked for confirmation still holds the stanza (e.g. an offline row) and keeps it.
      if (entry.confirm) entry.confirm(false);
      else unconfirmed.push(entry);
    }
    this.handOff(unconfirmed);
    this.wakeWriters();
    log.info({ stage: "session", jid: this.jid.full, reason: removed ? reason : "replaced", held: held.length }, "session ended");
  }

  private handOff(stanzas: Outgoing[]): void {
    if (stanzas.length === 0) return;
    this.deps.registry.track(this.deps.hooks.emit("session/unacknowledged", { session: this, stanzas }));
  }
}
