"""Screenshots of the question page for the README, from a running ``kotae serve`` with real models.

The browser tests take their own screenshots with tiny untrained models (``tests/.screenshots/``);
these show what a newcomer sees after ``make demo``: the default reader answering over ``examples/``.

    make demo                                                   # models + the examples index
    kotae serve --config configs/pipeline/default.yaml &        # http://127.0.0.1:8000
    .venv/bin/python docs/screenshots/take.py --url http://127.0.0.1:8000

Needs Debian's Chromium and a CJK font (``apt-get install chromium fonts-noto-cjk``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHROMIUM = os.environ.get("KOTAE_CHROMIUM", "/usr/bin/chromium")
SHOTS = [  # file, question, options of the browser context
    ("page-ja-light", "8世紀に日本の首都はどこでしたか。", {"viewport": {"width": 1200, "height": 900}}),
    (
        "page-en-dark",
        "Who did Martin Luther marry?",
        {"viewport": {"width": 1200, "height": 900}, "color_scheme": "dark"},
    ),
    (
        "phone-ja-dark",
        "エリザベス1世の父は誰か。",
        {"viewport": {"width": 390, "height": 844}, "color_scheme": "dark", "device_scale_factor": 2},
    ),
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        for name, question, options in SHOTS:
            context = browser.new_context(base_url=args.url, locale="ja-JP", **options)
            context.set_default_timeout(120_000)
            page = context.new_page()
            page.goto("/")
            page.fill("#q", question)
            page.press("#q", "Enter")
            page.wait_for_selector("#results[aria-busy=false] :is(.answer, #no-answer, #error)")
            page.screenshot(path=str(args.out / f"{name}.png"))
            print(f"{args.out / name}.png: {page.locator('.answer-text').first.inner_text()!r}")
            context.close()
        browser.close()


if __name__ == "__main__":
    main()
