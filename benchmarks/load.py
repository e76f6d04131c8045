"""Load time of the default model: the one-time GGUF conversion, then cached loads.

Converts into a fresh temporary cache (unless --cache is given), then times
several loads from the cache in this process. The last line states the cached
load time against its target (< 3 s).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from mechscope.core.loading import load_hf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--cache", type=Path, default=None, help="Cache folder (default: fresh)")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache or Path(tmp)
        start = time.perf_counter()
        load_hf(args.model, cache_dir=cache, progress=False)
        first = time.perf_counter() - start
        times = []
        for _ in range(args.reps):
            start = time.perf_counter()
            load_hf(args.model, cache_dir=cache, progress=False)
            times.append(time.perf_counter() - start)
    cached = statistics.median(times)
    print(f"first load (conversion unless cached): {first:.1f} s")
    print(
        f"cached load: median {cached:.2f} s over {args.reps} (target < 3 s); ratio first/cached = {first / cached:.0f}×"
    )


if __name__ == "__main__":
    main()
