"""Conversions of the TensorFlow family, run in a child process (``python -m yolo_export.backends._tf_worker``).

Each conversion runs here rather than in the caller's process because:
- TensorFlow, onnx2tf and tensorflowjs change process-wide state (logging, import-time shims) and, once imported,
  make some other backend libraries crash when imported after them (see BACKENDS.md); the caller stays clean;
- the network is switched off for the whole child (sockets and name lookups raise), so no converter can fetch
  anything: onnx2tf's sample-image download is answered with our own images;
- tensorflowjs imports ``tensorflow_decision_forests`` at import time although a graph-model conversion never
  uses it; that package pins an older TensorFlow, so it is not installed, and an empty stand-in module is put in
  ``sys.modules`` for this child only.

Usage: ``python -m yolo_export.backends._tf_worker <command> <json-args>``; prints one JSON line on success,
``ERROR: <one line>`` on stderr and exit status 1 on failure.
"""

from __future__ import annotations

import json
import os
import sys
import types


def _no_network() -> None:
    import socket

    def refuse(*_a, **_k):
        raise OSError("network access is disabled during yolo-export conversions")

    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    socket.create_connection = refuse
    socket.getaddrinfo = refuse


def onnx_to_saved_model(onnx: str, out: str, sample: str) -> dict:
    """onnx2tf: ONNX (NCHW) -> SavedModel with an NHWC float32 input, signature ``serving_default``."""
    import numpy as np

    data = np.load(sample).astype(np.float32)           # NHWC images in the model's own preprocessing
    work = os.path.dirname(os.path.abspath(out))
    # onnx2tf looks for its sample file in the working directory before downloading it: put ours there too.
    os.chdir(work)
    np.save(os.path.join(work, "calibration_image_sample_data_20x128x128x3_float32.npy"), data)
    import onnx2tf
    import onnx2tf.onnx2tf as o2t

    o2t.download_test_image_data = lambda: data
    import tensorflow as tf
    import tf_keras

    model = onnx2tf.convert(input_onnx_file_path=onnx, output_folder_path=out, non_verbose=True,
                            disable_model_save=True, not_use_onnxsim=True)
    if model is None:
        raise RuntimeError("onnx2tf returned no model")
    sig = [tf.TensorSpec(t.shape, t.dtype, t.name) for t in model.inputs]
    archive = tf_keras.export.ExportArchive()
    archive.add_endpoint(name="serving_default", fn=lambda *inputs: model(inputs), input_signature=sig)
    archive.write_out(out)
    return {"inputs": [[t.name, list(t.shape)] for t in model.inputs]}


def saved_model_to_tflite(saved_model: str, out: str, precision: str, calib: str | None = None) -> dict:
    import numpy as np
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_saved_model(saved_model)
    if precision == "fp16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif precision == "int8":
        data = np.load(calib).astype(np.float32)        # NHWC
        fn = tf.saved_model.load(saved_model).signatures["serving_default"]
        batch = int(list(fn.structured_input_signature[1].values())[0].shape[0] or 1)

        def representative():
            for i in range(0, len(data) - batch + 1, batch):
                yield [data[i:i + batch]]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    with open(out, "wb") as f:
        f.write(conv.convert())
    return {"bytes": os.path.getsize(out)}


def saved_model_to_graphdef(saved_model: str, out: str, blob: str, node: str) -> dict:
    """Frozen GraphDef of ``serving_default`` with the metadata as a string constant node."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    fn = tf.saved_model.load(saved_model).signatures["serving_default"]
    frozen = convert_variables_to_constants_v2(fn)
    gd = frozen.graph.as_graph_def()
    io = {"inputs": [t.name for t in frozen.inputs], "outputs": [t.name for t in frozen.outputs]}
    with open(blob) as f:
        meta = json.load(f)
    add_metadata_node(tf, gd, node, json.dumps({**io, "metadata": meta}))
    with open(out, "wb") as f:
        f.write(gd.SerializeToString())
    return io


def add_metadata_node(tf, gd, node: str, text: str) -> None:
    for i, n in enumerate(gd.node):
        if n.name == node:
            del gd.node[i]
            break
    n = gd.node.add()
    n.name, n.op = node, "Const"
    n.attr["dtype"].type = tf.string.as_datatype_enum
    n.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(text.encode(), dtype=tf.string))


def saved_model_to_tfjs(saved_model: str, out: str, quant: str | None) -> dict:
    sys.modules.setdefault("tensorflow_decision_forests", types.ModuleType("tensorflow_decision_forests"))
    from tensorflowjs.converters import tf_saved_model_conversion_v2 as tfjs_conv

    qmap = {"float16": True} if quant == "fp16" else {"uint8": True} if quant == "int8" else None
    tfjs_conv.convert_tf_saved_model(saved_model, out, signature_def="serving_default", saved_model_tags="serve",
                                     quantization_dtype_map=qmap, strip_debug_ops=True,
                                     weight_shard_size_bytes=4 * 1024 * 1024)
    return {"files": sorted(os.listdir(out))}


COMMANDS = {"onnx2tf": onnx_to_saved_model, "tflite": saved_model_to_tflite, "pb": saved_model_to_graphdef,
            "tfjs": saved_model_to_tfjs}


def main(argv: list[str]) -> int:
    cmd, kwargs = argv[0], json.loads(argv[1])
    _no_network()
    try:
        res = COMMANDS[cmd](**kwargs)
    except BaseException as e:  # noqa: BLE001 - report one line to the parent
        import traceback

        traceback.print_exc(file=sys.stderr)
        msg = " ".join(str(e).split()) or type(e).__name__
        sys.stderr.write(f"\nERROR: {type(e).__name__}: {msg[:500]}\n")
        return 1
    sys.stdout.write("\nRESULT " + json.dumps(res) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
