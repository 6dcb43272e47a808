/**
 * Incoming server-to-server streams (RFC 6120 §4–§6 and §13, version of March 2011): the
 * listener on listen.s2s (5269), and on listen.s2sDirectTls with TLS from the first byte (XEP-0368
 * 1.1.0, ALPN "xmpp-server"). STARTTLS first (RFC 7590, RFC 6120 §5: this server offers it as
 * mandatory-to-negotiate), then the peer authenticates a domain with SASL EXTERNAL and its certificate (RFC 6120
 * §6.4, XEP-0178 1.2) or with Server Dialback (XEP-0220 1.1.1), verified by calling the
 * authoritative server back.
 *
 * XEP-0198 Stream Management 1.6.3 is offered once TLS is up and may be enabled once a domain is
 * authenticated (§3: not "until it is authenticated"), without resumption: a peer whose stream
 * drops sends again what we did not acknowledge. Our 'h' counts a stanza only once the router
 * finished with it — delivered, or committed to storage — as on c2s (../c2s/sm.ts, HARDENING §1.3 P1).
 *
 * Every stanza is checked before it reaches the router (./inbound.ts):
 * - none before a domain is authenticated: RFC 6120 §4.9.3.12 not-authorized, "the entity has
 *   attempted to send XML stanzas ... before the stream has been authenticated";
 * - its 'from' must be a domain authenticated on this stream: §4.9.3.9 invalid-from;
 * - its 'to' must be one of ours: the server relays nothing for third parties (host-unknown).
 *
 * XEP-0288 1.0.1 (./bidi.ts): a peer that asks for it gets our stanzas for its authenticated
 * domains on this stream too, through the pool (`attachReverse`).
 */
import { createServer, type AddressInfo, type Server, type Socket } from "node:net";
import { TLSSocket, createServer as createTlsServer } from "node:tls";
import type { X509Certificate } from "node:crypto";
import type { ParserLimits, StreamHeader } from "../parser.js";
import { el, type Element } from "../xml.js";
import { NS } from "../ns.js";
import { tryParseJid, type Jid } from "../jid.js";
import { StreamError } from "../../errors.js";
import type { Logger } from "../../log.js";
import type { TlsServing } from "../tls.js";
import { ACME_TLS_ALPN, type TlsListenerSource } from "../../tls/store.js";
import { TcpTransport, normalizeAddress } from "../stream/tcp.js";
import { XmlStream, checkHeader, type StreamEnding, type StreamOwner } from "../stream/xml-stream.js";
import { STARTTLS_FEATURE } from "../c2s/starttls.js";
import { NS_DIALBACK, NS_DIALBACK_FEATURE, keysEqual } from "./dialback.js";
import { verifyServerCertificate } from "./pkix.js";
import type { AuthMethod } from "./outgoing.js";
import type { DomainPolicy } from "./policy.js";
import { AckError, NS_SM, StreamManagement, parseH } from "../c2s/sm.js";
import { InboundStanzas, isServerStanza, type InboundOptions, type InboundOwner } from "./inbound.js";
import { BIDI_FEATURE, NS_BIDI, type AttachReverse } from "./bidi.js";

export interface IncomingOptions extends InboundOptions {
  host: string;
  port: number;
  /** TLS from the first byte (XEP-0368) instead of STARTTLS. */
  directTls: boolean;
  tls: TlsServing & TlsListenerSource;
  tlsHandshakeTimeoutMs: number;
  trust: readonly X509Certificate[];
  preAuth: ParserLimits;
  postAuth: ParserLimits;
  /** Time to authenticate a first domain. */
  negotiationTimeoutMs: number;
  /** A stream silent this long is closed. */
  idleMs: number;
  /** Offer XEP-0220 dialback to peers whose certificate does not verify. */
  dialback: boolean;
  /** Offer XEP-0198 (acknowledgements, no resumption). */
  streamManagement: boolean;
  isLocalDomain: (domain: string) => boolean;
  /** Remote domains we federate with (config s2s.allowedDomains / blockedDomains). */
  federates: DomainPolicy;
  /** XEP-0288: offer bidirectional streams and hand them to the pool; undefined: s2s.bidi is off. */
  attachReverse: AttachReverse | undefined;
  /** XEP-0220 §2.3: ask the authoritative server about a key (./pool.ts). */
  verifyDialback: (local: string, remote: string, streamId: string, key: string) => Promise<boolean>;
  dialbackKey: (receiving: string, originating: string, streamId: string) => string;
  /** A connection slot for a remote address (the shared per-address limit); undefined: refused. */
  admit: (address: string) => (() => void) | undefined;
  log: Logger;
  counters?: { incoming(outcome: AuthMethod | "failed"): void };
}

