#!/usr/bin/env python3
"""One-command check of the GPU path (numpy + torch + this repository; onnxruntime optional),
run from the repository root:

    python benchmarks/gpu_check.py --all                                  # CUDA: every row below
    python benchmarks/gpu_check.py --all --fixtures ../shared/fixtures    # + the official goldens
    python benchmarks/gpu_check.py --all --device cpu --quick             # CI: same code path, no CUDA

Model: `--checkpoint` if given, else seed2 of `--fixtures` if given, else a seeded model built in
place (image-sensitive, recipe step A of fixtures/README.md; nothing to download).
Input: the goldens' preprocessed photo with `--fixtures`, else a seeded synthetic picture.
Every row is compared with two references: the official goldens (with `--fixtures`) and always
this machine's CPU fp32 outputs of the same model and input (computed first, in this run), with the
tolerances of `core/engine/goldens.py` for the row's precision (tf32: provisional, see there).

Rows (`--all`; otherwise `--precisions`): torch fp32 (TF32 off), tf32, fp16, bf16 (autocast, fp32
norms), fp32 + torch.compile of the encoder (if it compiles), ONNX Runtime CPU (device cpu only),
CUDA fp32, TensorRT fp16 from a cold engine cache and again warm (start-up = session + first
encode + first decode). A row that cannot run here is SKIPPED with its reason; a skip is never a pass.
Per row: errors, timings min / median in ms (CUDA events on torch CUDA rows, wall clock otherwise;
numpy in, numpy out as the node calls the backend) of the encoder (1024x1024 input), a 1-point
decode, `--boxes` boxes (default 100) and a SegEvery frame (encoder + the same fixed boxes), and
peak memory of the chosen device (torch: max_memory_allocated of that device; ONNX Runtime's GPU
arena is not visible to torch: n/a; CPU: the process's peak RSS so far).
Prints a table and a summary line (passed / failed / skipped with reasons), writes JSON (default
out/gpu_check_<device>.json); exit status 1 on any failure, 2 when the device is not there.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

from common import ROOT, machine, peak_rss_mb, print_table, write_json

try:  # installed (colcon) package first; on a bare GPU machine, the source tree beside benchmarks/
    import mobilesam_ros  # noqa: F401
except ImportError:
    sys.path.append(str(ROOT))

from bench_segany import boxes  # noqa: E402  (after the path fallback: same seeded box sampler)

CPU_EP, CUDA_EP, TRT_EP = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
SYNTH_CASES = ("p1_multi", "box")  # the reference cases without fixtures (+ boxes8)


# ----------------------------------------------------------------------------- model and input
def seeded_sam(seed: int = 2):
    """MobileSAM with seeded weights whose encoder sees the image: `torch.manual_seed(seed)`, the
    default init, then fixtures/README.md's step A for seed2 (He-normal convs, LeCun-normal Linears
    of the encoder, one generator seeded 1000 + seed over the sorted keys). Its embedding on the
    synthetic picture: rms 1.0, max 4.3, mirrored picture 0.80 of its norm away (seed2 on the
    goldens' photo: rms 1.0, max 4.8), so the golden tolerances apply at the same scale."""
    import torch

    from mobilesam_ros.core.modeling.sam import build_mobile_sam

    torch.manual_seed(seed)
    sam = build_mobile_sam()
    sd = sam.state_dict()
    g = torch.Generator().manual_seed(1000 + seed)
    for k in sorted(sd):
        w = sd[k]
        if k.startswith("image_encoder.") and k.endswith(".weight") and w.dim() in (2, 4):
            fan_in = int(torch.tensor(w.shape[1:]).prod())
            sd[k] = torch.randn(w.shape, generator=g) * ((2.0 if w.dim() == 4 else 1.0) / fan_in) ** 0.5
    sam.load_state_dict(sd)
    return sam.eval()


def synthetic_picture(h: int = 768, w: int = 1024, seed: int = 0):
    """A seeded (H, W, 3) uint8 RGB picture with edges and texture: a gradient, discs and noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([xx / w, yy / h, 1 - xx / w], -1) * 120
    for _ in range(6):
        cy, cx, r = rng.random() * h, rng.random() * w, 40 + rng.random() * 160
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(0, 256, 3)
    return np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)


def synthetic_prompts(h: int, w: int) -> dict:
    """Golden-format prompt keys for SYNTH_CASES and boxes8 on an (h, w) picture."""
    import numpy as np

    b = boxes(9, h, w)
    return {"p1_multi_point_coords": np.array([[w / 2, h / 2]], np.float32),
            "p1_multi_point_labels": np.array([1], np.int64), "p1_multi_multimask_output": np.array(True),
            "box_box": b[0], "box_multimask_output": np.array(False), "boxes8": b[1:]}


def reference_outputs(backend, x, size, prompts: dict, cases) -> dict:
    """`backend`'s outputs in the goldens' format (embedding, per case logits / IoU / packed masks,
    boxes8): the same-machine reference every row is compared with."""
    import numpy as np

    from mobilesam_ros.core.engine.goldens import case_kwargs
    from mobilesam_ros.core.engine.predictor import SamPredictor
    from mobilesam_ros.core.structures.prompts import make_prompt

    ref = dict(prompts)
    ref["embedding"] = backend.embedding(backend.encode(x))
    pred = SamPredictor(backend)
    pred.set_embedding(ref["embedding"], size, 1)

    def put(key, low, iou, masks):
        ref[f"{key}_low_res_logits"], ref[f"{key}_iou"] = low, iou
        ref[f"{key}_masks_shape"] = np.array(masks.shape)
        ref[f"{key}_masks_packed"] = np.packbits(masks, axis=-1)

    for case in cases:
        p = pred.predict(**case_kwargs(prompts, case))
        put(case, p.low_res_logits, p.iou, p.masks)
    ps = pred.predict_batch([make_prompt(box=b) for b in prompts["boxes8"]])
    put("boxes8", np.stack([p.low_res_logits for p in ps]), np.stack([p.iou for p in ps]),
        np.stack([p.masks for p in ps]))
    return ref


# ----------------------------------------------------------------------------- rows
def plan_rows(device: str, precisions: list[str], all_rows: bool, compile_mode: str,
              ort_available: Optional[list[str]]) -> list[dict]:
    """The rows to run, each {"row", "kind", "precision", ...} plus "skip": reason or None.
    ort_available: onnxruntime's providers, None when onnxruntime is missing."""
    cuda = device.startswith("cuda")
    rows = []
    for prec in (["fp32", "tf32", "fp16", "bf16"] if all_rows else precisions):
        skip = None
        if not cuda and prec == "tf32":
            skip = "TF32 is a CUDA mode (Ampere and later): on a CPU it is the fp32 row"
        elif not cuda and all_rows and prec in ("fp16", "bf16") and prec not in precisions:
            skip = ("16-bit convolutions have no native CPU kernels (minutes per encode): "
                    f"name it with --precisions {prec} to run it")
        rows.append({"row": f"torch {prec}", "kind": "torch", "precision": prec, "skip": skip})
    mode = compile_mode if compile_mode != "off" else ("default" if all_rows else "off")
    if mode != "off":
        skip = None if cuda or compile_mode != "off" else \
            "--all compiles on CUDA only (a CPU compile takes minutes): pass --compile MODE to run it"
        rows.append({"row": f"torch fp32+compile({mode})", "kind": "torch", "precision": "fp32",
                     "compile": mode, "skip": skip})
    if not all_rows:
        return rows

    def onnx(label, providers, prec, **kw):
        missing = "onnxruntime is not installed" if ort_available is None else next(
            (f"this onnxruntime build lacks {p} (install onnxruntime-gpu; TensorRT too for {TRT_EP})"
             for p in providers if p not in ort_available), None)
        rows.append({"row": label, "kind": "onnx", "precision": prec, "providers": providers,
                     "skip": missing, **kw})

    if not cuda:
        onnx("onnx CPU fp32", [CPU_EP], "fp32")
    onnx("onnx CUDA fp32", [CUDA_EP, CPU_EP], "fp32")
    onnx("onnx TensorRT fp16 cold", [TRT_EP, CUDA_EP, CPU_EP], "fp16", trt="cold")
    onnx("onnx TensorRT fp16 warm", [TRT_EP, CUDA_EP, CPU_EP], "fp16", trt="warm")
    if not cuda:  # GPU providers on a CPU run: the same rows, but nothing to run them on
        for r in rows:
            if r["kind"] == "onnx" and CPU_EP not in r["providers"][:1] and not r["skip"]:
                r["skip"] = "GPU providers with --device cpu: run with --device cuda[:N]"
    return rows


def timed_ms(fn: Callable[[], object], repeat: int, warmup: int, cuda: bool) -> dict:
    """min / median of `repeat` calls in ms; CUDA events bracket each call on a GPU."""
    import torch

    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize()
    ts = []
    for _ in range(repeat):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            ts.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t0) * 1e3)
    return {"min_ms": min(ts), "median_ms": statistics.median(ts), "runs": len(ts)}


