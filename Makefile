# edgecam: train on a laptop, convert with proven parity, run offline on a Pi.
# Every target depends on `setup`, so a fresh clone needs nothing but `make demo` or `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
NAME ?= rps
DATA ?= data/rps
BUNDLE ?= artifacts/$(NAME)
EPOCHS ?= 15
CALIBRATION ?= calibration_data/rps
PORT ?= 8080
SOURCE ?= images:$(DATA)/test
FORCE ?= 0
CONVERT_FLAGS ?=
IMX500 ?= 0
STAMP := $(VENV)/.edgecam-installed

ifeq ($(strip $(NAME)),)
$(error NAME must not be empty: make demo NAME=rps)
endif
ifeq ($(filter 0 1,$(IMX500)),)
$(error IMX500 must be 0 or 1 (IMX500=1 also converts for the Raspberry Pi AI Camera), got '$(IMX500)')
endif
ifeq ($(filter 0 1,$(FORCE)),)
$(error FORCE must be 0 or 1 (FORCE=1 ships a bundle whose parity failed or was skipped), got '$(FORCE)')
endif

.PHONY: help setup system-deps data train convert edgetpu-check run demo kiosk test test-fast bench compat bundle deploy pi-sim lint clean

help: ## List every target
	@echo "edgecam make targets (variables: NAME=$(NAME) DATA=$(DATA) BUNDLE=$(BUNDLE) EPOCHS=$(EPOCHS) PORT=$(PORT))"
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'

setup: $(STAMP) ## Create .venv and install host, device and dev dependencies from pyproject.toml

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[host,device,dev]'
	@touch $(STAMP)

system-deps: ## Install Debian packages the tests use (chromium, openssh, qemu-user-static, debootstrap, systemd-container, mmdebstrap); root/sudo
	@bash scripts/system-deps.sh

data: setup ## Generate the built-in rock-paper-scissors images (seeded) and calibration_data/
	$(PY) -m train.datagen --out $(DATA) --calibration-out $(CALIBRATION)

train: setup ## Train the reference CNN on DATA and export the bundle to BUNDLE
	$(PY) -m train --data $(DATA) --out $(BUNDLE) --epochs $(EPOCHS) --overwrite

# Calibration follows the data: calibration_data/rps belongs to the built-in images, so only the demo's bundle
# (artifacts/rps trained on data/rps) uses it; any other bundle calibrates on its own training images
# (convert's default, from its manifest), or on CALIBRATION=DIR when you name one.
CONVERT_CALIBRATION = $(if $(filter command line environment,$(origin CALIBRATION)),$(CALIBRATION),$(if $(and $(filter artifacts/rps,$(BUNDLE)),$(filter data/rps,$(DATA))),$(wildcard $(CALIBRATION))))

convert: setup $(if $(filter 1,$(IMX500)),imx500-toolchain) ## Convert BUNDLE to TFLite (float32/float16/dynamic/int8; IMX500=1: also the AI Camera) and check accuracy parity (exit 1 if broken; BUNDLE unchanged then)
	$(PY) -m convert $(BUNDLE) $(if $(CONVERT_CALIBRATION),--calibration $(CONVERT_CALIBRATION)) $(if $(filter 1,$(IMX500)),--imx500) $(CONVERT_FLAGS)

.PHONY: imx500-toolchain
imx500-toolchain: ## Build Sony's AI Camera toolchain (edge-mdt[tf]: MCT + imxconv-tf, TF 2.15) in a venv under ~/.cache/edgecam, once; Java 17 from apt when root
	@bash scripts/imx500_toolchain.sh >/dev/null

edgetpu-check: setup ## Offline Edge TPU readiness of BUNDLE's int8 model (no compiler needed)
	$(PY) -m convert.readiness $(BUNDLE)/tflite/model_int8.tflite

run: setup ## Run the daemon on BUNDLE's held-out images (int8 model), results on stdout
	$(PY) -m device --bundle $(BUNDLE) --source images:$(DATA)/test --once --http 127.0.0.1:$(PORT)

demo: setup ## Generate data, train, convert, run the daemon on held-out frames; in a terminal, then serve the kiosk (DEMO_KIOSK=0: skip)
	@bash scripts/demo.sh

kiosk: setup ## Serve the kiosk page (live view + rock-paper-scissors game) on http://127.0.0.1:PORT/ (SOURCE=opencv:0 for a webcam)
	@echo "kiosk: open http://127.0.0.1:$(PORT)/ (Play or Space starts a round; Ctrl+C stops)"
	$(PY) -m device --bundle $(BUNDLE) --source $(SOURCE) --max-fps 10 --http 127.0.0.1:$(PORT)

