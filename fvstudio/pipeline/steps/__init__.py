"""The pipeline's steps, one module each, in run order (the paper's small-scale protocol, Sec. 3).

| step | module | reads | output |
|---|---|---|---|
| ``descriptors`` | :mod:`.descriptors` | ``[descriptors]``, ``dataset.max_pixels`` | one descriptor store per channel |
| ``pca`` | :mod:`.pca` | ``[pca]`` | per channel and split: ``pca.npz`` |
| ``gmm`` | :mod:`.gmm` | ``[gmm]`` | per channel and split: ``gmm.npz`` + EM log-likelihood |
| ``encode`` | :mod:`.encode` | ``[encoder]`` | per channel and split: ``fvs.npy`` + ``indices.npy`` |
| ``compress`` | :mod:`.compress` | ``[compression]`` | per channel and split: ``pq.npz`` + ``codes.npz`` (or off) |
| ``classifier`` | :mod:`.classifier` | ``[classifier]``, ``[fusion]`` | per split: models + test scores |
| ``evaluate`` | :mod:`.evaluate` | ``[evaluate]`` | :class:`~fvstudio.pipeline.results.RunResult` |

Adding a step is adding a module with a :class:`~.base.Step` subclass and one entry in :data:`STEP_LIST`.
"""
from .base import Step
from .classifier import ClassifierOutput, ClassifierStep
from .compress import CompressedSet, CompressStep
from .descriptors import DescriptorsStep, descriptor_params
from .encode import EncodedSet, EncodeStep
from .evaluate import EvaluateStep
from .gmm import GmmStep
from .pca import PcaStep

STEP_LIST = (DescriptorsStep(), PcaStep(), GmmStep(), EncodeStep(), CompressStep(), ClassifierStep(), EvaluateStep())
STEPS = tuple(s.name for s in STEP_LIST)
BY_NAME = {s.name: s for s in STEP_LIST}

__all__ = ["STEP_LIST", "STEPS", "BY_NAME", "Step", "EncodedSet", "CompressedSet", "ClassifierOutput", "descriptor_params"]
