/**
 * The independent client: @xmpp/client (xmpp.js) over real TLS. Self-signed test certificates
 * are accepted by turning off verification for this test process only.
 */
import { client, xml, type Client } from "@xmpp/client";
import type { Element } from "@xmpp/xml";

process.env.NODE_TLS_REJECT_UNAUTHORIZED = "0";

export { xml };

export interface Connected {
  xmpp: Client;
  jid: string;
  /** Stanzas received, in order. */
  inbox: Element[];
  waitFor(pred: (s: Element) => boolean, timeoutMs?: number): Promise<Element>;
  iq(stanza: Element): Promise<Element>;
  stop(): Promise<void>;
}

export interface ConnectOptions {
  port: number;
  username: string;
  password: string;
  resource?: string;
  mechanism?: string;
  directTls?: boolean;
  domain?: string;
  /** A full service URL (e.g. wss://127.0.0.1:PORT/xmpp-websocket) instead of port/directTls. */
  service?: string;
  /**
   * Log in with XEP-0388 SASL2 and XEP-0386 Bind 2, as xmpp.js does when the server offers them
   * (the resource then becomes "<resource>/<id>"). Off by default: most tests speak RFC 6120
   * SASL and bind so their full JIDs are the resources they ask for.
   */
  sasl2?: boolean;
}

const NS_STREAMS = "http://etherx.jabber.org/streams";

export async function connect(opts: ConnectOptions): Promise<Connected> {
  const xmpp = client({
    // `service` overrides the TCP address, e.g. wss://127.0.0.1:PORT/xmpp-websocket (RFC 7395).
    service: opts.service ?? `${opts.directTls ? "xmpps" : "xmpp"}://127.0.0.1:${opts.port}`,
    domain: opts.domain ?? "localhost",
    username: opts.username,
    password: opts.password,
    resource: opts.resource,
    // xmpp.js waits 2 s by default for each negotiation step; shared CI machines can be slower.
    timeout: 10_000,
  });
  xmpp.reconnect.stop();
  if (!opts.sasl2) {
    // Seen before xmpp.js's middleware: the features then look like a server without SASL2.
    (xmpp as unknown as NodeJS.EventEmitter).prependListener("element", (e: Element) => {
      if (e.is("features", NS_STREAMS)) e.children = e.children.filter((c) => typeof c === "string" || !c.is("authentication", "urn:xmpp:sasl:2"));
    });
  }
  if (opts.mechanism) {
    // Make xmpp.js pick one mechanism: it chooses the first mechanism both sides support.
    const sasl = (xmpp as unknown as { saslFactory: { _mechs: Array<{ name: string }> } }).saslFactory;
    sasl._mechs = sasl._mechs.filter((m) => m.name === opts.mechanism);
  }
  const inbox: Element[] = [];
  const waiters: Array<{ pred: (s: Element) => boolean; resolve: (s: Element) => void }> = [];
  xmpp.on("stanza", (s: Element) => {
    inbox.push(s);
    for (const w of [...waiters]) if (w.pred(s)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(s); }
  });
  xmpp.on("error", () => {});
  const address = await xmpp.start();
  return {
    xmpp,
    jid: address.toString(),
    inbox,
    waitFor(pred, timeoutMs = 5000) {
      const found = inbox.find(pred);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const w = { pred, resolve: (s: Element) => { clearTimeout(t); resolve(s); } };
        const t = setTimeout(() => { waiters.splice(waiters.indexOf(w), 1); reject(new Error("timed out waiting for stanza")); }, timeoutMs);
        waiters.push(w);
      });
    },
    async iq(stanza) {
      return (xmpp as unknown as { iqCaller: { request(s: Element, timeout?: number): Promise<Element> } }).iqCaller.request(stanza, 5000);
    },
    async stop() {
      try { await xmpp.stop(); } catch { /* already closed */ }
    },
  };
}

/**
 * Makes the client a XEP-0115 entity: answers disco#info with these features and sends available
 * presence carrying the matching <c/>, as Conversations or Gajim do.
 */
export async function announceCaps(c: Connected, features: readonly string[], presenceChildren: Element[] = []): Promise<string> {
  const { capsVerification } = await import("../../src/xmpp/caps.js");
  const identity = { category: "client", type: "phone", name: "test client" };
  const all = ["http://jabber.org/protocol/caps", "http://jabber.org/protocol/disco#info", ...features];
  const ver = capsVerification([identity], all);
  const callee = (c.xmpp as unknown as { iqCallee: { get(ns: string, name: string, h: (ctx: { element: Element }) => Element): void } }).iqCallee;
  callee.get("http://jabber.org/protocol/disco#info", "query", ({ element }) =>
    xml("query", { xmlns: "http://jabber.org/protocol/disco#info", node: element.attrs.node },
      xml("identity", identity), ...all.map((f) => xml("feature", { var: f }))));
  await c.xmpp.send(xml("presence", {}, xml("c", { xmlns: "http://jabber.org/protocol/caps", hash: "sha-1", node: "https://test.example", ver }), ...presenceChildren));
  return ver;
}
