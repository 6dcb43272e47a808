/**
 * STARTTLS (RFC 6120 §5): on a plain connection TLS comes before anything else. "If the receiving
 * entity offers [STARTTLS as] mandatory-to-negotiate ... the initiating entity MUST" negotiate it
 * first (§5.3.1); we offer it as required, and answer everything else accordingly.
 */
import type { Element } from "../xml.js";
import { NS } from "../ns.js";

/** XEP-0388; not imported from ./sasl2.ts, which this step comes before. */
const NS_SASL2 = "urn:xmpp:sasl:2";

export const STARTTLS_FEATURE = `<starttls xmlns='${NS.TLS}'><required/></starttls>`;

/**
 * What a pre-TLS element gets: the upgrade; a SASL failure telling the client to encrypt first
 * (RFC 6120 §6.4.1 via encryption-required, as Prosody and ejabberd answer); or, for anything
 * else, the policy-violation stream error.
 */
export function preTlsAnswer(element: Element): "starttls" | "encryption-required" | "policy-violation" {
  const ns = element.attrs.xmlns;
  if (element.name === "starttls" && ns === NS.TLS) return "starttls";
  if ((element.name === "auth" && ns === NS.SASL) || (element.name === "authenticate" && ns === NS_SASL2)) return "encryption-required";
  return "policy-violation";
}
