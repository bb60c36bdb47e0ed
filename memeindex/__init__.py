"""memeindex: make a face, find the meme.

    >>> import memeindex
    >>> faces = memeindex.analyze("face.jpg")          # boxes, blendshapes, embeddings
    >>> memeindex.build("memes/", "indexes/default")   # incremental
    >>> memeindex.query("face.jpg", "indexes/default", k=3).matches
"""
__version__ = "0.1.0"

__all__ = ["analyze", "build", "query", "evaluate", "check", "Settings", "__version__"]


def __getattr__(name):
    # Lazy: `import memeindex` and `memeindex --help` must not load mediapipe, faiss or LiteRT.
    if name == "analyze":
        from .pipeline import analyze
        return analyze
    if name == "build":
        from .indexer import build
        return build
    if name == "query":
        from .search import query
        return query
    if name == "evaluate":
        from .evaluate import evaluate
        return evaluate
    if name == "check":
        from .generation import check
        return check
    if name == "Settings":
        from .settings import Settings
        return Settings
    raise AttributeError(name)