/** What operators see of one incoming stream. */
export interface IncomingStatus {
  address: string;
  directTls: boolean;
  local: string | undefined;
  /** Domains authenticated on the stream, and how. */
  domains: Array<{ domain: string; method: AuthMethod }>;
  /** XEP-0288: the peer asked for a bidirectional stream (our stanzas to it may go here too). */
  bidi: boolean;
  since: string;
}

export interface IncomingListener {
  readonly port: number;
  status(): IncomingStatus[];
  close(): Promise<void>;
}

/**
 * Dialback requests one stream may make: each makes this server call another one back, so an
 * unauthenticated peer must not turn us into a connection cannon (a few domains share a stream at most).
 */
const MAX_DIALBACK_REQUESTS = 8;

/** The peer's certificate is asked for and judged by ./pkix.ts: one that does not verify may still do dialback. */
const PEER_CERTIFICATE = { requestCert: true, rejectUnauthorized: false } as const;

class IncomingStream implements StreamOwner, InboundOwner {
  private readonly stream: XmlStream;
  private local: string | undefined;
  /** The 'from' of the peer's header: the domain SASL EXTERNAL authenticates. */
  private peerDomain: string | undefined;
  private readonly domains = new Map<string, AuthMethod>();
  private saslDone = false;
  private dialbackRequests = 0;
  private readonly since = Date.now();
  private readonly inbound: InboundStanzas;
  private readonly timers: NodeJS.Timeout[] = [];
  sm: StreamManagement | undefined;
  /** XEP-0288 §2.2: the peer sent <bidi/>. */
  private bidi = false;
  /** SASL EXTERNAL succeeded: the reverse direction opens once the restarted stream is. */
  private reversePending = false;
  /** What the pool is told when this stream ends, per reverse direction handed to it. */
  private readonly reverseEnded: Array<() => void> = [];

  constructor(socket: Socket, private readonly opts: IncomingOptions, private readonly live: Set<IncomingStream>, private readonly release: () => void) {
    live.add(this);
    const upgrade = (plain: Socket) => new TLSSocket(plain, { isServer: true, secureContext: opts.tls.defaultTls, SNICallback: opts.tls.sniCallback, ...PEER_CERTIFICATE });
    this.stream = new XmlStream(new TcpTransport(socket, opts.preAuth, opts.directTls ? undefined : upgrade), NS.SERVER, opts.log, this, { namespaces: { db: NS_DIALBACK } });
    this.inbound = new InboundStanzas(this.stream, opts, this);
    const negotiation = setTimeout(() => {
      if (!this.domains.size) this.stream.error(new StreamError("connection-timeout", "No domain authenticated in time"));
    }, opts.negotiationTimeoutMs);
    const idle = setInterval(() => {
      if (Date.now() - this.stream.transport.lastInbound > opts.idleMs) this.stream.close();
    }, Math.max(1000, opts.idleMs / 2));
    negotiation.unref();
    idle.unref();
    this.timers.push(negotiation, idle);
  }

  get status(): IncomingStatus {
    return {
      address: this.stream.transport.remoteAddress, directTls: this.opts.directTls, local: this.local,
      domains: [...this.domains].map(([domain, method]) => ({ domain, method })), bidi: this.bidi, since: new Date(this.since).toISOString(),
    };
  }

  header(header: StreamHeader): void {
    const to = header.attrs.to?.toLowerCase();
    const invalid = checkHeader(header, { contentNs: NS.SERVER, requireVersion: true });
    if (invalid) return this.stream.error(invalid, to);
    // RFC 6120 §4.9.3.6 host-unknown: "the value of the 'to' attribute provided in the initial
    // stream header does not correspond to an FQDN that is serviced by the receiving entity".
    if (!to || !this.opts.isLocalDomain(to)) return this.stream.error(new StreamError("host-unknown"), to);
    if (this.local !== undefined && to !== this.local) return this.stream.error(new StreamError("host-unknown", "Another domain than before the restart"), this.local);
    this.local = to;
    this.peerDomain = header.attrs.from?.toLowerCase();
    if (this.peerDomain !== undefined && !this.opts.federates(this.peerDomain)) return this.refuse(this.peerDomain);
    this.stream.open(to, "en", true, this.peerDomain);
    this.stream.features(this.features());
    if (this.reversePending) {
      this.reversePending = false;
      this.attachReverse(to, this.peerDomain!, "sasl-external");
    }
  }

