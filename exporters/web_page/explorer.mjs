// The latent explorer: builds one control per code from model.json and runs generator.onnx in onnxruntime-web.
import * as ort from "./ort.wasm.min.mjs";

// What a test (or the console) can read: the latent of the image on screen, its raw output, timings.
const infogan = {
  ready: false, busy: false, error: null, updates: 0, timings: [], mode: "single",
  latent: null, output: null, metadata: null, loadMs: null,
};
window.infogan = infogan;

const $ = (id) => document.getElementById(id);
let meta, session;
const values = {};            // code key -> number (choice index) or number[] (one value per dimension)

// ---- noise: a counter-based generator, so a seed always gives the same z on any browser ----------------
function mix32(x) {
  x = Math.imul(x ^ (x >>> 16), 0x7feb352d);
  x = Math.imul(x ^ (x >>> 15), 0x846ca68b);
  return (x ^ (x >>> 16)) >>> 0;
}

function uniform(seed, i) {
  return (mix32(mix32(seed >>> 0) ^ Math.imul(i + 1, 0x9e3779b9)) + 0.5) / 4294967296;
}

function noise(seed) {
  const { dim, distribution } = meta.noise;
  const z = new Float32Array(dim);
  for (let i = 0; i < dim; i++) {
    if (distribution === "normal") {  // Box-Muller on two independent uniforms
      const u = uniform(seed, 2 * i), v = uniform(seed, 2 * i + 1);
      z[i] = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
    } else {
      z[i] = 2 * uniform(seed, i) - 1;
    }
  }
  return z;
}

function currentSeed() {
  const seed = Number.parseInt($("seed").value, 10);
  return Number.isFinite(seed) && seed >= 0 ? seed % 4294967296 : 0;
}

// ---- latents ---------------------------------------------------------------------------------------------
function latent(z, codeValues) {
  const x = new Float32Array(meta.model.latent_dim);
  x.set(z, meta.noise.offset);
  for (const code of meta.codes) {
    const v = codeValues[code.key];
    x.set(code.kind === "choice" ? code.encodings[v] : v, code.offset);
  }
  return x;
}

function withValue(codeValues, key, dim, value) {
  const copy = { ...codeValues };
  copy[key] = dim === null ? value : copy[key].map((old, d) => (d === dim ? value : old));
  return copy;
}

// Rows x columns of latents for a traversal, the way the training pictures lay them out: a categorical code
// gets a row per class and a column per noise; any other code sweeps one dimension across the columns, with
// a row per class of the first categorical code (or per noise when there is none).
function traversalLatents(target) {
  const code = meta.codes.find((c) => c.key === target.key);
  const columns = meta.grid.columns;
  const seed = currentSeed();
  const noises = Array.from({ length: columns }, (_, i) => noise((seed + i) % 4294967296));
  const out = [];
  if (code.kind === "choice") {
    code.labels.forEach((_, row) => {
      for (let col = 0; col < columns; col++) out.push(latent(noises[col], withValue(values, code.key, null, row)));
    });
    return { latents: out, rows: code.labels.length, columns, otherAxis: `seeds ${seed} to ${seed + columns - 1}` };
  }
  const sweep = code.traversal;
  const rowCode = meta.codes.find((c) => c.kind === "choice" && c.key !== code.key);
  const rows = rowCode ? rowCode.labels.length : columns;
  for (let row = 0; row < rows; row++) {
    const base = rowCode ? withValue(values, rowCode.key, null, row) : values;
    for (const value of sweep) {
      out.push(latent(rowCode ? noises[0] : noises[row], withValue(base, code.key, target.dim, value)));
    }
  }
  const otherAxis = rowCode ? rowCode.key : `seeds ${seed} to ${seed + rows - 1}`;
  return { latents: out, rows, columns: sweep.length, otherAxis };
}

// ---- drawing ---------------------------------------------------------------------------------------------
function toByte(v) {
  const [lo, hi] = meta.model.value_range;
  return Math.min(255, Math.max(0, Math.round(((v - lo) / (hi - lo)) * 255)));
}

// Image n of a [N, C, H, W] batch into RGBA pixels at (x0, y0) of an ImageData.
function paint(data, n, image, x0, y0) {
  const [c, h, w] = meta.model.image_shape;
  const plane = h * w;
  const base = n * c * plane;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const p = y * w + x;
      const o = ((y0 + y) * image.width + (x0 + x)) * 4;
      const r = toByte(data[base + p]);
      image.data[o] = r;
      image.data[o + 1] = c === 3 ? toByte(data[base + plane + p]) : r;
      image.data[o + 2] = c === 3 ? toByte(data[base + 2 * plane + p]) : r;
      image.data[o + 3] = 255;
    }
  }
}

