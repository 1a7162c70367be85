"""The numerical core of fvstudio: arrays in, arrays out, float32 by default, no Qt.

Modules follow the paper's pipeline: descriptors -> pca -> gmm -> fisher -> svm -> metrics;
`diagnostics` computes the paper's figures; `posteriors` is the E-step shared by the GMM and the
encoders. The classifier is split as scikit-learn splits its SGD: `svm` (the OneVsRestSGD estimator),
`sgd_kernels` (its numba kernels), `rows` (row providers: arrays, memmaps, subsets, early-fusion
concatenations), `model_selection` (folds, out-of-fold scores, the lambda search and rules); `fusion`
combines channels. Shared: `defaults` (the paper's setup, also the config's defaults), `validation`
(input checks at the door), `jit` (the one numba decorator, bitwise-repeatable kernels), `progress`
(the progress/cancel protocol every long step uses), `serialization` (atomic .npz + JSON files).
"""
