"""The two pages in a real browser: Debian's chromium, headless, driven by Playwright (pointed at
the system browser; Playwright's own browser download is never used). Each page opens from disk
with no console error and no request leaving the machine; moving the page's sliders shows the
advantages that closed forms give for the new setting; the page fits a 1,024-px and a 1,440-px
screen, nothing cut off at its right edge, and its legends name only the curves one can see; the
inspector shows the tokens a tiny trainer run recorded.

Both pages are also opened on run folders whose every string (method names, prompts, answers,
config values, the folder's own path) would run a script or close an element if written into the
page as it is: no script runs and the strings are displayed as they are.

`make test` installs chromium (apt-get) and Playwright (the dev extra). Where either cannot be had,
these tests skip and say why.
"""

import math
from pathlib import Path

import pytest

from ngrpo_sim.base.plotting import method_colour, metric_label
from ngrpo_sim.experiments import trainer_runs
from ngrpo_sim.pages import page as landscape_page
from ngrpo_sim.pages.browser import chromium
from ngrpo_sim.pages.inspector import write_inspector
from ngrpo_sim.pages.page import write_page

pytest.importorskip("playwright.sync_api",
                    reason="Playwright is not installed: pip install -e '.[dev]'")

LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")


@pytest.fixture(scope="module")
def browser():
    try:
        with chromium() as browser:
            yield browser
    except ValueError as error:  # no browser here: say which and how to get it
        pytest.skip(str(error))


class OpenPage:
    """A page opened from disk that records console errors and refuses every request off the
    machine (and records it)."""

    def __init__(self, browser, path: Path, width: int = 1450, height: int = 1100):
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.errors, self.remote = [], []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(
            message.text))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.goto(path.resolve().as_uri())

    def _route(self, route):
        if route.request.url.startswith(LOCAL_SCHEMES):
            route.continue_()
        else:
            self.remote.append(route.request.url)
            route.abort()

    def close(self):
        self.context.close()


@pytest.fixture(scope="module")
def written_page(tmp_path_factory):
    """The page of a small report (its headline and long-answer run folders), written once for
    the tests that only look."""
    from test_page import small_headline, small_lengths  # noqa: PLC0415 (the page tests' helpers)

    folder = tmp_path_factory.mktemp("page")
    small_headline(folder / "headline")
    small_lengths(folder)
    return write_page(folder / "page.html", folder)


def drawn(page) -> None:
    """Wait until the widgets' first update has run and BokehJS has drawn every view."""
    page.locator('td[data-method="ngrpo"][data-role="wrong"]').wait_for()
    page.wait_for_function("() => window.Bokeh !== undefined && Bokeh.documents.length > 0"
                           " && Bokeh.documents[0].is_idle")


def closed_form(group_size, right, virtual_rewards, ddof):
    """(right answer, wrong answer) z-scores against the group plus the virtual rewards."""
    values = [1.0] * right + [0.0] * (group_size - right) + list(virtual_rewards)
    mean = sum(values) / len(values)
    std = math.sqrt(sum((value - mean) ** 2 for value in values) / (len(values) - ddof))
    return (1 - mean) / (std + 1e-6), -mean / (std + 1e-6), mean, std


def shown(page, method):
    cells = page.locator(f'td[data-method="{method}"][data-value]')
    return {cell.get_attribute("data-role"): float(cell.get_attribute("data-value"))
            for cell in cells.all()}


def press(page, widget, key, times):
    handle = page.locator(f".{widget} .noUi-handle")
    handle.focus()
    for _ in range(times):
        handle.press(key)


