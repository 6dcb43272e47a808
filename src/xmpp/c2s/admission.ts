/**
 * Who may open a client connection, whatever the transport (TCP, WebSocket, BOSH): banned
 * addresses are refused, and no address holds more than its share of connections (HARDENING §2.2,
 * Prosody mod_limits / ejabberd max_fsm_queue class). One instance is shared by every listener, so
 * the limit is per address, not per port.
 */
import type { AuthThrottle } from "./throttle.js";

export class Admission {
  private readonly perAddress = new Map<string, number>();

  constructor(private readonly throttle: AuthThrottle, private readonly maxPerAddress: number) {}

  /** Takes a slot for `address`; returns the function that gives it back, or undefined when refused. */
  admit(address: string): (() => void) | undefined {
    const n = this.perAddress.get(address) ?? 0;
    if (this.throttle.isBanned(address) || n >= this.maxPerAddress) return undefined;
    this.perAddress.set(address, n + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.perAddress.get(address) ?? 1) - 1;
      if (left <= 0) this.perAddress.delete(address);
      else this.perAddress.set(address, left);
    };
  }
}
