/**
 * XEP-0050 Ad-Hoc Commands 1.3.0 on the server: the commands modules offer (settings such as who
 * sees one's last activity, device registration for push, XEP-0133 service administration)
 * listed in disco#items of the commands node and run as one form — execute → form, submit
 * (complete) → a note or a result form, or cancel. Commands for administrators are listed to
 * them only and refused to everyone else with forbidden (XEP-0133 §5).
 */
import { randomBytes } from "node:crypto";
import { z } from "zod";
import { defineModule, type AdHocCommand } from "../module.js";
import { el, type Element } from "../xmpp/xml.js";
import { NS } from "../xmpp/ns.js";
import { StanzaError } from "../errors.js";
import type { Jid } from "../xmpp/jid.js";

const COMMANDS = "http://jabber.org/protocol/commands";
const SESSION_MS = 10 * 60_000;

export const adhoc = defineModule({
  name: "adhoc",
  implements: [{ spec: "XEP-0050", version: "1.3.0", note: "single-stage commands" }],
  dependsOn: ["disco"],
  options: z.strictObject({}),
  start(ctx) {
    ctx.feature("host", COMMANDS);
    /** Open command sessions: id → who runs which command, until when. */
    const open = new Map<string, { node: string; user: string; until: number }>();
    const mayRun = (command: AdHocCommand, requester: Jid) => command.allowed === "user" || ctx.isAdmin(requester);
    const find = (node: string | undefined, requester: Jid): AdHocCommand => {
      const command = ctx.commands().find((c) => c.node === node);
      if (!command) throw new StanzaError("item-not-found", "No such command");
      // XEP-0133 §5: "The ability to complete the administrative tasks specified herein MUST NOT
      // be granted to users who lack service-level administrative privileges."
      if (!mayRun(command, requester)) throw new StanzaError("forbidden", "Only server administrators may run this command");
      return command;
    };

    ctx.discoItems("host", ({ owner, node, requester }) => {
      if (node !== COMMANDS) return undefined;
      if (!ctx.hosts.includes(requester.domain)) return [];
      return ctx.commands().filter((c) => mayRun(c, requester)).map((c) => el("item", { jid: owner, node: c.node, name: c.name }));
    });

    ctx.iq("host", "set", COMMANDS, async ({ payload, origin, from }) => {
      if (payload.name !== "command") throw new StanzaError("bad-request");
      // Every command acts on the requester's own account.
      if (!origin) throw new StanzaError("forbidden");
      const command = find(payload.attrs.node, from);
      const action = payload.attrs.action ?? "execute";
      const now = Date.now();
      for (const [id, s] of open) if (s.until < now) open.delete(id);
      const sessionid = payload.attrs.sessionid;
      if (!sessionid) {
        if (action !== "execute") throw new StanzaError("bad-request", "Start a command with execute");
        const id = randomBytes(9).toString("base64url");
        open.set(id, { node: command.node, user: from.bare, until: now + SESSION_MS });
        return el("command", { xmlns: COMMANDS, node: command.node, sessionid: id, status: "executing" },
          el("actions", { execute: "complete" }, el("complete")),
          await command.form({ user: from.toBare() }));
      }
      const session = open.get(sessionid);
      // XEP-0050 §6: an unknown or foreign session is bad-request + <bad-sessionid/>.
      if (!session || session.user !== from.bare || session.node !== command.node) {
        throw new StanzaError("bad-request", undefined, "modify", el("bad-sessionid", { xmlns: COMMANDS }));
      }
      open.delete(sessionid);
      if (action === "cancel") return el("command", { xmlns: COMMANDS, node: command.node, sessionid, status: "canceled" });
      if (action !== "complete" && action !== "execute") throw new StanzaError("bad-request", undefined, "modify", el("bad-action", { xmlns: COMMANDS }));
      const form = payload.getChild("x", NS.DATA_FORMS);
      if (!form) throw new StanzaError("bad-request", undefined, "modify", el("bad-payload", { xmlns: COMMANDS }));
      const outcome = await command.submit({ user: from.toBare(), form: form as Element });
      const { note, form: result } = typeof outcome === "string" ? { note: outcome, form: undefined } : outcome;
      return el("command", { xmlns: COMMANDS, node: command.node, sessionid, status: "completed" },
        note !== undefined ? el("note", { type: "info" }, note) : undefined, result);
    });
  },
});
