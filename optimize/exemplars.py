"""Which training examples a prompt-optimization meta-prompt shows: the reference's four rules.

The paper's reference code (`few_shot_selection_criteria`) has four rules; "random" is its
default and ours:

* `random`: a fresh draw from the training split every step (the step's own seed);
* `constant`: the same draw every step (seed 0, as the reference re-seeds with 0);
* `accumulative_most_frequent`: examples that any instruction scored so far got wrong. When
  at most k such examples exist all of them are shown, most often missed first; otherwise k
  are drawn uniformly among them (the reference draws from that pool without weights);
* `current_most_frequent`: examples missed most often by the instructions the meta-prompt
  shows. The examples with the top count are drawn from when there are at least k of them;
  otherwise the k most often missed are shown, most often missed first. At the first step
  (nothing proposed has been scored yet) the score threshold is ignored here, as the
  reference does at its step 0.

The two "most frequent" rules need to know which examples each instruction got wrong
(`Scored.wrong`); with no such information, or when nothing was ever missed, they show no
examples (so does the reference). Ties between equally frequent examples go to the lower
index. Data enters as the scored history and leaves as training indices in display order.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import replace

from opro.optimize.metaprompt import MetaPromptConfig, Scored, select

CONSTANT_SEED = 0


def _most_often_first(counts: Counter[int]) -> list[int]:
    return sorted(counts, key=lambda i: (-counts[i], i))


def _misses(items: Iterable[Scored]) -> Counter[int]:
    counts: Counter[int] = Counter()
    for item in items:
        counts.update(set(item.wrong or ()))
    return counts


def choose_exemplars(
    history: Sequence[Scored], cfg: MetaPromptConfig, n_train: int, rng: random.Random
) -> tuple[int, ...] | None:
    """Training indices to show under `cfg.exemplar_selection`; None means "draw at random".

    "random" returns None so the meta-prompt part draws with the step's generator exactly as
    it always has (a resumed or repeated run sees the same examples).
    """
    rule = cfg.exemplar_selection
    k = min(cfg.exemplars, n_train)
    if rule == "random":
        return None
    if k <= 0:
        return ()
    if rule == "constant":
        return tuple(sorted(random.Random(CONSTANT_SEED).sample(range(n_train), k)))
    if rule == "accumulative_most_frequent":
        pool = _most_often_first(_misses(history))
        if len(pool) <= k:
            return tuple(pool)
        return tuple(sorted(rng.sample(pool, k)))
    # current_most_frequent: the instructions this meta-prompt lists (order does not matter)
    first_step = all(h.step == 0 for h in history)
    listing = replace(cfg, order="ascending", min_score=None if first_step else cfg.min_score)
    counts = _misses(select(history, listing, rng))
    if not counts:
        return ()
    top = max(counts.values())
    most = sorted(i for i, c in counts.items() if c == top)
    if len(most) < k:
        return tuple(_most_often_first(counts)[:k])
    return tuple(sorted(rng.sample(most, k)))
