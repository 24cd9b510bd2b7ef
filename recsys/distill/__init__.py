"""Dataset distillation and representation compression.

* DIET (:mod:`.diet`): a small evolving memory of the training stream, built stage by stage, that trains
  the toolkit's ranking models like a prepared dataset; baselines in :mod:`.baselines`; the architecture
  zoo comparison in :mod:`.zoo`. ``recsys distill diet | baseline | compare``.
* MARC: not yet (issue #9).
"""
