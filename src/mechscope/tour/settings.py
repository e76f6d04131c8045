"""The tour's settings: its prompts, where it writes, and how big each section's run is.

Each size is a slice of what the technique's own command does by default, so
the whole tour runs in minutes; the README's numbers come from the full runs.

Example::

    from mechscope.tour.settings import OUT_DIR, TOUR_HARVEST_TOKENS
    OUT_DIR / "harvest"   # Path("runs/tour/harvest"), the tour's harvest of 16,384 tokens
"""

from __future__ import annotations

from pathlib import Path

PROMPTS = [
    "The capital of France is",
    "The Eiffel Tower is located in the city of",
    "Albert Einstein was a famous",
]
IOI_CLEAN = "When Mary and John went to the store, John gave a drink to"
IOI_CORRUPT = "When Mary and John went to the store, Mary gave a drink to"
OUT_DIR = Path("runs/tour")
TOUR_EXPLAIN_UNITS = 3
TOUR_HARVEST_TOKENS = 16_384  # a slice; `mechscope harvest` does 1M tokens by default
TOUR_SAE_TOKENS = 196_608  # a short run; `mechscope sae train` does 1M tokens by default
TOUR_TC_TOKENS = 65_536  # transcoders for every MLP; `mechscope transcoders train` does 1M
TOUR_TC_WIDTH = 2304  # latents per layer (4 × d_model); the README's set has 4608
TOUR_GRAPH_NODES = 256  # latents expanded in the tour's graph; `mechscope graph` does 1024
TOUR_TRACE_FACTS = 8  # a small average; the README's is over 60 facts
TOUR_EDIT_FACT = 0  # which known capital the tour rewrites (to the next one's capital)
TOUR_PROBE_PAIRS = 600  # 200 to fit, 400 held out; the README's run fits 600
TOUR_STEER = ("I talk about weddings constantly", "I do not talk about weddings constantly")
TOUR_STEER_LAYER, TOUR_STEER_COEF = 8, 1.0  # a cell of the README's sweep within 10% perplexity
TOUR_VIZ_BLOCKS = (1, 4, 8, 12, 15)  # EfficientNet-Lite0 blocks, early → late
TOUR_VIZ_STEPS = 128  # per grid image; the strip runs to 2048
TOUR_WEIGHTS = ("net._blocks.11", "net._blocks.12", 5)  # src, dst, unit of the weight circuit
TOUR_LM_WEIGHTS = {"heads": [(27, 1)], "neurons": [(12, 100)]}
TOUR_PROMPT_UNITS, TOUR_PROMPT_STEPS = 3, 20
TOUR_MAZE_STEPS = 3000  # imitation steps; `mechscope maze train` does 6000
TOUR_MAZE_EVAL, TOUR_MAZE_STEER = 500, 200  # mazes of each kind; mazes with a decision square
