# paddle_unimo -- `make test` sets up .venv from requirements.txt on first use, then runs pytest.
PYTHON ?= python3
VENV ?= .venv
# The CPU build by default; e.g. `make install PADDLE=paddlepaddle-gpu==3.3.1` for a GPU machine
# (install the GPU wheel for your CUDA as PaddlePaddle's instructions say; it is not on PyPI at 3.x).
PADDLE ?= paddlepaddle==3.3.1
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test test-all demo demo-vl finetune predict serve evaluate sweep export convert benchmark extract-regions \
	benchmark-regions convert-regions pretrain train-tokenizer clean

# requirements-nodeps.txt holds packages whose metadata pins would break the environment (paddledet pins
# numpy<1.24): installed without their declared deps, after their real needs from requirements.txt.
# The project itself is installed editable (pyproject.toml) so that `import paddle_unimo`, `tasks` and `tools`
# work from any folder and the console scripts exist.
$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	grep -v '^paddlepaddle==' requirements.txt > $(VENV)/requirements.txt
	$(PY) -m pip install -q -r $(VENV)/requirements.txt "$(PADDLE)"
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	echo "$(PADDLE)" > $(STAMP)

install:
	rm -f $(STAMP)
	$(MAKE) $(STAMP) PADDLE="$(PADDLE)"

# PADDLE_UNIMO_RUN_SLOW=1 (set by .ci/run) adds the tests marked slow, as `make test-all` does.
test: $(STAMP)
	$(PY) -m pytest $(if $(filter 1,$(PADDLE_UNIMO_RUN_SLOW)),-m "")

test-all: $(STAMP)
	$(PY) -m pytest -m ""

# ---- tasks (tasks/registry.py): make finetune TASK=name [MODEL=dir] [DATA=dir] [REGIONS=store] [OUT=dir]
#      [O="train.lr=3e-5 decode.num_beams=4"] [NO_RESUME=1: start over in OUT] [VOCAB=dir: a tokenizer from make
#      train-tokenizer, for a model without MODEL]; without MODEL the tiny preset and the bundled demo data.
#      TASK: dureader_qg|advertisegen|lcsts_new (千言 generation), coco_caption|flickr30k_retrieval|snli_ve|vqa
#      (vision-language; REGIONS= is their region store, by default data.regions inside the data folder),
#      glue_cola|glue_sst2|glue_mrpc|glue_stsb|glue_qqp|glue_mnli|glue_qnli|glue_rte|glue_wnli and
#      cnn_dm|gigaword|squad_qg|coqa (English text; DATA= required).
TASK ?= dureader_qg
SIZE ?= $(if $(MODEL),base,tiny)
CONFIG ?= tasks/configs/$(TASK)_$(SIZE).yaml
OUT ?= out/$(TASK)
OVERRIDES = $(foreach o,$(O),-o $(o))
REGIONS_ARG = $(if $(REGIONS),--regions "$(REGIONS)")
# what predict writes that evaluate scores: retrieval's score matrix, every other task's predictions.jsonl
PRED_FILE = $(if $(filter flickr30k_retrieval,$(RUN_TASK)),scores.npy,predictions.jsonl)

demo: $(STAMP)
	$(PY) -m tasks.demo --out $(if $(filter command line environment,$(origin OUT)),$(OUT),out/demo) \
		$(if $(MODEL),--model "$(MODEL)") $(OVERRIDES)

# make demo-vl [OUT=out/demo_vl] [O="train.epochs=5"]: the four vision-language tasks on the embedded set
demo-vl: $(STAMP)
	$(PY) -m tasks.demo_vl --out $(if $(filter command line environment,$(origin OUT)),$(OUT),out/demo_vl) \
		$(OVERRIDES)

finetune: $(STAMP)
	$(PY) -m tasks.run finetune --task $(TASK) --config $(CONFIG) --out "$(OUT)" $(if $(MODEL),--model "$(MODEL)") \
		$(if $(DATA),--data "$(DATA)") $(REGIONS_ARG) $(if $(NO_RESUME),--no-resume) \
		$(if $(VOCAB),-o "model.vocab_dir=$(VOCAB)") $(OVERRIDES)

