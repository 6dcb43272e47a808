/**
 * Raw BOSH (XEP-0124/0206) over real HTTP(S) for tests that need exact requests: one POST per
 * call, responses parsed by xmpp.js's parser (independent of the server's).
 */
import { request as httpsRequest } from "node:https";
import { request as httpRequest, type IncomingHttpHeaders } from "node:http";
import { randomInt } from "node:crypto";
import { xml, type Element } from "@xmpp/xml";

export const NS_HTTPBIND = "http://jabber.org/protocol/httpbind";
export const NS_XBOSH = "urn:xmpp:xbosh";

export interface HttpReply {
  status: number;
  headers: IncomingHttpHeaders;
  text: string;
  /** The response parsed as XML, when it is XML. */
  body: Element | undefined;
}

export interface PostOptions {
  /** HTTPS (default) or plain HTTP. */
  tls?: boolean;
  headers?: Record<string, string>;
  path?: string;
  method?: string;
  /** Source address of the connection (another loopback address than 127.0.0.1, say). */
  localAddress?: string;
  /** Send the body with chunked transfer coding, without Content-Length. */
  chunked?: boolean;
}

/** Parses one XML document with xmpp.js's streaming parser. */
export function parseXml(text: string): Element | undefined {
  const parser = new xml.Parser();
  let root: Element | undefined;
  let failed = false;
  parser.on("start", (el) => { root = el; });
  parser.on("element", (el) => { root?.append(el); });
  parser.on("error", () => { failed = true; });
  parser.write(text);
  return failed ? undefined : root;
}

export function post(port: number, body: string | Buffer, options: PostOptions = {}): Promise<HttpReply> {
  const tls = options.tls ?? true;
  const payload = typeof body === "string" ? Buffer.from(body) : body;
  return new Promise((resolve, reject) => {
    const req = (tls ? httpsRequest : httpRequest)({
      host: "127.0.0.1", port, path: options.path ?? "/http-bind", method: options.method ?? "POST",
      rejectUnauthorized: false, agent: false, localAddress: options.localAddress,
      headers: { "Content-Type": "text/xml; charset=utf-8", ...(options.chunked ? {} : { "Content-Length": payload.length }), ...options.headers },
    }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => { text += d; });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text, body: text.startsWith("<") ? parseXml(text) : undefined }));
      res.on("error", reject);
    });
    req.on("error", reject);
    if (options.chunked) {
      req.write(payload);
      req.end();
    } else req.end(payload);
  });
}

/** Children of a parsed <body/>. */
export function payloads(body: Element | undefined): Element[] {
  return (body?.children ?? []).filter((c): c is Element => typeof c !== "string");
}

export const bodyOf = (attrs: Record<string, string | number>, inner = ""): string => {
  const a = Object.entries(attrs).map(([k, v]) => ` ${k}='${v}'`).join("");
  return `<body xmlns='${NS_HTTPBIND}'${a}>${inner}</body>`;
};

/** A BOSH session driven request by request. */
export class RawBosh {
  sid = "";
  rid: number;
  /** The session creation response. */
  created: HttpReply | undefined;

  constructor(readonly port: number, readonly tls = true) {
    this.rid = randomInt(1, 2 ** 40);
  }

  /** §7.1 session creation request; `attrs` override the usual ones. */
  async create(attrs: Record<string, string | number> = {}, inner = ""): Promise<HttpReply> {
    const reply = await this.post(bodyOf({
      rid: this.rid++, to: "localhost", "xml:lang": "en", wait: 10, hold: 1, ver: "1.11", "xmpp:version": "1.0", "xmlns:xmpp": NS_XBOSH, ...attrs,
    }, inner));
    this.created = reply;
    this.sid = reply.body?.attrs.sid ?? "";
    return reply;
  }

  /** One request with the next rid. */
  send(inner = "", attrs: Record<string, string | number> = {}): Promise<HttpReply> {
    return this.post(bodyOf({ rid: this.rid++, sid: this.sid, ...attrs }, inner));
  }

  /** A request with an explicit rid (repeats, gaps). */
  sendRid(rid: number, inner = "", attrs: Record<string, string | number> = {}): Promise<HttpReply> {
    return this.post(bodyOf({ rid, sid: this.sid, ...attrs }, inner));
  }

  post(body: string | Buffer, headers: Record<string, string> = {}): Promise<HttpReply> {
    return post(this.port, body, { tls: this.tls, headers });
  }

  /** SASL PLAIN, the XEP-0206 §5 restart, resource binding: ready for stanzas. */
  async login(user: string, password: string, resource = "bosh"): Promise<string> {
    await this.create();
    const auth = await this.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${Buffer.from(`\0${user}\0${password}`).toString("base64")}</auth>`);
    if (payloads(auth.body)[0]?.name !== "success") throw new Error(`login failed: ${auth.text}`);
    await this.restart();
    return this.bind(resource);
  }

  /** XEP-0206 §5 restart request; resolves to the response (the new stream's features). */
  restart(): Promise<HttpReply> {
    return this.send("", { to: "localhost", "xml:lang": "en", "xmpp:restart": "true", "xmlns:xmpp": NS_XBOSH });
  }

  async bind(resource: string): Promise<string> {
    const bound = await this.send(`<iq type='set' id='bind1' xmlns='jabber:client'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>${resource}</resource></bind></iq>`);
    const jid = payloads(bound.body)[0]?.getChild("bind")?.getChildText("jid");
    if (!jid) throw new Error(`bind failed: ${bound.text}`);
    return jid;
  }
}
