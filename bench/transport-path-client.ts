/**
 * The client of bench/transport-path.ts: one connection over WebSocket (the 'xmpp' subprotocol)
 * or TCP, 20 stanzas in flight; on each "run" from the parent it sends N and answers when all
 * have come back.
 */
import { connect } from "node:net";
import { once } from "node:events";
import { WebSocket } from "ws";

const [kind, port, count] = process.argv.slice(2);
const N = Number(count);
const IN_FLIGHT = 20;
const stanza = (i: number) => `<message to='b@parley.test/r' type='chat' id='m${i}' xmlns='jabber:client'><body>message number ${i}, with about as much text as a chat line</body></message>`;

let received = 0;
let wanted = 0;
let whenReceived: () => void = () => {};
const onText = (text: string) => {
  received += text.split("<message").length - 1;
  if (received >= wanted) whenReceived();
};

let send: (text: string) => void;
if (kind === "websocket") {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/xmpp-websocket`, ["xmpp"], { perMessageDeflate: false });
  await once(ws, "open");
  ws.on("message", (data) => onText(data.toString()));
  send = (text) => ws.send(text);
  send("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='parley.test' version='1.0'/>");
} else {
  const socket = connect(Number(port), "127.0.0.1");
  socket.setNoDelay(true);
  socket.setEncoding("utf8");
  await once(socket, "connect");
  socket.on("data", onText);
  send = (text) => socket.write(text);
  send("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='parley.test' version='1.0'>");
}

async function exchange(total: number): Promise<void> {
  for (let sent = 0; sent < total; sent += IN_FLIGHT) {
    wanted = received + IN_FLIGHT;
    const back = new Promise<void>((resolve) => { whenReceived = resolve; });
    for (let k = 0; k < IN_FLIGHT; k++) send(stanza(sent + k));
    await back;
  }
}

await exchange(20_000); // warm-up: the server's code is optimized before anything is measured
process.send!("ready");
process.on("message", async () => {
  await exchange(N);
  process.send!("done");
});
