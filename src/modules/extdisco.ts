/**
 * XEP-0215 External Service Discovery 1.0.0 (urn:xmpp:extdisco:2): the STUN and TURN servers
 * clients use for calls.
 * - Out of the box, a built-in STUN server (RFC 8489 Binding over UDP, src/stun/server.ts) on
 *   port 3478, advertised as <host>:3478, so calls work across most NATs after `npm start` — as
 *   ejabberd's built-in STUN does. If the port is taken (coturn on the same machine, say), Parley
 *   says so and advertises only the configured services.
 * - TURN (relaying, for NATs STUN cannot get through) comes from coturn. Its credentials are made
 *   per request with the shared-secret scheme of the "TURN REST API"
 *   (draft-uberti-behave-turn-rest-00 §2.2), which coturn accepts with `use-auth-secret`:
 *   username = "<expiry unix time>:<user>", password = base64(HMAC-SHA1(secret, username)).
 * A service host of "{host}" stands for the user's own domain.
 */
import { createHmac } from "node:crypto";
import { z } from "zod";
import { defineModule } from "../module.js";
import { el } from "../xmpp/xml.js";
import { StanzaError } from "../errors.js";
import { xmppDateTime } from "../xmpp/datetime.js";
import { listenStun } from "../stun/server.js";
import { PARLEY_VERSION } from "../version.js";

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

const builtinStun = z.strictObject({
  /** UDP port (RFC 8489's default 3478); 0 picks a free one. */
  port: z.number().int().min(0).max(65535).default(3478),
  address: z.string().default("::"),
  /** The name clients are given for it; {host} is the user's domain. */
  host: z.string().min(1).default("{host}"),
});

export const extdisco = defineModule({
  name: "extdisco",
  implements: [{ spec: "XEP-0215", version: "1.0.0" }, { spec: "RFC 8489", version: "Binding method over UDP, no authentication" }],
  options: z.strictObject({
    /** The built-in STUN server; false turns it off (when coturn serves STUN on this machine). */
    stun: z.union([z.literal(false), builtinStun]).prefault({}),
    services: z.array(service).default([]),
  }),
  async start(ctx) {
    const services: Service[] = [...ctx.options.services];
    const stun = ctx.options.stun;
    if (stun) {
      try {
        const server = await listenStun({ address: stun.address, port: stun.port, software: `Parley ${PARLEY_VERSION}`, log: ctx.log });
        ctx.onStop(() => server.close());
        services.unshift(service.parse({ type: "stun", host: stun.host, port: server.port, transport: "udp", name: "Parley STUN" }));
      } catch (err) {
        // Calls still work through the configured services (coturn answers STUN as well).
        ctx.log.warn({ stage: "stun", port: stun.port, err: (err as Error).message },
          "built-in STUN server not started (set modules.extdisco.stun to false when coturn runs here)");
      }
    }
    if (services.length === 0) return;
    ctx.feature("host", EXTDISCO);

    const describe = (s: Service, user: string, domain: string, withCredentials: boolean) => {
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
        type: s.type, host: hostOf(s, domain), port: s.port, transport: s.transport, name: s.name,
        restricted: restricted ? "1" : undefined, ...(withCredentials ? credentials : {}),
      });
    };
    const hostOf = (s: Service, domain: string) => s.host.replace("{host}", domain);

    ctx.iq("host", "get", EXTDISCO, ({ payload, origin, from }) => {
      // Credentials are for this server's users only.
      if (!origin) throw new StanzaError("forbidden");
      const user = from.bare;
      const domain = from.domain;
      if (payload.name === "services") {
        const type = payload.attrs.type;
        return el("services", { xmlns: EXTDISCO, type }, ...services.filter((s) => !type || s.type === type).map((s) => describe(s, user, domain, true)));
      }
      if (payload.name === "credentials") {
        // XEP-0215 §3.3: credentials for one service, named by host and type (and port).
        const wanted = payload.getChild("service");
        const match = services.find((s) => hostOf(s, domain) === wanted?.attrs.host && (!wanted?.attrs.type || s.type === wanted.attrs.type)
          && (!wanted?.attrs.port || String(s.port) === wanted.attrs.port));
        if (!match) throw new StanzaError("item-not-found");
        return el("credentials", { xmlns: EXTDISCO }, describe(match, user, domain, true));
      }
      throw new StanzaError("bad-request");
    });
  },
});