  get peerDomains(): string[] {
    return [...this.domains.keys()];
  }

  get localDomain(): string | undefined {
    return this.local;
  }

  authorize(from: Jid, to: Jid): StreamError | undefined {
    if (!this.domains.has(from.domain)) return new StreamError("invalid-from", "Not a domain authenticated on this stream");
    if (!this.opts.isLocalDomain(to.domain)) return new StreamError("host-unknown", "Not a domain served here");
    return undefined;
  }

  private features(): string {
    const transport = this.stream.transport;
    if (!transport.secure) return STARTTLS_FEATURE;
    const sm = this.opts.streamManagement ? `<sm xmlns='${NS_SM}'/>` : "";
    if (this.saslDone) return sm;
    let out = sm;
    if (this.peerDomain && this.certificateVerifies(this.peerDomain)) out += `<mechanisms xmlns='${NS.SASL}'><mechanism>EXTERNAL</mechanism></mechanisms>`;
    if (this.opts.dialback) out += `<dialback xmlns='${NS_DIALBACK_FEATURE}'/>`;
    if (this.opts.attachReverse && !this.bidi) out += BIDI_FEATURE;
    return out;
  }

  private certificateVerifies(domain: string): boolean {
    const chain = this.stream.transport.tls?.peerCertificates() ?? [];
    const verdict = verifyServerCertificate(chain, domain, this.opts.trust);
    if (!verdict.ok) this.opts.log.debug({ stage: "s2s-tls", domain, reason: verdict.reason }, "peer certificate not verified");
    return verdict.ok;
  }

  element(element: Element): void {
    if (isServerStanza(element)) return this.stanza(element);
    if (element.attrs.xmlns === NS_SM) return this.smElement(element);
    // The peer's stream error: its close follows (the condition is logged, the stream then ends).
    if (element.is("error", NS.STREAMS)) {
      this.opts.log.info({ stage: "s2s-in", condition: element.children.find((c) => typeof c !== "string")?.name, domains: [...this.domains.keys()] }, "s2s peer sent a stream error");
      return;
    }
    if (!this.stream.transport.secure) {
      if (element.is("starttls", NS.TLS)) {
        this.stream.send(`<proceed xmlns='${NS.TLS}'/>`);
        this.stream.transport.startTls!();
        return this.stream.restart(this.opts.preAuth);
      }
      // RFC 6120 §5.3.1: TLS is mandatory-to-negotiate here (RFC 7590).
      return this.stream.error(new StreamError("policy-violation", "STARTTLS first"));
    }
    // XEP-0288 §2.2: "Since there is no reply to the request, it is possible to pipeline it."
    if (element.is("bidi", NS_BIDI) && this.opts.attachReverse && !this.domains.size) return void (this.bidi = true);
    if (element.is("auth", NS.SASL) && !this.saslDone) return this.saslExternal(element);
    if (element.is("result", NS_DIALBACK) && this.opts.dialback) return void this.dialbackResult(element);
    if (element.is("verify", NS_DIALBACK)) return this.dialbackVerify(element);
    this.stream.error(new StreamError("unsupported-stanza-type"));
  }

  /** XEP-0198 on a stream we only receive on: <enable/>, <r/> (answered with our 'h'), and <a/> (of nothing we sent). */
  private smElement(element: Element): void {
    const failed = (condition: string) => this.stream.send(`<failed xmlns='${NS_SM}'><${condition} xmlns='${NS.STANZA_ERRORS}'/></failed>`);
    const sm = this.sm;
    switch (element.name) {
      case "enable":
        // §3: a second <enable/>, or one before authentication, is an unexpected request.
        if (!this.opts.streamManagement) return failed("feature-not-implemented");
        if (sm || !this.domains.size) return failed("unexpected-request");
        this.sm = new StreamManagement(false, 0);
        this.opts.log.info({ stage: "s2s-in", domains: [...this.domains.keys()] }, "s2s incoming stream management enabled");
        // No 'resume': the peer resends on a new stream what it has no <a/> for.
        return this.stream.send(`<enabled xmlns='${NS_SM}'/>`);
      case "r": {
        if (!sm) return failed("unexpected-request");
        return this.inbound.afterRouted(() => this.stream.send(`<a xmlns='${NS_SM}' h='${sm.inboundH}'/>`));
      }
      case "a": {
        if (!sm) return failed("unexpected-request");
        // XEP-0288: the peer counts what we send back here, but we do not (./pool.ts confirms those
        // by round trips), so its 'h' is not ours to check.
        if (this.bidi) return;
        const h = parseH(element.attrs.h);
        if (h === undefined) return this.stream.error(new StreamError("undefined-condition", "Invalid 'h'"));
        try {
          sm.ack(h);
        } catch (err) {
          if (!(err instanceof AckError)) throw err;
          return this.stream.error(err.streamError("Acknowledged more stanzas than were sent"), this.local);
        }
        return;
      }
      default:
        return this.stream.error(new StreamError("unsupported-stanza-type"));
    }
  }

