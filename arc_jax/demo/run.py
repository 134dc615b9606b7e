"""`arc-jax demo`: the paper's experiment in miniature, end to end on a CPU.

    arc-jax demo [--workdir arc_jax_demo] [--resume] [--smoke] [--seed 0]

Stages, each through the code a real run uses (config files in configs/, the input pipeline, the
trainer, Orbax checkpoints, the evaluation harness):

1. data      the synthetic people corpus and its sentencepiece tokenizer (arc_jax.demo.synthetic),
             60 held-out people whose facts exist only in their evaluation documents,
             documents about 4000 other new people for the encoder's pretraining, and QA
             about 7000 more for its fine-tuning, on documents of 1 to 6 of their facts;
2. decoder   a small decoder LM trained from scratch (configs/demo_decoder.py, arc_jax.demo.decoder_lm)
             on the corpus's documents and on open-book QA in the harness's "Document/Question/
             Answer" few-shot format, then frozen;
3. encoder   an ARC encoder made from the decoder's layers (`convert.fresh`: the paper makes its
             encoder from a truncated Llama), pretrained with reconstruction + continuation
             against the frozen decoder (configs/demo_arc_pretrain.py), then fine-tuned on QA
             with compressed documents at pooling factor 4 (and 8 with --pooling-factors 4 8;
             configs/demo_arc_finetune.py);
4. eval      the harness on the held-out people (zero-shot prompts): closed book, open book (full
             document text), and each ARC encoder's compressed documents: exact match,
             compression ratio, decoder prefill tokens;
5. report    results.json / results.md / demo.png (training curves, EM bars) in the workdir.

A run reuses nothing: without --resume an earlier demo in the workdir is deleted first (a folder
that is not a demo's is refused). With --resume every stage continues from its checkpoints and a
finished stage is kept. --smoke shrinks every stage to a few steps of tiny models (the test suite's
version: it checks the artefacts, not the numbers). --seed seeds every stage: the corpus (its people
and facts), the decoder LM's weights and data order, the encoder's fresh parts, and the encoder
runs' data order; 0 is the README's run.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Callable

MARKER = "demo.json"
MODES = ("closed_book", "open_book")
# In-context examples of the evaluation prompt: none, as the ARC encoder is fine-tuned
# (configs/demo_arc_finetune.py; the decoder LM trains on 0- and 1-shot episodes, 70% with none).
# With one shot, the same for every question, most of ARC4's errors were words of that shot's
# document (seeds 0 / 1 / 2 at 40c70df: 123 of 169, 35 of 58, 118 of 134 wrong answers; seed 0's
# towns: 57 of 59 answered with the shot's town): 52.9 / 83.8 / 62.7% EM, and 87.5 / 99.7 / 96.7%
# with none, on the same models. Fine-tuning on half 0-, half 1-shot samples instead: 39% either way.
SHOTS = 0
# The demo's models are small (width 128): one device a core, each stepping its share of a batch's
# rows, runs their steps faster than two threads sharing each small matmul (notes/cpu_devices_ab.py,
# medians of the ratio, on a loaded / a quieter host: decoder LM 0.62x / 0.81x, ARC pretraining
# 0.84x / 0.97x, fine-tuning 0.81x / 0.93x the step time; README). Their batches' rows are multiples of 2.
CPU_DEVICES = 2
CONFIGS = Path(__file__).resolve().parents[2] / "configs"

# --smoke: a few steps of tiny models in every stage (seconds, not minutes).
SMOKE_DECODER = ["max_steps=6", "log_every=2", "checkpoint_every=6", "probe_every=3", "probe_examples=8",
                 "data.corpus.n_entities=40", "data.corpus.held_out=8", "data.corpus.pretrain_copies=1",
                 "data.corpus.vocab_size=512", "data.fresh_people=20", "demo.encoder_people=40",
                 "demo.finetune_people=60", "model.dim=32", "model.n_heads=2", "model.n_kv_heads=2",
                 "model.head_dim=16", "model.hidden_dim=64"]
SMOKE_ARC = ["max_steps=4", "log_every=2", "checkpoint_every=4", "optimizer.warmup_steps=2"]
# The tiny tokenizer's fine-tuning documents and samples are longer than the real one's (decoder_span 53
# slots, attention rows of at most 104 and 56): whole rows attended instead.
SMOKE_FINETUNE = ["data.shape.decoder_span=0", "data.shape.encoder_attention_rows=[]",
                  "data.shape.decoder_attention_rows=[]"]


def _load(name: str, overrides: list[str]):
    from arc_jax.config_loading import load_config

    path = CONFIGS / name
    if not path.exists():
        raise FileNotFoundError(f"{path}: the demo's config files come with the arc_jax repository "
                                "(install it with `pip install -e .` from a clone)")
    return load_config(path, [f"--config.{o}" for o in overrides])


def _arc_config(name: str, dec_config, overrides: list[str]):
    """An ARC stage's config whose encoder and decoder shapes are those of the decoder the demo
    trained (`dec_config`, overrides included): the encoder is made from that decoder's layers."""
    from arc_jax.config_loading import to_plain

    config = _load(name, overrides)
    backbone = to_plain(dec_config.model)
    config.model.decoders[0].backbone = dict(backbone)
    config.model.encoder.backbone = {**backbone, "n_layers": backbone["n_layers"] - dec_config.demo.truncated_layers}
    config.model.encoder.n_truncated_layers = dec_config.demo.truncated_layers
    config.model.encoder.projectors = [{"in_dim": backbone["dim"], "hidden_dim": dec_config.demo.projector_hidden,
                                        "out_dim": backbone["dim"]}]
    config.data.corpus = to_plain(dec_config.data.corpus)
    return config


