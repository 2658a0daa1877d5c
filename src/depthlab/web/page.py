"""The single HTML page of the web app (inline CSS and JavaScript, no external assets).

Kept in a Python module so it ships with the package without package-data rules.
"""

INDEX_HTML = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>depthlab</title>
<style>
  :root { font-family: system-ui, sans-serif; color: #222; background: #fafafa; }
  body { max-width: 1200px; margin: 1.5rem auto; padding: 0 1rem; }
  h1 { font-size: 1.4rem; margin: 0 0 .2rem 0; }
  .muted { color: #666; font-size: .9rem; }
  form { display: flex; flex-wrap: wrap; gap: .8rem; align-items: center; margin: 1rem 0; padding: .8rem;
         background: #fff; border: 1px solid #ddd; border-radius: 6px; }
  #drop { border: 2px dashed #aaa; border-radius: 6px; padding: .6rem 1rem; cursor: pointer; }
  #drop.over { border-color: #2a6; background: #efe; }
  button { padding: .4rem .9rem; border-radius: 4px; border: 1px solid #888; background: #fff; cursor: pointer; }
  button.primary { background: #246; color: #fff; border-color: #246; }
  button:disabled { opacity: .5; cursor: default; }
  .pair { display: grid; grid-template-columns: 1fr 1fr; gap: .8rem; }
  figure { margin: 0; background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: .4rem; }
  figure img { width: 100%; image-rendering: auto; display: block; min-height: 2rem; }
  figcaption { font-size: .85rem; color: #555; padding-top: .3rem; }
  #status { min-height: 1.2rem; }
  #status.error { color: #b00; }
  table { border-collapse: collapse; font-size: .9rem; margin: .6rem 0; }
  td { padding: .15rem .8rem .15rem 0; }
</style>
</head>
<body>
<h1>depthlab</h1>
<div class="muted" id="model">loading model information&hellip;</div>
<form id="form" onsubmit="return false">
  <label id="drop" for="file">Choose or drop an image&hellip; <input id="file" type="file" accept="image/*" hidden></label>
  <span id="fname" class="muted"></span>
  <label>Colormap <select id="cmap"></select></label>
  <button class="primary" id="go" disabled>Predict</button>
  <button id="dl-npy" disabled title="float32 array in the model's unit">Download .npy</button>
  <button id="dl-png16" disabled title="16-bit PNG (metric: millimetres)">Download 16-bit PNG</button>
</form>
<div id="status"></div>
<div class="pair">
  <figure><img id="rgb" alt=""><figcaption>RGB</figcaption></figure>
  <figure><img id="depth" alt=""><figcaption id="depthcap">Depth</figcaption></figure>
</div>
<table id="stats"></table>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let file = null;

function setStatus(msg, isError) { $("status").textContent = msg; $("status").className = isError ? "error" : ""; }
function enable(on) { for (const id of ["go", "dl-npy", "dl-png16"]) $(id).disabled = !on; }

async function errorText(resp) {
  try { const j = await resp.json(); return j.detail || resp.statusText; } catch (e) { return resp.statusText; }
}

async function loadModels() {
  const r = await fetch("api/models");
  const j = await r.json();
  const c = j.current;
  $("model").textContent = `model ${c.name}: ${c.kind} output (${c.unit})` + (c.checkpoint_path ? `, weights ${c.checkpoint_path}` : "");
  for (const name of j.colormaps) { const o = document.createElement("option"); o.value = o.textContent = name; $("cmap").appendChild(o); }
}

function pick(f) { file = f; $("fname").textContent = f ? f.name : ""; enable(!!f); setStatus(""); }

function send(format) {
  const fd = new FormData();
  fd.append("file", file, file.name);
  const q = new URLSearchParams({format: format, colormap: $("cmap").value});
  return fetch("api/predict?" + q.toString(), {method: "POST", body: fd});
}

async function predict() {
  if (!file) return;
  enable(false); setStatus("predicting\u2026");
  try {
    const r = await send("json");
    if (!r.ok) { setStatus(`error ${r.status}: ${await errorText(r)}`, true); return; }
    const j = await r.json();
    $("rgb").src = "data:image/png;base64," + j.rgb_png;
    $("depth").src = "data:image/png;base64," + j.depth_png;
    $("depthcap").textContent = `${j.kind} depth (${j.unit}), colormap ${j.colormap}`;
    const fmt = (v) => v === null ? "n/a" : Number(v).toPrecision(4);
    const rows = [["size (H x W)", j.shape.join(" x ")], ["min", fmt(j.min)], ["max", fmt(j.max)],
                  ["valid pixels", (100 * j.valid_fraction).toFixed(1) + " %"], ["time", j.seconds + " s"],
                  ["16-bit PNG", j.png16.png16_decode]];
    $("stats").innerHTML = "";
    for (const [k, v] of rows) { const tr = $("stats").insertRow(); tr.insertCell().textContent = k; tr.insertCell().textContent = v; }
    setStatus("");
  } catch (e) { setStatus("request failed: " + e, true); }
  finally { enable(true); }
}

async function download(format, suffix) {
  if (!file) return;
  setStatus("preparing " + suffix + "\u2026");
  const r = await send(format);
  if (!r.ok) { setStatus(`error ${r.status}: ${await errorText(r)}`, true); return; }
  const blob = await r.blob();
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = file.name.replace(/\.[^.]*$/, "") + suffix;
  document.body.appendChild(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  setStatus("");
}

$("file").addEventListener("change", (e) => pick(e.target.files[0] || null));
$("go").addEventListener("click", predict);
$("cmap").addEventListener("change", () => { if (file && $("depth").src) predict(); });
$("dl-npy").addEventListener("click", () => download("npy", ".npy"));
$("dl-png16").addEventListener("click", () => download("png16", "_depth16.png"));
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); if (e.dataTransfer.files.length) pick(e.dataTransfer.files[0]); });
loadModels().catch((e) => setStatus("cannot reach the server: " + e, true));
</script>
</body>
</html>
"""
