// The chat page. Every command and event goes through the generated client (/gen/client.js, from the spec's
// `web:` section); this file only keeps the page's state and draws it. Every text that comes from the network
// is put on the page with textContent (never as HTML).

import { ApiError, Client } from "/gen/client.js";
import { SessionType, TypingState, UserStatType } from "/gen/protocol.js";

const SINGLE = SessionType.SESSION_TYPE_SINGLE;
const GROUP = SessionType.SESSION_TYPE_GROUP;
const TYPING_SEND_MS = 3000;  // at most one "typing" a conversation per this interval
const TYPING_SHOW_MS = 6000;  // how long a peer's "typing" shows without news
const params = new URLSearchParams(location.search);
const PAGE = Math.min(100, Math.max(1, Number(params.get("page")) || 30));  // messages per history page
// How long a read burn-after-reading message stays on the reader's screen before it is destroyed.
const BURN_VIEW_MS = Math.max(0, Number(params.get("burn_ms") ?? 10000)) || 0;

const $ = (id) => document.getElementById(id);
const client = new Client({ transport: params.get("transport") ?? "auto", clientType: 1 });

const state = {
  me: 0,
  users: new Map(),  // user id -> profile
  departments: [],
  groups: new Map(),  // group id -> group
  presence: new Map(),  // user id -> status number
  unread: new Map(),  // conversation key -> count
  recent: new Map(),  // conversation key -> {type, id, time, preview}
  active: null,  // {type, id, key}
  messages: new Map(),  // msg id -> message, of the active conversation
  oldest: 0,
  more: false,
  readUpTo: new Map(),  // conversation key -> the peer's read receipt msg id
  typingSent: 0,
  typingTimer: 0,
};

const keyOf = (type, id) => `${type}:${id}`;

function el(tag, attrs = {}, text = undefined) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === undefined || value === null) continue;
    if (name === "className") node.className = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function userName(id) {
  const user = state.users.get(id);
  return user ? user.user_nick_name || user.user_real_name || `user ${id}` : `user ${id}`;
}

function convName(type, id) {
  if (type === GROUP) return state.groups.get(id)?.group_name || `group ${id}`;
  return userName(id);
}

function presenceText(id) {
  const status = state.presence.get(id);
  if (status === UserStatType.USER_STATUS_ONLINE) return "online";
  if (status === UserStatType.USER_STATUS_LEAVE) return "away";
  return "offline";
}

function statusNumber(value) {
  return typeof value === "string" ? UserStatType[value] ?? 0 : value;
}

function sessionNumber(value) {
  return typeof value === "string" ? SessionType[value] ?? 0 : value;
}

// connection state --------------------------------------------------------------------------------------
const STATE_TEXT = {
  offline: "offline",
  connecting: "connecting…",
  online: "online",
  reconnecting: "reconnecting…",
};

client.on("state", (value) => {
  const badge = $("conn-state");
  badge.dataset.state = value;
  badge.dataset.mode = client.mode;
  badge.textContent = STATE_TEXT[value] ?? value;
  badge.title = value === "online" ? `connected by ${client.mode === "poll" ? "long-poll" : "WebSocket"}` : "";
  const banner = $("conn-banner");
  if (value === "reconnecting" && state.me) {
    banner.hidden = false;
    banner.textContent = "Connection lost: reconnecting…";
  } else {
    banner.hidden = true;
    banner.textContent = "";
  }
});

window.addEventListener("online", () => client.reconnect());

// login --------------------------------------------------------------------------------------------------
$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("login-error").textContent = "";
  $("login-submit").disabled = true;
  try {
    const answer = await client.login({
      user: $("login-user").value.trim(),
      password: $("login-password").value,
      client_type: 1,
    });
    state.me = answer.user_id;
    state.users.set(answer.user_id, answer.user);
    $("login-password").value = "";
    await enter();
  } catch (err) {
    $("login-error").textContent = err instanceof ApiError ? err.message || "login refused" : String(err);
  } finally {
    $("login-submit").disabled = false;
  }
});

