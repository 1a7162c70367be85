"""The declarative pipeline: a TOML config -> descriptors -> PCA -> GMM -> encode -> classifier -> evaluate.

``from fvstudio.pipeline import PipelineConfig, Pipeline, STEPS, run, load_config``:

- :class:`PipelineConfig` (``config.py``): every key with its paper default, validation, TOML I/O and a
  schema the GUI builds its widgets from.
- :class:`Pipeline` (``runner.py``): the scheduler over the seven :data:`STEPS` (one module each in
  ``steps/``, given one :class:`~.context.StepContext`), each cached in a workspace folder under a hash of
  its inputs and parameters; ``status``, ``run_step``, ``run_all``, ``result``, ``artifact``.
- :class:`RunResult` (``results.py``): metrics, per-class values, confusion, timings, predictions.
- ``presets.py``: the paper's Table 1 ablation and its other Sec. 3.2 findings; ``sweep.py``: parameter sweeps with a table and a plot.
"""
from ..engine.progress import CancelToken, Cancelled, Progress
from .config import SCHEMA, ConfigError, PipelineConfig, load_config, parse_pyramid
from .results import RunResult, write_results
from .runner import STEPS, ClassifierOutput, EncodedSet, Pipeline, default_workspace, run

__all__ = ["PipelineConfig", "Pipeline", "STEPS", "run", "load_config", "RunResult", "write_results",
           "ConfigError", "SCHEMA", "default_workspace", "parse_pyramid", "EncodedSet", "ClassifierOutput",
           "Cancelled", "CancelToken", "Progress"]
