"""scikit-learn's estimator protocol for the engine's estimators, without importing scikit-learn.

Every engine estimator (PCA, DiagonalGMM, OneVsRestSGD, OneVsRestDualSVM, ProductQuantizer,
KNNClassifier, and the transformers of :mod:`fvstudio.transformers`) derives from :class:`Estimator`,
which gives, once for all of them, what scikit-learn's ``BaseEstimator`` gives:

- ``get_params(deep=True)`` / ``set_params(**params)`` read the parameter names off ``__init__``'s
  signature; ``__init__`` only stores its arguments unchanged (checks happen in ``fit``), so
  ``sklearn.base.clone`` rebuilds an equal, unfitted estimator;
- ``__repr__`` lists the parameters that differ from their defaults;
- ``__sklearn_tags__`` (called by scikit-learn only, so it imports scikit-learn lazily) builds the tags
  of the estimator's kind (``_estimator_kind``: "classifier", "transformer", "density_estimator") and
  lets each class adjust them in ``_adjust_tags``;
- ``__sklearn_is_fitted__`` and :meth:`Estimator._require_fitted`, which raises :class:`NotFittedError`
  before ``fit``; ``fit`` returns ``self`` and learned state ends with ``_``;
- for transformers whose output is an (N, k) array, :class:`ArrayOutput`: ``get_feature_names_out`` and
  ``set_output(transform="default" | "pandas" | "polars")`` (the container is built only when asked for,
  so pandas and polars stay optional; the choice is kept in ``_sklearn_output_config``, which
  ``sklearn.base.clone`` carries over);
- :meth:`Estimator._json_params`: the parameters as JSON for ``save`` (tuples as lists, numpy scalars
  as Python numbers, a Generator seed as None).

Why not derive from scikit-learn's classes: scikit-learn is a test/bench dependency only, and the GUI
and ``fvstudio run`` must import and run without it; importing it also costs ~2 s of start-up, which
the window would pay for nothing. Deriving conditionally would make the classes' bases depend on the
environment. The protocol is small (parameters from the signature, tags, a fitted check), so it is
implemented here once.

:class:`NotFittedError` is a ``ValueError`` and an ``AttributeError`` (as scikit-learn's). When
scikit-learn is already imported (the user works inside it), the error raised is also an instance
of ``sklearn.exceptions.NotFittedError``, so ``except NotFittedError`` works with either class.
"""
from __future__ import annotations

import inspect
import sys
from typing import Dict, List, Optional

import numpy as np

__all__ = ["Estimator", "Classifier", "ArrayOutput", "NotFittedError", "data_conversion_warning"]


class NotFittedError(ValueError, AttributeError):
    """An estimator was used before ``fit`` (or ``load``)."""


_SKLEARN_ERROR: Optional[type] = None


def _not_fitted_class() -> type:
    """:class:`NotFittedError`, or a subclass that is also scikit-learn's when scikit-learn is imported."""
    global _SKLEARN_ERROR
    if sys.modules.get("sklearn") is None:  # not imported (or import blocked)
        return NotFittedError
    if _SKLEARN_ERROR is None:
        from sklearn.exceptions import NotFittedError as SkNotFittedError

        _SKLEARN_ERROR = type("NotFittedError", (NotFittedError, SkNotFittedError),
                              {"__module__": __name__, "__doc__": NotFittedError.__doc__})
    return _SKLEARN_ERROR


def data_conversion_warning() -> type:
    """The warning category for input converted to another shape: scikit-learn's
    ``DataConversionWarning`` when scikit-learn is imported, else ``UserWarning`` (its base)."""
    if sys.modules.get("sklearn") is None:  # not imported (or import blocked)
        return UserWarning
    from sklearn.exceptions import DataConversionWarning

    return DataConversionWarning


def _json(value):
    """``value`` as JSON: tuples as lists, numpy scalars as Python numbers, a Generator as None."""
    if isinstance(value, np.random.Generator):
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json(v) for v in value]
    return value


