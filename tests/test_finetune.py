"""Fine-tuning end to end: wiring on the real samples, exact resume, export, the CLI's errors."""
import json
import logging
import os
import shutil

import numpy as np
import paddle
import pytest

from paddle_unimo import UNIMOLMHeadModel, load_tokenizer
from paddle_unimo.data.seq2seq import decoding_batch
from paddle_unimo.export import InferenceStepper, export_model
from paddle_unimo.fileio import atomic_write
from paddle_unimo.generation import generate
from tasks import run
from tasks.cli import build_model, load_config
from tasks.registry import get_task

from conftest import shared_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "tasks", "configs", "{}_tiny.yaml")
# Memorising 64 examples: no dropout, no label smoothing, a high learning rate, greedy decoding.
WIRING = ["-o", "train.eval_steps=100000", "-o", "decode.decode_strategy=greedy_search", "-o", "train.lr=3e-3",
          "-o", "train.progress=false", "-o", "train.label_smoothing=0.0",
          "-o", "model.overrides.hidden_dropout_prob=0.0", "-o", "model.overrides.attention_probs_dropout_prob=0.0"]


def sample(task, n=64):
    """64 real examples; for AdvertiseGen the 64 with the shortest copy, to keep the test short."""
    if task == "dureader_qg":
        return [line for line in shared_path("dureader_qg", "sample.jsonl").read_text("utf-8").splitlines()][:n], "json"
    if task == "advertisegen":
        lines = shared_path("advertisegen", "dev_part1.jsonl").read_text("utf-8").splitlines()
        return sorted(lines, key=lambda line: len(json.loads(line)["summary"]))[:n], "json"
    return shared_path("lcsts", "val_part1.tsv").read_text("utf-8").splitlines()[:n], "tsv"


@pytest.mark.slow
@pytest.mark.parametrize("task, extra", [
    ("dureader_qg", ["-o", "train.epochs=60"]),
    ("advertisegen", ["-o", "train.epochs=80", "-o", "data.max_target_len=96", "-o", "decode.max_length=96"]),
    # batch 8: from the original's truncated-normal initialisation, 240 steps of 16 leave ~20 of the long LCSTS
    # sources confused (BLEU 77-84 over three seeds); 480 steps of 8 memorise them (95-98)
    ("lcsts_new", ["-o", "train.epochs=60", "-o", "train.batch_size=8"]),
])
def test_tiny_model_reproduces_64_real_training_examples(tmp_path, task, extra):
    lines, ext = sample(task)
    for split in ("train", "dev"):  # evaluated on the training examples themselves
        (tmp_path / f"{split}.{ext}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    run.execute(["finetune", "--config", CONFIG.format(task), "--data", str(tmp_path), "--out", str(out),
              "-o", f"data.train=train.{ext}", "-o", f"data.dev=dev.{ext}", *WIRING, *extra])
    metrics = json.loads((out / "metrics.json").read_text("utf-8"))
    assert metrics["examples"] == 64 and metrics["bleu4"] >= 90.0, metrics["bleu4"]
    curve = [loss for _, loss in metrics["loss_curve"]]
    assert curve[-1] < 0.2 * curve[0]
    assert "loss" in (out / "train.log").read_text("utf-8")
    assert any(name.startswith("vdlrecords") for name in os.listdir(out / "vdl"))
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text("utf-8").splitlines()]
    assert len(predictions) == 64 and all(p["prediction"] for p in predictions)


def demo_task(overrides=(), name="dureader_qg"):
    """The task bound to a fresh tiny model, its typed config, 48 training and 8 dev examples of the demo data."""
    task = get_task(name)
    cfg = load_config(CONFIG.format(name), overrides, task.config_class)
    folder = os.path.join(ROOT, cfg.data.default_dir)
    train, _ = task.read(os.path.join(folder, "train.json"), cfg)
    dev, _ = task.read(os.path.join(folder, "dev.json"), cfg)
    model, tokenizer = build_model(None, cfg.model, task.texts(train))
    return task.bind(model, tokenizer, cfg), cfg, train[:48], dev[:8]


def params(model):
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


