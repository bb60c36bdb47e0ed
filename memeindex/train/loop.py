"""The recipes. `train_v2(config, settings)`: expression-v2, composed from expression-v1 and face-api.js's FaceExpressionNet
with a read-out fitted on unlabelled faces and choices selected on a seeded split of FER-2013 Training.

Nothing here looks at the evaluation sets (fer2013-publictest, muxspace, the posed CK+ faces): they are
`memeindex eval`'s, at the end.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..atomicfile import replacing
from ..faces import detector_id
from ..settings import Settings
from . import augment as A
from . import data as D
from . import export as E
from . import model as M

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class V2Config:
    data: Path = ROOT.parent / "shared" / "data"
    faceapi: Path = ROOT.parent / "shared" / "models" / "face-api-expression"
    cache: Path = ROOT / ".cache" / "train"
    out_dir: Path = ROOT / "memeindex" / "embedders" / "weights"
    version: str = "v2"
    seed: int = 0
    n_val: int = 3000  # FER-2013 Training images held out for selection (by image: FER has no subjects)
    n_fit: int = 9000  # further FER-2013 Training images: unlabelled faces for the read-out
    workers: int = 2
    threads: int = 2
    # The pretrained branch's colour crops; the first is face-api.js's reference input (the port check:
    # the detector box widened 10 % per side), against whose feature geometry is measured.
    crops: tuple = ("box10", "aligned")
    flips: tuple = (False, True)  # the pretrained branch alone, or averaged with the mirrored face
    probs_weights: tuple = (0.0, 0.5, 1.0)  # weight of face-api's class probabilities (square roots) block
    feature_weight: float = 1.0  # face-api's feature block against v1's (both unit length): fixed, not selected
    dims: tuple = (64, 128)
    # How much of the unlabelled faces' mean the read-out subtracts before projecting onto the PCA basis: 1 is the
    # issue's centred PCA, 0 keeps the join's own origin (cosines between faces as the joined branches measure them)
    centres: tuple = (1.0, 0.5, 0.0)
    dim_margin: float = 0.005  # a larger read-out must beat a smaller one by this much (P@3 + triplet) to be kept
    geometry_faces: int = 800  # faces per unlabelled non-FER set whose pairwise distances the geometry compares
    # --branch: replace v1 by a v1-style branch trained on the FER fit part only (memeindex.train.branch), then
    # choose among its read-outs, with face-api's weight against it a candidate (it never saw the validation split)
    branch: bool = False
    branch_epochs: int = 10
    branch_lr: float = 2e-3
    branch_supcon: float = 0.5
    branch_feature_weights: tuple = (0.5, 0.75, 1.0, 1.5)  # read-out candidates: face-api's block against the branch's
    branch_probs_weights: tuple = (0.0, 0.5)


@dataclass
class Result:
    path: Path
    summary_path: Path
    summary: dict = field(default_factory=dict)


def _selection_score(emb, labels, triplets) -> dict:
    from ..metrics import retrieval_metrics, triplet_accuracy

    r = retrieval_metrics(emb, labels, [""] * len(emb))
    t = triplet_accuracy(emb, *triplets)
    return {"P@1": r["P@1"], "P@3": r["P@3"], "mAP": r["mAP"], "triplet": t, "score": r["P@3"] + (t or 0.0)}


def _l2(x):
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _ranks(x: np.ndarray) -> np.ndarray:
    r = np.empty(len(x), np.float64)
    r[np.argsort(x, kind="stable")] = np.arange(len(x))
    return r


class Geometry:
    """How much of a reference feature's geometry an embedding of the same faces (rows) keeps: the Spearman
    correlation of their pairwise cosine similarities over a seeded sample of `n` faces. No labels. The reference's
    ranks are computed once, here: the selection compares every read-out candidate with the same reference."""

    def __init__(self, reference: np.ndarray, n: int, seed: int):
        self.idx = np.random.default_rng(seed).choice(len(reference), min(n, len(reference)), replace=False)
        self.pairs = np.triu_indices(len(self.idx), 1)
        self.reference_ranks = self._ranks(reference)

    def _ranks(self, emb: np.ndarray) -> np.ndarray:
        return _ranks((emb[self.idx] @ emb[self.idx].T)[self.pairs])

    def kept(self, emb: np.ndarray) -> float:
        return float(np.corrcoef(self._ranks(emb), self.reference_ranks)[0, 1])


class FaceApiRunner:
    """face-api.js's network as a float32 LiteRT model (converted once from the Keras port): (feature, logits)."""

    def __init__(self, keras_model, threads: int):
        import tempfile

        import tensorflow as tf
        from ai_edge_litert.interpreter import Interpreter

        with tempfile.TemporaryDirectory() as tmp:
            keras_model.export(tmp, format="tf_saved_model", verbose=False)
            blob = tf.lite.TFLiteConverter.from_saved_model(tmp).convert()
        self.it = Interpreter(model_content=blob, num_threads=threads)
        self.inp = self.it.get_input_details()[0]
        outs = self.it.get_output_details()
        self.feat = next(o for o in outs if o["shape"][-1] == 256)
        self.logits = next(o for o in outs if o["shape"][-1] == 7)

    def __call__(self, rgb112: np.ndarray, batch: int = 64):
        feats, logits = [], []
        for i in range(0, len(rgb112), batch):
            x = np.asarray(rgb112[i:i + batch], np.float32)
            self.it.resize_tensor_input(self.inp["index"], list(x.shape))
            self.it.allocate_tensors()
            self.it.set_tensor(self.inp["index"], x)
            self.it.invoke()
            feats.append(np.array(self.it.get_tensor(self.feat["index"])))
            logits.append(np.array(self.it.get_tensor(self.logits["index"])))
        return np.concatenate(feats), np.concatenate(logits)


