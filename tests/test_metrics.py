"""paddle_unimo.metrics: BLEU-4 against paddlenlp, ROUGE / distinct-n / consistency against hand-worked values."""
import json
import math
import random
import sys

import pytest
from rouge_score import rouge_scorer

from paddle_unimo.metrics import (attribute_report, bleu4, build_value_vocabulary, consistency_report,
                                  distinct_n, parse_attributes, rouge, tokenize_for_metric, unsupported_spans)

from conftest import shared_path


def reference_bleu(predictions, references):
    """100 * paddlenlp.metrics.BLEU(n_size=4), fed our metric tokens."""
    metrics = pytest.importorskip("paddlenlp.metrics")
    bleu = metrics.BLEU(n_size=4)
    for pred, refs in zip(predictions, references):
        refs = [refs] if isinstance(refs, str) else refs
        bleu.add_inst(tokenize_for_metric(pred), [tokenize_for_metric(r) for r in refs])
    return 100 * bleu.score()


def read_jsonl(*parts):
    return [json.loads(line) for line in shared_path(*parts).read_text(encoding="utf-8").splitlines()]


def read_lcsts():
    rows = [line.split("\t") for line in shared_path("lcsts", "val_part1.tsv").read_text(encoding="utf-8").splitlines()]
    return [summary for summary, _ in rows], [content for _, content in rows]


# ---- tokenization -------------------------------------------------------------------------------------

def test_tokenize_for_metric_splits_cjk_lowercases_and_splits_punctuation():
    assert tokenize_for_metric("我爱Paddle, NLP！") == ["我", "爱", "paddle", ",", "nlp", "！"]


# ---- BLEU-4: hand-worked ------------------------------------------------------------------------------

def test_bleu4_hand_worked_single_pair():
    # 我爱北京天安门 (7 chars) vs 我爱北京故宫 (6 chars). Clipped matches / candidate n-grams:
    # 1-gram 我,爱,北,京 = 4/7; 2-gram 我爱,爱北,北京 = 3/6; 3-gram 我爱北,爱北京 = 2/5; 4-gram 我爱北京 = 1/4.
    # c = 7 > r = 6 so BP = 1; BLEU = (4/7 * 1/2 * 2/5 * 1/4) ** (1/4) = (1/35) ** 0.25 = 0.41113...
    assert bleu4(["我爱北京天安门"], ["我爱北京故宫"]) == pytest.approx(100 * (1 / 35) ** 0.25, abs=1e-9)
    assert bleu4(["我爱北京天安门"], ["我爱北京故宫"]) == pytest.approx(41.1133616900520, abs=1e-9)


def test_bleu4_hand_worked_brevity_penalty():
    # 我爱北京 vs 我爱北京天安门: every n-gram precision is 1 (4/4, 3/3, 2/2, 1/1);
    # c = 4, r = 7, BP = exp(1 - 7/4) = exp(-0.75) -> 47.2366552741...
    assert bleu4(["我爱北京"], ["我爱北京天安门"]) == pytest.approx(100 * math.exp(-0.75), abs=1e-9)


def test_bleu4_hand_worked_corpus_sums_counts_not_scores():
    # pair 1 as above: matches 4,3,2,1 of 7,6,5,4; pair 2 你好 vs 你好吗: matches 2,1,0,0 of 2,1,0,0.
    # corpus p = 6/9, 4/7, 2/5, 1/4; c = 7+2 = 9, r = 6+3 = 9 -> BP = 1.
    # BLEU = (6/9 * 4/7 * 2/5 * 1/4) ** 0.25 = (4/105) ** 0.25 = 0.44179...
    score = bleu4(["我爱北京天安门", "你好"], ["我爱北京故宫", "你好吗"])
    assert score == pytest.approx(100 * (4 / 105) ** 0.25, abs=1e-9)


def test_bleu4_zero_precision_uses_float_min_like_paddlenlp():
    # 我爱你 vs 我爱他: p1 = 2/3, p2 = 1/2, p3 = 0/1 and p4 = 0/0 both become sys.float_info.min; BP = 1.
    expected = 100 * math.exp(0.25 * (math.log(2 / 3) + math.log(1 / 2) + 2 * math.log(sys.float_info.min)))
    score = bleu4(["我爱你"], ["我爱他"])
    assert 0 < score < 1e-150
    assert score == pytest.approx(expected, rel=1e-12)


