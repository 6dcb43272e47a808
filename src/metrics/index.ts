/**
 * Operational metrics in the Prometheus text exposition format (prom-client): one Metrics object
 * per server, with its own registry, created in the composition root and handed to what it
 * observes. It watches through the hook bus (stanza filters, session and module events), a storage
 * decorator (./storage.ts) and two small interfaces the transport and the router call
 * (ConnectionMetrics, RoutingMetrics); gauges that are cheap to compute (sessions, stream
 * management queues, stored offline messages) are read when scraped, so they never drift.
 */
import { collectDefaultMetrics, Counter, Gauge, Registry } from "prom-client";
import { Priority, type HookBus } from "../hooks.js";
import type { Session, SessionView } from "../xmpp/sessions.js";
import type { Element } from "../xmpp/xml.js";
import { BoundedMap } from "../bounded-map.js";
import { BoundCounter, BoundHistogram, type BoundCounterChild } from "./bound.js";
import { PARLEY_VERSION } from "../version.js";

export type Transport = "tcp" | "websocket" | "bosh";
const TRANSPORTS: readonly Transport[] = ["tcp", "websocket", "bosh"];

/** What a transport listener reports: a client connection accepted, and the same one gone. */
export interface ConnectionMetrics {
  opened(transport: Transport): void;
  closed(transport: Transport): void;
}

/**
 * How the router disposed of a stanza: written to a local session or component (delivered), kept
 * in offline storage (offline), answered with an error (bounced), or failed inside the server
 * (error: an internal-server-error reply).
 */
export type RoutingOutcome = "delivered" | "offline" | "bounced" | "error";
export interface RoutingMetrics {
  routed(outcome: RoutingOutcome, kind: string): void;
}

/** Records one store operation's duration and outcome. */
export type OperationRecorder = (seconds: number, failed: boolean) => void;

/** The storage decorator asks once per store method for its recorder, and calls it after every operation. */
export interface StorageMetrics {
  operation(store: string, operation: string): OperationRecorder;
  /** An upload record was committed (XEP-0363): the file is complete. */
  uploaded(bytes: number): void;
}

const KINDS = ["message", "presence", "iq"] as const;
type Kind = (typeof KINDS)[number];
const OUTCOMES: readonly RoutingOutcome[] = ["delivered", "offline", "bounced", "error"];
const PUSH = "urn:xmpp:push:0";
/** Stanza rates on the status page: the counters sampled this often, over this many samples. */
const SAMPLE_MS = 5_000;
const SAMPLES = 13;

export interface MetricsSources {
  sessions: SessionView;
  /** The transport a session arrived on. */
  transportOf(session: Session): Transport;
  /** XEP-0198 stanzas sent and not yet acknowledged, per session with stream management. */
  smQueues(): Iterable<number>;
  /** Offline messages in storage now. */
  offlineStored(): Promise<number>;
  /** A push the push module sends counts as failed when no answer came within this time (absent: push is off). */
  pushTimeoutMs?: number;
  /** The s2s streams up now: remote domain and how it authenticated. */
  federation(): { outgoing: ReadonlyArray<{ local: string; remote: string; state: string; method?: string }>; incoming: ReadonlyArray<{ local: string | undefined; domains: ReadonlyArray<{ domain: string; method: string }> }> };
}

/** Counter children by label value, bound once (./bound.ts): the hot path does not hash label sets. */
function byKind(counter: BoundCounter, ...outer: string[]): Record<Kind, BoundCounterChild> {
  // Created here, so each is in the exposition from the start, at 0.
  const child = (kind: Kind) => counter.labels(...outer, kind);
  return { message: child("message"), presence: child("presence"), iq: child("iq") };
}

export class Metrics implements ConnectionMetrics, RoutingMetrics, StorageMetrics {
  readonly registry = new Registry();
  private readonly startedAt = Date.now();
  private readonly connectionsOpened: Counter<"transport">;
  private readonly connectionsOpen: Gauge<"transport">;
  private readonly stanzasIn: Record<Kind, BoundCounterChild>;
  private readonly stanzasOut: Record<Kind, BoundCounterChild>;
  private readonly outcomes: Record<RoutingOutcome, Record<Kind, BoundCounterChild>>;
  private readonly storageSeconds: BoundHistogram;
  private readonly storageErrors: Counter<"store" | "operation">;
  private readonly uploadBytes: Counter;
  private readonly uploads: Counter;
  private readonly pushes: Counter<"outcome">;
  private readonly s2sStreams: Counter<"direction" | "outcome">;
  private readonly s2sStanzas: Counter<"outcome" | "kind">;
  private readonly totals = { in: 0, out: 0 };
  private readonly samples: Array<{ at: number; in: number; out: number }> = [];
  /** Push IQs in flight (id → when sent), to count the ones that fail (XEP-0357 §7). */
  private readonly pushesInFlight = new BoundedMap<string, number>(10_000);
  private readonly stops: Array<() => void> = [];
  private sources: MetricsSources | undefined;

