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
import type { Device } from "../storage/index.js";

export const DEVICES_NODE = "urn:parley:devices";

export function describeDevice(device: Device, online: boolean, now: number): string {
  const what = [device.software, device.name].filter(Boolean).join(" on ") || "Unnamed client";
  const token = device.current ?? device.next;
  const login = token && token.expiresAt > now ? `fast login until ${xmppDateTime(token.expiresAt)}` : "password login";
  return `${what} — ${online ? "online" : `last seen ${xmppDateTime(device.lastSeen)}`}, ${login}`;
}

export const devices = defineModule({
  name: "devices",
  implements: [{ spec: "XEP-0388", version: "1.0.4", note: "user agents as devices" }, { spec: "XEP-0484", version: "0.1.0", note: "revocation" }],
  dependsOn: ["adhoc"],
  options: z.strictObject({}),
  start(ctx) {
    const online = (user: string, id: string) => ctx.sessions.ofUser(user).filter((s) => s.userAgentId === id);

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
        for (const id of chosen) {
          await ctx.storage.devices.delete(user.bare, id);
          for (const session of online(user.bare, id)) session.close(new StreamError("not-authorized", "This device was logged out"));
        }
        ctx.log.info({ stage: "devices", revoked: chosen.length }, "devices revoked by their user");
        return chosen.length ? `Logged out ${chosen.length} device(s).` : "Nothing changed.";
      },
    });
  },
});
