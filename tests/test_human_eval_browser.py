"""The raters' page, driven in a real headless Chromium (Debian's chromium and chromium-driver,
installed by `make system`, through Selenium) against `prompttune human-eval serve` on loopback:
two raters judge a whole study with the keyboard, one reloads midway and another works in two tabs,
and every judgement is in the study exactly once, as given.

The study is made here from two systems' outputs; PROMPTTUNE_HUMAN_EVAL_STUDY=FOLDER drives a copy
of another study instead, and PROMPTTUNE_SCREENSHOTS=FOLDER keeps the screenshots taken on the way
(the documentation's is one: see docs/guide/human-eval.md for the command)."""

import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait
from servers import running_study_server

from prompttune.human_eval.study import STUDY_FILE, Design, Study, create_study, parse_systems

# The page, its server and the study's SQLite file: nothing here differs between transformers releases.
pytestmark = pytest.mark.same_on_every_transformers

SOURCES = [
    "name[The Olive Grove], eatType[pub], food[Italian], area[riverside]",
    "name[Blue Spice], eatType[coffee shop], priceRange[cheap], near[Avalon]",
    "name[Zizzi], food[Chinese], customer rating[high], familyFriendly[yes]",
    "name[The Punter], eatType[restaurant], food[French], area[city centre]",
]
ALPHA = [
    "The Olive Grove is an Italian pub by the riverside.",
    "Blue Spice is a cheap coffee shop near Avalon.",
    "Zizzi serves Chinese food, is rated highly and welcomes children.",
    "The Punter is a French restaurant in the city centre.",
]
BETA = [
    "The Olive Grove is a pub.",
    "Blue Spice is a coffee shop near Avalon with low prices.",
    "Zizzi is a family friendly Chinese place.",
    "The Punter serves French food.",
]


def _browser():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "the page tests run Debian's chromium and chromium-driver: run `make system`"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,640"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(driver), options=options)


def _make_study(folder: Path) -> Path:
    given = os.environ.get("PROMPTTUNE_HUMAN_EVAL_STUDY")
    if given:
        folder.mkdir()
        with sqlite3.connect(Path(given) / STUDY_FILE) as source, sqlite3.connect(folder / STUDY_FILE) as copy:
            source.backup(copy)
        return folder
    data = folder.parent / "sources.jsonl"
    data.write_text("".join(json.dumps({"mr": s}) + "\n" for s in SOURCES))
    files = {}
    for name, texts in (("alpha", ALPHA), ("beta", BETA)):
        files[name] = folder.parent / f"{name}.jsonl"
        files[name].write_text(
            "".join(json.dumps({"source": s, "generations": [t]}) + "\n" for s, t in zip(SOURCES, texts))
        )
    systems = parse_systems([f"{name}=outputs:{path}" for name, path in files.items()])
    create_study(
        folder,
        str(data),
        systems,
        Design(mode="both", raters=("ann", "bo"), criteria=("fluency", "faithfulness")),
        source_column="mr",
    )
    return folder


@pytest.fixture
def served(tmp_path):
    folder = _make_study(tmp_path / "study")
    with running_study_server(folder, tmp_path / "serve.log") as (url, _):
        yield url, Study(folder)


@pytest.fixture
def browsers():
    opened = []

    def open_one():
        opened.append(_browser())
        return opened[-1]

    yield open_one
    for browser in opened:
        browser.quit()


