"use strict";
// The explorer's interface: latent pad, decoded view, one slider a latent dimension, the
// interpolation strip and the manifold grid. All views share one current code z.
//
// The pad shows a plane in latent space: z itself for a 2-D latent, z along the horizontal for a
// 1-D latent (the vertical direction is unused), otherwise the plane along the data's top two
// principal directions. A pad position (u, v) maps back to the code on that plane
// through the anchor (the data mean, or an example the user centres on):
//     z = anchor + (u - u_anchor) b1 + (v - v_anchor) b2
// so a code's projection is always the point it was decoded from.

(() => {
  const DATA = JSON.parse(document.getElementById("vaekit-data").textContent);
  const $ = (id) => document.getElementById(id);

  const [CHANNELS, HEIGHT, WIDTH] = DATA.model.image_shape;
  const EXAMPLE_SIZE = CHANNELS * HEIGHT * WIDTH;
  const LATENT = DATA.model.latent_size;
  const decoder = new VaekitDecoder.Decoder(DATA.decoder, LATENT);
  if (decoder.outputSize !== EXAMPLE_SIZE) throw new Error(`the decoder gives ${decoder.outputSize} values, images hold ${EXAMPLE_SIZE}`);
  const pixels = VaekitPixels.imageWriter(DATA.model.image_shape);
  const TILE = pixels.tile;
  const [SHOWN_LOW, SHOWN_HIGH] = DATA.display; // the values drawn black and white (images.display_range in Python)
  const UNLABELLED = "#1f77b4"; // the PNG scatter's colour for unlabelled points (matplotlib's tab:blue)
  const PICK_RADIUS = 8; // css pixels from a shown example for a click to pick it
  const GRID_SLICE_MS = 12; // the grid decodes for about this long before it lets the browser draw a frame or take input
  const SLIDER_SPREAD = 3; // sliders reach this many standard deviations (at least the prior's) either side

  // Decoded values as the pixels take them, 0 black to 1 white: real-valued data are stretched from
  // their lowest value to their highest, as in the PNG figures (in place: a decode is drawn before the next).
  function shown(values) {
    if (SHOWN_LOW === 0 && SHOWN_HIGH === 1) return values;
    for (let i = 0; i < values.length; i++) values[i] = (values[i] - SHOWN_LOW) / (SHOWN_HIGH - SHOWN_LOW);
    return values;
  }

  // -- the plane and the data on it ---------------------------------------------------------------

  const plane = {
    origin: Float32Array.from(DATA.plane.origin),
    b1: Float32Array.from(DATA.plane.basis[0]),
    b2: Float32Array.from(DATA.plane.basis[1]),
    explained: DATA.plane.explained,
  };

  function project(z, offset = 0) {
    let u = 0, v = 0;
    for (let k = 0; k < LATENT; k++) {
      const d = z[offset + k] - plane.origin[k];
      u += d * plane.b1[k];
      v += d * plane.b2[k];
    }
    return [u, v];
  }

  const points = loadPoints(DATA.points);

  // Point i is example index[i] of the split: with more examples than --points the pad holds a
  // random subset, so i (the position in the subset) is not the number a user can look up.
  function loadPoints(p) {
    if (!p) return { n: 0, index: [], z: new Float32Array(0), u: [], v: [], labels: null, colours: null, names: null, images: null, nImages: 0 };
    const z = VaekitDecoder.float32FromBase64(p.z);
    const u = new Float32Array(p.n), v = new Float32Array(p.n);
    for (let i = 0; i < p.n; i++) [u[i], v[i]] = project(z, i * LATENT);
    return {
      n: p.n, index: p.index, z, u, v, labels: p.labels, colours: p.colours, names: p.names,
      images: VaekitDecoder.bytesFromBase64(p.images), nImages: p.n_images,
    };
  }

  // a label as the PNG figures name it: "2: cat" where the data name their classes, else "2"
  const labelName = (label) => (points.names && points.names[label]) || String(label);

  function exampleName(i) { // "example #index (label y)": the example's number in the split
    const label = points.labels ? ` (label ${labelName(points.labels[i])})` : "";
    return `example #${points.index[i]}${label}`;
  }

  const classes = points.labels ? [...new Set(points.labels)].sort((a, b) => a - b) : [];
  const classIndex = new Map(classes.map((label, i) => [label, i]));
  const hiddenClasses = new Set();
  // each label's colour in the PNG figures (plots.label_colours), sent by the page; past 20 labels, hues
  const colourOf = (i) => (points.colours && points.colours[classes[i]]) || `hsl(${(i * 137.5) % 360} 65% 62%)`;
  const pointColour = (i) => (points.labels ? colourOf(classIndex.get(points.labels[i])) : UNLABELLED);
  const pointShown = (i) => !points.labels || !hiddenClasses.has(points.labels[i]);

  const spread = latentSpread();

  function latentSpread() { // per dimension: the larger of the data's standard deviation and the prior's (1)
    const sd = new Float64Array(LATENT).fill(1);
    if (points.n < 2) return sd;
    for (let k = 0; k < LATENT; k++) {
      let sum = 0, sum2 = 0;
      for (let i = 0; i < points.n; i++) {
        const x = points.z[i * LATENT + k];
        sum += x;
        sum2 += x * x;
      }
      const mean = sum / points.n;
      sd[k] = Math.max(1, Math.sqrt(Math.max(0, sum2 / points.n - mean * mean)));
    }
    return sd;
  }

  const view = padView();

  // A square window on the plane holding 99% of the data and the plane's origin (0, 0), where the
  // cursor starts: the prior mean for a latent of 1 or 2 dimensions, the data mean for more. Data
  // that sits away from the prior mean (as a 1-D latent's often does) would otherwise leave the
  // starting cursor off the pad.
  function padView() {
    if (points.n === 0) return { cu: 0, cv: 0, half: 3 };
    const quantile = (values, q) => {
      const sorted = Float64Array.from(values).sort();
      return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
    };
    const u0 = Math.min(0, quantile(points.u, 0.005)), u1 = Math.max(0, quantile(points.u, 0.995));
    const v0 = Math.min(0, quantile(points.v, 0.005)), v1 = Math.max(0, quantile(points.v, 0.995));
    const half = Math.max(0.5, 0.58 * Math.max(u1 - u0, v1 - v0));
    return { cu: (u0 + u1) / 2, cv: (v0 + v1) / 2, half };
  }

  // -- state: one current code, an anchor, up to two endpoints ------------------------------------

  const defaultAnchorName = LATENT > 2 && points.n > 0 ? "the data mean" : "the origin (prior mean)";
  const state = {
    z: Float32Array.from(plane.origin),
    anchor: { z: Float32Array.from(plane.origin), name: defaultAnchorName, uv: project(plane.origin) },
    endpoints: [],
    lastClicked: null,
    hoverExample: -1,
    strip: [],
    grid: { us: [], vs: [] },
  };

  function onPlane(u, v, out = new Float32Array(LATENT)) {
    const [ua, va] = state.anchor.uv;
    const a = state.anchor.z;
    for (let k = 0; k < LATENT; k++) out[k] = a[k] + (u - ua) * plane.b1[k] + (v - va) * plane.b2[k];
    return out;
  }

  function setZ(z) {
    state.z.set(z);
    requestFrame();
  }

  // -- the pad ---------------------------------------------------------------------------------------

  const padCanvas = $("pad");
  const pad = new VaekitPad.LatentPad(padCanvas, view, axisNames(), {
    n: points.n,
    u: points.u,
    v: points.v,
    colour: (i) => (pointShown(i) ? pointColour(i) : null),
    shown: pointShown,
  });

  function axisNames() {
    if (LATENT === 1) return ["z₁", "(unused: 1-D latent)"];
    if (LATENT === 2 || !plane.explained) return ["z₁", "z₂"];
    const pct = (f) => `${(100 * f).toFixed(0)}% of variance`;
    return [`PC 1 (${pct(plane.explained[0])})`, `PC 2 (${pct(plane.explained[1])})`];
  }

  padCanvas.addEventListener("pointermove", (event) => {
    const [x, y] = pad.pointer(event);
    state.hoverExample = pad.nearestDot(x, y, PICK_RADIUS);
    onPlane(...pad.fromPad(x, y), state.z);
    requestFrame();
  });

  padCanvas.addEventListener("pointerleave", () => {
    state.hoverExample = -1;
    requestFrame();
  });

  padCanvas.addEventListener("click", (event) => {
    const [x, y] = pad.pointer(event);
    const example = pad.nearestDot(x, y, PICK_RADIUS);
    const endpoint = example >= 0 ? exampleEndpoint(example) : pointEndpoint(onPlane(...pad.fromPad(x, y)));
    state.endpoints = state.endpoints.length === 2 ? [endpoint] : [...state.endpoints, endpoint];
    state.lastClicked = endpoint;
    $("anchor-selected").disabled = false;
    setZ(endpoint.z);
    updateStrip();
  });

  padCanvas.addEventListener("keydown", (event) => {
    const moves = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, 1], ArrowDown: [0, -1] };
    if (event.key === "Escape") {
      clearEndpoints();
    } else if (moves[event.key]) {
      const [u, v] = project(state.z);
      const step = view.half / 50;
      onPlane(u + moves[event.key][0] * step, v + moves[event.key][1] * step, state.z);
      requestFrame();
    } else {
      return;
    }
    event.preventDefault();
  });

  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && event.target !== padCanvas) clearEndpoints();
  });

  function exampleEndpoint(i) {
    return { z: points.z.slice(i * LATENT, (i + 1) * LATENT), name: exampleName(i), example: i };
  }

  function pointEndpoint(z) {
    const [u, v] = project(z);
    const where = LATENT <= 2 ? formatVector(z) : `plane (${fixed(u)}, ${fixed(v)})`;
    return { z, name: `z = ${where}`, example: -1 };
  }

  // -- legend ----------------------------------------------------------------------------------------

  function buildLegend() {
    const legend = $("legend");
    if (!points.labels) {
      legend.textContent = points.n ? "" : "No data on the pad: the page was written without examples.";
      return;
    }
    classes.forEach((label, i) => {
      const button = document.createElement("button");
      button.type = "button";
      button.title = "show or hide this label";
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = colourOf(i);
      button.append(swatch, labelName(label));
      button.addEventListener("click", () => {
        if (hiddenClasses.has(label)) hiddenClasses.delete(label);
        else hiddenClasses.add(label);
        button.classList.toggle("off", hiddenClasses.has(label));
        pad.drawBase();
        requestFrame();
      });
      legend.append(button);
    });
  }

  // -- sliders and the anchor ------------------------------------------------------------------------

  const sliders = [];

  function buildSliders() {
    const box = $("sliders");
    for (let k = 0; k < LATENT; k++) {
      const row = document.createElement("label");
      row.className = "slider";
      const name = document.createElement("span");
      name.textContent = `z${k + 1}`;
      const input = document.createElement("input");
      input.type = "range";
      input.setAttribute("aria-label", `latent dimension ${k + 1}`);
      const output = document.createElement("output");
      input.addEventListener("input", () => {
        state.z[k] = Number(input.value);
        requestFrame();
      });
      row.append(name, input, output);
      box.append(row);
      sliders.push({ input, output });
    }
    centreSliders();
  }

  function centreSliders() {
    sliders.forEach(({ input }, k) => {
      const half = SLIDER_SPREAD * spread[k];
      input.min = String(state.anchor.z[k] - half);
      input.max = String(state.anchor.z[k] + half);
      input.step = String(half / 500);
    });
  }

  function setAnchor(z, name) {
    state.anchor = { z: Float32Array.from(z), name, uv: project(z) };
    $("anchor-name").textContent = name;
    centreSliders();
    setZ(z);
    describePlane();
    renderGrid();
  }

  $("anchor-mean").textContent = LATENT > 2 && points.n ? "data mean" : "origin";
  $("anchor-mean").addEventListener("click", () => setAnchor(plane.origin, defaultAnchorName));
  $("anchor-selected").addEventListener("click", () => {
    if (state.lastClicked) setAnchor(state.lastClicked.z, state.lastClicked.name);
  });
  const randomButton = $("anchor-random");
  randomButton.disabled = points.n === 0;
  randomButton.addEventListener("click", () => {
    const i = Math.floor(Math.random() * points.n);
    setAnchor(points.z.slice(i * LATENT, (i + 1) * LATENT), exampleName(i));
  });

  function describePlane() {
    const note = $("plane-note");
    if (LATENT === 1) note.textContent = "A 1-D latent: only the horizontal position matters.";
    else if (LATENT === 2) note.textContent = "The pad is the whole 2-D latent space; dots are the encoded examples' means.";
    else if (!plane.explained) note.textContent = `The pad is the plane through ${state.anchor.name} along latent `
      + `dimensions 1 and 2 of the ${LATENT}-D latent space (the page was written without data to find its principal directions).`;
    else note.textContent = `The pad is the plane through ${state.anchor.name} along the data's top two principal `
      + `directions of the ${LATENT}-D latent space; dots are the encoded examples' means projected onto it.`;
  }

  // -- the frame: decode the current z once per animation frame --------------------------------------
  // Input handlers only set state.z and ask for a frame; however many pointer events arrive, the
  // decoder runs once per displayed frame, on the latest z, so a slow decoder never queues work.

  let framePending = false;
  let framesDrawn = 0;
  let decodeMs = 0;
  const frameTimes = [];

  function requestFrame() {
    if (framePending) return;
    framePending = true;
    requestAnimationFrame(renderFrame);
  }

  function renderFrame(now) {
    framePending = false;
    framesDrawn++;
    const start = performance.now();
    pixels.paint($("decoded"), shown(decoder.decode(state.z)), 0, 255);
    const took = performance.now() - start;
    decodeMs = decodeMs ? 0.9 * decodeMs + 0.1 * took : took;
    frameTimes.push(now);
    while (frameTimes.length && frameTimes[0] < now - 1000) frameTimes.shift();
    pad.draw({
      cursor: project(state.z),
      ends: state.endpoints.map((e) => project(e.z)),
      hoverDot: state.hoverExample,
    });
    updateReadout();
  }

  function updateReadout() {
    const [u, v] = project(state.z);
    $("z-value").textContent = LATENT <= 6
      ? formatVector(state.z)
      : `plane (${fixed(u)}, ${fixed(v)}), |z| = ${fixed(Math.hypot(...state.z))}`;
    const fps = frameTimes.length >= 10 ? ` · ${frameTimes.length} frames/s` : ""; // only while z keeps changing
    $("stats").textContent = `decode ${decodeMs.toFixed(2)} ms${fps}`;
    sliders.forEach(({ input, output }, k) => {
      if (document.activeElement !== input) input.value = String(state.z[k]);
      output.textContent = fixed(state.z[k]);
    });
    showNearest();
  }

  function showNearest() { // the encoded example closest to z in the full latent space
    if (points.n === 0) return;
    let best = 0, bestDistance = Infinity;
    for (let i = 0; i < points.n; i++) {
      let d = 0;
      for (let k = 0; k < LATENT; k++) d += (points.z[i * LATENT + k] - state.z[k]) ** 2;
      if (d < bestDistance) [best, bestDistance] = [i, d];
    }
    const canvas = $("nearest");
    canvas.style.visibility = best < points.nImages ? "visible" : "hidden";
    if (best < points.nImages) pixels.paint(canvas, points.images, best * EXAMPLE_SIZE, 1);
    const label = points.labels ? `label ${labelName(points.labels[best])} · ` : "";
    $("nearest-label").textContent = `${label}#${points.index[best]} · ${Math.sqrt(bestDistance).toFixed(2)} away`;
  }

  function formatVector(z) {
    return `(${Array.from(z, (x) => fixed(x)).join(", ")})`;
  }

  function fixed(x, digits = 2) { // no "-0.00" for a tiny negative number
    return (Math.abs(x) < 0.5 * 10 ** -digits ? 0 : x).toFixed(digits);
  }

  // -- interpolation strip ---------------------------------------------------------------------------

  const strip = $("strip");

  function clearEndpoints() {
    state.endpoints = [];
    updateStrip();
    requestFrame();
  }

  $("strip-clear").addEventListener("click", clearEndpoints);
  $("strip-steps").addEventListener("change", updateStrip);

  function stripLayout() { // cells: the originals (when both ends are examples with images) and the steps
    const steps = Number($("strip-steps").value);
    const [a, b] = state.endpoints;
    const originals = a.example >= 0 && b.example >= 0 && a.example < points.nImages && b.example < points.nImages;
    const gap = 1, wideGap = 4;
    const lefts = [];
    let x = gap;
    if (originals) { lefts.push(x); x += TILE.w + wideGap; }
    for (let i = 0; i < steps; i++) { lefts.push(x); x += TILE.w + gap; }
    if (originals) { x += wideGap - gap; lefts.push(x); x += TILE.w + gap; }
    return { steps, originals, lefts, width: x, height: TILE.h + 2 * gap };
  }

  function updateStrip() {
    const ready = state.endpoints.length === 2;
    strip.hidden = !ready;
    $("strip-empty").hidden = ready;
    $("strip-clear").disabled = state.endpoints.length === 0;
    $("strip-ends").replaceChildren(...state.endpoints.flatMap((e, i) => [
      ...(i ? [" → "] : []), Object.assign(document.createElement("b"), { textContent: "AB"[i] }), ` ${e.name}`,
    ]));
    if (!ready) {
      state.strip = [];
      return;
    }
    const layout = stripLayout();
    const [a, b] = state.endpoints;
    state.strip = Array.from({ length: layout.steps }, (_, i) => {
      const t = layout.steps === 1 ? 0 : i / (layout.steps - 1);
      return a.z.map((x, k) => (1 - t) * x + t * b.z[k]);
    });
    strip.width = layout.width;
    strip.height = layout.height;
    const ctx = strip.getContext("2d");
    const image = pixels.sheet(ctx, layout.width, layout.height);
    const cells = layout.lefts.slice(layout.originals ? 1 : 0);
    state.strip.forEach((z, i) => pixels.write(image, shown(decoder.decode(z)), 0, 255, cells[i], 1));
    if (layout.originals) {
      pixels.write(image, points.images, a.example * EXAMPLE_SIZE, 1, layout.lefts[0], 1);
      pixels.write(image, points.images, b.example * EXAMPLE_SIZE, 1, layout.lefts[layout.lefts.length - 1], 1);
    }
    ctx.putImageData(image, 0, 0);
    strip.title = layout.originals ? "outer images: the two examples; inner: decoded steps from A to B" : "decoded steps from A to B";
    state.stripLayout = { ...layout, cells };
  }

  strip.addEventListener("pointermove", (event) => {
    if (!state.strip.length) return;
    const rect = strip.getBoundingClientRect();
    const x = ((event.clientX - rect.left) / rect.width) * strip.width;
    const { cells } = state.stripLayout;
    let step = 0;
    cells.forEach((left, i) => { if (x >= left - 0.5) step = i; });
    if (step < state.strip.length) setZ(state.strip[step]);
  });

  // -- manifold grid ---------------------------------------------------------------------------------

  const grid = $("grid");
  let gridGeneration = 0;

  // Pad coordinates of the cell centres, left to right (n columns) and top to bottom (n rows). A 1-D
  // latent has one row: its pad's vertical direction decodes nothing, so every row would be the same.
  function gridAxes(n, spacing) {
    const [ua, va] = state.anchor.uv;
    const offsets = (count) => (spacing === "ppf"
      ? Array.from({ length: count }, (_, i) => VaekitDecoder.inverseNormalCdf((i + 0.5) / count))
      : Array.from({ length: count }, (_, i) => ((i + 0.5) / count - 0.5) * 2 * view.half));
    const across = offsets(n), down = offsets(LATENT === 1 ? 1 : n);
    return spacing === "ppf"
      ? { us: across.map((o) => ua + o), vs: down.map((o) => va - o) }
      : { us: across.map((o) => view.cu + o), vs: down.map((o) => view.cv - o) };
  }

  async function renderGrid() {
    const generation = ++gridGeneration;
    const n = Number($("grid-size").value);
    const spacing = document.querySelector("input[name=grid-spacing]:checked").value;
    const axes = gridAxes(n, spacing);
    const columns = axes.us.length, rows = axes.vs.length, cells = columns * rows;
    state.grid = axes;
    grid.width = columns * (TILE.w + 1) + 1;
    grid.height = rows * (TILE.h + 1) + 1;
    const ctx = grid.getContext("2d");
    const image = pixels.sheet(ctx, grid.width, grid.height);
    const start = performance.now();
    let sliceStart = start;
    const z = new Float32Array(LATENT);
    for (let cell = 0; cell < cells; cell++) {
      const row = Math.floor(cell / columns), column = cell % columns;
      onPlane(axes.us[column], axes.vs[row], z);
      pixels.write(image, shown(decoder.decode(z)), 0, 255, 1 + column * (TILE.w + 1), 1 + row * (TILE.h + 1));
      // A conv decoder takes milliseconds a code: after each short slice (checked after every cell)
      // give the browser a turn, so that the pad's frames and input come in while a large grid fills.
      if (performance.now() - sliceStart > GRID_SLICE_MS && cell < cells - 1) {
        ctx.putImageData(image, 0, 0);
        await nextTask();
        if (generation !== gridGeneration) return;
        sliceStart = performance.now();
      }
    }
    ctx.putImageData(image, 0, 0);
    const where = spacing === "ppf"
      ? `z at N(0, 1) quantiles ${((0.5 / n) * 100).toFixed(1)}%…${((1 - 0.5 / n) * 100).toFixed(1)}% around ${state.anchor.name}`
      : "covers the pad's view";
    $("grid-stats").textContent = `${cells} codes decoded in ${(performance.now() - start).toFixed(0)} ms · ${where}`;
    grid.dataset.ready = String(generation);
  }

  // A new task, without setTimeout's 4 ms clamp: frames and input events due run before it.
  const taskChannel = new MessageChannel();
  const taskQueue = [];
  taskChannel.port1.onmessage = () => taskQueue.shift()();
  function nextTask() {
    return new Promise((resolve) => {
      taskQueue.push(resolve);
      taskChannel.port2.postMessage(null);
    });
  }

  $("grid-size").addEventListener("change", renderGrid);
  for (const radio of document.querySelectorAll("input[name=grid-spacing]")) radio.addEventListener("change", renderGrid);

  grid.addEventListener("pointermove", (event) => {
    const rect = grid.getBoundingClientRect();
    const columns = state.grid.us.length, rows = state.grid.vs.length;
    const column = Math.min(columns - 1, Math.max(0, Math.floor(((event.clientX - rect.left) / rect.width) * columns)));
    const row = Math.min(rows - 1, Math.max(0, Math.floor(((event.clientY - rect.top) / rect.height) * rows)));
    setZ(onPlane(state.grid.us[column], state.grid.vs[row]));
  });

  // -- header, architecture, footer ------------------------------------------------------------------

  function describeModel() {
    const m = DATA.model;
    const data = DATA.data.name ? ` · ${DATA.data.name}, ${points.n} ${DATA.data.split} examples` : "";
    const network = m.model === "conv" ? `conv ${m.conv_channels.join("-")} · ` : "";
    const sigma = m.sigma ? ` (σ ${m.sigma.toPrecision(2)})` : "";
    const architecture = DATA.title.includes(m.architecture.join("-")) ? "" : `${m.architecture.join("-")} · `; // the default title holds it
    $("subtitle").textContent = `${DATA.title} · ${network}${architecture}${m.nonlinearity} · `
      + `${m.likelihood} ${SHOWN_LOW === 0 && SHOWN_HIGH === 1 ? "pixels" : "values"}${sigma}${data}`;
    const chips = [[`z ∈ ℝ${superscript(LATENT)}`, "end"]];
    for (const spec of DATA.decoder) chips.push(layerChip(spec));
    chips.push([`x: ${CHANNELS}×${HEIGHT}×${WIDTH}`, "end"]);
    const arch = $("arch");
    const title = document.createElement("span");
    title.className = "hint";
    title.textContent = "decoder, run in this page:";
    arch.append(title);
    chips.forEach(([text, kind], i) => {
      if (i > 0) arch.append(Object.assign(document.createElement("span"), { className: "arrow", textContent: "→" }));
      arch.append(Object.assign(document.createElement("span"), { className: `chip ${kind}`, textContent: text }));
    });
    $("footer").textContent = "Written by vaekit. The decoder runs in this page as float32 JavaScript; "
      + "the page works offline and fetches nothing. Dots are posterior means of encoded examples.";
  }

  function layerChip(spec) { // [text, class] naming one layer of the decoder
    const pair = ([a, b]) => (a === b ? `${a}` : `${a}×${b}`);
    switch (spec.type) {
      case "linear": return [`Linear ${spec.in}→${spec.out}`, ""];
      case "reshape": return [`reshape ${spec.shape.join("×")}`, ""];
      case "conv_transpose2d": return [`ConvT ${spec.in_channels}→${spec.out_channels} k${pair(spec.kernel)} s${pair(spec.stride)}`, ""];
      default: return [spec.name, "act"];
    }
  }

  function superscript(n) {
    return String(n).replace(/\d/g, (d) => "⁰¹²³⁴⁵⁶⁷⁸⁹"[d]);
  }

  // -- hooks for tests and the curious (window.vaekitExplorer in the console) ------------------------

  window.vaekitExplorer = {
    decode: (zs) => zs.map((z) => Array.from(decoder.decode(Float32Array.from(z)))),
    currentZ: () => Array.from(state.z),
    plane: () => ({ origin: Array.from(plane.origin), basis: [Array.from(plane.b1), Array.from(plane.b2)] }),
    anchor: () => Array.from(state.anchor.z),
    padView: () => ({ ...view }), // the pad's window on the plane: centre (cu, cv), half-width half
    padPoint(u, v) { // page coordinates of the pad point (u, v), for moving a pointer there
      const rect = padCanvas.getBoundingClientRect();
      const [x, y] = pad.toPad(u, v);
      return { x: rect.left + x, y: rect.top + y };
    },
    examplePoint(i) { return this.padPoint(points.u[i], points.v[i]); },
    exampleZ: (i) => Array.from(points.z.slice(i * LATENT, (i + 1) * LATENT)),
    framesDrawn: () => framesDrawn,
    stripZs: () => state.strip.map((z) => Array.from(z)),
    gridZs: () => state.grid.vs.flatMap((v) => state.grid.us.map((u) => Array.from(onPlane(u, v)))),
    benchmark(frames = 200) { // ms per frame of the pad's work: decode one z and paint it
      const z = new Float32Array(LATENT);
      const start = performance.now();
      for (let f = 0; f < frames; f++) {
        onPlane(view.cu + view.half * Math.sin(f), view.cv + view.half * Math.cos(f), z);
        pixels.paint($("decoded"), shown(decoder.decode(z)), 0, 255);
      }
      return (performance.now() - start) / frames;
    },
    measureFps(ms = 2000) { // frames/s while z changes every frame, as when the pointer moves
      return new Promise((resolve) => {
        let frames = 0;
        const start = performance.now();
        const tick = (now) => {
          frames++;
          onPlane(view.cu + view.half * Math.sin(frames / 7), view.cv + view.half * Math.cos(frames / 11), state.z);
          renderFrame(now);
          if (now - start < ms) requestAnimationFrame(tick);
          else resolve((frames * 1000) / (now - start));
        };
        requestAnimationFrame(tick);
      });
    },
  };

  describeModel();
  buildLegend();
  buildSliders();
  $("anchor-name").textContent = state.anchor.name;
  describePlane();
  pad.resize();
  new ResizeObserver(() => {
    pad.resize();
    requestFrame();
  }).observe(padCanvas);
  renderGrid();
  document.body.dataset.ready = "true";
})();
