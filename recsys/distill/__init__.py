"""Dataset distillation and representation compression.

* DIET (:mod:`.diet`): a small evolving memory of the training stream, built stage by stage, that trains
  the toolkit's ranking models like a prepared dataset; baselines in :mod:`.baselines`; the architecture
  zoo comparison in :mod:`.zoo`. ``recsys distill diet | baseline | compare``.
* MARC (:mod:`.marc`): text for items and users from templates (:mod:`.text`), every layer of a Hugging Face
  encoder cached (:mod:`.encoder`), the layer probe (:mod:`.probe`), compression and task-adaptation
  networks decoupled by HSIC (:mod:`.hsic`), baselines (:mod:`.compress`, MRL). ``recsys marc probe | train``.
"""
