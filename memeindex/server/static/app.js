// memeindex live page: camera frames -> /api/search a few times a second -> top 3 memes, smoothed.
// Plain script, no build step. Camera access (getUserMedia) needs localhost or HTTPS.
"use strict";

const INTERVAL_MS = 300;    // at most ~3 frames a second, and never more than one request in flight
const ASK_K = 8;            // candidates per frame; the page shows the SHOW best after smoothing
const SHOW = 3;
const ALPHA = 0.35;         // weight of the newest frame in the running score
const HYSTERESIS = 0.015;   // a shown meme keeps its place unless a newcomer beats it by this much
const MAX_SIDE = 640;       // camera frames are shrunk to this before upload
const UPLOAD_SIDE = 1280;   // and uploaded photos to this

const $ = (id) => document.getElementById(id);
const video = $("video"), still = $("still"), overlay = $("overlay"), statusLine = $("status");
const tiles = $("tiles"), empty = $("empty"), liveButton = $("live"), fileInput = $("file");

const state = { mode: "idle", busy: false, stream: null, scores: new Map(), shown: [], searches: 0 };

function setStatus(text, isError = false) {
  statusLine.textContent = text;
  statusLine.classList.toggle("error", isError);
}

function setMode(mode) {
  state.mode = mode;
  document.body.dataset.mode = mode;
  video.hidden = mode !== "camera";
  still.hidden = mode !== "file";
  liveButton.hidden = !(mode === "file" && state.stream);
}

// -- camera ------------------------------------------------------------------------------------------
async function startCamera() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    setStatus("No camera here: the browser allows it only on localhost or HTTPS. Upload a photo instead.", true);
    return;
  }
  try {
    state.stream = await navigator.mediaDevices.getUserMedia({
      video: { facingMode: "user", width: { ideal: 640 }, height: { ideal: 480 } }, audio: false });
  } catch (err) {
    setStatus(`Camera unavailable (${err.name || err}). Upload a photo or drop one here instead.`, true);
    return;
  }
  video.srcObject = state.stream;
  await video.play().catch(() => {});
  resetScores();
  setMode("camera");
  setStatus("Make a face!");
}

function grabFrame() {
  const w = video.videoWidth, h = video.videoHeight;
  if (!w || !h) return null;
  const scale = Math.min(1, MAX_SIDE / Math.max(w, h));
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(w * scale);
  canvas.height = Math.round(h * scale);
  canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
  return canvas;
}

async function tick() {
  const started = performance.now();
  if (state.mode === "camera" && !state.busy && !document.hidden && video.readyState >= 2) {
    const canvas = grabFrame();
    if (canvas) await search(canvas, ASK_K, true);
  }
  setTimeout(tick, Math.max(0, INTERVAL_MS - (performance.now() - started)));
}

// -- searching ---------------------------------------------------------------------------------------
function toBlob(canvas) {
  return new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.85));
}

// `canvas`: the picture searched (a camera frame, a drawn photo); `file`: a photo sent as it is instead (one this
// browser cannot draw, with no canvas to show it on; an animation, whose canvas shows its first frame scaled by
// `boxScale`, the factor the server's box is drawn at).
async function search(canvas, k, live, file = null, boxScale = 1) {
  state.busy = true;
  try {
    const form = new FormData();
    form.append("image", file || await toBlob(canvas), file ? file.name : "frame.jpg");
    form.append("k", String(k));
    const response = await fetch("/api/search", { method: "POST", body: form });
    const body = await response.json().catch(() => ({}));
    if (live && state.mode !== "camera") return;  // the user switched to a photo meanwhile
    if (!response.ok) {
      drawBox(null, canvas);
      if (live) decay();
      const noFace = response.status === 422;
      setStatus(noFace ? "No face in view: come closer, face the light." : (body.detail || `Error ${response.status}`),
                !noFace);
      return;
    }
    state.searches += 1;
    document.body.dataset.searches = String(state.searches);
    drawBox(body.query.box && body.query.box.map((v) => v * boxScale), canvas);
    if (live) {
      smooth(body.matches);
    } else {
      resetScores();
      render(body.matches.slice(0, SHOW).map((m) => ({ ...m, shown: m.score })));
    }
    setStatus(live ? `Matching live · ${Math.round(body.took_ms)} ms` : "Best matches for your photo:");
  } catch (err) {
    setStatus(`Cannot reach the server (${err.message || err}).`, true);
  } finally {
    state.busy = false;
  }
}

