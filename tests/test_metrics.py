"""Generation metrics: sacrebleu and rouge-score over several references per source."""

import pytest

from prompttune.tasks.metrics import generation_metrics


def test_a_hypothesis_equal_to_any_reference_scores_perfectly():
    hypotheses = ["the cat sat on the mat", "a dog barked at the postman"]
    references = [["a cat was sitting on a mat", "the cat sat on the mat"], ["a dog barked at the postman"]]
    scores = generation_metrics(hypotheses, references)
    assert scores["bleu"] == pytest.approx(100.0)
    assert scores["chrf"] == pytest.approx(100.0)
    assert scores["rouge1"] == scores["rouge2"] == scores["rougeL"] == pytest.approx(100.0)
    assert scores["references_per_source"] == 1.5


def test_scores_fall_with_worse_hypotheses_and_match_sacrebleu():
    import sacrebleu

    references = [["the cat sat on the mat"], ["a dog barked at the postman"]]
    good = generation_metrics(["the cat sat on a mat", "a dog barked at a postman"], references)
    bad = generation_metrics(["mat", "postman dog"], references)
    assert bad["bleu"] < good["bleu"] < 100 and bad["rougeL"] < good["rougeL"] < 100
    expected = sacrebleu.corpus_bleu(["the cat sat on a mat", "a dog barked at a postman"],
                                     [["the cat sat on the mat", "a dog barked at the postman"]]).score
    assert good["bleu"] == pytest.approx(expected)
