"""prompttune human-eval: a study made from prompts (outputs generated once and stored), raters'
tasks drawn as designed, judgements recorded exactly once whatever the page does, and the
statistics checked against cases computed by hand."""

import json
import math
import signal
import sqlite3
import threading
import urllib.request

import pytest
from fastapi.testclient import TestClient
from servers import running_study_server

from prompttune import PromptModel, save_prompt
from prompttune.api import generate
from prompttune.artifacts.registry import Registry
from prompttune.cli import main
from prompttune.errors import ConfigError, DataError
from prompttune.human_eval import stats
from prompttune.human_eval.app import build_app
from prompttune.human_eval.report import analyse, attach, write_report
from prompttune.human_eval.study import (
    STUDY_FILE,
    Design,
    JudgementRefused,
    Study,
    StudyError,
    create_study,
    parse_systems,
)
from prompttune.tasks import GenerationConfig

# Tests that touch no model (statistics, studies made from outputs files, the page's API, reports)
# reach no code that differs between transformers releases: `make test` runs them once.
once = pytest.mark.same_on_every_transformers

SOURCES = [
    f"name[Place {i}], food[{food}], area[{area}]"
    for i, (food, area) in enumerate(
        [
            ("Thai", "riverside"),
            ("French", "centre"),
            ("Indian", "riverside"),
            ("Greek", "centre"),
            ("Sushi", "riverside"),
            ("Pizza", "centre"),
            ("Tapas", "riverside"),
            ("Curry", "centre"),
            ("Ramen", "riverside"),
            ("Pasta", "centre"),
        ]
    )
]


def _data(tmp_path):
    path = tmp_path / "dev.csv"
    lines = (
        ["mr,ref"]
        + [f'"{s}","Reference {i} one."' for i, s in enumerate(SOURCES)]
        + [f'"{SOURCES[0]}","Reference 0 two."']
    )  # a second reference of the first source: still one item
    path.write_text("\n".join(lines) + "\n")
    return path


def _outputs(tmp_path, name, text):
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps({"source": s, "generations": [text(i)]}) + "\n" for i, s in enumerate(SOURCES)))
    return path


@pytest.fixture
def files(tmp_path):
    return {
        "data": _data(tmp_path),
        "alpha": _outputs(tmp_path, "alpha", lambda i: f"Alpha says {i}."),
        "beta": _outputs(tmp_path, "beta", lambda i: f"Beta says {i}."),
    }


def _make(tmp_path, files, name="study", **design):
    systems = parse_systems([f"alpha=outputs:{files['alpha']}", f"beta=outputs:{files['beta']}", "ref=@reference"])
    return create_study(
        tmp_path / name, str(files["data"]), systems, Design(**design), source_column="mr", target_column="ref"
    )


# ---- statistics against hand-computed cases ------------------------------------------------------


@once
def test_cohen_kappa_and_krippendorff_alpha_match_hand_computation():
    # Two raters, four units: they agree on three. Cohen: p_o = 3/4, p_e = 2/4*1/4 + 2/4*3/4 = 1/2,
    # kappa = (3/4 - 1/2) / (1 - 1/2) = 1/2. Krippendorff (nominal): the coincidences give
    # n_a = 3, n_b = 5, n = 8, two disagreeing pairs: alpha = 1 - (n - 1) * 2 / (2 * n_a * n_b) = 1 - 14/30.
    units = {1: {"r1": "a", "r2": "a"}, 2: {"r1": "a", "r2": "b"}, 3: {"r1": "b", "r2": "b"}, 4: {"r1": "b", "r2": "b"}}
    (kappa,) = stats.cohen_kappas(units)
    assert kappa["kappa"] == pytest.approx(0.5) and kappa["agreement"] == 0.75 and kappa["units"] == 4
    numeric = {u: {r: {"a": 0, "b": 1}[v] for r, v in judged.items()} for u, judged in units.items()}
    assert stats.krippendorff_alpha(numeric, "nominal")["alpha"] == pytest.approx(1 - 14 / 30)
    # A unit judged once says nothing about agreement; no shared unit, no alpha.
    assert stats.krippendorff_alpha({**numeric, 5: {"r1": 1}}, "nominal")["units"] == 4
    none = stats.krippendorff_alpha({1: {"r1": 0}, 2: {"r2": 1}})
    assert none["alpha"] is None and "two raters" in none["reason"]


