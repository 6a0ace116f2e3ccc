"""Run every notebook at full size and save the figure of its cell tagged ``readme-figure`` for the
README.

    .venv/bin/python notebooks/make_readme_figures.py  # writes docs/figures/notebooks/NN_name.png
    .venv/bin/python notebooks/make_readme_figures.py 01 06   # only notebooks 01 and 06

About a minute when notebook 5's comparison (runs/minimal/compare) already exists; it trains that
comparison first otherwise (about 6 minutes on a 2-core CPU). Always at full size, whatever
NGRPO_FAST says.
"""

import base64
import io
import sys
from pathlib import Path

from PIL import Image

from ngrpo_sim.teaching.notebook_runner import execute_notebook

NOTEBOOK_FOLDER = Path(__file__).resolve().parent
FIGURE_FOLDER = NOTEBOOK_FOLDER.parent / "docs" / "figures" / "notebooks"
TAG = "readme-figure"


def tagged_figure(notebook) -> bytes:
    """The PNG shown by the notebook's one cell tagged ``readme-figure`` (its first image if it
    shows several)."""
    tagged = [cell for cell in notebook.cells if TAG in cell.metadata.get("tags", ())]
    if len(tagged) != 1:
        raise ValueError(f"a notebook needs exactly one cell tagged {TAG!r}, found {len(tagged)}")
    images = [output["data"]["image/png"] for output in tagged[0].outputs
              if "image/png" in output.get("data", {})]
    if not images:
        raise ValueError(f"the cell tagged {TAG!r} showed no figure")
    return base64.b64decode(images[0])


def main(numbers=()) -> None:
    """Every notebook's figure, or only those of the notebooks whose numbers are given."""
    sources = sorted(NOTEBOOK_FOLDER.glob("[0-9][0-9]_*.py"))
    unknown = set(numbers) - {source.name[:2] for source in sources}
    if unknown:
        raise SystemExit(f"make_readme_figures: error: no notebook numbered "
                         f"{', '.join(sorted(unknown))}; the notebooks are "
                         f"{', '.join(source.name[:2] for source in sources)}")
    FIGURE_FOLDER.mkdir(parents=True, exist_ok=True)
    for source in sources:
        if numbers and source.name[:2] not in numbers:
            continue
        notebook = execute_notebook(source, fast=False, timeout=3600)
        target = FIGURE_FOLDER / f"{source.stem}.png"
        # A 256-colour palette keeps line figures sharp at a third of the size.
        Image.open(io.BytesIO(tagged_figure(notebook))).convert("RGB").quantize(colors=256).save(
            target, optimize=True)
        print(f"{source.name} -> {target.relative_to(NOTEBOOK_FOLDER.parent)} "
              f"({target.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main(sys.argv[1:])
