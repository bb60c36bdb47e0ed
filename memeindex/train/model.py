"""The Keras models: face-api.js's FaceExpressionNet (ported, loading the shared weights), expression-v1 (rebuilt
from its committed LiteRT file, batch norm already folded), and expression-v2, which composes them.

TensorFlow is imported inside the functions: this module is only used by training.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

FACEAPI_MEAN_RGB = (122.782, 117.001, 104.298)  # face-api.js subtracts this from RGB 0..255, then divides by 255
FACEAPI_CLASSES = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")
FACEAPI_SHARD_SHA256 = "9a9840f2cf1f4c7eab95f197512569345c00d2426754d4608b92af30e0300f3d"
FACEAPI_MANIFEST_SHA256 = "960cbe959fe0328965dd18662d839f197df6e27607da4f726cd0c826e47fc936"


# -- face-api.js FaceExpressionNet ------------------------------------------------------------------------
def read_faceapi_weights(folder: Path) -> dict[str, np.ndarray]:
    """name -> float32 array, from the tfjs manifest and its one shard (uint8 x scale + min where quantised)."""
    from ..models import sha256_file

    manifest_path = Path(folder) / "face_expression_model-weights_manifest.json"
    for path, want in ((manifest_path, FACEAPI_MANIFEST_SHA256),
                       (Path(folder) / "face_expression_model-shard1", FACEAPI_SHARD_SHA256)):
        got = sha256_file(path)
        if got != want:
            raise ValueError(f"{path}: sha256 {got}, expected {want}")
    (group,) = json.loads(manifest_path.read_text())
    blob = b"".join((Path(folder) / p).read_bytes() for p in group["paths"])
    out, offset = {}, 0
    for w in group["weights"]:
        n = int(np.prod(w["shape"]))
        q = w.get("quantization")
        if q:
            raw = np.frombuffer(blob, np.uint8, n, offset).astype(np.float32)
            value = raw * q["scale"] + q["min"]
            offset += n
        else:
            value = np.frombuffer(blob, np.float32, n, offset).copy()
            offset += 4 * n
        out[w["name"]] = value.reshape(w["shape"]).astype(np.float32)
    if offset != len(blob):
        raise ValueError(f"face-api weights: read {offset} of {len(blob)} bytes")
    return out


def faceapi_net(weights: dict[str, np.ndarray], name: str = "faceapi"):
    """Keras FaceExpressionNet: RGB 0..255 [n,112,112,3] -> (feature [n,256], logits [n,7]).

    Four dense blocks (32, 64, 128, 256 channels). In each: conv0 with stride 2 (a full 3x3 conv in the first
    block, depthwise-separable in the others) then ReLU; conv1..conv3 depthwise-separable, each fed the ReLU of
    the sum of all earlier outputs of the block; the block returns the ReLU of the sum of all four. Then the mean
    over the 7x7 map (the 256-d feature) and `fc` 256x7.
    """
    import tensorflow as tf
    from tensorflow import keras
    from tensorflow.keras import layers

    x_in = keras.Input((112, 112, 3), name="face")
    x = layers.Rescaling(1 / 255.0, offset=-np.array(FACEAPI_MEAN_RGB, np.float32) / 255.0, name=f"{name}_norm")(x_in)
    assigned = []

    def sep(x, block, conv, stride):
        ch = weights[f"{block}/{conv}/pointwise_filter"].shape[-1]
        layer = layers.SeparableConv2D(ch, 3, strides=stride, padding="same", name=f"{name}_{block}_{conv}")
        y = layer(x)
        assigned.append((layer, [weights[f"{block}/{conv}/depthwise_filter"],
                                 weights[f"{block}/{conv}/pointwise_filter"], weights[f"{block}/{conv}/bias"]]))
        return y

    for block in ("dense0", "dense1", "dense2", "dense3"):
        if block == "dense0":
            layer = layers.Conv2D(32, 3, strides=2, padding="same", name=f"{name}_{block}_conv0")
            out1 = layer(x)
            assigned.append((layer, [weights["dense0/conv0/filters"], weights["dense0/conv0/bias"]]))
        else:
            out1 = sep(x, block, "conv0", 2)
        out1 = layers.ReLU()(out1)
        out2 = sep(out1, block, "conv1", 1)
        out3 = sep(layers.ReLU()(layers.Add()([out1, out2])), block, "conv2", 1)
        out4 = sep(layers.ReLU()(layers.Add()([out1, out2, out3])), block, "conv3", 1)
        x = layers.ReLU()(layers.Add()([out1, out2, out3, out4]))
    feature = layers.GlobalAveragePooling2D(name=f"{name}_feature")(x)
    fc = layers.Dense(7, name=f"{name}_fc")
    logits = fc(feature)
    assigned.append((fc, [weights["fc/weights"], weights["fc/bias"]]))
    model = keras.Model(x_in, [feature, logits], name=name)
    for layer, values in assigned:
        layer.set_weights(values)
    del tf
    return model


# -- expression-v1, rebuilt from its LiteRT file ----------------------------------------------------------
def read_v1_tflite(path: Path) -> dict:
    """The weights of the committed expression-v1 graph, in graph order: convs [(w, b)], denses [(w, b)], the
    blendshape mirror permutation. Batch norm is folded in the file; float16 constants are widened."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    ops = it._get_ops_details()  # noqa: SLF001 - the public API has no graph walk
    const_of = {}
    for op in ops:
        if op["op_name"] == "DEQUANTIZE":
            const_of[op["outputs"][0]] = op["inputs"][0]

    def value(idx):
        return np.asarray(it.get_tensor(const_of.get(idx, idx)), np.float32)

    convs, denses, seen, perm = [], [], set(), None
    for op in ops:
        if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED"):
            w_idx, b_idx = op["inputs"][1], op["inputs"][2]
            if w_idx in seen:
                continue  # the mirrored pass reuses the same weights
            seen.add(w_idx)
            w, b = value(w_idx), value(b_idx)
            if op["op_name"] == "CONV_2D":
                convs.append((np.transpose(w, (1, 2, 3, 0)), b))  # [out,kh,kw,in] -> [kh,kw,in,out]
            else:
                denses.append((w.T, b))  # [out,in] -> [in,out]
        elif op["op_name"] == "GATHER" and perm is None:
            perm = np.asarray(it.get_tensor(op["inputs"][1]), np.int32)
    del tensors
    if len(convs) != 6 or len(denses) != 4 or perm is None:
        raise ValueError(f"{path}: unexpected graph ({len(convs)} convs, {len(denses)} dense layers)")
    return {"convs": convs, "denses": denses, "perm": perm}


