/**
 * XEP-0357 Push Notifications 0.4.1, the user's server side: clients register an app server JID
 * and node (with publish-options such as a secret); when a message that matters arrives while no
 * session of the user can read it — none online, all hibernated under stream management, or all
 * inactive under CSI — each registration gets a XEP-0357 §5 summary notification, published to
 * the app server like a pubsub item. Bursts are coalesced: one push at once, then at most one per
 * `coalesceSeconds` carrying the count. An app server that fails `maxFailures` times in a row
 * loses the registration. Presence, chat states, receipts and markers never push.
 *
 * <enable/> is refused unless the app server answers disco#info as one (XEP-0357 §3 shows it with
 * the pubsub/push identity and the urn:xmpp:push:0 feature): a registration with an address that
 * cannot be reached — push.<host> when the built-in app server has no credentials, a typo, a
 * remote server while there is no federation — would be accepted and never push. Conversations
 * registers with the app server first and only logs a refused enable; the answer names the reason.
 */
import { z } from "zod";
import { defineModule } from "../module.js";
import { el, childElements, type Element } from "../xmpp/xml.js";
import { NS } from "../xmpp/ns.js";
import { tryParseJid, type Jid } from "../xmpp/jid.js";
import { StanzaError } from "../errors.js";
import { parseElement } from "../xmpp/xml-parse.js";
import { buildForm, readForm } from "../xmpp/forms.js";
import type { Session } from "../xmpp/sessions.js";
import { BoundedMap } from "../bounded-map.js";
import { Priority } from "../hooks.js";

const PUSH = "urn:xmpp:push:0";
const PUBSUB = "http://jabber.org/protocol/pubsub";
const PUBLISH_OPTIONS = `${PUBSUB}#publish-options`;
const KEY = "push:registrations";
const REGISTRATION_CACHE_LIMIT = 10_000;
/** How long an app server that answered as one is believed (clients enable on every connect). */
const APP_SERVER_CHECK_MS = 10 * 60_000;

interface Registration { jid: string; node: string; options: Record<string, string> }
interface Pending {
  /** Messages since the user last read (XEP-0357 §5 message-count). */
  count: number;
  sender: string;
  body: string | undefined;
  /** The coalescing window is open until this fires. */
  timer: NodeJS.Timeout | undefined;
  /** More arrived inside the window: one more push when it closes. */
  dirty: boolean;
  failures: number;
}

/** What wakes a phone: something a person would want to see — text, an encrypted message, a call. */
function worthAPush(stanza: Element, roomMessage = false): boolean {
  const type = stanza.attrs.type ?? "normal";
  // Groupchat only for members away from the room; an occupant's own copies would ring for every line.
  if (type !== "chat" && type !== "normal" && !(roomMessage && type === "groupchat")) return false;
  if (stanza.getChild("body")) return true;
  return childElements(stanza).some((c) => {
    const ns = c.getNS();
    return ns === "eu.siacs.conversations.axolotl" || ns === "urn:xmpp:omemo:2" || (ns === "urn:xmpp:jingle-message:0" && c.name === "propose");
  });
}

declare module "../hooks.js" {
  interface Events {
    /** A push notification was sent to an app server (tests and metrics watch this). */
    "push/sent": { user: string; appServer: string; node: string; count: number };
  }
}