test: setup system-deps imx500-toolchain ## Run the whole test suite
	$(PY) -m pytest -q

bench: setup ## Measure daemon vs raw interpreter latency, RSS, cold start and the cost per architecture on BUNDLE (writes BUNDLE/bench.md)
	$(PY) -m bench --bundle $(BUNDLE) --cost

compat: setup ## Run the daemon under tflite-runtime 2.14 + numpy<2 (as on Raspberry Pi OS) in .venv-tflite
	bash scripts/tflite_runtime_compat.sh $(BUNDLE) $(DATA)/test

bundle: setup ## Write dist/edgecam-device-NAME.tar.gz (device package + models + installer); refuses failed/skipped parity unless FORCE=1
	$(PY) -m deploy.bundle --bundle $(BUNDLE) --out dist/edgecam-device-$(NAME).tar.gz $(if $(filter 1,$(FORCE)),--force) $(BUNDLE_FLAGS)

deploy: bundle ## Copy the device bundle to HOST=user@host over ssh and run its installer (EDGECAM_SSH_OPTS="-p PORT -i KEY")
	@test -n "$(HOST)" || { echo "make deploy needs HOST=user@host (the Pi), e.g. make deploy HOST=pi@raspberrypi.local"; exit 2; }
	bash deploy/deploy.sh "$(HOST)" dist/edgecam-device-$(NAME).tar.gz

pi-sim: bundle ## Run the device bundle in an emulated arm64 Pi OS userland, PI_RELEASE=trixie (or bookworm) (qemu-user; labels must equal x86)
	$(if $(filter trixie bookworm,$(PI_RELEASE)),,$(error PI_RELEASE must be trixie (Raspberry Pi OS today) or bookworm, got '$(PI_RELEASE)'))
	bash deploy/pi_sim.sh dist/edgecam-device-$(NAME).tar.gz --release $(PI_RELEASE)

lint: setup ## ruff over the code
	$(PY) -m ruff check train convert device bench deploy tests

clean: ## Remove generated data, artifacts and dist (keeps .venv)
	rm -rf data artifacts dist build .pytest_cache

# ---- soak (issue 13): the daemon under replayed frames and HTTP clients for MINUTES ------------------
MINUTES ?= 2
.PHONY: soak
soak: setup ## Soak the daemon MINUTES (default 2) on DATA/test with HTTP clients; RSS, fds, threads, errors before/after
	$(if $(shell echo '$(MINUTES)' | grep -Ex '[0-9]+([.][0-9]+)?'),,$(error MINUTES must be a number of minutes, e.g. make soak MINUTES=10))
	$(PY) -m bench.soak --bundle $(BUNDLE) --images $(DATA)/test --minutes $(MINUTES)

# ---- Fleets and offline installs (deploy/ansible/rollout.yml, deploy/fleet.py, deploy/wheelhouse.py) ----
INVENTORY ?=
SERIAL ?= 1
MAX_FAIL ?= 0
WHEELS ?=
WHEELHOUSE ?= dist/wheelhouse
PI_RELEASE ?= trixie
PI_PYTHON ?= $(if $(filter bookworm,$(PI_RELEASE)),3.11,3.13)
ifneq ($(strip $(WHEELS)),)
# make bundle|deploy|fleet|pi-sim WHEELS=1: the archive carries the Pi's wheels and installs offline
bundle: wheelhouse
BUNDLE_FLAGS += --wheelhouse $(WHEELHOUSE)
endif

ifneq ($(filter fleet,$(MAKECMDGOALS)),)
ifeq ($(strip $(INVENTORY)),)
$(error make fleet needs INVENTORY=hosts.ini, an Ansible inventory of the Pis (docs/fleets.md))
endif
endif

.PHONY: fleet wheelhouse
fleet: bundle ## Roll the archive out to INVENTORY=hosts.ini with Ansible in batches (SERIAL=1 MAX_FAIL=0 %), roll back failed hosts, print the report
	$(PY) -m deploy.fleet --inventory $(INVENTORY) --archive dist/edgecam-device-$(NAME).tar.gz --serial $(SERIAL) --max-fail-percentage $(MAX_FAIL)