async function generate(latents) {
  const dim = meta.model.latent_dim;
  const batch = new Float32Array(latents.length * dim);
  latents.forEach((x, i) => batch.set(x, i * dim));
  const feeds = { [meta.model.input]: new ort.Tensor("float32", batch, [latents.length, dim]) };
  const result = await session.run(feeds);
  return result[meta.model.output].data;
}

async function renderSingle() {
  const x = latent(noise(currentSeed()), values);
  const data = await generate([x]);
  const canvas = $("image");
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(canvas.width, canvas.height);
  paint(data, 0, image, 0, 0);
  ctx.putImageData(image, 0, 0);
  infogan.latent = Array.from(x);
  infogan.output = Array.from(data);
  $("caption").textContent = meta.codes.map((c) => `${c.key} = ${describe(c, values[c.key])}`).join(", ")
    + `; seed ${currentSeed()}`;
}

async function renderGrid() {
  const [target] = traversals().filter((t) => t.id === $("traverse").value);
  const { latents, rows, columns, otherAxis } = traversalLatents(target);
  const data = await generate(latents);
  const [, h, w] = meta.model.image_shape;
  const canvas = $("grid");
  canvas.width = columns * (w + 1) + 1;
  canvas.height = rows * (h + 1) + 1;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(canvas.width, canvas.height);
  for (let i = 0; i < image.data.length; i += 4) image.data.set([128, 128, 128, 255], i);  // the pictures' grey padding
  latents.forEach((_, n) => paint(data, n, image, 1 + (n % columns) * (w + 1), 1 + Math.floor(n / columns) * (h + 1)));
  ctx.putImageData(image, 0, 0);
  infogan.latent = latents.map((x) => Array.from(x));
  infogan.output = null;
  const code = meta.codes.find((c) => c.key === target.key);
  $("caption").textContent = code.kind === "choice"
    ? `rows: ${code.key} = ${code.labels.join(", ")}; columns: ${otherAxis}`
    : `columns: ${target.label} from ${fmt(code.traversal[0])} to ${fmt(code.traversal.at(-1))}; rows: ${otherAxis}`;
}

// One update at a time; moves made while one runs are folded into a single next update.
let queued = false;
async function update() {
  if (infogan.busy) {
    queued = true;
    return;
  }
  infogan.busy = true;
  try {
    do {
      queued = false;
      const start = performance.now();
      await (infogan.mode === "grid" ? renderGrid() : renderSingle());
      infogan.timings.push(performance.now() - start);
      infogan.updates += 1;
    } while (queued);
  } catch (err) {
    fail(err);
  } finally {
    infogan.busy = false;
  }
}

// ---- controls --------------------------------------------------------------------------------------------
const fmt = (v) => (Math.abs(v) < 1e-9 ? "0" : Number(v).toFixed(2));

function describe(code, v) {
  if (code.kind === "choice") return code.labels[v];
  return v.length === 1 ? fmt(v[0]) : `[${v.map(fmt).join(", ")}]`;
}

function traversals() {
  const list = [];
  for (const code of meta.codes) {
    if (code.kind === "choice") list.push({ id: code.key, key: code.key, dim: null, label: code.key });
    else for (let d = 0; d < code.width; d++) {
      const label = code.width === 1 ? code.key : `${code.key}[${d}]`;
      list.push({ id: label, key: code.key, dim: d, label });
    }
  }
  return list;
}

function element(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  Object.assign(el, props);
  el.append(...children);
  return el;
}

function boundText(code) {
  const nats = (v) => (Math.abs(v) < 0.005 ? 0 : v).toFixed(2);
  const parts = [`H(c) = ${nats(code.entropy)}`];
  if (code.bound !== null) parts.unshift(`MI bound ${nats(code.bound)}`);
  if (code.bound_fitted !== null && Math.abs(code.bound_fitted - code.bound) > 1e-3) {
    parts.splice(1, 0, `fitted ${nats(code.bound_fitted)}`);
  }
  return `${parts.join(", ")} nats`;
}