$("logout").addEventListener("click", async () => {
  try {
    await client.logout();
  } catch {
    // the session is gone either way
  }
  leave("You logged out.");
});

function leave(message) {
  client.stop();
  state.me = 0;
  state.active = null;
  $("chat-view").hidden = true;
  $("login-view").hidden = false;
  $("conn-banner").hidden = true;
  $("login-error").textContent = message;
}

client.on("kick", () => leave("This session was ended: you logged in elsewhere."));
client.on("logout", () => leave("The session ended. Log in again."));

async function enter() {
  $("me-name").textContent = userName(state.me);
  $("login-view").hidden = true;
  $("chat-view").hidden = false;
  client.start();
  await loadDirectory();
  await loadUnread();
  await loadRecent();
}

async function loadDirectory() {
  const [users, departments, groups] = await Promise.all([
    client.users({ since: 0 }),
    client.departments({ since: 0 }),
    client.groups(),
  ]);
  for (const user of users.users) state.users.set(user.user_id, user);
  state.departments = departments.departments;
  state.groups = new Map(groups.groups.map((g) => [g.group_id, g]));
  const ids = [...state.users.keys()];
  for (let i = 0; i < ids.length; i += 1000) {
    const answer = await client.presence({ user_ids: ids.slice(i, i + 1000).join(",") });
    for (const s of answer.statuses) state.presence.set(s.user_id, s.status);
  }
  $("me-name").textContent = userName(state.me);
  drawContacts();
  drawGroups();
}

async function loadUnread() {
  const answer = await client.unread();
  state.unread.clear();
  for (const s of answer.sessions) {
    const type = sessionNumber(s.session_type);
    if (s.unread_cnt) state.unread.set(keyOf(type, s.session_id), s.unread_cnt);
  }
  drawBadges();
}

async function loadRecent() {
  const answer = await client.recent({ since: 0 });
  for (const r of answer.sessions) {
    const preview = r.latest_msg_text ?? "[attachment]";
    note(r.session_type, r.session_id, r.updated_time, preview);
  }
  drawRecent();
}

client.on("gap", async () => {
  await loadUnread();
  if (state.active) await openConversation(state.active.type, state.active.id);
});

// lists ----------------------------------------------------------------------------------------------------
function convButton(type, id, label) {
  const key = keyOf(type, id);
  const button = el("button", { type: "button", className: "conv", "data-key": key });
  if (type === SINGLE) {
    const dot = el("span", { className: "dot", "data-presence": presenceText(id), "aria-hidden": "true" });
    button.append(dot);
  }
  button.append(el("span", { className: "conv-name" }, label));
  if (type === SINGLE) button.append(el("span", { className: "visually-hidden presence-label" }, `, ${presenceText(id)}`));
  button.append(el("span", { className: "badge", hidden: true, "aria-label": "unread messages" }));
  button.addEventListener("click", () => openConversation(type, id));
  return button;
}

function drawContacts() {
  const tree = $("dept-tree");
  tree.replaceChildren();
  const byDept = new Map();
  for (const user of state.users.values()) {
    if (user.user_id === state.me) continue;
    if (!byDept.has(user.department_id)) byDept.set(user.department_id, []);
    byDept.get(user.department_id).push(user);
  }
  const depts = [...state.departments].sort((a, b) => a.priority - b.priority || a.dept_id - b.dept_id);
  const known = new Set(depts.map((d) => d.dept_id));
  const sections = depts.map((d) => [d.dept_id, d.dept_name]);
  for (const id of byDept.keys()) if (!known.has(id)) sections.push([id, `department ${id}`]);
  for (const [id, name] of sections) {
    const members = (byDept.get(id) ?? []).sort((a, b) => userName(a.user_id).localeCompare(userName(b.user_id)));
    if (members.length === 0) continue;
    const details = el("details", { open: true, className: "dept", "data-dept": id });
    details.append(el("summary", {}, name));
    const list = el("ul", { className: "conv-list" });
    for (const user of members) {
      const item = el("li");
      item.append(convButton(SINGLE, user.user_id, userName(user.user_id)));
      list.append(item);
    }
    details.append(list);
    tree.append(details);
  }
  drawBadges();
}