@contextlib.contextmanager
def compiled_encoder(sam, mode: str) -> Iterator[None]:
    """sam's image encoder under torch.compile(mode) inside the block (restored after)."""
    import torch

    encoder = sam.image_encoder
    sam.image_encoder = torch.compile(encoder, mode=mode)
    try:
        yield
    finally:
        sam.image_encoder = encoder


def check_errors(backend, handle, size, ref: dict, cases, tol) -> tuple[dict, list[str]]:
    """The embedding in `handle`, then every case + boxes8 decoded from it, against `ref` (golden format)."""
    from mobilesam_ros.core.engine import goldens
    from mobilesam_ros.core.engine.predictor import SamPredictor

    emb = backend.embedding(handle)
    errs = goldens.embedding_errors(emb, ref["embedding"])
    pred = SamPredictor(backend)
    pred.set_embedding(emb, size, 1)
    errs.update(goldens.worst(goldens.predictor_errors(pred, ref, cases)))
    return errs, goldens.failures(errs, tol)


def measure(row: dict, backend, ctx: dict, cuda_events: bool, handle=None) -> None:
    """Errors against each reference, PASS/FAIL, and timings of `backend`, into `row`.
    handle: the backend's frame of ctx["x"] if one was already encoded (saves an encoder pass)."""
    from mobilesam_ros.core.engine import goldens
    from mobilesam_ros.core.engine.predictor import SamPredictor
    from mobilesam_ros.core.structures.prompts import make_prompt, to_tokens

    x, size, repeat, warmup = ctx["x"], ctx["size"], ctx["repeat"], ctx["warmup"]
    tol = goldens.TOLERANCES[row["precision"]]
    handle = backend.encode(x) if handle is None else handle
    bad = []
    for name, (ref, cases) in ctx["refs"].items():
        errs, fails = check_errors(backend, handle, size, ref, cases, tol)
        row[name] = errs
        bad += [f"vs {name}: {f}" for f in fails]
    row.update(status="FAIL" if bad else "PASS", failures=bad,
               provisional=row["precision"] in goldens.PROVISIONAL)
    tr = SamPredictor(backend).transform
    first = ctx["refs"]["cpu_ref"][0]
    pt = make_prompt(first["p1_multi_point_coords"], first["p1_multi_point_labels"], multimask=True)
    coords, labels = to_tokens([pt], lambda c: tr.apply_coords(c, size))
    bcoords, blabels = to_tokens([make_prompt(box=b) for b in boxes(ctx["n_boxes"], *size)],
                                 lambda c: tr.apply_coords(c, size))
    timings = {
        "encoder": timed_ms(lambda: backend.encode(x), repeat, warmup, cuda_events),
        "decode_1pt": timed_ms(lambda: backend.decode(handle, coords, labels, None, True), repeat * 3, warmup,
                               cuda_events),
        "boxes": timed_ms(lambda: backend.decode(handle, bcoords, blabels, None, False), repeat, warmup, cuda_events),
        "segevery_frame": timed_ms(lambda: backend.decode(backend.encode(x), bcoords, blabels, None, False),
                                   repeat, warmup, cuda_events),
    }
    row["timings"] = timings
    for k, t in timings.items():
        row[f"{k}_ms"] = f"{t['min_ms']:.1f}/{t['median_ms']:.1f}"