  /** RFC 6120 §6.4, XEP-0178 §3: EXTERNAL with the certificate the peer presented in TLS. */
  private saslExternal(auth: Element): void {
    const failure = (condition: string) => this.stream.send(`<failure xmlns='${NS.SASL}'><${condition}/></failure>`);
    if (auth.attrs.mechanism !== "EXTERNAL") return failure("invalid-mechanism");
    const text = auth.text().trim();
    // An empty response ("=") asks for the identity of the stream header.
    const authzid = text === "" || text === "=" ? this.peerDomain : Buffer.from(text, "base64").toString("utf8").toLowerCase();
    if (!authzid || (this.peerDomain !== undefined && authzid !== this.peerDomain)) return failure("invalid-authzid");
    if (!this.opts.federates(authzid)) return this.refuse(authzid);
    if (!this.certificateVerifies(authzid)) {
      this.opts.counters?.incoming("failed");
      this.opts.log.info({ stage: "s2s-auth", domain: authzid, method: "sasl-external" }, "s2s incoming authentication failed");
      return failure("not-authorized");
    }
    this.saslDone = true;
    this.peerDomain = authzid;
    this.stream.send(`<success xmlns='${NS.SASL}'/>`);
    // RFC 6120 §6.4.6: the initiating entity opens a new stream over the same connection.
    this.stream.restart(this.opts.postAuth);
    this.authenticated(authzid, "sasl-external");
    // XEP-0288: not before our new stream header, which answers the peer's.
    this.reversePending = this.bidi;
  }

  /** XEP-0220 §2.2: a key from the originating server, checked with its authoritative server. */
  private async dialbackResult(result: Element): Promise<void> {
    const from = tryParseJid(result.attrs.from);
    const to = result.attrs.to?.toLowerCase();
    const key = result.text().trim();
    if (!from || from.local !== "" || from.resource !== "" || !key) return this.stream.error(new StreamError("improper-addressing"));
    if (!to || !this.opts.isLocalDomain(to)) return this.stream.error(new StreamError("host-unknown"));
    const remote = from.domain;
    if (this.opts.isLocalDomain(remote)) return this.stream.error(new StreamError("invalid-from"));
    if (!this.opts.federates(remote)) return this.refuse(remote);
    if (++this.dialbackRequests > MAX_DIALBACK_REQUESTS) return this.stream.error(new StreamError("policy-violation", "Too many dialback requests"), this.local);
    const valid = await this.opts.verifyDialback(to, remote, this.stream.id, key);
    if (this.stream.isOver) return;
    this.stream.send(el("db:result", { from: to, to: remote, type: valid ? "valid" : "invalid" }).toString());
    if (valid) {
      this.authenticated(remote, "dialback");
      return this.attachReverse(to, remote, "dialback");
    }
    this.opts.counters?.incoming("failed");
    this.opts.log.info({ stage: "s2s-auth", domain: remote, method: "dialback" }, "s2s incoming dialback key invalid");
  }

  /** XEP-0220 §2.4: we are the authoritative server asked whether a key is ours. */
  private dialbackVerify(verify: Element): void {
    const remote = verify.attrs.from?.toLowerCase();
    const local = verify.attrs.to?.toLowerCase();
    const id = verify.attrs.id;
    if (!remote || !local || !id) return this.stream.error(new StreamError("improper-addressing"));
    if (!this.opts.isLocalDomain(local)) return this.stream.error(new StreamError("host-unknown"));
    const valid = keysEqual(verify.text(), this.opts.dialbackKey(remote, local, id));
    this.stream.send(el("db:verify", { from: local, to: remote, id, type: valid ? "valid" : "invalid" }).toString());
  }

