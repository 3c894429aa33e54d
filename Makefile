# Two commands for a fresh Debian machine (root, no GPU):
#   make demo   set everything up, then build the demo voice end to end
#   make test   set everything up, then run the tests
# Both are idempotent: set-up steps are skipped when their stamp files are newer than their inputs.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
VT := $(VENV)/bin/voicetrain
DEMO ?= demo
DEMO_MINUTES ?= 5
DEMO_SCRATCH ?= 0
# chromium: the studio's browser test (tests/studio/test_browser.py, driven by playwright; no browser download).
# Festival voices of the universal vocoder corpus (`demo-data --voices universal`); kallpc16k is also in the tests.
FESTIVAL_VOICES := festvox-kallpc16k festvox-kdlpc16k festvox-italp16k festvox-suopuhe-lj festvox-czech-dita \
  festvox-ca-ona-hts

.PHONY: setup demo test clean-demo
setup: $(VENV)/.installed

.apt-installed:
	@if ! command -v espeak-ng >/dev/null || ! command -v flite >/dev/null || ! command -v sox >/dev/null \
	    || ! command -v text2wave >/dev/null || [ ! -d /usr/share/festival/voices/catalan/upc_ca_ona_hts ] \
	    || [ ! -x /usr/bin/chromium ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng flite sox ffmpeg \
	    festival $(FESTIVAL_VOICES) chromium >/dev/null; fi
	@touch $@

$(VENV)/.installed: pyproject.toml constraints.txt .apt-installed
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24" 
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[eval,vad,dev,serve]"
	$(PY) -m pip install -q --no-deps resemblyzer==0.1.4
	@touch $@

demo: setup
	$(VT) demo-data $(DEMO)/corpus --utterances 300
	$(VT) prepare $(DEMO)/corpus --out $(DEMO)/dataset
	$(VT) check $(DEMO)/dataset
	@# fine-tune the shipped multi-speaker base (`builtin`, which never heard rms) to the demo voice;
	@# DEMO_SCRATCH=1 trains from scratch instead
	if [ "$(DEMO_SCRATCH)" = 1 ]; then $(VT) train $(DEMO)/dataset --out $(DEMO)/run --max-minutes $(DEMO_MINUTES); \
	else $(VT) finetune $(DEMO)/dataset --out $(DEMO)/run --max-minutes $(DEMO_MINUTES) --early-stop 0; fi
	$(VT) synth $(DEMO)/run --vocoder builtin --text "The birch canoe slid on the smooth planks." --out $(DEMO)/hello.wav
	$(VT) eval $(DEMO)/run --vocoder builtin --texts harvard --max-utterances 10
	@echo "Demo voice: $(DEMO)/hello.wav  loss plot: $(DEMO)/run/loss.png  TensorBoard: $(DEMO)/run/tb  report: $(DEMO)/run/eval/report.html"

test: setup
	$(VENV)/bin/pytest -q

clean-demo:
	rm -rf $(DEMO)
