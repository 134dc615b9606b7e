"""The collectives of a compiled XLA program, read from its HLO text (`compiled.as_text()`): kind,
count and bytes per device, each counted as many times as it runs.

A scanned layer stack compiles to a while loop whose body holds the per-layer collectives once; the
loop's trip count is read from the while's backend_config ("known_trip_count", where XLA records it)
or else from its condition (`counter < constant`, the form lax.scan lowers to, counter from 0), and
every computation's collectives are multiplied by the product of the trip counts of the loops around
it. A loop whose count cannot be read counts once and is reported in `unknown_loops`.

Asynchronous forms count once, at their start: `all-gather-start` / `-done` pairs (TPU and GPU,
whose start's type is (operands, results), nested tuples for several buffers on GPU), and a
collective wrapped in `async-start(...), calls=%computation` / `async-done` (counted in the called
computation, reached from the start only).

Bytes of one collective: the full buffer it exchanges on a device, i.e. its result for all-reduce,
all-gather, all-to-all and collective-permute, its operand for reduce-scatter. Traffic (for a time
bound) is what a ring algorithm sends per device over a group of n: 2(n-1)/n of the bytes for
all-reduce, (n-1)/n for all-gather, reduce-scatter and all-to-all, all of it for a permute.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import re

KINDS = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute", "ragged-all-to-all",
         "collective-broadcast")
_DTYPE_BITS = {"pred": 8, "s4": 4, "u4": 4, "s8": 8, "u8": 8, "s16": 16, "u16": 16, "s32": 32, "u32": 32, "s64": 64,
               "u64": 64, "f16": 16, "bf16": 16, "f32": 32, "f64": 64, "c64": 64, "c128": 128}
_ARRAY = re.compile(r"\b([a-z]+[0-9]*(?:e[0-9]m[0-9][a-z]*)?)\[([0-9,]*)\]")
_COMPUTATION = re.compile(r"^(?:ENTRY )?%([\w.\-]+) ")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = ")
_CALLED = re.compile(r"\b(?:calls|to_apply|body|condition)=%([\w.\-]+)")
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")


@dataclasses.dataclass
class Instruction:
    name: str
    type: str      # the result type text
    op: str
    rest: str      # operands and attributes


@dataclasses.dataclass
class CollectiveStats:
    count: int = 0
    bytes: float = 0.0
    traffic_bytes: float = 0.0


def _split_type(text: str) -> tuple[str, str]:
    """(result type, the rest) of the text after "%name = ": a tuple type's parentheses balanced."""
    if not text.startswith("("):
        cut = text.index(" ")
        return text[:cut], text[cut + 1:]
    depth = 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0:
            return text[: i + 1], text[i + 2:]
    return text, ""


def parse_module(hlo: str) -> tuple[dict[str, list[Instruction]], str]:
    """({computation: its instructions}, name of the entry computation). A computation ends at a
    line that is "}" alone: an attribute printed over several lines (a Pallas call's backend_config
    on TPU) may start a line with "}}", and stays with its instruction."""
    computations: dict[str, list[Instruction]] = {}
    entry, current = "", None
    for line in hlo.splitlines():
        if current is None:
            m = _COMPUTATION.match(line)
            if m and line.rstrip().endswith("{"):
                current = computations.setdefault(m.group(1), [])
                entry = m.group(1) if line.startswith("ENTRY") else entry
            continue
        if line.rstrip() == "}":
            current = None
            continue
        m = _INSTRUCTION.match(line)
        if m:
            type_text, rest = _split_type(line[m.end():])
            op, _, rest = rest.partition("(")
            current.append(Instruction(m.group(1), type_text, op.strip(), rest))
        elif current:  # an attribute printed over several lines (splash's backend_config holds newlines)
            current[-1].rest += "\n" + line
    return computations, entry


