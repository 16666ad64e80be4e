"""Bad input gets one line naming the file, row and column."""

import json

import pytest

from prompttune import Columns, DataError, load_examples
from prompttune.tasks.data import label_set


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_csv_with_quotes_and_embedded_newlines(tmp_path):
    path = write(tmp_path / "d.csv", 'text,label\n"a ""quoted""\nline",1\nplain,0\n')
    examples = load_examples(path)
    assert [e.text for e in examples] == ['a "quoted"\nline', "plain"]
    assert [e.label for e in examples] == ["1", "0"]


def test_tsv_keeps_bare_quotes_like_glue(tmp_path):
    path = write(tmp_path / "d.tsv", 'sentence\tlabel\nit \'s a "film" \t1\n')
    (example,) = load_examples(path, Columns(text="sentence"))
    assert example.text == 'it \'s a "film"'


def test_jsonl_pairs(tmp_path):
    rows = [
        {"premise": "a", "hypothesis": "b", "label": "entailment"},
        {"premise": "c", "hypothesis": "d", "label": "not_entailment"},
    ]
    path = write(tmp_path / "d.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    examples = load_examples(path, Columns(text="premise", text_pair="hypothesis"))
    assert (examples[1].text, examples[1].text_pair, examples[1].label) == ("c", "d", "not_entailment")
    assert label_set(examples) == ("entailment", "not_entailment")


def test_integer_labels_sort_numerically(tmp_path):
    path = write(tmp_path / "d.csv", "text,label\na,10\nb,9\nc,2\n")
    assert label_set(load_examples(path)) == ("2", "9", "10")


@pytest.mark.parametrize(
    "content,message",
    [
        ("", "d.csv: empty file (no header row)"),
        ("text,label\n", "d.csv: no data rows after the header"),
        ("sentence,label\nhi,1\n", "d.csv: missing column 'text'; columns are ['label', 'sentence']"),
        ("text,label\nhi,1\n  ,0\n", "d.csv, row 2, column 'text': empty text"),
        ("text,label\nhi,1\nho,\n", "d.csv, row 2, column 'label': empty label"),
        ("text,label\nhi,1,extra\n", "d.csv, row 1: 3 fields, header has 2"),
    ],
)
def test_bad_csv_names_file_row_and_column(tmp_path, content, message):
    path = write(tmp_path / "d.csv", content)
    with pytest.raises(DataError) as error:
        load_examples(path)
    assert str(error.value) == f"{tmp_path}/{message}"


def test_bad_jsonl_line(tmp_path):
    path = write(tmp_path / "d.jsonl", '{"text": "a", "label": 1}\n{"text": "b", \n')
    with pytest.raises(DataError, match=r"d.jsonl, line 2: not valid JSON"):
        load_examples(path)


def test_non_text_value(tmp_path):
    path = write(tmp_path / "d.jsonl", '{"text": 5, "label": 1}\n')
    with pytest.raises(DataError, match=r"d.jsonl, line 1, column 'text': expected text, got int"):
        load_examples(path)


def test_missing_file_and_unknown_type(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        load_examples(str(tmp_path / "nope.csv"))
    path = write(tmp_path / "d.parquet", "x")
    with pytest.raises(DataError, match=r"unsupported file type '.parquet'"):
        load_examples(path)


def test_datasets_folder_with_class_labels(tmp_path):
    import datasets

    features = datasets.Features(
        {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["negative", "positive"])}
    )
    datasets.Dataset.from_dict({"sentence": ["bad", "good"], "label": [0, 1]}, features=features).save_to_disk(
        tmp_path / "ds"
    )
    examples = load_examples(str(tmp_path / "ds"), Columns(text="sentence"))
    assert [e.label for e in examples] == ["negative", "positive"]
    assert examples[1].origin.endswith("ds, row 2")


def test_unknown_label_at_encoding_names_the_row(load):
    from conftest import task_config

    from prompttune import Example, PromptModel

    model = PromptModel.create(load("bert"), "soft_prompt", task_config(), {"num_virtual_tokens": 2})
    with pytest.raises(DataError, match=r"dev.csv, row 7: unknown label '2'; expected one of \['0', '1'\]"):
        model.task.encode(Example("a film", label="2", origin="dev.csv, row 7"))


def test_generation_rows_group_into_multiple_references(tmp_path):
    from prompttune.tasks.data import group_references, load_generation_examples

    path = write(
        tmp_path / "e2e.csv",
        'mr,ref\n"name[A], food[Thai]",A serves Thai food.\n'
        '"name[A], food[Thai]","Thai food, at A."\n"name[B]",B is a place.\n',
    )
    examples = load_generation_examples(path, "mr", "ref")
    assert [e.targets for e in examples] == [("A serves Thai food.",), ("Thai food, at A.",), ("B is a place.",)]
    grouped = group_references(examples)
    assert [(e.text, e.targets) for e in grouped] == [
        ("name[A], food[Thai]", ("A serves Thai food.", "Thai food, at A.")),
        ("name[B]", ("B is a place.",)),
    ]


def test_webnlg_style_lists_and_fields(tmp_path):
    from prompttune.tasks.data import load_generation_examples

    row = {
        "mtriples": ["Aarhus | leader | Jacob", "Aarhus | country | Denmark"],
        "lex": [{"text": "Jacob leads Aarhus, Denmark."}, {"text": "Aarhus in Denmark is led by Jacob."}],
    }
    path = write(
        tmp_path / "w.jsonl", json.dumps(row) + "\n" + json.dumps({**row, "lex": [{"comment": "good"}]}) + "\n"
    )
    with pytest.raises(DataError, match=r"w.jsonl, line 2, column 'lex.text': item 0 has no field 'text'"):
        load_generation_examples(path, "mtriples", "lex.text")
    path = write(tmp_path / "w.jsonl", json.dumps(row) + "\n")
    (example,) = load_generation_examples(path, "mtriples", "lex.text")
    assert example.text == "Aarhus | leader | Jacob ; Aarhus | country | Denmark"
    assert example.targets == ("Jacob leads Aarhus, Denmark.", "Aarhus in Denmark is led by Jacob.")


def test_generation_errors_name_the_row_and_column(tmp_path):
    from prompttune.tasks.data import load_generation_examples

    path = write(tmp_path / "g.csv", "mr,ref\na,b\nc,\n")
    with pytest.raises(DataError, match=r"g.csv, row 2, column 'ref': expected non-empty text"):
        load_generation_examples(path, "mr", "ref")
    with pytest.raises(DataError, match=r"missing column 'target'"):
        load_generation_examples(path, "mr", "target")


def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path):
    for name in ("d.csv", "d.tsv"):
        path = tmp_path / name
        sep = "," if name.endswith("csv") else "\t"
        path.write_bytes(f"\ufefftext{sep}label\nhi{sep}1\n".encode())
        assert [(e.text, e.label) for e in load_examples(str(path))] == [("hi", "1")]
    path = tmp_path / "d.jsonl"
    path.write_bytes('\ufeff{"text": "hi", "label": 1}\n'.encode("utf-8"))
    assert [(e.text, e.label) for e in load_examples(str(path))] == [("hi", "1")]


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("d.csv", b"text,label\nhi,1\ncaf\xe9,0\n", "d.csv, line 3: not UTF-8 (byte 0xe9); save the file as UTF-8"),
        (
            "d.jsonl",
            b'{"text": "hi", "label": 1}\n{"text": "\xff", "label": 0}\n',
            "d.jsonl, line 2: not UTF-8 (byte 0xff)",
        ),
        ("d.jsonl", b'{"text": "hi", "label": NaN}\n', "d.jsonl, line 1: not valid JSON (NaN is not a JSON value)"),
        (
            "d.jsonl",
            b'{"text": "hi", "label": Infinity}\n',
            "d.jsonl, line 1: not valid JSON (Infinity is not a JSON value)",
        ),
        (
            "d.jsonl",
            b'{"text": "hi", "label": [1]}\n',
            "d.jsonl, line 1, column 'label': expected a label (text or a number), got list",
        ),
        ("d.csv", b"text,label,text\nhi,1,ho\n", "d.csv, header: column 'text' appears twice"),
        (
            "d.csv",
            b'text,label\nfine,1\n"unclosed,1\nok,0\nlast,1\n',
            "d.csv, row 2 (line 3): a quoted field is not closed",
        ),
        ("d.csv", b'text,label\n"a"b,1\n', "d.csv, row 1 (line 2): malformed CSV"),
    ],
)
def test_files_that_are_not_what_they_claim_name_the_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as error:
        load_examples(str(path))
    assert str(error.value).startswith(f"{tmp_path}/{message}")


def test_a_missing_path_with_a_colon_is_not_looked_up_on_the_hub(tmp_path, monkeypatch):
    import datasets

    def no_hub(*args, **kwargs):
        raise AssertionError("the hub was asked")

    monkeypatch.setattr(datasets, "load_dataset", no_hub)
    for path in (f"{tmp_path}/runs/2026-01-01T10:00/train.csv", "C:/data/train.csv", "data:v2/train.jsonl", "./a:b"):
        with pytest.raises(DataError, match="no such file or folder"):
            load_examples(path)
    with pytest.raises(DataError, match="cannot load from the Hugging Face hub: the hub was asked"):
        load_examples("glue:sst2:validation")  # still a hub spec
