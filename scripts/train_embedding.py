#!/usr/bin/env python
"""Train memeindex's expression embedding: `memeindex/embedders/weights/expression-<version>.tflite` + its
`.train.json` summary. The recipes live in `memeindex.train` (data, model, loop, export); this is the entry.

    python scripts/train_embedding.py                 # expression-v2 (= make train)
    python scripts/train_embedding.py --version v1 …  # the expression-v1 recipe (its options: --version v1 -h)
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _truthy(text: str) -> bool:
    """A bool option's value on the command line: bool("false") would be True."""
    return text.lower() in ("1", "true", "yes")


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from memeindex.settings import Settings
    from memeindex.train import loop

    settings = Settings.from_env()
    if "--version" in argv and argv[argv.index("--version") + 1] == "v1":
        loop.train_v1(argv, settings)
        return
    defaults = loop.V2Config()
    ap = argparse.ArgumentParser(description="train expression-v2 (see models/README.md)")
    for f in dataclasses.fields(loop.V2Config):
        value = getattr(defaults, f.name)
        if isinstance(value, tuple):
            kind = type(value[0]) if value else str
            kind = _truthy if kind is bool else kind
            ap.add_argument(f"--{f.name.replace('_', '-')}", type=kind, nargs="+", default=value)
        elif isinstance(value, bool):
            ap.add_argument(f"--{f.name.replace('_', '-')}", type=_truthy,
                            default=value, metavar="true|false")
        else:
            ap.add_argument(f"--{f.name.replace('_', '-')}", type=type(value), default=value)
    args = ap.parse_args(argv)
    config = loop.V2Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in vars(args).items()})
    result = loop.train_v2(config, settings)
    logging.getLogger("train").info("wrote %s and %s (validation %s)", result.path, result.summary_path,
                                    result.summary["validation"])


if __name__ == "__main__":
    main()
