"""TF.js (``*_web_model/``: ``model.json`` + weight shards): a graph model converted from the SavedModel.

Export: ``ctx.build('saved_model')`` then tensorflowjs's SavedModel -> graph-model converter, run in a child
process (see ``_tf_worker``) with fp32, float16 or uint8 weights. Prediction: a small Node.js runner shipped in this
package (``tfjs_runner.js``, npm ``@tensorflow/tfjs-core`` + ``tfjs-converter`` with the wasm or cpu backend), kept
alive as one subprocess per loaded model and fed float32 NHWC batches over stdin/stdout.

Node modules are looked up in ``$YOLO_EXPORT_NODE_PATH`` (an npm prefix or a ``node_modules`` dir), else in
``<cache_dir>/node`` (``~/.cache/yolo-export/node``); install them with the command ``npm_install_command()`` gives.
Metadata: ``metadata.yaml`` inside the directory, and the same map in ``model.json``'s ``userDefinedMetadata``.
Browser demo: the export also writes ``index.html`` + ``demo.js`` (``tfjs_demo.*`` here) and ``vendor/`` (the
tfjs-core/-backend-cpu/-backend-wasm/-converter browser bundles, copied from those npm packages) into the folder;
without the npm packages it logs one line and writes the model only. ``YOLO_EXPORT_TFJS_DEMO=0`` turns it off.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import weakref
from pathlib import Path

import numpy as np

from yolo_export.errors import FileError, NotAvailable, YoloExportError
from yolo_export.backends.tensorflow import TF_PACKAGES, no_deps_detail
from yolo_export.registry import HALF, INT8, Backend, Runner, register

RUNNER_JS = Path(__file__).with_name("tfjs_runner.js")
DEMO_ASSETS = {"index.html": "tfjs_demo.html", "demo.js": "tfjs_demo.js"}  # web model file <- package file
# Browser bundles copied into <web_model>/vendor/ from the runner's npm packages: (package, file, needed).
DEMO_VENDOR = (("tfjs-core", "tf-core.min.js", True), ("tfjs-backend-cpu", "tf-backend-cpu.min.js", True),
               ("tfjs-converter", "tf-converter.min.js", True), ("tfjs-backend-wasm", "tf-backend-wasm.min.js", False),
               ("tfjs-backend-wasm", "tfjs-backend-wasm.wasm", False),
               ("tfjs-backend-wasm", "tfjs-backend-wasm-simd.wasm", False))
NPM_PACKAGES = ("@tensorflow/tfjs-core@4.22.0", "@tensorflow/tfjs-converter@4.22.0",
                "@tensorflow/tfjs-backend-cpu@4.22.0", "@tensorflow/tfjs-backend-wasm@4.22.0")
NODE_MIN_MAJOR = 18


def node_prefix() -> Path:
    """Where the runner's npm packages live: $YOLO_EXPORT_NODE_PATH, else <cache_dir>/node."""
    from yolo_export.utils import cache_dir

    env = os.environ.get("YOLO_EXPORT_NODE_PATH")
    return Path(env).expanduser() if env else cache_dir() / "node"


def npm_install_command(prefix: Path | None = None) -> str:
    return f"npm install --prefix {shlex.quote(str(prefix or node_prefix()))} " + " ".join(NPM_PACKAGES)


def node_exe() -> str | None:
    return os.environ.get("YOLO_EXPORT_NODE") or shutil.which("node") or shutil.which("nodejs")


def _modules_dir(prefix: Path) -> Path | None:
    for d in (prefix / "node_modules", prefix):
        tf = d / "@tensorflow"
        if (tf / "tfjs-core").is_dir() and (tf / "tfjs-converter").is_dir() and (
                (tf / "tfjs-backend-wasm").is_dir() or (tf / "tfjs-backend-cpu").is_dir()):
            return d
    return None


def node_status() -> tuple[bool, str]:
    node = node_exe()
    if node is None:
        return False, (f"needs Node.js >= {NODE_MIN_MAJOR} on PATH (e.g. apt-get install nodejs npm), then: "
                       f"{npm_install_command()}")
    if _modules_dir(node_prefix()) is None:
        return False, f"needs the TF.js npm packages in {node_prefix()}: run {npm_install_command()}"
    return True, ""


