# paddle_unimo -- `make test` sets up .venv from requirements.txt on first use, then runs pytest.
PYTHON ?= python3
VENV ?= .venv
# The CPU build by default; e.g. `make install PADDLE=paddlepaddle-gpu==3.3.1` for a GPU machine
# (install the GPU wheel for your CUDA as PaddlePaddle's instructions say; it is not on PyPI at 3.x).
PADDLE ?= paddlepaddle==3.3.1
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test test-all convert benchmark clean

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	grep -v '^paddlepaddle==' requirements.txt > $(VENV)/requirements.txt
	$(PY) -m pip install -q -r $(VENV)/requirements.txt "$(PADDLE)"
	echo "$(PADDLE)" > $(STAMP)

install:
	rm -f $(STAMP)
	$(MAKE) $(STAMP) PADDLE="$(PADDLE)"

test: $(STAMP)
	$(PY) -m pytest

test-all: $(STAMP)
	$(PY) -m pytest -m ""

# make convert PARAMS=unimo_base_en/params CONFIG=unimo_base_en.json OUT=models/unimo-base-en [DICT=model_files/dict]
convert: $(STAMP)
	$(PY) tools/convert_checkpoint.py --params "$(PARAMS)" --config "$(CONFIG)" --out "$(OUT)" \
		$(if $(DICT),--dict-dir "$(DICT)")

benchmark: $(STAMP)
	$(PY) tools/benchmark_cpu.py

clean:
	rm -rf $(VENV) .pytest_cache
