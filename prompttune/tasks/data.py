"""Reading examples from CSV, TSV, JSONL or Hugging Face `datasets`.

Every problem is reported as one line naming the file, the row (1-based, header not counted; for
JSONL the line) and the column, e.g. `train.csv, row 12, column 'text': empty text`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass(frozen=True)
class Example:
    text: str
    text_pair: str | None = None
    label: str | None = None
    origin: str = ""  # "file, row N": where the example came from, for error messages
    targets: tuple[str, ...] | None = None  # generation: reference texts for `text`


@dataclass(frozen=True)
class Columns:
    text: str = "text"
    text_pair: str | None = None
    label: str | None = "label"


DATA_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".ndjson")
# NAME[:CONFIG]:SPLIT, NAME possibly owner/name, SPLIT possibly sliced (train[:10%]).
HUB_SPEC = re.compile(r"[\w.-]+(/[\w.-]+)?(:[\w.-]+)?:[\w.\[\]%:+-]+")


def read_rows(path: str) -> tuple[str, list[tuple[str, dict]]]:
    """Return (display name, [(row description, record)]) for a file, folder or hub dataset."""
    p = Path(path)
    if p.is_file():
        suffix = p.suffix.lower()
        if suffix in (".csv", ".tsv"):
            return path, _read_delimited(p, "\t" if suffix == ".tsv" else ",")
        if suffix in (".jsonl", ".json", ".ndjson"):
            return path, _read_jsonl(p)
        raise DataError(f"{path}: unsupported file type {suffix!r}; expected .csv, .tsv or .jsonl")
    if p.is_dir():
        return path, _read_hf_disk(p)
    if not _looks_like_hub_spec(path):
        raise DataError(f"{path}: no such file or folder (a hub dataset is written NAME[:CONFIG]:SPLIT)")
    return path, _read_hf_hub(path)


def _looks_like_hub_spec(path: str) -> bool:
    """A hub dataset spec, not a path that happens to hold a ':' (a time stamp, a drive letter)."""
    return (
        ":" in path
        and HUB_SPEC.fullmatch(path) is not None
        and not path.lower().endswith(DATA_SUFFIXES)
        and not path.startswith((".", "~"))
    )


def _text_of(path: Path) -> str:
    """The file as text: UTF-8, with or without a byte-order mark; other bytes are an error that
    names the line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise DataError(
            f"{path}, line {line}: not UTF-8 (byte 0x{data[error.start]:02x}); save the file as UTF-8"
        ) from None


def _read_delimited(path: Path, delimiter: str) -> list[tuple[str, dict]]:
    # GLUE-style TSV files contain bare quote characters inside sentences: no quoting for TSV.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(_text_of(path), newline=""), delimiter=delimiter, quoting=quoting, strict=True)
    rows = []
    header = None
    number = 0
    while True:
        start = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            where = f"{path}, row {number + 1} (line {start})" if header is not None else f"{path}, header"
            problem = "a quoted field is not closed" if "end of data" in str(error) else f"malformed CSV ({error})"
            raise DataError(f"{where}: {problem}") from None
        if header is None:
            header = [name.strip() for name in fields]
            if not any(header):
                raise DataError(f"{path}: empty file (no header row)")
            seen = set()
            for column in header:
                if column in seen:
                    raise DataError(f"{path}, header: column {column!r} appears twice")
                seen.add(column)
            continue
        if not fields:
            continue  # a blank line
        number += 1
        if len(fields) != len(header):
            raise DataError(f"{path}, row {number}: {len(fields)} fields, header has {len(header)}")
        rows.append((f"{path}, row {number}", dict(zip(header, fields))))
    if header is None:
        raise DataError(f"{path}: empty file (no header row)")
    if not rows:
        raise DataError(f"{path}: no data rows after the header")
    return rows


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON value")


def _read_jsonl(path: Path) -> list[tuple[str, dict]]:
    rows = []
    # Lines end at "\n" only: JSON strings may hold U+2028 and other characters splitlines() breaks at.
    for number, line in enumerate(_text_of(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line, parse_constant=_no_constant)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}, line {number}: not valid JSON ({error.msg})") from None
        except ValueError as error:  # NaN, Infinity
            raise DataError(f"{path}, line {number}: not valid JSON ({error})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}, line {number}: expected a JSON object, got {type(record).__name__}")
        rows.append((f"{path}, line {number}", record))
    if not rows:
        raise DataError(f"{path}: empty file")
    return rows


