/**
 * XEP-0402 PEP Native Bookmarks 1.2.0 with `#compat`, and XEP-0411 Bookmarks Conversion 1.0.0:
 * one set of group-chat bookmarks, whichever way a client keeps them.
 * - urn:xmpp:bookmarks:1 (one PEP item per room, id = room JID) is the source of truth.
 * - XEP-0048 bookmarks stored through private XML (XEP-0049) or in the PEP node storage:bookmarks
 *   are converted into it; rooms missing from a new legacy set are retracted.
 * - Every change is written back to the legacy forms, so old clients read what new ones set
 *   (XEP-0402 §5.3 "#compat"); the write-backs are marked as the server's and not imported again.
 */
import { z } from "zod";
import { defineModule } from "../module.js";
import { el, childElements, type Element } from "../xmpp/xml.js";
import { parseElement } from "../xmpp/xml-parse.js";
import { tryParseJid } from "../xmpp/jid.js";
import { privateKey } from "./private.js";

const BOOKMARKS = "urn:xmpp:bookmarks:1";
const LEGACY = "storage:bookmarks";
const LEGACY_KEY = privateKey("storage", LEGACY);
/** XEP-0402 §4: the node configuration bookmarks need. */
const NATIVE_OPTIONS = {
  "pubsub#persist_items": "true", "pubsub#max_items": "max", "pubsub#send_last_published_item": "never", "pubsub#access_model": "whitelist",
};
const LEGACY_OPTIONS = { "pubsub#persist_items": "true", "pubsub#access_model": "whitelist" };

interface Room { jid: string; conference: Element }

const truthy = (v: string | undefined) => v === "true" || v === "1";

export const bookmarks = defineModule({
  name: "bookmarks",
  implements: [{ spec: "XEP-0402", version: "1.2.0" }, { spec: "XEP-0411", version: "1.0.0" }, { spec: "XEP-0048", version: "1.2" }],
  dependsOn: ["pep", "private"],
  options: z.strictObject({}),
  start(ctx) {
    const { storage } = ctx;
    ctx.feature("account", `${BOOKMARKS}#compat`);
    ctx.feature("account", "urn:xmpp:bookmarks-conversion:0");

    /** Legacy <conference jid name autojoin><nick/><password/></conference> → XEP-0402 <conference/>. */
    const fromLegacy = (storageEl: Element): Room[] => childElements(storageEl).filter((c) => c.name === "conference").flatMap((c) => {
      const jid = tryParseJid(c.attrs.jid);
      if (!jid) return [];
      return [{ jid: jid.bare, conference: el("conference", { xmlns: BOOKMARKS, name: c.attrs.name, autojoin: truthy(c.attrs.autojoin) ? "true" : undefined },
        c.getChildText("nick") ? el("nick", {}, c.getChildText("nick")!) : undefined,
        c.getChildText("password") ? el("password", {}, c.getChildText("password")!) : undefined) }];
    });
    const toLegacy = async (owner: string): Promise<Element> => {
      const items = (await storage.pubsub.items(owner, BOOKMARKS)).reverse();
      const previous = await storage.documents.get(owner, LEGACY_KEY);
      const urls = previous ? parseElement(previous).getChildren("url") : [];
      return el("storage", { xmlns: LEGACY }, ...items.map((item) => {
        const c = parseElement(item.payload);
        return el("conference", { jid: item.id, name: c.attrs.name, autojoin: truthy(c.attrs.autojoin) ? "true" : "false" },
          c.getChildText("nick") ? el("nick", {}, c.getChildText("nick")!) : undefined,
          c.getChildText("password") ? el("password", {}, c.getChildText("password")!) : undefined);
      }), ...urls);
    };

    const importLegacy = async (owner: string, storageEl: Element) => {
      const rooms = fromLegacy(storageEl);
      const current = new Map((await storage.pubsub.items(owner, BOOKMARKS)).map((i) => [i.id, i.payload]));
      for (const room of rooms) {
        if (current.get(room.jid) === room.conference.toString()) continue;
        await ctx.runChain("pep/publish", { owner, node: BOOKMARKS, id: room.jid, payload: room.conference, options: NATIVE_OPTIONS });
      }
      const kept = new Set(rooms.map((r) => r.jid));
      for (const id of current.keys()) if (!kept.has(id)) await ctx.runChain("pep/retract", { owner, node: BOOKMARKS, id });
      await exportLegacy(owner);
    };
    // One export at a time per user, each reading the state as it is when it runs, so the last
    // write reflects the last change.
    const exports = new Map<string, Promise<void>>();
    const exportLegacy = (owner: string): Promise<void> => {
      const next = (exports.get(owner) ?? Promise.resolve()).then(() => writeLegacy(owner));
      exports.set(owner, next);
      void next.finally(() => { if (exports.get(owner) === next) exports.delete(owner); }).catch(() => {});
      return next;
    };
    const writeLegacy = async (owner: string) => {
      const legacy = await toLegacy(owner);
      await storage.documents.set(owner, LEGACY_KEY, legacy.toString());
      // XEP-0411 §3: the PEP form of XEP-0048, kept only for clients that use it.
      if ((await storage.pubsub.getConfig(owner, LEGACY)) === undefined) return;
      const [item] = await storage.pubsub.items(owner, LEGACY, { max: 1 });
      if (item?.payload === legacy.toString()) return;
      await ctx.runChain("pep/publish", { owner, node: LEGACY, id: "current", payload: legacy, options: LEGACY_OPTIONS });
    };

    const guard = (work: Promise<void>) => work.catch((err) => ctx.log.error({ err, stage: "bookmarks" }, "bookmark conversion failed"));
    ctx.on("private/set", ({ owner, element }) => {
      if (element.name === "storage" && element.getNS() === LEGACY) return guard(importLegacy(owner, element));
      return undefined;
    });
    ctx.on("pep/published", ({ owner, node, payload, byServer }) => {
      if (node === BOOKMARKS) return guard(exportLegacy(owner));
      // Our own write-backs to the legacy node are not imported again.
      if (node === LEGACY && payload.name === "storage" && !byServer) return guard(importLegacy(owner, payload));
      return undefined;
    });
    ctx.on("pep/retracted", ({ owner, node }) => (node === BOOKMARKS ? guard(exportLegacy(owner)) : undefined));
  },
});
