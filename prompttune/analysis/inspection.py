"""Looking inside a learned prompt: `prompttune inspect DIR`.

- A soft prompt (or P-tuning's output): for each virtual token, its nearest vocabulary tokens by
  cosine similarity, its norm against the vocabulary's norms (the percentile among the embedding
  rows' norms), and, for classification, its cosine similarity to each label word and that word's
  rank among the token's neighbours (Lester et al. 2021, section 7, found that prompts initialised
  from class labels keep the label words as neighbours).
- A prefix (prefix tuning, deep prompt tuning): for each site, layer and prefix position, the
  vocabulary tokens whose own keys and values at that layer (each token read alone) are nearest by
  cosine similarity, and the prefix's norm against theirs.
- A hard or searched prompt: its template.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from ..artifacts.artifact import load_prompt, prompt_meta
from ..core.backbone import word_for_tokenizer


def _neighbours(vectors: torch.Tensor, table: torch.Tensor, tokenizer, ids: torch.Tensor, top: int):
    """Per row of `vectors`: the `top` rows of `table` (token `ids`) nearest by cosine."""
    similarity = F.normalize(vectors.float(), dim=-1) @ F.normalize(table.float(), dim=-1).T  # (N, V)
    values, index = similarity.topk(min(top, table.shape[0]), dim=-1)
    return similarity, [
        [
            {"token": tokenizer.convert_ids_to_tokens(int(ids[i])), "cosine": round(float(v), 4)}
            for v, i in zip(row_values, row_index)
        ]
        for row_values, row_index in zip(values, index)
    ]


def _percentile(value: float, norms: torch.Tensor) -> float:
    return round(100.0 * float((norms < value).float().mean()), 1)


def _label_ids(model) -> dict[str, list[int]]:
    tokenizer = model.backbone.tokenizer
    out = {}
    for label, words in model.task.init_words().items():
        for word in words:
            ids = tokenizer(word_for_tokenizer(model.backbone, word), add_special_tokens=False)["input_ids"]
            if ids:
                out[f"{label}:{word}"] = ids
    return out


def _vocabulary(model) -> torch.Tensor:
    special = set(model.backbone.tokenizer.all_special_ids)
    size = model.backbone.input_embeddings.weight.shape[0]
    return torch.tensor([i for i in range(size) if i not in special], device=model.backbone.device)


@torch.no_grad()
def inspect_prompt(
    directory: str | os.PathLike,
    top: int = 5,
    model: str | None = None,
    dtype: str | None = None,
    device_map: str | None = None,
) -> dict:
    """What `prompttune inspect` reports, as a dict."""
    from ..core.backbone import Backbone

    meta = prompt_meta(directory)
    backbone = None
    if model or dtype or device_map:
        backbone = Backbone.from_pretrained(
            model or meta["base_model"]["name_or_path"], dtype=dtype, device_map=device_map
        )
    prompt = load_prompt(directory, backbone=backbone)
    report = {"prompt": str(directory), "method": meta["method"], "task": meta["task"]}
    report.update(prompt.task.describe())
    if meta.get("searched"):
        report["searched"] = meta["searched"]
    parts = prompt.method.parts(prompt.backbone)
    tokenizer = prompt.backbone.tokenizer
    vocab = _vocabulary(prompt)
    if parts.num_virtual:
        weight = prompt.backbone.input_embeddings.weight.detach()[vocab].float()
        norms = weight.norm(dim=-1)
        similarity, neighbours = _neighbours(parts.virtual.detach(), weight, tokenizer, vocab, top)
        labels = _label_ids(prompt)
        rows = []
        for i, vector in enumerate(parts.virtual.detach().float()):
            row = {
                "index": i,
                "norm": round(float(vector.norm()), 4),
                "norm_percentile": _percentile(float(vector.norm()), norms),
                "nearest": neighbours[i],
            }
            if labels:
                row["labels"] = {}
                for name, ids in labels.items():
                    word = (
                        prompt.backbone.input_embeddings.weight.detach()[torch.tensor(ids, device=vocab.device)]
                        .float()
                        .mean(0)
                    )
                    cosine = float(F.cosine_similarity(vector, word, dim=0))
                    # Rank of the word's first token among this virtual token's neighbours (1 = nearest).
                    position = (vocab == ids[0]).nonzero()
                    rank = int((similarity[i] > similarity[i, position[0, 0]]).sum()) + 1 if len(position) else None
                    row["labels"][name] = {"cosine": round(cosine, 4), "rank": rank}
            rows.append(row)
        report["vocabulary_norm"] = {"median": round(float(norms.median()), 4), "max": round(float(norms.max()), 4)}
        report["virtual_tokens"] = rows
    if parts.prefix_length:
        report["prefix"] = _inspect_prefix(prompt, parts.prefix, vocab, top)
    return report


def _inspect_prefix(prompt, prefix: dict, vocab: torch.Tensor, top: int, chunk: int = 2048) -> list[dict]:
    """Per site and layer: each prefix position's nearest vocabulary tokens by their keys and values."""
    backbone = prompt.backbone
    tokenizer = backbone.tokenizer
    activations: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(vocab), chunk):
        ids = vocab[start : start + chunk].unsqueeze(1)  # each token read alone
        for site, kv in backbone.key_value_activations(ids).items():  # (L, 2, V, H, 1, d)
            activations.setdefault(site, []).append(kv[:, :, :, :, 0].permute(0, 2, 1, 3, 4).flatten(2).float())
    out = []
    for site in sorted(prefix):
        table = torch.cat(activations[site], dim=1)  # (L, V, 2*H*d)
        values = prefix[site].detach().float()  # (L, 2, H, P, d)
        layers, _, _, length, _ = values.shape
        vectors = values.permute(0, 3, 1, 2, 4).reshape(layers, length, -1)  # (L, P, 2*H*d)
        for layer in range(layers):
            norms = table[layer].norm(dim=-1)
            _, neighbours = _neighbours(vectors[layer], table[layer], tokenizer, vocab, top)
            out.append(
                {
                    "site": site,
                    "layer": layer,
                    "positions": [
                        {
                            "index": p,
                            "norm": round(float(vectors[layer, p].norm()), 4),
                            "norm_percentile": _percentile(float(vectors[layer, p].norm()), norms),
                            "nearest": neighbours[p],
                        }
                        for p in range(length)
                    ],
                }
            )
    return out