def test_resumed_run_ends_with_the_same_parameters(tmp_path):
    """Dropout on, two epochs with a shuffled order, a checkpoint every 2 steps: stopping after 5 steps and
    resuming in a new trainer gives the parameters of the uninterrupted run, and its loss curve (the stop falls
    inside a logging window of 3 steps, which the checkpoint carries)."""
    overrides = ["train.epochs=2", "train.batch_size=8", "train.save_steps=2", "train.eval_steps=100000",
                 "train.progress=false", "train.logging_steps=3"]
    runs = {}
    for name, stops in (("straight", [-1]), ("interrupted", [5, -1])):
        for stop in stops:
            task, config, train, dev = demo_task(overrides)
            trainer = task.trainer(train, [], str(tmp_path / name))
            state = trainer.train(resume=True, stop_after=stop)
        runs[name] = (params(task.model), state)
    (a, state_a), (b, state_b) = runs["straight"], runs["interrupted"]
    assert state_a["step"] == state_b["step"] == 12
    assert [h["step"] for h in state_a["history"] if "loss" in h] == [3, 6, 9, 12]
    assert state_b["history"] == state_a["history"]
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    task, config, train, dev = demo_task(overrides)  # a fresh model differs: the comparison can fail
    assert any(not np.array_equal(a[k], v) for k, v in params(task.model).items())


def test_amp_on_cpu_is_reported_and_changes_nothing(tmp_path, caplog):
    results = []
    for amp in ("false", "true"):
        task, config, train, dev = demo_task(["train.max_steps=3", f"train.amp={amp}", "train.progress=false",
                                              "train.eval_steps=100000"])
        with caplog.at_level(logging.WARNING):
            task.trainer(train, [], str(tmp_path / amp)).train()
        results.append(params(task.model))
    assert "mixed precision (O1 float16) requested but inactive" in caplog.text
    for key in results[0]:
        np.testing.assert_array_equal(results[0][key], results[1][key])


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    run.execute(["finetune", "--config", CONFIG.format("dureader_qg"), "--out", str(out), "-o", "train.max_steps=60",
              "-o", "train.eval_steps=100000", "-o", "train.progress=false", "-o", "decode.num_beams=3"])
    return out


def test_export_gives_the_same_ids_on_the_demo_data(demo_model, tmp_path):
    model = UNIMOLMHeadModel.from_pretrained(str(demo_model / "best"))
    tokenizer = load_tokenizer(str(demo_model / "best"))
    export_model(model, str(tmp_path / "inference"), tokenizer)
    stepper = InferenceStepper(str(tmp_path / "inference"))
    _, config, _, dev = demo_task()
    task = get_task("dureader_qg").bind(model, tokenizer, config)
    items = task.encoder.encode_all(dev[:16] if len(dev) > 8 else dev, with_target=False)
    batch = {k: paddle.to_tensor(v) for k, v in decoding_batch(items, model.config.pad_token_id, 0).items()}
    for settings in (dict(), dict(decode_strategy="beam_search", num_beams=4, length_penalty=1.2, min_length=2)):
        dynamic, _ = generate(model, **batch, max_length=20, **settings)
        exported, _ = generate(None, **batch, max_length=20, stepper=stepper, **settings)
        np.testing.assert_array_equal(exported.numpy(), dynamic.numpy())
        assert (dynamic.numpy() == tokenizer.eos_token_id).any()  # trained outputs end with the eos


def predictions_of(folder):
    return [json.loads(line)["prediction"] for line in (folder / "predictions.jsonl").read_text("utf-8").splitlines()]


@pytest.mark.parametrize("fmt, dtype", [("paddle", "float32"), ("kernels", "float32"), ("kernels", "int8"),
                                        ("onnx", "float32")])
