// mmsearch search page: plain JS over the JSON API (/api/search, /api/search/image, /api/status,
// /api/feedback, /api/profile).
"use strict";

const $ = (sel) => document.querySelector(sel);
// Plain glyphs every system font has (emoji fonts are often missing on Linux).
const ICONS = { video: "\u25B6", audio: "\u266A", text: "\u00B6", image: "\u25A3" };

const form = $("#search-form");
const results = $("#results");
const message = $("#message");
const summary = $("#summary");
const drop = $("#drop");
const viewer = $("#viewer");
const more = $("#more");
let lastQueryImageUrl = null;

// What is being searched for: text, a picture (a File, not kept in the address), and items
// the person asked for more or less of. Filters live on the form.
const query = { q: "", image: null, like: [], unlike: [] };
const itemLabels = new Map(); // item id -> {name, thumbnail_url} of items seen on cards
let shown = 0; // cards on the page, the next page's offset
let latest = 0; // number of the newest request: older answers arriving late are dropped

// Feedback: whose it is (empty = the server's user), and their latest judgement of each item,
// so a judged card shows its button pressed in every later search.
const USER_KEY = "mmsearch.user";
const judged = new Map(); // item id -> true (good) or false (bad)
let profileRequest = 0; // number of the newest profile request, like `latest`
let taughtCount = 0; // judgements in the profile panel, for the "forget all" question

// ------------------------------------------------------------------ helpers

function timestamp(seconds) {
  const s = Math.round(seconds);
  const pad = (n) => String(n).padStart(2, "0");
  return `${pad(Math.floor(s / 3600))}:${pad(Math.floor((s % 3600) / 60))}:${pad(s % 60)}`;
}

function span(hit) {
  if (hit.start === undefined) return "";
  const end = hit.end ?? hit.start;
  return `${timestamp(hit.start)}\u2013${timestamp(end)}`;
}

function mediaUrl(hit) {
  // Media fragment: players start at the hit and (where supported) stop at its end.
  if (hit.start === undefined) return hit.file_url;
  const end = hit.end ?? hit.start;
  return `${hit.file_url}#t=${hit.start.toFixed(2)},${end.toFixed(2)}`;
}

function selectedTypes() {
  return [...form.querySelectorAll("input[name=type]:checked")].map((el) => el.value);
}

function words(text) {
  // "night, people" -> ["night", "people"]: each is its own negative term
  return text.split(",").map((w) => w.trim()).filter(Boolean);
}

// The filters and options on the form, as API (and page address) parameters.
function filterParams() {
  const params = new URLSearchParams();
  params.set("k", $("#k").value);
  for (const t of selectedTypes()) params.append("type", t);
  const path = $("#path").value.trim();
  if (path) params.set("path", path);
  for (const name of ["after", "before"]) {
    if ($(`#${name}`).value) params.set(name, $(`#${name}`).value);
  }
  for (const w of words($("#not").value)) params.append("not", w);
  for (const t of words($("#tags").value)) params.append("tag", t);
  if ($("#sort").value !== "relevance") params.set("sort", $("#sort").value);
  if ($("#cutoff").checked) params.set("cutoff", "auto");
  const user = currentUser();
  if (user) params.set("user", user);
  if (!$("#personal").checked) params.set("personal", "false");
  for (const name of rerankParams()) params.append("rerank", name);
  return params;
}

// The whole query besides a picture: text, liked and unliked items, filters.
function queryParams() {
  const params = filterParams();
  if (query.q) params.set("q", query.q);
  for (const id of query.like) params.append("like", id);
  for (const id of query.unlike) params.append("unlike", id);
  return params;
}

// Rerankers: nothing when every available one is on (the collection's defaults), else the
// ones switched on, or "none".
function rerankParams() {
  const itmShown = !$("#itm-switch").hidden;
  const itm = itmShown && $("#itm").checked;
  const mmr = $("#diversity").checked;
  if (mmr && (itm || !itmShown)) return [];
  if (!itm && !mmr) return ["none"];
  return [itm ? "itm" : "mmr"];
}

function currentUser() {
  return $("#user").value.trim();
}

// `user=NAME` for the profile endpoints; nothing for the server's user.
function userParam() {
  const user = currentUser();
  return user ? `?${new URLSearchParams({ user })}` : "";
}

function storedUser() {
  try {
    return localStorage.getItem(USER_KEY) || "";
  } catch {
    return ""; // storage refused (private mode, file://): the field starts empty
  }
}

