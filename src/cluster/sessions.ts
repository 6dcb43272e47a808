/**
 * The cluster-wide session table (docs/CLUSTER.md): this node's sessions, plus the other nodes'
 * from the directory replica as `RemoteSession`s. Modules see one `SessionView` and choose
 * sessions the same way wherever they are (RFC 6121 §8.5: top-priority resources, presence
 * broadcast); what they send to a remote one travels on the node bus.
 */
import { SessionTable, type Session } from "../xmpp/sessions.js";
import { parseJid, type Jid } from "../xmpp/jid.js";
import { serialize, type Element } from "../xmpp/xml.js";
import { parseElement } from "../xmpp/xml-parse.js";
import type { StreamError } from "../errors.js";
import type { TransportKind } from "../xmpp/stream/transport.js";
import type { DirectoryEntry, DirectoryReplica } from "./directory.js";

/** How a remote session's stanzas leave this node. */
export interface RemoteSender {
  send(node: string, to: string, sid: string, xml: string): void;
  sendConfirmed(node: string, to: string, sid: string, xml: string): Promise<boolean>;
  kick(node: string, to: string, sid: string, condition: string): void;
}

/**
 * A session bound on another node. Its presence and priority are read from the replica while the
 * entry is still this session's; delivery confirmations come from its node (see docs/CLUSTER.md,
 * "How the promise holds").
 */
export class RemoteSession implements Session {
  readonly userAgentId = undefined;
  readonly unacknowledged = undefined;
  readonly remoteAddress = "";
  /** Directed presence is tracked by the session that sent it, on its own node. */
  readonly directedPresence = new Set<string>();
  /** Its node confirms deliveries: after the client's ack with stream management, after the write without. */
  readonly confirmsDelivery = true;
  readonly hibernating = false;
  private parsed: { xml: string; element: Element } | undefined;

  constructor(readonly jid: Jid, private readonly entry: DirectoryEntry, private readonly replica: DirectoryReplica, private readonly sender: RemoteSender) {}

  get id(): string {
    return this.entry.sid;
  }

  get node(): string {
    return this.entry.node;
  }

  /** Read from the replica: a resumption may move the session to another transport. */
  get transport(): TransportKind {
    return this.current.transport ?? "tcp";
  }

  private get current(): DirectoryEntry {
    const now = this.replica.get(this.jid.full);
    return now && now.sid === this.entry.sid ? now : this.entry;
  }

  get presence(): Element | undefined {
    const xml = this.current.presence;
    if (xml === undefined) return undefined;
    if (this.parsed?.xml !== xml) this.parsed = { xml, element: parseElement(xml) };
    return this.parsed.element;
  }

  /** Presence is set by the session's own node; modules here never change a remote session's. */
  set presence(_value: Element | undefined) {}

  get priority(): number {
    return this.current.priority;
  }

  /** Where its node's directory entry says a client resumes it (XEP-0198 §5). */
  get resumeId(): string | undefined {
    return this.current.resume;
  }

  /** A copy: flags are set by the session's own node. */
  get flags(): Set<string> {
    return new Set(this.current.flags);
  }

  set priority(_value: number) {}

  /** RFC 6121 §2.2: whether it requested the roster, as its node wrote it in the directory. */
  get interested(): boolean {
    return this.current.interested === true;
  }

  set interested(_value: boolean) {}

  send(stanza: Element): void {
    this.sender.send(this.entry.node, this.jid.full, this.entry.sid, serialize(stanza));
  }

  sendConfirmed(stanza: Element): Promise<boolean> {
    return this.sender.sendConfirmed(this.entry.node, this.jid.full, this.entry.sid, serialize(stanza));
  }

  close(error?: StreamError): void {
    this.sender.kick(this.entry.node, this.jid.full, this.entry.sid, error?.condition ?? "");
  }

  writable(): undefined {
    // No backpressure across nodes: the remote node's session applies its own bounds.
    return undefined;
  }
}

/**
 * The local `SessionTable` (add and remove are this node's binds) whose lookups also answer for
 * the other nodes. count() and all() stay this node's: they feed metrics and shutdown.
 */
export class ClusterSessionTable extends SessionTable {
  private readonly remote = new Map<string, RemoteSession>();
  private replicaOf: DirectoryReplica | undefined;
  private sender: RemoteSender | undefined;

  /** Connects the table to the directory replica and the bus (they are made after it). */
  connect(replica: DirectoryReplica, sender: RemoteSender): void {
    this.replicaOf = replica;
    this.sender = sender;
  }

  /** The replica changed for this full JID: a proxy made for an older entry is dropped. */
  changed(full: string): void {
    const proxy = this.remote.get(full);
    if (proxy && this.replicaOf?.get(full)?.sid !== proxy.id) this.remote.delete(full);
  }

  /** This node's session for a full JID, never a remote one. */
  local(full: string): Session | undefined {
    return super.get(full);
  }

  override get(full: string): Session | undefined {
    return super.get(full) ?? this.remoteSession(full);
  }

  override ofUser(bare: string): readonly Session[] {
    const local = super.ofUser(bare);
    const entries = this.replicaOf?.ofUser(bare);
    if (!entries || entries.size === 0) return local;
    const all = [...local];
    for (const full of entries.keys()) {
      if (super.get(full)) continue;
      const proxy = this.remoteSession(full);
      if (proxy) all.push(proxy);
    }
    return all;
  }

  private remoteSession(full: string): RemoteSession | undefined {
    const entry = this.replicaOf?.get(full);
    if (!entry || !this.sender) return undefined;
    const known = this.remote.get(full);
    if (known && known.id === entry.sid) return known;
    const proxy = new RemoteSession(parseJid(full), entry, this.replicaOf!, this.sender);
    this.remote.set(full, proxy);
    return proxy;
  }
}
