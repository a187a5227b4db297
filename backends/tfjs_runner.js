'use strict';
// yolo-export TF.js runner: loads a TF.js graph model (model.json + weight shards) from disk and answers batches.
//
//   node tfjs_runner.js <web_model_dir> <npm_prefix_or_node_modules>
//
// Protocol on stdin/stdout, one frame each way per batch; a frame is
//   uint32 little-endian header length | UTF-8 JSON header | payload (header.bytes bytes)
// Start-up: the runner sends {"ok": true, "backend", "input", "output", "tfjs"} or {"error": "..."}.
// Request: {"shape": [n, h, w, c]} + float32 NHWC data. Reply: {"shape": [n, nc], "bytes": k} + float32 data,
// or {"error": "..."}. The runner exits when stdin closes. Everything it logs goes to stderr.

const fs = require('fs');
const path = require('path');
const { createRequire } = require('module');

const toStderr = (...a) => process.stderr.write(a.map(String).join(' ') + '\n');
console.log = console.info = console.warn = console.debug = toStderr;

function send(header, payload) {
  const h = Buffer.from(JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(4);
  len.writeUInt32LE(h.length, 0);
  process.stdout.write(payload ? Buffer.concat([len, h, payload]) : Buffer.concat([len, h]));
}

function moduleRequire(where) {
  const cands = [where, process.env.YOLO_EXPORT_NODE_PATH].filter(Boolean);
  for (const c of cands) {
    for (const d of [path.join(c, 'node_modules'), c]) {
      if (fs.existsSync(path.join(d, '@tensorflow', 'tfjs-core'))) {
        return createRequire(path.join(path.dirname(d), 'yolo-export-runner.js'));
      }
    }
  }
  throw new Error(`@tensorflow/tfjs-core not found under ${cands.join(' or ')}`);
}

function loadArtifacts(dir) {
  const mj = JSON.parse(fs.readFileSync(path.join(dir, 'model.json'), 'utf8'));
  const specs = [];
  const bufs = [];
  for (const group of mj.weightsManifest || []) {
    specs.push(...group.weights);
    for (const p of group.paths) bufs.push(fs.readFileSync(path.join(dir, p)));
  }
  const all = Buffer.concat(bufs);
  return {
    modelTopology: mj.modelTopology,
    format: mj.format,
    generatedBy: mj.generatedBy,
    convertedBy: mj.convertedBy,
    signature: mj.signature,
    userDefinedMetadata: mj.userDefinedMetadata,
    modelInitializer: mj.modelInitializer,
    weightSpecs: specs,
    weightData: all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength),
  };
}

async function pickBackend(tf, req) {
  const wanted = (process.env.YOLO_EXPORT_TFJS_BACKEND || 'wasm,cpu').split(',').map((s) => s.trim());
  const errors = [];
  for (const name of wanted) {
    try {
      const mod = req(`@tensorflow/tfjs-backend-${name}`);
      const n = Number(process.env.YOLO_EXPORT_TFJS_THREADS || 0);
      if (name === 'wasm' && n > 0 && mod.setThreadsCount) mod.setThreadsCount(n); // used by multithreaded wasm only
      if (await tf.setBackend(name)) {
        await tf.ready();
        return name;
      }
      errors.push(`${name}: setBackend failed`);
    } catch (e) {
      errors.push(`${name}: ${e.message}`);
    }
  }
  throw new Error(`no usable TF.js backend (${errors.join('; ')})`);
}

async function main() {
  const [dir, where] = process.argv.slice(2);
  const req = moduleRequire(where);
  const tf = req('@tensorflow/tfjs-core');
  const converter = req('@tensorflow/tfjs-converter');
  const backend = await pickBackend(tf, req);
  const artifacts = loadArtifacts(dir);
  const model = await converter.loadGraphModel({ load: async () => artifacts });
  // threads the backend really runs on: the wasm module's pool (1 with the single-threaded binary); the cpu backend
  // computes on this one JS thread
  const wasm = backend === 'wasm' ? req('@tensorflow/tfjs-backend-wasm') : null;
  const threads = wasm && wasm.getThreadsCount ? wasm.getThreadsCount() : 1;
  send({
    ok: true, backend, tfjs: tf.version_core, threads,
    input: model.inputs[0].shape, output: model.outputs[0].shape,
  });

  let buf = Buffer.alloc(0);
  const handle = (header, payload) => {
    const x = new Float32Array(payload.buffer.slice(payload.byteOffset, payload.byteOffset + payload.length));
    const y = tf.tidy(() => {
      const out = model.predict(tf.tensor(x, header.shape, 'float32'));
      return Array.isArray(out) ? out[0] : out;
    });
    const data = y.dataSync();
    const shape = y.shape;
    y.dispose();
    const f32 = data instanceof Float32Array ? data : Float32Array.from(data);
    const bytes = Buffer.from(f32.buffer, f32.byteOffset, f32.byteLength);
    send({ shape, bytes: bytes.length }, bytes);
  };
  process.stdin.on('data', (chunk) => {
    buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
    for (;;) {
      if (buf.length < 4) return;
      const hlen = buf.readUInt32LE(0);
      if (buf.length < 4 + hlen) return;
      const header = JSON.parse(buf.subarray(4, 4 + hlen).toString('utf8'));
      const n = header.bytes || 0;
      if (buf.length < 4 + hlen + n) return;
      const payload = buf.subarray(4 + hlen, 4 + hlen + n);
      buf = buf.subarray(4 + hlen + n);
      try {
        handle(header, payload);
      } catch (e) {
        send({ error: String((e && e.message) || e) });
      }
    }
  });
  process.stdin.on('end', () => process.exit(0));
}

main().catch((e) => {
  send({ error: String((e && e.message) || e).split('\n')[0] });
  process.exit(1);
});
