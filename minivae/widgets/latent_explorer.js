// The latent space, live: point anywhere in a 2-D latent space and see the decoder's E[x|z]; click two
// points to see the images between them.
//
// One widget in anywidget's form, render({model, el}). model.get("figure") is what
// minivae.widgets.latent_explorer_data exported:
//   layers       [{W: {shape, b64}, b: {shape, b64}}, ...]  the decoder's hidden layers, then its output
//                 layer; each array float32, little-endian, row-major, W stored (in, out) as in minivae
//   activation   "tanh" or "relu"; head: "sigmoid" (Bernoulli logits) or "identity" (Gaussian mean)
//   points       {mu: {shape: [N, 2], b64}, labels: [N]}: encoded means of test images, and their classes
//   class_names, image_shape, z_range [lo, hi] (the square drawn)
// decode(z) below is minivae.decode followed by minivae.likelihood_mean: a few hundred thousand
// multiply-adds, done here in float64 on the float32 weights.
(function () {
  const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                  "#bcbd22", "#17becf"];   // matplotlib's tab10, as in the static figure

  function float32s(array) {
    const bytes = Uint8Array.from(atob(array.b64), c => c.charCodeAt(0));
    return new Float32Array(bytes.buffer);
  }

  // The decoder as typed arrays, read once per figure.
  function decoder(figure) {
    const layers = figure.layers.map(l => ({ W: float32s(l.W), b: float32s(l.b), n_in: l.W.shape[0],
                                             n_out: l.W.shape[1] }));
    const act = figure.activation === "relu" ? (v => Math.max(v, 0)) : Math.tanh;
    const head = figure.head === "sigmoid" ? (v => 1 / (1 + Math.exp(-v))) : (v => v);
    return function decode(z) {
      let h = Float64Array.from(z);
      layers.forEach((layer, k) => {
        const out = Float64Array.from(layer.b);
        for (let i = 0; i < layer.n_in; i++) {       // out = h @ W + b, W row-major (in, out)
          const hi = h[i], row = i * layer.n_out;
          if (hi === 0) continue;
          for (let j = 0; j < layer.n_out; j++) out[j] += hi * layer.W[row + j];
        }
        const last = k === layers.length - 1;
        for (let j = 0; j < out.length; j++) out[j] = last ? head(out[j]) : act(out[j]);
        h = out;
      });
      return Array.from(h);
    };
  }

  function element(tag, attrs = {}, parent = null) {
    const e = document.createElement(tag);
    Object.assign(e, attrs);
    if (parent) parent.appendChild(e);
    return e;
  }

  function drawImage(canvas, x, shape, left = 0, size = canvas.height) {
    const ctx = canvas.getContext("2d"), [h, w] = shape, s = size / Math.max(h, w);
    const img = ctx.createImageData(w, h);
    for (let p = 0; p < h * w; p++) {
      const v = Math.round(255 * Math.min(Math.max(x[p], 0), 1));
      img.data.set([v, v, v, 255], 4 * p);
    }
    const tile = element("canvas", { width: w, height: h });
    tile.getContext("2d").putImageData(img, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(tile, left, 0, w * s, h * s);
  }

  function render({ model, el }) {
    el.classList.add("minivae-widget", "minivae-latent-explorer");
    el.replaceChildren();
    const top = element("div", { className: "minivae-columns" }, el);
    const map = element("canvas", { width: 360, height: 360, className: "minivae-map" }, top);
    const side = element("div", {}, top);
    const image = element("canvas", { width: 168, height: 168, className: "minivae-image" }, side);
    const where = element("div", { className: "minivae-value" }, side);
    const legend = element("div", { className: "minivae-legend" }, side);
    element("div", { className: "minivae-hint",
                     textContent: "point at the map to decode z; click two points for the path between them" }, el);
    const strip = element("canvas", { width: 8 * 64, height: 64, className: "minivae-strip" }, el);
    let decode, figure, mu, shown = null, clicks = [], path = [];

    const toZ = (px, py) => {
      const [lo, hi] = figure.z_range;
      return [lo + px / map.width * (hi - lo), hi - py / map.height * (hi - lo)];
    };
    const toPx = z => {
      const [lo, hi] = figure.z_range;
      return [(z[0] - lo) / (hi - lo) * map.width, (hi - z[1]) / (hi - lo) * map.height];
    };

    function drawMap() {
      const ctx = map.getContext("2d");
      ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, map.width, map.height);
      const labels = figure.points.labels;
      for (let n = 0; n < labels.length; n++) {
        const [x, y] = toPx([mu[2 * n], mu[2 * n + 1]]);
        ctx.fillStyle = COLORS[labels[n] % 10];
        ctx.fillRect(x - 1.5, y - 1.5, 3, 3);
      }
      const [lo, hi] = figure.z_range;                // the axes: z1 across, z2 up
      ctx.fillStyle = "#555"; ctx.font = "11px sans-serif";
      ctx.textAlign = "left"; ctx.fillText(`z1 = ${lo}`, 3, map.height - 4);
      ctx.textAlign = "right"; ctx.fillText(`z1 = ${hi}`, map.width - 3, map.height - 4);
      ctx.fillText(`z2 = ${hi}`, map.width - 3, 12);
      ctx.strokeStyle = "#000"; ctx.lineWidth = 1.5;
      clicks.forEach(z => { const [x, y] = toPx(z); ctx.strokeRect(x - 4, y - 4, 8, 8); });
      if (clicks.length === 2) {
        ctx.beginPath(); ctx.moveTo(...toPx(clicks[0])); ctx.lineTo(...toPx(clicks[1])); ctx.stroke();
      }
      if (shown) {
        const [x, y] = toPx(shown.z);
        ctx.beginPath(); ctx.arc(x, y, 5, 0, 2 * Math.PI); ctx.stroke();
      }
    }

    function show(z) {
      shown = { z, image: decode(z) };
      drawImage(image, shown.image, figure.image_shape);
      where.textContent = `z = (${z[0].toFixed(2)}, ${z[1].toFixed(2)})`;
      drawMap();
    }

    function interpolate() {
      const ctx = strip.getContext("2d");
      ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, strip.width, strip.height);
      path = [];
      for (let k = 0; k < 8; k++) {
        const t = k / 7, z = [0, 1].map(d => (1 - t) * clicks[0][d] + t * clicks[1][d]);
        path.push({ z, image: decode(z) });
        drawImage(strip, path[k].image, figure.image_shape, k * strip.height, strip.height);
      }
    }

    function fill() {
      figure = model.get("figure");
      decode = decoder(figure);
      mu = float32s(figure.points.mu);
      legend.replaceChildren();
      figure.class_names.forEach((name, c) => {
        const item = element("div", {}, legend);
        element("span", { className: "minivae-swatch", style: `background:${COLORS[c % 10]}` }, item);
        element("span", { textContent: ` ${name}` }, item);
      });
      clicks = [];
      show([0, 0]);
    }

    const pointer = event => {
      const box = map.getBoundingClientRect();
      return toZ((event.clientX - box.left) * map.width / box.width, (event.clientY - box.top) * map.height / box.height);
    };
    map.addEventListener("pointermove", event => show(pointer(event)));
    map.addEventListener("click", event => {
      clicks = clicks.length === 2 ? [pointer(event)] : [...clicks, pointer(event)];
      if (clicks.length === 2) interpolate();
      drawMap();
    });
    model.on("change:figure", fill);
    fill();
    // for tests and the curious: the numbers behind what is drawn
    el.minivae = { decode: z => decode(z), shown: () => shown, path: () => path, toPx: z => toPx(z) };
  }

  globalThis.minivaeWidgets = Object.assign(globalThis.minivaeWidgets || {},
                                            { latent_explorer: { render } });
})();