// Running score per meme: an exponential average of its calibrated score over frames (`shown`). A meme missing
// from a frame's candidates counts as that frame's worst candidate, so nothing jumps in or out on one frame.
function smooth(matches) {
  if (!matches.length) return;
  const floor = matches[matches.length - 1].score;
  const seen = new Set(), first = state.scores.size === 0;  // the first frame is taken as it is
  for (const m of matches) {
    const entry = state.scores.get(m.id);
    const prev = entry ? entry.shown : (first ? m.score : floor);
    state.scores.set(m.id, { ...m, shown: prev + ALPHA * (m.score - prev) });
    seen.add(m.id);
  }
  for (const [id, entry] of state.scores) {
    if (!seen.has(id)) entry.shown += ALPHA * (Math.min(floor, entry.shown) - entry.shown);
    if (entry.shown < floor - 0.3) state.scores.delete(id);
  }
  const bonus = (id) => (state.shown.includes(id) ? HYSTERESIS : 0);
  const ranked = [...state.scores.values()].sort((a, b) => (b.shown + bonus(b.id)) - (a.shown + bonus(a.id)));
  render(ranked.slice(0, SHOW));
}

function decay() {
  for (const entry of state.scores.values()) entry.shown *= 0.98;
}

function resetScores() {
  state.scores.clear();
  state.shown = [];
}

// -- drawing -----------------------------------------------------------------------------------------
function tile(m) {
  const li = document.createElement("li");
  li.className = "tile";
  li.dataset.id = m.id;
  li.innerHTML = '<a target="_blank" rel="noopener"><img alt="" loading="eager"></a>' +
    '<div><div class="name"></div><div class="score"></div><div class="distance"></div>' +
    '<div class="bar"><i></i></div><ul class="traits"></ul><div class="variants"></div></div>';
  li.querySelector("a").href = m.image_url;
  li.querySelector("img").src = `${m.thumb_url}${m.thumb_url.includes("?") ? "&" : "?"}size=256`;  // ?frame=N
  li.querySelector("img").alt = m.name;
  li.querySelector(".name").textContent = m.name;
  return li;
}

function render(list) {
  const byId = new Map([...tiles.children].map((li) => [li.dataset.id, li]));
  const keep = list.map((m) => {
    const li = byId.get(m.id) || tile(m);
    // The score is calibrated: the chance that people call the two expressions the same.
    const pct = Math.max(0, Math.min(100, Math.round(m.shown * 100)));
    li.querySelector(".score").textContent = `${pct}%`;
    li.querySelector(".distance").textContent = `distance ${m.distance.toFixed(3)}${m.weak ? " · weak match" : ""}`;
    li.querySelector(".bar i").style.width = `${pct}%`;
    const traits = li.querySelector(".traits");
    traits.replaceChildren(...(m.traits || []).map((t) => {
      const item = document.createElement("li");
      item.textContent = t.name;
      item.style.setProperty("--strength", String(t.strength));
      item.title = `both faces: ${t.name}, strength ${t.strength.toFixed(2)}`;
      return item;
    }));
    // `variants` lists the first few of the template's other files; `variants_total` counts them all.
    const variants = m.variants || [];
    const total = m.variants_total;  // the API's MatchOut: always there, never below variants.length
    li.querySelector(".variants").textContent = total
      ? `+${total} variant${total > 1 ? "s" : ""} of this meme` : "";
    li.querySelector(".variants").title = variants.map((v) => v.path).join("\n") +
      (total > variants.length ? `\nand ${total - variants.length} more` : "");
    li.classList.toggle("weak", Boolean(m.weak));
    li.title = `${m.path} · ${pct}% likely the same expression`;
    return li;
  });
  keep.forEach((li, i) => { if (tiles.children[i] !== li) tiles.insertBefore(li, tiles.children[i] || null); });
  while (tiles.children.length > keep.length) tiles.lastChild.remove();
  state.shown = list.map((m) => m.id);
  empty.hidden = list.length > 0;
}

