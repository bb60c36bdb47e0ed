"""The `memeindex` command: each command is one library call; library errors become one clean line + exit code.

The library returns data: `--json` prints its `to_dict()`, and the text people read is made here (`format_*`).
"""
from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path

import click

from .backends import BACKENDS
from .errors import MemeIndexError
from .settings import Settings



class EnvOption(click.Option):
    """An option that may come from a MEMEINDEX_* variable: a bad value that came from the variable is refused
    naming the variable (click names the option, which the user never typed: `MEMEINDEX_WORKERS=0` read as
    "Invalid value for '--workers'")."""

    def get_error_hint(self, ctx) -> str:
        if (ctx is not None and isinstance(self.envvar, str)
                and ctx.get_parameter_source(self.name) is click.core.ParameterSource.ENVIRONMENT):
            return self.envvar
        return super().get_error_hint(ctx)


INDEX = click.option("--index", "index_dir", type=click.Path(path_type=Path), envvar="MEMEINDEX_INDEX",
                     cls=EnvOption,
                     callback=lambda ctx, param, value: value or Settings.from_env().index_dir,
                     help="Index folder (default: $MEMEINDEX_INDEX, else ~/.local/share/memeindex/default, the "
                          "same from any folder).")
JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


class PositiveSeconds(click.FloatRange):
    """A number of seconds above 0 that is a number: FloatRange lets nan through (every comparison with it is
    false) and inf too, which a network attempt cannot wait."""

    def __init__(self):
        super().__init__(min=0, min_open=True)

    def convert(self, value, param, ctx):
        seconds = super().convert(value, param, ctx)
        if not math.isfinite(seconds):
            self.fail(f"{value!r} is not a finite number of seconds.", param, ctx)
        return seconds


class _TqdmHandler(logging.Handler):
    """Log lines on stderr that do not tear the progress bar."""

    def emit(self, record):
        from tqdm import tqdm

        text = self.format(record)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a path not UTF-8 in a line that did not show it through shown_path
            from .generation import shown_path

            text = "\n".join(shown_path(line) for line in text.split("\n"))
        tqdm.write(text, file=sys.stderr)


def _setup_logging(verbose: int) -> None:
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter("%(message)s" if verbose == 0 else "%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)], handlers=[handler],
                        force=True)
    if verbose < 2:
        logging.getLogger("faiss").setLevel(logging.WARNING)


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except MemeIndexError as exc:
            from .generation import shown_path

            # a path in the message (an index folder, a query file) shows as every path shown does: a name that is
            # not UTF-8 with \xNN, a control character escaped, so the error stays one line
            click.echo(f"memeindex: error: {shown_path(str(exc))}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("memeindex: interrupted", err=True)
            sys.exit(130)


@click.group(cls=_Group)
@click.option("-v", "--verbose", count=True, help="More log lines (-vv for debug).")
@click.version_option(package_name="memeindex")
def main(verbose: int) -> None:
    """Make a face, find the meme: index the faces of a meme folder by expression, then search it."""
    _setup_logging(verbose)


def _check_index_type(ctx, param, value):
    """A typo in --index-type is a usage error (exit 2), found before the build starts."""
    if value is None:
        return None
    from .vectors import INDEX_TYPES  # only when the option is given: --help stays free of numpy

    if value not in ("auto", *INDEX_TYPES):
        raise click.BadParameter(f"{value!r} is not one of auto, {', '.join(INDEX_TYPES)}")
    return value


@main.command()
@click.argument("images_dir", type=click.Path(path_type=Path))
@INDEX
@click.option("--rebuild", is_flag=True, help="Re-analyze every file (after a model change).")
@click.option("--retry-failed", is_flag=True,
              help="Analyse every file that failed again (e.g. after installing a HEIC decoder). Without it only "
              "files the run made fail (time limit, a worker that died) are retried.")
@click.option("--workers", type=click.IntRange(min=1), envvar="MEMEINDEX_WORKERS", cls=EnvOption,
              help="Worker processes (default: all cores).")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal).")