def v1_net(weights: dict, name: str = "v1"):
    """Keras expression-v1 (one pass, no mirror): gray crop [n,48,48,1] 0..255 + blendshapes [n,52] -> unit [n,64]."""
    import tensorflow as tf
    from tensorflow import keras
    from tensorflow.keras import layers

    from ..embedders.base import NON_EXPRESSION_BLENDSHAPES
    from ..faces import BLENDSHAPE_NAMES

    keep = np.array([0.0 if n in NON_EXPRESSION_BLENDSHAPES else 1.0 for n in BLENDSHAPE_NAMES], np.float32)

    class Standardise(layers.Layer):  # per-face contrast normalisation, as v1 was trained
        def call(self, x):
            mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
            std = tf.sqrt(tf.reduce_mean(tf.square(x - mean), axis=[1, 2, 3], keepdims=True))
            return (x - mean) / (std + 8.0)

    class BlendPrep(layers.Layer):
        def call(self, x):
            return tf.sqrt(tf.clip_by_value(x, 0.0, 1.0) + 1e-4) * tf.constant(keep)

    img_in = keras.Input((48, 48, 1), name="crop")
    bs_in = keras.Input((52,), name="blendshapes")
    assigned = []

    def conv(x, i, stride=1):
        w, b = weights["convs"][i]
        layer = layers.Conv2D(w.shape[-1], 3, strides=stride, padding="same", activation="relu", name=f"{name}_conv{i}")
        assigned.append((layer, [w, b]))
        return layer(x)

    def dense(x, i, activation):
        w, b = weights["denses"][i]
        layer = layers.Dense(w.shape[-1], activation=activation, name=f"{name}_dense{i}")
        assigned.append((layer, [w, b]))
        return layer(x)

    x = Standardise()(img_in)
    x = conv(x, 0, 2)
    x = conv(x, 1)
    x = layers.MaxPool2D()(x)
    x = conv(x, 2)
    x = conv(x, 3)
    x = layers.MaxPool2D()(x)
    x = conv(x, 4)
    x = conv(x, 5)
    x = layers.GlobalAveragePooling2D()(x)
    b = BlendPrep()(bs_in)
    b = dense(b, 0, "relu")
    b = dense(b, 1, "relu")
    h = dense(layers.Concatenate()([x, b]), 2, "relu")
    e = layers.UnitNormalization()(dense(h, 3, None))
    model = keras.Model([img_in, bs_in], e, name=name)
    for layer, values in assigned:
        layer.set_weights(values)
    return model


