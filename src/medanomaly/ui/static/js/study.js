// Study view: slice slider, heat-map overlay (opacity, colour map), window presets, zoom, findings,
// region marking and the opinion form. Talks to the JSON API with the session's CSRF token.
(function () {
  "use strict";
  const config = JSON.parse(document.getElementById("viewer-config").textContent);
  const csrf = document.querySelector("meta[name='csrf-token']").content;
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";

  async function api(method, url, body) {
    const response = await fetch(url, {
      method, credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRF-Token": csrf },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = response.status === 204 ? null : await response.json().catch(() => null);
    if (!response.ok) throw new Error((data && data.detail) || `HTTP ${response.status}`);
    return data;
  }

  // ---- waiting for the result --------------------------------------------------------------------------
  if (!config.n_slices) {
    const rescore = $("rescore");
    if (rescore) rescore.addEventListener("click", async () => {
      try { await api("POST", `/api/studies/${config.study}/rescore`); window.location.reload(); }
      catch (error) { rescore.textContent = error.message; }
    });
    if ($("pending")) {
      const poll = async () => {
        try {
          const study = await api("GET", `/api/studies/${config.study}`);
          if (study.status === "done" || study.status === "failed") { window.location.reload(); return; }
          $("pending-status").textContent = study.status === "queued" ? "Waiting in the queue" : "Scoring";
          $("pending-progress").max = Math.max(1, study.progress_total);
          $("pending-progress").value = study.progress_done;
          $("pending-text").textContent = `slice ${study.progress_done} / ${study.progress_total}`;
          $("status-badge").textContent = study.status;
        } catch (error) { /* retry */ }
        window.setTimeout(poll, 1000);
      };
      window.setTimeout(poll, 700);
    }
    return;
  }

  // ---- viewer state ------------------------------------------------------------------------------------
  const state = { slice: config.start_slice || 0, zoom: 1, drawing: false, regions: [], activeFinding: null,
                  window: config.prefs.window, cmap: config.prefs.colormap };
  const base = $("base-image"), heat = $("heat-image"), marks = $("marks"), stage = $("stage");
  const url = (kind, query) => `/api/studies/${config.study}/slices/${state.slice}/${kind}.png${query || ""}`;

  function setAspect() {
    const ratio = `${config.aspect[0]} / ${config.aspect[1]}`;
    document.querySelectorAll(".stage").forEach((s) => { s.style.aspectRatio = ratio; });
    const aspect = config.aspect[0] / config.aspect[1];  // fit the image to the window height at 100 %
    stage.style.width = `min(${100 * state.zoom}%, ${(64 * aspect * state.zoom).toFixed(2)}vh)`;
    $("zoom-label").textContent = `${Math.round(100 * state.zoom)} %`;
  }

  function box(parent, cls, b) {
    const el = document.createElementNS(SVG, "rect");
    el.setAttribute("x", b[0]); el.setAttribute("y", b[1]);
    el.setAttribute("width", Math.max(0.002, b[2] - b[0])); el.setAttribute("height", Math.max(0.002, b[3] - b[1]));
    el.setAttribute("class", cls);
    parent.appendChild(el);
    return el;
  }

  function drawMarks() {
    marks.replaceChildren();
    config.findings.forEach((f, i) => {
      if (f.slice_index === state.slice) box(marks, `finding${state.activeFinding === i ? " active" : ""}`, f.box);
    });
    (config.opinion_regions || []).forEach((r) => { if (r.slice_index === state.slice) box(marks, "saved-mark", r.box); });
    state.regions.forEach((r) => { if (r.slice_index === state.slice) box(marks, "mark", r.box); });
  }

  function render() {
    base.src = url("image", `?window=${encodeURIComponent(state.window)}`);
    heat.src = config.has_map ? url("map", `?cmap=${encodeURIComponent(state.cmap)}`) : "";
    document.querySelectorAll(".extra-image").forEach((img) => { img.src = url(img.dataset.extra); });
    const slider = $("slice");
    slider.value = state.slice;
    $("slice-label").textContent = `${state.slice + 1} / ${config.n_slices}`;
    drawMarks();
    drawPlot();
  }

  function setSlice(index) {
    state.slice = Math.max(0, Math.min(config.n_slices - 1, index));
    render();
  }

  // ---- toolbar -----------------------------------------------------------------------------------------
  $("slice").addEventListener("input", (e) => setSlice(Number(e.target.value)));
  const opacity = $("opacity");
  const applyOpacity = () => { heat.style.opacity = opacity.value / 100; $("opacity-label").textContent = `${opacity.value} %`; };
  opacity.addEventListener("input", applyOpacity);
  $("show-overlay").addEventListener("change", (e) => heat.classList.toggle("hidden", !e.target.checked));
  $("colormap").addEventListener("change", (e) => { state.cmap = e.target.value; render(); });
  $("window").addEventListener("change", (e) => { state.window = e.target.value; render(); });
  $("zoom-in").addEventListener("click", () => { state.zoom = Math.min(8, state.zoom * 1.25); setAspect(); });
  $("zoom-out").addEventListener("click", () => { state.zoom = Math.max(0.5, state.zoom / 1.25); setAspect(); });
  $("zoom-fit").addEventListener("click", () => { state.zoom = 1; setAspect(); });
  document.addEventListener("keydown", (e) => {
    if (["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement.tagName)) return;
    if (e.key === "ArrowUp" || e.key === "PageUp") { setSlice(state.slice - 1); e.preventDefault(); }
    if (e.key === "ArrowDown" || e.key === "PageDown") { setSlice(state.slice + 1); e.preventDefault(); }
  });
  $("save-defaults").addEventListener("click", async (e) => {
    const prefs = Object.assign({}, config.prefs, { overlay_opacity: opacity.value / 100, colormap: state.cmap,
      window: state.window, show_overlay: $("show-overlay").checked });
    try { await api("PUT", "/api/me/settings", prefs); e.target.textContent = "Saved ✓"; }
    catch (error) { e.target.textContent = `Not saved: ${error.message}`; }
  });

  // ---- findings ----------------------------------------------------------------------------------------
  document.querySelectorAll(".finding").forEach((button) => button.addEventListener("click", () => {
    document.querySelectorAll(".finding").forEach((b) => b.classList.remove("active"));
    button.classList.add("active");
    state.activeFinding = Number(button.dataset.index);
    setSlice(Number(button.dataset.slice));
  }));

  // ---- slice-score plot --------------------------------------------------------------------------------
  function drawPlot() {
    const plot = $("slice-plot");
    if (!plot) return;
    const scores = config.slice_scores, n = scores.length;
    const top = Math.max(...scores) * 1.1 || 1;
    const x = (i) => (n === 1 ? 50 : (100 * i) / (n - 1)), y = (v) => 28 - (26 * v) / top;
    plot.replaceChildren();
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", scores.map((v, i) => `${x(i)},${y(v)}`).join(" "));
    line.setAttribute("fill", "none"); line.setAttribute("stroke", "#4c8dff"); line.setAttribute("stroke-width", "1.5");
    line.setAttribute("vector-effect", "non-scaling-stroke");
    plot.appendChild(line);
    if (config.threshold !== undefined) {
      const t = document.createElementNS(SVG, "line");
      t.setAttribute("x1", 0); t.setAttribute("x2", 100); t.setAttribute("y1", y(config.threshold)); t.setAttribute("y2", y(config.threshold));
      t.setAttribute("stroke", "#f5a524"); t.setAttribute("stroke-dasharray", "3 2"); t.setAttribute("vector-effect", "non-scaling-stroke");
      plot.appendChild(t);
    }
    const cursor = document.createElementNS(SVG, "line");
    cursor.setAttribute("x1", x(state.slice)); cursor.setAttribute("x2", x(state.slice)); cursor.setAttribute("y1", 0); cursor.setAttribute("y2", 30);
    cursor.setAttribute("stroke", "#e6e9ee"); cursor.setAttribute("vector-effect", "non-scaling-stroke");
    plot.appendChild(cursor);
  }
  const plot = $("slice-plot");
  if (plot) plot.addEventListener("click", (e) => {
    const r = plot.getBoundingClientRect();
    setSlice(Math.round(((e.clientX - r.left) / r.width) * (config.n_slices - 1)));
  });

  // ---- marking regions ---------------------------------------------------------------------------------
  const drawButton = $("draw-toggle");
  drawButton.addEventListener("click", () => {
    state.drawing = !state.drawing;
    drawButton.setAttribute("aria-pressed", String(state.drawing));
    marks.classList.toggle("drawing", state.drawing);
  });
  let start = null, preview = null;
  const point = (e) => {
    const r = marks.getBoundingClientRect();
    return [Math.min(1, Math.max(0, (e.clientX - r.left) / r.width)), Math.min(1, Math.max(0, (e.clientY - r.top) / r.height))];
  };
  const ordered = (a, b) => [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])];
  marks.addEventListener("pointerdown", (e) => {
    if (!state.drawing) return;
    start = point(e); preview = box(marks, "mark", [...start, ...start]);
    marks.setPointerCapture(e.pointerId);
  });
  marks.addEventListener("pointermove", (e) => {
    if (!start) return;
    const b = ordered(start, point(e));
    preview.setAttribute("x", b[0]); preview.setAttribute("y", b[1]);
    preview.setAttribute("width", b[2] - b[0]); preview.setAttribute("height", b[3] - b[1]);
  });
  marks.addEventListener("pointerup", (e) => {
    if (!start) return;
    const b = ordered(start, point(e));
    start = null;
    if (b[2] - b[0] > 0.01 && b[3] - b[1] > 0.01) state.regions.push({ slice_index: state.slice, box: b.map((v) => Number(v.toFixed(4))) });
    $("region-count").textContent = state.regions.length;
    drawMarks();
  });
  $("clear-regions").addEventListener("click", () => { state.regions = []; $("region-count").textContent = "0"; drawMarks(); });

  // ---- opinion -----------------------------------------------------------------------------------------
  const form = $("opinion-form"), labelSelect = $("opinion-label"), other = $("other-label"), message = $("opinion-message");
  labelSelect.addEventListener("change", () => other.classList.toggle("hidden", labelSelect.value !== "__other"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const data = new FormData(form);
    const label = labelSelect.value === "__other" ? other.value.trim() : labelSelect.value;
    const body = { agrees: data.get("agrees") === "true", label: label || null, note: data.get("note") || "", regions: state.regions };
    $("opinion-submit").disabled = true;
    try {
      await api("POST", `/api/studies/${config.study}/opinions`, body);
      message.className = "form-message ok"; message.textContent = "Opinion saved.";
      window.setTimeout(() => window.location.reload(), 600);
    } catch (error) {
      message.className = "form-message error"; message.textContent = error.message;
      $("opinion-submit").disabled = false;
    }
  });

  setAspect();
  applyOpacity();
  render();
})();
