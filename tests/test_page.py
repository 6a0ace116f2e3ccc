"""The interactive page's numbers (ngrpo_sim.pages.page) against closed forms written out here: the
z-score of a group with k right answers and optional virtual r_max answers, the binomial
probability of a silent group, and the gain c(p) summed with exact binomial coefficients. The
browser half is in test_browser.py."""

import csv
import dataclasses
import html
import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from ngrpo_sim.analysis import landscape
from ngrpo_sim.cli import main
from ngrpo_sim.experiments.runs import read_run, run_methods, with_mode, write_run
from ngrpo_sim.methods.presets import get_method
from ngrpo_sim.pages import page
from ngrpo_sim.pages.page import write_page
from ngrpo_sim.reports import length_report
from ngrpo_sim.simulators.dynamics import DynamicsConfig
from ngrpo_sim.simulators.long_answer_config import LongAnswerConfig

EPS = 1e-6  # the estimators' std guard


def z_scores(group_size, right, virtual=(), ddof=1):
    """(advantage of a right answer, of a wrong one) against the group plus the virtual rewards."""
    values = [1.0] * right + [0.0] * (group_size - right) + list(virtual)
    mean = sum(values) / len(values)
    std = math.sqrt(sum((value - mean) ** 2 for value in values) / (len(values) - ddof))
    right_value = math.nan if right == 0 else (0.0 if mean == 1.0 else (1 - mean) / (std + EPS))
    wrong_value = math.nan if right == group_size else (0.0 if mean == 0.0 else -mean / (std + EPS))
    return right_value, wrong_value, mean, std


def closed_form(method, group_size, right, r_max, virtual_samples, ddof):
    if method == "ngrpo":  # its filter drops a group whose every reward is r_max: all 1s at r_max 1
        return (0.0, math.nan) if right == group_size and r_max == 1.0 else z_scores(
            group_size, right, [r_max] * virtual_samples, ddof)[:2]
    if method in ("grpo", "dapo"):  # DAPO drops the homogeneous groups: their z-scores are 0 anyway
        return z_scores(group_size, right, (), ddof)[:2]
    share = right / group_size
    scale = {"dr_grpo": 1.0, "rloo": group_size / (group_size - 1)}.get(method)
    if scale is not None:
        return ((math.nan if right == 0 else scale * (1 - share)),
                (math.nan if right == group_size else -scale * share))
    if method == "psr_nsr":
        return (math.nan if right == 0 else 0.1), (math.nan if right == group_size else -1.0)
    # NGRPO's rivals: their closed forms are tested in test_advantages.py and test_landscape.py;
    # here the page must show what the landscape computes for them.
    method = get_method(method).retuned(r_max=r_max, virtual_samples=virtual_samples, ddof=ddof)
    return tuple(values[right] for values in landscape.count_advantages(method, group_size))


SETTINGS = [dict(group_size=8, r_max=1.0, virtual_samples=1, ddof=1),
            dict(group_size=9, r_max=2.0, virtual_samples=3, ddof=0),
            dict(group_size=2, r_max=3.0, virtual_samples=4, ddof=1),
            dict(group_size=16, r_max=1.5, virtual_samples=2, ddof=0)]


@pytest.fixture(scope="module")
def grid():
    return page.precompute()