function drawGroups() {
  const list = $("group-list");
  list.replaceChildren();
  for (const group of [...state.groups.values()].sort((a, b) => a.group_name.localeCompare(b.group_name))) {
    const item = el("li");
    item.append(convButton(GROUP, group.group_id, group.group_name));
    list.append(item);
  }
  drawBadges();
}

function note(type, id, time, preview) {
  const key = keyOf(type, id);
  const old = state.recent.get(key);
  if (!old || old.time <= time) state.recent.set(key, { type, id, time, preview });
}

function drawRecent() {
  const list = $("recent-list");
  list.replaceChildren();
  const items = [...state.recent.values()].sort((a, b) => b.time - a.time).slice(0, 100);
  for (const r of items) {
    const item = el("li");
    const button = convButton(r.type, r.id, convName(r.type, r.id));
    button.append(el("span", { className: "preview" }, r.preview));
    item.append(button);
    list.append(item);
  }
  drawBadges();
}

function drawBadges() {
  for (const button of document.querySelectorAll(".conv")) {
    const count = state.unread.get(button.dataset.key) ?? 0;
    const badge = button.querySelector(".badge");
    badge.hidden = count === 0;
    badge.textContent = count ? String(count) : "";
    button.classList.toggle("active", state.active?.key === button.dataset.key);
  }
}

function drawPresence(id) {
  for (const button of document.querySelectorAll(`.conv[data-key="${keyOf(SINGLE, id)}"]`)) {
    button.querySelector(".dot").dataset.presence = presenceText(id);
    button.querySelector(".presence-label").textContent = `, ${presenceText(id)}`;
  }
  if (state.active?.type === SINGLE && state.active.id === id) $("conv-presence").textContent = presenceText(id);
}

for (const [tab, pane] of [["tab-recent", "pane-recent"], ["tab-contacts", "pane-contacts"], ["tab-groups", "pane-groups"]]) {
  $(tab).addEventListener("click", () => {
    for (const other of document.querySelectorAll("[role=tab]")) other.setAttribute("aria-selected", "false");
    for (const other of document.querySelectorAll("[role=tabpanel]")) other.hidden = true;
    $(tab).setAttribute("aria-selected", "true");
    $(pane).hidden = false;
  });
}

// a conversation -----------------------------------------------------------------------------------------
async function openConversation(type, id) {
  const key = keyOf(type, id);
  state.active = { type, id, key };
  state.messages.clear();
  state.oldest = 0;
  $("messages").replaceChildren();
  $("conv-title").textContent = convName(type, id);
  $("conv-presence").textContent = type === SINGLE ? presenceText(id) : `${state.groups.get(id)?.group_member_list.length ?? 0} members`;
  $("typing").textContent = "";
  $("composer").hidden = false;
  $("burn").closest("label").hidden = type !== SINGLE;
  $("burn").checked = false;
  drawBadges();
  await loadOlder();
  await markRead();
  $("composer-text").focus();
}

async function loadOlder() {
  const active = state.active;
  if (!active) return;
  const answer = await client.history({
    session_id: active.id, session_type: active.type, before: state.oldest, limit: PAGE,
  });
  if (state.active !== active) return;
  for (const message of answer.messages) addMessage(message, { older: true });
  state.more = answer.more;
  $("load-older").hidden = !answer.more;
}

$("load-older").addEventListener("click", () => loadOlder());

async function markRead() {
  const active = state.active;
  if (!active) return;
  const newest = Math.max(0, ...state.messages.keys());
  state.unread.delete(active.key);
  drawBadges();
  let answer;
  try {
    answer = await client.read({ session_id: active.id, session_type: active.type, msg_id: newest });
  } catch (err) {
    console.warn("read failed", err);
    return;
  }
  for (const id of answer.burned) burnSoon(id);
}

