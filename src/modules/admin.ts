/**
 * XEP-0133 Service Administration 1.3.1: ad-hoc commands (XEP-0050) for the server administrators
 * listed in the config's `admins`, with the XEP's node names and form fields so that Gajim, Psi
 * and other clients run them: add, delete, disable and re-enable users, change a user's password,
 * end a user's sessions, list online users, announce to everyone online. Anyone else gets
 * forbidden (the adhoc module checks `allowed: "admin"`).
 */
import { z } from "zod";
import { defineModule, type AdHocCommand, type CommandOutcome } from "../module.js";
import { StanzaError } from "../errors.js";
import { AccountError } from "../accounts.js";
import { buildForm, readForm, singleValue, type FieldSpec, type SubmittedForm } from "../xmpp/forms.js";
import { createAdminActions } from "../admin/actions.js";

/** XEP-0133 §8: the FORM_TYPE of every form, and the prefix of every command node. */
export const ADMIN = "http://jabber.org/protocol/admin";

/** AccountError → the XEP-0133 §6 error conditions. */
function asStanzaError(err: unknown): never {
  if (err instanceof AccountError) {
    switch (err.code) {
      case "exists": throw new StanzaError("conflict", err.message);
      case "not-found": throw new StanzaError("item-not-found", err.message);
      case "invalid-jid": throw new StanzaError("jid-malformed", err.message);
      case "unknown-host": throw new StanzaError("not-allowed", err.message);
      case "invalid-password": throw new StanzaError("not-acceptable", err.message);
    }
  }
  throw err;
}

