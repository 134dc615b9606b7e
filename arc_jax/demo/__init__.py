"""`arc-jax demo`, the paper's experiment in miniature on a CPU: the synthetic people corpus and its
tokenizer (synthetic.py), a small decoder LM trained from scratch to read and answer
(decoder_lm.py), and the stages that pretrain, fine-tune and evaluate an ARC encoder against it
(run.py). No other room imports it; the data pipeline names the corpus generator by module path
(config.data.generate = "tiny_corpus", the tests' tiny runs)."""
