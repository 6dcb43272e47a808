"""slixmpp's join_muc_wait() against Parley: a room slixmpp creates, and the same room joined later.

Usage: python3 slixmpp_muc.py PORT ALICE_PASSWORD BOB_PASSWORD
join_muc_wait() returns only once the room has sent the subject (XEP-0045 §7.2.15), so a room that
leaves it out hangs the client. alice creates fresh@conference.localhost (locked, status 201),
accepts the default configuration with slixmpp's own form API, sets a subject and says two things;
bob then joins with history. Prints one JSON line with what happened; exits non-zero on failure.
"""
import asyncio
import json
import ssl
import sys

import slixmpp
from slixmpp import JID

port, alice_pw, bob_pw = int(sys.argv[1]), sys.argv[2], sys.argv[3]
room = JID("fresh@conference.localhost")
result = {"created_codes": None, "created_subject": None, "joined_subject": None, "joined_history": None, "joined_occupants": None}


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password)
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        for plugin in ("xep_0004", "xep_0030", "xep_0045", "xep_0203"):
            self.register_plugin(plugin)
        self.ready = asyncio.Event()
        self.add_event_handler("session_start", self.start)

    async def start(self, _):
        self.send_presence()
        self.ready.set()


async def main():
    alice = Client("alice@localhost/sli", alice_pw)
    bob = Client("bob@localhost/sli", bob_pw)
    for c in (alice, bob):
        c.connect(address=("127.0.0.1", port), force_starttls=True)
    await asyncio.wait_for(asyncio.gather(alice.ready.wait(), bob.ready.wait()), 15)

    pres, subject, _, _ = await alice["xep_0045"].join_muc_wait(room, "alice", maxstanzas=0, timeout=10)
    result["created_codes"] = sorted(int(s) for s in pres["muc"]["status_codes"])
    result["created_subject"] = subject["subject"]
    form = alice["xep_0004"].make_form(ftype="submit")
    await alice["xep_0045"].set_room_config(room, form)  # an instant room
    alice["xep_0045"].set_subject(room, "Fresh paint")
    for line in ("first", "second"):
        alice.send_message(mto=room, mbody=line, mtype="groupchat")
    await alice["xep_0030"].get_info(jid=room)  # a round trip on the same stream: the room has handled them

    _, subject, occupants, history = await bob["xep_0045"].join_muc_wait(room, "bob", maxstanzas=10, timeout=10)
    result["joined_subject"] = subject["subject"]
    result["joined_history"] = [m["body"] for m in history]
    result["joined_occupants"] = sorted(p["muc"]["nick"] for p in occupants)
    for c in (alice, bob):
        c.disconnect()
    print(json.dumps(result))


asyncio.run(main())