function burnSoon(msgId) {
  const item = document.querySelector(`#messages li[data-msg-id="${msgId}"]`);
  if (!item || item.classList.contains("burning") || item.classList.contains("notice")) return;
  item.classList.add("burning");
  item.querySelector(".meta").append(el("span", { className: "burn-note" }, " · burns after reading"));
  setTimeout(() => replaceWithNotice(msgId, "burned", "Burned after reading"), BURN_VIEW_MS);
}

function replaceWithNotice(msgId, kind, text) {
  const item = document.querySelector(`#messages li[data-msg-id="${msgId}"]`);
  if (!item) return;
  item.className = `notice ${kind}`;
  item.dataset.state = kind;
  item.replaceChildren(el("span", {}, text));
}

function addMessage(m, { older = false } = {}) {
  if (state.messages.has(m.msg_id)) return;
  state.messages.set(m.msg_id, m);
  if (older && (state.oldest === 0 || m.msg_id < state.oldest)) state.oldest = m.msg_id;
  if (!older && state.oldest === 0) state.oldest = m.msg_id;
  const mine = m.from === state.me;
  const item = el("li", { className: mine ? "msg mine" : "msg theirs", "data-msg-id": m.msg_id });
  const meta = el("div", { className: "meta" });
  meta.append(el("span", { className: "author" }, mine ? "me" : userName(m.from)));
  meta.append(el("time", { datetime: new Date(m.create_time * 1000).toISOString() },
    ` ${new Date(m.create_time * 1000).toLocaleTimeString()}`));
  if (m.burn) meta.append(el("span", { className: "burn-flag" }, " · burn after reading"));
  item.append(meta);
  const body = el("div", { className: "body" });
  if (m.file) body.append(fileView(m.file));
  else body.textContent = m.text ?? "[binary message]";
  item.append(body);
  if (mine) {
    const tools = el("div", { className: "tools" });
    tools.append(el("span", { className: "receipt" }, ""));
    if (!m.file && !m.burn && typeof m.text === "string") {
      const edit = el("button", { type: "button", className: "edit" }, "Edit");
      edit.addEventListener("click", () => startEdit(m));
      tools.append(edit);
    }
    const recall = el("button", { type: "button", className: "recall" }, "Recall");
    recall.addEventListener("click", () => recallMessage(m));
    tools.append(recall);
    item.append(tools);
  }
  const list = $("messages");
  const after = [...list.children].find((li) => Number(li.dataset.msgId) > m.msg_id);
  list.insertBefore(item, after ?? null);
  drawReceipts();
  if (!older) item.scrollIntoView({ block: "end" });
}

function fileView(file) {
  // Only the gateway's own download path is followed (never a script: or foreign URL).
  if (typeof file.url !== "string" || !file.url.startsWith("/api/blob/")) {
    return el("span", { className: "file" }, `${file.name} (unavailable)`);
  }
  const url = `${file.url}${file.url.includes("?") ? "&" : "?"}token=${encodeURIComponent(client.token)}`;
  if (file.mime.startsWith("image/")) {
    const figure = el("figure", { className: "image" });
    figure.append(el("img", { src: url, alt: file.name, loading: "lazy" }));
    figure.append(el("figcaption", {}, file.name));
    return figure;
  }
  const link = el("a", { href: url, download: file.name, rel: "noopener" }, `${file.name} (${file.size} bytes)`);
  return link;
}

function drawReceipts() {
  const active = state.active;
  if (!active || active.type !== SINGLE) return;
  const upTo = state.readUpTo.get(active.key) ?? 0;
  for (const item of document.querySelectorAll("#messages li.mine")) {
    const receipt = item.querySelector(".receipt");
    if (receipt) receipt.textContent = Number(item.dataset.msgId) <= upTo ? "Read" : "Sent";
  }
}

