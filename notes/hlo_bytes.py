"""Bytes the memory-bound ops of a compiled XLA GPU program move, from its optimized HLO text, without
a GPU: every fusion that is not a matmul (and every copy, transpose, scatter, gather, reduce, sort or
custom call outside fusions) counted at its operands' and output's sizes, times the trip counts of
the while loops it runs in. A fused parameter read only through dynamic-slice / slice counts at its
slices, an in-place dynamic-update-slice at its update written and read. A lower bound on the time
follows at the HBM bandwidth; what a GPU reaches is measured only on one. Also printed: the matmul
fusions run a step and their FLOPs, to show that two layouts of a program compute the same.

Dump a program with XLA_FLAGS="--xla_dump_to=DIR --xla_dump_hlo_as_text" (for the train step on an
H200 without one: `arc-jax plan --config C --topology 1xh200 --no-search`, with the gpu-compile
extra; XLA's attention then stands in for cuDNN's), then, where arc_jax imports (the HLO is read by
arc_jax/tools/hlo_collectives.py):

    python notes/hlo_bytes.py DIR/module_*.jit_step.sm_9.0a_gpu_after_optimizations.txt [--once] [--top N]

--once: only the ops outside loops (the optimizer's update, the loss, scans' buffers being zeroed).
"""

from __future__ import annotations

import argparse
import collections
import math
import re

from arc_jax.tools.hlo_collectives import array_bytes, parse_module, trip_count

_UNFUSED = ("copy", "transpose", "dynamic-update-slice", "scatter", "gather", "reduce", "sort", "custom-call")


def nbytes(shape: str) -> int:
    """Bytes of every array in an HLO shape string (a tuple's summed)."""
    return sum(array_bytes(shape))


def _closing(s: str, i: int) -> int:
    depth = 0
    for j in range(i, len(s)):
        depth += s[j] in "({"
        depth -= s[j] in ")}"
        if depth == 0:
            return j
    raise ValueError(f"unbalanced: {s[i:i + 80]}")


def parse(path: str) -> tuple[dict, str, dict]:
    """(computations: name -> instructions, the entry's name, shapes: value name -> shape string), read
    by arc_jax's own HLO reader (`hlo_collectives.parse_module`); each instruction a dict with its
    operands split off its attributes, the computation's last one its root, as XLA prints them."""
    module, entry = parse_module(open(path).read())
    computations, shapes = {}, {}
    for name, body in module.items():
        computations[name] = []
        for i, ins in enumerate(body):
            j = _closing("(" + ins.rest, 0)  # rest: what follows the opcode's "("
            shapes[ins.name] = ins.type
            computations[name].append({
                "name": ins.name, "shape": ins.type, "opcode": ins.op, "root": i == len(body) - 1,
                "attrs": ins.rest[j:], "instruction": ins,
                "operands": [o.strip().lstrip("%") for o in ins.rest[:j - 1].split(",") if o.strip()]})
    return computations, entry, shapes


def _attr(attrs: str, key: str) -> str | None:
    m = re.search(key + r"=%?([\w.\-]+)", attrs)
    return m.group(1) if m else None


def _fusion_bytes(computations: dict, shapes: dict, fusion: dict) -> int:
    inner = computations.get(_attr(fusion["attrs"], "calls"), [])
    params = {i["name"]: int(i["operands"][0]) for i in inner if i["opcode"] == "parameter"}
    users = collections.defaultdict(list)
    for i in inner:
        for o in i["operands"]:
            users[o].append(i)
    total, in_place = nbytes(fusion["shape"]), None
    root = next((i for i in inner if i["root"]), None)
    if root and root["opcode"] == "dynamic-update-slice" and root["operands"][0] in params:
        in_place = root["operands"][0]
        total = 2 * nbytes(shapes.get(root["operands"][1], ""))
    for name, index in params.items():
        if name == in_place or index >= len(fusion["operands"]):
            continue
        slices = users.get(name, [])
        if slices and all(u["opcode"] in ("dynamic-slice", "slice") for u in slices):
            total += sum(nbytes(u["shape"]) for u in slices)
        else:
            total += nbytes(shapes.get(fusion["operands"][index], ""))
    return total


def _instructions(computations: dict, entry: str):
    """(instruction, runs) for every instruction the entry runs, loops and calls entered: runs is
    the product of the enclosing while loops' trip counts."""
    module = {name: [i["instruction"] for i in body] for name, body in computations.items()}

    def walk(computation: str, runs: int):
        for ins in computations.get(computation, []):
            op, attrs = ins["opcode"], ins["attrs"]
            if op == "while":
                trips = trip_count(ins["instruction"], module)
                yield from walk(_attr(attrs, "body"), runs * (trips or 1))
            elif op in ("call", "conditional", "async-start"):
                for key in ("to_apply", "calls"):
                    if _attr(attrs, key) in computations:
                        yield from walk(_attr(attrs, key), runs)
            else:
                yield ins, runs

    yield from walk(entry, 1)


