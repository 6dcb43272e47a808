/**
 * XEP-0484 Fast Authentication Streamlining Tokens 0.1.0: tokens per user and device (the
 * XEP-0388 user-agent id), issued after a full authentication, used with the HT-* mechanisms
 * (./ht.ts), rotated, and invalidated on request, on password change and with the account.
 *
 * Two slots per device (XEP-0484 §6.1): a new token goes to 'next'; using it moves it to 'current'
 * and so retires the older one. Only SHA-256 of a token is stored.
 */
import { createHash, randomBytes } from "node:crypto";
import type { Device, DeviceStore, FastToken } from "../storage/index.js";
import { htVerify, htResponder, type HtMechanism } from "./ht.js";

/** 96 base64url characters: longer than SHA-256's 64-byte block, so HMAC keys with SHA-256(token). */
export const FAST_TOKEN_BYTES = 72;

export interface FastOptions {
  /** How long a token lives (Prosody: 21 days). */
  ttlMs: number;
  /** A token older than this is replaced at its next use (Prosody: 1 day). */
  rotateAfterMs: number;
  /** Devices remembered per user; past it, the one seen longest ago is forgotten with its tokens. */
  maxDevicesPerUser: number;
}

export interface UserAgent {
  id: string;
  software: string;
  name: string;
}

export type FastOutcome =
  | { ok: true; responder: Buffer; rotate: boolean; device: Device }
  | { ok: false; condition: "not-authorized" | "credentials-expired" };

const keyOf = (token: FastToken) => Buffer.from(token.hash, "base64");

function withoutTokens(device: Device): Device {
  const { current: _current, next: _next, ...rest } = device;
  return rest;
}

/** The device as the user-agent of a login at `now` describes it. */
const seenNow = (device: Device, agent: UserAgent, now: number): Device => ({ ...device, software: agent.software, name: agent.name, lastSeen: now });

/** A password change: no token issued under the old password stays valid (the devices stay known). */
export async function invalidateTokens(devices: DeviceStore, owner: string): Promise<void> {
  for (const device of await devices.list(owner)) await devices.put(withoutTokens(device));
}

export class FastTokens {
  constructor(private readonly devices: DeviceStore, private readonly options: FastOptions, private readonly now: () => number = Date.now) {}

  /** Notes a device at login; keeps at most `maxDevicesPerUser` of them. */
  async seen(owner: string, agent: UserAgent): Promise<Device> {
    const now = this.now();
    const known = await this.devices.get(owner, agent.id);
    const device: Device = known
      ? seenNow(known, agent, now)
      : { owner, id: agent.id, software: agent.software, name: agent.name, firstSeen: now, lastSeen: now };
    await this.devices.put(device);
    if (!known) {
      const all = await this.devices.list(owner);
      for (const old of all.slice(this.options.maxDevicesPerUser)) await this.devices.delete(owner, old.id);
    }
    return device;
  }

  /**
   * A new token for the device (XEP-0484 §4.3), bound to `mechanism`. It takes the 'next' slot:
   * an earlier token issued but never used is dropped (§4.5 "SHOULD invalidate"). `device` is the
   * row this login just wrote (from `seen` or `authenticate`), so it is not read again.
   */
  async issue(device: Device, mechanism: HtMechanism): Promise<{ token: string; expiresAt: number }> {
    const token = randomBytes(FAST_TOKEN_BYTES).toString("base64url");
    const expiresAt = this.now() + this.options.ttlMs;
    const next: FastToken = { hash: createHash("sha256").update(token).digest("base64"), mechanism, expiresAt, count: 0 };
    await this.devices.put({ ...device, next });
    return { token, expiresAt };
  }

  /**
   * Checks a token proof (§4.4, §6.1): the 'next' slot first, then 'current'; the mechanism must be
   * the one the token was issued for, it must not have expired, and a 'count' must grow.
   * A success also notes the device as `seen` does, in the same write.
   */
  async authenticate(owner: string, agent: UserAgent, mechanism: HtMechanism, proof: Buffer, cb: Buffer, count: number | undefined): Promise<FastOutcome> {
    const device = await this.devices.get(owner, agent.id);
    const now = this.now();
    for (const slot of ["next", "current"] as const) {
      const token = device?.[slot];
      if (!device || !token || token.mechanism !== mechanism || !htVerify(keyOf(token), proof, cb)) continue;
      // XEP-0484 §6.2: a token the server no longer trusts fails with credentials-expired.
      if (token.expiresAt <= now) return { ok: false, condition: "credentials-expired" };
      if (count !== undefined && count <= token.count) return { ok: false, condition: "not-authorized" };
      const used: FastToken = { ...token, count: count ?? token.count };
      // Using 'next' retires 'current' (§4.5: tokens with an earlier expiry are invalidated).
      const { next: _retired, ...withoutNext } = device;
      const updated: Device = slot === "next" ? { ...withoutNext, current: used } : { ...device, current: used };
      const noted = seenNow(updated, agent, now);
      await this.devices.put(noted);
      const age = now - (token.expiresAt - this.options.ttlMs);
      return { ok: true, responder: htResponder(keyOf(token), cb), rotate: age >= this.options.rotateAfterMs, device: noted };
    }
    return { ok: false, condition: "not-authorized" };
  }

  /** XEP-0484 §4.6: the client logs out: its tokens stop working at once. */
  async invalidate(device: Device): Promise<Device> {
    const updated = withoutTokens(device);
    await this.devices.put(updated);
    return updated;
  }

  list(owner: string): Promise<Device[]> {
    return this.devices.list(owner);
  }

  /** The user or an operator revokes a device: it is forgotten with its tokens. */
  forget(owner: string, deviceId: string): Promise<void> {
    return this.devices.delete(owner, deviceId);
  }
}