# -- expression-v2: v1 ++ face-api feature ++ face-api probabilities, a fixed centred PCA read-out ---------
def v2_net(v1_weights: dict, faceapi_weights: dict, readout: dict, branch=None):
    """crop [n,48,48,1] gray 0..255, blendshapes [n,52], face [n,112,112,3] RGB 0..255 -> unit [n, D].

    Blocks (each unit length): v1's embedding (or that of `branch`, a Keras model with v1's inputs and a unit
    output: the FER-fit-only branch of memeindex.train.branch) averaged with its mirror; face-api's 256-d feature (averaged with
    the mirrored face's when readout["flip"]), L2-normalised, times readout["feature_weight"]; the square roots
    of face-api's 7 class probabilities (a unit vector), times readout["probs_weight"]. The join minus
    readout["mean"], times readout["basis"] (a PCA fitted on unlabelled faces), L2-normalised.
    """
    import tensorflow as tf
    from tensorflow import keras
    from tensorflow.keras import layers

    v1 = v1_net(v1_weights) if branch is None else branch
    fa = faceapi_net(faceapi_weights)
    perm = np.asarray(v1_weights["perm"], np.int32)
    crop_in = keras.Input((48, 48, 1), name="crop")
    bs_in = keras.Input((52,), name="blendshapes")
    face_in = keras.Input((112, 112, 3), name="face")

    class Mirror(layers.Layer):
        def call(self, x):
            return tf.reverse(x, axis=[2])

    class SwapSides(layers.Layer):
        def call(self, b):
            return tf.gather(b, tf.constant(perm), axis=1)

    class Readout(layers.Layer):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.mean = tf.constant(np.asarray(readout["mean"], np.float32))
            self.basis = tf.constant(np.asarray(readout["basis"], np.float32))

        def call(self, j):
            return tf.matmul(j - self.mean, self.basis)

    a = layers.UnitNormalization()(layers.Add()([v1([crop_in, bs_in]), v1([Mirror()(crop_in), SwapSides()(bs_in)])]))
    feat, logits = fa(face_in)
    if readout["flip"]:
        feat_m, logits_m = fa(Mirror()(face_in))
        feat = layers.Average()([feat, feat_m])
        logits = layers.Average()([logits, logits_m])
    b = layers.Rescaling(float(readout["feature_weight"]))(layers.UnitNormalization()(feat))
    blocks = [a, b]
    if readout["probs_weight"] > 0:
        probs = layers.Softmax()(logits)
        c = layers.Lambda(lambda p: tf.sqrt(p + 1e-12))(probs)
        blocks.append(layers.Rescaling(float(readout["probs_weight"]))(c))
    e = Readout()(layers.Concatenate()(blocks))
    e = layers.UnitNormalization(name="embedding")(e)
    return keras.Model([crop_in, bs_in, face_in], e, name="expression_v2")


# -- the expression-v1 recipe: the CNN trained from scratch -----------------------------------------------
def _v1_constants():
    from ..embedders.base import MIRRORED_BLENDSHAPES, N_BLENDSHAPES, NON_EXPRESSION_BLENDSHAPES
    from ..embedders.learned import CROP
    from ..faces import BLENDSHAPE_NAMES

    keep = np.array([0.0 if n in NON_EXPRESSION_BLENDSHAPES else 1.0 for n in BLENDSHAPE_NAMES], np.float32)
    return CROP, N_BLENDSHAPES, keep, MIRRORED_BLENDSHAPES


