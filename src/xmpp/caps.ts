/**
 * XEP-0115 Entity Capabilities 1.6.0 §5.1: the verification string of a disco#info result, and
 * reading one back from a result, so a ver can be checked against what the entity answered.
 */
import { createHash } from "node:crypto";
import { childElements, type Element } from "./xml.js";
import { NS } from "./ns.js";
import type { Identity } from "../module.js";

export const CAPS = "http://jabber.org/protocol/caps";

interface CapsIdentity extends Identity { lang?: string }

/** §5.1: identities, features and extended forms, each sorted, joined with '<', hashed, base64. */
export function capsVerification(identities: readonly CapsIdentity[], features: readonly string[], forms: readonly Element[] = [], hash = "sha-1"): string {
  let s = "";
  const ids = identities.map((i) => `${i.category}/${i.type}/${i.lang ?? ""}/${i.name ?? ""}`).sort();
  for (const i of ids) s += `${i}<`;
  for (const f of [...features].sort()) s += `${f}<`;
  const withType = forms.map((form) => {
    const fields = childElements(form).filter((f) => f.name === "field");
    const type = fields.find((f) => f.attrs.var === "FORM_TYPE")?.getChildText("value") ?? "";
    return { type, fields: fields.filter((f) => f.attrs.var !== "FORM_TYPE") };
  }).sort((a, b) => (a.type < b.type ? -1 : a.type > b.type ? 1 : 0));
  for (const { type, fields } of withType) {
    s += `${type}<`;
    for (const field of [...fields].sort((a, b) => (a.attrs.var < b.attrs.var ? -1 : a.attrs.var > b.attrs.var ? 1 : 0))) {
      s += `${field.attrs.var}<`;
      for (const v of field.getChildren("value").map((x) => x.text()).sort()) s += `${v}<`;
    }
  }
  return createHash(hash === "sha-1" ? "sha1" : hash).update(s, "utf8").digest("base64");
}

/** Identities, features and forms of a disco#info <query/>. */
export function readDiscoInfo(query: Element): { identities: CapsIdentity[]; features: string[]; forms: Element[] } {
  const children = childElements(query);
  return {
    identities: children.filter((c) => c.name === "identity").map((i) => ({
      category: i.attrs.category ?? "", type: i.attrs.type ?? "",
      ...(i.attrs.name !== undefined ? { name: i.attrs.name } : {}),
      ...(i.attrs["xml:lang"] !== undefined ? { lang: i.attrs["xml:lang"] } : {}),
    })),
    features: children.filter((c) => c.name === "feature").map((f) => f.attrs.var ?? ""),
    forms: children.filter((c) => c.name === "x" && c.getNS() === NS.DATA_FORMS),
  };
}
