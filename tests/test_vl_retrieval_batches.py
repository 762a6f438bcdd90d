"""Retrieval training batches as the original ``retrieval_reader.py`` builds them (per caption: the positive pair,
N other images with the caption, N other captions with the image, never the caption's own image), seeded for
exact resume, the hard-negative option, and the loss as the mean of the two circle losses."""
import numpy as np
import paddle
import pytest

from paddle_unimo import WordPieceTokenizer, get_preset
from paddle_unimo.data.regions import RegionRecord, RegionStore
from paddle_unimo.losses import circle_loss
from paddle_unimo.modeling import UNIMOForRetrieval
from tasks.cli import load_config
from tasks.flickr30k_retrieval import TASK
from tasks.vision_language import VLExample, model_inputs, to_tensors

WORDS = "red blue green ball box cat dog car tree".split()


@pytest.fixture()
def runner(tmp_path):
    rng = np.random.default_rng(1)
    store = RegionStore(str(tmp_path / "regions"))
    store.append([RegionRecord(f"{i}.jpg", 50, 50, np.array([[0, 0, 20, 20], [10, 10, 40, 30]], np.float32),
                               rng.normal(size=(2, 24)).astype(np.float32)) for i in range(6)])
    cfg = load_config("tasks/configs/flickr30k_retrieval_tiny.yaml", ["data.negatives=3", "data.hard_pool=5"],
                      TASK.config_class)
    cfg.data.regions = str(tmp_path / "regions")
    tokenizer = WordPieceTokenizer.build_char_vocab(WORDS, words=True)
    paddle.seed(0)
    model = UNIMOForRetrieval(get_preset("tiny", vocab_size=tokenizer.vocab_size, hidden_dropout_prob=0.0,
                                         attention_probs_dropout_prob=0.0, num_labels=0))
    examples = [VLExample(str(n), f"{n % 6}.jpg", " ".join(rng.choice(WORDS, 3))) for n in range(12)]
    r = TASK.bind(model, tokenizer, cfg)
    r.trainer(examples, [], str(tmp_path / "out"))
    return r


def rows(runner, batch, per):
    """(image, caption ids) of every row of a batch, grouped per positive caption."""
    images = batch["region_feats"]
    ids = [tuple(int(t) for t in row if t != runner.model.config.pad_token_id) for row in batch["input_ids"]]
    return [list(zip(images[i:i + per], ids[i:i + per])) for i in range(0, len(ids), per)]


def test_rows_are_positive_then_other_images_then_other_captions(runner):
    items = runner.train[:4]
    per = 1 + 2 * 3
    batch = runner.make_batch(items)
    feats = {image: runner.regions.batch([image], 11)["region_feats"][0] for _, _, image in runner.train}
    for (index, caption, image), group in zip(items, rows(runner, batch, per)):
        own = feats[image][:len(group[0][0])]
        np.testing.assert_array_equal(group[0][0][:len(own)], own)
        assert group[0][1] == tuple(caption)
        for feat, ids in group[1:4]:  # the caption with another image
            assert ids == tuple(caption) and not np.array_equal(feat[:len(own)], own)
        for feat, ids in group[4:]:  # the image with a caption of another image
            np.testing.assert_array_equal(feat[:len(own)], own)
            assert ids in {tuple(c) for _, c, i in runner.train if i != image}


def test_negatives_depend_only_on_seed_step_and_caption(runner):
    items = runner.train[:3]
    first = runner.make_batch(items)["input_ids"]
    np.testing.assert_array_equal(runner.make_batch(items)["input_ids"], first)  # a resumed run draws the same
    runner.trainer_ref.state["micro"] += 1
    assert not np.array_equal(runner.make_batch(items)["input_ids"], first)  # the next step draws others


def test_hard_negatives_are_the_best_scored_of_the_pool(runner):
    runner.cfg.data.hard_negatives = True
    index, caption, image = runner.train[0]
    rng = np.random.default_rng([runner.cfg.train.seed, runner.trainer_ref.state["micro"], index])
    pool = [(runner.train[j][2], caption) for j in runner.negatives(index, rng, 5, image)]
    runner.model.eval()
    with paddle.no_grad():
        scores = runner.model(**model_inputs(to_tensors(runner.pair_batch([c for _, c in pool],
                                                                          [i for i, _ in pool])))).numpy()
    expected = [pool[i] for i in np.argsort(-scores, kind="stable")[:3]]
    batch = runner.make_batch([runner.train[0]])
    chosen = runner.pair_batch([c for _, c in expected], [i for i, _ in expected])
    np.testing.assert_array_equal(batch["region_feats"][1:4], chosen["region_feats"])


def test_a_hard_pool_smaller_than_the_negatives_is_a_config_error():
    from paddle_unimo.typed import ConfigError
    with pytest.raises(ConfigError, match=r"data.hard_pool: 5 candidates cannot give data.negatives 10 hard"):
        load_config("tasks/configs/flickr30k_retrieval_tiny.yaml", ["data.negatives=10", "data.hard_pool=5",
                                                                    "data.hard_negatives=true"], TASK.config_class)
    load_config("tasks/configs/flickr30k_retrieval_tiny.yaml", ["data.negatives=10", "data.hard_pool=5"],
                TASK.config_class)  # random negatives: the pool is not used


def test_loss_is_the_mean_of_the_two_circle_losses(runner):
    batch = to_tensors(runner.make_batch(runner.train[:4]))
    runner.model.eval()
    scores = runner.model(**model_inputs(batch)).reshape([4, 7])
    m, scale = runner.cfg.data.margin, runner.cfg.data.scale
    expected = (circle_loss(scores[:, 0], scores[:, 4:], m, scale)
                + circle_loss(scores[:, 0], scores[:, 1:4], m, scale)) / 2
    np.testing.assert_allclose(float(runner.loss(runner.model, batch)["loss"]), float(expected), rtol=1e-6)
