"""The HTML page of the web app: inline CSS and page script; the 3-D view imports ``static/viewer.js`` (which
imports the vendored three.js subset). Nothing is loaded from another host: the page works offline.
"""

INDEX_HTML = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>depthlab</title>
<link rel="icon" href="data:,">
<style>
  :root { font-family: system-ui, sans-serif; color: #222; background: #fafafa; }
  body { max-width: 1200px; margin: 1.2rem auto; padding: 0 .8rem; }
  h1 { font-size: 1.4rem; margin: 0 0 .2rem 0; }
  h2 { font-size: 1rem; margin: 0 0 .4rem 0; }
  .muted { color: #666; font-size: .9rem; }
  form { display: flex; flex-wrap: wrap; gap: .6rem; align-items: center; margin: .8rem 0; padding: .7rem;
         background: #fff; border: 1px solid #ddd; border-radius: 6px; }
  #drop { border: 2px dashed #aaa; border-radius: 6px; padding: .5rem .9rem; cursor: pointer; }
  #drop.over { border-color: #2a6; background: #efe; }
  button, select { padding: .35rem .7rem; border-radius: 4px; border: 1px solid #888; background: #fff; font: inherit; }
  button { cursor: pointer; }
  button.primary { background: #246; color: #fff; border-color: #246; }
  button:disabled { opacity: .5; cursor: default; }
  #status { min-height: 1.5rem; display: flex; align-items: center; gap: .5rem; }
  #status.error { color: #b00; font-weight: 600; }
  .spinner { width: 1rem; height: 1rem; border: 3px solid #ccd; border-top-color: #246; border-radius: 50%;
             animation: spin .8s linear infinite; display: none; }
  .busy .spinner { display: inline-block; }
  @keyframes spin { to { transform: rotate(360deg); } }
  #warnings { background: #fff6d6; border: 1px solid #e0c060; border-radius: 6px; padding: .4rem .7rem; margin: .4rem 0; }
  .panels { display: grid; grid-template-columns: 1fr 1fr; gap: .8rem; align-items: start; }
  @media (max-width: 760px) { .panels { grid-template-columns: 1fr; } }
  .panel { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: .5rem; min-width: 0; }
  #compare { position: relative; cursor: crosshair; user-select: none; line-height: 0; touch-action: pan-y; }
  #compare img { width: 100%; display: block; }
  #depth { position: absolute; inset: 0; height: 100%; clip-path: inset(0 0 0 50%); }
  #divider { position: absolute; top: 0; bottom: 0; left: 50%; width: 2px; background: #fff; box-shadow: 0 0 3px #000;
             pointer-events: none; }
  .tag { position: absolute; top: .3rem; background: rgba(0,0,0,.55); color: #fff; font-size: .75rem; line-height: 1;
         padding: .2rem .35rem; border-radius: 3px; pointer-events: none; }
  #split { width: 100%; margin: .4rem 0 0 0; }
  #readout { font-family: ui-monospace, monospace; font-size: .85rem; min-height: 1.2rem; }
  #colorbar { margin-top: .4rem; }
  #bar { width: 100%; height: 14px; display: block; image-rendering: pixelated; border: 1px solid #999; }
  .ticks { display: flex; justify-content: space-between; font-size: .8rem; }
  #cloud { width: 100%; height: 340px; display: block; background: #111; border-radius: 4px; touch-action: none; }
  table { border-collapse: collapse; font-size: .85rem; margin: .6rem 0; }
  td { padding: .15rem .8rem .15rem 0; vertical-align: top; }
  [hidden] { display: none !important; }
</style>
</head>
<body>
<h1>depthlab</h1>
<div class="muted" id="model">loading model information&hellip;</div>
<form id="form" onsubmit="return false">
  <label id="drop" for="file">Choose or drop an image&hellip; <input id="file" type="file" accept="image/*" hidden></label>
  <span id="fname" class="muted"></span>
  <span><select id="sample" aria-label="bundled example image"></select>
        <button id="example" type="button">Example</button></span>
  <label>Colormap <select id="cmap"></select></label>
  <button class="primary" id="go" type="button" disabled>Predict</button>
  <button id="dl-npy" type="button" disabled title="float32 array in the model's unit">.npy</button>
  <button id="dl-png16" type="button" disabled title="16-bit PNG (metric: millimetres)">16-bit PNG</button>
  <button id="dl-ply" type="button" disabled title="coloured point cloud (full resolution)">.ply</button>
</form>
<div id="status" role="status" aria-live="polite"><span class="spinner"></span><span id="msg"></span></div>
<div id="warnings" hidden></div>
<div id="result" class="panels" hidden>
  <section class="panel">
    <h2>RGB | depth <span class="muted">(drag the slider or the image)</span></h2>
    <div id="compare">
      <img id="rgb" alt="input image">
      <img id="depth" alt="colourised depth">
      <div id="divider"></div>
      <span class="tag" style="left:.3rem">RGB</span><span class="tag" style="right:.3rem">depth</span>
    </div>
    <input id="split" type="range" min="0" max="100" value="50" aria-label="before/after split">
    <div id="readout" class="muted">hover the image for the depth under the cursor</div>
    <div id="colorbar">
      <img id="bar" alt="colour scale">
      <div class="ticks"><span id="tick-lo"></span><span id="tick-mid"></span><span id="tick-hi"></span></div>
      <div class="muted" id="barcap"></div>
    </div>
    <table id="stats"></table>
  </section>
  <section class="panel">
    <h2>3-D point cloud <button id="reset3d" type="button">reset view</button></h2>
    <canvas id="cloud"></canvas>
    <div class="muted" id="cloudcap">drag: rotate &middot; shift/right drag: pan &middot; wheel or pinch: zoom</div>
  </section>
</div>
<script type="module">
import { CloudViewer } from "./static/viewer.js";

const $ = (id) => document.getElementById(id);
const CLOUD_MAX_SIDE = 256;
let file = null, result = null, readout = null, viewer = null, timer = null;

function setStatus(msg, isError) { $("msg").textContent = msg; $("status").className = isError ? "error" : ""; }
function busy(msg) {  // spinner + elapsed seconds until done() ; controls disabled meanwhile
  const t0 = performance.now();
  $("status").className = "busy"; $("result").setAttribute("aria-busy", "true");
  const tick = () => { $("msg").textContent = `${msg} ${((performance.now() - t0) / 1000).toFixed(1)} s`; };
  tick(); clearInterval(timer); timer = setInterval(tick, 100);
  enable(false);
}
function done() { clearInterval(timer); timer = null; $("result").removeAttribute("aria-busy"); enable(!!file); }
function enable(on) {
  for (const id of ["go", "dl-npy", "dl-png16", "dl-ply"]) $(id).disabled = !on;
  $("example").disabled = timer !== null;
}

async function errorText(resp) {
  try { const j = await resp.json(); return j.detail || resp.statusText; } catch (e) { return resp.statusText; }
}

function fmt(v, unit) {
  if (v === null || v === undefined || Number.isNaN(v)) return "n/a";
  const s = Math.abs(v) >= 100 ? v.toFixed(1) : Number(v).toPrecision(4);
  return unit === "m" ? s + " m" : s;
}

function addOptions(id, names) {
  for (const name of names) { const o = document.createElement("option"); o.value = o.textContent = name; $(id).appendChild(o); }
}

async function loadModels() {
  const r = await fetch("api/models");
  const j = await r.json();
  const c = j.current;
  $("model").textContent = `model ${c.name}: ${c.kind} output (${c.unit})` +
                           (c.checkpoint_path ? `, weights ${c.checkpoint_path}` : "");
  addOptions("cmap", j.colormaps);
  const s = await (await fetch("api/samples")).json();
  addOptions("sample", s.samples);
}

function pick(f) { file = f; $("fname").textContent = f ? f.name : ""; enable(!!f); setStatus(""); }

function send(format, extra) {
  const fd = new FormData();
  fd.append("file", file, file.name);
  const q = new URLSearchParams(Object.assign({format: format, colormap: $("cmap").value}, extra || {}));
  return fetch("api/predict?" + q.toString(), {method: "POST", body: fd});
}

function clearResult() {  // an error must not leave the previous image's result on screen
  result = null; readout = null;
  $("result").hidden = true; $("warnings").hidden = true;
  for (const id of ["rgb", "depth", "bar"]) $(id).removeAttribute("src");
  $("stats").innerHTML = "";
  if (viewer) viewer.clear();
}

function showColorScale(cs) {
  $("bar").src = cs.bar_png ? "data:image/png;base64," + cs.bar_png : "";
  const mid = cs.vmin === null ? null : (cs.vmin + cs.vmax) / 2;
  $("tick-lo").textContent = fmt(cs.vmin, cs.unit); $("tick-mid").textContent = fmt(mid, cs.unit);
  $("tick-hi").textContent = fmt(cs.vmax, cs.unit);
  const what = {metric: "depth in metres", disparity: "disparity (larger = nearer)",
                relative: "relative depth (unknown scale and shift)"}[cs.kind] || cs.kind;
  $("barcap").textContent = `${what}; colours span percentiles ${cs.percentiles[0]} to ${cs.percentiles[1]} ` +
                            `of the valid pixels (clipped outside); colormap ${cs.colormap}`;
}

function showResult(j) {
  result = j;
  $("rgb").src = "data:image/png;base64," + j.rgb_png;
  $("depth").src = "data:image/png;base64," + j.depth_png;
  const raw = Uint8Array.from(atob(j.readout.f32), (c) => c.charCodeAt(0));
  readout = Object.assign({values: new Float32Array(raw.buffer)}, j.readout);
  showColorScale(j.color_scale);
  const rows = [["size (H x W)", j.shape.join(" x ")], ["min", fmt(j.min, j.unit)], ["max", fmt(j.max, j.unit)],
                ["valid pixels", (100 * j.valid_fraction).toFixed(1) + " %"],
                ["model time", j.seconds + " s" + (j.cached ? " (cached)" : "")],
                ["16-bit PNG", j.png16.png16_decode]];
  $("stats").innerHTML = "";
  for (const [k, v] of rows) {
    const tr = $("stats").insertRow(); tr.insertCell().textContent = k; tr.insertCell().textContent = v;
  }
  $("warnings").hidden = !j.warnings.length; $("warnings").textContent = j.warnings.join(" ");
  $("result").hidden = false;
}

async function showCloud() {
  if (!viewer) {
    try { viewer = new CloudViewer($("cloud")); }
    catch (e) { $("cloudcap").textContent = "3-D view unavailable: " + e.message; return; }
  }
  const r = await send("ply", {max_side: CLOUD_MAX_SIDE});
  if (!r.ok) { viewer.clear(); $("cloudcap").textContent = "3-D view: " + await errorText(r); return; }
  const n = viewer.show(await r.arrayBuffer());
  $("cloud").dataset.points = n;
  $("cloudcap").textContent = `${n.toLocaleString()} points (60 degree field-of-view guess); ` +
                              "drag: rotate, shift/right drag: pan, wheel or pinch: zoom";
}

async function predict(withCloud = true) {  // a colormap change keeps the cloud (it has the photo's colours)
  if (!file) return;
  busy("predicting\u2026");
  try {
    const r = await send("json");
    if (!r.ok) { clearResult(); setStatus(`error ${r.status}: ${await errorText(r)}`, true); return; }
    showResult(await r.json());
    if (withCloud) { $("msg").textContent = "building the 3-D view\u2026"; await showCloud(); }
    setStatus(`done: ${file.name}`);
  } catch (e) { clearResult(); setStatus("request failed: " + e, true); }
  finally { done(); }
}

async function download(format, suffix) {
  if (!file) return;
  busy("preparing " + suffix + "\u2026");
  try {
    const r = await send(format);
    if (!r.ok) { setStatus(`error ${r.status}: ${await errorText(r)}`, true); return; }
    const blob = await r.blob();
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = file.name.replace(/\.[^.]*$/, "") + suffix;
    document.body.appendChild(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
    setStatus("");
  } finally { done(); }
}

async function example() {
  const name = $("sample").value;
  const r = await fetch("api/samples/" + encodeURIComponent(name));
  if (!r.ok) { setStatus(`error ${r.status}: ${await errorText(r)}`, true); return; }
  pick(new File([await r.blob()], name, {type: r.headers.get("content-type") || "image/png"}));
  await predict();
}

function setSplit(pct) {
  pct = Math.max(0, Math.min(100, pct));
  $("split").value = pct; $("depth").style.clipPath = `inset(0 0 0 ${pct}%)`; $("divider").style.left = pct + "%";
}

function showReadout(e) {
  if (!readout) return;
  const box = $("rgb").getBoundingClientRect(), [h, w] = result.shape;
  const col = Math.floor((e.clientX - box.left) / box.width * w), row = Math.floor((e.clientY - box.top) / box.height * h);
  if (col < 0 || row < 0 || col >= w || row >= h) return;
  const s = readout.stride, v = readout.values[Math.floor(row / s) * readout.width + Math.floor(col / s)];
  const unit = result.unit === "m" ? " m" : ` (${result.kind})`;
  $("readout").textContent = `x ${col}, y ${row}: ` + (Number.isNaN(v) ? "invalid" : Number(v).toPrecision(4) + unit);
}

$("file").addEventListener("change", (e) => pick(e.target.files[0] || null));
$("go").addEventListener("click", () => predict());
$("example").addEventListener("click", example);
$("cmap").addEventListener("change", () => { if (file && result) predict(false); });
$("dl-npy").addEventListener("click", () => download("npy", ".npy"));
$("dl-png16").addEventListener("click", () => download("png16", "_depth16.png"));
$("dl-ply").addEventListener("click", () => download("ply", ".ply"));
$("reset3d").addEventListener("click", () => viewer && viewer.reset());
$("split").addEventListener("input", (e) => setSplit(Number(e.target.value)));
const compare = $("compare");
const splitAt = (e) => setSplit((e.clientX - compare.getBoundingClientRect().left) / compare.clientWidth * 100);
compare.addEventListener("pointermove", (e) => { showReadout(e); if (e.buttons & 1) splitAt(e); });
compare.addEventListener("pointerdown", (e) => { showReadout(e); splitAt(e); });
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault(); drop.classList.remove("over");
  if (e.dataTransfer.files.length) pick(e.dataTransfer.files[0]);
});
loadModels().catch((e) => setStatus("cannot reach the server: " + e, true));
</script>
</body>
</html>
"""