  /** RFC 6120 §4.9.3.14 policy-violation: a domain this server does not federate with. */
  private refuse(domain: string): void {
    this.opts.log.info({ stage: "s2s-in", domain }, "s2s incoming stream from a domain not federated with");
    this.stream.error(new StreamError("policy-violation", "This server does not federate with that domain"), this.local);
  }

  private authenticated(domain: string, method: AuthMethod): void {
    this.domains.set(domain, method);
    this.stream.transport.setLimits(this.opts.postAuth);
    this.opts.counters?.incoming(method);
    this.opts.log.info({ stage: "s2s-in", domain, local: this.local, method, tls: this.stream.transport.tls?.version, address: this.stream.transport.remoteAddress }, "s2s incoming stream authenticated");
  }

  /** XEP-0288: the pool may now send from `local` to `remote` here (./bidi.ts). */
  private attachReverse(local: string, remote: string, method: AuthMethod): void {
    if (!this.bidi || !this.opts.attachReverse) return;
    const stream = this.stream;
    this.opts.log.info({ stage: "s2s-in", domain: remote, local }, "s2s incoming stream used both ways (XEP-0288)");
    this.reverseEnded.push(this.opts.attachReverse({
      local, remote, authMethod: method,
      get isReady() { return !stream.isOver; },
      send: (xml) => stream.send(xml),
      close: (error) => error ? stream.error(error, local) : stream.close(),
    }));
  }

  private stanza(stanza: Element): void {
    if (!this.domains.size) return this.stream.error(new StreamError("not-authorized", "Authenticate first"));
    this.inbound.stanza(stanza);
  }

  drain(): void {}

  close(error: StreamError): void {
    this.stream.error(error, this.local);
  }

  ended(ending: StreamEnding): void {
    for (const t of this.timers) clearTimeout(t);
    this.inbound.end();
    for (const ended of this.reverseEnded) ended();
    this.live.delete(this);
    this.release();
    if (ending.kind === "closed" && ending.error) this.opts.log.info({ stage: "s2s-in", condition: ending.error.condition, domains: [...this.domains.keys()] }, "s2s incoming stream error");
    if (this.domains.size) this.opts.log.info({ stage: "s2s-in", domains: [...this.domains.keys()], how: ending.kind }, "s2s incoming stream closed");
  }
}

export async function listenS2S(opts: IncomingOptions): Promise<IncomingListener> {
  const live = new Set<IncomingStream>();
  const accept = (socket: Socket) => {
    const release = opts.admit(normalizeAddress(socket.remoteAddress));
    if (!release) {
      opts.log.info({ stage: "s2s-in", address: normalizeAddress(socket.remoteAddress) }, "s2s connection refused: too many from this address");
      return void socket.destroy();
    }
    // As on c2s: writes are corked per tick, and Nagle would delay our <a/> answers.
    socket.setNoDelay(true);
    new IncomingStream(socket, opts, live, release);
  };
  let server: Server;
  if (opts.directTls) {
    const tlsServer = createTlsServer({ ...opts.tls.serverOptions("xmpp-server"), ...PEER_CERTIFICATE, handshakeTimeout: opts.tlsHandshakeTimeoutMs });
    // A new default certificate applies to new handshakes; open connections keep theirs.
    const unwatch = opts.tls.onChange(() => tlsServer.setSecureContext(opts.tls.contextOptions()));
    tlsServer.once("close", unwatch);
    tlsServer.on("secureConnection", (socket: TLSSocket) => {
      // RFC 8737 §3: a TLS-ALPN-01 validation ends with the handshake; no stream follows.
      if (socket.alpnProtocol === ACME_TLS_ALPN) return void socket.end();
      accept(socket);
    });
    tlsServer.on("tlsClientError", (_err, socket) => socket.destroy());
    server = tlsServer;
  } else {
    server = createServer(accept);
  }
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, opts.host, () => { server.off("error", reject); resolve(); });
  });
  server.on("error", (err) => opts.log.error({ err, stage: "listen" }, "s2s listener error"));
  const port = (server.address() as AddressInfo).port;
  opts.log.info({ stage: "listen", port, directTls: opts.directTls }, "s2s listening");
  return {
    port,
    status: () => [...live].map((s) => s.status),
    async close() {
      for (const s of [...live]) s.close(new StreamError("system-shutdown"));
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