@pytest.mark.parametrize("setting", SETTINGS)
def test_advantages_and_group_statistics_equal_the_closed_forms(grid, setting):
    group_size = setting["group_size"]
    for name in grid.methods:
        right, wrong = (grid.lookup(quantity, name, **setting) for quantity in ("right", "wrong"))
        expected = np.array([closed_form(name, group_size, k, setting["r_max"],
                                         setting["virtual_samples"], setting["ddof"])
                             for k in range(group_size + 1)])
        np.testing.assert_allclose(right, expected[:, 0], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(wrong, expected[:, 1], rtol=1e-12, atol=1e-12)
        statistics = [z_scores(group_size, k, (), setting["ddof"])[2:]
                      for k in range(group_size + 1)]
        virtual = [z_scores(group_size, k, [setting["r_max"]] * setting["virtual_samples"],
                            setting["ddof"])[2:] for k in range(group_size + 1)]
        for quantity, column in (("mean", 0), ("std", 1)):
            np.testing.assert_allclose(grid.lookup(quantity, name, **setting),
                                       [row[column] for row in statistics], atol=1e-12)
            np.testing.assert_allclose(grid.lookup(quantity + "_virtual", name, **setting),
                                       [row[column] for row in virtual], atol=1e-12)


def advantages_by_k(name, setting):
    """[(advantage of a right answer, of a wrong one) for k = 0..G] from the closed forms."""
    return [closed_form(name, setting["group_size"], k, setting["r_max"],
                        setting["virtual_samples"], setting["ddof"])
            for k in range(setting["group_size"] + 1)]


def silent_by_k(advantages):
    """A group is silent when every answer in it, right or wrong, gets advantage 0."""
    return [all(math.isnan(value) or value == 0.0 for value in pair) for pair in advantages]


def zero_gradient_curve(silent, p):
    """P(a group of G drawn at success rate p is silent), 0 stored as NaN (as the page does)."""
    group_size = len(silent) - 1
    probability = sum(math.comb(group_size, k) * p ** k * (1 - p) ** (group_size - k)
                      for k in range(group_size + 1) if silent[k])
    return np.where(np.asarray(probability) > 0, probability, np.nan) * np.ones_like(p)


def gain_curve(advantages, p):
    """c(p) = E[A(right | 1 + B)] - E[A(wrong | B)], B ~ Binomial(G - 1, p), summed exactly."""
    group_size = len(advantages) - 1
    return sum(math.comb(group_size - 1, j) * p ** j * (1 - p) ** (group_size - 1 - j)
               * (advantages[j + 1][0] - advantages[j][1]) for j in range(group_size))


@pytest.mark.parametrize("setting", SETTINGS)
def test_silent_groups_and_zero_gradient_curves_equal_the_binomial_sums(grid, setting):
    group_size, p = setting["group_size"], grid.success_rates
    for name in grid.methods:
        silent = grid.lookup("silent", name, **setting).astype(bool)
        expected_silent = silent_by_k(advantages_by_k(name, setting))
        if name in ("grpo", "ngrpo"):  # the case the page is about, spelled out
            assert expected_silent[0] is (name == "grpo")
            # NGRPO's all-correct group is dropped at r_max 1; above, its answers fall short of
            # r_max
            assert expected_silent[group_size] is (name == "grpo" or setting["r_max"] == 1.0)
        assert silent.tolist() == expected_silent
        np.testing.assert_allclose(grid.lookup("zero_gradient", name, **setting),
                                   zero_gradient_curve(expected_silent, p), rtol=1e-12)


@pytest.mark.parametrize("setting", SETTINGS)
def test_the_gain_is_the_exact_binomial_sum(grid, setting):
    for name in grid.methods:
        np.testing.assert_allclose(grid.lookup("gain", name, **setting),
                                   gain_curve(advantages_by_k(name, setting), grid.success_rates),
                                   rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("setting", SETTINGS)
def test_a_legend_joins_the_methods_whose_curves_coincide(grid, setting):
    # Each panel's curves from the closed forms above; a method shares the line of the first
    # method whose every curve in the panel equals its own, and a zero-gradient probability that
    # is 0 everywhere (no line on a log axis) is named as having none.
    p = grid.success_rates
    curves = {}
    for name in grid.methods:
        advantages = advantages_by_k(name, setting)
        curves[name] = {"advantage": np.ravel(advantages),
                        "zero_gradient": zero_gradient_curve(silent_by_k(advantages), p),
                        "gain": gain_curve(advantages, p)}
    assert sorted(page.PANELS) == sorted(curves["grpo"])
    for panel in page.PANELS:
        for name in grid.methods:
            if np.isnan(curves[name][panel]).all():
                expected = None
            else:
                expected = next(other for other in grid.methods if np.allclose(
                    curves[other][panel], curves[name][panel], rtol=1e-9, equal_nan=True))
            assert grid.twin(panel, name, **setting) == expected, (panel, name)


def test_the_legends_of_the_opening_group_spelled_out(grid):
    # G = 8, r_max 1, one virtual answer, Bessel: DAPO has GRPO's advantage; every method that
    # ignores homogeneous groups is silent exactly when GRPO is, NGRPO's shifted baseline when
    # NGRPO is; PSR-NSR and AsymRE always teach; AsymRE's gain is Dr. GRPO's (a shifted baseline
    # changes no expected step), 7/8.
    def shared(panel):
        twins = {name: grid.twin(panel, name, **page.DEFAULT_SETTING) for name in grid.methods}
        return {name: twin for name, twin in twins.items() if twin != name}

    assert shared("advantage") == {"dapo": "grpo"}
    assert shared("zero_gradient") == {"dapo": "grpo", "dr_grpo": "grpo", "rloo": "grpo",
                                       "maxrl": "grpo", "qae": "grpo",
                                       "shifted_baseline": "ngrpo", "psr_nsr": None,
                                       "asymre": None}
    assert shared("gain") == {"dapo": "grpo", "asymre": "dr_grpo"}
    np.testing.assert_allclose(grid.lookup("gain", "asymre", **page.DEFAULT_SETTING), 7 / 8)


def test_each_distinct_array_is_stored_once(grid):
    arrays = [grid.pool[start:end].tobytes()
              for start, end in zip(grid.offsets[:-1], grid.offsets[1:])]
    assert len(set(arrays)) == len(arrays)
    # GRPO ignores r_max and the virtual samples: every such setting shares one array.
    shared = {int(grid.index["right"]["grpo"][page.setting_index(8, r_max, virtual, 1)])
              for r_max in page.R_MAX_VALUES for virtual in page.VIRTUAL_SAMPLES}
    assert len(shared) == 1


def test_settings_off_the_grid_name_the_command_that_computes_them():
    with pytest.raises(ValueError,
                       match=r"group_size=32 is not on the page's grid .*ngrpo-sim landscape"):
        page.setting_index(32, 1.0, 1, 1)
    with pytest.raises(ValueError, match=r"r_max=1.25 is not on the page's grid"):
        page.setting_index(8, 1.25, 1, 1)


def small_headline(folder, names=None):
    """A report's headline folder of GRPO and NGRPO runs; ``names`` renames the methods."""
    config = DynamicsConfig(steps=4, seeds=2, num_prompts=16, prompts_per_step=4, minibatches=2)
    run_records = run_methods([get_method("grpo"), get_method("ngrpo")],
                               [config, with_mode(config, "expected")], "test")
    if names is not None:
        run_records = [dataclasses.replace(record, method=names[record.method])
                       for record in run_records]
    write_run(folder, run_records)
    return run_records


LENGTH_METHODS = {"calibrated": ("grpo", "ngrpo", "grpo_calibrated"),
                  "cap binds": ("grpo", "ngrpo")}
"""The presets ``small_lengths`` trains in each setting of the report's long-answer section."""


def small_lengths(report, names=None) -> dict[str, list]:
    """The long-answer presets' run folders of a report in ``report``, as the report names them,
    at a tiny size; ``names`` renames the methods. Returns each setting's run records."""
    base = LongAnswerConfig(num_prompts=16, prompts_per_step=8, max_length=32, steps=3, seeds=2)
    written = {}
    for study in length_report.STUDIES:
        run_records = run_methods([get_method(name) for name in LENGTH_METHODS[study.name]],
                                  [length_report.study_config(study, base)], "test")
        if names is not None:
            run_records = [dataclasses.replace(record, method=names[record.method])
                           for record in run_records]
        write_run(length_report.study_folder(report / "lengths", study) / "presets", run_records,
                  figures=False)
        written[study.name] = run_records
    return written


HOSTILE = """<script>window.pwned=1</script>"'</div><img src=x onerror="window.pwned=2">&amp;"""
"""A string that would run a script, close the element around it or break out of an attribute,
were it written into HTML or a script tag as it is."""
HOSTILE_NAMES = {"grpo": f"grpo {HOSTILE}", "ngrpo": f"ngrpo {HOSTILE}"}


def hostile_headline(root: Path) -> Path:
    """A headline folder whose path and method names hold HOSTILE (the config's strings are
    checked against their allowed values when the folder is read), beside long-answer folders
    whose method names hold it."""
    folder = root / HOSTILE / "headline"
    small_headline(folder, HOSTILE_NAMES)
    small_lengths(folder.parent, HOSTILE_NAMES | {"grpo_calibrated": f"grpo_calibrated {HOSTILE}"})
    return folder


class Markup(HTMLParser):
    """Tags and text of an HTML fragment, read by the standard library's parser."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags, self.text = [], ""
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text += data


def bokeh_models(page_text: str) -> list[dict]:
    """Every model of the Bokeh document embedded in the page, as BokehJS reads it back (the JSON
    in its script tag, with the character references Bokeh wrote there resolved)."""
    scripts = re.findall(r'<script type="application/json"[^>]*>(.*?)</script>', page_text, re.S)
    assert len(scripts) == 1
    models = []

    def walk(value):
        if isinstance(value, dict):
            if value.get("type") == "object":
                models.append(value)
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(json.loads(html.unescape(scripts[0])))
    return models


def test_a_run_folder_reads_back_as_written(tmp_path):
    written = small_headline(tmp_path)
    read = read_run(tmp_path)
    assert [(t.method, t.config) for t in read] == [(t.method, t.config) for t in written]
    for before, after in zip(written, read):
        for name, values in before.metrics.items():  # written to 6 significant digits
            np.testing.assert_allclose(after.metrics[name], values, rtol=1e-5, atol=1e-12)
    with pytest.raises(ValueError, match="holds no config.json"):
        read_run(tmp_path / "nothing")


def test_a_long_answer_run_folder_reads_back_as_written(tmp_path):
    written = small_lengths(tmp_path)["cap binds"]
    read = read_run(tmp_path / "lengths" / "cap-binds" / "presets")
    assert [(t.method, t.config) for t in read] == [(t.method, t.config) for t in written]
    assert isinstance(read[0].config, LongAnswerConfig) and read[0].config.natural_length == 64
    for before, after in zip(written, read):
        for name, values in before.metrics.items():  # written to 6 significant digits
            np.testing.assert_allclose(after.metrics[name], values, rtol=1e-5, atol=1e-12)


def test_page_command_writes_one_self_contained_file(tmp_path, capsys):
    small_headline(tmp_path / "report" / "headline")
    out = tmp_path / "site" / "index.html"
    assert main(["page", "--report", str(tmp_path / "report"), "--out", str(out)]) == 0
    assert "MB); open it in any browser" in capsys.readouterr().out
    text = out.read_text()
    # One file, nothing written beside it.
    assert [path.name for path in out.parent.iterdir()] == ["index.html"]
    assert "<script" in text and not re.search(r"<script[^>]*\ssrc=|<link[^>]*\shref=", text)
    assert "Training dynamics: the report's headline run" in text
    for argv, message in ((["--report", str(tmp_path)], "holds no headline folder"),
                          (["--out", str(tmp_path / "page.txt")], "path must end in .html")):
        with pytest.raises(SystemExit) as exit_info:
            main(["page", *argv])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_the_page_replaces_its_own_file_and_refuses_any_other(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the page of no report: a report in runs/report plays no part
    out = tmp_path / "index.html"
    out.write_text("<html><title>my notes</title></html>")
    with pytest.raises(SystemExit) as exit_info:
        main(["page", "--out", str(out)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (f"ngrpo-sim page: error: out={str(out)!r} is a file other "
                                       "than the page this command writes; nothing was changed: "
                                       "give another --out\n")
    assert out.read_text() == "<html><title>my notes</title></html>"
    out.unlink()
    assert main(["page", "--out", str(out)]) == 0
    out.write_text(out.read_text().replace("</body>", "<!-- the first page --></body>"))
    assert main(["page", "--out", str(out)]) == 0  # its own page is written again
    assert "<!-- the first page -->" not in out.read_text()


def test_without_a_report_the_page_says_how_to_get_the_curves(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no runs/report here
    assert main(["page"]) == 0
    text = (tmp_path / "runs" / "page" / "index.html").read_text()
    assert ("No report was found" in text
            and "Training dynamics: the report's headline run" not in text)


def test_a_run_folder_written_before_the_renames_reads_with_the_new_names():
    # Written by `ngrpo-sim dynamics --lr 0.07 --batch-prompts 4 --right-answers 2` before issue 16.
    folder = Path(__file__).parent / "data" / "run_folder_before_issue16"
    with (folder / "metrics.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    read = {(t.method, t.config.mode): t for t in read_run(folder)}
    assert sorted(read) == [("grpo", "expected"), ("grpo", "sampled"), ("ngrpo", "expected"),
                            ("ngrpo", "sampled")]
    for run_record in read.values():
        config = run_record.config
        assert (config.learning_rate, config.prompts_per_step, config.correct_answers) == (0.07, 4,
                                                                                           2)
        for row in rows:
            if (row["method"], row["mode"]) == (run_record.method, config.mode):
                step, seed = int(row["step"]), int(row["seed"])
                for old, new in (("share_all_right", "share_all_correct"),
                                 ("accuracy", "accuracy")):
                    np.testing.assert_equal(run_record.metrics[new][step, seed], float(row[old]))
    assert np.isfinite(read["ngrpo", "sampled"].metrics["share_all_correct"][1:]).all()


def test_strings_of_the_report_folder_are_shown_literally(tmp_path):
    headline = hostile_headline(tmp_path)
    text = write_page(tmp_path / "page.html", headline.parent).read_text()
    # Nothing of them is markup in the file: each script tag closes where Bokeh closes it.
    assert "<script>window.pwned" not in text and "<img src=x" not in text
    assert text.count("</script>") == len(re.findall(r"<script[\s>]", text))
    models = bokeh_models(text)
    divs = [Markup(model["attributes"]["text"]) for model in models
            if model["name"] == "Div" and model["attributes"].get("text")]
    for div in divs:  # what BokehJS writes into the page as HTML
        assert {tag for tag, _ in div.tags} <= {"div", "h1", "h2", "p", "em", "code"}
        assert not [name for _, attrs in div.tags for name in attrs if name.startswith("on")]
    assert sum(f"Read from {headline};" in div.text for div in divs) == 1
    lengths = headline.parent / "lengths"
    for setting in ("calibrated", "cap-binds"):
        assert sum(f"Read from {lengths / setting / 'presets'}." in div.text for div in divs) == 1
    named = f"methods {HOSTILE_NAMES['grpo']}, {HOSTILE_NAMES['ngrpo']}"
    assert sum(named in div.text for div in divs) == 2
    # The method names are legend labels, which Bokeh draws as text on its canvas.
    labels = {model["attributes"]["label"]["value"] for model in models
              if model["name"] == "LegendItem"}
    assert {HOSTILE_NAMES["grpo"], HOSTILE_NAMES["ngrpo"]} <= labels
