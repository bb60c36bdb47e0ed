"""A v1-style 48 px gray branch for expression-v2, trained on the FER-2013 Training fit part only, in the two-branch
setting (`make train --branch true`; models/README.md, "A FER-fit-only 48 px branch").

expression-v1 was fitted on all of FER Training, the validation split included, so the split over-trusts it and its
weight against face-api's could not be selected. This branch never sees the validation images: it starts from
nothing (no weight of v1's), and its loss is computed on the joined embedding, the branch's 64-d unit vector ++
face-api's frozen feature (mirror-averaged, unit length, cached; times the training feature weight), L2-normalised:
KL divergence from the FER+ vote distribution to a cosine-softmax head on the join, plus a supervised-contrastive
term on the join. Only the branch learns, so it learns what face-api's feature lacks, and face-api's geometry is
untouched (its read-out stays the unlabelled PCA of `loop.train_v2`). Augmentation is v1's (`augment.augment`:
resolution, blur, contrast / brightness / gamma, the gray step that any colour shift becomes, noise, JPEG,
captions, blendshape jitter) on 64 px aligned crops re-cut from the cached landmarks.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import augment as A
from . import data as D

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BranchConfig:
    epochs: int = 10
    lr: float = 2e-3
    batch: int = 128
    supcon: float = 0.5  # weight of the supervised-contrastive term on the join
    feature_weight: float = 1.0  # face-api's feature against the branch's, in the training loss's join
    width: int = 32
    seed: int = 0
    threads: int = 2


def gray_crops64(faces: dict, settings) -> np.ndarray:
    """uint8 [m, 64, 64]: every cached face's aligned gray crop with v1's jitter room (its 48 px centre is the runtime
    crop), re-cut from its re-decoded image and cached landmarks (no detection)."""
    from ..embedders.learned import CROP, align_face, to_gray

    out, last, gray = [], None, None
    for i, lm in zip(faces["image"], faces["landmarks"]):
        if i != last:
            gray, last = to_gray(D._decode(str(faces["paths"][i]), settings)), i  # noqa: SLF001 - eval's decoder
        out.append(align_face(gray, lm, A.CACHE_SIDE, A.CACHE_SIDE / CROP))
    return np.array(out, np.uint8).reshape(-1, A.CACHE_SIDE, A.CACHE_SIDE)


def joined(branch_emb, feature, feature_weight: float):
    """L2-normalised (branch ++ feature_weight x feature): what the loss and the per-epoch validation see.
    numpy or TensorFlow tensors alike."""
    if isinstance(branch_emb, np.ndarray):
        j = np.concatenate([branch_emb, feature_weight * feature], axis=1)
        return j / np.maximum(np.linalg.norm(j, axis=1, keepdims=True), 1e-12)
    import tensorflow as tf

    return tf.math.l2_normalize(tf.concat([branch_emb, feature_weight * feature], axis=1), axis=1)


def embed(model, gray48: np.ndarray, shapes: np.ndarray, batch: int = 512) -> np.ndarray:
    """The branch's embedding averaged with the mirrored face's (blendshapes swapped), renormalised: as exported."""
    out = []
    for i in range(0, len(gray48), batch):
        x = np.asarray(gray48[i:i + batch, ..., None], np.float32)
        b = np.asarray(shapes[i:i + batch], np.float32)
        e = model([x, b], training=False).numpy() + model([x[:, :, ::-1], b[:, A.FLIP_PERM]], training=False).numpy()
        out.append(e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12))
    return np.concatenate(out) if out else np.zeros((0, 64), np.float32)


def cache_key(config: BranchConfig, data_keys: list[str]) -> str:
    """The trained branch's cache key: its config, the faces' caches (which hold detector and crop versions), the
    frozen feature's weights and the library versions that change the arithmetic."""
    import tensorflow as tf

    from .model import FACEAPI_SHARD_SHA256

    src = json.dumps({"config": asdict(config), "data": data_keys, "faceapi": FACEAPI_SHARD_SHA256,
                      "tensorflow": tf.__version__, "numpy": np.__version__, "code": "1"}, sort_keys=True)
    return hashlib.sha256(src.encode()).hexdigest()[:16]


