"""The numerical core of fvstudio: arrays in, arrays out, float32 by default, no Qt.

Modules follow the paper's pipeline: descriptors -> pca -> gmm -> fisher -> pq -> svm / knn ->
metrics; `diagnostics` computes the paper's figures; `posteriors` is the E-step shared by the GMM
and the encoders; `progress` holds the progress/cancel protocol every long step uses.
"""