def demo_vendor_files(prefix: Path | None = None) -> tuple[dict[str, Path], str]:
    """The browser bundles the demo needs ({name: source}), or ({}, why not) when the npm packages are missing.
    The wasm backend is optional (the page falls back to the cpu backend); core, cpu and converter are needed."""
    prefix = prefix or node_prefix()
    for d in (prefix / "node_modules", prefix):
        found, missing = {}, []
        for pkg, name, needed in DEMO_VENDOR:
            src = d / "@tensorflow" / pkg / "dist" / name
            if src.is_file():
                found[name] = src
            elif needed:
                missing.append(f"@tensorflow/{pkg}/dist/{name}")
        if not missing:
            if not all(n in found for p, n, _ in DEMO_VENDOR if p == "tfjs-backend-wasm"):
                found = {n: f for n, f in found.items() if not n.startswith(("tf-backend-wasm", "tfjs-backend-wasm"))}
            return found, ""
    partly = f" (missing {', '.join(missing)})" if len(missing) < sum(need for *_, need in DEMO_VENDOR) else ""
    return {}, f"needs the TF.js npm packages in {prefix}{partly}: run {npm_install_command()}"


def write_browser_demo(model_dir: Path, shown: str | None = None) -> bool:
    """Write ``index.html``, ``demo.js`` and ``vendor/*`` (copied from the npm packages; nothing is fetched) into a
    web model folder. Logs one line and returns False where the npm packages are missing; never raises for that.
    ``shown``: how the log names the folder (the export writes into a staging dir; it shows the final path)."""
    from yolo_export.utils import LOGGER

    model_dir = Path(model_dir)
    files, why = demo_vendor_files()
    if not files:
        LOGGER.info(f"TF.js browser demo not written: {why}")
        return False
    vendor = model_dir / "vendor"
    vendor.mkdir(parents=True, exist_ok=True)
    for name, src in files.items():
        shutil.copyfile(src, vendor / name)
    for name, asset in DEMO_ASSETS.items():
        shutil.copyfile(Path(__file__).with_name(asset), model_dir / name)
    shown = shown or str(model_dir)
    LOGGER.info(f"TF.js browser demo: {shown}/index.html (serve the folder over HTTP, e.g. "
                f"python -m http.server -d {shlex.quote(shown)}, then open http://localhost:8000/)")
    return True


class NodeRunner(Runner):
    """One long-lived ``node tfjs_runner.js`` process per loaded model; batches go over stdin/stdout."""

    def __init__(self, model_dir: Path, threads: int | None = None):
        from yolo_export.threads import resolve

        ok, why = node_status()
        if not ok:
            raise NotAvailable(f"cannot run a TF.js model here: {why}")
        self._err = tempfile.TemporaryFile()
        env = {**os.environ, "YOLO_EXPORT_TFJS_THREADS": str(resolve(threads))}
        self.proc = subprocess.Popen([node_exe(), str(RUNNER_JS), str(model_dir), str(node_prefix())],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err, env=env)
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _stop, self.proc, self._err)
        hello, _ = self._read()
        if "error" in hello:
            self.close()
            raise YoloExportError(f"the TF.js runner could not load {model_dir}: {hello['error']}")
        self.info = hello
        b = (hello.get("input") or [None])[0]
        self.fixed_batch = int(b) if isinstance(b, int) and b > 0 else None
        self.device = f"node-{hello.get('backend')}"
        self.threads = hello.get("threads")  # what the backend reports (the bundled wasm binary is single-threaded)

    def _read_exact(self, n: int) -> bytes:
        data = self.proc.stdout.read(n) if n else b""
        if len(data) != n:
            self._err.seek(0)
            tail = self._err.read().decode(errors="replace").strip().splitlines()
            raise YoloExportError(f"the TF.js runner stopped (exit {self.proc.poll()}): "
                                  f"{tail[-1] if tail else 'no message'}")
        return data

    def _read(self) -> tuple[dict, bytes]:
        (hlen,) = struct.unpack("<I", self._read_exact(4))
        header = json.loads(self._read_exact(hlen).decode())
        return header, self._read_exact(int(header.get("bytes") or 0))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype="<f4")
        h = json.dumps({"shape": list(x.shape), "bytes": x.nbytes}).encode()
        with self._lock:
            self.proc.stdin.write(struct.pack("<I", len(h)) + h + x.tobytes())
            self.proc.stdin.flush()
            header, payload = self._read()
        if "error" in header:
            raise YoloExportError(f"TF.js runner: {header['error']}")
        return np.frombuffer(payload, dtype="<f4").reshape(header["shape"]).astype(np.float32)

    def close(self):
        self._finalizer()


def _stop(proc, err) -> None:
    try:
        if proc.stdin:
            proc.stdin.close()
        proc.wait(timeout=5)
    except Exception:  # noqa: BLE001
        proc.kill()
    finally:
        if proc.stdout:
            proc.stdout.close()
        err.close()