@once
def test_bradley_terry_recovers_consistent_strengths():
    # A beats B 2:1, B beats C 2:1, A beats C 4:1: the maximum-likelihood strengths differ by ln 2
    # exactly (each pair's odds are the ratio of strengths), centred on zero.
    judgements, item = [], 0
    for a, b, wins, losses in (("A", "B", 2, 1), ("B", "C", 2, 1), ("A", "C", 4, 1)):
        for outcome in [stats.WIN] * wins + [stats.LOSS] * losses:
            judgements.append((item, a, b, outcome))
            item += 1
    rows = {r["system"]: r for r in stats.bradley_terry(judgements, ["A", "B", "C"], resamples=50)}
    assert rows["A"]["strength"] == pytest.approx(math.log(2), abs=0.01)
    assert rows["B"]["strength"] == pytest.approx(0, abs=0.01)
    assert rows["C"]["strength"] == pytest.approx(-math.log(2), abs=0.01)
    assert [rows[s]["rank"] for s in "ABC"] == [1, 2, 3]
    assert rows["A"]["elo"] == pytest.approx(1000 + 400 * math.log10(2), abs=1)
    for row in rows.values():
        low, high = row["strength_interval"]
        assert low <= row["strength"] <= high
    # A tie is half a win for each side: one win and one tie for A against B -> odds 1.5 : 0.5.
    tied = stats.bradley_terry([(0, "A", "B", stats.WIN), (1, "A", "B", stats.TIE)], ["A", "B"], resamples=0)
    assert tied[0]["strength"] - tied[1]["strength"] == pytest.approx(math.log(3), abs=0.01)


@once
def test_win_rates_count_each_pair_from_one_side_with_item_bootstrap_intervals():
    judgements = [
        (0, "A", "B", stats.WIN),
        (1, "B", "A", stats.WIN),
        (2, "A", "B", stats.TIE),
        (3, "A", "B", stats.WIN),
    ]
    (row,) = stats.pairwise(judgements, resamples=500)
    assert (row["system_a"], row["system_b"], row["wins"], row["ties"], row["losses"]) == ("A", "B", 2, 1, 1)
    assert row["win_rate"] == 0.5 and row["tie_rate"] == 0.25 and row["win_rate_ties_half"] == 0.625
    for name in ("win", "tie", "loss"):
        low, high = row[f"{name}_rate_interval"]
        assert 0 <= low <= row[f"{name}_rate"] <= high <= 1
    assert stats.pairwise(judgements, resamples=500) == stats.pairwise(judgements, resamples=500)  # seeded
    (always,) = stats.pairwise([(i, "A", "B", stats.WIN) for i in range(6)], resamples=200)
    assert always["win_rate_interval"] == [1.0, 1.0] and always["loss_rate_interval"] == [0.0, 0.0]
    # Two raters judging the same item are one draw of the bootstrap, not two: with one item,
    # the interval cannot leave that item's mean.
    (one_item,) = stats.pairwise([(0, "A", "B", stats.WIN), (0, "A", "B", stats.LOSS)], resamples=200)
    assert one_item["win_rate_interval"] == [0.5, 0.5]


@once
def test_likert_mean_interval_is_students_t():
    # [3, 4, 5]: mean 4, sd 1, half-width t(0.975, 2) / sqrt(3) = 4.302653 / 1.732051 = 2.484138.
    cell = stats.mean_interval([3, 4, 5])
    assert cell["mean"] == 4 and cell["sd"] == 1
    assert cell["interval"] == pytest.approx([4 - 2.484138, 4 + 2.484138], abs=1e-5)
    assert stats.mean_interval([4])["interval"] is None


# ---- making a study ------------------------------------------------------------------------------


