"""The documentation holds together: relative links resolve, anchors name real headings, and every
`design.md N.N` reference in code and docs names a section of docs/design.md."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design.md"
PAGES = [ROOT / "README.md", ROOT / "mergekit" / "README.md",
         *sorted((ROOT / "docs").glob("*.md"))]
CODE_DIRS = ["src", "FuseChat", "FuseLLM", "scripts", "tests", "benchmarks"]
# Pages the README and the index link to that are written alongside these; once a page exists it is
# checked like any other, and the name can go from this set.
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
SECTION_REF = re.compile(r"design\.md (\d+(?:\.\d+)*)", re.IGNORECASE)
HEADING = re.compile(r"(#{1,6}) (.*)")


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def headings(text):
    """Heading texts outside fenced code blocks."""
    found, fenced = [], False
    for line in text.split("\n"):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (m := HEADING.match(line)):
            found.append(m.group(2))
    return found


def anchors(text):
    """Every anchor a page offers; repeated headings get -1, -2, ... as on GitHub."""
    seen, out = {}, set()
    for h in headings(text):
        s = slug(h)
        out.add(f"{s}-{seen[s]}" if s in seen else s)
        seen[s] = seen.get(s, 0) + 1
    return out


def design_sections():
    """Section numbers of docs/design.md, from headings such as '## 6. ...' or '#### 12.4.1 ...'."""
    return {m.group(1) for h in headings(DESIGN.read_text())
            if (m := re.match(r"(\d+(?:\.\d+)*)\.? ", h))}


def test_slug_follows_github():
    assert slug("6.2 Vocabulary mapping, blending id -> base id (`--align_type`)") == \
        "62-vocabulary-mapping-blending-id---base-id---align_type"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n## A") == {"a", "a-1", "a-2"}


def test_design_keeps_the_specification_numbering():
    sections = design_sections()
    top = {s for s in sections if "." not in s}
    assert top == {str(n) for n in range(1, 14)}
    assert {"6.1", "6.2", "6.3", "12.4.3", "12.6.5", "13.6.2", "13.8"} <= sections


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text()):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: broken links {broken}"


def test_every_design_reference_names_a_section():
    sections = design_sections()
    files = [p for d in CODE_DIRS for p in (ROOT / d).rglob("*")
             if p.suffix in {".py", ".sh", ".md", ".yml", ".yaml", ".toml"} and p.is_file()]
    unknown = [f"{p.relative_to(ROOT)}: design.md {n}"
               for p in files + PAGES
               for n in SECTION_REF.findall(p.read_text(errors="replace"))
               if n not in sections]
    assert not unknown, unknown
