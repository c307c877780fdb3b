// genie play: keys -> POST /step; frames arrive on the /events stream (Server-Sent Events).
// At most one step request is in flight: a key pressed meanwhile replaces the queued one, so a slow
// model never builds a backlog, and a held key repeats at the chosen rate, no faster than the model.
"use strict";

const $ = (id) => document.getElementById(id);
const BINDABLE = [["ArrowUp", "↑"], ["ArrowDown", "↓"], ["ArrowLeft", "←"], ["ArrowRight", "→"],
                  [" ", "Space"], ["w", "W"], ["a", "A"], ["s", "S"], ["d", "D"]];
const DIGITS = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "0"];  // keys for actions 0..9

let info = null;
let bindings = {};  // key -> action id, stored in localStorage per model; by default the model's named controls
const input = { inFlight: false, queued: null, held: null, heldKey: null, lastSend: 0, repeatFps: 10 };
const frameTimes = [];
let messageTimer = null;

function storageKey(what) { return `genie-play:${info.model || "world"}:${what}`; }

function say(text, isError = false) {
  const el = $("message");
  el.textContent = text;
  el.classList.toggle("error", isError);
  clearTimeout(messageTimer);
  if (text) messageTimer = setTimeout(() => say(""), isError ? 5000 : 2500);
}

// ------------------------------------------------------------------------------------ stepping

function request(action) {
  if (input.inFlight) { input.queued = action; return; }
  send(action);
}

async function send(action) {
  input.inFlight = true;
  input.lastSend = performance.now();
  try {
    const response = await fetch("/step", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ action }),
    });
    const body = await response.json().catch(() => ({ error: response.statusText }));
    if (!response.ok) { say(body.error || `step failed (${response.status})`, true); input.held = null; }
    else $("latency").textContent = `${Math.round(body.latency_ms)} ms`;
  } catch (err) {
    say("the server is not answering: is `genie play` still running?", true);
    input.held = null;
  } finally {
    input.inFlight = false;
    next();
  }
}

function next() {
  if (input.queued !== null) { const a = input.queued; input.queued = null; send(a); return; }
  if (input.held === null) return;
  const wait = Math.max(0, 1000 / input.repeatFps - (performance.now() - input.lastSend));
  setTimeout(() => { if (input.held !== null && !input.inFlight) send(input.held); }, wait);
}

function actionForKey(key) {
  const k = key.length === 1 ? key.toLowerCase() : key;
  if (k in bindings) return bindings[k];
  const digit = DIGITS.indexOf(k);
  return digit >= 0 && digit < info.num_actions ? digit : null;
}

function onKeyDown(e) {
  if (!info || e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.target.tagName === "SELECT" || e.target.tagName === "INPUT") return;
  const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
  if (key === "r") { e.preventDefault(); if (!e.repeat) reset(); return; }
  const action = actionForKey(key);
  if (action === null) {
    const bindable = BINDABLE.find(([k]) => k === key);
    if (bindable) {
      e.preventDefault();
      say(`${bindable[1]} is not bound yet: pick an action for it under "key bindings"`);
      const kbd = document.querySelector(`kbd[data-key="${key}"]`);
      if (kbd) { kbd.classList.add("flash"); setTimeout(() => kbd.classList.remove("flash"), 600); }
    }
    return;
  }
  e.preventDefault();
  if (e.repeat) return;  // holding is handled by the repeat loop, at the chosen rate
  input.held = action;
  input.heldKey = key;
  request(action);
}

function onKeyUp(e) {
  const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
  if (key === input.heldKey) { input.held = null; input.heldKey = null; }
}

async function reset() {
  input.held = input.queued = null;
  const response = await fetch("/reset", { method: "POST" }).catch(() => null);
  if (!response || !response.ok) say("reset failed", true);
  else say("reset to the prompt");
}

async function saveVideo() {
  const button = $("save");
  button.disabled = true;
  button.textContent = "encoding…";
  try {
    const response = await fetch("/video.mp4");
    if (!response.ok) throw new Error((await response.json()).error);
    const name = /filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") || "");
    const url = URL.createObjectURL(await response.blob());
    const link = Object.assign(document.createElement("a"), { href: url, download: name ? name[1] : "genie-play.mp4" });
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    say(`saved ${link.download}`);
  } catch (err) {
    say(`save failed: ${err.message}`, true);
  } finally {
    button.disabled = false;
    button.textContent = "⬇ save mp4";
  }
}

// ------------------------------------------------------------------------------- frame stream

function connect() {
  const events = new EventSource("/events");
  events.onopen = () => { $("live").textContent = "live"; $("live").classList.remove("off"); };
  events.onerror = () => { $("live").textContent = "reconnecting…"; $("live").classList.add("off"); };
  events.onmessage = (e) => {
    const frame = JSON.parse(e.data);
    $("frame").src = frame.png;
    $("frame-index").textContent = frame.index;
    $("action").textContent = frame.action === null ? "reset" : actionLabel(frame.action);
    frameTimes.push(performance.now());
    highlight(frame.action);
  };
}

function updateFps() {
  const now = performance.now();
  while (frameTimes.length && now - frameTimes[0] > 1000) frameTimes.shift();
  const n = frameTimes.length;
  const fps = n >= 2 ? ((n - 1) * 1000) / (frameTimes[n - 1] - frameTimes[0]) : 0;
  $("fps").textContent = fps.toFixed(1);
}