def _show_progress_logs() -> None:
    """arc_jax's progress log lines (the decoder LM's) on stdout, once."""
    import logging
    import sys

    logger = logging.getLogger("arc_jax")
    if not any(getattr(h, "arc_jax_demo", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.arc_jax_demo = True
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False  # not twice when another library configured the root logger


def _prepare_workdir(workdir: Path, resume: bool) -> None:
    if workdir.exists() and any(workdir.iterdir()):
        if not (workdir / MARKER).exists():
            raise FileExistsError(f"{workdir} exists, is not empty and holds no {MARKER}: not a demo's folder; "
                                  "choose another --workdir")
        if not resume:
            shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / MARKER).write_text(json.dumps({"started": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")


class _Clock:
    """Wall time per stage, printed as each ends."""

    def __init__(self, say: Callable[[str], None]):
        self.say, self.seconds, self.t0 = say, {}, time.time()

    def stage(self, name: str, fn, *args, **kwargs):
        self.say(f"== {name} ==")
        t = time.time()
        out = fn(*args, **kwargs)
        self.seconds[name] = round(time.time() - t, 1)
        self.say(f"== {name}: {self.seconds[name]:.0f} s ==")
        return out


def run_demo(workdir: str | Path = "arc_jax_demo", *, resume: bool = False, smoke: bool = False,
             pooling_factors: tuple[int, ...] = (4,), max_examples: int | None = None, shots: int = SHOTS,
             seed: int = 0, say: Callable[[str], None] = print) -> dict:
    """Run (or resume) the demo in `workdir`; returns what results.json holds (mode -> em in percent,
    f1, compression_ratio, prefill_tokens, n). Settings and stage times go to workdir/demo.json.
    On a CPU of at least `CPU_DEVICES` cores, called before jax has started, the cores become as
    many devices, and every training stage splits its batches over them (xla_cpu.split_host_cpu)."""
    import jax

    from arc_jax.demo.synthetic import build_tiny_data, write_fresh_people
    from arc_jax.demo import decoder_lm as lm
    from arc_jax.train import xla_cpu

    xla_cpu.split_host_cpu(CPU_DEVICES)
    workdir = Path(workdir).expanduser().resolve()
    _prepare_workdir(workdir, resume)
    _show_progress_logs()
    clock = _Clock(say)
    data_dir = workdir / "data"
    common = [f"data.dir={data_dir}", f"seed={seed}"]

    # 1. Data.
    dec_config = _load("demo_decoder.py", common + [f"data.corpus.seed={seed}"] + (SMOKE_DECODER if smoke else []))

    def data():
        paths = build_tiny_data(data_dir, **dict(dec_config.data.corpus))
        demo = dec_config.demo
        return paths | write_fresh_people(data_dir, demo.encoder_people, seed=seed, qa_people=demo.finetune_people,
                                          qa_min_attributes=demo.finetune_min_attributes)

    paths = clock.stage("data", data)
    say(f"corpus and tokenizer in {data_dir}")

    # 2. The decoder LM.
    lm_dir = workdir / "decoder_lm"
    lm_summary = clock.stage("decoder", lm.train_lm, dec_config, lm_dir, resume=resume)
    decoder_path = lm_dir / "decoder"

    # 3. The encoder: made from the decoder, pretrained, fine-tuned per pooling factor.
    pre_dir, tuned = _train_encoders(workdir, dec_config, decoder_path, common, smoke=smoke,
                                     pooling_factors=pooling_factors, clock=clock, seed=seed)
    # 4. Evaluation on the held-out people.
    results = _evaluate_held_out(workdir, paths, decoder_path, tuned, pooling_factors=pooling_factors,
                                 shots=shots, max_examples=max_examples, clock=clock)
    # 5. Report.
    run = {"smoke": smoke, "seed": seed, "pooling_factors": list(pooling_factors), "shots": shots,
           "max_examples": max_examples, "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}"}
    return _report(workdir, results, run, lm_summary["params"], clock, decoder_path=decoder_path, lm_dir=lm_dir,
                   pre_dir=pre_dir, tuned=tuned)


def _train_encoders(workdir: Path, dec_config, decoder_path: Path, common: list[str], *, smoke: bool,
                    pooling_factors: tuple[int, ...], clock: _Clock, seed: int = 0) -> tuple[Path, dict[int, Path]]:
    """Stage 3: the encoder made from the decoder's layers, pretrained, then fine-tuned once per
    pooling factor. Returns the pretraining's workdir and each pooling factor's fine-tuning workdir."""
    from arc_jax.train.trainer import Trainer

    fresh_path = workdir / "encoder_init"
    clock.stage("encoder init", _fresh_encoder, decoder_path, fresh_path, dec_config, seed)
    arc = SMOKE_ARC if smoke else []
    decoder_overrides = [f"model.decoders.0.path={decoder_path}"]
    pre_config = _arc_config("demo_arc_pretrain.py", dec_config,
                             common + decoder_overrides + [f"init_encoder={fresh_path}"] + arc)
    pre_dir = workdir / "arc_pretrain"
    clock.stage("pretrain", lambda: Trainer(pre_config, pre_dir).fit())
    tuned = {}
    for pf in pooling_factors:
        ft_config = _arc_config("demo_arc_finetune.py", dec_config, common + decoder_overrides + arc + [
            f"init_encoder={pre_dir}", f"model.encoder.compress_rates=[-{pf}]"] + (SMOKE_FINETUNE if smoke else []))
        tuned[pf] = workdir / f"arc{pf}"
        clock.stage(f"fine-tune ARC{pf}", lambda c=ft_config, d=tuned[pf]: Trainer(c, d).fit())
    return pre_dir, tuned


def _evaluate_held_out(workdir: Path, paths: dict, decoder_path: Path, tuned: dict[int, Path], *,
                       pooling_factors: tuple[int, ...], shots: int, max_examples: int | None,
                       clock: _Clock) -> dict:
    """Stage 4: the harness on the held-out people, closed and open book then each ARC encoder's
    compressed documents; returns mode -> the harness's results for that mode."""
    import arc_jax

    tokenizer = paths["tokenizer"]
    decoder = arc_jax.load_decoder(decoder_path)
    bench = f"{paths['qa_eval']}:qa"
    results = {}

    def evaluate(name, encoder, modes):
        from arc_jax.evaluation.harness import evaluate as harness_evaluate

        pipe = arc_jax.ARCPipeline(encoder, decoder, 0, encoder_tokenizer=tokenizer, decoder_tokenizer=tokenizer)
        out = harness_evaluate(pipe, [bench], modes, workdir / "eval" / name, shots=shots,
                               max_examples=max_examples, progress=True)
        return next(iter(out["benchmarks"].values()))["modes"]

    def evaluate_all():
        encoders = {pf: arc_jax.load_encoder(tuned[pf]) for pf in pooling_factors}
        # Text modes never run the encoder; the pipeline needs one all the same.
        results.update(evaluate("text", encoders[pooling_factors[0]], list(MODES)))
        for pf in pooling_factors:
            results[f"arc{pf}"] = evaluate(f"arc{pf}", encoders[pf], ["compressed"])["compressed"]

    clock.stage("evaluation", evaluate_all)
    return results


def _report(workdir: Path, results: dict, run: dict, decoder_params: int, clock: _Clock, *, decoder_path: Path,
            lm_dir: Path, pre_dir: Path, tuned: dict[int, Path]) -> dict:
    """Stage 5: results.json, results.md, demo.json's settings and stage times, demo.png, and the
    summary printed; returns the results table. `run` holds smoke, pooling_factors, shots, max_examples."""
    pooling_factors, shots, say = run["pooling_factors"], run["shots"], clock.say
    table = {name: {"em": r["metrics"]["em"], "f1": r["metrics"]["f1"], "compression_ratio": r["compression_ratio"],
                    "prefill_tokens": r["prefill_tokens"], "n": r["n"]} for name, r in results.items()}
    settings = {**run, "seconds": clock.seconds, "total_seconds": round(time.time() - clock.t0, 1),
                "decoder_params": decoder_params}
    (workdir / "results.json").write_text(json.dumps(table, indent=1) + "\n")  # mode -> metrics, nothing else
    marker = json.loads((workdir / MARKER).read_text())
    (workdir / MARKER).write_text(json.dumps({**marker, **settings}, indent=1) + "\n")
    markdown = results_markdown(table)
    (workdir / "results.md").write_text(markdown)
    histories = {"decoder LM": _tensorboard_curve(lm_dir),
                 "ARC pretraining": _tensorboard_curve(pre_dir), **{
                     f"ARC{pf} fine-tuning": _tensorboard_curve(tuned[pf]) for pf in pooling_factors}}
    plot_path = plot_demo(histories, table, workdir / "demo.png", shots)
    say("\n" + markdown)
    say(f"total {settings['total_seconds']:.0f} s (" + ", ".join(
        f"{k} {v:.0f} s" for k, v in clock.seconds.items()) + ")")
    say(f"results: {workdir / 'results.json'} and results.md; plot: {plot_path}; predictions: {workdir / 'eval'}; "
        f"TensorBoard: tensorboard --logdir {workdir}; models: {decoder_path}, " + ", ".join(
            str(tuned[pf]) for pf in pooling_factors))
    return table


def _fresh_encoder(decoder_path: Path, out: Path, dec_config, seed: int = 0) -> None:
    """The encoder's starting point: the decoder's first layers (all but `demo.truncated_layers`),
    fresh <Rec>/<Cont> and projector, written in arc_jax format (the trainer's init_encoder)."""
    from arc_jax.convert import write_encoder
    from arc_jax.convert.fresh import fresh_encoder

    demo = dec_config.demo
    cfg, params = fresh_encoder(decoder_path, n_truncated_layers=demo.truncated_layers, compress_rates=(-4,),
                                out_dims=(dec_config.model.dim,), hidden_dim=demo.projector_hidden, seed=seed)
    write_encoder(cfg, params, out, "arc_jax", overwrite=True)


def _tensorboard_curve(run_dir: Path, tag: str = "loss") -> list[dict]:
    """(step, value) points of one scalar from a run's TensorBoard logs."""
    from tensorboardX.proto import event_pb2  # tensorboardX writes, and can read back, the event protos
    import struct

    points = []
    for path in sorted((run_dir / "tensorboard").glob("events.out.tfevents.*")):
        data = path.read_bytes()
        at = 0
        while at + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            event = event_pb2.Event.FromString(data[at + 12: at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                if value.tag == tag:
                    points.append({"step": int(event.step), tag: float(value.simple_value)})
    return points


def results_markdown(table: dict) -> str:
    rows = ["| mode | EM % | F1 % | compression ratio | decoder prefill tokens | n |", "|---|---|---|---|---|---|"]
    for name, r in table.items():
        ratio = "-" if r["compression_ratio"] is None else f"{r['compression_ratio']:.2f}"
        rows.append(f"| {name} | {r['em']:.1f} | {r['f1']:.1f} | {ratio} | {r['prefill_tokens']:.1f} | {r['n']} |")
    return "\n".join(rows) + "\n"


def plot_demo(histories: dict[str, list[dict]], table: dict, path: Path, shots: int) -> Path:
    """Training loss of every stage and the EM of every mode, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, points in histories.items():
        points = [p for p in points if "loss" in p]
        if points:
            axes[0].plot([p["step"] for p in points], [p["loss"] for p in points], label=name)
    axes[0].set(xlabel="step", ylabel="training loss (nats / token)", title="Training", yscale="log")
    axes[0].legend()
    names = list(table)
    bars = axes[1].bar(names, [table[n]["em"] for n in names], color="tab:blue")
    for bar, n in zip(bars, names):
        axes[1].annotate(f"{table[n]['em']:.0f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                         ha="center", va="bottom")
    axes[1].set(ylabel="exact match (%)", title=f"Held-out people, {shots}-shot QA", ylim=(0, 105))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
