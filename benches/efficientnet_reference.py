"""Reference for `whaleid bench embed --model efficientnet-lite*` and `whaleid bench detect`:
onnxruntime (CPU) running the same EfficientNet-Lite network, built as an ONNX graph from the
same safetensors file whaleid reads (BatchNorm folded into the convolutions, as onnxruntime
would fold it itself).

Times the same work as whaleid's side: one warm-up batch, then --images random normalised
images in batches of --batch, each --size pixels square, or --height x --width (the
detector's input is a whole photo resized, not a square). Prints exactly one JSON line on stdout: {"ok": true, ...} or
{"ok": false, "error": "..."}.
"""

import argparse
import json
import resource
import struct
import sys
import time


def read_safetensors(path):
    import numpy as np

    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    body = data[8 + n :]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", name
        start, end = info["data_offsets"]
        tensors[name] = np.frombuffer(body[start:end], dtype=np.float32).reshape(info["shape"])
    return tensors


def build_model(t, eps=1e-3):
    """The network as an ONNX graph: input [B, 3, H, W] -> final map [B, 1280, H/32, W/32]."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    count = [0]

    def conv_bn(x, conv, bn, stride, groups, relu6):
        w = t[f"{conv}.weight"]
        scale = t[f"{bn}.weight"] / np.sqrt(t[f"{bn}.running_var"] + eps)
        bias = t[f"{bn}.bias"] - t[f"{bn}.running_mean"] * scale
        count[0] += 1
        i = count[0]
        inits.append(numpy_helper.from_array((w * scale[:, None, None, None]).astype(np.float32), f"w{i}"))
        inits.append(numpy_helper.from_array(bias.astype(np.float32), f"b{i}"))
        k = w.shape[2]
        y = f"conv{i}"
        nodes.append(
            helper.make_node(
                "Conv", [x, f"w{i}", f"b{i}"], [y], kernel_shape=[k, k], strides=[stride, stride],
                pads=[k // 2] * 4, group=groups,
            )
        )
        if relu6:
            nodes.append(helper.make_node("Clip", [y, "zero", "six"], [y + "r"]))
            y = y + "r"
        return y

    inits.append(numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"))
    inits.append(numpy_helper.from_array(np.array(6.0, dtype=np.float32), "six"))
    x = conv_bn("input", "_conv_stem", "_bn0", 2, 1, True)
    blocks = sorted({int(n.split(".")[1]) for n in t if n.startswith("_blocks.")})
    strides = block_strides(t, blocks)
    for b in blocks:
        p = f"_blocks.{b}"
        inp = x
        if f"{p}._expand_conv.weight" in t:
            x = conv_bn(x, f"{p}._expand_conv", f"{p}._bn0", 1, 1, True)
        mid = t[f"{p}._depthwise_conv.weight"].shape[0]
        x = conv_bn(x, f"{p}._depthwise_conv", f"{p}._bn1", strides[b], mid, True)
        x = conv_bn(x, f"{p}._project_conv", f"{p}._bn2", 1, 1, False)
        c_in = t[f"{p}._expand_conv.weight"].shape[1] if f"{p}._expand_conv.weight" in t else mid
        if strides[b] == 1 and c_in == t[f"{p}._project_conv.weight"].shape[0]:
            nodes.append(helper.make_node("Add", [x, inp], [x + "add"]))
            x = x + "add"
    x = conv_bn(x, "_conv_head", "_bn1", 1, 1, True)
    nodes.append(helper.make_node("Identity", [x], ["features"]))
    graph = helper.make_graph(
        nodes,
        "efficientnet_lite",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


def block_strides(t, blocks):
    """Stride 2 at the first block of stages 2, 3, 4 and 6 (stages: runs of equal output width)."""
    widths = [t[f"_blocks.{b}._project_conv.weight"].shape[0] for b in blocks]
    stage, strides = 0, {}
    for i, b in enumerate(blocks):
        first = i == 0 or widths[i] != widths[i - 1]
        if first:
            stage += 1
        strides[b] = 2 if first and stage in (2, 3, 4, 6) else 1
    return strides


def peak_rss_mib():
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--weights", required=True, help="efficientnet_lite*.safetensors written by whaleid")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--height", type=int, help="input height (default: --size)")
    parser.add_argument("--width", type=int, help="input width (default: --size)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import numpy as np
    import onnxruntime as ort

    model = build_model(read_safetensors(args.weights))
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    height, width = args.height or args.size, args.width or args.size
    images = rng.standard_normal((args.batch, 3, height, width), dtype=np.float32)

    out = session.run(None, {"input": images})[0]  # warm-up
    start = time.perf_counter()
    done = 0
    best = float("inf")
    while done < args.images:
        n = min(args.batch, args.images - done)
        batch_start = time.perf_counter()
        out = session.run(None, {"input": images[:n]})[0]
        best = min(best, (time.perf_counter() - batch_start) * 1e3 / n)
        done += n
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "ok": True,
                "onnxruntime": ort.__version__,
                "threads": args.threads,
                "images": done,
                "output_shape": list(out.shape),
                "seconds": seconds,
                "ms_per_image": seconds * 1e3 / done,
                "images_per_second": done / seconds,
                "best_batch_ms_per_image": best,
                "peak_rss_mib": peak_rss_mib(),
            }
        )
    )


if __name__ == "__main__":
    try:
        main()
    except Exception as error:
        print(json.dumps({"ok": False, "error": f"{type(error).__name__}: {error}"}))
        sys.exit(1)
