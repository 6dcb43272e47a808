/**
 * The element type every layer shares. We build and serialise stanzas with ltx's Element
 * (the tree used by @xmpp/xml); parsing never goes through ltx's own parser — see parser.ts.
 */
import { Element, escapeXML, escapeXMLText } from "ltx";

export { Element, escapeXML, escapeXMLText };

export type Attrs = Record<string, string | number | undefined>;

/** Build an element; undefined attributes are left out, numbers are stringified. */
export function el(name: string, attrs: Attrs = {}, ...children: Array<Element | string | undefined | null | false>): Element {
  const clean: Record<string, string> = {};
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined) clean[k] = String(v);
  const node = new Element(name, clean);
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (typeof child === "string") node.t(child);
    else node.cnode(child);
  }
  return node;
}

/** The first child element (iq payloads have exactly one). */
export function firstChildElement(node: Element): Element | undefined {
  for (const c of node.children) if (typeof c !== "string") return c;
  return undefined;
}

/** Element.getChild without the array ltx builds for every call: for checks made on every message. */
export function findChild(node: Element, name: string, ns?: string): Element | undefined {
  for (const c of node.children) if (typeof c !== "string" && c.getName() === name && (!ns || c.getNS() === ns)) return c;
  return undefined;
}

export function childElements(node: Element): Element[] {
  const out: Element[] = [];
  for (const c of node.children) if (typeof c !== "string") out.push(c);
  return out;
}

/** Namespace of an element as declared on it or inherited within its own tree. */
export function nsOf(node: Element): string | undefined {
  return node.getNS();
}

/** A deep copy detached from its parent. */
export function cloneElement(node: Element): Element {
  const copy = new Element(node.name, { ...node.attrs });
  for (const c of node.children) copy.cnode(typeof c === "string" ? c : cloneElement(c));
  return copy;
}

/**
 * Fan-out with one serialization: copies of `template` that differ only in their attributes and
 * share its children, which are serialized once. A copy whose children change afterwards (a
 * filter adds one) falls back to normal serialization.
 */
export function shareChildren(template: Element): (attrs: Record<string, string | undefined>) => Element {
  const shared = [...template.children];
  let inner = "";
  for (const child of shared) inner += typeof child === "string" ? escapeXMLText(child) : child.toString();
  class SharedChildren extends Element {
    override write(writer: (part: string) => void): void {
      const unchanged = this.children.length === shared.length && this.children.every((c, i) => c === shared[i]);
      if (!unchanged || shared.length === 0) return super.write(writer);
      writer(`<${this.name}`);
      for (const [k, v] of Object.entries(this.attrs)) if (v != null) writer(` ${k}="${escapeXML(String(v))}"`);
      writer(`>${inner}</${this.name}>`);
    }
  }
  return (attrs) => {
    const copy = new SharedChildren(template.name, Object.fromEntries(Object.entries(attrs).filter(([, v]) => v !== undefined)) as Record<string, string>);
    copy.children = [...shared];
    return copy;
  };
}

/**
 * One serialization per message, reused for every copy (issue 20): the text a stanza was given
 * when it was last changed on its way, for the writes that follow. Only `settle` records one, at
 * the point after which the stanza is not changed any more (MAM, once it has stamped the
 * recipient's stanza-id); a module that changes a stanza after that changes a copy (carbons,
 * MUC and the offline flush already do).
 */
const settledText = new WeakMap<Element, string>();

/** Serializes the stanza and keeps the text for `serialize`: the stanza must not change afterwards. */
export function settle(stanza: Element): string {
  const xml = stanza.toString();
  settledText.set(stanza, xml);
  return xml;
}

/** The stanza's text: the one `settle` kept, or a new serialization. */
export function serialize(stanza: Element): string {
  return settledText.get(stanza) ?? stanza.toString();
}
