"""Generation metrics: sacrebleu and rouge-score over several references per source."""

import pytest

from prompttune.tasks.metrics import generation_metrics

pytestmark = pytest.mark.same_on_every_transformers  # reaches no transformers code


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
    expected = sacrebleu.corpus_bleu(
        ["the cat sat on a mat", "a dog barked at a postman"],
        [["the cat sat on the mat", "a dog barked at the postman"]],
    ).score
    assert good["bleu"] == pytest.approx(expected)


E2E_REFERENCES = [
    ["The Eagle is a cheap coffee shop near Burger King.", "Near Burger King is The Eagle, a low-priced coffee shop."],
    ["Alimentum serves Italian food in the city centre.", "In the city centre, Alimentum offers Italian dishes."],
    [
        "The Rice Boat is a family-friendly pub by the river.",
        "By the river there is a pub for families, The Rice Boat.",
    ],
    ["Zizzi is a highly rated French restaurant.", "Zizzi, a French restaurant, has a high customer rating."],
]


def test_e2e_metrics_rank_hypotheses_and_ignore_case_and_punctuation_spacing():
    """NIST, METEOR and CIDEr as the E2E challenge computes them: a hypothesis that is one of its
    references outscores a partly right one, which outscores one about another restaurant, on
    every metric; case and the spacing of punctuation do not change a score (the 13a tokeniser
    and lower-casing)."""
    from prompttune.tasks.metrics import e2e_metrics

    exact = [refs[0] for refs in E2E_REFERENCES]
    partial = [
        "The Eagle is an expensive coffee shop near the river.",
        "Alimentum serves Chinese food in Riverside.",
        "The Rice Boat is an adult-only pub near the centre.",
        "Zizzi is a poorly rated Italian restaurant.",
    ]
    wrong = [exact[1], exact[2], exact[3], exact[0]]  # each a good sentence about the wrong restaurant
    scores = {
        name: e2e_metrics(hyps, E2E_REFERENCES)
        for name, hyps in (("exact", exact), ("partial", partial), ("wrong", wrong))
    }
    for metric in ("nist", "meteor", "cider"):
        assert scores["exact"][metric] > scores["partial"][metric] > scores["wrong"][metric], (metric, scores)
    assert scores["exact"]["meteor"] > 95
    shouted = [h.upper().replace(".", " .") for h in exact]
    assert e2e_metrics(shouted, E2E_REFERENCES) == pytest.approx(scores["exact"])
    with pytest.raises(ValueError, match="4 hypotheses for 3 reference lists"):
        e2e_metrics(exact, E2E_REFERENCES[:3])
    # Hypotheses too short for 5-grams, or empty (a prompt that ends at once), score without failing.
    short = e2e_metrics(["the eagle", "", "", ""], E2E_REFERENCES)
    assert 0 < short["nist"] < scores["partial"]["nist"]
    assert e2e_metrics([""] * 4, E2E_REFERENCES)["nist"] == 0.0
