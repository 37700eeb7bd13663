"""bench/RESULTS.md carries its stamps, and the README quotes only figures a stamped section holds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from bench import BENCHMARKS
from bench.common import (
    Quiet,
    describe_machine,
    git_revision,
    result_sections,
    section_head,
    stamp_of,
    write_section,
)

ROOT = Path(__file__).resolve().parents[1]
NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")


def readme_figures() -> list[tuple[str, str, str, str]]:
    """(target, measured, section, revision) for each row of the README's performance table."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text.split("## Performance\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| target")]
    out = []
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split(" | ")]
        cited = re.fullmatch(r"`(\w+)` @ `([\w.+-]+)`", cells[-1])
        assert cited, f"a README figure without the section and revision it comes from: {row}"
        out.append((cells[0], cells[1], cited.group(1), cited.group(2)))
    return out


def appears(number: str, text: str) -> bool:
    """``number`` stands in ``text`` as a whole number (1.25 in '1.25x', not in '11.25' or '1.251')."""
    return re.search(rf"(?<![\d.,]){re.escape(number)}(?![\d]|[.,]\d)", text) is not None


def test_every_section_of_results_carries_its_stamp() -> None:
    sections = result_sections()
    assert set(sections) == set(BENCHMARKS)
    for name, text in sections.items():
        stamp = stamp_of(text)
        assert stamp.revision not in ("", "unknown"), name
        assert stamp.cpu, name
        assert stamp.cores >= 1, name


def test_the_readme_quotes_only_figures_of_the_section_and_revision_it_names() -> None:
    sections = result_sections()
    rows = readme_figures()
    assert rows, "the README's performance table is empty"
    for target, measured, name, revision in rows:
        assert name in sections, f"{target}: no section {name} in bench/RESULTS.md"
        stamp = stamp_of(sections[name])
        assert stamp.revision == revision, (
            f"{target}: the README quotes {name} at {revision}, RESULTS.md holds {stamp.revision}: "
            "quote the new figures"
        )
        missing = [n for n in NUMBER.findall(measured) if not appears(n, sections[name])]
        assert not missing, f"{target}: {missing} not in the {name} section of bench/RESULTS.md"
        machine = re.search(r" on an? (.+?) × (\d+)", measured)
        if machine:  # an absolute figure names the CPU it holds for: the section's
            words = re.sub(r"\((R|TM)\)", "", stamp.cpu).split()
            assert machine.group(1).split() == words[:2], f"{target}: measured on {stamp.cpu}"
            assert int(machine.group(2)) == stamp.cores, target


@pytest.mark.parametrize("figure", ["1.25", "1,483,006", "0"])
def test_appears_finds_whole_numbers_only(figure: str) -> None:
    assert appears(figure, f"a | {figure}x | b")
    assert not appears(figure, f"a | 1{figure}1 | b")
    assert not appears(figure, f"a | {figure}.5 | b")


def test_a_section_written_now_is_stamped_with_this_revision_cpu_and_quiet(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    old = "# old header\n\n<!-- bench:other -->\nkept\n<!-- /bench:other -->\n"
    results.write_text(old, encoding="utf-8")
    machine = describe_machine(("edgeml",))
    quiet = Quiet(busy_before=0.5, load_before="1.00/1.00/1.00")
    quiet.end()
    write_section("x", section_head("A title", "x", machine, quiet) + "\n\nfigures", results)
    sections = result_sections(results)
    assert sections["other"] == "kept"  # other sections stay as they were
    stamp = stamp_of(sections["x"])
    assert (stamp.revision, stamp.cpu, stamp.cores) == (git_revision(), machine.cpu, machine.cores)
    assert "Quiet machine: NO" in sections["x"]  # half the CPUs busy before the run
    assert results.read_text(encoding="utf-8").startswith("# Benchmark results\n")  # today's header


def test_a_run_that_starts_quiet_and_ends_crowded_is_not_called_quiet() -> None:
    """Other jobs that start during a run show in the load average at its end, not before it."""
    import os

    cpus = os.cpu_count() or 1
    calm = Quiet(busy_before=0.01, load_before="0.10/0.10/0.10", load_after=f"{cpus:.2f}/0.5/0.2")
    crowded = Quiet(busy_before=0.01, load_before="0.10/0.10/0.10", load_after=f"{3 * cpus:.2f}/8.0/4.0")
    assert calm.quiet  # the benchmark's own work on every core
    assert not crowded.quiet
    assert "Quiet machine: NO" in crowded.line()
    assert Quiet(
        busy_before=0.01, load_before="n/a", load_after="n/a"
    ).quiet  # no load average: CPU use decides
