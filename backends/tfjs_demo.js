'use strict';
// yolo-export browser demo for a TF.js graph model: load model.json from this folder, take an image (drop, pick, or
// ?img=URL for automation), preprocess it exactly as the model's metadata says, and show the top-5 classes.
//
// Preprocessing follows yolo_export.data.transforms (the reference's, pixel for pixel): shorter side resized to
// `resize` (long side int(resize * long / short)) with the same separable filters and 8-bit fixed-point rounding as
// Pillow's resize, centre crop `crop` at the rounded offset (pp.fast: the opt-in one-pass approximation), then /255, (x - mean) / std, NHWC float32. Query parameters: img (repeatable), backend (wasm | cpu), debug=1
// (the result JSON also holds each input tensor), report=PATH (POST the result JSON to PATH on this origin). The
// result goes to <pre id="result"> as JSON and document.body.dataset.status becomes "done" or "error".
// Under Node (no document) the file only exports its metadata and preprocessing functions, for the tests.
(() => {
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(typeof location === 'undefined' ? '' : location.search);
  const app = { model: null, meta: {}, pp: null, names: {}, backend: null, inputShape: null };

  // ---------------------------------------------------------------- metadata (Python-literal and JSON values)
  function parsePyLiteral(text) {
    let i = 0;
    const s = String(text);
    const ws = () => { while (i < s.length && /\s/.test(s[i])) i++; };
    const fail = () => { throw new Error(`cannot parse metadata value near "${s.slice(i, i + 20)}"`); };
    function str() {
      const q = s[i++];
      let out = '';
      while (i < s.length && s[i] !== q) {
        let c = s[i++];
        if (c === '\\') {
          c = s[i++];
          const hex = (n) => { const v = parseInt(s.slice(i, i + n), 16); i += n; return String.fromCodePoint(v); };
          const esc = { n: '\n', r: '\r', t: '\t', '\\': '\\', "'": "'", '"': '"', '0': '\0', a: '\x07', b: '\b',
            f: '\f', v: '\v' };
          if (c === 'x') out += hex(2);
          else if (c === 'u') out += hex(4);
          else if (c === 'U') out += hex(8);
          else if (c in esc) out += esc[c];
          else out += '\\' + c;
        } else out += c;
      }
      if (s[i++] !== q) fail();
      return out;
    }
    function seq(close) {
      const out = [];
      for (;;) {
        ws();
        if (s[i] === close) { i++; return out; }
        out.push(value());
        ws();
        if (s[i] === ',') i++;
        else if (s[i] !== close) fail();
      }
    }
    function value() {
      ws();
      const c = s[i];
      if (c === "'" || c === '"') return str();
      if (c === '[') { i++; return seq(']'); }
      if (c === '(') { i++; return seq(')'); }
      if (c === '{') {
        i++;
        const out = {};
        for (;;) {
          ws();
          if (s[i] === '}') { i++; return out; }
          const k = value();
          ws();
          if (s[i++] !== ':') fail();
          out[k] = value();
          ws();
          if (s[i] === ',') i++;
          else if (s[i] !== '}') fail();
        }
      }
      const m = /^(True|False|None|[-+]?(?:\d[\d_]*\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|inf|nan))/
        .exec(s.slice(i));
      if (!m) fail();
      i += m[0].length;
      return { True: true, False: false, None: null }[m[0]] ?? Number(m[0].replace(/_/g, '').replace('inf', 'Infinity'));
    }
    const v = value();
    ws();
    if (i !== s.length) fail();
    return v;
  }

  function decodeMeta(raw) {
    const out = {};
    for (const [k, v] of Object.entries(raw || {})) {
      if (typeof v !== 'string') { out[k] = v; continue; }
      const t = v.trim();
      try {
        out[k] = /^[[{(]/.test(t) ? (k === 'preprocess' || k === 'verification' ? JSON.parse(t) : parsePyLiteral(t))
          : /^-?\d+$/.test(t) ? Number(t) : v;
      } catch (e) {
        out[k] = v;
      }
    }
    return out;
  }

  // ---------------------------------------------------------------- resampling (Pillow-compatible, 8-bit RGB)
  const FILTERS = {
    box: [0.5, (x) => (x > -0.5 && x <= 0.5 ? 1 : 0)],
    bilinear: [1, (x) => { x = Math.abs(x); return x < 1 ? 1 - x : 0; }],
    hamming: [1, (x) => {
      x = Math.abs(x);
      if (x === 0) return 1;
      if (x >= 1) return 0;
      const p = Math.PI * x;
      return (Math.sin(p) / p) * (Math.fround(0.54) + Math.fround(0.46) * Math.cos(p));
    }],
    bicubic: [2, (x) => {
      const a = -0.5;
      x = Math.abs(x);
      if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
      if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
      return 0;
    }],
    lanczos: [3, (x) => {
      const sinc = (t) => (t === 0 ? 1 : Math.sin(Math.PI * t) / (Math.PI * t));
      return x > -3 && x < 3 ? sinc(x) * sinc(x / 3) : 0;
    }],
  };
  const PREC = 22; // fixed-point bits of the 8-bit resampler
  const ONE = 2 ** PREC;

  // For each output pixel along one axis: the first input index and its integer weights.
  function coefficients(inSize, b0, b1, outSize, filter) {
    const [support0, fn] = filter;
    const scale = Math.fround(b1 - b0) / outSize; // the box arrives in single precision
    const fscale = Math.max(scale, 1);
    const support = support0 * fscale;
    const ss = 1 / fscale;
    const first = new Int32Array(outSize);
    const weights = [];
    for (let o = 0; o < outSize; o++) {
      const center = b0 + (o + 0.5) * scale;
      const lo = Math.max(Math.trunc(center - support + 0.5), 0);
      const hi = Math.min(Math.trunc(center + support + 0.5), inSize);
      const w = [];
      let sum = 0;
      for (let x = lo; x < hi; x++) {
        const v = fn((x - center + 0.5) * ss);
        w.push(v);
        sum += v;
      }
      first[o] = lo;
      weights.push(Int32Array.from(w, (v) => {
        const k = sum !== 0 ? v / sum : v;
        return Math.trunc(k * ONE + (k < 0 ? -0.5 : 0.5));
      }));
    }
    return { first, weights };
  }

  const clip8 = (acc) => {
    const v = Math.floor((acc + ONE / 2) / ONE);
    return v < 0 ? 0 : v > 255 ? 255 : v;
  };

  // One 8-bit pass along x over rows [row0, row0 + rows) of src (w wide): out is C.first.length x rows.
  function passH(src, w, row0, rows, C) {
    const ow = C.first.length;
    const out = new Uint8ClampedArray(ow * rows * 3);
    for (let y = 0; y < rows; y++) {
      const line = (y + row0) * w;
      for (let x = 0; x < ow; x++) {
        const k = C.weights[x];
        const f = C.first[x];
        let r = 0;
        let g = 0;
        let b = 0;
        for (let j = 0; j < k.length; j++) {
          const p = (line + f + j) * 3;
          r += src[p] * k[j];
          g += src[p + 1] * k[j];
          b += src[p + 2] * k[j];
        }
        const q = (y * ow + x) * 3;
        out[q] = clip8(r);
        out[q + 1] = clip8(g);
        out[q + 2] = clip8(b);
      }
    }
    return out;
  }

  // One 8-bit pass along y of src (w wide) whose row 0 is source row `shift`: out is w x C.first.length.
  function passV(src, w, C, shift) {
    const oh = C.first.length;
    const out = new Uint8ClampedArray(w * oh * 3);
    for (let y = 0; y < oh; y++) {
      const k = C.weights[y];
      const f = C.first[y] - shift;
      for (let x = 0; x < w; x++) {
        let r = 0;
        let g = 0;
        let b = 0;
        for (let j = 0; j < k.length; j++) {
          const p = ((f + j) * w + x) * 3;
          r += src[p] * k[j];
          g += src[p + 1] * k[j];
          b += src[p + 2] * k[j];
        }
        const q = (y * w + x) * 3;
        out[q] = clip8(r);
        out[q + 1] = clip8(g);
        out[q + 2] = clip8(b);
      }
    }
    return out;
  }

  // rgb: Uint8 RGB (w x h). box: [x0, y0, x1, y1] in source pixels (single precision). Returns Uint8 RGB (ow x oh).
  // Two separable passes rounded to 8 bits in between; the vertical pass goes first when the height shrinks by more
  // than twice as many pixels as the width. The order changes the rounding: this is Pillow 13's order (older Pillow
  // always went horizontal first, which differs from this by one grey level in some pixels of such images).
  function resampleBox(rgb, w, h, box, ow, oh, interpolation) {
    if (Number.isInteger(box[0]) && Number.isInteger(box[1]) && box[2] - box[0] === ow && box[3] - box[1] === oh) {
      const out = new Uint8ClampedArray(ow * oh * 3);
      for (let y = 0; y < oh; y++) {
        const from = ((y + box[1]) * w + box[0]) * 3;
        out.set(rgb.subarray(from, from + ow * 3), y * ow * 3);
      }
      return out;
    }
    if (interpolation === 'nearest') { // sample positions stepped by accumulation, as the scaling transform does
      const out = new Uint8ClampedArray(ow * oh * 3);
      const sx = Math.fround(box[2] - box[0]) / ow;
      const sy = Math.fround(box[3] - box[1]) / oh;
      const xs = new Int32Array(ow);
      for (let x = 0, xo = box[0] + sx * 0.5; x < ow; x++, xo += sx) xs[x] = Math.min(Math.trunc(xo), w - 1);
      for (let y = 0, yo = box[1] + sy * 0.5; y < oh; y++, yo += sy) {
        const iy = Math.min(Math.trunc(yo), h - 1);
        for (let x = 0; x < ow; x++) {
          for (let c = 0; c < 3; c++) out[(y * ow + x) * 3 + c] = rgb[(iy * w + xs[x]) * 3 + c];
        }
      }
      return out;
    }
    const filter = FILTERS[interpolation] || FILTERS.bilinear;
    const needH = ow !== w || box[0] !== 0 || box[2] !== ow;
    const needV = oh !== h || box[1] !== 0 || box[3] !== oh;
    const hFirst = !(h - oh > 0 && h - oh > (w - ow) * 2);
    const H = coefficients(w, box[0], box[2], ow, filter);
    const V = coefficients(h, box[1], box[3], oh, filter);
    if (hFirst) {
      let img = rgb;
      let shift = 0;
      if (needH) {
        shift = V.first[0];
        const last = V.first[oh - 1] + V.weights[oh - 1].length;
        img = passH(rgb, w, shift, last - shift, H);
      }
      return needV ? passV(img, needH ? ow : w, V, shift) : img;
    }
    const img = needV ? passV(rgb, w, V, 0) : rgb;
    return needH ? passH(img, w, 0, oh, H) : img;
  }

  // Python's round(): halves go to the even neighbour.
  function roundHalfEven(v) {
    const f = Math.floor(v);
    const d = v - f;
    if (d > 0.5) return f + 1;
    if (d < 0.5) return f;
    return f % 2 === 0 ? f : f + 1;
  }

  // Copy the crop x crop window at (left, top) out of an RGB image w wide.
  function cropRows(rgb, w, left, top, crop) {
    const out = new Uint8ClampedArray(crop * crop * 3);
    for (let y = 0; y < crop; y++) {
      const from = ((y + top) * w + left) * 3;
      out.set(rgb.subarray(from, from + crop * 3), y * crop * 3);
    }
    return out;
  }

  // The reference's preprocessing, exactly: shorter side to `resize` (long side int(resize * long / short)), Pillow's
  // antialiased resample of the whole image, then a centre crop `crop` at the rounded offset (black padding first
  // when the resized image is smaller than the crop). pp.fast: the opt-in one-pass approximation below.
  function resizeCrop(rgb, w, h, pp) {
    if (pp.fast && Number(pp.resize) >= Number(pp.crop)) return resizeCropFast(rgb, w, h, pp);
    const resize = Number(pp.resize);
    const crop = Number(pp.crop);
    let [nw, nh] = w <= h ? [resize, Math.trunc((resize * h) / w)] : [Math.trunc((resize * w) / h), resize];
    let img = nw === w && nh === h ? rgb : resampleBox(rgb, w, h, [0, 0, w, h], nw, nh, pp.interpolation || 'bilinear');
    if (nw < crop || nh < crop) {
      const cw = Math.max(nw, crop);
      const ch = Math.max(nh, crop);
      const px = crop > nw ? Math.floor((crop - nw) / 2) : 0;
      const py = crop > nh ? Math.floor((crop - nh) / 2) : 0;
      const canvas = new Uint8ClampedArray(cw * ch * 3);
      for (let y = 0; y < nh; y++) canvas.set(img.subarray(y * nw * 3, (y + 1) * nw * 3), ((y + py) * cw + px) * 3);
      [img, nw, nh] = [canvas, cw, ch];
    }
    return cropRows(img, nw, roundHalfEven((nw - crop) / 2), roundHalfEven((nh - crop) / 2), crop);
  }

  // The fast opt-in (pp.fast): one resampling pass over only the source region that lands in the crop.
  function resizeCropFast(rgb, w, h, pp) {
    const resize = Number(pp.resize);
    const crop = Number(pp.crop);
    const s = resize / Math.min(w, h);
    const [sw, sh] = w <= h ? [resize, Math.max(resize, roundHalfEven(h * s))]
      : [Math.max(resize, roundHalfEven(w * s)), resize];
    const left = Math.trunc(roundHalfEven((sw - crop) / 2));
    const top = Math.trunc(roundHalfEven((sh - crop) / 2));
    if (w === sw && h === sh) return cropRows(rgb, w, left, top, crop);
    const sx = w / sw;
    const sy = h / sh;
    // the resampler takes the box in single precision; rounding it the same way keeps the results identical
    const box = [left * sx, top * sy, (left + crop) * sx, (top + crop) * sy].map(Math.fround);
    return resampleBox(rgb, w, h, box, crop, crop, pp.interpolation || 'bilinear');
  }

  function toInput(crop8, pp) {
    const n = crop8.length;
    const mean = pp.mean || [0, 0, 0];
    const std = pp.std || [1, 1, 1];
    const x = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const c = i % 3;
      x[i] = (Math.fround(crop8[i] / 255) - mean[c]) / std[c]; // a division, as the reference and Python do
    }
    return x;
  }

  async function decode(blob) {
    const bmp = await createImageBitmap(blob, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
    const { width: w, height: h } = bmp;
    const canvas = document.createElement('canvas');
    canvas.width = w;
    canvas.height = h;
    const ctx = canvas.getContext('2d', { willReadFrequently: true });
    ctx.drawImage(bmp, 0, 0);
    bmp.close();
    const rgba = ctx.getImageData(0, 0, w, h).data;
    const rgb = new Uint8ClampedArray(w * h * 3);
    for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
      rgb[j] = rgba[i];
      rgb[j + 1] = rgba[i + 1];
      rgb[j + 2] = rgba[i + 2];
    }
    return { rgb, w, h };
  }

  // ---------------------------------------------------------------- model
  async function pickBackend() {
    const wanted = (params.get('backend') || 'wasm,cpu').split(',').map((s) => s.trim()).filter(Boolean);
    const tried = [];
    for (const name of wanted) {
      try {
        if (name === 'wasm') {
          if (!tf.wasm) throw new Error('not bundled');
          tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false); // only the single-threaded binaries are bundled
          tf.wasm.setWasmPaths(new URL('vendor/', location.href).href);
        }
        if (await tf.setBackend(name)) {
          await tf.ready();
          return name;
        }
        tried.push(`${name}: not usable`);
      } catch (e) {
        tried.push(`${name}: ${e.message || e}`);
      }
    }
    throw new Error(`no usable TF.js backend (${tried.join('; ')})`);
  }

  async function loadModel() {
    if (location.protocol === 'file:') {
      throw new Error('browsers do not load models from file:// pages: serve this folder, e.g. '
        + '"python -m http.server -d <this folder>", then open http://localhost:8000/');
    }
    app.backend = await pickBackend();
    const t0 = performance.now();
    app.model = await tf.loadGraphModel('model.json');
    app.meta = decodeMeta((app.model.metadata || {}).yolo_export);
    const imgsz = app.meta.imgsz || [224, 224];
    app.pp = app.meta.preprocess || { resize: imgsz[0], crop: imgsz[0], interpolation: 'bilinear', mean: [0, 0, 0],
      std: [1, 1, 1], layout: 'NHWC' };
    if ((app.pp.layout || 'NHWC') !== 'NHWC') throw new Error(`this page feeds NHWC; the model wants ${app.pp.layout}`);
    app.names = app.meta.names || {};
    app.inputShape = app.model.inputs[0].shape;
    classify(new Float32Array(Number(app.pp.crop) ** 2 * 3)); // warm-up: the first run sets up the kernels
    const nc = Object.keys(app.names).length;
    $('title').textContent = app.meta.description || 'TF.js image classifier';
    $('about').textContent = `${nc} classes · input ${app.pp.crop}×${app.pp.crop} (resize ${app.pp.resize}, `
      + `${app.pp.interpolation || 'bilinear'}) · TF.js ${tf.version_core} on ${app.backend} · `
      + `loaded in ${Math.round(performance.now() - t0)} ms`;
    return app.model;
  }

  function classify(x) {
    const crop = Number(app.pp.crop);
    const batch = app.inputShape && app.inputShape[0] > 0 ? app.inputShape[0] : 1;
    const data = new Float32Array(batch * x.length);
    data.set(x); // a fixed-batch model gets the image in slot 0
    const y = tf.tidy(() => {
      const out = app.model.predict(tf.tensor(data, [batch, crop, crop, 3], 'float32'));
      return Array.isArray(out) ? out[0] : out;
    });
    const probs = Array.from(y.dataSync().slice(0, y.shape[y.shape.length - 1]));
    y.dispose();
    return probs;
  }

  function topk(probs, k) {
    return probs.map((p, i) => [p, i]).sort((a, b) => b[0] - a[0]).slice(0, k)
      .map(([p, i]) => ({ index: i, name: app.names[i] ?? String(i), prob: p }));
  }

  async function run(blob, label) {
    const t0 = performance.now();
    const { rgb, w, h } = await decode(blob);
    const crop8 = resizeCrop(rgb, w, h, app.pp);
    const x = toInput(crop8, app.pp);
    const t1 = performance.now();
    const probs = classify(x);
    const t2 = performance.now();
    const res = { image: label, width: w, height: h, top5: topk(probs, 5), probs,
      ms: { preprocess: +(t1 - t0).toFixed(2), inference: +(t2 - t1).toFixed(2) } };
    if (params.get('debug') === '1') res.input = Array.from(x);
    show(blob, res, crop8);
    return res;
  }

  // ---------------------------------------------------------------- page
  function show(blob, res, crop8) {
    $('view').hidden = false;
    const photo = $('photo');
    if (photo.dataset.url) URL.revokeObjectURL(photo.dataset.url);
    photo.dataset.url = URL.createObjectURL(blob);
    photo.src = photo.dataset.url;
    $('photoinfo').textContent = `${res.image} · ${res.width}×${res.height}`;
    const crop = Number(app.pp.crop);
    const seen = $('seen');
    seen.width = crop;
    seen.height = crop;
    const img = new ImageData(crop, crop);
    for (let i = 0, j = 0; j < crop8.length; i += 4, j += 3) {
      img.data[i] = crop8[j];
      img.data[i + 1] = crop8[j + 1];
      img.data[i + 2] = crop8[j + 2];
      img.data[i + 3] = 255;
    }
    seen.getContext('2d').putImageData(img, 0, 0);
    const list = $('top5');
    list.replaceChildren(...res.top5.map((t) => {
      const li = document.createElement('li');
      const pct = (100 * t.prob).toFixed(t.prob >= 0.9995 || t.prob < 0.0005 ? 1 : 2);
      li.innerHTML = '<div class="row"><span class="name"></span><span class="pct"></span></div>'
        + '<div class="bar"><span></span></div>';
      li.querySelector('.name').textContent = t.name;
      li.querySelector('.pct').textContent = `${pct} %`;
      li.querySelector('.bar span').style.width = `${Math.max(0.5, 100 * t.prob)}%`;
      li.title = `class ${t.index}`;
      return li;
    }));
    setStatus(`preprocess ${res.ms.preprocess.toFixed(1)} ms · inference ${res.ms.inference.toFixed(1)} ms`);
  }

  function setStatus(text, error) {
    $('status').textContent = text;
    $('status').classList.toggle('error', !!error);
  }

  function publish(obj) {
    const text = JSON.stringify(obj);
    $('result').textContent = text;
    document.body.dataset.status = obj.error ? 'error' : 'done';
    const report = params.get('report'); // automation: POST the result back to the serving origin
    if (report && new URL(report, location.href).origin === location.origin) {
      fetch(report, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: text }).catch(() => {});
    }
  }

  async function onFiles(files) {
    const f = files && files[0];
    if (!f || !app.model) return;
    try {
      const res = await run(f, f.name);
      publish({ backend: app.backend, results: [res] });
    } catch (e) {
      setStatus(`cannot classify ${f.name}: ${e.message || e}`, true);
      publish({ error: String(e.message || e) });
    }
  }

  async function main() {
    document.body.dataset.status = 'loading';
    const drop = $('drop');
    drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
    drop.addEventListener('dragleave', () => drop.classList.remove('over'));
    drop.addEventListener('drop', (e) => {
      e.preventDefault();
      drop.classList.remove('over');
      onFiles(e.dataTransfer.files);
    });
    $('pick').addEventListener('change', (e) => onFiles(e.target.files));
    try {
      await loadModel();
      const urls = params.getAll('img');
      if (!urls.length) {
        document.body.dataset.status = 'ready';
        return;
      }
      const results = [];
      for (const u of urls) {
        const r = await fetch(u);
        if (!r.ok) throw new Error(`cannot fetch ${u}: HTTP ${r.status}`);
        results.push(await run(await r.blob(), u));
      }
      publish({ backend: app.backend, tfjs: tf.version_core, results });
    } catch (e) {
      setStatus(String(e.message || e), true);
      $('about').textContent = 'The model could not be loaded.';
      publish({ error: String(e.message || e) });
    }
  }

  if (typeof document !== 'undefined') main();
  else if (typeof module !== 'undefined') module.exports = { parsePyLiteral, decodeMeta, resizeCrop, toInput };
})();
