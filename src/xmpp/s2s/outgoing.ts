/**
 * One outgoing server-to-server stream (RFC 6120 §4–§6, version of March 2011) from a local
 * domain to a remote one: TCP to the resolved targets in order, STARTTLS, then authentication —
 * SASL EXTERNAL with our certificate (RFC 6120 §6.4, XEP-0178 1.2) when the receiving server offers
 * it, else Server Dialback (XEP-0220 1.1.1).
 *
 * TLS is required between servers here (RFC 7590, RFC 6120 §5): a receiving server that does not
 * offer STARTTLS fails the stream. XEP-0368 1.1.0 targets speak TLS from the first byte (ALPN
 * "xmpp-server"). Whether a remote certificate that does not verify may
 * still be used with dialback is the caller's policy (`requireValidCertificate`).
 *
 * XEP-0198 Stream Management 1.6.3 where the receiving server offers it, without resumption (a
 * new stream resends what was not acknowledged: ./pool.ts): <enable/> once authenticated — §3,
 * the initiating entity "MUST NOT attempt to negotiate stream management until it is
 * authenticated", and for dialback that is after <db:result type='valid'/> — then one <r/> at a
 * time while stanzas are unacknowledged; each <a h/> reports how many more the peer has. The
 * counters are the c2s ones (../c2s/sm.ts).
 *
 * XEP-0288 1.0.1 (./bidi.ts) where the receiving server offers it and s2s.bidi is on: <bidi/> goes
 * before SASL or dialback, and once authenticated the peer may send us stanzas on this stream
 * too — only from the domain we connected to, to the domain we authenticated as, through the
 * checks and limits of an incoming stream (./inbound.ts), counted for XEP-0198 when enabled.
 *
 * The stream also serves XEP-0220 §2.3 verification requests (`verify`): it then sends one
 * <db:verify/> after TLS, reports the answer and closes.
 */
import { connect as netConnect, type Socket } from "node:net";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import type { X509Certificate } from "node:crypto";
import type { ParserLimits, StreamHeader } from "../parser.js";
import { el, type Element } from "../xml.js";
import { NS } from "../ns.js";
import { StreamError } from "../../errors.js";
import type { Logger } from "../../log.js";
import { policyOptions, type TlsPolicy } from "../tls.js";
import { TcpTransport } from "../stream/tcp.js";
import { XmlStream, checkHeader, type StreamEnding, type StreamOwner } from "../stream/xml-stream.js";
import { NS_DIALBACK, NS_DIALBACK_FEATURE } from "./dialback.js";
import { verifyServerCertificate } from "./pkix.js";
import { AckError, NS_SM, StreamManagement, parseH } from "../c2s/sm.js";
import type { Target } from "./resolve.js";
import { InboundStanzas, isServerStanza, type InboundOptions } from "./inbound.js";
import { BIDI_REQUEST, NS_BIDI_FEATURE, reverseStanzaRefusal } from "./bidi.js";

export type AuthMethod = "sasl-external" | "dialback";

export interface OutgoingOptions {
  local: string;
  remote: string;
  targets: readonly Target[];
  limits: ParserLimits;
  connectTimeoutMs: number;
  trust: readonly X509Certificate[];
  tlsPolicy: TlsPolicy;
  /** Our certificate for `local`, presented as the TLS client certificate (for SASL EXTERNAL). */
  clientCertificate: { cert: string; key: string };
  /** XEP-0220: refuse a receiving server whose certificate does not verify, instead of dialback. */
  requireValidCertificate: boolean;
  /** Enable XEP-0198 when the receiving server offers it. */
  streamManagement: boolean;
  /** The dialback key for (receiving, originating, stream id): see ./dialback.ts. */
  dialbackKey: (receiving: string, originating: string, streamId: string) => string;
  /** XEP-0288: ask for a bidirectional stream, and route what the peer sends back this way; undefined: s2s.bidi is off. */
  bidi: InboundOptions | undefined;
  log: Logger;
}