def test_predict_decodes_with_an_export_folder(demo_model, tmp_path, monkeypatch, caplog, fmt, dtype):
    """``predict --model OUT/inference`` decodes with the exported programs: the predictions of the checkpoint,
    in int8 those of dynamic decoding on int8 panels (the same kernels); an ONNX export on ONNX Runtime."""
    from paddle_unimo import cpu_kernels, generation
    if fmt == "kernels" and cpu_kernels.kernels() is None:
        pytest.skip("the CPU kernels could not be built here")
    if fmt == "onnx" and os.environ.get("PADDLE_UNIMO_REQUIRE_ONNX") != "1":  # CI requires them
        pytest.importorskip("onnxruntime")
        pytest.importorskip("paddle2onnx")
    model = UNIMOLMHeadModel.from_pretrained(str(demo_model / "best"))
    folder = tmp_path / "inference"
    export_model(model, str(folder), load_tokenizer(str(demo_model / "best")), cpu_kernels=fmt == "kernels",
                 panel_dtype=dtype)
    if fmt == "onnx":
        from paddle_unimo.onnx_export import export_onnx
        export_onnx(str(folder))
    runtime = {"paddle": "Paddle Inference, paddle's operators", "onnx": "ONNX Runtime, float32 programs",
               "kernels": f"Paddle Inference, CPU kernels, {dtype} weights"}[fmt]
    args = ["predict", "--config", CONFIG.format("dureader_qg"), "-o", "decode.num_beams=3"]
    with caplog.at_level(logging.INFO, logger="paddle_unimo"):
        exported = run.execute([*args, "--model", str(folder), "--out", str(tmp_path / "exported")])
    assert f"is an export: decoding with its programs ({runtime})" in caplog.text
    if dtype != "float32":
        monkeypatch.setattr(generation, "batch_stepper", lambda m: generation.ModelStepper(m, True, dtype))
    dynamic = run.execute([*args, "--model", str(demo_model / "best"), "--out", str(tmp_path / "dynamic")])
    assert predictions_of(tmp_path / "exported") == predictions_of(tmp_path / "dynamic")
    assert exported["bleu4"] == dynamic["bleu4"] and exported["examples"] == dynamic["examples"] > 0
    assert sum(map(bool, predictions_of(tmp_path / "exported"))) > exported["examples"] // 2


def test_predict_and_evaluate_commands(demo_model, tmp_path):
    out = tmp_path / "pred"
    result = run.execute(["predict", "--config", CONFIG.format("dureader_qg"), "--model", str(demo_model / "best"),
                       "--out", str(out), "-o", "decode.num_beams=3"])
    again = run.execute(["evaluate", "--config", CONFIG.format("dureader_qg"), "--out", str(out)])
    assert result["bleu4"] == pytest.approx(again["bleu4"]) and 0 <= again["bleu4"] <= 100
    assert json.loads((out / "eval" / "metrics.json").read_text("utf-8"))["bleu4"] == again["bleu4"]
    finetuned = json.loads((demo_model / "metrics.json").read_text("utf-8"))
    assert finetuned["bleu4"] == pytest.approx(result["bleu4"])  # same model, same dev data, same decoding


