// dip ui: the page. Plain JavaScript, no library: the image and its mask on two canvases, the curves drawn on a
// third, the server asked through its JSON API (see dip_ui/server.py).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const token = new URLSearchParams(location.search).get("token");
  const POLL_MS = 1000;
  const UNDO_BYTES = 256e6; // undo snapshots are whole masks: at most this much memory
  const MASK_RGB = [255, 31, 90]; // the painted mask (shown at 60 % opacity over the image)
  const MASK_CSS = `rgb(${MASK_RGB.join(",")})`;

  const state = {
    info: null,
    image: null, // {id, width, height, name, channels}
    reference: null, // upload id
    pixels: null, // ImageData of the image's preview (for the overlay colour)
    tool: "brush",
    painting: false,
    last: null,
    undo: [],
    painted: 0, // strokes since the mask was cleared (0: nothing painted)
    savedPaint: null, // the painted mask while the colour mode shows its own
    colourCount: 0,
    estimate: null, // {ms_per_iter, iters, auto_stop, busy, device}
    estimateAsk: 0,
    run: null, // the run shown: its id
    runData: null,
    points: [],
    resultVersion: 0,
    pollTimer: null,
    listTimer: null,
    busy: "", // what the page is doing that Start waits for (uploading, starting), in words
    going: false, // a run of this page (this session) is queued or running
  };

  // --- talking to the server ---

  async function api(path, options = {}) {
    const headers = Object.assign({}, options.headers || {});
    const response = await fetch(path, Object.assign({}, options, { headers, credentials: "same-origin" }));
    let body = null;
    try {
      body = await response.json();
    } catch (e) {
      body = null;
    }
    if (!response.ok) {
      const message = body && body.error ? body.error : `${response.status} ${response.statusText}`;
      throw new Error(message);
    }
    return body;
  }

  async function fetchBlob(path) {
    const response = await fetch(path, { credentials: "same-origin" });
    if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
    return response.blob();
  }

  function notice(message) {
    const el = $("notice");
    el.textContent = message || "";
    el.hidden = !message;
  }

  async function upload(file, kind, name) {
    const limits = state.info.limits;
    if (file.size > limits.max_bytes) {
      throw new Error(`the file is ${megabytes(file.size)}; the upload limit is ${megabytes(limits.max_bytes)}`);
    }
    const query = `kind=${kind}&name=${encodeURIComponent(name || "image")}`;
    return api(`api/uploads?${query}`, { method: "POST", body: file });
  }

  function megabytes(n) {
    return n < 10e6 ? `${(n / 1e6).toFixed(1)} MB` : `${Math.round(n / 1e6)} MB`;
  }

  // --- numbers as words ---

  function duration(seconds) {
    if (seconds < 1) return "under 1 s";
    if (seconds < 90) return `${Math.round(seconds)} s`;
    if (seconds < 90 * 60) return `${Math.round(seconds / 60)} min`;
    if (seconds < 48 * 3600) return `${(seconds / 3600).toFixed(1)} h`;
    return `${(seconds / 86400).toFixed(1)} days`;
  }

  function ordinal(n) {
    const s = ["th", "st", "nd", "rd"];
    const v = n % 100;
    return n + (s[(v - 20) % 10] || s[v] || s[0]);
  }

  // --- the settings ---

  function option(select, value, text) {
    const el = document.createElement("option");
    el.value = value;
    el.textContent = text;
    select.appendChild(el);
    return el;
  }

  function fillSettings() {
    const info = state.info;
    for (const task of info.tasks) {
      const summary = info.task_specs[task].summary;
      option($("task"), task, `${task}: ${summary}`).title = summary;
    }
    for (const backend of info.backends) option($("backend"), backend, backend);
    if (info.default_backend) $("backend").value = info.default_backend;
    for (const device of info.devices) option($("device"), device, device);
    $("kernel").value = info.default_kernel;
    // A field named after a run option takes that option's help and bounds (the text `dip run --help` shows).
    for (const [name, meta] of Object.entries(info.options)) {
      const el = $(name.replace(/_/g, "-"));
      if (!el) continue;
      el.title = meta.help;
      if (el.type !== "number") continue;
      const low = meta.low ?? meta.above;
      if (low !== null) el.min = String(low);
      if (meta.high !== null) el.max = String(meta.high);
    }
    for (const el of document.querySelectorAll("[data-help]")) el.textContent = info.options[el.dataset.help].help;
    fillPresets();
  }

  function fillPresets() {
    const task = $("task").value;
    const select = $("preset");
    select.textContent = "";
    const fallback = state.info.default_presets[task];
    for (const [name, preset] of Object.entries(state.info.presets)) {
      if (preset.task === task) option(select, name, name === fallback ? `${name} (default)` : name);
    }
    select.value = fallback;
    fillNets();
  }

  function fillNets() {
    const preset = state.info.presets[$("preset").value];
    const select = $("net");
    const before = select.value;
    select.textContent = "";
    option(select, "", `the preset's (${preset.net})`);
    for (const net of state.info.nets) if (net !== preset.net) option(select, net, net);
    if ([...select.options].some((o) => o.value === before)) select.value = before;
    $("iters").placeholder = `${preset.iters} (the preset's)`;
    checkIters();
  }

  // A run far shorter than its preset's rarely gets past its input (the CLI warns too, from the same share).
  function checkIters() {
    const name = $("preset").value;
    const planned = state.info.presets[name].iters;
    const share = state.info.few_iters_share;
    const typed = parseInt($("iters").value, 10);
    const short = typed > 0 && typed < share * planned;
    const warning = $("iters-warning");
    const percent = `${Math.round(100 * share)}\u00a0%`;
    warning.hidden = !short;
    warning.textContent = short
      ? `${typed} iterations is far below the ${planned} of the ${name} preset (under ${percent}): the network ` +
        "may be far from done, and the result worse than the input."
      : "";
  }

  // --- the task: everything that differs between tasks is the registry's (info.task_specs), never named here ---

  function spec() {
    return state.info.task_specs[$("task").value];
  }

  function takes(name) {
    return spec().options.includes(name);
  }

  function masked() {
    return takes("mask");
  }

  // The fields of task-specific options (data-option="kernel", "peak"...): shown, timed and sent only for a task
  // that takes the option (the server refuses it from another).
  function optionFields() {
    return [...document.querySelectorAll("input[data-option]")].filter((el) => takes(el.dataset.option));
  }

  function optionValues() {
    const values = {};
    for (const el of optionFields()) {
      if (el.value !== "") values[el.dataset.option] = el.type === "number" ? Number(el.value) : el.value;
    }
    return values;
  }

  function colourMode() {
    return $("mask-colour").checked;
  }

  function settingsChanged() {
    for (const el of document.querySelectorAll("[data-option]")) el.hidden = !takes(el.dataset.option);
    $("mask-tools").hidden = !masked();
    $("mask-canvas").hidden = !masked();
    askEstimate();
    updateStart();
  }

  function planned() {
    const typed = parseInt($("iters").value, 10);
    if (typed > 0) return { iters: typed, auto: false };
    const preset = state.info.presets[$("preset").value];
    return { iters: preset.iters, auto: spec().auto_stop };
  }

  // --- the estimate ---

  async function askEstimate() {
    if (!state.image) return;
    const ask = ++state.estimateAsk;
    const params = new URLSearchParams({
      image: state.image.id,
      task: $("task").value,
      backend: $("backend").value,
      device: $("device").value,
      preset: $("preset").value,
      net: $("net").value,
    });
    for (const [name, value] of Object.entries(optionValues())) params.set(name, value);
    state.estimate = null;
    $("estimate").textContent = "Timing a few steps on this machine…";
    for (;;) {
      let answer;
      try {
        answer = await api(`api/estimate?${params}`);
      } catch (e) {
        if (ask === state.estimateAsk) $("estimate").textContent = `No estimate: ${e.message}`;
        return;
      }
      if (ask !== state.estimateAsk) return; // the settings changed meanwhile
      if (answer.state === "ready") {
        state.estimate = answer;
        showEstimate();
        return;
      }
      if (answer.state === "error") {
        $("estimate").textContent = `No estimate: ${answer.message}`;
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  }

  function showEstimate() {
    const est = state.estimate;
    if (!est) return;
    const plan = planned();
    const seconds = (est.ms_per_iter * plan.iters) / 1000;
    let text = `Estimate here (${est.device}): ${est.ms_per_iter.toFixed(1)} ms/iter x ${plan.iters} iterations ≈ `;
    text += duration(seconds) + (plan.auto ? " at most (auto-stop may end it sooner)" : "");
    if (est.busy) text += "; timed while another run was going, so alone it is faster";
    $("estimate").textContent = text;
  }

  // --- the image ---

  async function chooseImage(file) {
    if (!file) return;
    notice("");
    state.busy = `Uploading ${file.name}…`;
    updateStart();
    $("image-info").textContent = state.busy;
    try {
      const up = await upload(file, "image", file.name);
      const bitmap = await createImageBitmap(await fetchBlob(`api/uploads/${up.id}/preview.png`));
      state.image = up;
      drawImage(bitmap);
      $("image-info").textContent = `${up.name}: ${up.width}x${up.height}, ${up.mode}`;
      $("input-note").textContent = `${up.width}x${up.height}`;
      askEstimate();
    } catch (e) {
      $("image-info").textContent = "";
      notice(`That image was refused: ${e.message}`);
    } finally {
      state.busy = "";
      updateStart();
    }
  }

  function drawImage(bitmap) {
    const { width, height } = bitmap;
    for (const id of ["image-canvas", "mask-canvas"]) {
      $(id).width = width;
      $(id).height = height;
    }
    const ctx = $("image-canvas").getContext("2d", { willReadFrequently: true });
    ctx.drawImage(bitmap, 0, 0);
    state.pixels = ctx.getImageData(0, 0, width, height);
    state.undo = [];
    state.painted = 0;
    state.savedPaint = null;
    const most = Math.max(64, Math.round(Math.max(width, height) / 8));
    $("brush-size").max = String(most);
    if (+$("brush-size").value > most) $("brush-size").value = String(most);
    if (colourMode()) showColourMask();
    $("undo").disabled = true;
  }

  async function chooseReference(file) {
    state.reference = null;
    if (!file) return;
    try {
      const up = await upload(file, "reference", file.name);
      state.reference = up.id;
    } catch (e) {
      notice(`That reference was refused: ${e.message}`);
      $("reference-file").value = "";
    }
  }

  // --- the mask: painted on its own canvas, over the image ---

  function maskContext() {
    return $("mask-canvas").getContext("2d", { willReadFrequently: true });
  }

  function pushUndo() {
    const canvas = $("mask-canvas");
    const most = Math.max(1, Math.min(20, Math.floor(UNDO_BYTES / (canvas.width * canvas.height * 4))));
    state.undo.push({ data: maskContext().getImageData(0, 0, canvas.width, canvas.height), painted: state.painted });
    while (state.undo.length > most) state.undo.shift();
    $("undo").disabled = false;
  }

  function where(event) {
    const canvas = $("mask-canvas");
    const rect = canvas.getBoundingClientRect();
    return {
      x: ((event.clientX - rect.left) * canvas.width) / rect.width,
      y: ((event.clientY - rect.top) * canvas.height) / rect.height,
    };
  }

  function stroke(from, to) {
    const ctx = maskContext();
    ctx.globalCompositeOperation = state.tool === "eraser" ? "destination-out" : "source-over";
    ctx.strokeStyle = MASK_CSS;
    ctx.lineWidth = +$("brush-size").value;
    ctx.lineCap = ctx.lineJoin = "round";
    ctx.beginPath();
    ctx.moveTo(from.x, from.y);
    ctx.lineTo(to.x + 0.01, to.y);
    ctx.stroke();
  }

  function paintable() {
    return state.image && masked() && !colourMode();
  }

  function onPointerDown(event) {
    if (!paintable() || event.button !== 0) return;
    event.preventDefault();
    $("mask-canvas").setPointerCapture(event.pointerId);
    pushUndo();
    state.painting = true;
    state.last = where(event);
    stroke(state.last, state.last);
  }

  function onPointerMove(event) {
    if (!state.painting) return;
    const point = where(event);
    stroke(state.last, point);
    state.last = point;
  }

  function onPointerUp() {
    if (!state.painting) return;
    state.painting = false;
    if (state.tool === "brush") state.painted += 1;
    updateStart();
  }

  function undo() {
    const last = state.undo.pop();
    if (last) {
      maskContext().putImageData(last.data, 0, 0);
      state.painted = last.painted;
    }
    $("undo").disabled = state.undo.length === 0;
    updateStart();
  }

  function clearMask() {
    pushUndo();
    const canvas = $("mask-canvas");
    maskContext().clearRect(0, 0, canvas.width, canvas.height);
    state.painted = 0;
    updateStart();
  }

  function unknownCount() {
    const canvas = $("mask-canvas");
    const data = maskContext().getImageData(0, 0, canvas.width, canvas.height).data;
    let n = 0;
    for (let i = 3; i < data.length; i += 4) if (data[i] >= 128) n += 1;
    return n;
  }

  // The mask the server gets: white = known, black = painted (to fill in), no grey (the brush's soft edge is
  // rounded here at half its opacity, as the server would).
  function maskBlob() {
    const canvas = $("mask-canvas");
    const { width, height } = canvas;
    const src = maskContext().getImageData(0, 0, width, height).data;
    const out = new ImageData(width, height);
    for (let i = 0; i < src.length; i += 4) {
      const v = src[i + 3] >= 128 ? 0 : 255;
      out.data[i] = out.data[i + 1] = out.data[i + 2] = v;
      out.data[i + 3] = 255;
    }
    const tmp = document.createElement("canvas");
    tmp.width = width;
    tmp.height = height;
    tmp.getContext("2d").putImageData(out, 0, 0);
    return new Promise((resolve) => tmp.toBlob(resolve, "image/png"));
  }

  async function loadMask(file) {
    if (!file || !state.image) return;
    try {
      const up = await upload(file, "mask", file.name);
      if (up.width !== state.image.width || up.height !== state.image.height) {
        throw new Error(`the mask is ${up.width}x${up.height} but the image is ${state.image.width}x${state.image.height}`);
      }
      const bitmap = await createImageBitmap(await fetchBlob(`api/uploads/${up.id}/preview.png`));
      const tmp = document.createElement("canvas");
      tmp.width = up.width;
      tmp.height = up.height;
      const tctx = tmp.getContext("2d", { willReadFrequently: true });
      tctx.drawImage(bitmap, 0, 0);
      const src = tctx.getImageData(0, 0, up.width, up.height).data;
      const paint = new ImageData(up.width, up.height);
      const [r, g, b] = MASK_RGB;
      for (let i = 0; i < src.length; i += 4) {
        if ((src[i] + src[i + 1] + src[i + 2]) / 3 < 128) {
          paint.data[i] = r;
          paint.data[i + 1] = g;
          paint.data[i + 2] = b;
          paint.data[i + 3] = 255;
        }
      }
      pushUndo();
      maskContext().putImageData(paint, 0, 0);
      state.painted += 1;
      updateStart();
    } catch (e) {
      notice(`That mask was refused: ${e.message}`);
    } finally {
      $("mask-file").value = "";
    }
  }

  // The overlay colour: the pixels of that colour (within 2 of 255 per channel, as the server matches) shown as
  // the mask; the server makes the mask itself (the `mask_color` option).
  function showColourMask() {
    if (!state.pixels) return;
    const hex = $("mask-color").value;
    const want = [1, 3, 5].map((k) => parseInt(hex.slice(k, k + 2), 16));
    const src = state.pixels.data;
    const paint = new ImageData(state.pixels.width, state.pixels.height);
    const [r, g, b] = MASK_RGB;
    let n = 0;
    for (let i = 0; i < src.length; i += 4) {
      if (Math.abs(src[i] - want[0]) <= 2 && Math.abs(src[i + 1] - want[1]) <= 2 && Math.abs(src[i + 2] - want[2]) <= 2) {
        paint.data[i] = r;
        paint.data[i + 1] = g;
        paint.data[i + 2] = b;
        paint.data[i + 3] = 255;
        n += 1;
      }
    }
    maskContext().putImageData(paint, 0, 0);
    state.colourCount = n;
    const share = ((100 * n) / (paint.width * paint.height)).toFixed(1);
    $("colour-count").textContent = n ? `${n} pixels of this colour (${share}%) will be filled in` : "No pixel has this colour";
    updateStart();
  }

  function setMaskSource() {
    const canvas = $("mask-canvas");
    const ctx = maskContext();
    if (colourMode()) {
      state.savedPaint = ctx.getImageData(0, 0, canvas.width, canvas.height);
      showColourMask();
    } else if (state.savedPaint) {
      ctx.putImageData(state.savedPaint, 0, 0);
      state.savedPaint = null;
    } else {
      ctx.clearRect(0, 0, canvas.width, canvas.height);
    }
    $("paint-tools").hidden = colourMode();
    $("colour-tools").hidden = !colourMode();
    updateStart();
  }

  function setTool(tool) {
    state.tool = tool;
    $("brush").classList.toggle("active", tool === "brush");
    $("eraser").classList.toggle("active", tool === "eraser");
  }

  // --- runs ---

  // Start, and the status line's word on what is ready and what is missing: Start waits for an image (and a mask
  // where the task takes one), and for the end of a run of this page that is queued or running.
  function updateStart() {
    let missing = "";
    let ready = "image loaded";
    if (state.busy) {
      missing = state.busy;
    } else if (!state.image) {
      missing = "Choose an image, a task and its settings, then press Start.";
    } else if (masked() && colourMode()) {
      const colour = $("mask-color").value;
      if (state.colourCount === 0) missing = `Image loaded; no pixel has the colour ${colour}: choose the overlay's.`;
      ready += `, mask: the pixels of ${colour}`;
    } else if (masked()) {
      if (state.painted === 0) missing = "Image loaded; paint the mask (or load one, or choose its colour).";
      ready += ", mask painted";
    }
    if (!missing && state.going) missing = "A run of yours is going: Start comes back when it ends (or is stopped).";
    $("start").disabled = Boolean(missing);
    $("start").title = missing;
    $("readiness").textContent = missing || `Ready (${ready}): press Start.`;
    $("readiness").hidden = going(state.runData); // the shown run's progress says it
  }

  function going(run) {
    return Boolean(run) && (run.state === "queued" || run.state === "running");
  }

  async function start() {
    notice("");
    state.busy = "Starting the run…";
    updateStart();
    try {
      const body = {
        image: state.image.id,
        reference: state.reference,
        task: $("task").value,
        backend: $("backend").value,
        device: $("device").value,
        preset: $("preset").value,
        net: $("net").value,
        iters: $("iters").value,
        ...optionValues(), // another task refuses these
      };
      if (masked()) {
        if (colourMode()) {
          body.mask_color = $("mask-color").value;
        } else {
          if (unknownCount() === 0) throw new Error("the painted mask is empty: paint over what to fill in");
          body.mask = (await upload(await maskBlob(), "mask", `${state.image.name}_mask`)).id;
        }
      }
      const run = await api("api/runs", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      state.going = true; // until the list of runs says it ended
      show(run.id);
      listRuns();
      if (run.forgotten && run.forgotten.length) {
        const n = run.forgotten.length;
        notice(`${n} older finished run${n > 1 ? "s were" : " was"} deleted to make room: ` +
          `at most ${state.info.limits.kept_runs} runs are kept.`);
      }
    } catch (e) {
      notice(`The run was not started: ${e.message}`);
    } finally {
      state.busy = "";
      updateStart();
    }
  }

  async function stop() {
    if (!state.run) return;
    $("stop").disabled = true;
    try {
      await api(`api/runs/${state.run}/stop`, { method: "POST" });
    } catch (e) {
      notice(`Could not stop the run: ${e.message}`);
    }
  }

  function show(runId) {
    clearTimeout(state.pollTimer);
    state.run = runId;
    state.runData = null;
    state.points = [];
    state.resultVersion = 0;
    $("result").hidden = true;
    $("result-empty").hidden = false;
    $("warnings").textContent = "";
    drawCurves();
    poll();
  }

  async function poll() {
    const runId = state.run;
    if (!runId) return;
    let data;
    try {
      data = await api(`api/runs/${runId}?since=${state.points.length}`);
    } catch (e) {
      if (runId === state.run) {
        $("run-state").textContent = `This run is gone: ${e.message}`;
        $("status").dataset.state = "failed";
        state.run = null;
        state.runData = null;
        updateStart();
      }
      return;
    }
    if (runId !== state.run) return;
    const changed = !state.runData || state.runData.state !== data.state;
    if (data.since === state.points.length) state.points.push(...data.points);
    state.runData = data;
    showProgress(data);
    drawCurves();
    if (changed) listRuns();
    if (data.state === "queued" || data.state === "running") {
      state.pollTimer = setTimeout(poll, POLL_MS);
    }
  }

  function showProgress(run) {
    const status = $("status");
    status.dataset.state = run.state;
    let text;
    if (run.state === "queued") {
      text = `Waiting: ${ordinal(run.position)} in line for the ${run.device}`;
    } else if (run.state === "running") {
      text = `Running on ${run.backend} ${run.device}: iteration ${run.iter} of ${run.iters}`;
      if (run.auto_stop) text += " at most";
      if (run.loss !== null) text += `, loss ${run.loss.toExponential(2)}`;
      if (run.ms_per_iter) text += `, ${run.ms_per_iter.toFixed(1)} ms/iter`;
      if (run.eta_s !== null) text += `, ${duration(run.eta_s)} left`;
    } else {
      text = run.message || run.state;
    }
    $("run-state").textContent = text;
    $("stop").disabled = !going(run);
    updateStart();
    const warnings = $("warnings");
    warnings.textContent = "";
    for (const w of run.warnings) {
      const li = document.createElement("li");
      li.textContent = w;
      warnings.appendChild(li);
    }
    if (run.result_version > 0 && run.result_version !== state.resultVersion) {
      state.resultVersion = run.result_version;
      const img = $("result");
      img.onload = () => {
        img.hidden = false;
        $("result-empty").hidden = true;
      };
      img.src = `api/runs/${run.id}/result.png?v=${run.result_version}`;
    }
    const final = run.state !== "queued" && run.state !== "running";
    $("result-note").textContent = run.result_version > 0 ? (final ? `(${run.state})` : `(so far, iteration ${run.iter})`) : "";
    link("dl-result", run, "result.png", run.result_version > 0);
    link("dl-mask", run, "mask.png", run.has_mask);
    link("dl-report", run, "report.json", run.has_report);
  }

  function link(id, run, file, present) {
    const a = $(id);
    a.hidden = !present;
    if (present) a.href = `api/runs/${run.id}/${file}?download=1`;
  }

  // The session's runs, listed again every few seconds while one of them waits or goes.
  async function listRuns() {
    clearTimeout(state.listTimer);
    let data;
    try {
      data = await api("api/runs");
    } catch (e) {
      return;
    }
    state.going = data.runs.some(going);
    if (state.going) state.listTimer = setTimeout(listRuns, 3 * POLL_MS);
    updateStart();
    const list = $("runs");
    list.textContent = "";
    for (const run of data.runs.slice().reverse()) {
      const li = document.createElement("li");
      li.classList.toggle("current", run.id === state.run);
      const text = document.createElement("span");
      let what = `${run.name}: ${run.task} on ${run.backend} ${run.device}, ${run.state}`;
      if (run.state === "queued") what += ` (${ordinal(run.position)} in line)`;
      else if (run.iter) what += ` (${run.iter} iterations)`;
      text.textContent = what;
      const open = document.createElement("button");
      open.textContent = "show";
      open.addEventListener("click", () => {
        show(run.id);
        listRuns();
      });
      const remove = document.createElement("button");
      remove.textContent = "remove";
      remove.addEventListener("click", async () => {
        try {
          await api(`api/runs/${run.id}`, { method: "DELETE" });
        } catch (e) {
          notice(e.message);
        }
        if (run.id === state.run) {
          state.run = null;
          state.runData = null;
          clearTimeout(state.pollTimer);
          $("run-state").textContent = "";
          $("status").dataset.state = "idle";
        }
        listRuns();
      });
      li.append(text, open, remove);
      list.appendChild(li);
    }
  }

  // --- the curves: loss (log scale, left) and PSNR (right), drawn on a canvas; their legend is the page's, above
  // it, where it covers no curve ---

  function showLegend(series) {
    const legend = $("curves-legend");
    legend.textContent = "";
    legend.hidden = !series.length;
    for (const s of series) {
      const item = document.createElement("span");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.backgroundColor = s.colour;
      item.append(swatch, s.label);
      legend.appendChild(item);
    }
  }

  function drawCurves() {
    const canvas = $("curves");
    const ratio = window.devicePixelRatio || 1;
    const cssW = canvas.clientWidth || 760;
    const cssH = canvas.clientHeight || 230;
    canvas.width = Math.round(cssW * ratio);
    canvas.height = Math.round(cssH * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, cssW, cssH);
    const box = { left: 62, right: cssW - 58, top: 14, bottom: cssH - 30 };
    ctx.font = "11px system-ui, sans-serif";
    ctx.strokeStyle = "#d9dde5";
    ctx.strokeRect(box.left, box.top, box.right - box.left, box.bottom - box.top);
    const points = state.points;
    const run = state.runData;
    if (!points.length) {
      showLegend([]);
      ctx.fillStyle = "#6a7284";
      ctx.fillText("The curves appear here once the run has started.", box.left + 12, box.top + 24);
      return;
    }
    const withReference = points.some((p) => p[3] !== null);
    const loss = points.filter((p) => p[1] > 0).map((p) => [p[0], Math.log10(p[1])]);
    const psnr = points.filter((p) => (withReference ? p[3] : p[2]) !== null).map((p) => [p[0], withReference ? p[3] : p[2]]);
    const lastIter = points[points.length - 1][0];
    const xMax = Math.max(lastIter, run ? run.iters : lastIter, 2);
    const x = (i) => box.left + ((i - 1) / (xMax - 1)) * (box.right - box.left);
    const range = (series) => {
      let lo = Infinity;
      let hi = -Infinity;
      for (const [, v] of series) {
        if (Number.isFinite(v)) {
          lo = Math.min(lo, v);
          hi = Math.max(hi, v);
        }
      }
      if (!Number.isFinite(lo)) return [0, 1];
      if (hi - lo < 1e-9) return [lo - 0.5, hi + 0.5];
      const pad = (hi - lo) * 0.05;
      return [lo - pad, hi + pad];
    };
    const series = [
      { data: loss, colour: "#2457c5", range: range(loss), side: "left", label: "loss (log)" },
      { data: psnr, colour: "#d9480f", range: range(psnr), side: "right",
        label: withReference ? "PSNR vs reference (dB)" : "PSNR of the fit vs input (dB)" },
    ];
    showLegend(series);
    for (const s of series) {
      const [lo, hi] = s.range;
      const y = (v) => box.bottom - ((v - lo) / (hi - lo)) * (box.bottom - box.top);
      // axis ticks
      ctx.fillStyle = s.colour;
      ctx.textAlign = s.side === "left" ? "right" : "left";
      for (let k = 0; k <= 4; k += 1) {
        const v = lo + ((hi - lo) * k) / 4;
        const text = s.side === "left" ? (10 ** v).toExponential(1) : v.toFixed(1);
        ctx.fillText(text, s.side === "left" ? box.left - 4 : box.right + 4, y(v) + 4);
      }
      // the line, thinned to about two points per pixel
      const step = Math.max(1, Math.floor(s.data.length / (2 * (box.right - box.left))));
      ctx.strokeStyle = s.colour;
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      let started = false;
      for (let k = 0; k < s.data.length; k += step) {
        const [i, v] = s.data[k];
        if (!Number.isFinite(v)) continue;
        if (started) ctx.lineTo(x(i), y(v));
        else ctx.moveTo(x(i), y(v));
        started = true;
      }
      ctx.stroke();
    }
    // x axis
    ctx.fillStyle = "#6a7284";
    ctx.textAlign = "center";
    for (let k = 0; k <= 5; k += 1) {
      const i = Math.round(1 + ((xMax - 1) * k) / 5);
      ctx.fillText(String(i), x(i), box.bottom + 14);
    }
    ctx.fillText("iteration", (box.left + box.right) / 2, box.bottom + 27);
  }

  // --- wiring ---

  function wire() {
    $("file").addEventListener("change", (e) => chooseImage(e.target.files[0]));
    $("reference-file").addEventListener("change", (e) => chooseReference(e.target.files[0]));
    const drop = $("drop");
    drop.addEventListener("dragover", (e) => {
      e.preventDefault();
      drop.classList.add("over");
    });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (e) => {
      e.preventDefault();
      drop.classList.remove("over");
      if (e.dataTransfer.files.length) chooseImage(e.dataTransfer.files[0]);
    });
    $("task").addEventListener("change", () => {
      fillPresets();
      settingsChanged();
    });
    $("preset").addEventListener("change", () => {
      fillNets();
      settingsChanged();
    });
    for (const id of ["backend", "device", "net"]) $(id).addEventListener("change", settingsChanged);
    for (const el of document.querySelectorAll("input[data-option]")) el.addEventListener("change", settingsChanged);
    $("iters").addEventListener("input", () => {
      showEstimate();
      checkIters();
    });
    const canvas = $("mask-canvas");
    canvas.addEventListener("pointerdown", onPointerDown);
    canvas.addEventListener("pointermove", onPointerMove);
    canvas.addEventListener("pointerup", onPointerUp);
    canvas.addEventListener("pointercancel", onPointerUp);
    $("brush").addEventListener("click", () => setTool("brush"));
    $("eraser").addEventListener("click", () => setTool("eraser"));
    $("undo").addEventListener("click", undo);
    $("clear").addEventListener("click", clearMask);
    $("brush-size").addEventListener("input", () => {
      $("brush-size-value").textContent = $("brush-size").value;
    });
    $("mask-file").addEventListener("change", (e) => loadMask(e.target.files[0]));
    $("mask-paint").addEventListener("change", setMaskSource);
    $("mask-colour").addEventListener("change", setMaskSource);
    $("mask-color").addEventListener("input", showColourMask);
    $("start").addEventListener("click", start);
    $("stop").addEventListener("click", stop);
    window.addEventListener("resize", drawCurves);
  }

  // The session: asked for once (the token, if the server has one, is exchanged for the cookie here and then
  // leaves the address bar), then kept alive while the page is open, so that nothing of it is forgotten.
  async function keepSession() {
    const headers = { "Content-Type": "application/json" };
    if (token) headers["X-Dip-Token"] = token;
    const answer = await api("api/session", { method: "POST", headers, body: "{}" });
    $("kept").textContent = answer.kept;
    return answer;
  }

  async function main() {
    wire();
    try {
      const session = await keepSession();
      if (token) history.replaceState(null, "", location.pathname);
      setInterval(() => keepSession().catch((e) => notice(`The server did not answer: ${e.message}`)),
        session.ping_s * 1000);
      state.info = await api("api/info");
    } catch (e) {
      notice(`The server did not answer: ${e.message}`);
      return;
    }
    fillSettings();
    settingsChanged();
    drawCurves();
    const runs = (await api("api/runs")).runs;
    if (runs.length) show(runs[runs.length - 1].id); // after a reload: the latest run
    listRuns();
  }

  main();
})();
