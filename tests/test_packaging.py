"""What a user gets from `pip install memeindex`: the wheel carries the learned model and the page, declares
exactly what the package imports, and works from a fresh venv with no checkout in sight."""
from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "memeindex"
# import name -> distribution, for the third-party modules the package imports
DISTRIBUTIONS = {"numpy": "numpy", "cv2": "opencv-python-headless", "PIL": "pillow", "pillow_heif": "pillow-heif",
                 "tqdm": "tqdm", "pyarrow": "pyarrow", "faiss": "faiss-cpu", "ai_edge_litert": "ai-edge-litert",
                 "click": "click"}
OPTIONAL = {"fastapi", "uvicorn", "starlette", "pydantic", "multipart", "python_multipart", "ray", "tensorflow"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("setuptools", minversion="70.1")  # bdist_wheel built in: no network, no build isolation
    src = tmp_path_factory.mktemp("src")
    tree = src / "memeindex-src"
    shutil.copytree(REPO, tree, ignore=shutil.ignore_patterns(".venv*", ".git", "indexes", "test-artifacts", "build",
                                                               "*.egg-info", "__pycache__", "*.task", ".pytest_cache"))
    out = src / "dist"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(tree), "--no-deps", "--no-build-isolation",
                           "--no-index", "-w", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "BuildBackendWarning" not in proc.stderr + proc.stdout  # undeclared data packages & co
    return next(out.glob("memeindex-*.whl"))


def test_wheel_holds_the_learned_model_the_page_and_every_data_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert any(n.startswith("memeindex/embedders/weights/") and n.endswith(".tflite") for n in names)
    assert {"memeindex/server/static/index.html", "memeindex/server/static/app.js"} <= names
    # Every file of the package that is not Python source ships: a data file added later cannot be forgotten.
    data = {p.relative_to(REPO).as_posix() for p in PACKAGE.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".py", ".pyc")}
    assert data and data <= names, sorted(data - names)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_runtime_dependencies_are_exactly_what_the_package_imports(wheel):
    imported = set().union(*(_imports(p) for p in PACKAGE.rglob("*.py")))
    third_party = {m for m in imported - set(sys.stdlib_module_names) - {"memeindex"} - OPTIONAL}
    assert third_party <= set(DISTRIBUTIONS), f"undeclared in this test's map: {third_party - set(DISTRIBUTIONS)}"
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    requires = [line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    runtime = {r.split(";")[0].split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip().lower()
               for r in requires if "extra ==" not in r}
    assert runtime == {DISTRIBUTIONS[m].lower() for m in third_party}
    assert "mediapipe" not in runtime  # only tests and benchmarks import it
    assert any(r.startswith("mediapipe") and 'extra == "test"' in r for r in requires)


def test_both_opencv_packages_in_one_venv_still_give_a_working_cv2():
    cv2 = pytest.importorskip("cv2")
    import numpy as np

    img = np.arange(64 * 48 * 3, dtype=np.uint8).reshape(48, 64, 3)
    assert cv2.resize(img, (32, 24), interpolation=cv2.INTER_AREA).shape == (24, 32, 3)
    assert cv2.warpAffine(img, np.float32([[1, 0, 2], [0, 1, 3]]), (64, 48)).shape == (48, 64, 3)
    assert cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).shape == (48, 64)
    assert callable(cv2.VideoCapture) and callable(cv2.pyrDown)


def test_fresh_venv_without_a_checkout_runs_help_and_an_analysis(wheel, tmp_path, grace_path):
    venv = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index",
                           "--quiet", str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    # The dependencies come from this venv's site-packages (a plain path: its .pth files, among them the editable
    # memeindex of this checkout, are not run), so nothing is downloaded.
    site = Path(subprocess.check_output([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        text=True).strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    home = tmp_path / "home"
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(home), "LC_ALL": "C.UTF-8",
           "MEMEINDEX_MODELS": str(REPO / "models")}  # the fetched third-party face model; the learned one ships

    def memeindex(*args, cwd=tmp_path):
        return subprocess.run([str(venv / "bin" / "memeindex"), *map(str, args)], capture_output=True, text=True,
                              timeout=180, env=env, cwd=cwd)
    where = subprocess.run([str(py), "-c", "import memeindex; print(memeindex.__file__)"], capture_output=True,
                           text=True, env=env, cwd=tmp_path)
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr  # not this checkout
    helped = memeindex("--help")
    assert helped.returncode == 0 and "build" in helped.stdout and "query" in helped.stdout
    if not (REPO / "models" / "face_landmarker.task").exists():
        pytest.skip("the face model is not fetched (make models)")
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(grace_path, photos / "grace.jpg")
    built = memeindex("build", photos, "--no-progress", "--workers", "1")  # default --index: the user's data dir
    assert built.returncode == 0, built.stderr
    assert (home / ".local" / "share" / "memeindex" / "default").is_dir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    found = memeindex("query", grace_path, "--json", cwd=elsewhere)  # from another folder: same index
    assert found.returncode == 0, found.stderr
    result = json.loads(found.stdout)
    assert result["model_id"].startswith("expression-")  # the learned model from the wheel, not the baseline
    assert result["matches"][0]["path"] == "grace.jpg"


def test_default_index_is_a_per_user_folder_not_the_current_one(monkeypatch, tmp_path):
    from memeindex.settings import Settings

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    assert Settings.from_env().index_dir == tmp_path / ".local" / "share" / "memeindex" / "default"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert Settings.from_env().index_dir == tmp_path / "data" / "memeindex" / "default"
    monkeypatch.setenv("MEMEINDEX_INDEX", str(tmp_path / "mine"))
    assert Settings.from_env().index_dir == tmp_path / "mine"
    assert Settings.from_env().index_dir.is_absolute()


def test_a_clone_has_an_indexes_folder():
    assert (REPO / "indexes" / "README.md").is_file()
