"""Where a profiled step's device time goes: the largest ops of a `jax.profiler` trace, by kind.

`arc-jax bench train --profile DIR` traces a few steps into DIR (open it in TensorBoard's profile
plugin or xprof for the timeline) and prints this summary of the newest trace there. Time is
summed per op over the traced steps and the devices, and divided by their counts (milliseconds a
step on one device):

- on a GPU, the kernels of the device's stream lines, named by the HLO op that launched them
  (the trace's `hlo_op` stat) when the trace has it, else by kernel name (also for the kernels
  of XLA's command buffers, CUDA graphs whose `hlo_op` names the graph, not the op);
- on a TPU, the "XLA Ops" line of each device;
- on the CPU (no GPU or TPU device plane), the events that name an XLA op (an `hlo_op` stat), on
  whichever thread ran them. The dots' events there cover a fraction of their work (bench_cpu_55m:
  0.9 s a step of dot events for ~0.9 TFLOP of matmuls, beyond the CPU's rate; the work runs on
  Eigen's thread pool outside them, as far as the trace shows): on the CPU the summary undercounts
  matmuls, its op time a step falls short of the step time, and it measures the other ops.

On a TPU's or the CPU's lines, only events that contain no other count (a loop's event around
its body's ops would count them twice).

Each op gets a kind from its name: matmul (cuBLAS / cuBLASLt / CUTLASS kernels, XLA dots and
convolutions), attention (cuDNN or Pallas/Mosaic kernels), collective, copy (memcpy, memset, copy
and transpose ops), else fusion (elementwise, reductions: the memory-bound rest). Kernels that
overlap on separate streams are each counted, so shares are of summed op time, which can exceed
the step's wall time.
"""

from __future__ import annotations

import collections
import pathlib
import re

# Planes of the accelerators' devices; not libtpu's "/device:CUSTOM:Megascale Trace", which a trace also
# holds whenever libtpu is loaded in the process (a CPU run after a deviceless TPU compile).
_DEVICE_PLANE = re.compile(r"/device:(GPU|TPU):\d+")
# Lines of a device plane that summarise other lines or are not ops (their events would be counted twice).
_SUMMARY_LINES = re.compile(r"XLA Modules|Steps|TraceMe|Launch Stats|Source|Framework|Host Offload|Sparse",
                            re.IGNORECASE)
_KINDS = (
    ("collective", re.compile(r"nccl|all-reduce|all-gather|reduce-scatter|all-to-all|collective-permute|"
                              r"allreduce|allgather|reducescatter|\bsend|\brecv", re.IGNORECASE)),
    ("attention", re.compile(r"cudnn|fmha|flash|mosaic|splash|pallas|attention", re.IGNORECASE)),
    ("matmul", re.compile(r"gemm|cublas|cutlass|nvjet|xmma|\bdot|convolution|matmul|sm90_", re.IGNORECASE)),
    ("copy", re.compile(r"memcpy|memset|^copy|transpose|copy[-_.]|dynamic-update-slice", re.IGNORECASE)),
)


def op_kind(name: str) -> str:
    """The kind of an op or kernel, from its name (module docstring)."""
    for kind, pattern in _KINDS:
        if pattern.search(name):
            return kind
    return "fusion"


def newest_trace(folder: str | pathlib.Path) -> pathlib.Path:
    traces = sorted(pathlib.Path(folder).glob("**/*.xplane.pb"), key=lambda p: p.stat().st_mtime)
    if not traces:
        raise FileNotFoundError(f"{folder}: no *.xplane.pb trace under it")
    return traces[-1]


def _stat(event, key: str):
    for k, v in event.stats:
        if k == key:
            return v
    return None


def _leaves(events):
    """The events of one line that contain no other: a while loop's or an executor's event around
    the ops it runs would count their time twice."""
    events = sorted(events, key=lambda e: (e.start_ns, -e.duration_ns))
    for event, following in zip(events, events[1:] + [None]):
        if following is None or following.start_ns >= event.start_ns + event.duration_ns:
            yield event


