/**
 * What a server administrator can do, written once for both ways in: XEP-0133 commands from an
 * XMPP client (src/modules/admin.ts) and the web admin (src/admin/web.ts). Account errors are
 * AccountError; each caller turns them into its own kind of answer.
 */
import { AccountError, type Accounts } from "../accounts.js";
import { StreamError } from "../errors.js";
import { el, type Element } from "../xmpp/xml.js";
import { tryParseJid, type Jid } from "../xmpp/jid.js";
import type { Session, SessionView } from "../xmpp/sessions.js";
import type { Storage } from "../storage/index.js";

/** A request an administrator made that cannot be done, with the reason to show them. */
export class AdminError extends Error {}

export interface AdminActionDeps {
  hosts: readonly string[];
  accounts: Accounts;
  storage: Storage;
  sessions: SessionView;
  /** Writes a stanza to a local session through the stanza/out filters. */
  deliver(session: Session, stanza: Element): void;
}

export interface AdminActions {
  /** A bare JID of a local account that exists, or AccountError (invalid-jid, unknown-host, not-found). */
  existingAccount(input: string): Promise<Jid>;
  createUser(jid: string, password: string): Promise<Jid>;
  /** Deletes the account with all its data and ends its sessions. */
  deleteUser(jid: string): Promise<void>;
  setPassword(jid: string, password: string): Promise<void>;
  /** A disabled account keeps its data; its sessions end now and it cannot log in until re-enabled. */
  setDisabled(jid: string, disabled: boolean): Promise<void>;
  /** A bare JID ends every session of the user, a full JID that one; returns how many ended. */
  endSessions(jid: string, reason: string): number;
  /** Bare JIDs with at least one session, sorted. */
  onlineUsers(): string[];
  /** A headline message to every session; returns how many got it. */
  announce(body: string, subject?: string): number;
}

export function createAdminActions(deps: AdminActionDeps): AdminActions {
  const { accounts, storage, sessions } = deps;
  const parseLocal = (input: string, resource: "allowed" | "refused"): Jid => {
    const jid = tryParseJid(input.trim());
    if (!jid || !jid.local || (resource === "refused" && jid.resource)) throw new AccountError("invalid-jid", `${JSON.stringify(input)} is not an account JID (user@host)`);
    if (!deps.hosts.includes(jid.domain)) throw new AccountError("unknown-host", `${jid.domain} is not a host of this server`);
    return jid;
  };
  const existingAccount = async (input: string): Promise<Jid> => {
    const jid = parseLocal(input, "refused");
    if (!(await storage.accounts.exists(jid.bare))) throw new AccountError("not-found", `${jid.bare} does not exist`);
    return jid;
  };
  const close = (targets: readonly Session[], error: StreamError) => {
    for (const s of [...targets]) s.close(error);
    return targets.length;
  };
  return {
    existingAccount,
    createUser: (jid, password) => accounts.create(parseLocal(jid, "refused").bare, password),
    async deleteUser(input) {
      const jid = await existingAccount(input);
      await accounts.remove(jid.bare);
      close(sessions.ofUser(jid.bare), new StreamError("not-authorized", "Account removed"));
    },
    setPassword: async (input, password) => accounts.setPassword((await existingAccount(input)).bare, password),
    async setDisabled(input, disabled) {
      const jid = await existingAccount(input);
      await storage.accounts.setDisabled(jid.bare, disabled);
      // XEP-0133 §4.3: "Disabling a user MUST result in the termination of any active sessions for the user".
      if (disabled) close(sessions.ofUser(jid.bare), new StreamError("not-authorized", "Account disabled"));
    },
    endSessions(input, reason) {
      const jid = parseLocal(input, "allowed");
      // XEP-0133 §4.5: a bare JID ends all of the user's sessions, a full JID only that one.
      const targets = jid.resource ? [sessions.get(jid.full)].filter((s) => s !== undefined) : sessions.ofUser(jid.bare);
      return close(targets, new StreamError("policy-violation", reason));
    },
    onlineUsers() {
      const users = new Set<string>();
      for (const s of sessions.all()) users.add(s.jid.bare);
      return [...users].sort();
    },
    announce(body, subject) {
      let n = 0;
      for (const s of [...sessions.all()]) {
        // Headline: shown now, never stored offline or archived (RFC 6121 §5.2.2).
        deps.deliver(s, el("message", { type: "headline", from: s.jid.domain, to: s.jid.full },
          subject ? el("subject", {}, subject) : undefined, el("body", {}, body)));
        n++;
      }
      return n;
    },
  };
}
