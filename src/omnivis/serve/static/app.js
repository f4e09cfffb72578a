// The omnivis web page: pick a loaded model, send it an image (or generation settings), draw the answer.
//
// Plain functions over the DOM, no framework and no build step, so the page works offline from the
// package's files. Every API call goes through api(): it adds the key and turns an error answer into a
// thrown message, so a failure always ends as text in #error, never as a blank page.
"use strict";

const PALETTE = [  // fixed, so a class keeps its colour between runs; class 0 (background) is never painted
  [230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180], [70, 240, 240],
  [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [220, 190, 255], [170, 110, 40],
  [255, 225, 25], [128, 0, 0], [170, 255, 195], [128, 128, 0], [255, 215, 180], [0, 0, 128],
];
const IMAGE_TASKS = ["classify", "detect", "segment", "multitask", "face", "edit"];
const EXPLAINED_TASKS = ["classify", "detect", "segment", "multitask"];  // /api/explain takes these
const CANVAS_SIZE = 480;  // the longer side of the drawn result, whatever the image's size
const OVERLAY_ALPHA = 120;

// shown: the model whose prediction is on the page (what a heat map explains); run: bumped whenever
// the result is cleared, so an explanation that arrives after that is dropped
const state = { models: [], key: "", file: null, shown: null, run: 0 };
const $ = (id) => document.getElementById(id);

function colour(index, alpha = 1) {
  const [r, g, b] = PALETTE[((index - 1) % PALETTE.length + PALETTE.length) % PALETTE.length];
  return `rgba(${r}, ${g}, ${b}, ${alpha})`;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name === "style") Object.assign(node.style, value);
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

// --- talking to the server --------------------------------------------------------------------

class ApiFailure extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

/** fetch() with the API key, answering the parsed JSON or throwing the server's own error message. */
async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (state.key) headers["X-API-Key"] = state.key;
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch (err) {
    throw new ApiFailure(0, `the server cannot be reached (${err.message})`);
  }
  let body = null;
  try { body = await response.json(); } catch { body = null; }
  if (!response.ok) {
    const error = body && body.error;
    const message = (error && (error.message || (typeof error === "string" && error)))
      || `HTTP ${response.status} ${response.statusText}`.trim();
    throw new ApiFailure(response.status, message);
  }
  if (body === null) throw new ApiFailure(response.status, "the server's answer is not JSON");
  return body;
}

function showError(message) {
  $("error").textContent = message || "";
  $("error").hidden = !message;
}

/** An error answer: 401 asks for the key (a wrong or missing one), anything else is shown as is. */
function fail(err) {
  if (err.status === 401) askForKey();
  showError(err.message || String(err));
}

function askForKey() {
  $("key-row").hidden = false;
  $("api-key").focus();
}

// --- models -------------------------------------------------------------------------------------

async function loadModels() {
  try {
    state.models = (await api("/api/models")).models || [];
  } catch (err) {
    fail(err);
    return;
  }
  showError("");
  const picker = $("model");
  const previous = picker.value;
  picker.replaceChildren(...state.models.map((m) => el("option", { value: m.name }, `${m.name} (${m.task})`)));
  if (!state.models.length) picker.append(el("option", { value: "" }, "no models loaded"));
  if (state.models.some((m) => m.name === previous)) picker.value = previous;
  picker.disabled = !state.models.length;
  showModel();
}

function currentModel() {
  return state.models.find((m) => m.name === $("model").value) || null;
}

/** Shows the inputs the picked model takes: an image, or the generation settings. */
function showModel() {
  const model = currentModel();
  clearResult();
  $("run").disabled = !model;
  if (!model) return;
  const generating = model.task === "generate";
  $("image-inputs").hidden = generating;
  $("generate-inputs").hidden = !generating;
  $("run").textContent = generating ? "Generate" : "Run";
  $("model-info").textContent = describe(model);
  showError("");
  if (model.task === "face" && !model.gallery_people) showError("this face model has no gallery: start the server with --face-index NAME=INDEX");
  if (generating) fillGenerateInputs(model);
  const inpainting = model.task === "edit" && model.op === "inpaint";
  $("edit-inputs").hidden = model.task !== "edit";
  $("box").hidden = $("box-label").hidden = !inpainting;
  $("strength").hidden = $("strength-label").hidden = inpainting;
  $("style").hidden = $("style-label").hidden = !(model.task === "edit" && model.op === "style");
  $("explain-inputs").hidden = !EXPLAINED_TASKS.includes(model.task);
}