export const admin = defineModule({
  name: "admin",
  implements: [{ spec: "XEP-0133", version: "1.3.1", note: "add/delete/disable/re-enable user, change password, end session, online users, announce" }],
  dependsOn: ["adhoc"],
  options: z.strictObject({
    /** Most JIDs the online-users list returns (XEP-0133 §4.20 lets a service truncate it). */
    maxOnlineUsers: z.number().int().min(1).default(1000),
  }),
  start(ctx) {
    const actions = createAdminActions({
      hosts: ctx.hosts, accounts: ctx.accounts, storage: ctx.storage, sessions: ctx.sessions,
      deliver: (session, stanza) => ctx.router.deliver(session, stanza),
    });
    const command = (node: string, name: string, fields: readonly FieldSpec[], submit: (f: SubmittedForm) => Promise<CommandOutcome>): AdHocCommand => ({
      node: `${ADMIN}#${node}`,
      name,
      allowed: "admin",
      form: () => buildForm("form", ADMIN, fields),
      submit: async ({ form: x }) => {
        const f = readForm(x);
        if (f.formType !== undefined && f.formType !== ADMIN) throw new StanzaError("bad-request", `FORM_TYPE must be ${ADMIN}`);
        try {
          return await submit(f);
        } catch (err) {
          return asStanzaError(err);
        }
      },
    });
    const required = (f: SubmittedForm, name: string): string => {
      const v = singleValue(f, name);
      if (v === undefined || v === "") throw new StanzaError("not-acceptable", `The field '${name}' is required`);
      return v;
    };
    const jids = (f: SubmittedForm): string[] => {
      const values = (f.fields.get("accountjids") ?? []).map((v) => v.trim()).filter((v) => v !== "");
      if (values.length === 0) throw new StanzaError("not-acceptable", "The field 'accountjids' is required");
      return values;
    };
    const accountjids = (label: string): FieldSpec[] => [{ var: "accountjids", type: "jid-multi", label }];
    const many = async (f: SubmittedForm, act: (jid: string) => Promise<void>, done: string) => {
      const list = jids(f);
      // All named accounts must exist before any is touched: a typo changes nothing.
      for (const j of list) await actions.existingAccount(j);
      for (const j of list) await act(j);
      return `${done}: ${list.join(", ")}`;
    };

    // §4.1
    ctx.command(command("add-user", "Add a User", [
      { var: "accountjid", type: "jid-single", label: "The Jabber ID for the account to be added" },
      { var: "password", type: "text-private", label: "The password for this account" },
      { var: "password-verify", type: "text-private", label: "Retype password" },
    ], async (f) => {
      const jid = required(f, "accountjid");
      const password = required(f, "password");
      const verify = singleValue(f, "password-verify");
      if (verify !== undefined && verify !== password) throw new StanzaError("not-acceptable", "The passwords do not match");
      const created = await actions.createUser(jid, password);
      ctx.log.info({ stage: "admin", command: "add-user", user: created.bare }, "account created by an administrator");
      return `Created ${created.bare}`;
    }));
    // §4.2
    ctx.command(command("delete-user", "Delete a User", accountjids("The Jabber ID(s) to delete"), (f) =>
      many(f, (j) => actions.deleteUser(j), "Deleted")));
    // §4.3
    ctx.command(command("disable-user", "Disable a User", accountjids("The Jabber ID(s) to disable"), (f) =>
      many(f, (j) => actions.setDisabled(j, true), "Disabled")));
    // §4.4
    ctx.command(command("reenable-user", "Re-Enable a User", accountjids("The Jabber ID(s) to re-enable"), (f) =>
      many(f, (j) => actions.setDisabled(j, false), "Re-enabled")));
    // §4.5
    ctx.command(command("end-user-session", "End User Session", accountjids("The Jabber ID(s) for which to end sessions"), async (f) => {
      let ended = 0;
      for (const j of jids(f)) ended += actions.endSessions(j, "Session ended by an administrator");
      return `Ended ${ended} session${ended === 1 ? "" : "s"}`;
    }));
    // §4.7
    ctx.command(command("change-user-password", "Change User Password", [
      { var: "accountjid", type: "jid-single", label: "The Jabber ID for this account" },
      { var: "password", type: "text-private", label: "The password for this account" },
    ], async (f) => {
      const jid = required(f, "accountjid");
      await actions.setPassword(jid, required(f, "password"));
      return `Password changed for ${(await actions.existingAccount(jid)).bare}`;
    }));
    // §4.20, under its node and under "get-online-users" (the node ejabberd and older clients use).
    const onlineUsers = (node: string) => command(node, "Get List of Online Users", [{
      var: "max_items", type: "list-single", label: "Maximum number of items to show", values: ["100"],
      options: ["25", "50", "75", "100", "150", "200", "none"].map((v) => ({ label: v === "none" ? "None" : v, value: v })),
    }], async (f) => {
      const max = singleValue(f, "max_items") ?? "100";
      const limit = max === "none" ? ctx.options.maxOnlineUsers : Number(max);
      if (!Number.isInteger(limit) || limit < 1) throw new StanzaError("not-acceptable", "max_items is a number or 'none'");
      const users = actions.onlineUsers();
      const shown = users.slice(0, Math.min(limit, ctx.options.maxOnlineUsers));
      return {
        note: shown.length < users.length ? `${users.length} users online; showing ${shown.length}` : `${users.length} users online`,
        form: buildForm("result", ADMIN, [{ var: "onlineuserjids", type: "jid-multi", label: "The list of all online users", values: shown }]),
      };
    });
    ctx.command(onlineUsers("get-online-users-list"));
    ctx.command(onlineUsers("get-online-users"));
    // §4.23
    ctx.command(command("announce", "Send Announcement to Online Users", [
      { var: "subject", type: "text-single", label: "Subject" },
      { var: "announcement", type: "text-multi", label: "Announcement" },
    ], async (f) => {
      // XEP-0004 §3.3: each value of a text-multi field is one line.
      const text = (f.fields.get("announcement") ?? []).join("\n").trim();
      if (!text) throw new StanzaError("not-acceptable", "The field 'announcement' is required");
      const n = actions.announce(text, singleValue(f, "subject") || undefined);
      ctx.log.info({ stage: "admin", command: "announce", sessions: n }, "announcement sent");
      return `Sent to ${n} session${n === 1 ? "" : "s"}`;
    }));
  },
});
