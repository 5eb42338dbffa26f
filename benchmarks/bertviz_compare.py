"""bertviz's model view of SmolLM2 at N tokens on this machine: seconds to its HTML and peak RSS, or
where it stopped (the README's comparison in "Long contexts").

bertviz is not one of Headmap's dependencies; install it aside and name the folder:

    python -m pip install --target /tmp/bv --no-deps bertviz && python -m pip install --target /tmp/bv ipython
    python benchmarks/bertviz_compare.py 512 --bertviz /tmp/bv
    python benchmarks/bertviz_compare.py 4096 --bertviz /tmp/bv --limit-gb 18

The process stops itself when its RSS passes ``--limit-gb`` (before the kernel's OOM killer picks
some other process). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("tokens", type=int)
    ap.add_argument("--bertviz", required=True, help="the folder bertviz (and IPython) were installed into")
    ap.add_argument("--limit-gb", type=float, default=18.0)
    args = ap.parse_args()
    sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
    sys.path.append(args.bertviz)
    import psutil

    proc = psutil.Process()
    peak = [0]
    t0 = [time.perf_counter()]

    def guard() -> None:
        while True:
            rss = proc.memory_info().rss
            peak[0] = max(peak[0], rss)
            if rss > args.limit_gb * 2**30:
                print(json.dumps({"n": args.tokens, "result": f"stopped: RSS passed {args.limit_gb} GB",
                                  "peak_gb": rss / 2**30, "t_s": time.perf_counter() - t0[0]}), flush=True)
                os._exit(3)
            time.sleep(0.2)

    threading.Thread(target=guard, daemon=True).start()
    import torch
    from bertviz import model_view
    from run import _long_text

    from analysis.loader import load_model

    lm = load_model("bundled:smollm2")
    enc = lm.tokenizer(_long_text(args.tokens), return_tensors="pt", truncation=True, max_length=args.tokens)
    t0[0] = time.perf_counter()
    with torch.inference_mode():
        out = lm.model(**enc, output_attentions=True, use_cache=False)
    forward = time.perf_counter() - t0[0]
    tokens = lm.tokenizer.convert_ids_to_tokens(enc["input_ids"][0])
    html = model_view(out.attentions, tokens, html_action="return")
    data = getattr(html, "data", None) or str(html)
    print(json.dumps({"n": len(tokens), "result": "ok", "t_s": time.perf_counter() - t0[0], "forward_s": forward,
                      "peak_gb": peak[0] / 2**30, "html_mb": len(data) / 2**20}), flush=True)


if __name__ == "__main__":
    main()