def test_the_page_opens_offline_and_its_sliders_show_the_closed_forms(browser, tmp_path):
    from test_page import small_headline  # noqa: PLC0415 (a helper of the page's own tests)

    small_headline(tmp_path / "headline")  # a report written before the long answers
    opened = OpenPage(browser, write_page(tmp_path / "page.html", tmp_path))
    page = opened.page
    try:
        page.locator('td[data-method="ngrpo"][data-role="wrong"]').wait_for()
        # Opens on an all-wrong group of 8: GRPO gives 0, NGRPO -(1/9) / (1/3) = -1/3.
        assert shown(page, "grpo")["wrong"] == 0.0
        assert shown(page, "ngrpo")["wrong"] == pytest.approx(closed_form(8, 0, [1.0], 1)[1],
                                                              abs=1e-12)
        press(page, "ngrpo-group-size", "ArrowRight", 1)   # G = 9
        press(page, "ngrpo-right", "ArrowRight", 2)        # k = 2
        page.locator(".ngrpo-r-max button", has_text="2").click()
        page.locator(".ngrpo-virtual button", has_text="3").click()
        page.locator(".ngrpo-ddof button", has_text="population").click()
        page.wait_for_function("() => true")
        ngrpo_right, ngrpo_wrong, mean_virtual, std_virtual = closed_form(9, 2, [2.0] * 3, 0)
        grpo_right, grpo_wrong, mean, std = closed_form(9, 2, [], 0)
        assert shown(page, "ngrpo") == pytest.approx({"right": ngrpo_right, "wrong": ngrpo_wrong},
                                                     abs=1e-12)
        for method in ("grpo", "dapo"):  # GRPO's advantage ignores r_max and the virtual answers
            assert shown(page, method) == pytest.approx({"right": grpo_right, "wrong": grpo_wrong},
                                                        abs=1e-12)
        assert shown(page, "dr_grpo") == pytest.approx({"right": 7 / 9, "wrong": -2 / 9}, abs=1e-12)
        assert shown(page, "rloo") == pytest.approx({"right": 7 / 8, "wrong": -2 / 8}, abs=1e-12)
        assert shown(page, "psr_nsr") == pytest.approx({"right": 0.1, "wrong": -1.0}, abs=1e-12)
        statistics = {element.get_attribute("data-stat"): float(element.get_attribute("data-value"))
                      for element in page.locator("b[data-stat]").all()}
        assert statistics == pytest.approx({"mean": mean, "std": std, "mean_virtual": mean_virtual,
                                            "std_virtual": std_virtual}, abs=1e-12)
        assert page.locator(".chip.virtual").count() == 3
        assert page.get_by_text("Training dynamics: the report's headline run").count() == 1
        assert page.get_by_text("Long answers: lengths and truncation").count() == 1
        assert page.get_by_text(f"The report in {tmp_path} has no long-answer runs, so this page "
                                "shows no answer lengths; run ngrpo-sim report to write this "
                                "page again with them.").count() == 1
        assert page.evaluate(AXIS_LABELS).count(metric_label("length_wrong")) == 0
        assert opened.errors == [] and opened.remote == []
    finally:
        opened.close()


# Every element the reader can see, in the document and in every shadow root (Bokeh draws each
# model in one), whose box reaches past the left or right edge of the window once the boxes of its
# clipping ancestors (overflow other than visible, across shadow hosts) have cut it.
OFFENDERS = """(width) => {
  const offenders = [];
  const name = (element) => element.tagName.toLowerCase()
    + [...element.classList].map((c) => `.${c}`).join("");
  const parentOf = (node) => node.parentElement || node.getRootNode().host || null;
  const visit = (root) => {
    for (const element of root.querySelectorAll("*")) {
      if (element.shadowRoot) { visit(element.shadowRoot); }
      const style = getComputedStyle(element), box = element.getBoundingClientRect();
      if (style.visibility === "hidden" || style.display === "none"
          || box.width === 0 || box.height === 0) { continue; }
      let left = box.left, right = box.right, path = name(element);
      for (let node = parentOf(element); node !== null; node = parentOf(node)) {
        path = `${name(node)} > ${path}`;
        if (getComputedStyle(node).overflowX !== "visible") {
          const clip = node.getBoundingClientRect();
          left = Math.max(left, clip.left);
          right = Math.min(right, clip.right);
        }
      }
      if (right > left && (right > width + 0.5 || left < -0.5)) {
        offenders.push(`${path} spans ${left.toFixed(0)} to ${right.toFixed(0)} px`);
      }
    }
  };
  visit(document);
  return {scroll_width: document.documentElement.scrollWidth, offenders};
}"""


