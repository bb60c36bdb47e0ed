"""Training of the learned expression embedders (TensorFlow: the `[train]` extra; never imported at run time).

data.py: the labelled and unlabelled faces, detected and cropped once by the product's own code, cached;
model.py: the Keras models (the v1 CNN, the face-api.js FaceExpressionNet port, the v2 composition);
loop.py: the recipes (`train_v2`, `train_v1`); export.py: TFLite export, the parity check, the summary.
"""
