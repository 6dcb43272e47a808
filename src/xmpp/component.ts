/**
 * XEP-0114 Jabber Component Protocol 1.6: external components (gateways, bots, services) connect
 * over TCP, prove the shared secret with <handshake>SHA-1(stream id + secret)</handshake>, and
 * then own their domain: every stanza for it goes to them; everything they send must be from it.
 * The protocol has no TLS, so the listener binds to loopback unless configured otherwise.
 */
import { createServer, type AddressInfo, type Socket } from "node:net";
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { StreamParser, type ParserLimits, type StreamHeader } from "./parser.js";
import { NS } from "./ns.js";
import { tryParseJid } from "./jid.js";
import { escapeXML, type Element } from "./xml.js";
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

class ComponentConnection {
  private readonly streamId = randomBytes(12).toString("base64url");
  private domain: string | undefined;
  private detach: (() => void) | undefined;
  private headerSent = false;
  private closed = false;
  private readonly parser: StreamParser;
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly socket: Socket, private readonly opts: ComponentListenerOptions, private readonly live: Set<ComponentConnection>) {
    live.add(this);
    this.parser = new StreamParser(opts.limits, {
      streamStart: (header) => this.onStreamStart(header),
      element: (element) => this.onElement(element),
      streamEnd: () => this.close(),
      error: (error) => this.streamError(error),
    });
    socket.on("data", (chunk: Buffer) => this.parser.write(chunk));
    socket.on("error", () => this.close());
    socket.on("close", () => this.cleanup());
    this.timer = setTimeout(() => { if (!this.detach) this.streamError(new StreamError("connection-timeout", "No handshake")); }, opts.handshakeTimeoutMs);
    this.timer.unref();
  }

  private write(data: string): void {
    if (!this.socket.destroyed) this.socket.write(data);
  }

  private onStreamStart(header: StreamHeader): void {
    if (header.uri !== NS.STREAMS || header.name !== "stream") return this.streamError(new StreamError("invalid-namespace"));
    const to = header.attrs.to?.toLowerCase();
    this.write(`<?xml version='1.0'?><stream:stream xmlns='${NS_COMPONENT}' xmlns:stream='${NS.STREAMS}' id='${this.streamId}'${to ? ` from='${escapeXML(to)}'` : ""}>`);
    this.headerSent = true;
    if (header.defaultNs !== NS_COMPONENT) return this.streamError(new StreamError("invalid-namespace", `Default namespace must be ${NS_COMPONENT}`));
    if (!to || !this.opts.secrets.has(to)) return this.streamError(new StreamError("host-unknown", "No component is configured for that domain"));
    this.domain = to;
  }

  private onElement(element: Element): void {
    if (!this.detach) {
      if (element.name !== "handshake") return this.streamError(new StreamError("not-authorized", "Handshake first"));
      return this.onHandshake(element.text());
    }
    if (element.name !== "message" && element.name !== "presence" && element.name !== "iq") {
      return this.streamError(new StreamError("unsupported-stanza-type"));
    }
    // XEP-0114 §3: the component addresses from its own domain; anything else is forged.
    const from = tryParseJid(element.attrs.from);
    if (!from || from.domain !== this.domain) return this.streamError(new StreamError("invalid-from", "Stanzas must be from the component's domain"));
    if (!tryParseJid(element.attrs.to)) return this.streamError(new StreamError("improper-addressing", "Stanzas need a valid 'to'"));
    element.attrs.xmlns = NS.CLIENT;
    void this.opts.router.route(element);
  }

  private onHandshake(proof: string): void {
    const domain = this.domain!;
    const expected = createHash("sha1").update(this.streamId + this.opts.secrets.get(domain)!).digest("hex");
    const given = Buffer.from(proof.trim().toLowerCase());
    // XEP-0114 §2: a wrong handshake is a not-authorized stream error.
    if (given.length !== expected.length || !timingSafeEqual(given, Buffer.from(expected))) {
      return this.streamError(new StreamError("not-authorized", "Wrong handshake"));
    }
    const detach = this.opts.router.attachComponent(domain, (stanza) => this.deliver(stanza));
    if (!detach) return this.streamError(new StreamError("conflict", "That component is already connected"));
    this.detach = detach;
    clearTimeout(this.timer);
    this.opts.log.info({ stage: "component", domain }, "component connected");
    this.write("<handshake/>");
  }

  /** A stanza for the component: written in the stream's namespace, the shared element left as it was. */
  private deliver(stanza: Element): void {
    const ns = stanza.attrs.xmlns;
    stanza.attrs.xmlns = NS_COMPONENT;
    const xml = stanza.toString();
    if (ns === undefined) delete stanza.attrs.xmlns;
    else stanza.attrs.xmlns = ns;
    this.write(xml);
  }

  streamError(error: StreamError): void {
    if (this.closed) return;
    this.parser.stop();
    if (!this.headerSent) {
      this.write(`<?xml version='1.0'?><stream:stream xmlns='${NS_COMPONENT}' xmlns:stream='${NS.STREAMS}' id='${this.streamId}'>`);
      this.headerSent = true;
    }
    this.opts.log.info({ stage: "component", condition: error.condition, domain: this.domain }, "component stream error");
    this.write(error.toElement().toString());
    this.close();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.write("</stream:stream>");
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 2000).unref();
    this.cleanup();
  }

  private cleanup(): void {
    clearTimeout(this.timer);
    this.closed = true;
    this.live.delete(this);
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
      for (const c of [...live]) c.streamError(new StreamError("system-shutdown"));
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