DRAWN = """(css_class) => {
  let count = 0;
  const visit = (root) => {
    for (const element of root.querySelectorAll("*")) {
      if (element.shadowRoot) { visit(element.shadowRoot); }
      const box = element.getBoundingClientRect();
      if (element.classList.contains(css_class) && box.width > 0 && box.height > 0) {
        count += 1;
      }
    }
  };
  visit(document);
  return count;
}"""
"""How many elements of a css class the page draws with a box (Bokeh's toolbars are of
bk-Toolbar, its plots of bk-Figure)."""


AXIS_LABELS = """() => [...Bokeh.documents[0].all_models].filter(
  (model) => model.type === "Figure").map((model) => model.left[0].axis_label)"""
"""The y-axis label of every plot of the page's document."""
CURVES = """(name) => Bokeh.documents[0].get_model_by_name(name).items.map((item) => [
  item.label.value, item.renderers.map((renderer) => renderer.glyph.type),
  item.renderers.map(({glyph}) => (glyph.line_color || glyph.fill_color).value)])"""
"""Per entry of a legend: its label, and the glyph type and colour of each curve it names."""


def test_the_page_draws_the_lengths_and_truncation_of_the_long_answers(browser, written_page):
    from test_page import LENGTH_METHODS  # noqa: PLC0415 (the page tests' settings)

    opened = OpenPage(browser, written_page, 1024, 768)
    page = opened.page
    try:
        drawn(page)
        assert page.get_by_text("Answers of up to 32 tokens: lengths and truncation").count() == 1
        # Three landscape panels, four headline panels, four per long-answer setting.
        assert page.evaluate(DRAWN, "bk-Figure") == 3 + 4 + 4 * len(LENGTH_METHODS)
        labels = page.evaluate(AXIS_LABELS)
        for name in ("length_correct", "length_wrong", "truncation", "accuracy"):
            # The headline has an accuracy panel too.
            assert labels.count(metric_label(name)) == len(LENGTH_METHODS) + (name == "accuracy")
        for setting, methods in LENGTH_METHODS.items():
            page.get_by_text(f"{setting}: L = 32 tokens").wait_for()
            # One entry per method, naming its band and its mean, both in the method's colour.
            assert page.evaluate(CURVES, f"legend-lengths-{setting}") == [
                [method, ["VArea", "Line"], [method_colour(method)] * 2] for method in methods]
        assert opened.errors == [] and opened.remote == []
    finally:
        opened.close()


@pytest.mark.parametrize("width, height", [(1024, 768), (1440, 900)])
def test_the_page_fits_the_screen_without_a_horizontal_cut(browser, written_page, width,
                                                           height):
    from test_page import LENGTH_METHODS  # noqa: PLC0415 (the page tests' settings)

    opened = OpenPage(browser, written_page, width, height)
    page = opened.page
    try:
        drawn(page)
        fit = page.evaluate(OFFENDERS, width)
        assert fit["scroll_width"] <= width, (
            f"the page is {fit['scroll_width']} px wide in a {width}-px window")
        assert fit["offenders"] == [], (
            f"{len(fit['offenders'])} elements reach past the {width}-px window:\n"
            + "\n".join(fit["offenders"][:20]))
        # The three landscape plots share one toolbar, the four training curves another, and
        # each long-answer setting's four curves one more.
        assert page.evaluate(DRAWN, "bk-Toolbar") == 2 + len(LENGTH_METHODS)
        assert opened.errors == [] and opened.remote == []
    finally:
        opened.close()


LEGENDS = """(panel) => {
  const legend = Bokeh.documents[0].get_model_by_name(`legend-${panel}`);
  return {title: legend.title,
          shown: legend.items.filter((item) => item.visible).map(
            (item) => [item.label.value.replaceAll("\\n", " "),
                       item.renderers.every((renderer) => renderer.visible)]),
          hidden_drawn: legend.items.filter((item) => !item.visible).some(
            (item) => item.renderers.some((renderer) => renderer.visible))};
}"""


def expected_legends(grid, setting) -> dict[str, tuple[str, list]]:
    """Per panel, the legend's title and its entries: every curve drawn, named by the methods
    that share it, from the grid's coincidences (test_page checks those against closed forms)."""
    legends = {}
    for panel in landscape_page.PANELS:
        twins = {name: grid.twin(panel, name, **setting) for name in grid.methods}
        missing = [name for name, twin in twins.items() if twin is None]
        title = "no line (never silent): " + ", ".join(missing) if missing else ""
        shown = [[" = ".join(other for other in grid.methods if twins[other] == name), True]
                 for name in grid.methods if twins[name] == name]
        legends[panel] = (title, shown)
    return legends


