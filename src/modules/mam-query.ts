/**
 * XEP-0313 Message Archive Management 1.1 queries, read: the form fields (§4.1.1), the XEP-0059
 * result set, and what they ask of the archive, as a pure function of the <query/> element.
 * mam.ts runs the query against storage.
 */
import type { Element } from "../xmpp/xml.js";
import { NS } from "../xmpp/ns.js";
import { tryParseJid } from "../xmpp/jid.js";
import { StanzaError } from "../errors.js";
import { readForm, singleValue } from "../xmpp/forms.js";
import type { ArchiveQuery } from "../storage/index.js";

export const MAM = "urn:xmpp:mam:2";
export const RSM = "http://jabber.org/protocol/rsm";
const FIELDS = new Set(["with", "start", "end", "before-id", "after-id", "ids"]);

/** The archive id of the first message at or after `ms`. */
export const idAt = (ms: number) => ms * 1024;
export const timeOfId = (id: number) => Math.floor(id / 1024);

/** What a query asks of the archive. */
export interface ParsedArchiveQuery {
  /** The messages it may return: with whom, and the archive ids it lies between (exclusive). */
  range: Omit<ArchiveQuery, "newestFirst" | "limit">;
  /** The 'ids' field (§4.1.5), when the query names messages. */
  ids: number[] | undefined;
  /** Ids the query refers to that must be in the archive (§4.1.3, XEP-0059 §2.5: else item-not-found). */
  referencedIds: number[];
  /** Paging backwards (RSM <before/>): the page is the newest messages of the range. */
  newestFirst: boolean;
  pageSize: number;
  /** §4.3 <flip-page/>: the page's messages in reverse order. */
  flipPage: boolean;
}

/** Reads a <query xmlns='urn:xmpp:mam:2'/>; throws the StanzaError the query gets when it is malformed. */
export function parseArchiveQuery(payload: Element, pageSizes: { defaultPageSize: number; maxPageSize: number }): ParsedArchiveQuery {
  const formNode = payload.getChild("x", NS.DATA_FORMS);
  const form = formNode ? readForm(formNode) : { fields: new Map<string, string[]>() };
  if (formNode && form.formType !== MAM) throw new StanzaError("bad-request", `FORM_TYPE must be '${MAM}'`);
  for (const name of form.fields.keys()) if (!FIELDS.has(name)) throw new StanzaError("bad-request", `Unknown field '${name}'`);
  const withValue = singleValue(form, "with");
  const withJid = withValue === undefined ? undefined : tryParseJid(withValue);
  if (withValue !== undefined && !withJid) throw new StanzaError("jid-malformed", "Field 'with' is not a JID");
  const start = singleValue(form, "start");
  const end = singleValue(form, "end");
  const beforeField = singleValue(form, "before-id");
  const afterField = singleValue(form, "after-id");

  const set = payload.getChild("set", RSM);
  const maxText = set?.getChildText("max");
  const max = maxText == null ? pageSizes.defaultPageSize : Number(maxText);
  if (!Number.isInteger(max) || max < 0) throw new StanzaError("bad-request", "RSM <max/> must be a non-negative integer");
  const beforeNode = set?.getChild("before");
  const afterText = set?.getChildText("after") ?? undefined;
  const beforeText = beforeNode?.text() || undefined;

  const rsmAfter = afterText === undefined ? undefined : parseId(afterText);
  const rsmBefore = beforeText === undefined ? undefined : parseId(beforeText);
  const afterId = afterField === undefined ? undefined : parseId(afterField);
  const beforeId = beforeField === undefined ? undefined : parseId(beforeField);
  const ids = form.fields.get("ids");
  return {
    range: {
      ...(withJid ? { withBare: withJid.bare, ...(withJid.resource ? { withResource: withJid.resource } : {}) } : {}),
      afterId: lower(start === undefined ? undefined : idAt(parseDateTime(start, "start")) - 1, afterId, rsmAfter),
      beforeId: upper(end === undefined ? undefined : idAt(parseDateTime(end, "end") + 1), beforeId, rsmBefore),
    },
    ids: ids && ids.length > 0 ? ids.map(parseId) : undefined,
    referencedIds: [rsmAfter, rsmBefore, afterId, beforeId].filter((id): id is number => id !== undefined),
    newestFirst: beforeNode !== undefined,
    pageSize: Math.min(max, pageSizes.maxPageSize),
    flipPage: payload.getChild("flip-page") !== undefined,
  };
}

/** XEP-0082 date-time → ms; bad-request when it is not one. */
function parseDateTime(value: string, field: string): number {
  const ms = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/.test(value) ? Date.parse(value) : NaN;
  if (Number.isNaN(ms)) throw new StanzaError("bad-request", `Field '${field}' is not a XEP-0082 date-time`);
  return ms;
}

const parseId = (value: string): number => {
  // Anything that is not one of our ids cannot be in the archive.
  if (!/^\d{1,16}$/.test(value)) throw new StanzaError("item-not-found", `No message with id '${value}' in the archive`);
  return Number(value);
};
const lower = (...bounds: Array<number | undefined>) => {
  const set = bounds.filter((b): b is number => b !== undefined);
  return set.length ? Math.max(...set) : undefined;
};
const upper = (...bounds: Array<number | undefined>) => {
  const set = bounds.filter((b): b is number => b !== undefined);
  return set.length ? Math.min(...set) : undefined;
};
