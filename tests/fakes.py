"""Fakes shared by the unit tests of the store (generation.py) and the Searcher: never for the pipeline's tests."""
from __future__ import annotations

from pathlib import Path

FAKE_MODEL_ID = "fake-v1"


def write_fake_generation(index_dir: Path, images: list, faces: list, dim: int = 8, root: str = "/r",
                          **facts) -> Path:
    """Publish one generation of these ImageRows and FaceRows at `index_dir` as a build would, with no model: an
    exact (flat) FAISS index over the faces' embeddings, model_id FAKE_MODEL_ID. Returns the generation's folder."""
    from memeindex import generation, vectors

    faces_t = generation.sort_faces(generation.faces_table(faces, dim))
    built = vectors.build_index(generation.embeddings(faces_t), dim, "flat")
    images_t = generation.sort_images(generation.images_table(images))
    return generation.write_generation(generation.IndexDir(index_dir), faces_t, images_t, built.index,
                                       model_id=FAKE_MODEL_ID, dim=dim, root=root, **{**built.facts, **facts})
