/**
 * Strophe.js (the BOSH client of Converse.js, JSXC and Jitsi) in Node: its own Node build wires
 * @xmldom/xmldom in for the DOM, and ./xhr.ts stands in for the browser's XMLHttpRequest.
 */
import { $build, Strophe } from "strophe.js";

type Connection = InstanceType<typeof Strophe.Connection>;
import { installXMLHttpRequest } from "./xhr.js";

installXMLHttpRequest();
Strophe.setLogLevel(Strophe.LogLevel.FATAL);
process.env.NODE_TLS_REJECT_UNAUTHORIZED = "0";

export { Strophe };

export interface StropheClient {
  conn: Connection;
  /** Stanzas received (jabber:client message/presence/iq), in order. */
  inbox: Element[];
  waitFor(pred: (e: Element) => boolean, timeoutMs?: number): Promise<Element>;
  /**
   * XEP-0198 §5 resumption instead of binding (after `explicitResourceBinding`). Strophe drives
   * XEP-0198 itself only over WebSocket, so this does what Converse.js does over BOSH: send
   * <resume/> and, on <resumed/>, treat the connection as bound.
   */
  resume(previd: string, h: number): Promise<Element>;
  /** The network goes away: open requests are cut, no terminate is sent, no request follows. */
  drop(): void;
  disconnect(): Promise<void>;
}

interface StropheInternals {
  authenticated: boolean;
  _proto: { _abortAllRequests(): void };
  _doDisconnect(): void;
  _addSysHandler(handler: (e: Element) => boolean, ns: string | null, name: string | null, type: string | null, id: string | null): unknown;
}

/**
 * Connects over BOSH and resolves once Strophe reports CONNECTED (or, with
 * `explicitResourceBinding`, BINDREQUIRED: authenticated, no resource bound yet).
 */
export async function stropheConnect(opts: { url: string; jid: string; password: string; explicitResourceBinding?: boolean; wait?: number }): Promise<StropheClient> {
  const conn = new Strophe.Connection(opts.url, { explicitResourceBinding: opts.explicitResourceBinding });
  const inbox: Element[] = [];
  const waiters: Array<{ pred: (e: Element) => boolean; resolve: (e: Element) => void }> = [];
  const deliver = (e: Element) => {
    inbox.push(e);
    for (const w of [...waiters]) if (w.pred(e)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(e); }
    return true;
  };
  for (const name of ["message", "presence", "iq"]) conn.addHandler(deliver, null as never, name);
  const target = opts.explicitResourceBinding ? Strophe.Status.BINDREQUIRED : Strophe.Status.CONNECTED;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("Strophe did not connect in time")), 15_000);
    conn.connect(opts.jid, opts.password, (status: number, condition?: string | null) => {
      if (status === target) { clearTimeout(timer); resolve(); }
      else if (status === Strophe.Status.CONNFAIL || status === Strophe.Status.AUTHFAIL || status === Strophe.Status.DISCONNECTED) {
        clearTimeout(timer);
        reject(new Error(`Strophe status ${status} ${condition ?? ""}`));
      }
    }, opts.wait ?? 10, 1);
  });
  return {
    conn,
    inbox,
    waitFor(pred, timeoutMs = 10_000) {
      const found = inbox.find(pred);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const w = { pred, resolve: (e: Element) => { clearTimeout(t); resolve(e); } };
        const t = setTimeout(() => { waiters.splice(waiters.indexOf(w), 1); reject(new Error("timed out waiting for a stanza over BOSH")); }, timeoutMs);
        waiters.push(w);
      });
    },
    resume(previd, h) {
      const internals = conn as unknown as StropheInternals;
      return new Promise<Element>((resolve, reject) => {
        const SM = "urn:xmpp:sm:3";
        internals._addSysHandler((e) => { internals.authenticated = true; resolve(e); return false; }, SM, "resumed", null, null);
        internals._addSysHandler((e) => { reject(new Error(`resumption failed: ${e.toString()}`)); return false; }, SM, "failed", null, null);
        conn.send($build("resume", { xmlns: SM, previd, h: String(h) }).tree());
      });
    },
    drop() {
      const internals = conn as unknown as StropheInternals;
      internals._proto._abortAllRequests();
      internals._doDisconnect();
    },
    disconnect() {
      return new Promise<void>((resolve) => {
        const done = setTimeout(resolve, 5000);
        conn.connect_callback = (status: number) => { if (status === Strophe.Status.DISCONNECTED) { clearTimeout(done); resolve(); } };
        conn.disconnect("test over");
      });
    },
  };
}

/** The text of a child element, through the DOM Strophe hands out. */
export function childText(e: Element, name: string): string | undefined {
  return e.getElementsByTagName(name)[0]?.textContent ?? undefined;
}