@click.option("--backend", type=click.Choice(BACKENDS), envvar="MEMEINDEX_BACKEND", cls=EnvOption,
              help="Where files are analysed: local processes (default), this process (inprocess: no per-file "
              "time limit, a file that hangs the decoder hangs the build), or Ray.")
@click.option("--file-timeout", type=click.FloatRange(min=0), envvar="MEMEINDEX_FILE_TIMEOUT", cls=EnvOption,
              metavar="SECONDS",
              help=f"Seconds one file may take before its worker is killed and the file fails (default "
              f"{Settings.file_timeout:g}; 0: no limit; the pool and ray backends).")
@click.option("--ray-address", envvar="MEMEINDEX_RAY_ADDRESS", cls=EnvOption,
              help="Ray cluster to join with --backend ray (e.g. ray://head:10001, or auto); default: a local Ray.")
@click.option("--index-type", envvar="MEMEINDEX_INDEX_TYPE", cls=EnvOption, metavar="TYPE",
              callback=_check_index_type,
              help="FAISS index: auto (default: exact for small collections, ivfsq above), flat (exact), hnsw, "
              "ivfsq or ivfpq (approximate). Recorded in index.json with the recall@3 measured at build time.")
@click.option("--fast", is_flag=True,
              help="Detect faces in the full frame only, as the plain Face Landmarker does (~1.7x faster, ~28% fewer "
              "faces: no small, close-up, turned or cartoon rescue rounds). A later build without it re-analyses "
              "the files this one found no face in.")
@JSON
def build(images_dir, index_dir, rebuild, retry_failed, workers, progress, backend, file_timeout, ray_address,
          index_type, fast, as_json):
    """Index the faces of every image under IMAGES_DIR (incremental)."""
    from .indexer import build as run_build

    progress = sys.stderr.isatty() if progress is None else progress
    settings = Settings.from_env(file_timeout=file_timeout, **({"second_pass": False} if fast else {}))
    summary = run_build(images_dir, index_dir, settings, rebuild=rebuild, workers=workers,
                        progress=progress, backend=backend, ray_address=ray_address, index_type=index_type,
                        retry_failed=retry_failed)
    click.echo(json.dumps(summary.to_dict()) if as_json else format_build(summary))


@main.command()
@click.argument("image", type=click.Path(path_type=Path))
@click.option("-k", type=click.IntRange(1, 100), default=3, show_default=True, help="Memes to return.")
@click.option("--face", type=click.IntRange(min=1), default=None,
              help="Which query face, counted from 1 as the output counts them (default: the largest, 1).")
@click.option("--sheet", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write a contact sheet of a photo query (.png, .jpg or .webp); says where on stderr.")
@INDEX
@JSON
def query(image, k, face, sheet, index_dir, as_json):
    """The memes whose faces make the expression of the face in IMAGE (a photo or a video)."""
    from .quiet import native_stderr_filtered
    from .formats import is_video

    settings = Settings.from_env()
    if is_video(image):
        from .video import query_video

        if sheet:  # refuse before the work, not silently after it
            raise click.BadOptionUsage("sheet", "--sheet draws photo queries only, not videos (use --json for the "
                                                "boxes and matches of each segment)")
        if face is not None:  # it was ignored: the user would think the second person was searched
            raise click.BadOptionUsage("face", "--face picks a face of a photo; a video query follows its main face "
                                               "(the largest, then the one nearest to where it was)")
        with native_stderr_filtered():
            segments = query_video(image, index_dir, k=k, settings=settings)
        click.echo(json.dumps([s.to_dict() for s in segments], indent=2) if as_json else format_video(segments))
        return
    from .errors import ImageTooLarge, NoFace, NotAnImage
    from .generation import shown_path
    from .search import Searcher

    if sheet:
        from .errors import SheetFormatUnknown
        from .sheet import sheet_format

        try:
            sheet_format(sheet)  # refuse before the work, not after it
        except SheetFormatUnknown as exc:
            raise click.BadParameter(str(exc), param_hint="'--sheet'") from None
    with native_stderr_filtered():
        searcher = Searcher(index_dir, settings)
        try:
            try:
                result = searcher.search(image, k=k, face=None if face is None else face - 1)
            except (NotAnImage, ImageTooLarge, NoFace) as exc:  # the library's reason, without the file's name
                raise type(exc)(f"{shown_path(str(image))}: {exc}") from None
            if sheet:
                from .sheet import write_sheet

                try:
                    written = write_sheet(result, image, searcher, sheet)
                except OSError as exc:
                    raise click.FileError(shown_path(str(sheet)), hint=exc.strerror or str(exc)) from None
        finally:
            searcher.close()
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else format_query(result))
    if sheet:
        click.echo(f"contact sheet: {shown_path(str(written))}", err=True)


