"""slixmpp (a third-party stack) against Parley's mobile features: carbons, MAM, PEP and HTTP upload.

Usage: python3 slixmpp_features.py PORT ALICE_PASSWORD BOB_PASSWORD
alice@localhost/one and /two enable carbons (XEP-0280); bob@localhost writes to /one; /one
answers. /two must see both as carbons, then finds the conversation in its archive (XEP-0313).
alice publishes a nickname over PEP (XEP-0172 on XEP-0163) and bob reads it with XEP-0060.
bob uploads a file with slixmpp's XEP-0363 helper (service discovery, slot, PUT) and reads it back;
only name resolution (upload.localhost → 127.0.0.1) and certificate checks are bent for the test.
Prints one JSON line with what happened; exits non-zero on failure or timeout.
"""
import asyncio
import json
import ssl
import sys

import socket

import aiohttp
from aiohttp.abc import AbstractResolver
import slixmpp
from slixmpp import JID
import slixmpp.plugins.xep_0363.http_upload as http_upload


class Loopback(AbstractResolver):
    async def resolve(self, host, port=0, family=socket.AF_INET):
        return [{"hostname": host, "host": "127.0.0.1", "port": port, "family": socket.AF_INET, "proto": 0, "flags": socket.AI_NUMERICHOST}]

    async def close(self):
        pass


def loopback_session(**kwargs):
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False, resolver=Loopback()), **kwargs)


http_upload.ClientSession = loopback_session

port, alice_pw, bob_pw = int(sys.argv[1]), sys.argv[2], sys.argv[3]
result = {"muc_roster": None, "muc_message": None, "max_file_size": None, "carbon_received": None, "carbon_sent": None, "mam_bodies": [], "nick": None, "nick_event": None, "upload_url": None, "upload_roundtrip": False}


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password)
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        for plugin in ("xep_0030", "xep_0059", "xep_0060", "xep_0115", "xep_0163", "xep_0172", "xep_0045", "xep_0280", "xep_0297", "xep_0313", "xep_0363"):
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
    payload = bytes(range(256)) * 400
    import io
    # slixmpp 1.8.3's own service lookup (get_info_from_domain) breaks on Python 3.11's asyncio.wait,
    # so the service is found with its disco plugin step by step, as that helper would.
    items = await bob["xep_0030"].get_items(jid=JID("localhost"))
    service = next(JID(i[0]) for i in items["disco_items"]["items"] if i[0].startswith("upload."))
    info = await bob["xep_0030"].get_info(jid=service)
    assert "urn:xmpp:http:upload:0" in info["disco_info"]["features"]
    result["max_file_size"] = next(int(f["values"]["max-file-size"]) for f in info["disco_info"].iterables if f["values"].get("FORM_TYPE") == ["urn:xmpp:http:upload:0"])
    bob["xep_0363"].upload_service = service
    bob["xep_0363"].max_file_size = result["max_file_size"]
    url = await bob["xep_0363"].upload_file("photo.jpg", size=len(payload), content_type="image/jpeg", input_file=io.BytesIO(payload))
    result["upload_url"] = url
    async with loopback_session() as session:
        async with session.get(url) as response:
            result["upload_roundtrip"] = response.status == 200 and await response.read() == payload
    # XEP-0045 with slixmpp's plugin: both join, one speaks, the other hears it from the room.
    room = JID("lounge@conference.localhost")
    heard = asyncio.Event()

    def on_groupchat(msg):
        if msg["mucnick"] == "alice" and msg["body"]:
            result["muc_message"] = msg["body"]
            heard.set()

    bob.add_event_handler("groupchat_message", on_groupchat)
    await bob["xep_0045"].join_muc_wait(room, "bob", maxstanzas=0, timeout=10)
    await one["xep_0045"].join_muc_wait(room, "alice", maxstanzas=0, timeout=10)
    # Alice's join completes on her stream; bob hears of it on his own, a moment later.
    for _ in range(50):
        if "alice" in bob["xep_0045"].get_roster(room):
            break
        await asyncio.sleep(0.1)
    result["muc_roster"] = sorted(bob["xep_0045"].get_roster(room))
    one.send_message(mto=room, mbody="hello room", mtype="groupchat")
    await asyncio.wait_for(heard.wait(), 10)
    for c in (one, two, bob):
        c.disconnect()
    print(json.dumps(result))


asyncio.run(main())
