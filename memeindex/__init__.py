"""memeindex: make a face, find the meme."""
__version__ = "0.1.0"
