/**
 * IQs for a component domain served in this process (upload.<host>, push.<host>): the handler
 * returns the result payload or throws a StanzaError; anything else is answered
 * internal-server-error. Answers come from the domain that was addressed.
 */
import { el, childElements, type Element } from "../xmpp/xml.js";
import { HANDLED, Priority } from "../hooks.js";
import { StanzaError } from "../errors.js";
import type { ModuleContext } from "../module.js";
import type { Jid } from "../xmpp/jid.js";
import type { Session } from "../xmpp/sessions.js";

export interface DomainIq {
  type: "get" | "set";
  payload: Element;
  from: Jid;
  /** The component domain addressed. */
  domain: string;
  /** The local client session it came from, if any. */
  origin: Session | undefined;
}

export function serveDomainIqs(ctx: ModuleContext<unknown>, domains: ReadonlySet<string>, handler: (iq: DomainIq) => Promise<Element | undefined>): void {
  // The domain is the component's own: it answers for it, before the server's host handlers.
  ctx.chain("iq/host", async ({ stanza, to, from, origin }) => {
    if (!domains.has(to.domain)) return undefined;
    const type = stanza.attrs.type;
    if (type !== "get" && type !== "set") return HANDLED;
    try {
      const payload = childElements(stanza)[0];
      if (!payload) throw new StanzaError("bad-request");
      const result = await handler({ type, payload, from, domain: to.domain, origin });
      await ctx.router.route(el("iq", { type: "result", id: stanza.attrs.id, from: to.domain, to: from.full }, result));
    } catch (err) {
      if (!(err instanceof StanzaError)) ctx.log.error({ err, stage: ctx.name }, "component request failed");
      await ctx.router.bounce(stanza, err instanceof StanzaError ? err : new StanzaError("internal-server-error"), origin);
    }
    return HANDLED;
  }, Priority.ADDRESSEE);
}