function describe(model) {
  const parts = [model.method, `${model.img_size} px`, model.channels === 1 ? "grayscale" : "RGB",
    model.backend && `${model.backend} backend`];
  if (model.task === "edit") return [`${model.op}${model.scale > 1 ? ` x${model.scale}` : ""}`, `tiles of ${model.tile} px`,
    model.op === "inpaint" ? "give the box to fill" : ""].filter(Boolean).join(" · ");
  const classes = model.task === "face" ? `${model.gallery_people} people enrolled`
    : model.task === "multitask" ? model.tasks && `tasks: ${model.tasks.join(", ")}`
    : model.classes && model.classes.length && `${model.classes.length} class${model.classes.length === 1 ? "" : "es"}`;
  return parts.concat(classes).filter(Boolean).join(" · ");
}

function fillGenerateInputs(model) {
  const picker = $("class");
  const options = [el("option", { value: "" }, "every class in turn")]
    .concat((model.classes || []).map((c) => el("option", { value: c }, c)));
  picker.replaceChildren(...options);
  picker.hidden = $("class-label").hidden = !model.conditional || model.text;
  // a text-conditioned generator draws what the prompt says; its training captions are the suggestions
  $("prompt").hidden = $("prompt-label").hidden = !model.text;
  $("prompt-examples").replaceChildren(...(model.example_prompts || []).map((p) => el("option", { value: p })));
  if (model.text && !$("prompt").value) $("prompt").value = (model.example_prompts || [""])[0];
  $("steps").value = model.default_steps || "";
}

// --- inputs -------------------------------------------------------------------------------------

function setFile(file) {
  state.file = file || null;
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.hidden = !file;
  preview.removeAttribute("src");
  if (file) preview.src = URL.createObjectURL(file);
  $("drop-text").textContent = file ? `${file.name} (${Math.ceil(file.size / 1024)} KB) · drop or click for another`
    : "Drop an image here, or click to choose a file";
  clearResult();
}

function wireDropZone() {
  const zone = $("drop");
  // a file dropped beside the zone would make the browser leave the page to show it
  for (const kind of ["dragover", "drop"]) window.addEventListener(kind, (e) => e.preventDefault());
  zone.addEventListener("dragover", () => zone.classList.add("over"));
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    zone.classList.remove("over");
    const file = e.dataTransfer && e.dataTransfer.files[0];
    if (file) setFile(file);
  });
  $("file").addEventListener("change", () => setFile($("file").files[0]));
  $("preview").addEventListener("error", () => { $("preview").hidden = true; });
}

/** The generation settings as the JSON body; an empty field is left out so the server's default holds. */
function generateBody() {
  const body = {};
  for (const name of ["n", "steps", "seed"]) {
    const text = $(name).value.trim();
    if (text !== "") body[name] = Number(text);
  }
  if (!$("class").hidden && $("class").value) body.class = $("class").value;
  if (!$("prompt").hidden) body.prompt = $("prompt").value;
  return body;
}

// --- running ------------------------------------------------------------------------------------

async function run() {
  const model = currentModel();
  if (!model) return;
  if (IMAGE_TASKS.includes(model.task) && !state.file) {
    showError("choose an image first (or drop one on the box)");
    return;
  }
  if (model.task === "generate" && model.text && !$("prompt").value.trim()) {
    showError("say what to draw: type a prompt");
    return;
  }
  const button = $("run");
  const label = button.textContent;
  button.disabled = true;
  button.textContent = model.task === "generate" ? "Generating…" : "Running…";
  showError("");
  clearResult();
  try {
    const answer = model.task === "generate" ? await generate(model) : await predict(model);
    showLatency(answer.latency_ms);
    await draw(model, answer);
    if (EXPLAINED_TASKS.includes(model.task)) {
      state.shown = model;
      if ($("explain").checked) {
        button.textContent = "Explaining…";
        await showExplanation();
      }
    }
  } catch (err) {
    fail(err);
  } finally {
    button.disabled = false;
    button.textContent = label;
  }
}

