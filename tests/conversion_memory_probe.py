"""Run as a script: read a decoder, write it in a layout, print peak anonymous memory (bytes)
above what the process held once the parameters were read. Used by test_conversion_memory."""

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
    from arc_jax import convert

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