def _branches(faces: dict, runner: FaceApiRunner, crop_name: str, v1, cache: Path, settings) -> dict:
    """Per face: v1's embedding, face-api's feature and logits (of the crop and of its mirror image).

    Cached beside the faces: the key adds the crop's name and the frozen branches' weights to the faces' own key.
    """
    import hashlib
    import os

    from ..embedders.learned import COLOR_CROPS
    from .model import FACEAPI_SHARD_SHA256

    key = hashlib.sha256(f"{faces['key']}|{crop_name}|{FACEAPI_SHARD_SHA256}|{v1.path.name}|{D.file_sha256(v1.path)}"
                         .encode()).hexdigest()[:16]
    path = Path(cache) / f"branches-{Path(faces['file']).stem}-{crop_name}-{key}.npz"
    if path.exists():
        z = np.load(path)
        return {k: z[k] for k in z.files}
    rgb = D.color_crops(faces, COLOR_CROPS[crop_name], settings)
    feat, logits = runner(rgb)
    feat_m, logits_m = runner(rgb[:, :, ::-1])
    out = {"v1": v1.embed_inputs(faces["gray48"], faces["shapes"]), "feat": feat, "logits": logits,
           "feat_m": feat_m, "logits_m": logits_m}
    with replacing(path) as tmp, open(tmp, "wb") as f:  # to a file object savez adds no ".npz" to the name
        np.savez(f, **out)
    return out


def face_feature(br: dict, flip: bool) -> np.ndarray:
    """face-api's 256-d feature, L2-normalised (averaged with the mirrored face's first when flip)."""
    return _l2((br["feat"] + br["feat_m"]) / 2 if flip else br["feat"])


def join(br: dict, flip: bool, probs_weight: float, feature_weight: float) -> np.ndarray:
    """The blocks v2 joins before its read-out (what model.v2_net computes, in numpy)."""
    logits = (br["logits"] + br["logits_m"]) / 2 if flip else br["logits"]
    blocks = [br["v1"], feature_weight * face_feature(br, flip)]
    if probs_weight > 0:
        blocks.append(probs_weight * np.sqrt(_softmax(logits) + 1e-12))
    return np.concatenate(blocks, axis=1).astype(np.float32)