def test_bleu4_multi_reference_closest_length_tie_takes_shorter():
    # 我爱北京 (4) vs refs 我爱北 (3) and 我爱北京门 (5): all n-grams clip against the second ref -> p_n = 1;
    # both refs are 1 token away, the tie takes the shorter (r = 3 < c = 4) so BP = 1 and BLEU = 100.
    assert bleu4(["我爱北京"], [["我爱北", "我爱北京门"]]) == pytest.approx(100.0, abs=1e-9)
    # with only the longer reference: BP = exp(1 - 5/4)
    assert bleu4(["我爱北京"], [["我爱北京门"]]) == pytest.approx(100 * math.exp(-0.25), abs=1e-9)


def test_bleu4_edge_cases():
    assert bleu4(["", ""], ["我", "你"]) == 0.0  # paddlenlp would divide by zero
    assert bleu4([], []) == 0.0
    assert bleu4(["the cat sat on the mat"], ["The cat sat on the mat."]) == pytest.approx(
        reference_bleu(["the cat sat on the mat"], ["The cat sat on the mat."]), abs=1e-9)
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        bleu4(["a", "b"], ["a"])


# ---- BLEU-4: equality with paddlenlp ------------------------------------------------------------------

VOCAB = list("我爱北京天安门上海的是了，。") + ["cat", "Dog", "the", "2024", "!"]


def random_text(rng, max_len=12):
    return " ".join(rng.choice(VOCAB) for _ in range(rng.randint(0, max_len)))


def test_bleu4_equals_paddlenlp_on_random_corpora():
    rng = random.Random(20240601)
    checked = 0
    for _ in range(300):
        size = rng.randint(1, 8)
        preds = [random_text(rng) for _ in range(size)]
        refs = [random_text(rng, 14) if rng.random() < 0.5 else [random_text(rng, 14) for _ in range(3)]
                for _ in range(size)]
        refs = [r if r else "我" for r in refs]  # references are never all-empty lists
        if not any(tokenize_for_metric(p) for p in preds):
            assert bleu4(preds, refs) == 0.0
            continue
        assert bleu4(preds, refs) == pytest.approx(reference_bleu(preds, refs), abs=1e-9, rel=1e-12)
        checked += 1
    assert checked > 250


def test_bleu4_equals_paddlenlp_on_dureader_qg():
    rows = read_jsonl("dureader_qg", "sample.jsonl")
    refs = [r["question"] for r in rows]
    preds = [rows[i - 1]["question"] if i % 3 else r["answer"] + r["question"][:4] for i, r in enumerate(rows)]
    assert bleu4(preds, refs) == pytest.approx(reference_bleu(preds, refs), abs=1e-9)
    for pred, ref in list(zip(preds, refs))[:40]:  # sentence level too, including many zero precisions
        assert bleu4([pred], [ref]) == pytest.approx(reference_bleu([pred], [ref]), abs=1e-9)