@main.command()
@INDEX
@JSON
def info(index_dir, as_json):
    """What an index holds."""
    from .status import index_info

    facts = index_info(index_dir)
    if as_json:
        click.echo(json.dumps(facts, indent=2))
    else:
        for key, value in facts.items():
            click.echo(f"{key:>14}: {value}")


@main.command()
@INDEX
@JSON
def check(index_dir, as_json):
    """Verify an index (files, row counts, images vs faces, vectors, facts vs model); exits non-zero on damage."""
    from .embedders import get_embedder
    from .errors import IndexDamaged
    from .faces import detector_id
    from .generation import check as check_index

    settings = Settings.from_env()
    embedder = get_embedder(settings)
    report = check_index(index_dir, embedder.model_id, embedder.dim, detector_id(settings), embedder.model_sha256)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(f"{report.index} ({report.generation}): images={report.images} faces={report.faces} "
                   f"vectors={report.vectors} model={report.model_id} detector={report.detector} "
                   f"failed-to-retry={report.to_retry}")
        for note in report.notes:
            click.echo(f"note: {note}")
        for problem in report.problems:
            click.echo(f"damaged: {problem}", err=True)
        click.echo("ok" if report.ok else f"DAMAGED: {len(report.problems)} problem(s)")
    if not report.ok:
        sys.exit(IndexDamaged.exit_code)


@main.group()
def models():
    """Model files: fetch and check them."""


@models.command("fetch")
@click.option("--models-dir", type=click.Path(path_type=Path), envvar="MEMEINDEX_MODELS", cls=EnvOption,
              help="Where models live (default: models/ of the checkout).")
@click.option("--timeout", type=PositiveSeconds(), default=20.0, show_default=True,
              help="Seconds per network attempt.")
@JSON
def models_fetch(models_dir, timeout, as_json):
    """Fetch every pinned model, verifying its sha256."""
    from .generation import shown_path
    from .models import REGISTRY, fetch_all

    fetched = fetch_all(models_dir or Settings.from_env().models_dir, timeout=timeout)
    if as_json:
        click.echo(json.dumps([{"name": name, "path": str(path), "sha256": REGISTRY[name].sha256}
                               for name, path in fetched.items()], indent=2))
        return
    for path in fetched.values():
        click.echo(f"ok {shown_path(str(path))}")


def _check_embedders(ctx, param, value):
    """An unknown --embedder is a usage error (exit 2) naming the valid choices, found before the dataset is read."""
    if not value:
        return value
    from .embedders.registry import names  # only when the option is given: --help stays free of the models

    unknown = [v for v in value if v not in names()]
    if unknown:
        raise click.BadParameter(f"{unknown[0]!r} is not one of {', '.join(names())}")
    return value


@main.command("eval")
@click.argument("dataset_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--embedder", "embedders", multiple=True, callback=_check_embedders, metavar="NAME",
              help="Model to score (repeatable; default: baseline + learned).")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal).")
@JSON
def evaluate_cmd(dataset_dir, embedders, progress, as_json):
    """Score expression embedders on a labelled set (DATASET_DIR/index.csv)."""
    from .evaluate import evaluate
    from .quiet import native_stderr_filtered

    progress = sys.stderr.isatty() if progress is None else progress
    with native_stderr_filtered() as live_stderr:
        result = evaluate(dataset_dir, models=list(embedders) or None, progress=progress and live_stderr)
    click.echo(json.dumps(result, indent=2) if as_json else format_eval(result))


@main.group()
def download():
    """Get memes to index: imgflip's popular templates, or any list of image URLs."""


