/* chexd web page: pick or drop a radiograph, POST it to /v1/predict?cam=top,
 * show the probabilities as sorted bars, and the class activation map of the
 * chosen finding over the image (POST /v1/explain?label=...). No framework,
 * no external resources. */
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const form = $("upload"), fileInput = $("file"), drop = $("drop"), tokenInput = $("token");
  const statusEl = $("status"), warnEl = $("demo-warning"), results = $("results");
  const bars = $("bars"), timing = $("timing"), overlay = $("overlay");
  const viewTitle = $("view-title"), caption = $("view-caption"), modelLine = $("model-line");

  let current = null;      // the File being shown
  let generation = 0;      // drops answers of superseded requests
  let overlayUrl = null;

  function setStatus(text, isError) {
    statusEl.textContent = text;
    statusEl.classList.toggle("error", !!isError);
  }

  function headers(extra) {
    const h = Object.assign({}, extra || {});
    const t = tokenInput.value.trim();
    if (t) h["Authorization"] = "Bearer " + t;
    return h;
  }

  async function errorText(resp) {
    let msg = "HTTP " + resp.status;
    try {
      const j = await resp.json();
      if (j && j.error && j.error.message) msg += ": " + j.error.message;
    } catch (e) { /* not JSON */ }
    if (resp.status === 401) msg += " (enter the API token above)";
    return msg;
  }

  async function loadModel() {
    try {
      const resp = await fetch("v1/model", { headers: headers() });
      if (!resp.ok) {
        modelLine.textContent = "Model: " + (await errorText(resp));
        return;
      }
      const m = await resp.json();
      modelLine.textContent = "Model: " + m.name + " (" + m.labels.length + " findings, " +
        m.preprocess + ", " + m.threads + " threads)";
      showWarning(m.demo ? m.warning : "");
    } catch (e) {
      modelLine.textContent = "Model: server not reachable";
    }
  }

  function showWarning(text) {
    warnEl.textContent = text ? "Warning: " + text : "";
    warnEl.hidden = !text;
  }

  function fmt(p) { return (100 * p).toFixed(1) + "%"; }

  function renderBars(preds, selected) {
    bars.textContent = "";
    const sorted = preds.slice().sort((a, b) => b.probability - a.probability);
    for (const p of sorted) {
      const li = document.createElement("li");
      const b = document.createElement("button");
      b.type = "button";
      b.className = "bar";
      b.dataset.label = p.label;
      b.dataset.probability = String(p.probability);
      b.setAttribute("aria-pressed", p.label === selected ? "true" : "false");
      b.setAttribute("aria-label", p.label.replace(/_/g, " ") + ", probability " + fmt(p.probability) +
        ": show heat map");
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = p.label.replace(/_/g, " ");
      const track = document.createElement("span");
      track.className = "track";
      const fill = document.createElement("span");
      fill.className = "fill";
      fill.style.display = "block";
      fill.style.width = Math.max(0, Math.min(100, 100 * p.probability)).toFixed(2) + "%";
      track.appendChild(fill);
      const val = document.createElement("span");
      val.className = "value";
      val.textContent = fmt(p.probability);
      b.append(name, track, val);
      b.addEventListener("click", () => explain(p.label));
      li.appendChild(b);
      bars.appendChild(li);
    }
  }

  function renderTiming(t, roundTrip, extra) {
    timing.textContent = "";
    const rows = [["decode", t.decode], ["preprocess", t.preprocess], ["queue", t.queue],
      ["inference", t.inference], ["round trip (browser)", roundTrip]];
    if (extra) rows.push(extra);
    for (const [k, v] of rows) {
      const dt = document.createElement("dt");
      dt.textContent = k;
      const dd = document.createElement("dd");
      dd.textContent = typeof v === "number" ? v.toFixed(1) + " ms" : String(v);
      dd.dataset.key = k;
      timing.append(dt, dd);
    }
  }

  async function classify(file) {
    if (!file) {
      setStatus("Choose a file first.", true);
      return;
    }
    current = file;
    const gen = ++generation;
    setStatus("Classifying " + file.name + "\u2026");
    const t0 = performance.now();
    let resp;
    try {
      resp = await fetch("v1/predict?cam=top", {
        method: "POST",
        headers: headers({ "Content-Type": "application/octet-stream" }),
        body: file,
      });
    } catch (e) {
      if (gen === generation) setStatus("The server could not be reached: " + e.message, true);
      return;
    }
    if (gen !== generation) return;
    if (!resp.ok) {
      setStatus("Could not classify " + file.name + ": " + (await errorText(resp)), true);
      return;
    }
    const a = await resp.json();
    const rt = performance.now() - t0;
    if (gen !== generation) return;
    showWarning(a.demo ? a.warning : "");
    const top = a.cam ? a.cam.label : null;
    renderBars(a.predictions, top);
    renderTiming(a.timing_ms, rt);
    results.hidden = false;
    results.dataset.requestId = a.request_id || "";
    setStatus("Classified " + file.name + " (" + a.input.width + "\u00d7" + a.input.height + " " +
      a.input.format + ").");
    if (top) await explain(top);
  }

  async function explain(label) {
    if (!current) return;
    const gen = generation;
    for (const b of bars.querySelectorAll("button"))
      b.setAttribute("aria-pressed", b.dataset.label === label ? "true" : "false");
    const pretty = label.replace(/_/g, " ");
    viewTitle.textContent = "Heat map: " + pretty;
    setStatus("Computing the heat map of " + pretty + "\u2026");
    const t0 = performance.now();
    let resp;
    try {
      resp = await fetch("v1/explain?label=" + encodeURIComponent(label), {
        method: "POST",
        headers: headers({ "Content-Type": "application/octet-stream" }),
        body: current,
      });
    } catch (e) {
      setStatus("The server could not be reached: " + e.message, true);
      return;
    }
    if (gen !== generation) return;
    if (!resp.ok) {
      setStatus("No heat map for " + pretty + ": " + (await errorText(resp)), true);
      return;
    }
    const blob = await resp.blob();
    if (gen !== generation) return;
    if (overlayUrl) URL.revokeObjectURL(overlayUrl);
    overlayUrl = URL.createObjectURL(blob);
    overlay.onload = () => {
      const ms = performance.now() - t0;
      overlay.hidden = false;
      overlay.dataset.label = label;
      caption.textContent = "Class activation map of " + pretty + " over the radiograph (" +
        overlay.naturalWidth + "\u00d7" + overlay.naturalHeight + ", " + ms.toFixed(0) +
        " ms). Bright: regions that raise this finding's score.";
      setStatus("Showing the heat map of " + pretty + ".");
    };
    overlay.alt = "Heat map of " + pretty + " blended over the radiograph";
    overlay.src = overlayUrl;
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    classify(fileInput.files[0]);
  });
  fileInput.addEventListener("change", () => classify(fileInput.files[0]));
  tokenInput.addEventListener("change", loadModel);
  drop.addEventListener("dragover", (ev) => {
    ev.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    drop.classList.remove("over");
    const f = ev.dataTransfer && ev.dataTransfer.files[0];
    if (f) classify(f);
  });
  loadModel();
})();