def _records_from_dataset(name: str, dataset) -> list[tuple[str, dict]]:
    names = {}
    for column, feature in dataset.features.items():
        if hasattr(feature, "int2str"):  # ClassLabel: keep the label's name, not its index
            names[column] = feature
    rows = []
    for number, record in enumerate(dataset, start=1):
        for column, feature in names.items():
            if isinstance(record.get(column), int) and record[column] >= 0:
                record[column] = feature.int2str(record[column])
        rows.append((f"{name}, row {number}", record))
    if not rows:
        raise DataError(f"{name}: the dataset has no rows")
    return rows


def _read_hf_disk(path: Path) -> list[tuple[str, dict]]:
    import datasets

    try:
        dataset = datasets.load_from_disk(str(path))
    except FileNotFoundError as error:
        raise DataError(f"{path}: not a `datasets` folder saved with save_to_disk ({error})") from None
    if isinstance(dataset, datasets.DatasetDict):
        raise DataError(
            f"{path}: holds splits {sorted(dataset)}; pass one split's folder, e.g. {path}/{next(iter(dataset))}"
        )
    return _records_from_dataset(str(path), dataset)


def _read_hf_hub(spec: str) -> list[tuple[str, dict]]:
    """`NAME[:CONFIG]:SPLIT`, e.g. `glue:sst2:validation` or `imdb:test`."""
    import datasets

    parts = spec.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise DataError(f"{spec}: no such file or folder; a hub dataset is written NAME[:CONFIG]:SPLIT")
    name, config, split = (parts[0], None, parts[1]) if len(parts) == 2 else parts
    try:
        dataset = datasets.load_dataset(name, config, split=split)
    except Exception as error:  # the hub client raises many types; all mean "could not load"
        raise DataError(f"{spec}: cannot load from the Hugging Face hub: {str(error).splitlines()[0]}") from None
    return _records_from_dataset(spec, dataset)


def load_examples(path: str, columns: Columns = Columns(), require_labels: bool = True) -> list[Example]:
    """Read and check every row: text columns present and non-empty, labels present when required."""
    name, rows = read_rows(path)
    first = rows[0][1]
    wanted = [c for c in (columns.text, columns.text_pair) if c] + (
        [columns.label] if require_labels and columns.label else []
    )
    for column in wanted:
        if column not in first:
            raise DataError(f"{name}: missing column {column!r}; columns are {sorted(first)}")
    examples = []
    for where, record in rows:
        text = _text(record, columns.text, where)
        pair = _text(record, columns.text_pair, where) if columns.text_pair else None
        label = None
        if columns.label and (require_labels or columns.label in record):
            value = record.get(columns.label)
            if value is None or str(value).strip() == "":
                if require_labels:
                    raise DataError(f"{where}, column {columns.label!r}: empty label")
            else:
                label = _label_string(value, f"{where}, column {columns.label!r}")
        examples.append(Example(text=text, text_pair=pair, label=label, origin=where))
    return examples


def load_generation_examples(
    path: str, source_column: str, target_column: str | None, require_targets: bool = True
) -> list[Example]:
    """One example per row: the source text and its reference(s).

    A column holding a list is read as several values: sources are joined with " ; " (WebNLG's
    triples), targets become several references. `target_column` may name a field inside a list of
    objects with a dot, e.g. `lex.text` for WebNLG's `lex: [{"text": ...}, ...]`."""
    name, rows = read_rows(path)
    target_key, _, target_field = (target_column or "").partition(".")
    first = rows[0][1]
    for column in [source_column] + ([target_key] if require_targets and target_key else []):
        if column not in first:
            raise DataError(f"{name}: missing column {column!r}; columns are {sorted(first)}")
    examples = []
    for where, record in rows:
        value = record.get(source_column)
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            record = {**record, source_column: " ; ".join(v.strip() for v in value)}
        source = _text(record, source_column, where)
        targets = None
        if target_key and (require_targets or target_key in record):
            targets = _targets(record, target_key, target_field, where)
        examples.append(Example(text=source, origin=where, targets=targets))
    return examples


