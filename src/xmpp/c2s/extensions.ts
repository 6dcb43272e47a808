/**
 * The points where modules extend client streams beyond stanzas: IQs before authentication
 * (XEP-0077 in-band registration) and top-level elements that are not stanzas ("nonzas", e.g.
 * XEP-0352 <active/>). Kept apart from the negotiation code so modules depend on these types only.
 */
import type { Element } from "../xml.js";
import type { Session } from "../sessions.js";

export type UnauthenticatedIqHandler = (iq: Element, conn: { host: string; remoteAddress: string }) => Promise<Element | undefined>;

/** A top-level element other than a stanza from a bound session. */
export type NonzaHandler = (element: Element, session: Session) => void;

/**
 * A XEP-0386 inline feature: the element the client put into its Bind 2 request, applied to the
 * new session before anything is sent to it. Returns what goes into <bound/>, if anything.
 */
export type BindFeatureHandler = (element: Element, session: Session) => string | undefined;
