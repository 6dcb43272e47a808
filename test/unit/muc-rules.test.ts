/**
 * XEP-0045 1.35's privilege tables, walked cell by cell against src/modules/muc/rules.ts. The
 * tables are written here as data, as the XEP prints them; the expectations come from them and
 * from the rules the XEP states beside them, not from the code under test.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { AFFILIATIONS, ROLES, admission, affiliationChange, defaultRole, listAccess, roleChange, type Affiliation, type Role } from "../../src/modules/muc/rules.js";

const RANK: Record<Affiliation, number> = { outcast: 0, none: 1, member: 2, admin: 3, owner: 4 };
const adminOrOwner = (a: Affiliation) => a === "admin" || a === "owner";
const outcome = (err: { condition: string } | undefined) => err?.condition ?? "allowed";

/** §5.1.3 "Role changes and their triggering actions": who may move an occupant from one role to another. */
const ROLE_CHANGES: Record<string, "a moderator" | "an admin or owner"> = {
  "visitor → none": "a moderator", // "Exit room or be kicked by a moderator"
  "visitor → participant": "a moderator", // "Moderator grants voice"
  "visitor → moderator": "an admin or owner", // "Admin or owner grants moderator status"
  "participant → none": "a moderator",
  "participant → visitor": "a moderator", // "Moderator revokes voice"
  "participant → moderator": "an admin or owner",
  "moderator → none": "an admin or owner", // "be kicked by an admin or owner *"
  "moderator → visitor": "an admin or owner", // "Admin or owner changes role to visitor *"
  "moderator → participant": "an admin or owner", // "… or revokes moderator status *"
};

/** §5.2.2 "Affiliation changes and their triggering actions". */
const AFFILIATION_CHANGES: Record<string, "an admin or owner" | "an owner"> = {
  "outcast → none": "an admin or owner", "outcast → member": "an admin or owner", "outcast → admin": "an owner", "outcast → owner": "an owner",
  "none → outcast": "an admin or owner", "none → member": "an admin or owner", "none → admin": "an owner", "none → owner": "an owner",
  "member → outcast": "an admin or owner", "member → none": "an admin or owner", "member → admin": "an owner", "member → owner": "an owner",
  "admin → outcast": "an owner", "admin → none": "an owner", "admin → member": "an owner", "admin → owner": "an owner",
  "owner → outcast": "an owner", "owner → none": "an owner", "owner → member": "an owner", "owner → admin": "an owner",
};

const occupantAffiliations = AFFILIATIONS.filter((a) => a !== "outcast"); // outcasts are never in the room
const occupantRoles = ROLES.filter((r) => r !== "none");