def test_evaluate_scores_predictions_against_the_file_they_were_predicted_for(demo_model, tmp_path, capsys):
    """Predictions of another input file (ids: line numbers) are scored against that file, which predict's
    metrics.json names, and refused against a file of other examples under the same ids."""
    dev = os.path.join(ROOT, "tasks", "demo_data", "dureader_qg", "dev.json")
    records = [{k: v for k, v in json.loads(line).items() if k != "id"} for line in open(dev, encoding="utf-8")]
    for name, rows in (("in_order.json", records), ("reversed.json", records[::-1])):
        (tmp_path / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    out = tmp_path / "pred"
    config = ["--config", CONFIG.format("dureader_qg")]
    predicted = run.execute(["predict", *config, "--model", str(demo_model / "best"), "--input",
                             str(tmp_path / "reversed.json"), "--out", str(out)])
    evaluated = run.execute(["evaluate", *config, "--out", str(out)])
    assert evaluated["references"] == str(tmp_path / "reversed.json")
    assert evaluated["bleu4"] == pytest.approx(predicted["bleu4"]) and predicted["examples"] == len(records) > 8
    with pytest.raises(SystemExit):
        run.execute(["evaluate", *config, "--out", str(out), "--references", str(tmp_path / "in_order.json")])
    assert (f"error: {out}/predictions.jsonl:1: its source is not that of id '1' in the references "
            f"{tmp_path}/in_order.json: the predictions are of another file; REFS=") in capsys.readouterr().err
    (tmp_path / "data").mkdir()  # DATA= names the references' folder: its dev file
    shutil.copyfile(tmp_path / "reversed.json", tmp_path / "data" / "dev.json")
    assert run.execute(["evaluate", *config, "--out", str(out), "--data", str(tmp_path / "data")])["references"] \
        == str(tmp_path / "data" / "dev.json")
    assert not os.path.exists("predictions.jsonl")  # a name alone: the file predict wrote in --out
    named = run.execute(["evaluate", *config, "--out", str(out), "--predictions", "predictions.jsonl"])
    assert named["predictions"] == str(out / "predictions.jsonl") and named["bleu4"] == evaluated["bleu4"]
    with pytest.raises(SystemExit):
        run.execute(["evaluate", *config, "--out", str(tmp_path / "none")])
    assert f"error: {tmp_path}/none/predictions.jsonl: no predictions file (make predict, or predict --out, " \
        "writes it)" in capsys.readouterr().err


def test_a_pipeline_predicts_what_predict_writes(demo_model, tmp_path):
    """``Pipeline(folder)`` reads the folder's task.yaml (the run's 3 beams) and gives, record by record or in a
    list, the predictions ``make predict`` writes for the dev file; so does the export folder."""
    from tasks.pipeline import Pipeline
    run.execute(["predict", "--model", str(demo_model / "best"), "--out", str(tmp_path / "pred")])
    expected = predictions_of(tmp_path / "pred")
    dev = os.path.join(ROOT, "tasks", "demo_data", "dureader_qg", "dev.json")
    records = [json.loads(line) for line in open(dev, encoding="utf-8")]
    assert len(records) == len(expected) > 8 and sum(map(bool, expected)) > len(expected) // 2
    qg = Pipeline(str(demo_model / "best"))
    assert qg.config.decode.num_beams == 3
    assert qg(records) == expected
    assert [qg(r) for r in records[:4]] == expected[:4]
    assert Pipeline(str(demo_model / "best"), ["decode.decode_strategy=greedy_search"])(records) != expected
    from tools import export_model as export_tool
    export_tool.main(["--model", str(demo_model / "best"), "--out", str(tmp_path / "inference")])
    assert Pipeline(str(tmp_path / "inference"))(records[:6]) == expected[:6]


def test_a_pipeline_returns_several_candidates(demo_model):
    """num_return_sequences: the 3 best beams, the best one first (what one beam search returns alone), or 3
    samples, reproducible under a seed; more than the beams is refused."""
    from paddle_unimo.typed import ConfigError
    from tasks.pipeline import Pipeline
    dev = os.path.join(ROOT, "tasks", "demo_data", "dureader_qg", "dev.json")
    records = [json.loads(line) for line in open(dev, encoding="utf-8")][:6]
    best = Pipeline(str(demo_model / "best"))(records)
    beams = Pipeline(str(demo_model / "best"), num_return_sequences=3)(records)
    assert [len(b) for b in beams] == [3] * 6 and [b[0] for b in beams] == best
    assert all(len(set(b)) > 1 for b in beams)
    sampling = ["decode.decode_strategy=sampling", "decode.top_k=10", "decode.seed=7"]
    samples = Pipeline(str(demo_model / "best"), sampling, num_return_sequences=3)
    first = samples(records)
    assert [len(s) for s in first] == [3] * 6 and any(len(set(s)) > 1 for s in first)
    assert samples(records) == first  # a sample depends on its batch's draws: a record alone samples anew
    assert samples(records[0]) == samples(records[:1])[0] and len(samples(records[0])) == 3
    with pytest.raises(ConfigError, match="decode.num_return_sequences: 4 is above num_beams 3"):
        Pipeline(str(demo_model / "best"), num_return_sequences=4)


def test_a_pipeline_names_what_is_wrong(demo_model, tmp_path):
    from paddle_unimo.fileio import DataError
    from paddle_unimo.typed import ConfigError
    from tasks.pipeline import Pipeline
    qg = Pipeline(str(demo_model / "best"))
    with pytest.raises(DataError, match="input 0: dureader_qg reads a title as well: give {'context': ..., 'answer'"):
        qg("青石镇人口3万")
    with pytest.raises(DataError, match="input 1: missing field 'answer'"):
        qg([{"context": "青石镇人口3万", "answer": "3万"}, {"context": "青石镇人口3万"}])
    # a task without a title takes a text as its source
    lcsts = Pipeline(str(demo_model / "best"), config=CONFIG.format("lcsts_new"))
    assert lcsts("青石镇人口3万") == lcsts({"content": "青石镇人口3万"}) == lcsts(["青石镇人口3万"])[0]
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        Pipeline(str(tmp_path / "missing"))
    (tmp_path / "config.json").write_text("{}", "utf-8")
    with pytest.raises(ConfigError, match="no task.yaml .* give the task.s YAML \\(config=; --config, make CONFIG="):
        Pipeline(str(tmp_path))
    with pytest.raises(DataError, match="expected a record .* or a list of them, got int"):
        qg(5)
    assert Pipeline(str(demo_model / "best"), "decode.num_beams=1").config.decode.num_beams == 1  # one -o as text
    with pytest.raises(ConfigError, match="greedy search finds one sequence per record"):
        Pipeline(str(demo_model / "best"), ["decode.decode_strategy=greedy_search"], num_return_sequences=2)


def http(url, body=None):
    """(status, JSON answer) of a GET, or of a POST of ``body`` (bytes)."""
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=60) as response:
            return response.status, json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode("utf-8"))


