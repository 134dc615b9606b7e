"""Run as a script: read a decoder, write it in a layout, print peak anonymous memory (bytes)
above what the process held once the parameters were read. Used by test_conversion_memory.

JAX's CPU backend is started first: Orbax asks JAX for the process index when it saves, and the
backend's ~100 MB is a constant, not the per-parameter copies this probe is about (it measured
320-347 MB for the arc_jax writer on a 570 MB model with the backend started inside the write,
210-237 MB with it started before)."""

import sys
import threading
import time


def anonymous_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


def main(src: str, out: str, fmt: str) -> None:
    import jax

    from arc_jax import convert

    jax.devices()
    cfg, params = convert.read_decoder(src)
    after_read = anonymous_bytes()
    peak = [after_read]
    done = threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], anonymous_bytes())
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    convert.write_decoder(cfg, params, out, fmt)
    done.set()
    watcher.join()
    print(peak[0] - after_read)


if __name__ == "__main__":
    main(*sys.argv[1:])
