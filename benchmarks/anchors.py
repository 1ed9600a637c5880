#!/usr/bin/env python3
"""The anchors of bench_models' table: the authors' own RMT model, timed in PyTorch eager mode and
through ONNX Runtime, on the same threads and under the same load, printed as bench_models' rows.

    python3 benchmarks/anchors.py --official-repo DIR [--model rmt_s] [--batches 1,16]
        [--threads N] [--contend K] [--min-seconds 10] [--repeats 3] [--paths eager,ort]
        [--gflops G] [--no-memory] [--onnx-dir /tmp/rmt-anchors] [--spincount N] [--tag T] [--header]

DIR is a clone of the authors' repository (github.com/qhfan/RMT) that you provide; their
classifier (classfication_release/RMT.py) is imported from it at run time, nothing of it is copied
here. Needs torch, timm, einops, fvcore, onnx, onnxruntime and onnxscript
(`pip install onnxruntime onnx onnxscript`).

Method: for each batch size and path one worker process builds the model (random weights: speed
does not depend on their values), sets the threads (torch.set_num_threads; ONNX Runtime's
intra_op_num_threads, one inter-op thread) and times the path after a warm-up, at least --repeats
runs and until it has run --min-seconds; the median is reported. Then a worker of its own times a
1024x1024x1024 float32 torch.mm on the same threads for ~1 s (the floor's sgemm rate). One
process a path, and the sgemm apart: in one process on more than one thread, the threads each
runtime leaves spinning after its run (PyTorch's OpenMP pool, ONNX Runtime's intra-op pool) took
CPUs from the other's runs (2 threads on 2 CPUs: the sgemm at ~85 GFLOP/s instead of ~190, the
eager model ~10% slower). --contend K starts K busy processes before the timing and stops them
after it. Peak memory: one forward of each path in a process of its own (ru_maxrss). The model is
exported to ONNX once per batch size (torch.onnx.export, dynamo first, then the TorchScript
exporter) and cached in --onnx-dir.

GEMM floor: --gflops (pass bench_models' figure, 2 x rmt::summarize's MACs, so that every row
of the table has the same floor; compare.sh does) or else torch.utils.flop_counter's count of the
authors' forward, at the measured sgemm rate.

Threads: --threads N, else OMP_NUM_THREADS, else the CPUs this process may use (affinity mask,
cgroup quota), as rmt::runtime::configure_threads. The OpenMP wait policy is the environment's
(PyTorch's default spins); --spincount N sets GOMP_SPINCOUNT for the worker, as rmt's tools do.
ONNX Runtime keeps its own default (its intra-op threads spin; session.intra_op.allow_spinning).
"""
import argparse
import contextlib
import importlib.util
import io
import json
import math
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
import warnings

PRESETS = {"rmt_t": "RMT_T3", "rmt_s": "RMT_S", "rmt_b": "RMT_M2", "rmt_l": "RMT_L6"}
MODEL_FILE = "classfication_release/RMT.py"


# --- threads, as rmt::runtime::default_thread_count ------------------------------------------

def cgroup_quota():
    """The tightest cgroup CPU quota of this process (v2 cpu.max, v1 cfs), in CPUs, or None."""
    best = None
    try:
        with open("/proc/self/cgroup") as f:
            lines = [l.strip().split(":", 2) for l in f if l.count(":") >= 2]
    except OSError:
        return None
    candidates = []
    for _, controllers, path in lines:
        if controllers == "":
            candidates.append(("v2", "/sys/fs/cgroup", path))
            candidates.append(("v2", "/sys/fs/cgroup/unified", path))
        elif "cpu" in controllers.split(","):
            for mount in ("/sys/fs/cgroup/" + controllers, "/sys/fs/cgroup/cpu"):
                candidates.append(("v1", mount, path))
    for kind, mount, path in candidates:
        parts = [p for p in path.split("/") if p]
        for depth in range(len(parts), -1, -1):
            folder = os.path.join(mount, *parts[:depth])
            try:
                if kind == "v2":
                    quota, period = open(os.path.join(folder, "cpu.max")).read().split()
                    cpus = None if quota == "max" else int(quota) / int(period)
                else:
                    quota = int(open(os.path.join(folder, "cpu.cfs_quota_us")).read())
                    period = int(open(os.path.join(folder, "cpu.cfs_period_us")).read())
                    cpus = None if quota == -1 else quota / period
            except (OSError, ValueError):
                continue
            if cpus is not None and cpus > 0 and (best is None or cpus < best):
                best = cpus
    return best


def default_threads():
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        return int(env), "OMP_NUM_THREADS"
    n = len(os.sched_getaffinity(0))
    quota = cgroup_quota()
    if quota is not None and math.ceil(quota - 1e-9) < n:
        return max(1, math.ceil(quota - 1e-9)), "cgroup quota"
    return n, "affinity"