def format_report(report: dict) -> str:
    lines = [f"{report['prompt']}: {report['method']} ({report['task']})"]
    if "template" in report:
        lines.append(f"template: {report['template']}")
    if "searched" in report:
        lines.append(f"searched by {report['searched']['method']}: {report['searched']['prompt_text']!r}")
    if "virtual_tokens" in report:
        norm = report["vocabulary_norm"]
        lines.append(f"virtual tokens (vocabulary norms: median {norm['median']}, max {norm['max']}):")
        for row in report["virtual_tokens"]:
            nearest = ", ".join(f"{n['token']} {n['cosine']:.2f}" for n in row["nearest"])
            line = f"  {row['index']:3d}  norm {row['norm']:.2f} (p{row['norm_percentile']:.0f})  nearest: {nearest}"
            if row.get("labels"):
                line += "  labels: " + ", ".join(
                    f"{k} {v['cosine']:.2f} (#{v['rank']})" for k, v in row["labels"].items()
                )
            lines.append(line)
    for layer in report.get("prefix", []):
        cells = "; ".join(
            f"{p['index']}: " + " ".join(n["token"] for n in p["nearest"][:3]) for p in layer["positions"]
        )
        lines.append(f"  {layer['site']} layer {layer['layer']}: {cells}")
    return "\n".join(lines)


def plot_report(report: dict, path: str | os.PathLike) -> Path:
    """A heatmap: virtual tokens x (label words and nearest tokens) by cosine similarity, or, for a
    prefix, layers x positions by the cosine of the nearest vocabulary token (annotated)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    if "virtual_tokens" in report:
        rows = report["virtual_tokens"]
        columns = list(rows[0].get("labels", {}))
        neighbours = [n["token"] for row in rows for n in row["nearest"][:1]]
        grid = [[row["labels"][c]["cosine"] for c in columns] + [row["nearest"][0]["cosine"]] for row in rows]
        labels_x = columns + ["nearest"]
        fig, ax = plt.subplots(figsize=(1.2 * len(labels_x) + 2, 0.35 * len(rows) + 1.5))
        image = ax.imshow(grid, cmap="viridis", aspect="auto", vmin=-1, vmax=1)
        ax.set_xticks(range(len(labels_x)), labels_x, rotation=45, ha="right")
        ax.set_yticks(range(len(rows)), [f"{r['index']}: {t}" for r, t in zip(rows, neighbours)])
        ax.set_xlabel("cosine similarity to label words, and to the nearest vocabulary token")
    else:
        layers = report.get("prefix", [])
        if not layers:
            raise ValueError(f"{report['prompt']}: a {report['method']} prompt has no learned vectors to plot")
        names = [f"{layer['site']} {layer['layer']}" for layer in layers]
        grid = [[p["nearest"][0]["cosine"] for p in layer["positions"]] for layer in layers]
        fig, ax = plt.subplots(figsize=(0.9 * len(grid[0]) + 2, 0.4 * len(grid) + 1.5))
        image = ax.imshow(grid, cmap="viridis", aspect="auto", vmin=-1, vmax=1)
        for i, layer in enumerate(layers):
            for j, p in enumerate(layer["positions"]):
                ax.text(j, i, p["nearest"][0]["token"], ha="center", va="center", fontsize=6, color="white")
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("prefix position (text: nearest vocabulary token by its keys and values)")
    fig.colorbar(image, ax=ax)
    ax.set_title(f"{report['method']}: {Path(report['prompt']).name}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    from ..storage import save_figure

    save_figure(fig, path, dpi=120)
    plt.close(fig)
    return path


def inspect_command(
    directory: str,
    as_json: bool = False,
    png: str | None = None,
    top: int = 5,
    model: str | None = None,
    dtype: str | None = None,
    device_map: str | None = None,
) -> str:
    report = inspect_prompt(directory, top=top, model=model, dtype=dtype, device_map=device_map)
    if png:
        plot_report(report, png)
    return json.dumps(report, indent=2, ensure_ascii=False) if as_json else format_report(report)
