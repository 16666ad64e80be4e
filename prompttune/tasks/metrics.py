"""Metrics: classification by scikit-learn; generation by sacrebleu (BLEU, chrF) and rouge-score
(ROUGE-1/2/L), each against every reference of a source."""

from __future__ import annotations

from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, precision_recall_fscore_support


def classification_metrics(predictions, labels, label_names) -> dict:
    indices = list(range(len(label_names)))
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predictions, labels=indices, average="macro", zero_division=0
    )
    report = classification_report(
        labels, predictions, labels=indices, target_names=list(label_names), output_dict=True, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "precision_macro": float(precision),
        "recall_macro": float(recall),
        "f1_macro": float(f1),
        "per_class": {name: {k: float(v) for k, v in report[name].items()} for name in label_names},
        "confusion_matrix": confusion_matrix(labels, predictions, labels=indices).tolist(),
        "count": len(labels),
    }


def generation_metrics(hypotheses: list[str], references: list[list[str]]) -> dict:
    """Corpus BLEU and chrF (sacrebleu, default tokenisation) and mean ROUGE F1 (rouge-score, with
    stemming; the best reference per source), for one hypothesis per source and one or more
    references each."""
    import sacrebleu
    from rouge_score import rouge_scorer

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} reference lists")
    if not hypotheses:
        raise ValueError("no hypotheses to score")
    depth = max(len(r) for r in references)
    # sacrebleu takes reference streams; sources with fewer references fill the rest with None.
    streams = [[refs[i] if i < len(refs) else None for refs in references] for i in range(depth)]
    bleu = sacrebleu.corpus_bleu(hypotheses, streams)
    chrf = sacrebleu.corpus_chrf(hypotheses, streams)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for hypothesis, refs in zip(hypotheses, references):
        scores = scorer.score_multi(refs, hypothesis)
        for key in totals:
            totals[key] += scores[key].fmeasure
    count = len(hypotheses)
    return {
        "bleu": float(bleu.score),
        "chrf": float(chrf.score),
        **{key: 100.0 * value / count for key, value in totals.items()},
        "count": count,
        "references_per_source": sum(len(r) for r in references) / count,
    }


def e2e_metrics(hypotheses: list[str], references: list[list[str]]) -> dict:
    """The E2E NLG Challenge's other metrics, as its scoring script computes them, on lower-cased
    text split by sacrebleu's 13a tokeniser: NIST (nltk, 5-grams), METEOR 1.5 (pycocoevalcap's
    jar, which needs Java; reported x100 like BLEU and ROUGE) and CIDEr (pycocoevalcap's, the
    corpus of references as its document frequencies). One hypothesis per source, one or more
    references each. Needs `pip install 'prompttune[e2e]'` and a Java runtime."""
    import shutil

    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    from ..errors import ConfigError

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} reference lists")
    if not hypotheses or any(not refs for refs in references):
        raise ValueError("every source needs a hypothesis and at least one reference")
    try:
        from nltk.translate.nist_score import corpus_nist
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.meteor.meteor import Meteor
    except ImportError as error:
        raise ConfigError(f"E2E metrics: {error.name} is not installed (pip install 'prompttune[e2e]')") from None
    if shutil.which("java") is None:
        raise ConfigError(
            "E2E metrics: METEOR 1.5 runs on Java, and no `java` is on the PATH "
            "(e.g. apt-get install default-jre-headless)"
        )
    tokenize = Tokenizer13a()

    def norm(text: str) -> str:
        return tokenize(text.lower().strip())

    hyps = [norm(h) for h in hypotheses]
    refs = [[norm(r) for r in rs] for rs in references]
    # An n-gram order no hypothesis reaches adds nothing (mteval's 0/0); nltk would divide by zero.
    longest = max(len(h.split()) for h in hyps)
    nist = (
        corpus_nist([[r.split() for r in rs] for rs in refs], [h.split() for h in hyps], n=min(5, longest))
        if longest
        else 0.0
    )
    gts = {i: rs for i, rs in enumerate(refs)}
    res = {i: [h] for i, h in enumerate(hyps)}
    cider, _ = Cider().compute_score(gts, res)
    meteor_scorer = Meteor()
    try:
        meteor, _ = meteor_scorer.compute_score(gts, res)
    finally:
        del meteor_scorer  # stops its Java process
    return {"nist": float(nist), "meteor": 100.0 * float(meteor), "cider": float(cider)}


#: Below this many examples a group's figures are flagged as unstable.
SMALL_GROUP = 30


def group_gaps(per_group: dict[str, dict], metrics: tuple[str, ...], higher_is_better) -> dict:
    """For each metric every group has: the largest gap between two groups, which groups score
    best and worst (by `higher_is_better(metric)`), and their counts."""
    gaps = {}
    for metric in metrics:
        scored = {g: m[metric] for g, m in per_group.items() if isinstance(m.get(metric), (int, float))}
        if len(scored) < 2:
            continue
        order = sorted(scored, key=scored.get, reverse=higher_is_better(metric))
        best, worst = order[0], order[-1]
        gaps[metric] = {
            "gap": abs(scored[best] - scored[worst]),
            "best": best,
            "worst": worst,
            "best_count": per_group[best]["count"],
            "worst_count": per_group[worst]["count"],
        }
    return gaps