function buildCode(code) {
  const box = element("fieldset", { className: "code", id: `code-${code.key}` });
  box.append(element("legend", {}, element("strong", { textContent: code.key }), ` ${code.description}`));
  box.append(element("p", { className: "note bound", textContent: boundText(code) }));
  if (code.kind === "choice") {
    values[code.key] = code.default;
    const group = element("div", { className: "choices", role: "radiogroup" });
    group.setAttribute("aria-label", code.key);
    code.labels.forEach((label, i) => {
      const input = element("input", { type: "radio", name: code.key, value: String(i), checked: i === code.default });
      input.addEventListener("change", () => { values[code.key] = i; update(); });
      // A learned prior: each category's share of the generator's draws, on its button.
      const text = code.prior ? `${label} · ${(100 * code.prior[i]).toFixed(0)}%` : label;
      const choice = element("label", {}, input, element("span", { textContent: text }));
      if (code.prior) choice.title = `prior probability ${code.prior[i].toFixed(3)}`;
      group.append(choice);
    });
    box.append(group);
  } else if (code.kind === "slider") {
    values[code.key] = [...code.default];
    for (let d = 0; d < code.width; d++) {
      const name = code.width === 1 ? code.key : `${code.key}[${d}]`;
      const shown = element("output", { textContent: fmt(code.default[d]) });
      const input = element("input", {
        type: "range", min: code.min, max: code.max, step: code.step, value: code.default[d], name,
      });
      input.setAttribute("aria-label", name);
      input.addEventListener("input", () => {
        values[code.key][d] = Number(input.value);
        shown.textContent = fmt(input.value);
        update();
      });
      box.append(element("label", { className: "slider" }, element("span", { textContent: name }), input, shown));
    }
  } else {  // one choice among a few values per dimension (binary codes)
    values[code.key] = [...code.default];
    for (let d = 0; d < code.width; d++) {
      const name = code.width === 1 ? code.key : `${code.key}[${d}]`;
      const select = element("select", { name });
      select.setAttribute("aria-label", name);
      for (const v of code.values) {
        select.append(element("option", { value: String(v), textContent: fmt(v), selected: v === code.default[d] }));
      }
      select.addEventListener("change", () => { values[code.key][d] = Number(select.value); update(); });
      box.append(element("label", { className: "slider" }, element("span", { textContent: name }), select));
    }
  }
  return box;
}

function buildPage() {
  const ckpt = meta.checkpoint;
  $("about").textContent = `${ckpt.file}: codes ${ckpt.codes}, ${meta.noise.dim} noise dims, trained ${ckpt.step} `
    + `iterations on ${ckpt.dataset}. Pick a category, move a slider: the image is generated in your browser.`;
  const prior = meta.noise.distribution === "normal" ? "N(0, 1)" : "U(-1, 1)";
  $("noise-note").textContent = `${meta.noise.dim} values, ${prior}, from the seed`;
  $("codes").replaceChildren(...meta.codes.map(buildCode));
  const [, h, w] = meta.model.image_shape;
  $("image").width = w;
  $("image").height = h;
  $("traverse").replaceChildren(...traversals().map((t) => element("option", { value: t.id, textContent: t.label })));
  $("footer").textContent = `MI bounds in nats on ${meta.bounds.samples} samples (fitted: Q's unlearned variance fitted `
    + `to its error; H(c) is the ceiling). Runs on onnxruntime-web ${meta.runtime.version} (WebAssembly, one thread); `
    + `checkpoint sha256 ${ckpt.sha256.slice(0, 12)}.`;

  $("seed").addEventListener("input", update);
  $("new-noise").addEventListener("click", () => {
    $("seed").value = String(Math.floor(Math.random() * 4294967296));
    update();
  });
  for (const radio of document.querySelectorAll("input[name=mode]")) {
    radio.addEventListener("change", () => {
      infogan.mode = radio.value;
      $("traverse").disabled = radio.value !== "grid";
      $("image").hidden = radio.value === "grid";
      $("grid").hidden = radio.value !== "grid";
      update();
    });
  }
  $("traverse").addEventListener("change", update);
}

function fail(err) {
  infogan.error = String(err && err.message ? err.message : err);
  $("status").textContent = `error: ${infogan.error}`;
  console.error(err);
}

async function main() {
  const response = await fetch("model.json");
  if (!response.ok) throw new Error(`model.json: HTTP ${response.status}`);
  meta = await response.json();
  infogan.metadata = meta;
  ort.env.wasm.numThreads = 1;                                  // no SharedArrayBuffer: no cross-origin isolation needed
  ort.env.wasm.wasmPaths = new URL("./", import.meta.url).href;  // the runtime's files sit beside this script
  $("status").textContent = "starting the WebAssembly runtime\u2026";
  const start = performance.now();
  session = await ort.InferenceSession.create(meta.model.file, { executionProviders: ["wasm"] });
  infogan.loadMs = performance.now() - start;
  buildPage();
  $("status").textContent = "";
  await update();
  infogan.ready = true;
}

main().catch(fail);
