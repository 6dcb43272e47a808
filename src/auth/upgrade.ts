/**
 * XEP-0480 SASL Upgrade Tasks 0.1.0, the SCRAM tasks (§3): an account that lacks the keys of a
 * SCRAM hash (one imported with only SCRAM-SHA-1 keys, XEP-0227) gets them from its client during
 * a SASL2 login, without the password crossing the wire: the server sends a salt and an
 * iteration count, the client answers with the SaltedPassword, the server stores the keys derived
 * from it. The negotiation (c2s/negotiation.ts) runs the exchange; the rules are here.
 */
import { randomBytes } from "node:crypto";
import { SCRAM_HASHES, credentialFromSalted, hashLength } from "./scram.js";
import type { ScramCredential, ScramCredentials, ScramHash } from "../storage/index.js";

export const NS_SASL_UPGRADE = "urn:xmpp:sasl:upgrade:0";
export const NS_SCRAM_UPGRADE = "urn:xmpp:scram-upgrade:0";

/**
 * §2.1: "Upgrade task names SHOULD have a prefix of "UPGR-" … followed by the SASL mechanism name",
 * and "MUST use only the names of variants without channel-binding".
 */
const TASKS = new Map<string, ScramHash>(SCRAM_HASHES.map((h) => [`UPGR-SCRAM-${h}`, h]));

/** The tasks the server offers: a SCRAM hash it can store keys for. */
export const UPGRADE_TASKS: readonly string[] = [...TASKS.keys()];

/** Of the tasks a client asked for, those this account needs, in the order asked. */
export function neededUpgrades(asked: readonly string[], credentials: ScramCredentials): string[] {
  return [...new Set(asked)].filter((task) => {
    const hash = TASKS.get(task);
    return hash !== undefined && !credentials[hash];
  });
}

/** The data one task sends the client: the salt and iteration count of the keys it will make. */
export interface UpgradeChallenge {
  task: string;
  hash: ScramHash;
  salt: Buffer;
  iterations: number;
}

export function upgradeChallenge(task: string, iterations: number): UpgradeChallenge {
  const hash = TASKS.get(task);
  if (!hash) throw new Error(`not an upgrade task: ${task}`);
  return { task, hash, salt: randomBytes(16), iterations };
}

/** §3: "The client then calculates the SaltedPassword and sends back its base64 encoded value"; undefined when it is not one. */
export function upgradedCredential(challenge: UpgradeChallenge, salted: Buffer): ScramCredential | undefined {
  if (salted.length !== hashLength(challenge.hash)) return undefined;
  return credentialFromSalted(challenge.hash, salted, challenge.salt, challenge.iterations);
}
