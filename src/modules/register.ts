/**
 * XEP-0077 In-Band Registration 2.4: account creation before authentication (only from allowed
 * networks, throttled per address), password change and account removal after it.
 */
import { z } from "zod";
import { AddressList, cidrSchema as cidr } from "../address-list.js";
import { defineModule } from "../module.js";
import { el } from "../xmpp/xml.js";
import { NS } from "../xmpp/ns.js";
import { StanzaError, StreamError } from "../errors.js";
import { AccountError } from "../accounts.js";
import { firstChildElement } from "../xmpp/xml.js";
import { BoundedMap } from "../bounded-map.js";
import { sameJid } from "../xmpp/jid.js";

export const register = defineModule({
  name: "register",
  implements: [{ spec: "XEP-0077", version: "2.4", note: "no data forms, no CAPTCHA" }],
  options: z.strictObject({
    /** Networks allowed to create accounts in-band; [] turns in-band registration off. */
    allowFrom: z.array(cidr).default(["127.0.0.0/8", "::1/128"]),
    /** Addresses outside these networks may register one account per this many seconds. */
    throttleSeconds: z.number().int().min(0).default(600),
    throttleExempt: z.array(cidr).default(["127.0.0.0/8", "::1/128"]),
  }),
  start(ctx) {
    const allowed = new AddressList(ctx.options.allowFrom);
    const exempt = new AddressList(ctx.options.throttleExempt);
    const mayRegister = (address: string) => allowed.includes(address);
    const lastRegistration = new BoundedMap<string, number>(10_000);

    ctx.streamFeature("pre-auth", ({ remoteAddress }) =>
      mayRegister(remoteAddress) ? el("register", { xmlns: NS.REGISTER_FEATURE }) : undefined);
    ctx.feature("host", NS.REGISTER);

    const form = () => el("query", { xmlns: NS.REGISTER },
      el("instructions", {}, "Choose a username and password."), el("username"), el("password"));

    ctx.unauthenticatedIq(NS.REGISTER, async (iq, { host, remoteAddress }) => {
      // XEP-0077 §3.1: a server that does not offer registration answers service-unavailable.
      if (!mayRegister(remoteAddress)) throw new StanzaError("service-unavailable");
      const query = firstChildElement(iq)!;
      if (iq.attrs.type === "get") return form();
      if (iq.attrs.type !== "set") throw new StanzaError("bad-request");
      if (query.getChild("remove")) throw new StanzaError("bad-request", "Not logged in");
      const username = query.getChildText("username");
      const password = query.getChildText("password");
      // XEP-0077 §3.1: missing required fields → not-acceptable.
      if (!username || !password) throw new StanzaError("not-acceptable", "Username and password are required");
      const now = Date.now();
      if (!exempt.includes(remoteAddress)) {
        const previous = lastRegistration.get(remoteAddress);
        if (previous !== undefined && now - previous < ctx.options.throttleSeconds * 1000) {
          throw new StanzaError("policy-violation", "Too many registrations from this address recently", "wait");
        }
      }
      try {
        await ctx.accounts.create(`${username}@${host}`, password);
      } catch (err) {
        if (err instanceof AccountError) {
          if (err.code === "exists") throw new StanzaError("conflict", "The username is taken");
          throw new StanzaError("not-acceptable", err.code === "invalid-password" ? "Invalid password" : "The requested username is invalid.");
        }
        throw err;
      }
      lastRegistration.set(remoteAddress, now);
      ctx.log.info({ stage: "register", user: `${username}@${host}` }, "account registered in-band");
      return undefined;
    });

    ctx.iq("account", "get", NS.REGISTER, ({ self, from }) => {
      if (!self) throw new StanzaError("forbidden");
      return el("query", { xmlns: NS.REGISTER }, el("registered"), el("username", {}, from.local));
    });

    ctx.iq("account", "set", NS.REGISTER, async ({ self, from, payload }) => {
      if (!self) throw new StanzaError("forbidden");
      if (payload.getChild("remove")) {
        await ctx.accounts.remove(from.bare);
        // XEP-0077 §3.2: after the result the account's streams are closed; the result is
        // written before this runs, as it is queued first.
        setImmediate(() => {
          for (const s of [...ctx.sessions.ofUser(from.bare)]) s.close(new StreamError("not-authorized", "Account removed"));
        });
        return undefined;
      }
      const username = payload.getChildText("username");
      const password = payload.getChildText("password");
      if (!password) throw new StanzaError("bad-request", "A password is required");
      // XEP-0077 §3.3: the username in a password change must be the user's own — compared as
      // localparts (RFC 7622 UsernameCaseMapped: width, case and NFC), not as typed.
      if (username !== null && !sameJid(`${username}@${from.domain}`, from.toBare())) throw new StanzaError("not-allowed", "Not your username");
      try {
        await ctx.accounts.setPassword(from.bare, password);
      } catch (err) {
        if (err instanceof AccountError) throw new StanzaError("not-acceptable", err.message);
        throw err;
      }
      return undefined;
    });
  },
});