# make predict [MODEL=$(OUT)/best] [INPUT=file] -> $(OUT)/predict (coco_caption adds captions_results.json, vqa
#      vqa_submission.json, flickr30k_retrieval scores.npy + scores_index.json); MODEL=$(OUT)/inference
#      predicts with an export's programs (Paddle Inference; ONNX Runtime for FORMAT=onnx, its int8 programs after
#      QUANT=int8; RUNTIME=paddle|onnx|onnx_fp32 chooses, here and for make serve)
#      The model folder's task.yaml (the settings it was fine-tuned with) is the config unless CONFIG= or SIZE= is
#      given (evaluate: that of MODEL, or of OUT/best), and its task the task unless TASK= is given, each on the
#      command line (a TASK, CONFIG or SIZE exported in the shell does not override them); older folders without
#      one take tasks/configs/$(TASK)_$(SIZE).yaml. With MODEL=<run>/best or <run>/inference and no OUT=, predict,
#      evaluate and export work in <run>.
PREDICT_MODEL = $(patsubst %/,%,$(or $(MODEL),$(OUT)/best))
OWN_CONFIG = $(if $(filter command line,$(origin CONFIG) $(origin SIZE)),,$(shell test -f \
	"$(PREDICT_MODEL)/task.yaml" && echo "$(PREDICT_MODEL)/task.yaml"))
RUN_TASK = $(if $(filter command line,$(origin TASK)),$(TASK),$(or $(if $(OWN_CONFIG),$(shell sed -n \
	's/^task: *//p' "$(OWN_CONFIG)")),$(TASK)))
MODEL_RUN = $(if $(MODEL),$(shell m='$(MODEL)'; b="$$(basename "$$m")"; if [ "$$b" = best ] || \
	[ "$$b" = inference ]; then dirname "$$m"; fi))
RUN_OUT = $(if $(filter command line environment,$(origin OUT)),$(OUT),$(or $(MODEL_RUN),$(OUT)))
predict: $(STAMP)
	$(PY) -m tasks.run predict --task $(RUN_TASK) $(if $(OWN_CONFIG),,--config "$(CONFIG)") --out "$(RUN_OUT)/predict" \
		--model "$(PREDICT_MODEL)" \
		$(if $(DATA),--data "$(DATA)") $(if $(INPUT),--input "$(INPUT)") $(if $(RUNTIME),--runtime $(RUNTIME)) \
		$(REGIONS_ARG) $(OVERRIDES)

# make serve [MODEL=$(OUT)/best or $(OUT)/inference] [PORT=8189] [HOST=127.0.0.1] [CANDIDATES=n] [CONFIG=file|SIZE=]
#      [O="decode.num_beams=1"] [REGIONS=store] [DETECTOR=weights.pdparams]: a 千言, GLUE, English generation,
#      captioning, VQA, SNLI-VE or retrieval model over HTTP (POST /predict {"inputs": [...]}, GET /health;
#      tasks/serve.py);
#      CANDIDATES=n answers n per record (best beams, or samples with decode.decode_strategy=sampling); DETECTOR
#      (the store's weights; random for a store of RANDOM_WEIGHTS=1) lets records name image files on this
#      machine, extracted as the store's images were: serve it to trusted clients only.
#      HOST and PORT are read from the command line only (some shells export HOST, the machine's name).
serve: $(STAMP)
	$(PY) -m tasks.serve --model "$(PREDICT_MODEL)" \
		$(if $(filter command line,$(origin PORT)),--port $(PORT)) $(if $(filter command line,$(origin HOST)),--host $(HOST)) \
		$(if $(filter command line,$(origin CONFIG) $(origin SIZE)),--config "$(CONFIG)") \
		$(if $(CANDIDATES),--num-return-sequences $(CANDIDATES)) $(REGIONS_ARG) \
		$(if $(DETECTOR),--detector "$(DETECTOR)") $(if $(RUNTIME),--runtime $(RUNTIME)) $(OVERRIDES)

# make evaluate [PRED=$(OUT)/predict/predictions.jsonl; flickr30k_retrieval: .../scores.npy; coco_caption also a
#      COCO result file such as captions_results.json] [REFS=file; default: DATA's dev file, or the file predict read]
#      -> $(OUT)/predict/eval/metrics.json
evaluate: $(STAMP)
	$(PY) -m tasks.run evaluate --task $(RUN_TASK) --config "$(or $(OWN_CONFIG),$(CONFIG))" --out "$(RUN_OUT)/predict" \
		--predictions "$(or $(PRED),$(RUN_OUT)/predict/$(PRED_FILE))" $(if $(DATA),--data "$(DATA)") \
		$(if $(REFS),--references "$(REFS)") $(REGIONS_ARG) $(OVERRIDES)