export const push = defineModule({
  name: "push",
  implements: [{ spec: "XEP-0357", version: "0.4.1" }],
  dependsOn: ["message", "offline", "csi"],
  options: z.strictObject({
    /** Put the message text in notifications (it then passes through the app server and Apple/Google). */
    includeBody: z.boolean().default(false),
    coalesceSeconds: z.number().min(0).default(2),
    maxFailures: z.number().int().min(1).default(3),
    maxRegistrationsPerUser: z.number().int().min(1).default(10),
    requestTimeoutSeconds: z.number().positive().default(15),
  }),
  start(ctx) {
    const { storage, router } = ctx;
    ctx.feature("account", PUSH);
    const inactive = new WeakSet<Session>();
    /** Per user, per registration ("jid node"): what is waiting to be pushed. */
    const pending = new Map<string, Map<string, Pending>>();

    // Every message to an offline user asks for that user's registrations: without this cache,
    // one storage read and one XML parse per message (bench S4 on Postgres: a query per message).
    // This module is the only writer of the document, so the cache stays exact; on a cluster the
    // other nodes' copies are dropped when it writes (cache/changed → cache/stale there).
    const registrations = new BoundedMap<string, readonly Registration[]>(REGISTRATION_CACHE_LIMIT);
    const load = async (user: string): Promise<readonly Registration[]> => {
      const hit = registrations.get(user);
      if (hit) return hit;
      const xml = await storage.documents.get(user, KEY);
      const regs = xml ? childElements(parseElement(xml)).map((r) => ({
        jid: r.attrs.jid!, node: r.attrs.node!,
        options: Object.fromEntries(r.getChildren("option").map((o) => [o.attrs.name!, o.text()])),
      })) : [];
      // A save that ran meanwhile has put the newer list here; it wins.
      if (!registrations.has(user)) registrations.set(user, regs);
      return registrations.get(user) ?? regs;
    };
    ctx.on("user/deleted", ({ jid }) => { registrations.delete(jid.bare); });
    ctx.on("cache/stale", ({ cache, user }) => {
      if (cache !== "push") return;
      if (user === undefined) registrations.clear();
      else registrations.delete(user);
    });
    const save = async (user: string, regs: readonly Registration[]) => {
      registrations.set(user, regs);
      try {
        if (regs.length === 0) await storage.documents.delete(user, KEY);
        else await storage.documents.set(user, KEY, el("registrations", { xmlns: PUSH },
          ...regs.map((r) => el("registration", { jid: r.jid, node: r.node },
            ...Object.entries(r.options).map(([name, value]) => el("option", { name }, value))))).toString());
      } catch (err) {
        registrations.delete(user); // what storage holds is unknown now: read it again next time
        throw err;
      }
      void ctx.emit("cache/changed", { cache: "push", user });
    };

    // ── enable / disable (XEP-0357 §5, §6) ───────────────────────────────────────────────────
    const appServers = new BoundedMap<string, number>(REGISTRATION_CACHE_LIMIT);
    /** Throws the error to answer an enable with, unless `jid` answers disco#info as a XEP-0357 app server. */
    const checkAppServer = async (user: string, jid: Jid) => {
      if ((appServers.get(jid.full) ?? 0) > Date.now()) return;
      let reply: Element;
      try {
        reply = await router.request(el("iq", { type: "get", from: user, to: jid.full }, el("query", { xmlns: NS.DISCO_INFO })), ctx.options.requestTimeoutSeconds * 1000);
      } catch (err) {
        if (err instanceof StanzaError && err.condition === "remote-server-timeout") throw new StanzaError("remote-server-timeout", `The app server ${jid.full} did not answer`);
        throw new StanzaError("remote-server-not-found", `The app server ${jid.full} cannot be reached`);
      }
      const info = reply.getChild("query", NS.DISCO_INFO);
      const announced = info?.getChildren("feature").some((f) => f.attrs.var === PUSH)
        || info?.getChildren("identity").some((i) => i.attrs.category === "pubsub" && i.attrs.type === "push");
      if (!announced) throw new StanzaError("not-acceptable", `${jid.full} is not a push app server (no ${PUSH} in its disco#info)`);
      appServers.set(jid.full, Date.now() + APP_SERVER_CHECK_MS);
    };

    ctx.iq("account", "set", PUSH, async ({ payload, self, origin, from }) => {
      if (!self || !origin) throw new StanzaError("forbidden", "Only the account owner manages its push registrations");
      const jid = tryParseJid(payload.attrs.jid);
      if (!jid) throw new StanzaError(payload.attrs.jid ? "jid-malformed" : "bad-request", "The app server's 'jid' is required");
      const user = from.bare;
      if (payload.name === "enable") {
        const node = payload.attrs.node;
        if (!node) throw new StanzaError("bad-request", "A 'node' is required");
        const x = payload.getChild("x", NS.DATA_FORMS);
        const form = x ? readForm(x) : undefined;
        if (form && form.formType !== PUBLISH_OPTIONS) throw new StanzaError("bad-request", `FORM_TYPE must be ${PUBLISH_OPTIONS}`);
        const options = Object.fromEntries([...(form?.fields ?? new Map<string, string[]>())].map(([k, v]) => [k, v[0] ?? ""]));
        await checkAppServer(user, jid);
        // Read after the check (it may wait for the app server): what another request saved meanwhile stays.
        const others = (await load(user)).filter((r) => !(r.jid === jid.full && r.node === node));
        if (others.length >= ctx.options.maxRegistrationsPerUser) throw new StanzaError("not-allowed", "Too many push registrations", "cancel");
        await save(user, [...others, { jid: jid.full, node, options }]);
        ctx.log.info({ stage: "push", appServer: jid.domain }, "push enabled");
        return undefined;
      }
      if (payload.name === "disable") {
        // §6: without a node, every registration with that app server goes.
        const node = payload.attrs.node;
        await save(user, (await load(user)).filter((r) => !(r.jid === jid.full && (node === undefined || r.node === node))));
        return undefined;
      }
      throw new StanzaError("bad-request");
    });

    // ── sending ──────────────────────────────────────────────────────────────────────────────
    const notify = async (user: string, reg: Registration, state: Pending) => {
      const fields = [
        { var: "message-count", values: [String(state.count)] },
        { var: "last-message-sender", values: [state.sender] },
        ...(ctx.options.includeBody && state.body !== undefined ? [{ var: "last-message-body", values: [state.body] }] : []),
      ];
      const count = state.count;
      const iq = el("iq", { type: "set", from: user, to: reg.jid },
        el("pubsub", { xmlns: PUBSUB },
          el("publish", { node: reg.node }, el("item", {}, el("notification", { xmlns: PUSH }, buildForm("submit", "urn:xmpp:push:summary", fields)))),
          Object.keys(reg.options).length
            ? el("publish-options", {}, buildForm("submit", PUBLISH_OPTIONS, Object.entries(reg.options).map(([k, v]) => ({ var: k, values: [v] }))))
            : undefined));
      try {
        const reply = await router.request(iq, ctx.options.requestTimeoutSeconds * 1000);
        if (reply.attrs.type !== "result") throw new Error("app server answered with an error");
        state.failures = 0;
        void ctx.emit("push/sent", { user, appServer: reg.jid, node: reg.node, count });
        ctx.log.debug({ stage: "push", appServer: reg.jid }, "push sent");
      } catch (err) {
        state.failures++;
        ctx.log.warn({ stage: "push", appServer: reg.jid, failures: state.failures, err: (err as Error).message }, "push failed");
        if (state.failures >= ctx.options.maxFailures) {
          // §7: an app server that keeps failing loses the registration.
          await save(user, (await load(user)).filter((r) => !(r.jid === reg.jid && r.node === reg.node)));
          pending.get(user)?.delete(`${reg.jid} ${reg.node}`);
          ctx.log.info({ stage: "push", appServer: reg.jid }, "push registration removed after repeated failures");
        }
      }
    };

    /** Counts the message; pushes now if nothing was pushed lately, else when the window closes. */
    const schedule = async (user: string, sender: string, body: string | undefined) => {
      const regs = await load(user);
      if (regs.length === 0) return;
      let perUser = pending.get(user);
      if (!perUser) pending.set(user, (perUser = new Map()));
      for (const reg of regs) {
        const key = `${reg.jid} ${reg.node}`;
        let state = perUser.get(key);
        if (!state) perUser.set(key, (state = { count: 0, sender, body, timer: undefined, dirty: false, failures: 0 }));
        state.count++;
        state.sender = sender;
        state.body = body;
        if (state.timer) {
          state.dirty = true;
          continue;
        }
        const current = state;
        const openWindow = () => {
          current.timer = setTimeout(() => {
            current.timer = undefined;
            if (!current.dirty || perUser!.get(key) !== current) return;
            current.dirty = false;
            void notify(user, reg, current);
            openWindow();
          }, ctx.options.coalesceSeconds * 1000);
          current.timer.unref();
        };
        void notify(user, reg, current);
        openWindow();
      }
    };
    const trigger = (stanza: Element, user: string, sender: string, roomMessage = false) => {
      if (!worthAPush(stanza, roomMessage)) return;
      schedule(user, sender, stanza.getChildText("body") ?? undefined).catch((err) => ctx.log.error({ err, stage: "push" }, "push scheduling failed"));
    };

    // No session online: the message goes to offline storage.
    ctx.chain("message/offline", ({ stanza, to, from }) => {
      trigger(stanza, to.bare, from.full);
      return undefined;
    }, Priority.AMEND);
    // Sessions exist but none can read it now.
    ctx.on("message/delivered", ({ routed, sessions }) => {
      if (sessions.every((s) => s.hibernating || inactive.has(s))) trigger(routed.stanza, routed.to.bare, routed.from.full);
    });
    // Room messages for members who are not joined (the muc module says so).
    ctx.on("muc/missed", ({ user, sender, message }) => {
      if (router.isLocalDomain(user.split("@")[1] ?? "")) trigger(message, user, sender, true);
    });
    ctx.on("session/csi", ({ session, active }) => {
      if (active) inactive.delete(session);
      else inactive.add(session);
    });
    // A session that reads again: the count starts over.
    ctx.on("session/available", ({ session }) => { resetCount(session.jid.bare); });
    const resetCount = (user: string) => {
      for (const state of pending.get(user)?.values() ?? []) state.count = 0;
    };

    ctx.on("user/deleted", ({ jid }) => {
      for (const state of pending.get(jid.bare)?.values() ?? []) clearTimeout(state.timer);
      pending.delete(jid.bare);
    });
    ctx.onStop(() => {
      for (const perUser of pending.values()) for (const state of perUser.values()) clearTimeout(state.timer);
      pending.clear();
    });
  },
});