def raw_request(port, method, path, length="0"):
    """(status, JSON answer) of a request with the Content-Length header ``length`` (None: chunked)."""
    import http.client
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.putrequest(method, path)
        if length is None:
            connection.putheader("Transfer-Encoding", "chunked")
        else:
            connection.putheader("Content-Length", length)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, json.loads(response.read().decode("utf-8"))
    finally:
        connection.close()


def exchange(port, data: bytes, half_close: bool = True):
    """(status, JSON answer or None) of the raw bytes ``data`` sent on a new connection (``half_close``: then the
    client stops sending)."""
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=60) as connection:
        connection.sendall(data)
        if half_close:
            connection.shutdown(socket.SHUT_WR)
        reply = connection.makefile("rb").read()
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body) if body else None


def test_the_server_answers_what_the_pipeline_gives_and_names_bad_requests(demo_model, monkeypatch):
    import socket
    import threading
    from tasks import serve
    from tasks.pipeline import Pipeline
    from tasks.serve import make_server
    monkeypatch.setattr(serve, "TIMEOUT", 3)
    pipeline = Pipeline(str(demo_model / "best"))
    dev = os.path.join(ROOT, "tasks", "demo_data", "dureader_qg", "dev.json")
    records = [json.loads(line) for line in open(dev, encoding="utf-8")][:6]
    server = make_server(pipeline, str(demo_model / "best"), "127.0.0.1", 0, max_inputs=8)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = "http://127.0.0.1:%d" % server.server_address[1]
    try:
        status, answer = http(url + "/predict", json.dumps({"inputs": records}, ensure_ascii=False).encode("utf-8"))
        assert status == 200 and answer == {"predictions": pipeline(records)}
        status, answer = http(url + "/health")
        assert status == 200 and answer["task"] == "dureader_qg" and answer["decode"]["num_beams"] == 3
        for body, code, error in [
                (b"{not json", 400, "the body is not UTF-8 JSON"),
                (b'{"input": []}', 400, 'expected {"inputs": [record, ...]}'),
                (json.dumps({"inputs": [records[0], {"context": "x"}]}).encode(), 400,
                 "input 1: missing field 'answer'"),
                (json.dumps({"inputs": records[:1] * 9}).encode(), 400, "9 inputs; at most 8 per request"),
                (b"[" * 100000 + b"]" * 100000, 400, "the body is not UTF-8 JSON (RecursionError"),
                (b" " * ((16 << 20) + 1), 413, f"a body of {(16 << 20) + 1} bytes; at most {16 << 20}")]:
            status, answer = http(url + "/predict", body)
            assert status == code and error in answer["error"], answer
        for length, code, error in [(None, 411, "no Content-Length"), ("abc", 400, "Content-Length 'abc' is not"),
                                    ("-1", 400, "Content-Length '-1' is not")]:
            status, answer = raw_request(server.server_address[1], "POST", "/predict", length)
            assert status == code and error in answer["error"], answer
        assert http(url + "/generate", b"{}")[0] == 404 and http(url + "/")[0] == 404
        assert http(url + "/predict") == (405, {"error": "GET /predict: use POST"})
        assert raw_request(server.server_address[1], "PUT", "/health") == (405, {"error": "PUT /health: use GET"})
        silent = socket.create_connection(server.server_address[:2])  # holds its own connection only
        try:
            assert http(url + "/health?verbose=1")[0] == 200
        finally:
            silent.close()
        status, answer = http(url + "/predict", json.dumps({"inputs": records[:2]}).encode())  # still serving
        assert status == 200 and answer["predictions"] == pipeline(records[:2])
        port = server.server_address[1]
        short = b"POST /predict HTTP/1.1\r\nContent-Length: 100\r\n\r\n" + b'{"inputs": []}'
        assert exchange(port, short) == (400, {"error": "the body ended after 14 of the 100 bytes of its "
                                                        "Content-Length"})
        assert exchange(port, short, half_close=False) == (408, {"error": "the body did not arrive within 3 s"})
        assert exchange(port, b"BREW /health HTTP/1.1\r\n\r\n") == (501, {"error": "Unsupported method ('BREW')"})
        assert exchange(port, b"HEAD /health HTTP/1.1\r\n\r\n") == (200, None)
        body = json.dumps({"inputs": records[:1]}, ensure_ascii=False).encode("utf-8")
        assert http(url + "/predict", b"\xef\xbb\xbf" + body) == (200, {"predictions": pipeline(records[:1])})
    finally:
        server.shutdown()
        server.server_close()