def array_bytes(type_text: str) -> list[int]:
    """Bytes of each array in a (possibly tuple) HLO type, in order."""
    out = []
    for dtype, dims in _ARRAY.findall(type_text):
        bits = _DTYPE_BITS.get(dtype, 8 if dtype.startswith("f8") else 32)
        out.append(math.prod(int(d) for d in dims.split(",") if d) * bits // 8)
    return out


def trip_count(while_op: Instruction, computations: dict[str, list[Instruction]]) -> int | None:
    """Iterations of a while loop: backend_config's known_trip_count, else `i < N` in its condition."""
    m = re.search(r'"known_trip_count":\{"n":"(\d+)"', while_op.rest)
    if m:
        return int(m.group(1))
    cond = re.search(r"condition=%([\w.\-]+)", while_op.rest)
    body = computations.get(cond.group(1), []) if cond else []
    constants = {i.name: int(c.group(1)) for i in body if i.op == "constant"
                 and (c := re.match(r"(-?\d+)\)", i.rest))}
    for ins in body:
        if ins.op == "compare" and "direction=LT" in ins.rest:
            operands = re.findall(r"%([\w.\-]+)", ins.rest.split(")")[0])
            if len(operands) == 2 and operands[1] in constants:
                return constants[operands[1]]
    return None


def _group_size(rest: str, device_count: int) -> int:
    m = re.search(r"replica_groups=\{\{([0-9,]*)\}", rest)
    if m:
        return len(m.group(1).split(","))
    m = re.search(r"replica_groups=\[(\d+),(\d+)\]", rest)
    if m:
        return int(m.group(2))
    m = re.search(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}", rest)
    if m:
        sizes = dict(re.findall(r"'(\w+)'=(\d+)", m.group(1)))
        return math.prod(int(sizes.get(a, 1)) for a in re.findall(r"'(\w+)'", m.group(2)))
    return device_count


def _collective_bytes(ins: Instruction, kind: str, shapes: dict[str, str]) -> int:
    if kind == "reduce-scatter":  # the result is one shard: count the operands
        return sum(sum(array_bytes(shapes.get(n, ""))) for n in re.findall(r"%([\w.\-]+)", ins.rest.split(")")[0]))
    arrays = [b for b in array_bytes(ins.type)]
    if ins.op.endswith("-start") and kind != "all-reduce" and ins.type.startswith("("):
        arrays = [b for t, b in zip(_ARRAY.findall(ins.type), arrays) if t[1] != ""]  # drop u32[] contexts
        return sum(arrays[len(arrays) // 2:])  # (operands..., results...)
    return sum(arrays)


def _multiplicities(computations, entry: str) -> tuple[dict[str, int], list[str]]:
    """How many times each computation runs per execution of the entry, and loops of unknown count."""
    edges: dict[str, list[tuple[str, int]]] = collections.defaultdict(list)
    unknown = []
    for name, body in computations.items():
        for ins in body:
            trips = 1
            if ins.op == "while":
                count = trip_count(ins, computations)
                unknown += [ins.name] if count is None else []
                trips = count or 1
            if ins.op in ("async-update", "async-done"):  # the same computation as their async-start
                continue
            for called in _CALLED.findall(ins.rest):
                edges[name].append((called, trips))
            for group in _BRANCHES.findall(ins.rest):
                edges[name] += [(c, 1) for c in re.findall(r"%([\w.\-]+)", group)]
    times: dict[str, int] = collections.defaultdict(int)

    def visit(name: str, n: int, depth: int = 0) -> None:
        times[name] += n
        if depth < 64:
            for called, trips in edges.get(name, ()):
                visit(called, n * trips, depth + 1)

    visit(entry, 1)
    return times, unknown


def collectives(hlo: str, device_count: int) -> tuple[dict[str, CollectiveStats], list[str]]:
    """({kind: count, bytes and ring traffic per device, loops applied}, loops of unknown trip count)."""
    computations, entry = parse_module(hlo)
    shapes = {ins.name: ins.type for body in computations.values() for ins in body}
    times, unknown = _multiplicities(computations, entry)
    out: dict[str, CollectiveStats] = {}
    for name, body in computations.items():
        for ins in body:
            kind = ins.op.removesuffix("-start")
            if kind not in KINDS or not times.get(name):
                continue
            n, size = times[name], _collective_bytes(ins, kind, shapes)
            group = _group_size(ins.rest, device_count)
            share = 1.0 if kind == "collective-permute" else (group - 1) / max(group, 1)
            stats = out.setdefault(kind, CollectiveStats())
            stats.count += n
            stats.bytes += n * size
            stats.traffic_bytes += n * size * share * (2 if kind == "all-reduce" else 1)
    return out, unknown
