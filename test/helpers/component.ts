/** A raw XEP-0114 external component for tests: a TCP socket, the handshake, and what arrives, parsed. */
import { connect as tcpConnect, type Socket } from "node:net";
import { createHash } from "node:crypto";
import { StringDecoder } from "node:string_decoder";
import { xml, type Element } from "@xmpp/xml";

/** The server's empty <handshake/>: the component is accepted. */
export const handshakeAccepted = (e: Element): boolean => e.is("handshake") && e.children.length === 0;

export class Component {
  text = "";
  /** The server's stream header, parsed by xmpp.js's parser (independent of the server's). */
  header: Element | undefined;
  /** Top-level elements received, parsed the same way. */
  readonly elements: Element[] = [];
  readonly closed: Promise<void>;
  private readonly listeners: Array<(e: Element) => void> = [];
  private constructor(readonly socket: Socket) {
    const decoder = new StringDecoder("utf8");
    const parser = new xml.Parser();
    parser.on("start", (e) => { this.header = e; });
    parser.on("element", (e) => {
      this.elements.push(e);
      for (const l of [...this.listeners]) l(e);
    });
    parser.on("error", () => {});
    socket.on("data", (d: Buffer) => {
      const chunk = decoder.write(d);
      this.text += chunk;
      parser.write(chunk);
    });
    socket.on("error", () => {});
    this.closed = new Promise((r) => socket.once("close", () => r()));
  }
  static async open(port: number, domain: string): Promise<Component> {
    const socket = tcpConnect({ port, host: "127.0.0.1" });
    await new Promise<void>((r, j) => { socket.once("connect", () => r()); socket.once("error", j); });
    const c = new Component(socket);
    socket.write(`<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='${domain}'>`);
    return c;
  }
  private async poll<T>(find: () => T | undefined, what: string, ms: number): Promise<T> {
    const end = Date.now() + ms;
    for (;;) {
      const found = find();
      if (found !== undefined) return found;
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}; got ${this.text.slice(-400)}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }
  /** Waits for a top-level element that matches. */
  waitForElement(pred: (e: Element) => boolean, ms = 5000): Promise<Element> {
    return this.poll(() => this.elements.find(pred), "an element", ms);
  }
  waitForHeader(ms = 5000): Promise<Element> {
    return this.poll(() => this.header, "the stream header", ms);
  }
  /** Calls `listener` with each top-level element that arrives from now on. */
  onElement(listener: (e: Element) => void): void {
    this.listeners.push(listener);
  }
  /** Answers `iq` (from its `to`, to its `from`, same id). */
  reply(iq: Element, type: "result" | "error", ...children: Element[]): void {
    this.socket.write(xml("iq", { type, id: iq.attrs.id, from: iq.attrs.to, to: iq.attrs.from }, ...children).toString());
  }
  async handshake(secret: string): Promise<void> {
    const id = (await this.waitForHeader()).attrs.id as string;
    this.socket.write(`<handshake>${createHash("sha1").update(id + secret).digest("hex")}</handshake>`);
  }
}

const PUSH = "urn:xmpp:push:0";
const NS_PUBSUB = "http://jabber.org/protocol/pubsub";

/**
 * A XEP-0357 app server on a component: answers disco#info as one, every publish with a result
 * (or an error while `failing`), and keeps the publishes.
 */
export class AppServer {
  failing = false;
  readonly pushes: Element[] = [];
  constructor(readonly component: Component) {
    component.onElement((iq) => {
      if (!iq.is("iq")) return;
      if (iq.attrs.type === "get") {
        component.reply(iq, "result", xml("query", { xmlns: "http://jabber.org/protocol/disco#info" },
          xml("identity", { category: "pubsub", type: "push" }), xml("feature", { var: PUSH })));
      } else if (iq.attrs.type === "set") {
        this.pushes.push(iq);
        if (this.failing) component.reply(iq, "error", xml("error", { type: "cancel" }, xml("item-not-found", { xmlns: "urn:ietf:params:xml:ns:xmpp-stanzas" })));
        else component.reply(iq, "result");
      }
    });
  }
  /** The first publish after the `seen` ones that came before. */
  async nextPush(seen: number, ms = 5000): Promise<Element> {
    const end = Date.now() + ms;
    while (this.pushes.length <= seen) {
      if (Date.now() > end) throw new Error("timed out waiting for a push");
      await new Promise((r) => setTimeout(r, 10));
    }
    return this.pushes[seen]!;
  }
}

/** The <publish/> of a push. */
export const pushPublish = (iq: Element): Element | undefined => iq.getChild("pubsub", NS_PUBSUB)?.getChild("publish");

/** The value of a field in the push's summary form (`<notification/>`), or in its publish-options. */
export const pushField = (iq: Element, name: string, where: "summary" | "publish-options" = "summary"): string | undefined => {
  const holder = where === "summary" ? pushPublish(iq)?.getChild("item")?.getChild("notification", PUSH) : iq.getChild("pubsub", NS_PUBSUB)?.getChild("publish-options");
  return holder?.getChild("x", "jabber:x:data")?.getChildren("field").find((f) => f.attrs.var === name)?.getChildText("value") ?? undefined;
};