class Estimator:
    """Base of the engine's estimators: parameters, repr, tags and the fitted check (module docstring).

    Subclasses set ``_estimator_kind`` and implement ``_is_fitted()``; they may override
    ``_adjust_tags(tags)`` and ``_json_params()``.
    """

    _estimator_kind: Optional[str] = None

    # -- parameters --------------------------------------------------------------------------------
    @classmethod
    def _get_param_names(cls) -> List[str]:
        init = cls.__init__
        if init is object.__init__:
            return []
        params = list(inspect.signature(init).parameters.values())[1:]
        for p in params:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TypeError(f"{cls.__name__}.__init__ takes *{p.name}: estimators must list their parameters")
        return sorted(p.name for p in params)

    def get_params(self, deep: bool = True) -> Dict[str, object]:
        """The constructor's parameters as given (``deep``: also ``name__sub`` of estimator-valued ones)."""
        out = {}
        for name in self._get_param_names():
            value = getattr(self, name)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update((f"{name}__{k}", v) for k, v in value.get_params().items())
            out[name] = value
        return out

    def set_params(self, **params) -> "Estimator":
        """Set parameters (``name`` or ``name__sub`` for a nested estimator); a ValueError names an unknown one."""
        valid = self._get_param_names()
        nested: Dict[str, dict] = {}
        for key, value in params.items():
            name, sep, sub = key.partition("__")
            if name not in valid:
                raise ValueError(f"invalid parameter {name!r} for {type(self).__name__}; "
                                 f"valid parameters are {valid}")
            if sep:
                nested.setdefault(name, {})[sub] = value
            else:
                setattr(self, name, value)
        for name, sub in nested.items():
            getattr(self, name).set_params(**sub)
        return self

    def _json_params(self) -> dict:
        """The parameters as JSON for ``save`` (``cls(**params)`` rebuilds the estimator)."""
        return {k: _json(v) for k, v in self.get_params(deep=False).items()}

    @classmethod
    def _params_from_json(cls, params: dict) -> dict:
        """Inverse of :meth:`_json_params` for ``load``: a list whose default is a tuple becomes a tuple again."""
        sig = inspect.signature(cls.__init__).parameters
        return {k: tuple(v) if isinstance(v, list) and k in sig and isinstance(sig[k].default, tuple) else v
                for k, v in params.items()}

    def __repr__(self) -> str:
        sig = inspect.signature(type(self).__init__).parameters
        args = []
        for name in self._get_param_names():
            value = getattr(self, name)
            default = sig[name].default
            same = default is not inspect.Parameter.empty and _equal(value, default)
            if not same:
                args.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(args)})"

    # -- fitted state ------------------------------------------------------------------------------
    def _is_fitted(self) -> bool:
        raise NotImplementedError(f"{type(self).__name__} must implement _is_fitted")

    def __sklearn_is_fitted__(self) -> bool:
        return self._is_fitted()

    def _require_fitted(self) -> None:
        if not self._is_fitted():
            raise _not_fitted_class()(f"this {type(self).__name__} is not fitted yet: call fit() first")

    # -- scikit-learn tags (only scikit-learn calls this, so only then is it imported) -----------
    def __sklearn_tags__(self):
        from sklearn.utils import ClassifierTags, InputTags, Tags, TargetTags, TransformerTags

        kind = self._estimator_kind
        tags = Tags(estimator_type=kind if kind in ("classifier", "density_estimator") else None,
                    target_tags=TargetTags(required=kind == "classifier"),
                    transformer_tags=TransformerTags(preserves_dtype=["float32"]) if kind == "transformer" else None,
                    classifier_tags=ClassifierTags() if kind == "classifier" else None,
                    input_tags=InputTags(allow_nan=False, sparse=False))
        self._adjust_tags(tags)
        return tags

    def _adjust_tags(self, tags) -> None:
        """Hook: change the scikit-learn tags built by ``__sklearn_tags__`` in place."""