def test_a_study_of_prompts_stores_each_systems_outputs_generated_once(tmp_path, load, files):
    backbone = load("gpt2")
    config = GenerationConfig(max_source_length=24, max_target_length=6)
    prefix = save_prompt(
        PromptModel.create(backbone, "prefix", config, {"num_virtual_tokens": 3, "hidden_size": 16}),
        tmp_path / "prefix",
    )
    soft = save_prompt(
        PromptModel.create(backbone, "soft_prompt", config, {"num_virtual_tokens": 2}), tmp_path / "soft"
    )
    bare = save_prompt(PromptModel.create(backbone, "hard_prompt", config), tmp_path / "bare")
    systems = parse_systems([f"prefix={prefix}", f"soft={soft}", "model=@bare", "ref=@reference"])
    made = create_study(
        tmp_path / "study",
        str(files["data"]),
        systems,
        Design(mode="both", items=4, raters=("ann", "bo")),
        source_column="mr",
        target_column="ref",
    )
    assert made["items"] == 4 and made["systems"] == ["prefix", "soft", "model", "ref"]
    study = Study(tmp_path / "study")
    items = study.items()
    sources = [i["source"] for i in items]
    assert len(set(sources)) == 4 and set(sources) <= set(SOURCES)
    for system, folder in (("prefix", prefix), ("soft", soft), ("model", bare)):
        expected = [row["generations"][0].strip() for row in generate(str(folder), texts=sources)]
        assert [i["outputs"][system] for i in items] == expected, system
    references = {s: f"Reference {k} one." for k, s in enumerate(SOURCES)}
    assert [i["outputs"]["ref"] for i in items] == [references[s] for s in sources]
    # Both raters judge all four items: 6 pairs and 4 ratings each.
    assert {r["name"]: r["tasks"] for r in study.raters()} == {"ann": 40, "bo": 40}


@once
def test_items_are_shared_as_designed_and_drawn_again_identically(tmp_path, files):
    made = _make(tmp_path, files, raters=("a", "b", "c"), per_rater=4, overlap=1, seed=3)
    assert made["items"] == 10 and {r: v["tasks"] for r, v in made["raters"].items()} == {"a": 12, "b": 12, "c": 12}
    db = sqlite3.connect(tmp_path / "study" / STUDY_FILE)
    own = {r: {i for (i,) in db.execute("SELECT DISTINCT item FROM tasks WHERE rater = ?", (r,))} for r in "abc"}
    assert all(len(items) == 4 for items in own.values())
    shared = own["a"] & own["b"] & own["c"]
    assert len(shared) == 1
    assert all(len(own[x] & own[y]) == 1 for x, y in (("a", "b"), ("a", "c"), ("b", "c")))  # only the shared item
    sides = db.execute("SELECT left_system, COUNT(*) FROM tasks GROUP BY left_system").fetchall()
    assert len(sides) == 3  # every system is shown on the left sometimes
    plan = db.execute("SELECT rater, position, kind, item, left_system, right_system FROM tasks ORDER BY id").fetchall()
    _make(tmp_path, files, name="again", raters=("a", "b", "c"), per_rater=4, overlap=1, seed=3)
    again = sqlite3.connect(tmp_path / "again" / STUDY_FILE)
    assert (
        again.execute("SELECT rater, position, kind, item, left_system, right_system FROM tasks ORDER BY id").fetchall()
        == plan
    )