function storeUser(user) {
  try {
    if (user) localStorage.setItem(USER_KEY, user);
    else localStorage.removeItem(USER_KEY);
  } catch {
    // the name still travels in the address
  }
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

function showError(text) {
  message.textContent = text;
  message.hidden = !text;
}

async function fetchJson(url, options) {
  let response;
  try {
    response = await fetch(url, options);
  } catch {
    // fetch rejects only when no answer came at all: the server stopped or the network is down
    throw new Error(`Could not reach the mmsearch server at ${location.host}: ` +
                    "is `mmsearch serve` still running? Start it again, then retry.");
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    // non-JSON error page: fall through to the status text
  }
  if (!response.ok) throw new Error(body?.error || `${response.status} ${response.statusText}`);
  return body;
}

// ------------------------------------------------------------------ rendering

function isoDay(seconds) {
  // The local calendar day, in the form the date filters take (2024-06-01).
  const d = new Date(seconds * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

function fileName(path) {
  return path.slice(path.lastIndexOf("/") + 1);
}

function why(hit) {
  // One line per ranker or stage: its own score, and the rank it gave.
  return Object.entries(hit.parts || {}).flatMap(([source, part]) => {
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = source;
    dd.textContent = `${part.score.toFixed(3)}${part.rank ? ` \u00b7 #${part.rank}` : ""}`;
    return [dt, dd];
  });
}

function card(hit) {
  const node = $("#card").content.firstElementChild.cloneNode(true);
  const img = node.querySelector("img");
  const icon = node.querySelector(".icon");
  if (hit.thumbnail_url) {
    img.src = hit.thumbnail_url;
    img.alt = fileName(hit.path);
    icon.remove();
  } else {
    img.remove();
    icon.textContent = ICONS[hit.asset_kind] || ICONS.text;
  }
  node.querySelector(".kind").textContent = hit.kind === hit.asset_kind ? hit.kind : `${hit.asset_kind} \u00b7 ${hit.kind}`;
  node.querySelector(".score").textContent = hit.score.toFixed(3);
  node.querySelector(".span").textContent = span(hit);
  const date = node.querySelector(".date");
  if (hit.date !== undefined) {
    date.textContent = isoDay(hit.date);
    date.dateTime = new Date(hit.date * 1000).toISOString();
    date.title = "taken, else modified";
  }
  node.querySelector(".passage").textContent = hit.text || "";
  const slash = hit.path.lastIndexOf("/");
  node.querySelector(".name").textContent = hit.path.slice(slash + 1);
  node.querySelector(".dir").textContent = hit.path.slice(0, slash + 1);
  node.querySelector(".path").title = hit.path;
  node.querySelector(".thumb").addEventListener("click", () => openViewer(hit));
  node.dataset.item = hit.item_id;
  node.querySelector(".like").addEventListener("click", () => moreLike(hit));
  node.querySelector(".unlike").addEventListener("click", () => lessLike(hit));
  node.querySelector(".good").addEventListener("click", () => judge(hit, true, node));
  node.querySelector(".bad").addEventListener("click", () => judge(hit, false, node));
  showJudgement(node, judged.get(hit.item_id));
  node.querySelector(".parts").append(...why(hit));
  node.querySelector(".tags").append(...(hit.tags || []).map(tagChip));
  return node;
}

// A result's tag: pressing it keeps only pictures with that tag (added to the "tagged" filter).
function tagChip(tag) {
  const chip = document.createElement("button");
  chip.type = "button";
  chip.className = "tag";
  chip.textContent = tag;
  chip.title = `Only pictures tagged \u201c${tag}\u201d`;
  chip.addEventListener("click", () => {
    const chosen = words($("#tags").value);
    if (!chosen.includes(tag)) $("#tags").value = [...chosen, tag].join(", ");
    run();
  });
  return chip;
}

// The collection's tags, offered while typing in the "tagged" box.
async function loadTags() {
  try {
    const data = await fetchJson("/api/tags");
    $("#tag-names").replaceChildren(
      ...data.tags.map(({ tag, count }) => Object.assign(document.createElement("option"), { value: tag, label: `${tag} (${count})` })),
    );
  } catch {
    // no tags yet (an empty collection): the box still filters by what is typed
  }
}

// Press the card's good or bad button (or neither, for undefined).
function showJudgement(node, good) {
  node.querySelector(".good").setAttribute("aria-pressed", String(good === true));
  node.querySelector(".bad").setAttribute("aria-pressed", String(good === false));
}

// 👍 or 👎 on a card: recorded for the chosen user with the query it was given for; the order
// changes on the next search (or "refresh"), not under the person's pointer.
async function judge(hit, good, node) {
  if (judged.get(hit.item_id) === good) return; // already recorded: the button is pressed
  showError("");
  const body = { item_id: hit.item_id, good };
  if (currentUser()) body.user = currentUser();
  if (query.q) body.query = query.q;
  const buttons = node.querySelectorAll(".judge button");
  for (const b of buttons) b.disabled = true;
  try {
    const data = await fetchJson("/api/feedback", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    judged.set(hit.item_id, good);
    showJudgement(node, good);
    // The running count on the card judged last; the others keep their pressed button.
    for (const note of results.querySelectorAll(".judged")) note.textContent = "";
    node.querySelector(".judged").textContent = plural(data.judgements, "judgement");
    node.querySelector(".judged").title = `${data.user} has judged ${plural(data.judgements, "result")}`;
    $("#refresh").hidden = false;
    loadProfile();
  } catch (err) {
    showError(`Could not record that ${fileName(hit.path)} is ${good ? "good" : "bad"}: ${err.message}`);
  } finally {
    for (const b of buttons) b.disabled = false;
  }
}

function describe(data) {
  // What was searched for, as the summary reads it ("for “red car”, less like x.jpg");
  // items are named by their file where the page has seen it.
  if (data.by === "image") return `for picture ${data.query}`;
  const named = (id) => itemLabels.get(id)?.name || `item ${id}`;
  const parts = [];
  if (query.q) parts.push(`for \u201c${query.q}\u201d`);
  if (query.like.length) parts.push(`like ${query.like.map(named).join(", ")}`);
  if (query.unlike.length) parts.push(`less like ${query.unlike.map(named).join(", ")}`);
  return parts.join(", ") || `for \u201c${data.query}\u201d`;
}

function render(data, append) {
  const nodes = data.results.map(card);
  if (append) results.append(...nodes);
  else results.replaceChildren(...nodes);
  shown = results.children.length;
  const what = describe(data);
  summary.textContent = shown
    ? `${shown} result${shown === 1 ? "" : "s"} ${what} in ${Math.round(data.took_ms)} ms`
    : `No results ${what}.`;
  // A full page may have more behind it; a short one (or a cut-off) is the end.
  more.hidden = data.results.length < Number($("#k").value);
}

function termChip(id, sign) {
  const node = $("#term").content.firstElementChild.cloneNode(true);
  const seen = itemLabels.get(id);
  node.classList.add(sign > 0 ? "plus" : "minus");
  node.querySelector(".sign").textContent = sign > 0 ? "more like" : "less like";
  node.querySelector(".label").textContent = seen?.name || `item ${id}`;
  node.title = seen?.path || `item ${id}`;
  if (!seen) {
    // An item from a link was never on this page: ask the API for its file name.
    fetch(`/api/items/${id}`)
      .then((r) => (r.ok ? r.json() : null))
      .then((item) => {
        if (!item) return;
        itemLabels.set(id, { name: fileName(item.path), path: item.path, thumbnail_url: item.thumbnail_url });
        node.querySelector(".label").textContent = fileName(item.path);
        node.title = item.path;
      })
      .catch(() => {});
  }
  const img = node.querySelector("img");
  // Items from a link were never on this page: their picture is asked for by id (none for text).
  img.src = seen ? seen.thumbnail_url || "" : `/api/items/${id}/thumbnail`;
  img.addEventListener("error", () => img.remove());
  if (!img.getAttribute("src")) img.remove();
  const remove = node.querySelector(".remove");
  remove.setAttribute("aria-label", `Remove ${node.querySelector(".label").textContent}`);
  remove.addEventListener("click", () => {
    const list = sign > 0 ? query.like : query.unlike;
    list.splice(list.indexOf(id), 1);
    if (!hasQuery()) {
      // "less like" alone asks for nothing: the query is gone, the filters stay
      query.unlike = [];
      clearResults();
      history.replaceState(null, "", `?${filterParams()}`);
    }
    renderTerms();
    if (hasQuery()) run();
  });
  return node;
}

function renderTerms() {
  const terms = $("#terms");
  terms.replaceChildren(...query.like.map((id) => termChip(id, 1)),
                        ...query.unlike.map((id) => termChip(id, -1)));
  terms.hidden = !terms.children.length;
}

function clearResults() {
  results.replaceChildren();
  summary.textContent = "";
  more.hidden = true;
  shown = 0;
}

function player(hit) {
  const el = document.createElement(hit.asset_kind);
  Object.assign(el, { controls: true, autoplay: true, src: mediaUrl(hit) });
  // A file this browser cannot decode (or that went away) would otherwise be a silent, empty player.
  el.addEventListener("error", () => {
    const note = Object.assign(document.createElement("p"), { className: "message" });
    const link = Object.assign(document.createElement("a"), {
      href: hit.file_url, target: "_blank", rel: "noopener", textContent: "open the file",
    });
    note.append(`This browser cannot play ${hit.path.split("/").pop()}; `, link,
                " to play it with another program, or re-index its folder if it has changed.");
    el.replaceWith(note);
  });
  return el;
}

function openViewer(hit) {
  const body = $("#viewer-body");
  $("#viewer-title").textContent = `${hit.path}${hit.start !== undefined ? "  " + span(hit) : ""}`;
  let el;
  if (hit.asset_kind === "video" || hit.asset_kind === "audio") {
    el = player(hit);
  } else if (hit.asset_kind === "image") {
    el = document.createElement("img");
    Object.assign(el, { src: hit.file_url, alt: hit.path });
  } else {
    el = document.createElement("div");
    const passage = document.createElement("p");
    passage.textContent = hit.text || "";
    const link = Object.assign(document.createElement("a"), {
      href: hit.file_url, target: "_blank", rel: "noopener", textContent: "open the whole file",
    });
    el.append(passage, link);
  }
  const nodes = [el];
  if (hit.text && hit.asset_kind !== "text") {
    const passage = document.createElement("p");
    passage.textContent = hit.text;
    nodes.push(passage);
  }
  body.replaceChildren(...nodes);
  viewer.showModal();
}

function closeViewer() {
  for (const m of viewer.querySelectorAll("video, audio")) m.pause();
  viewer.close();
}

// ------------------------------------------------------------------ searching

// Run the query on the form, from the first result (a new search) or the next page (append).
async function run({ append = false } = {}) {
  const request = ++latest;
  showError("");
  more.disabled = true;
  results.setAttribute("aria-busy", "true");
  const params = queryParams();
  // The address keeps what a link can restore: the query and every filter; a picture cannot
  // be in it, so a picture search keeps only the filters there.
  if (!append) history.replaceState(null, "", `?${query.image ? filterParams() : params}`);
  if (append) params.set("offset", shown);
  if (!append) {
    summary.textContent = "Searching\u2026";
    $("#refresh").hidden = true; // this search reads the feedback given so far
  }
  try {
    let data;
    if (query.image) {
      const body = new FormData();
      body.append("file", query.image, query.image.name || "pasted.png");
      data = await fetchJson(`/api/search/image?${params}`, { method: "POST", body });
    } else {
      data = await fetchJson(`/api/search?${params}`);
    }
    if (request === latest) render(data, append);
  } catch (err) {
    if (request !== latest) return;
    if (!append) clearResults(); // a failed next page leaves the cards already shown
    showError(err.message);
  } finally {
    if (request === latest) {
      more.disabled = false;
      results.removeAttribute("aria-busy");
    }
  }
}

function searchText(q) {
  query.q = q;
  query.image = null;
  $("#query-image").hidden = true;
  run();
}

function searchImage(file) {
  showError("");
  if (!file.type.startsWith("image/")) {
    showError(`${file.name} is not a picture: drop a JPEG, PNG, WebP or similar.`);
    return;
  }
  if (lastQueryImageUrl) URL.revokeObjectURL(lastQueryImageUrl);
  lastQueryImageUrl = URL.createObjectURL(file);
  const preview = $("#query-image");
  preview.onerror = () => { preview.hidden = true; };
  preview.src = lastQueryImageUrl;
  preview.hidden = false;
  // A picture is a new query: it replaces the text and the items (the filters stay).
  Object.assign(query, { q: "", image: file, like: [], unlike: [] });
  $("#q").value = "";
  renderTerms();
  run();
}

function remember(hit) {
  itemLabels.set(hit.item_id, { name: fileName(hit.path), path: hit.path, thumbnail_url: hit.thumbnail_url });
}

// "More like this": the card's item becomes the query (the filters stay).
function moreLike(hit) {
  remember(hit);
  Object.assign(query, { q: "", image: null, like: [hit.item_id], unlike: [] });
  $("#q").value = "";
  $("#query-image").hidden = true;
  renderTerms();
  run();
  window.scrollTo(0, 0);
}

// "Less like this": the current query, pushed away from the card's item.
function lessLike(hit) {
  remember(hit);
  if (!query.unlike.includes(hit.item_id)) query.unlike.push(hit.item_id);
  query.like = query.like.filter((id) => id !== hit.item_id);
  renderTerms();
  run();
}

function hasQuery() {
  return Boolean(query.q || query.image || query.like.length);
}

// ------------------------------------------------------------------ what I taught it

// The chosen user's judgements, newest first, in the "what I taught it" panel; also which cards
// show a pressed button.
async function loadProfile() {
  const request = ++profileRequest;
  const panel = $("#taught");
  panel.setAttribute("aria-busy", "true");
  try {
    const data = await fetchJson(`/api/profile${userParam()}`);
    if (request === profileRequest) renderProfile(data);
  } catch (err) {
    if (request !== profileRequest) return;
    $("#taught-who").textContent = `Could not read what was taught: ${err.message}`;
    $("#taught-who").classList.add("error");
  } finally {
    if (request === profileRequest) panel.removeAttribute("aria-busy");
  }
}

function renderProfile(data) {
  judged.clear();
  for (const e of data.events) if (e.item_id !== null) judged.set(e.item_id, e.label > 0);
  for (const node of results.querySelectorAll("li.card")) {
    showJudgement(node, judged.get(Number(node.dataset.item)));
  }
  if (!currentUser()) $("#user").placeholder = `${data.user} (the server's user)`;
  taughtCount = data.events.length;
  $("#taught-count").textContent = taughtCount ? `(${taughtCount})` : "";
  const who = $("#taught-who");
  who.classList.remove("error");
  who.textContent = taughtCount
    ? `As ${data.user}: ${data.good} good, ${data.bad} bad` +
      (data.model ? ` \u00b7 learned with ${data.model.kind}` : "") +
      (data.unresolved ? ` \u00b7 ${data.unresolved} no longer indexed` : "")
    : `Nothing taught yet as ${data.user}: mark results good or bad with the thumbs on each card.`;
  $("#taught-list").replaceChildren(...data.events.slice().reverse().map(taughtRow));
  $("#forget").hidden = !taughtCount;
}

function taughtRow(event) {
  const li = document.createElement("li");
  const good = event.label > 0;
  li.className = good ? "good" : "bad";
  const icon = $("#card").content.querySelector(good ? ".good svg" : ".bad svg").cloneNode(true);
  const verdict = Object.assign(document.createElement("span"), {
    className: "verdict", textContent: good ? "good" : "bad",
  });
  const name = Object.assign(document.createElement("span"), {
    className: "name",
    textContent: event.path ? fileName(event.path) : "a file no longer indexed",
    title: event.path || "",
  });
  li.append(icon, verdict, name);
  if (event.query) {
    li.append(Object.assign(document.createElement("span"), {
      className: "for", textContent: `for \u201c${event.query}\u201d`,
    }));
  }
  return li;
}

async function forgetAll() {
  const who = currentUser() || "the server's user";
  if (!confirm(`Forget all ${plural(taughtCount, "judgement")} taught as ${who}? ` +
               "Their searches go back to the plain order.")) return;
  try {
    await fetchJson(`/api/profile${userParam()}`, { method: "DELETE" });
  } catch (err) {
    showError(`Could not forget what was taught as ${who}: ${err.message}`);
    return;
  }
  for (const note of results.querySelectorAll(".judged")) note.textContent = "";
  if (results.children.length) $("#refresh").hidden = false;
  await loadProfile();
}

async function loadStatus() {
  const el = $("#status");
  try {
    const st = await fetchJson("/api/status");
    const counts = Object.entries(st.assets_by_kind).map(([k, n]) => `${n} ${k}`).join(", ");
    el.textContent = `${counts || "no files"} \u00b7 ${st.index_count ?? 0} vectors \u00b7 model ${st.model}`;
    $("#itm-switch").hidden = !(st.itm && st.patches_stored > 0);
    el.classList.remove("error");
  } catch (err) {
    el.textContent = err.message;
    el.classList.add("error");
  }
}

// ------------------------------------------------------------------ wiring

form.addEventListener("submit", (ev) => {
  ev.preventDefault();
  const q = $("#q").value.trim();
  if (q) searchText(q);
  else if (query.image || query.like.length) run(); // Enter in a filter box: the same query again
  else showError("Type what you are looking for, or drop a picture below.");
});

// A changed filter or option applies to what is on screen at once.
form.addEventListener("change", (ev) => {
  if (ev.target.id === "q") return;
  if (hasQuery()) run();
  else history.replaceState(null, "", `?${filterParams()}`); // kept for the next search and a reload
});

more.addEventListener("click", () => run({ append: true }));
$("#refresh").addEventListener("click", () => run());

// Another user name: their own feedback and panel (the form's change handler searches again).
$("#user").addEventListener("change", () => {
  storeUser(currentUser());
  judged.clear();
  loadProfile();
});
$("#taught").addEventListener("toggle", () => { if ($("#taught").open) loadProfile(); });
$("#forget").addEventListener("click", forgetAll);

$("#file").addEventListener("change", (ev) => {
  if (ev.target.files.length) searchImage(ev.target.files[0]);
  ev.target.value = "";
});

for (const name of ["dragenter", "dragover"]) {
  drop.addEventListener(name, (ev) => { ev.preventDefault(); drop.classList.add("over"); });
}
for (const name of ["dragleave", "drop"]) {
  drop.addEventListener(name, () => drop.classList.remove("over"));
}
drop.addEventListener("drop", (ev) => {
  ev.preventDefault();
  const file = ev.dataTransfer.files[0];
  if (file) searchImage(file);
});
// Dropping a picture anywhere else on the page searches too, instead of navigating away to it.
document.addEventListener("dragover", (ev) => ev.preventDefault());
document.addEventListener("drop", (ev) => {
  ev.preventDefault();
  if (!drop.contains(ev.target) && ev.dataTransfer.files[0]) searchImage(ev.dataTransfer.files[0]);
});
document.addEventListener("paste", (ev) => {
  const file = [...(ev.clipboardData?.files || [])].find((f) => f.type.startsWith("image/"));
  if (file) searchImage(file);
});

$("#viewer-close").addEventListener("click", closeViewer);
viewer.addEventListener("click", (ev) => { if (ev.target === viewer) closeViewer(); });
viewer.addEventListener("close", () => {
  for (const m of viewer.querySelectorAll("video, audio")) m.pause();
});

// Restore a search and its filters from the address bar, so results can be linked.
(function restore() {
  const params = new URLSearchParams(location.search);
  const types = params.getAll("type");
  for (const el of form.querySelectorAll("input[name=type]")) el.checked = types.includes(el.value);
  const pick = (select, value) => {
    if ([...select.options].some((o) => o.value === value)) select.value = value;
  };
  pick($("#k"), params.get("k"));
  pick($("#sort"), params.get("sort"));
  $("#path").value = params.get("path") || "";
  $("#not").value = params.getAll("not").join(", ");
  $("#tags").value = params.getAll("tag").join(", ");
  $("#cutoff").checked = params.get("cutoff") === "auto";
  $("#user").value = params.get("user") ?? storedUser(); // a link's user wins for this page
  $("#personal").checked = params.get("personal") !== "false";
  const rerank = params.getAll("rerank");
  $("#diversity").checked = !rerank.length || rerank.includes("mmr");
  $("#itm").checked = !rerank.length || rerank.includes("itm");
  const ids = (name) => params.getAll(name).filter((v) => /^\d+$/.test(v)).map(Number);
  Object.assign(query, { q: params.get("q") || "", like: ids("like"), unlike: ids("unlike") });
  $("#q").value = query.q;
  renderTerms();
  loadStatus();
  loadTags();
  loadProfile();
  // A date input cannot hold a malformed date; say so rather than search without it.
  const bad = [];
  for (const name of ["after", "before"]) {
    const value = params.get(name);
    $(`#${name}`).value = value || "";
    if (value && $(`#${name}`).value !== value) bad.push(`${name}=${value}`);
  }
  if (bad.length) {
    showError(`The link's ${bad.join(" and ")} is not a date like 2024-06-01: ` +
              "choose the date in the box, then search.");
    return;
  }
  if (hasQuery()) run();
})();