// An edited message shows its latest text, marked "edited" (history shows the latest text too).
function applyEdit(msgId, text) {
  const m = state.messages.get(msgId);
  const item = document.querySelector(`#messages li[data-msg-id="${msgId}"]`);
  if (!m || !item || item.classList.contains("notice")) return;
  m.text = text;
  item.querySelector(".edit-form")?.remove();
  const body = item.querySelector(".body");
  body.hidden = false;
  body.textContent = text ?? "[binary message]";
  if (!item.querySelector(".edited")) {
    item.querySelector(".meta").append(el("span", { className: "edited" }, " · edited"));
  }
}

function startEdit(m) {
  const item = document.querySelector(`#messages li[data-msg-id="${m.msg_id}"]`);
  if (!item || item.querySelector(".edit-form")) return;
  const body = item.querySelector(".body");
  const form = el("form", { className: "edit-form" });
  const input = el("input", { className: "edit-text", type: "text", "aria-label": "New text", maxLength: 4096 });
  input.value = m.text ?? "";
  form.append(input, el("button", { type: "submit", className: "edit-save" }, "Save"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = input.value;
    if (!text.trim()) return;
    try {
      await client.edit({ session_id: state.active.id, session_type: state.active.type, msg_id: m.msg_id, text });
      applyEdit(m.msg_id, text);
    } catch (err) {
      $("composer-error").textContent = err instanceof ApiError ? `Edit refused: ${err.message}` : String(err);
    }
  });
  body.hidden = true;
  body.after(form);
  input.focus();
}

async function recallMessage(m) {
  try {
    await client.recall({ session_id: state.active.id, session_type: state.active.type, msg_id: m.msg_id });
    replaceWithNotice(m.msg_id, "recalled", "You recalled a message");
  } catch (err) {
    $("composer-error").textContent = err instanceof ApiError ? `Recall refused: ${err.message}` : String(err);
  }
}

// sending ------------------------------------------------------------------------------------------------
function clientMsgId() {
  return 1 + Math.floor(Math.random() * 0xfffffffe);
}

async function sendMessage(fields) {
  const active = state.active;
  const args = { to: active.id, group: active.type === GROUP, client_msg_id: clientMsgId(), ...fields };
  const answer = await client.send(args);
  addMessage({
    msg_id: answer.msg_id,
    from: state.me,
    to: active.id,
    session_type: active.type,
    msg_type: 0,
    create_time: answer.create_time,
    text: fields.text ?? null,
    data_b64: "",
    burn: Boolean(fields.burn),
    file: fields.file ? { ...fields.file, url: fileUrl(fields.file, answer.msg_id, active) } : undefined,
  });
  note(active.type, active.id, answer.create_time, fields.text ?? fields.file?.name ?? "");
  drawRecent();
}

function fileUrl(file, msgId, active) {
  const q = new URLSearchParams({ msg_id: msgId, from: state.me, to: active.id, session_type: active.type });
  return `/api/blob/${file.path}?${q}`;
}

$("composer").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("composer-text").value;
  if (!text.trim() || !state.active) return;
  $("composer-error").textContent = "";
  $("send").disabled = true;
  try {
    const fields = { text };
    if (state.active.type === SINGLE && $("burn").checked) fields.burn = true;
    await sendMessage(fields);
    $("composer-text").value = "";
    stopTyping();
  } catch (err) {
    $("composer-error").textContent = err instanceof ApiError ? `Not sent: ${err.message}` : String(err);
  } finally {
    $("send").disabled = false;
  }
});

$("composer-text").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});

$("file-input").addEventListener("change", async () => {
  const file = $("file-input").files[0];
  if (!file || !state.active) return;
  $("composer-error").textContent = "";
  try {
    const stored = await client.upload({ file });
    await sendMessage({ file: stored.file });
  } catch (err) {
    $("composer-error").textContent = err instanceof ApiError ? `Not sent: ${err.message}` : String(err);
  } finally {
    $("file-input").value = "";
  }
});