describe("XEP-0045 role changes (§5.1.3, §8.2–§8.5, §9.6–§9.8)", () => {
  it("every cell: actor affiliation × actor role × target affiliation × target role × new role", () => {
    let cells = 0;
    for (const actorAffiliation of occupantAffiliations) for (const actorRole of ROLES) {
      for (const targetAffiliation of occupantAffiliations) for (const targetRole of occupantRoles) for (const role of ROLES) {
        const got = outcome(roleChange({ affiliation: actorAffiliation, role: actorRole }, { affiliation: targetAffiliation, role: targetRole }, role));
        let want: string;
        if (actorRole !== "moderator") want = "forbidden"; // §8: "MUST be denied if … not … one of the moderators … forbidden"
        else if (role === targetRole) want = "allowed"; // nothing changes
        else if (RANK[targetAffiliation] > RANK[actorAffiliation]) want = "not-allowed"; // §8.2, §8.5, footnote * of §5.1.3
        else if (ROLE_CHANGES[`${targetRole} → ${role}`] === "an admin or owner" && !adminOrOwner(actorAffiliation)) want = "forbidden"; // §9 intro
        else if ((role === "participant" || role === "visitor") && adminOrOwner(targetAffiliation)) want = "not-allowed"; // §8.4, §9.7
        else want = "allowed";
        assert.equal(got, want, `${actorAffiliation}/${actorRole} sets ${targetAffiliation}/${targetRole} to ${role}`);
        cells++;
      }
    }
    assert.equal(cells, 4 * 4 * 4 * 3 * 4);
  });

  it("the issue's escalation: a moderator by role only neither makes moderators nor silences a member", () => {
    const tempModerator = { affiliation: "none" as const, role: "moderator" as const };
    assert.equal(outcome(roleChange(tempModerator, { affiliation: "none", role: "participant" }, "moderator")), "forbidden");
    assert.equal(outcome(roleChange(tempModerator, { affiliation: "member", role: "participant" }, "visitor")), "not-allowed");
    assert.equal(outcome(roleChange(tempModerator, { affiliation: "none", role: "moderator" }, "none")), "forbidden", "nor kicks another moderator");
    // What it may do: §8.2 kick and §8.3/§8.4 voice for the unaffiliated.
    assert.equal(outcome(roleChange(tempModerator, { affiliation: "none", role: "participant" }, "none")), "allowed");
    assert.equal(outcome(roleChange(tempModerator, { affiliation: "none", role: "participant" }, "visitor")), "allowed");
    assert.equal(outcome(roleChange(tempModerator, { affiliation: "none", role: "visitor" }, "participant")), "allowed");
  });

  it("the XEP's own examples and error cases", () => {
    const mod = (affiliation: Affiliation) => ({ affiliation, role: "moderator" as const });
    // §8.2 "if a moderator who is a member attempts to kick an admin, or a moderator who is a member or admin attempts to kick an owner … not-allowed"
    assert.equal(outcome(roleChange(mod("member"), mod("admin"), "none")), "not-allowed");
    assert.equal(outcome(roleChange(mod("admin"), mod("owner"), "none")), "not-allowed");
    assert.equal(outcome(roleChange(mod("owner"), mod("admin"), "none")), "allowed");
    // §9.7 "an admin MUST NOT be allowed to revoke moderator status from a user whose affiliation is owner or admin"
    assert.equal(outcome(roleChange(mod("admin"), mod("admin"), "participant")), "not-allowed");
    assert.equal(outcome(roleChange(mod("owner"), mod("owner"), "visitor")), "not-allowed");
    // §9.6 an admin grants moderator status to a participant; §9.7 and takes it back from a member.
    assert.equal(outcome(roleChange(mod("admin"), { affiliation: "member", role: "participant" }, "moderator")), "allowed");
    assert.equal(outcome(roleChange(mod("admin"), mod("member"), "participant")), "allowed");
    // A participant changes nobody's role.
    assert.equal(outcome(roleChange({ affiliation: "owner", role: "participant" }, { affiliation: "none", role: "visitor" }, "participant")), "forbidden");
  });

  it("a non-moderator learns nothing from a role change to a nick nobody has", () => {
    assert.equal(outcome(roleChange({ affiliation: "none", role: "participant" }, undefined, "none")), "forbidden");
    assert.equal(outcome(roleChange({ affiliation: "none", role: "none" }, undefined, "visitor")), "forbidden");
    assert.equal(outcome(roleChange({ affiliation: "none", role: "moderator" }, undefined, "none")), "item-not-found");
  });
});