def _equal(a, b) -> bool:
    try:
        return bool(type(a) is type(b) and a == b) or (a is b)
    except (ValueError, TypeError):  # arrays and other non-scalar comparisons
        return a is b


class ArrayOutput:
    """``set_output`` / ``get_feature_names_out`` of a transformer with (N, k) array output.

    Subclasses implement ``_feature_names()`` (k names) and return ``self._wrap_output(Z)`` from
    ``transform``; with the default output nothing changes (the array itself is returned)."""

    _OUTPUTS = (None, "default", "pandas", "polars")

    def set_output(self, *, transform=None):
        """Output container of ``transform`` / ``fit_transform``: "default" (numpy), "pandas" or "polars"
        (named columns, :meth:`get_feature_names_out`); None leaves it unchanged."""
        if transform not in self._OUTPUTS:
            raise ValueError(f"set_output(transform=...) must be one of {list(self._OUTPUTS)}, got {transform!r}")
        if transform in ("pandas", "polars"):
            try:
                __import__(transform)
            except ImportError:
                raise ImportError(f"set_output(transform={transform!r}) needs {transform}, which is not installed "
                                  f"(pip install {transform})") from None
        if transform is not None:
            self._sklearn_output_config = {"transform": transform}
        return self

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """(k,) object array of the output columns' names."""
        self._require_fitted()
        return np.asarray(self._feature_names(), dtype=object)

    def _feature_names(self) -> List[str]:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def _wrap_output(self, Z):
        kind = getattr(self, "_sklearn_output_config", {}).get("transform", "default")
        if kind == "default":
            return Z
        names = [str(n) for n in self.get_feature_names_out()]
        if kind == "pandas":
            import pandas

            return pandas.DataFrame(Z, columns=names)
        import polars

        return polars.DataFrame(Z, schema=names)


class Classifier(Estimator):
    """Base of the engine's classifiers: accuracy ``score`` and class labels of any kind.

    The engine's kernels work on integer labels (a label < 0 = a negative for every class) or (N, C)
    {+1, -1, 0} targets. scikit-learn passes labels of any type (strings, ...): :meth:`_label_codes`
    maps non-numeric labels to their index among the sorted distinct labels, and the subclass's ``fit``
    stores the original labels in ``classes_`` (``predict`` then returns them).
    """

    _estimator_kind = "classifier"

    @staticmethod
    def _label_codes(y, classes=None):
        """(y as engine labels, ``classes`` as engine labels, the original labels (C,) or None).

        Numeric ``y`` (and (N, C) targets) pass through unchanged; non-numeric 1-D labels (strings,
        objects) become indices into the sorted distinct labels of ``y`` and ``classes``."""
        arr = np.asarray(y)
        if arr.ndim != 1 or arr.dtype.kind not in "USO":
            return y, classes, None
        pool = arr if classes is None else np.concatenate([arr, np.asarray(classes, dtype=arr.dtype)])
        try:
            names = np.unique(pool)
        except TypeError as exc:  # mixed types that do not sort
            raise ValueError(f"y labels must be all numbers or all strings (sortable): {exc}") from None
        codes = np.searchsorted(names, arr)
        cls = None if classes is None else np.searchsorted(names, np.asarray(classes, dtype=arr.dtype))
        return codes, cls, names

    def score(self, X, y, sample_weight=None) -> float:
        """Mean accuracy of ``predict(X)`` against ``y`` (weighted by ``sample_weight`` if given), as
        scikit-learn's classifiers score; for (N, C) targets, the share of rows predicted exactly."""
        pred = self.predict(X)
        truth = np.asarray(y)
        if truth.shape[:1] != pred.shape[:1]:
            raise ValueError(f"y has {truth.shape[0] if truth.ndim else 0} labels, X has {pred.shape[0]} rows")
        hit = (pred == truth) if pred.ndim == 1 else np.all(pred == truth, axis=1)
        return float(np.average(hit, weights=sample_weight))