wheelhouse: setup ## Download the Pi's wheels (aarch64, armv7l where PyPI has them) for PI_RELEASE=trixie (Python 3.13; bookworm: 3.11) to WHEELHOUSE; make bundle WHEELS=1 ships them
	$(if $(filter 3.11 3.13,$(PI_PYTHON)),,$(error PI_PYTHON must be 3.13 (Raspberry Pi OS trixie) or 3.11 (bookworm), got '$(PI_PYTHON)'))
	$(PY) -m deploy.wheelhouse --out $(WHEELHOUSE) --python-version $(PI_PYTHON)

# ---- teach it your camera (device/teach/) ----------------------------------------------------------------
.PHONY: evaluate teach-demo
evaluate: setup ## Score BUNDLE (with its current head) on DATA=DIR of class folders: Markdown + evaluation/mistakes.png
	@test "$(origin DATA)" != file -a -d "$(DATA)" || { echo "make evaluate needs DATA=DIR, a folder of class folders (e.g. make evaluate DATA=data/rps-own)"; exit 2; }
	$(PY) -m device evaluate --bundle $(BUNDLE) --data $(DATA) --out evaluation

TEACH_SEEDS ?= 7,8,9
teach-demo: setup ## Built-in vs taught accuracy on unseen camera-style images (datagen style=camera) with BUNDLE, seeds TEACH_SEEDS
	@test -f "$(BUNDLE)/manifest.json" || { echo "make teach-demo needs a converted bundle: make demo (or BUNDLE=...)"; exit 2; }
	$(PY) -m bench.teach --bundle $(BUNDLE) --seeds $(TEACH_SEEDS) --out $(BUNDLE)/teach_demo.json

# ---- make pull: the device's dataset (Teach view) to this machine ------------------------------
DEVICE_DATASET ?= /var/lib/edgecam/dataset
PULL_DEST ?= data/$(NAME)-own
.PHONY: pull
pull: ## Copy the device's captured frames (HOST=user@host) into data/NAME-own/ over ssh, merging, never overwriting
	@test -n "$(HOST)" || { echo "make pull needs HOST=user@host (the Pi), e.g. make pull HOST=pi@raspberrypi.local"; exit 2; }
	bash deploy/pull.sh "$(HOST)" "$(PULL_DEST)" "$(DEVICE_DATASET)"

# Runtime version guard (issue 15): re-measure device/opversions.py's table on BUNDLE's models.
.PHONY: op-versions
op-versions: setup ## Measure the TFLite op versions ai-edge-litert and tflite-runtime 2.14 load, for every op of every offered architecture (tiny models in build/op-versions) and BUNDLE's models (run make compat once first)
	@test -x .venv-tflite/bin/python || { echo "op-versions needs .venv-tflite: run make compat BUNDLE=$(BUNDLE) once"; exit 2; }
	$(PY) scripts/measure_op_versions.py --architectures build/op-versions \
		$(wildcard $(foreach f,float32 float16 dynamic int8,$(BUNDLE)/tflite/model_$(f).tflite)) \
		--runtime-python $(PY) --runtime-python .venv-tflite/bin/python

# ---- transfer learning (train/backbones.py, train/serving.py) ----
MODEL ?= mobilenet_v2
ALPHA ?= 0.35
IMAGE_SIZE ?= 128
WEIGHTS_DIR ?= weights
SERVING_BASE ?= serving

.PHONY: weights serving
weights: setup ## Download MODEL's ImageNet weights (ALPHA, IMAGE_SIZE) into WEIGHTS_DIR, for --weights PATH offline (needs internet)
	$(PY) -m train.weights --model $(MODEL) --alpha $(ALPHA) --image-size $(IMAGE_SIZE) --out $(WEIGHTS_DIR)

serving: setup ## Lay BUNDLE's SavedModel out for TensorFlow Serving: SERVING_BASE/NAME/VERSION/ (a new version each time)
	$(PY) -m train.serving $(BUNDLE) --base $(SERVING_BASE) --name $(NAME)

# ---- the systemd test bed (tests/systemd_bed.py; docs/systemd-testbed.md) ----------------------------------
.PHONY: systemd-test
systemd-test: setup system-deps ## The device archive under a real systemd: Debian trixie (and bookworm) in systemd-nspawn, install.sh, the unit, teach, the edgecam command, the Pi quick start (root)
	$(PY) -m pytest -q -s -rsxX tests/test_systemd_edgecam.py tests/test_systemd_quickstart.py tests/test_systemd_service.py tests/test_systemd_teach.py

.PHONY: bed-demo
bed-demo: setup system-deps ## BUNDLE's device archive in the systemd test bed on trixie and bookworm: install.sh, the unit, a teach over HTTP (root; after make demo)
	$(PY) scripts/bed_demo.py --bundle $(BUNDLE) --frames $(DATA)/test
