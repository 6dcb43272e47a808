/**
 * Whether this node stores uploads where the other nodes of a cluster see them (docs/CLUSTER.md,
 * "Uploads"): a file uploaded through one node is downloaded through any other, so
 * `modules.upload.path` must be one shared directory. The first node to start writes a probe
 * file there and records its name in the shared storage; every node after it looks for that
 * file in its own directory. A single server passes trivially (it finds its own probe).
 */
import { randomBytes } from "node:crypto";
import { access, mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { DocumentStore } from "../storage/index.js";
import { el } from "../xmpp/xml.js";
import { parseElement } from "../xmpp/xml-parse.js";

const PROBE_NS = "urn:parley:upload-directory";
/** Stored under a name no account can have (no '@'), so export and account deletion never see it. */
export const PROBE_OWNER = "parley:upload";
const PROBE_KEY = "probe";

/** undefined when `dir` is the directory the recorded probe is in; otherwise what is wrong. */
export async function checkSharedDirectory(dir: string, documents: DocumentStore): Promise<string | undefined> {
  await mkdir(dir, { recursive: true });
  const recorded = await documents.get(PROBE_OWNER, PROBE_KEY);
  const file = recorded === undefined ? undefined : parseElement(recorded).attrs.file;
  if (file !== undefined && /^\.probe-[0-9a-f]{24}$/.test(file)) {
    const found = await access(join(dir, file)).then(() => true, () => false);
    return found ? undefined : `the file ${file} that another node wrote into its upload directory is not in ${dir}`;
  }
  const name = `.probe-${randomBytes(12).toString("hex")}`;
  await writeFile(join(dir, name), "Parley: every node must see this file in modules.upload.path\n", { flag: "wx" });
  await documents.set(PROBE_OWNER, PROBE_KEY, el("probe", { xmlns: PROBE_NS, file: name }).toString());
  return undefined;
}