def _device_planes(profile) -> list:
    return [p for p in profile.planes if _DEVICE_PLANE.fullmatch(p.name)]


def _op_events(profile):
    """(op name, kernel name, duration in ns) of each op event, chosen as the module docstring says."""
    devices = _device_planes(profile)
    for plane in devices:
        lines = list(plane.lines)
        ops_lines = [line for line in lines if line.name == "XLA Ops"]
        chosen = ops_lines or [line for line in lines if not _SUMMARY_LINES.search(line.name)]
        for line in chosen:
            for event in _leaves(line.events) if ops_lines else line.events:  # kernels of a stream do not nest
                op = None if ops_lines else _stat(event, "hlo_op")
                if op is None or str(op).startswith("command_buffer"):  # a CUDA graph's kernels: by kernel name
                    op = event.name
                yield str(op), event.name, event.duration_ns
    if devices:
        return
    for plane in profile.planes:
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:  # worker threads, or the caller's thread when XLA runs a program inline
            for event in _leaves(e for e in line.events if _stat(e, "hlo_op") is not None):
                yield event.name, event.name, event.duration_ns


def summarize(folder: str | pathlib.Path, steps: int, top: int = 15) -> dict:
    """Device time per step of the newest trace under `folder`, `steps` steps traced: the `top`
    ops by time and the total by kind, in milliseconds per step, with shares of the summed time."""
    import jax

    path = newest_trace(folder)
    return summarize_profile(jax.profiler.ProfileData.from_file(str(path)), steps, top, str(path))


def summarize_profile(profile, steps: int, top: int = 15, path: str = "") -> dict:
    """`summarize` of a loaded trace (a jax.profiler.ProfileData, or anything with its planes,
    lines, events and stats)."""
    devices = max(1, len(_device_planes(profile)))
    by_op, kernels, counts = collections.Counter(), {}, collections.Counter()
    for op, kernel, ns in _op_events(profile):
        by_op[op] += ns
        counts[op] += 1
        kernels.setdefault(op, kernel)
    total = sum(by_op.values())  # a trace without op events: an empty summary, not an error
    kinds = {op: op_kind(f"{op} {kernels[op]}") for op in by_op}
    by_kind = collections.Counter()
    for op, ns in by_op.items():
        by_kind[kinds[op]] += ns
    ms, share = 1e-6 / steps / devices, 1 / max(total, 1)
    return {
        "trace": path, "steps": steps, "devices": devices, "op_ms_per_step": total * ms,
        "by_kind": {kind: {"ms": ns * ms, "share": ns * share} for kind, ns in by_kind.most_common()},
        "top_ops": [{"op": op, "kernel": kernels[op], "kind": kinds[op], "ms": ns * ms,
                     "share": ns * share, "calls_per_step": counts[op] / steps / devices}
                    for op, ns in by_op.most_common(top)],
    }


def format_summary(s: dict) -> str:
    if not s["top_ops"]:
        return f"profile      no op events in the trace ({s['trace']})"
    lines = [f"profile      {s['op_ms_per_step']:,.1f} ms of op time a step and device ({s['steps']} steps, "
             f"{s['devices']} device(s) traced: {s['trace']})",
             "  by kind    " + ", ".join(f"{k} {v['ms']:,.1f} ms ({v['share']:.0%})" for k, v in s["by_kind"].items()),
             "  largest ops (ms a step, share, calls a step, kind, op [kernel]):"]
    for r in s["top_ops"]:
        kernel = "" if r["kernel"] == r["op"] else f"  [{r['kernel'][:60]}]"
        lines.append(f"    {r['ms']:9,.2f} {r['share']:6.1%} {r['calls_per_step']:6.0f}  {r['kind']:<10} "
                     f"{r['op'][:60]}{kernel}")
    return "\n".join(lines)