@register
class TfjsBackend(Backend, name="tfjs", aliases=("web", "tensorflowjs"), title="TF.js", order=80, family="tensorflow",
                  suffix="_web_model", is_dir=True, content=("model.json", "*.bin"), layout="NHWC",
                  writes=("model.json", "*.bin", "demo.js", "index.html", "vendor/*", "metadata.yaml"),
                  extra="tfjs", requires=("tensorflow", "onnx2tf", "tf_keras", "tensorflowjs", "tensorflow_hub", "jax",
                                          "pkg_resources"), dists=("tensorflowjs",),
                  packages={**TF_PACKAGES, "pkg_resources": "setuptools<81"},
                  builds_on="saved_model", options=(HALF, INT8)):
    def missing_detail(self, names=None):
        return no_deps_detail(self, names)

    def runtime_available(self):
        return node_status()

    def require_runtime(self):
        ok, why = node_status()
        if not ok:
            raise NotAvailable(f"cannot run a TF.js model here: {why}")

    def export(self, ctx):
        from yolo_export.backends.tensorflow import run_worker
        from yolo_export.utils import LOGGER

        sm = ctx.build("saved_model")
        out = ctx.workdir / f"{ctx.stem}_web_model"
        LOGGER.info(f"converting TF SavedModel -> TF.js graph model ({ctx.precision} weights)...")
        run_worker("tfjs", "TF.js conversion", saved_model=Path(sm), out=out, quant=ctx.precision)
        self.write_metadata(out, ctx.metadata)
        if os.environ.get("YOLO_EXPORT_TFJS_DEMO", "1") != "0":
            write_browser_demo(out, shown=str(ctx.destination or out))
        return out

    def load(self, path, device, metadata, threads=None):
        check_manifest(Path(path))
        return NodeRunner(Path(path), threads=threads)

    def write_metadata(self, path: Path, meta):
        from yolo_export.metadata import encode
        from yolo_export.utils import atomic_write_bytes

        super().write_metadata(path, meta)
        mj = Path(path) / "model.json"
        if mj.exists():
            d = json.loads(mj.read_text())
            d["userDefinedMetadata"] = {"yolo_export": encode(meta)}
            atomic_write_bytes(mj, json.dumps(d).encode())

    def read_metadata(self, path):
        from yolo_export.metadata import decode

        meta = super().read_metadata(path)
        if meta:
            return meta
        mj = Path(path) / "model.json"
        if mj.exists():
            ud = (_model_json(mj).get("userDefinedMetadata") or {}).get("yolo_export")
            return decode(ud, mj) if ud else {}
        return {}


def _model_json(mj: Path) -> dict:
    from yolo_export.limits import MODEL_JSON_BYTES, loads_json

    MODEL_JSON_BYTES.check(mj.stat().st_size, "model.json size", mj)
    try:
        d = loads_json(mj.read_bytes(), "model.json", mj, budget=MODEL_JSON_BYTES)
    except ValueError as e:
        raise FileError(f"{mj}: not valid JSON ({str(e)[:80]})") from None
    if not isinstance(d, dict):
        raise FileError(f"{mj}: not a TF.js model (the top level is not an object)")
    return d


def check_manifest(model_dir: Path) -> None:
    """The weight shards that ``model.json`` names stay inside the model folder (the runtime reads them as weights)."""
    from yolo_export.limits import contained

    mj = model_dir / "model.json"
    if not mj.is_file():
        raise FileError(f"{model_dir}: no model.json in this TF.js folder")
    groups = _model_json(mj).get("weightsManifest") or []
    if not isinstance(groups, list):
        raise FileError(f"{mj}: weightsManifest must be a list")
    for i, group in enumerate(groups):
        paths = group.get("paths") if isinstance(group, dict) else None
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise FileError(f"{mj}: weightsManifest[{i}].paths must be a list of file names")
        for p in paths:
            contained(model_dir, p, f"weightsManifest[{i}].paths entry", mj)


def _main(argv: list[str]) -> int:
    """``python -m yolo_export.backends.tfjs npm-command``: print the npm command that installs the runner."""
    if argv[:1] == ["npm-command"]:
        print(npm_install_command(Path(argv[1]) if len(argv) > 1 else None))
        return 0
    if argv[:1] == ["npm-packages"]:
        print(" ".join(NPM_PACKAGES))
        return 0
    if argv[:1] == ["prefix"]:
        print(node_prefix())
        return 0
    if argv[:1] == ["demo"] and len(argv) == 2 and (Path(argv[1]) / "model.json").is_file():
        return 0 if write_browser_demo(Path(argv[1])) else 1
    sys.stderr.write("usage: python -m yolo_export.backends.tfjs {npm-command [PREFIX] | npm-packages | prefix | "
                     "demo WEB_MODEL_DIR}\n")
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))