# make sweep TASK=name GRID="train.lr=1e-5,2e-5 train.seed=1,2,3" [MODEL=dir] [DATA=dir] [OUT=dir] [O=...]
#      -> one run folder per combination under $(OUT)/sweep, resumable; the table in $(OUT)/sweep/sweep.tsv
sweep: $(STAMP)
	$(PY) -m tasks.sweep --task $(TASK) --config $(CONFIG) --grid "$(GRID)" --out "$(OUT)/sweep" \
		$(if $(MODEL),--model "$(MODEL)") $(if $(DATA),--data "$(DATA)") $(if $(NO_RESUME),--no-resume) $(OVERRIDES)

# make export [MODEL=$(OUT)/best] [FORMAT=paddle|kernels|onnx] [PRECISION=bfloat16] [QUANT=int8|int8_w7] -> $(OUT)/inference
#      (PRECISION and QUANT with FORMAT=kernels, QUANT=int8 also with FORMAT=onnx; an understanding model: paddle|onnx)
#      (Paddle Inference: prefill/step .json + .pdiparams, and prefill_regions for a captioning model; retrieval,
#      snli_ve and vqa models: one forward.json + .pdiparams). FORMAT=kernels: the decoding programs on
#      paddle_unimo's CPU kernels (as fast as dynamic decoding on CPU; they need paddle_unimo where they run);
#      PRECISION=bfloat16 (FORMAT=kernels only) keeps their weights rounded to bfloat16 (half the memory, faster
#      steps, other scores), QUANT=int8 quantizes them and each product's inputs to int8 (a quarter of the memory,
#      ~2x faster decoding on CPUs with AVX-512 VNNI, other scores); QUANT=int8_w7 (FORMAT=kernels) with 7-bit
#      weights, x1.1-1.5 faster than int8 on CPUs with AVX2 and no VNNI (the scores move ~1.5 times as far).
#      FORMAT=onnx adds <program>.onnx and onnx.json (paddle_unimo/onnx_export.py; runs with onnxruntime); QUANT=int8
#      then also <program>.int8.onnx, which OnnxStepper then runs.
export: $(STAMP)
	$(PY) -m tools.export_model --model "$(PREDICT_MODEL)" --out "$(RUN_OUT)/inference" \
		--format $(or $(FORMAT),paddle) $(if $(PRECISION),--precision $(PRECISION)) \
		$(if $(QUANT),--quantize $(QUANT))

