/**
 * XEP-0114 Jabber Component Protocol 1.6: external components (gateways, bots, services) connect
 * over TCP, prove the shared secret with <handshake>SHA-1(stream id + secret)</handshake>, and
 * then own their domain: every stanza for it goes to them; everything they send must be from it.
 * The protocol has no TLS, so the listener binds to loopback unless configured otherwise.
 */
import { createServer, type AddressInfo, type Socket } from "node:net";
import { createHash, timingSafeEqual } from "node:crypto";
import type { ParserLimits, StreamHeader } from "./parser.js";
import { NS } from "./ns.js";
import { tryParseJid } from "./jid.js";
import type { Element } from "./xml.js";
import { TcpTransport } from "./stream/tcp.js";
import { XmlStream, checkHeader, type StreamEnding, type StreamOwner } from "./stream/xml-stream.js";
import { StreamError } from "../errors.js";
import type { Router } from "./router.js";
import type { Logger } from "../log.js";

export const NS_COMPONENT = "jabber:component:accept";

export interface ComponentListenerOptions {
  host: string;
  port: number;
  /** Secret per component domain. */
  secrets: ReadonlyMap<string, string>;
  limits: ParserLimits;
  router: Pick<Router, "attachComponent" | "route">;
  log: Logger;
  /** Time to authenticate. */
  handshakeTimeoutMs: number;
}

export interface ComponentListener {
  readonly port: number;
  close(): Promise<void>;
}

class ComponentConnection implements StreamOwner {
  private readonly stream: XmlStream;
  private domain: string | undefined;
  private detach: (() => void) | undefined;
  private readonly timer: NodeJS.Timeout;

  constructor(socket: Socket, private readonly opts: ComponentListenerOptions, private readonly live: Set<ComponentConnection>) {
    live.add(this);
    this.stream = new XmlStream(new TcpTransport(socket, opts.limits, undefined), NS_COMPONENT, opts.log, this);
    this.timer = setTimeout(() => { if (!this.detach) this.stream.error(new StreamError("connection-timeout", "No handshake")); }, opts.handshakeTimeoutMs);
    this.timer.unref();
  }

  header(header: StreamHeader): void {
    const to = header.attrs.to?.toLowerCase();
    // XEP-0114 streams carry no version; the component's domain is the 'to' of its header.
    const invalid = checkHeader(header, { contentNs: NS_COMPONENT, requireVersion: false });
    if (invalid) return this.stream.error(invalid, to);
    if (!to || !this.opts.secrets.has(to)) return this.stream.error(new StreamError("host-unknown", "No component is configured for that domain"), to);
    this.domain = to;
    this.stream.open(to, "en", false);
  }

  element(element: Element): void {
    if (!this.detach) {
      if (element.name !== "handshake") return this.stream.error(new StreamError("not-authorized", "Handshake first"));
      return this.onHandshake(element.text());
    }
    if (element.name !== "message" && element.name !== "presence" && element.name !== "iq") {
      return this.stream.error(new StreamError("unsupported-stanza-type"));
    }
    // XEP-0114 §3: the component addresses from its own domain; anything else is forged.
    const from = tryParseJid(element.attrs.from);
    if (!from || from.domain !== this.domain) return this.stream.error(new StreamError("invalid-from", "Stanzas must be from the component's domain"));
    if (!tryParseJid(element.attrs.to)) return this.stream.error(new StreamError("improper-addressing", "Stanzas need a valid 'to'"));
    element.attrs.xmlns = NS.CLIENT;
    void this.opts.router.route(element);
  }

  drain(): void {}

  private onHandshake(proof: string): void {
    const domain = this.domain!;
    const expected = createHash("sha1").update(this.stream.id + this.opts.secrets.get(domain)!).digest("hex");
    const given = Buffer.from(proof.trim().toLowerCase());
    // XEP-0114 §2: a wrong handshake is a not-authorized stream error.
    if (given.length !== expected.length || !timingSafeEqual(given, Buffer.from(expected))) {
      return this.stream.error(new StreamError("not-authorized", "Wrong handshake"));
    }
    const detach = this.opts.router.attachComponent(domain, (stanza) => this.deliver(stanza));
    if (!detach) return this.stream.error(new StreamError("conflict", "That component is already connected"));
    this.detach = detach;
    clearTimeout(this.timer);
    this.opts.log.info({ stage: "component", domain }, "component connected");
    this.stream.send("<handshake/>");
  }

  /** A stanza for the component: written in the stream's namespace, the shared element left as it was. */
  private deliver(stanza: Element): void {
    const ns = stanza.attrs.xmlns;
    stanza.attrs.xmlns = NS_COMPONENT;
    const xml = stanza.toString();
    if (ns === undefined) delete stanza.attrs.xmlns;
    else stanza.attrs.xmlns = ns;
    this.stream.send(xml);
  }

  close(error?: StreamError): void {
    if (error) this.stream.error(error, this.domain);
    else this.stream.close();
  }

  ended(ending: StreamEnding): void {
    clearTimeout(this.timer);
    this.live.delete(this);
    if (ending.kind === "closed" && ending.error) this.opts.log.info({ stage: "component", condition: ending.error.condition, domain: this.domain }, "component stream error");
    if (this.detach) {
      this.detach();
      this.detach = undefined;
      this.opts.log.info({ stage: "component", domain: this.domain }, "component disconnected");
    }
  }
}

export async function listenComponents(opts: ComponentListenerOptions): Promise<ComponentListener> {
  const live = new Set<ComponentConnection>();
  const server = createServer((socket) => new ComponentConnection(socket, opts, live));
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, opts.host, () => { server.off("error", reject); resolve(); });
  });
  server.on("error", (err) => opts.log.error({ err, stage: "listen" }, "component listener error"));
  const port = (server.address() as AddressInfo).port;
  opts.log.info({ stage: "listen", port }, "component listener (XEP-0114)");
  return {
    port,
    async close() {
      for (const c of [...live]) c.close(new StreamError("system-shutdown"));
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