def test_the_serve_command_starts_and_answers(demo_model, tmp_path):
    """``python -m tasks.serve`` (``make serve``) on a free port, from the export folder."""
    import socket
    import subprocess
    import sys
    import time
    from tools import export_model as export_tool
    export_tool.main(["--model", str(demo_model / "best"), "--out", str(tmp_path / "inference")])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "tasks.serve", "--model", str(tmp_path / "inference"), "--port",
                               str(port), "--num-return-sequences", "2"], cwd=ROOT,
                              stderr=open(tmp_path / "serve.log", "w"))
    try:
        deadline = time.time() + 120
        while True:
            try:
                status, health = http(f"http://127.0.0.1:{port}/health")
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(0.5)
        assert status == 200 and health["decode"]["num_return_sequences"] == 2
        assert health["runtime"] == "Paddle Inference, paddle's operators"  # the export's programs that run
        record = {"context": "青石镇位于河谷，人口约3万。", "answer": "3万"}
        status, answer = http(f"http://127.0.0.1:{port}/predict", json.dumps({"inputs": [record]}).encode())
        from tasks.pipeline import Pipeline
        assert status == 200
        assert answer["predictions"] == Pipeline(str(demo_model / "best"), num_return_sequences=2)([record])
        assert len(answer["predictions"][0]) == 2
        second = subprocess.run([sys.executable, "-m", "tasks.serve", "--model", str(tmp_path / "inference"),
                                 "--port", str(port)], cwd=ROOT, capture_output=True, text=True, timeout=300)
        errors = [line for line in second.stderr.splitlines() if line.startswith("error: ")]
        assert second.returncode == 2 and "Traceback" not in second.stderr, second.stderr
        assert len(errors) == 1 and f"--port {port}: cannot listen there" in errors[0], errors
        server.terminate()  # SIGTERM, as a scheduler sends: stops as Ctrl-C does
        assert server.wait(timeout=30) == 0
        assert "stopped" in (tmp_path / "serve.log").read_text()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=30)