/**
 * How the pool learns that the peer has what was written: XEP-0198 acks, or (the peer does not do
 * stream management) a round trip it makes itself (./pool.ts).
 */
export type Confirmation = "sm" | "round-trip";

export interface OutgoingEvents {
  /** Authenticated (and stream management negotiated, when offered): stanzas may be sent. */
  ready(method: AuthMethod, confirmation: Confirmation): void;
  /** XEP-0198: the peer acknowledged `count` more of the stanzas written, in order. */
  acked(count: number): void;
  /** XEP-0288: the peer sent a stanza back on this stream, which is then in use both ways. */
  received(): void;
  /** The stream ended; `failure` says why when it never became ready. */
  closed(failure: string | undefined): void;
}

/** A db:verify to send instead of stanzas, and where its answer goes. */
export interface VerifyRequest {
  streamId: string;
  key: string;
  answer(valid: boolean): void;
}

type State = "connecting" | "pre-tls" | "auth" | "sasl" | "dialback" | "enabling-sm" | "ready" | "verifying" | "closed";

const NS_TLS = NS.TLS;
/** An <r/> unanswered this long means a peer that takes stanzas without acknowledging them (as long as the pool's ping round trip). */
const ACK_TIMEOUT_MS = 60_000;

export class OutgoingStream implements StreamOwner {
  private state: State = "connecting";
  private stream: XmlStream | undefined;
  private socket: Socket | undefined;
  /** The receiving server's stream id: the one dialback keys are bound to. */
  private peerId = "";
  private failure: string | undefined;
  private method: AuthMethod | undefined;
  private certificateVerified = false;
  private dialbackOffered = false;
  /** The receiving server's last features offered XEP-0198. */
  private smOffered = false;
  private sm: StreamManagement | undefined;
  /** An <r/> is out and not yet answered: one at a time is enough, its <a/> covers all before it. */
  private ackRequested = false;
  private ackTimer: NodeJS.Timeout | undefined;
  /** Bounds a peer that goes silent during negotiation. */
  private negotiation: NodeJS.Timeout | undefined;
  /** XEP-0288: what the peer sends back on this stream, once we asked for it with <bidi/>. */
  private inbound: InboundStanzas | undefined;

  constructor(private readonly opts: OutgoingOptions, private readonly events: OutgoingEvents, private readonly verify?: VerifyRequest) {
    this.tryTarget(0);
  }

  get authMethod(): AuthMethod | undefined {
    return this.method;
  }

  get isReady(): boolean {
    return this.state === "ready";
  }

  /** XEP-0288: the peer may send us stanzas on this stream too. */
  get bidirectional(): boolean {
    return this.inbound !== undefined;
  }

  /** Writes one stanza (counted for XEP-0198 when enabled). */
  send(xml: string): void {
    if (!this.stream) return;
    this.stream.send(xml);
    if (!this.sm) return;
    this.sm.wrote();
    this.requestAck();
  }

  /** After the writes of this turn, one <r/>: the peer's <a/> then covers all of them. */
  private requestAck(): void {
    if (this.ackRequested) return;
    this.ackRequested = true;
    setImmediate(() => {
      if (this.state !== "ready") return;
      this.stream?.send(`<r xmlns='${NS_SM}'/>`);
      // What it did not acknowledge goes out again on a new stream (./pool.ts).
      this.ackTimer = setTimeout(() => this.close(new StreamError("connection-timeout", "No acknowledgement")), ACK_TIMEOUT_MS);
      this.ackTimer.unref();
    });
  }

  get buffered(): number {
    return this.stream?.transport.buffered ?? 0;
  }

  close(error?: StreamError): void {
    if (!this.stream) {
      this.socket?.destroy();
      return this.end(error?.condition ?? "closed");
    }
    if (error) this.stream.error(error, this.opts.local);
    else this.stream.close();
  }

