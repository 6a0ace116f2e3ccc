"""A PNG of the top of an HTML page in headless Chromium, for the README's pictures of the pages.

    .venv/bin/python docs/screenshot.py runs/report/page.html docs/figures/page.png
    .venv/bin/python docs/screenshot.py runs/minimal/ngrpo-seed1/inspector.html \
        docs/figures/inspector.png
"""

import argparse
import sys

from ngrpo_sim.pages.browser import screenshot


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("page", help="the HTML file to show")
    parser.add_argument("out", help="the PNG file to write")
    parser.add_argument("--height", type=int, default=1000, help="pixels from the top to keep")
    args = parser.parse_args(argv)
    try:
        print(f"wrote {screenshot(args.page, args.out, height=args.height)}")
    except ValueError as error:
        parser.exit(2, f"screenshot: error: {error}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