  constructor() {
    const registers = [this.registry];
    // Event-loop lag, GC pauses, heap, CPU, file descriptors: prom-client's default set.
    collectDefaultMetrics({ register: this.registry });
    new Gauge({ name: "parley_info", help: "Parley's version (always 1)", labelNames: ["version"], registers }).labels(PARLEY_VERSION).set(1);
    this.connectionsOpened = new Counter({ name: "parley_connections_opened_total", help: "Client connections accepted, by transport", labelNames: ["transport"], registers });
    this.connectionsOpen = new Gauge({ name: "parley_connections", help: "Client connections open now (authenticated or not), by transport", labelNames: ["transport"], registers });
    for (const t of TRANSPORTS) { this.connectionsOpened.labels(t).inc(0); this.connectionsOpen.labels(t).set(0); }
    const metrics = this;
    new Gauge({
      name: "parley_sessions", help: "Bound client sessions, by transport and state (active, or hibernating: waiting for XEP-0198 resumption)",
      labelNames: ["transport", "state"], registers,
      collect() {
        this.reset();
        for (const t of TRANSPORTS) for (const state of ["active", "hibernating"]) this.labels(t, state).set(0);
        const sources = metrics.sources;
        if (!sources) return;
        for (const s of sources.sessions.all()) this.labels(sources.transportOf(s), s.hibernating ? "hibernating" : "active").inc();
      },
    });
    new Gauge({
      name: "parley_sm_queue_stanzas", help: "XEP-0198 stanzas sent and not yet acknowledged, summed over sessions", registers,
      collect() {
        let total = 0;
        for (const n of metrics.sources?.smQueues() ?? []) total += n;
        this.set(total);
      },
    });
    new Gauge({
      name: "parley_sm_queue_max_stanzas", help: "The longest XEP-0198 unacknowledged queue of any session", registers,
      collect() {
        let max = 0;
        for (const n of metrics.sources?.smQueues() ?? []) max = Math.max(max, n);
        this.set(max);
      },
    });
    new Gauge({
      name: "parley_offline_messages", help: "Messages in offline storage (XEP-0160), all users", registers,
      async collect() {
        if (metrics.sources) this.set(await metrics.sources.offlineStored());
      },
    });
    new Gauge({
      name: "parley_s2s_connections", help: "Server-to-server streams up now, by direction, local and remote domain, state and authentication method",
      labelNames: ["direction", "local", "remote", "state", "method"], registers,
      collect() {
        this.reset();
        const federation = metrics.sources?.federation();
        for (const o of federation?.outgoing ?? []) this.labels("out", o.local, o.remote, o.state, o.method ?? "").inc();
        for (const i of federation?.incoming ?? []) for (const d of i.domains) this.labels("in", i.local ?? "", d.domain, "ready", d.method).inc();
      },
    });
    const stanzas = (direction: "in" | "out", help: string) => byKind(new BoundCounter({ name: `parley_stanzas_${direction}_total`, help, labelNames: ["kind"] }, this.registry));
    this.stanzasIn = stanzas("in", "Stanzas entering the router (from clients, components and the server itself), by kind");
    this.stanzasOut = stanzas("out", "Stanzas written to client sessions through the router, by kind");
    const outcomes = new BoundCounter({ name: "parley_routing_outcomes_total", help: "What became of routed stanzas: delivered, offline, bounced, error", labelNames: ["outcome", "kind"] }, this.registry);
    this.outcomes = Object.fromEntries(OUTCOMES.map((o) => [o, byKind(outcomes, o)])) as Metrics["outcomes"];
    this.storageSeconds = new BoundHistogram({
      name: "parley_storage_operation_seconds", help: "Storage operation latency, by store and operation (message record writes and acknowledgements include their group commit)",
      labelNames: ["store", "operation"], buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    }, this.registry);
    this.storageErrors = new Counter({ name: "parley_storage_operation_errors_total", help: "Storage operations that failed, by store and operation", labelNames: ["store", "operation"], registers });
    this.s2sStreams = new Counter({ name: "parley_s2s_streams_total", help: "Server-to-server streams by direction and how they authenticated (sasl-external, dialback) or failed", labelNames: ["direction", "outcome"], registers });
    this.s2sStanzas = new Counter({ name: "parley_s2s_stanzas_out_total", help: "Stanzas for remote servers: sent, resent on a new stream because the peer had not confirmed them, or bounced because no stream could be set up", labelNames: ["outcome", "kind"], registers });
    this.uploadBytes = new Counter({ name: "parley_upload_bytes_total", help: "Bytes of completed HTTP uploads (XEP-0363)", registers });
    this.uploads = new Counter({ name: "parley_uploads_total", help: "Completed HTTP uploads (XEP-0363)", registers });
    this.pushes = new Counter({ name: "parley_pushes_total", help: "Push notifications to app servers (XEP-0357): sent, or failed (error reply or no answer)", labelNames: ["outcome"], registers });
    this.pushes.labels("sent").inc(0);
    this.pushes.labels("failed").inc(0);
  }