def _screenshot(browser, tmp_path: Path, name: str) -> None:
    browser.save_screenshot(str(tmp_path / name))
    keep = os.environ.get("PROMPTTUNE_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / name, Path(keep) / name)


def _shown(browser) -> dict:
    """What the page shows now: progress, kind, source; waits until an item (or the end) is there."""

    def ready(b):
        progress = b.find_element(By.ID, "progress").text
        return progress if progress and progress != "loading…" else None

    progress = WebDriverWait(browser, 20).until(ready)
    done = browser.find_element(By.ID, "done").is_displayed()
    kind = None
    if not done:
        kind = "pair" if browser.find_element(By.ID, "pairwise").is_displayed() else "rate"
    return {
        "progress": progress,
        "done": done,
        "kind": kind,
        "source": None if done else browser.find_element(By.ID, "source").text,
    }


def _wait_past(browser, progress: str) -> dict:
    WebDriverWait(browser, 20).until(lambda b: b.find_element(By.ID, "progress").text != progress)
    return _shown(browser)


PAIR_KEYS = [
    ("1", "left"),
    (Keys.ARROW_RIGHT, "right"),
    ("2", "tie"),
    (Keys.ARROW_LEFT, "left"),
    ("3", "right"),
    (Keys.ARROW_DOWN, "tie"),
]


def _judge_one(browser, step: int, given: list) -> None:
    """Judge the item on the page with the keyboard, and note what was given."""
    shown = _shown(browser)
    task_id = browser.execute_script("return task.id")
    body = browser.find_element(By.TAG_NAME, "body")
    if shown["kind"] == "pair":
        key, choice = PAIR_KEYS[step % len(PAIR_KEYS)]
        body.send_keys(key)
        given.append((task_id, choice, None))
    else:
        criteria = browser.execute_script("return task.criteria")
        scale = browser.execute_script("return task.scale")
        values = {c: 1 + (step + i) % scale for i, c in enumerate(criteria)}
        for c in criteria:
            body.send_keys(str(values[c]))
        assert browser.find_element(By.ID, "submit").is_enabled()
        body.send_keys(Keys.ENTER)
        given.append((task_id, None, values))
    _wait_past(browser, shown["progress"])


def test_two_raters_judge_a_whole_study_with_the_keyboard(served, browsers, tmp_path):
    url, study = served
    links = {r["name"]: f"{url}/rate/{r['token']}" for r in study.raters()}
    totals = {r["name"]: r["tasks"] for r in study.raters()}
    raters = list(links)[:2]
    pages = {rater: browsers() for rater in raters}
    for rater, page in pages.items():
        page.get(links[rater])
        assert page.find_element(By.ID, "rater").text == rater
    given = {rater: [] for rater in raters}
    shots = set()
    for step in range(max(totals[r] for r in raters)):
        for rater in raters:  # the two raters at once, taking turns
            page = pages[rater]
            shown = _shown(page)
            if shown["done"]:
                continue
            assert shown["progress"] == f"Task {len(given[rater]) + 1} of {totals[rater]}"
            if shown["kind"] not in shots and rater == raters[0]:
                _screenshot(page, tmp_path, f"human_eval_{shown['kind']}.png")
                shots.add(shown["kind"])
            if step == 3 and rater == raters[0]:  # a reload midway: the same item, nothing recorded
                page.refresh()
                assert _shown(page) == shown
                assert len(study.judgements()) == sum(len(g) for g in given.values())
            _judge_one(page, step, given[rater])
    for rater, page in pages.items():
        final = _shown(page)
        assert final["done"] and final["progress"] == f"{totals[rater]} of {totals[rater]} judged"
    recorded = {j["task"]: j for j in study.judgements()}
    assert len(recorded) == sum(totals[r] for r in raters)
    for rater in raters:
        assert len(given[rater]) == totals[rater]
        for task, preference, ratings in given[rater]:
            assert recorded[task]["rater"] == rater
            assert (recorded[task]["preference"], recorded[task]["ratings"]) == (preference, ratings)
    assert shots == {"pair", "rate"}


def test_a_second_tab_a_double_click_and_an_unknown_link_change_nothing(served, browsers):
    url, study = served
    rater = study.raters()[0]
    link = f"{url}/rate/{rater['token']}"
    first, second = browsers(), browsers()
    first.get(link)
    second.get(link)
    shown = _shown(first)
    assert _shown(second) == shown
    # A double click on a pairwise item records one judgement (the page ignores the second);
    # on a rating item the submit button works once its criteria are all rated.
    if shown["kind"] == "pair":
        first.execute_script("const b = document.querySelector('button[data-choice=left]'); b.click(); b.click();")
    else:
        first.execute_script(
            "task.criteria.forEach((c, i) => rate(i, 1));"
            "const b = document.getElementById('submit'); b.click(); b.click();"
        )
    _wait_past(first, shown["progress"])
    assert len(study.judgements()) == 1
    # The second tab still shows the item just judged: its answer is refused with a message, it
    # moves on to the rater's current item, and nothing is recorded.
    if shown["kind"] == "pair":
        second.find_element(By.TAG_NAME, "body").send_keys("1")
    else:
        second.execute_script("task.criteria.forEach((c, i) => rate(i, 2)); submit({ratings: ratings});")
    WebDriverWait(second, 20).until(lambda b: b.find_element(By.ID, "notice").is_displayed())
    assert "already judged" in second.find_element(By.ID, "notice").text
    assert _wait_past(second, shown["progress"])["progress"] == _shown(first)["progress"]
    (only,) = study.judgements()
    assert only["rater"] == rater["name"]
    # A link that is nobody's, and the start page that takes a token.
    first.get(f"{url}/rate/not-a-token")
    assert "Unknown rater" in first.find_element(By.TAG_NAME, "h1").text
    first.get(url + "/")
    first.find_element(By.ID, "who").send_keys(rater["token"] + Keys.ENTER)
    WebDriverWait(first, 20).until(lambda b: b.current_url == link)
    assert _shown(first)["progress"] == _shown(second)["progress"]
