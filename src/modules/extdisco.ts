/**
 * XEP-0215 External Service Discovery 1.0.0 (urn:xmpp:extdisco:2): the STUN and TURN servers
 * clients use for calls. TURN credentials are made per request with the shared-secret scheme of
 * the "TURN REST API" (draft-uberti-behave-turn-rest-00 §2.2), which coturn accepts with
 * `use-auth-secret`: username = "<expiry unix time>:<user>", password = base64(HMAC-SHA1(secret, username)).
 */
import { createHmac } from "node:crypto";
import { z } from "zod";
import { defineModule } from "../module.js";
import { el } from "../xmpp/xml.js";
import { StanzaError } from "../errors.js";
import { xmppDateTime } from "../xmpp/datetime.js";

const EXTDISCO = "urn:xmpp:extdisco:2";

const service = z.strictObject({
  type: z.enum(["stun", "stuns", "turn", "turns"]),
  host: z.string().min(1),
  port: z.number().int().min(1).max(65535).optional(),
  transport: z.enum(["udp", "tcp"]).optional(),
  name: z.string().optional(),
  /** TURN REST shared secret (coturn static-auth-secret); credentials are computed per request. */
  secret: z.string().min(1).optional(),
  /** Lifetime of computed credentials. */
  ttlSeconds: z.number().int().min(60).default(86400),
  /** Fixed credentials, when the server has no shared secret. */
  username: z.string().optional(),
  password: z.string().optional(),
});
type Service = z.output<typeof service>;

export const extdisco = defineModule({
  name: "extdisco",
  implements: [{ spec: "XEP-0215", version: "1.0.0" }],
  options: z.strictObject({ services: z.array(service).default([]) }),
  start(ctx) {
    const { services } = ctx.options;
    if (services.length === 0) return;
    ctx.feature("host", EXTDISCO);

    const describe = (s: Service, user: string, withCredentials: boolean) => {
      let credentials: Record<string, string | undefined> = {};
      if (s.secret) {
        const expiry = Math.floor(Date.now() / 1000) + s.ttlSeconds;
        const username = `${expiry}:${user}`;
        credentials = {
          username, password: createHmac("sha1", s.secret).update(username).digest("base64"),
          expires: xmppDateTime(expiry * 1000),
        };
      } else if (s.username !== undefined) {
        credentials = { username: s.username, password: s.password };
      }
      const restricted = s.secret !== undefined || s.username !== undefined;
      return el("service", {
        type: s.type, host: s.host, port: s.port, transport: s.transport, name: s.name,
        restricted: restricted ? "1" : undefined, ...(withCredentials ? credentials : {}),
      });
    };

    ctx.iq("host", "get", EXTDISCO, ({ payload, origin, from }) => {
      // Credentials are for this server's users only.
      if (!origin) throw new StanzaError("forbidden");
      const user = from.bare;
      if (payload.name === "services") {
        const type = payload.attrs.type;
        return el("services", { xmlns: EXTDISCO, type }, ...services.filter((s) => !type || s.type === type).map((s) => describe(s, user, true)));
      }
      if (payload.name === "credentials") {
        // XEP-0215 §3.3: credentials for one service, named by host and type (and port).
        const wanted = payload.getChild("service");
        const match = services.find((s) => s.host === wanted?.attrs.host && (!wanted?.attrs.type || s.type === wanted.attrs.type)
          && (!wanted?.attrs.port || String(s.port) === wanted.attrs.port));
        if (!match) throw new StanzaError("item-not-found");
        return el("credentials", { xmlns: EXTDISCO }, describe(match, user, true));
      }
      throw new StanzaError("bad-request");
    });
  },
});