  private tryTarget(index: number): void {
    const target = this.opts.targets[index];
    if (!target) return this.end(this.failure ?? "no target answered");
    const { log, remote } = this.opts;
    log.debug({ stage: "s2s-connect", domain: remote, host: target.host, port: target.port }, "s2s connecting");
    // XEP-0368: TLS from the first byte, ALPN "xmpp-server"; otherwise plain TCP and STARTTLS.
    const socket: Socket = target.directTls
      ? tlsConnect({ host: target.host, port: target.port, ...this.tlsOptions(), ALPNProtocols: ["xmpp-server"] })
      : netConnect({ host: target.host, port: target.port });
    this.socket = socket;
    // Writes are corked per tick (../stream/tcp.ts); Nagle would hold an <r/> or a stanza behind an
    // unacknowledged segment for as long as the peer delays its ACK (~40 ms).
    socket.setNoDelay(true);
    const timer = setTimeout(() => socket.destroy(new Error("connect timeout")), this.opts.connectTimeoutMs);
    timer.unref();
    const failed = (err: Error) => {
      clearTimeout(timer);
      this.failure = `${target.host}:${target.port}: ${err.message}`;
      log.info({ stage: "s2s-connect", domain: remote, host: target.host, port: target.port, err: err.message }, "s2s connect failed");
      this.tryTarget(index + 1);
    };
    socket.once("error", failed);
    socket.once(target.directTls ? "secureConnect" : "connect", () => {
      clearTimeout(timer);
      socket.off("error", failed);
      if (this.state === "closed") return void socket.destroy();
      const transport = new TcpTransport(socket, this.opts.limits, target.directTls ? undefined : (plain) => this.upgrade(plain));
      this.stream = new XmlStream(transport, NS.SERVER, log, this, { namespaces: { db: NS_DIALBACK }, initiating: true });
      this.state = target.directTls ? "auth" : "pre-tls";
      this.open();
      // The caller's queue deadline bounds the whole; this frees a stream whose peer went silent.
      this.negotiation = setTimeout(() => this.close(new StreamError("connection-timeout")), this.opts.connectTimeoutMs * 3);
      this.negotiation.unref();
    });
  }

  /** Verification is ours (./pkix.ts), so that the outcome can choose dialback (XEP-0344 §2.3). */
  private tlsOptions() {
    const { remote, clientCertificate, tlsPolicy } = this.opts;
    return { servername: remote, ...clientCertificate, ...policyOptions(tlsPolicy), rejectUnauthorized: false };
  }

  private upgrade(plain: Socket): TLSSocket {
    return tlsConnect({ socket: plain, ...this.tlsOptions() });
  }

  private open(): void {
    this.stream!.open(this.opts.local, "en", true, this.opts.remote);
  }

  header(header: StreamHeader): void {
    const invalid = checkHeader(header, { contentNs: NS.SERVER, requireVersion: true });
    if (invalid) return this.stream!.error(invalid);
    // RFC 6120 §4.7.1: the receiving entity's 'from' is the domain we asked for.
    const from = header.attrs.from?.toLowerCase();
    if (from !== undefined && from !== this.opts.remote) return this.stream!.error(new StreamError("invalid-from", "Not the server we called"));
    this.peerId = header.attrs.id ?? "";
  }