# --- the authors' model -----------------------------------------------------------------------

def load_authors_model(repo, preset):
    path = os.path.join(repo, MODEL_FILE)
    if not os.path.isfile(path):
        sys.exit(f"anchors.py: --official-repo {repo}: expected the authors' repository, "
                 f"with {MODEL_FILE}; not found")
    spec = importlib.util.spec_from_file_location("official_rmt_classifier", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        spec.loader.exec_module(module)
    constructor = getattr(module, PRESETS[preset], None)
    if constructor is None:
        sys.exit(f"anchors.py: {path} has no {PRESETS[preset]} (the constructor of {preset})")
    model = constructor(None)
    model.eval()
    return model


def onnx_path(args, batch):
    return os.path.join(args.onnx_dir, f"{args.model}_b{batch}_224.onnx")


def export_onnx(args, batch):
    """The authors' model as ONNX, one file per batch size (cached)."""
    import torch
    path = onnx_path(args, batch)
    if os.path.exists(path):
        return path
    os.makedirs(args.onnx_dir, exist_ok=True)
    model = load_authors_model(args.official_repo, args.model)
    x = torch.randn(batch, 3, 224, 224)
    tmp = path + ".tmp"
    errors = []
    for dynamo in (True, False):
        try:
            with torch.no_grad(), warnings.catch_warnings(), \
                    contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                warnings.simplefilter("ignore")
                torch.onnx.export(model, (x,), tmp, dynamo=dynamo, opset_version=18,
                                  input_names=["images"], output_names=["logits"],
                                  external_data=False)
            os.replace(tmp, path)
            return path
        except Exception as e:  # the next exporter
            errors.append(f"dynamo={dynamo}: {type(e).__name__}: {str(e)[:300]}")
    raise RuntimeError("ONNX export failed: " + " | ".join(errors))


def ort_session(path, threads):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


# --- workers (one process each) ---------------------------------------------------------------

def path_forward(args, batch, path):
    """One forward of `path` (eager or ort) on a batch, as a function of no arguments."""
    import torch
    torch.set_num_threads(args.threads)
    x = torch.randn(batch, 3, 224, 224)
    if path == "eager":
        model = load_authors_model(args.official_repo, args.model)

        def eager():
            with torch.no_grad():
                model(x)
        return eager
    session = ort_session(onnx_path(args, batch), args.threads)
    feed = {session.get_inputs()[0].name: x.numpy()}
    return lambda: session.run(None, feed)


def worker_speed(args, batch, path):
    forward = path_forward(args, batch, path)

    def timed():
        start = time.perf_counter()
        forward()
        return time.perf_counter() - start

    timed()  # warm-up
    times = []
    while len(times) < args.repeats or sum(times) < args.min_seconds:
        times.append(timed())
    return {"seconds": statistics.median(times)}


def worker_gemm(args):
    """The sgemm rate on the same threads (the floor), and the model's FLOPs unless given."""
    import torch
    torch.set_num_threads(args.threads)
    n = 1024
    a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    torch.mm(a, b, out=c)  # warm-up
    gemms, spent = [], 0.0
    while len(gemms) < 5 or spent < 1.0:
        start = time.perf_counter()
        torch.mm(a, b, out=c)
        gemms.append(time.perf_counter() - start)
        spent += gemms[-1]
    result = {"gemm_flops": 2.0 * n ** 3 / statistics.median(gemms)}
    if args.gflops is None:
        from torch.utils.flop_counter import FlopCounterMode
        model = load_authors_model(args.official_repo, args.model)
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(torch.randn(1, 3, 224, 224))
        result["model_flops"] = float(counter.get_total_flops())
    else:
        result["model_flops"] = args.gflops * 1e9
    return result


def worker_peak(args, batch, path):
    path_forward(args, batch, path)()
    return {"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}


def run_worker(args, job):
    """Runs `job` in a fresh interpreter; returns its JSON answer or raises with its stderr."""
    env = dict(os.environ)
    if args.spincount is not None:
        env["GOMP_SPINCOUNT"] = str(args.spincount)
    command = [sys.executable, os.path.abspath(__file__), "--_worker", json.dumps(job)] + args.argv
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else
                           f"worker exited with status {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- load -------------------------------------------------------------------------------------

class Contenders:
    """K processes that spin until stopped."""

    def __init__(self, count):
        self.pids = []
        for _ in range(count):
            pid = os.fork()
            if pid == 0:
                try:
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)
                    os.execv("/bin/sh", ["sh", "-c", "while :; do :; done"])
                finally:
                    os._exit(1)
            self.pids.append(pid)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for pid in self.pids:
            os.kill(pid, signal.SIGKILL)
        for pid in self.pids:
            os.waitpid(pid, 0)


# --- the table --------------------------------------------------------------------------------

LABELS = {"eager": "authors-eager", "ort": "authors-onnxruntime"}


def print_header(args, source):
    import torch
    import onnxruntime
    policy = " ".join(f"{k}={os.environ[k]}" for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
                      if k in os.environ)
    if args.spincount is not None:
        policy = f"GOMP_SPINCOUNT={args.spincount}"
    print(f"# the authors' {PRESETS[args.model]} ({args.official_repo}): torch {torch.__version__} eager, "
          f"onnxruntime {onnxruntime.__version__}; median of >= {args.repeats} alternating runs and "
          f">= {args.min_seconds:g} s per path")
    print(f"# threads: {args.threads} ({source}; {policy or 'OpenMP default wait policy'}); "
          f"{args.contend} busy processes during the timing")
    print()
    print("| model | path | input | batch | threads | busy procs | img/s | peak RSS MiB | "
          "sgemm GFLOP/s | GEMM floor img/s | of floor |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official-repo", required=True, help="a clone of the authors' repository")
    parser.add_argument("--model", default="rmt_s", choices=sorted(PRESETS))
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--threads", type=int, default=0, help="default: as rmt's tools")
    parser.add_argument("--contend", type=int, default=0, help="busy processes during the timing")
    parser.add_argument("--min-seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--paths", default="eager,ort")
    parser.add_argument("--gflops", type=float, default=None,
                        help="the model's GFLOP per image for the floor (default: counted)")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--onnx-dir", default="/tmp/rmt-anchors")
    parser.add_argument("--spincount", type=int, default=None, help="GOMP_SPINCOUNT for the workers")
    parser.add_argument("--header", action="store_true", help="print the table's header")
    parser.add_argument("--tag", default="", help="appended to the path's name: 'authors-eager [TAG]'")
    parser.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    argv = sys.argv[1:]
    args = parser.parse_args(argv)
    args.paths = [p for p in args.paths.split(",") if p]
    for p in args.paths:
        if p not in LABELS:
            parser.error(f"--paths: expected eager and/or ort, found '{p}'")
    if args._worker is None:
        source = "requested"
        if args.threads <= 0:
            args.threads, source = default_threads()
        # The workers get the resolved options.
        args.argv = [a for a in strip_worker_flags(argv)] + ["--threads", str(args.threads)]
    else:
        args.argv = []
    if args._worker is not None:
        job = json.loads(args._worker)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if job["kind"] == "speed":
                out = worker_speed(args, job["batch"], job["path"])
            elif job["kind"] == "gemm":
                out = worker_gemm(args)
            elif job["kind"] == "peak":
                out = worker_peak(args, job["batch"], job["path"])
            else:
                out = {"path": export_onnx(args, job["batch"])}
        print(json.dumps(out))
        return 0

    if args.header:
        print_header(args, source)
    for batch in [int(b) for b in args.batches.split(",") if b]:
        label = f"| {args.model} | %s | 224x224 | {batch} | {args.threads} | {args.contend} |"
        try:
            if "ort" in args.paths:
                run_worker(args, {"kind": "export", "batch": batch})
            speeds = {}
            with Contenders(args.contend):
                for p in args.paths:
                    speeds[p] = run_worker(args, {"kind": "speed", "batch": batch, "path": p})
                gemm = run_worker(args, {"kind": "gemm"})
            peaks = {}
            if not args.no_memory:
                for p in args.paths:
                    peaks[p] = run_worker(args, {"kind": "peak", "batch": batch, "path": p})["peak_mib"]
        except Exception as e:  # one row says what failed; the others still run
            print(label % ",".join(LABELS[p] for p in args.paths) + f" error: {e} | | | | |", flush=True)
            continue
        floor = gemm["gemm_flops"] / gemm["model_flops"]
        for p in args.paths:
            ips = batch / speeds[p]["seconds"]
            peak = f" {peaks[p]:.0f} |" if p in peaks else " |"
            name = LABELS[p] + (f" [{args.tag}]" if args.tag else "")
            print(label % name + f" {ips:.2f} |{peak} {gemm['gemm_flops'] / 1e9:.1f} | "
                  f"{floor:.2f} | {100 * ips / floor:.0f}% |", flush=True)
    return 0


def strip_worker_flags(argv):
    """The command line without --threads/--header (the parent resolves them)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--threads":
            skip = True
            continue
        if a.startswith("--threads=") or a == "--header":
            continue
        out.append(a)
    return out


if __name__ == "__main__":
    sys.exit(main())