@once
def test_bad_studies_are_refused_before_anything_is_written(tmp_path, files):
    with pytest.raises(ConfigError, match="need 13 items; the study has 10"):
        _make(tmp_path, files, raters=("a", "b", "c"), per_rater=5, overlap=1)
    assert not (tmp_path / "study").exists()
    with pytest.raises(ConfigError, match="at least two systems"):
        parse_systems(["only=@reference"])
    with pytest.raises(ConfigError, match="two systems are named 'a'"):
        parse_systems(["a=@reference", "a=@reference"])
    with pytest.raises(ConfigError, match="expected NAME=SYSTEM"):
        parse_systems(["alpha"])
    with pytest.raises(ConfigError, match="not a prompt folder"):
        parse_systems(["a=@reference", f"b={tmp_path / 'missing'}"])
    with pytest.raises(ConfigError, match="add a prompt system"):
        parse_systems(["a=@reference", "b=@bare"])
    with pytest.raises(ConfigError, match="scale: 2 to 9 points"):
        Design(scale=12)
    partial = tmp_path / "partial.jsonl"
    partial.write_text(json.dumps({"source": SOURCES[0], "generations": ["x"]}) + "\n")
    systems = parse_systems([f"p=outputs:{partial}", "ref=@reference"])
    with pytest.raises(DataError, match=r"partial.jsonl: no output for the source of .*dev.csv, row 2 \(9 of the 10"):
        create_study(tmp_path / "s2", str(files["data"]), systems, Design(), source_column="mr", target_column="ref")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"source": "x", "generations": ["y"]}\n{"source": \n')
    with pytest.raises(DataError, match="broken.jsonl, line 2: not JSON"):
        create_study(
            tmp_path / "s3",
            str(files["data"]),
            parse_systems([f"p=outputs:{broken}", "ref=@reference"]),
            Design(),
            source_column="mr",
            target_column="ref",
        )
    assert not any((tmp_path / name).exists() for name in ("s2", "s3"))


@once
def test_a_study_is_never_overwritten(tmp_path, files):
    _make(tmp_path, files)
    before = (tmp_path / "study" / STUDY_FILE).read_bytes()
    with pytest.raises(StudyError, match="already holds a study"):
        _make(tmp_path, files, raters=("someone-else",))
    assert (tmp_path / "study" / STUDY_FILE).read_bytes() == before


def test_each_system_is_reported_as_given_also_from_a_study_that_names_the_column_source(tmp_path, files):
    _make(tmp_path, files)
    expected = [f"outputs:{files['alpha']}", f"outputs:{files['beta']}", "@reference"]
    assert [s["given"] for s in Study(tmp_path / "study").system_details()] == expected
    db = sqlite3.connect(tmp_path / "study" / STUDY_FILE)
    db.execute("ALTER TABLE systems RENAME COLUMN given TO source")  # as studies were first written
    db.commit()
    db.close()
    details = Study(tmp_path / "study").system_details()
    assert [s["given"] for s in details] == expected and [s["kind"] for s in details] == ["outputs"] * 2 + ["reference"]


# ---- judging ---------------------------------------------------------------------------------------


def _answer(task: dict, rater: str) -> dict:
    """A simulated rater: rater `ann` prefers the longer output (ties when equal), `bo` always the
    left one; ratings by the output's length."""
    if task["kind"] == "pair":
        if rater == "bo":
            return {"preference": "left"}
        left, right = len(task["left"]), len(task["right"])
        return {"preference": "left" if left > right else "right" if right > left else "tie"}
    return {"ratings": {c: min(5, 1 + len(task["output"]) % 5) for c in task["criteria"]}}


@once
def test_two_raters_complete_a_study_through_the_api_with_a_reload_midway(tmp_path, files):
    _make(tmp_path, files, mode="both", raters=("ann", "bo"), items=4, criteria=("fluency", "faithfulness"))
    study = Study(tmp_path / "study")
    tokens = {r["name"]: r["token"] for r in study.raters()}
    client = TestClient(build_app(study))
    seen = {"ann": [], "bo": []}
    for step in range(100):
        progressed = False
        for rater in ("ann", "bo"):  # the two raters take turns
            state = client.get(f"/api/{tokens[rater]}/next").json()
            if state["task"] is None:
                continue
            task = state["task"]
            assert not {"alpha", "beta", "ref"} & set(json.dumps(task).split('"'))  # no system is named
            if step == 3:  # a reload: the same item comes back, and nothing was recorded by it
                assert client.get(f"/api/{tokens[rater]}/next").json() == state
            answer = client.post(
                f"/api/{tokens[rater]}/judgements",
                json={"study": state["study"], "task": task["id"], "seconds": 1.5, **_answer(task, rater)},
            )
            assert answer.status_code == 200, answer.text
            seen[rater].append(task["id"])
            progressed = True
        if not progressed:
            break
    for rater in ("ann", "bo"):
        done = client.get(f"/api/{tokens[rater]}/next").json()
        assert done["task"] is None and done["done"] == done["total"] == 4 * (3 + 3)
        assert len(seen[rater]) == len(set(seen[rater])) == 24
    judgements = study.judgements()
    assert len(judgements) == 48 and len({j["task"] for j in judgements}) == 48


@once
def test_double_submits_stale_pages_unknown_raters_and_bad_values_change_nothing(tmp_path, files):
    _make(tmp_path, files, mode="both", raters=("ann", "bo"), items=3, criteria=("fluency",), scale=4)
    study = Study(tmp_path / "study")
    tokens = {r["name"]: r["token"] for r in study.raters()}
    client = TestClient(build_app(study))
    url = f"/api/{tokens['ann']}/judgements"

    def rows():
        return (
            sqlite3.connect(tmp_path / "study" / STUDY_FILE)
            .execute("SELECT * FROM judgements ORDER BY task")
            .fetchall()
        )

    state = client.get(f"/api/{tokens['ann']}/next").json()
    task = state["task"]
    first = {"study": state["study"], "task": task["id"], **_answer(task, "ann")}
    assert client.post(url, json=first).status_code == 200
    recorded = rows()
    # The same judgement again (a double click, a retry): refused, the first stands.
    again = client.post(
        url, json={**first, **({"preference": "tie"} if task["kind"] == "pair" else {"ratings": {"fluency": 1}})}
    )
    assert again.status_code == 409 and "already judged" in again.json()["error"]["message"]
    # A page left open on an item far ahead of where the rater is: stale.
    ahead = (
        sqlite3.connect(tmp_path / "study" / STUDY_FILE)
        .execute("SELECT id, kind FROM tasks WHERE rater = 'ann' ORDER BY position DESC LIMIT 1")
        .fetchone()
    )
    stale = client.post(
        url,
        json={
            "study": state["study"],
            "task": ahead[0],
            **({"preference": "left"} if ahead[1] == "pair" else {"ratings": {"fluency": 2}}),
        },
    )
    assert stale.status_code == 409 and "out of date" in stale.json()["error"]["message"]
    # Another study's page, another rater's item, an unknown rater.
    assert client.post(url, json={**first, "study": "0" * 16}).status_code == 409
    bo_task = client.get(f"/api/{tokens['bo']}/next").json()["task"]
    other = client.post(url, json={"study": state["study"], "task": bo_task["id"], **_answer(bo_task, "ann")})
    assert other.status_code == 404 and "not one of ann's tasks" in other.json()["error"]["message"]
    unknown = client.post("/api/not-a-token/judgements", json=first)
    assert unknown.status_code == 404 and "no rater" in unknown.json()["error"]["message"]
    assert client.get("/api/not-a-token/next").status_code == 404
    assert client.get("/rate/not-a-token").status_code == 404
    # Values that do not fit the item.
    current = client.get(f"/api/{tokens['ann']}/next").json()["task"]
    base = {"study": state["study"], "task": current["id"]}
    if current["kind"] == "pair":
        bad = [({"preference": "both"}, 422), ({"ratings": {"fluency": 2}}, 422), ({}, 422)]
    else:
        bad = [
            ({"ratings": {"fluency": 5}}, 422),
            ({"ratings": {"fluency": 0}}, 422),
            ({"ratings": {"style": 2}}, 422),
            ({"preference": "left"}, 422),
            ({"ratings": {"fluency": True}}, 422),
        ]
    bad += [({"extra": 1}, 422), ({"seconds": -1}, 422)]
    for change, status in bad:
        response = client.post(url, json={**base, **change})
        assert response.status_code == status, (change, response.text)
        assert "nothing was recorded" in response.json()["error"]["message"], response.text
    assert rows() == recorded


@once
def test_two_submits_of_one_item_at_once_record_it_once(tmp_path, files):
    _make(tmp_path, files, raters=("ann",), items=2)
    study = Study(tmp_path / "study")
    state = study.next_task("ann")
    results = []

    def submit():
        try:
            results.append(study.submit("ann", state["study"], state["task"]["id"], "left"))
        except JudgementRefused as refused:
            results.append(refused.status)

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(map(str, results)) == sorted(["409"] * 7 + [str({"recorded": state["task"]["id"]})])
    assert len(study.judgements()) == 1


@once
def test_the_start_page_finds_a_rater_by_token_or_if_allowed_by_name(tmp_path, files):
    _make(tmp_path, files, raters=("ann", "bo"), items=2)
    study = Study(tmp_path / "study")
    token = {r["name"]: r["token"] for r in study.raters()}["bo"]
    closed = TestClient(build_app(study), follow_redirects=False)
    assert closed.get(f"/start?who={token}").headers["location"] == f"rate/{token}"
    assert closed.get("/start?who=bo").status_code == 404
    opened = TestClient(build_app(study, allow_names=True), follow_redirects=False)
    assert opened.get("/start?who=bo").headers["location"] == f"rate/{token}"
    page = opened.get(f"/rate/{token}")
    assert page.status_code == 200 and "bo" in page.text and page.headers["cache-control"] == "no-store"


# ---- the report ------------------------------------------------------------------------------------


def _judge_all(study: Study, answer) -> None:
    for rater in [r["name"] for r in study.raters()]:
        while (state := study.next_task(rater))["task"] is not None:
            study.submit(rater, study.id, state["task"]["id"], **answer(state["task"], rater))


@once
def test_the_report_counts_what_raters_said_and_their_agreement(tmp_path, files):
    # Pairwise, two raters on every item: ann prefers the longer output ("Reference N one." over
    # "Alpha says N." over "Beta says N."); bo always picks the left one, so agreement with ann is
    # what the left/right draw makes it.
    _make(tmp_path, files, raters=("ann", "bo"), items=6)
    study = Study(tmp_path / "study")
    _judge_all(study, _answer)
    result = analyse(study, resamples=300)
    rows = {(r["system_a"], r["system_b"]): r for r in result["pairwise"]}
    assert set(rows) == {("alpha", "beta"), ("alpha", "ref"), ("beta", "ref")}
    judgements = study.judgements()
    bo_left = {(j["item"], frozenset((j["left"], j["right"]))): j["left"] for j in judgements if j["rater"] == "bo"}
    for (a, b), row in rows.items():
        bo_wins_for_a = sum(1 for (item, pair), left in bo_left.items() if pair == {a, b} and left == a)
        ann_wins_for_a = 6 if (a, b) == ("alpha", "beta") else 0  # only alpha's text is longer than its rival's
        assert row["judgements"] == 12 and row["items"] == 6
        assert row["wins"] == ann_wins_for_a + bo_wins_for_a and row["ties"] == 0
    # Agreement on preferences, by hand: on each (item, pair), both say the same iff bo's left is ann's choice.
    units = {}
    for j in judgements:
        a, b = sorted((j["left"], j["right"]), key=["alpha", "beta", "ref"].index)
        winner = j["left"] if j["preference"] == "left" else j["right"]
        units.setdefault((j["item"], a, b), {})[j["rater"]] = winner == a
    same = sum(1 for u in units.values() if u["ann"] == u["bo"]) / len(units)
    (kappa,) = result["agreement"]["preference"]["cohen_kappa"]
    assert kappa["agreement"] == pytest.approx(same) and kappa["units"] == 18
    assert result["bradley_terry"][0]["system"] == "ref"  # ann always prefers the reference, bo half the time
    out = write_report(study, tmp_path / "report", result)
    assert json.loads((tmp_path / "report" / "report.json").read_text())["pairwise"] == result["pairwise"]
    csv_lines = (tmp_path / "report" / "judgements.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + 36 and csv_lines[0].startswith("rater,item,row,kind,left,right,preference,winner")
    page = (tmp_path / "report" / "report.html").read_text()
    assert "Bradley-Terry" in page and "Krippendorff" in page and "pairwise.png" in page
    assert {p.rsplit("/", 1)[1] for p in out["plots"]} == {"pairwise.png", "bradley_terry.png"}


@once
def test_ratings_are_averaged_per_system_and_criterion(tmp_path, files):
    _make(tmp_path, files, mode="rating", raters=("ann", "bo"), items=3, criteria=("fluency", "relevance"))
    study = Study(tmp_path / "study")
    score = {"ann": {"alpha": 4, "beta": 2, "ref": 5}, "bo": {"alpha": 3, "beta": 2, "ref": 5}}
    _judge_all(
        study,
        lambda task, rater: {
            "ratings": {
                c: score[rater][
                    next(
                        s
                        for s in ("alpha", "beta", "ref")
                        if task["output"].lower().startswith({"alpha": "alpha", "beta": "beta", "ref": "reference"}[s])
                    )
                ]
                for c in task["criteria"]
            }
        },
    )
    result = analyse(study, resamples=200)
    assert result["pairwise"] == [] and result["bradley_terry"] is None
    alpha = result["ratings"]["alpha"]["fluency"]
    assert alpha["n"] == 6 and alpha["mean"] == pytest.approx(3.5)  # three 4s and three 3s
    assert result["ratings"]["beta"]["relevance"]["mean"] == 2 and result["ratings"]["ref"]["fluency"]["mean"] == 5
    # Hand: ann and bo agree on beta and ref, differ by one point on alpha (quadratic weights).
    (kappa,) = result["agreement"]["fluency"]["cohen_kappa"]
    assert kappa["agreement"] == pytest.approx(2 / 3) and kappa["units"] == 9
    write_report(study, tmp_path / "report", result)
    assert (tmp_path / "report" / "ratings.png").is_file()


def test_the_result_is_attached_to_the_registry_versions_compared(tmp_path, load, files):
    backbone = load("gpt2")
    config = GenerationConfig(max_source_length=24, max_target_length=4)
    registry = Registry(tmp_path / "registry")
    for name, method in (("short", "soft_prompt"), ("long", "prefix")):
        options = {"num_virtual_tokens": 2} | ({"hidden_size": 16} if method == "prefix" else {})
        registry.push(save_prompt(PromptModel.create(backbone, method, config, options), tmp_path / name), name)
    systems = parse_systems(["short=registry:short@1", "long=registry:long", "ref=@reference"], str(registry.root))
    create_study(
        tmp_path / "study",
        str(files["data"]),
        systems,
        Design(raters=("ann",), items=3),
        source_column="mr",
        target_column="ref",
    )
    study = Study(tmp_path / "study")
    _judge_all(study, lambda task, rater: {"preference": "tie"})
    result = analyse(study, resamples=200)
    attached = attach(study, result)
    assert [(a["name"], a["version"]) for a in attached] == [("short", 1), ("long", 1)]
    (evaluation,) = registry.show("short@1")["evaluations"]
    assert evaluation["kind"] == "human_eval" and evaluation["key"] == study.id
    assert {p["against"]: p["ties"] for p in evaluation["pairwise"]} == {"long": 3, "ref": 3}
    attach(study, result)  # attaching again replaces, never duplicates
    assert len(registry.show("short@1")["evaluations"]) == 1
    assert registry.show("long@1")["evaluations"][0]["system"] == "long"
    registry.delete("short", all_versions=True)  # a deleted version's evaluations go with it
    with sqlite3.connect(registry.catalog) as db:
        assert db.execute("SELECT COUNT(*) FROM evaluations WHERE name = 'short'").fetchone()[0] == 0


@once
def test_the_command_line_makes_serves_and_reports_a_study(tmp_path, files, capsys):
    study = tmp_path / "study"
    args = [
        "human-eval",
        "create",
        str(study),
        "--data",
        str(files["data"]),
        "--source-column",
        "mr",
        "--target-column",
        "ref",
        "--system",
        f"alpha=outputs:{files['alpha']}",
        "--system",
        "ref=@reference",
        "--raters",
        "ann,bo",
        "--items",
        "4",
        "--mode",
        "both",
        "--criteria",
        "fluency",
    ]
    assert main(args) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["items"] == 4 and set(made["raters"]) == {"ann", "bo"}
    assert main(args) == 2
    assert "already holds a study" in capsys.readouterr().err
    assert main(["human-eval", "status", str(study)]) == 0
    links = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["done"] for r in links] == [0, 0] and all(r["link"].endswith(r["token"]) for r in links)
    _judge_all(
        Study(study),
        lambda task, rater: {"preference": "right"} if task["kind"] == "pair" else {"ratings": {"fluency": 3}},
    )
    assert main(["human-eval", "report", str(study), "--resamples", "200"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["judgements"] == 2 * 4 * 3 and (study / "report" / "report.html").is_file()
    assert main(["human-eval", "report", str(tmp_path / "nothing")]) == 2
    assert "no study here" in capsys.readouterr().err
    assert (
        main(
            [
                "human-eval",
                "create",
                str(tmp_path / "x"),
                "--data",
                str(files["data"]),
                "--system",
                "a=@reference",
                "--system",
                "b=@reference",
                "--source-column",
                "mr",
                "--target-column",
                "ref",
                "--scale",
                "1",
            ]
        )
        == 2
    )
    assert "scale: 2 to 9 points" in capsys.readouterr().err


@once
def test_a_server_killed_mid_study_loses_no_judgement(tmp_path, files):
    """Judgements acknowledged before a crash (SIGKILL, no shutdown) are all there when the server
    comes back, and the rater goes on from the next task."""
    _make(tmp_path, files, raters=("ann",), items=3)
    study = Study(tmp_path / "study")
    token = study.raters()[0]["token"]

    def call(url, path, body=None):
        request = urllib.request.Request(
            url + path,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    given = []
    with running_study_server(study.folder, tmp_path / "first.log") as (url, process):
        for _ in range(4):
            state = call(url, f"/api/{token}/next")
            call(
                url, f"/api/{token}/judgements", {"study": study.id, "task": state["task"]["id"], "preference": "right"}
            )
            given.append(state["task"]["id"])
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    with running_study_server(study.folder, tmp_path / "second.log") as (url, _):
        state = call(url, f"/api/{token}/next")
        assert state["done"] == 4 and state["task"]["id"] not in given
    assert [j["task"] for j in study.judgements()] == given