def train(config: BranchConfig, fit: dict, val: dict, cache: Path, key: str):
    """(Keras branch, record). fit: crops64 uint8 [n,64,64], shapes [n,52], votes [n,8], feature [n,256] (unit);
    val: gray48, shapes, feature, labels, triplets (the FER Training validation split). The epoch with the best
    validation P@3 + triplet of the joined embedding is kept. The trained weights and the record are cached under
    `key` (a rerun of `make train` reads them back instead of training again)."""
    import tensorflow as tf

    from . import model as M
    from .loop import _selection_score

    weights_path = Path(cache) / f"branch-{key}.weights.h5"
    record_path = Path(cache) / f"branch-{key}.json"
    net = M.build_model(width=config.width)
    if weights_path.exists() and record_path.exists():
        net.load_weights(weights_path)
        record = json.loads(record_path.read_text())
        log.info("branch: read back %s (epoch %s of %d)", weights_path.name, record["best_epoch"], config.epochs)
        return net, record

    t_start = time.time()
    tf.keras.utils.set_random_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    votes = np.asarray(fit["votes"], np.float32)
    soft = votes / np.maximum(votes.sum(1, keepdims=True), 1)
    hard = np.argmax(votes + rng.random(votes.shape) * 1e-3, axis=1).astype(np.int32)  # majority, ties seeded
    feature = np.asarray(fit["feature"], np.float32)
    head = M.CosineHead(64 + feature.shape[1], len(D.FERPLUS), seed=config.seed)
    steps = len(votes) // config.batch
    sched = tf.keras.optimizers.schedules.CosineDecay(config.lr, decay_steps=steps * config.epochs, alpha=0.02)
    opt = tf.keras.optimizers.AdamW(learning_rate=sched, weight_decay=1e-4)
    variables = net.trainable_variables + [head.w]
    fw = float(config.feature_weight)

    @tf.function(reduce_retracing=True)
    def step(x, b, f, y_soft, y_hard):
        with tf.GradientTape() as tape:
            z = joined(net([x, b], training=True), f, fw)
            logits = head(z)
            kl = tf.reduce_mean(tf.reduce_sum(y_soft * (tf.math.log(y_soft + 1e-8) - tf.nn.log_softmax(logits)), 1))
            sc = M.supcon_loss(z, y_hard)
            loss = kl + config.supcon * sc
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return kl, sc

    history, best, best_score, best_epoch = [], None, -np.inf, 0
    for epoch in range(config.epochs):
        t0 = time.time()
        order = rng.permutation(len(votes))
        crops, shapes = A.augment(fit["crops64"][order], fit["shapes"][order], rng)
        sums = np.zeros(2)
        for s in range(steps):
            idx = order[s * config.batch:(s + 1) * config.batch]
            part = slice(s * config.batch, (s + 1) * config.batch)
            kl, sc = step(crops[part, ..., None].astype(np.float32), shapes[part], feature[idx], soft[idx], hard[idx])
            sums += [float(kl), float(sc)]
        emb = embed(net, val["gray48"], val["shapes"])
        fig = _selection_score(joined(emb, val["feature"], fw), val["labels"], val["triplets"])
        alone = _selection_score(emb, val["labels"], val["triplets"])
        rec = {"epoch": epoch + 1, "kl": round(sums[0] / steps, 4), "supcon": round(sums[1] / steps, 4),
               "val_join_P@3": round(fig["P@3"], 4), "val_join_triplet": round(fig["triplet"], 4),
               "val_branch_P@3": round(alone["P@3"], 4), "val_branch_triplet": round(alone["triplet"], 4),
               "sec": round(time.time() - t0, 1)}
        history.append(rec)
        log.info("branch %s", json.dumps(rec))
        if fig["score"] > best_score:
            best_score, best_epoch, best = fig["score"], epoch + 1, [v.numpy() for v in net.weights]
    for v, w in zip(net.weights, best):
        v.assign(w)
    record = {"config": asdict(config), "best_epoch": best_epoch, "history": history, "train_faces": int(len(votes)),
              "minutes": round((time.time() - t_start) / 60, 1), "weights": weights_path.name}
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    net.save_weights(weights_path)
    record_path.write_text(json.dumps(record, indent=1) + "\n")
    return net, record
