/**
 * Answers to the server's own IQ requests across nodes (docs/CLUSTER.md, "Server requests to
 * sessions on other nodes"). RFC 6120 §8.2.3: the entity that answers a get or set copies its
 * 'id' into the result or error, so the id is where the asking node can be named: a node that
 * receives an answer for a request it did not send reads the asking node from the id and hands
 * the answer to it. The asking node still checks that the answer comes from the entity it asked.
 */
import { randomBytes } from "node:crypto";

const PREFIX = "parley:";

export class RequestIds {
  constructor(private readonly self: string) {}

  /** `parley:<node>:<random>`; the random part is base64url, so it holds no ':'. */
  next(): string {
    return `${PREFIX}${this.self}:${randomBytes(9).toString("base64url")}`;
  }

  /** The node that sent the request this id belongs to, when it is another node than this one. */
  otherOwner(id: string | undefined): string | undefined {
    if (!id?.startsWith(PREFIX)) return undefined;
    const end = id.lastIndexOf(":");
    if (end <= PREFIX.length) return undefined;
    const node = id.slice(PREFIX.length, end);
    return node === this.self ? undefined : node;
  }
}
