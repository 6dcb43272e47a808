/**
 * Reading XEP-0227 (Portable Import/Export Format for XMPP-IM Servers) 1.1 files: a bounded
 * streaming parse that yields each <user/> (and each other child of a <host/>) as one element,
 * with the file and line it started at, following XInclude as its "Use of XInclude" section asks.
 *
 * The files come from another server and may be hostile: like the network parser (parser.ts,
 * RFC 6120 §11 restricted XML) this refuses DTDs — so no entity can be declared or expanded —
 * and processing instructions, bounds each element's size while reading (a 50 MB element is
 * refused after the first few MB, not after it is in memory), bounds depth and attributes, and
 * stops at the first failure, which names the file, line and element.
 */
import { createReadStream, realpathSync } from "node:fs";
import { dirname, isAbsolute, relative, resolve, sep } from "node:path";
import { SaxesParser, type SaxesTagNS } from "saxes";
import { Element } from "../xmpp/xml.js";

export const NS_PIE = "urn:xmpp:pie:0";
/** The namespace of XEP-0227 before 1.0 (ejabberd before 2.1 wrote it); same structure. */
export const NS_PIE_OLD = "http://www.xmpp.org/extensions/xep-0227.html#ns";
export const NS_XINCLUDE = "http://www.w3.org/2001/XInclude";

export interface ReadLimits {
  /** Characters per unit (a <user/>, or any other child of <host/>), counted while reading. */
  maxElementChars: number;
  maxDepth: number;
  maxAttributes: number;
  maxNameLength: number;
  /** Files read in all, through XInclude. */
  maxFiles: number;
}

export const DEFAULT_READ_LIMITS: ReadLimits = {
  maxElementChars: 16 * 1024 * 1024, maxDepth: 32, maxAttributes: 64, maxNameLength: 1024, maxFiles: 100_000,
};

/** A refused input: `where` is "file:line" and the element at fault. */
export class ImportError extends Error {
  constructor(readonly where: string, readonly reason: string) {
    super(`${where}: ${reason}`);
  }
}

/** One child of a <host/>: a user, or an extension. Lines of its elements are in `ReadResult.lines`. */
export interface Unit {
  host: string;
  element: Element;
  file: string;
}

export interface ReadResult {
  units: Unit[];
  /** Hosts seen, even without users, with where they were declared. */
  hosts: Map<string, string>;
  /** Start line of every element read. */
  lines: WeakMap<Element, number>;
}

type Expect = "server-data" | "host" | "user";

const isPie = (uri: string) => uri === NS_PIE || uri === NS_PIE_OLD;

/** Reads the given files (each a <server-data/>, or a host or user file) as one data set. */
export async function readPieFiles(paths: readonly string[], limits: ReadLimits = DEFAULT_READ_LIMITS): Promise<ReadResult> {
  const result: ReadResult = { units: [], hosts: new Map(), lines: new WeakMap() };
  const seen = new Set<string>();
  const read = async (path: string, expect: Expect, host: { jid: string; where: string } | undefined, root: string): Promise<void> => {
    const real = realpathOr(path);
    if (seen.has(real)) throw new ImportError(path, "this file is read twice (an XInclude loop, or given twice)");
    seen.add(real);
    if (seen.size > limits.maxFiles) throw new ImportError(path, `more than ${limits.maxFiles} files`);
    const includes: Array<{ href: string; where: string; expect: Expect; host: { jid: string; where: string } | undefined }> = [];
    await parseFile(path, expect, host, limits, result, includes);
    for (const inc of includes) await read(resolveInclude(path, inc.href, root, inc.where), inc.expect, inc.host, root);
  };
  for (const path of paths) await read(path, "server-data", undefined, dirname(realpathOr(path)));
  return result;
}

function realpathOr(path: string): string {
  try {
    return realpathSync(path);
  } catch {
    return resolve(path);
  }
}

/**
 * XEP-0227, Use of XInclude: "An importing server MUST support <include/> elements having an 'href' attribute
 * containing a relative URI, having no 'parse' attribute, and having no 'xpointer' attribute".
 * Only those: a relative path that stays inside the main file's directory (no URL, no absolute
 * path, no way out through '..' or a symbolic link).
 */
