// A scripted WebSocket for unit tests of client.js: the test plays walcast's
// side frame by frame (collections.test.js, react.test.js).

// ScriptedSocket is a WebSocket whose server side is the test: it records
// what the client sends, and the test opens it, pushes frames and closes it.
export class ScriptedSocket {
  static all = [];
  readyState = 0;
  sent = [];
  constructor(url) {
    this.url = new URL(url);
    ScriptedSocket.all.push(this);
  }
  send(data) { this.sent.push(JSON.parse(data)); }
  close() { this.drop(1000); }
  // Test side.
  open() {
    this.readyState = 1;
    this.onopen?.({});
  }
  push(...frames) {
    for (const f of frames) this.onmessage?.({ data: JSON.stringify(f) });
  }
  drop(code = 1006) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.onclose?.({ code, reason: "" });
  }
  frames(type) { return this.sent.filter((f) => f.type === type); }
}

// A JWT-shaped token (walcast would check it; the client only reads claims).
export const jwt = (claims) => `e30.${Buffer.from(JSON.stringify(claims)).toString("base64url")}.sig`;
