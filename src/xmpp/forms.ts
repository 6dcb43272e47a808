/**
 * XEP-0004 Data Forms 2.13: reading submitted forms and building forms to fill in. Shared by every
 * module that takes options as a form (MAM queries, pubsub publish-options and node config, …).
 */
import { el, childElements, type Element } from "./xml.js";
import { NS } from "./ns.js";
import { StanzaError } from "../errors.js";

export interface SubmittedForm {
  /** The hidden FORM_TYPE field (XEP-0068), if any. */
  formType?: string;
  /** Field values by var, FORM_TYPE excluded. */
  fields: Map<string, string[]>;
}

/** The values of a submitted form (type submit, or a result echoed back); bad-request when malformed. */
export function readForm(form: Element): SubmittedForm {
  if (form.attrs.type !== "submit" && form.attrs.type !== "result") {
    throw new StanzaError("bad-request", "A data form of type 'submit' was expected");
  }
  const fields = new Map<string, string[]>();
  let formType: string | undefined;
  for (const field of childElements(form)) {
    if (field.name !== "field") continue;
    const name = field.attrs.var;
    if (!name) throw new StanzaError("bad-request", "A form field without 'var'");
    // XEP-0004 §3.2: "a form MUST NOT contain more than one field with the same 'var'".
    if (fields.has(name) || (name === "FORM_TYPE" && formType !== undefined)) throw new StanzaError("bad-request", `Field '${name}' is repeated`);
    const values = childElements(field).filter((v) => v.name === "value").map((v) => v.text());
    if (name === "FORM_TYPE") formType = values[0];
    else fields.set(name, values);
  }
  return { ...(formType !== undefined ? { formType } : {}), fields };
}

/** The one value of a field, if present; bad-request when it has several. */
export function singleValue(form: SubmittedForm, name: string): string | undefined {
  const values = form.fields.get(name);
  if (!values || values.length === 0) return undefined;
  if (values.length > 1) throw new StanzaError("bad-request", `Field '${name}' takes one value`);
  return values[0];
}

export interface FieldSpec {
  var: string;
  type?: "boolean" | "fixed" | "hidden" | "jid-multi" | "jid-single" | "list-multi" | "list-single" | "text-multi" | "text-private" | "text-single";
  label?: string;
  values?: readonly string[];
  options?: ReadonlyArray<{ label?: string; value: string }>;
}

/** A form of the given type with a hidden FORM_TYPE first (XEP-0068). */
export function buildForm(type: "form" | "result" | "submit", formType: string, fields: readonly FieldSpec[]): Element {
  return el("x", { xmlns: NS.DATA_FORMS, type },
    el("field", { var: "FORM_TYPE", type: "hidden" }, el("value", {}, formType)),
    ...fields.map((f) => el("field", { var: f.var, type: f.type, label: f.label },
      ...(f.options ?? []).map((o) => el("option", { label: o.label }, el("value", {}, o.value))),
      ...(f.values ?? []).map((v) => el("value", {}, v)))));
}

/** XEP-0004 §3.3 boolean values. */
export function parseBoolean(value: string, field: string): boolean {
  if (value === "1" || value === "true") return true;
  if (value === "0" || value === "false") return false;
  throw new StanzaError("bad-request", `Field '${field}' takes a boolean`);
}