function resolveInclude(from: string, href: string, root: string, where: string): string {
  if (/^[a-z][a-z0-9+.-]*:/i.test(href) || isAbsolute(href) || href.includes("\0")) {
    throw new ImportError(where, `<xi:include href='${href}'>: only relative file names are followed`);
  }
  let decoded: string;
  try {
    decoded = decodeURIComponent(href);
  } catch {
    throw new ImportError(where, `<xi:include href='${href}'>: not a valid URI reference`);
  }
  const target = resolve(dirname(from), decoded);
  const real = realpathOr(target);
  const rel = relative(root, real);
  if (rel.startsWith(`..${sep}`) || rel === ".." || isAbsolute(rel)) {
    throw new ImportError(where, `<xi:include href='${href}'> points outside ${root}`);
  }
  return real;
}

function parseFile(
  path: string, expect: Expect, inherited: { jid: string; where: string } | undefined, limits: ReadLimits, result: ReadResult,
  includes: Array<{ href: string; where: string; expect: Expect; host: { jid: string; where: string } | undefined }>,
): Promise<void> {
  return new Promise((done, failed) => {
    const sax = new SaxesParser({ xmlns: true, position: true });
    const stream = createReadStream(path, { highWaterMark: 64 * 1024 });
    let error: ImportError | undefined;
    const fail = (reason: string, element?: string) => {
      if (error) return;
      error = new ImportError(`${path}:${sax.line}${element ? ` ${element}` : ""}`, reason);
      stream.destroy();
    };
    // The frames: server-data and host elements stay open; below them each element is a unit.
    const frames: Array<{ kind: "server-data" | "host"; host?: { jid: string; where: string } }> = [];
    let rootSeen = false;
    let stack: Element[] = [];
    let unitStart = 0;
    let boundary = 0;
    let unitHost: { jid: string; where: string } | undefined;
    const inUnit = () => stack.length > 0;

    sax.on("doctype", () => fail("a DOCTYPE is not allowed (no DTD, no entity declarations)"));
    sax.on("processinginstruction", (pi) => fail(`processing instruction <?${pi.target}?> is not allowed`));
    sax.on("xmldecl", (decl) => {
      if (decl.encoding !== undefined && decl.encoding.toLowerCase() !== "utf-8") fail(`encoding ${decl.encoding}: only UTF-8 is read`);
    });
    sax.on("error", (err) => fail(`not well-formed XML: ${err.message.replace(/^.*?:\d+:\d+: /, "")}`));
    sax.on("text", (text) => {
      if (error) return;
      if (inUnit()) stack[stack.length - 1]!.t(text);
      else if (!/^[ \t\r\n]*$/.test(text)) fail("text is only allowed inside a user's data");
    });
    sax.on("cdata", (text) => {
      if (error) return;
      if (inUnit()) stack[stack.length - 1]!.t(text);
      else fail("CDATA is only allowed inside a user's data");
    });
    sax.on("opentag", (tag: SaxesTagNS) => {
      if (error) return;
      const label = `<${tag.name}${tag.attributes.name ? ` name='${tag.attributes.name.value}'` : ""}${tag.attributes.jid ? ` jid='${tag.attributes.jid.value}'` : ""}>`;
      const attrNames = Object.keys(tag.attributes);
      if (attrNames.length > limits.maxAttributes) return fail(`more than ${limits.maxAttributes} attributes`, label);
      if (tag.name.length > limits.maxNameLength || attrNames.some((n) => n.length > limits.maxNameLength)) return fail("name too long", label);
      if (inUnit()) {
        if (stack.length >= limits.maxDepth) return fail(`elements nested deeper than ${limits.maxDepth}`, label);
        const node = elementOf(tag, stack[stack.length - 1]);
        result.lines.set(node, sax.line);
        stack[stack.length - 1]!.cnode(node);
        stack.push(node);
        return;
      }
      const frame = frames[frames.length - 1];
      // XInclude in a frame: followed after this file.
      if (tag.uri === NS_XINCLUDE && tag.local === "include") {
        if (!rootSeen) return fail("a file must start with a XEP-0227 element", label);
        const href = tag.attributes.href?.value;
        if (!href) return fail("<xi:include> needs an href", label);
        if (tag.attributes.parse && tag.attributes.parse.value !== "xml") return fail("<xi:include parse='text'> is not supported", label);
        if (tag.attributes.xpointer) return fail("<xi:include xpointer> is not supported", label);
        includes.push({ href, where: `${path}:${sax.line}`, expect: frame?.kind === "host" ? "user" : "host", host: frame?.host });
        unitStart = sax.position;
        stack = [new Element("include")]; // skipped like a unit, then dropped
        return;
      }
      const where = `${path}:${sax.line}`;
      if (!rootSeen) {
        rootSeen = true;
        if (!isPie(tag.uri)) return fail(`the root element must be in ${NS_PIE}`, label);
        if (tag.local === "server-data" && expect === "server-data") return void frames.push({ kind: "server-data" });
        if (tag.local === "host" && (expect === "host" || expect === "server-data")) return openHost(tag, where, label);
        if (tag.local === "user" && expect === "user" && inherited) return openUnit(tag, inherited);
        return fail(`a ${expect} file cannot start with <${tag.local}>`, label);
      }
      if (frame?.kind === "server-data") {
        if (isPie(tag.uri) && tag.local === "host") return openHost(tag, where, label);
        return fail("<server-data> holds only <host> elements", label);
      }
      if (frame?.kind === "host") return openUnit(tag, frame.host!);
      return fail("unexpected element after the root element", label);
    });
    const openHost = (tag: SaxesTagNS, where: string, label: string) => {
      const jid = tag.attributes.jid?.value;
      if (!jid) return fail("<host> needs a jid", label);
      if (!result.hosts.has(jid)) result.hosts.set(jid, where);
      frames.push({ kind: "host", host: { jid, where } });
      boundary = sax.position;
    };
    const openUnit = (tag: SaxesTagNS, host: { jid: string; where: string }) => {
      unitStart = sax.position;
      unitHost = host;
      const node = elementOf(tag, undefined);
      result.lines.set(node, sax.line);
      stack = [node];
    };
    sax.on("closetag", () => {
      if (error) return;
      if (stack.length > 1) { stack.pop(); return; }
      if (stack.length === 1) {
        const node = stack.pop()!;
        stack = [];
        boundary = sax.position;
        if (node.name !== "include" || node.attrs.xmlns !== undefined) {
          result.units.push({ host: unitHost!.jid, element: node, file: path });
        }
        if (!frames.length) frames.push({ kind: "host", host: unitHost }); // a user file: its root was the unit
        return;
      }
      frames.pop();
      boundary = sax.position;
    });

    stream.setEncoding("utf8");
    stream.on("data", (chunk: string | Buffer) => {
      if (error) return;
      try {
        sax.write(chunk as string);
      } catch (err) {
        fail(`not well-formed XML: ${(err as Error).message}`);
      }
      if (error) return;
      // Checked per chunk too: text is reported only when the next tag starts, so a huge text
      // node would otherwise be held whole before any check ran.
      const since = sax.position - (inUnit() ? unitStart : boundary);
      if (since > limits.maxElementChars) {
        const top = stack[0];
        fail(`element larger than ${limits.maxElementChars} characters`, top ? `<${top.name}${top.attrs.name ? ` name='${top.attrs.name}'` : ""}>` : undefined);
      }
    });
    stream.on("error", (err) => failed(error ?? new ImportError(path, `cannot read: ${err.message}`)));
    stream.on("close", () => {
      if (error) return failed(error);
      try {
        sax.close();
      } catch (err) {
        return failed(error ?? new ImportError(`${path}:${sax.line}`, `not well-formed XML: ${(err as Error).message}`));
      }
      if (error) return failed(error);
      if (!rootSeen) return failed(new ImportError(path, "empty file: no XEP-0227 data"));
      if (frames.length > 0 && !(frames.length === 1 && expect === "user") || inUnit()) {
        return failed(new ImportError(`${path}:${sax.line}`, "the file ends before its elements are closed (truncated?)"));
      }
      done();
    });
  });
}

/** An element as ltx keeps it, with its namespace declared wherever it differs from its parent's. */
function elementOf(tag: SaxesTagNS, parent: Element | undefined): Element {
  const attrs: Record<string, string> = {};
  for (const [name, attr] of Object.entries(tag.attributes)) {
    if (name === "xmlns" || name.startsWith("xmlns:")) continue;
    if (attr.prefix && attr.prefix !== "xml") {
      attrs[`xmlns:${attr.prefix}`] = attr.uri;
    }
    attrs[name] = attr.value;
  }
  const node = new Element(tag.prefix ? `${tag.prefix}:${tag.local}` : tag.local, attrs);
  if (tag.prefix) node.attrs[`xmlns:${tag.prefix}`] = tag.uri;
  else if (!parent || parent.getNS() !== tag.uri) node.attrs.xmlns = tag.uri;
  return node;
}