function predict(model) {
  const form = new FormData();
  form.append("image", state.file, state.file.name);
  form.append("top_k", "5");
  if (model.task === "face") {
    return api(`/api/face/identify/${encodeURIComponent(model.name)}`, { method: "POST", body: form })
      .then(faceAnswer);
  }
  if (model.task === "edit") return edit(model);
  if (model.task === "segment" || model.task === "multitask") form.append("mask", "true");
  return api(`/api/${model.task}/${encodeURIComponent(model.name)}`, { method: "POST", body: form });
}

function edit(model) {
  const form = new FormData();
  form.append("image", state.file, state.file.name);
  if (model.op === "inpaint" && $("box").value.trim()) form.append("box", $("box").value.trim());
  else form.append("strength", $("strength").value || "1");
  if (model.op === "style" && $("style").files[0]) form.append("style", $("style").files[0], $("style").files[0].name);
  return api(`/api/edit/${encodeURIComponent(model.name)}`, { method: "POST", body: form });
}

function generate(model) {
  return api(`/api/generate/${encodeURIComponent(model.name)}`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(generateBody()),
  });
}

/** A face answer in the page's terms: the faces as labelled boxes (when a detector found them) and the
 * first face's top-k people as bars, with the threshold that decided "unknown". */
function faceAnswer(answer) {
  const faces = answer.faces || [];
  const first = faces[0];
  const boxes = faces.filter((f) => f.box).map((f) => ({ label: f.identity, score: Math.max(0, f.score), box: f.box }));
  return {
    ...answer,
    summary: faces.length ? `${answer.summary} · threshold ${Number(first.threshold).toFixed(3)} (FAR ${first.far})`
      : answer.summary,
    top_k: first ? first.top_k.map((c) => ({ label: c.identity, score: Math.max(0, c.score) })) : undefined,
    detections: boxes.length ? boxes : undefined,
  };
}

function showLatency(latency) {
  if (!latency) return;
  const ms = (v) => `${Number(v).toFixed(1)} ms`;
  $("latency").textContent = `${ms(latency.total)} total · ${ms(latency.queue)} queue · ${ms(latency.model)} model`;
}

function clearResult() {
  $("result").replaceChildren();
  $("latency").textContent = "";
  state.shown = null;
  state.run += 1;
}

// --- heat maps ----------------------------------------------------------------------------------

function explainRequest(model) {
  const form = new FormData();
  form.append("image", state.file, state.file.name);
  form.append("method", $("explain-method").value);
  form.append("top_k", "3");
  return api(`/api/explain/${encodeURIComponent(model.name)}`, { method: "POST", body: form });
}

/** Asks /api/explain about the image whose prediction is shown, and puts its overlays beside it. */
async function showExplanation() {
  const model = state.shown;
  const previous = $("heatmaps");
  if (previous) previous.remove();  // unticked, or another method: the old maps go
  if (!model || !$("explain").checked || !state.file) return;
  const run = state.run;
  const box = el("div", { class: "heatmaps", id: "heatmaps" }, el("h3", {}, "Heat map"),
    el("p", { class: "muted small" }, `computing ${$("explain-method").value}…`));
  $("result").append(box);
  try {
    const answer = await explainRequest(model);
    if (run !== state.run) return;  // another image or model is shown by now
    box.replaceChildren(...heatmapFigures(answer));
  } catch (err) {
    if (run !== state.run) return;
    box.remove();
    fail(err);
  }
}

/** The answer's maps: each overlay with its target and score; every text goes in as text, never as HTML. */
function heatmapFigures(answer) {
  const title = el("h3", {}, `Heat map · ${answer.method} at ${answer.layer}`);
  const maps = answer.maps || [];
  if (!maps.length) return [title, el("p", { class: "muted small" }, "nothing to explain: the model found no objects")];
  const figures = el("div", { class: "grid" });
  for (const map of maps) {
    const [w, h] = map.overlay_size || [0, 0];
    const scale = Math.max(1, Math.floor(192 / Math.max(w, h, 1)));  // small images: whole-pixel enlargement
    const img = el("img", { class: "heatmap", src: `data:image/png;base64,${map.overlay_png}`,
      alt: `heat map for ${map.target}` });
    img.style.width = `${Math.min(w * scale, 280)}px`;
    const what = map.kind === "box" ? "box" : map.kind === "pixels" ? "pixels" : "class";
    figures.append(el("figure", { class: "heatmap-figure" }, img,
      el("figcaption", {}, el("strong", {}, String(map.target)),
        ` · ${what} score ${Number(map.score).toFixed(3)}`)));
  }
  return [title, figures];
}