def run_torch_row(row: dict, sam, device: str, ctx: dict) -> None:
    import torch

    from mobilesam_ros.core.runtime.torch_backend import TorchBackend

    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    prec = row["precision"]
    be = TorchBackend(sam, device=device, precision="fp32" if prec == "tf32" else prec, tf32=prec == "tf32")
    if row.get("compile"):
        try:
            with compiled_encoder(sam, row["compile"]):
                h = be.encode(ctx["x"])  # compile now: a compiler problem is a skip, not a golden failure
                measure(row, be, ctx, cuda, handle=h)
        except Exception as exc:  # noqa: BLE001  "if it works": the reason is reported
            if "status" in row:
                raise
            row.update(status="SKIP", reason=f"torch.compile failed: {type(exc).__name__}: "
                       f"{(str(exc).splitlines() or [''])[0][:160]}")
            return
    else:
        measure(row, be, ctx, cuda)
    row["peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else peak_rss_mb()
    row["backend"] = be.describe()


def run_onnx_row(row: dict, device: str, ctx: dict) -> None:
    from mobilesam_ros.core.config import ModelConfig
    from mobilesam_ros.core.runtime.factory import onnx_providers
    from mobilesam_ros.core.runtime.onnx_backend import OnnxBackend

    enc, dec = ctx["graphs"]()
    if row.get("trt") == "cold":
        ctx["trt_root"] = tempfile.mkdtemp(prefix="gpu_check_trt_")  # an empty engine cache
    cfg = ModelConfig(backend="onnx", providers=tuple(row["providers"]), device=device,
                      precision=row["precision"], onnx_cache_dir=ctx.get("trt_root", ""))
    t0 = time.perf_counter()
    be = OnnxBackend(enc, dec, onnx_providers(cfg, enc, dec), cfg.cpu)
    h = be.encode(ctx["x"])
    be.decode(h, *ctx["first_tokens"], None, True)
    row["start_s"] = time.perf_counter() - t0
    measure(row, be, ctx, False, handle=h)
    row["peak_mb"] = "n/a" if device.startswith("cuda") else peak_rss_mb()
    row["backend"] = be.describe()


# ----------------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--all", action="store_true", help="every row (see the module docstring)")
    ap.add_argument("--fixtures", default="", help="folder with mobile_sam_seed2.pt + golden_seed2.npz: "
                    "also compare with the official goldens (default: none, a seeded model in place)")
    ap.add_argument("--checkpoint", default="", help="a mobile_sam.pt to check instead (no goldens)")
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    ap.add_argument("--precisions", default=None,
                    help="comma list of fp32,tf32,fp16,bf16 (default: all on CUDA, fp32 on CPU)")
    ap.add_argument("--quick", action="store_true", help="CI: one timed run each, no warm-up, 20 boxes")
    ap.add_argument("--boxes", type=int, default=None, help="boxes per batch decode (default 100)")
    ap.add_argument("--compile", default="off", choices=["off", "default", "reduce-overhead", "max-autotune"],
                    help="add a row with the encoder under torch.compile in this mode (--all: default on CUDA)")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads on CPU (0: torch's default)")
    ap.add_argument("--out", default=None, help="JSON path (default out/gpu_check_<device>.json)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import numpy as np
    import torch

    from mobilesam_ros.core.engine import goldens
    from mobilesam_ros.core.io.checkpoints import load_mobile_sam
    from mobilesam_ros.core.ops.transforms import preprocess_image
    from mobilesam_ros.core.runtime.torch_backend import TorchBackend

    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print(f"no CUDA GPU visible to torch {torch.__version__}; use --device cpu", file=sys.stderr)
        return 2
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    precisions = (args.precisions or ("fp32" if not cuda else "fp32,tf32,fp16,bf16")).split(",")
    repeat, warmup = (1, 0) if args.quick else ((5, 1) if not cuda else (20, 3))
    n_boxes = args.boxes or (20 if args.quick else 100)
    try:
        import onnxruntime as ort
        ort_available = ort.get_available_providers()
    except ImportError:
        ort, ort_available = None, None

    fixtures = Path(args.fixtures) if args.fixtures else None
    refs: dict = {}
    if fixtures is not None:
        golden = goldens.load_golden(str(fixtures / "golden_seed2.npz"))
        checkpoint = args.checkpoint or str(fixtures / "mobile_sam_seed2.pt")
        x, size, prompts, cases = golden["preprocessed"], tuple(int(v) for v in golden["original_size"]), golden, \
            goldens.CASES
        if not args.checkpoint:
            refs["golden"] = (golden, cases)
        model = f"{checkpoint} on the goldens' photo"
    else:
        picture = synthetic_picture()
        xt, _ = preprocess_image(picture)
        x, size = xt.numpy(), picture.shape[:2]
        prompts, cases, checkpoint = synthetic_prompts(*size), SYNTH_CASES, args.checkpoint
        model = f"{checkpoint or 'seeded model (built in place)'} on a seeded synthetic picture"
    sam = load_mobile_sam(checkpoint) if checkpoint else seeded_sam()
    refs["cpu_ref"] = (reference_outputs(TorchBackend(sam, "cpu"), x, size, prompts, cases), cases)

    graphs: dict = {}

    def get_graphs():
        """The ONNX graphs of this model, exported once into the product's cache."""
        if "paths" not in graphs:
            from mobilesam_ros.core.runtime.onnx_cache import cached_graphs

            ckpt = checkpoint
            if not ckpt:  # the seeded model: a checkpoint file for the cache key
                ckpt = str(ROOT / "out" / "gpu_check_seeded_sam.pt")
                Path(ckpt).parent.mkdir(parents=True, exist_ok=True)
                torch.save(sam.cpu().state_dict(), ckpt)
            graphs["paths"] = cached_graphs([ckpt], lambda: sam.cpu())
        return graphs["paths"]

    tr_coords = np.array([[[size[1] / 2 * 1024 / max(size), size[0] / 2 * 1024 / max(size)], [0.0, 0.0]]],
                         np.float32)
    ctx = {"x": x, "size": size, "refs": refs, "n_boxes": n_boxes, "repeat": repeat, "warmup": warmup,
           "graphs": get_graphs, "first_tokens": (tr_coords, np.array([[1.0, -1.0]], np.float32))}
    rows = plan_rows(args.device, precisions, args.all, args.compile, ort_available)
    for row in rows:
        if row["skip"]:
            row.update(status="SKIP", reason=row["skip"])
            continue
        try:
            if row["kind"] == "torch":
                run_torch_row(row, sam, args.device, ctx)
            else:
                run_onnx_row(row, args.device, ctx)
        except Exception as exc:  # noqa: BLE001  a row that crashes is a failure with its reason
            row.update(status="FAIL", failures=[f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"])
    elapsed = time.perf_counter() - t_start
    report(args, rows, refs, model, repeat, n_boxes, elapsed, ort)
    return 1 if any(r["status"] == "FAIL" for r in rows) else 0


def summary_line(rows: list[dict]) -> str:
    """'summary: P passed, F failed, S skipped' + each skip's reason."""
    n = {s: sum(r["status"] == s for r in rows) for s in ("PASS", "FAIL", "SKIP")}
    line = f"summary: {n['PASS']} passed, {n['FAIL']} failed, {n['SKIP']} skipped"
    skips = [f"{r['row']}: {r['reason']}" for r in rows if r["status"] == "SKIP"]
    return line + ("; skipped: " + "; ".join(skips) if skips else "")


def report(args, rows, refs, model, repeat, n_boxes, elapsed, ort) -> None:
    import torch

    from mobilesam_ros.core.engine import goldens

    cuda = args.device.startswith("cuda")
    name = torch.cuda.get_device_name(torch.device(args.device)) if cuda else "CPU"
    for r in rows:
        for ref in ("golden", "cpu_ref"):
            for k, v in (r.get(ref) or {}).items():
                r[f"{ref}_{k}"] = v
        if r["status"] == "PASS" and r.get("provisional"):
            r["status_shown"] = "PASS*"
    print(f"device {args.device} ({name}), torch {torch.__version__}"
          + (f", onnxruntime {ort.__version__}" if ort else "") + f"; {model}")
    print(f"timings min/median ms over {repeat} runs (1pt: {3 * repeat}); frame = encoder + {n_boxes} boxes")
    cols = [("row", "row", ""), ("status_shown", "status", ""),
            ("golden_emb_max", "gold emb max", "{:.2e}"), ("golden_logits", "gold logits", "{:.2e}"),
            ("golden_mask_agree", "gold agree", "{:.5f}"),
            ("cpu_ref_emb_max", "ref emb max", "{:.2e}"), ("cpu_ref_logits", "ref logits", "{:.2e}"),
            ("cpu_ref_mask_agree", "ref agree", "{:.5f}"),
            ("encoder_ms", "encoder ms", ""), ("decode_1pt_ms", "1pt ms", ""), ("boxes_ms", f"{n_boxes} boxes ms", ""),
            ("segevery_frame_ms", "frame ms", ""), ("start_s", "start s", "{:.1f}"), ("peak_mb", "peak MB", "{:.0f}")]
    for r in rows:
        r.setdefault("status_shown", r["status"])
    print_table(rows, cols)
    for r in rows:
        for line in r.get("failures", []):
            print(f"  FAIL {r['row']}: {line}")
    if any(r.get("provisional") for r in rows):
        print("  * tolerance is PROVISIONAL (core/engine/goldens.py): write this run's errors there, about 2x")
    print(summary_line(rows))
    print(f"total {elapsed:.1f} s")
    out = args.out or str(ROOT / "out" / f"gpu_check_{args.device.replace(':', '')}.json")
    write_json(out, {"device": args.device, "device_name": name, "date": datetime.date.today().isoformat(),
                     "torch": torch.__version__, "onnxruntime": ort.__version__ if ort else None,
                     "model": model, "machine": machine(), "elapsed_s": elapsed, "repeat": repeat,
                     "boxes": n_boxes, "references": sorted(refs),
                     "tolerances": {p: vars(t) for p, t in goldens.TOLERANCES.items()},
                     "provisional": sorted(goldens.PROVISIONAL), "rows": rows, "summary": summary_line(rows)})


if __name__ == "__main__":
    sys.exit(main())
