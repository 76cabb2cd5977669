// mmsearch search page: plain JS over the JSON API (/api/search, /api/search/image, /api/status).
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
let lastQueryImageUrl = null;

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

function searchParams() {
  const params = new URLSearchParams();
  params.set("k", $("#k").value);
  for (const t of selectedTypes()) params.append("type", t);
  return params;
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

function card(hit) {
  const node = $("#card").content.firstElementChild.cloneNode(true);
  const img = node.querySelector("img");
  const icon = node.querySelector(".icon");
  if (hit.thumbnail_url) {
    img.src = hit.thumbnail_url;
    img.alt = hit.path.split("/").pop();
    icon.remove();
  } else {
    img.remove();
    icon.textContent = ICONS[hit.asset_kind] || ICONS.text;
  }
  node.querySelector(".kind").textContent = hit.kind === hit.asset_kind ? hit.kind : `${hit.asset_kind} \u00b7 ${hit.kind}`;
  node.querySelector(".score").textContent = hit.score.toFixed(3);
  node.querySelector(".span").textContent = span(hit);
  node.querySelector(".passage").textContent = hit.text || "";
  const slash = hit.path.lastIndexOf("/");
  node.querySelector(".name").textContent = hit.path.slice(slash + 1);
  node.querySelector(".dir").textContent = hit.path.slice(0, slash + 1);
  node.querySelector(".path").title = hit.path;
  node.querySelector(".thumb").addEventListener("click", () => openViewer(hit));
  return node;
}

function render(data) {
  results.replaceChildren(...data.results.map(card));
  const n = data.results.length;
  const what = data.by === "image" ? `picture ${data.query}` : `\u201c${data.query}\u201d`;
  summary.textContent = n
    ? `${n} result${n === 1 ? "" : "s"} for ${what} in ${Math.round(data.took_ms)} ms`
    : `No results for ${what}.`;
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

async function searchText(q) {
  showError("");
  $("#query-image").hidden = true;
  const params = searchParams();
  params.set("q", q);
  history.replaceState(null, "", `?${params}`);
  summary.textContent = "Searching\u2026";
  try {
    render(await fetchJson(`/api/search?${params}`));
  } catch (err) {
    summary.textContent = "";
    results.replaceChildren();
    showError(err.message);
  }
}

async function searchImage(file) {
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
  $("#q").value = "";
  history.replaceState(null, "", `?${searchParams()}`);
  const body = new FormData();
  body.append("file", file, file.name || "pasted.png");
  summary.textContent = "Searching\u2026";
  try {
    render(await fetchJson(`/api/search/image?${searchParams()}`, { method: "POST", body }));
  } catch (err) {
    summary.textContent = "";
    results.replaceChildren();
    showError(err.message);
  }
}

async function loadStatus() {
  const el = $("#status");
  try {
    const st = await fetchJson("/api/status");
    const counts = Object.entries(st.assets_by_kind).map(([k, n]) => `${n} ${k}`).join(", ");
    el.textContent = `${counts || "no files"} \u00b7 ${st.index_count ?? 0} vectors \u00b7 model ${st.model}`;
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
  if (!q) {
    showError("Type what you are looking for, or drop a picture below.");
    return;
  }
  searchText(q);
});

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

// Restore a search from the address bar (?q=...&type=...&k=...), so results can be linked.
(function restore() {
  const params = new URLSearchParams(location.search);
  const types = params.getAll("type");
  for (const el of form.querySelectorAll("input[name=type]")) el.checked = types.includes(el.value);
  const k = params.get("k");
  if ([...$("#k").options].some((o) => o.value === k)) $("#k").value = k;
  loadStatus();
  const q = params.get("q");
  if (q) {
    $("#q").value = q;
    searchText(q);
  }
})();
