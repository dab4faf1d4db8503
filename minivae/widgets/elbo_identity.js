// The ELBO identity, live: log p(x) = ELBO + KL(q(z|x) || p(z|x)), on a model with a 1-D latent.
//
// One widget in anywidget's form, render({model, el}). In Jupyter, `model` is the kernel's widget; in the
// book it is a fixed object; either way model.get("figure") is what minivae.widgets.elbo_identity_data
// exported:
//   z               (G,)    an evenly spaced grid of latent values
//   log_px_given_z  (N, G)  log p(x|z) of each of N images on the grid, from the trained decoder
//   q               (N, 2)  the encoder's (mu, logvar) for each image: where the sliders start
//   images          (N, D)  the images, drawn as a thumbnail of image_shape
// The browser only recombines these numbers, by the same quadrature as elbo_identity_terms in Python:
//   log p(x) = log sum_g p(x|z_g) p(z_g) dz          p(z|x) = p(x|z) p(z) / p(x)
//   ELBO     = sum_g q(z_g) dz [log p(x|z_g) + log p(z_g) - log q(z_g)]
//   KL       = sum_g q(z_g) dz [log q(z_g) - log p(z_g|x)]
(function () {
  const LOG_2PI = Math.log(2 * Math.PI);

  function logNormal(z, mu, logvar) {
    return -0.5 * (LOG_2PI + logvar + (z - mu) * (z - mu) / Math.exp(logvar));
  }

  function logSumExp(a) {
    const m = Math.max(...a);
    let s = 0;
    for (const v of a) s += Math.exp(v - m);
    return m + Math.log(s);
  }

  // The three terms for image i and q = N(mu, exp(logvar)), and the curves to draw.
  function terms(figure, i, mu, logvar) {
    const z = figure.z, logLik = figure.log_px_given_z[i], dz = z[1] - z[0];
    const logJoint = z.map((zg, g) => logLik[g] + logNormal(zg, 0, 0));
    const logPx = logSumExp(logJoint) + Math.log(dz);
    let elbo = 0, kl = 0;
    const post = [], q = [];
    for (let g = 0; g < z.length; g++) {
      const logQ = logNormal(z[g], mu, logvar), logPost = logJoint[g] - logPx;
      const weight = Math.exp(logQ) * dz;           // q's quadrature weight
      elbo += weight * (logJoint[g] - logQ);
      kl += weight * (logQ - logPost);
      post.push(Math.exp(logPost));
      q.push(Math.exp(logQ));
    }
    return { logPx, elbo, kl, post, q };
  }

  function element(tag, attrs = {}, parent = null) {
    const e = document.createElement(tag);
    Object.assign(e, attrs);
    if (parent) parent.appendChild(e);
    return e;
  }

  function slider(parent, label, min, max, step) {
    const row = element("label", { className: "minivae-row" }, parent);
    element("span", { textContent: label, className: "minivae-label" }, row);
    const input = element("input", { type: "range", min, max, step }, row);
    const value = element("span", { className: "minivae-value" }, row);
    return { input, value };
  }

  // p(z|x) and q(z|x) against z, in a window around the posterior and q.
  function drawDensities(canvas, z, t, mu, logvar) {
    const ctx = canvas.getContext("2d"), W = canvas.width, H = canvas.height, pad = 28;
    let mean = 0, m2 = 0, mass = 0;
    t.post.forEach((p, g) => { mass += p; mean += p * z[g]; m2 += p * z[g] * z[g]; });
    mean /= mass;
    const sd = Math.sqrt(Math.max(m2 / mass - mean * mean, 1e-12)), sdQ = Math.exp(0.5 * logvar);
    const lo = Math.max(z[0], Math.min(mean - 5 * sd, mu - 3 * sdQ));
    const hi = Math.min(z[z.length - 1], Math.max(mean + 5 * sd, mu + 3 * sdQ));
    const inside = z.map((zg, g) => g).filter(g => z[g] >= lo && z[g] <= hi);
    const top = Math.max(...inside.map(g => Math.max(t.post[g], t.q[g]))) * 1.05;
    const X = v => pad + (v - lo) / (hi - lo) * (W - 2 * pad), Y = v => H - pad - v / top * (H - 2 * pad);
    ctx.clearRect(0, 0, W, H);
    ctx.strokeStyle = "#888"; ctx.lineWidth = 1;
    ctx.beginPath(); ctx.moveTo(pad, H - pad); ctx.lineTo(W - pad, H - pad); ctx.stroke();
    ctx.fillStyle = "#333"; ctx.font = "12px sans-serif"; ctx.textAlign = "center";
    for (let k = 0; k <= 4; k++) {
      const v = lo + k * (hi - lo) / 4;
      ctx.fillText(v.toFixed(2), X(v), H - pad + 15);
    }
    ctx.fillText("z", W - pad / 2, H - pad - 6);
    for (const [curve, color, dash] of [[t.post, "#1f77b4", []], [t.q, "#ff7f0e", [6, 4]]]) {
      ctx.strokeStyle = color; ctx.lineWidth = 2; ctx.setLineDash(dash);
      ctx.beginPath();
      inside.forEach((g, k) => (k ? ctx.lineTo : ctx.moveTo).call(ctx, X(z[g]), Y(curve[g])));
      ctx.stroke();
    }
    ctx.setLineDash([]);
    ctx.textAlign = "left";
    ctx.fillStyle = "#1f77b4"; ctx.fillText("p(z|x), exact", pad + 4, pad - 10);
    ctx.fillStyle = "#ff7f0e"; ctx.fillText("q(z|x) = N(mu, exp(logvar))", pad + 110, pad - 10);
  }

  // -ELBO = -log p(x) + KL as one bar in two parts: the KL is exactly the gap between them. (The bars
  // are lengths, so they assume a discrete x, whose log p(x) < 0: tutorial 1's binary images.)
  function drawBars(canvas, t, scale) {
    const ctx = canvas.getContext("2d"), W = canvas.width, H = canvas.height, left = 10;
    const px = v => v / scale * (W - 2 * left);
    ctx.clearRect(0, 0, W, H);
    ctx.fillStyle = "#1f77b4"; ctx.fillRect(left, 8, px(-t.logPx), 22);
    ctx.fillStyle = "#d62728"; ctx.fillRect(left + px(-t.logPx), 8, px(t.kl), 22);
    ctx.fillStyle = "#555"; ctx.fillRect(left, 38, px(-t.elbo), 8);
    ctx.fillStyle = "#333"; ctx.font = "12px sans-serif";
    ctx.fillText("-log p(x) (blue) + KL(q || p(z|x)) (red)  =  -ELBO (grey)", left, 62);
  }

  function render({ model, el }) {
    el.classList.add("minivae-widget", "minivae-elbo-identity");
    el.replaceChildren();
    const controls = element("div", { className: "minivae-controls" }, el);
    const pick = element("label", { className: "minivae-row" }, controls);
    element("span", { textContent: "image", className: "minivae-label" }, pick);
    const select = element("select", {}, pick);
    const thumb = element("canvas", { width: 48, height: 48, className: "minivae-thumb" }, pick);
    const mu = slider(controls, "mean of q", -3, 3, 0.005);
    const logvar = slider(controls, "log-variance of q", -9, 0, 0.01);
    const reset = element("button", { textContent: "back to the encoder's q", type: "button" }, controls);
    const plot = element("canvas", { width: 560, height: 220, className: "minivae-plot" }, el);
    const bars = element("canvas", { width: 560, height: 70, className: "minivae-bars" }, el);
    const table = element("table", { className: "minivae-table" }, el);
    const cells = {};
    for (const [key, label] of [["logPx", "log p(x)"], ["elbo", "ELBO"], ["kl", "KL(q(z|x) || p(z|x))"],
                                ["gap", "log p(x) - ELBO - KL"]]) {
      const row = element("tr", {}, table);
      element("td", { textContent: label }, row);
      cells[key] = element("td", { className: "minivae-number" }, row);
    }
    let current = null;

    function figure() { return model.get("figure"); }

    // exact: [mu, logvar] to use instead of the sliders' values, which snap to their step (the
    // encoder's q is shown exactly, not rounded to the nearest slider position)
    function update(exact) {
      const f = figure(), i = Number(select.value);
      const [m, lv] = exact || [Number(mu.input.value), Number(logvar.input.value)];
      const t = terms(f, i, m, lv);
      mu.value.textContent = m.toFixed(3);
      logvar.value.textContent = lv.toFixed(2);
      drawDensities(plot, f.z, t, m, lv);
      drawBars(bars, t, Math.max(-t.elbo, -2 * t.logPx, 1e-9) * 1.02);   // fixed until the KL outgrows it
      cells.logPx.textContent = t.logPx.toFixed(6);
      cells.elbo.textContent = t.elbo.toFixed(6);
      cells.kl.textContent = t.kl.toFixed(6);
      cells.gap.textContent = (t.logPx - t.elbo - t.kl).toExponential(1);
      current = { index: i, mu: m, logvar: lv, logPx: t.logPx, elbo: t.elbo, kl: t.kl };
    }

    function toEncoder() {
      const [m, lv] = figure().q[Number(select.value)];
      mu.input.value = m;
      logvar.input.value = lv;
      drawThumb();
      update([m, lv]);
    }

    function drawThumb() {
      const f = figure(), [h, w] = f.image_shape, x = f.images[Number(select.value)];
      const ctx = thumb.getContext("2d"), s = thumb.width / w;
      for (let r = 0; r < h; r++) for (let c = 0; c < w; c++) {
        const v = Math.round(255 * x[r * w + c]);
        ctx.fillStyle = `rgb(${v},${v},${v})`;
        ctx.fillRect(c * s, r * s, s, s);
      }
    }

    function fill() {
      select.replaceChildren();
      figure().images.forEach((_, i) => element("option", { value: i, textContent: `test image ${i}` }, select));
      toEncoder();
    }

    select.addEventListener("change", toEncoder);
    mu.input.addEventListener("input", () => update());
    logvar.input.addEventListener("input", () => update());
    reset.addEventListener("click", toEncoder);
    model.on("change:figure", fill);
    fill();
    // for tests and the curious: the numbers behind what is drawn
    el.minivae = { terms: (i, m, lv) => { const t = terms(figure(), i, m, lv); return [t.logPx, t.elbo, t.kl]; },
                   current: () => current };
  }

  globalThis.minivaeWidgets = Object.assign(globalThis.minivaeWidgets || {},
                                            { elbo_identity: { render, terms } });
})();