def test_a_prompted_model_learns_the_prefix_and_predicts_without_it(tmp_path, caplog):
    """PaddleNLP's question-generation --template 1 as config: 8 memorised questions are generated after the target
    prefix, which the predictions leave out; predict and the pipeline read the prompt from the folder's task.yaml,
    and the vocabulary built from the data holds the prompt's characters."""
    from paddle_unimo.generation import generate as decode
    from tasks.pipeline import Pipeline
    dev = os.path.join(ROOT, "tasks", "demo_data", "dureader_qg", "dev.json")
    lines = open(dev, encoding="utf-8").read().splitlines()[:8]
    for split in ("train", "dev"):
        (tmp_path / f"{split}.json").write_text("\n".join(lines) + "\n", encoding="utf-8")
    prompt = ["-o", "data.source_template=答案：{title}[SEP]上下文：{source}", "-o", "data.target_prefix=问题："]
    out = tmp_path / "out"
    metrics = run.execute(["finetune", "--config", CONFIG.format("dureader_qg"), "--data", str(tmp_path), "--out",
                           str(out), *WIRING, "-o", "train.epochs=80", *prompt])
    targets = [json.loads(line)["question"] for line in lines]
    assert predictions_of(out) == targets and metrics["bleu4"] == pytest.approx(100.0)
    model, tokenizer = UNIMOLMHeadModel.from_pretrained(str(out / "best")), load_tokenizer(str(out / "best"))
    assert all(tokenizer.encode(c) != [tokenizer.unk_token_id] for c in "答案上下文问题：[]")
    runner = get_task("dureader_qg").bind(model, tokenizer, load_config(str(out / "best" / "task.yaml"), (),
                                                                          get_task("dureader_qg").config_class))
    assert runner.encoder.prefix_ids == tokenizer.encode("问题：")
    examples, _ = runner.task.read(str(tmp_path / "dev.json"), runner.cfg)
    batch = decoding_batch(runner.encoder.encode_all(examples, with_target=False), model.config.pad_token_id, 0)
    ids, _ = decode(model, **{k: paddle.to_tensor(v) for k, v in batch.items()}, max_length=20)
    assert all(list(row[:3]) == runner.encoder.prefix_ids for row in ids.numpy())  # the model writes the prefix
    pred = tmp_path / "pred"
    run.execute(["predict", "--model", str(out / "best"), "--out", str(pred), "--data", str(tmp_path)])
    assert predictions_of(pred) == targets
    assert Pipeline(str(out / "best"))([json.loads(line) for line in lines[:3]]) == targets[:3]
    with caplog.at_level(logging.WARNING):  # the stock config has no prompt: predictions suffer, and it says so
        run.execute(["predict", "--model", str(out / "best"), "--out", str(pred), "--data", str(tmp_path),
                     "--config", CONFIG.format("dureader_qg")])
    assert "data.source_template is '', but" in caplog.text and "data.target_prefix is '', but" in caplog.text
    assert predictions_of(pred) != targets


def test_skip_bad_trains_on_the_good_lines_and_lists_the_bad_ones(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    good = json.dumps({"context": "青石镇人口3万", "answer": "3万", "question": "青石镇人口多少"}, ensure_ascii=False)
    bad = ['{"context": "x", "answer": "y"}', "{broken"]
    (data / "train.json").write_text("\n".join([good] * 20 + bad) + "\n", "utf-8")
    (data / "dev.json").write_text(good + "\n", "utf-8")
    metrics = run.execute(["finetune", "--config", CONFIG.format("dureader_qg"), "--data", str(data), "--out",
                        str(tmp_path / "o"), "-o", "train.max_steps=2", "-o", "train.progress=false", "--skip-bad"])
    assert metrics["skipped_lines"] == 2
    skipped = [json.loads(x) for x in (tmp_path / "o" / "skipped.jsonl").read_text("utf-8").splitlines()]
    assert [s["line"] for s in skipped] == [21, 22]
    assert "missing field 'question'" in skipped[0]["reason"] and "malformed JSON" in skipped[1]["reason"]


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    path = str(tmp_path / "metrics.json")
    atomic_write(path, "old")
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        atomic_write(path, "new")
    assert open(path, encoding="utf-8").read() == "old"
    assert os.listdir(tmp_path) == ["metrics.json"]  # no temporary file left behind
