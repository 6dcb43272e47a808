"""slixmpp (a third-party stack) against Parley's mobile features: carbons, MAM and PEP.

Usage: python3 slixmpp_features.py PORT ALICE_PASSWORD BOB_PASSWORD
alice@localhost/one and /two enable carbons (XEP-0280); bob@localhost writes to /one; /one
answers. /two must see both as carbons, then finds the conversation in its archive (XEP-0313).
alice publishes a nickname over PEP (XEP-0172 on XEP-0163) and bob reads it with XEP-0060.
Prints one JSON line with what happened; exits non-zero on failure or timeout.
"""
import asyncio
import json
import ssl
import sys

import slixmpp
from slixmpp import JID

port, alice_pw, bob_pw = int(sys.argv[1]), sys.argv[2], sys.argv[3]
result = {"carbon_received": None, "carbon_sent": None, "mam_bodies": [], "nick": None, "nick_event": None}


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password)
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        for plugin in ("xep_0030", "xep_0059", "xep_0060", "xep_0115", "xep_0163", "xep_0172", "xep_0280", "xep_0297", "xep_0313"):
            self.register_plugin(plugin)
        self.ready = asyncio.Event()
        self.add_event_handler("session_start", self.start)

    async def start(self, _):
        await self.get_roster()
        self.send_presence()
        self.ready.set()


async def main():
    one = Client("alice@localhost/one", alice_pw)
    two = Client("alice@localhost/two", alice_pw)
    bob = Client("bob@localhost/b", bob_pw)
    got_received = asyncio.Event()
    got_sent = asyncio.Event()
    got_nick = asyncio.Event()

    def on_received(msg):
        result["carbon_received"] = msg["carbon_received"]["body"]
        got_received.set()

    def on_sent(msg):
        result["carbon_sent"] = msg["carbon_sent"]["body"]
        got_sent.set()

    def on_nick(msg):
        result["nick_event"] = str(msg["pubsub_event"]["items"]["item"]["payload"].text if msg["pubsub_event"]["items"]["item"]["payload"] is not None else "")
        got_nick.set()

    two.add_event_handler("carbon_received", on_received)
    two.add_event_handler("carbon_sent", on_sent)
    bob.add_event_handler("user_nick_publish", on_nick)
    for c in (one, two, bob):
        c.connect(address=("127.0.0.1", port), force_starttls=True)
    await asyncio.wait_for(asyncio.gather(one.ready.wait(), two.ready.wait(), bob.ready.wait()), 15)
    await one["xep_0280"].enable()
    await two["xep_0280"].enable()
    await asyncio.sleep(0.5)  # caps lookups for +notify

    bob.send_message(mto="alice@localhost/one", mbody="hi alice", mtype="chat")
    await asyncio.wait_for(got_received.wait(), 10)
    one.send_message(mto="bob@localhost", mbody="hi bob", mtype="chat")
    await asyncio.wait_for(got_sent.wait(), 10)
    await asyncio.sleep(0.3)

    archive = await two["xep_0313"].retrieve(with_jid=JID("bob@localhost"))
    result["mam_bodies"] = [m["mam_result"]["forwarded"]["stanza"]["body"] for m in archive["mam"]["results"]]

    await one["xep_0172"].publish_nick("Alice from slixmpp")
    items = await bob["xep_0060"].get_items(JID("alice@localhost"), "http://jabber.org/protocol/nick")
    for item in items["pubsub"]["items"]:
        result["nick"] = item["payload"].text
    try:
        await asyncio.wait_for(got_nick.wait(), 5)
    except asyncio.TimeoutError:
        pass
    for c in (one, two, bob):
        c.disconnect()
    print(json.dumps(result))


asyncio.run(main())