describe("XEP-0045 affiliation changes (§5.2.2, §9.1–§9.5, §10.6–§10.8)", () => {
  it("every cell: actor × target's affiliation × new affiliation, for oneself and for others", () => {
    let cells = 0;
    for (const actor of AFFILIATIONS) for (const from of AFFILIATIONS) for (const to of AFFILIATIONS) for (const self of [false, true]) {
      if (self && from !== actor) continue; // one's own affiliation is the actor's
      const otherOwners = 1;
      const got = outcome(affiliationChange(actor, { affiliation: from, self }, to, otherOwners));
      let want: string;
      if (!adminOrOwner(actor)) want = "forbidden"; // §9 intro: only admins (and owners)
      else if (from === to) want = "allowed";
      else if (to === "outcast" && self) want = "conflict"; // §9.1 "attempts to ban himself … conflict"
      else if (AFFILIATION_CHANGES[`${from} → ${to}`] === "an owner" && actor !== "owner") {
        want = to === "outcast" ? "not-allowed" : "forbidden"; // §9.1 "if an admin attempts to ban an owner … not-allowed"; §10 forbidden
      } else want = "allowed";
      assert.equal(got, want, `${actor}${self ? " (self)" : ""} changes ${from} to ${to}`);
      cells++;
    }
    assert.ok(cells > 100);
  });

  it("a room keeps an owner (§10.7 conflict), and an owner may step down when there is another", () => {
    assert.equal(outcome(affiliationChange("owner", { affiliation: "owner", self: true }, "admin", 0)), "conflict");
    assert.equal(outcome(affiliationChange("owner", { affiliation: "owner", self: true }, "none", 1)), "allowed");
    assert.equal(outcome(affiliationChange("owner", { affiliation: "owner", self: false }, "member", 1)), "allowed");
  });
});

describe("XEP-0045 lists, default roles and entering", () => {
  it("lists (§8.5, §9.2, §9.5, §9.8, §10.5, §10.8)", () => {
    const who = (affiliation: Affiliation, role: Role = "participant") => ({ affiliation, role });
    for (const a of AFFILIATIONS) {
      assert.equal(outcome(listAccess(who(a), { affiliation: "outcast" })), adminOrOwner(a) ? "allowed" : "forbidden");
      assert.equal(outcome(listAccess(who(a), { affiliation: "member" })), adminOrOwner(a) ? "allowed" : "forbidden");
      assert.equal(outcome(listAccess(who(a), { affiliation: "admin" })), a === "owner" ? "allowed" : "forbidden");
      assert.equal(outcome(listAccess(who(a), { affiliation: "owner" })), a === "owner" ? "allowed" : "forbidden");
      for (const role of ["participant", "moderator"] as const) {
        assert.equal(outcome(listAccess(who(a, "moderator"), { role })), "allowed");
        assert.equal(outcome(listAccess(who(a, "participant"), { role })), "forbidden");
      }
    }
  });

  it("§5.1.2 table 2: the initial role by affiliation and room type", () => {
    const table: Record<string, Record<"none" | "member" | "admin" | "owner", Role>> = {
      moderated: { none: "visitor", member: "participant", admin: "moderator", owner: "moderator" },
      unmoderated: { none: "participant", member: "participant", admin: "moderator", owner: "moderator" },
    };
    for (const [type, row] of Object.entries(table)) {
      for (const [affiliation, role] of Object.entries(row)) assert.equal(defaultRole(affiliation as Affiliation, type === "moderated"), role, `${type} ${affiliation}`);
    }
  });

  it("§7.2: entering, every room type × affiliation × password given", () => {
    for (const locked of [false, true]) for (const membersOnly of [false, true]) for (const password of ["", "secret"]) {
      for (const affiliation of AFFILIATIONS) for (const given of [undefined, "wrong", "secret", true] as const) {
        const got = outcome(admission({ locked, membersOnly, password }, affiliation, given));
        let want = "allowed";
        if (locked && affiliation !== "owner") want = "item-not-found"; // §7.2.10
        else if (affiliation === "outcast") want = "forbidden"; // §7.2.7
        else if (membersOnly && RANK[affiliation] < RANK.member) want = "registration-required"; // §7.2.6
        else if (password && !adminOrOwner(affiliation) && given !== "secret" && given !== true) want = "not-authorized"; // §7.2.5
        assert.equal(got, want, JSON.stringify({ locked, membersOnly, password, affiliation, given }));
      }
    }
  });
});