def build_model(dim: int = 64, width: int = 32):
    import tensorflow as tf
    from tensorflow import keras
    from tensorflow.keras import layers

    CROP, N_BLENDSHAPES, BS_KEEP, _ = _v1_constants()
    img_in = keras.Input((CROP, CROP, 1), name="crop")  # uint8 gray values as float32 0..255
    bs_in = keras.Input((N_BLENDSHAPES,), name="blendshapes")

    class Standardise(layers.Layer):  # per-face contrast normalisation: meme lighting varies wildly
        def call(self, x):
            mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
            std = tf.sqrt(tf.reduce_mean(tf.square(x - mean), axis=[1, 2, 3], keepdims=True))
            return (x - mean) / (std + 8.0)

    class BlendPrep(layers.Layer):  # square root lifts slight movements; gaze and _neutral are dropped
        def call(self, x):
            return tf.sqrt(tf.clip_by_value(x, 0.0, 1.0) + 1e-4) * tf.constant(BS_KEEP)

    def conv(x, ch, sep=False):
        if sep:
            x = layers.SeparableConv2D(ch, 3, padding="same", use_bias=False)(x)
        else:
            x = layers.Conv2D(ch, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        return layers.ReLU()(x)

    x = Standardise()(img_in)
    w = width
    # stride-2 stem: 48 -> 24, then plain 3x3 blocks; cheap enough to train on two CPU cores
    x = layers.Conv2D(w, 3, strides=2, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = conv(x, w)
    x = layers.MaxPool2D()(x)  # 12
    x = conv(x, 2 * w)
    x = conv(x, 2 * w)
    x = layers.MaxPool2D()(x)  # 6
    x = conv(x, 4 * w)
    x = conv(x, 4 * w)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.3)(x)

    b = BlendPrep()(bs_in)
    b = layers.Dense(96, activation="relu")(b)
    b = layers.Dropout(0.1)(b)
    b = layers.Dense(64, activation="relu")(b)

    h = layers.Concatenate()([x, b])
    h = layers.Dense(192, use_bias=False)(h)
    h = layers.BatchNormalization()(h)
    h = layers.ReLU()(h)
    h = layers.Dropout(0.2)(h)
    e = layers.Dense(dim, name="embedding_raw")(h)
    e = layers.UnitNormalization(name="embedding")(e)
    embed_model = keras.Model([img_in, bs_in], e, name="expression_embedding")
    return embed_model


class CosineHead:
    """logits = s * cos(embedding, class centre): the classes live on the embedding sphere itself."""

    def __init__(self, dim, n_classes, scale=16.0, seed=0):
        import tensorflow as tf

        init = np.random.default_rng(seed).normal(size=(dim, n_classes)).astype(np.float32)
        self.w = tf.Variable(init / np.linalg.norm(init, axis=0, keepdims=True), name="class_centres")
        self.scale = scale

    def __call__(self, e):
        import tensorflow as tf

        return self.scale * tf.matmul(e, tf.math.l2_normalize(self.w, axis=0))


def supcon_loss(e, labels, temperature=0.1):
    """Supervised contrastive loss (Khosla et al. 2020) on L2-normalised rows, one view per face."""
    import tensorflow as tf

    n = tf.shape(e)[0]
    logits = tf.matmul(e, e, transpose_b=True) / temperature
    eye = tf.eye(n)
    logits = logits - 1e9 * eye
    pos = tf.cast(tf.equal(labels[:, None], labels[None, :]), tf.float32) * (1 - eye)
    log_prob = logits - tf.reduce_logsumexp(logits, axis=1, keepdims=True)
    n_pos = tf.reduce_sum(pos, axis=1)
    per = -tf.reduce_sum(pos * log_prob, axis=1) / tf.maximum(n_pos, 1.0)
    has = tf.cast(n_pos > 0, tf.float32)
    return tf.reduce_sum(per * has) / tf.maximum(tf.reduce_sum(has), 1.0)


def with_flip_average(model):
    """The same embedding averaged with that of the mirrored face (blendshapes swapped left/right)."""
    import tensorflow as tf
    from tensorflow import keras
    from tensorflow.keras import layers

    class Mirror(layers.Layer):
        def call(self, x):
            return tf.reverse(x, axis=[2])

    class SwapSides(layers.Layer):
        def call(self, b):
            return tf.gather(b, tf.constant(FLIP_PERM, tf.int32), axis=1)

    CROP, N_BLENDSHAPES, _, FLIP_PERM = _v1_constants()
    img_in = keras.Input((CROP, CROP, 1), name="crop")
    bs_in = keras.Input((N_BLENDSHAPES,), name="blendshapes")
    e = layers.Add()([model([img_in, bs_in]), model([Mirror()(img_in), SwapSides()(bs_in)])])
    e = layers.UnitNormalization(name="embedding")(e)
    return keras.Model([img_in, bs_in], e, name="expression_embedding_flip")


def with_projection(model, matrix: np.ndarray):
    """The embedding multiplied by a fixed matrix, renormalised."""
    from tensorflow import keras
    from tensorflow.keras import layers

    CROP, N_BLENDSHAPES, _, _ = _v1_constants()
    img_in = keras.Input((CROP, CROP, 1), name="crop")
    bs_in = keras.Input((N_BLENDSHAPES,), name="blendshapes")
    proj = layers.Dense(matrix.shape[1], use_bias=False, trainable=False, name="readout")
    e = proj(model([img_in, bs_in]))
    proj.set_weights([np.asarray(matrix, np.float32)])
    e = layers.UnitNormalization(name="embedding")(e)
    return keras.Model([img_in, bs_in], e, name="expression_embedding_readout")


def load_weights(model, path: Path) -> None:
    try:
        model.load_weights(path)
    except Exception:  # noqa: BLE001 - weights saved from the mirrored-average wrapper
        with_flip_average(model).load_weights(path)
