/**
 * The devices logged in to an account (issue 18): every client installation that named itself
 * with a XEP-0388 <user-agent id>, whether it holds a XEP-0484 FAST token, and whether it is
 * online now. A XEP-0050 command lists them and revokes one: its tokens are forgotten and its
 * sessions end, so it has to log in with the password again.
 */
import { z } from "zod";
import { defineModule } from "../module.js";
import { StreamError, StanzaError } from "../errors.js";
import { buildForm, readForm } from "../xmpp/forms.js";
import { xmppDateTime } from "../xmpp/datetime.js";
import type { Device, Storage } from "../storage/index.js";
import type { SessionView } from "../xmpp/sessions.js";

export const DEVICES_NODE = "urn:parley:devices";

export function describeDevice(device: Device, online: boolean, now: number): string {
  const what = [device.software, device.name].filter(Boolean).join(" on ") || "Unnamed client";
  const token = device.current ?? device.next;
  const login = token && token.expiresAt > now ? `fast login until ${xmppDateTime(token.expiresAt)}` : "password login";
  return `${what} — ${online ? "online" : `last seen ${xmppDateTime(device.lastSeen)}`}, ${login}`;
}

/** The sessions a device has open now. */
export function sessionsOfDevice(sessions: SessionView, owner: string, id: string) {
  return sessions.ofUser(owner).filter((s) => s.userAgentId === id);
}

/** Logs a device out: its tokens are forgotten and its sessions end. false when the account has no such device. */
export async function revokeDevice(storage: Storage, sessions: SessionView, owner: string, id: string): Promise<boolean> {
  if (!(await storage.devices.get(owner, id))) return false;
  await storage.devices.delete(owner, id);
  for (const session of sessionsOfDevice(sessions, owner, id)) session.close(new StreamError("not-authorized", "This device was logged out"));
  return true;
}

export const devices = defineModule({
  name: "devices",
  implements: [{ spec: "XEP-0388", version: "1.0.4", note: "user agents as devices" }, { spec: "XEP-0484", version: "0.1.0", note: "revocation" }],
  dependsOn: ["adhoc"],
  options: z.strictObject({}),
  start(ctx) {
    const online = (user: string, id: string) => sessionsOfDevice(ctx.sessions, user, id);

    ctx.command({
      node: DEVICES_NODE,
      name: "Devices logged in to my account",
      allowed: "user",
      form: async ({ user }) => {
        const now = Date.now();
        const list = await ctx.storage.devices.list(user.bare);
        return buildForm("form", DEVICES_NODE, [
          { var: "devices", type: "fixed", values: list.length ? [] : ["No devices have logged in with a user-agent id."] },
          {
            var: "revoke", type: "list-multi", label: "Log out these devices",
            options: list.map((d) => ({ label: describeDevice(d, online(user.bare, d.id).length > 0, now), value: d.id })),
          },
        ]);
      },
      submit: async ({ user, form }) => {
        const chosen = readForm(form).fields.get("revoke") ?? [];
        const known = new Set((await ctx.storage.devices.list(user.bare)).map((d) => d.id));
        const unknown = chosen.filter((id) => !known.has(id));
        if (unknown.length) throw new StanzaError("item-not-found", "No such device");
        for (const id of chosen) await revokeDevice(ctx.storage, ctx.sessions, user.bare, id);
        ctx.log.info({ stage: "devices", revoked: chosen.length }, "devices revoked by their user");
        return chosen.length ? `Logged out ${chosen.length} device(s).` : "Nothing changed.";
      },
    });
  },
});