function drawBox(box, source) {
  overlay.width = source ? source.width : 0;
  overlay.height = source ? source.height : 0;
  const ctx = overlay.getContext("2d");
  ctx.clearRect(0, 0, overlay.width, overlay.height);
  if (!box || !source) return;
  ctx.lineWidth = Math.max(2, source.width / 160);
  ctx.strokeStyle = "#ffcc33";
  ctx.strokeRect(box[0], box[1], box[2] - box[0], box[3] - box[1]);
}

// -- photos: upload and drag-and-drop ----------------------------------------------------------------
async function searchFile(file) {
  if (!file) return;
  if (file.type && !file.type.startsWith("image/")) { setStatus(`${file.name} is not an image.`, true); return; }
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
  } catch (err) {
    // A format this browser cannot draw (HEIC, in most): the server's decoder reads it, so it goes as it is,
    // without a preview; the server says so if it cannot read it either.
    still.removeAttribute("src");
    setMode("file");
    still.hidden = true;
    setStatus(`Searching ${file.name}…`);
    while (state.busy) await new Promise((r) => setTimeout(r, 50));
    await search(null, SHOW, false, file);
    return;
  }
  const scale = Math.min(1, UPLOAD_SIDE / Math.max(bitmap.width, bitmap.height));
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(bitmap.width * scale);
  canvas.height = Math.round(bitmap.height * scale);
  canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  still.src = canvas.toDataURL("image/jpeg", 0.9);
  setMode("file");
  setStatus("Searching…");
  while (state.busy) await new Promise((r) => setTimeout(r, 50));
  // An animation (GIF, animated WebP, APNG) goes as it is: its face may show only in a later frame, which the
  // server looks through as `memeindex query` does; the preview is its first frame.
  const animated = await isAnimation(file);
  await search(canvas, SHOW, false, animated ? file : null, animated ? scale : 1);
}

// Whether a file is an animation, by its bytes (an APNG is often named .png, and types say nothing of frames):
// every GIF; a WebP whose VP8X header sets the animation flag; a PNG with an acTL chunk before its first IDAT.
async function isAnimation(file) {
  const bytes = async (start, end) => new Uint8Array(await file.slice(start, end).arrayBuffer());
  const text = (b, from, to) => String.fromCharCode(...b.subarray(from, to));
  const head = await bytes(0, 32);
  if (text(head, 0, 6) === "GIF87a" || text(head, 0, 6) === "GIF89a") return true;
  if (text(head, 0, 4) === "RIFF" && text(head, 8, 12) === "WEBP") {
    return text(head, 12, 16) === "VP8X" && (head[20] & 0x02) !== 0;
  }
  if (text(head, 0, 8) !== "\x89PNG\r\n\x1a\n") return false;
  for (let at = 8; at + 8 <= file.size;) {  // chunks: 4-byte big-endian length, 4-byte type, data, 4-byte CRC
    const chunk = await bytes(at, at + 8);
    const type = text(chunk, 4, 8);
    if (type === "acTL") return true;
    if (type === "IDAT" || type === "IEND") return false;
    at += 12 + new DataView(chunk.buffer).getUint32(0);
  }
  return false;
}

fileInput.addEventListener("change", () => { searchFile(fileInput.files[0]); fileInput.value = ""; });
liveButton.addEventListener("click", () => { resetScores(); setMode("camera"); setStatus("Make a face!"); });
let dragDepth = 0;
window.addEventListener("dragenter", (e) => { e.preventDefault(); dragDepth += 1; document.body.classList.add("dragging"); });
window.addEventListener("dragleave", () => { dragDepth = Math.max(0, dragDepth - 1); if (!dragDepth) document.body.classList.remove("dragging"); });
window.addEventListener("dragover", (e) => e.preventDefault());
window.addEventListener("drop", (e) => {
  e.preventDefault();
  dragDepth = 0;
  document.body.classList.remove("dragging");
  searchFile(e.dataTransfer && e.dataTransfer.files[0]);
});

startCamera();
tick();
