/**
 * What the web admin reads and acts on besides accounts and sessions, each behind a small
 * interface: the TLS certificates in use, group chat rooms (through the MUC module's own XMPP
 * interface, so occupants are told when a room is destroyed) and uploads (as `parley uploads`).
 */
import { X509Certificate } from "node:crypto";
import { el } from "../xmpp/xml.js";
import { NS } from "../xmpp/ns.js";
import { parseElement } from "../xmpp/xml-parse.js";
import type { Element } from "../xmpp/xml.js";
import type { RoomAffiliation, Storage, UploadRecord } from "../storage/index.js";
import type { FileStore } from "../storage/files/index.js";
import { AdminError } from "./actions.js";

export interface CertificateInfo {
  host: string;
  subject: string;
  issuer: string;
  /** DNS names the certificate covers. */
  names: string[];
  notAfter: Date;
}

/** The certificates the server presents, read each time (a reloadable store can implement this). */
export interface CertificateSource {
  certificates(): CertificateInfo[];
}

/** Certificates as the server loaded them from the TLS config (or generated them) at start. */
export function certificatesFromPem(entries: Iterable<{ host: string; cert: string }>): CertificateSource {
  const infos = [...entries].map(({ host, cert }): CertificateInfo => {
    const x = new X509Certificate(cert);
    return {
      host, subject: x.subject.replace(/\n/g, ", "), issuer: x.issuer.replace(/\n/g, ", "),
      names: (x.subjectAltName ?? "").split(", ").filter((n) => n.startsWith("DNS:")).map((n) => n.slice(4)),
      notAfter: new Date(x.validTo),
    };
  });
  return { certificates: () => infos };
}

export interface RoomSummary {
  jid: string;
  name: string;
  description: string;
  public: boolean;
  membersOnly: boolean;
  password: boolean;
  createdAt: number;
}

export interface RoomDetails extends RoomSummary {
  affiliations: RoomAffiliation[];
  /** From the room's disco#info (XEP-0045 §6.4), when it answered. */
  occupants: number | undefined;
  subject: string;
}

export interface RoomAdmin {
  readonly services: readonly string[];
  /** Persistent rooms, sorted by JID. */
  list(): Promise<RoomSummary[]>;
  inspect(jid: string): Promise<RoomDetails | undefined>;
  /** XEP-0045 §10.9 destroy, so occupants get the unavailable presence with the reason. */
  destroy(jid: string, reason: string): Promise<void>;
}

interface StoredRoomConfig { name?: string; description?: string; public?: boolean; membersOnly?: boolean; password?: string }

const MUC_OWNER = "http://jabber.org/protocol/muc#owner";

export function createRoomAdmin(deps: {
  services: readonly string[];
  storage: Storage;
  /** The router's request: an IQ from inside the server, answered by the MUC module. */
  request(iq: Element, timeoutMs?: number): Promise<Element>;
  /** The server domain a room service belongs to (the 'from' of disco queries). */
  hostOf(service: string): string;
}): RoomAdmin {
  const summary = (r: { jid: string; config: string; createdAt: number }): RoomSummary => {
    const c = JSON.parse(r.config) as StoredRoomConfig;
    return {
      jid: r.jid, name: c.name ?? "", description: c.description ?? "", public: c.public ?? true,
      membersOnly: c.membersOnly ?? false, password: Boolean(c.password), createdAt: r.createdAt,
    };
  };
  const serviceOf = (jid: string) => jid.slice(jid.indexOf("@") + 1);
  return {
    services: deps.services,
    async list() {
      const all = await Promise.all(deps.services.map((s) => deps.storage.rooms.list(s)));
      return all.flat().map(summary).sort((a, b) => (a.jid < b.jid ? -1 : 1));
    },
    async inspect(jid) {
      if (!deps.services.includes(serviceOf(jid))) return undefined;
      const stored = await deps.storage.rooms.get(jid);
      if (!stored) return undefined;
      let occupants: number | undefined;
      try {
        const info = await deps.request(el("iq", { type: "get", from: deps.hostOf(serviceOf(jid)), to: jid }, el("query", { xmlns: NS.DISCO_INFO })), 5000);
        const field = info.getChild("query", NS.DISCO_INFO)?.getChild("x", NS.DATA_FORMS)?.getChildren("field").find((f) => f.attrs.var === "muc#roominfo_occupants");
        const n = Number(field?.getChildText("value"));
        occupants = Number.isInteger(n) ? n : undefined;
      } catch {
        occupants = undefined;
      }
      const subject = stored.subject ? parseElement(stored.subject).getChildText("subject") ?? "" : "";
      return { ...summary(stored), affiliations: await deps.storage.rooms.affiliations(jid), occupants, subject };
    },
    async destroy(jid, reason) {
      if (!deps.services.includes(serviceOf(jid))) throw new AdminError(`${jid} is not a room of this server`);
      // Only an owner may destroy a room (XEP-0045 §10.9): the request goes in an owner's name.
      const owner = (await deps.storage.rooms.affiliations(jid)).find((a) => a.affiliation === "owner");
      if (!owner) throw new AdminError(`${jid} has no owner who could destroy it`);
      try {
        await deps.request(el("iq", { type: "set", from: owner.jid, to: jid },
          el("query", { xmlns: MUC_OWNER }, el("destroy", {}, el("reason", {}, reason)))), 10_000);
      } catch (err) {
        throw new AdminError(`The group chat service did not destroy ${jid}: ${(err as Error).message}`);
      }
    },
  };
}

export interface UploadAdmin {
  usage(): Promise<Array<{ owner: string; files: number; bytes: number }>>;
  /** Deletes every upload (any purpose) created before the cutoff; returns how many. */
  prune(before: number): Promise<number>;
}

/** The uploads of `parley uploads usage|prune`, shared with the CLI. */
export function createUploadAdmin(storage: Storage, files: FileStore): UploadAdmin {
  return {
    usage: () => storage.uploads.totals(),
    async prune(before) {
      let n = 0;
      for (const owner of (await storage.uploads.totals()).map((t) => t.owner)) {
        const old = (await storage.uploads.ofOwner(owner)).filter((u: UploadRecord) => u.createdAt < before);
        for (const u of old) {
          await files.delete(u.id);
          await storage.uploads.remove(u.id);
          n++;
        }
      }
      return n;
    },
  };
}