def _download_options(command):
    command = click.option("--allow-private", metavar="NETWORKS", default=None,
                           help="Also fetch from these private/loopback networks (comma-separated CIDR); "
                                "refused by default.")(command)
    command = click.option("--progress/--no-progress", default=None,
                           help="Progress bar (default: when stderr is a terminal).")(command)
    return JSON(command)


def _download_report(summary, as_json: bool) -> None:
    from .errors import DownloadFailed
    from .generation import shown_path

    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=2))
    else:
        click.echo(f"memeindex download: downloaded={summary.downloaded} skipped={summary.skipped} "
                   f"failed={summary.failed} in {summary.seconds:.1f}s -> {shown_path(str(summary.dest))}")
    if summary.failed and not (summary.downloaded or summary.skipped):
        click.echo(f"memeindex: error: nothing usable arrived: all {summary.failed} files failed", err=True)
        sys.exit(DownloadFailed.exit_code)  # nothing to index: a script must not go on to build


@download.command("imgflip")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option("--limit", type=click.IntRange(min=1), help="Only the N most popular templates.")
@_download_options
def download_imgflip(dest, limit, allow_private, progress, as_json):
    """Fetch imgflip's popular meme templates into DEST as <rank>-<name>.<ext>, listed in DEST/index.tsv."""
    from .download import download_imgflip as run_download

    settings = Settings.from_env(download_allow_private=allow_private)
    progress = sys.stderr.isatty() if progress is None else progress
    _download_report(run_download(dest, settings, limit=limit, progress=progress), as_json)


@download.command("urls")
@click.argument("url_list", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@_download_options
def download_urls(url_list, dest, allow_private, progress, as_json):
    """Fetch every image URL in URL_LIST (one a line, an optional name after a space or tab) into DEST."""
    from .download import download_urls as run_download

    settings = Settings.from_env(download_allow_private=allow_private)
    progress = sys.stderr.isatty() if progress is None else progress
    _download_report(run_download(url_list, dest, settings, progress=progress), as_json)


@main.command()
@INDEX
@click.option("--host", default="127.0.0.1", show_default=True, envvar="MEMEINDEX_HOST", cls=EnvOption)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, envvar="MEMEINDEX_PORT",
              cls=EnvOption)
def serve(index_dir, host, port):
    """Serve the search API and the live webcam page."""
    from .server import serve as run_server

    run_server(index_dir, host, port, Settings.from_env())


# -- text for people: the library returns data (its to_dict() is the --json format); the words live here (the
# contact sheet, a picture for people, takes its words from here too) ---------------------------------------------
def format_build(summary) -> str:
    """One line: what an `indexer.BuildSummary` counted, then the model and detector, then the time."""
    return ("memeindex build: indexed={indexed} unchanged={unchanged} reused={reused} removed={removed} "
            "redetected={redetected} retried={retried} skipped={skipped} ignored={ignored} noface={noface} "
            "failed={failed} (new {failed_now}) images={images} faces={faces} model={model_id} detector={detector} "
            "in {seconds:.1f}s").format(**summary.to_dict())


NO_FACES = "    (the index holds no faces)"  # a query's table when no file has one (photo and video alike)
VARIANTS_SHOWN = 3  # a template of many files would run its "also:" line off the screen; --json lists more


def _some(names: list[str], shown: int, total: int) -> str:
    """The first `shown` of `total` names (`names` may list fewer than `total`), then how many more:
    "a.jpg, b.jpg, c.jpg and 7 more"."""
    if total <= shown:
        return ", ".join(names[:shown])
    return f"{', '.join(names[:shown])} and {total - shown} more"


def format_traits(traits) -> str:
    """The traits both faces share (`traits.Trait`s), for people: "smiling 0.8, jaw open 0.5"."""
    return ", ".join(f"{t.name} {t.strength:.1f}" for t in traits)


def format_variant_count(count: int) -> str:
    """How many other files of a meme's template there are: "+1 variant", "+7 variants"."""
    return f"+{count} variant{'s' if count > 1 else ''}"