// --- drawing the answers --------------------------------------------------------------------------

async function draw(model, answer) {
  const result = $("result");
  if (model.task === "generate") {
    result.append(generatedGrid(model, answer.images || []));
    return;
  }
  if (model.task === "edit") {
    result.append(beforeAfter(answer));
    return;
  }
  const side = el("div", { class: "side" });
  const topK = answer.top_k || (answer.classification && answer.classification.top_k);
  if (answer.summary) side.append(el("p", { class: "summary" }, answer.summary));
  if (topK) side.append(el("h3", {}, `Top ${topK.length}`), bars(topK));
  if (answer.class_fractions) side.append(legend(answer.class_fractions, model.seg_classes || model.classes));
  if (answer.detections) side.append(detectionList(answer.detections, model.det_classes || model.classes));
  result.append(el("div", { class: "picture" }, await resultCanvas(model, answer)), side);
}

/** The uploaded photo and the edited one side by side at the same displayed width, and a download link. */
function beforeAfter(answer) {
  const src = `data:image/png;base64,${answer.png_base64}`;
  const [w, h] = answer.size;
  const before = el("figure", {}, el("img", { src: $("preview").src, alt: "input", class: "edit-image" }),
    el("figcaption", {}, "input"));
  const after = el("figure", {}, el("img", { src, alt: "edited", class: "edit-image" }),
    el("figcaption", {}, `${answer.op}: ${w} x ${h} px · `, el("a", { href: src, download: "edited.png" }, "download")));
  return el("div", { class: "before-after" }, before, after);
}

/** Top-k scores as horizontal bars, best first. */
function bars(topK) {
  const list = el("div", { class: "bars" });
  for (const { label, score } of topK) {
    const percent = `${(100 * score).toFixed(1)}%`;
    list.append(el("div", { class: "bar" },
      el("span", { class: "label", title: label }, label),
      el("span", { class: "track" }, el("span", { class: "fill", style: { width: `${Math.max(0, Math.min(100, 100 * score))}%` } })),
      el("span", { class: "value" }, percent)));
  }
  return list;
}

/** Each class's share of the mask, with its overlay colour; classes absent from the image are left out. */
function legend(fractions, classes) {
  const box = el("div", { class: "legend" }, el("h3", {}, "Mask"));
  const entries = Object.entries(fractions).map(([name, fraction], i) => [classIndex(name, classes, i), name, fraction]);
  entries.sort((a, b) => a[0] - b[0]);
  for (const [index, name, fraction] of entries) {
    if (fraction <= 0) continue;
    const swatch = el("span", { class: index === 0 ? "swatch clear" : "swatch", style: index === 0 ? {} : { background: colour(index) } });
    box.append(el("div", { class: "legend-row" }, swatch, el("span", {}, name),
      el("span", { class: "value" }, `${(100 * fraction).toFixed(1)}%`)));
  }
  return box;
}

function detectionList(detections, classes) {
  const box = el("div", { class: "legend" }, el("h3", {}, `${detections.length} detection${detections.length === 1 ? "" : "s"}`));
  detections.forEach((d, i) => {
    const swatch = el("span", { class: "swatch", style: { background: colour(classIndex(d.label, classes, i) + 1) } });
    box.append(el("div", { class: "legend-row" }, swatch, el("span", {}, d.label),
      el("span", { class: "value" }, `${(100 * d.score).toFixed(1)}%`)));
  });
  return box;
}

/** A class's index in the model's list; the mask's pixel values and the colours both use it. */
function classIndex(name, classes, fallback) {
  const index = (classes || []).indexOf(name);
  return index >= 0 ? index : fallback;
}

function generatedGrid(model, images) {
  // small images (8 or 28 px) are scaled up by a whole factor so every pixel stays a crisp square
  const scale = Math.max(1, Math.floor(128 / (model.img_size || 128)));
  const grid = el("div", { class: "grid" });
  images.forEach((png, i) => {
    const img = el("img", { class: "generated", src: `data:image/png;base64,${png}`, alt: `generated image ${i + 1}` });
    if (model.img_size) img.style.width = `${model.img_size * scale}px`;
    grid.append(img);
  });
  return grid;
}