$("composer-text").addEventListener("input", () => {
  const active = state.active;
  if (!active || Date.now() - state.typingSent < TYPING_SEND_MS) return;
  state.typingSent = Date.now();
  client.typing({ to: active.id, session_type: active.type, state: TypingState.TYPING_STARTED }).catch(() => {});
});

function stopTyping() {
  const active = state.active;
  if (!active || state.typingSent === 0) return;
  state.typingSent = 0;
  client.typing({ to: active.id, session_type: active.type, state: TypingState.TYPING_STOPPED }).catch(() => {});
}

// events -------------------------------------------------------------------------------------------------
client.on("msg", (m) => {
  const type = m.session_type;
  const id = type === GROUP ? m.to : (m.from === state.me ? m.to : m.from);
  const key = keyOf(type, id);
  note(type, id, m.create_time, m.text ?? m.file?.name ?? "[attachment]");
  if (state.active?.key === key) {
    addMessage(m);
    if (m.from !== state.me) {
      $("typing").textContent = "";
      if (document.visibilityState === "visible") markRead();
      else state.unread.set(key, (state.unread.get(key) ?? 0) + 1);
    }
  } else if (m.from !== state.me) {
    state.unread.set(key, (state.unread.get(key) ?? 0) + 1);
  }
  drawRecent();
});

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible" && state.active && state.unread.get(state.active.key)) markRead();
});

client.on("read", (r) => {
  state.unread.delete(keyOf(r.session_type, r.session_id));
  drawBadges();
});

client.on("receipt", (r) => {
  const key = keyOf(r.session_type, r.session_id);
  state.readUpTo.set(key, Math.max(state.readUpTo.get(key) ?? 0, r.msg_id));
  if (state.active?.key === key) drawReceipts();
});

client.on("CID_EXT_MSG_RECALL_NOTIFY", ({ data }) => {
  if (state.messages.has(data.msg_id)) {
    const who = data.from_user_id === state.me ? "You" : userName(data.from_user_id);
    replaceWithNotice(data.msg_id, "recalled", `${who} recalled a message`);
  }
});

client.on("edit", (e) => applyEdit(e.msg_id, e.text));

client.on("CID_EXT_MSG_BURNED_NOTIFY", ({ data }) => {
  if (!state.messages.has(data.msg_id)) return;
  if (data.reader_id === state.me) burnSoon(data.msg_id);
  else replaceWithNotice(data.msg_id, "burned", "Read and burned");
});

client.on("CID_EXT_TYPING", ({ data }) => {
  const active = state.active;
  if (!active || data.from_user_id === state.me) return;
  const type = sessionNumber(data.session_type);
  const id = type === GROUP ? data.to_session_id : data.from_user_id;
  if (active.key !== keyOf(type, id)) return;
  clearTimeout(state.typingTimer);
  if (data.state === "TYPING_STARTED") {
    $("typing").textContent = `${userName(data.from_user_id)} is typing…`;
    state.typingTimer = setTimeout(() => { $("typing").textContent = ""; }, TYPING_SHOW_MS);
  } else {
    $("typing").textContent = "";
  }
});

client.on("CID_BUDDY_LIST_STATUS_NOTIFY", ({ data }) => {
  state.presence.set(data.user_stat.user_id, statusNumber(data.user_stat.status));
  drawPresence(data.user_stat.user_id);
});

client.on("CID_BUDDY_LIST_USERS_STATUS_RESPONSE", ({ data }) => {
  for (const s of data.user_stat_list ?? []) {
    state.presence.set(s.user_id, statusNumber(s.status));
    drawPresence(s.user_id);
  }
});

client.on("CID_GROUP_CHANGE_MEMBER_NOTIFY", async ({ data }) => {
  try {
    const answer = await client.group({ group_id: data.group_id });
    state.groups.set(answer.group.group_id, answer.group);
  } catch {
    state.groups.delete(data.group_id);  // no longer a member
  }
  drawGroups();
});