def _dims(shape: str) -> list[int]:
    """The dimensions of the (first) array in an HLO shape string."""
    return [int(d) for d in re.search(r"\[([\d,]*)\]", shape).group(1).split(",") if d]


def _is_matmul(fusion: dict) -> bool:
    return "gemm" in fusion["name"] or "__triton_nested_gemm_fusion" in fusion["attrs"] or "__cublas" in fusion["attrs"]


def memory_ops(path: str) -> list[dict]:
    """Each memory-bound op: name, kind, bytes (one run), runs (loop trip counts multiplied), op_name."""
    computations, entry, shapes = parse(path)
    out = []
    for ins, runs in _instructions(computations, entry):
        op, attrs = ins["opcode"], ins["attrs"]
        meta = re.search(r'op_name="([^"]*)"', attrs)
        row = {"name": ins["name"], "shape": ins["shape"], "runs": runs, "op_name": meta.group(1) if meta else ""}
        if op == "fusion":
            if not _is_matmul(ins):
                out.append({**row, "kind": _attr(attrs, "kind"), "bytes": _fusion_bytes(computations, shapes, ins)})
        elif op in _UNFUSED:
            target = re.search(r'custom_call_target="([^"]*)"', attrs)
            if target and ("gemm" in target.group(1) or "cublas" in target.group(1)):
                continue
            out.append({**row, "kind": target.group(1) if target else op,
                        "bytes": nbytes(ins["shape"]) + sum(nbytes(shapes.get(o, "")) for o in ins["operands"])})
    return out


def matmuls(path: str) -> tuple[int, float]:
    """(matmul fusions run a step, their FLOPs), the loops' trip counts multiplied: two programs that
    differ in layout only (scanned or unrolled layers) run the same."""
    computations, entry, _ = parse(path)
    count, flops = 0, 0.0
    for ins, runs in _instructions(computations, entry):
        if ins["opcode"] != "fusion" or not _is_matmul(ins):
            continue
        count += runs
        inner = {i["name"]: i for i in computations.get(_attr(ins["attrs"], "calls"), [])}
        for dot in (i for i in inner.values() if i["opcode"] == "dot"):
            lhs = _dims(inner[dot["operands"][0]]["shape"])
            depth = 1
            for d in re.search(r"lhs_contracting_dims=\{([\d,]*)\}", dot["attrs"]).group(1).split(","):
                depth *= lhs[int(d)]
            flops += 2.0 * math.prod(_dims(dot["shape"])) * depth * runs
    return count, flops


def _source(op_name: str) -> str:
    skip = ("jit(", "while", "body", "closed_call", "checkpoint")
    return "/".join([p for p in op_name.split("/") if p and not p.startswith(skip)][:6])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("hlo", help="an optimized HLO text dump (*gpu_after_optimizations.txt)")
    parser.add_argument("--bandwidth", type=float, default=4.8e12, help="bytes/s (default an H200's 4.8e12)")
    parser.add_argument("--once", action="store_true", help="only the ops outside loops")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    ops = [o for o in memory_ops(args.hlo) if not args.once or o["runs"] == 1]
    moved = lambda o: o["bytes"] * o["runs"]  # noqa: E731
    ms = lambda b: b / args.bandwidth * 1e3  # noqa: E731
    total = sum(map(moved, ops))
    print(f"{len(ops)} memory-bound ops: {total / 1e9:.1f} GB a step, {ms(total):.1f} ms at {args.bandwidth / 1e12:.1f} TB/s")
    if not args.once:
        count, flops = matmuls(args.hlo)
        print(f"{count} matmuls a step (XLA's GEMM fusions, not custom calls), {flops / 1e12:.1f} TFLOP")
    for title, key in (("by kind", lambda o: o["kind"]), ("by source (op_name)", lambda o: _source(o["op_name"]))):
        print(title + ":")
        sums = collections.Counter()
        for o in ops:
            sums[key(o)] += moved(o)
        for k, b in sums.most_common(args.top):
            print(f"  {b / 1e9:8.1f} GB {ms(b):7.1f} ms  {k}")
    print("largest:")
    for o in sorted(ops, key=moved, reverse=True)[:args.top]:
        print(f"  {moved(o) / 1e9:7.1f} GB x{o['runs']:<3d} {o['kind']:8s} {o['name'][:36]:36s} {o['shape'][:48]:48s} "
              f"{_source(o['op_name'])[:80]}")


if __name__ == "__main__":
    main()
