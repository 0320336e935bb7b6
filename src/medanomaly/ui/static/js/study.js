// Study page: the viewer (viewer.js) with its toolbar and shortcuts, heat-map overlay, findings, slice plot, region
// marking, the opinion form and the report's sign-off and addenda. Talks to the JSON API with the CSRF token;
// nothing here reloads the page once the result is shown.
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
  const element = (tag, cls, text) => {
    const el = document.createElement(tag);
    if (cls) el.className = cls;
    if (text !== undefined) el.textContent = text;
    return el;
  };

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

  // ---- viewer ------------------------------------------------------------------------------------------
  const state = { slice: config.start_slice || 0, regions: [], activeFinding: null, cmap: config.prefs.colormap };
  const heat = $("heat-image"), marks = $("marks"), windowSelect = $("window");
  const url = (kind, query) => `/api/studies/${config.study}/slices/${state.slice}/${kind}.png${query || ""}`;
  const viewer = window.createViewer(config, {
    sliceChanged(index) {
      state.slice = index;
      heat.src = config.has_map ? url("map", `?cmap=${encodeURIComponent(state.cmap)}`) : "";
      document.querySelectorAll(".extra-image").forEach((img) => { img.src = url(img.dataset.extra); });
      $("slice").value = index;
      $("slice-label").textContent = `${index + 1} / ${config.n_slices}`;
      drawMarks();
      drawPlot();
    },
    windowChanged(preset) {
      let option = windowSelect.querySelector("option[value='custom']");
      if (preset === "custom" && !option) {
        option = element("option", "", "Custom (dragged)"); option.value = "custom"; windowSelect.appendChild(option);
      }
      windowSelect.value = preset;
    },
    toolChanged(tool) {
      [["tool-pan", "pan"], ["tool-wl", "wl"], ["draw-toggle", "mark"]].forEach(([id, name]) => {
        $(id).setAttribute("aria-pressed", String(tool === name));
      });
    },
  });

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

  // ---- toolbar -----------------------------------------------------------------------------------------
  $("slice").addEventListener("input", (e) => viewer.setSlice(Number(e.target.value)));
  const opacity = $("opacity");
  const applyOpacity = () => { heat.style.opacity = opacity.value / 100; $("opacity-label").textContent = `${opacity.value} %`; };
  opacity.addEventListener("input", applyOpacity);
  const overlayBox = $("show-overlay");
  const applyOverlay = () => heat.classList.toggle("hidden", !overlayBox.checked);
  overlayBox.addEventListener("change", applyOverlay);
  $("colormap").addEventListener("change", (e) => { state.cmap = e.target.value; viewer.setSlice(state.slice); });
  windowSelect.addEventListener("change", (e) => viewer.preset(e.target.value));
  const invert = $("invert");
  const toggleInvert = () => invert.setAttribute("aria-pressed", String(viewer.toggleInvert()));
  invert.addEventListener("click", toggleInvert);
  $("zoom-in").addEventListener("click", () => viewer.zoom(1.25));
  $("zoom-out").addEventListener("click", () => viewer.zoom(1 / 1.25));
  $("zoom-fit").addEventListener("click", () => viewer.fit());
  $("zoom-one").addEventListener("click", () => viewer.actualSize());
  $("tool-pan").addEventListener("click", () => viewer.setTool("pan"));
  $("tool-wl").addEventListener("click", () => viewer.setTool("wl"));
  $("draw-toggle").addEventListener("click", () => viewer.setTool(viewer.view.tool === "mark" ? "pan" : "mark"));
  $("save-defaults").addEventListener("click", async (e) => {
    const preset = viewer.view.preset === "custom" ? config.prefs.window : viewer.view.preset;
    const prefs = Object.assign({}, config.prefs, { overlay_opacity: opacity.value / 100, colormap: state.cmap,
      window: preset, show_overlay: overlayBox.checked });
    try { await api("PUT", "/api/me/settings", prefs); e.target.textContent = "Saved ✓"; }
    catch (error) { e.target.textContent = `Not saved: ${error.message}`; }
  });

  // ---- keyboard shortcuts (the help overlay lists them) ------------------------------------------------
  const help = $("shortcut-help");
  const toggleHelp = (show) => help.classList.toggle("hidden", show === undefined ? !help.classList.contains("hidden") : !show);
  $("help-toggle").addEventListener("click", () => toggleHelp());
  $("help-close").addEventListener("click", () => toggleHelp(false));
  const presetKeys = Object.keys(config.levels);
  const keys = {
    ArrowUp: () => viewer.setSlice(state.slice - 1), PageUp: () => viewer.setSlice(state.slice - 1),
    ArrowDown: () => viewer.setSlice(state.slice + 1), PageDown: () => viewer.setSlice(state.slice + 1),
    Home: () => viewer.setSlice(0), End: () => viewer.setSlice(config.n_slices - 1),
    "+": () => viewer.zoom(1.25), "=": () => viewer.zoom(1.25), "-": () => viewer.zoom(1 / 1.25),
    f: () => viewer.fit(), "0": () => viewer.actualSize(), i: toggleInvert,
    r: () => { viewer.reset(); invert.setAttribute("aria-pressed", "false"); },
    p: () => viewer.setTool("pan"), w: () => viewer.setTool("wl"), m: () => $("draw-toggle").click(),
    o: () => { overlayBox.checked = !overlayBox.checked; applyOverlay(); },
    "?": () => toggleHelp(), Escape: () => toggleHelp(false),
  };
  presetKeys.slice(0, 9).forEach((key, i) => { keys[String(i + 1)] = () => viewer.preset(key); });
  document.addEventListener("keydown", (e) => {
    if (["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement.tagName) || e.ctrlKey || e.metaKey || e.altKey) return;
    const action = keys[e.key] || keys[e.key.toLowerCase()];
    if (action) { action(); e.preventDefault(); }
  });
  $("preset-keys").textContent = presetKeys.slice(0, 9).map((key, i) => `${i + 1} ${config.levels[key].label}`).join(" · ");

  // ---- findings ----------------------------------------------------------------------------------------
  document.querySelectorAll(".finding").forEach((button) => button.addEventListener("click", () => {
    document.querySelectorAll(".finding").forEach((b) => b.classList.remove("active"));
    button.classList.add("active");
    state.activeFinding = Number(button.dataset.index);
    viewer.setSlice(Number(button.dataset.slice));
  }));

  // ---- slice-score plot --------------------------------------------------------------------------------
  function line(plot, x1, y1, x2, y2, stroke, dash) {
    const l = document.createElementNS(SVG, "line");
    Object.entries({ x1, y1, x2, y2, stroke }).forEach(([k, v]) => l.setAttribute(k, v));
    if (dash) l.setAttribute("stroke-dasharray", dash);
    l.setAttribute("vector-effect", "non-scaling-stroke");
    plot.appendChild(l);
  }
  function drawPlot() {
    const plot = $("slice-plot");
    if (!plot) return;
    const scores = config.slice_scores, n = scores.length;
    const top = Math.max(...scores) * 1.1 || 1;
    const x = (i) => (n === 1 ? 50 : (100 * i) / (n - 1)), y = (v) => 28 - (26 * v) / top;
    plot.replaceChildren();
    const poly = document.createElementNS(SVG, "polyline");
    poly.setAttribute("points", scores.map((v, i) => `${x(i)},${y(v)}`).join(" "));
    poly.setAttribute("fill", "none"); poly.setAttribute("stroke", "#4c8dff"); poly.setAttribute("stroke-width", "1.5");
    poly.setAttribute("vector-effect", "non-scaling-stroke");
    plot.appendChild(poly);
    if (config.threshold !== undefined) line(plot, 0, y(config.threshold), 100, y(config.threshold), "#f5a524", "3 2");
    line(plot, x(state.slice), 0, x(state.slice), 30, "#e6e9ee");
  }
  const plot = $("slice-plot");
  if (plot) plot.addEventListener("click", (e) => {
    const r = plot.getBoundingClientRect();
    viewer.setSlice(Math.round(((e.clientX - r.left) / r.width) * (config.n_slices - 1)));
  });

  // ---- marking regions (mark tool: drag on the image) ---------------------------------------------------
  let start = null, preview = null;
  const point = (e) => {
    const r = marks.getBoundingClientRect();
    return [Math.min(1, Math.max(0, (e.clientX - r.left) / r.width)), Math.min(1, Math.max(0, (e.clientY - r.top) / r.height))];
  };
  const ordered = (a, b) => [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])];
  marks.addEventListener("pointerdown", (e) => {
    if (viewer.view.tool !== "mark" || e.button !== 0) return;
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

  // ---- opinion (saved without leaving the page) -------------------------------------------------------
  const form = $("opinion-form"), labelSelect = $("opinion-label"), other = $("other-label"), message = $("opinion-message");
  labelSelect.addEventListener("change", () => other.classList.toggle("hidden", labelSelect.value !== "__other"));
  function showOpinion(o) {
    const li = element("li");
    li.append(element("span", `badge ${o.agrees ? "agree" : "disagree"}`, o.agrees ? "agrees" : "disagrees"), " ",
      element("strong", "", o.label), ` — ${o.user}, ${o.created_at.slice(0, 16).replace("T", " ")}`);
    if (o.regions.length) li.append(" ", element("span", "muted small", `· ${o.regions.length} region(s)`));
    if (o.note) li.append(element("p", "note", o.note));
    $("opinions").prepend(li);
    $("opinions-card").classList.remove("hidden");
  }
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const data = new FormData(form);
    const label = labelSelect.value === "__other" ? other.value.trim() : labelSelect.value;
    const body = { agrees: data.get("agrees") === "true", label: label || null, note: data.get("note") || "", regions: state.regions };
    $("opinion-submit").disabled = true;
    try {
      const saved = await api("POST", `/api/studies/${config.study}/opinions`, body);
      showOpinion(saved);
      config.opinion_regions = saved.regions; state.regions = [];
      $("region-count").textContent = "0";
      drawMarks();
      form.reset(); other.classList.add("hidden");
      message.className = "form-message ok"; message.textContent = "Opinion saved.";
      const signoff = $("signoff-start");
      if (signoff) { signoff.disabled = false; signoff.title = ""; }
    } catch (error) {
      message.className = "form-message error"; message.textContent = error.message;
    }
    $("opinion-submit").disabled = false;
  });

  // ---- sign-off and addenda ----------------------------------------------------------------------------
  function showSigned(signoff) {
    $("signoff-status").textContent = `Signed off by ${signoff.user}, ${signoff.signed_at.slice(0, 16).replace("T", " ")} UTC`;
    $("signoff-status").className = "signed";
    ["signoff-start", "signoff-confirm-box"].forEach((id) => { const el = $(id); if (el) el.classList.add("hidden"); });
    $("addendum-form").classList.remove("hidden");
    form.querySelectorAll("input, select, textarea, button").forEach((el) => { el.disabled = true; });
    message.className = "form-message"; message.textContent = "The report is signed: add an addendum instead.";
  }
  function showAddendum(a) {
    const li = element("li");
    li.append(element("strong", "", a.user), ` ${a.created_at.slice(0, 16).replace("T", " ")} UTC`, element("p", "note", a.text));
    $("addenda").append(li);
  }
  const signStart = $("signoff-start"), signMessage = $("signoff-message");
  if (signStart) {
    signStart.addEventListener("click", () => $("signoff-confirm-box").classList.remove("hidden"));
    $("signoff-cancel").addEventListener("click", () => $("signoff-confirm-box").classList.add("hidden"));
    $("signoff-confirm").addEventListener("click", async () => {
      try { showSigned(await api("POST", `/api/studies/${config.study}/signoff`)); signMessage.textContent = ""; }
      catch (error) { signMessage.className = "form-message error"; signMessage.textContent = error.message; }
    });
  }
  $("addendum-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const text = $("addendum-text").value.trim();
    if (!text) return;
    try {
      showAddendum(await api("POST", `/api/studies/${config.study}/addenda`, { text }));
      $("addendum-text").value = ""; signMessage.className = "form-message ok"; signMessage.textContent = "Addendum added.";
    } catch (error) { signMessage.className = "form-message error"; signMessage.textContent = error.message; }
  });
  if (config.signed) form.querySelectorAll("input, select, textarea, button").forEach((el) => { el.disabled = true; });

  applyOpacity();
  applyOverlay();
  viewer.layout();
  viewer.setSlice(state.slice);
})();