def test_bleu4_equals_paddlenlp_on_advertisegen_multi_reference():
    summaries = [r["summary"] for r in read_jsonl("advertisegen", "dev_part1.jsonl")][:200]
    preds = [s[: len(s) // 2] for s in summaries]
    refs = [[s, summaries[i - 1]] for i, s in enumerate(summaries)]
    assert bleu4(preds, refs) == pytest.approx(reference_bleu(preds, refs), abs=1e-9)


def test_bleu4_equals_paddlenlp_on_lcsts_lead_baseline():
    summaries, contents = read_lcsts()
    preds = [c[: len(s)] for s, c in zip(summaries, contents)]
    assert bleu4(preds, summaries) == pytest.approx(reference_bleu(preds, summaries), abs=1e-9)
    assert 0 < bleu4(preds, summaries) < 100


# ---- ROUGE --------------------------------------------------------------------------------------------

def test_rouge_hand_worked_chinese():
    # 我爱北京 vs 我爱上海: unigrams overlap 我,爱 = 2/4 -> F 50; bigrams 我爱 of 3 -> F 33.33; LCS 我爱 = 2 -> F 50.
    scores = rouge(["我爱北京"], ["我爱上海"])
    assert scores == pytest.approx({"rouge1": 50.0, "rouge2": 100 / 3, "rougeL": 50.0}, abs=1e-9)
    # 北京是中国的首都 vs 中国的首都是北京 (8 chars each): same characters -> R1 100; bigrams shared
    # 北京,中国,国的,的首,首都 = 5 of 7 -> F 71.43; LCS 中国的首都 = 5 of 8 -> F 62.5. Mean over both examples:
    scores = rouge(["我爱北京", "北京是中国的首都"], ["我爱上海", "中国的首都是北京"])
    assert scores == pytest.approx({"rouge1": 75.0, "rouge2": (100 / 3 + 500 / 7) / 2, "rougeL": 56.25}, abs=1e-9)


def test_rouge_keeps_non_ascii_tokens_and_takes_best_reference():
    assert rouge(["世界"], ["世界"]) == pytest.approx({"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0})
    assert rouge(["Hello 世界"], ["hello 世界"])["rouge2"] == pytest.approx(100.0)
    assert rouge(["我爱北京"], [["我爱上海", "我爱北京"]]) == pytest.approx(
        {"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0})
    assert rouge([""], ["我爱北京"]) == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    assert rouge([], []) == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}


def test_rouge_equals_default_scorer_on_ascii_placeholders_lcsts():
    """Same numbers as rouge-score's stock tokenizer fed each metric token as an ASCII placeholder."""
    summaries, contents = read_lcsts()
    preds = [c[: len(s)] for s, c in zip(summaries, contents)]
    ids = {}

    def placeholders(text):
        return " ".join("t%d" % ids.setdefault(t, len(ids)) for t in tokenize_for_metric(text))

    stock = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for pred, ref in zip(preds, summaries):
        for key, score in stock.score(placeholders(ref), placeholders(pred)).items():
            totals[key] += 100 * score.fmeasure / len(preds)
    assert rouge(preds, summaries) == pytest.approx(totals, abs=1e-9)


# ---- distinct-n ---------------------------------------------------------------------------------------

def test_distinct_n_hand_worked():
    preds = ["我爱我家", "我爱"]
    # unigrams 我 爱 我 家 | 我 爱: 6 in all, 3 distinct (我 爱 家) -> 0.5
    assert distinct_n(preds, 1) == pytest.approx(0.5)
    # bigrams 我爱 爱我 我家 | 我爱 (none across the boundary): 4 in all, 3 distinct -> 0.75
    assert distinct_n(preds, 2) == pytest.approx(0.75)
    # trigrams 我爱我 爱我家: 2 of 2
    assert distinct_n(preds, 3) == pytest.approx(1.0)
    # English words are single tokens: the cat the dog -> unigrams 3/4, bigrams 3/3
    assert distinct_n(["The cat the dog"], 1) == pytest.approx(0.75)
    assert distinct_n(["The cat the dog"], 2) == pytest.approx(1.0)


def test_distinct_n_without_ngrams_is_zero():
    assert distinct_n([], 1) == 0.0
    assert distinct_n(["我"], 2) == 0.0
    with pytest.raises(ValueError):
        distinct_n(["我"], 0)


# ---- consistency --------------------------------------------------------------------------------------

def test_parse_attributes():
    assert parse_attributes("类型#上衣*材质#牛仔布*颜色#白色*风格#简约") == [
        ("类型", "上衣"), ("材质", "牛仔布"), ("颜色", "白色"), ("风格", "简约")]
    assert parse_attributes("") == []
    with pytest.raises(ValueError, match="材质牛仔布"):
        parse_attributes("类型#上衣*材质牛仔布")


def test_attribute_report_hand_worked():
    vocabulary = {"颜色": {"白色", "黑色"}, "类型": {"上衣", "裤"}}
    report = attribute_report("颜色#白色*类型#上衣", "这件黑色上衣", vocabulary)
    # 上衣 present, 白色 absent -> 1/2; 黑色 is another 颜色 value -> 1 contradiction
    assert report == {"coverage": 0.5, "contradictions": 1, "missing": ["白色"], "contradicting_values": ["黑色"]}
    # whitespace of decoded output and case are ignored
    assert attribute_report("颜色#白色*类型#T恤", "白 色 t 恤", {"颜色": {"白色"}})["coverage"] == 1.0
    assert attribute_report("", "随便写", vocabulary) == {
        "coverage": 1.0, "contradictions": 0, "missing": [], "contradicting_values": []}


def test_attribute_report_no_double_counting():
    vocabulary = {"颜色": {"深蓝色", "蓝色", "白色", "浅灰色", "灰色"}, "图案": {"条纹"}}
    # 蓝色 inside the source's own 深蓝色 is not a contradiction
    assert attribute_report("颜色#深蓝色", "深蓝色外套", vocabulary)["contradictions"] == 0
    assert attribute_report("颜色#深蓝色", "深蓝色外套，内搭白色", vocabulary)["contradicting_values"] == ["白色"]
    # 浅灰色 is one contradiction, not two (灰色 is inside it)
    report = attribute_report("颜色#白色", "浅灰色卫衣", vocabulary)
    assert (report["contradictions"], report["contradicting_values"]) == (1, ["浅灰色"])
    # only the source's own attribute types are checked
    assert attribute_report("颜色#白色", "白色条纹衬衫", vocabulary)["contradictions"] == 0


def test_unsupported_spans_hand_worked():
    source = "售价199元，“春季新款”上市，面料3.5米"
    generated = "售价１９９元，打8折，５０％的人选择“春季新款”和《时尚》，面料3.5米，再送3米"
    # 199 (full-width in the output) and 3.5 are in the source; 8, 50% and 3 are not; 春季新款 is quoted
    # in the source, 时尚 is not.
    assert unsupported_spans(source, generated) == {"numbers": ["8", "50%", "3"], "quotes": ["时尚"]}
    # ASCII thousands separators: one number, compared without them; a full-width comma separates numbers
    assert unsupported_spans("相比8088港元", "售价8,088港元，优惠1,500") == {"numbers": ["1,500"], "quotes": []}
    assert unsupported_spans("适合身高160-170", "适合身高160，165，170")["numbers"] == ["165"]
    assert unsupported_spans("1234", "1,2345")["numbers"] == ["1", "2345"]  # not a grouped number
    assert unsupported_spans("第15名", "第5名，第5名")["numbers"] == ["5"]  # whole numbers, listed once
    assert unsupported_spans("他说：今天天气好", "他说「今天 天气好」，又称\"大晴天\"")["quotes"] == ["大晴天"]


def test_consistency_report_hand_worked():
    sources = ["颜色#白色*类型#上衣", "颜色#黑色*类型#裤"]
    preds = ["这件黑色上衣，仅售99元", "黑色的裤子"]
    vocabulary = {"颜色": {"白色", "黑色"}, "类型": {"上衣", "裤"}}
    # example 1: coverage 1/2, 1 contradiction (黑色), 1 unsupported number (99); example 2: coverage 1, none.
    expected = {"task": "advertisegen", "examples": 2, "unsupported_numbers": 1, "unsupported_number_rate": 0.5,
                "unsupported_quotes": 0, "unsupported_quote_rate": 0.0, "coverage": 0.75, "contradictions": 1,
                "contradictions_per_example": 0.5}
    assert consistency_report(sources, preds, "advertisegen", vocabulary) == expected
    assert consistency_report(sources, preds, "advertisegen") == expected  # vocabulary built from sources
    lcsts = consistency_report(["2024年GDP增长5%"], ["GDP增长5.2%，称“超预期”"], "lcsts")
    assert lcsts == {"task": "lcsts", "examples": 1, "unsupported_numbers": 1, "unsupported_number_rate": 1.0,
                     "unsupported_quotes": 1, "unsupported_quote_rate": 1.0}


def test_consistency_on_advertisegen_data():
    rows = read_jsonl("advertisegen", "dev_part1.jsonl")
    contents = [r["content"] for r in rows]
    vocabulary = build_value_vocabulary(contents)
    assert {"上衣", "裙", "裤"} <= vocabulary["类型"] and {"白色", "黑色"} <= vocabulary["颜色"]
    first = attribute_report(contents[0], rows[0]["summary"], vocabulary)
    # values 上衣 牛仔布 白色 简约 刺绣 外套 破洞; the reference says 牛仔外套 and never 上衣 -> 5/7
    assert first["missing"] == ["上衣", "牛仔布"] and first["coverage"] == pytest.approx(5 / 7)
    report = consistency_report(contents, contents, "advertisegen", vocabulary)
    assert report["coverage"] == 1.0 and report["unsupported_numbers"] == 0


def test_consistency_identity_on_lcsts_and_dureader_is_clean():
    _, contents = read_lcsts()
    contexts = [r["context"] for r in read_jsonl("dureader_qg", "sample.jsonl")]
    for task, texts in (("lcsts", contents), ("dureader_qg", contexts)):
        report = consistency_report(texts, texts, task)
        assert (report["unsupported_numbers"], report["unsupported_quotes"]) == (0, 0)