  /** Subscribes to the server's hooks and reads its gauges from `sources`; undone by stop(). */
  observe(hooks: HookBus, sources: MetricsSources): void {
    this.sources = sources;
    // Counted first, before any filter drops a stanza.
    this.stops.push(hooks.filter("stanza/in", (routed) => {
      const { stanza } = routed;
      const counter = this.stanzasIn[stanza.name as Kind];
      if (counter) {
        counter.inc();
        this.totals.in++;
        if (stanza.name === "iq" && !routed.origin) this.watchPush(stanza);
      }
      return routed;
    }, Priority.FIRST));
    // Counted last, after CSI has held back what it holds (held stanzas it releases later bypass the filters).
    this.stops.push(hooks.filter("stanza/out", (out) => {
      const counter = this.stanzasOut[out.stanza.name as Kind];
      if (counter) {
        counter.inc();
        this.totals.out++;
      }
      return out;
    }, Priority.LAST));
    this.stops.push(hooks.on("offline/stored", () => { this.outcomes.offline.message.inc(); }));
    this.stops.push(hooks.on("push/sent", () => { this.pushes.labels("sent").inc(); }));
    const sampler = setInterval(() => this.sample(), SAMPLE_MS);
    sampler.unref();
    this.stops.push(() => clearInterval(sampler));
    this.sample();
  }

  stop(): void {
    while (this.stops.length) this.stops.pop()!();
  }

  opened(transport: Transport): void {
    this.connectionsOpened.labels(transport).inc();
    this.connectionsOpen.labels(transport).inc();
  }

  closed(transport: Transport): void {
    this.connectionsOpen.labels(transport).dec();
  }

  /** S2S counters (src/xmpp/s2s/pool.ts, incoming.ts). */
  outgoing(outcome: string): void {
    this.s2sStreams.labels("out", outcome).inc();
  }

  incoming(outcome: string): void {
    this.s2sStreams.labels("in", outcome).inc();
  }

  stanzaOut(outcome: string, kind: string): void {
    this.s2sStanzas.labels(outcome, kind).inc();
  }

  routed(outcome: RoutingOutcome, kind: string): void {
    this.outcomes[outcome][kind as Kind]?.inc();
  }

  operation(store: string, operation: string): OperationRecorder {
    // Bound at the first operation, not here: a store method never called stays out of the exposition.
    let timings: ReturnType<BoundHistogram["labels"]> | undefined;
    return (seconds, failed) => {
      (timings ??= this.storageSeconds.labels(store, operation)).observe(seconds);
      // Rare, and prom-client's own counter, so failures keep their existing exposition.
      if (failed) this.storageErrors.labels(store, operation).inc();
    };
  }

  uploaded(bytes: number): void {
    this.uploads.inc();
    this.uploadBytes.inc(bytes);
  }

  /** The exposition text and its content type. */
  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }

  get uptimeSeconds(): number {
    return Math.floor((Date.now() - this.startedAt) / 1000);
  }

  /** Stanzas per second in and out over the last minute (or since start), for the status page. */
  stanzaRates(): { in: number; out: number; seconds: number } {
    const now = { at: Date.now(), ...this.totals };
    const first = this.samples[0] ?? now;
    const seconds = (now.at - first.at) / 1000;
    if (seconds <= 0) return { in: 0, out: 0, seconds: 0 };
    return { in: (now.in - first.in) / seconds, out: (now.out - first.out) / seconds, seconds };
  }

  private sample(): void {
    this.samples.push({ at: Date.now(), ...this.totals });
    if (this.samples.length > SAMPLES) this.samples.shift();
    this.expirePushes();
  }

  /**
   * Pushes are observed on the wire: the push module publishes a XEP-0357 notification with an
   * IQ set from the user's bare JID; its error reply (or silence past the module's timeout) is a
   * failure. Successes come from the module's own "push/sent" event.
   */
  private watchPush(iq: Element): void {
    const id = iq.attrs.id;
    const type = iq.attrs.type;
    if (id === undefined) return;
    if (type === "set") {
      const item = iq.getChild("pubsub", "http://jabber.org/protocol/pubsub")?.getChild("publish")?.getChild("item");
      if (item?.getChild("notification", PUSH)) this.pushesInFlight.set(id, Date.now());
      return;
    }
    if ((type === "result" || type === "error") && this.pushesInFlight.has(id)) {
      this.pushesInFlight.delete(id);
      if (type === "error") this.pushes.labels("failed").inc();
    }
  }

  private expirePushes(): void {
    const timeout = this.sources?.pushTimeoutMs;
    if (timeout === undefined) return;
    const cutoff = Date.now() - timeout;
    for (const [id, sentAt] of this.pushesInFlight) {
      if (sentAt >= cutoff) break; // insertion order is time order
      this.pushesInFlight.delete(id);
      this.pushes.labels("failed").inc();
    }
  }
}
