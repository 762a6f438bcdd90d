# paddle_unimo -- `make test` sets up .venv from requirements.txt on first use, then runs pytest.
PYTHON ?= python3
VENV ?= .venv
# The CPU build by default; e.g. `make install PADDLE=paddlepaddle-gpu==3.3.1` for a GPU machine
# (install the GPU wheel for your CUDA as PaddlePaddle's instructions say; it is not on PyPI at 3.x).
PADDLE ?= paddlepaddle==3.3.1
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test test-all demo finetune predict evaluate export convert benchmark clean

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

# ---- 千言 generation: make finetune TASK=dureader_qg|advertisegen|lcsts_new [MODEL=dir] [DATA=dir] [OUT=dir]
#      [O="train.lr=3e-5 decode.num_beams=4"]; without MODEL the tiny preset and the bundled demo data.
TASK ?= dureader_qg
SIZE ?= $(if $(MODEL),base,tiny)
CONFIG ?= tasks/configs/$(TASK)_$(SIZE).yaml
OUT ?= out/$(TASK)
OVERRIDES = $(foreach o,$(O),-o $(o))

demo: $(STAMP)
	$(PY) -m tasks.demo --out $(if $(filter command line environment,$(origin OUT)),$(OUT),out/demo) \
		$(if $(MODEL),--model "$(MODEL)")

finetune: $(STAMP)
	$(PY) -m tasks.run finetune --config $(CONFIG) --out "$(OUT)" $(if $(MODEL),--model "$(MODEL)") \
		$(if $(DATA),--data "$(DATA)") $(OVERRIDES)

# make predict [MODEL=$(OUT)/best] [INPUT=file] -> $(OUT)/predict
predict: $(STAMP)
	$(PY) -m tasks.run predict --config $(CONFIG) --out "$(OUT)/predict" --model "$(or $(MODEL),$(OUT)/best)" \
		$(if $(DATA),--data "$(DATA)") $(if $(INPUT),--input "$(INPUT)") $(OVERRIDES)

# make evaluate [PRED=$(OUT)/predict/predictions.jsonl]
evaluate: $(STAMP)
	$(PY) -m tasks.run evaluate --config $(CONFIG) --out "$(OUT)/predict" \
		--predictions "$(or $(PRED),$(OUT)/predict/predictions.jsonl)"

# make export [MODEL=$(OUT)/best] -> $(OUT)/inference (Paddle Inference: prefill/step .json + .pdiparams)
export: $(STAMP)
	$(PY) tools/export_model.py --model "$(or $(MODEL),$(OUT)/best)" --out "$(OUT)/inference"

# make convert PARAMS=unimo_base_en/params CONFIG=unimo_base_en.json OUT=models/unimo-base-en [DICT=model_files/dict]
convert: $(STAMP)
	$(PY) tools/convert_checkpoint.py --params "$(PARAMS)" --config "$(CONFIG)" --out "$(OUT)" \
		$(if $(DICT),--dict-dir "$(DICT)")

benchmark: $(STAMP)
	$(PY) tools/benchmark_cpu.py

clean:
	rm -rf $(VENV) .pytest_cache