def format_match(match, rank: int) -> str:
    """One row of a result table (a `search.Match`): rank, score, distance, path, shared traits, variants, a weak
    label."""
    from .generation import shown_path

    shared = f"  [{format_traits(match.traits)}]" if match.traits else ""
    variants = f"  {format_variant_count(match.variants_total)}" if match.variants_total else ""
    weak = "  (weak match)" if match.weak else ""
    return (f"{rank:>2}  {match.score * 100:4.0f}%  {match.distance:5.3f}  {shown_path(match.path)}{shared}{variants}"
            f"{weak}")


def _match_lines(match, rank: int) -> list[str]:
    """A match's row, then the first of its template's other files (photo and video tables alike)."""
    from .generation import shown_path

    lines = [format_match(match, rank)]
    if match.variants:
        shown = [shown_path(v.path) for v in match.variants]
        lines.append(f"{'':>21}also: {_some(shown, VARIANTS_SHOWN, match.variants_total)}")
    return lines


def format_query(result) -> str:
    """A photo query (a `search.QueryResult`): which face was asked, then one row per match and its variants."""
    f = result.query_face
    lines = [f"query face {result.face_index + 1} of {len(result.faces)} at "
             f"({f.box[0]:.0f},{f.box[1]:.0f})-({f.box[2]:.0f},{f.box[3]:.0f}), model {result.model_id}",
             f"{'#':>2}  {'score':>5}  {'dist':>5}  meme  [traits both faces show, 0-1]"]
    for rank, m in enumerate(result.matches, 1):
        lines += _match_lines(m, rank)
    if not result.matches:
        lines.append(NO_FACES)
    if not result.calibrated:
        lines.append(f"(no calibration for {result.model_id}: scores are 1 - distance/sqrt(2), not probabilities)")
    return "\n".join(lines)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(max(0.0, seconds), 60)
    return f"{int(minutes)}:{secs:04.1f}"


def format_video(segments) -> str:
    """A video query (`video.Segment`s): each segment's span, then its matches as rows of the result table."""
    lines = []
    for n, seg in enumerate(segments, 1):
        lines.append(f"segment {n}  {_clock(seg.start)}-{_clock(seg.end)}  ({seg.frames} frame(s) with the face)")
        lines += [f"  {line}" for rank, m in enumerate(seg.matches, 1) for line in _match_lines(m, rank)]
        if not seg.matches:
            lines.append(f"  {NO_FACES}")
    return "\n".join(lines)


def _three_decimals(value: float) -> str:
    """A figure of the eval table: a distance of -1e-7 (float noise) reads 0.000, not -0.000."""
    return f"{round(value, 3) + 0.0:.3f}"  # -0.0 + 0.0 is 0.0


def format_eval(result: dict) -> str:
    """The figures of `evaluate.evaluate` as a table, one column per model."""
    models = list(result["models"])
    images = f"image{'' if result['images'] == 1 else 's'}"
    rows = [("faces found", lambda m: f"{m['faces']} in {m['images']}/{result['images']} {images}")]

    def num(key):
        return lambda m: "-" if m.get(key) is None else _three_decimals(m[key])

    rows += [("P@1 (cross-identity)", num("P@1")), ("P@3 (cross-identity)", num("P@3")),
             ("mAP (cross-identity)", num("mAP"))]
    if any(m.get("triplet") is not None for m in result["models"].values()):
        rows.append(("triplet (raters, chance 0.333)",
                     lambda m: "-" if m.get("triplet") is None
                     else f"{_three_decimals(m['triplet'])} of {m['triplets']}"))
    if any("identity" in m for m in result["models"].values()):
        rows.append(("identity-blind (1 = ideal)", num("identity")))
        rows.append(("  d same expr / other person", num("d_same_expr_other_person")))
        rows.append(("  d other expr / same person", num("d_other_expr_same_person")))
    cells = [[name] + [fn(result["models"][m]) for m in models] for name, fn in rows]
    header = ["", *models]
    widths = [max(len(str(r[c])) for r in [header, *cells]) for c in range(len(header))]
    lines = [f"{result['dataset']}: {result['images']} {images}"]
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    for r in cells:
        lines.append("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    main()
