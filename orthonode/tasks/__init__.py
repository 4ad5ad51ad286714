"""The task heads' formats, owned by the node because it reads them at run time.

* :mod:`orthonode.tasks.registry` -- the registered tasks (labels, coded concepts, input spec) and which
  pipeline runs which anatomy and modality;
* :mod:`orthonode.tasks.modules` -- the head modules (linear, MLP, ordinal, attention over slices);
* :mod:`orthonode.tasks.decoding` -- how a head's probabilities become the reported class;
* :mod:`orthonode.tasks.bundle` -- the head bundle format (``orthonode-head/1``) that ``heads`` writes and
  :mod:`orthonode.inference.heads` loads.
"""
