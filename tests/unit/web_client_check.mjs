// Runs the generated browser client (generated/teamtalk/web/client.js) in Node against a fake gateway: fake
// fetch and a fake WebSocket that follow docs/web-api.md. Started by tests/unit/test_web_client.py with the
// folder holding a copy of the generated files; exits non-zero on the first failed check.

import assert from "node:assert/strict";
import { pathToFileURL } from "node:url";
import path from "node:path";

const dir = process.argv[2];
const { Client, ApiError, chatKey } = await import(pathToFileURL(path.join(dir, "client.js")).href);
const protocol = await import(pathToFileURL(path.join(dir, "protocol.js")).href);

const BASE = "http://gw.test";
const tick = (ms = 5) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(check, what, ms = 2000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (check()) return;
    await tick();
  }
  throw new Error(`timed out waiting for ${what}`);
}

const msg = (seq, msgId, from = 7, to = 5) => ({
  type: "msg", seq, msg_id: msgId, from, to, session_type: 1, msg_type: 1, create_time: 1700000000,
  text: "<b>hi</b>", data_b64: "PGI+aGk8L2I+", burn: false,
});

/** A fake gateway: HTTP answers by path, WebSocket sockets recorded. */
class Gateway {
  constructor() {
    this.requests = [];
    this.sockets = [];
    this.tokens = new Set(["t1"]);
    this.wsWorks = true;
    this.pollQueue = [];
  }

  fetch = async (url, init) => {
    const u = new URL(url);
    this.requests.push({ path: u.pathname, query: Object.fromEntries(u.searchParams), init });
    const auth = init.headers?.Authorization ?? "";
    const json = (status, body) => ({ status, json: async () => body });
    if (u.pathname === "/api/login") {
      const body = JSON.parse(init.body);
      if (body.ticket === "tk1") {
        this.tokens.add("t2");
        return json(200, login("t2", "tk2"));
      }
      if (body.password === "pw") return json(200, login("t1", "tk1"));
      return json(401, { error_code: 6, error_msg: "bad password" });
    }
    if (!this.tokens.has(auth.replace("Bearer ", ""))) {
      return json(401, { error_code: 2, error_msg: "not logged in" });
    }
    if (u.pathname === "/api/poll") {
      await tick(10);
      const events = this.pollQueue.shift() ?? [];
      return json(200, { error_code: 0, error_msg: "", events, last_seq: 0, gap: false });
    }
    if (u.pathname === "/api/send") {
      return json(200, { error_code: 0, error_msg: "", msg_id: 99, session_type: 1, create_time: 1 });
    }
    if (u.pathname === "/api/unread") {
      return json(200, { error_code: 0, error_msg: "", total: "many", sessions: [] });
    }
    return json(404, { error_code: 1, error_msg: "no such endpoint" });
  };

  get WebSocket() {
    const gateway = this;
    return class FakeSocket {
      constructor(url) {
        this.url = url;
        this.sent = [];
        gateway.sockets.push(this);
        setTimeout(() => {
          if (gateway.wsWorks) this.onopen?.();
          else this.onclose?.({ code: 1006 });
        }, 1);
      }

      send(text) {
        const frame = JSON.parse(text);
        this.sent.push(frame);
        if (frame.op === "auth") {
          const ok = gateway.tokens.has(frame.token);
          this.push({ op: "reply", id: frame.id, error_code: ok ? 0 : 2, error_msg: ok ? "" : "bad token" });
          if (!ok) setTimeout(() => this.onclose?.({ code: 4001 }), 1);
        } else if (frame.id !== undefined) {
          this.push({ op: "reply", id: frame.id, error_code: 0, error_msg: "", msg_id: 42, session_type: 1, create_time: 2 });
        }
      }

      push(frame) {
        setTimeout(() => this.onmessage?.({ data: JSON.stringify(frame) }), 1);
      }

      close() {
        setTimeout(() => this.onclose?.({ code: 1000 }), 1);
      }
    };
  }
}

function login(token, ticket) {
  return {
    error_code: 0, error_msg: "", token, user_id: 5,
    user: { user_id: 5, user_gender: 0, user_nick_name: "five", avatar_url: "", department_id: 1, email: "",
      user_real_name: "", user_tel: "", user_domain: "", status: 0 },
    upload_token: "", upload_url: "", poll_timeout: 25, resume_ticket: ticket, ticket_expires: 0,
  };
}

