// Image viewer of the study page: the slice at native resolution drawn from its stored values (HU for CT) on a
// canvas, window/level applied here (presets, free drag, invert), pan by drag, zoom around the pointer, pixel value
// readout, wheel and keyboard through slices. Every panel (input, reconstruction, ...) shows the same view.
// Used by study.js: window.createViewer(config, hooks) -> viewer.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const MIN_SCALE = 0.05, MAX_SCALE = 32, CACHE = 48, WHEEL_STEP = 50;

  async function fetchValues(study, index) {
    const response = await fetch(`/api/studies/${study}/slices/${index}/values`, { credentials: "same-origin" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const shape = response.headers.get("X-Shape").split(",").map(Number);
    const types = { int16: Int16Array, uint16: Uint16Array, float32: Float32Array, uint8: Uint8Array };
    const dtype = response.headers.get("X-Dtype"), data = new types[dtype](await response.arrayBuffer());
    let range = null;
    if (dtype !== "float32" && !shape[2]) {
      let min = Infinity, max = -Infinity;
      for (let i = 0; i < data.length; i++) { const v = data[i]; if (v < min) min = v; if (v > max) max = v; }
      range = [min, max];
    }
    return { data, range, height: shape[0], width: shape[1], channels: shape[2] || 1 };
  }

  window.createViewer = function (config, hooks) {
    const [W, H] = config.aspect;
    const viewport = $("viewport"), canvas = $("base-image"), heat = $("heat-image"), marks = $("marks");
    const levels = config.levels, units = config.units || "";
    const start = levels[config.prefs.window] || levels.auto;
    const view = { slice: config.start_slice || 0, scale: 1, cx: W / 2, cy: H / 2, fitted: true, invert: false,
                   center: start.center, width: start.width, preset: levels[config.prefs.window] ? config.prefs.window : "auto",
                   tool: "pan" };
    const span = Math.max(levels.full ? levels.full.width : start.width, 1e-6);
    const cache = new Map();
    let values = null, drawPending = false;

    // ---- geometry (inside the viewport's border) ------------------------------------------------------
    const inner = (el) => {
      const r = el.getBoundingClientRect();
      return { left: r.left + el.clientLeft, top: r.top + el.clientTop, width: el.clientWidth, height: el.clientHeight };
    };
    const fitScale = () => {
      const r = inner(viewport);
      return Math.max(MIN_SCALE, Math.min(r.width / W, r.height / H));
    };
    function place(element, box) {
      const s = view.scale;
      element.style.left = `${(box.width / 2 - view.cx * s).toFixed(2)}px`;
      element.style.top = `${(box.height / 2 - view.cy * s).toFixed(2)}px`;
      element.style.width = `${(W * s).toFixed(2)}px`;
      element.style.height = `${(H * s).toFixed(2)}px`;
    }
    function layout() {
      if (view.fitted) { view.scale = fitScale(); view.cx = W / 2; view.cy = H / 2; }
      const main = inner(viewport);
      [canvas, heat, marks].forEach((el) => place(el, main));
      document.querySelectorAll(".extra-image").forEach((img) => place(img, inner(img.parentElement)));
      canvas.classList.toggle("pixelated", view.scale >= 3);
      $("zoom-label").textContent = `${Math.round(100 * view.scale)} %`;
    }
    function zoomAt(factor, px, py) {  // (px, py): pointer in viewport coordinates; that image point stays put
      const r = inner(viewport);
      const x = px === undefined ? r.width / 2 : px, y = py === undefined ? r.height / 2 : py;
      const qx = view.cx + (x - r.width / 2) / view.scale, qy = view.cy + (y - r.height / 2) / view.scale;
      view.scale = Math.max(MIN_SCALE, Math.min(MAX_SCALE, view.scale * factor));
      view.cx = qx - (x - r.width / 2) / view.scale; view.cy = qy - (y - r.height / 2) / view.scale;
      view.fitted = false;
      layout();
    }
    function imagePoint(event) {
      const r = inner(viewport);
      return [Math.floor(view.cx + (event.clientX - r.left - r.width / 2) / view.scale),
              Math.floor(view.cy + (event.clientY - r.top - r.height / 2) / view.scale)];
    }

    // ---- drawing ---------------------------------------------------------------------------------------
    function draw() {
      drawPending = false;
      if (!values) return;
      const { data, width, height, channels } = values;
      if (canvas.width !== width || canvas.height !== height) { canvas.width = width; canvas.height = height; }
      const context = canvas.getContext("2d"), image = context.createImageData(width, height), out = image.data;
      const low = view.center - view.width / 2, gain = 255 / Math.max(view.width, 1e-6), inv = view.invert;
      const level = (v) => { const g = (v - low) * gain, c = g < 0 ? 0 : g > 255 ? 255 : g; return inv ? 255 - c : c; };
      const word = (v) => { const g = (level(v) + 0.5) | 0; return 0xff000000 | (g << 16) | (g << 8) | g; };
      if (channels === 1) {  // grey: one packed RGBA word per pixel (little-endian: alpha in the high byte)
        const words = new Uint32Array(out.buffer), n = width * height;
        if (values.range) {  // whole numbers (HU, 8-16 bit): through a lookup table over the slice's value range
          const [min, max] = values.range, lut = new Uint32Array(max - min + 1);
          for (let v = min; v <= max; v++) lut[v - min] = word(v);
          for (let i = 0; i < n; i++) words[i] = lut[data[i] - min];
        } else {
          for (let i = 0; i < n; i++) words[i] = word(data[i]);
        }
      } else {
        for (let i = 0, n = width * height; i < n; i++) {
          out[4 * i] = level(data[3 * i]); out[4 * i + 1] = level(data[3 * i + 1]); out[4 * i + 2] = level(data[3 * i + 2]);
          out[4 * i + 3] = 255;
        }
      }
      context.putImageData(image, 0, 0);
      canvas.dataset.slice = String(view.slice);
      canvas.dataset.window = `${view.center.toFixed(1)},${view.width.toFixed(1)}`;
      $("wl-label").textContent = `C ${fmt(view.center)} W ${fmt(view.width)}${units ? " " + units : ""}`;
    }
    const redraw = () => { if (!drawPending) { drawPending = true; window.requestAnimationFrame(draw); } };
    const fmt = (v) => (Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(3));

    async function load(index) {
      if (cache.has(index)) return cache.get(index);
      const promise = fetchValues(config.study, index);
      cache.set(index, promise);
      promise.catch(() => cache.delete(index));
      while (cache.size > CACHE) cache.delete(cache.keys().next().value);
      return promise;
    }

    async function setSlice(index) {
      view.slice = Math.max(0, Math.min(config.n_slices - 1, index));
      hooks.sliceChanged(view.slice);
      const wanted = view.slice;
      try {
        const loaded = await load(wanted);
        if (wanted !== view.slice) return;
        values = loaded;
        draw();
        [1, -1, 2].forEach((d) => { if (wanted + d >= 0 && wanted + d < config.n_slices) load(wanted + d); });
      } catch (error) { $("readout").textContent = `slice ${wanted + 1} not loaded: ${error.message}`; }
    }

    function setWindow(center, width, preset) {
      view.center = center; view.width = Math.max(width, span * 1e-4); view.preset = preset || "custom";
      hooks.windowChanged(view.preset);
      redraw();
    }

    // ---- readout -----------------------------------------------------------------------------------------
    function readout(event) {
      if (!values) return;
      const [x, y] = imagePoint(event);
      const box = $("readout");
      if (x < 0 || y < 0 || x >= values.width || y >= values.height) { box.textContent = ""; return; }
      const i = y * values.width + x, d = values.data;
      const value = values.channels === 1 ? `${fmt(d[i])}${units ? " " + units : ""}` : `RGB ${d[3 * i]}, ${d[3 * i + 1]}, ${d[3 * i + 2]}`;
      box.textContent = `x ${x}, y ${y}: ${value}`;
      box.dataset.x = x; box.dataset.y = y; box.dataset.value = values.channels === 1 ? d[i] : "";
    }

    // ---- pointer: pan (left, or middle), window/level (right, or left in W/L mode), marks (mark mode) -------
    let drag = null;
    viewport.addEventListener("contextmenu", (e) => e.preventDefault());
    viewport.addEventListener("pointerdown", (e) => {
      if (view.tool === "mark" && e.button === 0) return;  // marks.js-style drawing on the SVG takes it
      const mode = e.button === 2 || (e.button === 0 && view.tool === "wl") ? "wl" : "pan";
      drag = { mode, x: e.clientX, y: e.clientY, cx: view.cx, cy: view.cy, center: view.center, width: view.width };
      viewport.setPointerCapture(e.pointerId);
      viewport.classList.add(mode === "wl" ? "leveling" : "panning");
      e.preventDefault();
    });
    viewport.addEventListener("pointermove", (e) => {
      readout(e);
      if (!drag) return;
      const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
      if (drag.mode === "pan") {
        view.cx = drag.cx - dx / view.scale; view.cy = drag.cy - dy / view.scale; view.fitted = false;
        layout();
      } else {
        const step = span / 600;  // drag right: wider window (less contrast); drag down: higher level (darker)
        setWindow(drag.center + dy * step, drag.width + dx * step);
      }
    });
    const endDrag = () => { drag = null; viewport.classList.remove("leveling", "panning"); };
    viewport.addEventListener("pointerup", endDrag);
    viewport.addEventListener("pointercancel", endDrag);
    viewport.addEventListener("pointerleave", () => { if (!drag) $("readout").textContent = ""; });
    viewport.addEventListener("dblclick", () => { view.fitted = true; layout(); });
    let wheel = 0;
    viewport.addEventListener("wheel", (e) => {
      e.preventDefault();
      const r = inner(viewport);
      if (e.ctrlKey || e.metaKey || config.n_slices < 2) {
        zoomAt(Math.exp(-e.deltaY / 500), e.clientX - r.left, e.clientY - r.top);
        return;
      }
      wheel += e.deltaY;
      if (Math.abs(wheel) >= WHEEL_STEP) { setSlice(view.slice + Math.sign(wheel)); wheel = 0; }
    }, { passive: false });
    window.addEventListener("resize", layout);
    if (window.ResizeObserver) new ResizeObserver(layout).observe(viewport);

    function setTool(tool) {
      view.tool = tool;
      marks.classList.toggle("drawing", tool === "mark");
      viewport.dataset.tool = tool;
      hooks.toolChanged(tool);
    }

    return {
      view, layout, setSlice, setWindow, setTool, redraw,
      zoom: (factor) => zoomAt(factor),
      fit: () => { view.fitted = true; layout(); },
      actualSize: () => { view.fitted = false; view.scale = 1; layout(); },
      toggleInvert: () => { view.invert = !view.invert; redraw(); return view.invert; },
      preset: (key) => { if (levels[key]) setWindow(levels[key].center, levels[key].width, key); },
      reset: () => {
        view.invert = false; view.fitted = true; layout();
        const key = levels[view.preset] ? view.preset : (levels[config.prefs.window] ? config.prefs.window : "auto");
        setWindow(levels[key].center, levels[key].width, key);
      },
    };
  };
})();
