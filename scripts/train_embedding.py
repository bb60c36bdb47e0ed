#!/usr/bin/env python
"""Train memeindex's expression embedding and export it as `memeindex/embedders/weights/expression-<version>.tflite`.

One seeded command (TensorFlow/Keras, CPU is enough):

    python scripts/train_embedding.py --data ../shared/data/expressions --version v1

Steps:
1. Extraction (cached under .cache/train/, skipped when the cache exists): the product's own FaceDetector on every
   FER-2013 Training/PublicTest image and every muxspace image; per image the landmark-aligned grayscale crop
   (memeindex.embedders.learned.face_inputs, the very function the runtime uses, at a wider zoom for jitter) and the 52
   blendshapes (scripts/train_extract.py).
2. Fit on FER-2013 Training (faces the detector finds) toward the FER+ ten-rater vote distributions (KL to the
   soft targets from a cosine head on the embedding) plus a supervised-contrastive term on the embedding (FER+
   majority labels), with meme-style augmentation (flips with left/right blendshapes swapped, crop jitter,
   scale, rotation, blur, JPEG, low resolution, contrast/gamma/colour-as-gray shifts, noise, caption-like
   occlusion bars).
   Two cosine learning-rate cycles: 16 epochs from scratch (lr 2e-3), then 14 more from those weights
   (lr 1e-3); `--stage2-epochs 0` runs one cycle only.
3. Select the epoch and the read-out (plain, or averaged with the mirrored face; optionally shrinking what lies
   outside the span of the expression centres) on FER-2013 PublicTest (cross-identity P@3 + rater triplet
   accuracy, the `memeindex eval` metric code), export the embedding (crop + blendshapes -> 64 float32, L2-normalised) to TFLite and check the
   TFLite output against Keras with ai-edge-litert. muxspace is never trained on: it is reported only.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from memeindex.evaluate import retrieval_metrics, sample_triplets, triplet_accuracy, identity_metrics  # noqa: E402
from memeindex.embedders.base import MIRRORED_BLENDSHAPES, N_BLENDSHAPES, NON_EXPRESSION_BLENDSHAPES  # noqa: E402
from memeindex.embedders.learned import CROP  # noqa: E402
from memeindex.faces import BLENDSHAPE_NAMES  # noqa: E402

EMOTIONS = ["neutral", "happy", "surprise", "sad", "angry", "disgust", "fear", "contempt"]  # FER+ vote order
MUX_TO_FER = {"anger": "angry", "contempt": "contempt", "disgust": "disgust", "fear": "fear",
              "happiness": "happy", "neutral": "neutral", "sadness": "sad", "surprise": "surprise"}
CACHE_SIDE = 64
# Blendshapes the model ignores: `_neutral` is always 0, eyeLook* say where the eyes look, not the expression.
BS_KEEP = np.array([0.0 if n in NON_EXPRESSION_BLENDSHAPES else 1.0 for n in BLENDSHAPE_NAMES], np.float32)
FLIP_PERM = MIRRORED_BLENDSHAPES


# -- data -------------------------------------------------------------------------------------------------
def extract(data: Path, cache: Path, workers: int) -> None:
    jobs = [(data / "fer2013", cache / "fer2013.npz", ["--usage", "Training,PublicTest"]),
            (data / "muxspace", cache / "muxspace.npz", [])]
    for src, out, extra in jobs:
        if out.exists():
            continue
        print(f"extracting {src} -> {out}", flush=True)
        subprocess.run([sys.executable, str(ROOT / "scripts" / "train_extract.py"), str(src), str(out),
                        "--workers", str(workers), *extra], check=True)


def load_fer(data: Path, cache: Path):
    z = np.load(cache / "fer2013.npz")
    with open(data / "fer2013" / "index.csv", newline="") as fh:
        rows = {r["path"]: r for r in csv.DictReader(fh)}
    paths = [str(p) for p in z["path"]]
    votes = np.array([[float(rows[p][f"vote_{e}"]) for e in EMOTIONS] for p in paths], np.float32)
    not_face = np.array([float(rows[p]["ferplus_not_a_face"] or 0) for p in paths])
    usage = np.array([rows[p]["usage"] for p in paths])
    # the publictest labels exactly as `memeindex eval` reads them (FER+ majority, non-faces dropped)
    with open(data / "fer2013-publictest" / "index.csv", newline="") as fh:
        pt = {os.path.normpath(os.path.join("fer2013-publictest", r["path"])).split("fer2013/", 1)[1]: r["label"]
              for r in csv.DictReader(fh)}
    pt_label = np.array([pt.get(p, "") for p in paths])
    return dict(crop=z["crop"], shapes=z["shapes"], found=z["found"], votes=votes, not_face=not_face,
                usage=usage, pt_label=pt_label)


def load_mux(data: Path, cache: Path):
    z = np.load(cache / "muxspace.npz")
    with open(data / "muxspace" / "index.csv", newline="") as fh:
        rows = {r["path"]: r for r in csv.DictReader(fh)}
    paths = [str(p) for p in z["path"]]
    keep = z["found"]
    return dict(crop=z["crop"][keep], shapes=z["shapes"][keep],
                label=np.array([rows[p]["label"] for p in paths])[keep],
                subject=[rows[p]["subject"] for p, k in zip(paths, keep) if k])


# -- augmentation -----------------------------------------------------------------------------------------
def center_crop(crops: np.ndarray) -> np.ndarray:
    o = (CACHE_SIDE - CROP) // 2
    return crops[:, o:o + CROP, o:o + CROP]


def augment(crops: np.ndarray, shapes: np.ndarray, rng: np.random.Generator):
    """Meme-condition augmentation of cached 64 px aligned crops -> 48 px model crops (+ matching blendshapes)."""
    import cv2

    n = len(crops)
    out = np.empty((n, CROP, CROP), np.uint8)
    shapes = shapes.copy()
    flip = rng.random(n) < 0.5
    shapes[flip] = shapes[flip][:, FLIP_PERM]
    c = CACHE_SIDE / 2
    for i in range(n):
        img = crops[i]
        if flip[i]:
            img = img[:, ::-1]
        s = np.exp(rng.uniform(np.log(0.88), np.log(1.14)))  # >1 zooms in
        ang = rng.normal(0, 6)
        tx, ty = rng.normal(0, 1.6, 2)
        m = cv2.getRotationMatrix2D((c, c), ang, s)
        m[:, 2] += (CROP / 2 - c) + np.array([tx, ty])
        im = cv2.warpAffine(np.ascontiguousarray(img), m, (CROP, CROP), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
        r = rng.random(6)
        if r[0] < 0.2:  # low resolution: a small face in a meme
            f = rng.uniform(0.35, 0.7)
            small = cv2.resize(im, (max(8, int(CROP * f)),) * 2, interpolation=cv2.INTER_AREA)
            im = cv2.resize(small, (CROP, CROP), interpolation=cv2.INTER_LINEAR)
        if r[1] < 0.2:
            im = cv2.GaussianBlur(im, (0, 0), rng.uniform(0.4, 1.3))
        imf = im.astype(np.float32)
        if r[2] < 0.8:  # contrast, brightness, gamma (a colour shift is a gray-level shift after the gray step)
            imf = (imf - imf.mean()) * rng.uniform(0.6, 1.4) + imf.mean() + rng.normal(0, 18)
            imf = np.clip(imf, 0, 255)
            imf = 255.0 * (imf / 255.0) ** np.exp(rng.normal(0, 0.25))
        if r[3] < 0.15:
            imf = imf + rng.normal(0, rng.uniform(2, 8), imf.shape)
        im = np.clip(imf, 0, 255).astype(np.uint8)
        if r[4] < 0.25:  # JPEG artefacts
            ok, buf = cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, int(rng.uniform(15, 60))])
            if ok:
                im = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
        if r[5] < 0.25:  # partial occlusion: a caption bar or block of text over part of the face
            im = im.copy()
            h = int(rng.uniform(0.12, 0.3) * CROP)
            if rng.random() < 0.6:  # a horizontal caption band at the top or bottom
                y0 = int(rng.uniform(0, 0.15) * CROP) if rng.random() < 0.5 else CROP - h - int(rng.uniform(0, 0.1) * CROP)
                x0, x1 = 0, CROP
            else:  # a block somewhere
                y0 = int(rng.uniform(0, CROP - h))
                w = int(rng.uniform(0.2, 0.5) * CROP)
                x0 = int(rng.uniform(0, CROP - w))
                x1 = x0 + w
            fg, bg = (255, 0) if rng.random() < 0.5 else (0, 255)
            im[y0:y0 + h, x0:x1] = bg
            for _ in range(rng.integers(2, 7)):  # letter-like strokes
                yy = y0 + int(rng.uniform(0.2, 0.8) * h)
                xa = int(rng.uniform(x0, x1))
                cv2.line(im, (xa, yy - h // 4), (min(x1 - 1, xa + int(rng.uniform(2, 8))), yy + h // 4), fg, 1)
        out[i] = im
    shapes = shapes + rng.normal(0, 0.02, shapes.shape).astype(np.float32)  # landmarker jitter
    return out, np.clip(shapes, 0, 1)


# -- model ------------------------------------------------------------------------------------------------
def build_model(dim: int = 64, n_classes: int = len(EMOTIONS), width: int = 32):
    import tensorflow as tf
    from tensorflow import keras
    from tensorflow.keras import layers

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


# -- evaluation on cached inputs ---------------------------------------------------------------------------
def embed_cached(model, crops48, shapes, batch=512):
    out = [model([crops48[i:i + batch, ..., None].astype(np.float32), shapes[i:i + batch]], training=False).numpy()
           for i in range(0, len(crops48), batch)]
    return np.concatenate(out) if out else np.zeros((0, 64), np.float32)


def val_figures(model, val, mux):
    e = embed_cached(model, val["crop48"], val["shapes"])
    r = retrieval_metrics(e, val["label"], [""] * len(e))
    out = {"pt_P@1": r["P@1"], "pt_P@3": r["P@3"], "pt_mAP": r["mAP"],
           "pt_triplet": triplet_accuracy(e, *val["triplets"])}
    if mux is not None:
        em = embed_cached(model, mux["crop48"], mux["shapes"])
        rm = retrieval_metrics(em, mux["label"], mux["subject"])
        ident = identity_metrics(em, mux["label"], mux["subject"]) or {}
        out.update({"mux_P@1": rm["P@1"], "mux_P@3": rm["P@3"], "mux_mAP": rm["mAP"],
                    "mux_identity": ident.get("identity")})
    return out


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

    img_in = keras.Input((CROP, CROP, 1), name="crop")
    bs_in = keras.Input((N_BLENDSHAPES,), name="blendshapes")
    e = layers.Add()([model([img_in, bs_in]), model([Mirror()(img_in), SwapSides()(bs_in)])])
    e = layers.UnitNormalization(name="embedding")(e)
    return keras.Model([img_in, bs_in], e, name="expression_embedding_flip")


def with_projection(model, matrix: np.ndarray):
    """The embedding multiplied by a fixed matrix, renormalised."""
    from tensorflow import keras
    from tensorflow.keras import layers

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


# -- export -----------------------------------------------------------------------------------------------
def export_tflite(model, path: Path) -> None:
    """The embedding model alone (crop + blendshapes -> 64-d unit vector), float16 weights, dynamic batch."""
    import tempfile

    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False)
        conv = tf.lite.TFLiteConverter.from_saved_model(tmp)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
        blob = conv.convert()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = path.with_suffix(".tmp")
    tmp_path.write_bytes(blob)
    tmp_path.replace(path)


def check_tflite(path: Path, model, crops48, shapes) -> float:
    sys.path.insert(0, str(ROOT))
    from memeindex.embedders.learned import LearnedEmbedder

    emb = LearnedEmbedder(path)
    a = emb.embed_inputs(crops48, shapes)
    b = embed_cached(model, crops48, shapes)
    return float(np.abs(a - b).max())


# -- main -------------------------------------------------------------------------------------------------
def main(argv=None):
    ap = argparse.ArgumentParser(description="train the expression embedding")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "expressions")
    ap.add_argument("--cache", type=Path, default=ROOT / ".cache" / "train")
    ap.add_argument("--version", default="v1")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "memeindex" / "embedders" / "weights")
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--stage2-epochs", type=int, default=14,
                    help="then a second cosine cycle of this many epochs from the first one's weights (0 = none)")
    ap.add_argument("--stage2-lr", type=float, default=1e-3)
    ap.add_argument("--minutes", type=float, default=0, help="stop after this many minutes of training (0 = none)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--supcon", type=float, default=0.5, help="weight of the supervised-contrastive term")
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="train on the first N faces only (smoke test)")
    ap.add_argument("--init", type=Path, default=None, metavar="WEIGHTS",
                    help="start from these Keras weights (a second cosine cycle) instead of from scratch")
    ap.add_argument("--export-only", type=Path, default=None, metavar="WEIGHTS",
                    help="skip training: load these Keras weights, choose the read-out, export")
    args = ap.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    extract(args.data, args.cache, args.workers)
    if args.stage2_epochs > 0 and not args.init and not args.export_only:
        # the v1 recipe: stage 1 from scratch (its export goes to the cache), stage 2 continues from its weights
        argv = list(sys.argv[1:] if argv is None else argv)
        main(argv + ["--stage2-epochs", "0", "--out-dir", str(args.cache / "stage1")])
        main(argv + ["--stage2-epochs", "0", "--epochs", str(args.stage2_epochs), "--lr", str(args.stage2_lr),
                     "--init", str(args.cache / f"expression-{args.version}.base.weights.h5")])
        return

    import tensorflow as tf

    tf.keras.utils.set_random_seed(args.seed)
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    rng = np.random.default_rng(args.seed)

    fer = load_fer(args.data, args.cache)
    vote_sum = fer["votes"].sum(1)
    usable = fer["found"] & (vote_sum > 0) & (fer["not_face"] < 5)
    tr = np.flatnonzero(usable & (fer["usage"] == "Training"))
    if args.limit:
        tr = tr[: args.limit]
    va = np.flatnonzero(fer["found"] & (fer["usage"] == "PublicTest") & (fer["pt_label"] != ""))
    soft = fer["votes"] / np.maximum(vote_sum[:, None], 1)
    hard = np.argmax(fer["votes"] + rng.random(fer["votes"].shape) * 1e-3, axis=1)  # majority, ties seeded
    pt_votes = fer["votes"][va]
    val = {"crop48": center_crop(fer["crop"][va]), "shapes": fer["shapes"][va], "label": fer["pt_label"][va],
           "triplets": sample_triplets(pt_votes, [""] * len(va))}
    mux = None
    if (args.cache / "muxspace.npz").exists():
        mux = load_mux(args.data, args.cache)
        mux["crop48"] = center_crop(mux["crop"])
    print(f"train faces {len(tr)} of {int((fer['usage'] == 'Training').sum())} Training images "
          f"(detector found {fer['found'][fer['usage'] == 'Training'].mean():.3f}); "
          f"val faces {len(va)}; muxspace faces {0 if mux is None else len(mux['label'])}", flush=True)

    model = build_model(width=args.width)
    if args.export_only:
        load_weights(model, args.export_only)
        old = args.cache / f"train-{args.version}.json"
        prev = json.loads(old.read_text()) if old.exists() else {}
        finish(model, args, fer, tr, val, mux, prev.get("history", []), prev.get("selected_epoch"), time.time(), hard)
        return
    head = CosineHead(64, len(EMOTIONS), seed=args.seed)
    if args.init:
        load_weights(model, args.init)
        # the class centres restart at the Training class means of the loaded embedding
        e0 = embed_cached(model, center_crop(fer["crop"][tr]), fer["shapes"][tr])
        cent = np.stack([e0[hard[tr] == c].mean(0) for c in range(len(EMOTIONS))]).T
        head.w.assign((cent / np.linalg.norm(cent, axis=0, keepdims=True)).astype(np.float32))
        print(f"initialised from {args.init}", flush=True)
    steps_per_epoch = len(tr) // args.batch
    total = steps_per_epoch * args.epochs
    sched = tf.keras.optimizers.schedules.CosineDecay(args.lr, decay_steps=total, warmup_target=None,
                                                      alpha=0.02)
    opt = tf.keras.optimizers.AdamW(learning_rate=sched, weight_decay=1e-4)
    variables = model.trainable_variables + [head.w]
    print(f"model params {model.count_params():,}; {steps_per_epoch} steps/epoch", flush=True)

    @tf.function(reduce_retracing=True)
    def train_step(x, b, y_soft, y_hard):
        with tf.GradientTape() as tape:
            e = model([x, b], training=True)
            logits = head(e)
            kl = tf.reduce_mean(tf.reduce_sum(
                y_soft * (tf.math.log(y_soft + 1e-8) - tf.nn.log_softmax(logits)), axis=1))
            sc = supcon_loss(e, y_hard)
            loss = kl + args.supcon * sc
        grads = tape.gradient(loss, variables)
        opt.apply_gradients(zip(grads, variables))
        acc = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, 1, output_type=tf.int32), y_hard), tf.float32))
        return kl, sc, acc

    best, best_score, history = None, -1.0, []
    t_start = time.time()
    for epoch in range(args.epochs):
        t0 = time.time()
        order = rng.permutation(tr)
        crops, shapes = augment(fer["crop"][order], fer["shapes"][order], rng)
        t_aug = time.time() - t0
        sums = np.zeros(3)
        for s in range(steps_per_epoch):
            idx = slice(s * args.batch, (s + 1) * args.batch)
            kl, sc, acc = train_step(crops[idx, ..., None].astype(np.float32), shapes[idx],
                                     soft[order[idx]].astype(np.float32), hard[order[idx]].astype(np.int32))
            sums += [float(kl), float(sc), float(acc)]
        figs = val_figures(model, val, mux)
        sel = figs["pt_P@3"] + figs["pt_triplet"]  # selection uses PublicTest only
        rec = {"epoch": epoch + 1, "kl": sums[0] / steps_per_epoch, "supcon": sums[1] / steps_per_epoch,
               "train_acc": sums[2] / steps_per_epoch, **{k: round(v, 4) for k, v in figs.items() if v is not None},
               "sec": round(time.time() - t0, 1), "aug_sec": round(t_aug, 1)}
        history.append(rec)
        print(json.dumps(rec), flush=True)
        if sel > best_score:
            best_score, best = sel, [v.numpy() for v in model.weights]
            best_epoch = epoch + 1
        if args.minutes and (time.time() - t_start) / 60 * (epoch + 2) / (epoch + 1) > args.minutes:
            print(f"time budget reached after epoch {epoch + 1}", flush=True)
            break
    for v, w in zip(model.weights, best):
        v.assign(w)
    model.save_weights(args.cache / f"expression-{args.version}.base.weights.h5")
    finish(model, args, fer, tr, val, mux, history, best_epoch, t_start, hard)


def finish(model, args, fer, tr, val, mux, history, best_epoch, t_start, hard):
    """Choose the read-out on PublicTest, export the TFLite file, check it against Keras, write the summary.

    Read-outs tried: the embedding as trained; averaged with the mirrored face; and each of those projected
    toward the span of the eight expression centres (the class means of the Training embeddings): the part of
    the embedding orthogonal to every expression centre carries what is not expression (identity, pose,
    lighting), so it is shrunk by a factor lam (0 = dropped), then the vector is renormalised.
    """
    import tensorflow as tf

    e_tr = embed_cached(model, center_crop(fer["crop"][tr]), fer["shapes"][tr])
    y_tr = hard[tr]
    means = np.stack([e_tr[y_tr == c].mean(0) for c in range(len(EMOTIONS)) if (y_tr == c).sum() >= 20])
    basis, _ = np.linalg.qr(means.T)
    span = basis @ basis.T
    candidates = {}
    for flip in (False, True):
        base = with_flip_average(model) if flip else model
        for lam in (1.0, 0.5, 0.25, 0.0):
            m = base if lam == 1.0 else with_projection(base, span + lam * (np.eye(len(span)) - span))
            figs = val_figures(m, val, mux)
            key = f"flip={flip} lam={lam}"
            candidates[key] = (figs, m, flip, lam)
            print("read-out", key, json.dumps({k: round(v, 4) for k, v in figs.items() if v is not None}),
                  flush=True)
    key = max(candidates, key=lambda k: candidates[k][0]["pt_P@3"] + candidates[k][0]["pt_triplet"])
    final, model, use_flip, lam = candidates[key]
    print("chosen read-out", key, flush=True)

    path = args.out_dir / f"expression-{args.version}.tflite"
    export_tflite(model, path)
    diff = check_tflite(path, model, val["crop48"][:64], val["shapes"][:64])
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    summary = {"model": path.name, "bytes": path.stat().st_size, "sha256": digest, "selected_epoch": best_epoch,
               "tflite_vs_keras_max_abs": diff, "val": final, "flip_average": bool(use_flip),
               "residual_shrink": lam, "readouts": {k: v[0] for k, v in candidates.items()},
               "history": history,
               "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "train_faces": int(len(tr)), "val_faces": int(len(val["label"])),
               "minutes": round((time.time() - t_start) / 60, 1), "tensorflow": tf.__version__}
    (args.cache / f"train-{args.version}.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k not in ("history", "readouts")}, indent=1), flush=True)


if __name__ == "__main__":
    main()