const checks = [];
const check = (name, fn) => checks.push([name, fn]);

check("the spec's enums and shapes are exported", async () => {
  assert.equal(protocol.SessionType.SESSION_TYPE_GROUP, 2);
  assert.equal(protocol.WEBSOCKET, "/api/ws");
  assert.equal(protocol.validate(protocol.EVENTS.msg.fields, msg(1, 1)), "");
  assert.match(protocol.validate(protocol.EVENTS.msg.fields, { ...msg(1, 1), msg_id: "1" }), /msg_id/);
  assert.match(protocol.validate(protocol.COMMANDS.send.request, { text: "x" }), /to: missing/);
  assert.equal(protocol.enumName("IM.BaseDefine.UserStatType", 1), "USER_STATUS_ONLINE");
});

check("a request the spec refuses never leaves the client", async () => {
  const gw = new Gateway();
  const client = new Client({ base: BASE, fetch: gw.fetch, WebSocket: gw.WebSocket });
  await assert.rejects(client.send({ text: "no recipient" }), TypeError);
  await assert.rejects(client.send({ to: "5", text: "x" }), TypeError);
  assert.equal(gw.requests.length, 0);
});

check("login keeps the token; refusals are ApiErrors with the answer's code", async () => {
  const gw = new Gateway();
  const client = new Client({ base: BASE, fetch: gw.fetch, WebSocket: gw.WebSocket });
  const refused = await client.login({ user: "five", password: "nope" }).catch((e) => e);
  assert.ok(refused instanceof ApiError);
  assert.equal(refused.code, 6);
  await client.login({ user: "five", password: "pw" });
  assert.equal(client.token, "t1");
  assert.equal(client.userId, 5);
  await client.send({ to: 7, text: "hello" });
  const sent = gw.requests.at(-1);
  assert.equal(sent.init.headers.Authorization, "Bearer t1");
  assert.deepEqual(JSON.parse(sent.init.body), { to: 7, text: "hello" });
  // An answer that does not fit the spec is refused too.
  const malformed = await client.unread().catch((e) => e);
  assert.ok(malformed instanceof ApiError && /total/.test(malformed.message));
});

check("WebSocket: auth with since, events once (by seq and by msg id), acks, commands by id", async () => {
  const gw = new Gateway();
  const client = new Client({ base: BASE, fetch: gw.fetch, WebSocket: gw.WebSocket, backoff: [1] });
  await client.login({ user: "five", password: "pw" });
  const got = [];
  const invalid = [];
  client.on("msg", (ev) => got.push(ev.msg_id));
  client.on("invalid", (bad) => invalid.push(bad.problem));
  client.start();
  await until(() => client.state === "online", "online");
  const ws = gw.sockets[0];
  assert.equal(ws.url, "ws://gw.test/api/ws");
  assert.deepEqual(ws.sent[0], { op: "auth", id: "auth", token: "t1", since: 0 });
  ws.push({ op: "events", events: [msg(1, 10), msg(2, 11)], last_seq: 2, gap: false });
  ws.push({ op: "events", events: [msg(2, 11), msg(3, 10), { ...msg(4, 12), msg_id: undefined }], last_seq: 4, gap: false });
  await until(() => client.lastSeq === 4, "seq 4");
  assert.deepEqual(got, [10, 11]);
  assert.equal(invalid.length, 1);
  assert.deepEqual(ws.sent.filter((f) => f.op === "ack").map((f) => f.seq), [2, 4]);
  const answer = await client.send({ to: 7, text: "over the socket" });
  assert.equal(answer.msg_id, 42);
  const frame = ws.sent.at(-1);
  assert.equal(frame.op, "send");
  assert.equal(frame.text, "over the socket");
  assert.equal(gw.requests.filter((r) => r.path === "/api/send").length, 0);
  // The connection drops: the client reconnects and resumes after the last seq it handled.
  const states = [];
  client.on("state", (s) => states.push(s));
  ws.onclose({ code: 1006 });
  await until(() => gw.sockets.length === 2 && client.state === "online", "reconnected");
  assert.deepEqual(gw.sockets[1].sent[0], { op: "auth", id: "auth", token: "t1", since: 4 });
  assert.deepEqual(states, ["reconnecting", "online"]);
  client.stop();
});