  element(element: Element): void {
    const stream = this.stream!;
    if (element.is("features", NS.STREAMS)) return this.features(element);
    // XEP-0288: stanzas come back once authenticated, possibly before our <enable/> is answered.
    if (this.inbound && isServerStanza(element) && (this.state === "ready" || this.state === "enabling-sm")) {
      this.events.received();
      return this.inbound.stanza(element);
    }
    if (element.is("error", NS.STREAMS)) {
      // The close follows; the condition says why, for the log and the bounces' reason.
      this.failure = `peer stream error ${element.children.find((c) => typeof c !== "string")?.name ?? ""}`;
      return;
    }
    switch (this.state) {
      case "pre-tls":
        if (element.is("proceed", NS_TLS)) {
          stream.transport.startTls!();
          stream.restart(this.opts.limits);
          return this.open();
        }
        return stream.error(new StreamError("policy-violation", "STARTTLS refused"));
      case "sasl":
        if (element.is("success", NS.SASL)) {
          this.method = "sasl-external";
          // RFC 6120 §6.4.6: after success, a new stream on the same connection.
          stream.restart(this.opts.limits);
          return this.open();
        }
        if (element.is("failure", NS.SASL)) {
          this.opts.log.info({ stage: "s2s-auth", domain: this.opts.remote, condition: element.children.find((c) => typeof c !== "string")?.toString() }, "SASL EXTERNAL refused");
          if (this.dialbackOffered) return this.dialback();
          return stream.error(new StreamError("not-authorized", "SASL EXTERNAL refused and no dialback"));
        }
        return stream.error(new StreamError("not-authorized"));
      case "dialback":
        if (element.is("result", NS_DIALBACK) && element.attrs.from === this.opts.remote && element.attrs.to === this.opts.local) {
          if (element.attrs.type === "valid") {
            this.method = "dialback";
            return this.authenticated();
          }
          this.failure = `dialback ${element.attrs.type ?? "answer"}`;
          return stream.close();
        }
        return stream.error(new StreamError("not-authorized"));
      case "verifying":
        if (element.is("verify", NS_DIALBACK) && element.attrs.id === this.verify!.streamId && element.attrs.from === this.opts.remote) {
          this.verify!.answer(element.attrs.type === "valid");
          this.failure = "verification done";
          return stream.close();
        }
        return stream.error(new StreamError("not-authorized"));
      case "enabling-sm":
        if (element.is("enabled", NS_SM)) {
          this.sm = new StreamManagement(false, 0);
          return this.becomeReady("sm");
        }
        if (element.is("failed", NS_SM)) return this.becomeReady("round-trip");
        return stream.error(new StreamError("not-authorized"));
      case "ready":
        if (element.attrs.xmlns === NS_SM && this.sm) return this.smElement(element);
        // Without XEP-0288 a receiving server sends us nothing but stream-level elements.
        return stream.error(new StreamError("unsupported-stanza-type", "This stream is outgoing only"));
      default:
        return stream.error(new StreamError("not-authorized"));
    }
  }

  /** XEP-0198 §4: <a/> acknowledges our stanzas; an <r/> gets the count of those the peer sent back (XEP-0288), once routed. */
  private smElement(element: Element): void {
    const sm = this.sm!;
    if (element.name === "r") {
      const answer = () => this.stream!.send(`<a xmlns='${NS_SM}' h='${sm.inboundH}'/>`);
      return this.inbound ? this.inbound.afterRouted(answer) : answer();
    }
    if (element.name !== "a") return this.stream!.error(new StreamError("unsupported-stanza-type"));
    const h = parseH(element.attrs.h);
    if (h === undefined) return this.stream!.error(new StreamError("undefined-condition", "Invalid 'h'"));
    let newly: number;
    try {
      newly = sm.ack(h);
    } catch (err) {
      if (!(err instanceof AckError)) throw err;
      return this.stream!.error(err.streamError("Acknowledged more stanzas than were sent"));
    }
    this.ackRequested = false;
    clearTimeout(this.ackTimer);
    if (sm.unacknowledged > 0) this.requestAck();
    if (newly > 0) this.events.acked(newly);
  }

