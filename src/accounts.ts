/**
 * Account operations shared by the CLI, in-band registration and SASL: passwords go in, only
 * SCRAM keys are stored (RFC 5802 §5.1 SaltedPassword material for SHA-1 and SHA-256).
 */
import type { Storage } from "./storage/index.js";
import { deriveCredentials, strongestCredential, verifyPassword } from "./auth/scram.js";
import { parseJid, type Jid } from "./xmpp/jid.js";
import type { HookBus } from "./hooks.js";
import { invalidateTokens } from "./auth/fast.js";

export class AccountError extends Error {
  constructor(readonly code: "exists" | "not-found" | "invalid-jid" | "invalid-password" | "unknown-host", message: string) {
    super(message);
  }
}

export interface Accounts {
  create(jid: string, password: string): Promise<Jid>;
  setPassword(jid: string, password: string): Promise<void>;
  checkPassword(jid: string, password: string): Promise<boolean>;
  remove(jid: string): Promise<void>;
}

export function createAccounts(storage: Storage, hosts: readonly string[], iterations: number, hooks?: HookBus): Accounts {
  const parse = (input: string): Jid => {
    let jid: Jid;
    try {
      jid = parseJid(input);
    } catch (err) {
      throw new AccountError("invalid-jid", `Invalid JID ${JSON.stringify(input)}: ${(err as Error).message}`);
    }
    if (!jid.local || jid.resource) throw new AccountError("invalid-jid", `An account is user@host, got ${JSON.stringify(input)}`);
    if (!hosts.includes(jid.domain)) throw new AccountError("unknown-host", `${jid.domain} is not a host served by this server (hosts: ${hosts.join(", ")})`);
    return jid;
  };
  const credentials = async (password: string) => {
    if (password.length === 0) throw new AccountError("invalid-password", "The password is empty");
    try {
      return await deriveCredentials(password, iterations);
    } catch {
      throw new AccountError("invalid-password", "The password contains characters SASLprep prohibits");
    }
  };
  return {
    async create(input, password) {
      const jid = parse(input);
      const created = await storage.accounts.create({ jid: jid.bare, createdAt: Date.now(), credentials: await credentials(password) });
      if (!created) throw new AccountError("exists", `${jid.bare} already exists`);
      return jid;
    },
    async setPassword(input, password) {
      const jid = parse(input);
      if (!(await storage.accounts.setCredentials(jid.bare, await credentials(password)))) throw new AccountError("not-found", `${jid.bare} does not exist`);
      // XEP-0484: tokens issued under the old password stop working, whoever changed it (client, CLI, admin).
      await invalidateTokens(storage.devices, jid.bare);
    },
    async checkPassword(input, password) {
      const account = await storage.accounts.get(parse(input).bare);
      const stored = account && strongestCredential(account.credentials);
      return stored !== undefined && verifyPassword(stored.credential, stored.hash, password);
    },
    async remove(input) {
      const jid = parse(input);
      if (!(await storage.accounts.exists(jid.bare))) throw new AccountError("not-found", `${jid.bare} does not exist`);
      await hooks?.emit("user/deleting", { jid });
      await storage.accounts.delete(jid.bare);
      await hooks?.emit("user/deleted", { jid });
    },
  };
}
