"""Keep MediaPipe's native log lines out of the CLI's stderr while keeping everything else.

Its C++ code writes to file descriptor 2 directly and no environment variable silences it, so fd 2 is pointed
at a temp file for the duration and only the lines that are not native logs are replayed afterwards.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
from contextlib import contextmanager

# MediaPipe/LiteRT/absl log lines, and FFmpeg's (OpenCV's video reader): "[mov,mp4,m4a,... @ 0x55...] moov atom
# not found" for a broken clip, which the one error line already says.
NATIVE_LOG = re.compile(r"^(\[[\w,.-]+ @ 0x[0-9a-f]+\] |[IWEF]\d{4} |INFO: Created TensorFlow|"
                        r"WARNING: All log messages before|WARNING: Logging before InitGoogle|Failed to get)")


@contextmanager
def native_stderr_filtered():
    """Yields a text stream on the real stderr, for what must show live (a progress bar)."""
    sys.stderr.flush()
    saved = os.dup(2)
    live = os.fdopen(os.dup(saved), "w", buffering=1, encoding="utf-8", errors="replace")
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield live
        finally:
            live.close()
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode("utf-8", "replace").splitlines():
                if line.strip() and not NATIVE_LOG.match(line):
                    print(line, file=sys.stderr)