def pca(x: np.ndarray, dims) -> tuple[np.ndarray, dict[int, tuple[np.ndarray, float]]]:
    """(mean, {dim: (basis [d, dim], share of variance kept)}) of one centred PCA (float64 SVD), sliced per size."""
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd((x - mean).astype(np.float64), full_matrices=False)
    var = s ** 2
    return mean.astype(np.float32), {dim: (vt[:dim].T.astype(np.float32), float(var[:dim].sum() / var.sum()))
                                     for dim in dims}


def choose_readout(candidates: list[dict], ref_crop: str, dim_margin: float, among: str = "v1") -> tuple[dict, dict]:
    """(chosen, floor) among read-out trials, each with crop, probs_weight, dim, centre (1 when absent), geometry
    and a validation score; a trial's "branch" ("v1" when absent) names its 48 px branch, "feature_weight" (1 when
    absent) face-api's weight against it.

    floor: the issue's untrained recipe (v1, the reference crop, no probabilities block, face-api at weight 1, the
    smallest size, fully centred). Eligible: the trials of the branch `among` that keep at least the floor's
    geometry. Chosen: the eligible trial with the best validation score, then the smallest size of its crop,
    weights and centring that comes within dim_margin of that score.
    """
    def kind(t):
        return t["crop"], t["probs_weight"], t.get("centre", 1.0), t.get("feature_weight", 1.0), t.get("branch", "v1")

    floor = min((t for t in candidates if t["crop"] == ref_crop and t["probs_weight"] == 0.0
                 and t.get("centre", 1.0) == 1.0 and t.get("branch", "v1") == "v1"
                 and t.get("feature_weight", 1.0) == 1.0), key=lambda t: t["dim"])
    eligible = [t for t in candidates if t["geometry"] >= floor["geometry"] and t.get("branch", "v1") == among]
    best = max(eligible, key=lambda t: t["score"])
    chosen = min((t for t in eligible if kind(t) == kind(best) and t["score"] + dim_margin >= best["score"]),
                 key=lambda t: t["dim"])
    return chosen, floor