def _targets(record: dict, column: str, field: str, where: str) -> tuple[str, ...]:
    label = f"{column}.{field}" if field else column
    if column not in record:
        raise DataError(f"{where}: missing column {column!r}")
    value = record[column]
    values = value if isinstance(value, list) else [value]
    texts = []
    for i, item in enumerate(values):
        if field:
            if not isinstance(item, dict) or field not in item:
                raise DataError(f"{where}, column {label!r}: item {i} has no field {field!r}")
            item = item[field]
        if not isinstance(item, str) or not item.strip():
            raise DataError(f"{where}, column {label!r}: expected non-empty text, got {item!r}")
        texts.append(item.strip())
    if not texts:
        raise DataError(f"{where}, column {label!r}: no reference text")
    return tuple(texts)


def group_references(examples: list[Example]) -> list[Example]:
    """Rows with the same source become one example holding all their references, in first-seen
    order (E2E lists each meaning representation once per reference)."""
    grouped: dict[str, list] = {}
    for example in examples:
        entry = grouped.setdefault(example.text, [example, []])
        for target in example.targets or ():
            if target not in entry[1]:
                entry[1].append(target)
    return [Example(text=e.text, origin=e.origin, targets=tuple(refs) or None) for e, refs in grouped.values()]


def _text(record: dict, column: str, where: str) -> str:
    if column not in record:
        raise DataError(f"{where}: missing column {column!r}")
    value = record[column]
    if not isinstance(value, str):
        raise DataError(f"{where}, column {column!r}: expected text, got {type(value).__name__}")
    if not value.strip():
        raise DataError(f"{where}, column {column!r}: empty text")
    return value.strip()


def _label_string(value, where: str = "") -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DataError(f"{where}: label {value} is not a class")
        if value.is_integer():
            return str(int(value))
    if isinstance(value, (dict, list)):
        raise DataError(f"{where}: expected a label (text or a number), got {type(value).__name__}")
    return str(value).strip()


def label_set(examples: list[Example]) -> tuple[str, ...]:
    """Labels in a stable order: numerically when every label is an integer, else alphabetically."""
    values = {e.label for e in examples if e.label is not None}
    try:
        return tuple(sorted(values, key=int))
    except ValueError:
        return tuple(sorted(values))


def pick_demonstrations(examples: list[Example], k: int, seed: int, labels: tuple[str, ...]) -> list[Example]:
    """`k` labelled examples for a k-shot prompt: the labels taken in turn (so every label shows
    when k allows), each label's examples in an order fixed by `seed`, the result shuffled by it."""
    import random

    if k < 0:
        raise DataError(f"--shots: {k} is negative")
    if k == 0:
        return []
    if k > len(examples):
        raise DataError(f"--shots: {k} demonstrations asked for, the training data has {len(examples)} examples")
    rng = random.Random(seed)
    pools = {label: [e for e in examples if e.label == label] for label in labels}
    for pool in pools.values():
        rng.shuffle(pool)
    picked = []
    while len(picked) < k:
        for label in labels:
            if pools[label] and len(picked) < k:
                picked.append(pools[label].pop())
    rng.shuffle(picked)
    return picked


def pick_generation_demonstrations(examples: list[Example], k: int, seed: int) -> list[Example]:
    """`k` training examples with different sources for a k-shot generation prompt, drawn with
    `seed` (each shown with its first reference)."""
    import random

    if k < 0:
        raise DataError(f"--shots: {k} is negative")
    distinct = list({e.text: e for e in examples if e.targets}.values())
    if k > len(distinct):
        raise DataError(
            f"--shots: {k} demonstrations asked for, the training data has {len(distinct)} distinct "
            "sources with a target"
        )
    return random.Random(seed).sample(distinct, k)


def texts_as_examples(texts: list[str]) -> list[Example]:
    examples = []
    for number, text in enumerate(texts, start=1):
        if not text.strip():
            raise DataError(f"argument {number}: empty text")
        examples.append(Example(text=text.strip(), origin=f"argument {number}"))
    return examples