def test_each_legend_names_the_curves_one_can_see(browser, written_page):
    grid = landscape_page.precompute()
    opened = OpenPage(browser, written_page)
    page = opened.page
    try:
        drawn(page)
        setting = dict(landscape_page.DEFAULT_SETTING)
        for step in ("opened", "r_max 2", "population std"):
            if step == "r_max 2":
                page.locator(".ngrpo-r-max button", has_text="2").click()
                setting["r_max"] = 2.0
            elif step == "population std":
                page.locator(".ngrpo-ddof button", has_text="population").click()
                setting["ddof"] = 0
            for panel, (title, shown) in expected_legends(grid, setting).items():
                legend = page.evaluate(LEGENDS, panel)
                assert legend["title"].replace("\n", " ") == title, (step, panel)
                assert legend["shown"] == shown, (step, panel)
                assert not legend["hidden_drawn"], f"{step}: {panel} draws a curve it does not name"
        # Opened on G = 8: DAPO's advantage is GRPO's; PSR-NSR and AsymRE are never silent.
        assert expected_legends(grid, landscape_page.DEFAULT_SETTING)["advantage"][1][0] == [
            "grpo = dapo", True]
        assert opened.errors == [] and opened.remote == []
    finally:
        opened.close()


def test_the_inspector_shows_the_tokens_of_a_tiny_trainer_run(browser, tmp_path):
    pytest.importorskip("torch")
    from test_inspector import tiny_run_config, trainer  # noqa: PLC0415

    run = trainer.train(tiny_run_config(tmp_path / "run", steps=2, inspect_steps="2"))
    opened = OpenPage(browser, write_inspector(run))
    page = opened.page
    try:
        recorded = trainer_runs.read_inspection(run, 2)
        rows = page.locator('section[data-step="2"] tr[data-answer]')
        answers = [answer for group in recorded.groups for answer in group.answers]
        assert rows.count() == len(answers)
        for index, answer in enumerate(answers):
            tokens = rows.nth(index).locator("td.tokens > i")
            assert [text.rstrip("▲▼") for text in tokens.all_inner_texts()] == answer.tokens
            clipped = rows.nth(index).locator("i.clipped-low, i.clipped-high").count()
            assert clipped == sum(state is not None for state in answer.clip or ())
        assert page.locator('section[data-step="2"] .group').count() == len(recorded.groups)
        assert opened.errors == [] and opened.remote == []
    finally:
        opened.close()


def test_no_string_of_a_run_folder_runs_in_the_inspector(browser, tmp_path):
    from test_inspector import HOSTILE, hostile_run  # noqa: PLC0415

    run = hostile_run(tmp_path / HOSTILE)
    opened = OpenPage(browser, write_inspector(run))
    page = opened.page
    try:
        assert page.evaluate("() => window.pwned") is None
        assert page.locator("script, img").count() == 0
        assert page.locator(".prompt").inner_text() == HOSTILE
        assert page.locator("h1").inner_text() == f"Step inspector: {HOSTILE} in {run}"
        recorded = trainer_runs.read_inspection(run, 1).groups[0].answers[0]
        shown = page.locator('tr[data-answer="1"] td.tokens > i').all_inner_texts()
        assert [text.rstrip("▲▼") for text in shown] == recorded.tokens
        assert opened.errors == [] and opened.remote == []
    finally:
        opened.close()


def test_no_string_of_a_headline_folder_runs_in_the_page(browser, tmp_path):
    from test_page import hostile_headline  # noqa: PLC0415

    headline = hostile_headline(tmp_path)
    opened = OpenPage(browser, write_page(tmp_path / "page.html", headline.parent))
    page = opened.page
    try:
        page.locator('td[data-method="ngrpo"][data-role="wrong"]').wait_for()
        assert page.evaluate("() => window.pwned") is None
        assert page.locator("img").count() == 0
        assert str(headline) in page.locator("code").all_inner_texts()
        assert opened.errors == [] and opened.remote == []
    finally:
        opened.close()