/** The uploaded image with what the answer says about it: boxes, a mask overlay, or the image alone. */
async function resultCanvas(model, answer) {
  const url = URL.createObjectURL(state.file);
  const image = await loadImage(url).catch(() => null);
  URL.revokeObjectURL(url);
  const [width, height] = image ? [image.naturalWidth, image.naturalHeight]
    : answer.size || extent(answer.detections || []);
  const scale = CANVAS_SIZE / Math.max(width, height, 1);
  const canvas = el("canvas", { id: "canvas" });
  canvas.width = Math.max(1, Math.round(width * scale));
  canvas.height = Math.max(1, Math.round(height * scale));
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = scale < 1;  // upscaled small images keep their pixels
  ctx.fillStyle = "#ddd";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  if (image) ctx.drawImage(image, 0, 0, canvas.width, canvas.height);
  if (answer.mask_png) await drawMask(ctx, answer.mask_png, canvas.width, canvas.height);
  if (answer.detections) drawBoxes(ctx, answer.detections, scale, model.det_classes || model.classes);
  return canvas;
}

function extent(detections) {  // when the browser cannot show the image, the boxes still need room
  const w = Math.max(1, ...detections.map((d) => d.box[2]));
  const h = Math.max(1, ...detections.map((d) => d.box[3]));
  return [w, h];
}

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("the browser cannot decode this image"));
    img.src = src;
  });
}

/** The mask PNG's pixel value is the class index: paint each class in its colour, background clear. */
async function drawMask(ctx, png, width, height) {
  const mask = await loadImage(`data:image/png;base64,${png}`);
  const layer = document.createElement("canvas");
  layer.width = mask.naturalWidth;
  layer.height = mask.naturalHeight;
  const lctx = layer.getContext("2d");
  lctx.drawImage(mask, 0, 0);
  const pixels = lctx.getImageData(0, 0, layer.width, layer.height);
  const data = pixels.data;
  for (let i = 0; i < data.length; i += 4) {
    const index = data[i];
    if (index === 0) {
      data[i + 3] = 0;
      continue;
    }
    const [r, g, b] = PALETTE[(index - 1) % PALETTE.length];
    data[i] = r; data[i + 1] = g; data[i + 2] = b; data[i + 3] = OVERLAY_ALPHA;
  }
  lctx.putImageData(pixels, 0, 0);
  const smooth = ctx.imageSmoothingEnabled;
  ctx.imageSmoothingEnabled = false;  // class borders stay sharp
  ctx.drawImage(layer, 0, 0, width, height);
  ctx.imageSmoothingEnabled = smooth;
}

function drawBoxes(ctx, detections, scale, classes) {
  ctx.lineWidth = 2;
  ctx.font = "13px system-ui, sans-serif";
  ctx.textBaseline = "top";
  detections.forEach((d, i) => {
    const [x1, y1, x2, y2] = d.box.map((v) => v * scale);
    const tint = colour(classIndex(d.label, classes, i) + 1);
    ctx.strokeStyle = tint;
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const caption = `${d.label} ${d.score.toFixed(2)}`;
    const w = ctx.measureText(caption).width + 8;
    const y = y1 >= 18 ? y1 - 18 : y1;  // above the box, or inside it at the top edge
    ctx.fillStyle = tint;
    ctx.fillRect(x1 - 1, y, w, 18);
    ctx.fillStyle = "#fff";
    ctx.fillText(caption, x1 + 3, y + 2);
  });
}

// --- start --------------------------------------------------------------------------------------

function useKey() {
  state.key = $("api-key").value.trim();
  showError("");
  loadModels();
}

document.addEventListener("DOMContentLoaded", () => {
  wireDropZone();
  $("model").addEventListener("change", showModel);
  $("run").addEventListener("click", run);
  $("explain").addEventListener("change", showExplanation);
  $("explain-method").addEventListener("change", showExplanation);
  $("key-use").addEventListener("click", useKey);
  $("api-key").addEventListener("keydown", (e) => { if (e.key === "Enter") useKey(); });
  loadModels();
});
