"""Typed errors the library raises; the CLI turns each into one clean line and an exit code.

Each class owns its exit code, and no two kinds of failure share one (README lists them): 2 is also click's code
for a bad command line, so only errors in what the user typed use it."""
from __future__ import annotations


class MemeIndexError(Exception):
    """Base of every error memeindex raises on purpose. `exit_code` is what the CLI exits with."""

    exit_code = 1


class BadSetting(MemeIndexError):
    """A MEMEINDEX_* variable holds a value of the wrong kind."""

    exit_code = 2


class FileMissing(MemeIndexError):
    """The file to read (a query photo or video) does not exist, or is a folder."""

    exit_code = 7


class NotAnImage(MemeIndexError):
    """The file is not a decodable image (empty, truncated, text, unknown format) nor a readable video."""

    exit_code = 8


class ImageTooLarge(MemeIndexError):
    """The image has more pixels than the hard cap; decoding it would be a memory bomb."""

    exit_code = 9


class DatasetInvalid(MemeIndexError, ValueError):
    """A labelled dataset's index.csv is missing or malformed (`memeindex eval`)."""

    exit_code = 10


class NoFace(MemeIndexError):
    """The query image holds no face."""

    exit_code = 2


class ModelMissing(MemeIndexError):
    """A model file is not on disk; the message names the command that fetches it."""

    exit_code = 3


class ModelChecksumMismatch(MemeIndexError):
    """A model file's sha256 differs from the pinned one."""

    exit_code = 3


class FetchFailed(MemeIndexError):
    """Every route to fetch a model failed (offline, say)."""

    exit_code = 3


class IndexMissing(MemeIndexError):
    """No index at the given directory: build one first."""

    exit_code = 4


class IndexMismatch(MemeIndexError):
    """The index was built with another model or schema: rebuild it."""

    exit_code = 4


class IndexTypeUnsupported(IndexMismatch):
    """The index type is unknown to this reader (or the requested type is unknown): rebuild with a known one."""


class BuildLocked(MemeIndexError):
    """Another build holds the index lock."""

    exit_code = 5


class WorkerFailed(MemeIndexError):
    """The analysis workers cannot run at all (they die or hang while loading the models, Ray is missing)."""

    exit_code = 1


class IndexDamaged(MemeIndexError):
    """`memeindex check` found a generation damaged (missing or unreadable files, counts that disagree)."""

    exit_code = 11


class RootMissing(MemeIndexError):
    """The image root is missing, not a folder, or holds no image file; refusing to wipe the index."""

    exit_code = 6


class DownloadFailed(MemeIndexError):
    """`memeindex download` got nothing usable: the source answered something that is not its API, or every file
    failed."""

    exit_code = 12


class SourceUnreachable(DownloadFailed):
    """No connection to the source at all (offline, DNS failure, firewall): said within seconds, not per file."""

    exit_code = 13


class BadUrlList(MemeIndexError):
    """The URL list given to `memeindex download urls` holds no URL."""

    exit_code = 2


class SheetFormatUnknown(MemeIndexError, ValueError):
    """A contact sheet's out path has a suffix the sheet is not written as (sheet.SHEET_FORMATS)."""

    exit_code = 2


class CannotListen(MemeIndexError):
    """`memeindex serve` cannot listen on the host and port (in use, not an address of this machine, privileged)."""

    exit_code = 15


class IndexUnwritable(MemeIndexError):
    """A build cannot write its index folder (disk full, read-only, no permission); the last good index stays."""

    exit_code = 16


class ServiceBusy(MemeIndexError):
    """The search service already holds its bound of searches in flight; the client should retry shortly."""

    exit_code = 14  # the service answers it as HTTP 503; no CLI command raises it
    retry_after = 1  # seconds, sent as Retry-After with the HTTP 503