// "3" or, for a model whose latent actions have names (trained on labelled data), "3 RIGHT"
function actionLabel(action) {
  const name = info.code_names ? info.code_names[action] : null;
  return name ? `${action} ${name}` : String(action);
}

function highlight(action) {
  document.querySelectorAll(".actions button").forEach((b) => b.classList.toggle("active", Number(b.dataset.action) === action));
}

// ------------------------------------------------------------------------------------ the UI

function buildActions() {
  const box = $("actions");
  box.replaceChildren();
  for (let a = 0; a < info.num_actions; a++) {
    const button = document.createElement("button");
    button.dataset.action = a;
    const name = info.code_names ? info.code_names[a] : null;
    button.title = name ? `latent action ${a}: ${name} in ${Math.round(100 * info.code_confidence[a])}% of ${info.labels} labelled transitions`
                        : `latent action ${a}`;
    const digit = a < DIGITS.length ? `<kbd>${DIGITS[a]}</kbd>` : "";
    button.innerHTML = `<span class="id">${a}</span><span class="name"></span>${digit}<span class="keys"></span>`;
    button.querySelector(".name").textContent = name || "";
    button.addEventListener("click", () => { request(a); button.blur(); });
    box.appendChild(button);
  }
  $("last-key").textContent = DIGITS[Math.min(info.num_actions, DIGITS.length) - 1];
  if (info.controls) {
    $("actions-title").textContent = "actions";
    $("actions-help").textContent = `A name is the latent action's most frequent true action in ${info.labels} ` +
      "labelled transitions of the training data. Arrow keys and space start bound to the actions that mean left, " +
      "right and up/jump; change them below.";
  }
  showBoundKeys();
}

function showBoundKeys() {
  document.querySelectorAll(".actions button").forEach((b) => {
    const keys = BINDABLE.filter(([k]) => bindings[k] === Number(b.dataset.action)).map(([, label]) => label);
    b.querySelector(".keys").textContent = keys.join(" ");
  });
}

function buildBindings() {
  const box = $("bindings");
  box.replaceChildren();
  for (const [key, label] of BINDABLE) {
    const kbd = Object.assign(document.createElement("kbd"), { textContent: label });
    kbd.dataset.key = key;
    const select = document.createElement("select");
    select.setAttribute("aria-label", `action for ${label}`);
    select.add(new Option("—", ""));
    for (let a = 0; a < info.num_actions; a++) select.add(new Option(info.code_names ? actionLabel(a) : `action ${a}`, String(a)));
    select.value = key in bindings ? String(bindings[key]) : "";
    select.addEventListener("change", () => {
      if (select.value === "") delete bindings[key]; else bindings[key] = Number(select.value);
      localStorage.setItem(storageKey("bindings"), JSON.stringify(bindings));
      showBoundKeys();
      select.blur();  // give arrow keys back to the game
    });
    box.append(kbd, select);
  }
}

function loadSettings() {
  const stored = localStorage.getItem(storageKey("bindings"));
  try { bindings = stored === null ? { ...(info.controls || {}) } : JSON.parse(stored); } catch { bindings = {}; }
  for (const [key, action] of Object.entries(bindings)) {
    if (!Number.isInteger(action) || action < 0 || action >= info.num_actions) delete bindings[key];
  }
  input.repeatFps = Number(localStorage.getItem(storageKey("repeat-fps"))) || 10;
  $("repeat-fps").value = input.repeatFps;
  $("repeat-fps-value").textContent = input.repeatFps;
}

// the screen takes the frame's aspect ratio: its longer side is the page's screen size (--screen)
function showAspect(width, height) {
  const screen = document.querySelector(".screen");
  screen.style.setProperty("--aspect", `${width} / ${height}`);
  screen.classList.toggle("tall", height > width);
  $("frame").width = width >= height ? 512 : Math.round(512 * width / height);
  $("frame").height = height >= width ? 512 : Math.round(512 * height / width);
}

async function main() {
  info = await (await fetch("/info")).json();
  const name = (info.model || "world").split(/[\\/]/).pop();
  $("model").textContent = `${name} · ${info.width}×${info.height} · ${info.num_actions} actions · ${info.device}`;
  showAspect(info.width, info.height);
  $("model").title = `${info.model || ""}\nprompt: ${info.prompt}`;
  loadSettings();
  buildActions();
  buildBindings();
  connect();
  setInterval(updateFps, 250);
  document.addEventListener("keydown", onKeyDown);
  document.addEventListener("keyup", onKeyUp);
  window.addEventListener("blur", () => { input.held = null; input.heldKey = null; });
  $("reset").addEventListener("click", (e) => { reset(); e.currentTarget.blur(); });
  $("save").addEventListener("click", (e) => { saveVideo(); e.currentTarget.blur(); });
  $("clear-bindings").addEventListener("click", (e) => {
    bindings = {};
    localStorage.setItem(storageKey("bindings"), "{}");  // stays cleared, named controls included
    buildBindings();
    showBoundKeys();
    e.currentTarget.blur();
  });
  $("repeat-fps").addEventListener("input", (e) => {
    input.repeatFps = Number(e.target.value);
    $("repeat-fps-value").textContent = input.repeatFps;
    localStorage.setItem(storageKey("repeat-fps"), String(input.repeatFps));
  });
  $("repeat-fps").addEventListener("change", (e) => e.target.blur());
}

main().catch((err) => say(`cannot load /info: ${err.message}`, true));
