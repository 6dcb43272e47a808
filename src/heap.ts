/**
 * V8 heap settings for the serving process (`parley start`), set before the server allocates.
 *
 * Allocation-site pretenuring off. V8 watches the object and array literals of each allocation
 * site, and once nearly all of a site's objects have outlived a scavenge it allocates that site's
 * objects in the old generation from then on. A server's start and its logins make such sites of
 * the code every stanza runs through: the elements, attribute maps and child lists built while
 * sessions, rosters and presences are set up all stay alive. After that each message's elements
 * were born old, and everything young they point to (its attribute values, text, the routing
 * state built around it) was kept alive by those old objects through every scavenge until the next
 * mark-compact, whether the message was long gone or not. Measured (docs/PERFORMANCE.md, "Born
 * old"): S3 at 4,000 msg/s promoted 1.83 MB per scavenge with it and 0.56 MB without; scavenges
 * paused 14.6 ms (p50) against 6.6 ms, and mark-compacts came half as often.
 */
import { setFlagsFromString } from "node:v8";

export function tuneHeapForServing(): void {
  setFlagsFromString("--no-allocation-site-pretenuring");
}
