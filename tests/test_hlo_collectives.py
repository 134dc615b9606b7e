"""arc_jax/tools/hlo_collectives.py on HLO text shaped like what XLA's TPU compiler prints."""

from arc_jax.tools.hlo_collectives import collectives, parse_module

# Splash attention's Pallas call prints a backend_config whose JSON string holds newlines: its
# continuation lines start with a quote and with "}}", and the computation goes on after them.
# The unrolled v5p-64 pretraining step has one in its entry computation before ~5,000 collectives.
TPU_HLO = """\
HloModule jit_step

%body (p: (s32[], bf16[64,128])) -> (s32[], bf16[64,128]) {
  %p = (s32[], bf16[64,128]{1,0}) parameter(0)
  %x = bf16[64,128]{1,0} get-tuple-element(%p), index=1
  %splash = bf16[64,128]{1,0} custom-call(%x), custom_call_target="tpu_custom_call", backend_config={"custom_call_config": {"body": "abc",
"xprof_metadata":"{\\"block_q\\": 128,
}}, metadata={op_name="jit(step)/attention"}
  %ag = bf16[256,128]{1,0} all-gather(%splash), channel_id=1, replica_groups={{0,1,2,3}}, dimensions={0}
  %i = s32[] get-tuple-element(%p), index=0
  ROOT %t = (s32[], bf16[64,128]{1,0}) tuple(%i, %x)
}

%cond (q: (s32[], bf16[64,128])) -> pred[] {
  %q = (s32[], bf16[64,128]{1,0}) parameter(0)
  %n = s32[] get-tuple-element(%q), index=0
  %five = s32[] constant(5)
  ROOT %lt = pred[] compare(%n, %five), direction=LT
}

ENTRY %main (a: bf16[64,128]) -> bf16[256,128] {
  %a = bf16[64,128]{1,0} parameter(0)
  %c = s32[] constant(0)
  %splash.1 = bf16[64,128]{1,0} custom-call(%a), custom_call_target="tpu_custom_call", backend_config={"custom_call_config": {"body": "abc",
"xprof_metadata":"{\\"block_q\\": 128,
}}, metadata={op_name="jit(step)/attention"}
  %init = (s32[], bf16[64,128]{1,0}) tuple(%c, %splash.1)
  %loop = (s32[], bf16[64,128]{1,0}) while(%init), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"5"}}
  %cps = (bf16[64,128]{1,0}, bf16[64,128]{1,0}, u32[], u32[]) collective-permute-start(%splash.1), channel_id=2, source_target_pairs={{0,1},{1,2},{2,3},{3,0}}
  %cpd = bf16[64,128]{1,0} collective-permute-done(%cps)
  ROOT %out = bf16[256,128]{1,0} all-gather(%cpd), channel_id=3, replica_groups={{0,1,2,3}}, dimensions={0}
}
"""


def test_an_attribute_spanning_lines_does_not_end_its_computation():
    computations, entry = parse_module(TPU_HLO)
    assert entry == "main"
    assert [i.name for i in computations["main"]] == ["a", "c", "splash.1", "init", "loop", "cps", "cpd", "out"]
    assert [i.name for i in computations["body"]] == ["p", "x", "splash", "ag", "i", "t"]
    assert "}}, metadata=" in computations["main"][2].rest  # the continuation stays with its instruction
    stats, unknown = collectives(TPU_HLO, 4)
    assert not unknown
    # 5 loop trips of one gather of 256 x 128 bf16, and the entry's own gather.
    assert (stats["all-gather"].count, stats["all-gather"].bytes) == (6, 6 * 256 * 128 * 2)
    assert (stats["collective-permute"].count, stats["collective-permute"].bytes) == (1, 64 * 128 * 2)
