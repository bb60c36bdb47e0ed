# memeindex: `make run` sets up and runs the main job, `make test` sets up and runs the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MEMEINDEX := $(VENV)/bin/memeindex
INDEX ?= indexes/default
# What `make run` indexes: IMAGES=DIR when given, else MEMES: shared (../shared/data/memes, the default beside it),
# imgflip (imgflip's popular templates, downloaded into indexes/imgflip-memes; the demo folder when offline) or demo
# (public-domain photos). Without ../shared the default asks whether to download imgflip's (scripts/meme_folder.py).
MEMES ?= $(if $(wildcard ../shared/data/memes),shared,ask)
IMAGES ?=
QUERY ?= $(shell $(PY) -c "import matplotlib, os; print(os.path.join(matplotlib.get_data_path(), 'sample_data', 'grace_hopper.jpg'))" 2>/dev/null)
TRAIN_VENV ?= .venv-train

.PHONY: help install models run build query test bench serve train clean
.DEFAULT_GOAL := help

help:  ## this list
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

# mediapipe (test extra) brings opencv-contrib-python beside our headless OpenCV: both own cv2/. Whichever went
# in last must still import; if not, one clean copy of the superset (contrib) is put back.
$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[server,test,ray]'
	$(PY) -c "import cv2, numpy; cv2.warpAffine(numpy.zeros((4, 4), numpy.uint8), numpy.eye(2, 3), (4, 4))" 2>/dev/null \
	  || $(PY) -m pip install --quiet --force-reinstall --no-deps opencv-contrib-python
	touch $@

install: $(VENV)/.installed  ## make the virtual environment and install memeindex into it

models: install  ## fetch the pinned face model into models/ (sha256-checked)
	$(MEMEINDEX) models fetch

indexes/demo-images: | install
	$(PY) scripts/demo_images.py $@

build: models  ## index IMAGES, else the MEMES folder (incremental)
	@images='$(IMAGES)'; [ -n "$$images" ] || images=$$($(PY) scripts/meme_folder.py $(MEMES)) || exit $$?; \
	echo "$(MEMEINDEX) build $$images --index $(INDEX)"; $(MEMEINDEX) build "$$images" --index $(INDEX)

query: models  ## search INDEX with the face in QUERY
	$(MEMEINDEX) query "$(QUERY)" --index $(INDEX)

run: build query  ## set up, index IMAGES, query with QUERY (a face photo)

test: models  ## set up and run the test suite
	$(PY) -m pytest

bench: models  ## benchmark builds and queries on the shared memes
	$(PY) scripts/bench_build.py
	$(PY) scripts/bench_query.py

serve: build  ## serve the live webcam page on http://127.0.0.1:8000/
	$(MEMEINDEX) serve --index $(INDEX)

train: models  ## train the learned expression model (TensorFlow, separate venv)
	test -x $(TRAIN_VENV)/bin/python || $(PYTHON) -m venv $(TRAIN_VENV)
	$(TRAIN_VENV)/bin/pip install --quiet -e '.[train]'
	$(TRAIN_VENV)/bin/python scripts/train_embedding.py

clean:  ## remove the virtual environments and built indexes (not the fetched models)
	rm -rf $(VENV) $(TRAIN_VENV) indexes/default indexes/demo-images
