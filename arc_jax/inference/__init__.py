"""Running trained models: load an encoder or decoder from any layout (api.py), compress texts,
and generate with compressed contexts (generate.py: ARCPipeline; decoding.py: the jitted prefill
and KV-cached decode loop; sampling.py: greedy and top-p). shapes.py packs inputs on the host into
the few padded shapes the jitted programs are compiled for."""
