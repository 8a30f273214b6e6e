"""The README's sample outputs are what the tools print today: each is run again (rehearsal/readme_samples.py) and
compared with its block in the README; `make readme-samples` rewrites them."""

from __future__ import annotations

import pytest

from rehearsal import readme_samples as samples


@pytest.fixture(scope="module")
def readme() -> dict[str, str]:
    return samples.blocks(samples.README.read_text())


def test_every_sample_block_has_a_command_and_every_command_a_block(readme: dict[str, str]) -> None:
    assert set(readme) == set(samples.SAMPLES)


def test_the_configuration_error_is_what_synth_prints(readme: dict[str, str]) -> None:
    assert readme["config-error"] == samples.config_error(), "run `make readme-samples`"


@pytest.mark.slow
@pytest.mark.long
def test_the_demo_is_what_make_demo_prints(readme: dict[str, str]) -> None:
    printed = samples.demo()
    assert "Restore of " in printed and ": SUCCEEDED" in printed, printed
    assert samples.masked(readme["demo"]) == samples.masked(printed), "run `make readme-samples`"


@pytest.mark.slow
@pytest.mark.long
def test_the_operator_guide_is_what_the_command_line_prints(readme: dict[str, str]) -> None:
    printed = samples.operator_guide()
    assert "Bitbucket unlocked with the token" in printed and "Restore drill of " in printed, printed
    assert samples.masked(readme["operator-guide"]) == samples.masked(printed), "run `make readme-samples`"


def test_masking_keeps_the_words_and_hides_what_changes_between_runs() -> None:
    one = "[http://127.0.0.1:40721]  INFO: locked with '1c58…'\n  lock window 2.797 s, of which drain 2.177 s"
    two = "[http://127.0.0.1:35099]  INFO: locked with 'dced…'\n  lock window 2.646 s, of which drain 2.165 s"
    assert samples.masked(one) == samples.masked(two)
    assert samples.masked(one) != samples.masked(two.replace("locked with", "unlocked with"))
    assert samples.masked("home copy taken: snap-184ab15f4031e6d41") == ["home copy taken: snap-ID"]
    assert samples.masked("rehearsal-32230e27817c cli-drill-demo-20261202-030624-8b6079") == [
        "rehearsal-EXECUTION cli-drill-EXECUTION"
    ]


def test_rewrite_replaces_only_the_named_blocks() -> None:
    text = "a\n<!-- sample: demo -->\n```\nold\n```\n<!-- /sample -->\nb\n"
    assert samples.rewrite(text, {"demo": "new"}) == text.replace("old", "new")
    assert samples.rewrite(text, {}) == text