# make convert PARAMS=unimo_base_en/params CONFIG=unimo_base_en.json OUT=models/unimo-base-en [DICT=model_files/dict]
#      [ALLOW_UNUSED='cls_out_.*']  (parameter files to leave out, e.g. a fine-tuned model's task head)
convert: $(STAMP)
	$(if $(filter command line environment,$(origin CONFIG)),,$(error convert needs CONFIG=<the model's JSON config>))
	$(PY) -m tools.convert_checkpoint --params "$(PARAMS)" --config "$(CONFIG)" --out "$(OUT)" \
		$(if $(DICT),--dict-dir "$(DICT)") $(if $(ALLOW_UNUSED),--allow-unused '$(ALLOW_UNUSED)')

# make benchmark [ARGS="--layers 2 --new-tokens 8"] (tools/benchmark_cpu.py --help)
benchmark: $(STAMP)
	$(PY) -m tools.benchmark_cpu $(ARGS)

# ---- image regions (bottom-up-attention style, PaddleDetection Faster R-CNN) into a region store:
#      make extract-regions IMAGES=dir OUT=dir [WEIGHTS=file.pdparams | RANDOM_WEIGHTS=1] [ARCH=c4|fpn]
#      [NPROC=1] [EXTRACT_ARGS="--conf 0.2 --min-boxes 10 --max-boxes 100 --short-side 600 --max-side 1000"]
#      NPROC=N: N worker processes, one per GPU (on CPU they share the cores); 1 unless NPROC is given on the
#      command line or in the environment (the file's NPROC default is pretraining's).
ARCH ?= c4
extract-regions: $(STAMP)
	$(if $(IMAGES),,$(error extract-regions needs IMAGES=<image folder or list file>))
	$(if $(filter command line environment,$(origin OUT)),,$(error extract-regions needs OUT=<store folder>))
	$(PY) -m tools.extract_regions --images "$(IMAGES)" --out "$(OUT)" --arch $(ARCH) \
		--nproc $(if $(filter command line environment,$(origin NPROC)),$(NPROC),1) \
		$(if $(WEIGHTS),--weights "$(WEIGHTS)") $(if $(RANDOM_WEIGHTS),--random-weights) $(EXTRACT_ARGS)

# make benchmark-regions IMAGES=dir
benchmark-regions: $(STAMP)
	$(if $(IMAGES),,$(error benchmark-regions needs IMAGES=<image folder or list file>))
	$(PY) -m tools.benchmark_regions --images "$(IMAGES)"

# make convert-regions FORMAT=bottom_up_tsv|unimo_caption|unimo_retrieval|unimo_ve IN="files or folders" OUT=store
#      [ARGS="--hw ..."] (tools/convert_regions.py --help)
convert-regions: $(STAMP)
	$(if $(filter command line environment,$(origin OUT)),,$(error convert-regions needs OUT=<store folder>))
	$(if $(IN),,$(error convert-regions needs IN="<files or folders>"))
	$(PY) -m tools.convert_regions --format "$(FORMAT)" --input $(IN) --out "$(OUT)" $(ARGS)

# ---- pretraining. Default: the embedded mini corpus, the tiny preset, 2 processes on CPU (gloo).
#      make pretrain [CONFIG=file | SIZE=base|large] [DATA=corpora] [NPROC=2] [OUT=out/pretrain] [MODEL=dir | VOCAB=dir]
#      [O="..."]  (VOCAB: a tokenizer from make train-tokenizer, for a model from scratch; DATA: {data} in the config)
#      The paper's recipe on a GPU node: make pretrain SIZE=base MODEL=roberta-base DATA=corpora NPROC=8
#      (tasks/configs/pretrain_base.yaml says how DATA is laid out; README for several nodes).
NPROC ?= 2
PRETRAIN_CONFIG = $(if $(filter command line environment,$(origin CONFIG)),$(CONFIG),$(if $(filter command line \
	environment,$(origin SIZE)),tasks/configs/pretrain_$(SIZE).yaml,tasks/configs/pretrain_tiny.yaml))
PRETRAIN_OUT = $(if $(filter command line environment,$(origin OUT)),$(OUT),out/pretrain)
RECIPES = tasks/configs/pretrain_base.yaml tasks/configs/pretrain_large.yaml  # the paper's: no mini corpus
pretrain: $(STAMP)
	$(if $(filter $(PRETRAIN_CONFIG),$(RECIPES)),,$(PY) -m tasks.pretrain_mini --out "$(PRETRAIN_OUT)/mini")
	PYTHONPATH="$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH}" \
	$(PY) -m paddle.distributed.launch --nproc_per_node $(NPROC) --log_dir "$(PRETRAIN_OUT)/launch" \
		tasks/pretrain.py --config "$(PRETRAIN_CONFIG)" --out "$(PRETRAIN_OUT)" $(if $(MODEL),--model "$(MODEL)") \
		$(if $(VOCAB),--vocab "$(VOCAB)") $(if $(DATA),--data "$(DATA)") $(if $(NO_RESUME),--no-resume) $(OVERRIDES)

# make train-tokenizer INPUT="corpus.txt more.txt.gz" TOKENIZER_OUT=dir [KIND=wordpiece|sentencepiece] [VOCAB_SIZE=8000]
#      [ARGS="--overwrite --skip-bad ..."] (tools/train_tokenizer.py --help)
train-tokenizer: $(STAMP)
	$(if $(TOKENIZER_OUT),,$(error train-tokenizer needs TOKENIZER_OUT=<a new folder for the tokenizer>))
	$(if $(INPUT),,$(error train-tokenizer needs INPUT="<corpus files>"))
	$(PY) -m tools.train_tokenizer --input $(INPUT) --out "$(TOKENIZER_OUT)" --kind $(or $(KIND),wordpiece) \
		--vocab-size $(or $(VOCAB_SIZE),8000) $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