  private features(features: Element): void {
    const stream = this.stream!;
    this.smOffered = this.opts.streamManagement && features.getChild("sm", NS_SM) !== undefined;
    if (this.method === "sasl-external") return this.authenticated();
    if (!stream.transport.secure) {
      if (!features.getChild("starttls", NS_TLS)) return stream.error(new StreamError("policy-violation", "TLS is required between servers (RFC 7590)"));
      return stream.send(`<starttls xmlns='${NS_TLS}'/>`);
    }
    this.dialbackOffered = features.getChild("dialback", NS_DIALBACK_FEATURE) !== undefined;
    const verdict = verifyServerCertificate(stream.transport.tls?.peerCertificates() ?? [], this.opts.remote, this.opts.trust);
    this.certificateVerified = verdict.ok;
    if (!verdict.ok) {
      this.opts.log.info({ stage: "s2s-tls", domain: this.opts.remote, reason: verdict.reason }, "remote certificate not verified");
      if (this.opts.requireValidCertificate) {
        this.failure = `certificate: ${verdict.reason}`;
        return stream.error(new StreamError("policy-violation", "Certificate not trusted"));
      }
    }
    if (this.verify) {
      this.state = "verifying";
      return stream.send(el("db:verify", { from: this.opts.local, to: this.opts.remote, id: this.verify.streamId }, this.verify.key).toString());
    }
    if (this.opts.bidi && !this.inbound && features.getChild("bidi", NS_BIDI_FEATURE)) this.askBidi(this.opts.bidi);
    const mechanisms = features.getChild("mechanisms", NS.SASL)?.getChildren("mechanism").map((m) => m.text().trim()) ?? [];
    // Only an authenticated remote certificate makes our EXTERNAL worth anything both ways.
    if (mechanisms.includes("EXTERNAL") && this.certificateVerified) {
      this.state = "sasl";
      // XEP-0178 §3: the authorization identity is the originating domain.
      return stream.send(`<auth xmlns='${NS.SASL}' mechanism='EXTERNAL'>${Buffer.from(this.opts.local).toString("base64")}</auth>`);
    }
    // XEP-0220 §2.1: dialback is for streams that advertise it, and for pre-1.0 peers without features.
    return this.dialback();
  }

  /** XEP-0288 §2.2: "This SHOULD be done before either SASL negotiation or Server Dialback." */
  private askBidi(inbound: InboundOptions): void {
    const { local, remote } = this.opts;
    this.stream!.send(BIDI_REQUEST);
    const self = this;
    this.inbound = new InboundStanzas(this.stream!, inbound, {
      authorize: (from, to) => reverseStanzaRefusal(local, remote, from, to),
      get sm() { return self.sm; },
      peerDomains: [remote],
      localDomain: local,
    });
  }

  private dialback(): void {
    this.state = "dialback";
    const { local, remote } = this.opts;
    const key = this.opts.dialbackKey(remote, local, this.peerId);
    this.stream!.send(el("db:result", { from: local, to: remote }, key).toString());
  }

  private authenticated(): void {
    this.stream!.transport.setLimits(this.opts.limits);
    if (!this.smOffered) return this.becomeReady("round-trip");
    // Stanzas wait for the answer: were they sent now, <failed/> would leave them neither counted nor confirmed.
    this.state = "enabling-sm";
    this.stream!.send(`<enable xmlns='${NS_SM}'/>`);
  }

  private becomeReady(confirmation: Confirmation): void {
    clearTimeout(this.negotiation);
    this.state = "ready";
    this.opts.log.info({ stage: "s2s-out", domain: this.opts.remote, local: this.opts.local, method: this.method, sm: confirmation === "sm", tls: this.stream!.transport.tls?.version }, "s2s outgoing stream authenticated");
    this.events.ready(this.method!, confirmation);
  }

  drain(): void {}

  ended(ending: StreamEnding): void {
    if (ending.kind === "closed" && ending.error && !this.failure) this.failure = `stream error ${ending.error.condition}`;
    if (ending.kind !== "closed" && !this.failure) this.failure = ending.kind;
    this.end(this.isReady ? undefined : this.failure);
  }

  private end(failure: string | undefined): void {
    clearTimeout(this.negotiation);
    this.inbound?.end();
    clearTimeout(this.ackTimer);
    if (this.state === "closed") return;
    const wasReady = this.state === "ready";
    this.state = "closed";
    this.events.closed(wasReady ? undefined : failure ?? "closed");
  }
}