check("no WebSocket: falls back to long-poll after two failed opens", async () => {
  const gw = new Gateway();
  gw.wsWorks = false;
  gw.pollQueue.push([msg(1, 20)], [msg(1, 20), msg(2, 21)]);
  const client = new Client({ base: BASE, fetch: gw.fetch, WebSocket: gw.WebSocket, backoff: [1] });
  await client.login({ user: "five", password: "pw" });
  const got = [];
  client.on("msg", (ev) => got.push(ev.msg_id));
  client.start();
  await until(() => got.length === 2, "two polled messages");
  assert.equal(gw.sockets.length, 2);
  assert.equal(client.mode, "poll");
  assert.deepEqual(got, [20, 21]);
  const polls = gw.requests.filter((r) => r.path === "/api/poll");
  assert.equal(polls[0].query.since, "0");
  assert.equal(polls[1].query.since, "1");
  client.stop();
});

check("long-poll mode tries the WebSocket again after wsRetry", async () => {
  const gw = new Gateway();
  gw.wsWorks = false;
  const client = new Client({ base: BASE, fetch: gw.fetch, WebSocket: gw.WebSocket, backoff: [1], wsRetry: 50 });
  await client.login({ user: "five", password: "pw" });
  client.start();
  await until(() => client.mode === "poll", "long-poll");
  gw.wsWorks = true;
  await until(() => client.mode === "websocket" && client.state === "online", "back on the WebSocket");
  assert.ok(gw.sockets.length >= 3);
  client.stop();
});

check("an ended session resumes with the ticket: a new token, seq from 0, a gap, msg ids still deduplicated", async () => {
  const gw = new Gateway();
  const client = new Client({ base: BASE, fetch: gw.fetch, WebSocket: gw.WebSocket, backoff: [1], transport: "poll" });
  await client.login({ user: "five", password: "pw" });
  gw.pollQueue.push([msg(1, 30), msg(2, 31)]);
  const got = [];
  const gaps = [];
  client.on("msg", (ev) => got.push(ev.msg_id));
  client.on("gap", (why) => gaps.push(why));
  client.start();
  await until(() => got.length === 2, "first messages");
  gw.tokens.delete("t1");  // the gateway forgot the session (restart, idle)
  await until(() => client.token === "t2", "the ticket login");
  gw.pollQueue.push([msg(1, 31), msg(2, 32)]);
  await until(() => got.length === 3, "resumed messages");
  assert.equal(client.token, "t2");
  assert.equal(client.resumeTicket, "tk2");
  assert.deepEqual(got, [30, 31, 32]);
  assert.equal(gaps.length, 1);
  client.stop();
});

check("a refused resume ends the session with a logout event", async () => {
  const gw = new Gateway();
  const client = new Client({ base: BASE, fetch: gw.fetch, WebSocket: gw.WebSocket, backoff: [1] });
  await client.login({ user: "five", password: "pw" });
  client.resumeTicket = "revoked";
  gw.tokens.clear();
  const ended = [];
  client.on("logout", (why) => ended.push(why));
  client.start();
  await until(() => ended.length === 1, "logout");
  assert.equal(client.state, "offline");
  assert.equal(client.token, "");
});

check("chat keys: one-to-one by peer, group by group", async () => {
  assert.equal(chatKey({ session_type: 1, from: 5, to: 7, msg_id: 3 }, 5), "1:7:3");
  assert.equal(chatKey({ session_type: 1, from: 7, to: 5, msg_id: 3 }, 5), "1:7:3");
  assert.equal(chatKey({ session_type: 2, from: 7, to: 9, msg_id: 3 }, 5), "2:9:3");
});

let failed = 0;
for (const [name, fn] of checks) {
  try {
    await fn();
    console.log(`ok ${name}`);
  } catch (err) {
    failed += 1;
    console.log(`FAILED ${name}\n${err.stack}`);
  }
}
process.exit(failed ? 1 : 0);
