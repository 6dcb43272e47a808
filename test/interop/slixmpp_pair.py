"""Two slixmpp clients log in to Parley over STARTTLS, exchange a message and read their rosters.

Usage: python3 slixmpp_pair.py PORT JID1 PASSWORD1 JID2 PASSWORD2
Prints one JSON line with what happened; exits non-zero on failure or timeout.
"""
import asyncio
import json
import ssl
import sys

import slixmpp

port, jid1, pw1, jid2, pw2 = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
result = {"received": None, "roster_ok": False, "mechanisms": []}
done = asyncio.Event()


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, peer):
        super().__init__(jid, password)
        self.peer = peer
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.add_event_handler("session_start", self.start)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("failed_auth", lambda _: result.setdefault("failed_auth", []).append(self.boundjid.bare))

    async def start(self, _):
        self.send_presence()
        await self.get_roster()
        result["roster_ok"] = True
        result["mechanisms"].append(self.plugin["feature_mechanisms"].mech.name)
        if self.boundjid.bare == jid1:
            await asyncio.sleep(0.3)
            self.send_message(mto=self.peer, mbody="hello from slixmpp", mtype="chat")

    def on_message(self, msg):
        if msg["type"] in ("chat", "normal"):
            result["received"] = msg["body"]
            result["from"] = str(msg["from"])
            done.set()


async def main():
    a = Client(jid1, pw1, jid2)
    b = Client(jid2, pw2, jid1)
    for c in (a, b):
        c.connect(address=("127.0.0.1", port), force_starttls=True)
    try:
        await asyncio.wait_for(done.wait(), 15)
    finally:
        print(json.dumps(result), flush=True)
        for c in (a, b):
            c.disconnect()
        await asyncio.sleep(0.2)
    sys.exit(0 if result["received"] else 1)


asyncio.run(main())