def train_v2(config: V2Config, settings: Settings) -> Result:
    """expression-v2: v1 ++ face-api.js's feature (++ its class probabilities), a centred PCA read-out fitted on
    unlabelled faces, every choice made by the rule in models/README.md ("Selection"), all trials recorded."""
    import tensorflow as tf

    from ..embedders.learned import LearnedEmbedder
    from ..embedders.registry import LEARNED_MODELS
    from ..metrics import sample_triplets
    from . import export, model

    t0 = time.time()
    tf.keras.utils.set_random_seed(config.seed)
    tf.config.threading.set_intra_op_parallelism_threads(config.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    expressions = config.data / "expressions"

    # 1. faces. Labelled: a seeded validation split of FER-2013 Training (the only labels any choice sees).
    # Unlabelled (labels never read): more of FER Training, muxspace's faces and the shared memes' faces.
    split = D.fer_training_split(expressions, config.seed, config.n_val, config.n_fit)
    fer_dir = expressions / "fer2013"
    val = D.extract("fer-val", [fer_dir / r["path"] for r in split.val], config.cache, settings, config.workers)
    fit = D.extract("fer-fit", [fer_dir / r["path"] for r in split.fit], config.cache, settings, config.workers)
    _, mux_paths = D.labelled_set(expressions / "muxspace")  # the images only: no label is read
    mux = D.extract("muxspace", mux_paths, config.cache, settings, config.workers)
    memes = D.extract("memes", D.meme_files(config.data / "memes"), config.cache, settings, config.workers,
                      all_faces=True)
    val_votes = D.votes_of([split.val[i] for i in val["image"]])
    val_labels = D.majority(val_votes)
    triplets = sample_triplets(val_votes, [""] * len(val_labels))
    unlabelled = {"fer-fit": fit, "muxspace": mux, "memes": memes}  # the read-out's faces
    non_fer = ("muxspace", "memes")  # the geometry's faces
    log.info("faces: validation %d of %d; unlabelled %s", len(val["image"]), config.n_val,
             {k: len(v["image"]) for k, v in unlabelled.items()})

    # 2. the frozen branches
    v1_model = LEARNED_MODELS["expression-v1"]
    v1 = LearnedEmbedder(v1_model.verified_path(), model_id=v1_model.model_id, num_threads=config.threads)
    v1_weights = model.read_v1_tflite(v1_model.path)
    fa_weights = model.read_faceapi_weights(config.faceapi)
    fa_keras = model.faceapi_net(fa_weights)
    runner = FaceApiRunner(fa_keras, config.threads)

    face_sets = {"val": val, **unlabelled}
    loaded: dict = {}

    def branches(name: str, crop: str) -> dict:
        """The frozen branches' outputs for one face set and crop: computed or read from the disk cache by
        _branches once, then kept (the selection below reads each of them many times)."""
        if (name, crop) not in loaded:
            loaded[(name, crop)] = _branches(face_sets[name], runner, crop, v1, config.cache, settings)
        return loaded[(name, crop)]

    # 3. selection. v1 was fitted on all of FER Training, so on the validation split it looks better than it is,
    # and FER itself is one domain: FER figures alone would pull every choice toward FER. So:
    # (a) the mirror average (an invariance, not a domain trade) is judged on face-api's branch alone on the
    #     validation split, at its reference crop;
    trials = []
    ref_crop = config.crops[0]
    for crop in config.crops:
        for flip in config.flips:
            fig = _selection_score(face_feature(branches("val", crop), flip), val_labels, triplets)
            trials.append({"stage": "pretrained branch alone", "crop": crop, "flip": flip, **fig})
            log.info("select %s", trials[-1])
    flip = max((t for t in trials if t["stage"] == "pretrained branch alone" and t["crop"] == ref_crop),
               key=lambda t: t["score"])["flip"]
    # (b) every read-out candidate (crop x probabilities weight x size x centring; PCA on the unlabelled faces) is
    #     scored on the validation split AND on how much of face-api's own feature geometry (reference crop, the
    #     mirror choice of (a)) it keeps on the unlabelled non-FER faces. Eligible: no less geometry than the
    #     issue's untrained recipe (reference crop, no probabilities, the smallest size, centred); among those the
    #     best validation score; a larger size only when it wins by dim_margin.
    reference = {n: Geometry(face_feature(branches(n, ref_crop), flip), config.geometry_faces, config.seed)
                 for n in non_fer}
    readouts, candidates = {}, []

    def score_readouts(source: str, crop: str, w: float, fw: float, br_of) -> None:
        """Every size and centring of one join (br_of(face set) -> its branch outputs), scored and recorded."""
        joined = {n: join(br_of(n), flip, w, fw) for n in unlabelled}
        val_join = join(br_of("val"), flip, w, fw)
        full_mean, bases = pca(np.concatenate(list(joined.values())), config.dims)  # one SVD for every size
        extra = {} if source == "v1" else {"branch": source, "feature_weight": fw}
        for dim in config.dims:
            basis, kept = bases[dim]
            for centre in config.centres:
                mean = np.float32(centre) * full_mean
                fig = _selection_score(_l2((val_join - mean) @ basis), val_labels, triplets)
                geo = float(np.mean([reference[n].kept(_l2((joined[n] - mean) @ basis)) for n in non_fer]))
                trials.append({"stage": "read-out", "crop": crop, "flip": flip, "probs_weight": w, **extra,
                               "dim": dim, "centre": centre, "variance_kept": kept, "geometry": geo, **fig})
                readouts[(source, crop, w, fw, dim, centre)] = (mean, basis)
                candidates.append(trials[-1])
                log.info("select %s", trials[-1])
        fig = _selection_score(_l2(val_join), val_labels, triplets)
        trials.append({"stage": "no read-out (the join itself, not a candidate)", "crop": crop, "flip": flip,
                       "probs_weight": w, **extra, **fig})

    for crop in config.crops:
        for w in config.probs_weights:
            score_readouts("v1", crop, w, config.feature_weight, lambda n, crop=crop: branches(n, crop))
    source, branch_net, branch_record = "v1", None, None
    if config.branch:
        # (c) the FER-fit-only branch in v1's place (memeindex.train.branch), at the reference crop; face-api's
        #     weight against it is a candidate, since this branch never saw the validation split
        branch_net, branch_record, branch_emb = _train_branch(config, settings, split, face_sets, branches, flip,
                                                              val_labels, triplets)
        source = "fer-fit"
        for w in config.branch_probs_weights:
            for fw in config.branch_feature_weights:
                score_readouts(source, ref_crop, w, fw,
                               lambda n: {**branches(n, ref_crop), "v1": branch_emb[n]})
        committed = choose_readout(candidates, ref_crop, config.dim_margin)[0]
        log.info("the committed recipe's choice on the same split: %s", committed)
    chosen, floor = choose_readout(candidates, ref_crop, config.dim_margin, among=source)
    crop, probs_weight, dim, centre = chosen["crop"], chosen["probs_weight"], chosen["dim"], chosen["centre"]
    feature_weight = chosen.get("feature_weight", config.feature_weight)
    mean, basis = readouts[(source, crop, probs_weight, feature_weight, dim, centre)]
    readout = {"flip": flip, "probs_weight": probs_weight, "feature_weight": feature_weight,
               "mean": mean, "basis": basis}
    log.info("chosen: %s branch, crop %s, mirror average %s, probabilities weight %s, feature weight %s, %d dims, "
             "centre %s", source, crop, flip, probs_weight, feature_weight, dim, centre)

    # 4. one Keras model, exported; LiteRT must agree with Keras and with the numpy read-out it was chosen by
    net = model.v2_net(v1_weights, fa_weights, readout, branch=branch_net)
    path = config.out_dir / f"expression-{config.version}.tflite"
    export.export_tflite(net, path)
    from ..embedders.learned import COLOR_CROPS

    probe = {k: v[:96] for k, v in val.items() if isinstance(v, np.ndarray) and len(v) == len(val["image"])}
    probe["paths"] = val["paths"]
    colors = D.color_crops(probe, COLOR_CROPS[crop], settings)
    keras_out = net.predict([probe["gray48"][..., None].astype(np.float32), probe["shapes"],
                             colors.astype(np.float32)], verbose=0)
    lite = LearnedEmbedder(path, model_id=f"expression-{config.version}", color_crop=crop)
    lite_out = lite.embed_inputs(probe["gray48"], probe["shapes"], colors)
    parity = export.assert_parity(keras_out, lite_out)
    val_br = branches("val", crop) if branch_net is None else {**branches("val", crop), "v1": branch_emb["val"]}
    val_join = join(val_br, flip, probs_weight, feature_weight)
    numpy_out = _l2((val_join[:96] - mean) @ basis)
    # the model computes what was selected (numpy over the cached branch outputs: float32 LiteRT face-api, v1 file)
    export.assert_parity(numpy_out, keras_out, export.PARITY_MAX_ABS, 0.9999)
    summary = {
        "model_id": f"expression-{config.version}", "dim": dim, "color_crop": crop, "flip_average": flip,
        "probs_weight": probs_weight, "feature_weight": feature_weight, "centre": centre,
        "gray_branch": "expression-v1" if branch_net is None else "trained on the FER fit part (memeindex.train.branch)",
        "validation": {k: chosen[k] for k in ("P@1", "P@3", "mAP", "triplet", "geometry")},
        "geometry_floor": floor["geometry"], "trials": trials, "litert_vs_keras_max_abs": parity,
        "faces": {"validation": int(len(val_labels)), **{k: int(len(v["image"])) for k, v in unlabelled.items()}},
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        "data": {"fer2013_index_sha256": D.file_sha256(fer_dir / "index.csv"),
                 "muxspace_index_sha256": D.file_sha256(expressions / "muxspace" / "index.csv"),
                 "faceapi_shard_sha256": model.FACEAPI_SHARD_SHA256, "expression_v1_sha256": v1_model.sha256,
                 "caches": {k: Path(v["file"]).name for k, v in (("val", val), *unlabelled.items())},
                 "detector": detector_id(settings), "crop_code": D.CROP_CODE_VERSION},
        "environment": export.environment(), "minutes": round((time.time() - t0) / 60, 1),
    }
    if branch_net is not None:
        summary["branch"] = branch_record
        summary["data"]["caches"]["fer-rest"] = Path(face_sets["fer-rest"]["file"]).name
        summary["committed_recipe_choice"] = {k: committed.get(k) for k in
                                              ("crop", "probs_weight", "dim", "centre", "geometry", "P@3", "triplet",
                                               "score")}
    summary_path = export.write_summary(path, summary)
    return Result(path=path, summary_path=summary_path, summary=summary)


def _train_branch(config: V2Config, settings: Settings, split, face_sets: dict, branches, flip: bool, val_labels,
                  triplets):
    """(Keras branch, its record, {face set: its mirror-averaged embedding}). Trained on every usable FER Training
    image outside the validation split whose face the detector finds: the read-out's fit faces plus the rest
    (extracted and cached like them); face-api's feature (reference crop) from the same cache as the read-out's."""
    from . import branch as B

    expressions = config.data / "expressions"
    fer_dir = expressions / "fer2013"
    every = D.fer_training_split(expressions, config.seed, config.n_val, 10 ** 9)  # same order: fit is its prefix
    rest_rows = every.fit[config.n_fit:]
    face_sets["fer-rest"] = D.extract("fer-rest", [fer_dir / r["path"] for r in rest_rows], config.cache, settings,
                                      config.workers)
    ref_crop = config.crops[0]
    parts = (("fer-fit", split.fit), ("fer-rest", rest_rows))
    t0 = time.time()
    fit = {"crops64": np.concatenate([B.gray_crops64(face_sets[n], settings) for n, _ in parts]),
           "shapes": np.concatenate([face_sets[n]["shapes"] for n, _ in parts]),
           "votes": np.concatenate([D.votes_of([rows[i] for i in face_sets[n]["image"]]) for n, rows in parts]),
           "feature": np.concatenate([face_feature(branches(n, ref_crop), flip) for n, _ in parts])}
    log.info("branch: %d training faces, crops and features in %.1f min", len(fit["votes"]), (time.time() - t0) / 60)
    val = face_sets["val"]
    val_in = {"gray48": val["gray48"], "shapes": val["shapes"], "feature": face_feature(branches("val", ref_crop), flip),
              "labels": val_labels, "triplets": triplets}
    bconf = B.BranchConfig(epochs=config.branch_epochs, lr=config.branch_lr, supcon=config.branch_supcon,
                           seed=config.seed, threads=config.threads)
    key = B.cache_key(bconf, [str(face_sets[n]["key"]) for n in ("val", "fer-fit", "fer-rest")])
    net, record = B.train(bconf, fit, val_in, config.cache, key)
    emb = {n: B.embed(net, face_sets[n]["gray48"], face_sets[n]["shapes"])
           for n in ("val", "fer-fit", "muxspace", "memes")}
    return net, record, emb


# -- the expression-v1 recipe (kept so the committed v1 stays reproducible: `--version v1`) ---------------
def embed_cached(model, crops48, shapes, batch=512):
    out = [model([crops48[i:i + batch, ..., None].astype(np.float32), shapes[i:i + batch]], training=False).numpy()
           for i in range(0, len(crops48), batch)]
    return np.concatenate(out) if out else np.zeros((0, 64), np.float32)


def val_figures(model, val, mux):
    from ..metrics import identity_metrics, retrieval_metrics, triplet_accuracy

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


def train_v1(argv: list[str], settings: Settings) -> None:
    """The expression-v1 recipe (see models/README.md), its options parsed from argv."""
    import argparse
    import json
    import os

    ap = argparse.ArgumentParser(description="train expression-v1 (the CNN from scratch)")
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
    D.extract_v1_caches(args.data, args.cache, settings, args.workers)
    if args.stage2_epochs > 0 and not args.init and not args.export_only:
        # the v1 recipe: stage 1 from scratch (its export goes to the cache), stage 2 continues from its weights
        argv = list(argv)
        train_v1(argv + ["--stage2-epochs", "0", "--out-dir", str(args.cache / "stage1")], settings)
        train_v1(argv + ["--stage2-epochs", "0", "--epochs", str(args.stage2_epochs), "--lr", str(args.stage2_lr),
                     "--init", str(args.cache / f"expression-{args.version}.base.weights.h5")], settings)
        return

    import tensorflow as tf

    from ..metrics import sample_triplets

    tf.keras.utils.set_random_seed(args.seed)
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    rng = np.random.default_rng(args.seed)

    fer = D.load_fer(args.data, args.cache)
    vote_sum = fer["votes"].sum(1)
    usable = fer["found"] & (vote_sum > 0) & (fer["not_face"] < 5)
    tr = np.flatnonzero(usable & (fer["usage"] == "Training"))
    if args.limit:
        tr = tr[: args.limit]
    va = np.flatnonzero(fer["found"] & (fer["usage"] == "PublicTest") & (fer["pt_label"] != ""))
    soft = fer["votes"] / np.maximum(vote_sum[:, None], 1)
    hard = np.argmax(fer["votes"] + rng.random(fer["votes"].shape) * 1e-3, axis=1)  # majority, ties seeded
    pt_votes = fer["votes"][va]
    val = {"crop48": A.center_crop(fer["crop"][va]), "shapes": fer["shapes"][va], "label": fer["pt_label"][va],
           "triplets": sample_triplets(pt_votes, [""] * len(va))}
    mux = None
    if (args.cache / "muxspace.npz").exists():
        mux = D.load_mux(args.data, args.cache)
        mux["crop48"] = A.center_crop(mux["crop"])
    log.info(f"train faces {len(tr)} of {int((fer['usage'] == 'Training').sum())} Training images "
          f"(detector found {fer['found'][fer['usage'] == 'Training'].mean():.3f}); "
          f"val faces {len(va)}; muxspace faces {0 if mux is None else len(mux['label'])}")

    model = M.build_model(width=args.width)
    if args.export_only:
        M.load_weights(model, args.export_only)
        old = args.cache / f"train-{args.version}.json"
        prev = json.loads(old.read_text()) if old.exists() else {}
        finish(model, args, fer, tr, val, mux, prev.get("history", []), prev.get("selected_epoch"), time.time(), hard)
        return
    head = M.CosineHead(64, len(D.FERPLUS), seed=args.seed)
    if args.init:
        M.load_weights(model, args.init)
        # the class centres restart at the Training class means of the loaded embedding
        e0 = embed_cached(model, A.center_crop(fer["crop"][tr]), fer["shapes"][tr])
        cent = np.stack([e0[hard[tr] == c].mean(0) for c in range(len(D.FERPLUS))]).T
        head.w.assign((cent / np.linalg.norm(cent, axis=0, keepdims=True)).astype(np.float32))
        log.info(f"initialised from {args.init}")
    steps_per_epoch = len(tr) // args.batch
    total = steps_per_epoch * args.epochs
    sched = tf.keras.optimizers.schedules.CosineDecay(args.lr, decay_steps=total, warmup_target=None,
                                                      alpha=0.02)
    opt = tf.keras.optimizers.AdamW(learning_rate=sched, weight_decay=1e-4)
    variables = model.trainable_variables + [head.w]
    log.info(f"model params {model.count_params():,}; {steps_per_epoch} steps/epoch")

    @tf.function(reduce_retracing=True)
    def train_step(x, b, y_soft, y_hard):
        with tf.GradientTape() as tape:
            e = model([x, b], training=True)
            logits = head(e)
            kl = tf.reduce_mean(tf.reduce_sum(
                y_soft * (tf.math.log(y_soft + 1e-8) - tf.nn.log_softmax(logits)), axis=1))
            sc = M.supcon_loss(e, y_hard)
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
        crops, shapes = A.augment(fer["crop"][order], fer["shapes"][order], rng)
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
        log.info(json.dumps(rec))
        if sel > best_score:
            best_score, best = sel, [v.numpy() for v in model.weights]
            best_epoch = epoch + 1
        if args.minutes and (time.time() - t_start) / 60 * (epoch + 2) / (epoch + 1) > args.minutes:
            log.info(f"time budget reached after epoch {epoch + 1}")
            break
    for v, w in zip(model.weights, best):
        v.assign(w)
    model.save_weights(args.cache / f"expression-{args.version}.base.weights.h5")
    finish(model, args, fer, tr, val, mux, history, best_epoch, t_start, hard)


def finish(model, args, fer, tr, val, mux, history, best_epoch, t_start, hard):  # noqa: PLR0913
    """Choose the read-out on PublicTest, export the TFLite file, check it against Keras, write the summary.

    Read-outs tried: the embedding as trained; averaged with the mirrored face; and each of those projected
    toward the span of the eight expression centres (the class means of the Training embeddings): the part of
    the embedding orthogonal to every expression centre carries what is not expression (identity, pose,
    lighting), so it is shrunk by a factor lam (0 = dropped), then the vector is renormalised.
    """
    import hashlib
    import json

    import tensorflow as tf

    e_tr = embed_cached(model, A.center_crop(fer["crop"][tr]), fer["shapes"][tr])
    y_tr = hard[tr]
    means = np.stack([e_tr[y_tr == c].mean(0) for c in range(len(D.FERPLUS)) if (y_tr == c).sum() >= 20])
    basis, _ = np.linalg.qr(means.T)
    span = basis @ basis.T
    candidates = {}
    for flip in (False, True):
        base = M.with_flip_average(model) if flip else model
        for lam in (1.0, 0.5, 0.25, 0.0):
            m = base if lam == 1.0 else M.with_projection(base, span + lam * (np.eye(len(span)) - span))
            figs = val_figures(m, val, mux)
            key = f"flip={flip} lam={lam}"
            candidates[key] = (figs, m, flip, lam)
            log.info("read-out %s %s", key, json.dumps({k: round(v, 4) for k, v in figs.items() if v is not None}))
    key = max(candidates, key=lambda k: candidates[k][0]["pt_P@3"] + candidates[k][0]["pt_triplet"])
    final, model, use_flip, lam = candidates[key]
    log.info("chosen read-out %s", key)

    path = args.out_dir / f"expression-{args.version}.tflite"
    E.export_tflite(model, path)
    from ..embedders.learned import LearnedEmbedder

    lite = LearnedEmbedder(path).embed_inputs(val["crop48"][:64], val["shapes"][:64])
    diff = E.assert_parity(embed_cached(model, val["crop48"][:64], val["shapes"][:64]), lite)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    summary = {"model": path.name, "bytes": path.stat().st_size, "sha256": digest, "selected_epoch": best_epoch,
               "tflite_vs_keras_max_abs": diff, "val": final, "flip_average": bool(use_flip),
               "residual_shrink": lam, "readouts": {k: v[0] for k, v in candidates.items()},
               "history": history,
               "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "train_faces": int(len(tr)), "val_faces": int(len(val["label"])),
               "minutes": round((time.time() - t_start) / 60, 1), "tensorflow": tf.__version__}
    (args.cache / f"train-{args.version}.json").write_text(json.dumps(summary, indent=1))
    log.info(json.dumps({k: v for k, v in summary.items() if k not in ("history", "readouts")}, indent=1))
